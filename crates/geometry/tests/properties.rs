//! Property tests (proptest, 256 cases each). Every tolerance is stated next to its
//! assertion together with the reason it is that size.

use hsync_geometry::{norm, GeometryError, Lorentz, MeanOptions, PoincareBall};
use proptest::prelude::*;

const CASES: u32 = 256;

/// Curvatures log-uniform in [0.1, 10].
fn curvature() -> impl Strategy<Value = f64> {
    (-1.0_f64..1.0).prop_map(|e| 10f64.powf(e))
}

/// Radius as a fraction of 1/√c: mostly uniform, plus points very close to the boundary
/// (1 − 10^-k, k up to `max_k`) to exercise the double-double paths.
fn radius_fraction(max_k: f64) -> BoxedStrategy<f64> {
    if max_k <= 3.0 {
        return (0.0_f64..0.999).boxed();
    }
    prop_oneof![
        3 => 0.0_f64..0.999,
        1 => (3.0..max_k).prop_map(|k: f64| 1.0 - 10f64.powf(-k)),
    ]
    .boxed()
}

/// A point of dimension `dim` inside the ball of curvature `c` at radius fraction `f`.
fn point(c: f64, dim: usize, max_k: f64) -> impl Strategy<Value = Vec<f64>> {
    (
        prop::collection::vec(-1.0_f64..1.0, dim),
        radius_fraction(max_k),
    )
        .prop_map(move |(u, f)| {
            let n = norm(&u);
            if n == 0.0 {
                return u;
            }
            let scale = f / (c.sqrt() * n);
            u.into_iter().map(|v| v * scale).collect()
        })
}

/// (ball, three points of a common dimension 1..=8).
fn ball_and_points(
    max_k: f64,
) -> impl Strategy<Value = (PoincareBall, Vec<f64>, Vec<f64>, Vec<f64>)> {
    (curvature(), 1usize..=8).prop_flat_map(move |(c, dim)| {
        (
            Just(PoincareBall::new(c).expect("valid curvature")),
            point(c, dim, max_k),
            point(c, dim, max_k),
            point(c, dim, max_k),
        )
    })
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// d is exactly symmetric (the formula is symmetric operation by operation), exactly
    /// 0 on the diagonal, non-negative and finite — including points 1e-14 from the
    /// boundary.
    #[test]
    fn symmetry_and_identity((b, x, y, _z) in ball_and_points(14.0)) {
        let dxy = b.distance(&x, &y).unwrap();
        let dyx = b.distance(&y, &x).unwrap();
        prop_assert_eq!(dxy, dyx);
        prop_assert!(dxy.is_finite() && dxy >= 0.0);
        prop_assert_eq!(b.distance(&x, &x).unwrap(), 0.0);
    }

    /// Triangle inequality. Tolerance 1e-12·(1 + sum): each distance is accurate to a
    /// few ulps relative (≤ ~1e-15) for the stored points, so the inequality that holds
    /// exactly for them can only be violated by rounding of that size.
    #[test]
    fn triangle_inequality((b, x, y, z) in ball_and_points(14.0)) {
        let dxz = b.distance(&x, &z).unwrap();
        let dxy = b.distance(&x, &y).unwrap();
        let dyz = b.distance(&y, &z).unwrap();
        prop_assert!(dxz <= dxy + dyz + 1e-12 * (1.0 + dxy + dyz), "{} > {} + {}", dxz, dxy, dyz);
    }

    /// exp_x(log_x(y)) ≈ y, points up to radius fraction 1 − 1e-6.
    ///
    /// Tolerance, in hyperbolic distance: 1e-9·(1 + d) + 1e-15·cosh(√c·d)/√c. The
    /// round trip is inherently ill-conditioned for long geodesics: rounding the
    /// *direction* of the stored tangent vector log_x(y) by 1e-16 moves the endpoint of a
    /// geodesic of length d by ~1e-16·sinh(√c·d)/√c (e.g. ~1e-10 for d = 14, c = 1), and
    /// near the boundary that is what the f64 coordinates of y can resolve anyway.
    #[test]
    fn exp_inverts_log((b, x, y, _z) in ball_and_points(6.0)) {
        let v = b.log_map(&x, &y).unwrap();
        prop_assert!(all_finite(&v));
        let back = b.exp_map(&x, &v).unwrap();
        prop_assert!(all_finite(&back));
        let d = b.distance(&x, &y).unwrap();
        let s = b.c().sqrt();
        let tol = 1e-9 * (1.0 + d) + 1e-15 * (s * d).cosh() / s;
        let err = b.distance(&back, &y).unwrap();
        prop_assert!(err <= tol, "err {} for d {}", err, d);
        // The Riemannian length of log_x(y) is d(x, y) (1e-12 relative: a few roundings).
        let len = b.conformal_factor(&x).unwrap() * norm(&v);
        prop_assert!((len - d).abs() <= 1e-12 * (1.0 + d), "{} vs {}", len, d);
        // Same at the origin (radial only, so no direction amplification beyond the
        // representation of y itself: 1e-9·(1 + d0) + 1e-15/δ_y-type error, bounded via
        // cosh as above).
        let back0 = b.exp0(&b.log0(&y).unwrap()).unwrap();
        let d0 = b.distance0(&y).unwrap();
        let err0 = b.distance(&back0, &y).unwrap();
        let tol0 = 1e-9 * (1.0 + d0) + 1e-15 * (s * d0).cosh() / s;
        prop_assert!(err0 <= tol0, "origin err {} for d0 {}", err0, d0);
    }

    /// The geodesic midpoint is equidistant from both ends and the halves add up to the
    /// whole. Tolerance 1e-9·(1 + d), for the same representation reason as exp/log (the
    /// midpoint is a rounded point); points up to radius fraction 1 − 1e-6.
    #[test]
    fn geodesic_midpoint((b, x, y, _z) in ball_and_points(6.0), n in 3usize..8) {
        let d = b.distance(&x, &y).unwrap();
        let mid = b.geodesic(&x, &y, 3).unwrap();
        prop_assert_eq!(mid.len(), 3);
        prop_assert_eq!(&mid[0], &x);
        prop_assert_eq!(&mid[2], &y);
        let m = &mid[1];
        prop_assert!(all_finite(m));
        let a = b.distance(&x, m).unwrap();
        let c = b.distance(m, &y).unwrap();
        prop_assert!((a - c).abs() <= 1e-9 * (1.0 + d), "{} vs {}", a, c);
        prop_assert!((a + c - d).abs() <= 1e-9 * (1.0 + d), "{} + {} vs {}", a, c, d);
        // Evenly spaced for any n.
        let pts = b.geodesic(&x, &y, n).unwrap();
        prop_assert_eq!(pts.len(), n);
        let step = d / (n - 1) as f64;
        for w in pts.windows(2) {
            let s = b.distance(&w[0], &w[1]).unwrap();
            prop_assert!((s - step).abs() <= 1e-9 * (1.0 + d), "{} vs {}", s, step);
        }
    }

    /// Möbius identities hold exactly (they are special-cased or exact by construction),
    /// and x ⊕ y is a finite point of the ball.
    #[test]
    fn mobius_identities((b, x, y, _z) in ball_and_points(14.0)) {
        let zero = vec![0.0; x.len()];
        prop_assert_eq!(b.mobius_add(&x, &zero).unwrap(), x.clone());
        let minus: Vec<f64> = x.iter().map(|v| -v).collect();
        prop_assert_eq!(b.mobius_add(&minus, &x).unwrap(), zero);
        let s = b.mobius_add(&x, &y).unwrap();
        prop_assert!(all_finite(&s));
        prop_assert!(b.check_point(&s).is_ok());
    }

    /// Möbius addition by a point is an isometry (left gyro-translation):
    /// d(a ⊕ x, a ⊕ y) = d(x, y). Tolerance 1e-9·(1 + d): the translated points are
    /// rounded f64 coordinates (radius fraction ≤ 0.999 keeps δ ≥ 2e-3).
    #[test]
    fn mobius_translation_is_isometry((b, a, x, y) in ball_and_points(3.0)) {
        let d = b.distance(&x, &y).unwrap();
        let ax = b.mobius_add(&a, &x).unwrap();
        let ay = b.mobius_add(&a, &y).unwrap();
        let d2 = b.distance(&ax, &ay).unwrap();
        prop_assert!((d - d2).abs() <= 1e-9 * (1.0 + d), "{} vs {}", d, d2);
    }

    /// Poincaré → Lorentz preserves distances and the round trip returns the point.
    /// Points up to radius fraction 0.999 (x₀ ≲ 1000/√c). Tolerance 1e-9·(1 + d): the
    /// Minkowski chord of hyperboloid coordinates of size x₀ carries an error of
    /// ~1e-16·x₀² relative to the squared chord in the worst (nearby, far-out) case.
    #[test]
    fn poincare_lorentz_conversion((b, x, y, _z) in ball_and_points(3.0)) {
        let l = Lorentz::new(b.c()).unwrap();
        let hx = l.from_poincare(&x).unwrap();
        let hy = l.from_poincare(&y).unwrap();
        prop_assert_eq!(hx.len(), x.len() + 1);
        prop_assert!(l.check_point(&hx).is_ok());
        let dp = b.distance(&x, &y).unwrap();
        let dl = l.distance(&hx, &hy).unwrap();
        prop_assert!((dp - dl).abs() <= 1e-9 * (1.0 + dp), "{} vs {}", dp, dl);
        // Round trip: coordinates within 1e-12 of the radius.
        let back = l.to_poincare(&hx).unwrap();
        for (p, q) in back.iter().zip(&x) {
            prop_assert!((p - q).abs() <= 1e-12 * b.radius(), "{} vs {}", p, q);
        }
        // project() is the identity (to rounding) on hyperboloid points.
        let proj = l.project(&hx).unwrap();
        prop_assert!((proj[0] - hx[0]).abs() <= 1e-12 * hx[0]);
    }

    /// pairwise_distances is the row-major matrix of `distance`.
    #[test]
    fn pairwise_matches_distance((b, x, y, z) in ball_and_points(14.0)) {
        let pts = vec![x, y, z];
        let m = b.pairwise_distances(&pts).unwrap();
        prop_assert_eq!(m.len(), 9);
        for i in 0..3 {
            for j in 0..3 {
                prop_assert_eq!(m[i * 3 + j], b.distance(&pts[i], &pts[j]).unwrap());
            }
        }
    }

    /// Garbage in (any f64 incl. NaN/inf/subnormal, any lengths, any c): never a panic,
    /// and every Ok value is finite.
    #[test]
    fn arbitrary_inputs_never_panic_or_return_non_finite(
        c in prop::num::f64::ANY,
        x in prop::collection::vec(prop::num::f64::ANY, 0..4),
        y in prop::collection::vec(prop::num::f64::ANY, 0..4),
        r in prop::num::f64::ANY,
        n in 0usize..5,
    ) {
        if let Ok(b) = PoincareBall::new(c) {
            check_ball_outputs(&b, &x, &y, r, n)?;
        }
        if let Ok(l) = Lorentz::new(c) {
            check_lorentz_outputs(&l, &x, &y)?;
        }
    }

    /// Valid points under extreme curvatures (c from 1e-300 to 1e300), radii up to
    /// 1 − 1e-15 of the boundary, and tangent vectors of any magnitude: everything
    /// succeeds with finite output, and results stay in the ball.
    #[test]
    fn extreme_but_valid_inputs_are_finite(
        e in -300.0_f64..300.0,
        dim in 1usize..5,
        seed in prop::collection::vec((prop::collection::vec(-1.0_f64..1.0, 4), 0.0_f64..1.0), 2),
        v_exp in -300.0_f64..300.0,
        r in -1e6_f64..1e6,
    ) {
        let c = 10f64.powf(e);
        let b = PoincareBall::new(c).unwrap();
        let pts: Vec<Vec<f64>> = seed
            .iter()
            .map(|(u, f)| {
                let u = &u[..dim];
                let n = norm(u);
                // f in [0, 1) maps to radius fractions up to 1 − 1e-15.
                let frac = 1.0 - 10f64.powf(-15.0 * f);
                if n == 0.0 { u.to_vec() } else { u.iter().map(|v| v * frac / (c.sqrt() * n)).collect() }
            })
            .collect();
        let (x, y) = (&pts[0], &pts[1]);
        // The rounding of the rescaling may put a point on the boundary; skip those.
        prop_assume!(b.check_point(x).is_ok() && b.check_point(y).is_ok());
        let d = b.distance(x, y).unwrap();
        prop_assert!(d.is_finite());
        // A tangent vector of magnitude 10^v_exp (1e-300 … 1e300) in a generic direction.
        let v: Vec<f64> = (0..dim).map(|i| (i as f64 + 0.5) * 10f64.powf(v_exp)).collect();
        for out in [
            b.mobius_add(x, y).unwrap(),
            b.exp_map(x, &v).unwrap(),
            b.exp0(&v).unwrap(),
            b.mobius_scalar_mul(r, x).unwrap(),
            b.project(&v).unwrap(),
        ] {
            prop_assert!(all_finite(&out));
            prop_assert!(b.check_point(&out).is_ok());
        }
        prop_assert!(all_finite(&b.log_map(x, y).unwrap()));
        prop_assert!(all_finite(&b.log0(y).unwrap()));
        for p in b.geodesic(x, y, 4).unwrap() {
            prop_assert!(all_finite(&p));
            prop_assert!(b.check_point(&p).is_ok());
        }
        let l = Lorentz::new(c).unwrap();
        let hx = l.from_poincare(x).unwrap();
        let hy = l.from_poincare(y).unwrap();
        prop_assert!(l.distance(&hx, &hy).unwrap().is_finite());
        prop_assert!(all_finite(&l.to_poincare(&hx).unwrap()));
    }
}

fn check_ball_outputs(
    b: &PoincareBall,
    x: &[f64],
    y: &[f64],
    r: f64,
    n: usize,
) -> Result<(), TestCaseError> {
    let vecs = [
        b.mobius_add(x, y),
        b.mobius_scalar_mul(r, x),
        b.exp_map(x, y),
        b.log_map(x, y),
        b.exp0(x),
        b.log0(x),
        b.project(x),
    ];
    for out in vecs.into_iter().flatten() {
        prop_assert!(all_finite(&out));
    }
    for s in [b.distance(x, y), b.distance0(x), b.conformal_factor(x)]
        .into_iter()
        .flatten()
    {
        prop_assert!(s.is_finite());
    }
    if let Ok(pts) = b.geodesic(x, y, n) {
        prop_assert!(pts.iter().all(|p| all_finite(p)));
    }
    if let Ok(m) = b.pairwise_distances(&[x, y]) {
        prop_assert!(all_finite(&m));
    }
    Ok(())
}

fn check_lorentz_outputs(l: &Lorentz, x: &[f64], y: &[f64]) -> Result<(), TestCaseError> {
    if let Ok(d) = l.distance(x, y) {
        prop_assert!(d.is_finite());
    }
    for out in [l.to_poincare(x), l.from_poincare(x), l.project(x)]
        .into_iter()
        .flatten()
    {
        prop_assert!(all_finite(&out));
    }
    Ok(())
}

#[test]
fn outside_points_are_reported_not_clamped() {
    let b = PoincareBall::new(1.0).unwrap();
    let err = b.distance(&[0.6, 0.8], &[0.0, 0.0]).unwrap_err();
    match err {
        GeometryError::OutsideBall { norm, radius } => {
            assert_eq!(norm, 1.0);
            assert_eq!(radius, 1.0);
        }
        other => panic!("unexpected {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// The mean of two points is their geodesic midpoint: equidistant, and on the
    /// geodesic (the two halves add up to the whole). Tolerance 1e-7 relative to
    /// d(x, y) + 1: the descent stops at a gradient of 1e-12 of the spread, and the
    /// distances near the boundary carry ~1e-9 relative rounding.
    #[test]
    fn mean_of_two_points_is_the_midpoint(c in curvature(), dim in 1usize..6, seed in any::<u64>()) {
        let ball = PoincareBall::new(c).unwrap();
        let mut rng = seed;
        let mut coord = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((rng >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0 };
        let r = 0.9 / c.sqrt() / (dim as f64).sqrt();
        let x: Vec<f64> = (0..dim).map(|_| coord() * r).collect();
        let y: Vec<f64> = (0..dim).map(|_| coord() * r).collect();
        let m = ball.frechet_mean(&[x.clone(), y.clone()], None, MeanOptions::default()).unwrap();
        let (dxm, dym, dxy) = (ball.distance(&x, &m.point).unwrap(), ball.distance(&y, &m.point).unwrap(), ball.distance(&x, &y).unwrap());
        let tol = 1e-7 * (dxy + 1.0);
        prop_assert!(m.converged, "{m:?}");
        prop_assert!((dxm - dym).abs() <= tol, "{dxm} vs {dym}");
        prop_assert!((dxm + dym - dxy).abs() <= tol, "{dxm} + {dym} vs {dxy}");
    }

    /// The mean minimises the cost: no input point, and no small move away from the
    /// mean, does better. Tolerance 1e-9 relative: the cost is flat (quadratic) at the
    /// minimum, so rounding is all that can make a neighbour look better.
    #[test]
    fn mean_minimises_the_cost(c in curvature(), n in 1usize..8, seed in any::<u64>()) {
        let ball = PoincareBall::new(c).unwrap();
        let mut rng = seed;
        let mut coord = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((rng >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0 };
        let r = 0.95 / c.sqrt() / 2f64.sqrt();
        let pts: Vec<Vec<f64>> = (0..n).map(|_| vec![coord() * r, coord() * r]).collect();
        let m = ball.frechet_mean(&pts, None, MeanOptions::default()).unwrap();
        let cost = |x: &[f64]| pts.iter().map(|p| { let d = ball.distance(x, p).unwrap(); 0.5 * d * d }).sum::<f64>() / n as f64;
        let best = cost(&m.point);
        prop_assert!((best - m.cost).abs() <= 1e-9 * (best + 1.0));
        for p in &pts {
            prop_assert!(best <= cost(p) * (1.0 + 1e-9) + 1e-12, "a point beats the mean: {} < {best}", cost(p));
        }
        for v in [[1e-4, 0.0], [0.0, 1e-4], [-1e-4, 0.0], [0.0, -1e-4]] {
            let moved = ball.exp_map(&m.point, &v).unwrap();
            prop_assert!(best <= cost(&moved) * (1.0 + 1e-9) + 1e-12);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// The batch form agrees with one distance at a time, exactly: both run the same
    /// kernel on the same δ.
    #[test]
    fn cross_distances_match_single_distances(c in curvature(), m in 0usize..4, n in 0usize..4, seed in any::<u64>()) {
        let ball = PoincareBall::new(c).unwrap();
        let mut rng = seed;
        let mut coord = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((rng >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0 };
        let r = 0.99 / c.sqrt() / 3f64.sqrt();
        let q: Vec<Vec<f64>> = (0..m).map(|_| (0..3).map(|_| coord() * r).collect()).collect();
        let p: Vec<Vec<f64>> = (0..n).map(|_| (0..3).map(|_| coord() * r).collect()).collect();
        let d = ball.cross_distances(&q, &p).unwrap();
        prop_assert_eq!(d.len(), m * n);
        for i in 0..m {
            for j in 0..n {
                prop_assert_eq!(d[i * n + j], ball.distance(&q[i], &p[j]).unwrap());
            }
        }
    }
}

#[test]
fn cross_distances_reject_mixed_dimensions_and_outside_points() {
    let ball = PoincareBall::new(1.0).unwrap();
    assert!(matches!(
        ball.cross_distances(&[vec![0.1, 0.0]], &[vec![0.1]]),
        Err(GeometryError::DimensionMismatch { .. })
    ));
    assert!(ball.cross_distances(&[vec![0.1, 0.0]], &[vec![1.0, 0.0]]).is_err());
    assert!(ball.cross_distances(&[] as &[Vec<f64>], &[vec![0.1]]).unwrap().is_empty());
}

// ---- Lorentz exp/log/geodesic --------------------------------------------------------

/// A hyperboloid point at √c-scaled distance r in [0, max_r) from the origin, in a
/// uniformly random direction of dimension `dim`: (cosh r, sinh r·u)/√c.
fn lorentz_point(c: f64, dim: usize, max_r: f64) -> impl Strategy<Value = Vec<f64>> {
    (prop::collection::vec(-1.0_f64..1.0, dim), 0.0..max_r).prop_map(move |(u, r)| {
        let (n, s) = (norm(&u), c.sqrt());
        let mut p = vec![r.cosh() / s];
        p.extend(u.iter().map(|ui| if n == 0.0 { 0.0 } else { r.sinh() / s * ui / n }));
        p
    })
}

/// (model, two points of a common dimension 1..=6, both within √c·R < max_r).
fn lorentz_and_points(max_r: f64) -> impl Strategy<Value = (Lorentz, Vec<f64>, Vec<f64>)> {
    (curvature(), 1usize..=6).prop_flat_map(move |(c, dim)| {
        (
            Just(Lorentz::new(c).expect("valid curvature")),
            lorentz_point(c, dim, max_r),
            lorentz_point(c, dim, max_r),
        )
    })
}

/// The tangent vector at `x` with Riemannian length `len` along the projection of the
/// spatial direction `w`: (0, w̄) + c(x̄·w̄)x, whose Minkowski square is
/// ‖w̄‖² + c(x̄·w̄)² (a sum of squares, so the rescaling is exact to rounding).
fn tangent_at(l: &Lorentz, x: &[f64], w: &[f64], len: f64) -> Vec<f64> {
    let c = l.c();
    let s: f64 = x[1..].iter().zip(w).map(|(a, b)| a * b).sum();
    let sq = norm(w).powi(2) + c * s * s;
    if sq == 0.0 {
        return vec![0.0; x.len()];
    }
    let k = len / sq.sqrt();
    let mut v = vec![k * c * s * x[0]];
    v.extend(x[1..].iter().zip(w).map(|(xi, wi)| k * (wi + c * s * xi)));
    v
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (p, q)| m.max((p - q).abs()))
}

/// Push-forward of a Poincaré tangent vector w at p to the hyperboloid (the differential
/// of `from_poincare`): with δ = 1 − c‖p‖², dx₀ = 4√c⟨p,w⟩/δ², dx̄ = 2w/δ + 4c⟨p,w⟩p/δ².
fn push_forward(c: f64, p: &[f64], w: &[f64]) -> Vec<f64> {
    let delta = 1.0 - c * norm(p).powi(2);
    let pw: f64 = p.iter().zip(w).map(|(a, b)| a * b).sum();
    let mut out = vec![4.0 * c.sqrt() * pw / (delta * delta)];
    out.extend(p.iter().zip(w).map(|(pi, wi)| 2.0 * wi / delta + 4.0 * c * pw * pi / (delta * delta)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// exp_x(log_x(y)) = y for points within √c·R < 4.5 of the origin (so √c·d < 9).
    /// Tolerance 1e-9·(1 + d) in hyperbolic distance. The expected error is the
    /// rounding of coordinates of size ~x₀·e^(√c·d) ≈ e^13.5/√c in the cancelling sum
    /// cosh·x + sinh·v, i.e. ≲ 1e-16·e^13.5/√c ≈ 2e-10 at the extreme, usually far less.
    /// Also: log_x(y) is tangent (1e-12 relative: rounding of the Euclidean-unit
    /// Minkowski product) and its length is d (1e-10 relative: ‖v‖²_L = ‖v̄‖² − v₀²
    /// cancels by c·x₀² ≤ e^9 here).
    #[test]
    fn lorentz_exp_inverts_log((l, x, y) in lorentz_and_points(4.5)) {
        let d = l.distance(&x, &y).unwrap();
        let v = l.log_map(&x, &y).unwrap();
        prop_assert!(all_finite(&v));
        let inner = hsync_geometry::minkowski_dot(&x, &v).unwrap();
        prop_assert!(inner.abs() <= 1e-12 * norm(&x) * norm(&v), "<x,v> = {}", inner);
        let len = hsync_geometry::minkowski_dot(&v, &v).unwrap().max(0.0).sqrt();
        prop_assert!((len - d).abs() <= 1e-10 * (1.0 + d), "{} vs {}", len, d);
        let back = l.exp_map(&x, &v).unwrap();
        prop_assert!(l.check_point(&back).is_ok());
        let err = l.distance(&back, &y).unwrap();
        prop_assert!(err <= 1e-9 * (1.0 + d), "err {} for d {}", err, d);
    }

    /// For a tangent v of length L (√c·L in [1e-2, 8)) at x within √c·R < 3:
    /// d(x, exp_x(v)) = L to 1e-10 relative, and log_x(exp_x(v)) = v.
    ///
    /// The distance can only be off by the rounding of exp's result (≲ 1e-16·e^11/√c
    /// absolute for the longest steps, ~1e-15/√c for the shortest) plus the distance's
    /// own cancellation for nearby points (~1e-16·c·x₀²/(√c·L) relative ≤ 2e-12 here).
    /// The vectors agree to 1e-9·(1 + ‖v‖) (Euclidean, max coordinate): the same
    /// roundings, mapped back through log with factors ≤ √c·x₀ ≈ 10.
    #[test]
    fn lorentz_log_inverts_exp(
        (l, x, _y) in lorentz_and_points(3.0),
        w in prop::collection::vec(-1.0_f64..1.0, 6),
        e in -2.0_f64..0.9,
    ) {
        let len = 10f64.powf(e) / l.c().sqrt();
        let v = tangent_at(&l, &x, &w[..x.len() - 1], len);
        prop_assume!(norm(&v) > 0.0);
        let y = l.exp_map(&x, &v).unwrap();
        prop_assert!(l.check_point(&y).is_ok());
        let d = l.distance(&x, &y).unwrap();
        prop_assert!((d - len).abs() <= 1e-10 * len, "{} vs {}", d, len);
        let back = l.log_map(&x, &y).unwrap();
        let diff = max_abs_diff(&back, &v);
        prop_assert!(diff <= 1e-9 * (1.0 + norm(&v)), "{:?} vs {:?}", back, v);
    }

    /// Geodesic: exact endpoint copies, every point on the hyperboloid, the midpoint
    /// equidistant from both ends with halves adding up to d, and n points evenly spaced.
    /// Points within √c·R < 4.5; tolerance 1e-9·(1 + d), as for exp/log (each point is
    /// one exp step of at most d/2 from its nearer end).
    #[test]
    fn lorentz_geodesic_midpoint_and_spacing((l, x, y) in lorentz_and_points(4.5), n in 3usize..8) {
        let d = l.distance(&x, &y).unwrap();
        let tol = 1e-9 * (1.0 + d);
        let mid = l.geodesic(&x, &y, 3).unwrap();
        prop_assert_eq!(mid.len(), 3);
        prop_assert_eq!(&mid[0], &x);
        prop_assert_eq!(&mid[2], &y);
        prop_assert!(l.check_point(&mid[1]).is_ok());
        let a = l.distance(&x, &mid[1]).unwrap();
        let b = l.distance(&mid[1], &y).unwrap();
        prop_assert!((a - b).abs() <= tol, "{} vs {}", a, b);
        prop_assert!((a + b - d).abs() <= tol, "{} + {} vs {}", a, b, d);
        let pts = l.geodesic(&x, &y, n).unwrap();
        prop_assert_eq!(pts.len(), n);
        prop_assert_eq!(&pts[n - 1], &y);
        let step = d / (n - 1) as f64;
        for w in pts.windows(2) {
            prop_assert!(l.check_point(&w[1]).is_ok());
            let s = l.distance(&w[0], &w[1]).unwrap();
            prop_assert!((s - step).abs() <= tol, "{} vs {}", s, step);
        }
    }

    /// The Lorentz geodesic maps onto the Poincaré geodesic: corresponding points are
    /// within 1e-9 in hyperbolic distance (measured in the ball, whose distance is
    /// precise for nearby points). Points within √c·R < 4.5; both computations err by
    /// ≲ 1e-16·e^9/√c ≈ 3e-12.
    #[test]
    fn lorentz_geodesic_matches_poincare((l, x, y) in lorentz_and_points(4.5), n in 2usize..7) {
        let b = l.poincare();
        let (px, py) = (l.to_poincare(&x).unwrap(), l.to_poincare(&y).unwrap());
        let lp = l.geodesic(&x, &y, n).unwrap();
        let bp = b.geodesic(&px, &py, n).unwrap();
        for (h, p) in lp.iter().zip(&bp) {
            let err = b.distance(&l.to_poincare(h).unwrap(), p).unwrap();
            prop_assert!(err <= 1e-9, "err {}", err);
        }
    }

    /// Lorentz exp/log agree with the Poincaré ones through the model conversion:
    /// log_x(y) is the push-forward of the ball's log_p(q) (1e-9·(1 + ‖v‖), Euclidean
    /// max coordinate: both are accurate to ~1e-13 relative at √c·R < 3), and
    /// exp_x(push-forward of w) is the image of exp_p(w) (1e-9 in hyperbolic distance,
    /// measured in the ball).
    #[test]
    fn lorentz_maps_agree_with_poincare(
        (l, x, y) in lorentz_and_points(3.0),
        w in prop::collection::vec(-1.0_f64..1.0, 6),
        scale in 0.0_f64..3.0,
    ) {
        let (b, c) = (l.poincare(), l.c());
        let (p, q) = (l.to_poincare(&x).unwrap(), l.to_poincare(&y).unwrap());
        let hx = l.from_poincare(&p).unwrap();
        let hy = l.from_poincare(&q).unwrap();
        let lv = l.log_map(&hx, &hy).unwrap();
        let pv = push_forward(c, &p, &b.log_map(&p, &q).unwrap());
        prop_assert!(max_abs_diff(&lv, &pv) <= 1e-9 * (1.0 + norm(&lv)), "{:?} vs {:?}", lv, pv);
        // A ball tangent vector of Riemannian length up to 3/√c·(√dim).
        let wp: Vec<f64> = w[..p.len()].iter().map(|wi| wi * scale / (c.sqrt() * b.conformal_factor(&p).unwrap())).collect();
        let via_ball = b.exp_map(&p, &wp).unwrap();
        let via_lorentz = l.exp_map(&hx, &push_forward(c, &p, &wp)).unwrap();
        let err = b.distance(&l.to_poincare(&via_lorentz).unwrap(), &via_ball).unwrap();
        prop_assert!(err <= 1e-9, "err {}", err);
    }

    /// Garbage in (any f64 incl. NaN/inf, any lengths, any c, any n): exp/log/geodesic
    /// never panic and every Ok value is finite.
    #[test]
    fn lorentz_maps_never_panic_or_return_non_finite(
        c in prop::num::f64::ANY,
        x in prop::collection::vec(prop::num::f64::ANY, 0..4),
        y in prop::collection::vec(prop::num::f64::ANY, 0..4),
        n in 0usize..5,
    ) {
        if let Ok(l) = Lorentz::new(c) {
            for out in [l.exp_map(&x, &y), l.log_map(&x, &y)].into_iter().flatten() {
                prop_assert!(all_finite(&out));
            }
            if let Ok(pts) = l.geodesic(&x, &y, n) {
                prop_assert!(pts.iter().all(|p| all_finite(p)));
            }
        }
    }

    /// Valid points under extreme curvatures (c from 1e-300 to 1e300, √c·R up to 30) and
    /// tangent vectors of any magnitude (1e-300 … 1e300): log and geodesic succeed with
    /// finite points on the hyperboloid; exp does too unless its result is beyond the f64
    /// range, which is reported as NonFiniteResult (never NaN, never NotTangent).
    #[test]
    fn lorentz_extreme_but_valid_inputs(
        e in -300.0_f64..300.0,
        dim in 1usize..5,
        seed in prop::collection::vec((prop::collection::vec(-1.0_f64..1.0, 4), 0.0_f64..30.0), 2),
        w in prop::collection::vec(-1.0_f64..1.0, 4),
        v_exp in -300.0_f64..300.0,
    ) {
        let c = 10f64.powf(e);
        let l = Lorentz::new(c).unwrap();
        let pts: Vec<Vec<f64>> = seed
            .iter()
            .map(|(u, r)| {
                let (u, s) = (&u[..dim], c.sqrt());
                let n = norm(u);
                let mut p = vec![r.cosh() / s];
                p.extend(u.iter().map(|ui| if n == 0.0 { 0.0 } else { r.sinh() / s * ui / n }));
                p
            })
            .collect();
        let (x, y) = (&pts[0], &pts[1]);
        prop_assume!(l.check_point(x).is_ok() && l.check_point(y).is_ok());
        prop_assert!(all_finite(&l.log_map(x, y).unwrap()));
        for p in l.geodesic(x, y, 4).unwrap() {
            prop_assert!(l.check_point(&p).is_ok());
        }
        // Tangent by construction: time component from ⟨x,v⟩_L = 0, v̄ of size 10^v_exp.
        let vs: Vec<f64> = w[..dim].iter().map(|wi| (wi + 0.5) * 10f64.powf(v_exp)).collect();
        let v0: f64 = x[1..].iter().zip(&vs).map(|(a, b)| a / x[0] * b).sum();
        let mut v = vec![v0];
        v.extend(vs);
        match l.exp_map(x, &v) {
            Ok(p) => prop_assert!(l.check_point(&p).is_ok()),
            Err(err) => prop_assert_eq!(err, GeometryError::NonFiniteResult { operation: "lorentz exp_map" }),
        }
    }
}

#[test]
fn lorentz_map_errors() {
    let l = Lorentz::new(1.0).unwrap();
    let o = [1.0, 0.0, 0.0];
    assert!(matches!(
        l.exp_map(&o, &[0.5, 1.0, 0.0]),
        Err(GeometryError::NotTangent { .. })
    ));
    assert!(matches!(
        l.exp_map(&[1.0, 1.0, 0.0], &[0.0, 1.0, 0.0]),
        Err(GeometryError::OffHyperboloid { .. })
    ));
    assert!(matches!(
        l.log_map(&o, &[1.0, 0.0]),
        Err(GeometryError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        l.exp_map(&o, &[0.0, f64::NAN, 0.0]),
        Err(GeometryError::NonFiniteCoordinate { .. })
    ));
    assert!(matches!(
        l.geodesic(&o, &[f64::INFINITY, 0.0, 0.0], 3),
        Err(GeometryError::NonFiniteCoordinate { .. })
    ));
    assert_eq!(
        l.geodesic(&o, &o, 1),
        Err(GeometryError::TooFewGeodesicPoints { n: 1 })
    );
}
