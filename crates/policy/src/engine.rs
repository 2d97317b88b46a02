//! The policy engine: policies parsed on first use, evaluated one by one (forbids first,
//! on the rayon pool when there are many), stopping at the first deny, each outcome
//! cached by what the policy reads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use rayon::prelude::*;
use ring::digest;
use serde_json::Value;
use tracing::{debug, warn};

use crate::cache::{DecisionCache, Outcome, PolicyKey, StateHash};
use crate::{
    context_shape, is_integer, json_kind, load_schema, parse_single, render, to_cedar, type_name, ContextShape, Decision, DeclaredType, EvalInput, PolicyError, Stage, CAPABILITIES_ATTR, CAPABILITY_TYPE,
    DEFAULT_DENY, DEFAULT_NO_POLICIES, MAX_CONTEXT_VALUES, NAMESPACE, OPERATOR_TYPE, REQUEST_ERROR_ID, USER_TYPE,
};

/// How an engine evaluates. The defaults suit the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Stop at the first policy that denies (a matching `forbid` or an error): the
    /// decision is then known. Off, every policy is evaluated and every deciding policy
    /// is named.
    pub fail_fast: bool,
    /// Evaluate on the rayon pool when a request has at least this many policies;
    /// below it the pool's hand-off costs more than it saves.
    pub parallel_min: usize,
    /// With no policy stored, allow every step (naming [`DEFAULT_NO_POLICIES`]) instead
    /// of Cedar's default deny: a fresh deployment works before anyone writes a policy.
    pub permit_when_empty: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            fail_fast: true,
            parallel_min: 64,
            permit_when_empty: false,
        }
    }
}

/// Evaluates steps against a set of policies (validated against the schema, if any).
///
/// Immutable and `Send + Sync`: a change builds a new engine ([`PolicyEngine::with_policy`],
/// [`PolicyEngine::without_policy`]) that shares the unchanged policies, parsed or not.
pub struct PolicyEngine {
    mode: Mode,
}

enum Mode {
    PermitAll,
    /// Fail closed: every step is denied with this reason.
    DenyAll(String),
    Loaded(Box<Loaded>),
}

pub(crate) struct SchemaInfo {
    schema: Schema,
    validator: Validator,
    /// Declared context attributes for `pre` and `post` (by [`Stage::index`]); `None`
    /// when the context type could not be read, in which case the context passes whole.
    shapes: [Option<ContextShape>; 2],
    hash: [u8; 32],
}

struct Loaded {
    schema: Option<Arc<SchemaInfo>>,
    policies: Vec<Arc<LazyPolicy>>,
    /// Indices of the policies scoped to one principal, by principal; a request needs
    /// only its principal's and the unscoped ones (the others cannot match it).
    scoped: HashMap<String, Vec<usize>>,
    unscoped: Vec<usize>,
    options: EngineOptions,
    authorizer: Authorizer,
    user_type: EntityTypeName,
    operator_type: EntityTypeName,
    capability_type: EntityTypeName,
    actions: [EntityUid; 2],
}

/// A stored policy, parsed (and validated) the first time a request needs it.
struct LazyPolicy {
    id: String,
    text: String,
    key: PolicyKey,
    /// The one principal the policy applies to, when its scope says so.
    principal: Option<String>,
    compiled: OnceLock<Result<Compiled, PolicyError>>,
}

pub(crate) struct Compiled {
    /// A set of this one policy: Cedar evaluates sets.
    set: PolicySet,
    forbid: bool,
    reads: Reads,
}

/// The context attributes a policy's conditions mention.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Reads {
    /// Sorted, deduplicated top-level attribute names.
    Attrs(Vec<String>),
    /// The policy uses `context` as a whole value: every attribute counts.
    Whole,
}

impl LazyPolicy {
    fn new(id: String, text: String, schema: Option<&SchemaInfo>) -> Self {
        let key = policy_key(&id, &text, schema);
        LazyPolicy {
            principal: principal_scope(&text),
            id,
            text,
            key,
            compiled: OnceLock::new(),
        }
    }

    fn compiled(&self, schema: Option<&SchemaInfo>) -> Result<&Compiled, &PolicyError> {
        self.compiled.get_or_init(|| compile(&self.id, &self.text, schema)).as_ref()
    }
}

fn policy_key(id: &str, text: &str, schema: Option<&SchemaInfo>) -> PolicyKey {
    let mut h = digest::Context::new(&digest::SHA256);
    h.update(&schema.map_or([0; 32], |s| s.hash));
    h.update(&(id.len() as u64).to_le_bytes());
    h.update(id.as_bytes());
    h.update(text.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&h.finish().as_ref()[..16]);
    key
}

pub(crate) fn compile(id: &str, text: &str, schema: Option<&SchemaInfo>) -> Result<Compiled, PolicyError> {
    let policy = parse_single(id, text)?;
    let forbid = policy.effect() == Effect::Forbid;
    let reads = context_reads(text);
    let mut set = PolicySet::new();
    set.add(policy).map_err(|_| PolicyError::DuplicateId { id: id.to_string() })?;
    if let Some(s) = schema {
        validate_set_with(&s.validator, &set, id)?;
    }
    Ok(Compiled { set, forbid, reads })
}

fn validate_set_with(validator: &Validator, set: &PolicySet, id: &str) -> Result<(), PolicyError> {
    let result = validator.validate(set, ValidationMode::Strict);
    if result.validation_passed() {
        for w in result.validation_warnings() {
            warn!(policy = %w.policy_id(), warning = %w, "Cedar validation warning");
        }
        return Ok(());
    }
    let text = set.policies().next().map(ToString::to_string);
    Err(PolicyError::Validation {
        id: id.to_string(),
        diagnostics: result.validation_errors().map(|e| render(e, text.as_deref())).collect(),
    })
}

/// The attributes a (parsed, so well-formed) policy text reads from `context`:
/// `context.x`, `context["x"]`, `context has x`. Any other use of `context` (compared
/// whole, put in a record, …) reads everything. Scanned from the tokens, not from
/// Cedar's JSON form: converting a policy that is a long operator chain to JSON
/// recurses once per operator and overflows the stack.
fn context_reads(text: &str) -> Reads {
    let tokens = tokens(text);
    let mut attrs = BTreeSet::new();
    for (i, t) in tokens.iter().enumerate() {
        if *t != Token::Ident("context") {
            continue;
        }
        // `x.context` and `Ns::context` are not the variable; rare enough that counting
        // them as reading everything (fewer hits, never a wrong one) is the safe answer.
        if matches!(i.checked_sub(1).map(|p| &tokens[p]), Some(Token::Punct('.')) | Some(Token::Punct(':'))) {
            return Reads::Whole;
        }
        match (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3)) {
            (Some(Token::Punct('.')), Some(Token::Ident(a)), _) => {
                attrs.insert(a.to_string());
            }
            (Some(Token::Punct('[')), Some(Token::Str(a)), Some(Token::Punct(']'))) => {
                attrs.insert(a.to_string());
            }
            (Some(Token::Ident("has")), Some(Token::Ident(a) | Token::Str(a)), _) => {
                attrs.insert(a.to_string());
            }
            _ => return Reads::Whole,
        }
    }
    Reads::Attrs(attrs.into_iter().collect())
}

fn index_scoped(policies: &[Arc<LazyPolicy>]) -> HashMap<String, Vec<usize>> {
    let mut scoped: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in policies.iter().enumerate() {
        if let Some(principal) = &p.principal {
            scoped.entry(principal.clone()).or_default().push(i);
        }
    }
    scoped
}

fn index_unscoped(policies: &[Arc<LazyPolicy>]) -> Vec<usize> {
    (0..policies.len()).filter(|&i| policies[i].principal.is_none()).collect()
}

/// `Some(id)` when the text starts `permit|forbid(principal == Hsync::User::"id",`: such
/// a policy cannot match a request by any other principal, so it need not even be
/// parsed for one. Read from the tokens, before Cedar parses the text; anything else
/// (an annotation, `in`, an escape in the id) is not indexed and is evaluated for
/// every request. A text that is not valid Cedar is only asked about its principal's
/// steps (and reported by the warm-up).
fn principal_scope(text: &str) -> Option<String> {
    use Token::{Ident, Punct, Str};
    match tokens(text).as_slice() {
        [Ident("permit" | "forbid"), Punct('('), Ident("principal"), Punct('='), Punct('='), Ident("Hsync"), Punct(':'), Punct(':'), Ident("User"), Punct(':'), Punct(':'), Str(id), Punct(','), ..]
            if !id.contains('\\') =>
        {
            Some(id.to_string())
        }
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    /// A string literal's raw contents (escapes left as written).
    Str(&'a str),
    Punct(char),
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if b == b'"' {
            let start = i + 1;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push(Token::Str(text.get(start..i.min(bytes.len())).unwrap_or("")));
            i += 1;
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token::Ident(&text[start..i]));
        } else {
            // Multi-byte characters only occur inside strings and comments in valid Cedar.
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(Token::Punct(c));
            i += c.len_utf8();
        }
    }
    out
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::PermitAll => f.write_str("PolicyEngine(permit-all)"),
            Mode::DenyAll(reason) => write!(f, "PolicyEngine(deny-all: {reason})"),
            Mode::Loaded(l) => f
                .debug_struct("PolicyEngine")
                .field("policies", &l.policies.iter().map(|p| &p.id).collect::<Vec<_>>())
                .field("schema", &l.schema.is_some())
                .finish(),
        }
    }
}

pub(crate) fn load_schema_info(src: &str) -> Result<SchemaInfo, PolicyError> {
    let (schema, src) = load_schema(src)?;
    Ok(SchemaInfo {
        validator: Validator::new(schema.clone()),
        shapes: [context_shape(&src, Stage::Pre), context_shape(&src, Stage::Post)],
        hash: digest::digest(&digest::SHA256, src.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]),
        schema,
    })
}

impl PolicyEngine {
    /// The engine used when no policy is stored: every step is allowed, and the decision
    /// names [`DEFAULT_NO_POLICIES`].
    pub fn permit_all() -> Self {
        PolicyEngine { mode: Mode::PermitAll }
    }

    /// The fail-closed engine, for when the stored policies cannot be loaded (e.g. the
    /// schema does not parse): every step is denied, and the decision's errors say why.
    pub fn deny_all(reason: impl Into<String>) -> Self {
        PolicyEngine {
            mode: Mode::DenyAll(reason.into()),
        }
    }

    /// Parses every `(id, cedar text)` pair now; with a `schema` (Cedar human-readable
    /// syntax) also validates them strictly. Fails on the first bad policy (in the order
    /// given), naming it.
    pub fn new(
        policies: impl IntoIterator<Item = (String, String)>,
        schema: Option<&str>,
    ) -> Result<Self, PolicyError> {
        Self::new_with(policies, schema, EngineOptions::default())
    }

    /// [`PolicyEngine::new`] with options. Policies are parsed on the rayon pool.
    pub fn new_with(
        policies: impl IntoIterator<Item = (String, String)>,
        schema: Option<&str>,
        options: EngineOptions,
    ) -> Result<Self, PolicyError> {
        let engine = Self::lazy(policies, schema, options)?;
        if let Mode::Loaded(l) = &engine.mode {
            let schema = l.schema.as_deref();
            let first_error = l
                .policies
                .par_iter()
                .map(|p| p.compiled(schema).err().cloned())
                .collect::<Vec<_>>()
                .into_iter()
                .flatten()
                .next();
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(engine)
    }

    /// Takes the policies without parsing them: each is parsed and validated the first
    /// time a request needs it, so start-up stays fast however many are stored. A policy
    /// that turns out to be invalid then denies every step it is asked about, naming
    /// itself. Only the schema, and duplicate ids, are checked here.
    pub fn lazy(
        policies: impl IntoIterator<Item = (String, String)>,
        schema: Option<&str>,
        options: EngineOptions,
    ) -> Result<Self, PolicyError> {
        let schema = schema.map(load_schema_info).transpose()?.map(Arc::new);
        let mut seen = HashSet::new();
        let mut list = Vec::new();
        for (id, text) in policies {
            if !seen.insert(id.clone()) {
                return Err(PolicyError::DuplicateId { id });
            }
            list.push(Arc::new(LazyPolicy::new(id, text, schema.as_deref())));
        }
        let action = |stage: Stage| {
            EntityUid::from_type_name_and_id(
                type_name(&format!("{NAMESPACE}::Action")),
                EntityId::new(stage.action_id()),
            )
        };
        Ok(PolicyEngine {
            mode: Mode::Loaded(Box::new(Loaded {
                schema,
                scoped: index_scoped(&list),
                unscoped: index_unscoped(&list),
                policies: list,
                options,
                authorizer: Authorizer::new(),
                user_type: type_name(USER_TYPE),
                operator_type: type_name(OPERATOR_TYPE),
                capability_type: type_name(CAPABILITY_TYPE),
                actions: [action(Stage::Pre), action(Stage::Post)],
            })),
        })
    }

    /// A new engine with policy `id` added or replaced by `text`, which is parsed and
    /// validated now (a change must not replace a running policy with an invalid one).
    /// The other policies are shared, parsed or not. Only for a loaded engine.
    pub fn with_policy(&self, id: &str, text: &str) -> Result<Self, PolicyError> {
        let Mode::Loaded(l) = &self.mode else {
            return Err(PolicyError::Schema {
                diagnostics: vec!["the engine has no policy set to change".into()],
            });
        };
        let schema = l.schema.as_deref();
        let fresh = LazyPolicy::new(id.to_string(), text.to_string(), schema);
        if let Err(e) = fresh.compiled(schema) {
            return Err(e.clone());
        }
        let fresh = Arc::new(fresh);
        let mut policies = l.policies.clone();
        match policies.iter_mut().find(|p| p.id == id) {
            Some(slot) => *slot = fresh,
            None => policies.push(fresh),
        }
        Ok(PolicyEngine {
            mode: Mode::Loaded(Box::new(l.with_policies(policies))),
        })
    }

    /// A new engine without policy `id` (the same policies if it is absent).
    pub fn without_policy(&self, id: &str) -> Self {
        match &self.mode {
            Mode::Loaded(l) => PolicyEngine {
                mode: Mode::Loaded(Box::new(l.with_policies(l.policies.iter().filter(|p| p.id != id).cloned().collect()))),
            },
            Mode::PermitAll => Self::permit_all(),
            Mode::DenyAll(r) => Self::deny_all(r.clone()),
        }
    }

    /// The cache key of policy `id`'s current version.
    pub fn policy_key(&self, id: &str) -> Option<PolicyKey> {
        match &self.mode {
            Mode::Loaded(l) => l.policies.iter().find(|p| p.id == id).map(|p| p.key),
            _ => None,
        }
    }

    /// Ids of the policies, in the order given (empty for the permit-all and deny-all engines).
    pub fn policy_ids(&self) -> Vec<String> {
        match &self.mode {
            Mode::Loaded(l) => l.policies.iter().map(|p| p.id.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// How many policies have been parsed so far (the rest are parsed on first use).
    pub fn parsed_count(&self) -> usize {
        match &self.mode {
            Mode::Loaded(l) => l.policies.iter().filter(|p| p.compiled.get().is_some()).count(),
            _ => 0,
        }
    }

    /// Parses every policy not parsed yet, on the rayon pool, and returns the errors
    /// (by policy id): a warm-up after a lazy start, and a health check.
    pub fn parse_all(&self) -> Vec<PolicyError> {
        let Mode::Loaded(l) = &self.mode else {
            return Vec::new();
        };
        let schema = l.schema.as_deref();
        l.policies.par_iter().filter_map(|p| p.compiled(schema).err().cloned()).collect()
    }

    /// Decides one step. Never panics on hostile input; anything that cannot be
    /// evaluated cleanly is denied with an explanation in [`Decision::errors`].
    pub fn evaluate(&self, input: &EvalInput) -> Decision {
        self.evaluate_cached(input, None)
    }

    /// [`PolicyEngine::evaluate`], taking and storing each policy's outcome in `cache`.
    pub fn evaluate_cached(&self, input: &EvalInput, cache: Option<&DecisionCache>) -> Decision {
        let loaded = match &self.mode {
            Mode::DenyAll(reason) => {
                return Decision::deny_with(vec![DEFAULT_DENY.to_string()], vec![format!("policy set: {reason}")])
            }
            Mode::PermitAll => return Decision::allow_by(vec![DEFAULT_NO_POLICIES.to_string()]),
            Mode::Loaded(l) if l.policies.is_empty() && l.options.permit_when_empty => {
                return Decision::allow_by(vec![DEFAULT_NO_POLICIES.to_string()])
            }
            Mode::Loaded(l) => l,
        };
        let decision = loaded.evaluate(input, cache.filter(|c| c.enabled()));
        if decision.errors.is_empty() {
            debug!(
                principal = input.principal,
                operator = input.operator,
                stage = input.stage.action_id(),
                allowed = decision.allowed,
                policies = ?decision.policies,
                "policy decision"
            );
        } else {
            warn!(
                principal = input.principal,
                operator = input.operator,
                stage = input.stage.action_id(),
                errors = ?decision.errors,
                "policy evaluation failed; denying"
            );
        }
        decision
    }
}

impl Decision {
    fn allow_by(policies: Vec<String>) -> Self {
        Decision {
            allowed: true,
            policies,
            errors: Vec::new(),
            cached: false,
        }
    }

    fn deny_with(policies: Vec<String>, errors: Vec<String>) -> Self {
        Decision {
            allowed: false,
            policies,
            errors,
            cached: false,
        }
    }
}

/// The step, checked against the schema and converted for Cedar once; the Cedar
/// request itself is built only if some policy's outcome is not cached.
struct Prepared<'a> {
    /// The attributes the policies may see, sorted by name.
    attrs: Vec<(&'a str, &'a Value)>,
    pairs: Vec<(String, RestrictedExpression)>,
    /// `SHA-256` state of (principal, stage, operator, capabilities).
    base: digest::Context,
}

/// One policy's part in a decision.
struct Verdict {
    index: usize,
    outcome: Outcome,
    cached: bool,
}

impl Loaded {
    fn with_policies(&self, policies: Vec<Arc<LazyPolicy>>) -> Loaded {
        Loaded {
            schema: self.schema.clone(),
            scoped: index_scoped(&policies),
            unscoped: index_unscoped(&policies),
            policies,
            options: self.options,
            authorizer: Authorizer::new(),
            user_type: self.user_type.clone(),
            operator_type: self.operator_type.clone(),
            capability_type: self.capability_type.clone(),
            actions: self.actions.clone(),
        }
    }

    fn evaluate<'s>(&'s self, input: &EvalInput, cache: Option<&DecisionCache>) -> Decision {
        let request_error = |m: String| {
            Decision::deny_with(vec![DEFAULT_DENY.to_string()], vec![format!("{REQUEST_ERROR_ID}: {m}")])
        };
        let prepared = match self.prepare(input) {
            Ok(p) => p,
            Err(m) => return request_error(m),
        };
        let built: OnceLock<Result<(Request, Entities), String>> = OnceLock::new();
        let build = || built.get_or_init(|| self.build(input, &prepared)).as_ref();
        // Attributes the schema leaves untyped are only checked by Cedar when it builds
        // the request; build it first so a cached outcome cannot hide a bad request.
        if cache.is_some() && self.has_untyped_attrs(input, &prepared) {
            if let Err(m) = build() {
                return request_error(m.clone());
            }
        }

        // Forbids first: with fail-fast, a matching forbid settles the decision before
        // any permit is looked at. A policy that does not parse counts as an error.
        let schema = self.schema.as_deref();
        let candidates = self.candidates(input.principal);
        let (forbids, permits): (Vec<usize>, Vec<usize>) = candidates
            .into_iter()
            .partition(|&i| self.policies[i].compiled(schema).map_or(true, |c| c.forbid));
        let stop = AtomicBool::new(false);
        let eval = |index: usize, memo: &mut HashMap<&'s Reads, StateHash>| -> Option<Verdict> {
            if self.options.fail_fast && stop.load(Ordering::Relaxed) {
                return None;
            }
            let verdict = self.evaluate_policy(index, &prepared, cache, memo, &build);
            if matches!(verdict.outcome, Outcome::Forbid | Outcome::Error(_)) {
                stop.store(true, Ordering::Relaxed);
            }
            Some(verdict)
        };
        let run = |indices: &[usize]| -> Vec<Verdict> {
            if indices.len() >= self.options.parallel_min.max(2) {
                indices
                    .par_iter()
                    .with_min_len(8)
                    .map_init(HashMap::new, |memo, &i| eval(i, memo))
                    .flatten()
                    .collect()
            } else {
                let mut memo = HashMap::new();
                indices.iter().map_while(|&i| eval(i, &mut memo)).collect()
            }
        };
        let mut verdicts = run(&forbids);
        if !(self.options.fail_fast && stop.load(Ordering::Relaxed)) {
            verdicts.extend(run(&permits));
        }
        self.combine(verdicts)
    }

    /// The policies that can match a request by `principal`, in the order given.
    fn candidates(&self, principal: &str) -> Vec<usize> {
        match self.scoped.get(principal) {
            None => self.unscoped.clone(),
            Some(own) => {
                let mut all: Vec<usize> = self.unscoped.iter().chain(own).copied().collect();
                all.sort_unstable();
                all
            }
        }
    }

    fn combine(&self, verdicts: Vec<Verdict>) -> Decision {
        let cached = !verdicts.is_empty() && verdicts.iter().all(|v| v.cached);
        let mut errors = Vec::new();
        let mut erring = BTreeSet::new();
        let mut forbids = BTreeSet::new();
        let mut permits = BTreeSet::new();
        for v in &verdicts {
            let Some(id) = self.policies.get(v.index).map(|p| &p.id) else {
                // Not any policy's fault: the request could not be built.
                if let Outcome::Error(e) = &v.outcome {
                    errors.push(format!("{REQUEST_ERROR_ID}: {e}"));
                }
                continue;
            };
            match &v.outcome {
                Outcome::Error(e) => {
                    errors.push(format!("{id}: {e}"));
                    erring.insert(id.clone());
                }
                Outcome::Forbid => {
                    forbids.insert(id.clone());
                }
                Outcome::Permit => {
                    permits.insert(id.clone());
                }
                Outcome::NoMatch => {}
            }
        }
        let mut d = if !errors.is_empty() || !forbids.is_empty() {
            errors.sort();
            errors.dedup();
            // The permits that matched do not decide a deny; the erring policies and the
            // matching forbids do.
            let mut policies: Vec<String> = erring.union(&forbids).cloned().collect();
            if policies.is_empty() {
                policies.push(DEFAULT_DENY.to_string());
            }
            Decision::deny_with(policies, errors)
        } else if !permits.is_empty() {
            Decision::allow_by(permits.into_iter().collect())
        } else {
            Decision::deny_with(vec![DEFAULT_DENY.to_string()], Vec::new())
        };
        d.cached = cached;
        d
    }

    fn evaluate_policy<'s, 'b>(
        &'s self,
        index: usize,
        prepared: &Prepared,
        cache: Option<&DecisionCache>,
        memo: &mut HashMap<&'s Reads, StateHash>,
        build: &dyn Fn() -> Result<&'b (Request, Entities), &'b String>,
    ) -> Verdict {
        let policy = &self.policies[index];
        let verdict = |outcome, cached| Verdict { index, outcome, cached };
        let compiled = match policy.compiled(self.schema.as_deref()) {
            Ok(c) => c,
            Err(e) => return verdict(Outcome::Error(e.to_string().into()), false),
        };
        let state = cache.map(|_| *memo.entry(&compiled.reads).or_insert_with(|| {
            state_hash(prepared, &compiled.reads)
        }));
        if let (Some(cache), Some(state)) = (cache, &state) {
            if let Some(outcome) = cache.get(&policy.key, state) {
                return verdict(outcome, true);
            }
        }
        let (request, entities) = match build() {
            Ok(built) => built,
            // Not this policy's fault: reported as a request error.
            Err(m) => {
                return Verdict {
                    index: usize::MAX,
                    outcome: Outcome::Error(m.as_str().into()),
                    cached: false,
                }
            }
        };
        let response = self.authorizer.is_authorized(request, &compiled.set, entities);
        let mut errors = response.diagnostics().errors().map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(e) => render(e.inner(), None),
            #[allow(unreachable_patterns)]
            other => render(other, None),
        });
        let outcome = if let Some(first) = errors.next() {
            Outcome::Error(first.into())
        } else if response.decision() == CedarDecision::Allow {
            Outcome::Permit
        } else if response.diagnostics().reason().next().is_some() {
            Outcome::Forbid
        } else {
            Outcome::NoMatch
        };
        if let (Some(cache), Some(state)) = (cache, &state) {
            cache.put(&policy.key, state, outcome.clone());
        }
        verdict(outcome, false)
    }

    /// Filters the context to the attributes the schema declares for the stage, checks
    /// their kinds and the required ones, and converts them for Cedar.
    fn prepare<'a>(&self, input: &EvalInput<'a>) -> Result<Prepared<'a>, String> {
        let stage = input.stage.index();
        let shape = self.schema.as_ref().and_then(|s| s.shapes[stage].as_ref());
        let mut budget = MAX_CONTEXT_VALUES;
        let mut attrs = Vec::with_capacity(input.context.len());
        let mut pairs = Vec::with_capacity(input.context.len());
        for (key, value) in input.context {
            let declared = match shape {
                // Not declared for this action: no validated policy can read it.
                Some(shape) => match shape.attrs.get(key) {
                    Some(attr) => attr.ty,
                    None => continue,
                },
                None => DeclaredType::Other,
            };
            if !value.is_null() && !declared.accepts(value) {
                return Err(format!(
                    "context.{key}: the schema declares {declared:?}, got {}",
                    json_kind(value)
                ));
            }
            let converted = if declared == DeclaredType::Decimal && is_integer(value) {
                // The schema says decimal; accept producers that sent `3` for `3.0`.
                Some(RestrictedExpression::new_decimal(format!("{value}.0")))
            } else {
                to_cedar(value, 2, &mut budget).map_err(|e| e.at(key).to_string())?
            };
            if let Some(expr) = converted {
                pairs.push((key.clone(), expr));
                attrs.push((key.as_str(), value));
            }
        }
        if let Some(shape) = shape {
            // Cedar's own message for this names no attribute; say which.
            let mut missing: Vec<&str> = shape
                .attrs
                .iter()
                .filter(|(name, attr)| attr.required && input.context.get(*name).is_none_or(Value::is_null))
                .map(|(name, _)| name.as_str())
                .collect();
            if !missing.is_empty() {
                missing.sort_unstable();
                return Err(format!(
                    "context lacks attribute(s) the schema requires for `{}`: {}",
                    input.stage.action_id(),
                    missing.join(", ")
                ));
            }
        }
        attrs.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let mut base = digest::Context::new(&digest::SHA256);
        hash_str(&mut base, input.principal);
        hash_str(&mut base, input.stage.action_id());
        hash_str(&mut base, input.operator);
        let capabilities: BTreeSet<&str> = input.capabilities.iter().map(String::as_str).collect();
        base.update(&(capabilities.len() as u64).to_le_bytes());
        for c in capabilities {
            hash_str(&mut base, c);
        }
        Ok(Prepared { attrs, pairs, base })
    }

    fn has_untyped_attrs(&self, input: &EvalInput, prepared: &Prepared) -> bool {
        let Some(schema) = &self.schema else {
            return false;
        };
        match &schema.shapes[input.stage.index()] {
            Some(shape) => prepared
                .attrs
                .iter()
                .any(|(k, _)| shape.attrs.get(*k).is_none_or(|a| a.ty == DeclaredType::Other)),
            None => true,
        }
    }

    fn build(&self, input: &EvalInput, prepared: &Prepared) -> Result<(Request, Entities), String> {
        let context = Context::from_pairs(prepared.pairs.iter().cloned()).map_err(|e| render(&e, None))?;
        let principal = EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(input.principal));
        let resource = EntityUid::from_type_name_and_id(self.operator_type.clone(), EntityId::new(input.operator));
        let action = self.actions[input.stage.index()].clone();
        let schema = self.schema.as_ref().map(|s| &s.schema);
        let request = Request::new(principal.clone(), action, resource.clone(), context, schema)
            .map_err(|e| render(&e, None))?;

        let capabilities: BTreeSet<&str> = input.capabilities.iter().map(String::as_str).collect();
        let cap_uids: Vec<EntityUid> = capabilities
            .iter()
            .map(|c| EntityUid::from_type_name_and_id(self.capability_type.clone(), EntityId::new(c)))
            .collect();
        let operator = Entity::new(
            resource,
            HashMap::from([(
                CAPABILITIES_ATTR.to_string(),
                RestrictedExpression::new_set(
                    capabilities.iter().map(|c| RestrictedExpression::new_string((*c).to_string())),
                ),
            )]),
            cap_uids.iter().cloned().collect::<HashSet<_>>(),
        )
        .map_err(|e| render(&e, None))?;
        let entities = Entities::from_entities(
            std::iter::once(Entity::new_no_attrs(principal, HashSet::new()))
                .chain(std::iter::once(operator))
                .chain(cap_uids.into_iter().map(|uid| Entity::new_no_attrs(uid, HashSet::new()))),
            schema,
        )
        .map_err(|e| render(&e, None))?;
        Ok((request, entities))
    }
}

fn hash_str(h: &mut digest::Context, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// Hashes the attributes `reads` names (absent ones too: `context has x` reads absence).
fn state_hash(prepared: &Prepared, reads: &Reads) -> StateHash {
    let mut h = prepared.base.clone();
    match reads {
        Reads::Whole => {
            h.update(b"W");
            for (k, v) in &prepared.attrs {
                hash_str(&mut h, k);
                hash_json(&mut h, v);
            }
        }
        Reads::Attrs(names) => {
            h.update(b"A");
            for name in names {
                hash_str(&mut h, name);
                match prepared.attrs.binary_search_by(|(k, _)| (*k).cmp(name.as_str())) {
                    Ok(i) => hash_json(&mut h, prepared.attrs[i].1),
                    Err(_) => h.update(b"-"),
                }
            }
        }
    }
    let mut out = [0; 16];
    out.copy_from_slice(&h.finish().as_ref()[..16]);
    out
}

/// A canonical, unambiguous encoding of a JSON value (object keys sorted).
fn hash_json(h: &mut digest::Context, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.update(b"#");
            hash_str(h, &n.to_string());
        }
        Value::String(s) => {
            h.update(b"s");
            hash_str(h, s);
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update(&(items.len() as u64).to_le_bytes());
            for i in items {
                hash_json(h, i);
            }
        }
        Value::Object(m) => {
            h.update(b"{");
            h.update(&(m.len() as u64).to_le_bytes());
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            for k in keys {
                hash_str(h, k);
                hash_json(h, &m[k.as_str()]);
            }
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn reads(condition: &str) -> Reads {
        context_reads(&format!("permit(principal, action, resource) when {{ {condition} }};"))
    }

    fn attrs(names: &[&str]) -> Reads {
        Reads::Attrs(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn context_reads_finds_each_form_and_falls_back_to_whole() {
        assert_eq!(reads("context has k && context.k > 1"), attrs(&["k"]));
        assert_eq!(reads(r#"context["a b"] == 1 || context has "c" "#), attrs(&["a b", "c"]));
        assert_eq!(reads("context.params.curvature == 1 && context.z"), attrs(&["params", "z"]));
        assert_eq!(reads(r#"resource.capabilities.contains("context")"#), attrs(&[]));
        assert_eq!(reads("// context == {}\n true"), attrs(&[]));
        assert_eq!(reads(r#"context == {"a": 1}"#), Reads::Whole);
        assert_eq!(reads("if true then context else context"), Reads::Whole);
        assert_eq!(reads("principal.context"), Reads::Whole);
    }

    #[test]
    fn principal_scope_only_for_the_exact_form() {
        assert_eq!(principal_scope(r#"forbid (principal == Hsync::User::"bob" , action, resource);"#), Some("bob".into()));
        assert_eq!(principal_scope("permit(principal == Hsync::User::\"a\\\"b\", action, resource);"), None);
        assert_eq!(principal_scope(r#"@id("x") permit(principal == Hsync::User::"bob", action, resource);"#), None);
        assert_eq!(principal_scope(r#"permit(principal in Hsync::User::"bob", action, resource);"#), None);
        assert_eq!(principal_scope(r#"permit(principal, action, resource);"#), None);
        assert_eq!(principal_scope(r#"permit(principal == Other::User::"bob", action, resource);"#), None);
    }
}
