//! policy-evaluator: answers `policy.evaluate` with Cedar decisions, using the policies
//! stored in the policy bucket and following every change to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use hsync_bus::{serve, start_service, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_policy::{DecisionCache, EngineOptions, EvalInput, PolicyEngine, PolicyError};
use hsync_protocol::names::{services, POLICY_KEY_PREFIX, POLICY_SCHEMA_KEY};
use hsync_protocol::policy::{PolicyDecision, PolicyEvalReply, PolicyEvalRequest, PolicyQuery, Stage};
use hsync_protocol::{ErrorCode, ErrorReply, Value};
use rayon::prelude::*;

/// Most queries in one request.
pub const MAX_QUERIES: usize = 10_000;

/// How the evaluator evaluates; flags and environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct EvaluatorConfig {
    /// Decision cache entries (one per policy and step state); 0 turns the cache off.
    #[arg(long, env = "HSYNC_POLICY_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: usize,
    /// How long a cached decision is served, in milliseconds. A policy change never waits
    /// for this: a changed policy has a new cache key.
    #[arg(long, env = "HSYNC_POLICY_CACHE_TTL_MS", default_value_t = 60_000)]
    pub cache_ttl_ms: u64,
    /// Stop evaluating a step at the first policy that denies it.
    #[arg(long, env = "HSYNC_POLICY_FAIL_FAST", default_value_t = true, action = clap::ArgAction::Set)]
    pub fail_fast: bool,
    /// Evaluate a step's policies on the thread pool from this many policies on.
    #[arg(long, env = "HSYNC_POLICY_PARALLEL_MIN", default_value_t = 64)]
    pub parallel_min: usize,
    /// Parse each stored policy on first use (start-up does not parse them); false parses
    /// and validates them all before serving.
    #[arg(long, env = "HSYNC_POLICY_LAZY", default_value_t = true, action = clap::ArgAction::Set)]
    pub lazy: bool,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            cache_capacity: 100_000,
            cache_ttl_ms: 60_000,
            fail_fast: true,
            parallel_min: 64,
            lazy: true,
        }
    }
}

impl EvaluatorConfig {
    fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            fail_fast: self.fail_fast,
            parallel_min: self.parallel_min,
            // A fresh deployment with no policy stored allows every step.
            permit_when_empty: true,
        }
    }
}

/// Policy texts by id, and the schema.
type Texts = (BTreeMap<String, String>, Option<String>);

/// The stored policy texts, the engine built from them, and the decision cache.
///
/// Invariants: while the running set is valid, the texts are exactly what the engine was
/// built from (a change that does not build is rolled back here, so a later good change
/// is not blocked by an earlier bad one). When the stored schema is invalid (found at
/// start-up), the engine denies every step, saying why, until a change makes it valid;
/// a stored policy that is invalid denies every step it is asked about, naming itself:
/// fail closed, never open.
pub struct PolicyStore {
    config: EvaluatorConfig,
    texts: RwLock<Texts>,
    engine: RwLock<Arc<PolicyEngine>>,
    cache: DecisionCache,
    /// The initial replay of the bucket is in progress: changes are gathered, and the
    /// engine is built once at the end (not once per stored policy).
    loading: AtomicBool,
    /// The running engine was built from the stored texts (not the fail-closed one).
    built: AtomicBool,
    /// Stored policies found invalid (at warm-up); they deny every step until fixed.
    invalid: Mutex<BTreeSet<String>>,
    evaluations: AtomicU64,
    denials: AtomicU64,
    reloads: AtomicU64,
    rejected_changes: AtomicU64,
    /// The last rejected change: `{revision, key, error}` (revision 0 when not from the
    /// bucket), so a writer waiting for its revision learns it was rejected, and why.
    last_rejected: Mutex<serde_json::Value>,
    /// The last policy-bucket revision this replica has processed (accepted or
    /// rejected): a writer waits for every replica to reach its write's revision.
    applied_revision: AtomicU64,
}

impl Default for PolicyStore {
    fn default() -> Self {
        PolicyStore::new(EvaluatorConfig::default())
    }
}

/// Sets (or, with `None`, removes) the text a bucket key holds and returns what it held
/// before; `None` for a key that is neither the schema nor a policy.
fn set_text(texts: &mut Texts, key: &str, value: Option<String>) -> Option<Option<String>> {
    if key == POLICY_SCHEMA_KEY {
        Some(std::mem::replace(&mut texts.1, value))
    } else if let Some(id) = key.strip_prefix(POLICY_KEY_PREFIX) {
        Some(match value {
            Some(text) => texts.0.insert(id.to_string(), text),
            None => texts.0.remove(id),
        })
    } else {
        None
    }
}

impl PolicyStore {
    pub fn new(config: EvaluatorConfig) -> Self {
        PolicyStore {
            cache: DecisionCache::new(config.cache_capacity, Duration::from_millis(config.cache_ttl_ms)),
            config,
            texts: RwLock::new((BTreeMap::new(), None)),
            engine: RwLock::new(Arc::new(PolicyEngine::deny_all("the stored policies are not loaded yet"))),
            loading: AtomicBool::new(true),
            built: AtomicBool::new(false),
            invalid: Mutex::new(BTreeSet::new()),
            evaluations: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            rejected_changes: AtomicU64::new(0),
            last_rejected: Mutex::new(serde_json::Value::Null),
            applied_revision: AtomicU64::new(0),
        }
    }

    /// Parses and validates every stored policy now.
    fn build_eager(&self, texts: &Texts) -> Result<PolicyEngine, PolicyError> {
        PolicyEngine::new_with(texts.0.clone(), texts.1.as_deref(), self.config.engine_options())
    }

    /// Applies one bucket entry (`None` = deleted). After the initial load this changes
    /// the running engine; a change that does not validate is rejected and the running
    /// set stays.
    pub fn apply(&self, key: &str, value: Option<String>) {
        let mut t = self.texts.write().unwrap_or_else(|p| p.into_inner());
        let Some(previous) = set_text(&mut t, key, value.clone()) else {
            return;
        };
        if self.loading.load(Ordering::Acquire) {
            return;
        }
        let running = self.engine();
        let policy_id = key.strip_prefix(POLICY_KEY_PREFIX);
        let next = match policy_id {
            // A policy change on a running set: only the changed policy is parsed; the
            // others are shared with the running engine, parsed or not.
            Some(id) if self.built.load(Ordering::Acquire) => match &value {
                Some(text) => running.with_policy(id, text),
                None => Ok(running.without_policy(id)),
            },
            // The schema, or a change while failed closed: everything is checked again.
            _ => self.build_eager(&t),
        };
        match next {
            Ok(engine) => {
                match policy_id {
                    Some(id) => {
                        self.invalid.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                        if let Some(old) = running.policy_key(id) {
                            // Unreachable already (the new version has a new key); frees room.
                            self.cache.invalidate_policy(&old);
                        }
                    }
                    None => {
                        self.invalid.lock().unwrap_or_else(|p| p.into_inner()).clear();
                        self.cache.clear();
                    }
                }
                self.install(engine, &format!("a change to `{key}`"));
            }
            Err(e) if self.built.load(Ordering::Acquire) => {
                // Roll back: the texts must stay those of the running set.
                set_text(&mut t, key, previous);
                self.rejected_changes.fetch_add(1, Ordering::Relaxed);
                *self.last_rejected.lock().unwrap_or_else(|p| p.into_inner()) =
                    serde_json::json!({"revision": 0, "key": key, "error": e.to_string()});
                tracing::error!("policy change to `{key}` rejected; keeping the running set: {e}");
            }
            Err(e) => self.fail_closed(&e),
        }
    }

    /// Ends the initial load: takes everything stored at once. Lazily, only the schema
    /// is checked now and each policy is parsed when first needed (see [`Self::warm_up`]).
    pub fn finish_loading(&self) {
        let t = self.texts.write().unwrap_or_else(|p| p.into_inner());
        self.loading.store(false, Ordering::Release);
        let engine = if self.config.lazy {
            PolicyEngine::lazy(t.0.clone(), t.1.as_deref(), self.config.engine_options())
        } else {
            self.build_eager(&t)
        };
        match engine {
            Ok(engine) => self.install(engine, &format!("loading {} stored policies", t.0.len())),
            Err(e) => self.fail_closed(&e),
        }
    }

    /// Parses every policy not parsed yet and records the invalid ones (they deny every
    /// step they are asked about, naming themselves). Run in the background after start-up.
    pub fn warm_up(&self) {
        let errors = self.engine().parse_all();
        let mut invalid = self.invalid.lock().unwrap_or_else(|p| p.into_inner());
        for e in errors {
            tracing::error!("stored policy is invalid; steps it is asked about are denied until it is fixed: {e}");
            if let Some(id) = e.policy_id() {
                invalid.insert(id.to_string());
            }
        }
    }

    fn install(&self, engine: PolicyEngine, why: &str) {
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        self.built.store(true, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!("policy set loaded after {why}");
    }

    fn fail_closed(&self, e: &PolicyError) {
        let reason = format!("the stored policy set is invalid ({e}); every step is denied until it is fixed");
        tracing::error!("{reason}");
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(PolicyEngine::deny_all(reason));
        self.built.store(false, Ordering::Release);
        self.cache.clear();
    }

    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.engine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn evaluate(&self, q: &PolicyQuery) -> PolicyDecision {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let d = match context_json(&q.context) {
            Ok(context) => {
                let input = EvalInput {
                    principal: &q.principal,
                    stage: match q.stage {
                        Stage::Pre => hsync_policy::Stage::Pre,
                        Stage::Post => hsync_policy::Stage::Post,
                    },
                    operator: &q.operator,
                    capabilities: &q.capabilities,
                    context: &context,
                };
                self.engine().evaluate_cached(&input, Some(&self.cache))
            }
            Err(why) => hsync_policy::Decision {
                allowed: false,
                policies: vec![hsync_policy::DEFAULT_DENY.to_string()],
                errors: vec![format!("request: {why}")],
                cached: false,
            },
        };
        if !d.allowed {
            self.denials.fetch_add(1, Ordering::Relaxed);
        }
        PolicyDecision {
            allowed: d.allowed,
            policies: d.policies,
            errors: d.errors,
            cached: d.cached,
        }
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let policies = self.texts.read().unwrap_or_else(|p| p.into_inner()).0.len();
        let invalid: Vec<String> = self.invalid.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let built = self.built.load(Ordering::Relaxed);
        serde_json::json!({
            "policies": policies,
            "parsed_policies": self.engine().parsed_count(),
            "invalid_policies": invalid,
            "evaluations": self.evaluations.load(Ordering::Relaxed),
            "denials": self.denials.load(Ordering::Relaxed),
            "reloads": self.reloads.load(Ordering::Relaxed),
            "rejected_changes": self.rejected_changes.load(Ordering::Relaxed),
            "last_rejected": self.last_rejected.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "healthy": built && invalid.is_empty(),
            "applied_revision": self.applied_revision.load(Ordering::Acquire),
            "decision_cache": self.cache.stats(),
            "fail_fast": self.config.fail_fast,
        })
    }
}

/// The query's context as JSON for the engine. A float that is not finite has no JSON
/// (serde would turn it into `null`, which reads as "absent" and could let a guarded
/// policy pass), so it is refused: the step is denied naming the attribute.
fn context_json(context: &BTreeMap<String, Value>) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    fn non_finite(v: &Value, path: &mut String) -> bool {
        match v {
            Value::Float(x) => !x.is_finite(),
            Value::Tensor(t) => t.data().iter().any(|x| !x.is_finite()),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let bad = non_finite(item, path);
                if !bad {
                    path.truncate(len);
                }
                bad
            }),
            Value::Map(m) => m.iter().any(|(k, item)| {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                let bad = non_finite(item, path);
                if !bad {
                    path.truncate(len);
                }
                bad
            }),
            _ => false,
        }
    }
    for (k, v) in context {
        let mut path = format!("context.{k}");
        if non_finite(v, &mut path) {
            return Err(format!("{path}: a number that is not finite (NaN or infinity) cannot be evaluated"));
        }
    }
    match serde_json::to_value(context) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("the context is not a map".into()),
        Err(e) => Err(format!("the context cannot be converted: {e}")),
    }
}

/// Loads every stored policy before returning (so no request is answered by a partial
/// set), building the engine once, then follows changes in the background.
///
/// One watch does both: it first replays the latest entry of every key, then delivers
/// each change, so nothing written between loading and following is missed. If the watch
/// ends, it is resumed from the revision after the last one applied.
pub async fn load_and_follow(store: Arc<PolicyStore>, bucket: kv::Store) -> anyhow::Result<()> {
    // Fresh stream info (`kv::Store::status` returns what was cached when it was opened).
    let stored = bucket.stream.clone().info().await?.state.messages;
    let mut watch = bucket.watch_with_history(">").await?;
    let mut last_revision = 0;
    if stored > 0 {
        while let Some(entry) = watch.next().await {
            let e = entry?;
            last_revision = e.revision;
            apply_entry(&store, &e);
            if e.delta == 0 {
                break;
            }
        }
    }
    store.finish_loading();
    store.applied_revision.store(last_revision, Ordering::Release);
    // Parse the rest in the background: requests are served meanwhile, each parsing
    // what it needs first.
    let warm = store.clone();
    tokio::task::spawn_blocking(move || warm.warm_up());
    tokio::spawn(async move {
        loop {
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(e) => {
                        last_revision = last_revision.max(e.revision);
                        apply_entry(&store, &e);
                        store.applied_revision.fetch_max(e.revision, Ordering::AcqRel);
                    }
                    Err(e) => tracing::warn!("policy watch: {e}"),
                }
            }
            tracing::warn!("the policy watch ended; resuming after revision {last_revision}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            loop {
                match bucket.watch_all_from_revision(last_revision + 1).await {
                    Ok(w) => {
                        watch = w;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("cannot resume the policy watch: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        }
    });
    Ok(())
}

fn apply_entry(store: &PolicyStore, e: &kv::Entry) {
    let rejected_before = store.rejected_changes.load(Ordering::Relaxed);
    match e.operation {
        kv::Operation::Put => store.apply(&e.key, Some(String::from_utf8_lossy(&e.value).into_owned())),
        kv::Operation::Delete | kv::Operation::Purge => store.apply(&e.key, None),
    }
    if store.rejected_changes.load(Ordering::Relaxed) != rejected_before {
        let mut last = store.last_rejected.lock().unwrap_or_else(|p| p.into_inner());
        last["revision"] = e.revision.into();
    }
}

pub async fn run(bus: Arc<Bus>, store: Arc<PolicyStore>, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let stats = store.clone();
    let service = start_service(
        &bus,
        services::POLICY_EVALUATOR,
        "evaluates Cedar policies before and after every step",
        move |_| stats.stats_json(),
    )
    .await?;
    let endpoint = service
        .endpoint_builder()
        .name("evaluate")
        .add(bus.names().policy_evaluate())
        .await
        .map_err(|e| anyhow::anyhow!("cannot add endpoint: {e}"))?;
    serve(bus.clone(), endpoint, shutdown, ServeOptions::default(), move |req: Incoming<PolicyEvalRequest>| {
        let store = store.clone();
        async move {
            let queries = req.body.queries;
            if queries.len() > MAX_QUERIES {
                return Err(ErrorReply::new(
                    ErrorCode::PayloadTooLarge,
                    format!("{} queries in one request; the limit is {MAX_QUERIES}", queries.len()),
                ));
            }
            if let Some(q) = queries.first() {
                if let Some(hsync_protocol::Value::Str(job)) = q.context.get("job_id") {
                    tracing::Span::current().record("hsync.job_id", job.as_str());
                }
            }
            // Cedar evaluation is CPU work: keep it off the async threads.
            tokio::task::spawn_blocking(move || PolicyEvalReply {
                // A batch's queries are independent: the pool takes them in parallel.
                decisions: if queries.len() >= 4 {
                    queries.par_iter().map(|q| store.evaluate(q)).collect()
                } else {
                    queries.iter().map(|q| store.evaluate(q)).collect()
                },
            })
            .await
            .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("evaluation task: {e}")))
        }
    })
    .await;
    let _ = service.stop().await;
    Ok(())
}
