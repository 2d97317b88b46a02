//! Exact k nearest neighbours in the Poincaré ball: the reference an approximate index
//! is measured against.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::Result;
use crate::poincare::PoincareBall;
use crate::vector::{check_same_dim, ensure_finite_scalar};

/// One neighbour: its index in the searched points and its distance to the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour {
    /// Position in the `points` given to the search.
    pub index: usize,
    /// Hyperbolic distance to the query.
    pub distance: f64,
}

/// Ordered by distance, then index, so that results are deterministic under ties.
#[derive(PartialEq)]
struct ByDistance(Neighbour);

impl Eq for ByDistance {}

impl PartialOrd for ByDistance {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByDistance {
    fn cmp(&self, other: &Self) -> Ordering {
        // Distances are finite (checked), so total_cmp is the numeric order.
        self.0
            .distance
            .total_cmp(&other.0.distance)
            .then(self.0.index.cmp(&other.0.index))
    }
}

impl PoincareBall {
    /// The `k` points nearest to `query`, nearest first (ties by index). Streams over
    /// `points` keeping a heap of `k`: memory O(k), time O(n log k). Every point is
    /// validated; `k` larger than `points.len()` returns all of them.
    pub fn knn<P: AsRef<[f64]>>(&self, query: &[f64], points: &[P], k: usize) -> Result<Vec<Neighbour>> {
        let dq = self.delta_of(query)?;
        let mut heap: BinaryHeap<ByDistance> = BinaryHeap::with_capacity(k.min(points.len()) + 1);
        for (index, p) in points.iter().enumerate() {
            let p = p.as_ref();
            check_same_dim(query, p)?;
            let dp = self.delta_of(p)?;
            if k == 0 {
                continue;
            }
            let distance = ensure_finite_scalar("knn", self.distance_kernel(query, p, dq, dp))?;
            let candidate = ByDistance(Neighbour { index, distance });
            if heap.len() < k {
                heap.push(candidate);
            } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                heap.pop();
                heap.push(candidate);
            }
        }
        Ok(heap.into_sorted_vec().into_iter().map(|b| b.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_full_sort_and_handles_edges() {
        let b = PoincareBall::new(0.5).unwrap();
        // A deterministic cloud of 500 points in the 3-ball of radius √2.
        let mut state = 42u64;
        let mut coord = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * 0.8
        };
        let points: Vec<Vec<f64>> = (0..500).map(|_| vec![coord(), coord(), coord()]).collect();
        let query = [0.3, -0.2, 0.5];
        let mut all: Vec<Neighbour> = points
            .iter()
            .enumerate()
            .map(|(index, p)| Neighbour { index, distance: b.distance(&query, p).unwrap() })
            .collect();
        all.sort_by(|x, y| x.distance.total_cmp(&y.distance).then(x.index.cmp(&y.index)));
        assert_eq!(b.knn(&query, &points, 10).unwrap(), all[..10]);
        assert_eq!(b.knn(&query, &points, 1000).unwrap(), all);
        assert!(b.knn(&query, &points, 0).unwrap().is_empty());
        // Ties: the same point twice comes back in index order.
        let twins = [vec![0.1, 0.0, 0.0], vec![0.5, 0.0, 0.0], vec![0.1, 0.0, 0.0]];
        let found = b.knn(&[0.0, 0.0, 0.0], &twins, 2).unwrap();
        assert_eq!((found[0].index, found[1].index), (0, 2));
        // Bad points are errors, not skipped.
        assert!(b.knn(&query, &[vec![0.1, 0.1]], 1).is_err());
        assert!(b.knn(&query, &[vec![2.0, 0.0, 0.0]], 1).is_err());
    }
}
