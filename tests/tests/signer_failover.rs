//! One writer at a time, and a standby that continues the same log: two receipt-signers
//! share the lease; the leader is SIGKILLed under a steady load of jobs; the standby takes
//! over. Afterwards every operation has exactly one receipt, the leaves are contiguous,
//! and every checkpoint is the root of the log up to its size. The old leader, restarted
//! on its stale state, stands by; when the second leader dies too, it catches up from the
//! stream and continues the log.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsync_client::{IndexClient, JobClient};
use hsync_e2e::{check_log, Cluster};
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::names::services;
use hsync_protocol::receipt::SignedBatch;

fn job(x: f64, wait_receipts: bool) -> Job {
    serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": wait_receipts,
        "nodes": [{"id": "d", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": [x, 0.1]}}]
    }))
    .unwrap()
}

/// The `$SRV.STATS` data of every receipt-signer that answers.
async fn signer_stats(c: &Cluster) -> Vec<serde_json::Value> {
    hsync_client::discovery::collect(c.bus.primary(), "STATS", services::RECEIPT_SIGNER, Duration::from_millis(300))
        .await
        .expect("stats")
        .into_iter()
        .map(|s| s["endpoints"][0]["data"].clone())
        .collect()
}

/// Waits until `count` signers answer and exactly one leads; returns the leader's id.
async fn wait_for_leader(c: &Cluster, count: usize, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = signer_stats(c).await;
        let leaders: Vec<_> = stats.iter().filter(|s| s["role"] == "leader").collect();
        if stats.len() == count && leaders.len() == 1 {
            let id = leaders[0]["signer_id"].as_str().unwrap().to_string();
            if not != Some(id.as_str()) {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "expected {count} signers with one leader, got {stats:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn all_batches(c: &Cluster) -> Vec<SignedBatch> {
    hsync_testkit::cluster::signed_batches(&c.bus).await.expect("signed batches")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_continues_the_log_when_the_leader_dies() {
    let mut c = Cluster::start_with(&[("HSYNC_SIGNER_LEASE_MS", "1000")]).await.expect("cluster starts");
    let keys = hsync_receipts::keys::read_verifier_keys(&c.signer_vkey_path()).expect("verifier key");
    // The standby: its own state directory, the same key.
    let standby_dir = c.dir.path().join("signer-b");
    std::fs::create_dir_all(&standby_dir).unwrap();
    std::fs::copy(c.dir.path().join("signer").join("signer.key"), standby_dir.join("signer.key")).unwrap();
    c.start_replica("receipt-signer", "receipt-signer-b", &[("HSYNC_SIGNER_DIR", standby_dir.to_str().unwrap())])
        .expect("standby starts");
    let first_leader = wait_for_leader(&c, 2, None).await;
    assert!(first_leader.ends_with("/signer"), "the first signer leads: {first_leader}");

    let client = JobClient::new(c.bus.clone());
    let r = client.run(&job(0.01, true), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    let mut expected: BTreeSet<String> = r.receipts.iter().map(|r| r.operation_id.clone()).collect();

    // A steady load of jobs; the leader dies after the tenth.
    let done = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (client, done) = (client.clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let r = client.run(&job(0.02 + i as f64 * 0.01, false), Duration::from_secs(30)).await.expect("job runs");
                assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
                done.lock().unwrap().extend(r.nodes.iter().filter_map(|n| n.operation_id.clone()));
            }
        })
    };
    while done.lock().unwrap().len() < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.kill("receipt-signer");
    load.await.expect("the load finishes");
    expected.extend(done.lock().unwrap().iter().cloned());
    assert_eq!(expected.len(), 41);

    let second_leader = wait_for_leader(&c, 1, Some(&first_leader)).await;
    assert!(second_leader.ends_with("/signer-b"), "{second_leader}");
    // Records the dead leader held come back after the consumer's ack wait (30 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    let batches = loop {
        let batches = all_batches(&c).await;
        let (signed, _) = check_log(&batches, &keys);
        if expected.is_subset(&signed) {
            assert_eq!(signed.len(), expected.len(), "no receipt for anything but these jobs");
            break batches;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} operations have receipts:\n{}",
            signed.len(),
            expected.len(),
            c.log("receipt-signer-b")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(c.log("receipt-signer-b").contains("took the receipt log over from"), "{}", c.log("receipt-signer-b"));

    // The indexer proves the first and the last checkpoint consistent.
    let (from, to) = (batches[0].checkpoint.tree_size, batches.last().unwrap().checkpoint.tree_size);
    let index = IndexClient::new(c.bus.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        match index.consistency(from, to).await {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "no consistency proof {from}..{to}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let proof: Vec<_> = reply.proof.iter().map(|h| h.0).collect();
    hsync_receipts::verify::verify_checkpoint_consistency(&reply.from.signed_note, &reply.to.signed_note, &proof, &keys)
        .expect("consistent");

    // The old leader comes back on its stale state and stands by.
    c.restart("receipt-signer").await.expect("restarts");
    assert_eq!(wait_for_leader(&c, 2, None).await, second_leader);
    // The second leader dies; the first catches up from the stream and continues.
    c.kill("receipt-signer-b");
    assert_eq!(wait_for_leader(&c, 1, Some(&second_leader)).await, first_leader);
    let r = client.run(&job(0.9, true), Duration::from_secs(60)).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    assert_eq!(r.receipts[0].leaf_index, to, "the log continues where it was");
    let log = c.log("receipt-signer");
    assert!(log.contains(&format!("resuming the log at tree size {to} from the stream")), "{log}");
    let (ops, _) = check_log(&all_batches(&c).await, &keys);
    assert_eq!(ops.len(), expected.len() + 1);
}
