//! What the geometry-cache's cache buys for `geo.geodesic` (100 points), side by side:
//!
//! 1. in process, no NATS: a cache hit vs computing the geodesic directly vs a miss
//!    (hash + compute + insert + evict), with the argument hashing on its own, and what
//!    encoding and decoding the reply costs (with and without the bus's zstd), which every
//!    call pays, hit or miss;
//! 2. through a real nats-server, one service with caching on, 16 calls in flight:
//!    "uncached" (every call has a fresh `y`, so every call misses) vs "cached" (the same
//!    100 argument sets, warmed first, so every call hits). Calls/s, p50/p99 latency and the
//!    service's own hit rate from `$SRV.STATS` for each phase.
//!
//! Dimensions 10 and 1000: the geodesic costs ~35× more to compute in 1000, but its reply
//! is also 100× larger, so the cache's share of a call's cost is what is being measured.
//!
//! `cargo run --release -p geometry-cache --example cache_bench -- [scale]` (default 1.0;
//! e.g. 0.05 for a quick check; needs nats-server on the PATH). The client, the service and
//! nats-server share this machine's cores. The variants alternate over 3 rounds of
//! ≥ 0.4·scale s each so that noise on a shared machine hits both: in-process figures are
//! the best round, NATS figures pool every round (latency percentiles need the samples).
//! Prints markdown tables.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geometry_cache::{CacheConfig, GeoCache, OPS};
use hsync_bus::{Bus, BusConfig, Shutdown};
use hsync_client::OperatorClient;
use hsync_operators::{canonical_hash, Args};
use hsync_protocol::codec::{Codec, Format};
use hsync_protocol::names::services;
use hsync_protocol::operator::{OperatorCall, OperatorOutput};
use hsync_protocol::{Names, Tensor, Value};
use hsync_testkit::NatsServer;

const GEODESIC: &str = "geo.geodesic";
const POINTS: i64 = 100;
const IN_FLIGHT: usize = 16;
/// Argument sets the cached phase cycles through.
const DISTINCT: u64 = 100;
const ROUNDS: usize = 3;
const DIMS: [usize; 2] = [10, 1000];

/// One point with hyperbolic radius uniform in [0, 8) (as `hsync-geometry`'s `ann_recall`).
fn point(dim: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let v: Vec<f64> = (0..dim).map(|_| next() * 2.0 - 1.0).collect();
    let len = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let r = (next() * 4.0).tanh();
    v.iter().map(|x| x / len * r).collect()
}

fn geodesic_args(x: &[f64], y_seed: u64) -> Args {
    let y = point(x.len(), y_seed);
    BTreeMap::from([
        ("x".to_string(), Value::Tensor(Tensor::vector(x.to_vec()))),
        ("y".to_string(), Value::Tensor(Tensor::vector(y))),
        ("n".to_string(), Value::Int(POINTS)),
    ])
}

fn call(args: Args, i: usize) -> OperatorCall {
    OperatorCall { operator: GEODESIC.into(), args, job_id: format!("bench-{i}"), node_id: "geodesic".into() }
}

/// Calls per second of `f`, repeated for at least `min_secs`.
fn rate(min_secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        f();
        calls += 1;
        let secs = start.elapsed().as_secs_f64();
        if secs >= min_secs {
            return calls as f64 / secs;
        }
    }
}

fn in_process(secs: f64) -> anyhow::Result<()> {
    let op = OPS.iter().find(|o| o.id == GEODESIC).expect("the service has geo.geodesic");
    let ctx = geometry_cache::Context::default();
    let run = |a: &hsync_operators::Args| op.call(&ctx, a);
    println!("\n### in process, no NATS: `geo.geodesic`, n = {POINTS} (best of {ROUNDS} rounds)\n");
    println!("| dim | direct compute µs | cache hit µs | of which hashing µs | cache miss µs | direct ÷ hit | reply kB | reply encode µs | reply decode µs | encode + decode without zstd µs |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for dim in DIMS {
        let x = point(dim, 1);
        let (a, b) = (geodesic_args(&x, 2), geodesic_args(&x, 3));
        let warm = GeoCache::new(1000, 1 << 28);
        warm.get_or_compute(&a, run)?;
        // Room for one entry and two alternating argument sets: every call misses and evicts.
        let one = GeoCache::new(1, 1 << 28);
        let mut flip = false;
        // What every reply costs on top of the cache, hit or miss: the same codec as the bus.
        let codec = Codec::default();
        let reply = OperatorOutput { output: run(&a)?, cached: true };
        let (headers, body) = codec.encode(&reply, Format::MsgPack)?;
        // Random coordinates barely compress: how much of the codec's cost is zstd's.
        let plain = Codec { compress_threshold: usize::MAX, ..Codec::default() };
        let (plain_headers, plain_body) = plain.encode(&reply, Format::MsgPack)?;
        let mut best = [0.0f64; 8];
        for _ in 0..ROUNDS {
            let rates = [
                rate(secs, || {
                    black_box(run(black_box(&a)).expect("geodesic"));
                }),
                rate(secs, || {
                    black_box(warm.get_or_compute(black_box(&a), run).expect("geodesic"));
                }),
                rate(secs, || {
                    black_box(canonical_hash(black_box(&a)));
                }),
                rate(secs, || {
                    flip = !flip;
                    black_box(one.get_or_compute(black_box(if flip { &a } else { &b }), run).expect("geodesic"));
                }),
                rate(secs, || {
                    black_box(codec.encode(black_box(&reply), Format::MsgPack).expect("encode"));
                }),
                rate(secs, || {
                    black_box(codec.decode::<OperatorOutput>(Some(&headers), black_box(&body)).expect("decode"));
                }),
                rate(secs, || {
                    black_box(plain.encode(black_box(&reply), Format::MsgPack).expect("encode"));
                }),
                rate(secs, || {
                    black_box(plain.decode::<OperatorOutput>(Some(&plain_headers), black_box(&plain_body)).expect("decode"));
                }),
            ];
            for (b, r) in best.iter_mut().zip(rates) {
                *b = b.max(r);
            }
        }
        anyhow::ensure!(one.stats_json()["cache_hits"] == 0, "the miss cache hit: {}", one.stats_json());
        anyhow::ensure!(warm.stats_json()["cache_misses"] == 1, "the hit cache missed: {}", warm.stats_json());
        let us = best.map(|r| 1e6 / r);
        println!(
            "| {dim} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}× | {:.1} | {:.2} | {:.2} | {:.2} |",
            us[0],
            us[1],
            us[2],
            us[3],
            us[0] / us[1],
            body.len() as f64 / 1e3,
            us[4],
            us[5],
            us[6] + us[7],
        );
    }
    Ok(())
}

/// `(hits, misses)` of the geo.geodesic cache, from the service's `$SRV.STATS`.
async fn service_counts(bus: &Bus) -> anyhow::Result<(u64, u64)> {
    let reply = bus.primary().request(format!("$SRV.STATS.{}", services::GEOMETRY_CACHE), "".into()).await?;
    let stats: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    let data = stats["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == GEODESIC))
        .map(|e| &e["data"])
        .ok_or_else(|| anyhow::anyhow!("no {GEODESIC} endpoint in $SRV.STATS: {stats}"))?;
    let count = |k: &str| data[k].as_u64().ok_or_else(|| anyhow::anyhow!("no {k} in {data}"));
    Ok((count("cache_hits")?, count("cache_misses")?))
}

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    secs: f64,
    /// Replies the service marked `cached`.
    cached_replies: u64,
    hits: u64,
    misses: u64,
}

/// Keeps IN_FLIGHT calls going for at least `min_secs`; call i asks for `y = point(seed(i))`.
async fn phase(
    bus: &Arc<Bus>,
    x: &Arc<Vec<f64>>,
    min_secs: f64,
    seed: impl Fn(usize) -> u64 + Copy + Send + 'static,
    into: &mut Phase,
) -> anyhow::Result<()> {
    let subject = Names::default().operator(GEODESIC);
    let (hits0, misses0) = service_counts(bus).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, x, next, subject) = (OperatorClient::new(bus.clone()), x.clone(), next.clone(), subject.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut cached = 0u64;
                while start.elapsed().as_secs_f64() < min_secs {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let c = call(geodesic_args(&x, seed(i)), i);
                    let sent = Instant::now();
                    let out = client.call(subject.clone(), &c).await?;
                    latencies.push(sent.elapsed());
                    cached += u64::from(out.cached);
                }
                anyhow::Ok((latencies, cached))
            })
        })
        .collect();
    for w in workers {
        let (latencies, cached) = w.await??;
        into.latencies.extend(latencies);
        into.cached_replies += cached;
    }
    into.secs += start.elapsed().as_secs_f64();
    let (hits1, misses1) = service_counts(bus).await?;
    into.hits += hits1 - hits0;
    into.misses += misses1 - misses0;
    Ok(())
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// Milliseconds at quantile `q` (sorts the samples).
    fn percentile(&mut self, q: f64) -> f64 {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    fn row(&mut self, dim: usize, mode: &str, ratio: &str) {
        let calls = self.latencies.len();
        println!(
            "| {dim} | {mode} | {calls} | {:.0} | {:.2} | {:.2} | {:.1}% | {:.1}% | {ratio} |",
            self.rate(),
            self.percentile(0.5),
            self.percentile(0.99),
            100.0 * self.hits as f64 / (self.hits + self.misses).max(1) as f64,
            100.0 * self.cached_replies as f64 / calls.max(1) as f64,
        );
    }
}

async fn through_nats(secs: f64) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let config = BusConfig::for_url(&nats.url());
    let shutdown = Shutdown::new();
    let server_bus = Arc::new(Bus::connect(&config, "cache-bench-service").await?);
    // 256 MB: the 100 cached dimension-1000 geodesics (~0.8 MB each) fit with room to spare.
    let cache = CacheConfig::new(10_000, 1 << 28);
    let signal = shutdown.signal();
    let service = tokio::spawn(async move { geometry_cache::run(server_bus, cache, signal).await });
    let bus = Arc::new(Bus::connect(&config, "cache-bench-client").await?);
    let client = OperatorClient::new(bus.clone());
    let subject = Names::default().operator(GEODESIC);
    let probe = call(geodesic_args(&[0.1, 0.2], 1), 0);
    let mut ready = false;
    for _ in 0..200 {
        if client.call(subject.clone(), &probe).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::ensure!(ready, "the geometry-cache never answered on {subject}");

    println!("\n### through nats-server: `geo.geodesic`, n = {POINTS}, {IN_FLIGHT} calls in flight, one service (cache on)\n");
    println!("| dim | mode | calls | calls/s | p50 ms | p99 ms | service hit rate | replies marked cached | cached ÷ uncached calls/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // Uncached seeds never repeat across phases or dimensions; the cached set is seeds 0..100.
    let mut block = 0u64;
    for dim in DIMS {
        let x = Arc::new(point(dim, 1));
        let out = client.call(subject.clone(), &call(geodesic_args(&x, 0), 0)).await?;
        match &out.output {
            Value::Tensor(t) if t.shape() == [POINTS as usize, dim] => {}
            other => anyhow::bail!("unexpected geodesic reply: {:?}", other.type_name()),
        }
        let (mut uncached, mut cached) = (Phase::default(), Phase::default());
        for _ in 0..ROUNDS {
            block += 1;
            let base = 100_000_000 * block;
            phase(&bus, &x, secs, move |i| base + i as u64, &mut uncached).await?;
            // The uncached phase may have evicted the set: warm it untimed.
            for s in 0..DISTINCT {
                client.call(subject.clone(), &call(geodesic_args(&x, s), 0)).await?;
            }
            phase(&bus, &x, secs, |i| i as u64 % DISTINCT, &mut cached).await?;
        }
        let ratio = format!("{:.1}×", cached.rate() / uncached.rate());
        uncached.row(dim, "uncached", "1×");
        cached.row(dim, "cached", &ratio);
    }
    shutdown.trigger();
    service.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale: f64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1.0);
    let secs = 0.4 * scale;
    println!("geometry-cache bench: geodesics of {POINTS} points, y with hyperbolic radius uniform in [0, 8); rounds ≥ {secs:.2} s");
    in_process(secs)?;
    through_nats(secs).await
}
