//! Leadership against a real nats-server: a signer whose lease another holder takes stands
//! by and signs nothing until the lease is free again; a batch published by someone else
//! while it leads is caught by the expected-sequence check, and the signer resumes from the
//! stream instead of forking the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use hsync_protocol::names::services;
use hsync_protocol::receipt::SignedBatch;
use hsync_protocol::record::OperationRecord;
use hsync_testkit::NatsServer;
use receipt_signer::lease::LEASE_KEY;
use receipt_signer::{run, Signer, SignerConfig};

async fn publish_record(bus: &Bus, id: &str) {
    let mut record: OperationRecord =
        serde_json::from_str(include_str!("../../../proto-schemas/examples/OperationRecord.executed.json")).unwrap();
    record.operation_id = id.to_string();
    bus.js_publish(&bus.jetstream(), bus.names().ops_records(), &record, Some(id)).await.expect("record published");
}

async fn batches(bus: &Bus) -> Vec<SignedBatch> {
    hsync_testkit::cluster::signed_batches(bus).await.expect("signed batches")
}

async fn wait_for_receipt(bus: &Bus, id: &str) -> Vec<SignedBatch> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = batches(bus).await;
        if all.iter().any(|b| b.receipts.iter().any(|r| r.operation_id == id)) {
            return all;
        }
        assert!(Instant::now() < deadline, "no receipt for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stats(bus: &Bus) -> serde_json::Value {
    hsync_testkit::cluster::service_stats(bus, services::RECEIPT_SIGNER).await.expect("one signer's stats")
}

async fn wait_for_role(bus: &Bus, role: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(bus).await;
        if s["role"] == role {
            return s;
        }
        assert!(Instant::now() < deadline, "expected the signer to become {role}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_stands_by_without_the_lease_and_is_fenced_by_a_foreign_batch() {
    let nats = NatsServer::start().expect("nats-server");
    let config = BusConfig::for_url(&nats.url());
    let client = Arc::new(Bus::connect(&config, "leadership-test").await.expect("connect"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = SignerConfig {
        state_dir: dir.path().to_path_buf(),
        key_file: None,
        origin: "test.example/log".into(),
        batch_size: 10,
        batch_window_ms: 5,
        lease_ttl_ms: 600,
        signer_id: Some("signer-a".into()),
    };
    streams::records_stream(&client.jetstream(), client.names()).await.expect("records stream");
    streams::receipts_stream(&client.jetstream(), client.names()).await.expect("receipts stream");
    let signer = Signer::open(&cfg).expect("signer opens");
    let bus = Arc::new(Bus::connect(&config, "signer-a").await.expect("connect"));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(bus, signer, cfg, shutdown.signal()));

    publish_record(&client, "op-1").await;
    let first = wait_for_receipt(&client, "op-1").await;
    assert_eq!(first.len(), 1);
    let s = wait_for_role(&client, "leader").await;
    assert_eq!((s["signer_id"].as_str(), s["terms"].as_u64()), (Some("signer-a"), Some(1)));

    // Someone else appends a batch (a copy of the last one, under another message id).
    client
        .js_publish(&client.jetstream(), client.names().receipts_batches(), &first[0], Some("foreign"))
        .await
        .expect("foreign batch");
    publish_record(&client, "op-2").await;
    let all = wait_for_receipt(&client, "op-2").await;
    // The signer's batch was refused once (a new term), then continued after the copy.
    assert_eq!(all.len(), 3, "{:?}", all.iter().map(|b| b.checkpoint.tree_size).collect::<Vec<_>>());
    assert_eq!(all[2].checkpoint.tree_size, 2);
    assert_eq!(all[2].receipts[0].leaf_index, 1);
    assert_eq!(stats(&client).await["terms"].as_u64(), Some(2));

    // Another holder takes the lease and keeps renewing it: the signer stands by.
    let lease = streams::signer_lease_bucket(&client.jetstream(), client.names()).await.expect("bucket");
    let intruder = tokio::spawn({
        let lease = lease.clone();
        async move {
            loop {
                lease.put(LEASE_KEY, "intruder".into()).await.expect("put");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    wait_for_role(&client, "standby").await;
    publish_record(&client, "op-3").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        batches(&client).await.iter().all(|b| b.receipts.iter().all(|r| r.operation_id != "op-3")),
        "a standby signed"
    );

    // The intruder falls silent: after one TTL the signer takes the log back.
    intruder.abort();
    let all = wait_for_receipt(&client, "op-3").await;
    assert_eq!(all.last().unwrap().checkpoint.tree_size, 3);
    let s = wait_for_role(&client, "leader").await;
    assert_eq!(s["terms"].as_u64(), Some(3));

    shutdown.trigger();
    task.await.unwrap().expect("the signer stops cleanly");
    // It released the lease on the way out.
    let entry = lease.entry(LEASE_KEY).await.expect("entry");
    assert!(entry.is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put), "lease still held");
}
