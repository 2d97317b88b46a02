//! The operator-runner's engine: validates a job's DAG, resolves operator definitions
//! (built-ins, or lazily from the registry bucket), and runs the nodes that the requested
//! outputs need — independent nodes in parallel — asking the policy-evaluator before and
//! after each step, serving deterministic steps from a result cache, and publishing one
//! operation record per step to JetStream.
#![forbid(unsafe_code)]

pub mod dag;
pub mod engine;
pub mod incremental;
pub mod large;
pub mod registry;
pub mod session;

pub use engine::{Engine, EngineConfig};
pub use registry::Registry;
