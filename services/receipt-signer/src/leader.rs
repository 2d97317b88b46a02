//! The signer's service loop: stand by until the lease is ours, then lead — resume from
//! the stream, consume records, sign and publish batches — until shutdown or the lease is
//! lost, and stand by again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind, stream::DeleteMessageErrorKind};
use hsync_bus::{serve, start_service, streams, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_protocol::audit::Empty;
use hsync_protocol::names::services;
use hsync_protocol::receipt::SignedBatch;
use hsync_protocol::record::OperationRecord;
use hsync_protocol::{ErrorReply, Names};

use crate::lease::{HeldLease, Lease};
use crate::{batch_msg_id, Resume, SignedRecord, Signer, SignerConfig};

/// How long a consumed record may stay unacked before JetStream redelivers it.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Why a leadership term ended.
enum TermEnd {
    Shutdown,
    LeaseLost,
    /// Another signer published to the log: resume from the stream.
    Fenced,
}

/// What `$SRV.STATS` reports.
struct Status {
    receipts: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    tree_size: AtomicU64,
    leading: AtomicBool,
    terms: AtomicU64,
}

/// What one leadership term works with.
struct Term<'a> {
    bus: &'a Bus,
    js: &'a jetstream::Context,
    names: &'a Names,
    cfg: &'a SignerConfig,
    records: &'a jetstream::stream::Stream,
    receipts: &'a jetstream::stream::Stream,
    consumer: &'a jetstream::consumer::PullConsumer,
    lease: &'a HeldLease,
    status: &'a Status,
}

/// Stands by and leads, in turn, until shutdown.
pub async fn run(bus: Arc<Bus>, mut signer: Signer, cfg: SignerConfig, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let js = bus.jetstream();
    let names = bus.names().clone();
    let records = streams::records_stream(&js, &names).await?;
    let receipts = streams::receipts_stream(&js, &names).await?;
    let lease_bucket = streams::signer_lease_bucket(&js, &names).await?;
    let consumer = streams::durable_consumer(&records, &names.consumer_signer(), ACK_WAIT).await?;

    let status = Arc::new(Status {
        receipts: signer.receipts.clone(),
        batches: signer.batches.clone(),
        tree_size: AtomicU64::new(signer.tree_size()),
        leading: AtomicBool::new(false),
        terms: AtomicU64::new(0),
    });
    let holder = cfg.signer_id();
    let stats = status.clone();
    let stats_holder = holder.clone();
    let service = start_service(
        &bus,
        services::RECEIPT_SIGNER,
        "appends operation records to the RFC 6962 receipt log and signs one checkpoint per batch",
        move |_| {
            let r = stats.receipts.load(Ordering::Relaxed);
            let b = stats.batches.load(Ordering::Relaxed);
            serde_json::json!({
                "role": if stats.leading.load(Ordering::Relaxed) { "leader" } else { "standby" },
                "signer_id": stats_holder,
                "terms": stats.terms.load(Ordering::Relaxed),
                "receipts": r,
                "batches": b,
                "tree_size": stats.tree_size.load(Ordering::Relaxed),
                "signatures_per_receipt": if r > 0 { b as f64 / r as f64 } else { 0.0 },
            })
        },
    )
    .await?;
    // Every replica answers for the keys: they are the same on all of them.
    let keys = signer.verifier_keys();
    let keys_endpoint = service
        .endpoint_builder()
        .name("keys")
        .add(names.receipts_keys())
        .await
        .map_err(|e| anyhow::anyhow!("cannot add endpoint: {e}"))?;
    let keys_task = tokio::spawn(serve(
        bus.clone(),
        keys_endpoint,
        shutdown.clone(),
        ServeOptions::default(),
        move |_: Incoming<Empty>| {
            let keys = keys.clone();
            async move { Ok::<_, ErrorReply>(keys) }
        },
    ));

    let mut waiting = shutdown.clone();
    let result = 'standby: loop {
        let Some(lease) = Lease::acquire(&lease_bucket, &holder, cfg.lease_ttl(), &mut waiting).await else {
            break Ok(());
        };
        match &lease.previous {
            Some(previous) if *previous == holder => tracing::info!("took back this signer's lease ({holder})"),
            Some(previous) => tracing::warn!("took the receipt log over from {previous}, silent for {:?}", cfg.lease_ttl()),
            None => tracing::info!("leading the receipt log as {holder}"),
        }
        let lease = lease.hold();
        status.leading.store(true, Ordering::Relaxed);
        loop {
            status.terms.fetch_add(1, Ordering::Relaxed);
            let term = Term {
                bus: &bus,
                js: &js,
                names: &names,
                cfg: &cfg,
                records: &records,
                receipts: &receipts,
                consumer: &consumer,
                lease: &lease,
                status: &status,
            };
            let end = lead(&term, &mut signer, &shutdown).await;
            match end {
                Ok(TermEnd::Fenced) if lease.is_valid() => {
                    tracing::warn!("another signer published to the log while this one held the lease; resuming from the stream");
                }
                Ok(TermEnd::Shutdown) => {
                    status.leading.store(false, Ordering::Relaxed);
                    lease.release().await;
                    break 'standby Ok(());
                }
                Ok(TermEnd::LeaseLost | TermEnd::Fenced) => {
                    tracing::warn!("no longer leading the receipt log; standing by");
                    status.leading.store(false, Ordering::Relaxed);
                    lease.release().await;
                    continue 'standby;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    status.leading.store(false, Ordering::Relaxed);
                    lease.release().await;
                    break 'standby Err(e);
                }
            }
        }
    };
    let _ = keys_task.await;
    let _ = service.stop().await;
    result
}

/// One leadership term.
async fn lead(t: &Term<'_>, signer: &mut Signer, shutdown: &ShutdownSignal) -> anyhow::Result<TermEnd> {
    let tip = last_published(t).await?;
    let mut last_seq = tip.as_ref().map_or(0, |(seq, _)| *seq);
    match signer.resume_from(tip.as_ref().map(|(_, b)| b))? {
        Resume::InSync => {}
        Resume::Republish(batch) => {
            tracing::info!(
                "publishing the batch ending at tree size {}, persisted before a crash",
                batch.checkpoint.tree_size
            );
            match publish(t, &batch, last_seq, shutdown).await? {
                Some(seq) => last_seq = seq,
                None => return Ok(TermEnd::Fenced),
            }
        }
        Resume::CaughtUp { from, to, dropped } => {
            tracing::info!("resuming the log at tree size {to} from the stream (this signer's state was at {from})");
            if let Some(size) = dropped {
                tracing::warn!(
                    "dropped a batch ending at tree size {size} that was persisted here but never published; \
                     its records are signed again"
                );
            }
        }
    }
    remove_signed_records(t, signer.last_batch()).await?;
    t.status.tree_size.store(signer.tree_size(), Ordering::Relaxed);

    let cfg = t.cfg;
    let mut messages = t
        .consumer
        .stream()
        .max_messages_per_batch(cfg.batch_size.max(1))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot consume records: {e}"))?;
    let mut stop = shutdown.clone();
    let window = Duration::from_millis(cfg.batch_window_ms);
    loop {
        let batch = tokio::select! {
            b = streams::next_batch(&mut messages, cfg.batch_size, window, &mut stop) => b,
            _ = t.lease.lost() => return Ok(TermEnd::LeaseLost),
        };
        let Some(batch) = batch else {
            if shutdown.is_triggered() {
                return Ok(TermEnd::Shutdown);
            }
            anyhow::bail!("the records consumer {} ended", t.names.consumer_signer());
        };
        let mut records = Vec::with_capacity(batch.len());
        // One span per record, in the trace of the job that produced it; they stay open
        // until the batch is published, so their duration covers signing.
        let mut spans = Vec::with_capacity(batch.len());
        for m in &batch {
            match t.bus.codec().decode::<OperationRecord>(m.headers.as_ref(), &m.payload) {
                Ok(record) => {
                    let span = tracing::info_span!(
                        "record",
                        otel.name = %format!("process {}", t.names.ops_records()),
                        otel.kind = "consumer",
                        messaging.system = "nats",
                        messaging.destination.name = %t.names.ops_records(),
                        messaging.operation.type = "process",
                        hsync.job_id = %record.job_id,
                        hsync.operation_id = %record.operation_id,
                        hsync.node_id = %record.node_id,
                        hsync.operator = %record.operator,
                    );
                    hsync_telemetry::propagation::set_parent_from_headers(&span, m.headers.as_ref());
                    let traceparent = span.in_scope(|| {
                        let mut h = async_nats::HeaderMap::new();
                        hsync_telemetry::propagation::inject_current(&mut h);
                        h.get("traceparent").map(|v| v.as_str().to_string()).unwrap_or_default()
                    });
                    spans.push(span);
                    let bytes = record.canonical_bytes();
                    let stream_seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    records.push(SignedRecord {
                        record,
                        bytes,
                        traceparent,
                        stream_seq,
                    });
                }
                // A record nobody can read will never become readable: drop it loudly.
                Err(e) => {
                    tracing::error!("dropping an undecodable operation record: {e}");
                    let _ = m.ack_with(jetstream::AckKind::Term).await;
                }
            }
        }
        if !t.lease.is_valid() {
            nak_all(&batch).await;
            return Ok(TermEnd::LeaseLost);
        }
        // Without durable state we must not publish: leave the records unacked (they are
        // redelivered) and stop; an operator has to look at the disk.
        if let Some(signed) = signer.sign_batch(records)? {
            match publish(t, &signed, last_seq, shutdown).await? {
                Some(seq) => last_seq = seq,
                None => {
                    nak_all(&batch).await;
                    return Ok(TermEnd::Fenced);
                }
            }
            t.status.tree_size.store(signed.checkpoint.tree_size, Ordering::Relaxed);
        }
        drop(spans);
        // Acks are confirmed before the next batch: a record redelivered after a later
        // batch was signed would escape the last-batch dedup and get a second leaf. If an
        // ack cannot be confirmed, stop; the next leader removes the batch's records.
        confirm_acks(&batch).await?;
    }
}

/// Acks every record and waits for the server to confirm each. All at once: one at a
/// time, the round trips capped a batch of 1000 at ~5k receipts/s (signer_bench).
async fn confirm_acks(batch: &[jetstream::Message]) -> anyhow::Result<()> {
    let confirmations = batch.iter().map(|m| async move {
        let mut attempt = 0;
        loop {
            match m.double_ack().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= 4 => {
                    return Err(anyhow::anyhow!(
                        "cannot confirm the ack of a record after {} attempts ({e}); stopping before the next batch",
                        attempt + 1
                    ))
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!("ack not confirmed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
            }
        }
    });
    futures::future::join_all(confirmations).await.into_iter().collect()
}

/// The last batch in the stream and its stream sequence.
async fn last_published(t: &Term<'_>) -> anyhow::Result<Option<(u64, SignedBatch)>> {
    match t.receipts.get_last_raw_message_by_subject(&t.names.receipts_batches()).await {
        Ok(m) => {
            let batch = t
                .bus
                .codec()
                .decode::<SignedBatch>(Some(&m.headers), &m.payload)
                .map_err(|e| anyhow::anyhow!("the last batch in {} (sequence {}) is unreadable: {e}", t.names.stream_receipts(), m.sequence))?;
            Ok(Some((m.sequence, batch)))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read the last batch of {}: {e}", t.names.stream_receipts())),
    }
}

/// Publishes a batch, expecting the batch stream's last sequence to be `expected` (0: no
/// batch yet). `Some(sequence)` once stored; `None` if another signer published first.
async fn publish(t: &Term<'_>, batch: &SignedBatch, expected: u64, shutdown: &ShutdownSignal) -> anyhow::Result<Option<u64>> {
    let subject = t.names.receipts_batches();
    let (mut headers, body) = t.bus.encode(batch)?;
    headers.insert(async_nats::header::NATS_MESSAGE_ID, batch_msg_id(batch).as_str());
    headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
    let size = batch.checkpoint.tree_size;
    let mut attempt = 0;
    loop {
        let result = match t.js.publish_with_headers(subject.clone(), headers.clone(), body.clone()).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            // On the first attempt a duplicate means a batch ending at this tree size was
            // already published, by a path the stream's tip did not show (a purged
            // stream). Continuing would fork the log, and the stream would silently drop
            // this batch's receipts.
            Ok(ack) if ack.duplicate && attempt == 0 => anyhow::bail!(
                "a batch ending at tree size {size} was already published (another signer, or the state in {} is stale); \
                 stopping so the log does not fork",
                t.cfg.state_dir.display()
            ),
            Ok(ack) => return Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // An earlier attempt may have been stored with its ack lost.
                if attempt > 0 {
                    if let Some((seq, tip)) = last_published(t).await? {
                        if tip.checkpoint == batch.checkpoint {
                            return Ok(Some(seq));
                        }
                    }
                }
                return Ok(None);
            }
            Err(e) if attempt < 20 && !shutdown.is_triggered() => {
                attempt += 1;
                tracing::warn!("publishing the batch at tree size {size} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            // Persisted and unacked: the next leader (or this one, restarted) publishes it.
            Err(e) => anyhow::bail!("cannot publish the batch at tree size {size}: {e}"),
        }
    }
}

/// Removes from the records stream the records of `batch` that are still there: signed,
/// but not acked before the previous leader stopped. Left in place, they would come back
/// after the next batch and get a second leaf.
async fn remove_signed_records(t: &Term<'_>, batch: Option<&SignedBatch>) -> anyhow::Result<()> {
    let Some(batch) = batch else { return Ok(()) };
    if batch.record_seqs.is_empty() && !batch.receipts.is_empty() {
        tracing::warn!(
            "the last batch (tree size {}) does not name its records' stream sequences; \
             only the last batch's own operation ids guard against a second receipt",
            batch.checkpoint.tree_size
        );
    }
    let mut removed = 0;
    for &seq in batch.record_seqs.iter().filter(|&&s| s > 0) {
        match t.records.delete_message(seq).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            // The server refuses to delete what is not there: acked already.
            Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(_)) => {}
            Err(e) => anyhow::bail!("cannot remove signed record {seq} from {}: {e}", t.names.stream_records()),
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} records of the batch ending at tree size {} that were signed but not acked",
            batch.checkpoint.tree_size
        );
    }
    Ok(())
}

/// Hands records back for redelivery at once, to whoever leads next.
async fn nak_all(batch: &[jetstream::Message]) {
    for m in batch {
        let _ = m.ack_with(jetstream::AckKind::Nak(None)).await;
    }
}
