//! `hsync bench`: each optimization measured on and off, side by side in one run.
//!
//! Every variant gets its own fresh cluster (nats-server + the five service binaries,
//! started through `hsync-testkit`), differing only in the environment that switches the
//! optimization, and the same seeded workload. The figures go to stdout as a table and,
//! with `--json`, as JSON for docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hsync_client::JobClient;
use hsync_protocol::job::{Job, JobResult, JobStatus, Node};
use hsync_protocol::{Arg, Tensor, Value};
use hsync_testkit::cluster::Cluster;
use serde::Serialize;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which comparison to run.
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Jobs measured per variant (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs run before measuring (fills the cache to its steady state).
    #[arg(long, default_value_t = 20_000)]
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
    All,
}

#[derive(Serialize, Debug)]
struct Figures {
    scenario: &'static str,
    variant: &'static str,
    jobs: usize,
    seconds: f64,
    jobs_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    nodes_served_from_cache: u64,
    nodes_total: u64,
    hit_rate: f64,
    failed_jobs: usize,
}

/// xorshift64*: a fixed, dependency-free generator so every variant sees the same jobs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over ranks 1..=n by inverse CDF (binary search on the cumulative weights).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

pub const DISTINCT_INPUTS: usize = 100_000;
pub const CACHE_ENTRIES: usize = 10_000;

/// A one-node job whose input is determined by `key`: a 16×16 matrix product.
fn cache_job(key: usize) -> Job {
    let a: Vec<f64> = (0..256).map(|i| key as f64 * 1e-3 + ((i * 31) % 97) as f64 / 7.0).collect();
    let b: Vec<f64> = (0..256).map(|i| ((i * 13) % 11) as f64 - 5.0).collect();
    let args = BTreeMap::from([
        ("a".to_string(), Arg::Lit(Value::Tensor(Tensor::matrix(16, 16, a).expect("16x16")))),
        ("b".to_string(), Arg::Lit(Value::Tensor(Tensor::matrix(16, 16, b).expect("16x16")))),
    ]);
    Job {
        job_id: String::new(),
        submitter: "bench".into(),
        nodes: vec![Node {
            id: "m".into(),
            op: "mat.matmul".into(),
            args,
        }],
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: None,
    }
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
    Job {
        job_id: String::new(),
        submitter: "bench".into(),
        nodes,
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: Some(120_000),
    }
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

fn figures(scenario: &'static str, variant: &'static str, elapsed: Duration, results: &[(Duration, JobResult)]) -> Figures {
    let mut lat: Vec<f64> = results.iter().map(|(d, _)| d.as_secs_f64() * 1e3).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let nodes_total: u64 = results.iter().map(|(_, r)| r.nodes.len() as u64).sum();
    let cached: u64 = results.iter().map(|(_, r)| r.nodes.iter().filter(|n| n.cached).count() as u64).sum();
    Figures {
        scenario,
        variant,
        jobs: results.len(),
        seconds: elapsed.as_secs_f64(),
        jobs_per_second: results.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        nodes_served_from_cache: cached,
        nodes_total,
        hit_rate: if nodes_total > 0 { cached as f64 / nodes_total as f64 } else { 0.0 },
        failed_jobs: results.iter().filter(|(_, r)| r.status != JobStatus::Succeeded).count(),
    }
}

async fn cache_variant(args: &BenchArgs, variant: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Figures> {
    let cluster = Cluster::start_with(env).await?;
    let client = JobClient::new(cluster.bus.clone());
    let zipf = Zipf::new(DISTINCT_INPUTS, 1.0);
    let mut rng = Rng(args.seed.max(1));
    let keys: Vec<usize> = (0..args.warmup + args.jobs).map(|_| zipf.sample(&mut rng)).collect();
    drive(&client, keys[..args.warmup].iter().map(|&k| cache_job(k)), args.concurrency).await?;
    let (elapsed, results) = drive(&client, keys[args.warmup..].iter().map(|&k| cache_job(k)), args.concurrency).await?;
    Ok(figures("cache", variant, elapsed, &results))
}

async fn parallel_variant(args: &BenchArgs, variant: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Figures> {
    let cluster = Cluster::start_with(env).await?;
    let client = JobClient::new(cluster.bus.clone());
    // Few, large jobs: one at a time, so the comparison is about parallelism inside a job.
    let jobs = (args.jobs / 1000).clamp(3, 50);
    let (elapsed, results) = drive(&client, (0..jobs).map(wide_job), 1).await?;
    Ok(figures("parallel", variant, elapsed, &results))
}

fn print_table(rows: &[Figures]) {
    println!(
        "{:<10} {:<12} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "scenario", "variant", "jobs", "seconds", "jobs/s", "p50 ms", "p99 ms", "hit rate", "failed"
    );
    for f in rows {
        println!(
            "{:<10} {:<12} {:>7} {:>9.2} {:>10.1} {:>9.2} {:>9.2} {:>8.1}% {:>7}",
            f.scenario,
            f.variant,
            f.jobs,
            f.seconds,
            f.jobs_per_second,
            f.p50_ms,
            f.p99_ms,
            f.hit_rate * 100.0,
            f.failed_jobs
        );
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut rows = Vec::new();
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
    print_table(&rows);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(DISTINCT_INPUTS, 1.0);
        let mut rng = Rng(7);
        let samples: Vec<usize> = (0..100_000).map(|_| z.sample(&mut rng)).collect();
        assert!(samples.iter().all(|&k| k < DISTINCT_INPUTS));
        // Under Zipf(1.0) over 100k ranks the top 10k carry H(10^4)/H(10^5) ≈ 81% of the mass.
        let top = samples.iter().filter(|&&k| k < CACHE_ENTRIES).count() as f64 / samples.len() as f64;
        assert!((0.78..0.84).contains(&top), "top-10k share {top}");
        // Rank 0 alone: 1/H(10^5) ≈ 8.3%.
        let first = samples.iter().filter(|&&k| k == 0).count() as f64 / samples.len() as f64;
        assert!((0.07..0.10).contains(&first), "rank-0 share {first}");
    }

    #[test]
    fn workload_jobs_are_deterministic_and_distinct() {
        assert_eq!(cache_job(5), cache_job(5));
        assert_ne!(cache_job(5), cache_job(6));
        assert_eq!(wide_job(1).nodes.len(), 64);
    }
}
