//! Audit queries through the `hsync audit` CLI against a whole installation, and the
//! indexer rebuilding a deleted index from the receipts stream.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hsync_client::{IndexClient, JobClient};
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::receipt::Receipt;

fn job(x: f64) -> Job {
    serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": true,
        "nodes": [
            {"id": "d", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": [x, 0.1]}},
            {"id": "s", "op": "vec.scale", "args": {"v": [x, 1.0], "k": 2.0}}
        ]
    }))
    .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_lines(text: &str) -> Vec<Receipt> {
    text.lines().map(|l| serde_json::from_str(l).expect("a receipt per line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_queries_answer_and_an_empty_index_rebuilds_from_the_stream() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let client = JobClient::new(c.bus.clone());
    let mut ops = HashSet::new();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let r = client.run(&job(0.1 * (i + 1) as f64), Duration::from_secs(30)).await.expect("job runs");
        assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
        ops.extend(r.receipts.iter().map(|r| r.operation_id.clone()));
        jobs.push(r.job_id);
    }
    assert_eq!(ops.len(), 6);

    // Everything of the last hour, two per page.
    let all = json_lines(&ok(&c.hsync(&["audit", "time", "--from", "-1h", "--json", "--page", "2"], "")));
    assert_eq!(all.iter().map(|r| r.operation_id.clone()).collect::<HashSet<_>>(), ops);
    let starts: Vec<u64> = all.iter().map(|r| r.record().unwrap().started_at_us).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "start order: {starts:?}");
    // One operator; the table form names it on every row.
    let distance = json_lines(&ok(&c.hsync(&["audit", "time", "--operator", "geo.poincare.distance@1", "--json"], "")));
    assert_eq!(distance.len(), 3);
    assert!(distance.iter().all(|r| r.record().unwrap().operator == "geo.poincare.distance@1"));
    let table = ok(&c.hsync(&["audit", "time", "--operator", "geo.poincare.distance@1"], ""));
    assert_eq!(table.lines().filter(|l| l.contains("geo.poincare.distance@1")).count(), 3, "{table}");
    // A window in the future is empty; a reversed one is refused.
    assert_eq!(json_lines(&ok(&c.hsync(&["audit", "time", "--from", "now", "--to", "2200-01-01T00:00:00Z", "--json"], ""))).len(), 0);
    let out = c.hsync(&["audit", "time", "--from", "now", "--to", "-1h"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is after --to"));
    let out = c.hsync(&["audit", "time", "--from", "yesterday"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a time"));

    // By job, by id, by operation; the checkpoint and the statistics agree.
    let of_job = json_lines(&ok(&c.hsync(&["audit", "job", &jobs[1], "--json"], "")));
    assert_eq!(of_job.len(), 2);
    let by_id: Receipt = serde_json::from_str(&ok(&c.hsync(&["audit", "receipt", "--id", &of_job[0].leaf_index.to_string()], ""))).unwrap();
    assert_eq!(by_id, of_job[0]);
    let by_op: Receipt = serde_json::from_str(&ok(&c.hsync(&["audit", "receipt", "--operation", &of_job[1].operation_id], ""))).unwrap();
    assert_eq!(by_op, of_job[1]);
    let out = c.hsync(&["audit", "receipt", "--id", "999999"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no receipt with id 999999"));
    let stats: serde_json::Value = serde_json::from_str(&ok(&c.hsync(&["audit", "stats"], ""))).unwrap();
    assert_eq!(stats["receipts"], 6);
    let latest: serde_json::Value = serde_json::from_str(&ok(&c.hsync(&["audit", "checkpoint"], ""))).unwrap();
    assert_eq!(latest["tree_size"], stats["tree_size"]);
    let size = of_job[0].tree_size.to_string();
    let at: serde_json::Value = serde_json::from_str(&ok(&c.hsync(&["audit", "checkpoint", &size], ""))).unwrap();
    assert_eq!(at["signed_note"].as_str(), Some(of_job[0].checkpoint.as_str()));

    // The index is lost: the indexer starts empty and replays the whole stream.
    c.kill("indexer");
    std::fs::remove_dir_all(c.dir.path().join("index")).unwrap();
    c.restart("indexer").await.expect("indexer restarts");
    let index = IndexClient::new(c.bus.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while index.stats().await.map(|s| s.receipts).unwrap_or(0) < 6 {
        assert!(Instant::now() < deadline, "the index was not rebuilt:\n{}", c.log("indexer"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for op in &ops {
        assert!(index.receipt_by_operation(op).await.unwrap().is_some(), "{op} not rebuilt");
    }
    assert!(c.log("indexer").contains("replaying the receipts stream from the start"), "{}", c.log("indexer"));
}
