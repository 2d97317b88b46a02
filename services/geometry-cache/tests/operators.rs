//! The new geometry operators through a real nats-server: an embedding and a nearest-
//! neighbour query answer, a repeat comes from the cache, and a reply too large for a
//! NATS message is refused with a clear error rather than lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hsync_bus::{Bus, BusConfig, Shutdown};
use hsync_client::OperatorClient;
use hsync_protocol::operator::OperatorCall;
use hsync_protocol::{ErrorCode, Names, Tensor, Value};
use hsync_testkit::NatsServer;

async fn connect(nats: &NatsServer) -> Arc<Bus> {
    Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "geo-ops-test").await.expect("connect"))
}

async fn start(nats: &NatsServer) -> (Shutdown, OperatorClient) {
    let shutdown = Shutdown::new();
    let bus = connect(nats).await;
    let signal = shutdown.signal();
    tokio::spawn(async move {
        geometry_cache::run(bus, geometry_cache::CacheConfig::new(1000, 1 << 26), signal).await.expect("service")
    });
    let client = OperatorClient::new(connect(nats).await);
    for _ in 0..200 {
        if client.call_batch(Names::default().operator_batch("geo.embed"), vec![]).await.is_ok() {
            return (shutdown, client);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the geometry-cache never answered");
}

fn call(op: &str, args: Vec<(&str, Value)>) -> OperatorCall {
    OperatorCall {
        operator: op.into(),
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>(),
        job_id: "job".into(),
        node_id: "n".into(),
    }
}

fn edges(pairs: impl IntoIterator<Item = (i64, i64)>) -> Value {
    Value::Array(pairs.into_iter().map(|(u, v)| Value::Array(vec![Value::Int(u), Value::Int(v)])).collect())
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    let Value::Map(m) = v else { panic!("not a map: {v:?}") };
    m.get(key).unwrap_or_else(|| panic!("no `{key}`"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_neighbours_over_nats() {
    let nats = NatsServer::start().expect("nats-server");
    let (_service, client) = start(&nats).await;
    let names = Names::default();

    // A binary tree of 127 nodes, embedded with the derived τ: every node's neighbours
    // come first (MAP 1), and the repeat is served from the cache.
    let tree = edges((1..127).map(|i| ((i - 1) / 2, i)));
    let embed = call("geo.embed", vec![("edges", tree), ("quality_sources", Value::Int(200))]);
    let first = client.call(names.operator("geo.embed"), &embed).await.expect("embed");
    assert!(!first.cached);
    let Value::Tensor(points) = field(&first.output, "points") else { panic!("points") };
    assert_eq!(points.shape(), &[127, 2]);
    assert_eq!(field(&first.output, "max_depth"), &Value::Int(6));
    let quality = field(&first.output, "quality");
    assert_eq!(field(quality, "exact"), &Value::Bool(true));
    assert_eq!(field(quality, "mean_average_precision"), &Value::Float(1.0));
    let Value::Float(worst) = field(quality, "worst_distortion") else { panic!("worst") };
    assert!(*worst <= 1.1 + 1e-9, "{worst}");
    let again = client.call(names.operator("geo.embed"), &embed).await.expect("embed again");
    assert!(again.cached);
    assert_eq!(again.output, first.output);

    // The nearest neighbour of a point among points it belongs to is itself, at distance 0.
    let pts = Value::Array((0..50).map(|i| Value::Tensor(Tensor::vector(vec![i as f64 / 60.0, 0.1]))).collect());
    let knn = call("geo.knn", vec![("points", pts), ("query", Value::Tensor(Tensor::vector(vec![20.0 / 60.0, 0.1]))), ("neighbours", Value::Int(3))]);
    let out = client.call(names.operator("geo.knn"), &knn).await.expect("knn");
    let Value::Array(indices) = field(&out.output, "indices") else { panic!("indices") };
    assert_eq!(indices[0], Value::Int(20));
    assert_eq!(indices.len(), 3);

    // A graph that is not connected is refused, naming the problem.
    let bad = call("geo.embed", vec![("edges", edges([(0, 1), (2, 3)]))]);
    let err = client.call(names.operator("geo.embed"), &bad).await.expect_err("disconnected");
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(err.to_string().contains("not connected"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_max_payload_is_an_error_not_a_timeout() {
    let nats = NatsServer::start().expect("nats-server");
    let (_service, client) = start(&nats).await;
    let max_payload = connect(&nats).await.client().server_info().max_payload;
    // A random recursive tree with a short τ puts every node at a distinct point with
    // dense coordinates: 64 bytes per node in dimension 8, which the bus's compression
    // cannot shrink much. Four times max_payload of raw coordinates is well over it.
    let n = (max_payload / 16) as i64;
    let mut seed = 7u64;
    let tree = edges((1..n).map(|i| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as i64 % i, i)
    }));
    let big = call(
        "geo.embed",
        vec![("edges", tree), ("dim", Value::Int(8)), ("tau", Value::Float(0.1)), ("quality_sources", Value::Int(0))],
    );
    let reply = tokio::time::timeout(Duration::from_secs(60), client.call(Names::default().operator("geo.embed"), &big))
        .await
        .expect("an answer, not silence");
    let err = match reply {
        Ok(out) => panic!("a reply of {} bytes came back whole", out.output.approx_size()),
        Err(e) => e,
    };
    assert_eq!(err.code(), ErrorCode::PayloadTooLarge, "{err}");
    assert!(err.to_string().contains("max_payload"), "{err}");
    // The service keeps serving.
    let small = call("geo.embed", vec![("edges", edges([(0, 1)]))]);
    client.call(Names::default().operator("geo.embed"), &small).await.expect("still serving");
}
