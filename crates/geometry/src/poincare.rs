//! The Poincaré ball model 𝔻ⁿ_c = { x ∈ ℝⁿ : c‖x‖² < 1 } with curvature −c.
//!
//! Notation used in the comments: `s = √c`, `δ_x = 1 − c‖x‖²` (computed in double-double,
//! see [`crate::numeric::one_minus_c_norm_sq`]) and the conformal factor `λ_x = 2/δ_x`.

use serde::{Deserialize, Serialize};

use crate::curvature::{sqrt_of_valid, CurvatureRepr};
use crate::error::{GeometryError, Result};
use crate::numeric::{asinh_ratio, normalized, one_minus_c_norm_sq, tanh_parts};
use crate::vector::{
    check_finite, check_same_dim, check_vector, ensure_finite, ensure_finite_scalar, norm,
};

/// Relative margin used when a point must be pulled inside the ball: such points land
/// at norm `(1 − BOUNDARY_MARGIN)/√c`, i.e. at hyperbolic distance
/// `ln((2 − m)/m)/√c ≈ 35.2/√c` from the origin.
///
/// It is ~9 ulps of 1, the smallest margin that survives the rounding of the rescaling
/// and still leaves δ ≈ 2e-15 well resolved. Points already inside are never moved.
pub const BOUNDARY_MARGIN: f64 = 1e-15;

/// The Poincaré ball with curvature −c (c > 0), radius 1/√c.
///
/// Points are `&[f64]` of any common dimension ≥ 1; every method validates its inputs
/// and returns [`GeometryError`] instead of panicking or producing NaN/inf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CurvatureRepr", into = "CurvatureRepr")]
pub struct PoincareBall {
    c: f64,
    /// Cached √c; kept in sync with `c` by the constructor (the only way to build one).
    sqrt_c: f64,
}

impl TryFrom<CurvatureRepr> for PoincareBall {
    type Error = GeometryError;
    fn try_from(r: CurvatureRepr) -> Result<Self> {
        Self::new(r.c)
    }
}

impl From<PoincareBall> for CurvatureRepr {
    fn from(b: PoincareBall) -> Self {
        CurvatureRepr { c: b.c }
    }
}

impl PoincareBall {
    /// The ball with curvature −c. Fails unless `c` is finite and > 0.
    pub fn new(c: f64) -> Result<Self> {
        Ok(PoincareBall {
            c,
            sqrt_c: sqrt_of_valid(c)?,
        })
    }

    /// The curvature magnitude c (the sectional curvature is −c).
    pub fn c(&self) -> f64 {
        self.c
    }

    /// The Euclidean radius 1/√c of the ball (the boundary is not part of the model).
    pub fn radius(&self) -> f64 {
        1.0 / self.sqrt_c
    }

    /// Checks that `x` is a valid point: non-empty, finite, strictly inside the ball.
    pub fn check_point(&self, x: &[f64]) -> Result<()> {
        self.delta_of(x).map(|_| ())
    }

    /// The conformal factor λ_x = 2/(1 − c‖x‖²) of the metric at `x`.
    pub fn conformal_factor(&self, x: &[f64]) -> Result<f64> {
        let dx = self.delta_of(x)?;
        ensure_finite_scalar("conformal_factor", 2.0 / dx)
    }

    /// Hyperbolic distance
    /// `d(x, y) = (2/√c)·asinh(√c‖x − y‖ / √(δ_x δ_y))`.
    ///
    /// This is algebraically the textbook `(1/√c)·acosh(1 + 2c‖x−y‖²/(δ_x δ_y))`
    /// (because cosh 2u = 1 + 2 sinh² u), and equals `(2/√c)·artanh(√c‖(−x)⊕y‖)`; the
    /// asinh form needs no clamping at all and has no cancellation: `‖x − y‖` is
    /// computed from coordinate differences and the δ's in double-double. Exactly 0 for
    /// `x == y`, exactly symmetric.
    pub fn distance(&self, x: &[f64], y: &[f64]) -> Result<f64> {
        let (dx, dy) = self.delta_pair(x, y)?;
        ensure_finite_scalar("distance", self.distance_kernel(x, y, dx, dy))
    }

    /// Hyperbolic distance from the origin, `(2/√c)·artanh(√c‖x‖)`, evaluated as
    /// `(2/√c)·asinh(√c‖x‖/√δ_x)` for precision near the boundary.
    pub fn distance0(&self, x: &[f64]) -> Result<f64> {
        let dx = self.delta_of(x)?;
        let d = 2.0 * asinh_ratio(self.sqrt_c * norm(x), 1.0, dx) / self.sqrt_c;
        ensure_finite_scalar("distance0", d)
    }

    /// All pairwise distances as a **row-major n×n matrix** (`m[i*n + j] = d(p_i, p_j)`):
    /// symmetric (each pair is computed once and mirrored), zero diagonal. Empty input
    /// gives an empty vector. All points must have the same dimension.
    pub fn pairwise_distances<P: AsRef<[f64]>>(&self, points: &[P]) -> Result<Vec<f64>> {
        let n = points.len();
        let len = n.checked_mul(n).ok_or(GeometryError::TooManyPoints { n })?;
        let Some(first) = points.first() else {
            return Ok(Vec::new());
        };
        let first = first.as_ref();
        // Validate everything up front and cache δ for each point: the O(n·d)
        // double-double work is then not repeated in the O(n²·d) loop.
        let mut deltas = Vec::with_capacity(n);
        for p in points {
            let p = p.as_ref();
            check_same_dim(first, p)?;
            deltas.push(self.delta_of(p)?);
        }
        let mut m = vec![0.0; len];
        for (i, (pi, &di)) in points.iter().zip(&deltas).enumerate() {
            for (j, (pj, &dj)) in points.iter().zip(&deltas).enumerate().skip(i + 1) {
                let d = ensure_finite_scalar(
                    "pairwise_distances",
                    self.distance_kernel(pi.as_ref(), pj.as_ref(), di, dj),
                )?;
                // i < j < n, so both indices are < n² = m.len(); `get_mut` keeps even a
                // logic error from panicking.
                if let Some(slot) = m.get_mut(i * n + j) {
                    *slot = d;
                }
                if let Some(slot) = m.get_mut(j * n + i) {
                    *slot = d;
                }
            }
        }
        Ok(m)
    }

    /// Distances from each of `queries` to each of `points`, as a **row-major m×n
    /// matrix** (`m[i*n + j] = d(q_i, p_j)`): the batch form for nearest-neighbour search
    /// and for comparing a few points with a table, where the square matrix of
    /// [`Self::pairwise_distances`] would be wasted. δ is computed once per point.
    pub fn cross_distances<Q: AsRef<[f64]>, P: AsRef<[f64]>>(&self, queries: &[Q], points: &[P]) -> Result<Vec<f64>> {
        let (m, n) = (queries.len(), points.len());
        let len = m.checked_mul(n).ok_or(GeometryError::TooManyPoints { n: m.max(n) })?;
        let Some(first) = queries.first().map(AsRef::as_ref).or(points.first().map(AsRef::as_ref)) else {
            return Ok(Vec::new());
        };
        let delta_of_all = |items: &mut dyn Iterator<Item = &[f64]>| -> Result<Vec<f64>> {
            items
                .map(|p| {
                    check_same_dim(first, p)?;
                    self.delta_of(p)
                })
                .collect()
        };
        let dq = delta_of_all(&mut queries.iter().map(AsRef::as_ref))?;
        let dp = delta_of_all(&mut points.iter().map(AsRef::as_ref))?;
        let mut out = Vec::with_capacity(len);
        for (q, &dqi) in queries.iter().zip(&dq) {
            for (p, &dpj) in points.iter().zip(&dp) {
                out.push(ensure_finite_scalar(
                    "cross_distances",
                    self.distance_kernel(q.as_ref(), p.as_ref(), dqi, dpj),
                )?);
            }
        }
        Ok(out)
    }

    /// Möbius addition
    /// `x ⊕ y = ((1 + 2c⟨x,y⟩ + c‖y‖²)x + (1 − c‖x‖²)y) / (1 + 2c⟨x,y⟩ + c²‖x‖²‖y‖²)`.
    ///
    /// Evaluated in the equivalent cancellation-free form
    /// `(δ_x (x + y) + c‖x + y‖² x) / (δ_x δ_y + c‖x + y‖²)` (both denominator terms are
    /// ≥ 0). `x ⊕ 0 = x` and `0 ⊕ y = y` exactly; `(−x) ⊕ x = 0` exactly.
    pub fn mobius_add(&self, x: &[f64], y: &[f64]) -> Result<Vec<f64>> {
        let (dx, dy) = self.delta_pair(x, y)?;
        // The identities are special-cased so they hold bit for bit.
        if y.iter().all(|&v| v == 0.0) {
            return Ok(x.to_vec());
        }
        if x.iter().all(|&v| v == 0.0) {
            return Ok(y.to_vec());
        }
        let z = ensure_finite("mobius_add", self.mobius_kernel(x, y, dx, dy))?;
        Ok(self.clamp_into_ball(z))
    }

    /// Möbius scalar multiplication `r ⊗ x = tanh(r·artanh(√c‖x‖))·x/(√c‖x‖)`.
    ///
    /// `artanh(√c‖x‖)` is evaluated as `asinh(√c‖x‖/√δ_x)` (precise near the boundary).
    /// If the result would be closer to the boundary than f64 can represent it is pulled
    /// inside (see [`BOUNDARY_MARGIN`]).
    pub fn mobius_scalar_mul(&self, r: f64, x: &[f64]) -> Result<Vec<f64>> {
        if !r.is_finite() {
            return Err(GeometryError::NonFiniteScalar {
                name: "r",
                value: r,
            });
        }
        let dx = self.delta_of(x)?;
        let Some(dir) = normalized(x) else {
            return Ok(vec![0.0; x.len()]);
        };
        let t = r * asinh_ratio(self.sqrt_c * norm(x), 1.0, dx);
        let (th, _, _) = tanh_parts(t.abs());
        let scale = th.copysign(t) / self.sqrt_c;
        let z = ensure_finite("mobius_scalar_mul", dir.iter().map(|u| u * scale).collect())?;
        Ok(self.clamp_into_ball(z))
    }

    /// Exponential map at `x`: `exp_x(v) = x ⊕ (tanh(√c λ_x ‖v‖/2) · v/(√c‖v‖))`.
    ///
    /// `v` is a tangent vector (any finite magnitude). The δ of the second operand is
    /// passed on as `sech²(√c λ_x‖v‖/2)` instead of being recomputed from its rounded
    /// coordinates, which keeps long geodesics accurate. Results that f64 cannot place
    /// strictly inside the ball (travel ≳ 36/√c towards the boundary) are pulled inside,
    /// see [`BOUNDARY_MARGIN`].
    pub fn exp_map(&self, x: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        let dx = self.delta_of(x)?;
        check_vector(v)?;
        check_same_dim(x, v)?;
        let Some(dir) = normalized(v) else {
            return Ok(x.to_vec());
        };
        // √c·λ_x‖v‖/2 = √c‖v‖/δ_x; may overflow to +inf, which tanh_parts handles.
        let t = self.sqrt_c * norm(v) / dx;
        self.step_along(x, dx, &dir, t, "exp_map")
    }

    /// Logarithmic map at `x`: `log_x(y) = (2/(√c λ_x))·artanh(√c‖u‖)·u/‖u‖` with
    /// `u = (−x) ⊕ y`.
    ///
    /// Since `(2/√c)·artanh(√c‖u‖) = d(x, y)`, this is evaluated as `(δ_x d(x,y)/2)·û`
    /// with the stable distance, and `û` taken from the numerator of `(−x) ⊕ y`,
    /// `δ_x (y − x) − c‖y − x‖² x`, which needs no division. `log_x(x) = 0`.
    pub fn log_map(&self, x: &[f64], y: &[f64]) -> Result<Vec<f64>> {
        let (dx, dy) = self.delta_pair(x, y)?;
        let d = self.distance_kernel(x, y, dx, dy);
        if d == 0.0 {
            return Ok(vec![0.0; x.len()]);
        }
        let Some(dir) = self.direction(x, y, dx) else {
            return Ok(vec![0.0; x.len()]);
        };
        let scale = dx * d / 2.0;
        ensure_finite("log_map", dir.iter().map(|u| u * scale).collect())
    }

    /// Exponential map at the origin: `exp_0(v) = tanh(√c‖v‖)·v/(√c‖v‖)`.
    pub fn exp0(&self, v: &[f64]) -> Result<Vec<f64>> {
        check_vector(v)?;
        let Some(dir) = normalized(v) else {
            return Ok(vec![0.0; v.len()]);
        };
        let (th, _, _) = tanh_parts(self.sqrt_c * norm(v));
        let scale = th / self.sqrt_c;
        let z = ensure_finite("exp0", dir.iter().map(|u| u * scale).collect())?;
        Ok(self.clamp_into_ball(z))
    }

    /// Logarithmic map at the origin: `log_0(y) = artanh(√c‖y‖)·y/(√c‖y‖)`, with the
    /// artanh evaluated as `asinh(√c‖y‖/√δ_y)` (precise near the boundary).
    pub fn log0(&self, y: &[f64]) -> Result<Vec<f64>> {
        let dy = self.delta_of(y)?;
        let Some(dir) = normalized(y) else {
            return Ok(vec![0.0; y.len()]);
        };
        let scale = asinh_ratio(self.sqrt_c * norm(y), 1.0, dy) / self.sqrt_c;
        ensure_finite("log0", dir.iter().map(|u| u * scale).collect())
    }

    /// `n >= 2` points on the geodesic from `x` to `y`, both endpoints included (exact
    /// copies), evenly spaced in hyperbolic arc length: point k is
    /// `exp_x((k/(n−1))·log_x(y)) = x ⊕ ((k/(n−1)) ⊗ ((−x) ⊕ y))`.
    ///
    /// Points in the second half are computed from `y` towards `x`, so each point is
    /// built from its nearer endpoint (smaller error, symmetric in x and y).
    pub fn geodesic(&self, x: &[f64], y: &[f64], n: usize) -> Result<Vec<Vec<f64>>> {
        if n < 2 {
            return Err(GeometryError::TooFewGeodesicPoints { n });
        }
        let (dx, dy) = self.delta_pair(x, y)?;
        let d = self.distance_kernel(x, y, dx, dy);
        let (dir_xy, dir_yx) = match (self.direction(x, y, dx), self.direction(y, x, dy)) {
            (Some(a), Some(b)) if d > 0.0 => (a, b),
            // x == y (or indistinguishable): the geodesic is constant.
            _ => return Ok(vec![x.to_vec(); n]),
        };
        let last = n - 1;
        let steps = last as f64;
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let p = if k == 0 {
                x.to_vec()
            } else if k == last {
                y.to_vec()
            } else if 2 * k <= last {
                let len = d * (k as f64 / steps);
                self.step_along(x, dx, &dir_xy, self.sqrt_c * len / 2.0, "geodesic")?
            } else {
                let len = d * ((last - k) as f64 / steps);
                self.step_along(y, dy, &dir_yx, self.sqrt_c * len / 2.0, "geodesic")?
            };
            out.push(p);
        }
        Ok(out)
    }

    /// Projects `x` onto the open ball: points inside are returned unchanged; points on
    /// or outside the boundary are scaled radially to norm `(1 − BOUNDARY_MARGIN)/√c`.
    /// Fails only for empty or non-finite input.
    pub fn project(&self, x: &[f64]) -> Result<Vec<f64>> {
        check_vector(x)?;
        Ok(self.clamp_into_ball(x.to_vec()))
    }

    // ---- internals -------------------------------------------------------------------

    /// For callers that already validated `c` (the Lorentz model) and hold its root.
    pub(crate) fn from_validated(c: f64, sqrt_c: f64) -> Self {
        PoincareBall { c, sqrt_c }
    }

    /// Validates `x` as a point and returns its δ.
    pub(crate) fn delta_of(&self, x: &[f64]) -> Result<f64> {
        check_vector(x)?;
        let dx = one_minus_c_norm_sq(self.c, x);
        if dx > 0.0 {
            Ok(dx)
        } else {
            Err(GeometryError::OutsideBall {
                norm: norm(x),
                radius: self.radius(),
            })
        }
    }

    /// Validates two points of the same dimension and returns their δ's.
    fn delta_pair(&self, x: &[f64], y: &[f64]) -> Result<(f64, f64)> {
        // Cheap structural checks first, so a mismatch is reported as such.
        check_vector(x)?;
        check_vector(y)?;
        check_same_dim(x, y)?;
        Ok((self.delta_of(x)?, self.delta_of(y)?))
    }

    pub(crate) fn distance_kernel(&self, x: &[f64], y: &[f64], dx: f64, dy: f64) -> f64 {
        let diff = crate::numeric::norm_of(x.iter().zip(y).map(|(a, b)| a - b));
        2.0 * asinh_ratio(self.sqrt_c * diff, dx, dy) / self.sqrt_c
    }

    /// `x ⊕ y` from precomputed δ's (see [`Self::mobius_add`] for the formula).
    fn mobius_kernel(&self, x: &[f64], y: &[f64], dx: f64, dy: f64) -> Vec<f64> {
        let w: Vec<f64> = x.iter().zip(y).map(|(a, b)| a + b).collect();
        self.mobius_from_sum(x, &w, dx, dy)
    }

    /// `x ⊕ y` given `w = x + y` and the δ's: only w, x, δ_x, δ_y enter the formula,
    /// which lets [`Self::step_along`] supply a more accurate w than `x + fl(y)`.
    fn mobius_from_sum(&self, x: &[f64], w: &[f64], dx: f64, dy: f64) -> Vec<f64> {
        if w.iter().all(|&v| v == 0.0) {
            // y = −x: the result is exactly the origin.
            return vec![0.0; x.len()];
        }
        // √c‖w‖ <= 2 for in-ball operands, so q cannot overflow.
        let sw = self.sqrt_c * norm(w);
        let q = sw * sw;
        let den = dx * dy + q;
        if den.is_nan() || den <= 0.0 {
            // Only if every term underflowed (both points within ~1e-160 of the boundary
            // and y ≈ −x); the limit is the origin.
            return vec![0.0; x.len()];
        }
        let k_w = dx / den;
        let k_x = q / den;
        w.iter()
            .zip(x)
            .map(|(wi, xi)| k_w * wi + k_x * xi)
            .collect()
    }

    /// Unit vector in the direction of `(−x) ⊕ y`, i.e. of `δ_x (y − x) − c‖y − x‖² x`.
    fn direction(&self, x: &[f64], y: &[f64], dx: f64) -> Option<Vec<f64>> {
        let diff: Vec<f64> = y.iter().zip(x).map(|(b, a)| b - a).collect();
        let sd = self.sqrt_c * norm(&diff);
        let q = sd * sd;
        let g: Vec<f64> = diff
            .iter()
            .zip(x)
            .map(|(di, xi)| dx * di - q * xi)
            .collect();
        // g = 0 only if y = x up to rounding; fall back to the chord direction.
        normalized(&g).or_else(|| normalized(&diff))
    }

    /// `x ⊕ (tanh(t)/√c · dir)` for a unit `dir`: `exp_x` for a tangent vector of
    /// Riemannian length 2t/√c.
    ///
    /// Two precision measures for long steps, where the intermediate point u lies close
    /// to the boundary and rounding its coordinates would move it by ~1e-16/δ_u in
    /// hyperbolic distance: u's δ is passed as the exact `sech² t`, and u itself is never
    /// formed — the formula only needs `w = x + u`, computed as
    /// `(x + dir/√c) − (1 − tanh t)·dir/√c`, which is exact-ish exactly when x sits
    /// opposite u (the cancelling case, where w is small).
    fn step_along(
        &self,
        x: &[f64],
        dx: f64,
        dir: &[f64],
        t: f64,
        operation: &'static str,
    ) -> Result<Vec<f64>> {
        let (th, one_minus_th, sech2) = tanh_parts(t);
        let inv_s = 1.0 / self.sqrt_c;
        let w: Vec<f64> = if th < 0.5 {
            // Short step: the direct sum has no cancellation to protect.
            x.iter()
                .zip(dir)
                .map(|(xi, di)| xi + th * inv_s * di)
                .collect()
        } else {
            x.iter()
                .zip(dir)
                .map(|(xi, di)| {
                    let edge = di * inv_s;
                    (xi + edge) - one_minus_th * edge
                })
                .collect()
        };
        let z = ensure_finite(operation, self.mobius_from_sum(x, &w, dx, sech2))?;
        Ok(self.clamp_into_ball(z))
    }

    /// Returns `z` unchanged if it is strictly inside the ball, otherwise pulls it
    /// radially to norm `(1 − BOUNDARY_MARGIN)/√c`. `z` must be finite.
    pub(crate) fn clamp_into_ball(&self, z: Vec<f64>) -> Vec<f64> {
        if check_finite(&z).is_ok() && one_minus_c_norm_sq(self.c, &z) > 0.0 {
            return z;
        }
        let Some(dir) = normalized(&z) else {
            // Zero (always inside, so unreachable) or non-finite: the origin is the only
            // safe answer.
            return vec![0.0; z.len()];
        };
        // One iteration suffices in practice (the margin is ~9 ulps, the rescaling
        // error ≤ ~3 ulps); the doubling margin only guards against pathological
        // rounding and reaches 1/2 (certainly inside) within 50 steps.
        let mut margin = BOUNDARY_MARGIN;
        for _ in 0..64 {
            let r = (1.0 - margin) / self.sqrt_c;
            let cand: Vec<f64> = dir.iter().map(|u| u * r).collect();
            if one_minus_c_norm_sq(self.c, &cand) > 0.0 {
                return cand;
            }
            margin = (2.0 * margin).min(0.5);
        }
        vec![0.0; z.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ball(c: f64) -> PoincareBall {
        PoincareBall::new(c).unwrap()
    }

    fn assert_close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
    }

    #[test]
    fn curvature_is_validated() {
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = PoincareBall::new(c).unwrap_err();
            assert!(matches!(err, GeometryError::InvalidCurvature { .. }), "{c}");
        }
        assert!(PoincareBall::new(f64::MIN_POSITIVE).is_ok());
    }

    #[test]
    fn outside_ball_error_names_the_norm() {
        let b = ball(4.0); // radius 0.5
        let err = b.distance(&[0.0, 0.0], &[0.3, 0.4]).unwrap_err();
        assert_eq!(
            err,
            GeometryError::OutsideBall {
                norm: 0.5,
                radius: 0.5
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("norm is 0.5"), "{msg}");
        assert!(msg.contains("1/sqrt(c) = 0.5"), "{msg}");
    }

    #[test]
    fn errors_for_bad_inputs() {
        let b = ball(1.0);
        assert_eq!(b.distance(&[], &[]), Err(GeometryError::EmptyVector));
        assert_eq!(
            b.distance(&[0.1], &[0.1, 0.2]),
            Err(GeometryError::DimensionMismatch {
                expected: 1,
                found: 2
            })
        );
        assert!(matches!(
            b.mobius_add(&[0.1, f64::INFINITY], &[0.0, 0.0]),
            Err(GeometryError::NonFiniteCoordinate { index: 1, .. })
        ));
        assert_eq!(
            b.geodesic(&[0.1], &[0.2], 1),
            Err(GeometryError::TooFewGeodesicPoints { n: 1 })
        );
        assert!(matches!(
            b.mobius_scalar_mul(f64::NAN, &[0.1]),
            Err(GeometryError::NonFiniteScalar { .. })
        ));
        assert!(matches!(
            b.exp_map(&[0.1], &[1.0, 2.0]),
            Err(GeometryError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            b.log0(&[1.0]),
            Err(GeometryError::OutsideBall { .. })
        ));
        assert!(matches!(
            b.project(&[f64::NAN]),
            Err(GeometryError::NonFiniteCoordinate { .. })
        ));
        assert_eq!(
            b.pairwise_distances(&[vec![0.1], vec![0.1, 0.0]]),
            Err(GeometryError::DimensionMismatch {
                expected: 1,
                found: 2
            })
        );
    }

    #[test]
    fn known_distances() {
        let b = ball(1.0);
        // d(0, x) = 2 artanh(‖x‖) = ln 3 for ‖x‖ = 1/2.
        assert_close(
            b.distance(&[0.0, 0.0], &[0.3, 0.4]).unwrap(),
            3f64.ln(),
            1e-15,
        );
        assert_close(b.distance0(&[0.3, 0.4]).unwrap(), 3f64.ln(), 1e-15);
        assert_eq!(b.distance(&[0.3, 0.4], &[0.3, 0.4]), Ok(0.0));
        // Curvature scaling: with c = 4 the radius is 1/2 and d = (2/√c) artanh(√c‖x‖).
        let b4 = ball(4.0);
        assert_close(
            b4.distance(&[0.0], &[0.25]).unwrap(),
            3f64.ln() / 2.0,
            1e-15,
        );
    }

    #[test]
    fn mobius_identities_are_exact() {
        let b = ball(1.7);
        let x = [0.2, -0.3, 0.1];
        assert_eq!(b.mobius_add(&x, &[0.0; 3]).unwrap(), x.to_vec());
        assert_eq!(b.mobius_add(&[0.0; 3], &x).unwrap(), x.to_vec());
        let minus: Vec<f64> = x.iter().map(|v| -v).collect();
        assert_eq!(b.mobius_add(&minus, &x).unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn mobius_add_matches_textbook_formula() {
        let b = ball(0.8);
        let (x, y) = ([0.3, -0.2], [-0.5, 0.6]);
        let c = 0.8;
        let xy = x[0] * y[0] + x[1] * y[1];
        let xx = x[0] * x[0] + x[1] * x[1];
        let yy = y[0] * y[0] + y[1] * y[1];
        let den = 1.0 + 2.0 * c * xy + c * c * xx * yy;
        let got = b.mobius_add(&x, &y).unwrap();
        for i in 0..2 {
            let want = ((1.0 + 2.0 * c * xy + c * yy) * x[i] + (1.0 - c * xx) * y[i]) / den;
            assert_close(got[i], want, 1e-15);
        }
    }

    #[test]
    fn exp_log_roundtrip_and_origin_versions() {
        let b = ball(2.5);
        let x = [0.1, 0.4];
        let y = [-0.3, 0.2];
        let v = b.log_map(&x, &y).unwrap();
        let back = b.exp_map(&x, &v).unwrap();
        assert_close(back[0], y[0], 1e-14);
        assert_close(back[1], y[1], 1e-14);
        // Riemannian length of log_x(y) is the distance.
        let len = b.conformal_factor(&x).unwrap() * norm(&v);
        assert_close(len, b.distance(&x, &y).unwrap(), 1e-14);
        // At the origin the general maps agree with exp0/log0.
        let l0 = b.log0(&y).unwrap();
        let l = b.log_map(&[0.0, 0.0], &y).unwrap();
        assert_close(l0[0], l[0], 1e-15);
        assert_close(l0[1], l[1], 1e-15);
        let e0 = b.exp0(&l0).unwrap();
        assert_close(e0[0], y[0], 1e-15);
        assert_close(e0[1], y[1], 1e-15);
        assert_eq!(b.log_map(&x, &x).unwrap(), vec![0.0, 0.0]);
        assert_eq!(b.exp_map(&x, &[0.0, 0.0]).unwrap(), x.to_vec());
    }

    #[test]
    fn scalar_mul_is_consistent_with_distance() {
        let b = ball(1.3);
        let x = [0.2, 0.5];
        let d = b.distance0(&x).unwrap();
        for r in [-2.0, 0.0, 0.5, 3.0] {
            let y = b.mobius_scalar_mul(r, &x).unwrap();
            assert_close(b.distance0(&y).unwrap(), f64::abs(r) * d, 1e-12);
        }
        // 2 ⊗ x = x ⊕ x.
        let twice = b.mobius_scalar_mul(2.0, &x).unwrap();
        let sum = b.mobius_add(&x, &x).unwrap();
        assert_close(twice[0], sum[0], 1e-14);
        assert_close(twice[1], sum[1], 1e-14);
    }

    #[test]
    fn geodesic_endpoints_and_spacing() {
        let b = ball(1.0);
        let x = [0.9, 0.0];
        let y = [-0.2, 0.7];
        let pts = b.geodesic(&x, &y, 7).unwrap();
        assert_eq!(pts.len(), 7);
        assert_eq!(pts[0], x.to_vec());
        assert_eq!(pts[6], y.to_vec());
        let d = b.distance(&x, &y).unwrap();
        for w in pts.windows(2) {
            assert_close(b.distance(&w[0], &w[1]).unwrap(), d / 6.0, 1e-12);
        }
        // Constant geodesic.
        assert_eq!(b.geodesic(&x, &x, 3).unwrap(), vec![x.to_vec(); 3]);
    }

    #[test]
    fn project_and_saturation() {
        let b = ball(1.0);
        assert_eq!(b.project(&[0.3, 0.4]).unwrap(), vec![0.3, 0.4]);
        for p in [vec![3.0, 4.0], vec![1.0, 0.0], vec![1e300, -1e300]] {
            let q = b.project(&p).unwrap();
            b.check_point(&q).unwrap();
            let d = b.distance0(&q).unwrap();
            assert!((d - 35.23).abs() < 0.1, "{d}");
        }
        // Huge tangent vectors saturate instead of producing NaN.
        let z = b.exp0(&[1e308, 1e308]).unwrap();
        b.check_point(&z).unwrap();
        let z = b.exp_map(&[0.5, 0.0], &[-1e300, 0.0]).unwrap();
        b.check_point(&z).unwrap();
        assert!(z[0] < 0.0);
    }

    #[test]
    fn pairwise_matrix_layout() {
        let b = ball(1.0);
        let pts = vec![vec![0.0, 0.0], vec![0.5, 0.0], vec![0.0, -0.5]];
        let m = b.pairwise_distances(&pts).unwrap();
        assert_eq!(m.len(), 9);
        for i in 0..3 {
            assert_eq!(m[i * 3 + i], 0.0);
            for j in 0..3 {
                assert_eq!(m[i * 3 + j], m[j * 3 + i]);
                assert_eq!(m[i * 3 + j], b.distance(&pts[i], &pts[j]).unwrap());
            }
        }
        let empty: Vec<Vec<f64>> = Vec::new();
        assert_eq!(b.pairwise_distances(&empty).unwrap(), Vec::<f64>::new());
    }

    #[test]
    fn serde_roundtrip_validates() {
        let b = ball(0.5);
        let repr = CurvatureRepr::from(b);
        assert_eq!(PoincareBall::try_from(repr).unwrap(), b);
        assert!(PoincareBall::try_from(CurvatureRepr { c: -1.0 }).is_err());
    }
}
