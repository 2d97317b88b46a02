//! Consistency between checkpoints, served by the indexer and checked offline:
//! `hsync log consistency` verifies that the log at a later batch extends an earlier one,
//! and the indexer refuses sizes without a checkpoint or out of order.

use std::time::Duration;

use hsync_bus::BusError;
use hsync_client::{IndexClient, JobClient};
use hsync_e2e::Cluster;
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::ErrorCode;

fn job(x: f64) -> Job {
    serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": true,
        "nodes": [{"id": "d", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": [x, 0.2]}}]
    }))
    .unwrap()
}

fn code(e: BusError) -> ErrorCode {
    match e {
        BusError::Remote(r) => r.code,
        other => panic!("not a remote error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_checkpoints_extend_earlier_ones() {
    let c = Cluster::start().await.expect("cluster starts");
    let index = IndexClient::new(c.bus.clone());
    let mut sizes = Vec::new();
    for x in [0.1, 0.2, 0.3] {
        let r = JobClient::new(c.bus.clone()).run(&job(x), Duration::from_secs(30)).await.expect("job runs");
        assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
        let receipt = &r.receipts[0];
        sizes.push(receipt.tree_size);
        index.wait_for_receipt(&receipt.operation_id, Duration::from_secs(20)).await.unwrap().expect("indexed");
    }
    let (first, last) = (sizes[0], sizes[2]);
    assert!(first < last);

    let keys = c.dir.path().join("signer").join("verifier.vkeys");
    let out = c.hsync(&["log", "consistency", "--from", &first.to_string(), "--to", &last.to_string(), "--key", keys.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("at size {last}")) && stdout.contains(&format!("extends size {first}")), "{stdout}");

    // The same through the client, and a tampered proof fails at the proof step.
    let reply = index.consistency(first, last).await.expect("a proof");
    assert_eq!((reply.from.tree_size, reply.to.tree_size), (first, last));
    let ring = hsync_receipts::keys::read_verifier_keys(&keys).unwrap();
    let mut proof: Vec<[u8; 32]> = reply.proof.iter().map(|h| h.0).collect();
    hsync_receipts::verify::verify_checkpoint_consistency(&reply.from.signed_note, &reply.to.signed_note, &proof, &ring)
        .expect("consistent");
    if let Some(h) = proof.first_mut() {
        h[0] ^= 1;
        let err = hsync_receipts::verify::verify_checkpoint_consistency(&reply.from.signed_note, &reply.to.signed_note, &proof, &ring)
            .unwrap_err();
        assert!(err.to_string().starts_with("step 4 (consistency proof)"), "{err}");
    }

    // Sizes without a checkpoint, or out of order, are refused clearly.
    assert_eq!(code(index.consistency(first, last + 1000).await.unwrap_err()), ErrorCode::NotFound);
    assert_eq!(code(index.consistency(last, first).await.unwrap_err()), ErrorCode::InvalidArgument);
    assert_eq!(code(index.consistency(0, last).await.unwrap_err()), ErrorCode::InvalidArgument);
}
