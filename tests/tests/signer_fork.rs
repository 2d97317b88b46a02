//! A receipt-signer started on stale state (a restored backup) must not fork the log: its
//! first new batch ends at a tree size that was already published, JetStream reports the
//! duplicate, and the signer stops instead of acking records whose receipts were dropped.

use std::time::{Duration, Instant};

use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};

fn job(x: f64, wait_receipts: bool) -> Job {
    serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": wait_receipts,
        "nodes": [{"id": "d", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": [x, 0.2]}}]
    }))
    .unwrap()
}

async fn tree_size_after(c: &Cluster, x: f64) -> u64 {
    let r = JobClient::new(c.bus.clone()).run(&job(x, true), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    r.receipts[0].tree_size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_on_stale_state_stops_instead_of_forking() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let first = tree_size_after(&c, 0.1).await;

    // Back up the state, let the log grow, then put the backup back.
    let state = c.dir.path().join("signer").join("log-state.json");
    c.kill("receipt-signer");
    let backup = std::fs::read(&state).expect("state file");
    c.restart("receipt-signer").await.expect("signer restarts");
    let second = tree_size_after(&c, 0.2).await;
    assert_eq!(second, first + 1);
    c.kill("receipt-signer");
    std::fs::write(&state, backup).unwrap();
    c.restart("receipt-signer").await.expect("signer restarts on the stale state");

    // Its next batch would end at `second` again, with a different leaf.
    let r = JobClient::new(c.bus.clone()).run(&job(0.3, false), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = c.log("receipt-signer");
        if log.contains("stopping so the log does not fork") {
            assert!(log.contains(&format!("tree size {second}")), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "the signer did not refuse the fork:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
