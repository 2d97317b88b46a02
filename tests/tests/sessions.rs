//! Incremental job sessions: a job run with `keep_session` grows through
//! `hsync.jobs.extend`; only new nodes run, earlier outputs are reused, and refused
//! extensions leave the session as it was.

use std::time::Duration;

use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{ExtendJob, Job, JobResult, JobStatus, NodeStatus};
use hsync_protocol::{ErrorCode, ErrorReply};

const WAIT: Duration = Duration::from_secs(30);

fn extension(job_id: &str, outputs: &[&str], nodes: serde_json::Value) -> ExtendJob {
    ExtendJob {
        job_id: job_id.into(),
        nodes: serde_json::from_value(nodes).expect("test nodes parse"),
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
    }
}

/// The runner's `$SRV.STATS` figures (the data of its endpoints).
async fn runner_nodes(c: &Cluster) -> u64 {
    c.runner_stats().await.expect("one runner answers")["nodes"]
        .as_u64()
        .expect("a nodes counter")
}

fn ran(r: &JobResult) -> Vec<&str> {
    r.nodes.iter().map(|n| n.node_id.as_str()).collect()
}

fn vector(r: &JobResult, id: &str) -> Vec<f64> {
    r.outputs.get(id).unwrap_or_else(|| panic!("no output {id}: {r:#?}")).as_vector().expect("a vector")
}

fn scalar(r: &JobResult, id: &str) -> f64 {
    r.outputs.get(id).unwrap_or_else(|| panic!("no output {id}: {r:#?}")).as_f64().expect("a number")
}

async fn refused(jobs: &JobClient, req: &ExtendJob) -> ErrorReply {
    match jobs.extend(req, WAIT).await {
        Ok(r) => panic!("extension accepted: {r:#?}"),
        Err(e) => e.to_reply(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_job_grows_and_reruns_nothing_old() {
    let c = Cluster::start().await.expect("cluster starts");
    let jobs = JobClient::new(c.bus.clone());

    let job: Job = serde_json::from_value(serde_json::json!({
        "job_id": "session-1",
        "submitter": "alice",
        "keep_session": true,
        "nodes": [
            {"id": "a", "op": "const", "args": {"value": {"lit": [1.0, 2.0]}}},
            {"id": "b", "op": "vec.scale", "args": {"v": {"ref": "a"}, "k": 2.0}},
            {"id": "n", "op": "vec.norm", "args": {"v": {"ref": "b"}}}
        ]
    }))
    .unwrap();
    assert!(job.keep_session);
    let r = jobs.run(&job, WAIT).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
    assert!((scalar(&r, "n") - 20f64.sqrt()).abs() < 1e-12);
    let nodes0 = runner_nodes(&c).await;
    assert_eq!(nodes0, 3);

    // First extension: references the original job's `b`; default outputs = new sinks.
    let ext1 = extension(
        "session-1",
        &[],
        serde_json::json!([
            {"id": "c", "op": "vec.scale", "args": {"v": {"ref": "b"}, "k": {"ref": "k"}}},
            {"id": "k", "op": "const", "args": {"value": 3.0}}
        ]),
    );
    let r1 = jobs.extend(&ext1, WAIT).await.expect("first extension runs");
    assert_eq!(r1.status, JobStatus::Succeeded, "{r1:#?}");
    assert_eq!(r1.job_id, "session-1");
    assert_eq!(r1.outputs.keys().collect::<Vec<_>>(), vec!["c"], "the new sink only");
    assert_eq!(vector(&r1, "c"), vec![6.0, 12.0]);
    assert_eq!(ran(&r1), vec!["k", "c"], "only the new nodes ran, dependencies first");
    assert!(r1.nodes.iter().all(|n| n.status == NodeStatus::Executed && n.operation_id.is_some()));
    assert_eq!(runner_nodes(&c).await, nodes0 + 2);

    // Second extension: references the first extension's `c` and the original `a`, and
    // asks for an old output too (served from the session, not re-run).
    let ext2 = extension(
        "session-1",
        &["m", "n", "d"],
        serde_json::json!([
            {"id": "d", "op": "vec.add", "args": {"a": {"ref": "c"}, "b": {"ref": "a"}}},
            {"id": "m", "op": "vec.norm", "args": {"v": {"ref": "d"}}}
        ]),
    );
    let r2 = jobs.extend(&ext2, WAIT).await.expect("second extension runs");
    assert_eq!(r2.status, JobStatus::Succeeded, "{r2:#?}");
    assert_eq!(vector(&r2, "d"), vec![7.0, 14.0]);
    assert!((scalar(&r2, "m") - 245f64.sqrt()).abs() < 1e-12);
    assert!((scalar(&r2, "n") - 20f64.sqrt()).abs() < 1e-12, "old output reused");
    assert_eq!(ran(&r2), vec!["d", "m"]);
    assert_eq!(runner_nodes(&c).await, nodes0 + 4);
    // Operation ids are per (job, node): new nodes get new ones.
    let mut ids: Vec<&str> = r.nodes.iter().chain(&r1.nodes).chain(&r2.nodes).filter_map(|n| n.operation_id.as_deref()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);

    // A reference that closes a cycle is refused, naming the nodes; nothing runs.
    let cyclic = extension(
        "session-1",
        &[],
        serde_json::json!([
            {"id": "x", "op": "vec.add", "args": {"a": {"ref": "y"}, "b": {"ref": "a"}}},
            {"id": "y", "op": "vec.scale", "args": {"v": {"ref": "x"}, "k": 2.0}}
        ]),
    );
    let e = refused(&jobs, &cyclic).await;
    assert_eq!(e.code, ErrorCode::Cycle, "{e:?}");
    assert!(e.message.contains("x -> y -> x") || e.message.contains("y -> x -> y"), "{}", e.message);
    assert_eq!(runner_nodes(&c).await, nodes0 + 4);

    // The session is left as it was: `x` and `y` are free ids, old outputs are reused.
    let ext3 = extension(
        "session-1",
        &[],
        serde_json::json!([
            {"id": "x", "op": "vec.add", "args": {"a": {"ref": "d"}, "b": {"ref": "b"}}},
            {"id": "y", "op": "vec.norm", "args": {"v": {"ref": "x"}}}
        ]),
    );
    let r3 = jobs.extend(&ext3, WAIT).await.expect("the session is still usable");
    assert_eq!(r3.status, JobStatus::Succeeded, "{r3:#?}");
    assert!((scalar(&r3, "y") - (81f64 + 324.0).sqrt()).abs() < 1e-12);
    assert_eq!(ran(&r3), vec!["x", "y"]);
    assert_eq!(runner_nodes(&c).await, nodes0 + 6);

    // An id the session already has → INVALID_JOB naming it.
    let dup = extension("session-1", &[], serde_json::json!([{"id": "a", "op": "const", "args": {"value": 1.0}}]));
    let e = refused(&jobs, &dup).await;
    assert_eq!((e.code, e.node.as_deref()), (ErrorCode::InvalidJob, Some("a")), "{e:?}");

    // A dangling reference → MISSING_REFERENCE naming node and argument.
    let dangling = extension(
        "session-1",
        &[],
        serde_json::json!([{"id": "z", "op": "vec.norm", "args": {"v": {"ref": "ghost"}}}]),
    );
    let e = refused(&jobs, &dangling).await;
    assert_eq!(e.code, ErrorCode::MissingReference, "{e:?}");
    assert_eq!((e.node.as_deref(), e.argument.as_deref()), (Some("z"), Some("v")));
    assert!(e.message.contains("ghost"), "{}", e.message);

    // No session → NOT_FOUND: an unknown job, and a job run without keep_session.
    let ghost = extension("no-such-job", &[], serde_json::json!([{"id": "q", "op": "const", "args": {"value": 1.0}}]));
    let e = refused(&jobs, &ghost).await;
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
    assert!(e.message.contains("no-such-job") && e.message.contains("keep_session"), "{}", e.message);
    let mut plain = job.clone();
    plain.job_id = "no-session".into();
    plain.keep_session = false;
    assert_eq!(jobs.run(&plain, WAIT).await.expect("runs").status, JobStatus::Succeeded);
    let e = refused(&jobs, &extension("no-session", &[], serde_json::json!([{"id": "q", "op": "const", "args": {"value": 1.0}}]))).await;
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");

    // Every refused extension ran nothing.
    assert_eq!(runner_nodes(&c).await, nodes0 + 6 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_extensions_of_one_session_are_serialized() {
    let c = Cluster::start().await.expect("cluster starts");
    let jobs = JobClient::new(c.bus.clone());
    let job: Job = serde_json::from_value(serde_json::json!({
        "job_id": "session-2",
        "keep_session": true,
        "nodes": [{"id": "a", "op": "const", "args": {"value": {"lit": [1.0, 1.0]}}}]
    }))
    .unwrap();
    jobs.run(&job, WAIT).await.expect("job runs");
    // Ten extensions at once, each adding one node on `a`; plus one that reuses an id
    // another adds, so exactly one of the pair wins.
    let mut calls = Vec::new();
    for i in 0..10 {
        let req = extension(
            "session-2",
            &[],
            serde_json::json!([{"id": format!("s{i}"), "op": "vec.scale", "args": {"v": {"ref": "a"}, "k": i as f64}}]),
        );
        let jobs = jobs.clone();
        calls.push(tokio::spawn(async move { jobs.extend(&req, WAIT).await }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.unwrap().expect("extension runs");
        assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
        assert_eq!(vector(&r, &format!("s{i}")), vec![i as f64, i as f64]);
        assert_eq!(r.nodes.len(), 1);
    }
    let a = extension("session-2", &[], serde_json::json!([{"id": "same", "op": "const", "args": {"value": 1.0}}]));
    let (x, y) = tokio::join!(jobs.extend(&a, WAIT), jobs.extend(&a, WAIT));
    let outcomes = [x.map(|_| ()).map_err(|e| e.to_reply().code), y.map(|_| ()).map_err(|e| e.to_reply().code)];
    assert!(outcomes.contains(&Ok(())), "{outcomes:?}");
    assert!(outcomes.contains(&Err(ErrorCode::InvalidJob)), "{outcomes:?}");
}
