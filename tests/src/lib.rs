//! The end-to-end tests' harness lives in `hsync-testkit` (`hsync bench` uses it too).

pub use hsync_testkit::cluster::{bin_dir, Cluster, SERVICE_BINARIES};

use std::collections::BTreeSet;

use hsync_protocol::receipt::SignedBatch;
use hsync_receipts::merkle::{leaf_hash, CompactRange};
use hsync_receipts::note::VerifierKey;

/// Checks a whole published log (every signed batch in order) and panics on the first
/// fault: each checkpoint verifies and is the root of every leaf before it (the log never
/// forked), leaves are contiguous, every receipt verifies, and no operation has two
/// receipts. Returns the operation ids and the distinct checkpoint sizes, in order.
pub fn check_log(batches: &[SignedBatch], keys: &[VerifierKey]) -> (BTreeSet<String>, Vec<u64>) {
    let mut ops = BTreeSet::new();
    let mut sizes = Vec::new();
    let mut range = CompactRange::new();
    for b in batches {
        let cp = hsync_receipts::note::open_checkpoint_with_any(&b.checkpoint.signed_note, keys).expect("checkpoint verifies");
        for r in &b.receipts {
            assert_eq!(r.leaf_index, range.size(), "leaves are contiguous");
            assert!(ops.insert(r.operation_id.clone()), "operation {} has two receipts", r.operation_id);
            range.append(leaf_hash(&r.leaf.0));
            let proof: Vec<_> = r.inclusion_proof.iter().map(|h| h.0).collect();
            hsync_receipts::verify::verify_receipt_with_any(&r.leaf.0, r.leaf_index, &proof, &r.checkpoint, keys)
                .expect("receipt verifies");
        }
        assert_eq!((cp.size, cp.root), (range.size(), range.root()), "checkpoint at {} is the root of the log", cp.size);
        if sizes.last() != Some(&cp.size) {
            sizes.push(cp.size);
        }
    }
    (ops, sizes)
}
