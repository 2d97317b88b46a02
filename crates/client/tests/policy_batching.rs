//! `BatchingPolicyClient` against a real nats-server. A small responder on the
//! policy-evaluator's subject stands in for the evaluator (the real one is covered by the
//! end-to-end suite): it answers each query with its operator name as the deciding policy,
//! denies operators starting with `deny`, answers a message holding a `boom` query with an
//! error reply, and counts the messages it gets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hsync_bus::{Bus, BusConfig, BusError};
use hsync_client::batch::BatchConfig;
use hsync_client::{BatchingPolicyClient, PolicyTraffic};
use hsync_protocol::codec::encode_error;
use hsync_protocol::policy::{PolicyDecision, PolicyEvalReply, PolicyEvalRequest, PolicyQuery, Stage};
use hsync_protocol::{ErrorCode, ErrorReply, Format};
use hsync_testkit::NatsServer;

const LONG: Duration = Duration::from_secs(3600);
const BOUND: Duration = Duration::from_secs(20);

fn query(operator: &str) -> PolicyQuery {
    PolicyQuery {
        principal: "alice".into(),
        stage: Stage::Pre,
        operator: operator.into(),
        capabilities: vec![],
        context: Default::default(),
    }
}

/// Serves the policy subject until the test ends; returns the message counter once the
/// server routes to it.
async fn responder(bus: Arc<Bus>) -> Arc<AtomicUsize> {
    let messages = Arc::new(AtomicUsize::new(0));
    let mut sub = bus
        .primary()
        .subscribe(bus.names().policy_evaluate())
        .await
        .expect("subscribe");
    // `flush` only writes the SUB to the socket; it does not wait for the server to
    // process it, so a request from another connection could still find no responder.
    // The server handles one connection's commands in order: once a later subscription
    // on this connection answers, the policy subscription is in place too.
    let mut ready = bus.primary().subscribe("test.responder.ready").await.expect("subscribe");
    let ready_bus = bus.clone();
    tokio::spawn(async move {
        while let Some(msg) = ready.next().await {
            if let Some(reply) = msg.reply {
                let _ = ready_bus.primary().publish(reply, "ok".into()).await;
            }
        }
    });
    for attempt in 0.. {
        match tokio::time::timeout(Duration::from_secs(1), bus.primary().request("test.responder.ready", "".into())).await {
            Ok(Ok(_)) => break,
            _ if attempt < 100 => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => panic!("the responder never became reachable"),
        }
    }
    let seen = messages.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let req: PolicyEvalRequest = bus.codec().decode(msg.headers.as_ref(), &msg.payload).expect("request");
            let reply = msg.reply.expect("a reply subject");
            let (h, body) = if req.queries.iter().any(|q| q.operator == "boom") {
                encode_error(&ErrorReply::new(ErrorCode::Internal, "boom in this batch"), Format::MsgPack)
            } else {
                let decisions = req
                    .queries
                    .iter()
                    .map(|q| PolicyDecision {
                        allowed: !q.operator.starts_with("deny"),
                        policies: vec![q.operator.clone()],
                        errors: vec![],
                        cached: false,
                    })
                    .collect();
                bus.codec()
                    .encode(&PolicyEvalReply { decisions }, Format::MsgPack)
                    .expect("encode")
            };
            bus.primary().publish_with_headers(reply, h, body).await.expect("reply");
        }
    });
    messages
}

async fn connect(nats: &NatsServer) -> Arc<Bus> {
    Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "client-test").await.expect("connect"))
}

/// Evaluates `operators` concurrently, one task each; results in the order given.
async fn evaluate_all(client: &BatchingPolicyClient, operators: Vec<String>) -> Vec<Result<PolicyDecision, BusError>> {
    let tasks: Vec<_> = operators
        .into_iter()
        .map(|op| {
            let c = client.clone();
            tokio::spawn(async move { c.evaluate(query(&op)).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(tokio::time::timeout(BOUND, t).await.expect("answered in time").expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_share_messages_and_each_gets_its_decision() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = connect(&nats).await;
    let seen = responder(connect(&nats).await).await;
    // A long window: only full batches leave, so the counts are exact.
    let client = BatchingPolicyClient::new(bus, BatchConfig { max_items: 16, window: LONG });
    assert!(client.is_batching());
    let ops: Vec<String> = (0..64).map(|i| if i % 3 == 0 { format!("deny.{i}") } else { format!("op.{i}") }).collect();
    let out = evaluate_all(&client, ops.clone()).await;
    for (op, r) in ops.iter().zip(out) {
        let d = r.unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(d.policies, vec![op.clone()], "{op} got another query's decision");
        assert_eq!(d.allowed, !op.starts_with("deny"));
    }
    assert_eq!(client.traffic(), PolicyTraffic { messages: 4, queries: 64 });
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_query_is_not_held_and_max_one_sends_each_alone() {
    let nats = NatsServer::start().expect("nats-server");
    let seen = responder(connect(&nats).await).await;

    let batching = BatchingPolicyClient::new(connect(&nats).await, BatchConfig::default());
    let d = tokio::time::timeout(Duration::from_secs(2), batching.evaluate(query("op.lone")))
        .await
        .expect("a lone query is answered within 2 s")
        .expect("decision");
    assert_eq!(d.policies, vec!["op.lone".to_string()]);
    assert_eq!(batching.traffic(), PolicyTraffic { messages: 1, queries: 1 });

    let off = BatchingPolicyClient::new(connect(&nats).await, BatchConfig { max_items: 1, window: LONG });
    assert!(!off.is_batching());
    let ops: Vec<String> = (0..10).map(|i| format!("op.{i}")).collect();
    for (op, r) in ops.iter().zip(evaluate_all(&off, ops.clone()).await) {
        assert_eq!(r.expect("decision").policies, vec![op.clone()]);
    }
    assert_eq!(off.traffic(), PolicyTraffic { messages: 10, queries: 10 });
    assert_eq!(seen.load(Ordering::SeqCst), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_for_the_message_reaches_every_query_in_it() {
    let nats = NatsServer::start().expect("nats-server");
    let _seen = responder(connect(&nats).await).await;
    let client = BatchingPolicyClient::new(connect(&nats).await, BatchConfig { max_items: 8, window: LONG });
    // The first 8 share a message with `boom`; the next 8 do not.
    let mut ops: Vec<String> = (0..7).map(|i| format!("op.{i}")).collect();
    ops.insert(3, "boom".into());
    let first = evaluate_all(&client, ops).await;
    for r in first {
        match r {
            Err(BusError::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::Internal);
                assert!(e.message.contains("boom in this batch"), "{e}");
            }
            other => panic!("expected the batch's error reply, got {other:?}"),
        }
    }
    let ops: Vec<String> = (0..8).map(|i| format!("op.{i}")).collect();
    assert!(evaluate_all(&client, ops).await.iter().all(Result::is_ok), "the next batch is unaffected");

    // Nobody serves the subject of another installation: every caller hears so.
    let mut cfg = BusConfig::for_url(&nats.url());
    cfg.prefix = "elsewhere".into();
    let lonely = Arc::new(Bus::connect(&cfg, "client-test").await.expect("connect"));
    let client = BatchingPolicyClient::new(lonely, BatchConfig { max_items: 5, window: LONG });
    let out = evaluate_all(&client, (0..5).map(|i| format!("op.{i}")).collect()).await;
    for r in out {
        assert!(matches!(r, Err(BusError::NoResponders(_))), "{r:?}");
    }
    assert_eq!(client.traffic(), PolicyTraffic { messages: 1, queries: 5 });
}
