//! Calls to remote operator providers, one by one or coalesced into batches.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use hsync_bus::{Bus, BusError};
use hsync_protocol::operator::{OperatorBatch, OperatorBatchReply, OperatorCall, OperatorOutput, OperatorResult, MAX_OPERATOR_BATCH};
use hsync_protocol::{ErrorCode, ErrorReply};

use crate::batch::{BatchConfig, BatchError, Batcher};
use crate::{clone_bus_error, TrafficCounters};

/// Calls remote operator providers on `hsync.op.<operator>` or a given subject.
#[derive(Clone)]
pub struct OperatorClient {
    bus: Arc<Bus>,
}

impl OperatorClient {
    pub fn new(bus: Arc<Bus>) -> Self {
        OperatorClient { bus }
    }

    pub async fn call(&self, subject: String, call: &OperatorCall) -> Result<OperatorOutput, BusError> {
        self.bus.request_idempotent(subject, call).await
    }

    /// Sends many calls in one message to a provider's batch subject; one result per call.
    pub async fn call_batch(&self, batch_subject: String, calls: Vec<OperatorCall>) -> Result<Vec<OperatorResult>, BusError> {
        let sent = calls.len();
        let reply: OperatorBatchReply = self.bus.request_idempotent(batch_subject.clone(), &OperatorBatch { calls }).await?;
        if reply.results.len() != sent {
            return Err(BusError::Remote(ErrorReply::new(
                ErrorCode::OperatorFailed,
                format!("{batch_subject} answered {} results for {sent} calls", reply.results.len()),
            )));
        }
        Ok(reply.results)
    }
}

/// Messages and calls an [`BatchingOperatorClient`] has sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatorTraffic {
    /// Requests sent to providers (single calls and batches).
    pub messages: u64,
    /// Calls carried by those requests.
    pub calls: u64,
}

type CallBatcher = Batcher<OperatorCall, OperatorResult, Arc<BusError>>;

/// Calls remote operators one at a time, while concurrent calls to a provider that
/// accepts batches (its definition names a `batch_subject`) travel together: up to
/// `max_items` calls per message, the first waiting at most `window` for the others. One
/// batcher per batch subject, made on first use. A batch whose arguments would not fit in
/// one NATS message is split, so batching never turns a call that fits into one that
/// does not.
#[derive(Clone)]
pub struct BatchingOperatorClient {
    direct: OperatorClient,
    cfg: BatchConfig,
    batchers: Arc<Mutex<HashMap<String, CallBatcher>>>,
    traffic: Arc<TrafficCounters>,
}

impl BatchingOperatorClient {
    /// With `max_items` 1 every call is sent alone. Batchers are started on first use, so
    /// calls must come from within a Tokio runtime.
    pub fn new(bus: Arc<Bus>, cfg: BatchConfig) -> Self {
        BatchingOperatorClient {
            direct: OperatorClient::new(bus),
            cfg: BatchConfig {
                max_items: cfg.max_items.clamp(1, MAX_OPERATOR_BATCH),
                ..cfg
            },
            batchers: Arc::default(),
            traffic: Arc::default(),
        }
    }

    /// Calls one operator: through `batch_subject` when the provider has one and batching
    /// is on, else directly on `subject`. The error of this call alone, or of the message
    /// that carried it, is this call's error.
    pub async fn call(&self, subject: &str, batch_subject: Option<&str>, call: OperatorCall) -> Result<OperatorOutput, BusError> {
        let batcher = match batch_subject {
            Some(b) if self.cfg.max_items > 1 => self.batcher(b),
            _ => {
                self.traffic.count(1);
                return self.direct.call(subject.to_string(), &call).await;
            }
        };
        match batcher.call(call).await {
            Ok(result) => result.into_result().map_err(BusError::Remote),
            Err(BatchError::Failed(e)) => Err(clone_bus_error(&e)),
            Err(BatchError::Mismatch { sent, answered }) => Err(BusError::Remote(ErrorReply::new(
                ErrorCode::OperatorFailed,
                format!("the provider answered {answered} results for {sent} calls"),
            ))),
            Err(BatchError::Closed) => Err(BusError::Remote(ErrorReply::new(
                ErrorCode::Unavailable,
                "the operator batcher stopped before answering",
            ))),
        }
    }

    pub fn traffic(&self) -> OperatorTraffic {
        OperatorTraffic {
            messages: self.traffic.messages.load(Ordering::Relaxed),
            calls: self.traffic.items.load(Ordering::Relaxed),
        }
    }

    fn batcher(&self, batch_subject: &str) -> CallBatcher {
        let mut batchers = self.batchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = batchers.get(batch_subject) {
            return b.clone();
        }
        let client = self.direct.clone();
        let traffic = self.traffic.clone();
        let subject = batch_subject.to_string();
        let batcher = Batcher::new(self.cfg, move |calls: Vec<OperatorCall>| {
            let (client, traffic, subject) = (client.clone(), traffic.clone(), subject.clone());
            async move { send_split(&client, &traffic, &subject, calls).await.map_err(Arc::new) }
        });
        batchers.insert(batch_subject.to_string(), batcher.clone());
        batcher
    }
}

/// Sends `calls` in as few messages as fit under the server's maximum payload, at once,
/// and puts the answers back in order.
async fn send_split(client: &OperatorClient, traffic: &TrafficCounters, subject: &str, calls: Vec<OperatorCall>) -> Result<Vec<OperatorResult>, BusError> {
    // Half the limit leaves room for the encoding's overhead over the estimate.
    let budget = client.bus.client().server_info().max_payload / 2;
    let chunks = split_by_size(calls, budget);
    let sends = chunks.into_iter().map(|chunk| {
        traffic.count(chunk.len());
        client.call_batch(subject.to_string(), chunk)
    });
    let mut results = Vec::new();
    for r in join_all(sends).await {
        results.extend(r?);
    }
    Ok(results)
}

/// Consecutive runs of calls whose estimated size stays within `budget` (a call larger
/// than the budget travels alone).
fn split_by_size(calls: Vec<OperatorCall>, budget: usize) -> Vec<Vec<OperatorCall>> {
    let mut chunks: Vec<Vec<OperatorCall>> = Vec::new();
    let mut size = 0;
    for call in calls {
        let s = call_size(&call);
        match chunks.last_mut() {
            Some(last) if size + s <= budget => last.push(call),
            _ => {
                size = 0;
                chunks.push(vec![call]);
            }
        }
        size += s;
    }
    chunks
}

fn call_size(call: &OperatorCall) -> usize {
    64 + call.operator.len()
        + call.job_id.len()
        + call.node_id.len()
        + call.args.iter().map(|(k, v)| k.len() + v.approx_size()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsync_protocol::{Tensor, Value};
    use std::collections::BTreeMap;

    fn call(n: usize) -> OperatorCall {
        OperatorCall {
            operator: "geo.poincare.distance".into(),
            args: BTreeMap::from([("x".to_string(), Value::Tensor(Tensor::vector(vec![0.0; n])))]),
            job_id: "j".into(),
            node_id: format!("n{n}"),
        }
    }

    #[test]
    fn split_keeps_order_and_respects_the_budget() {
        let calls: Vec<OperatorCall> = [10, 10, 10, 500, 10, 10].iter().map(|&n| call(n)).collect();
        let budget = call_size(&calls[0]) * 2;
        let chunks = split_by_size(calls.clone(), budget);
        let flat: Vec<OperatorCall> = chunks.iter().flatten().cloned().collect();
        assert_eq!(flat, calls, "order and content kept");
        for c in &chunks {
            let total: usize = c.iter().map(call_size).sum();
            assert!(c.len() == 1 || total <= budget, "chunk of {} calls is {total} > {budget}", c.len());
        }
        // The oversized call travels alone; the small ones pair up.
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1, 1, 2]);
    }

    #[test]
    fn everything_fits_in_one_message_when_small() {
        let calls: Vec<OperatorCall> = (0..100).map(|_| call(3)).collect();
        assert_eq!(split_by_size(calls, 1 << 20).len(), 1);
        assert!(split_by_size(Vec::new(), 1 << 20).is_empty());
    }
}
