//! Hyperbolic geometry for HyperSync: the Poincaré ball and the Lorentz (hyperboloid)
//! models with curvature −c (c > 0), in f64, for any dimension. Pure math: no I/O, no
//! async, no allocation beyond the returned vectors.
//!
//! # API
//!
//! * [`PoincareBall`] (`PoincareBall::new(c)?`): [`distance`](PoincareBall::distance),
//!   [`distance0`](PoincareBall::distance0),
//!   [`pairwise_distances`](PoincareBall::pairwise_distances) (row-major n×n),
//!   [`cross_distances`](PoincareBall::cross_distances) (row-major m×n, queries × points),
//!   [`knn`](PoincareBall::knn) (exact k nearest neighbours, O(n log k)),
//!   and [`AnnIndex`] (approximate: HNSW over a monotone transform of the distance,
//!   re-ranked exactly; [`recall`] measures it against `knn`),
//!   [`frechet_mean`](PoincareBall::frechet_mean) (weighted, by Riemannian gradient
//!   descent with a step from a bound on the cost's Hessian; see [`MeanOptions`]),
//!   [`mobius_add`](PoincareBall::mobius_add),
//!   [`mobius_scalar_mul`](PoincareBall::mobius_scalar_mul),
//!   [`exp_map`](PoincareBall::exp_map) / [`log_map`](PoincareBall::log_map) at any base
//!   point, [`exp0`](PoincareBall::exp0) / [`log0`](PoincareBall::log0) at the origin,
//!   [`geodesic`](PoincareBall::geodesic) (n ≥ 2 evenly spaced points, both ends
//!   included), [`project`](PoincareBall::project) onto the open ball,
//!   [`conformal_factor`](PoincareBall::conformal_factor),
//!   [`check_point`](PoincareBall::check_point).
//! * [`Lorentz`] (`Lorentz::new(c)?`, points have d + 1 coordinates, index 0 = time):
//!   [`distance`](Lorentz::distance), [`to_poincare`](Lorentz::to_poincare),
//!   [`from_poincare`](Lorentz::from_poincare), [`project`](Lorentz::project) onto the
//!   hyperboloid, [`exp_map`](Lorentz::exp_map) (tangent vectors: ⟨x,v⟩_L = 0, else
//!   [`GeometryError::NotTangent`]) / [`log_map`](Lorentz::log_map),
//!   [`geodesic`](Lorentz::geodesic) (n ≥ 2 evenly spaced points, both ends included),
//!   [`check_point`](Lorentz::check_point); [`minkowski_dot`].
//! * [`embed_tree`]: Sarkar's embedding of a tree (or a graph's BFS spanning tree) given
//!   as an edge list, with τ from a target distortion; the [`TreeEmbedding`] measures
//!   distances exactly however deep the nodes are, gives f64 coordinates as far as f64
//!   can place them, and reports distortion and mean average precision
//!   ([`TreeEmbedding::quality`]).
//! * Vector helpers [`norm`] and [`dot`]; the error type [`GeometryError`].
//!
//! Points and tangent vectors are `&[f64]`; results are `Vec<f64>`. Models serialize as
//! `{"c": <f64>}` and deserialization re-validates c.
//!
//! ```
//! use hsync_geometry::{Lorentz, PoincareBall};
//!
//! let ball = PoincareBall::new(1.0)?;
//! let (x, y) = ([0.1, 0.2], [-0.5, 0.3]);
//! let d = ball.distance(&x, &y)?;
//! let mid = &ball.geodesic(&x, &y, 3)?[1];
//! assert!((ball.distance(&x, mid)? - d / 2.0).abs() < 1e-12);
//!
//! let lorentz = Lorentz::new(1.0)?;
//! let (hx, hy) = (lorentz.from_poincare(&x)?, lorentz.from_poincare(&y)?);
//! assert!((lorentz.distance(&hx, &hy)? - d).abs() < 1e-12);
//! # Ok::<(), hsync_geometry::GeometryError>(())
//! ```
//!
//! # Errors and the no-NaN guarantee
//!
//! Every operation validates its inputs and returns [`GeometryError`] for empty vectors,
//! dimension mismatches, NaN/inf coordinates, invalid curvature, points not strictly
//! inside the ball (the error carries the norm found and the radius 1/√c), points off the
//! hyperboloid, and n < 2 for geodesics. Nothing panics, and **every `Ok` value is
//! finite**: the formulas below cannot produce NaN/inf for finite in-domain input, and a
//! final check turns anything non-finite into [`GeometryError::NonFiniteResult`] instead
//! (reachable only with coordinates near the f64 range limits or extreme curvatures).
//!
//! # Precision policy
//!
//! The goal is that each result is accurate for the f64 inputs *exactly as given*, all
//! the way to the boundary of the ball.
//!
//! * **The conformal denominator** `δ_x = 1 − c‖x‖²` is evaluated in double-double
//!   (~106-bit) arithmetic from the exact coordinates (error-free products and sums, with
//!   power-of-two scaling against over/underflow). It is the quantity that decides
//!   precision near the boundary, where it is a difference of nearly equal numbers; in
//!   plain f64 (even as `(1 − √c‖x‖)(1 + √c‖x‖)`) a point at distance 30 from the origin
//!   would carry a ~1e-3 error into every distance.
//! * **Membership**: a point is in the ball iff that double-double δ is > 0. There is no
//!   artificial ceiling: every f64 point strictly inside is accepted and measured. With
//!   c = 1 the last f64 below 1 is at hyperbolic distance ln(2⁵⁴ − 1) ≈ 37.4 from the
//!   origin (≈ 37.4/√c in general).
//! * **Distance**: `d = (2/√c)·asinh(√c‖x − y‖ / √(δ_x δ_y))`, algebraically identical to
//!   `(1/√c)·acosh(1 + 2c‖x − y‖²/(δ_x δ_y))` but needing no clamp at all (the acosh
//!   argument's lower clamp at 1 becomes unnecessary, and there never is an upper one);
//!   for arguments above 1e8 the asinh switches to a sum of logarithms so it cannot
//!   overflow. Relative error: a few ulps (tests demand ≤ 1e-12 against independent
//!   references) for distances up to the representable limit, including tiny distances
//!   between nearby points close to the boundary (no cancellation anywhere). `d(x,x) = 0`
//!   exactly and `d` is exactly symmetric.
//! * **Input representation is the real limit.** Storing a coordinate rounds it by up to
//!   half an ulp, which moves a point at distance R from the origin by about
//!   1e-16·e^(√c·R)/(2√c) in hyperbolic distance: ~5e-4 at R = 30 and ~0.08 at R = 35
//!   (c = 1). Concretely, the f64 nearest to tanh(15) is at distance 29.99983 from the
//!   origin, not 30. So the result is exact for the *stored* point, and "the point at
//!   distance R" is only as exact as f64 can place it. The tests check distances 1, 10,
//!   20, 30, 35 against the stored points' exact distances to 1e-12 relative, against
//!   the intended R to 1e-6 relative plus that representation bound (1e-6 outright up to
//!   20 for c = 1, and at 30 whenever √c·R is moderate, e.g. c = 1/4).
//! * **Möbius addition** uses the equivalent form
//!   `x ⊕ y = (δ_x (x + y) + c‖x + y‖² x) / (δ_x δ_y + c‖x + y‖²)` whose denominator is a
//!   sum of non-negative terms; `x ⊕ 0 = x`, `0 ⊕ y = y`, `(−x) ⊕ x = 0` hold exactly.
//! * **exp/log/geodesic** reuse the stable distance: `log_x(y) = (δ_x·d(x,y)/2)·û` with
//!   `û` the direction of `(−x) ⊕ y`; `exp_x` passes the intermediate point's δ as the
//!   exactly computed `sech²` instead of recomputing it from rounded coordinates.
//!   Long steps never materialise that intermediate point (only `x + u` is needed, and
//!   it is formed without the cancellation). `exp_x(log_x(y))` returns `y` to ~1e-9
//!   relative in hyperbolic distance for moderate d; for long geodesics the problem itself
//!   is ill-conditioned (a 1e-16 rotation of the stored tangent vector moves the endpoint
//!   by ~1e-16·sinh(√c·d)/√c) and the property tests allow exactly that.
//! * **The boundary**: operations whose exact result lies inside the ball but rounds onto
//!   or past the boundary (very long exp steps, `project` of an outside point) pull it
//!   radially to norm `(1 − 1e-15)/√c` ([`BOUNDARY_MARGIN`], ≈ 35.2/√c from the origin).
//!   Points already inside are never moved.
//! * **Lorentz distance** uses `acosh(−c⟨x,y⟩_L)/√c` when that argument is ≥ 2 (no
//!   cancellation for far-apart points) and the Minkowski chord,
//!   `d = (2/√c)·asinh(√c‖x − y‖_L/2)`, below it (where acosh would lose half the
//!   digits for nearby points). Points must satisfy the hyperboloid equation within
//!   [`HYPERBOLOID_TOLERANCE`] (relative). Hyperboloid coordinates grow like e^(√c·R), so
//!   far from the origin a rounded Lorentz point is itself uncertain by ~1e-16·e^(√c·R)
//!   in hyperbolic distance, and the chord of two *nearby* points out there cancels
//!   worse, ~1e-16·e^(2√c·R) (points 1 apart: 5e-8 at √c·R = 10, 2e-3 at 15, nothing
//!   left at 20). Distances from near the origin to far points are fine (acosh branch).
//!   Prefer the Poincaré model for small distances far out.
//! * **Lorentz exp/log/geodesic**: `exp_x(v) = cosh(√c‖v‖)x + sinh(√c‖v‖)v/(√c‖v‖)` with
//!   ‖v‖ from a sum of squares valid for tangent v (the Minkowski norm loses every digit
//!   for radial v at √c·R ≈ 20), and x₀ recomputed so the result lies on the hyperboloid;
//!   `log_x(y) = (t/sinh t)(y − x) − t·tanh(t/2)·x` with t = √c·d(x, y), which never
//!   divides by a small norm. They inherit the distance's limit above; the geodesic's
//!   second half is computed from y backwards, as in the Poincaré model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ann;
mod curvature;
mod embed;
mod error;
mod knn;
mod lorentz;
mod mean;
mod numeric;
mod poincare;
mod vector;

pub use curvature::CurvatureRepr;
pub use embed::{embed_tree, EmbedError, EmbedOptions, EmbeddingQuality, PoincarePoints, TreeEmbedding};
pub use error::{GeometryError, Result};
pub use lorentz::{minkowski_dot, Lorentz, HYPERBOLOID_TOLERANCE};
pub use ann::{recall, AnnIndex, AnnOptions};
pub use knn::Neighbour;
pub use mean::{FrechetMean, MeanOptions};
pub use poincare::{PoincareBall, BOUNDARY_MARGIN};
pub use vector::{dot, norm};
