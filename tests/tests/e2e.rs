//! One job through all five services over a real nats-server, with receipts verified
//! offline, traces collected over OTLP, and hostile input rejected with stable codes.

use std::time::Duration;

use hsync_client::{IndexClient, JobClient};
use hsync_e2e::Cluster;
use hsync_protocol::codec::{decode_error, headers};
use hsync_protocol::job::{Job, JobResult, JobStatus, NodeStatus};
use hsync_protocol::receipt::Receipt;
use hsync_protocol::{ErrorCode, ErrorReply, Hash32, Value};
use hsync_receipts::note::VerifierKey;

fn job(v: serde_json::Value) -> Job {
    serde_json::from_value(v).expect("test job parses")
}

fn demo_job() -> Job {
    job(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": true,
        "nodes": [
            {"id": "a", "op": "const", "args": {"value": {"lit": [0.1, 0.2]}}},
            {"id": "b", "op": "vec.scale", "args": {"v": {"ref": "a"}, "k": 2.0}},
            {"id": "norm", "op": "vec.norm", "args": {"v": {"ref": "b"}}},
            {"id": "dist", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": {"ref": "b"}}},
            {"id": "path", "op": "geo.geodesic", "args": {"x": {"ref": "a"}, "y": [-0.3, 0.1], "n": 5}}
        ]
    }))
}

async fn run(c: &Cluster, j: &Job) -> Result<JobResult, hsync_bus::BusError> {
    JobClient::new(c.bus.clone()).run(j, Duration::from_secs(30)).await
}

fn verify(receipt: &Receipt, key: &VerifierKey) -> Result<(), String> {
    let proof: Vec<[u8; 32]> = receipt.inclusion_proof.iter().map(|h| h.0).collect();
    let cp = hsync_receipts::verify::verify_receipt(&receipt.leaf.0, receipt.leaf_index, &proof, &receipt.checkpoint, key)
        .map_err(|e| e.to_string())?;
    if cp.size != receipt.tree_size {
        return Err(format!("size {} vs {}", cp.size, receipt.tree_size));
    }
    Ok(())
}

fn float(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("expected a number, got {v:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_all_five_services_with_verified_receipts() {
    let c = Cluster::start().await.expect("cluster starts");
    let result = run(&c, &demo_job()).await.expect("job runs");
    assert_eq!(result.status, JobStatus::Succeeded, "{result:#?}");

    // Outputs are right: the sinks are norm, dist and path.
    let b = [0.2f64, 0.4];
    let norm = (b[0] * b[0] + b[1] * b[1]).sqrt();
    assert!((float(&result.outputs["norm"]) - norm).abs() < 1e-12);
    let expected_dist = 2.0 * norm.atanh(); // d(0, p) = 2 artanh(|p|) for c = 1
    assert!((float(&result.outputs["dist"]) - expected_dist).abs() < 1e-9, "{:?}", result.outputs["dist"]);
    let (rows, cols, pts) = result.outputs["path"].as_matrix().expect("geodesic is a matrix");
    assert_eq!((rows, cols), (5, 2));
    assert!((pts[0] - 0.1).abs() < 1e-12 && (pts[1] - 0.2).abs() < 1e-12, "starts at x: {pts:?}");
    assert!((pts[8] + 0.3).abs() < 1e-9 && (pts[9] - 0.1).abs() < 1e-9, "ends at y: {pts:?}");
    assert!(!result.trace_id.is_empty());

    // Every executed node has a receipt that verifies offline, with the key the signer
    // serves and with the key file it wrote.
    assert_eq!(result.nodes.len(), 5);
    assert!(result.nodes.iter().all(|n| n.status == NodeStatus::Executed), "{:#?}", result.nodes);
    assert_eq!(result.receipts.len(), 5, "{result:#?}");
    let index = IndexClient::new(c.bus.clone());
    let served = index.verifier_keys().await.expect("keys");
    let key = VerifierKey::parse(&served.keys[0]).expect("served key parses");
    let file_key = std::fs::read_to_string(c.signer_vkey_path()).expect("vkey file");
    assert_eq!(file_key.trim(), served.keys[0]);
    for n in &result.nodes {
        let op = n.operation_id.as_ref().expect("operation id");
        let r = result.receipts.iter().find(|r| &r.operation_id == op).expect("receipt for every node");
        verify(r, &key).unwrap_or_else(|e| panic!("receipt of {} does not verify: {e}", n.node_id));
        let record = r.record().expect("record decodes");
        assert_eq!(record.node_id, n.node_id);
        assert_eq!(record.job_id, result.job_id);
        assert_eq!(record.trace_id, result.trace_id);
        // The indexer finds it by operation id.
        let found = index.receipt_by_operation(op).await.expect("lookup").expect("indexed");
        assert_eq!(&found, r);
    }

    // A tampered receipt fails, naming the step.
    let mut bad = result.receipts[0].clone();
    bad.leaf.0[3] ^= 1;
    let err = verify(&bad, &key).unwrap_err();
    assert!(err.contains("step"), "{err}");
    let mut bad = result.receipts[0].clone();
    bad.checkpoint = bad.checkpoint.replacen('\n', "\n ", 1);
    assert!(verify(&bad, &key).is_err());
    if let Some(h) = result.receipts.iter().find_map(|r| r.inclusion_proof.first()) {
        let mut bad = result.receipts.iter().find(|r| r.inclusion_proof.first() == Some(h)).unwrap().clone();
        bad.inclusion_proof[0] = Hash32([0; 32]);
        assert!(verify(&bad, &key).is_err());
    }

    // The same job again is served from the runner's cache (deterministic operators).
    let mut again = demo_job();
    again.wait_receipts = false;
    let second = run(&c, &again).await.expect("second run");
    assert_eq!(second.status, JobStatus::Succeeded);
    assert!(second.nodes.iter().all(|n| n.cached && n.status == NodeStatus::Cached), "{:#?}", second.nodes);
    assert_eq!(second.outputs, result.outputs);
    assert_ne!(second.job_id, result.job_id);

    // Graceful shutdown: every service exits 0 on SIGTERM.
    let mut c = c;
    for (name, code) in c.stop_services() {
        assert_eq!(code, Some(0), "{name} did not exit cleanly:\n{}", c.log(&name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_all_five_services() {
    let c = Cluster::start().await.expect("cluster starts");
    let result = run(&c, &demo_job()).await.expect("job runs");
    assert_eq!(result.status, JobStatus::Succeeded);
    let trace = result.trace_id.clone();
    let want = ["operator-runner", "policy-evaluator", "geometry-cache", "receipt-signer", "indexer"];
    let ok = c
        .otlp
        .wait_for(
            // Spans arrive in batches, in no particular order: wait for every span the
            // assertions below look at, not only for one span per service.
            |spans| {
                want.iter()
                    .all(|s| spans.iter().any(|sp| sp.trace_id == trace && sp.service_name == *s))
                    && spans.iter().any(|sp| {
                        sp.trace_id == trace
                            && sp.service_name == "operator-runner"
                            && sp.name == "process hsync.jobs.run"
                    })
                    && ["receipt-signer", "indexer"].iter().all(|svc| {
                        spans.iter().any(|sp| {
                            sp.trace_id == trace
                                && sp.service_name == *svc
                                && sp.attributes.contains_key("hsync.operation_id")
                        })
                    })
            },
            Duration::from_secs(20),
        )
        .await;
    let spans = c.otlp.spans();
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).collect();
    assert!(
        ok,
        "trace {trace} should have spans from all five services; got: {:?}",
        in_trace.iter().map(|s| (&s.service_name, &s.name)).collect::<Vec<_>>()
    );
    // Messaging conventions and ids on the spans.
    let run_span = in_trace
        .iter()
        .find(|s| s.service_name == "operator-runner" && s.name == "process hsync.jobs.run")
        .expect("runner's process span");
    assert_eq!(run_span.attributes.get("messaging.system").map(String::as_str), Some("nats"));
    assert_eq!(run_span.attributes.get("messaging.destination.name").map(String::as_str), Some("hsync.jobs.run"));
    assert_eq!(run_span.attributes.get("hsync.job_id"), Some(&result.job_id));
    let op_ids: Vec<&String> = result.nodes.iter().filter_map(|n| n.operation_id.as_ref()).collect();
    for svc in ["receipt-signer", "indexer"] {
        assert!(
            in_trace.iter().any(|s| s.service_name == svc
                && s.attributes.get("hsync.operation_id").is_some_and(|id| op_ids.contains(&id))),
            "{svc} spans carry the operation id"
        );
    }
}

/// Sends raw bytes and returns the error reply.
async fn raw_error(c: &Cluster, body: Vec<u8>, json: bool) -> ErrorReply {
    let mut h = async_nats::HeaderMap::new();
    if json {
        h.insert(headers::CONTENT_TYPE, headers::JSON);
    }
    let msg = c
        .bus
        .primary()
        .request_with_headers(c.bus.names().jobs_run(), h, body.into())
        .await
        .expect("a reply");
    if json {
        // JSON in, JSON out.
        assert!(serde_json::from_slice::<serde_json::Value>(&msg.payload).is_ok(), "reply is JSON");
    }
    decode_error(msg.headers.as_ref(), &msg.payload).expect("an error reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_error_code_and_the_services_keep_serving() {
    let c = Cluster::start().await.expect("cluster starts");

    let e = raw_error(&c, b"\xc1\xff not msgpack".to_vec(), false).await;
    assert_eq!(e.code, ErrorCode::Malformed, "{e}");
    let e = raw_error(&c, br#"{"submitter":"x"}"#.to_vec(), true).await;
    assert_eq!(e.code, ErrorCode::Malformed);
    assert!(e.message.contains("nodes"), "names the missing field: {e}");
    let e = raw_error(&c, b"{".to_vec(), true).await;
    assert_eq!(e.code, ErrorCode::Malformed);

    let cases = [
        (
            serde_json::json!({"nodes": [{"id": "a", "op": "no.such.op", "args": {}}]}),
            ErrorCode::UnknownOperator,
            "no.such.op",
        ),
        (
            serde_json::json!({"nodes": [
                {"id": "a", "op": "vec.norm", "args": {"v": {"ref": "b"}}},
                {"id": "b", "op": "vec.scale", "args": {"v": {"ref": "a"}, "k": 1}}]}),
            ErrorCode::Cycle,
            "cycle",
        ),
        (
            serde_json::json!({"nodes": [{"id": "a", "op": "vec.norm", "args": {"v": {"ref": "ghost"}}}]}),
            ErrorCode::MissingReference,
            "ghost",
        ),
        (
            serde_json::json!({"nodes": [{"id": "a", "op": "vec.norm", "args": {"v": "not a vector"}}]}),
            ErrorCode::InvalidArgument,
            "argument `v`",
        ),
        (serde_json::json!({"nodes": []}), ErrorCode::InvalidJob, "no nodes"),
    ];
    for (j, code, needle) in cases {
        let body = serde_json::to_vec(&j).unwrap();
        let e = raw_error(&c, body, true).await;
        assert_eq!(e.code, code, "{j}: {e}");
        assert!(e.message.contains(needle), "{j}: message should mention {needle:?}: {e}");
    }

    // A reference whose value has the wrong type fails that node at run time, and the
    // independent branch still finishes.
    let j = job(serde_json::json!({"nodes": [
        {"id": "s", "op": "const", "args": {"value": "text"}},
        {"id": "bad", "op": "vec.norm", "args": {"v": {"ref": "s"}}},
        {"id": "after", "op": "vec.norm", "args": {"v": {"ref": "bad"}}},
        {"id": "ok", "op": "vec.norm", "args": {"v": [3.0, 4.0]}}
    ], "outputs": ["after", "ok"]}));
    let r = run(&c, &j).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(r.error.as_ref().map(|e| e.code), Some(ErrorCode::InvalidArgument));
    let status = |id: &str| r.nodes.iter().find(|n| n.node_id == id).map(|n| n.status);
    assert_eq!(status("bad"), Some(NodeStatus::Failed));
    assert_eq!(status("after"), Some(NodeStatus::Skipped));
    assert_eq!(r.outputs.get("ok"), Some(&Value::Float(5.0)));

    // A geometry error (point outside the ball) comes back as an argument error.
    let j = job(serde_json::json!({"nodes": [
        {"id": "d", "op": "geo.poincare.distance", "args": {"x": [2.0, 0.0], "y": [0.0, 0.0]}}]}));
    let r = run(&c, &j).await.expect("job runs");
    assert_eq!(r.error.as_ref().map(|e| e.code), Some(ErrorCode::InvalidArgument), "{r:#?}");

    // Every service still answers, and the next good job succeeds.
    let good = run(&c, &demo_job()).await.expect("good job");
    assert_eq!(good.status, JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_policy_denies_a_step_and_its_dependents() {
    let c = Cluster::start().await.expect("cluster starts");
    let js = c.bus.jetstream();
    let bucket = hsync_bus::streams::policies_bucket(&js, c.bus.names()).await.unwrap();
    bucket
        .put("policy.allow-all", "permit(principal, action, resource);".into())
        .await
        .unwrap();
    bucket
        .put(
            "policy.no-geometry-for-mallory",
            r#"forbid(principal == Hsync::User::"mallory", action, resource in Hsync::Capability::"geometry");"#.into(),
        )
        .await
        .unwrap();
    let j = |who: &str| {
        job(serde_json::json!({"submitter": who, "nodes": [
            {"id": "d", "op": "geo.poincare.distance", "args": {"x": [0.1, 0.0], "y": [0.0, 0.2]}},
            {"id": "s", "op": "vec.scale", "args": {"v": [1.0], "k": {"ref": "d"}}},
            {"id": "n", "op": "vec.norm", "args": {"v": [1.0, 0.0]}}
        ]}))
    };
    // The watch applies the change asynchronously: poll until it takes effect.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let denied = loop {
        let r = run(&c, &j("mallory")).await.expect("job runs");
        if r.status == JobStatus::Denied || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(denied.status, JobStatus::Denied, "{denied:#?}");
    let node = |id: &str| denied.nodes.iter().find(|n| n.node_id == id).unwrap().clone();
    assert_eq!(node("d").status, NodeStatus::Denied);
    assert!(node("d").decided_by.contains(&"no-geometry-for-mallory".to_string()), "{:?}", node("d"));
    assert_eq!(node("s").status, NodeStatus::Skipped);
    assert_eq!(node("n").status, NodeStatus::Executed);
    assert_eq!(denied.error.as_ref().map(|e| e.code), Some(ErrorCode::PolicyDenied));
    // Someone else is permitted.
    let ok = run(&c, &j("alice")).await.expect("job runs");
    assert_eq!(ok.status, JobStatus::Succeeded, "{ok:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_nats_micro_discovery() {
    let c = Cluster::start().await.expect("cluster starts");
    for name in hsync_protocol::names::services::ALL {
        let info = hsync_client::discovery::collect(c.bus.primary(), "INFO", name, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(info.len(), 1, "{name} answers $SRV.INFO once");
        let endpoints = info[0]["endpoints"].as_array().expect("endpoints");
        assert!(!endpoints.is_empty(), "{name} lists its endpoints");
        let stats = hsync_client::discovery::collect(c.bus.primary(), "STATS", name, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(stats.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_jobs_run_once_and_keep_their_result() {
    let c = Cluster::start().await.expect("cluster starts");
    let client = JobClient::new(c.bus.clone());
    let mut j = demo_job();
    j.wait_receipts = false;
    j.job_id = "durable-1".into();

    // Published twice with the same id: the stream keeps one, the runner runs it once.
    assert_eq!(client.submit(&j).await.unwrap(), "durable-1");
    assert_eq!(client.submit(&j).await.unwrap(), "durable-1");
    let published = client
        .wait_result("durable-1", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a result within 30 s");
    assert_eq!(published.status, JobStatus::Succeeded, "{published:#?}");
    let stored = client.result("durable-1").await.unwrap().expect("stored result");
    assert_eq!(stored.outputs, published.outputs);
    // Same outputs as the request/reply path.
    let direct = run(&c, &demo_job()).await.unwrap();
    assert_eq!(stored.outputs, direct.outputs);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.runner_stats().await.unwrap()["jobs"], 2, "one durable run plus one direct run");

    // An invalid durable job gets a stored `rejected` result naming what was wrong.
    let bad = job(serde_json::json!({
        "job_id": "durable-bad",
        "nodes": [{"id": "x", "op": "no.such.operator", "args": {}}]
    }));
    client.submit(&bad).await.unwrap();
    let r = client
        .wait_result("durable-bad", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a result for the rejected job");
    assert_eq!(r.status, JobStatus::Rejected);
    assert_eq!(r.error.as_ref().map(|e| e.code), Some(ErrorCode::UnknownOperator), "{r:#?}");
    assert!(r.nodes.is_empty());

    // A job id that cannot key a result is refused before publishing.
    let mut odd = demo_job();
    odd.job_id = "has spaces".into();
    let e = client.submit(&odd).await.unwrap_err();
    assert_eq!(e.to_reply().code, ErrorCode::InvalidJob);
    assert!(client.result("no-such-job").await.unwrap().is_none());
}
