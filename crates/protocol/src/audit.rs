//! Audit queries answered by the indexer on `hsync.index.*`.

use serde::{Deserialize, Serialize};

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
