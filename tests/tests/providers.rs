//! Any program that answers `hsync.op`-style requests on a subject and registers an
//! OperatorDef is an operator provider. Here the provider is plain NATS + MessagePack,
//! the way a program in another language would write it.

use std::time::Duration;

use futures::StreamExt;
use hsync_client::registry::OperatorRegistry;
use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::operator::{ArgKind, ArgSpec, OperatorCall, OperatorDef, OperatorOutput, Provider};
use hsync_protocol::{Codec, ErrorCode, Value};

fn sum_of_squares_def(subject: &str) -> OperatorDef {
    OperatorDef {
        id: "acme.sum_of_squares".into(),
        version: "1".into(),
        capabilities: vec!["compute".into()],
        deterministic: true,
        cacheable: true,
        provider: Provider::Nats {
            subject: subject.into(),
            batch_subject: None,
        },
        args: vec![ArgSpec {
            name: "v".into(),
            kind: ArgKind::Vector,
            required: true,
        }],
        cost_hint: 1,
        description: "Σ v_i², served by an external provider".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_program_serving_a_subject_is_an_operator_provider() {
    let c = Cluster::start().await.expect("cluster starts");
    let nats = c.bus.primary().clone();
    let subject = "acme.ops.sum_of_squares";
    let mut requests = nats.queue_subscribe(subject, "acme".into()).await.unwrap();
    let replies = nats.clone();
    tokio::spawn(async move {
        let codec = Codec::default();
        while let Some(msg) = requests.next().await {
            let call: OperatorCall = codec.decode(msg.headers.as_ref(), &msg.payload).expect("a call");
            let v = call.args["v"].as_vector().expect("the runner checked the kind");
            let out = OperatorOutput {
                output: Value::Float(v.iter().map(|x| x * x).sum()),
                cached: false,
            };
            let body = rmp_serde::to_vec_named(&out).unwrap();
            replies.publish(msg.reply.expect("a request"), body.into()).await.unwrap();
        }
    });

    let registry = OperatorRegistry::new(c.bus.clone());
    registry.register(&sum_of_squares_def(subject)).await.expect("registered");
    let listed = registry.list().await.unwrap();
    assert!(listed.iter().any(|d| d.id == "acme.sum_of_squares"), "listed");
    assert!(listed.iter().any(|d| d.id == "vec.add" && d.provider == Provider::Builtin), "built-ins listed");
    assert_eq!(registry.get("acme.sum_of_squares").await.unwrap(), Some(sum_of_squares_def(subject)));

    let job: Job = serde_json::from_value(serde_json::json!({
        "nodes": [
            {"id": "a", "op": "const", "args": {"value": {"lit": [1.0, 2.0, 3.0]}}},
            {"id": "s", "op": "acme.sum_of_squares@1", "args": {"v": {"ref": "a"}}}
        ]
    }))
    .unwrap();
    let jobs = JobClient::new(c.bus.clone());
    let r = jobs.run(&job, Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
    assert_eq!(r.outputs["s"].as_f64(), Some(14.0));
    assert_eq!(r.nodes[1].operator, "acme.sum_of_squares@1");

    // The runner checks argument kinds before the provider is asked.
    let bad: Job = serde_json::from_value(serde_json::json!({
        "nodes": [{"id": "s", "op": "acme.sum_of_squares", "args": {"v": "not a vector"}}]
    }))
    .unwrap();
    let e = jobs.run(&bad, Duration::from_secs(30)).await.unwrap_err().to_reply();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");

    // Built-ins cannot be replaced, and a definition must name a concrete subject.
    let mut hijack = sum_of_squares_def(subject);
    hijack.id = "vec.add".into();
    let e = registry.register(&hijack).await.unwrap_err().to_reply();
    assert!(e.message.contains("built-in"), "{e}");
    let e = registry.register(&sum_of_squares_def("acme.>")).await.unwrap_err().to_reply();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let mut builtin = sum_of_squares_def(subject);
    builtin.provider = Provider::Builtin;
    assert!(registry.register(&builtin).await.is_err());

    // Removed: the next job that needs it is told so (the runner follows the bucket).
    assert!(registry.remove("acme.sum_of_squares").await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match jobs.run(&job, Duration::from_secs(30)).await {
            Err(e) if e.to_reply().code == ErrorCode::UnknownOperator => break,
            _ if std::time::Instant::now() > deadline => panic!("the runner still runs a removed operator"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
