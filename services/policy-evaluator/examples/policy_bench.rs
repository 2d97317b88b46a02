//! The policy-evaluator's benchmark, every comparison side by side in one run:
//!
//! 1. decision latency with the decision cache vs without (same engine, same steps);
//! 2. batched throughput through a real nats-server: 1 vs 100 queries per request;
//! 3. 1 vs 1000 policies, fail-fast on and off, for an allowed and a denied step;
//! 4. start-up with 10 000 stored policies: lazy vs parsing them all first.
//!
//! `cargo run --release -p policy-evaluator --example policy_bench` (needs nats-server on
//! the PATH). Prints a table; `--json` prints JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use hsync_policy::{DecisionCache, EngineOptions, EvalInput, PolicyEngine, Stage, DEFAULT_SCHEMA};
use hsync_protocol::names::POLICY_KEY_PREFIX;
use hsync_protocol::policy::{PolicyEvalReply, PolicyEvalRequest, PolicyQuery};
use hsync_protocol::Value;
use hsync_testkit::NatsServer;
use policy_evaluator::{load_and_follow, run, EvaluatorConfig, PolicyStore};
use serde_json::json;

/// A realistic set: a baseline permit guarded by curvature, capability rules, and
/// `n - 3` principal-specific rules (half permits, half forbids).
fn policies(n: usize) -> Vec<(String, String)> {
    policies_scoped(n, true)
}

/// `scoped`: the rules name one principal each (the evaluator indexes them by principal);
/// otherwise they test the context, so every rule is evaluated for every step.
fn policies_scoped(n: usize, scoped: bool) -> Vec<(String, String)> {
    let mut out = vec![(
        "curvature-bound".to_string(),
        r#"permit(principal, action, resource in Hsync::Capability::"geometry")
           when { context has curvature && context.curvature.lessThan(decimal("4.0")) };"#
            .to_string(),
    )];
    if n >= 2 {
        out.push((
            "no-mallory".into(),
            r#"forbid(principal == Hsync::User::"mallory", action, resource);"#.into(),
        ));
    }
    if n >= 3 {
        out.push((
            "dimension-cap".into(),
            r#"forbid(principal, action, resource) when { context has dimension && context.dimension > 4096 };"#.into(),
        ));
    }
    for i in out.len()..n {
        let effect = if i % 2 == 0 { "forbid" } else { "permit" };
        let text = if scoped {
            format!(r#"{effect}(principal == Hsync::User::"user{i}", action, resource) when {{ context has curvature && context.curvature.greaterThan(decimal("0.{i}")) }};"#)
        } else {
            format!(r#"{effect}(principal, action, resource) when {{ context has curvature && context.curvature.greaterThan(decimal("{}.5")) }};"#, 100 + i)
        };
        out.push((format!("rule-{i:05}"), text));
    }
    out
}

fn context(job: usize, curvature: f64) -> serde_json::Map<String, serde_json::Value> {
    match json!({"job_id": format!("job-{job}"), "node_id": "n1", "curvature": curvature, "dimension": 16}) {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn engine(n: usize, fail_fast: bool) -> PolicyEngine {
    engine_scoped(n, fail_fast, true)
}

fn engine_scoped(n: usize, fail_fast: bool, scoped: bool) -> PolicyEngine {
    let options = EngineOptions { fail_fast, ..EngineOptions::default() };
    PolicyEngine::new_with(policies_scoped(n, scoped), Some(DEFAULT_SCHEMA), options).expect("bench policies validate")
}

/// Mean microseconds per decision over `n` decisions.
fn time_decisions(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn caps() -> Vec<String> {
    vec!["geometry".to_string()]
}

fn decide(e: &PolicyEngine, principal: &str, ctx: &serde_json::Map<String, serde_json::Value>, cache: Option<&DecisionCache>) -> bool {
    let caps = caps();
    e.evaluate_cached(
        &EvalInput { principal, stage: Stage::Pre, operator: "geo.distance", capabilities: &caps, context: ctx },
        cache,
    )
    .allowed
}

fn query(job: usize) -> PolicyQuery {
    PolicyQuery {
        principal: "alice".into(),
        stage: hsync_protocol::policy::Stage::Pre,
        operator: "geo.distance".into(),
        capabilities: caps(),
        context: [
            ("job_id".to_string(), Value::Str(format!("job-{job}"))),
            ("node_id".to_string(), Value::Str("n1".into())),
            ("curvature".to_string(), Value::Float(1.0 + (job % 10) as f64 / 10.0)),
        ]
        .into_iter()
        .collect(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let as_json = std::env::args().any(|a| a == "--json");
    let mut report = serde_json::Map::new();

    // 1. Cached vs uncached: 10 policies, steps from different jobs over 10 curvatures.
    let e = engine(10, true);
    let cache = DecisionCache::new(100_000, Duration::from_secs(600));
    let steps: Vec<_> = (0..1000).map(|j| context(j, 1.0 + (j % 10) as f64 / 10.0)).collect();
    for c in &steps {
        assert!(decide(&e, "alice", c, Some(&cache)), "bench steps are allowed");
    }
    let rounds = 20_000;
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..3 {
        uncached.push(time_decisions(rounds, |i| {
            decide(&e, "alice", &steps[i % steps.len()], None);
        }));
        cached.push(time_decisions(rounds, |i| {
            decide(&e, "alice", &steps[i % steps.len()], Some(&cache));
        }));
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (u, c) = (best(&uncached), best(&cached));
    let stats = cache.stats();
    let hit_rate = stats.hits as f64 / (stats.hits + stats.misses) as f64;
    report.insert(
        "cache".into(),
        json!({"policies": 10, "uncached_us": u, "cached_us": c, "speedup": u / c, "hit_rate": hit_rate}),
    );

    // 3. 1 vs 1000 policies, fail-fast on/off, allowed (alice) and denied (mallory) steps.
    let ctx = context(1, 1.5);
    let mut scaling = Vec::new();
    for (n, scoped) in [(1usize, true), (1000, true), (1000, false)] {
        for fail_fast in [true, false] {
            let e = engine_scoped(n, fail_fast, scoped);
            let reps = if n == 1 || scoped { 20_000 } else { 300 };
            let allow_us = time_decisions(reps, |_| {
                decide(&e, "alice", &ctx, None);
            });
            let deny_us = time_decisions(reps, |_| {
                decide(&e, "mallory", &ctx, None);
            });
            scaling.push(json!({"policies": n, "scoped_by_principal": scoped, "fail_fast": fail_fast, "allow_us": allow_us, "deny_us": deny_us}));
        }
    }
    report.insert("policies_and_fail_fast".into(), json!(scaling));

    // 2 and 4 go through a real nats-server and the policy bucket.
    let nats = NatsServer::start()?;
    let config = BusConfig::for_url(&nats.url());
    let bus = Arc::new(Bus::connect(&config, "policy-bench").await?);
    let bucket = streams::policies_bucket(&bus.jetstream(), bus.names()).await?;
    bucket.put("schema", DEFAULT_SCHEMA.to_string().into()).await?;
    for (id, text) in policies(10_000) {
        bucket.put(format!("{POLICY_KEY_PREFIX}{id}"), text.into()).await?;
    }
    let mut startup = Vec::new();
    for lazy in [true, false] {
        let store = Arc::new(PolicyStore::new(EvaluatorConfig { lazy, ..EvaluatorConfig::default() }));
        let start = Instant::now();
        load_and_follow(store.clone(), bucket.clone()).await?;
        let ready = start.elapsed();
        let first = Instant::now();
        let d = store.evaluate(&query(0));
        let first_decision = first.elapsed();
        startup.push(json!({"lazy": lazy, "stored": 10_000, "ready_ms": ready.as_secs_f64() * 1e3,
            "first_decision_ms": first_decision.as_secs_f64() * 1e3, "first_allowed": d.allowed}));
    }
    report.insert("startup".into(), json!(startup));

    // Batched throughput: a 10-policy set, 8 requests in flight, 1 vs 100 queries each.
    for (id, _) in policies(10_000).into_iter().skip(10) {
        bucket.delete(format!("{POLICY_KEY_PREFIX}{id}")).await?;
    }
    let store = Arc::new(PolicyStore::default());
    load_and_follow(store.clone(), bucket.clone()).await?;
    let shutdown = Shutdown::new();
    let server_bus = Arc::new(Bus::connect(&config, "policy-bench-evaluator").await?);
    tokio::spawn(run(server_bus, store.clone(), shutdown.signal()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut batching = Vec::new();
    for batch in [1usize, 100] {
        let total = 40_000usize;
        let requests = total / batch;
        let in_flight = 8;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..in_flight {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = w;
                while r < requests {
                    let queries = (0..batch).map(|q| query(r * batch + q)).collect();
                    let reply: PolicyEvalReply =
                        bus.request(bus.names().policy_evaluate(), &PolicyEvalRequest { queries }).await?;
                    anyhow::ensure!(reply.decisions.len() == batch && reply.decisions.iter().all(|d| d.allowed));
                    r += in_flight;
                }
                Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        batching.push(json!({"queries_per_request": batch, "decisions_per_s": total as f64 / secs}));
    }
    report.insert("batching".into(), json!(batching));
    report.insert("evaluator_stats".into(), store.stats_json());
    shutdown.trigger();

    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let r = &report;
    println!("policy-evaluator bench");
    println!(
        "decision latency, 10 policies: uncached {:.2} µs, cached {:.2} µs → {:.1}× (hit rate {:.1}%)",
        r["cache"]["uncached_us"].as_f64().unwrap_or(0.0),
        r["cache"]["cached_us"].as_f64().unwrap_or(0.0),
        r["cache"]["speedup"].as_f64().unwrap_or(0.0),
        100.0 * r["cache"]["hit_rate"].as_f64().unwrap_or(0.0)
    );
    println!("{:>9} {:>8} {:>10} {:>12} {:>12}", "policies", "scoped", "fail-fast", "allow µs", "deny µs");
    for s in r["policies_and_fail_fast"].as_array().into_iter().flatten() {
        println!(
            "{:>9} {:>8} {:>10} {:>12.2} {:>12.2}",
            s["policies"].to_string(), s["scoped_by_principal"].to_string(), s["fail_fast"].to_string(), s["allow_us"].as_f64().unwrap_or(0.0), s["deny_us"].as_f64().unwrap_or(0.0)
        );
    }
    for s in r["startup"].as_array().into_iter().flatten() {
        println!(
            "start-up, 10k stored, lazy={}: ready in {:.1} ms, first decision {:.1} ms",
            s["lazy"], s["ready_ms"].as_f64().unwrap_or(0.0), s["first_decision_ms"].as_f64().unwrap_or(0.0)
        );
    }
    for s in r["batching"].as_array().into_iter().flatten() {
        println!(
            "batched through NATS, {} queries/request: {:.0} decisions/s",
            s["queries_per_request"], s["decisions_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
