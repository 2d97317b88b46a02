//! What measuring costs a request: `request_started` + `finish` (two short mutex holds and
//! one HDR histogram record), alone and with both cores recording at once; and what one
//! `/metrics` rendering costs with the geometry-cache's 22 endpoints (without the NATS
//! round trip for `$SRV.STATS`, which has no service here).
//! `cargo bench -p hsync-metrics --bench record -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

fn record(c: &mut Criterion) {
    let metrics = hsync_metrics::global();
    c.bench_function("request_started+finish", |b| {
        b.iter(|| metrics.request_started(black_box("hsync.op.geo.poincare.distance")).finish(None))
    });
    c.bench_function("request_started+finish, 2 threads", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..2 {
                    s.spawn(move || {
                        let subject = if t == 0 { "hsync.jobs.run" } else { "hsync.policy.evaluate" };
                        for _ in 0..iters {
                            metrics.request_started(black_box(subject)).finish(None);
                        }
                    });
                }
            });
            // Per request on one thread while the other records too (contention included).
            started.elapsed()
        })
    });
    for i in 0..22 {
        let subject = format!("hsync.op.bench.{i}");
        for _ in 0..1000 {
            metrics.request_started(&subject).finish(None);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    c.bench_function("render /metrics, 24 endpoints", |b| b.iter(|| runtime.block_on(metrics.render()).len()));
}

criterion_group!(benches, record);
criterion_main!(benches);
