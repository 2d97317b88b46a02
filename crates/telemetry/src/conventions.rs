//! Attribute keys for HyperSync spans: OpenTelemetry messaging semantic conventions plus our
//! own `hsync.*` keys.
//!
//! `tracing` accepts constants as field names when they are wrapped in braces:
//!
//! ```
//! use hsync_telemetry::conventions::*;
//! let span = tracing::info_span!(
//!     "jobs.submit publish",
//!     { MESSAGING_SYSTEM } = MESSAGING_SYSTEM_NATS,
//!     { MESSAGING_DESTINATION_NAME } = "jobs.submit",
//!     { MESSAGING_OPERATION_TYPE } = "publish",
//!     { JOB_ID } = "job-1",
//!     otel.kind = "producer",
//! );
//! # drop(span);
//! ```

/// `messaging.system`, e.g. [`MESSAGING_SYSTEM_NATS`].
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// The value of [`MESSAGING_SYSTEM`] for NATS.
pub const MESSAGING_SYSTEM_NATS: &str = "nats";
/// `messaging.destination.name`: the NATS subject.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `messaging.operation.type`: `publish`, `receive`, `process`, …
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// HyperSync job id.
pub const JOB_ID: &str = "hsync.job_id";
/// HyperSync operation id.
pub const OPERATION_ID: &str = "hsync.operation_id";
/// Name of the operator being run.
pub const OPERATOR: &str = "hsync.operator";
/// Whether a cache lookup hit.
pub const CACHE_HIT: &str = "hsync.cache_hit";
/// Id of the node (service instance) doing the work.
pub const NODE_ID: &str = "hsync.node_id";
