//! Receipts, checkpoints and signed batches (receipt-signer → indexer and clients).

use serde::{Deserialize, Serialize};

use crate::record::OperationRecord;
use crate::value::{Blob, Hash32};

/// A signed statement of the log's size and root: a C2SP signed-note checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: Hash32,
    /// The whole signed note (body and signature lines), verifiable on its own.
    pub signed_note: String,
    /// Hex id of the key that signed it.
    pub key_id: String,
    /// Unix time in microseconds.
    pub signed_at_us: u64,
}

/// Proof that one operation record is in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub operation_id: String,
    /// Position in the log; also the receipt id (ordered in time, as the log only grows).
    pub leaf_index: u64,
    /// The canonical bytes of the operation record; leaf hash = SHA-256(0x00 || leaf).
    pub leaf: Blob,
    /// Inclusion proof of the leaf against the checkpoint.
    pub inclusion_proof: Vec<Hash32>,
    pub tree_size: u64,
    /// The signed note of the checkpoint that the proof leads to.
    pub checkpoint: String,
}

impl Receipt {
    /// Decodes the operation record the receipt covers.
    pub fn record(&self) -> Result<OperationRecord, String> {
        OperationRecord::from_canonical_bytes(&self.leaf.0)
    }
}

/// One batch of receipts with the single checkpoint that signs them all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedBatch {
    pub checkpoint: Checkpoint,
    pub receipts: Vec<Receipt>,
    /// W3C `traceparent` of each receipt's signing span, parallel to `receipts`, so the
    /// indexer's work joins each job's trace. Transport metadata: not signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traceparents: Vec<String>,
    /// Sequence of each receipt's operation record in the records stream, parallel to
    /// `receipts`: a signer that takes over the log removes the records of the last batch
    /// that the previous signer had not yet acked, so none of them gets a second leaf.
    /// Transport metadata: not signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_seqs: Vec<u64>,
}

/// The log's verifier keys, for clients that verify offline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifierKeys {
    /// Verifier keys in the signed-note text form `<name>+<hex id>+<base64 key>`.
    pub keys: Vec<String>,
    pub origin: String,
}
