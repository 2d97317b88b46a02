#![forbid(unsafe_code)]
//! Cedar policy evaluation for HyperSync.
//!
//! Every step of a job is checked twice: before the operator runs (`pre`) and
//! after it produced its output (`post`). Each check is one Cedar authorization
//! request built from the step, evaluated against the stored policies.
//!
//! # How a step maps to a Cedar request
//!
//! | Cedar       | HyperSync                                                                 |
//! |-------------|---------------------------------------------------------------------------|
//! | `principal` | `Hsync::User::"<submitter>"`: the user who submitted the job (no attributes) |
//! | `action`    | `Hsync::Action::"pre"` before the operator runs, `Hsync::Action::"post"` after |
//! | `resource`  | `Hsync::Operator::"<operator id>"` (see below)                             |
//! | `context`   | the step state, flat: `job_id`, `node_id`, each numeric argument by name, `arg_count`, `input_size`, `dimension`, `max_point_norm`, and for `post` `output_size`/`output_norm`/`output_value` (docs/POLICIES.md) |
//!
//! The operator entity carries its capabilities twice, so policies can use
//! whichever reads best:
//!
//! * as **parents**: an operator with capability `embedding` is a member of
//!   `Hsync::Capability::"embedding"`, so
//!   `resource in Hsync::Capability::"embedding"` matches it;
//! * as the **attribute** `capabilities` (a `Set<String>`), so
//!   `resource.capabilities.contains("embedding")` matches it too.
//!
//! # How context values are converted
//!
//! The context is a JSON object; each value becomes a Cedar value:
//!
//! | JSON                                  | Cedar                                                   |
//! |---------------------------------------|---------------------------------------------------------|
//! | string                                | `String`                                                |
//! | `true` / `false`                      | `Bool`                                                  |
//! | integer (fits in 64-bit signed)       | `Long`                                                  |
//! | any other number (`0.75`, `2.0`, `1e3`) | `decimal`, rounded down to 4 fractional digits        |
//! | array                                 | `Set` (duplicates collapse, order is lost)              |
//! | object                                | record                                                  |
//! | `null`                                | the attribute is left out (`context has x` is false)    |
//!
//! Cedar decimals have exactly 4 fractional digits and range over
//! ±922337203685477.5807. A number outside that range, `NaN`, an infinity or an
//! integer beyond 64 bits cannot be represented: the request is then **denied**
//! with an error naming the attribute. Nesting deeper than
//! [`MAX_CONTEXT_DEPTH`] or more than [`MAX_CONTEXT_VALUES`] values are denied
//! the same way.
//!
//! Decimals are compared with methods, not operators:
//! `context.curvature.greaterThan(decimal("0.5"))`, `.lessThan(..)`,
//! `.lessThanOrEqual(..)`, `.greaterThanOrEqual(..)`. (`<` on a decimal is a
//! type error in Cedar, which denies.) A parameter given as a whole number
//! (`3`) is a `Long`, and one given as `3.0` is a `decimal`; when a schema
//! declares the attribute as `decimal`, whole numbers are converted to decimals
//! too, so producers need not care.
//!
//! # Schemas
//!
//! Without a schema, policies are only parsed. With a schema (Cedar's
//! human-readable syntax; [`DEFAULT_SCHEMA`] is a starting point), every
//! policy is also validated strictly when loaded, and each request and its
//! entities are checked against it. The schema must declare the entity types
//! `Hsync::User`, `Hsync::Operator` (member of `Hsync::Capability`, with
//! `capabilities: Set<String>`) and `Hsync::Capability`, and the actions
//! `pre` and `post`. Context attributes the schema does not declare for the
//! action are dropped before evaluation: a validated policy cannot read them
//! anyway, and this way a step with an extra parameter is not denied merely
//! for having it. A declared attribute that is missing (when required) or of
//! the wrong JSON kind denies the step with an error naming it.
//!
//! # Limits
//!
//! A policy text may hold [`MAX_POLICY_BYTES`] (16 KiB) and nest brackets
//! [`MAX_POLICY_NESTING`] levels deep; larger ones are rejected when loaded.
//!
//! # Decisions
//!
//! Cedar's rules apply: a `forbid` that matches wins over any `permit`, and
//! when no `permit` matches the step is denied. On top of that, evaluation
//! **fails closed**: if any policy raises an error (say it reads
//! `context.dimension` on a step without that parameter — guard with
//! `context has dimension`), the step is denied and the error is reported.
//! When no policy is stored at all, [`PolicyEngine::permit_all`] allows
//! everything. An engine built with [`PolicyEngine::new`] from an empty list
//! denies everything, as Cedar does.
//!
//! [`Decision::policies`] names the policies that decided: the matching
//! `permit`s for an allow, the matching `forbid`s (and erring policies) for a
//! deny, or `default:deny` when nothing matched and `default:no-policies` for
//! the permit-all engine. With [`EngineOptions::fail_fast`] (the default) a
//! deny names the first matching `forbid` or erring policy found, since
//! evaluation stops there; without it, all of them.
//!
//! # Evaluation
//!
//! Each policy is evaluated on its own and the outcomes are combined by the
//! rules above (this is what Cedar does for a set; doing it per policy lets
//! outcomes be cached and work be cut short):
//!
//! * **Lazy parsing** ([`PolicyEngine::lazy`]): a policy is parsed and
//!   validated the first time a request needs it. Policies whose scope names
//!   one principal (`principal == Hsync::User::"x"`) are indexed by it and
//!   are not even parsed for other principals' requests.
//! * **Forbids first, fail-fast**: forbids are evaluated before permits, and
//!   the first forbid that matches (or policy that errs) stops the rest.
//! * **Parallel**: from [`EngineOptions::parallel_min`] policies on, on the
//!   rayon pool.
//! * **Decision cache** ([`DecisionCache`], through
//!   [`PolicyEngine::evaluate_cached`]): each policy's outcome is kept under
//!   (policy key, state hash). The policy key hashes the id, the text and the
//!   schema, so a new version never sees an old version's outcomes; the state
//!   hash covers the principal, stage, operator, capabilities and only the
//!   context attributes the policy mentions.
//!
//! # Example
//!
//! ```
//! use hsync_policy::{EvalInput, PolicyEngine, Stage};
//!
//! let engine = PolicyEngine::new(
//!     [(
//!         "small-embeddings".to_string(),
//!         r#"permit(principal, action == Hsync::Action::"pre", resource in Hsync::Capability::"embedding")
//!            when { context has dimension && context.dimension < 64 };"#
//!             .to_string(),
//!     )],
//!     None,
//! )
//! .unwrap();
//!
//! let context = serde_json::json!({ "job_id": "j1", "node_id": "n1", "dimension": 32 });
//! let decision = engine.evaluate(&EvalInput {
//!     principal: "alice",
//!     stage: Stage::Pre,
//!     operator: "embed",
//!     capabilities: &["embedding".to_string()],
//!     context: context.as_object().unwrap(),
//! });
//! assert!(decision.allowed);
//! assert_eq!(decision.policies, ["small-embeddings"]);
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use cedar_policy::{
    EntityTypeName, Policy, PolicyId, PolicySet, RestrictedExpression, Schema, SchemaFragment,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

mod cache;
mod engine;

pub use cache::{CacheStats, DecisionCache, Outcome, PolicyKey, StateHash};
pub use engine::{EngineOptions, PolicyEngine};

/// A Cedar schema (human-readable syntax) for the mapping described in the
/// crate documentation.
///
/// `job_id` and `node_id` are always present in a step's context. The other
/// context attributes are optional examples — a deployment adds its operators'
/// parameters here, and policies must test them with `has` before use
/// (`context has dimension && context.dimension < 64`).
pub const DEFAULT_SCHEMA: &str = include_str!("default_schema.cedarschema");

/// Largest accepted policy text, in bytes. Real policies are a few hundred
/// bytes. The cap bounds parse time, and also AST depth: a bracket-free chain
/// such as `context.a.a.a…` nests one level per 2 bytes, and Cedar builds and
/// drops the AST recursively — about 32 000 levels overflow a 2 MiB thread
/// stack, so 16 KiB (≤ 8 000 levels) keeps a 4× margin.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;

/// Deepest accepted bracket nesting (`(`, `[`, `{`) in a policy text. Cedar
/// turns the parse tree into an AST recursively, so unbounded nesting could
/// exhaust the stack; no sensible policy comes close.
pub const MAX_POLICY_NESTING: usize = 32;

/// Deepest accepted nesting of arrays/objects in a context (the context object
/// itself is level 1). Conversion is recursive; the bound keeps it safe.
pub const MAX_CONTEXT_DEPTH: usize = 32;

/// Most JSON values (of any kind, nested ones included) accepted in a context.
pub const MAX_CONTEXT_VALUES: usize = 100_000;

/// Name in [`Decision::policies`] when the permit-all engine decided.
pub const DEFAULT_NO_POLICIES: &str = "default:no-policies";
/// Name in [`Decision::policies`] when no policy matched (Cedar's default deny).
pub const DEFAULT_DENY: &str = "default:deny";

const NAMESPACE: &str = "Hsync";
const USER_TYPE: &str = "Hsync::User";
const OPERATOR_TYPE: &str = "Hsync::Operator";
const CAPABILITY_TYPE: &str = "Hsync::Capability";
const CAPABILITIES_ATTR: &str = "capabilities";
/// Pseudo policy id for errors that are not any policy's fault (bad context).
const REQUEST_ERROR_ID: &str = "request";

/// When a step is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Before the operator runs: `Hsync::Action::"pre"`.
    Pre,
    /// After the operator ran, with its output summary: `Hsync::Action::"post"`.
    Post,
}

impl Stage {
    /// The Cedar action id (`"pre"` or `"post"`).
    pub fn action_id(self) -> &'static str {
        match self {
            Stage::Pre => "pre",
            Stage::Post => "post",
        }
    }

    fn index(self) -> usize {
        match self {
            Stage::Pre => 0,
            Stage::Post => 1,
        }
    }
}

/// One question: may `principal` do `stage` on `operator` in this `context`?
#[derive(Clone, Copy, Debug)]
pub struct EvalInput<'a> {
    /// The job's submitter: `Hsync::User::"<principal>"`.
    pub principal: &'a str,
    /// `Hsync::Action::"pre"` or `Hsync::Action::"post"`.
    pub stage: Stage,
    /// The operator id: `Hsync::Operator::"<operator>"`.
    pub operator: &'a str,
    /// The operator's capabilities: its parents `Hsync::Capability::"<cap>"`
    /// and its `capabilities` attribute.
    pub capabilities: &'a [String],
    /// Step state: `job_id`, `node_id`, numeric parameters, and for `post` an
    /// output summary. Converted as described in the crate documentation.
    pub context: &'a Map<String, Value>,
}

/// The answer to one [`EvalInput`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the determining policies, sorted; or [`DEFAULT_NO_POLICIES`] /
    /// [`DEFAULT_DENY`] when no stored policy decided.
    pub policies: Vec<String>,
    /// `"<policy id>: <message>"` for each evaluation error (any error denies).
    /// Problems with the request itself (e.g. an unrepresentable context
    /// value) are reported as `"request: <message>"`.
    pub errors: Vec<String>,
    /// Every policy's outcome came from the decision cache.
    #[serde(default)]
    pub cached: bool,
}

/// Why a policy, policy set or schema was rejected. The `Display` output
/// carries Cedar's diagnostics (message, `line:column`, help).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not valid Cedar.
    #[error("policy `{id}` does not parse: {}", .diagnostics.join("; "))]
    Parse {
        id: String,
        diagnostics: Vec<String>,
    },
    /// The text parses but is not exactly one static policy (several
    /// policies, none, or a template with `?principal`/`?resource` slots).
    #[error("policy `{id}` must contain exactly one static policy: {reason}")]
    NotSinglePolicy { id: String, reason: String },
    /// The text is too large or too deeply nested to be parsed safely.
    #[error("policy `{id}` rejected: {reason}")]
    TooComplex { id: String, reason: String },
    /// Strict validation against the schema failed.
    #[error("policy `{id}` fails validation against the schema: {}", .diagnostics.join("; "))]
    Validation {
        id: String,
        diagnostics: Vec<String>,
    },
    /// Two policies share an id.
    #[error("duplicate policy id `{id}`")]
    DuplicateId { id: String },
    /// The schema does not parse or lacks what the mapping needs.
    #[error("invalid Cedar schema: {}", .diagnostics.join("; "))]
    Schema { diagnostics: Vec<String> },
}

impl PolicyError {
    /// The id of the offending policy, if a single policy is at fault.
    pub fn policy_id(&self) -> Option<&str> {
        match self {
            PolicyError::Parse { id, .. }
            | PolicyError::NotSinglePolicy { id, .. }
            | PolicyError::TooComplex { id, .. }
            | PolicyError::Validation { id, .. }
            | PolicyError::DuplicateId { id } => Some(id),
            PolicyError::Schema { .. } => None,
        }
    }
}

/// Top-level context attributes a schema declares for one action.
#[derive(Clone, Debug, Default)]
struct ContextShape {
    attrs: HashMap<String, AttrShape>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AttrShape {
    ty: DeclaredType,
    required: bool,
}

/// The declared type of a context attribute, as far as the JSON side is
/// checked here (Cedar checks the rest, with a less specific message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeclaredType {
    Long,
    String,
    Bool,
    Decimal,
    Other,
}

impl DeclaredType {
    fn of(ty: &Value) -> Self {
        let name = match ty.get("type").and_then(Value::as_str) {
            Some("Extension" | "EntityOrCommon") => ty.get("name").and_then(Value::as_str),
            other => other,
        };
        match name {
            Some("Long" | "__cedar::Long") => Self::Long,
            Some("String" | "__cedar::String") => Self::String,
            Some("Boolean" | "Bool" | "__cedar::Bool") => Self::Bool,
            Some("decimal" | "__cedar::decimal") => Self::Decimal,
            _ => Self::Other,
        }
    }

    /// Whether a (non-null) JSON value can become this type.
    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::Long => is_integer(value),
            Self::String => value.is_string(),
            Self::Bool => value.is_boolean(),
            Self::Decimal => value.is_number(),
            Self::Other => true,
        }
    }
}


/// Parses `text` as one static policy with id `id`; with a `schema` (Cedar
/// human-readable syntax) also validates it strictly.
pub fn validate_policy(id: &str, text: &str, schema: Option<&str>) -> Result<(), PolicyError> {
    // The same parse and validation a running engine applies to a changed policy.
    let schema = schema.map(engine::load_schema_info).transpose()?;
    engine::compile(id, text, schema.as_ref()).map(drop)
}

fn type_name(name: &str) -> EntityTypeName {
    // Only called with the constant names above, which are valid.
    EntityTypeName::from_str(name).expect("constant entity type name is valid")
}

/// Rejects texts that are too large or nested too deeply before Cedar sees
/// them, then parses exactly one static policy.
fn parse_single(id: &str, text: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooComplex {
            id: id.to_string(),
            reason: format!(
                "text is {} bytes, more than the limit of {MAX_POLICY_BYTES}",
                text.len()
            ),
        });
    }
    if let Some(depth) = nesting_exceeds(text, MAX_POLICY_NESTING) {
        return Err(PolicyError::TooComplex {
            id: id.to_string(),
            reason: format!(
                "brackets nest deeper than {MAX_POLICY_NESTING} levels (at byte {depth})"
            ),
        });
    }
    match Policy::parse(Some(PolicyId::new(id)), text) {
        Ok(policy) => Ok(policy),
        Err(errors) => {
            // Cedar's message for a text holding two policies or a template is
            // an unexpected-token or "expected a static policy" error; check
            // the usual mistakes to say what is actually wrong.
            if let Ok(set) = PolicySet::from_str(text) {
                let statics = set.policies().count();
                let templates = set.templates().count();
                let reason = if templates > 0 {
                    Some(
                        "found a template (a policy with `?principal`/`?resource` slots); \
                         templates are not supported"
                            .to_string(),
                    )
                } else if statics != 1 {
                    Some(format!(
                        "found {statics} policies; store each under its own id"
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(PolicyError::NotSinglePolicy {
                        id: id.to_string(),
                        reason,
                    });
                }
            }
            Err(PolicyError::Parse {
                id: id.to_string(),
                diagnostics: errors.iter().map(|e| render(e, Some(text))).collect(),
            })
        }
    }
}

/// Returns the byte offset where bracket nesting first exceeds `max`, ignoring
/// brackets inside string literals and `//` comments.
fn nesting_exceeds(text: &str, max: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string literal, honouring backslash escapes.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses a human-readable Cedar schema and checks it declares what the
/// request mapping uses, so a wrong schema fails at load time rather than
/// denying every step. Returns the schema and its source.
fn load_schema(src: &str) -> Result<(Schema, String), PolicyError> {
    let schema = match Schema::from_cedarschema_str(src) {
        Ok((schema, warnings)) => {
            for w in warnings {
                warn!(warning = %w, "Cedar schema warning");
            }
            schema
        }
        Err(e) => {
            return Err(PolicyError::Schema {
                diagnostics: vec![render(&e, Some(src))],
            })
        }
    };
    let mut missing = Vec::new();
    let types: HashSet<String> = schema.entity_types().map(ToString::to_string).collect();
    for t in [USER_TYPE, OPERATOR_TYPE, CAPABILITY_TYPE] {
        if !types.contains(t) {
            missing.push(format!("entity type `{t}` is not declared"));
        }
    }
    let actions: HashSet<String> = schema.actions().map(ToString::to_string).collect();
    for stage in [Stage::Pre, Stage::Post] {
        let uid = format!("{NAMESPACE}::Action::\"{}\"", stage.action_id());
        if !actions.contains(&uid) {
            missing.push(format!("action `{uid}` is not declared"));
        }
    }
    if !missing.is_empty() {
        return Err(PolicyError::Schema {
            diagnostics: missing,
        });
    }
    Ok((schema, src.to_string()))
}

/// Renders a Cedar diagnostic as one line: message, `line:column` of its first
/// label when the source is known, and help.
fn render(diag: &(impl Diagnostic + ?Sized), src: Option<&str>) -> String {
    let mut out = diag.to_string();
    if let (Some(src), Some(mut labels)) = (src, diag.labels()) {
        if let Some(label) = labels.next() {
            let offset = label.offset().min(src.len());
            let before = src.get(..offset).unwrap_or(src);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
            let _ = write!(out, " (at {line}:{column})");
        }
    }
    // Cedar often wraps the specific cause; add it unless already shown.
    let mut source = diag.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    if let Some(help) = diag.help() {
        let _ = write!(out, " (help: {help})");
    }
    // Some Cedar messages quote the whole context or policy; decisions travel
    // in messages and logs, so keep each error readable and bounded.
    if out.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Longest rendered diagnostic, in bytes, before it is cut.
const MAX_ERROR_BYTES: usize = 1024;

/// Reads the context attributes the schema declares for `stage`'s action,
/// from the schema's JSON form (the `Schema` API does not expose them).
/// Returns `None` when the shape cannot be read, leaving the context whole.
fn context_shape(src: &str, stage: Stage) -> Option<ContextShape> {
    let (fragment, _) = SchemaFragment::from_cedarschema_str(src).ok()?;
    let json = fragment.to_json_value().ok()?;
    let ns = json.get(NAMESPACE)?;
    let context = ns
        .get("actions")?
        .get(stage.action_id())?
        .get("appliesTo")?
        .get("context");
    let Some(context) = context else {
        // No context declared: it must be an empty record.
        return Some(ContextShape::default());
    };
    let record = resolve_common(ns, context)?;
    if record.get("type")?.as_str()? != "Record" {
        return None;
    }
    let attrs = record
        .get("attributes")?
        .as_object()?
        .iter()
        .map(|(name, ty)| {
            // Optional attributes carry `"required": false`; absent means required.
            let required = ty.get("required").and_then(Value::as_bool).unwrap_or(true);
            let ty = DeclaredType::of(resolve_common(ns, ty).unwrap_or(ty));
            (name.clone(), AttrShape { ty, required })
        })
        .collect();
    Some(ContextShape { attrs })
}

/// Follows a reference to a common type declared in namespace `ns`.
fn resolve_common<'a>(ns: &'a Value, ty: &'a Value) -> Option<&'a Value> {
    let name = match ty.get("type")?.as_str()? {
        "EntityOrCommon" => ty.get("name")?.as_str()?,
        "Record" | "Set" | "Entity" | "Extension" | "String" | "Long" | "Boolean" => {
            return Some(ty)
        }
        other => other,
    };
    let name = name.strip_prefix("Hsync::").unwrap_or(name);
    match ns.get("commonTypes").and_then(|c| c.get(name)) {
        Some(common) => Some(common),
        // Not a common type (e.g. an extension type named directly): as is.
        None => Some(ty),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_integer(value: &Value) -> bool {
    matches!(value, Value::Number(n) if n.is_i64() || n.is_u64())
}

/// A context value that cannot be represented in Cedar, with its path.
#[derive(Debug)]
struct ContextError {
    /// Innermost segment last once built; stored reversed while unwinding.
    path: Vec<String>,
    message: String,
}

impl ContextError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, segment: &str) -> Self {
        self.path.push(segment.to_string());
        self
    }
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("context")?;
        for segment in self.path.iter().rev() {
            write!(f, ".{segment}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Converts one JSON value (at nesting `depth`, the context object being 1).
/// `Ok(None)` means "leave out" (JSON `null`).
fn to_cedar(
    value: &Value,
    depth: usize,
    budget: &mut usize,
) -> Result<Option<RestrictedExpression>, ContextError> {
    if *budget == 0 {
        return Err(ContextError::new(format!(
            "more than {MAX_CONTEXT_VALUES} values in the context"
        )));
    }
    *budget -= 1;
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                RestrictedExpression::new_long(i)
            } else if n.is_u64() {
                return Err(ContextError::new(format!(
                    "integer {n} does not fit in a Cedar Long (64-bit signed)"
                )));
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                RestrictedExpression::new_decimal(f64_to_decimal(f).map_err(ContextError::new)?)
            }
        }
        Value::Array(_) | Value::Object(_) if depth > MAX_CONTEXT_DEPTH => {
            return Err(ContextError::new(format!(
                "nested more than {MAX_CONTEXT_DEPTH} levels deep"
            )));
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(e) =
                    to_cedar(item, depth + 1, budget).map_err(|e| e.at(&format!("[{i}]")))?
                {
                    out.push(e);
                }
            }
            RestrictedExpression::new_set(out)
        }
        Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                if let Some(e) = to_cedar(v, depth + 1, budget).map_err(|e| e.at(k))? {
                    out.push((k.clone(), e));
                }
            }
            // Keys of a JSON object are unique, so this cannot fail; report
            // rather than panic all the same.
            RestrictedExpression::new_record(out).map_err(|e| ContextError::new(e.to_string()))?
        }
    }))
}

/// Largest magnitude (in units of 10^-4) a Cedar decimal holds: 2^63.
const DECIMAL_SCALE: f64 = 10_000.0;
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Formats `x` as a Cedar decimal literal, rounded down (towards −∞) to 4 fractional
/// digits. Rounding down keeps `x < t` and `x >= t` exact for every threshold `t` a
/// policy can write (4 digits): a norm of 0.99996 stays below `1.0`, where rounding to
/// nearest would have made it `1.0000` and refused a point inside the ball.
fn f64_to_decimal(x: f64) -> Result<String, String> {
    if !x.is_finite() {
        return Err(format!("{x} is not a finite number"));
    }
    let scaled = (x * DECIMAL_SCALE).floor();
    // i64 covers [-2^63, 2^63); both bounds are exact in f64.
    if !(-TWO_POW_63..TWO_POW_63).contains(&scaled) {
        return Err(format!(
            "{x} is outside the range of a Cedar decimal (±922337203685477.5807)"
        ));
    }
    // In range by the check above, so the cast is exact.
    let units = scaled as i64;
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    Ok(format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000))
}

#[cfg(test)]
mod tests;
