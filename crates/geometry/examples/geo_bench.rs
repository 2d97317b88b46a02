//! Throughput of the Poincaré-ball kernels (c = 1), every comparison side by side in one run:
//!
//! 1. single `distance` calls in dimensions 2, 10 and 100;
//! 2. `pairwise_distances` of 1000 points vs the same n² (and the n(n−1)/2 distinct)
//!    distances as single calls;
//! 3. `cross_distances` of 100 queries × 10000 points (dimension 10) vs single calls;
//! 4. `geodesic` of 100 points in dimensions 10 and 1000: the cost the geometry-cache
//!    saves on a hit.
//!
//! `cargo run --release -p hsync-geometry --example geo_bench -- [scale]` (default 1.0;
//! e.g. 0.05 for a quick check). Points have hyperbolic radius uniform in [0, 8), as in
//! `ann_recall`, so many lie near the boundary. Each figure is the best of 3 rounds that
//! alternate between the variants compared, each round ≥ 0.4·scale s: the machine is
//! shared, and alternating keeps a burst of noise from landing on one variant only.
//! Prints markdown tables.

use std::hint::black_box;
use std::time::Instant;

use hsync_geometry::PoincareBall;

mod common;
use common::cloud;

const ROUNDS: usize = 3;


/// Repeats `f` (which returns how many operations it did) for at least `min_secs`;
/// operations per second.
fn rate(min_secs: f64, mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut ops = 0;
    loop {
        ops += f();
        let secs = start.elapsed().as_secs_f64();
        if secs >= min_secs {
            return ops as f64 / secs;
        }
    }
}

/// Best rate of each variant over [`ROUNDS`] rounds that alternate between them.
fn best_of(min_secs: f64, variants: &mut [&mut dyn FnMut() -> usize]) -> Vec<f64> {
    let mut best = vec![0.0f64; variants.len()];
    for _ in 0..ROUNDS {
        for (b, f) in best.iter_mut().zip(variants.iter_mut()) {
            *b = b.max(rate(min_secs, f));
        }
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scale: f64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1.0);
    let secs = 0.4 * scale;
    let ball = PoincareBall::new(1.0)?;
    println!("Poincaré ball c = 1, points with hyperbolic radius uniform in [0, 8); best of {ROUNDS} rounds ≥ {secs:.2} s each");

    // 4096 pairs: the working set stays in cache even in dimension 100 (6.5 MB would not).
    println!("\n### single `distance` calls (4096 pre-generated pairs)\n");
    println!("| dim | distances/s | ns/distance |");
    println!("|---|---|---|");
    for dim in [2, 10, 100] {
        let xs = cloud(4096, dim, 1);
        let ys = cloud(4096, dim, 2);
        let mut single = || {
            for (x, y) in xs.iter().zip(&ys) {
                black_box(ball.distance(black_box(x), black_box(y)).expect("points are inside"));
            }
            xs.len()
        };
        let r = best_of(secs, &mut [&mut single])[0];
        println!("| {dim} | {r:.3e} | {:.1} |", 1e9 / r);
    }

    let n = 1000;
    println!("\n### `pairwise_distances`, n = {n} (one matrix = n² = {} entries)\n", n * n);
    println!("| dim | batched entries/s | n² single calls/s | n(n−1)/2 single calls, entries/s | batched ms/matrix | batched ÷ n² singles | batched ÷ n(n−1)/2 singles |");
    println!("|---|---|---|---|---|---|---|");
    for dim in [2, 10, 100] {
        let points = cloud(n, dim, 3);
        let mut batched = || {
            black_box(ball.pairwise_distances(black_box(&points)).expect("points are inside"));
            n * n
        };
        let mut all_singles = || {
            let mut m = vec![0.0; n * n];
            for (i, p) in points.iter().enumerate() {
                for (j, q) in points.iter().enumerate() {
                    m[i * n + j] = ball.distance(p, q).expect("points are inside");
                }
            }
            black_box(m);
            n * n
        };
        // A caller who knows d is symmetric: half the calls, mirrored (entries counted as n²).
        let mut half_singles = || {
            let mut m = vec![0.0; n * n];
            for (i, p) in points.iter().enumerate() {
                for (j, q) in points.iter().enumerate().skip(i + 1) {
                    let d = ball.distance(p, q).expect("points are inside");
                    m[i * n + j] = d;
                    m[j * n + i] = d;
                }
            }
            black_box(m);
            n * n
        };
        let r = best_of(secs, &mut [&mut batched, &mut all_singles, &mut half_singles]);
        println!(
            "| {dim} | {:.3e} | {:.3e} | {:.3e} | {:.1} | {:.1}× | {:.2}× |",
            r[0],
            r[1],
            r[2],
            1e3 * (n * n) as f64 / r[0],
            r[0] / r[1],
            r[0] / r[2]
        );
    }

    let (m, n, dim) = (100, 10_000, 10);
    println!("\n### `cross_distances`, {m} queries × {n} points, dim {dim}\n");
    println!("| variant | distances/s | ms per {m}×{n} | ratio |");
    println!("|---|---|---|---|");
    let queries = cloud(m, dim, 4);
    let points = cloud(n, dim, 5);
    let mut batched = || {
        black_box(ball.cross_distances(black_box(&queries), black_box(&points)).expect("points are inside"));
        m * n
    };
    let mut singles = || {
        let mut out = Vec::with_capacity(m * n);
        for q in &queries {
            for p in &points {
                out.push(ball.distance(q, p).expect("points are inside"));
            }
        }
        black_box(out);
        m * n
    };
    let r = best_of(secs, &mut [&mut batched, &mut singles]);
    println!("| `cross_distances` | {:.3e} | {:.1} | {:.2}× |", r[0], 1e3 * (m * n) as f64 / r[0], r[0] / r[1]);
    println!("| single `distance` calls | {:.3e} | {:.1} | 1× |", r[1], 1e3 * (m * n) as f64 / r[1]);

    let steps = 100;
    println!("\n### `geodesic(x, y, {steps})` (uncached: what a geometry-cache hit saves)\n");
    println!("| dim | calls/s | µs/call | ns/point |");
    println!("|---|---|---|---|");
    for dim in [10, 1000] {
        let xs = cloud(256, dim, 6);
        let ys = cloud(256, dim, 7);
        let mut geodesics = || {
            for (x, y) in xs.iter().zip(&ys) {
                black_box(ball.geodesic(black_box(x), black_box(y), steps).expect("points are inside"));
            }
            xs.len()
        };
        let r = best_of(secs, &mut [&mut geodesics])[0];
        println!("| {dim} | {r:.0} | {:.2} | {:.1} |", 1e6 / r, 1e9 / r / steps as f64);
    }
    Ok(())
}
