//! Two evaluator replicas behind one subject, a real nats-server and the policy bucket:
//! decisions are cached, and a policy change reaches both replicas' caches — once both
//! report the change's revision as applied, no request gets the old decision.

use std::sync::Arc;
use std::time::Duration;

use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use hsync_protocol::names::POLICY_KEY_PREFIX;
use hsync_protocol::policy::{PolicyEvalReply, PolicyEvalRequest, PolicyQuery, Stage};
use hsync_protocol::Value;
use hsync_testkit::NatsServer;
use policy_evaluator::{load_and_follow, run, EvaluatorConfig, PolicyStore};

fn query(principal: &str, job: &str, curvature: f64) -> PolicyQuery {
    PolicyQuery {
        principal: principal.into(),
        stage: Stage::Pre,
        operator: "geo.distance".into(),
        capabilities: vec!["geometry".into()],
        context: [
            ("job_id".to_string(), Value::Str(job.into())),
            ("node_id".to_string(), Value::Str("n1".into())),
            ("curvature".to_string(), Value::Float(curvature)),
        ]
        .into_iter()
        .collect(),
    }
}

async fn ask(bus: &Bus, queries: Vec<PolicyQuery>) -> PolicyEvalReply {
    bus.request(bus.names().policy_evaluate(), &PolicyEvalRequest { queries }).await.expect("evaluate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_caches_of_both_replicas() {
    let nats = NatsServer::start().expect("nats-server");
    let config = BusConfig::for_url(&nats.url());
    let client = Arc::new(Bus::connect(&config, "replica-test-client").await.expect("connect"));
    let bucket = streams::policies_bucket(&client.jetstream(), client.names()).await.expect("bucket");
    let curvy = r#"permit(principal, action, resource) when { context has curvature && context.curvature.lessThan(decimal("2.0")) };"#;
    bucket.put(format!("{POLICY_KEY_PREFIX}curvy"), curvy.into()).await.expect("put");

    let shutdown = Shutdown::new();
    let mut replicas = Vec::new();
    for i in 0..2 {
        let bus = Arc::new(Bus::connect(&config, &format!("replica-{i}")).await.expect("connect"));
        let bucket = streams::policies_bucket(&bus.jetstream(), bus.names()).await.expect("bucket");
        let store = Arc::new(PolicyStore::new(EvaluatorConfig::default()));
        load_and_follow(store.clone(), bucket).await.expect("load");
        tokio::spawn(run(bus, store.clone(), shutdown.signal()));
        replicas.push(store);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Warm both caches: the same state from many jobs (the policy does not read job_id).
    for round in 0..20 {
        let reply = ask(&client, (0..8).map(|j| query("alice", &format!("job-{round}-{j}"), 1.5)).collect()).await;
        assert!(reply.decisions.iter().all(|d| d.allowed), "{reply:?}");
    }
    for (i, r) in replicas.iter().enumerate() {
        let hits = r.stats_json()["decision_cache"]["hits"].as_u64().unwrap();
        assert!(hits > 0, "replica {i} served no cached decision: {}", r.stats_json());
    }
    let reply = ask(&client, vec![query("alice", "job-x", 1.5)]).await;
    assert!(reply.decisions[0].cached, "a repeated state is answered from the cache: {reply:?}");

    // Tighten the bound. The write's revision is the acknowledgement to wait for.
    let tighter = curvy.replace("2.0", "1.0");
    let revision = bucket.put(format!("{POLICY_KEY_PREFIX}curvy"), tighter.into()).await.expect("put");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while replicas.iter().any(|r| r.stats_json()["applied_revision"].as_u64().unwrap() < revision) {
        assert!(tokio::time::Instant::now() < deadline, "the change was not applied within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // From now on no replica may answer with the old decision, cached or not.
    for round in 0..20 {
        let reply = ask(&client, (0..8).map(|j| query("alice", &format!("after-{round}-{j}"), 1.5)).collect()).await;
        for d in &reply.decisions {
            assert!(!d.allowed, "stale decision after the change was applied: {d:?}");
            assert_eq!(d.policies, ["default:deny"], "{d:?}");
        }
    }
    for (i, r) in replicas.iter().enumerate() {
        let stats = r.stats_json();
        assert!(
            stats["decision_cache"]["invalidated"].as_u64().unwrap() >= 1,
            "replica {i} kept the old version's entries: {stats}"
        );
    }
    // And a state the new bound allows is allowed on both.
    let reply = ask(&client, (0..8).map(|j| query("alice", &format!("ok-{j}"), 0.5)).collect()).await;
    assert!(reply.decisions.iter().all(|d| d.allowed), "{reply:?}");
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_finite_number_denies_and_a_batch_is_answered_in_order() {
    let nats = NatsServer::start().expect("nats-server");
    let config = BusConfig::for_url(&nats.url());
    let bus = Arc::new(Bus::connect(&config, "nan-test").await.expect("connect"));
    let bucket = streams::policies_bucket(&bus.jetstream(), bus.names()).await.expect("bucket");
    // Guarded policy: with the curvature dropped (as a NaN turned into null would be),
    // it would allow.
    bucket
        .put(
            format!("{POLICY_KEY_PREFIX}bounded"),
            r#"permit(principal, action, resource) unless { context has curvature && context.curvature.greaterThan(decimal("2.0")) };"#.into(),
        )
        .await
        .expect("put");
    let store = Arc::new(PolicyStore::new(EvaluatorConfig::default()));
    load_and_follow(store.clone(), bucket).await.expect("load");
    let shutdown = Shutdown::new();
    tokio::spawn(run(bus.clone(), store, shutdown.signal()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reply = ask(&bus, vec![query("a", "j", 1.0), query("a", "j", f64::NAN), query("a", "j", 3.0), query("a", "j", f64::INFINITY)]).await;
    let allowed: Vec<bool> = reply.decisions.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, false, false, false], "{reply:?}");
    assert!(reply.decisions[1].errors[0].contains("context.curvature"), "{:?}", reply.decisions[1]);
    shutdown.trigger();
}
