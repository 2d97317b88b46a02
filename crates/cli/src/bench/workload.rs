//! The benchmark's jobs: deterministic, seeded, the same for every variant.

use std::collections::BTreeMap;

use hsync_cache::zipf::{Rng, Zipf};
use hsync_protocol::job::{Job, Node};
use hsync_protocol::{Arg, Tensor, Value};

pub const DISTINCT_INPUTS: usize = 100_000;
pub const CACHE_ENTRIES: usize = 10_000;

/// A job of the benchmark's submitter; a fresh job id is assigned per run.
pub fn bench_job(nodes: Vec<Node>, timeout_ms: Option<u64>) -> Job {
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
pub fn cache_job(key: usize) -> Job {
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
pub fn batching_job(job: usize) -> Job {
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
pub fn wide_job(job: usize) -> Job {
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

/// `n` keys drawn from Zipf(1.0) over `DISTINCT_INPUTS`, seeded: popular inputs repeat,
/// as they would for a cache in production.
pub fn zipf_keys(n: usize, seed: u64) -> Vec<usize> {
    let zipf = Zipf::new(DISTINCT_INPUTS, 1.0);
    let mut rng = Rng::new(seed);
    (0..n).map(|_| zipf.sample(&mut rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn zipf_keys_repeat_popular_inputs_and_follow_the_seed() {
        let keys = zipf_keys(10_000, 7);
        assert_eq!(keys, zipf_keys(10_000, 7));
        assert_ne!(keys, zipf_keys(10_000, 8));
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        // Zipf(1.0) over 100k inputs: far fewer distinct keys than draws.
        assert!(distinct.len() < 7_000, "{} distinct of 10000", distinct.len());
        assert!(keys.iter().all(|&k| k < DISTINCT_INPUTS));
    }
}
