//! Operator definitions (the registry) and calls to remote operator providers.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::error::ErrorReply;
use crate::value::Value;

/// Who executes an operator.
///
/// Written as serde's internally tagged enum (`{"kind": "nats", "subject": ...}`) but
/// read by [`Provider::deserialize`] below: serde's derived reader for such an enum first
/// copies the whole map, unknown fields included, into an intermediate tree, reserving
/// room at every level from the declared lengths (up to 1 MiB each), so that 1024 nested
/// lying map headers (a 14 KB definition) reserved 1 GiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Provider {
    /// Compiled into the runner.
    Builtin,
    /// Served over NATS request/reply on `subject`. A provider that also answers
    /// [`OperatorBatch`]es on `batch_subject` gets concurrent calls coalesced into one
    /// message there.
    Nats {
        subject: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_subject: Option<String>,
    },
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Kind {
            Builtin,
            Nats,
        }
        /// The fields of every variant; unknown ones are skipped without being kept.
        #[derive(Deserialize)]
        struct Fields {
            kind: Kind,
            #[serde(default)]
            subject: Option<String>,
            #[serde(default)]
            batch_subject: Option<String>,
        }
        let f = Fields::deserialize(d)?;
        match f.kind {
            Kind::Builtin => Ok(Provider::Builtin),
            Kind::Nats => Ok(Provider::Nats {
                subject: f.subject.ok_or_else(|| de::Error::missing_field("subject"))?,
                batch_subject: f.batch_subject,
            }),
        }
    }
}

/// The expected kind of an argument, checked before execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    Any,
    Number,
    Integer,
    String,
    Bytes,
    Vector,
    Matrix,
    /// A vector of vectors (e.g. a set of points).
    Points,
    /// A vector of numbers that are not the coordinates of a point (weights, a tangent
    /// vector): checked like `Vector`, but policies do not see it as a point.
    Numbers,
    /// A graph's edges: pairs `[u, v]` of node indices (non-negative integers).
    Edges,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// An operator's definition, as stored in the registry bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorDef {
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Same inputs always give the same output (bit for bit).
    #[serde(default = "yes")]
    pub deterministic: bool,
    /// Results may be served from the runner's cache.
    #[serde(default = "yes")]
    pub cacheable: bool,
    pub provider: Provider,
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    /// Relative cost, for scheduling.
    #[serde(default)]
    pub cost_hint: u32,
    #[serde(default)]
    pub description: String,
}

impl OperatorDef {
    /// `id@version`, the identity used in cache keys and receipts.
    pub fn qualified_id(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// Splits `id@version` into its parts.
pub fn split_operator_ref(op: &str) -> (&str, Option<&str>) {
    match op.split_once('@') {
        Some((id, v)) => (id, Some(v)),
        None => (op, None),
    }
}

/// A call to a remote operator provider on `hsync.op.<operator>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorCall {
    pub operator: String,
    pub args: BTreeMap<String, Value>,
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub node_id: String,
}

/// Most calls one [`OperatorBatch`] may carry; providers refuse larger batches.
pub const MAX_OPERATOR_BATCH: usize = 10_000;

/// Many calls to one operator in one message, sent to the provider's `batch_subject`.
/// Answered by an [`OperatorBatchReply`] with one result per call, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorBatch {
    pub calls: Vec<OperatorCall>,
}

/// The answers to an [`OperatorBatch`], in the order of its calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorBatchReply {
    pub results: Vec<OperatorResult>,
}

/// One call's answer inside a batch: its output, or the error of that call alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default)]
    pub cached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

impl OperatorResult {
    pub fn from_result(r: Result<OperatorOutput, ErrorReply>) -> Self {
        match r {
            Ok(o) => OperatorResult {
                output: Some(o.output),
                cached: o.cached,
                error: None,
            },
            Err(e) => OperatorResult {
                output: None,
                cached: false,
                error: Some(e),
            },
        }
    }

    /// A result with neither output nor error is a provider's fault, reported as such.
    pub fn into_result(self) -> Result<OperatorOutput, ErrorReply> {
        match (self.error, self.output) {
            (Some(e), _) => Err(e),
            (None, Some(output)) => Ok(OperatorOutput {
                output,
                cached: self.cached,
            }),
            (None, None) => Err(ErrorReply::new(
                crate::ErrorCode::OperatorFailed,
                "the provider's batch answer has neither an output nor an error",
            )),
        }
    }
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorOutput {
    pub output: Value,
    /// The provider answered from its own cache.
    #[serde(default)]
    pub cached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written reader accepts what the derived one did and refuses the same.
    #[test]
    fn provider_reads_like_an_internally_tagged_enum() {
        let nats = Provider::Nats {
            subject: "hsync.op.x".into(),
            batch_subject: Some("hsync.opbatch.x".into()),
        };
        for p in [Provider::Builtin, nats.clone()] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Provider>(&json).unwrap(), p, "{json}");
            let mp = rmp_serde::to_vec_named(&p).unwrap();
            assert_eq!(rmp_serde::from_slice::<Provider>(&mp).unwrap(), p);
        }
        assert_eq!(serde_json::to_string(&Provider::Builtin).unwrap(), r#"{"kind":"builtin"}"#);
        let p: Provider = serde_json::from_str(r#"{"future":[[{"x":1}]],"subject":"s","kind":"nats"}"#).unwrap();
        assert_eq!(p, Provider::Nats { subject: "s".into(), batch_subject: None });
        let err = |json: &str| serde_json::from_str::<Provider>(json).unwrap_err().to_string();
        assert!(err(r#"{"kind":"nats"}"#).contains("missing field `subject`"));
        assert!(err(r#"{"subject":"s"}"#).contains("missing field `kind`"));
        assert!(err(r#"{"kind":"grpc"}"#).contains("unknown variant `grpc`, expected `builtin` or `nats`"));
    }
}
