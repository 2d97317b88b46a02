//! Rotating the signing key: the log continues at the same size under a new key id, the
//! signer publishes both keys, and receipts signed before and after verify offline with
//! the keyring — while the new key alone rejects the old receipt at the signature step.

use std::process::Command;
use std::time::Duration;

use hsync_client::{IndexClient, JobClient};
use hsync_e2e::{bin_dir, Cluster};
use hsync_protocol::job::{Job, JobStatus};
use hsync_protocol::receipt::Receipt;

fn job(x: f64) -> Job {
    serde_json::from_value(serde_json::json!({
        "submitter": "alice",
        "wait_receipts": true,
        "nodes": [{"id": "d", "op": "geo.poincare.distance", "args": {"x": [0.0, 0.0], "y": [x, 0.1]}}]
    }))
    .unwrap()
}

async fn one_receipt(c: &Cluster, x: f64) -> Receipt {
    let r = JobClient::new(c.bus.clone()).run(&job(x), Duration::from_secs(30)).await.expect("job runs");
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    r.receipts.into_iter().next().expect("a receipt")
}

fn key_id(receipt: &Receipt) -> String {
    // The checkpoint's signature line: "— <name> <base64(key id ‖ signature)>"; the
    // first 5 base64 characters are 30 bits of the 4-byte key id and nothing else.
    let line = receipt.checkpoint.lines().last().expect("a signature line");
    line.rsplit(' ').next().unwrap()[..5].to_string()
}

fn hsync_verify(receipt: &Receipt, keys: &std::path::Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipt.json");
    std::fs::write(&path, serde_json::to_vec(receipt).unwrap()).unwrap();
    let out = Command::new(bin_dir().unwrap().join("hsync"))
        .args(["receipt", "verify", path.to_str().unwrap(), "--key", keys.to_str().unwrap()])
        .output()
        .expect("hsync runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_keeps_old_receipts_verifiable() {
    let mut c = Cluster::start().await.expect("cluster starts");
    let before = one_receipt(&c, 0.3).await;

    // Rotate offline, then restart the signer on the same state.
    c.kill("receipt-signer");
    let signer_dir = c.dir.path().join("signer");
    let out = Command::new(bin_dir().unwrap().join("receipt-signer"))
        .arg("rotate-key")
        .env("HSYNC_SIGNER_DIR", &signer_dir)
        .output()
        .expect("receipt-signer runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("retired ") && printed.contains("current "), "{printed}");
    c.restart("receipt-signer").await.expect("signer restarts");

    let after = one_receipt(&c, 0.4).await;
    assert!(after.tree_size > before.tree_size, "the log continues: {} then {}", before.tree_size, after.tree_size);
    assert_ne!(key_id(&before), key_id(&after), "a new key id signs after the rotation");

    // Both keys are published, current first.
    let keys = IndexClient::new(c.bus.clone()).verifier_keys().await.expect("keys");
    assert_eq!(keys.keys.len(), 2, "{keys:?}");
    let keyring = signer_dir.join("verifier.vkeys");
    assert_eq!(std::fs::read_to_string(&keyring).unwrap().lines().count(), 2);

    for (name, receipt) in [("before", &before), ("after", &after)] {
        let (ok, out) = hsync_verify(receipt, &keyring);
        assert!(ok, "{name}: {out}");
        assert!(out.contains("receipt verified"), "{name}: {out}");
    }
    // The current key alone: the new receipt verifies, the old one fails at step 1.
    let (ok, _) = hsync_verify(&after, &c.signer_vkey_path());
    assert!(ok);
    let (ok, out) = hsync_verify(&before, &c.signer_vkey_path());
    assert!(!ok);
    assert!(out.contains("step 1 (checkpoint signature)"), "{out}");
}
