//! receipt-signer: consumes operation records, appends their leaf hashes to one RFC 6962
//! log, signs one checkpoint per batch and publishes the SignedBatch.
//!
//! Ordering that makes a crash harmless: (1) the new log state *and the batch itself*
//! are persisted, (2) the batch is published with `Nats-Msg-Id = batch-<tree size>`,
//! (3) the records are acked. After a crash at any point the restart re-publishes a
//! persisted batch (JetStream de-duplicates it) and skips redelivered records that the
//! batch already holds, so the log never forks and no operation gets two receipts.
//! Two guards keep that true: acks are confirmed (`double_ack`) before the next batch, so
//! no record comes back after its batch stopped being the last one; and a new batch that
//! JetStream reports as a duplicate on its first publish (a stale state directory, or a
//! second signer) stops the signer rather than fork the log. Stale state is detected only
//! within the stream's duplicate window (10 minutes); one writer is not yet enforced by a
//! lease.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hsync_bus::{serve, start_service, streams, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_protocol::audit::Empty;
use hsync_protocol::names::services;
use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch, VerifierKeys};
use hsync_protocol::record::OperationRecord;
use hsync_protocol::{Blob, ErrorReply, Hash32};
use hsync_receipts::keys::SigningKey;
use hsync_receipts::merkle::{leaf_hash, CompactRange};
use hsync_receipts::note;
use serde::{Deserialize, Serialize};

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
}

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
        let mut keyring = vec![key.verifier_key()];
        keyring.extend(retired.iter().cloned());
        hsync_receipts::keys::write_verifier_keys(&cfg.keyring_path(), &keyring)?;
        let state_path = cfg.state_dir.join("log-state.json");
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("log state {} is corrupt: {e}", state_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LogState::default(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", state_path.display()),
        };
        tracing::info!(tree_size = state.range.size(), "receipt log opened");
        Ok(Signer {
            key,
            retired,
            origin: cfg.origin.clone(),
            state_path,
            state,
            receipts: Arc::new(AtomicU64::new(0)),
            batches: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn tree_size(&self) -> u64 {
        self.state.range.size()
    }

    pub fn verifier_keys(&self) -> VerifierKeys {
        VerifierKeys {
            keys: std::iter::once(self.key.verifier_key())
                .chain(self.retired.iter().cloned())
                .map(|k| k.to_string())
                .collect(),
            origin: self.origin.clone(),
        }
    }

    /// The batch persisted last (to re-publish after a restart).
    pub fn last_batch(&self) -> Option<&SignedBatch> {
        self.state.last_batch.as_ref()
    }

    /// Appends records (skipping any the last batch already holds), signs one checkpoint,
    /// and persists the new state with the batch before returning it.
    pub fn sign_batch(&mut self, records: Vec<(OperationRecord, Vec<u8>, String)>) -> anyhow::Result<Option<SignedBatch>> {
        let already: HashSet<&str> = self
            .state
            .last_batch
            .iter()
            .flat_map(|b| b.receipts.iter().map(|r| r.operation_id.as_str()))
            .collect();
        let mut seen = HashSet::new();
        let (fresh, traceparents): (Vec<(OperationRecord, Vec<u8>)>, Vec<String>) = records
            .into_iter()
            .filter(|(r, _, _)| !already.contains(r.operation_id.as_str()) && seen.insert(r.operation_id.clone()))
            .map(|(r, b, t)| ((r, b), t))
            .unzip();
        if fresh.is_empty() {
            return Ok(None);
        }
        let leaves: Vec<_> = fresh.iter().map(|(_, bytes)| leaf_hash(bytes)).collect();
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
            .map(|(i, ((record, bytes), proof))| Receipt {
                operation_id: record.operation_id,
                leaf_index: proofs.old_size + i as u64,
                leaf: Blob(bytes),
                inclusion_proof: proof.into_iter().map(Hash32).collect(),
                tree_size: proofs.new_size,
                checkpoint: signed_note.clone(),
            })
            .collect();
        let batch = SignedBatch {
            checkpoint,
            receipts,
            traceparents,
        };
        let new_state = LogState {
            range,
            last_batch: Some(batch.clone()),
        };
        write_durably(&self.state_path, &serde_json::to_vec(&new_state)?)
            .map_err(|e| anyhow::anyhow!("cannot persist the log state to {}: {e}", self.state_path.display()))?;
        self.state = new_state;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.receipts.fetch_add(batch.receipts.len() as u64, Ordering::Relaxed);
        Ok(Some(batch))
    }
}

fn hex_id(key: &SigningKey) -> String {
    key.key_id().iter().map(|b| format!("{b:02x}")).collect()
}

fn batch_msg_id(batch: &SignedBatch) -> String {
    format!("batch-{}", batch.checkpoint.tree_size)
}

/// Consumes records and publishes signed batches until shutdown.
pub async fn run(bus: Arc<Bus>, mut signer: Signer, cfg: SignerConfig, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let js = bus.jetstream();
    let names = bus.names().clone();
    let records = streams::records_stream(&js, &names).await?;
    streams::receipts_stream(&js, &names).await?;
    let consumer = streams::durable_consumer(&records, &names.consumer_signer(), Duration::from_secs(30)).await?;

    // A batch persisted before a crash may not have been published: publish it again
    // (de-duplicated by its message id).
    if let Some(batch) = signer.last_batch().cloned() {
        bus.js_publish(&js, names.receipts_batches(), &batch, Some(&batch_msg_id(&batch)))
            .await
            .map_err(|e| anyhow::anyhow!("cannot re-publish the last batch: {e}"))?;
    }

    let keys = signer.verifier_keys();
    let (receipts, batches) = (signer.receipts.clone(), signer.batches.clone());
    let tree_size = Arc::new(AtomicU64::new(signer.tree_size()));
    let stats_tree = tree_size.clone();
    let service = start_service(
        &bus,
        services::RECEIPT_SIGNER,
        "appends operation records to the RFC 6962 receipt log and signs one checkpoint per batch",
        move |_| {
            let r = receipts.load(Ordering::Relaxed);
            let b = batches.load(Ordering::Relaxed);
            serde_json::json!({
                "receipts": r,
                "batches": b,
                "tree_size": stats_tree.load(Ordering::Relaxed),
                "signatures_per_receipt": if r > 0 { b as f64 / r as f64 } else { 0.0 },
            })
        },
    )
    .await?;
    let keys_endpoint = service
        .endpoint_builder()
        .name("keys")
        .add(names.receipts_keys())
        .await
        .map_err(|e| anyhow::anyhow!("cannot add endpoint: {e}"))?;
    let keys_task = tokio::spawn(serve(
        bus.clone(),
        keys_endpoint,
        shutdown.clone(),
        ServeOptions::default(),
        move |_: Incoming<Empty>| {
            let keys = keys.clone();
            async move { Ok::<_, ErrorReply>(keys) }
        },
    ));

    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.batch_size.max(1))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot consume records: {e}"))?;
    let mut shutdown = shutdown;
    let window = Duration::from_millis(cfg.batch_window_ms);
    while let Some(batch) = streams::next_batch(&mut messages, cfg.batch_size, window, &mut shutdown).await {
        let mut records = Vec::with_capacity(batch.len());
        // One span per record, in the trace of the job that produced it; they stay open
        // until the batch is published, so their duration covers signing.
        let mut spans = Vec::with_capacity(batch.len());
        for m in &batch {
            match bus.codec().decode::<OperationRecord>(m.headers.as_ref(), &m.payload) {
                Ok(r) => {
                    let span = tracing::info_span!(
                        "record",
                        otel.name = %format!("process {}", names.ops_records()),
                        otel.kind = "consumer",
                        messaging.system = "nats",
                        messaging.destination.name = %names.ops_records(),
                        messaging.operation.type = "process",
                        hsync.job_id = %r.job_id,
                        hsync.operation_id = %r.operation_id,
                        hsync.node_id = %r.node_id,
                        hsync.operator = %r.operator,
                    );
                    hsync_telemetry::propagation::set_parent_from_headers(&span, m.headers.as_ref());
                    let traceparent = span.in_scope(|| {
                        let mut h = async_nats::HeaderMap::new();
                        hsync_telemetry::propagation::inject_current(&mut h);
                        h.get("traceparent").map(|v| v.as_str().to_string()).unwrap_or_default()
                    });
                    spans.push(span);
                    let bytes = r.canonical_bytes();
                    records.push((r, bytes, traceparent));
                }
                // A record nobody can read will never become readable: drop it loudly.
                Err(e) => {
                    tracing::error!("dropping an undecodable operation record: {e}");
                    let _ = m.ack_with(async_nats::jetstream::AckKind::Term).await;
                }
            }
        }
        let signed = match signer.sign_batch(records) {
            Ok(s) => s,
            Err(e) => {
                // Without durable state we must not publish; leave the records unacked
                // so they are redelivered, and stop: an operator has to look at the disk.
                tracing::error!("{e}");
                return Err(e);
            }
        };
        if let Some(signed) = signed {
            let mut attempt = 0;
            loop {
                match bus
                    .js_publish(&js, names.receipts_batches(), &signed, Some(&batch_msg_id(&signed)))
                    .await
                {
                    // On the first attempt a duplicate means a batch ending at this tree size
                    // was already published by someone else: another signer, or this state
                    // directory is older than the log. Continuing would fork the log, and the
                    // stream would silently drop this batch's receipts.
                    Ok(ack) if ack.duplicate && attempt == 0 => {
                        let e = anyhow::anyhow!(
                            "a batch ending at tree size {} was already published (another signer, or the state in {} is stale); \
                             stopping so the log does not fork",
                            signed.checkpoint.tree_size,
                            cfg.state_dir.display()
                        );
                        tracing::error!("{e}");
                        return Err(e);
                    }
                    Ok(_) => break,
                    Err(e) if attempt < 20 && !shutdown.is_triggered() => {
                        attempt += 1;
                        tracing::warn!("publishing batch at tree size {} failed ({e}); retrying", signed.checkpoint.tree_size);
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    Err(e) => {
                        // Persisted and unacked: the restart re-publishes it.
                        tracing::error!("cannot publish batch: {e}");
                        return Err(anyhow::anyhow!("cannot publish batch: {e}"));
                    }
                }
            }
            tree_size.store(signed.checkpoint.tree_size, Ordering::Relaxed);
        }
        drop(spans);
        // Acks are confirmed before the next batch: a record redelivered after a later
        // batch was signed would escape the last-batch dedup and get a second leaf. If an
        // ack cannot be confirmed, stop; the restart skips the redelivered records, because
        // this batch is still the last one.
        for m in &batch {
            let mut attempt = 0;
            while let Err(e) = m.double_ack().await {
                attempt += 1;
                if attempt >= 5 {
                    let e = anyhow::anyhow!("cannot confirm the ack of a record after {attempt} attempts ({e}); stopping before the next batch");
                    tracing::error!("{e}");
                    return Err(e);
                }
                tracing::warn!("ack not confirmed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    }
    let _ = keys_task.await;
    let _ = service.stop().await;
    Ok(())
}
