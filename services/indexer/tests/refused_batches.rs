//! Batches the index can never take (a split view of the log, a malformed receipt) are
//! refused for good, and the batches around them are still indexed: against a real
//! nats-server and RocksDB, with the indexer running in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use hsync_protocol::names::services;
use hsync_protocol::receipt::SignedBatch;
use hsync_protocol::value::{Blob, Hash32};
use hsync_testkit::NatsServer;
use indexer::IndexerConfig;

fn example() -> SignedBatch {
    serde_json::from_str(include_str!("../../../proto-schemas/examples/SignedBatch.job.json")).unwrap()
}

/// The example batch `shift` leaves later, with its own operation ids: a batch that
/// extends the log.
fn later(shift: u64) -> SignedBatch {
    let mut b = example();
    b.checkpoint.tree_size += shift;
    b.checkpoint.root_hash = Hash32([shift as u8; 32]);
    for r in &mut b.receipts {
        let mut record = r.record().unwrap();
        record.operation_id = format!("{}-{shift}", record.operation_id);
        r.operation_id = record.operation_id.clone();
        r.leaf = Blob(record.canonical_bytes());
        r.leaf_index += shift;
        r.tree_size += shift;
    }
    b
}

async fn publish(bus: &Bus, batch: &SignedBatch, id: &str) {
    bus.js_publish(&bus.jetstream(), bus.names().receipts_batches(), batch, Some(id)).await.expect("batch published");
}

async fn indexer_stats(bus: &Bus) -> serde_json::Value {
    hsync_testkit::cluster::service_stats(bus, services::INDEXER).await.expect("one indexer's stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_and_a_malformed_batch_are_refused_and_the_rest_is_indexed() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "indexer-test").await.expect("connect"));
    streams::receipts_stream(&bus.jetstream(), bus.names()).await.expect("receipts stream");
    let dir = tempfile::tempdir().unwrap();
    let cfg = IndexerConfig {
        db: dir.path().join("index"),
        block_cache_mb: 8,
        sync_writes: false,
        ingest_batch: 16,
        mmap_reads: false,
        rocksdb_statistics: false,
        rebuild: false,
        consumer: None,
    };
    let store = Arc::new(cfg.open().expect("index opens"));
    let shutdown = Shutdown::new();
    let indexer = tokio::spawn(indexer::run(bus.clone(), store.clone(), cfg, shutdown.signal()));

    let first = example();
    publish(&bus, &first, "first").await;
    // The same tree size with another root: a split view.
    let mut forged = example();
    forged.checkpoint.root_hash = Hash32([0xee; 32]);
    // A receipt whose record is not the operation it claims to be.
    let mut malformed = later(100);
    malformed.receipts[0].operation_id = "not-the-record".into();
    let next = later(3);
    // Published back to back so that they are likely ingested as one group.
    publish(&bus, &forged, "forged").await;
    publish(&bus, &malformed, "malformed").await;
    publish(&bus, &next, "next").await;

    // The good batches are indexed well before the 30 s ack wait would redeliver anything.
    let deadline = Instant::now() + Duration::from_secs(15);
    for r in first.receipts.iter().chain(&next.receipts) {
        while store.receipt_by_operation(&r.operation_id).unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} was not indexed", r.operation_id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.receipts, stats.batches), (6, 2));
    let kept = store.checkpoint(first.checkpoint.tree_size).unwrap().unwrap();
    assert_eq!(kept.root_hash, first.checkpoint.root_hash, "the first root seen stays");
    assert!(store.receipt_by_operation(&malformed.receipts[1].operation_id).unwrap().is_none());

    // Both refused batches were terminated, not left to come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = indexer_stats(&bus).await;
        if s["batches_refused"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "refused batches not counted: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = bus.jetstream();
    let stream = streams::receipts_stream(&js, bus.names()).await.unwrap();
    let mut consumer = stream.consumer_info(bus.names().consumer_indexer()).await.unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.num_ack_pending > 0 {
        assert!(Instant::now() < deadline, "still waiting for acks: {consumer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        consumer = stream.consumer_info(bus.names().consumer_indexer()).await.unwrap().clone();
    }
    assert_eq!(consumer.num_redelivered, 0);

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), indexer).await.expect("the indexer stops").unwrap().unwrap();
}
