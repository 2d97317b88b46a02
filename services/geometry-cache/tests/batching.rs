//! The geometry-cache's batch endpoints against a real nats-server, called the way the
//! runner calls them (`BatchingOperatorClient`): concurrent calls share messages, each gets
//! its own answer, a bad call fails alone, and hostile batches are refused clearly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hsync_bus::{Bus, BusConfig, BusError, Shutdown};
use hsync_client::batch::BatchConfig;
use hsync_client::{BatchingOperatorClient, OperatorClient, OperatorTraffic};
use hsync_protocol::operator::{OperatorBatch, OperatorBatchReply, OperatorCall, MAX_OPERATOR_BATCH};
use hsync_protocol::{ErrorCode, Names, Tensor, Value};
use hsync_testkit::NatsServer;

const DISTANCE: &str = "geo.poincare.distance";

async fn connect(nats: &NatsServer) -> Arc<Bus> {
    Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "geo-batch-test").await.expect("connect"))
}

/// Starts the service in this process and waits until its batch subject answers.
async fn start(nats: &NatsServer) -> Shutdown {
    let shutdown = Shutdown::new();
    let bus = connect(nats).await;
    let signal = shutdown.signal();
    tokio::spawn(async move { geometry_cache::run(bus, geometry_cache::CacheConfig::new(1000, 1 << 26), signal).await.expect("service") });
    let probe = OperatorClient::new(connect(nats).await);
    for _ in 0..200 {
        if probe.call_batch(Names::default().operator_batch(DISTANCE), vec![]).await.is_ok() {
            return shutdown;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the geometry-cache never answered on its batch subject");
}

fn distance_call(i: usize, y0: f64) -> OperatorCall {
    OperatorCall {
        operator: DISTANCE.into(),
        args: BTreeMap::from([
            ("x".to_string(), Value::Tensor(Tensor::vector(vec![0.0, 0.0]))),
            ("y".to_string(), Value::Tensor(Tensor::vector(vec![y0, 0.0]))),
        ]),
        job_id: format!("job{i}"),
        node_id: "d".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_messages_and_a_bad_call_fails_alone() {
    let nats = NatsServer::start().expect("nats-server");
    let _service = start(&nats).await;
    let names = Names::default();
    let (single, batch) = (names.operator(DISTANCE), names.operator_batch(DISTANCE));
    // A long window: only full batches leave, so the message count is exact.
    let client = BatchingOperatorClient::new(
        connect(&nats).await,
        BatchConfig { max_items: 16, window: Duration::from_secs(3600) },
    );
    // Every 5th call puts y outside the unit ball: that call alone must fail.
    let ys: Vec<f64> = (0..64).map(|i| if i % 5 == 0 { 1.5 } else { i as f64 / 100.0 }).collect();
    let tasks: Vec<_> = ys
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let (c, single, batch) = (client.clone(), single.clone(), batch.clone());
            tokio::spawn(async move { c.call(&single, Some(&batch), distance_call(i, y)).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(20), t).await.expect("in time").expect("task");
        if i % 5 == 0 {
            let e = r.expect_err("a point outside the ball is refused");
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        } else {
            let out = r.unwrap_or_else(|e| panic!("call {i}: {e}"));
            let Value::Float(d) = out.output else { panic!("call {i}: not a number") };
            // d(0, r) = 2 artanh(r) for c = 1: each call got its own answer.
            assert!((d - 2.0 * ys[i].atanh()).abs() < 1e-12, "call {i}: {d}");
        }
    }
    assert_eq!(client.traffic(), OperatorTraffic { messages: 4, calls: 64 });

    // Batching off: one message per call, same answers.
    let direct = BatchingOperatorClient::new(connect(&nats).await, BatchConfig { max_items: 1, window: Duration::ZERO });
    let out = direct.call(&single, Some(&batch), distance_call(1, 0.5)).await.expect("direct call");
    assert!(matches!(out.output, Value::Float(d) if (d - 2.0 * 0.5f64.atanh()).abs() < 1e-12));
    assert_eq!(direct.traffic(), OperatorTraffic { messages: 1, calls: 1 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batches_get_clear_errors_and_the_service_keeps_serving() {
    let nats = NatsServer::start().expect("nats-server");
    let _service = start(&nats).await;
    let bus = connect(&nats).await;
    let subject = Names::default().operator_batch(DISTANCE);

    // Too many calls.
    let calls = vec![distance_call(0, 0.1); MAX_OPERATOR_BATCH + 1];
    let err = bus
        .request::<_, OperatorBatchReply>(subject.clone(), &OperatorBatch { calls })
        .await
        .expect_err("an oversized batch is refused");
    assert!(
        matches!(&err, BusError::Remote(r) if r.code == ErrorCode::InvalidArgument && r.message.contains("at most")),
        "{err}"
    );

    // Not a batch at all.
    let err = bus
        .request::<_, OperatorBatchReply>(subject.clone(), &serde_json::json!({"calls": "nope"}))
        .await
        .expect_err("a malformed batch is refused");
    assert_eq!(err.code(), ErrorCode::Malformed, "{err}");

    // A call for another operator, between good ones: only it fails.
    let mut calls = vec![distance_call(0, 0.1), distance_call(1, 0.2), distance_call(2, 0.3)];
    calls[1].operator = "geo.geodesic".into();
    let reply: OperatorBatchReply = bus.request(subject.clone(), &OperatorBatch { calls }).await.expect("batch");
    let failed: Vec<bool> = reply.results.iter().map(|r| r.error.is_some()).collect();
    assert_eq!(failed, vec![false, true, false]);
    assert!(reply.results[1].error.as_ref().unwrap().message.contains("geo.geodesic"));

    // Still serving.
    let reply: OperatorBatchReply = bus
        .request(subject, &OperatorBatch { calls: vec![distance_call(3, 0.25)] })
        .await
        .expect("the service still answers");
    assert!(matches!(reply.results[0].output, Some(Value::Float(d)) if (d - 2.0 * 0.25f64.atanh()).abs() < 1e-12));
}
