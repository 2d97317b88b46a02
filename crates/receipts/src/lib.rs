//! HyperSync receipts: a transparency log for compute results, verifiable
//! offline by anyone holding the log's public key.
//!
//! * [`merkle`] — RFC 6962 / RFC 9162 Merkle trees over SHA-256: hashing,
//!   reference proof construction, proof verification, and [`CompactRange`],
//!   the O(log n) append-only state a log writer keeps.
//! * [`note`] — C2SP signed notes and checkpoints (`origin`, `size`, `root`
//!   signed with Ed25519), wire-compatible with Go's `sumdb/note`.
//! * [`keys`] — Ed25519 signing keys: generation and safe on-disk storage
//!   (PEM PKCS#8, mode 0600, refused if group/other can read it).
//! * [`verify`] — [`verify_receipt`]: checkpoint signature, then inclusion,
//!   reporting which step failed.
//!
//! # Batch proofs from a compact range
//!
//! A writer appends leaves in batches and must hand every new leaf its
//! inclusion proof against the new root, yet it keeps only the compact
//! range of the old tree: the roots of the perfect subtrees covering
//! `[0, old_size)` (one per set bit of `old_size`).
//!
//! That is enough. Walk the new tree of `new_size` leaves from the root,
//! splitting each range at the largest power of two below its length
//! (RFC 9162's shape). Any left child that ends at or before `old_size`
//! while its parent reaches past `old_size` is a perfect, aligned subtree; if
//! it were only *part* of a bigger old compact-range node, that node (being
//! aligned and at least twice as large) would contain the whole parent and
//! hence leaf `old_size`, which no old node does. So it *is* exactly one
//! compact-range node and is looked up, not recomputed. All other subtrees
//! on the way reach into the batch and are hashed from batch leaves and
//! those nodes. Each node's hash is the sibling in the proof of every batch
//! leaf under its partner, so one post-order walk yields all proofs, using
//! O(batch + log n) hashes — and no earlier leaf is ever needed.
//! Consistency proofs still need the full leaves ([`merkle::consistency_proof`]).

#![forbid(unsafe_code)]

pub mod keys;
pub mod merkle;
pub mod note;
pub mod verify;

pub use keys::SigningKey;
pub use merkle::{BatchProofs, CompactRange, Hash};
pub use note::{open_checkpoint, sign_checkpoint, Checkpoint, VerifierKey};
pub use verify::{verify_receipt, ReceiptVerifyError};
