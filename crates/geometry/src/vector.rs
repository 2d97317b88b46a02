//! Plain Euclidean vector helpers on `&[f64]`, plus the input validation every model
//! shares.

use crate::error::{GeometryError, Result};
use crate::numeric::norm_of;

/// Euclidean norm ‖x‖.
///
/// Overflow-safe: values are scaled by a power of two before squaring, so `norm(&[3e300,
/// 4e300]) == 5e300`. Returns 0 for an empty slice; NaN/inf coordinates propagate.
pub fn norm(x: &[f64]) -> f64 {
    norm_of(x.iter().copied())
}

/// Euclidean inner product ⟨x, y⟩.
///
/// A plain f64 sum (no scaling): products of coordinates above ~1e154 overflow to inf, as
/// the true value would not fit either.
pub fn dot(x: &[f64], y: &[f64]) -> Result<f64> {
    check_same_dim(x, y)?;
    Ok(x.iter().zip(y).map(|(a, b)| a * b).sum())
}

/// Non-empty with all coordinates finite.
pub(crate) fn check_vector(x: &[f64]) -> Result<()> {
    if x.is_empty() {
        return Err(GeometryError::EmptyVector);
    }
    check_finite(x)
}

/// All coordinates finite (reports the first offender).
pub(crate) fn check_finite(x: &[f64]) -> Result<()> {
    match x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(GeometryError::NonFiniteCoordinate { index, value }),
        None => Ok(()),
    }
}

/// `y` has as many coordinates as `x`.
pub(crate) fn check_same_dim(x: &[f64], y: &[f64]) -> Result<()> {
    if x.len() == y.len() {
        Ok(())
    } else {
        Err(GeometryError::DimensionMismatch {
            expected: x.len(),
            found: y.len(),
        })
    }
}

/// Turns a non-finite result into an error: `Ok` values of this crate are always finite.
pub(crate) fn ensure_finite(operation: &'static str, v: Vec<f64>) -> Result<Vec<f64>> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(GeometryError::NonFiniteResult { operation })
    }
}

/// Scalar version of [`ensure_finite`].
pub(crate) fn ensure_finite_scalar(operation: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(GeometryError::NonFiniteResult { operation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_norm() {
        assert_eq!(dot(&[1.0, 2.0], &[3.0, 4.0]), Ok(11.0));
        assert_eq!(
            dot(&[1.0], &[1.0, 2.0]),
            Err(GeometryError::DimensionMismatch {
                expected: 1,
                found: 2
            })
        );
        assert_eq!(norm(&[3.0, 4.0]), 5.0);
        assert_eq!(norm(&[]), 0.0);
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(check_vector(&[]), Err(GeometryError::EmptyVector));
        let err = check_vector(&[0.0, f64::NAN]).unwrap_err();
        assert!(matches!(
            err,
            GeometryError::NonFiniteCoordinate { index: 1, .. }
        ));
        assert!(err.to_string().contains("index 1"));
        assert!(ensure_finite("op", vec![1.0, f64::INFINITY]).is_err());
    }
}
