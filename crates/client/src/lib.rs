//! Typed clients for every HyperSync subject. A caller never builds a subject string or
//! decodes a reply by hand: the runner calls [`BatchingPolicyClient`] (concurrent policy
//! queries share messages; the generic part is [`batch::Batcher`]), the CLI calls
//! [`JobClient`] and [`IndexClient`], and so on.
#![forbid(unsafe_code)]

pub mod policies;
pub mod registry;

pub mod batch;
pub mod large;
pub mod operators;

pub use operators::{BatchingOperatorClient, OperatorClient, OperatorTraffic};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hsync_bus::{Bus, BusError};
use hsync_protocol::audit::{
    CheckpointQuery, CheckpointReply, ConsistencyQuery, ConsistencyReply, Empty, IndexStats, OperatorById, OperatorPage,
    OperatorReply, OperatorsQuery, ReceiptById, ReceiptByOperation, ReceiptPage, ReceiptReply, ReceiptsByJob, ReceiptsByTime,
};
use hsync_protocol::operator::OperatorDef;
use hsync_protocol::job::{valid_id, ExtendJob, Job, JobResult, MAX_ID_LEN};
use hsync_protocol::policy::{PolicyDecision, PolicyEvalReply, PolicyEvalRequest, PolicyQuery};
use hsync_protocol::receipt::{Checkpoint, Receipt, VerifierKeys};
use hsync_protocol::{CodecError, ErrorCode, ErrorReply};

use crate::batch::{BatchConfig, BatchError, Batcher};

/// A caller's mistake, reported like a service's INVALID_ARGUMENT reply so that every
/// client error reads the same way.
pub(crate) fn invalid_argument(msg: String) -> BusError {
    BusError::Remote(ErrorReply::new(ErrorCode::InvalidArgument, msg))
}

/// Submits jobs.
#[derive(Clone)]
pub struct JobClient {
    bus: Arc<Bus>,
}

impl JobClient {
    pub fn new(bus: Arc<Bus>) -> Self {
        JobClient { bus }
    }

    /// Runs a job over request/reply and waits for its result (outputs that came through
    /// the object store included).
    pub async fn run(&self, job: &Job, timeout: Duration) -> Result<JobResult, BusError> {
        let result = self
            .bus
            .request_timeout_after(self.bus.names().jobs_run(), job, timeout)
            .await?;
        self.with_outputs(result).await
    }

    /// Adds nodes to the session of a job run with `keep_session` and waits for the
    /// result of the nodes this extension runs (`NOT_FOUND` when there is no session).
    pub async fn extend(&self, req: &ExtendJob, timeout: Duration) -> Result<JobResult, BusError> {
        let result = self
            .bus
            .request_timeout_after(self.bus.names().jobs_extend(), req, timeout)
            .await?;
        self.with_outputs(result).await
    }

    /// Fills in outputs that were too large for one message from the object store.
    async fn with_outputs(&self, mut result: JobResult) -> Result<JobResult, BusError> {
        if let Some(object) = &result.outputs_object {
            result.outputs = large::fetch_outputs(&self.bus, object).await?;
        }
        Ok(result)
    }

    /// Publishes a job on the durable path (the JetStream work queue) and returns its id.
    /// The id is the idempotency key: assigned here when empty, sent as `Nats-Msg-Id`, so
    /// publishing the same job twice runs it once.
    pub async fn submit(&self, job: &Job) -> Result<String, BusError> {
        let mut job = job.clone();
        if job.job_id.is_empty() {
            job.job_id = uuid::Uuid::now_v7().simple().to_string();
        }
        if !valid_id(&job.job_id) {
            return Err(BusError::Remote(ErrorReply::new(
                ErrorCode::InvalidJob,
                format!(
                    "job_id {:?} is invalid: use 1-{MAX_ID_LEN} letters, digits, '-' or '_'",
                    job.job_id
                ),
            )));
        }
        let js = self.bus.jetstream();
        self.bus
            .js_publish(&js, self.bus.names().jobs_submit(), &job, Some(&job.job_id))
            .await?;
        Ok(job.job_id)
    }

    /// The stored result of a durable job, if it has finished (kept for a day).
    pub async fn result(&self, job_id: &str) -> Result<Option<JobResult>, BusError> {
        if !valid_id(job_id) {
            return Err(BusError::Remote(ErrorReply::new(
                ErrorCode::InvalidJob,
                format!("job_id {job_id:?} is invalid"),
            )));
        }
        let bucket = self.bus.names().bucket_results();
        let kv = self
            .bus
            .jetstream()
            .get_key_value(&bucket)
            .await
            .map_err(|e| BusError::Nats(format!("cannot open bucket {bucket}: {e}")))?;
        match kv.get(job_id).await {
            Ok(Some(bytes)) => Ok(Some(self.with_outputs(self.bus.codec().decode(None, &bytes)?).await?)),
            Ok(None) => Ok(None),
            Err(e) => Err(BusError::Nats(format!("cannot read {job_id} from {bucket}: {e}"))),
        }
    }

    /// Waits up to `timeout` for a durable job's result. Subscribes before looking in the
    /// bucket, so a result published in between is not missed.
    pub async fn wait_result(&self, job_id: &str, timeout: Duration) -> Result<Option<JobResult>, BusError> {
        use futures::StreamExt;
        let subject = self.bus.names().jobs_result(job_id);
        let mut sub = self
            .bus
            .client()
            .subscribe(subject.clone())
            .await
            .map_err(|e| BusError::Nats(format!("cannot subscribe to {subject}: {e}")))?;
        if let Some(r) = self.result(job_id).await? {
            return Ok(Some(r));
        }
        match tokio::time::timeout(timeout, sub.next()).await {
            Ok(Some(msg)) => Ok(Some(self.with_outputs(self.bus.codec().decode(msg.headers.as_ref(), &msg.payload)?).await?)),
            Ok(None) | Err(_) => Ok(None),
        }
    }
}

/// Asks the policy-evaluator.
#[derive(Clone)]
pub struct PolicyClient {
    bus: Arc<Bus>,
}

impl PolicyClient {
    pub fn new(bus: Arc<Bus>) -> Self {
        PolicyClient { bus }
    }

    /// Evaluates many queries in one message; the answers come back in order.
    pub async fn evaluate(&self, queries: Vec<PolicyQuery>) -> Result<Vec<PolicyDecision>, BusError> {
        let n = queries.len();
        let reply: PolicyEvalReply = self
            .bus
            .request_idempotent(self.bus.names().policy_evaluate(), &PolicyEvalRequest { queries })
            .await?;
        if reply.decisions.len() != n {
            return Err(BusError::Remote(ErrorReply::new(
                ErrorCode::Internal,
                format!("policy-evaluator answered {} decisions for {n} queries", reply.decisions.len()),
            )));
        }
        Ok(reply.decisions)
    }
}

/// Messages and queries a [`BatchingPolicyClient`] has sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyTraffic {
    /// Requests sent to the policy-evaluator.
    pub messages: u64,
    /// Queries carried by those requests.
    pub queries: u64,
}

/// Messages sent and items (queries, calls) carried, shared by the batching clients.
#[derive(Default)]
pub(crate) struct TrafficCounters {
    pub(crate) messages: AtomicU64,
    pub(crate) items: AtomicU64,
}

/// Asks the policy-evaluator one query at a time, while concurrent queries (from any node
/// of any job) travel together: up to `max_items` queries per message, the first waiting
/// at most `window` for the others (see [`batch`]). With `max_items` 1 every query is
/// sent alone, directly, as [`PolicyClient::evaluate`] would.
#[derive(Clone)]
pub struct BatchingPolicyClient {
    direct: PolicyClient,
    batcher: Option<Batcher<PolicyQuery, PolicyDecision, Arc<BusError>>>,
    traffic: Arc<TrafficCounters>,
}

impl BatchingPolicyClient {
    /// Starts the batching task (so, when `max_items` > 1, it must be called within a
    /// Tokio runtime).
    pub fn new(bus: Arc<Bus>, cfg: BatchConfig) -> Self {
        let direct = PolicyClient::new(bus);
        let traffic = Arc::new(TrafficCounters::default());
        let batcher = (cfg.max_items > 1).then(|| {
            let client = direct.clone();
            let traffic = traffic.clone();
            Batcher::new(cfg, move |queries: Vec<PolicyQuery>| {
                let client = client.clone();
                traffic.count(queries.len());
                async move { client.evaluate(queries).await.map_err(Arc::new) }
            })
        });
        BatchingPolicyClient { direct, batcher, traffic }
    }

    /// Evaluates one query. An error of the message that carried it (timeout, no
    /// responders, an error reply) is this query's error too.
    pub async fn evaluate(&self, query: PolicyQuery) -> Result<PolicyDecision, BusError> {
        let Some(batcher) = &self.batcher else {
            self.traffic.count(1);
            let mut decisions = self.direct.evaluate(vec![query]).await?;
            return decisions.pop().ok_or_else(|| {
                BusError::Remote(ErrorReply::new(ErrorCode::Internal, "policy-evaluator sent no decision"))
            });
        };
        batcher.call(query).await.map_err(|e| match e {
            BatchError::Failed(e) => clone_bus_error(&e),
            BatchError::Mismatch { sent, answered } => BusError::Remote(ErrorReply::new(
                ErrorCode::Internal,
                format!("policy-evaluator answered {answered} decisions for {sent} queries"),
            )),
            BatchError::Closed => BusError::Remote(ErrorReply::new(
                ErrorCode::Unavailable,
                "the policy batcher stopped before answering",
            )),
        })
    }

    /// Messages and queries sent so far.
    pub fn traffic(&self) -> PolicyTraffic {
        PolicyTraffic {
            messages: self.traffic.messages.load(Ordering::Relaxed),
            queries: self.traffic.items.load(Ordering::Relaxed),
        }
    }

    /// Whether concurrent queries share messages (`max_items` > 1).
    pub fn is_batching(&self) -> bool {
        self.batcher.is_some()
    }
}

impl TrafficCounters {
    /// One message carrying `items` items.
    pub(crate) fn count(&self, items: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
    }
}

/// `BusError` is not `Clone` (its codec error is not); a batch's error goes to each caller.
pub(crate) fn clone_bus_error(e: &BusError) -> BusError {
    match e {
        BusError::Remote(r) => BusError::Remote(r.clone()),
        BusError::Timeout { subject, millis } => BusError::Timeout {
            subject: subject.clone(),
            millis: *millis,
        },
        BusError::NoResponders(s) => BusError::NoResponders(s.clone()),
        BusError::Codec(c) => BusError::Codec(match c {
            CodecError::Malformed { what, message } => CodecError::Malformed {
                what,
                message: message.clone(),
            },
            CodecError::TooLarge(s) => CodecError::TooLarge(s.clone()),
            CodecError::Encode { what, message } => CodecError::Encode {
                what,
                message: message.clone(),
            },
        }),
        BusError::Nats(s) => BusError::Nats(s.clone()),
    }
}

/// Audit queries against the indexer, and the signer's verifier keys.
#[derive(Clone)]
pub struct IndexClient {
    bus: Arc<Bus>,
}

impl IndexClient {
    pub fn new(bus: Arc<Bus>) -> Self {
        IndexClient { bus }
    }

    /// The receipt of one operation; `Ok(None)` when the indexer does not have it (yet).
    pub async fn receipt_by_operation(&self, operation_id: &str) -> Result<Option<Receipt>, BusError> {
        let r: Result<ReceiptReply, BusError> = self
            .bus
            .request(
                self.bus.names().index_receipt_by_operation(),
                &ReceiptByOperation {
                    operation_id: operation_id.to_string(),
                },
            )
            .await;
        match r {
            Ok(reply) => Ok(Some(reply.receipt)),
            Err(BusError::Remote(e)) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Both checkpoints at these tree sizes and the consistency proof between them
    /// (NOT_FOUND when no batch ended at one of the sizes). Verify it with
    /// `hsync_receipts::verify::verify_checkpoint_consistency`.
    pub async fn consistency(&self, from_size: u64, to_size: u64) -> Result<ConsistencyReply, BusError> {
        self.bus
            .request(self.bus.names().index_consistency(), &ConsistencyQuery { from_size, to_size })
            .await
    }

    /// Polls until the receipt is indexed or `timeout` passes.
    pub async fn wait_for_receipt(&self, operation_id: &str, timeout: Duration) -> Result<Option<Receipt>, BusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(r) = self.receipt_by_operation(operation_id).await? {
                return Ok(Some(r));
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    pub async fn receipts_by_job(&self, job_id: &str, cursor: Option<String>, limit: u32) -> Result<ReceiptPage, BusError> {
        self.bus
            .request(
                self.bus.names().index_receipts_by_job(),
                &ReceiptsByJob {
                    job_id: job_id.to_string(),
                    cursor,
                    limit,
                },
            )
            .await
    }

    /// The receipt with one id (its leaf index); `Ok(None)` when the indexer has none.
    pub async fn receipt_by_id(&self, leaf_index: u64) -> Result<Option<Receipt>, BusError> {
        let r: Result<ReceiptReply, BusError> =
            self.bus.request(self.bus.names().index_receipt_by_id(), &ReceiptById { leaf_index }).await;
        match r {
            Ok(reply) => Ok(Some(reply.receipt)),
            Err(BusError::Remote(e)) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of the receipts of operations started in `[from_us, to_us)`, of one
    /// operator (`id@version`) or of all.
    pub async fn receipts_by_time(&self, query: &ReceiptsByTime) -> Result<ReceiptPage, BusError> {
        self.bus.request(self.bus.names().index_receipts_by_time(), query).await
    }

    /// The signed checkpoint at a tree size where a batch ended, or the latest (`None`).
    pub async fn checkpoint(&self, tree_size: Option<u64>) -> Result<Checkpoint, BusError> {
        let reply: CheckpointReply = self.bus.request(self.bus.names().index_checkpoint(), &CheckpointQuery { tree_size }).await?;
        Ok(reply.checkpoint)
    }

    pub async fn stats(&self) -> Result<IndexStats, BusError> {
        self.bus.request(self.bus.names().index_stats(), &Empty {}).await
    }

    /// One operator definition as the indexer mirrors it from the registry; `Ok(None)` when
    /// none is registered under `id`.
    pub async fn operator(&self, id: &str) -> Result<Option<OperatorDef>, BusError> {
        let r: Result<OperatorReply, BusError> =
            self.bus.request(self.bus.names().index_operator_by_id(), &OperatorById { id: id.to_string() }).await;
        match r {
            Ok(reply) => Ok(Some(reply.operator)),
            Err(BusError::Remote(e)) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of the operators that declare a capability (all operators for `None`).
    pub async fn operators(&self, query: &OperatorsQuery) -> Result<OperatorPage, BusError> {
        self.bus.request(self.bus.names().index_operators(), query).await
    }

    /// The receipt log's verifier keys, from the receipt-signer.
    pub async fn verifier_keys(&self) -> Result<VerifierKeys, BusError> {
        self.bus.request(self.bus.names().receipts_keys(), &Empty {}).await
    }
}

/// NATS micro discovery: `$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`.
pub mod discovery {
    use futures::StreamExt;
    use std::time::Duration;

    /// Sends `$SRV.<verb>.<service>` and collects every answer that arrives within `wait`
    /// (one per replica).
    pub async fn collect(
        client: &async_nats::Client,
        verb: &str,
        service: &str,
        wait: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(inbox.clone()).await?;
        client
            .publish_with_reply(format!("$SRV.{verb}.{service}"), inbox, "".into())
            .await?;
        client.flush().await?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
            if let Ok(v) = serde_json::from_slice(&msg.payload) {
                out.push(v);
            }
        }
        Ok(out)
    }
}
