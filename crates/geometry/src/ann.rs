//! Approximate nearest neighbours in the Poincaré ball: an HNSW graph (instant-distance)
//! over a monotone transform of the hyperbolic distance, re-ranked exactly.
//!
//! The graph compares `u(x, y) = c‖x − y‖² / (δ_x δ_y)` (δ = 1 − c‖·‖²), for which
//! `cosh(√c d) = 1 + 2u`: the same order as the distance, without an `acosh` per
//! comparison. HNSW only ever compares distances, so the graph it builds is the one the
//! true distance would give, up to the f32 rounding of `u`, which the exact re-ranking of
//! the candidates undoes.

use instant_distance::{Builder, HnswMap, Point, Search};

use crate::error::Result;
use crate::knn::Neighbour;
use crate::poincare::PoincareBall;
use crate::vector::{check_same_dim, ensure_finite_scalar};

/// How the graph is built and searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnOptions {
    /// Candidates considered while inserting a point (quality of the graph).
    pub ef_construction: usize,
    /// Candidates gathered per query before the exact re-ranking (recall vs speed).
    pub ef_search: usize,
    /// Seed of the level assignment, for reproducible graphs.
    pub seed: u64,
}

impl Default for AnnOptions {
    fn default() -> Self {
        AnnOptions {
            ef_construction: 100,
            ef_search: 100,
            seed: 0x5eed,
        }
    }
}

#[derive(Clone, Debug)]
struct BallPoint {
    coords: Box<[f64]>,
    delta: f64,
    c: f64,
}

impl Point for BallPoint {
    fn distance(&self, other: &Self) -> f32 {
        let sq: f64 = self.coords.iter().zip(other.coords.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
        (self.c * sq / (self.delta * other.delta)) as f32
    }
}

/// An approximate index over a fixed set of points.
pub struct AnnIndex {
    ball: PoincareBall,
    map: HnswMap<BallPoint, usize>,
    dim: usize,
    ef_search: usize,
}

impl AnnIndex {
    /// Builds the graph over `points` (validated; all of one dimension). Indices in the
    /// answers are positions in `points`.
    pub fn build<P: AsRef<[f64]>>(ball: PoincareBall, points: &[P], options: AnnOptions) -> Result<AnnIndex> {
        let dim = points.first().map_or(0, |p| p.as_ref().len());
        let mut owned = Vec::with_capacity(points.len());
        for p in points {
            let p = p.as_ref();
            if let Some(first) = points.first() {
                check_same_dim(first.as_ref(), p)?;
            }
            owned.push(BallPoint {
                delta: ball.delta_of(p)?,
                coords: p.into(),
                c: ball.c(),
            });
        }
        let ids: Vec<usize> = (0..owned.len()).collect();
        let map = Builder::default()
            .ef_construction(options.ef_construction)
            .ef_search(options.ef_search)
            .seed(options.seed)
            .build(owned, ids);
        Ok(AnnIndex {
            ball,
            map,
            dim,
            ef_search: options.ef_search,
        })
    }

    /// The `k` (at most `ef_search`) approximate nearest neighbours of `query`, nearest
    /// first, with exact distances.
    pub fn search(&self, query: &[f64], k: usize) -> Result<Vec<Neighbour>> {
        if self.dim > 0 {
            check_same_dim(&vec![0.0; self.dim], query)?;
        }
        let q = BallPoint {
            delta: self.ball.delta_of(query)?,
            coords: query.into(),
            c: self.ball.c(),
        };
        let mut search = Search::default();
        let mut found = Vec::with_capacity(self.ef_search);
        for item in self.map.search(&q, &mut search).take(self.ef_search.max(k)) {
            let p = &item.point;
            let distance = ensure_finite_scalar("ann search", self.ball.distance_kernel(query, &p.coords, q.delta, p.delta))?;
            found.push(Neighbour { index: *item.value, distance });
        }
        found.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.index.cmp(&b.index)));
        found.truncate(k);
        Ok(found)
    }

    /// Number of indexed points.
    pub fn len(&self) -> usize {
        self.map.values.len()
    }

    /// No points indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fraction of `exact`'s indices that `approx` found (recall@k with k = `exact.len()`).
pub fn recall(exact: &[Neighbour], approx: &[Neighbour]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let hits = exact.iter().filter(|e| approx.iter().any(|a| a.index == e.index)).count();
    hits as f64 / exact.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points spread over the whole ball, many close to the boundary (where a Euclidean
    /// index would go wrong), from a fixed seed.
    fn cloud(n: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let v: Vec<f64> = (0..dim).map(|_| next() * 2.0 - 1.0).collect();
                let len = crate::norm(&v).max(1e-12);
                // Hyperbolic radius uniform in [0, 8): Euclidean radius tanh(r/2).
                let r = (next() * 8.0 / 2.0).tanh();
                v.iter().map(|x| x / len * r).collect()
            })
            .collect()
    }

    #[test]
    fn high_recall_and_exact_distances() {
        let ball = PoincareBall::new(1.0).unwrap();
        let points = cloud(3000, 5, 7);
        let index = AnnIndex::build(ball, &points, AnnOptions::default()).unwrap();
        assert_eq!(index.len(), 3000);
        let queries = cloud(50, 5, 99);
        let mut total = 0.0;
        for q in &queries {
            let exact = ball.knn(q, &points, 10).unwrap();
            let approx = index.search(q, 10).unwrap();
            assert_eq!(approx.len(), 10);
            for a in &approx {
                assert_eq!(a.distance, ball.distance(q, &points[a.index]).unwrap(), "re-ranked exactly");
            }
            total += recall(&exact, &approx);
        }
        let mean = total / queries.len() as f64;
        assert!(mean >= 0.9, "recall@10 = {mean}");
    }

    #[test]
    fn bad_queries_are_errors() {
        let ball = PoincareBall::new(1.0).unwrap();
        let index = AnnIndex::build(ball, &cloud(100, 3, 1), AnnOptions::default()).unwrap();
        assert!(index.search(&[0.1, 0.1], 3).is_err());
        assert!(index.search(&[1.0, 0.0, 0.0], 3).is_err());
        assert!(AnnIndex::build(ball, &[vec![0.1, 0.0], vec![0.1]], AnnOptions::default()).is_err());
    }
}
