//! Sarkar's embedding of a random tree: time, distortion and mean average precision.
//!
//! `cargo run --release -p hsync-geometry --example sarkar -- [nodes] [sources] [dim...]`
//! (defaults: 100000 nodes, 100 sources, dimensions 2 and 10). The tree is a random
//! recursive tree (node i hangs under a uniformly random earlier node; depth ≈ e·ln n,
//! highest degree ≈ log₂ n). Quality is measured from `sources` random nodes to every node.

use std::time::Instant;

use hsync_geometry::{embed_tree, EmbedOptions};

fn random_tree(n: usize, seed: u64) -> Vec<(u64, u64)> {
    let mut s = seed;
    (1..n as u64)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) % i, i)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(100_000);
    let sources = args.get(1).copied().unwrap_or(100);
    let dims: Vec<usize> = if args.len() > 2 { args[2..].to_vec() } else { vec![2, 10] };
    let edges = random_tree(n, 42);
    println!("random recursive tree: {n} nodes; quality from {sources} sources to all nodes; epsilon 0.1");
    println!("| dim | embed | tau | depth | max radius | f64-clamped nodes | quality time | avg distortion | worst distortion | MAP |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for dim in dims {
        let start = Instant::now();
        let embedding = embed_tree(n, &edges, &EmbedOptions { dim, ..EmbedOptions::default() })?;
        let embed_time = start.elapsed();
        let points = embedding.poincare_points();
        let start = Instant::now();
        let q = embedding.quality(sources, 1);
        let quality_time = start.elapsed();
        println!(
            "| {dim} | {:.2} s | {:.2} | {} | {:.0} | {} | {:.2} s | {:.4} | {:.4} | {:.4} |",
            embed_time.as_secs_f64(),
            embedding.tau(),
            embedding.max_depth(),
            points.max_radius,
            points.clamped,
            quality_time.as_secs_f64(),
            q.average_distortion,
            q.worst_distortion,
            q.mean_average_precision,
        );
    }
    Ok(())
}
