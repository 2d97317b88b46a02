//! Curvature validation and the serialized form shared by both models.

use serde::{Deserialize, Serialize};

use crate::error::{GeometryError, Result};

/// Validates the curvature magnitude `c` and returns `√c`.
pub(crate) fn sqrt_of_valid(c: f64) -> Result<f64> {
    if c.is_finite() && c > 0.0 {
        Ok(c.sqrt())
    } else {
        Err(GeometryError::InvalidCurvature { c })
    }
}

/// On-the-wire form of a model: `{"c": 1.0}`. Deserialization goes through the model's
/// constructor so an invalid `c` is rejected instead of producing a broken model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CurvatureRepr {
    /// The curvature magnitude c (curvature −c).
    pub c: f64,
}
