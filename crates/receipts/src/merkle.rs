//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and verification (SHA-256).
//!
//! Two kinds of functions live here:
//!
//! * **Reference functions** ([`root_from_leaf_hashes`], [`inclusion_proof`],
//!   [`consistency_proof`]) take the *whole* list of leaf hashes and follow the
//!   recursive definitions of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 literally.
//!   They are deliberately simple so tests (and anyone auditing a log offline)
//!   can trust them; they cost O(n) per call.
//! * **The append-only builder** [`CompactRange`] keeps only O(log n) hashes
//!   and can still produce inclusion proofs for every leaf of a freshly
//!   appended batch ([`CompactRange::append_batch`]); this is what a log
//!   writer uses so it never needs the full tree in memory.
//!
//! The verifiers ([`verify_inclusion`], [`verify_consistency`]) implement the
//! RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms and are the only functions here
//! that see untrusted input; they never panic and say what failed.

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix for leaves (RFC 6962 §2.1) so a leaf can never be
/// confused with an interior node (second-preimage protection).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix for interior nodes.
const NODE_PREFIX: u8 = 0x01;

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `SHA-256(0x00 || data)`: the hash of one log entry.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    finish(ctx)
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// `SHA-256("")`: the root of the empty tree (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

/// The largest power of two strictly less than `n` (requires `n >= 2`): the
/// split point RFC 9162 uses at every interior node.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

fn split_point_usize(n: usize) -> usize {
    // Lossless: a slice length always fits in u64 and the result is < n.
    split_point(n as u64) as usize
}

/// MTH(D[n]) over already-hashed leaves (RFC 9162 §2.1.1).
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point_usize(n);
            node_hash(
                &root_from_leaf_hashes(&leaves[..k]),
                &root_from_leaf_hashes(&leaves[k..]),
            )
        }
    }
}

/// PATH(m, D[n]) (RFC 9162 §2.1.3.1): the audit path for leaf `index`, ordered
/// from the leaf's sibling up to the child of the root.
///
/// Returns an empty vector when `index` is out of range (such a "proof" can
/// never verify, because the verifier checks the index first).
pub fn inclusion_proof(index: u64, leaves: &[Hash]) -> Vec<Hash> {
    let mut out = Vec::new();
    if index < leaves.len() as u64 {
        path(index as usize, leaves, &mut out);
    }
    out
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point_usize(n);
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root_from_leaf_hashes(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root_from_leaf_hashes(&leaves[..k]));
    }
}

/// PROOF(m, D[n]) (RFC 9162 §2.1.4.1): proof that the tree of the first `m`
/// leaves is a prefix of the tree of all `leaves`.
///
/// Returns an empty vector when `m == 0` or `m >= leaves.len()` (for `m == n`
/// that *is* the proof; the other cases have no meaningful proof).
pub fn consistency_proof(m: u64, leaves: &[Hash]) -> Vec<Hash> {
    let mut out = Vec::new();
    if m > 0 && m < leaves.len() as u64 {
        subproof(m as usize, leaves, true, &mut out);
    }
    out
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root_from_leaf_hashes(leaves));
        }
        return;
    }
    let k = split_point_usize(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root_from_leaf_hashes(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root_from_leaf_hashes(&leaves[..k]));
    }
}

/// Why a proof was rejected. Each variant names the failed check so an
/// operator can tell a stale checkpoint from a corrupted proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The proof has the wrong number of hashes for these sizes/indices.
    #[error("wrong proof length: expected {expected} hashes, got {got}")]
    WrongProofLength { expected: u64, got: u64 },
    /// The recomputed (new/second) root differs from the claimed root.
    #[error(
        "root mismatch: proof yields {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    RootMismatch { computed: Hash, expected: Hash },
    /// Consistency only: the recomputed old root differs from `root1`.
    #[error(
        "old root mismatch: proof yields {}, expected {}",
        hex::encode(computed),
        hex::encode(expected)
    )]
    OldRootMismatch { computed: Hash, expected: Hash },
    /// Consistency only: the second tree is smaller than the first.
    #[error("tree size went backwards: size1 {size1} > size2 {size2}")]
    SizeOrder { size1: u64, size2: u64 },
    /// Consistency only: every tree extends the empty tree, so a proof from
    /// size 0 proves nothing; it is rejected rather than vacuously accepted.
    #[error("consistency proof from the empty tree to size {size2} is meaningless")]
    EmptyTreeConsistency { size2: u64 },
    /// The proof walk ran off the tree (cannot happen once the length check
    /// passed; kept so the verifier never panics).
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
}

/// Number of hashes in the audit path of `index` in a tree of `size`:
/// the levels where `index` and the last leaf diverge (`inner`), plus the
/// left-sibling perfect subtrees above them (`border`).
fn inclusion_proof_len(index: u64, size: u64) -> (u32, u32) {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// Verify that `leaf` is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let (inner, border) = inclusion_proof_len(index, size);
    let expected = u64::from(inner + border);
    if proof.len() as u64 != expected {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len() as u64,
        });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(VerifyError::Malformed(
                "inclusion path longer than the tree",
            ));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(VerifyError::Malformed(
            "inclusion path shorter than the tree",
        ));
    }
    if r != *root {
        return Err(VerifyError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// Verify that the tree (`size1`, `root1`) is a prefix of (`size2`, `root2`)
/// (RFC 9162 §2.1.4.2).
///
/// Edge cases, chosen to be strict: equal sizes need an empty proof and equal
/// roots (and size 0 needs the empty-tree root); `size1 == 0 < size2` is
/// rejected because such a "proof" says nothing.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), VerifyError> {
    if size2 < size1 {
        return Err(VerifyError::SizeOrder { size1, size2 });
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(VerifyError::WrongProofLength {
                expected: 0,
                got: proof.len() as u64,
            });
        }
        if size1 == 0 && *root1 != empty_root() {
            return Err(VerifyError::OldRootMismatch {
                computed: empty_root(),
                expected: *root1,
            });
        }
        if root1 != root2 {
            return Err(VerifyError::RootMismatch {
                computed: *root1,
                expected: *root2,
            });
        }
        return Ok(());
    }
    if size1 == 0 {
        return Err(VerifyError::EmptyTreeConsistency { size2 });
    }

    // Expected length: the audit path of leaf size1-1 in tree size2, minus
    // the levels inside the perfect subtree that ends at size1 (its root is
    // either root1 itself, when size1 is a power of two, or proof[0]).
    let (inner, border) = inclusion_proof_len(size1 - 1, size2);
    let shift = size1.trailing_zeros();
    let seeded = size1.is_power_of_two();
    let expected = u64::from(inner.saturating_sub(shift) + border) + u64::from(!seeded);
    if proof.len() as u64 != expected {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len() as u64,
        });
    }

    // Step 2: when size1 is a power of two, the old root is the first node.
    let mut path = std::iter::once(root1)
        .filter(|_| seeded)
        .chain(proof.iter());
    let Some(first) = path.next() else {
        return Err(VerifyError::Malformed("empty consistency path"));
    };
    let mut fn_ = size1 - 1;
    let mut sn = size2 - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in path {
        if sn == 0 {
            return Err(VerifyError::Malformed(
                "consistency path longer than the tree",
            ));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(VerifyError::Malformed(
            "consistency path shorter than the tree",
        ));
    }
    if fr != *root1 {
        return Err(VerifyError::OldRootMismatch {
            computed: fr,
            expected: *root1,
        });
    }
    if sr != *root2 {
        return Err(VerifyError::RootMismatch {
            computed: sr,
            expected: *root2,
        });
    }
    Ok(())
}

/// The append-only frontier of a Merkle tree: the roots of the maximal
/// perfect subtrees covering leaves `[0, size)`, left to right.
///
/// There is one node per set bit of `size` (the node for bit `b` covers
/// `2^b` leaves), so the state is O(log n) however large the log grows.
/// Serialized as `{"size": n, "nodes": ["<hex>", ...]}`; deserialization
/// checks the node count so a corrupted state file cannot produce bogus roots.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "CompactRangeRepr", into = "CompactRangeRepr")]
pub struct CompactRange {
    size: u64,
    /// Invariant: `nodes.len() == size.count_ones()`, largest subtree first.
    nodes: Vec<Hash>,
}

#[derive(Serialize, Deserialize)]
struct CompactRangeRepr {
    size: u64,
    nodes: Vec<String>,
}

impl From<CompactRange> for CompactRangeRepr {
    fn from(c: CompactRange) -> Self {
        CompactRangeRepr {
            size: c.size,
            nodes: c.nodes.iter().map(hex::encode).collect(),
        }
    }
}

impl TryFrom<CompactRangeRepr> for CompactRange {
    type Error = String;

    fn try_from(r: CompactRangeRepr) -> Result<Self, String> {
        if r.nodes.len() as u64 != u64::from(r.size.count_ones()) {
            return Err(format!(
                "compact range of size {} needs {} nodes, found {}",
                r.size,
                r.size.count_ones(),
                r.nodes.len()
            ));
        }
        let mut nodes = Vec::with_capacity(r.nodes.len());
        for (i, h) in r.nodes.iter().enumerate() {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)
                .map_err(|e| format!("compact range node {i} is not 32 hex-encoded bytes: {e}"))?;
            nodes.push(out);
        }
        Ok(CompactRange {
            size: r.size,
            nodes,
        })
    }
}

/// The result of [`CompactRange::append_batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProofs {
    /// Tree size before the batch; the first batch leaf has this index.
    pub old_size: u64,
    /// Tree size after the batch.
    pub new_size: u64,
    /// Root of the tree of `new_size` leaves.
    pub root: Hash,
    /// `proofs[j]` is the inclusion proof of leaf `old_size + j` in the tree
    /// of `new_size` leaves (identical to [`inclusion_proof`]).
    pub proofs: Vec<Vec<Hash>>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compact range of a tree of `size` leaves, rebuilt from its last leaf
    /// (index `size - 1`) and that leaf's inclusion proof: what a signer that takes
    /// over a log finds in the last published receipt.
    ///
    /// The last leaf's audit path is the left siblings inside the smallest subtree
    /// (one per trailing zero bit of `size`), then the roots of the larger subtrees,
    /// smallest first. The caller still checks `root()` against the signed checkpoint.
    pub fn from_last_leaf(size: u64, leaf: Hash, proof: &[Hash]) -> Result<Self, String> {
        if size == 0 {
            return Err("an empty tree has no last leaf".into());
        }
        let inner = size.trailing_zeros() as usize;
        let want = inner + size.count_ones() as usize - 1;
        if proof.len() != want {
            return Err(format!(
                "the last leaf of a tree of size {size} has a proof of {want} hashes, found {}",
                proof.len()
            ));
        }
        let smallest = proof[..inner].iter().fold(leaf, |h, left| node_hash(left, &h));
        let mut nodes: Vec<Hash> = proof[inner..].iter().rev().copied().collect();
        nodes.push(smallest);
        Ok(CompactRange { size, nodes })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash: like binary increment, every trailing 1-bit of
    /// `size` is a same-sized subtree that merges with the new one.
    pub fn append(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // Invariant: one node per set bit, so a trailing 1-bit has a node.
            if let Some(left) = self.nodes.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// MTH of the leaves so far: the subtree roots folded right to left
    /// (the right-most, smallest subtrees join first, as in RFC 9162).
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// Append `leaves` and return the inclusion proof of each against the new
    /// tree, without needing any leaf that was appended earlier.
    ///
    /// Walks the new tree top-down over the subtrees that touch the batch.
    /// A left child lying entirely before `old_size` is always exactly one
    /// node of the old compact range (see the crate docs), so it is looked up;
    /// everything else is hashed from batch leaves. Every node is hashed once
    /// (O(batch + log n) hashes) and each proof hash is written once.
    pub fn append_batch(&mut self, leaves: &[Hash]) -> BatchProofs {
        let old_size = self.size;
        let new_size = old_size + leaves.len() as u64;
        let mut proofs = vec![Vec::new(); leaves.len()];
        let root = if leaves.is_empty() {
            self.root()
        } else {
            let walk = BatchWalk {
                old: self,
                batch: leaves,
            };
            walk.hash_and_prove(0, new_size, &mut proofs)
        };
        for leaf in leaves {
            self.append(*leaf);
        }
        debug_assert_eq!(root, self.root());
        BatchProofs {
            old_size,
            new_size,
            root,
            proofs,
        }
    }

    /// The old compact-range node covering exactly `[lo, lo + width)`.
    /// `width` is a power of two with `lo + width <= size`.
    fn node_for(&self, lo: u64, width: u64) -> Option<Hash> {
        let level = width.trailing_zeros();
        let covers = self.size & width != 0 && self.size & !((width << 1).wrapping_sub(1)) == lo;
        if !covers {
            return None;
        }
        // Nodes are stored largest first: count the set bits above `level`.
        let idx = self.size.checked_shr(level + 1).unwrap_or(0).count_ones() as usize;
        self.nodes.get(idx).copied()
    }
}

struct BatchWalk<'a> {
    old: &'a CompactRange,
    batch: &'a [Hash],
}

impl BatchWalk<'_> {
    /// Hash of `[lo, hi)` in the new tree; also appends, for every batch leaf
    /// inside it, the sibling hashes met on the way down (deepest first,
    /// because children push before their parent does).
    fn hash_and_prove(&self, lo: u64, hi: u64, proofs: &mut [Vec<Hash>]) -> Hash {
        let old_size = self.old.size;
        if hi - lo == 1 && lo >= old_size {
            return self.batch[(lo - old_size) as usize];
        }
        if hi <= old_size {
            // Only left children that end before old_size and whose right
            // sibling contains old_size reach here; those are compact-range
            // nodes (the parent could not contain old_size otherwise).
            match self.old.node_for(lo, hi - lo) {
                Some(h) => return h,
                // Impossible while `nodes.len() == size.count_ones()`, which
                // every constructor (including Deserialize) guarantees.
                None => {
                    unreachable!("subtree [{lo},{hi}) before the batch is not a compact-range node")
                }
            }
        }
        let mid = lo + split_point(hi - lo);
        let left = self.hash_and_prove(lo, mid, proofs);
        let right = self.hash_and_prove(mid, hi, proofs);
        // Batch leaves in the left half get `right` as sibling and vice versa.
        let start = lo.max(old_size);
        for i in start..hi {
            let sibling = if i < mid { right } else { left };
            proofs[(i - old_size) as usize].push(sibling);
        }
        node_hash(&left, &right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn known_constants() {
        // SHA-256("") and SHA-256(0x00): facts from RFC 6962 test vectors.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(CompactRange::new().root(), empty_root());
    }

    #[test]
    fn compact_range_root_matches_reference() {
        let all = leaves(300);
        let mut cr = CompactRange::new();
        for n in 0..=all.len() {
            assert_eq!(cr.size(), n as u64);
            assert_eq!(cr.root(), root_from_leaf_hashes(&all[..n]), "size {n}");
            if n < all.len() {
                cr.append(all[n]);
            }
        }
    }

    #[test]
    fn reference_inclusion_proofs_verify_and_tampering_fails() {
        let all = leaves(70);
        for n in 1..=all.len() {
            let tree = &all[..n];
            let root = root_from_leaf_hashes(tree);
            for i in 0..n {
                let proof = inclusion_proof(i as u64, tree);
                verify_inclusion(i as u64, n as u64, &tree[i], &proof, &root).unwrap();
                // Wrong leaf or wrong position must fail.
                let other = (i + 1) % n;
                if other != i {
                    assert!(
                        verify_inclusion(other as u64, n as u64, &tree[i], &proof, &root).is_err()
                    );
                    assert!(
                        verify_inclusion(i as u64, n as u64, &tree[other], &proof, &root).is_err()
                    );
                }
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][k % 32] ^= 0x40;
                    assert!(matches!(
                        verify_inclusion(i as u64, n as u64, &tree[i], &bad, &root),
                        Err(VerifyError::RootMismatch { .. })
                    ));
                }
            }
            assert_eq!(
                verify_inclusion(n as u64, n as u64, &tree[0], &[], &root),
                Err(VerifyError::IndexOutOfRange {
                    index: n as u64,
                    size: n as u64
                })
            );
        }
    }

    #[test]
    fn wrong_length_is_named() {
        let all = leaves(8);
        let root = root_from_leaf_hashes(&all);
        let mut proof = inclusion_proof(3, &all);
        proof.push(root);
        assert_eq!(
            verify_inclusion(3, 8, &all[3], &proof, &root),
            Err(VerifyError::WrongProofLength {
                expected: 3,
                got: 4
            })
        );
        let err = verify_inclusion(3, 8, &all[3], &proof[..1], &root).unwrap_err();
        assert!(
            err.to_string().contains("expected 3 hashes, got 1"),
            "{err}"
        );
    }

    #[test]
    fn reference_consistency_proofs_verify_and_tampering_fails() {
        let all = leaves(70);
        for n in 1..=all.len() {
            let root2 = root_from_leaf_hashes(&all[..n]);
            for m in 1..=n {
                let root1 = root_from_leaf_hashes(&all[..m]);
                let proof = consistency_proof(m as u64, &all[..n]);
                verify_consistency(m as u64, n as u64, &proof, &root1, &root2)
                    .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][0] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &bad, &root1, &root2).is_err());
                }
                if m < n {
                    let mut short = proof.clone();
                    short.pop();
                    assert!(
                        verify_consistency(m as u64, n as u64, &short, &root1, &root2).is_err()
                    );
                    assert!(
                        verify_consistency(m as u64, n as u64, &proof, &root2, &root1).is_err()
                    );
                    assert!(
                        verify_consistency(n as u64, m as u64, &proof, &root2, &root1).is_err()
                    );
                }
            }
        }
        assert_eq!(
            verify_consistency(0, 0, &[], &empty_root(), &empty_root()),
            Ok(())
        );
        assert!(verify_consistency(0, 5, &[], &empty_root(), &empty_root()).is_err());
    }

    #[test]
    fn batch_one_by_one_and_all_at_once() {
        for n in 1..=64usize {
            let all = leaves(n);
            let root = root_from_leaf_hashes(&all);
            let mut cr = CompactRange::new();
            let b = cr.append_batch(&all);
            assert_eq!((b.old_size, b.new_size, b.root), (0, n as u64, root));
            for (j, p) in b.proofs.iter().enumerate() {
                assert_eq!(*p, inclusion_proof(j as u64, &all));
            }
            let mut cr = CompactRange::new();
            for (i, leaf) in all.iter().enumerate() {
                let b = cr.append_batch(std::slice::from_ref(leaf));
                assert_eq!(b.proofs, vec![inclusion_proof(i as u64, &all[..=i])]);
            }
            let empty = cr.append_batch(&[]);
            assert_eq!(
                (empty.old_size, empty.new_size, empty.root),
                (n as u64, n as u64, root)
            );
            assert!(empty.proofs.is_empty());
        }
    }

    #[test]
    fn rebuilt_from_the_last_leaf_matches_the_appended_range() {
        let all = leaves(300);
        let mut cr = CompactRange::new();
        for n in 1..=all.len() {
            cr.append(all[n - 1]);
            let tree = &all[..n];
            let proof = inclusion_proof(n as u64 - 1, tree);
            let rebuilt = CompactRange::from_last_leaf(n as u64, all[n - 1], &proof).unwrap();
            assert_eq!(rebuilt, cr, "size {n}");
            // A proof of the wrong length is refused; a wrong hash gives a wrong root.
            let mut short = proof.clone();
            short.push(all[0]);
            assert!(CompactRange::from_last_leaf(n as u64, all[n - 1], &short).is_err());
            let mut other = all[n - 1];
            other[0] ^= 1;
            let wrong = CompactRange::from_last_leaf(n as u64, other, &proof).unwrap();
            assert_ne!(wrong.root(), cr.root());
        }
        assert!(CompactRange::from_last_leaf(0, all[0], &[]).is_err());
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut cr = CompactRange::new();
        cr.append_batch(&leaves(13));
        let json = serde_json::to_string(&cr).unwrap();
        let back: CompactRange = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cr);
        assert_eq!(back.root(), cr.root());
        // 13 = 0b1101 has three nodes; size 15 = 0b1111 would need four.
        let forged = json.replace("\"size\":13", "\"size\":15");
        let err = serde_json::from_str::<CompactRange>(&forged).unwrap_err();
        assert!(err.to_string().contains("needs 4 nodes, found 3"), "{err}");
        assert!(serde_json::from_str::<CompactRange>(r#"{"size":1,"nodes":["zz"]}"#).is_err());
    }

    fn batch_sizes() -> impl Strategy<Value = (usize, Vec<usize>, u64)> {
        (
            1usize..300,
            proptest::collection::vec(1usize..80, 1..40),
            any::<u64>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn batches_match_reference((n, splits, seed) in batch_sizes()) {
            let all = leaves(n);
            let mut cr = CompactRange::new();
            let mut start = 0usize;
            let mut splits = splits.into_iter().cycle();
            while start < n {
                let len = splits.next().unwrap_or(1).min(n - start);
                let end = start + len;
                let b = cr.append_batch(&all[start..end]);
                let tree = &all[..end];
                prop_assert_eq!(b.old_size, start as u64);
                prop_assert_eq!(b.new_size, end as u64);
                prop_assert_eq!(b.root, root_from_leaf_hashes(tree));
                prop_assert_eq!(b.proofs.len(), len);
                for (j, proof) in b.proofs.iter().enumerate() {
                    let i = start + j;
                    prop_assert_eq!(proof, &inclusion_proof(i as u64, tree));
                    prop_assert!(verify_inclusion(i as u64, end as u64, &all[i], proof, &b.root).is_ok());
                }
                // Tamper one byte of one proof (or the leaf, for a 1-leaf tree).
                let j = (seed % len as u64) as usize;
                let i = start + j;
                let mut proof = b.proofs[j].clone();
                let mut leaf = all[i];
                if proof.is_empty() {
                    leaf[(seed % 32) as usize] ^= 1;
                } else {
                    let k = (seed >> 8) as usize % proof.len();
                    proof[k][(seed >> 16) as usize % 32] ^= 0x80;
                }
                prop_assert!(verify_inclusion(i as u64, end as u64, &leaf, &proof, &b.root).is_err());
                start = end;
            }
            prop_assert_eq!(cr.size(), n as u64);
        }
    }
}
