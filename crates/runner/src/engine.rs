//! Runs one job: resolve → plan → schedule ready nodes in parallel → reply.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use hsync_bus::Bus;
use hsync_client::batch::BatchConfig;
use hsync_client::{BatchingOperatorClient, BatchingPolicyClient, IndexClient};
use hsync_operators::{canonical_hash, kind_mismatch, Args};
use hsync_protocol::job::{ExtendJob, Job, JobResult, JobStatus, Node, NodeReport, NodeStatus};
use hsync_protocol::operator::{ArgKind, OperatorCall, OperatorDef, Provider};
use hsync_protocol::policy::{PolicyDecision, PolicyQuery, Stage};
use hsync_protocol::record::{OperationRecord, Outcome};
use hsync_protocol::{Arg, ErrorCode, ErrorReply, Hash32, Value};
use hsync_cache::Cache;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dag;
use crate::large::OutputSpill;
use crate::registry::Registry;
use crate::session::{Session, SessionConfig, SessionStore};

/// Engine settings (flags or environment).
#[derive(clap::Args, Clone, Debug)]
pub struct EngineConfig {
    /// Result cache capacity in entries; 0 turns the cache off.
    #[arg(long = "result-cache-entries", env = "HSYNC_RESULT_CACHE_ENTRIES", default_value_t = 10_000)]
    pub cache_entries: usize,
    /// Result cache capacity in bytes (approximate size of the cached outputs).
    #[arg(long = "result-cache-bytes", env = "HSYNC_RESULT_CACHE_BYTES", default_value_t = 256 << 20)]
    pub cache_bytes: usize,
    /// Threads for CPU-bound built-in operators (default: one per core).
    #[arg(long = "cpu-threads", env = "HSYNC_CPU_THREADS")]
    pub cpu_threads: Option<usize>,
    /// Deadline of a job that sets none, in milliseconds.
    #[arg(long = "job-timeout-ms", env = "HSYNC_JOB_TIMEOUT_MS", default_value_t = 30_000)]
    pub job_timeout_ms: u64,
    /// How long a `wait_receipts` job waits for its receipts, in milliseconds.
    #[arg(long = "receipt-wait-ms", env = "HSYNC_RECEIPT_WAIT_MS", default_value_t = 15_000)]
    pub receipt_wait_ms: u64,
    /// Most nodes of one job running at once.
    #[arg(long = "max-parallel-nodes", env = "HSYNC_MAX_PARALLEL_NODES", default_value_t = 64)]
    pub max_parallel: usize,
    /// Most policy queries in one message to the policy-evaluator: concurrent checks of
    /// any nodes of any jobs travel together. 1 sends every query alone (batching off).
    #[arg(
        long = "policy-batch-max",
        env = "HSYNC_POLICY_BATCH_MAX",
        default_value_t = 100,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
    )]
    pub policy_batch_max: usize,
    /// Longest wait of the first policy query of a message for others, in microseconds.
    #[arg(
        long = "policy-batch-window-us",
        env = "HSYNC_POLICY_BATCH_WINDOW_US",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(0..=1_000_000)
    )]
    pub policy_batch_window_us: u64,
    /// Most calls to one remote operator in one message, for providers that accept
    /// batches (a `batch_subject` in their definition). 1 sends every call alone.
    #[arg(
        long = "operator-batch-max",
        env = "HSYNC_OPERATOR_BATCH_MAX",
        default_value_t = 100,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
    )]
    pub operator_batch_max: usize,
    /// Longest wait of the first call of a batch for others, in microseconds.
    #[arg(
        long = "operator-batch-window-us",
        env = "HSYNC_OPERATOR_BATCH_WINDOW_US",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(0..=1_000_000)
    )]
    pub operator_batch_window_us: u64,
    /// Job sessions (`keep_session`, `jobs.extend`).
    #[command(flatten)]
    pub sessions: SessionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_entries: 10_000,
            cache_bytes: 256 << 20,
            cpu_threads: None,
            job_timeout_ms: 30_000,
            receipt_wait_ms: 15_000,
            max_parallel: 64,
            policy_batch_max: 100,
            policy_batch_window_us: 1_000,
            operator_batch_max: 100,
            operator_batch_window_us: 1_000,
            sessions: SessionConfig::default(),
        }
    }
}

/// (operator_id@version, inputs_hash over the canonical encoding of the resolved inputs).
type CacheKey = (String, [u8; 32]);

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    nodes: AtomicU64,
    extends: AtomicU64,
}

pub struct Engine {
    bus: Arc<Bus>,
    js: jetstream::Context,
    registry: Registry,
    policy: BatchingPolicyClient,
    operators: BatchingOperatorClient,
    index: IndexClient,
    cache: Cache<CacheKey, Value, ErrorReply>,
    /// Bounds the CPU-bound operators running at once: tokio's blocking pool grows to
    /// hundreds of threads, which on a small machine only adds context switches.
    cpu_slots: Arc<Semaphore>,
    cfg: EngineConfig,
    counters: Counters,
    sessions: SessionStore,
    spill: OutputSpill,
}

enum NodeState {
    Pending,
    Running,
    Done(Value),
    Stopped,
}

/// What one node task hands back to the scheduler.
struct NodeOutcome {
    report: NodeReport,
    output: Option<Value>,
}

/// Everything a node task needs, shared by the tasks of one job.
struct JobCtx {
    job_id: String,
    submitter: String,
    trace_id: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Deterministic: the same job id and node id always give the same operation id, so a
/// re-run of a job (e.g. a redelivery on the durable path) is de-duplicated downstream.
pub fn operation_id(job_id: &str, node_id: &str) -> String {
    hex::encode(&sha256(&[job_id.as_bytes(), &[0], node_id.as_bytes()])[..16])
}

impl Engine {
    /// Starts the policy batching task, so it must be called within a Tokio runtime.
    pub fn new(bus: Arc<Bus>, registry: Registry, cfg: EngineConfig) -> Self {
        let cache = Cache::new(cfg.cache_entries, cfg.cache_bytes, Value::approx_size);
        let cpu_threads = cfg
            .cpu_threads
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        Engine {
            js: bus.jetstream(),
            spill: OutputSpill::new(bus.jetstream(), bus.names().clone()),
            policy: BatchingPolicyClient::new(
                bus.clone(),
                BatchConfig {
                    max_items: cfg.policy_batch_max.max(1),
                    window: Duration::from_micros(cfg.policy_batch_window_us),
                },
            ),
            operators: BatchingOperatorClient::new(
                bus.clone(),
                BatchConfig {
                    max_items: cfg.operator_batch_max.max(1),
                    window: Duration::from_micros(cfg.operator_batch_window_us),
                },
            ),
            index: IndexClient::new(bus.clone()),
            bus,
            registry,
            cache,
            cpu_slots: Arc::new(Semaphore::new(cpu_threads)),
            sessions: SessionStore::new(cfg.sessions.clone()),
            cfg,
            counters: Counters::default(),
        }
    }

    /// Figures for `$SRV.STATS`.
    pub fn stats_json(&self) -> serde_json::Value {
        let c = self.cache.stats();
        let p = self.policy.traffic();
        let o = self.operators.traffic();
        serde_json::json!({
            "jobs": self.counters.jobs.load(Ordering::Relaxed),
            "nodes": self.counters.nodes.load(Ordering::Relaxed),
            "cache_enabled": self.cache.is_enabled(),
            "cache_hits": c.hits,
            "cache_misses": c.misses,
            "cache_joined": c.joined,
            "cache_evictions": c.evictions,
            "cache_hit_rate": c.hit_rate(),
            "cache_entries": c.entries,
            "cache_bytes": c.bytes,
            "policy_batch_max": self.cfg.policy_batch_max,
            "policy_batch_window_us": self.cfg.policy_batch_window_us,
            "policy_messages": p.messages,
            "policy_queries": p.queries,
            "operator_batch_max": self.cfg.operator_batch_max,
            "operator_batch_window_us": self.cfg.operator_batch_window_us,
            "operator_messages": o.messages,
            "operator_calls": o.calls,
            "extends": self.counters.extends.load(Ordering::Relaxed),
            "sessions": self.sessions.len(),
            "session_evictions": self.sessions.evictions(),
        })
    }

    /// Runs a job to completion. Validation errors are returned as `Err` and nothing runs;
    /// node failures are reported inside the `JobResult`.
    pub async fn run(self: &Arc<Self>, mut job: Job) -> Result<JobResult, ErrorReply> {
        let started = Instant::now();
        self.counters.jobs.fetch_add(1, Ordering::Relaxed);
        check_job_id(&mut job)?;
        tracing::Span::current().record("hsync.job_id", job.job_id.as_str());

        let (defs, plan) = plan_job(&self.registry, &job).await?;
        let known = vec![None; job.nodes.len()];
        let (result, produced) = self.execute_plan(&job, &defs, &plan, &known, started).await?;
        if job.keep_session {
            let job_id = job.job_id.clone();
            let session = Session::new(job, defs, plan.deps, produced)?;
            self.sessions.insert(&job_id, session);
        }
        Ok(result)
    }

    /// Adds nodes to the session of a job run with `keep_session` and runs the ones the
    /// requested outputs need that have no output yet. Validation errors leave the
    /// session unchanged and run nothing.
    pub async fn extend(self: &Arc<Self>, req: ExtendJob) -> Result<JobResult, ErrorReply> {
        let started = Instant::now();
        self.counters.extends.fetch_add(1, Ordering::Relaxed);
        tracing::Span::current().record("hsync.job_id", req.job_id.as_str());
        let handle = self.sessions.get(&req.job_id).ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::NotFound,
                format!("no session for job {}: run it with keep_session", req.job_id),
            )
            .bounded()
        })?;
        // Extensions of one session run one at a time.
        let mut session = handle.lock().await;
        let plan = plan_extension(&self.registry, &mut session, req.nodes, req.outputs).await?;
        let (result, produced) = self
            .execute_plan(session.job(), session.defs(), &plan, session.outputs(), started)
            .await?;
        session.record(produced);
        Ok(result)
    }

    /// Runs the nodes of `plan` (its `order`, which holds no node with a `known` output)
    /// and replies for `plan.outputs`; `known[i]` is the output of node `i` when an
    /// earlier run produced it. Returns the result and the outputs this run produced.
    async fn execute_plan(
        self: &Arc<Self>,
        job: &Job,
        defs: &[Arc<OperatorDef>],
        plan: &dag::Plan,
        known: &[Option<Value>],
        started: Instant,
    ) -> Result<(JobResult, Vec<Option<Value>>), ErrorReply> {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(job.timeout_ms.unwrap_or(self.cfg.job_timeout_ms).max(1));
        let ctx = Arc::new(JobCtx {
            job_id: job.job_id.clone(),
            submitter: job.submitter.clone(),
            trace_id: hsync_telemetry::current_trace_id().unwrap_or_default(),
        });

        let n = job.nodes.len();
        let mut state: Vec<NodeState> = known
            .iter()
            .map(|k| match k {
                Some(v) => NodeState::Done(v.clone()),
                None => NodeState::Pending,
            })
            .collect();
        let mut reports: Vec<Option<NodeReport>> = vec![None; n];
        let mut waiting: Vec<usize> = plan
            .deps
            .iter()
            .map(|ds| ds.iter().filter(|&&d| known[d].is_none()).count())
            .collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in plan.deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let mut ready: VecDeque<usize> = plan
            .order
            .iter()
            .copied()
            .filter(|&i| waiting[i] == 0 && matches!(state[i], NodeState::Pending))
            .collect();
        let mut running: JoinSet<(usize, NodeOutcome)> = JoinSet::new();
        let max_parallel = self.cfg.max_parallel.max(1);

        loop {
            while running.len() < max_parallel {
                let Some(i) = ready.pop_front() else { break };
                state[i] = NodeState::Running;
                let node = &job.nodes[i];
                match resolve_args(job, i, &state, &defs[i]) {
                    Ok(args) => {
                        let engine = self.clone();
                        let ctx = ctx.clone();
                        let def = defs[i].clone();
                        let node_id = node.id.clone();
                        let span = tracing::info_span!(
                            "node",
                            otel.name = %format!("node {node_id}"),
                            hsync.job_id = %ctx.job_id,
                            hsync.node_id = %node_id,
                            hsync.operator = %def.qualified_id(),
                            hsync.operation_id = %operation_id(&ctx.job_id, &node_id),
                            hsync.cache_hit = tracing::field::Empty,
                        );
                        running.spawn(
                            async move { (i, engine.run_node(&ctx, &node_id, &def, args).await) }.instrument(span),
                        );
                    }
                    Err(err) => {
                        let report = NodeReport {
                            node_id: node.id.clone(),
                            operator: defs[i].qualified_id(),
                            status: NodeStatus::Failed,
                            operation_id: None,
                            cached: false,
                            elapsed_us: 0,
                            decided_by: vec![],
                            error: Some(err),
                        };
                        self.finish(i, NodeOutcome { report, output: None }, job, plan, &mut state, &mut reports, &mut waiting, &dependents, &mut ready);
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(Some(Ok((i, outcome)))) => {
                    self.finish(i, outcome, job, plan, &mut state, &mut reports, &mut waiting, &dependents, &mut ready);
                }
                Ok(Some(Err(join_error))) => {
                    // A panic inside an operator task is a bug; fail the job, keep serving.
                    return Err(ErrorReply::new(ErrorCode::Internal, format!("a node task failed: {join_error}")));
                }
                Ok(None) => break,
                Err(_) => {
                    running.abort_all();
                    for (i, s) in state.iter_mut().enumerate() {
                        if plan.needed[i] && matches!(s, NodeState::Running | NodeState::Pending) {
                            *s = NodeState::Stopped;
                            reports[i] = Some(NodeReport {
                                node_id: job.nodes[i].id.clone(),
                                operator: defs[i].qualified_id(),
                                status: NodeStatus::Skipped,
                                operation_id: None,
                                cached: false,
                                elapsed_us: 0,
                                decided_by: vec![],
                                error: Some(ErrorReply::new(ErrorCode::Timeout, "the job's deadline passed").at_node(&job.nodes[i].id)),
                            });
                        }
                    }
                    break;
                }
            }
        }

        let wanted: HashSet<&str> = plan.outputs.iter().map(String::as_str).collect();
        let index: HashMap<&str, usize> = job
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| wanted.contains(n.id.as_str()))
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut outputs = BTreeMap::new();
        for o in &plan.outputs {
            if let Some(&i) = index.get(o.as_str()) {
                if let NodeState::Done(v) = &state[i] {
                    outputs.insert(o.clone(), v.clone());
                }
            }
        }
        let nodes: Vec<NodeReport> = plan.order.iter().filter_map(|&i| reports[i].take()).collect();
        let status = if outputs.len() == plan.outputs.len() {
            JobStatus::Succeeded
        } else if nodes.iter().any(|r| r.status == NodeStatus::Denied) {
            JobStatus::Denied
        } else {
            JobStatus::Failed
        };
        let error = nodes
            .iter()
            .find(|r| matches!(r.status, NodeStatus::Denied | NodeStatus::Failed))
            .or_else(|| nodes.iter().find(|r| r.error.is_some()))
            .and_then(|r| r.error.clone());

        let mut result = JobResult {
            job_id: job.job_id.clone(),
            status,
            outputs,
            nodes,
            receipts: vec![],
            elapsed_us: 0,
            trace_id: ctx.trace_id.clone(),
            error,
            outputs_object: None,
        };
        let max_payload = self.bus.client().server_info().max_payload;
        self.spill.fit(&mut result, max_payload).await?;
        if job.wait_receipts {
            self.attach_receipts(&mut result).await;
        }
        result.elapsed_us = started.elapsed().as_micros() as u64;
        // What this run produced, for a session to keep.
        let produced = state
            .into_iter()
            .zip(known)
            .map(|(st, k)| match st {
                NodeState::Done(v) if k.is_none() => Some(v),
                _ => None,
            })
            .collect();
        Ok((result, produced))
    }

    /// Records a finished node and releases (or stops) its dependents.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        i: usize,
        outcome: NodeOutcome,
        job: &Job,
        plan: &dag::Plan,
        state: &mut [NodeState],
        reports: &mut [Option<NodeReport>],
        waiting: &mut [usize],
        dependents: &[Vec<usize>],
        ready: &mut VecDeque<usize>,
    ) {
        self.counters.nodes.fetch_add(1, Ordering::Relaxed);
        let ok = matches!(outcome.report.status, NodeStatus::Executed | NodeStatus::Cached);
        reports[i] = Some(outcome.report);
        match (ok, outcome.output) {
            (true, Some(v)) => {
                state[i] = NodeState::Done(v);
                for &j in &dependents[i] {
                    if plan.needed[j] {
                        waiting[j] -= 1;
                        if waiting[j] == 0 && matches!(state[j], NodeState::Pending) {
                            ready.push_back(j);
                        }
                    }
                }
            }
            _ => {
                state[i] = NodeState::Stopped;
                // Early termination: every needed descendant is skipped at once, while
                // independent branches go on.
                let mut stack: Vec<(usize, usize)> = dependents[i].iter().map(|&j| (j, i)).collect();
                while let Some((j, cause)) = stack.pop() {
                    if !plan.needed[j] || !matches!(state[j], NodeState::Pending) {
                        continue;
                    }
                    state[j] = NodeState::Stopped;
                    reports[j] = Some(NodeReport {
                        node_id: job.nodes[j].id.clone(),
                        operator: job.nodes[j].op.clone(),
                        status: NodeStatus::Skipped,
                        operation_id: None,
                        cached: false,
                        elapsed_us: 0,
                        decided_by: vec![],
                        error: Some(
                            ErrorReply::new(
                                ErrorCode::OperatorFailed,
                                format!("not run: dependency `{}` did not succeed", job.nodes[cause].id),
                            )
                            .at_node(&job.nodes[j].id),
                        ),
                    });
                    stack.extend(dependents[j].iter().map(|&k| (k, j)));
                }
            }
        }
    }

    async fn attach_receipts(&self, result: &mut JobResult) {
        let wait = Duration::from_millis(self.cfg.receipt_wait_ms);
        let ids: Vec<String> = result.nodes.iter().filter_map(|n| n.operation_id.clone()).collect();
        let lookups = ids.iter().map(|id| self.index.wait_for_receipt(id, wait));
        let found = futures::future::join_all(lookups).await;
        let mut missing = Vec::new();
        for (id, r) in ids.iter().zip(found) {
            match r {
                Ok(Some(receipt)) => result.receipts.push(receipt),
                Ok(None) => missing.push(id.clone()),
                Err(e) => {
                    tracing::warn!("receipt lookup for {id} failed: {e}");
                    missing.push(id.clone());
                }
            }
        }
        if !missing.is_empty() && result.error.is_none() {
            result.error = Some(ErrorReply::new(
                ErrorCode::Timeout,
                format!("receipts not indexed within {} ms: {}", wait.as_millis(), missing.join(", ")),
            ));
        }
    }

    async fn run_node(&self, ctx: &JobCtx, node_id: &str, def: &OperatorDef, args: Args) -> NodeOutcome {
        let started = Instant::now();
        let started_at_us = now_us();
        let op_id = operation_id(&ctx.job_id, node_id);
        let inputs_hash = canonical_hash(&args);
        let mut decided_by = Vec::new();
        let qualified = def.qualified_id();

        let result = self
            .execute_with_policies(ctx, node_id, def, &args, inputs_hash, &mut decided_by)
            .await;
        let (status, outcome, output, error, cached) = match result {
            Ok((v, cached)) => (
                if cached { NodeStatus::Cached } else { NodeStatus::Executed },
                if cached { Outcome::Cached } else { Outcome::Executed },
                Some(v),
                None,
                cached,
            ),
            Err(e) if e.code == ErrorCode::PolicyDenied => (NodeStatus::Denied, Outcome::Denied, None, Some(e), false),
            Err(e) => (NodeStatus::Failed, Outcome::Failed, None, Some(e), false),
        };
        tracing::Span::current().record("hsync.cache_hit", cached);

        let record = OperationRecord {
            operation_id: op_id.clone(),
            job_id: ctx.job_id.clone(),
            node_id: node_id.to_string(),
            operator: qualified.clone(),
            inputs_hash: Hash32(inputs_hash),
            output_hash: output.as_ref().map(|v| Hash32(canonical_hash(v))),
            outcome,
            policies: decided_by.clone(),
            submitter: ctx.submitter.clone(),
            trace_id: ctx.trace_id.clone(),
            started_at_us,
            finished_at_us: now_us(),
            error: error.as_ref().map(|e| e.to_string()),
        };
        let names = self.bus.names();
        let published = self
            .bus
            .js_publish(&self.js, names.ops_records(), &record, Some(&op_id))
            .await;
        let (status, output, error) = match published {
            Ok(_) => (status, output, error),
            Err(e) => {
                // A step without a durable record would have no receipt: fail it.
                tracing::error!("cannot publish operation record {op_id}: {e}");
                (
                    NodeStatus::Failed,
                    None,
                    Some(ErrorReply::new(ErrorCode::Unavailable, format!("cannot record the step: {e}")).at_node(node_id)),
                )
            }
        };
        NodeOutcome {
            report: NodeReport {
                node_id: node_id.to_string(),
                operator: qualified,
                status,
                operation_id: Some(op_id),
                cached,
                elapsed_us: started.elapsed().as_micros() as u64,
                decided_by,
                error,
            },
            output,
        }
    }

    /// Pre-condition → cache or execution → post-condition. `inputs_hash` is the
    /// canonical hash of `args`, computed once for the record and the cache key.
    #[allow(clippy::too_many_arguments)]
    async fn execute_with_policies(
        &self,
        ctx: &JobCtx,
        node_id: &str,
        def: &OperatorDef,
        args: &Args,
        inputs_hash: [u8; 32],
        decided_by: &mut Vec<String>,
    ) -> Result<(Value, bool), ErrorReply> {
        let mut context = step_context(ctx, node_id, def, args);
        self.check_policy(ctx, def, Stage::Pre, context.clone(), decided_by, node_id).await?;

        let (output, hit) = if def.deterministic && def.cacheable {
            let key = (def.qualified_id(), inputs_hash);
            let (v, source) = self
                .cache
                .get_or_compute(key, || self.execute(ctx, node_id, def, args))
                .await
                .map_err(|e| e.at_node(node_id))?;
            (v, source.served_from_cache())
        } else {
            (self.execute(ctx, node_id, def, args).await?, false)
        };

        add_output_summary(&mut context, &output);
        self.check_policy(ctx, def, Stage::Post, context, decided_by, node_id).await?;
        Ok((output, hit))
    }

    async fn check_policy(
        &self,
        ctx: &JobCtx,
        def: &OperatorDef,
        stage: Stage,
        context: BTreeMap<String, Value>,
        decided_by: &mut Vec<String>,
        node_id: &str,
    ) -> Result<(), ErrorReply> {
        let query = PolicyQuery {
            principal: ctx.submitter.clone(),
            stage,
            operator: def.id.clone(),
            capabilities: def.capabilities.clone(),
            context,
        };
        // Concurrent checks (of this job's other nodes and of other jobs) share a message.
        let decision: PolicyDecision = self.policy.evaluate(query).await.map_err(|e| {
            // Fail closed: no decision, no execution.
            let r = e.to_reply();
            ErrorReply::new(r.code, format!("policy check failed: {}", r.message)).at_node(node_id)
        })?;
        decided_by.extend(decision.policies.iter().cloned());
        if decision.allowed {
            return Ok(());
        }
        let stage_name = match stage {
            Stage::Pre => "pre",
            Stage::Post => "post",
        };
        let mut msg = format!(
            "node `{node_id}`: {stage_name}-condition denied by {}",
            if decision.policies.is_empty() { "policy".to_string() } else { decision.policies.join(", ") }
        );
        if !decision.errors.is_empty() {
            msg.push_str(&format!(" (errors: {})", decision.errors.join("; ")));
        }
        Err(ErrorReply::new(ErrorCode::PolicyDenied, msg).at_node(node_id))
    }

    async fn execute(&self, ctx: &JobCtx, node_id: &str, def: &OperatorDef, args: &Args) -> Result<Value, ErrorReply> {
        match &def.provider {
            Provider::Builtin => {
                let builtin = hsync_operators::find(&def.id).ok_or_else(|| {
                    ErrorReply::new(ErrorCode::UnknownOperator, format!("no built-in `{}`", def.id))
                })?;
                let args = args.clone();
                let slot = self
                    .cpu_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ErrorReply::new(ErrorCode::Unavailable, "the runner is shutting down"))?;
                // CPU-bound work stays off the async runtime's threads.
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    (builtin.run)(&args)
                })
                    .await
                    .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("operator task: {e}")))?
                    .map_err(|e| e.at_node(node_id))
            }
            Provider::Nats { subject, batch_subject } => {
                let call = OperatorCall {
                    operator: def.id.clone(),
                    args: args.clone(),
                    job_id: ctx.job_id.clone(),
                    node_id: node_id.to_string(),
                };
                self.operators
                    .call(subject, batch_subject.as_deref(), call)
                    .await
                    .map(|o| o.output)
                    .map_err(|e| {
                        let r = e.to_reply();
                        let code = match r.code {
                            ErrorCode::InvalidArgument | ErrorCode::Timeout | ErrorCode::Unavailable => r.code,
                            _ => ErrorCode::OperatorFailed,
                        };
                        ErrorReply { code, ..r }.at_node(node_id)
                    })
            }
        }
    }
}

/// Checks a submitted job's id (`jobs.run` assigns one when it is empty; `jobs.submit`
/// has already refused an empty one).
pub fn check_job_id(job: &mut Job) -> Result<(), ErrorReply> {
    if job.job_id.is_empty() {
        job.job_id = uuid::Uuid::now_v7().simple().to_string();
    }
    if !dag::valid_id(&job.job_id) {
        return Err(ErrorReply::new(
            ErrorCode::InvalidJob,
            format!(
                "job_id {:?} is invalid: use 1-{} letters, digits, '-' or '_'",
                job.job_id,
                dag::MAX_ID_LEN
            ),
        )
        .bounded());
    }
    Ok(())
}

/// Everything checked about a job (with a checked id) before any of its nodes runs: every
/// node's operator, loaded when not seen yet (an unknown one is an error naming its
/// node), then the DAG ([`dag::plan`]). Errors are [`ErrorReply::bounded`]: they quote
/// the job, whose ids and names may be megabytes long.
pub async fn plan_job(registry: &Registry, job: &Job) -> Result<(Vec<Arc<OperatorDef>>, dag::Plan), ErrorReply> {
    async {
        let defs = resolve_defs(registry, &job.nodes).await?;
        let def_refs: Vec<&OperatorDef> = defs.iter().map(|d| d.as_ref()).collect();
        let plan = dag::plan(job, &def_refs)?;
        Ok((defs, plan))
    }
    .await
    .map_err(ErrorReply::bounded)
}

/// Like [`plan_job`] for `hsync.jobs.extend`: resolves the new nodes' operators and adds
/// them to `session` ([`Session::extend`], which leaves the session as it was on an error).
pub async fn plan_extension(
    registry: &Registry,
    session: &mut Session,
    nodes: Vec<Node>,
    outputs: Vec<String>,
) -> Result<dag::Plan, ErrorReply> {
    async {
        let defs = resolve_defs(registry, &nodes).await?;
        session.extend(nodes, defs, outputs)
    }
    .await
    .map_err(ErrorReply::bounded)
}

/// The operator definitions of `nodes`, loading those not seen yet (lazy loading); an
/// unknown operator is an error naming its node.
async fn resolve_defs(registry: &Registry, nodes: &[Node]) -> Result<Vec<Arc<OperatorDef>>, ErrorReply> {
    let mut defs = Vec::with_capacity(nodes.len());
    for node in nodes {
        defs.push(registry.resolve(&node.op).await.map_err(|e| {
            let msg = format!("node `{}`: {}", node.id, e.message);
            ErrorReply { message: msg, ..e }.at_node(&node.id)
        })?);
    }
    Ok(defs)
}

/// Resolves references against finished nodes and checks their kinds.
fn resolve_args(job: &Job, i: usize, state: &[NodeState], def: &OperatorDef) -> Result<Args, ErrorReply> {
    let node = &job.nodes[i];
    let mut out = Args::new();
    for (name, arg) in &node.args {
        let value = match arg {
            Arg::Lit(v) => v.clone(),
            Arg::Ref(r) => {
                let j = job.nodes.iter().position(|n| n.id == r.node).ok_or_else(|| {
                    ErrorReply::new(ErrorCode::MissingReference, format!("no node `{}`", r.node)).at_node(&node.id)
                })?;
                let NodeState::Done(v) = &state[j] else {
                    return Err(ErrorReply::new(ErrorCode::Internal, format!("`{}` has no output yet", r.node)));
                };
                match &r.path {
                    None => v.clone(),
                    Some(p) => v.at_path(p).cloned().ok_or_else(|| {
                        ErrorReply::new(
                            ErrorCode::InvalidArgument,
                            format!("node `{}` argument `{name}`: output of `{}` has no `{p}`", node.id, r.node),
                        )
                        .at_node(&node.id)
                        .at_argument(name)
                    })?,
                }
            }
        };
        if let Some(spec) = def.args.iter().find(|s| &s.name == name) {
            if let Some(why) = kind_mismatch(spec.kind, &value) {
                return Err(ErrorReply::new(
                    ErrorCode::InvalidArgument,
                    format!("node `{}` argument `{name}`: {why}", node.id),
                )
                .at_node(&node.id)
                .at_argument(name));
            }
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Context attributes the runner computes itself. An argument of the same name is not
/// copied: a policy reading `input_size` must get the measured size, not one a job chose.
/// (`dimension` is not here: an argument named so states the same fact, so it wins.)
const RESERVED_CONTEXT_NAMES: [&str; 8] = [
    "job_id",
    "node_id",
    "arg_count",
    "input_size",
    "max_point_norm",
    "output_size",
    "output_norm",
    "output_value",
];

/// The points an argument carries, read in place (the context is built for every step).
enum Points {
    /// A vector: its length and Euclidean norm.
    Vector { len: usize, norm: f64 },
    /// A matrix: its row width and the largest row norm (`None` without rows).
    Matrix { cols: usize, max_norm: Option<f64> },
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Norm of a vector-shaped value (a 1-D tensor or an array of numbers), else `None`.
fn vector_norm(v: &Value) -> Option<f64> {
    match v {
        Value::Tensor(t) if t.shape().len() == 1 => Some(norm(t.data())),
        Value::Array(items) => array_norm(items),
        _ => None,
    }
}

/// Norm of an array of numbers; `None` if any element is not a number.
fn array_norm(items: &[Value]) -> Option<f64> {
    let mut sum = 0.0;
    for item in items {
        let x = item.as_f64()?;
        sum += x * x;
    }
    Some(sum.sqrt())
}

/// The larger of two norms, where NaN wins: a point with a NaN coordinate must reach the
/// policy (which then denies), not vanish behind `f64::max`, which ignores NaN.
fn max_norm(acc: Option<f64>, n: f64) -> f64 {
    match acc {
        Some(m) if m.is_nan() || m >= n => m,
        _ => n,
    }
}

/// Same shapes as `Value::as_vector` / `Value::as_matrix` (a vector first, so `[]` is an
/// empty vector), without copying the data.
fn points(v: &Value) -> Option<Points> {
    match v {
        Value::Tensor(t) => match *t.shape() {
            [len] => Some(Points::Vector { len, norm: norm(t.data()) }),
            [rows, cols] => {
                let max_norm = if rows == 0 {
                    None
                } else if cols == 0 {
                    Some(0.0)
                } else {
                    t.data().chunks_exact(cols).map(norm).reduce(|m, n| max_norm(Some(m), n))
                };
                Some(Points::Matrix { cols, max_norm })
            }
            _ => None,
        },
        Value::Array(items) => {
            if let Some(norm) = array_norm(items) {
                return Some(Points::Vector { len: items.len(), norm });
            }
            let mut cols = None;
            let mut acc = None;
            for row in items {
                let (len, n) = match row {
                    Value::Tensor(t) if t.shape().len() == 1 => (t.data().len(), norm(t.data())),
                    Value::Array(r) => (r.len(), array_norm(r)?),
                    _ => return None,
                };
                if *cols.get_or_insert(len) != len {
                    return None;
                }
                acc = Some(max_norm(acc, n));
            }
            // Not empty here: an empty array is a vector.
            Some(Points::Matrix { cols: cols.unwrap_or(0), max_norm: acc })
        }
        _ => None,
    }
}

/// The policy context of a step, flat: Cedar records in a schema are closed, so nested
/// maps could not be declared and a schema-checked evaluator would drop them. See
/// docs/POLICIES.md for what each attribute means and when it is present.
fn step_context(ctx: &JobCtx, node_id: &str, def: &OperatorDef, args: &Args) -> BTreeMap<String, Value> {
    let mut c = BTreeMap::new();
    c.insert("job_id".into(), Value::Str(ctx.job_id.clone()));
    c.insert("node_id".into(), Value::Str(node_id.to_string()));
    c.insert("arg_count".into(), Value::Int(args.len() as i64));
    let mut input_size = 0usize;
    let mut vector_dim = None;
    let mut matrix_dim = None;
    let mut point_norm = None;
    for (name, v) in args {
        input_size = input_size.saturating_add(v.approx_size());
        let kind = def.args.iter().find(|s| &s.name == name).map(|s| s.kind);
        if matches!(v, Value::Int(_) | Value::Float(_)) && !RESERVED_CONTEXT_NAMES.contains(&name.as_str()) {
            // The operator's declared kind decides the Cedar type, so that `n: 4.0` is the
            // Long a schema declares (not a deny for a non-integer) and `c: 1` the decimal.
            let value = match (kind, v) {
                (Some(ArgKind::Integer), Value::Float(_)) => v.as_i64().map_or_else(|| v.clone(), Value::Int),
                (Some(ArgKind::Number), Value::Int(i)) => Value::Float(*i as f64),
                _ => v.clone(),
            };
            c.insert(name.clone(), value);
        }
        // Weights, tangent vectors and edge lists are numbers, not points.
        if matches!(kind, Some(ArgKind::Numbers | ArgKind::Edges)) {
            continue;
        }
        match points(v) {
            Some(Points::Vector { len, norm }) => {
                vector_dim.get_or_insert(len);
                point_norm = Some(max_norm(point_norm, norm));
            }
            Some(Points::Matrix { cols, max_norm: rows_norm }) => {
                matrix_dim.get_or_insert(cols);
                if let Some(n) = rows_norm {
                    point_norm = Some(max_norm(point_norm, n));
                }
            }
            None => {}
        }
    }
    c.insert("input_size".into(), Value::Int(input_size as i64));
    if let Some(d) = vector_dim.or(matrix_dim) {
        c.entry("dimension".into()).or_insert(Value::Int(d as i64));
    }
    if let Some(n) = point_norm {
        // A NaN or infinite norm goes as is: the evaluator denies it with an error.
        c.insert("max_point_norm".into(), Value::Float(n));
    }
    c
}

/// Adds the post-condition's output summary to a step context.
fn add_output_summary(c: &mut BTreeMap<String, Value>, output: &Value) {
    c.insert("output_size".into(), Value::Int(output.approx_size() as i64));
    if let Some(n) = vector_norm(output) {
        c.insert("output_norm".into(), Value::Float(n));
    } else if let Some(x) = output.as_f64() {
        c.insert("output_value".into(), Value::Float(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_deterministic_and_distinct() {
        assert_eq!(operation_id("j", "a"), operation_id("j", "a"));
        assert_ne!(operation_id("j", "a"), operation_id("j", "b"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(operation_id("ab", "c"), operation_id("a", "bc"));
        assert_eq!(operation_id("j", "a").len(), 32);
    }

    fn geodesic_def() -> OperatorDef {
        let spec = |name: &str, kind| hsync_protocol::operator::ArgSpec { name: name.into(), kind, required: true };
        OperatorDef {
            id: "geo.geodesic".into(),
            version: "1".into(),
            capabilities: vec!["geometry".into(), "hyperbolic".into()],
            deterministic: true,
            cacheable: true,
            provider: Provider::Builtin,
            args: vec![
                spec("x", ArgKind::Vector),
                spec("y", ArgKind::Vector),
                spec("n", ArgKind::Integer),
                spec("c", ArgKind::Number),
            ],
            cost_hint: 1,
            description: String::new(),
        }
    }

    fn context_of(args: &[(&str, Value)]) -> BTreeMap<String, Value> {
        let ctx = JobCtx { job_id: "job-1".into(), submitter: "alice".into(), trace_id: String::new() };
        let args: Args = args.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        step_context(&ctx, "path", &geodesic_def(), &args)
    }

    fn floats(xs: &[f64]) -> Value {
        Value::Array(xs.iter().map(|x| Value::Float(*x)).collect())
    }

    fn float(c: &BTreeMap<String, Value>, key: &str) -> f64 {
        match c.get(key) {
            Some(Value::Float(x)) => *x,
            other => panic!("`{key}` should be a float, is {other:?}"),
        }
    }

    #[test]
    fn step_context_is_flat() {
        let x = floats(&[0.3, 0.4]);
        let y = Value::Tensor(hsync_protocol::Tensor::vector(vec![0.0, -0.6]));
        let input_size = (x.approx_size() + y.approx_size() + 9 + 9) as i64;
        let c = context_of(&[("x", x), ("y", y), ("n", Value::Int(4)), ("c", Value::Float(0.5))]);
        let keys: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["arg_count", "c", "dimension", "input_size", "job_id", "max_point_norm", "n", "node_id"]
        );
        assert_eq!(c["job_id"], Value::Str("job-1".into()));
        assert_eq!(c["node_id"], Value::Str("path".into()));
        assert_eq!(c["arg_count"], Value::Int(4));
        assert_eq!(c["input_size"], Value::Int(input_size));
        assert_eq!(c["n"], Value::Int(4));
        assert_eq!(c["c"], Value::Float(0.5));
        assert_eq!(c["dimension"], Value::Int(2));
        assert!((float(&c, "max_point_norm") - 0.6).abs() < 1e-12);
        // Flat on the wire too: every attribute is a scalar, so a schema can declare it.
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.as_object().unwrap().values().all(|v| !v.is_object() && !v.is_array()), "{json}");

        // Without points there is neither a dimension nor a norm to report.
        let c = context_of(&[("n", Value::Int(4))]);
        assert!(!c.contains_key("dimension") && !c.contains_key("max_point_norm"), "{c:?}");
    }

    #[test]
    fn step_context_reserved_names_win() {
        let c = context_of(&[
            ("job_id", Value::Int(7)),
            ("input_size", Value::Int(1)),
            ("arg_count", Value::Int(0)),
            ("max_point_norm", Value::Float(0.0)),
            ("output_size", Value::Int(0)),
            ("x", floats(&[3.0, 4.0])),
        ]);
        assert_eq!(c["job_id"], Value::Str("job-1".into()));
        assert_eq!(c["arg_count"], Value::Int(6));
        assert_eq!(c["input_size"], Value::Int(4 * 9 + floats(&[3.0, 4.0]).approx_size() as i64 + 9));
        assert_eq!(float(&c, "max_point_norm"), 5.0);
        // A post-condition attribute cannot be planted by a job in the pre context.
        assert!(!c.contains_key("output_size"), "{c:?}");

        // `dimension` is not reserved: an argument of that name says the same thing, and wins.
        let c = context_of(&[("dimension", Value::Int(99)), ("x", floats(&[0.1, 0.2, 0.3]))]);
        assert_eq!(c["dimension"], Value::Int(99));
    }

    #[test]
    fn step_context_leaves_numbers_and_edges_out_of_the_points() {
        // A tangent vector or weights (`numbers`) and an edge list are not points: a point
        // policy must not refuse exp_x(v) because v is long.
        let mut def = geodesic_def();
        let spec = |name: &str, kind| hsync_protocol::operator::ArgSpec { name: name.into(), kind, required: true };
        def.args = vec![spec("x", ArgKind::Vector), spec("v", ArgKind::Numbers), spec("edges", ArgKind::Edges)];
        let ctx = JobCtx { job_id: "job-1".into(), submitter: "alice".into(), trace_id: String::new() };
        let args: Args = [
            ("x".to_string(), floats(&[0.3, 0.4])),
            ("v".to_string(), floats(&[3.0, 4.0])),
            ("edges".to_string(), Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(500)])])),
        ]
        .into_iter()
        .collect();
        let c = step_context(&ctx, "exp", &def, &args);
        assert!((float(&c, "max_point_norm") - 0.5).abs() < 1e-12, "{c:?}");
        // Declared as plain vectors they would count.
        def.args = vec![spec("x", ArgKind::Vector), spec("v", ArgKind::Vector), spec("edges", ArgKind::Matrix)];
        let c = step_context(&ctx, "exp", &def, &args);
        assert_eq!(float(&c, "max_point_norm"), 500.0);
    }

    #[test]
    fn step_context_points_and_dimension() {
        // The largest norm over the rows of a matrix tensor and of an array-of-arrays matrix.
        let m = hsync_protocol::Tensor::matrix(3, 2, vec![0.3, 0.4, 0.0, 0.9, 0.1, 0.1]).unwrap();
        let rows = Value::Array(vec![floats(&[0.2, 0.0]), floats(&[0.0, -0.95])]);
        let c = context_of(&[("a", Value::Tensor(m.clone())), ("b", floats(&[0.1, 0.1, 0.1]))]);
        assert!((float(&c, "max_point_norm") - 0.9).abs() < 1e-12, "{c:?}");
        // A vector argument gives the dimension even when a matrix argument comes first.
        assert_eq!(c["dimension"], Value::Int(3));
        let c = context_of(&[("p", Value::Tensor(m)), ("q", rows)]);
        assert!((float(&c, "max_point_norm") - 0.95).abs() < 1e-12, "{c:?}");
        // No vector: the row width of the first matrix.
        assert_eq!(c["dimension"], Value::Int(2));

        // A NaN coordinate is not hidden by a larger finite norm: the evaluator must see it.
        let c = context_of(&[("x", floats(&[f64::NAN, 0.0])), ("y", floats(&[0.5, 0.0]))]);
        assert!(float(&c, "max_point_norm").is_nan(), "{c:?}");
        let c = context_of(&[("x", floats(&[0.5, 0.0])), ("y", floats(&[f64::INFINITY, 0.0]))]);
        assert_eq!(float(&c, "max_point_norm"), f64::INFINITY);
        // A ragged array is no matrix, so it carries no points.
        let ragged = Value::Array(vec![floats(&[0.1]), floats(&[0.1, 0.2])]);
        let c = context_of(&[("edges", ragged)]);
        assert!(!c.contains_key("max_point_norm") && !c.contains_key("dimension"), "{c:?}");
    }

    #[test]
    fn step_context_follows_declared_kinds() {
        // `n` is declared Integer and `c` Number: the context carries the Cedar type the
        // schema declares whatever the job wrote. Undeclared arguments stay as given.
        let c = context_of(&[("n", Value::Float(4.0)), ("c", Value::Int(1)), ("t", Value::Float(2.0)), ("k", Value::Int(3))]);
        assert_eq!(c["n"], Value::Int(4));
        assert_eq!(c["c"], Value::Float(1.0));
        assert_eq!(c["t"], Value::Float(2.0));
        assert_eq!(c["k"], Value::Int(3));
        // Strings and booleans are not parameters.
        let c = context_of(&[("label", Value::Str("a".into())), ("flag", Value::Bool(true))]);
        assert!(!c.contains_key("label") && !c.contains_key("flag"), "{c:?}");
    }

    #[test]
    fn output_summary() {
        let mut c = BTreeMap::new();
        let v = Value::Tensor(hsync_protocol::Tensor::vector(vec![3.0, 4.0]));
        add_output_summary(&mut c, &v);
        assert_eq!(c["output_size"], Value::Int(v.approx_size() as i64));
        assert_eq!(c["output_norm"], Value::Float(5.0));
        assert!(!c.contains_key("output_value"));

        let mut c = BTreeMap::new();
        add_output_summary(&mut c, &Value::Int(2));
        assert_eq!(c["output_value"], Value::Float(2.0));
        assert!(!c.contains_key("output_norm"));

        // A matrix (e.g. a geodesic's points) has neither a single norm nor a value.
        let mut c = BTreeMap::new();
        add_output_summary(&mut c, &Value::Array(vec![floats(&[0.1, 0.2]), floats(&[0.3, 0.4])]));
        assert_eq!(c.keys().map(String::as_str).collect::<Vec<_>>(), ["output_size"]);
    }

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        engine: EngineConfig,
    }

    fn parse(args: &[&str]) -> Result<EngineConfig, clap::Error> {
        use clap::Parser;
        Flags::try_parse_from(std::iter::once("runner").chain(args.iter().copied())).map(|f| f.engine)
    }

    #[test]
    fn policy_batching_flags() {
        // Only the two policy flags are asserted: the others may come from the environment.
        let d = EngineConfig::default();
        assert_eq!((d.policy_batch_max, d.policy_batch_window_us), (100, 1_000));
        let c = parse(&["--policy-batch-max", "1", "--policy-batch-window-us", "0"]).unwrap();
        assert_eq!((c.policy_batch_max, c.policy_batch_window_us), (1, 0));
        let c = parse(&["--policy-batch-max", "250", "--policy-batch-window-us", "5000"]).unwrap();
        assert_eq!((c.policy_batch_max, c.policy_batch_window_us), (250, 5_000));
        // Zero queries per message, more than the evaluator accepts, or a window over a
        // second are refused at start-up.
        assert!(parse(&["--policy-batch-max", "0"]).is_err());
        assert!(parse(&["--policy-batch-max", "10001"]).is_err());
        assert!(parse(&["--policy-batch-window-us", "1000001"]).is_err());
        let d = EngineConfig::default();
        assert_eq!((d.operator_batch_max, d.operator_batch_window_us), (100, 1_000));
        let c = parse(&["--operator-batch-max", "1", "--operator-batch-window-us", "0"]).unwrap();
        assert_eq!((c.operator_batch_max, c.operator_batch_window_us), (1, 0));
        assert!(parse(&["--operator-batch-max", "0"]).is_err());
        assert!(parse(&["--operator-batch-max", "10001"]).is_err());
    }
}
