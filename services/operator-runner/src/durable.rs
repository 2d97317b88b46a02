//! The durable path: jobs from the `HSYNC_JOBS` work queue, results into the
//! `hsync_results` bucket and onto `hsync.jobs.result.<job_id>`.
//!
//! A job is acked only after its result is stored (its operation records were already
//! durably published by the engine), so a runner killed at any moment loses no job: the
//! redelivered job runs again with the same job id, hence the same operation ids, which
//! the records stream de-duplicates. A redelivery that finds a stored result only acks.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind};
use futures::StreamExt;
use hsync_bus::{streams, Bus, ShutdownSignal};
use hsync_protocol::job::{valid_id, Job, JobResult, JobStatus};
use hsync_protocol::ErrorCode;
use hsync_runner::Engine;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

#[derive(clap::Args, Clone, Debug)]
pub struct DurableConfig {
    /// Durable jobs (from `jobs.submit`) running at once.
    #[arg(long = "durable-concurrency", env = "HSYNC_DURABLE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Redelivery delay after a failed result write, in milliseconds.
    #[arg(long = "durable-retry-ms", env = "HSYNC_DURABLE_RETRY_MS", default_value_t = 1_000)]
    pub retry_ms: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            concurrency: 16,
            retry_ms: 1_000,
        }
    }
}

/// How long JetStream waits for an ack before redelivering; a running job keeps
/// extending it with progress acks, so it only bounds how fast a dead runner's jobs move on.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Runs of a durable job that fails on transient errors (UNAVAILABLE, TIMEOUT) before
/// that failure is stored as its result.
const TRANSIENT_ATTEMPTS: i64 = 5;

/// Consumes durable jobs until shutdown, then waits for the jobs in progress.
pub async fn run(bus: Arc<Bus>, engine: Arc<Engine>, cfg: DurableConfig, mut shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let js = bus.jetstream();
    let names = bus.names().clone();
    let stream = streams::jobs_stream(&js, &names).await?;
    let results = streams::results_bucket(&js, &names).await?;
    let consumer = streams::durable_consumer(&stream, &names.consumer_runner(), ACK_WAIT).await?;
    let concurrency = cfg.concurrency.max(1);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot consume durable jobs: {e}"))?;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait() => break,
            p = slots.clone().acquire_owned() => p?,
        };
        let msg = tokio::select! {
            _ = shutdown.wait() => break,
            m = messages.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!("durable jobs consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => break,
            },
        };
        let (bus, engine, results, cfg) = (bus.clone(), engine.clone(), results.clone(), cfg.clone());
        running.spawn(async move {
            handle(&bus, &engine, &results, &cfg, msg).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    // Jobs in progress finish and ack; anything not started stays in the stream.
    while running.join_next().await.is_some() {}
    Ok(())
}

async fn handle(bus: &Bus, engine: &Arc<Engine>, results: &kv::Store, cfg: &DurableConfig, msg: jetstream::Message) {
    let subject = bus.names().jobs_submit();
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {subject}"),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        messaging.operation.type = "process",
        messaging.message.body.size = msg.payload.len(),
        hsync.job_id = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    hsync_telemetry::propagation::set_parent_from_headers(&span, msg.headers.as_ref());
    async {
        let job: Job = match bus.codec().decode(msg.headers.as_ref(), &msg.payload) {
            Ok(j) => j,
            Err(e) => {
                // Bytes nobody can read will never become readable: drop them loudly.
                tracing::error!("dropping an undecodable durable job: {e}");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        if !valid_id(&job.job_id) {
            tracing::error!(
                "dropping a durable job with job_id {:?}: a durable job needs an id of letters, digits, '-' or '_' to store its result under",
                job.job_id
            );
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
        let job_id = job.job_id.clone();
        tracing::Span::current().record("hsync.job_id", job_id.as_str());
        if let Ok(Some(_)) = results.get(&job_id).await {
            tracing::info!("durable job {job_id} already has a result (a redelivery): acking");
            let _ = msg.ack().await;
            return;
        }

        // Keep the message ours while the job runs.
        let progress = async {
            loop {
                tokio::time::sleep(ACK_WAIT / 3).await;
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        };
        let outcome = tokio::select! {
            r = engine.run(job) => r,
            _ = progress => unreachable!("the progress loop never ends"),
        };
        let result = outcome.unwrap_or_else(|e| JobResult {
            job_id: job_id.clone(),
            status: JobStatus::Rejected,
            outputs: Default::default(),
            nodes: vec![],
            receipts: vec![],
            elapsed_us: 0,
            trace_id: hsync_telemetry::current_trace_id().unwrap_or_default(),
            error: Some(e),
            outputs_object: None,
        });
        // A step that failed because NATS or a service was briefly unavailable (a node or
        // replica died) is not the job's answer: run it again later, a few times.
        let transient = result.status == JobStatus::Failed
            && result.error.as_ref().is_some_and(|e| matches!(e.code, ErrorCode::Unavailable | ErrorCode::Timeout));
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        if transient && delivered < TRANSIENT_ATTEMPTS {
            tracing::warn!(
                "durable job {job_id} failed on a transient error (attempt {delivered} of {TRANSIENT_ATTEMPTS}): {:?}; running it again in {} ms",
                result.error.as_ref().map(|e| &e.message),
                cfg.retry_ms
            );
            let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_millis(cfg.retry_ms)))).await;
            return;
        }
        match store(bus, results, &result).await {
            Ok(true) => {}
            Ok(false) => {
                // A runner that took the job before us (and was thought dead) stored its result
                // first; that one stands, and was published by it.
                tracing::info!("durable job {job_id} already has a result from another runner: keeping that one");
                let _ = msg.double_ack().await;
                return;
            }
            Err(e) => {
                tracing::error!("cannot store the result of durable job {job_id} ({e}); it will be redelivered");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_millis(cfg.retry_ms)))).await;
                return;
            }
        }
        if let Err(e) = bus.publish(bus.names().jobs_result(&job_id), &result).await {
            tracing::warn!("cannot publish the result of durable job {job_id} (it is stored): {e}");
        }
        if let Err(e) = msg.double_ack().await {
            tracing::warn!("ack of durable job {job_id} failed (a redelivery will find the stored result): {e}");
        }
    }
    .instrument(span)
    .await
}

/// Stores a result under its job id unless one is there already (then `false`): a job has
/// exactly one result even when two runners ran it. A result too large for one NATS
/// message is stored without its outputs and says so (large results belong on `jobs.run`).
async fn store(bus: &Bus, results: &kv::Store, result: &JobResult) -> anyhow::Result<bool> {
    let max = bus.client().server_info().max_payload;
    let mut bytes = rmp_serde::to_vec_named(result)?;
    if bytes.len() > max {
        let mut trimmed = result.clone();
        trimmed.outputs.clear();
        trimmed.error = Some(hsync_protocol::ErrorReply::new(
            hsync_protocol::ErrorCode::PayloadTooLarge,
            format!(
                "the result is {} bytes, more than the server's max payload of {max}: its outputs were not kept; run the job on jobs.run to receive them",
                bytes.len()
            ),
        ));
        bytes = rmp_serde::to_vec_named(&trimmed)?;
    }
    match results.create(&result.job_id, bytes.into()).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}
