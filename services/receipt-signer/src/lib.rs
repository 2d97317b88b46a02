//! receipt-signer: consumes operation records, appends their leaf hashes to one RFC 6962
//! log, signs one checkpoint per batch and publishes the SignedBatch.
//!
//! Ordering that makes a crash harmless: (1) the new log state *and the batch itself*
//! are persisted, (2) the batch is published with `Nats-Msg-Id = batch-<tree size>`,
//! (3) the records are acked. After a crash at any point the restart re-publishes a
//! persisted batch and skips redelivered records that the batch already holds, so the log
//! never forks and no operation gets two receipts.
//!
//! One writer at a time ([`lease`]): signers on several machines share the lease, one
//! leads and the others stand by. Whoever takes the lease resumes from the last batch in
//! the stream — the stream, not the local state file, is the log's truth
//! ([`Signer::resume_from`]) — and removes that batch's records if they are still waiting
//! in the records stream, so nothing the previous leader signed comes back for a second
//! leaf. Every batch is published expecting the stream sequence of the one before it, so
//! a leader that lost its lease without noticing cannot fork the log. Acks are confirmed
//! (`double_ack`) before the next batch, so within one leadership no record comes back
//! after its batch stopped being the last one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch, VerifierKeys};
use hsync_protocol::record::OperationRecord;
use hsync_protocol::{Blob, Hash32};
use hsync_receipts::keys::SigningKey;
use hsync_receipts::merkle::{leaf_hash, CompactRange};
use hsync_receipts::note::VerifierKey;
use hsync_receipts::note;
use serde::{Deserialize, Serialize};

mod leader;
pub mod lease;

pub use leader::run;

#[derive(clap::Args, Clone, Debug)]
pub struct SignerConfig {
    /// Directory for the log state and the signing key.
    #[arg(long = "state-dir", env = "HSYNC_SIGNER_DIR", default_value = ".hsync/signer")]
    pub state_dir: PathBuf,
    /// Signing key file (PKCS#8, mode 0600); generated on first start. Default: <state-dir>/signer.key
    #[arg(long = "key-file", env = "HSYNC_SIGNER_KEY")]
    pub key_file: Option<PathBuf>,
    /// Origin line of checkpoints: names this log.
    #[arg(long = "origin", env = "HSYNC_LOG_ORIGIN", default_value = "hsync.local/receipts")]
    pub origin: String,
    /// Most records in one batch (one signature per batch).
    #[arg(long = "batch-size", env = "HSYNC_RECEIPT_BATCH", default_value_t = 100)]
    pub batch_size: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    #[arg(long = "batch-window-ms", env = "HSYNC_RECEIPT_WINDOW_MS", default_value_t = 10)]
    pub batch_window_ms: u64,
    /// How long a leader may be silent before a standby takes the log over, in
    /// milliseconds. Every signer of one log should use the same value.
    #[arg(long = "lease-ttl-ms", env = "HSYNC_SIGNER_LEASE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub lease_ttl_ms: u64,
    /// This signer's name in the lease. Default: <hostname>:<state dir>, so a restarted
    /// signer takes its own lease back at once. Give every replica its own.
    #[arg(long = "signer-id", env = "HSYNC_SIGNER_ID")]
    pub signer_id: Option<String>,
}

impl SignerConfig {
    pub fn key_path(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.state_dir.join("signer.key"))
    }
    pub fn verifier_key_path(&self) -> PathBuf {
        self.state_dir.join("signer.vkey")
    }
    /// Verifier keys of keys rotated out (`receipt-signer rotate-key`), one per line.
    pub fn retired_keys_path(&self) -> PathBuf {
        self.state_dir.join("retired.vkeys")
    }
    /// Every verifier key, current first: what a verifier of old and new receipts needs.
    pub fn keyring_path(&self) -> PathBuf {
        self.state_dir.join("verifier.vkeys")
    }
    /// The log state: compact range and last batch, MessagePack (JSON spent most of a
    /// batch's time hex-encoding proofs; see signer_bench).
    pub fn state_path(&self) -> PathBuf {
        self.state_dir.join("log-state.msgpack")
    }
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
    pub fn signer_id(&self) -> String {
        self.signer_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            let dir = std::fs::canonicalize(&self.state_dir).unwrap_or_else(|_| self.state_dir.clone());
            format!("{host}:{}", dir.display())
        })
    }
}

/// Where a signer that takes the lease resumes, from comparing its state with the last
/// batch in the stream.
#[derive(Debug)]
pub enum Resume {
    /// The state is the stream's last batch.
    InSync,
    /// The stream ends exactly where this signer's last batch begins: the batch was
    /// persisted and never published (a crash between the two). Publish it now.
    Republish(SignedBatch),
    /// The stream is ahead (another signer led, or this state is an old copy): continue
    /// from its last batch. `dropped` is a batch persisted here but superseded unpublished.
    CaughtUp { from: u64, to: u64, dropped: Option<u64> },
}

/// The state file of versions before MessagePack; read when the new one is absent.
const LEGACY_STATE_FILE: &str = "log-state.json";

/// What survives a restart.
#[derive(Serialize, Deserialize, Default)]
struct LogState {
    range: CompactRange,
    /// The last batch, persisted before it is published.
    last_batch: Option<SignedBatch>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub struct Signer {
    key: SigningKey,
    /// Keys rotated out: still published, so old checkpoints stay verifiable.
    retired: Vec<hsync_receipts::note::VerifierKey>,
    origin: String,
    state_path: PathBuf,
    state: LogState,
    receipts: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl Signer {
    /// Loads (or creates) the key and the persisted log state.
    pub fn open(cfg: &SignerConfig) -> anyhow::Result<Signer> {
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cfg.state_dir.display()))?;
        let (key, generated) = SigningKey::load_or_generate(&cfg.key_path(), &cfg.origin)?;
        if generated {
            tracing::info!("generated a new signing key at {}", cfg.key_path().display());
        }
        key.write_verifier_key(&cfg.verifier_key_path())?;
        let retired: Vec<_> = match hsync_receipts::keys::read_verifier_keys(&cfg.retired_keys_path()) {
            Ok(keys) => keys.into_iter().filter(|k| k.key_id() != key.key_id()).collect(),
            Err(hsync_receipts::keys::KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => anyhow::bail!("retired keys: {e}"),
        };
        let state_path = cfg.state_path();
        let legacy = cfg.state_dir.join(LEGACY_STATE_FILE);
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => rmp_serde::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("log state {} is corrupt: {e}", state_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&legacy) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("log state {} is corrupt: {e}", legacy.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => LogState::default(),
                Err(e) => anyhow::bail!("cannot read {}: {e}", legacy.display()),
            },
            Err(e) => anyhow::bail!("cannot read {}: {e}", state_path.display()),
        };
        tracing::info!(tree_size = state.range.size(), "receipt log opened");
        let signer = Signer {
            key,
            retired,
            origin: cfg.origin.clone(),
            state_path,
            state,
            receipts: Arc::new(AtomicU64::new(0)),
            batches: Arc::new(AtomicU64::new(0)),
        };
        hsync_receipts::keys::write_verifier_keys(&cfg.keyring_path(), &signer.keyring())?;
        Ok(signer)
    }

    pub fn tree_size(&self) -> u64 {
        self.state.range.size()
    }

    pub fn verifier_keys(&self) -> VerifierKeys {
        VerifierKeys {
            keys: self.keyring().iter().map(|k| k.to_string()).collect(),
            origin: self.origin.clone(),
        }
    }

    /// The batch persisted last (to re-publish after a restart).
    pub fn last_batch(&self) -> Option<&SignedBatch> {
        self.state.last_batch.as_ref()
    }

    /// Appends records (skipping any the last batch already holds), signs one checkpoint,
    /// and persists the new state with the batch before returning it.
    pub fn sign_batch(&mut self, records: Vec<SignedRecord>) -> anyhow::Result<Option<SignedBatch>> {
        let already: HashSet<&str> = self
            .state
            .last_batch
            .iter()
            .flat_map(|b| b.receipts.iter().map(|r| r.operation_id.as_str()))
            .collect();
        let mut seen = HashSet::new();
        let fresh: Vec<SignedRecord> = records
            .into_iter()
            .filter(|r| !already.contains(r.record.operation_id.as_str()) && seen.insert(r.record.operation_id.clone()))
            .collect();
        if fresh.is_empty() {
            return Ok(None);
        }
        let leaves: Vec<_> = fresh.iter().map(|r| leaf_hash(&r.bytes)).collect();
        let traceparents = fresh.iter().map(|r| r.traceparent.clone()).collect();
        let record_seqs = fresh.iter().map(|r| r.stream_seq).collect();
        let mut range = self.state.range.clone();
        let proofs = range.append_batch(&leaves);
        let cp = note::Checkpoint {
            origin: self.origin.clone(),
            size: proofs.new_size,
            root: proofs.root,
        };
        let signed_note = note::sign_checkpoint(&cp, &self.key)
            .map_err(|e| anyhow::anyhow!("cannot sign checkpoint (origin {:?}): {e}", self.origin))?;
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            tree_size: proofs.new_size,
            root_hash: Hash32(proofs.root),
            signed_note: signed_note.clone(),
            key_id: hex_id(&self.key),
            signed_at_us: now_us(),
        };
        let receipts = fresh
            .into_iter()
            .zip(proofs.proofs)
            .enumerate()
            .map(|(i, (r, proof))| Receipt {
                operation_id: r.record.operation_id,
                leaf_index: proofs.old_size + i as u64,
                leaf: Blob(r.bytes),
                inclusion_proof: proof.into_iter().map(Hash32).collect(),
                tree_size: proofs.new_size,
                checkpoint: signed_note.clone(),
            })
            .collect();
        let batch = SignedBatch {
            checkpoint,
            receipts,
            traceparents,
            record_seqs,
        };
        let new_state = LogState {
            range,
            last_batch: Some(batch.clone()),
        };
        self.persist(new_state)?;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.receipts.fetch_add(batch.receipts.len() as u64, Ordering::Relaxed);
        Ok(Some(batch))
    }
}

/// One operation record to sign, as consumed.
pub struct SignedRecord {
    pub record: OperationRecord,
    /// Its canonical bytes: the leaf.
    pub bytes: Vec<u8>,
    pub traceparent: String,
    /// Its sequence in the records stream.
    pub stream_seq: u64,
}

impl Signer {
    /// Every verifier key, current first: what verifies old and new checkpoints alike.
    fn keyring(&self) -> Vec<VerifierKey> {
        std::iter::once(self.key.verifier_key()).chain(self.retired.iter().cloned()).collect()
    }

    fn persist(&mut self, state: LogState) -> anyhow::Result<()> {
        write_durably(&self.state_path, &rmp_serde::to_vec_named(&state)?)
            .map_err(|e| anyhow::anyhow!("cannot persist the log state to {}: {e}", self.state_path.display()))?;
        self.state = state;
        // Once the new file is durable, the JSON one of older versions would only mislead.
        if let Some(dir) = self.state_path.parent() {
            let _ = std::fs::remove_file(dir.join(LEGACY_STATE_FILE));
        }
        Ok(())
    }

    /// Checks the stream's last batch and returns the compact range it ends with.
    fn range_of(&self, tip: &SignedBatch) -> anyhow::Result<CompactRange> {
        let cp = &tip.checkpoint;
        let opened = note::open_checkpoint_with_any(&cp.signed_note, &self.keyring()).map_err(|e| {
            anyhow::anyhow!(
                "the last batch in the stream (tree size {}) is signed by key {}, which this signer cannot verify ({e}); \
                 every signer of one log needs the same key file and retired.vkeys",
                cp.tree_size,
                cp.key_id
            )
        })?;
        if opened.origin != self.origin {
            anyhow::bail!(
                "the stream holds the log {:?}, but this signer is configured for {:?} (--origin)",
                opened.origin,
                self.origin
            );
        }
        let last = tip
            .receipts
            .last()
            .ok_or_else(|| anyhow::anyhow!("the last batch in the stream (tree size {}) has no receipts", cp.tree_size))?;
        let proof: Vec<_> = last.inclusion_proof.iter().map(|h| h.0).collect();
        let range = CompactRange::from_last_leaf(opened.size, leaf_hash(&last.leaf.0), &proof)
            .map_err(|e| anyhow::anyhow!("the last batch in the stream does not end the log: {e}"))?;
        if range.root() != opened.root || last.leaf_index + 1 != opened.size {
            anyhow::bail!(
                "the last receipt in the stream does not lead to its checkpoint's root (tree size {})",
                opened.size
            );
        }
        Ok(range)
    }

    /// Brings this signer's state to the end of the published log (`tip`: the last batch
    /// in the stream, `None` if there is none). Refuses, rather than start a second log,
    /// when the stream has lost batches this signer knows were published.
    pub fn resume_from(&mut self, tip: Option<&SignedBatch>) -> anyhow::Result<Resume> {
        let local_size = self.state.range.size();
        let local_batch = self.state.last_batch.clone();
        // Where the local last batch began: everything before it was published.
        let local_base = local_size - local_batch.as_ref().map_or(0, |b| b.receipts.len() as u64);
        let (tip_range, tip) = match tip {
            Some(t) => (self.range_of(t)?, t),
            None if local_size == 0 => return Ok(Resume::InSync),
            None if local_base == 0 => return Ok(Resume::Republish(local_batch.expect("a batch makes the tree non-empty"))),
            None => anyhow::bail!(
                "the receipts stream is empty, but this signer's log already reached tree size {local_base}: \
                 the stream was deleted, or this is another NATS deployment. Refusing to start a second log \
                 under the origin {:?}; move {} away to start a new log deliberately",
                self.origin,
                self.state_path.display()
            ),
        };
        let tip_size = tip_range.size();
        if local_size == tip_size && self.state.range.root() == tip_range.root() {
            if local_batch.as_ref() != Some(tip) {
                self.persist(LogState { range: tip_range, last_batch: Some(tip.clone()) })?;
            }
            return Ok(Resume::InSync);
        }
        if let Some(batch) = local_batch.filter(|_| local_base == tip_size) {
            let mut extended = tip_range.clone();
            for r in &batch.receipts {
                extended.append(leaf_hash(&r.leaf.0));
            }
            if extended == self.state.range {
                return Ok(Resume::Republish(batch));
            }
        }
        if local_base > tip_size {
            anyhow::bail!(
                "the receipts stream ends at tree size {tip_size}, but this signer had already published up to \
                 tree size {local_base}: the stream lost signed batches. Refusing to continue the log from an \
                 older point; restore the stream"
            );
        }
        // A local state ahead of the stream holds a batch that was never published; the
        // records in it are redelivered and signed again.
        let dropped = (local_size > tip_size).then_some(local_size);
        self.persist(LogState { range: tip_range, last_batch: Some(tip.clone()) })?;
        Ok(Resume::CaughtUp { from: local_size, to: tip_size, dropped })
    }
}

fn hex_id(key: &SigningKey) -> String {
    key.key_id().iter().map(|b| format!("{b:02x}")).collect()
}

fn batch_msg_id(batch: &SignedBatch) -> String {
    format!("batch-{}", batch.checkpoint.tree_size)
}


#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> SignerConfig {
        SignerConfig {
            state_dir: dir.to_path_buf(),
            key_file: None,
            origin: "test.example/log".into(),
            batch_size: 100,
            batch_window_ms: 10,
            lease_ttl_ms: 1000,
            signer_id: None,
        }
    }

    fn records(ids: std::ops::Range<u32>) -> Vec<SignedRecord> {
        let example: OperationRecord =
            serde_json::from_str(include_str!("../../../proto-schemas/examples/OperationRecord.executed.json")).unwrap();
        ids.map(|i| {
            let mut record = example.clone();
            record.operation_id = format!("op-{i}");
            let bytes = record.canonical_bytes();
            SignedRecord { record, bytes, traceparent: String::new(), stream_seq: u64::from(i) + 1 }
        })
        .collect()
    }

    /// A leader and a standby with the same key, each on its own state directory.
    fn pair() -> (tempfile::TempDir, Signer, Signer) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let leader = Signer::open(&config(&a)).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::copy(a.join("signer.key"), b.join("signer.key")).unwrap();
        let standby = Signer::open(&config(&b)).unwrap();
        (dir, leader, standby)
    }

    #[test]
    fn a_standby_continues_the_log_from_the_last_published_batch() {
        let (_dir, mut leader, mut standby) = pair();
        let first = leader.sign_batch(records(0..3)).unwrap().unwrap();
        let second = leader.sign_batch(records(3..10)).unwrap().unwrap();
        assert_eq!(second.record_seqs, (4..=10).collect::<Vec<u64>>());
        assert!(matches!(
            standby.resume_from(Some(&second)).unwrap(),
            Resume::CaughtUp { from: 0, to: 10, dropped: None }
        ));
        // It dedups against that batch, and its next batch extends the same tree.
        let third = standby.sign_batch(records(8..12)).unwrap().unwrap();
        assert_eq!(third.receipts.iter().map(|r| r.leaf_index).collect::<Vec<_>>(), vec![10, 11]);
        let mut reference = CompactRange::new();
        for b in [&first, &second, &third] {
            for r in &b.receipts {
                reference.append(leaf_hash(&r.leaf.0));
            }
        }
        assert_eq!(third.checkpoint.root_hash.0, reference.root());
        // The old leader, on its stale state, catches up the same way.
        assert!(matches!(leader.resume_from(Some(&third)).unwrap(), Resume::CaughtUp { from: 10, to: 12, dropped: None }));
        assert!(matches!(leader.resume_from(Some(&third)).unwrap(), Resume::InSync));
    }

    #[test]
    fn a_batch_persisted_but_not_published_is_published_or_dropped() {
        let (_dir, mut leader, mut standby) = pair();
        let first = leader.sign_batch(records(0..3)).unwrap().unwrap();
        let unpublished = leader.sign_batch(records(3..5)).unwrap().unwrap();
        // The stream ends where it begins: publish it.
        match leader.resume_from(Some(&first)).unwrap() {
            Resume::Republish(b) => assert_eq!(b, unpublished),
            other => panic!("expected a re-publish, got {other:?}"),
        }
        // A lone first batch that never reached an empty stream is published too.
        let (_dir2, mut alone, _) = pair();
        let only = alone.sign_batch(records(0..2)).unwrap().unwrap();
        assert!(matches!(alone.resume_from(None).unwrap(), Resume::Republish(b) if b == only));
        // Meanwhile a standby signed other records at the same place: that batch wins.
        standby.resume_from(Some(&first)).unwrap();
        let theirs = standby.sign_batch(records(3..9)).unwrap().unwrap();
        assert!(matches!(
            leader.resume_from(Some(&theirs)).unwrap(),
            Resume::CaughtUp { from: 5, to: 9, dropped: None }
        ));
        let (_dir3, mut ahead, mut other) = pair();
        let base = ahead.sign_batch(records(0..3)).unwrap().unwrap();
        ahead.sign_batch(records(3..9)).unwrap();
        other.resume_from(Some(&base)).unwrap();
        let short = other.sign_batch(records(3..5)).unwrap().unwrap();
        assert!(matches!(
            ahead.resume_from(Some(&short)).unwrap(),
            Resume::CaughtUp { from: 9, to: 5, dropped: Some(9) }
        ));
    }

    #[test]
    fn a_json_state_of_an_older_version_is_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let mut signer = Signer::open(&cfg).unwrap();
        signer.sign_batch(records(0..3)).unwrap().unwrap();
        let state: LogState = rmp_serde::from_slice(&std::fs::read(cfg.state_path()).unwrap()).unwrap();
        let legacy = dir.path().join(LEGACY_STATE_FILE);
        std::fs::write(&legacy, serde_json::to_vec(&state).unwrap()).unwrap();
        std::fs::remove_file(cfg.state_path()).unwrap();

        let mut reopened = Signer::open(&cfg).unwrap();
        assert_eq!(reopened.tree_size(), 3);
        // Redelivered records of the last batch are still recognised.
        assert!(reopened.sign_batch(records(1..3)).unwrap().is_none());
        let next = reopened.sign_batch(records(3..4)).unwrap().unwrap();
        assert_eq!(next.receipts[0].leaf_index, 3);
        assert!(!legacy.exists() && cfg.state_path().exists());
        std::fs::write(cfg.state_path(), b"not messagepack").unwrap();
        let err = Signer::open(&cfg).err().expect("a corrupt state is refused").to_string();
        assert!(err.contains("is corrupt"), "{err}");
    }

    #[test]
    fn a_stream_that_lost_batches_or_belongs_elsewhere_is_refused() {
        let (_dir, mut leader, _) = pair();
        let first = leader.sign_batch(records(0..3)).unwrap().unwrap();
        leader.sign_batch(records(3..5)).unwrap();
        leader.sign_batch(records(5..6)).unwrap();
        let err = leader.resume_from(Some(&first)).unwrap_err().to_string();
        assert!(err.contains("the stream lost signed batches"), "{err}");
        let err = leader.resume_from(None).unwrap_err().to_string();
        assert!(err.contains("the receipts stream is empty, but this signer's log already reached tree size 5"), "{err}");

        // Signed by a key this signer does not know.
        let dir = tempfile::tempdir().unwrap();
        let mut stranger = Signer::open(&config(dir.path())).unwrap();
        let err = stranger.resume_from(Some(&first)).unwrap_err().to_string();
        assert!(err.contains(&format!("signed by key {}", first.checkpoint.key_id)), "{err}");

        // A batch whose last receipt does not lead to its root.
        let (_dir, mut a, mut b) = pair();
        let mut forged = a.sign_batch(records(0..4)).unwrap().unwrap();
        forged.receipts.last_mut().unwrap().leaf.0.push(b' ');
        let err = b.resume_from(Some(&forged)).unwrap_err().to_string();
        assert!(err.contains("does not lead to its checkpoint's root"), "{err}");
    }
}
