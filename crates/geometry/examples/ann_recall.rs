//! Recall@10 and queries/s of the approximate index against exact search, side by side.
//!
//! `cargo run --release -p hsync-geometry --example ann_recall -- [points] [dim] [ef...]`
//! (defaults: 100000 points, dimension 10, ef_search 32 and 128). Points have hyperbolic
//! radius uniform in [0, 8) (many near the boundary); 200 queries from the same law.

use std::time::Instant;

use hsync_geometry::{recall, AnnIndex, AnnOptions, PoincareBall};

mod common;
use common::cloud;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(100_000);
    let dim = args.get(1).copied().unwrap_or(10);
    let efs: Vec<usize> = if args.len() > 2 { args[2..].to_vec() } else { vec![32, 128] };
    let ball = PoincareBall::new(1.0)?;
    let points = cloud(n, dim, 7);
    let queries = cloud(200, dim, 99);

    let start = Instant::now();
    let exact: Vec<_> = queries.iter().map(|q| ball.knn(q, &points, 10)).collect::<Result<_, _>>()?;
    let exact_qps = queries.len() as f64 / start.elapsed().as_secs_f64();
    println!("{n} points, dimension {dim}, 200 queries, k = 10");
    println!("exact: {exact_qps:.0} queries/s (recall 1.000)");
    for ef in efs {
        let start = Instant::now();
        let index = AnnIndex::build(ball, &points, AnnOptions { ef_search: ef, ..AnnOptions::default() })?;
        let build_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut total = 0.0;
        for (q, e) in queries.iter().zip(&exact) {
            total += recall(e, &index.search(q, 10)?);
        }
        let qps = queries.len() as f64 / start.elapsed().as_secs_f64();
        println!(
            "HNSW ef_search {ef}: {qps:.0} queries/s ({:.0}× exact), recall@10 {:.3}, built in {build_s:.1} s",
            qps / exact_qps,
            total / queries.len() as f64
        );
    }
    Ok(())
}
