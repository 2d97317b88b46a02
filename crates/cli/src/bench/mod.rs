//! `hsync bench`: each optimization measured on and off, side by side in one run.
//!
//! Every variant gets its own fresh cluster (nats-server + the five service binaries,
//! started through `hsync-testkit`), differing only in the environment that switches the
//! optimization, and the same seeded workload. The figures go to stdout as a table, with
//! `--json` as JSON, and with `--plot` as a PNG.
//!
//! Every run starts with the bus's own ceiling: plain NATS request/reply against an echo
//! responder, with the same client load and a payload the size of a job, on its own
//! nats-server. Each variant's throughput is also given as a fraction of it.

mod ablation;
mod load;
mod plot;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use hsync_client::JobClient;
use hsync_protocol::job::{Job, JobStatus};
use hsync_testkit::cluster::Cluster;
use serde::Serialize;

use crate::procstat;
use load::{drive, histogram, percentiles_ms, progress, Load, Outcome};
use workload::CACHE_ENTRIES;
use workload::{batching_job, cache_job, wide_job, zipf_keys};

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
    /// Jobs in flight at once (closed loop; the warm-up always runs this way).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Offer jobs at this fixed rate per second instead (open loop): latency then counts
    /// from each job's scheduled start, so queueing behind an overloaded system shows.
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the figures as JSON too.
    #[arg(long)]
    json: bool,
    /// Also draw latency percentiles and throughput into this PNG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// `ablation` only: switch off just these (e.g. --only "no result cache"; repeat the
    /// flag for more). The two all-on runs always run.
    #[arg(long)]
    only: Vec<String>,
}

impl BenchArgs {
    fn load(&self) -> Load {
        match self.rate {
            Some(rate) => Load::Open(rate),
            None => Load::Closed(self.concurrency.max(1)),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.jobs > 0, "--jobs must be at least 1");
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        for name in &self.only {
            anyhow::ensure!(
                ablation::SWITCHES.iter().any(|(n, _)| n == name),
                "--only {name:?} is not a switch of the ablation; the switches are: {}",
                ablation::SWITCHES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            );
        }
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be a positive number of jobs per second, not {rate}");
        }
        if let Some(path) = &self.plot {
            anyhow::ensure!(
                path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")),
                "--plot {} must name a .png file",
                path.display()
            );
        }
        Ok(())
    }
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
    /// One mixed workload with every optimization on, then with each one off in turn,
    /// then all on again (the spread between the two all-on runs is the noise).
    Ablation,
    /// cache, parallel, batching and pooling.
    All,
}

#[derive(Serialize, Debug)]
struct Figures {
    scenario: &'static str,
    variant: String,
    /// How the jobs were offered (closed or open loop).
    load: String,
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
    /// Jobs that did not succeed, or got no result at all (a timeout, say).
    failed_jobs: usize,
    /// The first failure, to say what went wrong.
    first_failure: Option<String>,
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
    /// Message payload bytes through the nats-server (from and to every client) per
    /// measured job, from its /varz; protocol framing and headers are not counted.
    wire_bytes_per_job: f64,
    /// Messages through the nats-server (in plus out) per measured job.
    wire_messages_per_job: f64,
    /// Operation records still waiting for the receipt-signer when the measured jobs
    /// ended: jobs do not wait for their receipts, so a signer that falls behind shows
    /// here, not in job latency.
    records_unsigned: u64,
    /// CPU and memory of every process of the cluster over the measured jobs.
    processes: BTreeMap<String, procstat::Usage>,
}

fn figures(scenario: &'static str, variant: &str, load: Load, elapsed: Duration, outcomes: &[Outcome]) -> Figures {
    let (p50_ms, p95_ms, p99_ms, p999_ms, max_ms) = percentiles_ms(&histogram(outcomes.iter().map(|(d, _)| *d)));
    let results = || outcomes.iter().filter_map(|(_, r)| r.as_ref().ok());
    let nodes_total: u64 = results().map(|r| r.nodes.len() as u64).sum();
    let cached: u64 = results().map(|r| r.nodes.iter().filter(|n| n.cached).count() as u64).sum();
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|(_, r)| match r {
            Ok(r) if r.status == JobStatus::Succeeded => None,
            Ok(r) => Some(format!("job {} {:?}: {}", r.job_id, r.status, r.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""))),
            Err(e) => Some(format!("{e:#}")),
        })
        .collect();
    Figures {
        scenario,
        variant: variant.to_string(),
        load: load.to_string(),
        jobs: outcomes.len(),
        seconds: elapsed.as_secs_f64(),
        jobs_per_second: outcomes.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        of_echo: 0.0,
        p50_ms,
        p95_ms,
        p99_ms,
        p999_ms,
        max_ms,
        nodes_served_from_cache: cached,
        nodes_total,
        hit_rate: if nodes_total > 0 { cached as f64 / nodes_total as f64 } else { 0.0 },
        failed_jobs: failures.len(),
        first_failure: failures.into_iter().next(),
        policy_messages_per_job: 0.0,
        policy_queries_per_message: 0.0,
        operator_messages_per_job: 0.0,
        operator_calls_per_message: 0.0,
        runner_allocations_per_job: 0.0,
        runner_allocated_bytes_per_job: 0.0,
        wire_bytes_per_job: 0.0,
        wire_messages_per_job: 0.0,
        records_unsigned: 0,
        processes: BTreeMap::new(),
    }
}

/// The cluster's counters at one moment: the runner's traffic and allocations from its
/// `$SRV.STATS`, the nats-server's message and byte totals, and each process's CPU time.
struct Snapshot {
    /// (messages, items) sent to the policy-evaluator.
    policy: (u64, u64),
    /// (messages, items) sent to operator providers.
    operators: (u64, u64),
    /// (allocations, bytes) in the runner process.
    allocations: (u64, u64),
    /// (messages, payload bytes) into and out of the nats-server.
    wire: (u64, u64),
    /// Messages in the records stream (a work queue): records not signed yet.
    records_waiting: u64,
    procs: BTreeMap<String, procstat::Reading>,
}

impl Snapshot {
    async fn take(cluster: &Cluster) -> anyhow::Result<Snapshot> {
        let data = cluster.runner_stats().await?;
        let field = |name: &str| {
            data[name]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("the operator-runner's stats have no `{name}`: {data}"))
        };
        Ok(Snapshot {
            policy: (field("policy_messages")?, field("policy_queries")?),
            operators: (field("operator_messages")?, field("operator_calls")?),
            allocations: (field("allocations")?, field("allocated_bytes")?),
            wire: wire_totals(&cluster.nats.nodes[0])?,
            records_waiting: records_waiting(cluster).await?,
            procs: procstat::read_all(&cluster.pids()),
        })
    }
}

async fn records_waiting(cluster: &Cluster) -> anyhow::Result<u64> {
    let name = cluster.bus.names().stream_records();
    let mut stream = cluster.bus.jetstream().get_stream(&name).await.map_err(|e| anyhow::anyhow!("stream {name}: {e}"))?;
    Ok(stream.info().await.map_err(|e| anyhow::anyhow!("stream {name}: {e}"))?.state.messages)
}

/// (in + out messages, in + out payload bytes) of a nats-server since it started.
fn wire_totals(nats: &hsync_testkit::NatsServer) -> anyhow::Result<(u64, u64)> {
    let varz = nats.varz()?;
    let get = |name: &str| varz[name].as_u64().ok_or_else(|| anyhow::anyhow!("nats-server /varz has no `{name}`"));
    Ok((get("in_msgs")? + get("out_msgs")?, get("in_bytes")? + get("out_bytes")?))
}

/// Fills in what changed between two snapshots around the measured jobs.
fn with_snapshots(mut f: Figures, before: &Snapshot, after: &Snapshot) -> Figures {
    let jobs = f.jobs.max(1) as f64;
    // (messages per job, items per message)
    let rates = |b: (u64, u64), a: (u64, u64)| {
        let messages = a.0.saturating_sub(b.0) as f64;
        let items = a.1.saturating_sub(b.1) as f64;
        (messages / jobs, if messages > 0.0 { items / messages } else { 0.0 })
    };
    (f.policy_messages_per_job, f.policy_queries_per_message) = rates(before.policy, after.policy);
    (f.operator_messages_per_job, f.operator_calls_per_message) = rates(before.operators, after.operators);
    f.runner_allocations_per_job = after.allocations.0.saturating_sub(before.allocations.0) as f64 / jobs;
    f.runner_allocated_bytes_per_job = after.allocations.1.saturating_sub(before.allocations.1) as f64 / jobs;
    f.wire_messages_per_job = after.wire.0.saturating_sub(before.wire.0) as f64 / jobs;
    f.wire_bytes_per_job = after.wire.1.saturating_sub(before.wire.1) as f64 / jobs;
    f.processes = procstat::usage(&before.procs, &after.procs, f.seconds);
    f.records_unsigned = after.records_waiting;
    f
}

/// What one variant runs: jobs to warm up with (closed loop), then the measured jobs.
struct Workload {
    warmup: Vec<Job>,
    measured: Vec<Job>,
    load: Load,
}

/// Runs `workload` on a fresh cluster started with `env`.
async fn run_variant(scenario: &'static str, variant: &str, env: &[(&str, &str)], workload: Workload, concurrency: usize) -> anyhow::Result<Figures> {
    let cluster = Cluster::start_with(env).await?;
    let client = JobClient::new(cluster.bus.clone());
    if !workload.warmup.is_empty() {
        let bar = progress(workload.warmup.len(), &format!("{variant}: warm-up"));
        let (_, outcomes) = drive(&client, workload.warmup, Load::Closed(concurrency), &bar).await;
        if let Some((_, Err(e))) = outcomes.iter().find(|(_, r)| r.is_err()) {
            anyhow::bail!("{scenario}/{variant}: a warm-up job got no result: {e:#}");
        }
    }
    let before = Snapshot::take(&cluster).await?;
    let bar = progress(workload.measured.len(), variant);
    let (elapsed, outcomes) = drive(&client, workload.measured, workload.load, &bar).await;
    let after = Snapshot::take(&cluster).await?;
    // Close our connection before the cluster goes, instead of watching it drop.
    cluster.bus.drain().await;
    Ok(with_snapshots(figures(scenario, variant, workload.load, elapsed, &outcomes), &before, &after))
}

/// `job(key)` for keys drawn from Zipf(1.0): popular inputs repeat, so caches have work.
fn zipf_workload(args: &BenchArgs, job: fn(usize) -> Job) -> Workload {
    let keys = zipf_keys(args.warmup + args.jobs, args.seed);
    Workload {
        warmup: keys[..args.warmup].iter().map(|&k| job(k)).collect(),
        measured: keys[args.warmup..].iter().map(|&k| job(k)).collect(),
        load: args.load(),
    }
}

fn cache_workload(args: &BenchArgs) -> Workload {
    zipf_workload(args, cache_job)
}

fn batching_workload(args: &BenchArgs) -> Workload {
    Workload {
        warmup: (0..args.warmup).map(batching_job).collect(),
        measured: (args.warmup..args.warmup + args.jobs).map(batching_job).collect(),
        load: args.load(),
    }
}

/// Few, large jobs one at a time: the comparison is about parallelism inside a job.
fn parallel_workload(args: &BenchArgs) -> Workload {
    Workload {
        warmup: vec![],
        measured: (0..(args.jobs / 1000).clamp(3, 50)).map(wide_job).collect(),
        load: Load::Closed(1),
    }
}

/// The bus's own ceiling: `args.jobs` request/reply round trips of `payload_len` bytes
/// against an echo responder on a fresh nats-server, under the same load as the jobs,
/// each side on its own connection (as a client and a service would be).
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
    let round_trip = || {
        let (requester, payload) = (requester.clone(), payload.clone());
        async move {
            let t = tokio::time::Instant::now();
            requester.request("bench.echo", payload).await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        }
    };
    // Warm-up, closed loop as for the jobs.
    let warmup: Vec<anyhow::Result<Duration>> = stream::iter(0..args.warmup.min(args.jobs))
        .map(|_| round_trip())
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    warmup.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let server: Vec<(String, u32)> = nats.pid().map(|p| ("nats-server".to_string(), p)).into_iter().collect();
    let procs = procstat::read_all(&server);
    let wire = wire_totals(&nats)?;
    let started = tokio::time::Instant::now();
    let latencies: Vec<anyhow::Result<Duration>> = match args.load() {
        Load::Closed(n) => stream::iter(0..args.jobs).map(|_| round_trip()).buffer_unordered(n).collect().await,
        Load::Open(rate) => {
            // Each request starts on schedule; latency counts from the scheduled start.
            let gap = Duration::from_secs_f64(1.0 / rate);
            let tasks: Vec<_> = (0..args.jobs)
                .map(|i| {
                    let (requester, payload) = (requester.clone(), payload.clone());
                    let due = started + gap.mul_f64(i as f64);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due).await;
                        requester.request("bench.echo", payload).await?;
                        Ok::<_, anyhow::Error>(due.elapsed())
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.map_err(anyhow::Error::from).and_then(|r| r));
            }
            out
        }
    };
    let elapsed = started.elapsed();
    let after_wire = wire_totals(&nats)?;
    let processes = procstat::usage(&procs, &procstat::read_all(&server), elapsed.as_secs_f64());
    echo.abort();
    let latencies = latencies.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let mut f = figures("baseline", "nats echo", args.load(), elapsed, &[]);
    f.jobs = latencies.len();
    f.jobs_per_second = latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    f.of_echo = 1.0;
    f.processes = processes;
    f.wire_messages_per_job = after_wire.0.saturating_sub(wire.0) as f64 / f.jobs.max(1) as f64;
    f.wire_bytes_per_job = after_wire.1.saturating_sub(wire.1) as f64 / f.jobs.max(1) as f64;
    (f.p50_ms, f.p95_ms, f.p99_ms, f.p999_ms, f.max_ms) = percentiles_ms(&histogram(latencies.iter().copied()));
    Ok(f)
}

fn print_table(rows: &[Figures]) {
    println!(
        "{:<10} {:<22} {:>7} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>7} {:>10} {:>9} {:>9}",
        "scenario", "variant", "jobs", "seconds", "jobs/s", "of echo", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms", "hit rate", "failed", "policy m/j", "op m/j", "allocs/job", "wire KiB/j", "unsigned"
    );
    for f in rows {
        println!(
            "{:<10} {:<22} {:>7} {:>8.2} {:>9.1} {:>6.1}% {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.1}% {:>6} {:>10.2} {:>7.2} {:>10.0} {:>9.1} {:>9}",
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
            f.runner_allocations_per_job,
            f.wire_bytes_per_job / 1024.0,
            f.records_unsigned
        );
    }
    for f in rows.iter().filter(|f| f.failed_jobs > 0) {
        println!("{}/{}: {} jobs failed; the first: {}", f.scenario, f.variant, f.failed_jobs, f.first_failure.as_deref().unwrap_or("?"));
    }
}

/// CPU (percent of one core) and resident memory of each process over the measured jobs.
fn print_processes(rows: &[Figures]) {
    let names: std::collections::BTreeSet<&String> = rows.iter().flat_map(|f| f.processes.keys()).collect();
    println!();
    print!("{:<10} {:<22}", "CPU % / RSS MiB", "");
    for n in &names {
        print!(" {:>18}", n.as_str());
    }
    println!();
    for f in rows {
        print!("{:<10} {:<22}", f.scenario, f.variant);
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
    args.check()?;
    println!("load: {}", args.load());
    // The echo payload is as large as the workload's typical job on the wire.
    let job_bytes = rmp_serde::to_vec_named(&batching_job(0))?.len();
    let echo = echo_baseline(&args, job_bytes).await?;
    let ceiling = echo.jobs_per_second;
    let mut rows = vec![echo];
    let wants = |s: Scenario| args.scenario == s || (args.scenario == Scenario::All && s != Scenario::Ablation);
    let c = args.concurrency;
    if wants(Scenario::Cache) {
        let entries = CACHE_ENTRIES.to_string();
        rows.push(run_variant("cache", "cache on", &[("HSYNC_RESULT_CACHE_ENTRIES", &entries)], cache_workload(&args), c).await?);
        rows.push(run_variant("cache", "cache off", &[("HSYNC_RESULT_CACHE_ENTRIES", "0")], cache_workload(&args), c).await?);
    }
    if wants(Scenario::Parallel) {
        let off = [("HSYNC_RESULT_CACHE_ENTRIES", "0")];
        rows.push(run_variant("parallel", "parallel", &off, parallel_workload(&args), c).await?);
        let seq = [("HSYNC_RESULT_CACHE_ENTRIES", "0"), ("HSYNC_MAX_PARALLEL_NODES", "1")];
        rows.push(run_variant("parallel", "sequential", &seq, parallel_workload(&args), c).await?);
    }
    if wants(Scenario::Batching) {
        let on = [("HSYNC_RESULT_CACHE_ENTRIES", "0")];
        rows.push(run_variant("batching", "batch on", &on, batching_workload(&args), c).await?);
        let off = [
            ("HSYNC_RESULT_CACHE_ENTRIES", "0"),
            ("HSYNC_POLICY_BATCH_MAX", "1"),
            ("HSYNC_OPERATOR_BATCH_MAX", "1"),
        ];
        rows.push(run_variant("batching", "batch off", &off, batching_workload(&args), c).await?);
    }
    if wants(Scenario::Pooling) {
        let on = [("HSYNC_RESULT_CACHE_ENTRIES", "0")];
        rows.push(run_variant("pooling", "pooling on", &on, batching_workload(&args), c).await?);
        let off = [("HSYNC_RESULT_CACHE_ENTRIES", "0"), ("HSYNC_POOLING", "false")];
        rows.push(run_variant("pooling", "pooling off", &off, batching_workload(&args), c).await?);
    }
    if wants(Scenario::Ablation) {
        rows.extend(ablation::run(&args).await?);
    }
    for f in rows.iter_mut().skip(1) {
        f.of_echo = f.jobs_per_second / ceiling.max(1e-9);
    }
    print_table(&rows);
    print_processes(&rows);
    if args.scenario == Scenario::Ablation {
        ablation::print_impact(&rows[1..]);
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &rows)?;
        println!("\nplot: {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
