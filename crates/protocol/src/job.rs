//! Jobs (DAGs of operator invocations) and their results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ErrorReply;
use crate::receipt::Receipt;
use crate::value::{Arg, Value};

/// Longest job id or node id.
pub const MAX_ID_LEN: usize = 128;

/// A valid job id or node id: usable as a NATS subject token and a KV key.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn anonymous() -> String {
    "anonymous".to_string()
}

/// A job: a DAG of nodes. Edges are the references in node arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Idempotency key. Empty on `jobs.run` means "assign one"; required on `jobs.submit`.
    #[serde(default)]
    pub job_id: String,
    /// Who submits the job: the Cedar principal.
    #[serde(default = "anonymous")]
    pub submitter: String,
    pub nodes: Vec<Node>,
    /// Node ids whose outputs the result carries; empty means the sinks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Reply only once every step's receipt is signed, and carry the receipts.
    #[serde(default)]
    pub wait_receipts: bool,
    /// Deadline for the whole job, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Keep the job's nodes and outputs in the runner's memory as a session, so that
    /// `hsync.jobs.extend` can add nodes to it later (idle sessions expire).
    #[serde(default)]
    pub keep_session: bool,
}

/// Adds nodes to the session of a job run with `keep_session` (`hsync.jobs.extend`).
/// New node ids must be new; references may point to the job's earlier nodes or to new
/// ones. Only the nodes the requested outputs need that have no output yet run; the reply
/// is a JobResult whose node reports cover the nodes run by this request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtendJob {
    /// The job whose session is extended.
    pub job_id: String,
    pub nodes: Vec<Node>,
    /// Node ids (old or new) whose outputs the result carries; empty means the new sinks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// One operator invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    /// Operator id, optionally `@version`.
    #[serde(alias = "operator")]
    pub op: String,
    #[serde(default)]
    pub args: BTreeMap<String, Arg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Every requested output was produced.
    Succeeded,
    /// A node failed; see the node reports.
    Failed,
    /// A policy denied a node that a requested output needs.
    Denied,
    /// The job itself was invalid (see `error`); nothing ran. Only durable jobs get a
    /// JobResult for this: on `jobs.run` the reply is the ErrorReply itself.
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Executed,
    Cached,
    Denied,
    Failed,
    /// Not run: a dependency failed or was denied, or the job was cancelled.
    Skipped,
}

/// What happened to one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_id: String,
    pub operator: String,
    pub status: NodeStatus,
    /// Identity of the step's operation record and receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    #[serde(default)]
    pub cached: bool,
    #[serde(default)]
    pub elapsed_us: u64,
    /// Policies that decided the pre- and post-conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decided_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

/// The reply to a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job_id: String,
    pub status: JobStatus,
    pub outputs: BTreeMap<String, Value>,
    pub nodes: Vec<NodeReport>,
    /// Signed receipts of the steps, when the job asked for `wait_receipts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<Receipt>,
    #[serde(default)]
    pub elapsed_us: u64,
    /// The OpenTelemetry trace id of the job, to open it in Jaeger.
    #[serde(default)]
    pub trace_id: String,
    /// The first error that decided the status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
    /// Set when the outputs were too large for one NATS message: they travel through the
    /// JetStream object store instead, and `outputs` is empty on the wire. `JobClient`
    /// fetches them and fills `outputs` in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_object: Option<ObjectRef>,
}

/// Where a large payload was put: an object of a JetStream object store (chunked; the
/// store checks its SHA-256 digest on reading).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub name: String,
    /// Size of the object in bytes: the MessagePack encoding of the outputs map.
    pub size: u64,
}
