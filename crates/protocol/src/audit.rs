//! Audit queries answered by the indexer on `hsync.index.*`.

use serde::{Deserialize, Serialize};

use crate::operator::OperatorDef;
use crate::receipt::{Checkpoint, Receipt};
use crate::value::Hash32;

/// The receipt of one operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptByOperation {
    pub operation_id: String,
}

/// The receipts of one job, a page at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptsByJob {
    pub job_id: String,
    /// Opaque cursor from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// The receipt with one id. A receipt's id is its leaf index, ordered in time (the log
/// only grows), so an id range is a range of signing times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptById {
    pub leaf_index: u64,
}

/// The receipts of operations that started in `[from_us, to_us)` (Unix microseconds), in
/// start-time order, a page at a time; with `operator` (`id@version`, as recorded), only
/// that operator's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptsByTime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    pub from_us: u64,
    pub to_us: u64,
    /// Opaque cursor from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

/// The signed checkpoint at one tree size (one where a batch ended), or the latest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointReply {
    pub checkpoint: Checkpoint,
}

/// Largest page a query may ask for.
pub const MAX_PAGE: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptReply {
    pub receipt: Receipt,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptPage {
    pub receipts: Vec<Receipt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Log statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IndexStats {
    pub receipts: u64,
    pub batches: u64,
    pub tree_size: u64,
    /// Operator definitions mirrored from the registry bucket.
    #[serde(default)]
    pub operators: u64,
}

/// One operator definition, by its registry id (without `@version`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorById {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorReply {
    pub operator: OperatorDef,
}

/// The operators that declare `capability` (every operator when absent), ordered by id,
/// a page at a time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Opaque cursor from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorPage {
    pub operators: Vec<OperatorDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A consistency proof between the log's checkpoints at two tree sizes
/// (1 <= `from_size` <= `to_size`; both must be sizes at which a batch ended).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyQuery {
    pub from_size: u64,
    pub to_size: u64,
}

/// Both signed checkpoints and the RFC 6962 consistency proof between them: enough to
/// check offline that the later log extends the earlier one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyReply {
    pub from: Checkpoint,
    pub to: Checkpoint,
    pub proof: Vec<Hash32>,
}

/// A request with no parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}
