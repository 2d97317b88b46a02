//! Extending a 10,000-node DAG by one node with one or two edges: the incremental
//! (Pearce–Kelly) order against a full re-sort (Kahn) over all edges.
//!
//! The base DAG: nodes 0..10_000, each node j > 0 with 3 edges i -> j from earlier
//! nodes i picked uniformly (fixed seed). Scenarios, per extension by a new node `n`:
//! - `append`: u1 -> n and u2 -> n. The new node is already last: no reordering.
//! - `reorder_near_end`: n -> v with v among the last 64 base nodes, then u -> n with
//!   u < v. The new node must move in front of v; v reaches few nodes.
//! - `reorder_anywhere`: the same with v uniform over the base nodes, so the affected
//!   region (everything v reaches, up to the end) is on average half the graph.
//!
//! Every timed batch starts from a fresh copy of the base graph (copied outside the
//! timing) and extends it by at most `CHUNK` nodes, so the graph stays near 10k nodes.
//! `cargo bench -p hsync-runner --bench toposort -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hsync_runner::incremental::{full_topological_order, IncrementalOrder};

const NODES: usize = 10_000;
const EDGES_PER_NODE: usize = 3;
/// Extensions per copy of the base graph.
const CHUNK: u64 = 1_000;

/// xorshift64*: enough randomness for picking nodes, with a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn base_edges() -> Vec<(usize, usize)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut edges = Vec::with_capacity(NODES * EDGES_PER_NODE);
    for j in 1..NODES {
        for _ in 0..EDGES_PER_NODE {
            edges.push((rng.below(j), j));
        }
    }
    edges
}

#[derive(Clone, Copy)]
enum Scenario {
    Append,
    ReorderNearEnd,
    ReorderAnywhere,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Append => "append",
            Scenario::ReorderNearEnd => "reorder_near_end",
            Scenario::ReorderAnywhere => "reorder_anywhere",
        }
    }

    /// The new node's edges, as (from, to) with `NEW` standing for the new node. Only
    /// base nodes are picked, and every path among base nodes (and through earlier new
    /// nodes, whose edges also go from a lower to a higher base id) rises in id, so no
    /// extension ever closes a cycle.
    fn edges(self, rng: &mut Rng) -> [(usize, usize); 2] {
        match self {
            Scenario::Append => [(rng.below(NODES), NEW), (rng.below(NODES), NEW)],
            Scenario::ReorderNearEnd => {
                let v = NODES - 64 + rng.below(64);
                [(NEW, v), (rng.below(v), NEW)]
            }
            Scenario::ReorderAnywhere => {
                let v = 1 + rng.below(NODES - 1);
                [(NEW, v), (rng.below(v), NEW)]
            }
        }
    }
}

const NEW: usize = usize::MAX;

fn resolve((from, to): (usize, usize), new: usize) -> (usize, usize) {
    let r = |x: usize| if x == NEW { new } else { x };
    (r(from), r(to))
}

/// Runs `iters` extensions in batches of at most `CHUNK`, each batch on a fresh copy of
/// `base` made (and given room for the batch by `prepare`) outside the timing.
fn timed_batches<T: Clone>(
    iters: u64,
    base: &T,
    rng: &mut Rng,
    prepare: impl Fn(&mut T, usize),
    mut extend: impl FnMut(&mut T, &mut Rng),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let batch = (iters - done).min(CHUNK);
        let mut g = base.clone();
        prepare(&mut g, batch as usize);
        let start = Instant::now();
        for _ in 0..batch {
            extend(&mut g, rng);
        }
        total += start.elapsed();
        black_box(&g);
        done += batch;
    }
    total
}

fn extend_by_one_node(c: &mut Criterion) {
    let edges = base_edges();
    let mut base = IncrementalOrder::with_capacity(NODES + CHUNK as usize);
    for _ in 0..NODES {
        base.add_node();
    }
    for &(u, v) in &edges {
        base.add_edge(u, v).expect("the base graph is a DAG");
    }
    let base_full = (NODES, edges);

    let mut group = c.benchmark_group("extend_10k_dag_by_one_node");
    for scenario in [
        Scenario::Append,
        Scenario::ReorderNearEnd,
        Scenario::ReorderAnywhere,
    ] {
        group.bench_function(BenchmarkId::new("incremental", scenario.name()), |b| {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03);
            b.iter_custom(|iters| {
                let prepare = |g: &mut IncrementalOrder, k: usize| g.reserve(k);
                timed_batches(iters, &base, &mut rng, prepare, |g, rng| {
                    let n = g.add_node();
                    for e in scenario.edges(rng) {
                        let (u, v) = resolve(e, n);
                        g.add_edge(u, v).expect("no cycles in the benchmark");
                    }
                    black_box(g.position(n));
                })
            });
        });
        group.bench_function(BenchmarkId::new("full_resort", scenario.name()), |b| {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03);
            b.iter_custom(|iters| {
                let prepare = |(_, edges): &mut (usize, Vec<(usize, usize)>), k: usize| {
                    edges.reserve(2 * k)
                };
                timed_batches(iters, &base_full, &mut rng, prepare, |(n, edges), rng| {
                    let new = *n;
                    *n += 1;
                    for e in scenario.edges(rng) {
                        edges.push(resolve(e, new));
                    }
                    let order = full_topological_order(*n, edges).expect("no cycles");
                    black_box(order);
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, extend_by_one_node);
criterion_main!(benches);
