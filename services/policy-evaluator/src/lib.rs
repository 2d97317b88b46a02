//! policy-evaluator: answers `policy.evaluate` with Cedar decisions, using the policies
//! stored in the policy bucket and following every change to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The stored policy texts and the engine built from them.
pub struct PolicyStore {
    texts: RwLock<(BTreeMap<String, String>, Option<String>)>,
    engine: RwLock<Arc<PolicyEngine>>,
    evaluations: AtomicU64,
    denials: AtomicU64,
    reloads: AtomicU64,
}

impl Default for PolicyStore {
    fn default() -> Self {
        PolicyStore {
            texts: RwLock::new((BTreeMap::new(), None)),
            engine: RwLock::new(Arc::new(PolicyEngine::permit_all())),
            evaluations: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
        }
    }
}

impl PolicyStore {
    /// Applies one bucket entry (`None` = deleted) and rebuilds the engine. An invalid set
    /// never replaces the running one.
    pub fn apply(&self, key: &str, value: Option<String>) {
        let (policies, schema) = {
            let mut t = self.texts.write().unwrap_or_else(|p| p.into_inner());
            if key == POLICY_SCHEMA_KEY {
                t.1 = value;
            } else if let Some(id) = key.strip_prefix(POLICY_KEY_PREFIX) {
                match value {
                    Some(text) => t.0.insert(id.to_string(), text),
                    None => t.0.remove(id),
                };
            } else {
                return;
            }
            t.clone()
        };
        let built = if policies.is_empty() {
            Ok(PolicyEngine::permit_all())
        } else {
            PolicyEngine::new(policies, schema.as_deref())
        };
        match built {
            Ok(engine) => {
                *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("policy set reloaded after a change to `{key}`");
            }
            Err(e) => tracing::error!("policy change to `{key}` rejected; keeping the running set: {e}"),
        }
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
        })
    }
}

/// Loads every stored policy before serving (so no request is answered by an empty set
/// while policies exist), then follows changes.
pub async fn load_and_follow(store: Arc<PolicyStore>, bucket: kv::Store) -> anyhow::Result<()> {
    let mut keys = bucket.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if let Some(v) = bucket.get(&key).await? {
            store.apply(&key, Some(String::from_utf8_lossy(&v).into_owned()));
        }
    }
    // The watch first re-delivers the latest value of every key, so a change made
    // between the load above and this call is not missed.
    let mut watch = bucket.watch_all().await?;
    tokio::spawn(async move {
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(e) => match e.operation {
                    kv::Operation::Put => store.apply(&e.key, Some(String::from_utf8_lossy(&e.value).into_owned())),
                    kv::Operation::Delete | kv::Operation::Purge => store.apply(&e.key, None),
                },
                Err(e) => tracing::warn!("policy watch: {e}"),
            }
        }
    });
    Ok(())
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
