//! The Fréchet (Karcher) mean in the Poincaré ball, by Riemannian gradient descent.
//!
//! The mean minimises `f(x) = ½ Σ wᵢ d(x, pᵢ)² / Σ wᵢ`. Hyperbolic space has negative
//! curvature everywhere, so `f` is strictly geodesically convex and the minimiser is
//! unique. Its Riemannian gradient is `−Σ wᵢ log_x(pᵢ) / Σ wᵢ`, so each step moves along
//! `exp_x(η · Σ wᵢ log_x(pᵢ) / Σ wᵢ)`. With η = 1 this is the classical Karcher
//! iteration, which overshoots sideways once the points are spread: the Hessian of
//! `½ d(x, p)²` has eigenvalue 1 along the geodesic to `p` but `√c d coth(√c d)` across
//! it. So η = 1 / Σ wᵢ √c dᵢ coth(√c dᵢ), the inverse of a bound on the largest
//! eigenvalue, which makes every step decrease `f`; a step that still does not (rounding)
//! is halved.

use crate::error::{GeometryError, Result};
use crate::poincare::PoincareBall;
use crate::vector::norm;

/// Relative gradient below which a mean whose cost no longer decreases counts as
/// converged.
const ROUNDING_FLOOR: f64 = 1e-6;

/// When to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanOptions {
    /// Most gradient steps.
    pub max_iterations: usize,
    /// Stop once the gradient's Riemannian norm, relative to the spread of the points
    /// (the largest distance from the start to any point, at least 1), is below this.
    pub tolerance: f64,
}

impl Default for MeanOptions {
    fn default() -> Self {
        MeanOptions {
            max_iterations: 10_000,
            tolerance: 1e-12,
        }
    }
}

/// The mean and how it was reached.
#[derive(Clone, Debug, PartialEq)]
pub struct FrechetMean {
    /// The mean.
    pub point: Vec<f64>,
    /// Gradient steps taken.
    pub iterations: usize,
    /// The tolerance was met (otherwise `max_iterations` ran out).
    pub converged: bool,
    /// Riemannian norm of the gradient at `point`.
    pub gradient_norm: f64,
    /// `½ Σ wᵢ d(point, pᵢ)² / Σ wᵢ`.
    pub cost: f64,
}

impl PoincareBall {
    /// The weighted Fréchet mean of `points` (uniform weights when `weights` is `None`).
    pub fn frechet_mean<P: AsRef<[f64]>>(
        &self,
        points: &[P],
        weights: Option<&[f64]>,
        options: MeanOptions,
    ) -> Result<FrechetMean> {
        let first = points.first().ok_or(GeometryError::NoPoints)?.as_ref();
        for p in points {
            self.check_point(p.as_ref())?;
            if p.as_ref().len() != first.len() {
                return Err(GeometryError::DimensionMismatch {
                    expected: first.len(),
                    found: p.as_ref().len(),
                });
            }
        }
        let weights = normalized_weights(points.len(), weights)?;

        // Start at the weighted mean of the points seen from the origin: exact for points
        // on one geodesic through the origin placed symmetrically, and close otherwise.
        let mut tangent0 = vec![0.0; first.len()];
        for (p, w) in points.iter().zip(&weights) {
            for (t, l) in tangent0.iter_mut().zip(self.log0(p.as_ref())?) {
                *t += w * l;
            }
        }
        let mut x = self.exp0(&tangent0)?;
        let mut cost = self.mean_cost(&x, points, &weights)?;
        let mut spread: f64 = 1.0;
        for p in points {
            spread = spread.max(self.distance(&x, p.as_ref())?);
        }

        let mut iterations = 0;
        loop {
            let direction = self.mean_direction(&x, points, &weights)?;
            let mut step = 1.0 / self.hessian_bound(&x, points, &weights)?;
            let gradient_norm = norm(&direction) * self.conformal_factor(&x)?;
            if gradient_norm <= options.tolerance * spread || iterations >= options.max_iterations {
                return Ok(FrechetMean {
                    converged: gradient_norm <= options.tolerance * spread,
                    point: x,
                    iterations,
                    gradient_norm,
                    cost,
                });
            }
            iterations += 1;
            // Backtrack until the cost does not increase; 40 halvings reach 1e-12 of a
            // step, below which the gradient is rounding noise anyway.
            let mut accepted = false;
            for _ in 0..40 {
                let scaled: Vec<f64> = direction.iter().map(|d| d * step).collect();
                let candidate = self.exp_map(&x, &scaled)?;
                let candidate_cost = self.mean_cost(&candidate, points, &weights)?;
                if candidate_cost < cost {
                    x = candidate;
                    cost = candidate_cost;
                    accepted = true;
                    break;
                }
                step /= 2.0;
            }
            if !accepted {
                // No step lowers the cost any more: rounding, not the gradient, decides
                // from here. Converged if the gradient is at the level rounding leaves
                // (log maps of far points cancel to about 1e-6 of the spread at worst).
                let direction = self.mean_direction(&x, points, &weights)?;
                let gradient_norm = norm(&direction) * self.conformal_factor(&x)?;
                return Ok(FrechetMean {
                    converged: gradient_norm <= ROUNDING_FLOOR * spread,
                    gradient_norm,
                    point: x,
                    iterations,
                    cost,
                });
            }
        }
    }

    /// `Σ wᵢ log_x(pᵢ)` (weights already sum to 1): minus the gradient.
    fn mean_direction<P: AsRef<[f64]>>(&self, x: &[f64], points: &[P], weights: &[f64]) -> Result<Vec<f64>> {
        let mut direction = vec![0.0; x.len()];
        for (p, w) in points.iter().zip(weights) {
            for (d, l) in direction.iter_mut().zip(self.log_map(x, p.as_ref())?) {
                *d += w * l;
            }
        }
        Ok(direction)
    }

    /// `Σ wᵢ √c dᵢ coth(√c dᵢ)`: bounds the cost's Hessian from above (each term ≥ 1).
    fn hessian_bound<P: AsRef<[f64]>>(&self, x: &[f64], points: &[P], weights: &[f64]) -> Result<f64> {
        let sqrt_c = self.c().sqrt();
        let mut bound = 0.0;
        for (p, w) in points.iter().zip(weights) {
            let t = sqrt_c * self.distance(x, p.as_ref())?;
            bound += w * if t < 1e-8 { 1.0 } else { t / t.tanh() };
        }
        Ok(bound.max(1.0))
    }

    fn mean_cost<P: AsRef<[f64]>>(&self, x: &[f64], points: &[P], weights: &[f64]) -> Result<f64> {
        let mut cost = 0.0;
        for (p, w) in points.iter().zip(weights) {
            let d = self.distance(x, p.as_ref())?;
            cost += 0.5 * w * d * d;
        }
        Ok(cost)
    }
}

fn normalized_weights(n: usize, weights: Option<&[f64]>) -> Result<Vec<f64>> {
    let Some(w) = weights else {
        return Ok(vec![1.0 / n as f64; n]);
    };
    let invalid = |reason: String| Err(GeometryError::InvalidWeights { reason });
    if w.len() != n {
        return invalid(format!("{} weights for {n} points", w.len()));
    }
    if let Some((i, x)) = w.iter().enumerate().find(|(_, x)| !x.is_finite() || **x < 0.0) {
        return invalid(format!("weight {i} is {x}; weights must be finite and >= 0"));
    }
    let sum: f64 = w.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return invalid(format!("the weights sum to {sum}; the sum must be finite and > 0"));
    }
    Ok(w.iter().map(|x| x / sum).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_errors() {
        let b = PoincareBall::new(1.0).unwrap();
        let none: [Vec<f64>; 0] = [];
        assert_eq!(b.frechet_mean(&none, None, MeanOptions::default()), Err(GeometryError::NoPoints));
        let pts = [vec![0.1, 0.0], vec![0.0, 0.1]];
        for w in [vec![1.0], vec![-1.0, 2.0], vec![0.0, 0.0], vec![f64::NAN, 1.0]] {
            assert!(matches!(
                b.frechet_mean(&pts, Some(&w), MeanOptions::default()),
                Err(GeometryError::InvalidWeights { .. })
            ));
        }
        assert!(b.frechet_mean(&[vec![0.1, 0.0], vec![0.1]], None, MeanOptions::default()).is_err());
        assert!(b.frechet_mean(&[vec![1.5, 0.0]], None, MeanOptions::default()).is_err());
    }

    #[test]
    fn symmetric_points_average_to_the_origin_and_a_zero_weight_ignores_a_point() {
        let b = PoincareBall::new(1.0).unwrap();
        let m = b
            .frechet_mean(&[vec![0.5, 0.2], vec![-0.5, -0.2]], None, MeanOptions::default())
            .unwrap();
        assert!(m.converged && norm(&m.point) < 1e-12, "{m:?}");
        let m = b
            .frechet_mean(&[vec![0.3, 0.1], vec![-0.9, 0.0]], Some(&[1.0, 0.0]), MeanOptions::default())
            .unwrap();
        assert!(b.distance(&m.point, &[0.3, 0.1]).unwrap() < 1e-9, "{m:?}");
    }

    #[test]
    fn far_apart_points_converge() {
        // Each point 15 from the origin, so 30 (or ~29.3 at right angles) apart.
        let b = PoincareBall::new(1.0).unwrap();
        let r = 7.5f64.tanh();
        let m = b.frechet_mean(&[vec![r, 0.0], vec![0.0, r]], None, MeanOptions::default()).unwrap();
        assert!(m.converged, "{m:?}");
        let (d1, d2) = (b.distance(&m.point, &[r, 0.0]).unwrap(), b.distance(&m.point, &[0.0, r]).unwrap());
        let d = b.distance(&[r, 0.0], &[0.0, r]).unwrap();
        assert!(d > 28.0, "{d}");
        assert!((d1 - d2).abs() < 1e-6 && (d1 + d2 - d).abs() < 1e-6, "{d1} {d2} {d}");
    }
}
