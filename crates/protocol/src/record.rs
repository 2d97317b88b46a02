//! Operation records: what the runner did at one step (runner → receipt-signer).

use serde::{Deserialize, Serialize};

use crate::value::Hash32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Executed,
    Cached,
    Denied,
    Failed,
}

/// One step of one job. `operation_id` is the idempotency key at every stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub operation_id: String,
    pub job_id: String,
    pub node_id: String,
    /// `id@version` of the operator.
    pub operator: String,
    /// SHA-256 over the canonical encoding of the resolved inputs.
    pub inputs_hash: Hash32,
    /// SHA-256 over the canonical encoding of the output, when there is one.
    pub output_hash: Option<Hash32>,
    pub outcome: Outcome,
    /// Policies that decided the step.
    pub policies: Vec<String>,
    pub submitter: String,
    /// OpenTelemetry trace id (hex), to go from a receipt to its trace.
    pub trace_id: String,
    /// Unix time in microseconds.
    pub started_at_us: u64,
    pub finished_at_us: u64,
    /// Why the step failed or was denied.
    pub error: Option<String>,
}

impl OperationRecord {
    /// The canonical bytes a receipt's leaf hash covers: MessagePack with named fields
    /// in declaration order. Receipts carry these bytes, so verification never depends
    /// on re-encoding with a later version of this struct.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("an OperationRecord always encodes")
    }

    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("not an operation record: {e}"))
    }
}
