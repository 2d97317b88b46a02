//! Outputs larger than the NATS maximum payload travel through the JetStream object store,
//! on request/reply and on the durable path, and the client puts them back in place.

use std::time::Duration;

use hsync_client::JobClient;
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus, ObjectRef};
use hsync_protocol::{ErrorCode, Value};

/// The outer product of two 600-element vectors (as 600×1 and 1×600 matrices): 360,000
/// numbers, about 2.9 MB of output from a job of a few kilobytes.
fn outer_product_job(job_id: &str) -> Job {
    let col: Vec<Vec<f64>> = (0..600).map(|i| vec![i as f64]).collect();
    let row: Vec<Vec<f64>> = vec![(0..600).map(|j| j as f64 * 0.5).collect()];
    serde_json::from_value(serde_json::json!({
        "job_id": job_id,
        "submitter": "alice",
        "nodes": [
            {"id": "outer", "op": "mat.matmul", "args": {"a": col, "b": row}},
            {"id": "small", "op": "vec.norm", "args": {"v": [3.0, 4.0]}}
        ]
    }))
    .expect("test job parses")
}

fn check_outer(v: &Value) {
    let Value::Tensor(t) = v else { panic!("expected a matrix, got {}", v.type_name()) };
    assert_eq!(t.shape(), &[600, 600]);
    for (i, j) in [(0, 0), (1, 2), (599, 599), (300, 17)] {
        assert_eq!(t.data()[i * 600 + j], i as f64 * j as f64 * 0.5, "element ({i}, {j})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_over_the_max_payload_come_back_whole() {
    let c = Cluster::start().await.expect("cluster starts");
    let client = JobClient::new(c.bus.clone());
    let max_payload = c.bus.client().server_info().max_payload as u64;

    // Request/reply.
    let r = client
        .run(&outer_product_job("large-1"), Duration::from_secs(60))
        .await
        .expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    let object = r.outputs_object.clone().expect("the outputs went through the object store");
    assert!(object.size > max_payload, "object of {} bytes, max payload {max_payload}", object.size);
    check_outer(&r.outputs["outer"]);
    assert_eq!(r.outputs["small"], Value::Float(5.0), "small outputs travel with the large ones");

    // Durable path: the stored result refers to the same kind of object.
    client.submit(&outer_product_job("large-durable")).await.expect("submit");
    let d = client
        .wait_result("large-durable", Duration::from_secs(60))
        .await
        .expect("result")
        .expect("a result within 60 s");
    assert_eq!(d.status, JobStatus::Succeeded, "{:?}", d.error);
    assert!(d.outputs_object.is_some());
    check_outer(&d.outputs["outer"]);
    let again = client.result("large-durable").await.expect("stored").expect("kept");
    assert_eq!(again.outputs, d.outputs);

    // Small results stay inline.
    let mut small = outer_product_job("small-1");
    small.outputs = vec!["small".into()];
    let s = client.run(&small, Duration::from_secs(30)).await.expect("small job");
    assert!(s.outputs_object.is_none());
    assert_eq!(s.outputs["small"], Value::Float(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_object_reference_fails_clearly() {
    let c = Cluster::start().await.expect("cluster starts");
    // Make the store exist, then ask for objects that are not there or not ours.
    JobClient::new(c.bus.clone())
        .run(&outer_product_job("large-2"), Duration::from_secs(60))
        .await
        .expect("job runs");
    let names = c.bus.names();
    let missing = ObjectRef {
        bucket: names.bucket_outputs(),
        name: "no-such-object".into(),
        size: 10,
    };
    let e = hsync_client::large::fetch_outputs(&c.bus, &missing).await.expect_err("missing object");
    assert!(e.to_string().contains("no-such-object"), "{e}");
    let foreign = ObjectRef {
        bucket: "someone_elses".into(),
        name: "x".into(),
        size: 10,
    };
    let e = hsync_client::large::fetch_outputs(&c.bus, &foreign).await.expect_err("foreign bucket");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let huge = ObjectRef {
        bucket: names.bucket_outputs(),
        name: "x".into(),
        size: hsync_client::large::MAX_OUTPUTS_OBJECT + 1,
    };
    let e = hsync_client::large::fetch_outputs(&c.bus, &huge).await.expect_err("over the limit");
    assert_eq!(e.code(), ErrorCode::PayloadTooLarge, "{e}");
}
