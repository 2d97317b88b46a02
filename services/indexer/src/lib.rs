//! indexer: takes signed batches from the receipts stream into RocksDB (acking only after
//! the write), mirrors the operator registry bucket, and answers audit queries on
//! `hsync.index.*`.

mod registry;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hsync_bus::{serve, start_service, streams, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_index::{IndexError, IndexOptions, IndexStore};
use hsync_protocol::audit::{
    CheckpointQuery, CheckpointReply, ConsistencyQuery, ConsistencyReply, Empty, IndexStats, OperatorById, OperatorPage,
    OperatorReply, OperatorsQuery, ReceiptById, ReceiptByOperation, ReceiptPage, ReceiptReply, ReceiptsByJob, ReceiptsByTime,
    MAX_PAGE,
};
use hsync_protocol::names::services;
use hsync_protocol::receipt::SignedBatch;
use hsync_protocol::{ErrorCode, ErrorReply};

#[derive(clap::Args, Clone, Debug)]
pub struct IndexerConfig {
    /// RocksDB directory.
    #[arg(long = "db", env = "HSYNC_INDEX_DIR", default_value = ".hsync/index")]
    pub db: PathBuf,
    /// RocksDB block cache, in MiB.
    #[arg(long = "block-cache-mb", env = "HSYNC_INDEX_BLOCK_CACHE_MB", default_value_t = 64)]
    pub block_cache_mb: usize,
    /// fsync every write batch (the WAL is always on).
    #[arg(long = "sync-writes", env = "HSYNC_INDEX_SYNC", default_value_t = false)]
    pub sync_writes: bool,
    /// Most signed batches written in one RocksDB WriteBatch.
    #[arg(long = "ingest-batch", env = "HSYNC_INDEX_INGEST_BATCH", default_value_t = 16)]
    pub ingest_batch: usize,
    /// Read SST files through mmap (see docs/PERFORMANCE.md, "Indexer").
    #[arg(long = "mmap-reads", env = "HSYNC_INDEX_MMAP_READS", default_value_t = false)]
    pub mmap_reads: bool,
    /// Collect RocksDB's statistics (I/O, cache, compaction; shown on /debug/rocksdb).
    /// RocksDB documents their cost at 5–10% of throughput, so they are off by default.
    #[arg(long = "rocksdb-statistics", env = "HSYNC_INDEX_STATISTICS", default_value_t = false)]
    pub rocksdb_statistics: bool,
    /// Delete the index and rebuild it from the receipts stream.
    #[arg(long = "rebuild", env = "HSYNC_INDEX_REBUILD", default_value_t = false)]
    pub rebuild: bool,
    /// Durable consumer of the receipts stream. Every indexer replica keeps its own RocksDB
    /// and must see every batch, so each needs its own name (default `indexer`).
    #[arg(long = "consumer", env = "HSYNC_INDEX_CONSUMER")]
    pub consumer: Option<String>,
}

impl IndexerConfig {
    /// Opens the index. `--rebuild`, or an index of an older layout, deletes it first: the
    /// receipts stream holds everything, and an empty index replays it (see `run`).
    pub fn open(&self) -> anyhow::Result<IndexStore> {
        let opts = IndexOptions {
            path: self.db.clone(),
            block_cache_bytes: self.block_cache_mb.max(1) * 1024 * 1024,
            sync_writes: self.sync_writes,
            statistics: self.rocksdb_statistics,
            mmap_reads: self.mmap_reads,
        };
        let wipe = |why: &str| -> anyhow::Result<()> {
            tracing::warn!("{why}: deleting {} and rebuilding it from the receipts stream", self.db.display());
            std::fs::remove_dir_all(&self.db).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                .map_err(|e| anyhow::anyhow!("cannot delete the index at {}: {e}", self.db.display()))
        };
        if self.rebuild {
            wipe("--rebuild")?;
        }
        match IndexStore::open(&opts) {
            Err(IndexError::Schema { found, expected, .. }) if found < expected => {
                wipe(&format!("the index has layout version {found}, this indexer writes {expected}"))?;
                IndexStore::open(&opts).map_err(|e| anyhow::anyhow!("{e}"))
            }
            other => other.map_err(|e| anyhow::anyhow!("{e}")),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, format!("index: {e}"))
}

/// A query's store error: a cursor the caller made up is their mistake, the rest is ours.
fn query_error(e: IndexError) -> ErrorReply {
    match e {
        IndexError::InvalidCursor { .. } => ErrorReply::new(ErrorCode::Malformed, e.to_string()),
        e => internal(e),
    }
}

fn valid_key(kind: &str, s: &str) -> Result<(), ErrorReply> {
    if s.is_empty() || s.len() > 256 {
        return Err(ErrorReply::new(ErrorCode::Malformed, format!("{kind} must be 1-256 characters")));
    }
    Ok(())
}

/// Pulls signed batches into the store until shutdown.
async fn ingest_loop(
    bus: Arc<Bus>,
    store: Arc<IndexStore>,
    cfg: IndexerConfig,
    ingested: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    mut shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let js = bus.jetstream();
    let names = bus.names().clone();
    let stream = streams::receipts_stream(&js, &names).await?;
    let durable = cfg.consumer.clone().unwrap_or_else(|| names.consumer_indexer());
    anyhow::ensure!(
        !durable.is_empty() && durable.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--consumer / HSYNC_INDEX_CONSUMER {durable:?}: use letters, digits, '-' and '_' only"
    );
    // An empty index (new, deleted, or of an older layout) must see every batch again:
    // a consumer that already delivered some would start after them.
    let empty = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.stats()).await??.batches == 0
    };
    if empty {
        if let Ok(info) = stream.consumer_info(&durable).await {
            if info.delivered.stream_sequence > 0 {
                tracing::warn!(
                    "the index is empty but consumer {durable} already delivered up to stream sequence {}: \
                     replaying the receipts stream from the start",
                    info.delivered.stream_sequence
                );
                stream
                    .delete_consumer(&durable)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reset consumer {durable}: {e}"))?;
            }
        }
    }
    let consumer = streams::durable_consumer(&stream, &durable, Duration::from_secs(30)).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.ingest_batch.max(1))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot consume signed batches: {e}"))?;
    while let Some(msgs) = streams::next_batch(&mut messages, cfg.ingest_batch, Duration::from_millis(5), &mut shutdown).await {
        // Decoded batches and the message each came from.
        let mut batches = Vec::with_capacity(msgs.len());
        let mut sources = Vec::with_capacity(msgs.len());
        let mut spans = Vec::new();
        for m in &msgs {
            match bus.codec().decode::<SignedBatch>(m.headers.as_ref(), &m.payload) {
                Ok(b) => {
                    for (i, r) in b.receipts.iter().enumerate() {
                        let span = tracing::info_span!(
                            "index",
                            otel.name = %format!("process {}", names.receipts_batches()),
                            otel.kind = "consumer",
                            messaging.system = "nats",
                            messaging.destination.name = %names.receipts_batches(),
                            messaging.operation.type = "process",
                            hsync.operation_id = %r.operation_id,
                            hsync.leaf_index = r.leaf_index,
                            hsync.job_id = tracing::field::Empty,
                        );
                        if let Ok(rec) = r.record() {
                            span.record("hsync.job_id", rec.job_id.as_str());
                        }
                        if let Some(tp) = b.traceparents.get(i) {
                            let mut h = async_nats::HeaderMap::new();
                            h.insert("traceparent", tp.as_str());
                            hsync_telemetry::propagation::set_parent_from_headers(&span, Some(&h));
                        }
                        spans.push(span);
                    }
                    batches.push(b);
                    sources.push(m);
                }
                Err(e) => {
                    tracing::error!("dropping an undecodable signed batch: {e}");
                    let _ = m.ack_with(async_nats::jetstream::AckKind::Term).await;
                }
            }
        }
        let s = store.clone();
        let n = batches.len();
        let batches = Arc::new(batches);
        let written = tokio::task::spawn_blocking({
            let batches = batches.clone();
            move || s.ingest_many(&batches)
        })
        .await?;
        match written {
            Ok(outcome) => {
                ingested.fetch_add(n as u64, Ordering::Relaxed);
                if outcome.duplicates > 0 {
                    tracing::info!(duplicates = outcome.duplicates, "skipped receipts already indexed");
                }
                for m in &sources {
                    if let Err(e) = m.ack().await {
                        tracing::warn!("ack failed (the batch will be redelivered and skipped): {e}");
                    }
                }
            }
            Err(e) if e.refuses_the_batch() => {
                // A split view or a malformed receipt must not stall the batches that came
                // with it, nor come back forever: index the group one batch at a time and
                // refuse the bad one for good. On a split view the index keeps the root it
                // saw first.
                for (i, m) in sources.iter().enumerate() {
                    let s = store.clone();
                    let batches = batches.clone();
                    match tokio::task::spawn_blocking(move || s.ingest(&batches[i])).await? {
                        Ok(_) => {
                            ingested.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = m.ack().await {
                                tracing::warn!("ack failed (the batch will be redelivered and skipped): {e}");
                            }
                        }
                        Err(e) if e.refuses_the_batch() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                stream_sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0),
                                "refusing a signed batch for good: {e}"
                            );
                            let _ = m.ack_with(async_nats::jetstream::AckKind::Term).await;
                        }
                        Err(e) => {
                            tracing::error!("cannot write a signed batch: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                // Not acked: JetStream redelivers after ack_wait.
                tracing::error!("cannot write {n} signed batches: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        drop(spans);
    }
    Ok(())
}

pub async fn run(bus: Arc<Bus>, store: Arc<IndexStore>, cfg: IndexerConfig, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let ingested = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let ingest = tokio::spawn(ingest_loop(bus.clone(), store.clone(), cfg, ingested.clone(), refused.clone(), shutdown.clone()));
    let mirror = tokio::spawn(registry::follow_registry(bus.clone(), store.clone(), shutdown.clone()));

    let stats_store = store.clone();
    let service = start_service(
        &bus,
        services::INDEXER,
        "RocksDB indexes of receipts; audit queries",
        move |_| {
            let s = stats_store.stats().unwrap_or_default();
            serde_json::json!({
                "receipts": s.receipts,
                "batches": s.batches,
                "tree_size": s.tree_size,
                "operators": s.operators,
                "batches_ingested_since_start": ingested.load(Ordering::Relaxed),
                "batches_refused": refused.load(Ordering::Relaxed),
            })
        },
    )
    .await?;
    let names = bus.names().clone();
    let add = |name: &'static str, subject: String| {
        let service = &service;
        async move {
            service
                .endpoint_builder()
                .name(name)
                .add(subject)
                .await
                .map_err(|e| anyhow::anyhow!("cannot add endpoint {name}: {e}"))
        }
    };
    let by_op = add("receipt_by_operation", names.index_receipt_by_operation()).await?;
    let by_id = add("receipt_by_id", names.index_receipt_by_id()).await?;
    let by_time = add("receipts_by_time", names.index_receipts_by_time()).await?;
    let checkpoint = add("checkpoint", names.index_checkpoint()).await?;
    let by_job = add("receipts_by_job", names.index_receipts_by_job()).await?;
    let stats = add("stats", names.index_stats()).await?;
    let consistency = add("consistency", names.index_consistency()).await?;
    let operator_by_id = add("operator_by_id", names.index_operator_by_id()).await?;
    let operators = add("operators", names.index_operators()).await?;

    let s1 = store.clone();
    let t1 = tokio::spawn(serve(bus.clone(), by_op, shutdown.clone(), ServeOptions::default(), move |req: Incoming<ReceiptByOperation>| {
        let store = s1.clone();
        async move {
            let id = req.body.operation_id;
            valid_key("operation_id", &id)?;
            tracing::Span::current().record("hsync.operation_id", id.as_str());
            let found = tokio::task::spawn_blocking({
                let id = id.clone();
                move || store.receipt_by_operation(&id)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            found
                .map(|receipt| ReceiptReply { receipt })
                .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, format!("no receipt for operation {id}")))
        }
    }));
    let s2 = store.clone();
    let t2 = tokio::spawn(serve(bus.clone(), by_job, shutdown.clone(), ServeOptions::default(), move |req: Incoming<ReceiptsByJob>| {
        let store = s2.clone();
        async move {
            let q = req.body;
            valid_key("job_id", &q.job_id)?;
            tracing::Span::current().record("hsync.job_id", q.job_id.as_str());
            let limit = q.limit.clamp(1, MAX_PAGE) as usize;
            let (receipts, next_cursor) = tokio::task::spawn_blocking(move || store.receipts_by_job(&q.job_id, q.cursor.as_deref(), limit))
                .await
                .map_err(internal)?
                .map_err(query_error)?;
            Ok(ReceiptPage { receipts, next_cursor })
        }
    }));
    let s3 = store.clone();
    let t3 = tokio::spawn(serve(bus.clone(), stats, shutdown.clone(), ServeOptions::default(), move |_: Incoming<Empty>| {
        let store = s3.clone();
        async move {
            tokio::task::spawn_blocking(move || store.stats())
                .await
                .map_err(internal)?
                .map_err(internal)
                .map(|s: IndexStats| s)
        }
    }));
    let s4 = store.clone();
    let t4 = tokio::spawn(serve(bus.clone(), consistency, shutdown.clone(), ServeOptions::default(), move |req: Incoming<ConsistencyQuery>| {
        let store = s4.clone();
        async move {
            let q = req.body;
            tokio::task::spawn_blocking(move || consistency_reply(&store, q)).await.map_err(internal)?
        }
    }));
    let s5 = store.clone();
    let t5 = tokio::spawn(serve(bus.clone(), by_id, shutdown.clone(), ServeOptions::default(), move |req: Incoming<ReceiptById>| {
        let store = s5.clone();
        async move {
            let leaf = req.body.leaf_index;
            tokio::task::spawn_blocking(move || store.receipt_by_index(leaf))
                .await
                .map_err(internal)?
                .map_err(internal)?
                .map(|receipt| ReceiptReply { receipt })
                .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, format!("no receipt with id (leaf index) {leaf}")))
        }
    }));
    let s6 = store.clone();
    let t6 = tokio::spawn(serve(bus.clone(), by_time, shutdown.clone(), ServeOptions::default(), move |req: Incoming<ReceiptsByTime>| {
        let store = s6.clone();
        async move {
            let q = req.body;
            if q.from_us > q.to_us {
                return Err(ErrorReply::new(
                    ErrorCode::InvalidArgument,
                    format!("from_us ({}) is after to_us ({})", q.from_us, q.to_us),
                ));
            }
            if let Some(op) = &q.operator {
                valid_key("operator", op)?;
            }
            let limit = q.limit.clamp(1, MAX_PAGE) as usize;
            let (receipts, next_cursor) = tokio::task::spawn_blocking(move || match &q.operator {
                Some(op) => store.receipts_by_operator(op, q.from_us, q.to_us, q.cursor.as_deref(), limit),
                None => store.receipts_by_time(q.from_us, q.to_us, q.cursor.as_deref(), limit),
            })
            .await
            .map_err(internal)?
            .map_err(query_error)?;
            Ok(ReceiptPage { receipts, next_cursor })
        }
    }));
    let s7 = store.clone();
    let t7 = tokio::spawn(serve(bus.clone(), checkpoint, shutdown.clone(), ServeOptions::default(), move |req: Incoming<CheckpointQuery>| {
        let store = s7.clone();
        async move {
            let size = req.body.tree_size;
            tokio::task::spawn_blocking(move || match size {
                Some(size) => store.checkpoint(size),
                None => store.latest_checkpoint(),
            })
            .await
            .map_err(internal)?
            .map_err(internal)?
            .map(|checkpoint| CheckpointReply { checkpoint })
            .ok_or_else(|| match size {
                Some(size) => ErrorReply::new(ErrorCode::NotFound, format!("no checkpoint at tree size {size}: no batch ended there")),
                None => ErrorReply::new(ErrorCode::NotFound, "no checkpoint yet: the log is empty".to_string()),
            })
        }
    }));
    let s8 = store.clone();
    let t8 = tokio::spawn(serve(bus.clone(), operator_by_id, shutdown.clone(), ServeOptions::default(), move |req: Incoming<OperatorById>| {
        let store = s8.clone();
        async move {
            let id = req.body.id;
            valid_key("id", &id)?;
            let found = tokio::task::spawn_blocking({
                let id = id.clone();
                move || store.operator(&id)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            found
                .map(|operator| OperatorReply { operator })
                .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, format!("no operator {id} in the registry")))
        }
    }));
    let s9 = store.clone();
    let t9 = tokio::spawn(serve(bus.clone(), operators, shutdown.clone(), ServeOptions::default(), move |req: Incoming<OperatorsQuery>| {
        let store = s9.clone();
        async move {
            let q = req.body;
            if let Some(c) = &q.capability {
                valid_key("capability", c)?;
            }
            let limit = q.limit.clamp(1, MAX_PAGE) as usize;
            let (operators, next_cursor) =
                tokio::task::spawn_blocking(move || store.operators(q.capability.as_deref(), q.cursor.as_deref(), limit))
                    .await
                    .map_err(internal)?
                    .map_err(query_error)?;
            Ok(OperatorPage { operators, next_cursor })
        }
    }));
    let ingest_result = ingest.await;
    let _ = tokio::join!(t1, t2, t3, t4, t5, t6, t7, t8, t9, mirror);
    let _ = service.stop().await;
    ingest_result?
}

/// Largest tree size a consistency proof is computed for: the proof is built from every
/// leaf hash up to it (32 bytes each), read from the index.
pub const MAX_CONSISTENCY_SIZE: u64 = 4 << 20;

fn consistency_reply(store: &IndexStore, q: ConsistencyQuery) -> Result<ConsistencyReply, ErrorReply> {
    let invalid = |m: String| ErrorReply::new(ErrorCode::InvalidArgument, m);
    if q.from_size == 0 || q.from_size > q.to_size {
        return Err(invalid(format!("need 1 <= from_size <= to_size, got {} and {}", q.from_size, q.to_size)));
    }
    if q.to_size > MAX_CONSISTENCY_SIZE {
        return Err(invalid(format!(
            "to_size {} is over {MAX_CONSISTENCY_SIZE}: this indexer builds proofs from the leaves and stops there",
            q.to_size
        )));
    }
    let checkpoint = |size: u64| {
        store.checkpoint(size).map_err(internal)?.ok_or_else(|| {
            ErrorReply::new(ErrorCode::NotFound, format!("no checkpoint at tree size {size}: no batch ended there"))
        })
    };
    let (from, to) = (checkpoint(q.from_size)?, checkpoint(q.to_size)?);
    let leaves = store
        .leaf_hashes(q.to_size)
        .map_err(internal)?
        .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, format!("not every leaf below {} is indexed yet", q.to_size)))?;
    let proof = hsync_receipts::merkle::consistency_proof(q.from_size, &leaves)
        .into_iter()
        .map(hsync_protocol::Hash32)
        .collect();
    Ok(ConsistencyReply { from, to, proof })
}
