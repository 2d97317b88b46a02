//! The one error type of the crate.

/// Everything that can go wrong in this crate. Every variant names the problem and the
/// offending value so a caller can log it without extra context.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// The curvature magnitude `c` (the model has curvature −c) must be finite and > 0.
    #[error("invalid curvature: c must be finite and > 0 (curvature is -c), got c = {c}")]
    InvalidCurvature {
        /// The rejected value.
        c: f64,
    },

    /// A point or tangent vector with no coordinates.
    #[error("empty vector: points and tangent vectors need at least one coordinate")]
    EmptyVector,

    /// Two vectors that must live in the same space have different lengths.
    #[error("dimension mismatch: expected {expected} coordinates, found {found}")]
    DimensionMismatch {
        /// Length of the first operand (or first point).
        expected: usize,
        /// Length of the offending operand.
        found: usize,
    },

    /// A NaN or infinite coordinate.
    #[error("non-finite coordinate at index {index}: {value}")]
    NonFiniteCoordinate {
        /// Position of the first non-finite coordinate.
        index: usize,
        /// The coordinate (NaN or ±inf).
        value: f64,
    },

    /// A NaN or infinite scalar argument (e.g. the factor of a Möbius scalar product).
    #[error("non-finite scalar argument `{name}`: {value}")]
    NonFiniteScalar {
        /// Name of the parameter.
        name: &'static str,
        /// The value (NaN or ±inf).
        value: f64,
    },

    /// A point on or outside the boundary of the Poincaré ball.
    #[error(
        "point is not inside the Poincaré ball: its norm is {norm}, \
         but points must have norm < 1/sqrt(c) = {radius}"
    )]
    OutsideBall {
        /// Euclidean norm of the point.
        norm: f64,
        /// The ball's radius 1/√c.
        radius: f64,
    },

    /// A geodesic needs at least its two endpoints.
    #[error("a geodesic needs n >= 2 points (both endpoints included), got n = {n}")]
    TooFewGeodesicPoints {
        /// The requested number of points.
        n: usize,
    },

    /// A Lorentz point has d + 1 coordinates with d >= 1.
    #[error(
        "a Lorentz point needs at least 2 coordinates (time x0 plus >= 1 spatial), found {found}"
    )]
    LorentzDimension {
        /// Number of coordinates given.
        found: usize,
    },

    /// A Lorentz point on the lower sheet (or the degenerate x0 = 0).
    #[error("Lorentz point is not on the upper sheet: time coordinate x0 = {x0} must be > 0")]
    LowerSheet {
        /// The time coordinate found.
        x0: f64,
    },

    /// A Lorentz point too far from the hyperboloid ⟨x,x⟩_L = −1/c.
    #[error(
        "point is not on the hyperboloid <x,x>_L = -1/c: relative residual {residual} \
         exceeds tolerance {tolerance} (use Lorentz::project to snap it)"
    )]
    OffHyperboloid {
        /// |c⟨x,x⟩_L + 1| / (c·x₀²).
        residual: f64,
        /// The accepted maximum, `HYPERBOLOID_TOLERANCE`.
        tolerance: f64,
    },

    /// A vector passed as tangent at a Lorentz point x does not satisfy ⟨x,v⟩_L = 0.
    #[error(
        "vector is not tangent to the hyperboloid at x: <x,v>_L/(|x||v|) = {inner} \
         exceeds tolerance {tolerance} in absolute value (tangent vectors satisfy <x,v>_L = 0)"
    )]
    NotTangent {
        /// ⟨x,v⟩_L/(‖x‖‖v‖) with Euclidean norms: the scale-free Minkowski product.
        inner: f64,
        /// The accepted maximum of |inner|, `HYPERBOLOID_TOLERANCE`.
        tolerance: f64,
    },

    /// A mean of no points.
    #[error("a mean needs at least one point")]
    NoPoints,

    /// Weights that are not one finite, non-negative number per point with a positive sum.
    #[error("invalid weights: {reason}")]
    InvalidWeights {
        /// What is wrong with them.
        reason: String,
    },

    /// `pairwise_distances` would need a matrix with more than `usize::MAX` entries.
    #[error("too many points for a pairwise distance matrix: n = {n}")]
    TooManyPoints {
        /// Number of points given.
        n: usize,
    },

    /// An intermediate or final value overflowed. Only reachable with coordinates near the
    /// f64 range limits or extreme curvatures; reported instead of returning NaN/inf.
    #[error("numerical overflow: {operation} produced a non-finite value")]
    NonFiniteResult {
        /// The operation that overflowed.
        operation: &'static str,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = GeometryError> = std::result::Result<T, E>;
