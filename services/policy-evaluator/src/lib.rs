//! policy-evaluator: answers `policy.evaluate` with Cedar decisions, using the policies
//! stored in the policy bucket and following every change to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv;
use futures::StreamExt;
use hsync_bus::{serve, start_service, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_policy::{EvalInput, PolicyEngine};
use hsync_protocol::names::{services, POLICY_KEY_PREFIX, POLICY_SCHEMA_KEY};
use hsync_protocol::policy::{PolicyDecision, PolicyEvalReply, PolicyEvalRequest, PolicyQuery, Stage};
use hsync_protocol::{ErrorCode, ErrorReply};

/// Most queries in one request.
pub const MAX_QUERIES: usize = 10_000;

/// Policy texts by id, and the schema.
type Texts = (BTreeMap<String, String>, Option<String>);

/// The stored policy texts and the engine built from them.
///
/// Invariants: while the running set is valid, the texts are exactly what the engine was
/// built from (a change that does not build is rolled back here, so a later good change
/// is not blocked by an earlier bad one). When the stored set itself is invalid (found at
/// start-up), the engine denies every step, saying why, until a change makes it valid:
/// fail closed, never open.
pub struct PolicyStore {
    texts: RwLock<Texts>,
    engine: RwLock<Arc<PolicyEngine>>,
    /// The initial replay of the bucket is in progress: changes are gathered, and the
    /// engine is built once at the end (not once per stored policy).
    loading: AtomicBool,
    /// The running engine was built from the stored texts (not the fail-closed one).
    healthy: AtomicBool,
    evaluations: AtomicU64,
    denials: AtomicU64,
    reloads: AtomicU64,
    rejected_changes: AtomicU64,
    /// The last policy-bucket revision this replica has processed (accepted or
    /// rejected): a writer waits for every replica to reach its write's revision.
    applied_revision: AtomicU64,
}

impl Default for PolicyStore {
    fn default() -> Self {
        PolicyStore {
            texts: RwLock::new((BTreeMap::new(), None)),
            engine: RwLock::new(Arc::new(PolicyEngine::deny_all("the stored policies are not loaded yet"))),
            loading: AtomicBool::new(true),
            healthy: AtomicBool::new(false),
            evaluations: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            rejected_changes: AtomicU64::new(0),
            applied_revision: AtomicU64::new(0),
        }
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

fn build(texts: &Texts) -> Result<PolicyEngine, hsync_policy::PolicyError> {
    if texts.0.is_empty() {
        Ok(PolicyEngine::permit_all())
    } else {
        PolicyEngine::new(texts.0.clone(), texts.1.as_deref())
    }
}

impl PolicyStore {
    /// Applies one bucket entry (`None` = deleted). After the initial load this rebuilds
    /// the engine; a change that does not build is rejected and the running set stays.
    pub fn apply(&self, key: &str, value: Option<String>) {
        let mut t = self.texts.write().unwrap_or_else(|p| p.into_inner());
        let Some(previous) = set_text(&mut t, key, value) else {
            return;
        };
        if self.loading.load(Ordering::Acquire) {
            return;
        }
        match build(&t) {
            Ok(engine) => self.install(engine, &format!("a change to `{key}`")),
            Err(e) if self.healthy.load(Ordering::Acquire) => {
                // Roll back: the texts must stay those of the running set.
                set_text(&mut t, key, previous);
                self.rejected_changes.fetch_add(1, Ordering::Relaxed);
                tracing::error!("policy change to `{key}` rejected; keeping the running set: {e}");
            }
            Err(e) => self.fail_closed(&e),
        }
    }

    /// Ends the initial load: builds the engine once from everything stored.
    pub fn finish_loading(&self) {
        let t = self.texts.write().unwrap_or_else(|p| p.into_inner());
        self.loading.store(false, Ordering::Release);
        match build(&t) {
            Ok(engine) => self.install(engine, &format!("loading {} stored policies", t.0.len())),
            Err(e) => self.fail_closed(&e),
        }
    }

    fn install(&self, engine: PolicyEngine, why: &str) {
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        self.healthy.store(true, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!("policy set loaded after {why}");
    }

    fn fail_closed(&self, e: &hsync_policy::PolicyError) {
        let reason = format!("the stored policy set is invalid ({e}); every step is denied until it is fixed");
        tracing::error!("{reason}");
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(PolicyEngine::deny_all(reason));
        self.healthy.store(false, Ordering::Release);
    }

    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.engine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn evaluate(&self, q: &PolicyQuery) -> PolicyDecision {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let context = match serde_json::to_value(&q.context) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
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
        let d = self.engine().evaluate(&input);
        if !d.allowed {
            self.denials.fetch_add(1, Ordering::Relaxed);
        }
        PolicyDecision {
            allowed: d.allowed,
            policies: d.policies,
            errors: d.errors,
            cached: false,
        }
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let t = self.texts.read().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "policies": t.0.len(),
            "evaluations": self.evaluations.load(Ordering::Relaxed),
            "denials": self.denials.load(Ordering::Relaxed),
            "reloads": self.reloads.load(Ordering::Relaxed),
            "rejected_changes": self.rejected_changes.load(Ordering::Relaxed),
            "healthy": self.healthy.load(Ordering::Relaxed),
            "applied_revision": self.applied_revision.load(Ordering::Acquire),
        })
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
    match e.operation {
        kv::Operation::Put => store.apply(&e.key, Some(String::from_utf8_lossy(&e.value).into_owned())),
        kv::Operation::Delete | kv::Operation::Purge => store.apply(&e.key, None),
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
                decisions: queries.iter().map(|q| store.evaluate(q)).collect(),
            })
            .await
            .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("evaluation task: {e}")))
        }
    })
    .await;
    let _ = service.stop().await;
    Ok(())
}
