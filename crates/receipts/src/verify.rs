//! Offline receipt verification: everything a third party needs to check
//! that one entry is in a signed log, in one call, with no network access.
//!
//! A receipt is (leaf data, leaf index, inclusion proof, signed checkpoint).
//! The steps run in a fixed order and the error names the step that failed,
//! so "the log's signature is wrong" is never confused with "this entry is
//! not in the log":
//!
//! 1. **checkpoint signature** — the signed note carries a valid signature by
//!    the log's verifier key and its body is a well-formed checkpoint;
//! 2. **inclusion proof** — `leaf_hash(leaf_data)` at `leaf_index`, combined
//!    with the proof, yields the checkpoint's root for its tree size.

use crate::merkle::{self, Hash};
use crate::note::{self, Checkpoint, NoteError, VerifierKey};

/// Which verification step failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptVerifyError {
    /// Step 1: checkpoint signature or format.
    #[error("step 1 (checkpoint signature) failed: {0}")]
    Signature(#[source] NoteError),
    /// Step 2: leaf hash + inclusion proof against the checkpoint.
    #[error("step 2 (inclusion proof) failed: {0}")]
    Inclusion(#[source] merkle::VerifyError),
}

/// Verify a receipt and return the checkpoint it is anchored to (callers
/// may want to check its origin or compare sizes across receipts).
pub fn verify_receipt(
    leaf_data: &[u8],
    leaf_index: u64,
    proof: &[Hash],
    signed_note: &str,
    key: &VerifierKey,
) -> Result<Checkpoint, ReceiptVerifyError> {
    verify_receipt_with_any(leaf_data, leaf_index, proof, signed_note, std::slice::from_ref(key))
}

/// [`verify_receipt`] against a keyring: the checkpoint may be signed by any of `keys`
/// (after a rotation, old receipts carry the retired key's signature).
pub fn verify_receipt_with_any(
    leaf_data: &[u8],
    leaf_index: u64,
    proof: &[Hash],
    signed_note: &str,
    keys: &[VerifierKey],
) -> Result<Checkpoint, ReceiptVerifyError> {
    let checkpoint =
        note::open_checkpoint_with_any(signed_note, keys).map_err(ReceiptVerifyError::Signature)?;
    let leaf = merkle::leaf_hash(leaf_data);
    merkle::verify_inclusion(leaf_index, checkpoint.size, &leaf, proof, &checkpoint.root)
        .map_err(ReceiptVerifyError::Inclusion)?;
    Ok(checkpoint)
}

/// Which step of a checkpoint-to-checkpoint consistency check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyCheckError {
    /// Step 1: the earlier checkpoint's signature or format.
    #[error("step 1 (first checkpoint signature) failed: {0}")]
    FirstSignature(#[source] NoteError),
    /// Step 2: the later checkpoint's signature or format.
    #[error("step 2 (second checkpoint signature) failed: {0}")]
    SecondSignature(#[source] NoteError),
    /// The two checkpoints are of different logs.
    #[error("step 3 (same log) failed: the checkpoints name logs {0:?} and {1:?}")]
    DifferentLogs(String, String),
    /// Step 4: the proof does not take the first root to the second.
    #[error("step 4 (consistency proof) failed: {0}")]
    Proof(#[source] merkle::VerifyError),
}

/// Check offline that the log at `later` extends the log at `earlier`: both signed
/// notes verify with one of `keys`, name the same log, and `proof` links their roots.
pub fn verify_checkpoint_consistency(
    earlier: &str,
    later: &str,
    proof: &[Hash],
    keys: &[VerifierKey],
) -> Result<(Checkpoint, Checkpoint), ConsistencyCheckError> {
    let first = note::open_checkpoint_with_any(earlier, keys).map_err(ConsistencyCheckError::FirstSignature)?;
    let second = note::open_checkpoint_with_any(later, keys).map_err(ConsistencyCheckError::SecondSignature)?;
    if first.origin != second.origin {
        return Err(ConsistencyCheckError::DifferentLogs(first.origin, second.origin));
    }
    merkle::verify_consistency(first.size, second.size, proof, &first.root, &second.root)
        .map_err(ConsistencyCheckError::Proof)?;
    Ok((first, second))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::merkle::CompactRange;
    use crate::note::sign_checkpoint;

    struct Receipt {
        data: Vec<u8>,
        index: u64,
        proof: Vec<Hash>,
        note: String,
    }

    /// A log of 300 entries appended in uneven batches; every entry gets a
    /// receipt against the checkpoint signed right after its batch.
    fn build_log(key: &SigningKey) -> Vec<Receipt> {
        let mut log = CompactRange::new();
        let mut receipts = Vec::new();
        let mut next = 0u64;
        for batch_len in [1usize, 2, 7, 64, 1, 33, 100, 92].iter().copied() {
            let data: Vec<Vec<u8>> = (next..next + batch_len as u64)
                .map(|i| format!("result #{i}").into_bytes())
                .collect();
            let leaves: Vec<Hash> = data.iter().map(|d| merkle::leaf_hash(d)).collect();
            let batch = log.append_batch(&leaves);
            let cp = Checkpoint {
                origin: key.name().to_string(),
                size: batch.new_size,
                root: batch.root,
            };
            let note = sign_checkpoint(&cp, key).unwrap();
            for (j, (data, proof)) in data.into_iter().zip(batch.proofs).enumerate() {
                receipts.push(Receipt {
                    data,
                    index: batch.old_size + j as u64,
                    proof,
                    note: note.clone(),
                });
            }
            next += batch_len as u64;
        }
        assert_eq!(log.size(), 300);
        receipts
    }

    #[test]
    fn checkpoints_are_consistent_and_each_failure_names_its_step() {
        let key = SigningKey::from_seed("hsync.example/log", &[1u8; 32]).unwrap();
        let ring = [key.verifier_key()];
        let receipts = build_log(&key);
        let leaves: Vec<Hash> = receipts.iter().map(|r| merkle::leaf_hash(&r.data)).collect();
        // Checkpoints after the batches ending at 10 and 300.
        let (early, late) = (&receipts[9].note, &receipts[299].note);
        let proof = merkle::consistency_proof(10, &leaves);
        let (a, b) = verify_checkpoint_consistency(early, late, &proof, &ring).unwrap();
        assert_eq!((a.size, b.size), (10, 300));

        let mut bad = proof.clone();
        bad[0][0] ^= 1;
        let err = verify_checkpoint_consistency(early, late, &bad, &ring).unwrap_err();
        assert!(err.to_string().starts_with("step 4 (consistency proof) failed"), "{err}");
        let tampered = late.replacen("300", "301", 1);
        let err = verify_checkpoint_consistency(early, &tampered, &proof, &ring).unwrap_err();
        assert!(err.to_string().starts_with("step 2 (second checkpoint signature) failed"), "{err}");
        let stranger = SigningKey::from_seed("hsync.example/log", &[2u8; 32]).unwrap();
        let err = verify_checkpoint_consistency(early, late, &proof, &[stranger.verifier_key()]).unwrap_err();
        assert!(err.to_string().starts_with("step 1 (first checkpoint signature) failed"), "{err}");
        // Swapped: the proof does not take the later root back to the earlier one.
        assert!(verify_checkpoint_consistency(late, early, &proof, &ring).is_err());
    }

    #[test]
    fn every_receipt_verifies_and_each_tamper_names_its_step() {
        let key = SigningKey::from_seed("hsync.example/log", &[1u8; 32]).unwrap();
        let vk = key.verifier_key();
        let receipts = build_log(&key);
        for r in &receipts {
            let cp = verify_receipt(&r.data, r.index, &r.proof, &r.note, &vk).unwrap();
            assert_eq!(cp.origin, "hsync.example/log");
            assert!(r.index < cp.size);
        }

        let r = &receipts[150];
        let step2 = |res: Result<Checkpoint, ReceiptVerifyError>| {
            let err = res.unwrap_err();
            assert!(matches!(err, ReceiptVerifyError::Inclusion(_)), "{err}");
            assert!(
                err.to_string()
                    .starts_with("step 2 (inclusion proof) failed: "),
                "{err}"
            );
        };
        let step1 = |res: Result<Checkpoint, ReceiptVerifyError>| {
            let err = res.unwrap_err();
            assert!(matches!(err, ReceiptVerifyError::Signature(_)), "{err}");
            assert!(
                err.to_string()
                    .starts_with("step 1 (checkpoint signature) failed: "),
                "{err}"
            );
        };

        let mut data = r.data.clone();
        data[0] ^= 1;
        step2(verify_receipt(&data, r.index, &r.proof, &r.note, &vk));
        let mut proof = r.proof.clone();
        proof[0][5] ^= 0x10;
        step2(verify_receipt(&r.data, r.index, &proof, &r.note, &vk));
        step2(verify_receipt(&r.data, r.index + 1, &r.proof, &r.note, &vk));
        step2(verify_receipt(
            &r.data,
            r.index,
            &r.proof[1..],
            &r.note,
            &vk,
        ));

        // Flip one bit of the note's body (the size digit) and of its signature.
        let mut note = r.note.clone().into_bytes();
        note[r.note.find('\n').unwrap() + 1] ^= 0x01;
        step1(verify_receipt(
            &r.data,
            r.index,
            &r.proof,
            &String::from_utf8(note).unwrap(),
            &vk,
        ));
        let mut note = r.note.clone().into_bytes();
        let sig_at = note.len() - 10;
        note[sig_at] = if note[sig_at] == b'A' { b'B' } else { b'A' };
        step1(verify_receipt(
            &r.data,
            r.index,
            &r.proof,
            &String::from_utf8(note).unwrap(),
            &vk,
        ));

        let stranger = SigningKey::from_seed("hsync.example/log", &[2u8; 32]).unwrap();
        step1(verify_receipt(
            &r.data,
            r.index,
            &r.proof,
            &r.note,
            &stranger.verifier_key(),
        ));
        step1(verify_receipt(&r.data, r.index, &r.proof, "", &vk));

        // A receipt checked against a *later* checkpoint fails at step 2:
        // the proof is for the older tree size.
        let last = receipts.last().unwrap();
        step2(verify_receipt(
            &receipts[0].data,
            0,
            &receipts[0].proof,
            &last.note,
            &vk,
        ));
    }
}
