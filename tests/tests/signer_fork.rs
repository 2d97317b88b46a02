//! A receipt-signer started on stale state (a restored backup) must not fork the log. It
//! resumes from the last batch in the stream instead (the stream is the log's truth), so
//! its next batch continues the published log. Before the signer resumed from the stream,
//! its first new batch ended at a tree size already published and would have forked it.

use std::time::Duration;

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
async fn a_signer_on_stale_state_continues_the_published_log() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let first = tree_size_after(&c, 0.1).await;

    // Back up the state, let the log grow, then put the backup back.
    let state = c.dir.path().join("signer").join("log-state.msgpack");
    c.kill("receipt-signer");
    let backup = std::fs::read(&state).expect("state file");
    c.restart("receipt-signer").await.expect("signer restarts");
    let second = tree_size_after(&c, 0.2).await;
    assert_eq!(second, first + 1);
    c.kill("receipt-signer");
    std::fs::write(&state, backup).unwrap();
    c.restart("receipt-signer").await.expect("signer restarts on the stale state");

    // Its next receipt continues the published log.
    let third = tree_size_after(&c, 0.3).await;
    assert_eq!(third, second + 1);
    let log = c.log("receipt-signer");
    assert!(log.contains(&format!("resuming the log at tree size {second} from the stream (this signer's state was at {first})")), "{log}");
}
