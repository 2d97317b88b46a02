//! Crashes: services killed with SIGKILL in the middle of work lose no durable job and no
//! receipt, and produce no duplicate receipt.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hsync_client::{IndexClient, JobClient};
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};

/// A four-step job whose inputs differ per job (so nothing is served from the cache).
fn chain_job(i: usize) -> Job {
    serde_json::from_value(serde_json::json!({
        "job_id": format!("crash-{i}"),
        "submitter": "alice",
        "nodes": [
            {"id": "a", "op": "const", "args": {"value": {"lit": [i as f64, 1.0, 2.0]}}},
            {"id": "b", "op": "vec.scale", "args": {"v": {"ref": "a"}, "k": 3.0}},
            {"id": "c", "op": "vec.add", "args": {"a": {"ref": "a"}, "b": {"ref": "b"}}},
            {"id": "n", "op": "vec.norm", "args": {"v": {"ref": "c"}}}
        ]
    }))
    .expect("job parses")
}

const JOBS: usize = 100;
const STEPS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runner_and_signer_lose_nothing_and_duplicate_nothing() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let jobs = JobClient::new(c.bus.clone());
    for i in 0..JOBS / 2 {
        jobs.submit(&chain_job(i)).await.expect("accepted");
    }
    // Crash the runner while it works through the queue, and the signer while records
    // are waiting to be signed.
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.kill("operator-runner");
    for i in JOBS / 2..JOBS {
        jobs.submit(&chain_job(i)).await.expect("accepted while the runner is down");
    }
    c.restart("operator-runner").await.expect("runner restarts");
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.kill("receipt-signer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.restart("receipt-signer").await.expect("signer restarts");

    // Every job has its result, and its result is right.
    for i in 0..JOBS {
        let id = format!("crash-{i}");
        let r = jobs
            .wait_result(&id, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("job {id} lost:\n{}", c.log("operator-runner")));
        assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
        let x = i as f64;
        let want = (16.0 * (x * x + 1.0 + 4.0)).sqrt();
        let got = r.outputs["n"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "job {id}: {got} vs {want}");
    }

    // Every step has exactly one receipt: the log holds JOBS × STEPS leaves, no more.
    let index = IndexClient::new(c.bus.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = index.stats().await.expect("indexer answers");
        if stats.receipts >= (JOBS * STEPS) as u64 || Instant::now() > deadline {
            assert_eq!(stats.receipts, (JOBS * STEPS) as u64, "receipts in the index");
            assert_eq!(stats.tree_size, (JOBS * STEPS) as u64, "leaves in the log: no duplicates");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..JOBS {
        let page = index.receipts_by_job(&format!("crash-{i}"), None, 100).await.unwrap();
        let ops: BTreeSet<&str> = page.receipts.iter().map(|r| r.operation_id.as_str()).collect();
        assert_eq!(ops.len(), STEPS, "job crash-{i}: one receipt per step");
        assert_eq!(page.receipts.len(), STEPS, "job crash-{i}: no duplicate receipt");
    }
}
