//! `hsync bench`: each optimization measured on and off, side by side in one run.
//!
//! Every variant gets its own fresh cluster (nats-server + the five service binaries,
//! started through `hsync-testkit`), differing only in the environment that switches the
//! optimization, and the same seeded workload. The figures go to stdout as a table and,
//! with `--json`, as JSON for docs/PERFORMANCE.md.
//!
//! Every run starts with the bus's own ceiling: plain NATS request/reply against an echo
//! responder, with the same client concurrency and a payload the size of a job, on its own
//! nats-server. Each variant's throughput is also given as a fraction of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hsync_client::JobClient;
use hsync_protocol::job::{Job, JobResult, JobStatus, Node};
use hsync_protocol::{Arg, Tensor, Value};
use hsync_cache::zipf::{Rng, Zipf};
use hsync_testkit::cluster::Cluster;
use serde::Serialize;

use crate::procstat;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which comparison to run.
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Jobs measured per variant (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs run before measuring (fills the cache towards its steady state).
    #[arg(long, default_value_t = 60_000)]
    warmup: usize,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the figures as JSON too.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Result cache on vs off on a Zipf(1.0) workload over 100k distinct inputs.
    Cache,
    /// A wide DAG of 64 independent CPU-heavy nodes: parallel vs sequential.
    Parallel,
    /// Jobs of 8 cheap built-in nodes and 4 remote geometry calls: policy queries and
    /// operator calls batched (up to 100 per message, 1 ms window) vs one message each.
    Batching,
    /// The batching workload with the codec's pooled buffers and zstd contexts on vs off
    /// (`HSYNC_POOLING`): the runner's allocations per job.
    Pooling,
    All,
}

#[derive(Serialize, Debug)]
struct Figures {
    scenario: &'static str,
    variant: &'static str,
    jobs: usize,
    seconds: f64,
    jobs_per_second: f64,
    /// Throughput as a fraction of the echo baseline's requests per second.
    of_echo: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    nodes_served_from_cache: u64,
    nodes_total: u64,
    hit_rate: f64,
    failed_jobs: usize,
    /// Requests from the runner to the policy-evaluator per measured job.
    policy_messages_per_job: f64,
    /// Policy queries carried per request.
    policy_queries_per_message: f64,
    /// Requests from the runner to remote operator providers per measured job.
    operator_messages_per_job: f64,
    /// Operator calls carried per request.
    operator_calls_per_message: f64,
    /// Heap allocations in the operator-runner per measured job.
    runner_allocations_per_job: f64,
    /// Bytes allocated in the operator-runner per measured job.
    runner_allocated_bytes_per_job: f64,
    /// CPU and memory of every process of the cluster over the measured jobs.
    processes: BTreeMap<String, procstat::Usage>,
}

pub const DISTINCT_INPUTS: usize = 100_000;
pub const CACHE_ENTRIES: usize = 10_000;

/// A job of the benchmark's submitter; a fresh job id is assigned per run.
fn bench_job(nodes: Vec<Node>, timeout_ms: Option<u64>) -> Job {
    Job {
        job_id: String::new(),
        submitter: "bench".into(),
        nodes,
        outputs: vec![],
        wait_receipts: false,
        timeout_ms,
        keep_session: false,
    }
}

/// A one-node job whose input is determined by `key`: a 16×16 matrix product.
fn cache_job(key: usize) -> Job {
    let a: Vec<f64> = (0..256).map(|i| key as f64 * 1e-3 + ((i * 31) % 97) as f64 / 7.0).collect();
    let b: Vec<f64> = (0..256).map(|i| ((i * 13) % 11) as f64 - 5.0).collect();
    let args = BTreeMap::from([
        ("a".to_string(), Arg::Lit(Value::Tensor(Tensor::matrix(16, 16, a).expect("16x16")))),
        ("b".to_string(), Arg::Lit(Value::Tensor(Tensor::matrix(16, 16, b).expect("16x16")))),
    ]);
    let node = Node {
        id: "m".into(),
        op: "mat.matmul".into(),
        args,
    };
    bench_job(vec![node], None)
}

/// 8 independent vector norms and 4 Poincaré distances (served by the geometry-cache) of
/// distinct literal inputs: cheap nodes, so the round trips (pre and post policy checks per
/// node, and the remote calls) dominate.
fn batching_job(job: usize) -> Job {
    let mut nodes: Vec<Node> = (0..8)
        .map(|n| {
            let v: Vec<f64> = (0..16).map(|i| (job * 8 + n) as f64 + i as f64 * 0.25).collect();
            Node {
                id: format!("n{n}"),
                op: "vec.norm".into(),
                args: BTreeMap::from([("v".to_string(), Arg::Lit(Value::Tensor(Tensor::vector(v))))]),
            }
        })
        .collect();
    nodes.extend((0..4).map(|n| {
        // Distinct per job and node, inside the unit ball.
        let y = ((job * 4 + n) % 1_000_003) as f64 / 1_000_003.0 * 0.9;
        Node {
            id: format!("g{n}"),
            op: "geo.poincare.distance".into(),
            args: BTreeMap::from([
                ("x".to_string(), Arg::Lit(Value::Tensor(Tensor::vector(vec![0.1, -0.2])))),
                ("y".to_string(), Arg::Lit(Value::Tensor(Tensor::vector(vec![y, 0.05])))),
            ]),
        }
    }));
    bench_job(nodes, None)
}

/// 64 independent 96×96 matrix products (distinct per job, so nothing is cached).
fn wide_job(job: usize) -> Job {
    let nodes = (0..64)
        .map(|n| {
            let a: Vec<f64> = (0..96 * 96).map(|i| ((job * 7 + n * 3 + i) % 101) as f64 / 10.0).collect();
            let b: Vec<f64> = (0..96 * 96).map(|i| ((i * 17 + n) % 23) as f64 - 11.0).collect();
            Node {
                id: format!("m{n}"),
                op: "mat.matmul".into(),
                args: BTreeMap::from([
                    ("a".to_string(), Arg::Lit(Value::Tensor(Tensor::matrix(96, 96, a).expect("96x96")))),
                    ("b".to_string(), Arg::Lit(Value::Tensor(Tensor::matrix(96, 96, b).expect("96x96")))),
                ]),
            }
        })
        .collect();
    bench_job(nodes, Some(120_000))
}

async fn drive(
    client: &JobClient,
    jobs: impl Iterator<Item = Job>,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<(Duration, JobResult)>)> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Duration, JobResult)>> = stream::iter(jobs)
        .map(|job| async move {
            let t = Instant::now();
            let r = client.run(&job, Duration::from_secs(120)).await?;
            Ok((t.elapsed(), r))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let results = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((elapsed, results))
}

/// Latencies in microseconds, 3 significant digits, up to an hour.
fn histogram(latencies: impl Iterator<Item = Duration>) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    for d in latencies {
        h.saturating_record(d.as_micros().clamp(1, u64::MAX as u128) as u64);
    }
    h
}

/// p50, p95, p99, p99.9 and max of `h`, in milliseconds (zeros when it is empty).
fn percentiles_ms(h: &hdrhistogram::Histogram<u64>) -> (f64, f64, f64, f64, f64) {
    if h.is_empty() {
        return (0.0, 0.0, 0.0, 0.0, 0.0);
    }
    let pct = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    (pct(0.5), pct(0.95), pct(0.99), pct(0.999), h.max() as f64 / 1e3)
}

fn figures(scenario: &'static str, variant: &'static str, elapsed: Duration, results: &[(Duration, JobResult)]) -> Figures {
    let (p50_ms, p95_ms, p99_ms, p999_ms, max_ms) = percentiles_ms(&histogram(results.iter().map(|(d, _)| *d)));
    let nodes_total: u64 = results.iter().map(|(_, r)| r.nodes.len() as u64).sum();
    let cached: u64 = results.iter().map(|(_, r)| r.nodes.iter().filter(|n| n.cached).count() as u64).sum();
    Figures {
        scenario,
        variant,
        jobs: results.len(),
        seconds: elapsed.as_secs_f64(),
        jobs_per_second: results.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        of_echo: 0.0,
        p50_ms,
        p95_ms,
        p99_ms,
        p999_ms,
        max_ms,
        nodes_served_from_cache: cached,
        nodes_total,
        hit_rate: if nodes_total > 0 { cached as f64 / nodes_total as f64 } else { 0.0 },
        failed_jobs: results.iter().filter(|(_, r)| r.status != JobStatus::Succeeded).count(),
        policy_messages_per_job: 0.0,
        policy_queries_per_message: 0.0,
        operator_messages_per_job: 0.0,
        operator_calls_per_message: 0.0,
        runner_allocations_per_job: 0.0,
        runner_allocated_bytes_per_job: 0.0,
        processes: BTreeMap::new(),
    }
}

/// The runner's traffic so far, from its `$SRV.STATS`: messages and items sent to the
/// policy-evaluator, and to operator providers.
#[derive(Clone, Copy)]
struct Traffic {
    policy: (u64, u64),
    operators: (u64, u64),
    /// (allocations, bytes) in the runner process.
    allocations: (u64, u64),
}

async fn runner_traffic(cluster: &Cluster) -> anyhow::Result<Traffic> {
    let data = cluster.runner_stats().await?;
    let field = |name: &str| {
        data[name]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("the operator-runner's stats have no `{name}`: {data}"))
    };
    Ok(Traffic {
        policy: (field("policy_messages")?, field("policy_queries")?),
        operators: (field("operator_messages")?, field("operator_calls")?),
        allocations: (field("allocations")?, field("allocated_bytes")?),
    })
}

/// Fills in the traffic between two `runner_traffic` readings.
fn with_traffic(mut f: Figures, before: Traffic, after: Traffic) -> Figures {
    // (messages per job, items per message)
    let rates = |b: (u64, u64), a: (u64, u64)| {
        let messages = a.0.saturating_sub(b.0) as f64;
        let items = a.1.saturating_sub(b.1) as f64;
        (messages / f.jobs.max(1) as f64, if messages > 0.0 { items / messages } else { 0.0 })
    };
    (f.policy_messages_per_job, f.policy_queries_per_message) = rates(before.policy, after.policy);
    (f.operator_messages_per_job, f.operator_calls_per_message) = rates(before.operators, after.operators);
    let jobs = f.jobs.max(1) as f64;
    f.runner_allocations_per_job = after.allocations.0.saturating_sub(before.allocations.0) as f64 / jobs;
    f.runner_allocated_bytes_per_job = after.allocations.1.saturating_sub(before.allocations.1) as f64 / jobs;
    f
}

async fn cache_variant(args: &BenchArgs, variant: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Figures> {
    let cluster = Cluster::start_with(env).await?;
    let client = JobClient::new(cluster.bus.clone());
    let zipf = Zipf::new(DISTINCT_INPUTS, 1.0);
    let mut rng = Rng::new(args.seed);
    let keys: Vec<usize> = (0..args.warmup + args.jobs).map(|_| zipf.sample(&mut rng)).collect();
    drive(&client, keys[..args.warmup].iter().map(|&k| cache_job(k)), args.concurrency).await?;
    let before = runner_traffic(&cluster).await?;
    let procs = procstat::read_all(&cluster.pids());
    let (elapsed, results) = drive(&client, keys[args.warmup..].iter().map(|&k| cache_job(k)), args.concurrency).await?;
    let processes = procstat::usage(&procs, &procstat::read_all(&cluster.pids()), elapsed.as_secs_f64());
    let after = runner_traffic(&cluster).await?;
    // Close our connection before the cluster goes, instead of watching it drop.
    cluster.bus.drain().await;
    Ok(Figures { processes, ..with_traffic(figures("cache", variant, elapsed, &results), before, after) })
}

/// Runs the batching workload (`batching_job`: warm-up, then measured) on a fresh cluster.
async fn workload_variant(args: &BenchArgs, scenario: &'static str, variant: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Figures> {
    let cluster = Cluster::start_with(env).await?;
    let client = JobClient::new(cluster.bus.clone());
    drive(&client, (0..args.warmup).map(batching_job), args.concurrency).await?;
    let before = runner_traffic(&cluster).await?;
    let procs = procstat::read_all(&cluster.pids());
    let measured = args.warmup..args.warmup + args.jobs;
    let (elapsed, results) = drive(&client, measured.map(batching_job), args.concurrency).await?;
    let processes = procstat::usage(&procs, &procstat::read_all(&cluster.pids()), elapsed.as_secs_f64());
    let after = runner_traffic(&cluster).await?;
    // Close our connection before the cluster goes, instead of watching it drop.
    cluster.bus.drain().await;
    Ok(Figures { processes, ..with_traffic(figures(scenario, variant, elapsed, &results), before, after) })
}

async fn parallel_variant(args: &BenchArgs, variant: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Figures> {
    let cluster = Cluster::start_with(env).await?;
    let client = JobClient::new(cluster.bus.clone());
    // Few, large jobs: one at a time, so the comparison is about parallelism inside a job.
    let jobs = (args.jobs / 1000).clamp(3, 50);
    let before = runner_traffic(&cluster).await?;
    let procs = procstat::read_all(&cluster.pids());
    let (elapsed, results) = drive(&client, (0..jobs).map(wide_job), 1).await?;
    let processes = procstat::usage(&procs, &procstat::read_all(&cluster.pids()), elapsed.as_secs_f64());
    let after = runner_traffic(&cluster).await?;
    // Close our connection before the cluster goes, instead of watching it drop.
    cluster.bus.drain().await;
    Ok(Figures { processes, ..with_traffic(figures("parallel", variant, elapsed, &results), before, after) })
}

/// The bus's own ceiling: `requests` request/reply round trips of `payload_len` bytes
/// against an echo responder on a fresh nats-server, `concurrency` in flight, each side
/// on its own connection (as a client and a service would be).
async fn echo_baseline(args: &BenchArgs, payload_len: usize) -> anyhow::Result<Figures> {
    let nats = hsync_testkit::NatsServer::start()?;
    let responder = async_nats::connect(nats.url()).await?;
    let requester = async_nats::connect(nats.url()).await?;
    let mut subscription = responder.subscribe("bench.echo").await?;
    // Wait until the server has the subscription, so no request finds no responder.
    responder.flush().await?;
    let echo = tokio::spawn(async move {
        while let Some(m) = subscription.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let payload = bytes::Bytes::from(vec![0x5a; payload_len]);
    let round_trips = |n: usize| {
        let (requester, payload) = (requester.clone(), payload.clone());
        async move {
            let started = Instant::now();
            let latencies: Vec<anyhow::Result<Duration>> = stream::iter(0..n)
                .map(|_| {
                    let (requester, payload) = (requester.clone(), payload.clone());
                    async move {
                        let t = Instant::now();
                        requester.request("bench.echo", payload).await?;
                        Ok(t.elapsed())
                    }
                })
                .buffer_unordered(args.concurrency.max(1))
                .collect()
                .await;
            let elapsed = started.elapsed();
            latencies.into_iter().collect::<anyhow::Result<Vec<_>>>().map(|l| (elapsed, l))
        }
    };
    round_trips(args.warmup.min(args.jobs)).await?;
    let server: Vec<(String, u32)> = nats.pid().map(|p| ("nats-server".to_string(), p)).into_iter().collect();
    let procs = procstat::read_all(&server);
    let (elapsed, latencies) = round_trips(args.jobs).await?;
    let processes = procstat::usage(&procs, &procstat::read_all(&server), elapsed.as_secs_f64());
    echo.abort();
    let mut f = figures("baseline", "nats echo", elapsed, &[]);
    f.jobs = latencies.len();
    f.jobs_per_second = latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    f.of_echo = 1.0;
    f.processes = processes;
    (f.p50_ms, f.p95_ms, f.p99_ms, f.p999_ms, f.max_ms) = percentiles_ms(&histogram(latencies.iter().copied()));
    Ok(f)
}

fn print_table(rows: &[Figures]) {
    println!(
        "{:<10} {:<12} {:>7} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>7} {:>10}",
        "scenario", "variant", "jobs", "seconds", "jobs/s", "of echo", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "hit rate", "failed", "policy m/j", "op m/j", "allocs/job"
    );
    for f in rows {
        println!(
            "{:<10} {:<12} {:>7} {:>8.2} {:>9.1} {:>6.1}% {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.1}% {:>6} {:>10.2} {:>7.2} {:>10.0}",
            f.scenario,
            f.variant,
            f.jobs,
            f.seconds,
            f.jobs_per_second,
            f.of_echo * 100.0,
            f.p50_ms,
            f.p95_ms,
            f.p99_ms,
            f.p999_ms,
            f.hit_rate * 100.0,
            f.failed_jobs,
            f.policy_messages_per_job,
            f.operator_messages_per_job,
            f.runner_allocations_per_job
        );
    }
}

/// CPU (percent of one core) and resident memory of each process over the measured jobs.
fn print_processes(rows: &[Figures]) {
    let names: std::collections::BTreeSet<&String> = rows.iter().flat_map(|f| f.processes.keys()).collect();
    println!();
    print!("{:<10} {:<12}", "CPU % / RSS MiB", "");
    for n in &names {
        print!(" {:>18}", n.as_str());
    }
    println!();
    for f in rows {
        print!("{:<10} {:<12}", f.scenario, f.variant);
        for n in &names {
            match f.processes.get(*n) {
                Some(u) => print!(" {:>18}", format!("{:.0}% / {:.0}", u.cpu_percent, u.rss_mib)),
                None => print!(" {:>18}", "-"),
            }
        }
        println!();
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    // The echo payload is as large as the workload's typical job on the wire.
    let job_bytes = rmp_serde::to_vec_named(&batching_job(0))?.len();
    let echo = echo_baseline(&args, job_bytes).await?;
    let ceiling = echo.jobs_per_second;
    let mut rows = vec![echo];
    if matches!(args.scenario, Scenario::Cache | Scenario::All) {
        let entries = CACHE_ENTRIES.to_string();
        rows.push(cache_variant(&args, "cache on", &[("HSYNC_RESULT_CACHE_ENTRIES", &entries)]).await?);
        rows.push(cache_variant(&args, "cache off", &[("HSYNC_RESULT_CACHE_ENTRIES", "0")]).await?);
    }
    if matches!(args.scenario, Scenario::Parallel | Scenario::All) {
        let off = [("HSYNC_RESULT_CACHE_ENTRIES", "0")];
        rows.push(parallel_variant(&args, "parallel", &off).await?);
        let seq = [("HSYNC_RESULT_CACHE_ENTRIES", "0"), ("HSYNC_MAX_PARALLEL_NODES", "1")];
        rows.push(parallel_variant(&args, "sequential", &seq).await?);
    }
    if matches!(args.scenario, Scenario::Batching | Scenario::All) {
        let on = [("HSYNC_RESULT_CACHE_ENTRIES", "0")];
        rows.push(workload_variant(&args, "batching", "batch on", &on).await?);
        let off = [
            ("HSYNC_RESULT_CACHE_ENTRIES", "0"),
            ("HSYNC_POLICY_BATCH_MAX", "1"),
            ("HSYNC_OPERATOR_BATCH_MAX", "1"),
        ];
        rows.push(workload_variant(&args, "batching", "batch off", &off).await?);
    }
    if matches!(args.scenario, Scenario::Pooling | Scenario::All) {
        let on = [("HSYNC_RESULT_CACHE_ENTRIES", "0")];
        rows.push(workload_variant(&args, "pooling", "pooling on", &on).await?);
        let off = [("HSYNC_RESULT_CACHE_ENTRIES", "0"), ("HSYNC_POOLING", "false")];
        rows.push(workload_variant(&args, "pooling", "pooling off", &off).await?);
    }
    for f in rows.iter_mut().skip(1) {
        f.of_echo = f.jobs_per_second / ceiling.max(1e-9);
    }
    print_table(&rows);
    print_processes(&rows);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_hold_three_significant_digits() {
        // 1..=1000 ms: the p-th percentile is p * 10 ms.
        let h = histogram((1..=1000).map(Duration::from_millis));
        for (q, ms) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.value_at_quantile(q) as f64 / 1e3;
            assert!((got - ms).abs() <= ms * 1e-3, "p{q}: {got} ms, expected {ms}");
        }
        assert_eq!(h.len(), 1000);
        // A zero duration still counts (as the smallest bucket), it is not dropped.
        assert_eq!(histogram([Duration::ZERO].into_iter()).len(), 1);
    }

    #[test]
    fn workload_jobs_are_deterministic_and_distinct() {
        assert_eq!(cache_job(5), cache_job(5));
        assert_ne!(cache_job(5), cache_job(6));
        assert_eq!(wide_job(1).nodes.len(), 64);
        assert_eq!(batching_job(3), batching_job(3));
        assert_ne!(batching_job(3), batching_job(4));
        let nodes = batching_job(3).nodes;
        assert_eq!(nodes.len(), 12);
        // Distinct inputs inside a job too, so no node is another's duplicate.
        for (i, a) in nodes.iter().enumerate() {
            assert!(nodes[i + 1..].iter().all(|b| b.args != a.args));
        }
    }
}
