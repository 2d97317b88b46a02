//! Audit queries through the `hsync audit` CLI against a whole installation, and the
//! indexer rebuilding a deleted index from the receipts stream and mirroring the operator
//! registry.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hsync_client::registry::OperatorRegistry;
use hsync_client::{IndexClient, JobClient};
use hsync_e2e::Cluster;
use hsync_protocol::audit::{OperatorsQuery, MAX_PAGE};
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::operator::{OperatorDef, Provider};
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

fn external(id: &str, capabilities: &[&str]) -> OperatorDef {
    OperatorDef {
        id: id.to_string(),
        version: "1".to_string(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        deterministic: true,
        cacheable: true,
        provider: Provider::Nats { subject: format!("hsync.test.{id}"), batch_subject: None },
        args: vec![],
        cost_hint: 1,
        description: String::new(),
    }
}

/// Polls the index until `check` holds for what it says about the operators.
async fn until_index(c: &Cluster, what: &str, check: impl Fn(&[OperatorDef]) -> bool) -> Vec<OperatorDef> {
    let index = IndexClient::new(c.bus.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = index.operators(&OperatorsQuery { limit: MAX_PAGE, ..Default::default() }).await;
        if let Ok(page) = &page {
            assert!(page.next_cursor.is_none(), "more operators than one page");
            if check(&page.operators) {
                return page.operators.clone();
            }
        }
        assert!(Instant::now() < deadline, "the index never showed {what}: {page:?}\n{}", c.log("indexer"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(defs: &[OperatorDef]) -> Vec<String> {
    defs.iter().map(|d| d.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_mirrors_the_operator_registry() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let registry = OperatorRegistry::new(c.bus.clone());
    let index = IndexClient::new(c.bus.clone());

    // The runner's built-ins, exactly as the registry holds them.
    let registered = registry.list().await.unwrap();
    assert!(registered.len() > 10, "{registered:?}");
    let mirrored = until_index(&c, "the built-ins", |d| d.len() == registered.len()).await;
    assert_eq!(mirrored, registered);
    let distance = index.operator("geo.poincare.distance").await.unwrap().expect("mirrored");
    assert_eq!(Some(&distance), registered.iter().find(|d| d.id == "geo.poincare.distance"));
    assert_eq!(index.operator("no.such.op").await.unwrap(), None);

    // By capability, through the CLI: every row declares it.
    let cap = distance.capabilities[0].clone();
    let table = ok(&c.hsync(&["audit", "operators", "--capability", &cap], ""));
    let expected: Vec<_> = registered.iter().filter(|d| d.capabilities.contains(&cap)).map(|d| d.id.clone()).collect();
    let listed: Vec<_> = table.lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    assert_eq!(listed, expected, "{table}");
    let shown: OperatorDef = serde_json::from_str(&ok(&c.hsync(&["audit", "operator", "geo.poincare.distance"], ""))).unwrap();
    assert_eq!(shown, distance);
    let out = c.hsync(&["audit", "operator", "no.such.op"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no operator no.such.op"));

    // Register, change capabilities, remove: the index follows each change.
    registry.register(&external("ext.upper", &["audit-test", "text"])).await.unwrap();
    until_index(&c, "ext.upper", |d| ids(d).contains(&"ext.upper".to_string())).await;
    let page = index.operators(&OperatorsQuery { capability: Some("audit-test".into()), ..Default::default() }).await.unwrap();
    assert_eq!(ids(&page.operators), ["ext.upper"]);
    registry.register(&external("ext.upper", &["text"])).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !index.operators(&OperatorsQuery { capability: Some("audit-test".into()), ..Default::default() }).await.unwrap().operators.is_empty() {
        assert!(Instant::now() < deadline, "the dropped capability still lists ext.upper");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(registry.remove("ext.upper").await.unwrap());
    until_index(&c, "ext.upper removed", |d| !ids(d).contains(&"ext.upper".to_string())).await;

    // Changes made while the indexer is down are there after it restarts.
    registry.register(&external("ext.old", &["text"])).await.unwrap();
    until_index(&c, "ext.old", |d| ids(d).contains(&"ext.old".to_string())).await;
    c.kill("indexer");
    assert!(registry.remove("ext.old").await.unwrap());
    registry.register(&external("ext.new", &["text"])).await.unwrap();
    c.restart("indexer").await.expect("indexer restarts");
    let after = until_index(&c, "ext.new and not ext.old", |d| {
        ids(d).contains(&"ext.new".to_string()) && !ids(d).contains(&"ext.old".to_string())
    })
    .await;
    assert_eq!(after.len(), registered.len() + 1);

    // Hostile queries get clear errors; the indexer keeps serving.
    let long = "c".repeat(300);
    let err = index.operators(&OperatorsQuery { capability: Some(long), ..Default::default() }).await.unwrap_err();
    assert!(err.to_string().contains("capability must be 1-256 characters"), "{err}");
    let err = index
        .operators(&OperatorsQuery { cursor: Some("not hex".into()), ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid page cursor"), "{err}");
    let stats = index.stats().await.unwrap();
    assert_eq!(stats.operators, after.len() as u64);
}
