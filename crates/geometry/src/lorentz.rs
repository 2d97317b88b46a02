//! The Lorentz (hyperboloid) model ℍⁿ_c = { x ∈ ℝⁿ⁺¹ : ⟨x,x⟩_L = −1/c, x₀ > 0 } with the
//! Minkowski product ⟨x,y⟩_L = −x₀y₀ + Σᵢ xᵢyᵢ. Index 0 is the time coordinate; a point
//! of the n-dimensional model has n + 1 coordinates.

use serde::{Deserialize, Serialize};

use crate::curvature::{sqrt_of_valid, CurvatureRepr};
use crate::error::{GeometryError, Result};
use crate::numeric::{norm_of, normalized, ASINH_LOG_THRESHOLD};
use crate::poincare::PoincareBall;
use crate::vector::{
    check_finite, check_same_dim, check_vector, ensure_finite, ensure_finite_scalar, norm,
};

/// Relative tolerance for accepting a point as lying on the hyperboloid:
/// `|c·⟨x,x⟩_L + 1| ≤ HYPERBOLOID_TOLERANCE · c·x₀²`.
///
/// Relative to c·x₀² because that is the size of the terms that cancel: a point at
/// distance R from the origin has x₀ ~ e^R/(2√c), so rounding alone leaves a residual of
/// ~1e-16·c·x₀². 1e-9 accepts anything produced in f64 by this crate or a careful caller
/// and rejects real mistakes (wrong curvature, Poincaré coordinates passed by accident);
/// snap other points with [`Lorentz::project`].
pub const HYPERBOLOID_TOLERANCE: f64 = 1e-9;

/// Minkowski inner product ⟨x, y⟩_L = −x₀y₀ + Σ_{i≥1} xᵢyᵢ.
pub fn minkowski_dot(x: &[f64], y: &[f64]) -> Result<f64> {
    check_same_dim(x, y)?;
    let mut pairs = x.iter().zip(y);
    let Some((x0, y0)) = pairs.next() else {
        return Err(GeometryError::EmptyVector);
    };
    Ok(pairs.map(|(a, b)| a * b).sum::<f64>() - x0 * y0)
}

/// The Lorentz model with curvature −c (c > 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CurvatureRepr", into = "CurvatureRepr")]
pub struct Lorentz {
    c: f64,
    /// Cached √c; kept in sync with `c` by the constructor.
    sqrt_c: f64,
}

impl TryFrom<CurvatureRepr> for Lorentz {
    type Error = GeometryError;
    fn try_from(r: CurvatureRepr) -> Result<Self> {
        Self::new(r.c)
    }
}

impl From<Lorentz> for CurvatureRepr {
    fn from(l: Lorentz) -> Self {
        CurvatureRepr { c: l.c }
    }
}

impl Lorentz {
    /// The hyperboloid with curvature −c. Fails unless `c` is finite and > 0.
    pub fn new(c: f64) -> Result<Self> {
        Ok(Lorentz {
            c,
            sqrt_c: sqrt_of_valid(c)?,
        })
    }

    /// The curvature magnitude c (the sectional curvature is −c).
    pub fn c(&self) -> f64 {
        self.c
    }

    /// The Poincaré ball with the same curvature (the target of [`Self::to_poincare`]).
    pub fn poincare(&self) -> PoincareBall {
        // Same c, already validated by `Lorentz::new`.
        PoincareBall::from_validated(self.c, self.sqrt_c)
    }

    /// Checks that `x` is a point: ≥ 2 finite coordinates, x₀ > 0, and
    /// ⟨x,x⟩_L = −1/c within [`HYPERBOLOID_TOLERANCE`].
    pub fn check_point(&self, x: &[f64]) -> Result<()> {
        self.split_point(x).map(|_| ())
    }

    /// Hyperbolic distance `d(x, y) = (1/√c)·acosh(m)`, `m = −c⟨x,y⟩_L`, evaluated with
    /// whichever of two equivalent forms is well conditioned:
    ///
    /// * `m ≥ 2` (d ≳ 1.3/√c): `acosh(m)` directly (as `ln 2m` above 1e8, no overflow).
    ///   Far-apart points make the chord below cancel: for the origin and a point at
    ///   distance 20, `‖x̄ − ȳ‖` and `|x₀ − y₀|` agree to 8 digits, while `m = √c·x₀` has
    ///   no cancellation at all.
    /// * `m < 2`: the Minkowski chord. On the hyperboloid
    ///   `⟨x−y, x−y⟩_L = (4/c)·sinh²(√c·d/2)`, so `d = (2/√c)·asinh(√c‖x−y‖_L/2)`.
    ///   `acosh(1 + ε) ≈ √(2ε)` would turn the 1e-16 rounding of m into a ~1e-8 error for
    ///   nearby points; the chord is built from coordinate differences instead.
    ///
    /// `d(x, x) = 0` exactly, `d` is exactly symmetric, and the only clamp is a negative
    /// squared chord (tolerated off-hyperboloid rounding) counting as 0.
    pub fn distance(&self, x: &[f64], y: &[f64]) -> Result<f64> {
        let (x0, xs) = self.split_point(x)?;
        let (y0, ys) = self.split_point(y)?;
        check_same_dim(x, y)?;
        let spatial: f64 = xs.iter().zip(ys).map(|(p, q)| p * q).sum();
        // NaN/inf only when the products overflow (coordinates ≳ 1e154); the chord path
        // below is overflow-safe and takes over then.
        let m = self.c * (x0 * y0 - spatial);
        if m.is_finite() && m >= 2.0 {
            let h = if m < ASINH_LOG_THRESHOLD {
                m.acosh()
            } else {
                // acosh m = ln 2m − 1/(4m²) − …; the dropped term is < 1e-16 relative.
                std::f64::consts::LN_2 + m.ln()
            };
            return ensure_finite_scalar("lorentz distance", h / self.sqrt_c);
        }
        // ‖x−y‖²_L = a² − b² with a = ‖x̄ − ȳ‖, b = |x₀ − y₀|, factored as (a−b)(a+b)
        // and never squared, so huge coordinates do not overflow.
        let a = norm_of(xs.iter().zip(ys).map(|(p, q)| p - q));
        let b = (x0 - y0).abs();
        // a ≤ b only through tolerated off-hyperboloid rounding (NaN cannot occur for
        // finite input, but would also land here).
        if a.is_nan() || b.is_nan() || a <= b {
            return Ok(0.0);
        }
        let half_s = self.sqrt_c / 2.0;
        let z = half_s * (a - b).sqrt() * (a + b).sqrt();
        let h = if z.is_finite() && z < ASINH_LOG_THRESHOLD {
            z.asinh()
        } else {
            // asinh z = ln 2 + ln z for large z; ln(a+b) = ln a + ln(1 + b/a) avoids
            // overflowing a + b.
            std::f64::consts::LN_2
                + half_s.ln()
                + 0.5 * (a - b).ln()
                + 0.5 * (a.ln() + (b / a).ln_1p())
        };
        ensure_finite_scalar("lorentz distance", 2.0 * h / self.sqrt_c)
    }

    /// Maps a hyperboloid point to the Poincaré ball of the same curvature:
    /// `p = x̄ / (1 + √c·x₀)` (dimension drops by one).
    pub fn to_poincare(&self, x: &[f64]) -> Result<Vec<f64>> {
        let (x0, xs) = self.split_point(x)?;
        let den = 1.0 + self.sqrt_c * x0;
        let p = ensure_finite("to_poincare", xs.iter().map(|v| v / den).collect())?;
        // Mathematically inside; rounding can only matter ~1e-16 from the boundary.
        Ok(self.poincare().clamp_into_ball(p))
    }

    /// Maps a Poincaré-ball point to the hyperboloid:
    /// `x₀ = (1 + c‖p‖²)/(√c·δ)`, `x̄ = 2p/δ` with `δ = 1 − c‖p‖²` in double-double
    /// (so far-out points keep their distance to the origin).
    pub fn from_poincare(&self, p: &[f64]) -> Result<Vec<f64>> {
        let dp = self.poincare().delta_of(p)?;
        // 1 + c‖p‖² = 2 − δ, without re-rounding ‖p‖².
        let x0 = (2.0 - dp) / (self.sqrt_c * dp);
        let mut out = Vec::with_capacity(p.len() + 1);
        out.push(x0);
        out.extend(p.iter().map(|v| 2.0 * v / dp));
        ensure_finite("from_poincare", out)
    }

    /// Projects onto the hyperboloid: keeps the spatial coordinates x̄ and sets
    /// `x₀ = √(1/c + ‖x̄‖²)` (computed with `hypot`, no overflow). The input x₀ is ignored,
    /// so lower-sheet points go to the upper sheet. Needs ≥ 2 finite coordinates.
    pub fn project(&self, x: &[f64]) -> Result<Vec<f64>> {
        let Some((_, xs)) = x.split_first() else {
            return Err(GeometryError::EmptyVector);
        };
        if xs.is_empty() {
            return Err(GeometryError::LorentzDimension { found: x.len() });
        }
        check_finite(x)?;
        let x0 = (1.0 / self.sqrt_c).hypot(norm(xs));
        let mut out = Vec::with_capacity(x.len());
        out.push(x0);
        out.extend_from_slice(xs);
        ensure_finite("lorentz project", out)
    }

    /// Exponential map at `x`: `exp_x(v) = cosh(√c‖v‖_L)·x + sinh(√c‖v‖_L)·v/(√c‖v‖_L)`.
    ///
    /// `v` must be tangent at `x`: `|⟨x,v⟩_L| ≤ HYPERBOLOID_TOLERANCE·‖x‖‖v‖` (Euclidean
    /// norms, so the test is scale-free), else [`GeometryError::NotTangent`]. `v = 0`
    /// returns `x` exactly. Only the spatial parts of `x` and `v` are used, which fix a
    /// tangent vector completely: ‖v‖_L comes from a cancellation-free form (see
    /// `tangent_norm`) and the result's x₀ is recomputed as in [`Self::project`], so
    /// rounding never leaves it off the hyperboloid.
    pub fn exp_map(&self, x: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        self.split_point(x)?;
        check_vector(v)?;
        check_same_dim(x, v)?;
        self.check_tangent(x, v)?;
        self.exp_kernel(x, v)
    }

    /// Logarithmic map at `x`: `log_x(y) = d(x,y)·u/‖u‖_L` with `u = y + c⟨x,y⟩_L·x`.
    ///
    /// Evaluated as `(t/sinh t)·(y − x) − t·tanh(t/2)·x` with `t = √c·d(x,y)` from the
    /// stable [`Self::distance`] (using `‖u‖_L = sinh(t)/√c`): `y − x` is formed first so
    /// nearby points do not cancel, nothing is divided by a small ‖u‖, and no factor
    /// overflows for far-apart points. The time component is then set to `x̄·v̄/x₀`, which
    /// makes `v` exactly tangent. `log_x(x) = 0`.
    ///
    /// Why not the orthogonal projection `v + c⟨x,v⟩_L·x`: it would turn the rounding of
    /// y₀ (an ulp of a large number far out) into a radial error √c‖x̄‖ times larger.
    pub fn log_map(&self, x: &[f64], y: &[f64]) -> Result<Vec<f64>> {
        let d = self.distance(x, y)?;
        if d == 0.0 {
            return Ok(vec![0.0; x.len()]);
        }
        let t = self.sqrt_c * d;
        // t/sinh t → 0 (not NaN) once sinh overflows, where the tanh term carries it all.
        let (a, b) = (1.0 / sinhc(t), t * (t / 2.0).tanh());
        let spatial: Vec<f64> = x
            .iter()
            .zip(y)
            .skip(1)
            .map(|(xi, yi)| a * (yi - xi) - b * xi)
            .collect();
        let (&x0, xs) = x.split_first().ok_or(GeometryError::EmptyVector)?;
        // |xᵢ/x₀| < 1, so this cannot overflow where x̄·v̄ would.
        let v0: f64 = xs.iter().zip(&spatial).map(|(p, q)| p / x0 * q).sum();
        let mut v = Vec::with_capacity(x.len());
        v.push(v0);
        v.extend(spatial);
        ensure_finite("lorentz log_map", v)
    }

    /// `n >= 2` points on the geodesic from `x` to `y`, evenly spaced in arc length, both
    /// endpoints included as exact copies: point k is `exp_x((k/(n−1))·log_x(y))`.
    ///
    /// Points in the second half are computed from `y` towards `x`, so each is built from
    /// its nearer endpoint: rounding is amplified like e^(√c·d/2) instead of e^(√c·d).
    pub fn geodesic(&self, x: &[f64], y: &[f64], n: usize) -> Result<Vec<Vec<f64>>> {
        if n < 2 {
            return Err(GeometryError::TooFewGeodesicPoints { n });
        }
        let from_x = self.log_map(x, y)?;
        let from_y = self.log_map(y, x)?;
        let last = n - 1;
        let steps = last as f64;
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let p = if k == 0 {
                x.to_vec()
            } else if k == last {
                y.to_vec()
            } else if 2 * k <= last {
                self.exp_kernel(x, &scaled(&from_x, k as f64 / steps))?
            } else {
                self.exp_kernel(y, &scaled(&from_y, (last - k) as f64 / steps))?
            };
            out.push(p);
        }
        Ok(out)
    }

    /// `exp_x(v)` for a validated point `x` and tangent `v` of the same dimension.
    fn exp_kernel(&self, x: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        if v.iter().all(|&vi| vi == 0.0) {
            return Ok(x.to_vec());
        }
        let t = self.sqrt_c * self.tangent_norm(x, v);
        let (ch, sc) = (t.cosh(), sinhc(t));
        // Only the spatial part is kept; x₀ follows from the hyperboloid equation.
        let spatial: Vec<f64> = x
            .iter()
            .zip(v)
            .skip(1)
            .map(|(xi, vi)| ch * xi + sc * vi)
            .collect();
        let mut out = Vec::with_capacity(x.len());
        out.push((1.0 / self.sqrt_c).hypot(norm(&spatial)));
        out.extend(spatial);
        ensure_finite("lorentz exp_map", out)
    }

    /// `‖v‖_L` of a vector tangent at the point `x`, from the spatial parts alone:
    /// `‖v‖_L = hypot(‖v̄‖/(√c·x₀), (‖x̄‖/x₀)·‖w‖)` with `w` the part of v̄ orthogonal to x̄.
    ///
    /// Why: `‖v̄‖² − v₀²` cancels for radial v far out (its terms are ~c·x₀² times the
    /// result, so all digits are gone at √c·d(0, x) ≈ 20). Substituting `v₀ = x̄·v̄/x₀`
    /// (tangency) and `x₀² = 1/c + ‖x̄‖²` turns it into this sum of squares (Lagrange's
    /// identity), whose terms are both ≤ ‖v̄‖: no cancellation and no overflow.
    fn tangent_norm(&self, x: &[f64], v: &[f64]) -> f64 {
        let (Some((&x0, xs)), Some((_, vs))) = (x.split_first(), v.split_first()) else {
            return 0.0;
        };
        let w_norm = match normalized(xs) {
            Some(u) => {
                let a: f64 = u.iter().zip(vs).map(|(p, q)| p * q).sum();
                norm_of(vs.iter().zip(&u).map(|(q, p)| q - a * p))
            }
            // x is the origin: the second term vanishes with x̄.
            None => 0.0,
        };
        (norm(vs) / (self.sqrt_c * x0)).hypot(norm(xs) / x0 * w_norm)
    }

    /// Checks `⟨x,v⟩_L ≈ 0` on Euclidean unit vectors: the residual is then relative to
    /// the size of the cancelling terms (~1e-16 for any rounded tangent vector) and the
    /// products cannot overflow.
    fn check_tangent(&self, x: &[f64], v: &[f64]) -> Result<()> {
        let (Some(xu), Some(vu)) = (normalized(x), normalized(v)) else {
            // v = 0 (x, a valid point, is never 0): tangent everywhere.
            return Ok(());
        };
        let inner = minkowski_dot(&xu, &vu)?;
        if inner.abs() <= HYPERBOLOID_TOLERANCE {
            Ok(())
        } else {
            Err(GeometryError::NotTangent {
                inner,
                tolerance: HYPERBOLOID_TOLERANCE,
            })
        }
    }

    /// Validates a point and splits it into (x₀, x̄).
    fn split_point<'a>(&self, x: &'a [f64]) -> Result<(f64, &'a [f64])> {
        let Some((&x0, xs)) = x.split_first() else {
            return Err(GeometryError::EmptyVector);
        };
        if xs.is_empty() {
            return Err(GeometryError::LorentzDimension { found: x.len() });
        }
        check_finite(x)?;
        // x0 is finite here (checked above).
        if x0 <= 0.0 {
            return Err(GeometryError::LowerSheet { x0 });
        }
        // |c⟨x,x⟩_L + 1| / (c x₀²) = |r² − 1 + 1/(c x₀²)| with r = ‖x̄‖/x₀: scale-free, so
        // no overflow for huge coordinates.
        let r = norm(xs) / x0;
        let inv = 1.0 / (self.sqrt_c * x0);
        let residual = ((r - 1.0) * (r + 1.0) + inv * inv).abs();
        if residual <= HYPERBOLOID_TOLERANCE {
            Ok((x0, xs))
        } else {
            Err(GeometryError::OffHyperboloid {
                residual,
                tolerance: HYPERBOLOID_TOLERANCE,
            })
        }
    }
}

/// `sinh(t)/t` for `t >= 0`: 1 at t = 0 instead of 0/0, +inf once sinh overflows.
fn sinhc(t: f64) -> f64 {
    // Below 1e-4 the first omitted term, t⁴/120, is under 1e-18: the series is exact to
    // rounding.
    if t < 1e-4 {
        1.0 + t * t / 6.0
    } else {
        t.sinh() / t
    }
}

/// `s·v`.
fn scaled(v: &[f64], s: f64) -> Vec<f64> {
    v.iter().map(|vi| vi * s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
    }

    #[test]
    fn validation() {
        let l = Lorentz::new(1.0).unwrap();
        assert_eq!(l.check_point(&[]), Err(GeometryError::EmptyVector));
        assert_eq!(
            l.check_point(&[1.0]),
            Err(GeometryError::LorentzDimension { found: 1 })
        );
        assert_eq!(
            l.check_point(&[-1.0, 0.0]),
            Err(GeometryError::LowerSheet { x0: -1.0 })
        );
        let err = l.check_point(&[2.0, 0.0]).unwrap_err();
        assert!(matches!(err, GeometryError::OffHyperboloid { .. }));
        assert!(err.to_string().contains("project"), "{err}");
        assert!(l.check_point(&[1.0, 0.0]).is_ok());
        assert!(matches!(
            l.distance(&[1.0, 0.0], &[1.0, 0.0, 0.0]),
            Err(GeometryError::DimensionMismatch {
                expected: 2,
                found: 3
            })
        ));
        assert!(Lorentz::new(0.0).is_err());
    }

    #[test]
    fn known_distance_and_roundtrip() {
        for c in [0.3, 1.0, 4.0] {
            let l = Lorentz::new(c).unwrap();
            let s: f64 = c.sqrt();
            // Point at distance 2 from the origin along axis 1.
            let o = [1.0 / s, 0.0];
            let x = [2f64.cosh() / s, 2f64.sinh() / s];
            assert_close(l.distance(&o, &x).unwrap(), 2.0 / s, 1e-14);
            assert_eq!(l.distance(&x, &x), Ok(0.0));
            let p = l.to_poincare(&x).unwrap();
            let back = l.from_poincare(&p).unwrap();
            assert_close(back[0], x[0], 1e-14 * x[0]);
            assert_close(back[1], x[1], 1e-14 * x[0]);
            assert_close(l.poincare().distance0(&p).unwrap(), 2.0 / s, 1e-14);
        }
    }

    #[test]
    fn project_snaps_onto_the_hyperboloid() {
        let l = Lorentz::new(2.0).unwrap();
        let x = l.project(&[-7.0, 0.3, -0.4]).unwrap();
        l.check_point(&x).unwrap();
        assert_close(minkowski_dot(&x, &x).unwrap(), -0.5, 1e-15);
        assert_eq!(
            l.project(&[1.0]),
            Err(GeometryError::LorentzDimension { found: 1 })
        );
        let big = l.project(&[0.0, 1e300, 1e300]).unwrap();
        l.check_point(&big).unwrap();
    }

    /// Point at √c-scaled distance `r` from the origin in direction `u` (unit).
    fn point_at(c: f64, r: f64, u: &[f64]) -> Vec<f64> {
        let s = c.sqrt();
        let mut p = vec![r.cosh() / s];
        p.extend(u.iter().map(|ui| r.sinh() / s * ui));
        p
    }

    #[test]
    fn exp_and_log_at_the_origin_match_closed_forms() {
        for c in [0.3, 1.0, 4.0] {
            let l = Lorentz::new(c).unwrap();
            let s: f64 = c.sqrt();
            let o = [1.0 / s, 0.0, 0.0];
            // Tangent at the origin: time component 0. Length 2 along axis 2.
            let y = l.exp_map(&o, &[0.0, 0.0, 2.0]).unwrap();
            let want = [(2.0 * s).cosh() / s, 0.0, (2.0 * s).sinh() / s];
            for (a, b) in y.iter().zip(&want) {
                // A few roundings of numbers of size ≤ want[0].
                assert_close(*a, *b, 1e-14 * want[0]);
            }
            assert_close(l.distance(&o, &y).unwrap(), 2.0, 1e-14);
            let v = l.log_map(&o, &y).unwrap();
            assert_close(v[0], 0.0, 1e-14);
            assert_close(v[1], 0.0, 1e-14);
            assert_close(v[2], 2.0, 1e-13);
        }
    }

    #[test]
    fn exp_log_roundtrip_away_from_the_origin() {
        let l = Lorentz::new(1.7).unwrap();
        let x = point_at(1.7, 1.5, &[0.6, 0.8]);
        let y = point_at(1.7, 2.5, &[-1.0, 0.0]);
        let v = l.log_map(&x, &y).unwrap();
        // Tangent at x, and its length is the distance (a few ulps of the terms).
        assert!(minkowski_dot(&x, &v).unwrap().abs() <= 1e-14 * norm(&x) * norm(&v));
        let d = l.distance(&x, &y).unwrap();
        assert_close(minkowski_dot(&v, &v).unwrap().sqrt(), d, 1e-13 * d);
        assert_close(l.tangent_norm(&x, &v), d, 1e-14 * d);
        let back = l.exp_map(&x, &v).unwrap();
        l.check_point(&back).unwrap();
        // Hyperbolic distance, coordinates of size ~e^4: 1e-12 is ~100 ulps of those.
        assert!(l.distance(&back, &y).unwrap() <= 1e-12);
    }

    #[test]
    fn identities_are_exact() {
        let l = Lorentz::new(0.5).unwrap();
        let x = point_at(0.5, 0.7, &[0.0, 1.0, 0.0]);
        assert_eq!(l.exp_map(&x, &[0.0; 4]).unwrap(), x);
        assert_eq!(l.log_map(&x, &x).unwrap(), vec![0.0; 4]);
        let g = l.geodesic(&x, &x, 4).unwrap();
        assert_eq!(g, vec![x.clone(); 4]);
    }

    #[test]
    fn tiny_steps_do_not_lose_precision() {
        let l = Lorentz::new(1.0).unwrap();
        let x = point_at(1.0, 3.0, &[0.0, 1.0]);
        // A tangent vector at x of Lorentz length 1e-12 (angular: time component 0).
        let v = [0.0, 1e-12, 0.0];
        let y = l.exp_map(&x, &v).unwrap();
        // Absolute error ~1e-16·|x̄| ≈ 1e-15 for |x̄| ≈ 10, i.e. ~1e-3 relative here.
        assert_close(l.distance(&x, &y).unwrap(), 1e-12, 2e-15);
        let back = l.log_map(&x, &y).unwrap();
        assert!(back.iter().all(|b| b.is_finite()));
        assert_close(back[1], 1e-12, 2e-15);
        // Far below the sinh(t)/t series threshold, and subnormal: still exact-ish.
        let y = l.exp_map(&x, &[0.0, 1e-310, 0.0]).unwrap();
        assert!(y.iter().all(|c| c.is_finite()));
    }

    #[test]
    fn exp_is_exact_far_from_the_origin() {
        // At √c·R = 20 the Minkowski square ‖v̄‖² − v₀² of a radial tangent vector is a
        // difference of terms ~1e17 times the result; tangent_norm must not cancel.
        for c in [0.25, 1.0, 9.0] {
            let l = Lorentz::new(c).unwrap();
            let s: f64 = c.sqrt();
            let r = 20.0;
            let x = point_at(c, r, &[1.0, 0.0]);
            // Radial, Riemannian length 1.5/√c: lands at √c·R = 21.5.
            let v = [1.5 * r.sinh() / s, 1.5 * r.cosh() / s, 0.0];
            assert_close(l.tangent_norm(&x, &v), 1.5 / s, 1e-15 / s);
            let y = l.exp_map(&x, &v).unwrap();
            let want = point_at(c, r + 1.5, &[1.0, 0.0]);
            for (a, b) in y.iter().zip(&want) {
                // A few ulps of the largest coordinate.
                assert_close(*a, *b, 1e-14 * want[0]);
            }
            // Angular, length 0.5/√c: x0 grows to cosh(R)·cosh(0.5)/√c, and the
            // angular coordinate is sinh(0.5)/√c.
            let y = l.exp_map(&x, &[0.0, 0.0, 0.5 / s]).unwrap();
            assert_close(y[0], r.cosh() * 0.5f64.cosh() / s, 1e-14 * y[0]);
            assert_close(y[2], 0.5f64.sinh() / s, 1e-14 / s);
        }
    }

    #[test]
    fn geodesic_endpoints_spacing_and_poincare_agreement() {
        let c = 2.0;
        let l = Lorentz::new(c).unwrap();
        let x = point_at(c, 2.0, &[0.6, -0.8]);
        let y = point_at(c, 1.0, &[-0.28, 0.96]);
        let pts = l.geodesic(&x, &y, 6).unwrap();
        assert_eq!(pts.len(), 6);
        assert_eq!(pts[0], x);
        assert_eq!(pts[5], y);
        let d = l.distance(&x, &y).unwrap();
        for w in pts.windows(2) {
            // Coordinates of size ≤ e^2: a few ulps of those.
            assert_close(l.distance(&w[0], &w[1]).unwrap(), d / 5.0, 1e-13);
        }
        let b = l.poincare();
        let (px, py) = (l.to_poincare(&x).unwrap(), l.to_poincare(&y).unwrap());
        for (p, q) in pts.iter().zip(b.geodesic(&px, &py, 6).unwrap()) {
            assert!(b.distance(&l.to_poincare(p).unwrap(), &q).unwrap() <= 1e-13);
        }
    }

    #[test]
    fn exp_log_errors() {
        let l = Lorentz::new(1.0).unwrap();
        let o = [1.0, 0.0];
        // Time-like vector at the origin: not tangent.
        let err = l.exp_map(&o, &[1.0, 0.0]).unwrap_err();
        assert_eq!(
            err,
            GeometryError::NotTangent {
                inner: -1.0,
                tolerance: HYPERBOLOID_TOLERANCE
            }
        );
        assert!(err.to_string().contains("not tangent"), "{err}");
        // Slightly off (1e-6 relative) is still rejected, rounding-size is accepted.
        assert!(l.exp_map(&o, &[1e-6, 1.0]).is_err());
        assert!(l.exp_map(&o, &[1e-13, 1.0]).is_ok());
        assert!(matches!(
            l.exp_map(&[2.0, 0.0], &[0.0, 1.0]),
            Err(GeometryError::OffHyperboloid { .. })
        ));
        assert!(matches!(
            l.log_map(&o, &[2.0, 0.0]),
            Err(GeometryError::OffHyperboloid { .. })
        ));
        assert_eq!(
            l.exp_map(&o, &[0.0, 1.0, 0.0]),
            Err(GeometryError::DimensionMismatch {
                expected: 2,
                found: 3
            })
        );
        assert!(matches!(
            l.log_map(&o, &[1.0, 0.0, 0.0]),
            Err(GeometryError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            l.exp_map(&o, &[0.0, f64::NAN]),
            Err(GeometryError::NonFiniteCoordinate { index: 1, .. })
        ));
        assert!(matches!(
            l.log_map(&o, &[f64::NAN, 0.0]),
            Err(GeometryError::NonFiniteCoordinate { index: 0, .. })
        ));
        assert_eq!(l.exp_map(&o, &[]), Err(GeometryError::EmptyVector));
        for n in [0, 1] {
            assert_eq!(
                l.geodesic(&o, &o, n),
                Err(GeometryError::TooFewGeodesicPoints { n })
            );
        }
        // Overflow (cosh of 1e6) is an error, not inf.
        assert_eq!(
            l.exp_map(&o, &[0.0, 1e6]),
            Err(GeometryError::NonFiniteResult {
                operation: "lorentz exp_map"
            })
        );
    }

    #[test]
    fn minkowski_dot_sign_convention() {
        assert_eq!(minkowski_dot(&[2.0, 3.0], &[5.0, 7.0]), Ok(-10.0 + 21.0));
        assert_eq!(minkowski_dot(&[], &[]), Err(GeometryError::EmptyVector));
    }
}
