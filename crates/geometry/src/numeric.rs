//! Crate-private numerical kernels: error-free transformations, the double-double
//! evaluation of the conformal denominator 1 − c‖x‖², and overflow-safe special functions.
//!
//! Everything here assumes finite inputs; callers validate first.

use std::f64::consts::LN_2;

/// Above this argument `asinh(z)` is evaluated as `ln 2 + ln z`: the neglected term is
/// `1/(4z²) < 2.5e-17`, below half an ulp of the result, and the log form cannot overflow.
pub(crate) const ASINH_LOG_THRESHOLD: f64 = 1e8;

/// Knuth's TwoSum: `s = fl(a + b)` and `a + b = s + e` exactly.
#[inline]
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// Veltkamp split of `a` into two 26-bit halves; exact for |a| < 2^996.
#[inline]
fn split(a: f64) -> (f64, f64) {
    const SPLITTER: f64 = 134_217_729.0; // 2^27 + 1
    let t = SPLITTER * a;
    let hi = t - (t - a);
    (hi, a - hi)
}

/// Dekker's TwoProduct: `p = fl(a·b)` and `a·b = p + e` exactly (no over/underflow).
///
/// Dekker rather than `f64::mul_add`: without the `fma` target feature `mul_add` is a
/// libm call that is an order of magnitude slower, and this sits on the distance hot path.
#[inline]
pub(crate) fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    let e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    (p, e)
}

/// `2^e` for `e` in [-1022, 1023], built from its bit pattern (always exact).
#[inline]
pub(crate) fn pow2(e: i32) -> f64 {
    let e = e.clamp(-1022, 1023);
    // In range by the clamp, so the biased exponent is in 1..=2046.
    let biased = u64::from((e + 1023).unsigned_abs());
    f64::from_bits(biased << 52)
}

/// Binary exponent `k` with `m·2^-k` in [1, 2) for normal `m ≥ 0`; clamped to
/// [-1022, 1022] so that both `2^k` and `2^-k` are normal numbers.
#[inline]
pub(crate) fn scale_exponent(m: f64) -> i32 {
    // The exponent field is 11 bits, so the cast cannot truncate.
    let biased = ((m.to_bits() >> 52) & 0x7ff) as i32;
    (biased - 1023).clamp(-1022, 1022)
}

/// Largest absolute value (NaN entries are skipped by `f64::max`; callers that care
/// check finiteness separately).
#[inline]
pub(crate) fn max_abs<I: Iterator<Item = f64>>(values: I) -> f64 {
    values.fold(0.0_f64, |acc, v| acc.max(v.abs()))
}

/// Euclidean norm of a sequence without spurious overflow or underflow: the values are
/// scaled by a power of two (exact) before squaring. NaN/inf inputs propagate.
pub(crate) fn norm_of<I>(values: I) -> f64
where
    I: Iterator<Item = f64> + Clone,
{
    let m = max_abs(values.clone());
    if m == 0.0 || !m.is_finite() {
        // All zero, or an infinity: the naive sum gives the right answer (0 or inf) and
        // also propagates any NaN that `max_abs` skipped.
        return values.map(|v| v * v).sum::<f64>().sqrt();
    }
    let k = scale_exponent(m);
    let down = pow2(-k);
    let sum: f64 = values
        .map(|v| {
            let s = v * down;
            s * s
        })
        .sum();
    sum.sqrt() * pow2(k)
}

/// The unit vector `v/‖v‖`, computed on power-of-two-scaled values so it works for any
/// finite magnitude. `None` for the zero vector.
pub(crate) fn normalized(v: &[f64]) -> Option<Vec<f64>> {
    let m = max_abs(v.iter().copied());
    if m == 0.0 || !m.is_finite() {
        return None;
    }
    let down = pow2(-scale_exponent(m));
    let scaled: Vec<f64> = v.iter().map(|x| x * down).collect();
    // max |scaled| >= 1 (or the clamped tiny-exponent case, still > 0), so n > 0.
    let n = norm_of(scaled.iter().copied());
    if !(n > 0.0 && n.is_finite()) {
        return None;
    }
    Some(scaled.into_iter().map(|x| x / n).collect())
}

/// `δ = 1 − c‖x‖²`, the denominator of the conformal factor λ = 2/δ, evaluated in
/// double-double (~106-bit) arithmetic from the exact f64 coordinates.
///
/// Why: near the boundary δ is the difference of two nearly equal numbers. In plain f64
/// a point at hyperbolic distance 30 from the origin (δ ≈ 4e-13) would get δ with a
/// relative error of ~1e-3 (the rounding of ‖x‖² alone is 1e-16 absolute), i.e. an error
/// of ~1e-3 in every distance involving it. In double-double the absolute error is
/// ~1e-31, so δ is correct to a few ulps for every δ ≳ 1e-15 and stays positive and
/// meaningful far beyond.
///
/// The coordinates are scaled by a power of two first (exact), and c by the inverse
/// square, so neither huge nor tiny coordinates over/underflow. Returns a value ≤ −3 for
/// points far outside the ball (possibly −inf), never NaN for finite input.
pub(crate) fn one_minus_c_norm_sq(c: f64, x: &[f64]) -> f64 {
    let m = max_abs(x.iter().copied());
    if m == 0.0 {
        return 1.0;
    }
    let k = scale_exponent(m);
    let down = pow2(-k);
    let up = pow2(k);
    // c·‖x‖² = c' · Σ (x_i 2^-k)² with c' = c·2^(2k); exact unless c' over/underflows,
    // and then the point is either far outside (c' = inf) or c‖x‖² is negligible.
    let c_scaled = c * up * up;

    // Compensated sum of exact squares: hi + lo = Σ s_i² to ~2^-106 relative.
    let (mut hi, mut lo) = (0.0_f64, 0.0_f64);
    for &v in x {
        let s = v * down;
        let (p, e) = two_prod(s, s);
        let (h, t) = two_sum(hi, p);
        hi = h;
        lo += t + e;
    }

    // Σ s_i² >= 1 because the largest |s_i| is >= 1 (up to the clamp for subnormal
    // inputs, where c' is tiny anyway). So c' >= 4 means c‖x‖² >= 4: clearly outside,
    // no precision needed, and this keeps two_prod's split away from overflow.
    if c_scaled.is_nan() || c_scaled >= 4.0 {
        return 1.0 - c_scaled * (hi + lo);
    }
    let (ph, pe) = two_prod(c_scaled, hi);
    let pl = pe + c_scaled * lo;
    let (dh, de) = two_sum(1.0, -ph);
    dh + (de - pl)
}

/// `asinh(num / sqrt(da·db))` for `num >= 0`, `da, db > 0`, without overflow.
///
/// This is half of the Poincaré distance scaled by √c (see `PoincareBall::distance`).
/// For large arguments it switches to logarithms of the factors, so even an argument
/// that would overflow f64 gives the correct finite result.
pub(crate) fn asinh_ratio(num: f64, da: f64, db: f64) -> f64 {
    if num == 0.0 {
        return 0.0;
    }
    let z = num / (da.sqrt() * db.sqrt());
    if z.is_finite() && z < ASINH_LOG_THRESHOLD {
        z.asinh()
    } else {
        LN_2 + num.ln() - 0.5 * (da.ln() + db.ln())
    }
}

/// `(tanh t, 1 − tanh t, sech² t)` for `t >= 0` (including +inf), each accurate to a
/// few ulps.
///
/// `1 − tanh t = 2e/(1+e)` and `sech² t = 4e/(1+e)²` (e = exp(−2t)) are computed
/// directly rather than from tanh: for large t they are tiny but perfectly good numbers
/// (sech² t is the δ of the point at distance 2t/√c from the origin) that subtracting
/// from 1 would round to 0.
pub(crate) fn tanh_parts(t: f64) -> (f64, f64, f64) {
    if t.is_nan() || t <= 0.0 {
        // t == 0 (or a NaN that validation should have excluded): the identity.
        return (0.0, 1.0, 1.0);
    }
    let e = (-2.0 * t).exp();
    let one_plus_e = 1.0 + e;
    // 1 − e via expm1 keeps relative precision for small t.
    let tanh = -(-2.0 * t).exp_m1() / one_plus_e;
    let one_minus_tanh = 2.0 * e / one_plus_e;
    let sech2 = 4.0 * e / (one_plus_e * one_plus_e);
    (tanh, one_minus_tanh, sech2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_prod_is_exact_for_squares() {
        let a = 1.0 - f64::EPSILON / 2.0; // 1 − 2^-53
        let (p, e) = two_prod(a, a);
        // a² = 1 − 2^-52 + 2^-106 exactly.
        assert_eq!(p, 1.0 - f64::EPSILON);
        assert_eq!(e, 2f64.powi(-106));
    }

    #[test]
    fn delta_is_exact_next_to_the_boundary() {
        let a = 1.0 - f64::EPSILON / 2.0;
        // δ = 1 − a² = 2^-52 − 2^-106.
        let d = one_minus_c_norm_sq(1.0, &[a]);
        let expected = f64::EPSILON - 2f64.powi(-106);
        assert!((d - expected).abs() <= 1e-32, "{d} vs {expected}");
    }

    #[test]
    fn delta_handles_extreme_magnitudes() {
        assert_eq!(one_minus_c_norm_sq(1.0, &[0.0, 0.0]), 1.0);
        assert!(one_minus_c_norm_sq(1.0, &[1e300, 1e300]) < 0.0);
        assert!(one_minus_c_norm_sq(1e-300, &[1e149, 1e149]) > 0.0);
        let d = one_minus_c_norm_sq(1e300, &[5e-151]);
        assert!((d - 0.75).abs() < 1e-12, "{d}");
        assert!(one_minus_c_norm_sq(f64::MAX, &[1.0]).is_sign_negative());
    }

    #[test]
    fn norm_avoids_overflow_and_underflow() {
        // The decimal inputs are themselves rounded, so compare to 1 ulp-ish.
        assert!((norm_of([3e300, 4e300].into_iter()) / 5e300 - 1.0).abs() < 4e-16);
        assert!((norm_of([3e-300, 4e-300].into_iter()) / 5e-300 - 1.0).abs() < 4e-16);
        assert!(norm_of([f64::NAN, 1.0].into_iter()).is_nan());
        assert_eq!(norm_of([f64::INFINITY].into_iter()), f64::INFINITY);
        assert_eq!(norm_of(std::iter::empty()), 0.0);
    }

    #[test]
    fn tanh_parts_limits() {
        assert_eq!(tanh_parts(0.0), (0.0, 1.0, 1.0));
        assert_eq!(tanh_parts(f64::INFINITY), (1.0, 0.0, 0.0));
        let (t, m, s) = tanh_parts(20.0);
        assert_eq!(t, 1.0);
        assert!((m / (2.0 * (-40.0f64).exp()) - 1.0).abs() < 1e-14);
        assert!((s / (4.0 * (-40.0f64).exp()) - 1.0).abs() < 1e-14);
        let (t, m, _) = tanh_parts(1e-10);
        assert!((t / 1e-10 - 1.0).abs() < 1e-15);
        assert!((m - (1.0 - 1e-10)).abs() < 1e-16);
    }

    #[test]
    fn asinh_ratio_switches_smoothly() {
        let below = asinh_ratio(ASINH_LOG_THRESHOLD * 0.999_999, 1.0, 1.0);
        let above = asinh_ratio(ASINH_LOG_THRESHOLD * 1.000_001, 1.0, 1.0);
        assert!((above - below - 2e-6).abs() < 1e-12);
        // The ratio itself overflows, the result does not.
        let huge = asinh_ratio(1.0, 1e-300, 1e-300);
        assert!((huge - (LN_2 + 300.0 * std::f64::consts::LN_10)).abs() < 1e-12);
    }
}
