//! JetStream streams and KV buckets, created idempotently by whichever process starts first.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use hsync_protocol::Names;

/// Stream replicas: 1 on a single server, 3 in production clusters (HSYNC_REPLICAS).
pub fn replicas() -> usize {
    std::env::var("HSYNC_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=5).contains(n))
        .unwrap_or(1)
}

async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    let stream = retry_start_up(&format!("stream {name}"), || js.get_or_create_stream(config.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("cannot create or open stream {name}: {e}"))?;
    // A replicated stream takes writes once its replicas have elected a leader; until then
    // a publish finds "no stream found for given subject". Wait for it here, at start.
    retry_start_up(&format!("leader of stream {name}"), || async {
        match stream.get_info().await {
            Ok(info) if info.cluster.as_ref().is_none_or(|c| c.leader.is_some()) => Ok(()),
            Ok(_) => Err("no leader elected yet".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("stream {name} has no leader: {e}"))?;
    Ok(stream)
}

/// How long start-up JetStream calls keep retrying. A cluster that has just started (or
/// lost a node) answers "JetStream system temporarily unavailable" until it has elected a
/// meta leader, which takes seconds.
const START_UP_RETRY: Duration = Duration::from_secs(30);

/// Retries a JetStream call made at start-up until it succeeds or [`START_UP_RETRY`] passes.
/// Besides the cluster electing its leader, services start together and create the same
/// streams: the one that loses the race gets an error from its create (on 2.9 "subjects
/// overlap with an existing stream"), by when the stream exists and the next look-up
/// finds it.
async fn retry_start_up<T, E, F, Fut>(what: &str, mut call: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + START_UP_RETRY;
    let mut attempt = 0u64;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                attempt += 1;
                if attempt == 10 {
                    tracing::warn!("{what}: still failing after {attempt} attempts: {e}; retrying");
                } else {
                    tracing::debug!("{what} (attempt {attempt}): {e}; retrying");
                }
                tokio::time::sleep(Duration::from_millis((50 * attempt).min(1000))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Durable jobs: a work queue, de-duplicated by job id for ten minutes.
pub async fn jobs_stream(js: &jetstream::Context, names: &Names) -> anyhow::Result<stream::Stream> {
    ensure_stream(
        js,
        stream::Config {
            name: names.stream_jobs(),
            subjects: vec![names.jobs_submit()],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(600),
            num_replicas: replicas(),
            storage: stream::StorageType::File,
            ..Default::default()
        },
    )
    .await
}

/// Operation records: kept until the receipt-signer has taken them (work queue),
/// de-duplicated by operation id.
pub async fn records_stream(js: &jetstream::Context, names: &Names) -> anyhow::Result<stream::Stream> {
    ensure_stream(
        js,
        stream::Config {
            name: names.stream_records(),
            subjects: vec![names.ops_records()],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(600),
            num_replicas: replicas(),
            storage: stream::StorageType::File,
            ..Default::default()
        },
    )
    .await
}

/// Signed batches: the log's durable history (limits retention), from which an empty
/// indexer can rebuild.
pub async fn receipts_stream(js: &jetstream::Context, names: &Names) -> anyhow::Result<stream::Stream> {
    ensure_stream(
        js,
        stream::Config {
            name: names.stream_receipts(),
            subjects: vec![names.receipts_batches()],
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: Duration::from_secs(600),
            num_replicas: replicas(),
            storage: stream::StorageType::File,
            ..Default::default()
        },
    )
    .await
}

/// Creates (or opens) a KV bucket by creating its backing stream ourselves.
///
/// `Context::create_key_value` first queries the account, and async-nats 0.51 cannot
/// parse the account info nats-server 2.9 returns (it lacks `reserved_memory`), so KV
/// creation through it fails on Debian's server. The stream below is the one async-nats
/// itself would create for a bucket (see its `kv_to_stream_config`).
async fn ensure_bucket(js: &jetstream::Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    let name = config.bucket.clone();
    let stream_config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(config.description.clone()).filter(|d| !d.is_empty()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: config.history.max(1),
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        max_message_size: config.max_value_size,
        storage: config.storage,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: config.num_replicas.max(1),
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    ensure_stream(js, stream_config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create KV bucket {name}: {e}"))?;
    // In a cluster the bucket's stream can exist before this node's look-up sees it.
    retry_start_up(&format!("KV bucket {name}"), || js.get_key_value(&name))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open KV bucket {name}: {e}"))
}

/// The receipt-signer's leadership lease. One entry (history 1); expiry is judged by
/// the standbys (see the signer's lease module), so the bucket has no max age.
pub async fn signer_lease_bucket(js: &jetstream::Context, names: &Names) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: names.bucket_signer_lease(),
            history: 1,
            num_replicas: replicas(),
            ..Default::default()
        },
    )
    .await
}

pub async fn policies_bucket(js: &jetstream::Context, names: &Names) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: names.bucket_policies(),
            history: 5,
            num_replicas: replicas(),
            ..Default::default()
        },
    )
    .await
}

pub async fn operators_bucket(js: &jetstream::Context, names: &Names) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: names.bucket_operators(),
            history: 5,
            num_replicas: replicas(),
            ..Default::default()
        },
    )
    .await
}

/// Job results, kept for a day so `hsync result JOB_ID` works after the fact.
pub async fn results_bucket(js: &jetstream::Context, names: &Names) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: names.bucket_results(),
            max_age: Duration::from_secs(24 * 3600),
            num_replicas: replicas(),
            ..Default::default()
        },
    )
    .await
}

/// Outputs too large for one NATS message, kept as long as durable results (a day).
pub async fn outputs_store(js: &jetstream::Context, names: &Names) -> anyhow::Result<object_store::ObjectStore> {
    let bucket = names.bucket_outputs();
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: bucket.clone(),
            description: Some("job outputs larger than one NATS message".to_string()),
            max_age: Duration::from_secs(24 * 3600),
            num_replicas: replicas(),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another process may have created it in between.
        Err(e) => js
            .get_object_store(&bucket)
            .await
            .map_err(|_| anyhow::anyhow!("cannot create object store {bucket}: {e}")),
    }
}

/// A durable pull consumer with explicit acks on `stream`.
pub async fn durable_consumer(
    stream: &stream::Stream,
    durable: &str,
    ack_wait: Duration,
) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    stream
        .get_or_create_consumer(
            durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(durable.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create consumer {durable}: {e}"))
}

/// Waits for the first message, then gathers more until `max` or until `window` has
/// passed since the first: a batch forms as fast as messages arrive, and an idle
/// consumer costs nothing. `None` on shutdown or when the stream ends.
pub async fn next_batch(
    messages: &mut jetstream::consumer::pull::Stream,
    max: usize,
    window: Duration,
    shutdown: &mut crate::ShutdownSignal,
) -> Option<Vec<jetstream::Message>> {
    use futures::StreamExt;
    let first = loop {
        tokio::select! {
            _ = shutdown.wait() => return None,
            m = messages.next() => match m {
                Some(Ok(m)) => break m,
                Some(Err(e)) => {
                    tracing::warn!("consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => return None,
            },
        }
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + window;
    while batch.len() < max.max(1) {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(m))) => batch.push(m),
            Ok(Some(Err(e))) => {
                tracing::warn!("consumer: {e}");
                break;
            }
            _ => break,
        }
    }
    if let Some(info) = batch.last().and_then(|m| m.info().ok()) {
        let consumer = format!("{}/{}", info.stream, info.consumer);
        hsync_metrics::global().consumer_batch(&consumer, batch.len(), info.pending);
    }
    Some(batch)
}
