//! The Lorentz (hyperboloid) model ℍⁿ_c = { x ∈ ℝⁿ⁺¹ : ⟨x,x⟩_L = −1/c, x₀ > 0 } with the
//! Minkowski product ⟨x,y⟩_L = −x₀y₀ + Σᵢ xᵢyᵢ. Index 0 is the time coordinate; a point
//! of the n-dimensional model has n + 1 coordinates.

use serde::{Deserialize, Serialize};

use crate::curvature::{sqrt_of_valid, CurvatureRepr};
use crate::error::{GeometryError, Result};
use crate::numeric::{norm_of, ASINH_LOG_THRESHOLD};
use crate::poincare::PoincareBall;
use crate::vector::{check_finite, check_same_dim, ensure_finite, ensure_finite_scalar, norm};

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

    #[test]
    fn minkowski_dot_sign_convention() {
        assert_eq!(minkowski_dot(&[2.0, 3.0], &[5.0, 7.0]), Ok(-10.0 + 21.0));
        assert_eq!(minkowski_dot(&[], &[]), Err(GeometryError::EmptyVector));
    }
}
