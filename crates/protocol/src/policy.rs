//! Policy evaluation requests and decisions (runner → policy-evaluator).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Before or after the operator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Pre,
    Post,
}

/// One question: may `principal` do `stage` on `operator` in this `context`?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyQuery {
    pub principal: String,
    pub stage: Stage,
    pub operator: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Step state, flat: job_id, node_id, arg_count, input_size, dimension,
    /// max_point_norm, each numeric argument by name, and for post-conditions
    /// output_size/output_norm/output_value. See docs/POLICIES.md.
    #[serde(default)]
    pub context: BTreeMap<String, Value>,
}

/// Many questions in one message; answered in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyEvalRequest {
    pub queries: Vec<PolicyQuery>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub allowed: bool,
    /// Ids of the policies that decided (or `default:*` when none did).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Evaluation errors, as "policy id: message"; any error denies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default)]
    pub cached: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyEvalReply {
    pub decisions: Vec<PolicyDecision>,
}
