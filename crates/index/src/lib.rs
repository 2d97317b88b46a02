//! The receipt index: signed batches of receipts stored in RocksDB, answering audit queries.
//!
//! The indexer service feeds [`IndexStore::ingest_many`] from the receipts stream and asks
//! it for receipts by operation, by leaf index and by job. Every ingest is one RocksDB
//! `WriteBatch` (WAL on), so a crash leaves either all of a call's writes or none, and the
//! stream redelivers what was not acknowledged; re-ingesting is idempotent.
//!
//! # Key layout
//!
//! One column family per index. Integers are big-endian so byte order is numeric order;
//! string components end with a 0x00 separator.
//!
//! | column family      | key                                                      | value |
//! |--------------------|----------------------------------------------------------|-------|
//! | `receipts`         | `leaf_index` u64 BE (the receipt id, ordered in time)    | the [`Receipt`], MessagePack with named fields |
//! | `by_operation`     | `operation_id` bytes                                     | `leaf_index` u64 BE |
//! | `by_job`           | `job_id` ‖ 0x00 ‖ `leaf_index` BE                        | empty |
//! | `by_operator_time` | `operator` ‖ 0x00 ‖ `started_at_us` BE ‖ `leaf_index` BE | empty |
//! | `by_time`          | `started_at_us` BE ‖ `leaf_index` BE                     | empty |
//! | `checkpoints`      | `tree_size` u64 BE                                       | the [`Checkpoint`], MessagePack with named fields |
//! | `meta`             | `receipts`, `batches`, `tree_size`, `schema_version`     | u64 BE |
//! | `operators`        | operator id (its registry key)                           | the [`OperatorDef`](hsync_protocol::operator::OperatorDef), MessagePack with named fields |
//! | `operators_by_capability` | `capability` ‖ 0x00 ‖ operator id                 | empty |
//!
//! Job id, operator and start time come from the operation record inside each receipt's
//! leaf; a receipt whose record does not decode fails the whole call and nothing is
//! written. The `meta` counters change in the same `WriteBatch` as the data they count:
//! `receipts` is the number of receipts indexed, `batches` the number of distinct
//! checkpoints stored, and `tree_size` the largest checkpointed tree size.
//!
//! # Idempotence
//!
//! An operation is indexed at most once. A receipt whose operation id is already indexed
//! is a duplicate and is not rewritten, whatever its leaf index (if that differs, the first
//! one is kept and a warning is logged); a receipt for a leaf index that already holds
//! another operation is likewise kept out. A checkpoint already stored for the same tree
//! size and root is skipped; one with a different root is a split view of the log and is
//! refused with [`IndexError::CheckpointConflict`].
#![forbid(unsafe_code)]

mod keys;
mod operators;
mod tuning;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hsync_protocol::audit::{IndexStats, MAX_PAGE};
use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch};
use hsync_protocol::value::Hash32;
use rocksdb::{
    Cache, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

pub(crate) const CF_RECEIPTS: &str = "receipts";
pub(crate) const CF_BY_OPERATION: &str = "by_operation";
pub(crate) const CF_BY_JOB: &str = "by_job";
pub(crate) const CF_BY_OPERATOR_TIME: &str = "by_operator_time";
pub(crate) const CF_BY_TIME: &str = "by_time";
pub(crate) const CF_CHECKPOINTS: &str = "checkpoints";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_OPERATORS: &str = "operators";
pub(crate) const CF_OPERATORS_BY_CAPABILITY: &str = "operators_by_capability";

const COLUMN_FAMILIES: [&str; 9] = [
    CF_RECEIPTS,
    CF_BY_OPERATION,
    CF_BY_JOB,
    CF_BY_OPERATOR_TIME,
    CF_BY_TIME,
    CF_CHECKPOINTS,
    CF_META,
    CF_OPERATORS,
    CF_OPERATORS_BY_CAPABILITY,
];

const META_RECEIPTS: &[u8] = b"receipts";
const META_BATCHES: &[u8] = b"batches";
const META_TREE_SIZE: &[u8] = b"tree_size";
const META_SCHEMA: &[u8] = b"schema_version";
/// Bumped when the key layout changes, so an old binary refuses a newer index and a new
/// one knows to rebuild an older index from the stream. 2: `by_time` added.
pub const SCHEMA_VERSION: u64 = 2;

/// Where and how to open the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexOptions {
    /// RocksDB directory; created (with its parents) when missing.
    pub path: PathBuf,
    /// Capacity of the LRU block cache shared by all column families (data, index and
    /// filter blocks).
    pub block_cache_bytes: usize,
    /// fsync the WAL on every write. The WAL is always on, so a process crash loses nothing
    /// either way; without fsync a power loss can drop the last writes that had reached the
    /// OS but not the disk, after the caller was told they succeeded.
    pub sync_writes: bool,
    /// Collect RocksDB statistics (tickers and histograms: bytes written by flushes and
    /// compactions, block cache hits, ...), read with [`IndexStore::statistics`]. Costs a few
    /// percent of CPU on every operation, so it is off unless someone is measuring.
    pub statistics: bool,
    /// Read SST files through mmap instead of pread. See `tuning::db_options` for when that
    /// pays.
    pub mmap_reads: bool,
}

impl IndexOptions {
    pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

    /// Defaults (64 MiB cache, no fsync per write) at `path`.
    pub fn new(path: impl Into<PathBuf>) -> IndexOptions {
        IndexOptions {
            path: path.into(),
            block_cache_bytes: Self::DEFAULT_BLOCK_CACHE_BYTES,
            sync_writes: false,
            statistics: false,
            mmap_reads: false,
        }
    }
}

impl Default for IndexOptions {
    /// The indexer's default directory, `.hsync/index`.
    fn default() -> IndexOptions {
        IndexOptions::new(".hsync/index")
    }
}

/// What one ingest call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Receipts newly indexed.
    pub receipts_written: usize,
    /// Receipts skipped because their operation (or leaf index) was already indexed.
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot create the index directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the index at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("the index at {path} has schema version {found}, this build reads version {expected}")]
    Schema {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("index storage error: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("receipt at leaf index {leaf_index} is malformed: {reason}")]
    Malformed { leaf_index: u64, reason: String },
    #[error(
        "checkpoint for tree size {tree_size} has root {new_root}, but the index holds root \
         {stored_root} for that size: the log presents a split view"
    )]
    CheckpointConflict {
        tree_size: u64,
        stored_root: Hash32,
        new_root: Hash32,
    },
    #[error("invalid page cursor {cursor:?}: pass back the next_cursor of a previous page")]
    InvalidCursor { cursor: String },
    #[error("cannot encode {what} for the index: {source}")]
    Encode {
        what: String,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("corrupt entry in the {cf} column family: {reason}")]
    Corrupt { cf: &'static str, reason: String },
}

impl IndexError {
    /// The error is about the batch itself (a split view, a malformed receipt), so writing
    /// it again can never succeed; anything else (storage) may pass on a retry.
    pub fn refuses_the_batch(&self) -> bool {
        matches!(
            self,
            IndexError::CheckpointConflict { .. } | IndexError::Malformed { .. } | IndexError::Encode { .. }
        )
    }
}

/// The receipt index. `Send + Sync`: share it in an `Arc` and call it from
/// `spawn_blocking`; reads run concurrently, ingests are serialized.
pub struct IndexStore {
    db: DB,
    path: PathBuf,
    /// Kept for its statistics object (when enabled).
    db_opts: rocksdb::Options,
    write_opts: WriteOptions,
    /// Serializes ingests: deduplication reads the index before writing, and the counters
    /// are read-modify-write, so two ingests must not interleave. Readers never take it:
    /// each WriteBatch becomes visible atomically.
    pub(crate) write_lock: Mutex<()>,
}

impl fmt::Debug for IndexStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A validated receipt with its encoded value and secondary keys.
struct Prepared<'a> {
    receipt: &'a Receipt,
    value: Vec<u8>,
    job_key: Vec<u8>,
    operator_time_key: Vec<u8>,
    time_key: [u8; 2 * keys::U64_LEN],
}

/// The `meta` counters.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Counters {
    receipts: u64,
    batches: u64,
    tree_size: u64,
}

impl IndexStore {
    /// Opens the index at `opts.path`, creating the directory, the database and its column
    /// families if missing.
    pub fn open(opts: &IndexOptions) -> Result<IndexStore, IndexError> {
        let path = opts.path.clone();
        std::fs::create_dir_all(&path).map_err(|source| IndexError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let descriptors = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, tuning::cf_options(name, &cache)));
        let db_opts = tuning::db_options(opts);
        let db = DB::open_cf_descriptors(&db_opts, &path, descriptors).map_err(
            |source| IndexError::Open {
                path: path.clone(),
                source,
            },
        )?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(opts.sync_writes);
        let store = IndexStore {
            db,
            path,
            db_opts,
            write_opts,
            write_lock: Mutex::new(()),
        };
        store.check_schema()?;
        tracing::debug!(path = %store.path.display(), "index opened");
        Ok(store)
    }

    /// The directory the index lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// RocksDB's statistics dump (tickers and histograms), when opened with
    /// `statistics: true`.
    pub fn statistics(&self) -> Option<String> {
        self.db_opts.get_statistics()
    }

    /// A RocksDB property of the whole database (`rocksdb.stats`, `rocksdb.estimate-num-keys`,
    /// ...), or of one column family when `cf` is given.
    pub fn property(&self, cf: Option<&str>, name: &str) -> Result<Option<String>, IndexError> {
        Ok(match cf {
            Some(cf) => {
                let handle = self.db.cf_handle(cf).ok_or_else(|| IndexError::Corrupt {
                    cf: "meta",
                    reason: format!("no column family {cf:?}"),
                })?;
                self.db.property_value_cf(handle, name)?
            }
            None => self.db.property_value(name)?,
        })
    }

    /// Flushes every memtable to SST files (benchmarks and tests measure what is on disk).
    pub fn flush(&self) -> Result<(), IndexError> {
        for name in COLUMN_FAMILIES {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }

    /// Names of the column families.
    pub fn column_families() -> &'static [&'static str] {
        &COLUMN_FAMILIES
    }

    /// Indexes one signed batch in one WriteBatch. Idempotent: receipts already indexed are
    /// counted as duplicates and left alone.
    pub fn ingest(&self, batch: &SignedBatch) -> Result<IngestOutcome, IndexError> {
        self.ingest_many(std::slice::from_ref(batch))
    }

    /// Indexes several signed batches in one WriteBatch: all of them or, on error, none.
    pub fn ingest_many(&self, batches: &[SignedBatch]) -> Result<IngestOutcome, IndexError> {
        // Decode and encode outside the lock: it is the CPU-heavy part and needs no state.
        let prepared = batches
            .iter()
            .map(|b| {
                b.receipts
                    .iter()
                    .map(prepare)
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint_values = batches
            .iter()
            .map(|b| {
                rmp_serde::to_vec_named(&b.checkpoint).map_err(|source| IndexError::Encode {
                    what: format!("the checkpoint of tree size {}", b.checkpoint.tree_size),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        // No state is guarded (the lock only orders writers), so a poisoned lock is harmless.
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.counters(&self.db)?;
        let mut counters = before;
        let mut outcome = IngestOutcome::default();
        let mut wb = WriteBatch::default();
        // What this WriteBatch already holds: the database cannot see it yet.
        let mut pending_ops: HashMap<&str, u64> = HashMap::new();
        let mut pending_leaves: HashSet<u64> = HashSet::new();
        let mut pending_checkpoints: HashMap<u64, Hash32> = HashMap::new();

        for ((batch, receipts), cp_value) in batches.iter().zip(&prepared).zip(checkpoint_values) {
            let cp = &batch.checkpoint;
            let stored_root = match pending_checkpoints.get(&cp.tree_size) {
                Some(root) => Some(*root),
                None => self.checkpoint(cp.tree_size)?.map(|c| c.root_hash),
            };
            match stored_root {
                Some(root) if root != cp.root_hash => {
                    return Err(IndexError::CheckpointConflict {
                        tree_size: cp.tree_size,
                        stored_root: root,
                        new_root: cp.root_hash,
                    });
                }
                Some(_) => {}
                None => {
                    wb.put_cf(
                        self.cf(CF_CHECKPOINTS),
                        keys::u64_key(cp.tree_size),
                        cp_value,
                    );
                    pending_checkpoints.insert(cp.tree_size, cp.root_hash);
                    counters.batches += 1;
                    counters.tree_size = counters.tree_size.max(cp.tree_size);
                }
            }

            let (known_ops, known_leaves) = self.lookup_existing(receipts)?;
            for ((p, known_op), leaf_taken) in receipts.iter().zip(known_ops).zip(known_leaves) {
                let r = p.receipt;
                let indexed_at = pending_ops
                    .get(r.operation_id.as_str())
                    .copied()
                    .or(known_op);
                if let Some(first) = indexed_at {
                    if first != r.leaf_index {
                        tracing::warn!(
                            operation_id = %r.operation_id,
                            indexed_leaf = first,
                            new_leaf = r.leaf_index,
                            "operation already indexed at another leaf index; keeping the first"
                        );
                    }
                    outcome.duplicates += 1;
                    continue;
                }
                if leaf_taken || pending_leaves.contains(&r.leaf_index) {
                    tracing::warn!(
                        operation_id = %r.operation_id,
                        leaf_index = r.leaf_index,
                        "leaf index already holds another operation; keeping the first"
                    );
                    outcome.duplicates += 1;
                    continue;
                }
                let leaf_key = keys::u64_key(r.leaf_index);
                wb.put_cf(self.cf(CF_RECEIPTS), leaf_key, &p.value);
                wb.put_cf(
                    self.cf(CF_BY_OPERATION),
                    r.operation_id.as_bytes(),
                    leaf_key,
                );
                wb.put_cf(self.cf(CF_BY_JOB), &p.job_key, b"");
                wb.put_cf(self.cf(CF_BY_OPERATOR_TIME), &p.operator_time_key, b"");
                wb.put_cf(self.cf(CF_BY_TIME), p.time_key, b"");
                pending_ops.insert(&r.operation_id, r.leaf_index);
                pending_leaves.insert(r.leaf_index);
                outcome.receipts_written += 1;
                counters.receipts += 1;
            }
        }

        if counters == before {
            // Nothing new: leave the database (and its WAL) untouched.
            return Ok(outcome);
        }
        let meta = self.cf(CF_META);
        for (key, old, new) in [
            (META_RECEIPTS, before.receipts, counters.receipts),
            (META_BATCHES, before.batches, counters.batches),
            (META_TREE_SIZE, before.tree_size, counters.tree_size),
        ] {
            if old != new {
                wb.put_cf(meta, key, new.to_be_bytes());
            }
        }
        self.db.write_opt(wb, &self.write_opts)?;
        tracing::debug!(
            batches = batches.len(),
            written = outcome.receipts_written,
            duplicates = outcome.duplicates,
            tree_size = counters.tree_size,
            "ingested signed batches"
        );
        Ok(outcome)
    }

    /// The receipt of one operation.
    pub fn receipt_by_operation(&self, operation_id: &str) -> Result<Option<Receipt>, IndexError> {
        let Some(leaf) = self
            .db
            .get_pinned_cf(self.cf(CF_BY_OPERATION), operation_id.as_bytes())?
        else {
            return Ok(None);
        };
        let leaf_index = keys::read_u64(&leaf).ok_or_else(|| IndexError::Corrupt {
            cf: CF_BY_OPERATION,
            reason: format!(
                "operation {operation_id:?} maps to {} bytes, not a leaf index",
                leaf.len()
            ),
        })?;
        match self.receipt_by_index(leaf_index)? {
            Some(r) => Ok(Some(r)),
            // Both entries are written in one WriteBatch and never deleted.
            None => Err(IndexError::Corrupt {
                cf: CF_RECEIPTS,
                reason: format!(
                    "operation {operation_id:?} maps to leaf {leaf_index}, which holds no receipt"
                ),
            }),
        }
    }

    /// The receipt at one leaf index.
    pub fn receipt_by_index(&self, leaf_index: u64) -> Result<Option<Receipt>, IndexError> {
        self.db
            .get_pinned_cf(self.cf(CF_RECEIPTS), keys::u64_key(leaf_index))?
            .map(|v| decode_receipt(leaf_index, &v))
            .transpose()
    }

    /// One page of a job's receipts in leaf-index order, and the cursor of the next page
    /// (`None` on the last page). `limit` is clamped to `1..=MAX_PAGE`; the cursor is opaque.
    pub fn receipts_by_job(
        &self,
        job_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Receipt>, Option<String>), IndexError> {
        // A zero limit would return empty pages forever.
        let limit = limit.clamp(1, MAX_PAGE as usize);
        let start = cursor.map(keys::decode_cursor).transpose()?.unwrap_or(0);
        let prefix = keys::job_prefix(job_id);
        let from = keys::job_key(job_id, start);
        let mut ro = ReadOptions::default();
        // The bound stops the scan at the end of the job instead of at the next job's keys.
        ro.set_iterate_upper_bound(keys::job_upper_bound(job_id));
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_BY_JOB),
            ro,
            IteratorMode::From(&from, Direction::Forward),
        );
        // One more than the page: it tells whether there is a next page, and where it starts.
        let mut leaves = Vec::with_capacity(limit + 1);
        for item in iter {
            let (key, _) = item?;
            if let Some(leaf) = keys::job_key_leaf(&prefix, &key) {
                leaves.push(leaf);
                if leaves.len() > limit {
                    break;
                }
            }
        }
        let next = if leaves.len() > limit {
            leaves.pop().map(keys::encode_cursor)
        } else {
            None
        };

        let receipts = self.fetch_receipts(&leaves, || format!("job {job_id:?}"))?;
        Ok((receipts, next))
    }

    /// The receipts at `leaves`, which a secondary index listed.
    fn fetch_receipts(&self, leaves: &[u64], lister: impl Fn() -> String) -> Result<Vec<Receipt>, IndexError> {
        let leaf_keys: Vec<_> = leaves.iter().map(|&l| keys::u64_key(l)).collect();
        // Keys are sorted, which lets RocksDB batch the lookups per block.
        let values = self
            .db
            .batched_multi_get_cf(self.cf(CF_RECEIPTS), &leaf_keys, true);
        let mut receipts = Vec::with_capacity(leaves.len());
        for (&leaf, value) in leaves.iter().zip(values) {
            // Secondary entries are written with their receipt in one WriteBatch and never
            // deleted, so a missing receipt is corruption, not a race.
            let value = value?.ok_or_else(|| IndexError::Corrupt {
                cf: CF_RECEIPTS,
                reason: format!("{} lists leaf {leaf}, which holds no receipt", lister()),
            })?;
            receipts.push(decode_receipt(leaf, &value)?);
        }
        Ok(receipts)
    }

    /// One page of the receipts of operations that started in `[from_us, to_us)`, ordered by
    /// start time (then leaf index), and the cursor of the next page.
    pub fn receipts_by_time(
        &self,
        from_us: u64,
        to_us: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Receipt>, Option<String>), IndexError> {
        self.time_range(CF_BY_TIME, &[], from_us, to_us, cursor, limit)
    }

    /// One page of the receipts of one operator (`id@version`, as in the records) whose
    /// operations started in `[from_us, to_us)`, ordered by start time, and the next cursor.
    pub fn receipts_by_operator(
        &self,
        operator: &str,
        from_us: u64,
        to_us: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Receipt>, Option<String>), IndexError> {
        self.time_range(CF_BY_OPERATOR_TIME, &keys::operator_prefix(operator), from_us, to_us, cursor, limit)
    }

    /// Scans `prefix ‖ time BE ‖ leaf BE` keys for times in `[from_us, to_us)`, starting at
    /// the cursor's (time, leaf) when given.
    fn time_range(
        &self,
        cf: &'static str,
        prefix: &[u8],
        from_us: u64,
        to_us: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Receipt>, Option<String>), IndexError> {
        let limit = limit.clamp(1, MAX_PAGE as usize);
        let (start_time, start_leaf) = match cursor {
            Some(c) => keys::decode_time_cursor(c)?,
            None => (from_us, 0),
        };
        if start_time >= to_us || start_time < from_us {
            return Ok((Vec::new(), None));
        }
        let key = |time: u64, leaf: u64| {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&keys::time_key(time, leaf));
            k
        };
        let mut ro = ReadOptions::default();
        // Every key at or after to_us sorts at or after prefix ‖ to_us ‖ 0.
        ro.set_iterate_upper_bound(key(to_us, 0));
        let from = key(start_time, start_leaf);
        let iter = self.db.iterator_cf_opt(self.cf(cf), ro, IteratorMode::From(&from, Direction::Forward));
        let mut found = Vec::with_capacity(limit + 1);
        for item in iter {
            let (k, _) = item?;
            // Exact length: an operator id containing 0x00 cannot pass for another's keys.
            if let Some(pair) = keys::time_key_parts(prefix, &k) {
                found.push(pair);
                if found.len() > limit {
                    break;
                }
            }
        }
        let next = if found.len() > limit {
            found.pop().map(|(time, leaf)| keys::encode_time_cursor(time, leaf))
        } else {
            None
        };
        let leaves: Vec<u64> = found.iter().map(|&(_, leaf)| leaf).collect();
        let receipts = self.fetch_receipts(&leaves, || format!("the {cf} index"))?;
        Ok((receipts, next))
    }

    /// The RFC 6962 leaf hashes of the first `size` leaves, in order, read from every
    /// stored receipt: O(size), which is what a consistency proof computed from the leaves
    /// costs. `Ok(None)` when a leaf below `size` is not indexed (yet).
    pub fn leaf_hashes(&self, size: u64) -> Result<Option<Vec<[u8; 32]>>, IndexError> {
        let mut out = Vec::with_capacity(size.min(1 << 24) as usize);
        for item in self.db.iterator_cf(self.cf(CF_RECEIPTS), IteratorMode::Start) {
            if out.len() as u64 == size {
                break;
            }
            let (key, value) = item?;
            let index = keys::read_u64(&key).ok_or_else(|| IndexError::Corrupt {
                cf: CF_RECEIPTS,
                reason: format!("key of {} bytes, not a leaf index", key.len()),
            })?;
            if index != out.len() as u64 {
                return Ok(None);
            }
            out.push(hsync_receipts::merkle::leaf_hash(&decode_receipt(index, &value)?.leaf.0));
        }
        Ok((out.len() as u64 == size).then_some(out))
    }

    /// The checkpoint stored for a tree size.
    pub fn checkpoint(&self, tree_size: u64) -> Result<Option<Checkpoint>, IndexError> {
        self.db
            .get_pinned_cf(self.cf(CF_CHECKPOINTS), keys::u64_key(tree_size))?
            .map(|v| decode_checkpoint(tree_size, &v))
            .transpose()
    }

    /// The checkpoint of the largest tree size stored.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, IndexError> {
        // Big-endian keys: the last key is the largest tree size.
        let mut iter = self
            .db
            .iterator_cf(self.cf(CF_CHECKPOINTS), IteratorMode::End);
        let Some(item) = iter.next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let tree_size = keys::read_u64(&key).ok_or_else(|| IndexError::Corrupt {
            cf: CF_CHECKPOINTS,
            reason: format!("key of {} bytes, not a tree size", key.len()),
        })?;
        decode_checkpoint(tree_size, &value).map(Some)
    }

    /// Receipts and batches indexed, the largest checkpointed tree size, and the number of
    /// operators mirrored from the registry.
    pub fn stats(&self) -> Result<IndexStats, IndexError> {
        // One snapshot, so the three counters come from the same WriteBatch.
        let snapshot = self.db.snapshot();
        let c = self.counters(&snapshot)?;
        Ok(IndexStats {
            receipts: c.receipts,
            batches: c.batches,
            tree_size: c.tree_size,
            operators: self.operator_count()?,
        })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // open() creates or opens every name in COLUMN_FAMILIES, and none is ever dropped.
        self.db
            .cf_handle(name)
            .expect("column family opened with the database")
    }

    /// Stamps a new index with the schema version, or refuses one written by a newer layout.
    fn check_schema(&self) -> Result<(), IndexError> {
        match self.read_meta(&self.db, META_SCHEMA)? {
            None => {
                let mut wb = WriteBatch::default();
                wb.put_cf(self.cf(CF_META), META_SCHEMA, SCHEMA_VERSION.to_be_bytes());
                self.db.write_opt(wb, &self.write_opts)?;
                Ok(())
            }
            Some(SCHEMA_VERSION) => Ok(()),
            Some(found) => Err(IndexError::Schema {
                path: self.path.clone(),
                found,
                expected: SCHEMA_VERSION,
            }),
        }
    }

    fn counters(&self, reader: &impl MetaReader) -> Result<Counters, IndexError> {
        Ok(Counters {
            receipts: self.read_meta(reader, META_RECEIPTS)?.unwrap_or(0),
            batches: self.read_meta(reader, META_BATCHES)?.unwrap_or(0),
            tree_size: self.read_meta(reader, META_TREE_SIZE)?.unwrap_or(0),
        })
    }

    fn read_meta(&self, reader: &impl MetaReader, key: &[u8]) -> Result<Option<u64>, IndexError> {
        reader
            .get_meta(self.cf(CF_META), key)?
            .map(|v| {
                keys::read_u64(&v).ok_or_else(|| IndexError::Corrupt {
                    cf: CF_META,
                    reason: format!(
                        "{} is {} bytes, not a u64",
                        String::from_utf8_lossy(key),
                        v.len()
                    ),
                })
            })
            .transpose()
    }

    /// For each receipt: the leaf index its operation is already indexed at, and whether its
    /// leaf index already holds a receipt. Two batched lookups instead of 2n point reads.
    fn lookup_existing(
        &self,
        receipts: &[Prepared<'_>],
    ) -> Result<(Vec<Option<u64>>, Vec<bool>), IndexError> {
        let op_keys = receipts.iter().map(|p| p.receipt.operation_id.as_bytes());
        let ops = self
            .db
            .batched_multi_get_cf(self.cf(CF_BY_OPERATION), op_keys, false)
            .into_iter()
            .map(|v| {
                v?.map(|bytes| {
                    keys::read_u64(&bytes).ok_or_else(|| IndexError::Corrupt {
                        cf: CF_BY_OPERATION,
                        reason: format!("value of {} bytes, not a leaf index", bytes.len()),
                    })
                })
                .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leaf_keys: Vec<_> = receipts
            .iter()
            .map(|p| keys::u64_key(p.receipt.leaf_index))
            .collect();
        let leaves = self
            .db
            .batched_multi_get_cf(self.cf(CF_RECEIPTS), &leaf_keys, false)
            .into_iter()
            .map(|v| v.map(|found| found.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((ops, leaves))
    }
}

/// Point reads from the database or from a snapshot of it.
trait MetaReader {
    fn get_meta(&self, cf: &ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>;
}

impl MetaReader for DB {
    fn get_meta(&self, cf: &ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.get_cf(cf, key)
    }
}

impl MetaReader for rocksdb::Snapshot<'_> {
    fn get_meta(&self, cf: &ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.get_cf(cf, key)
    }
}

/// Decodes the receipt's record and derives its keys; any inconsistency is `Malformed`.
fn prepare(receipt: &Receipt) -> Result<Prepared<'_>, IndexError> {
    let malformed = |reason: String| IndexError::Malformed {
        leaf_index: receipt.leaf_index,
        reason,
    };
    let record = receipt.record().map_err(malformed)?;
    // The index maps receipt.operation_id, the job and operator come from the record: they
    // must describe the same operation or the index would lie.
    if record.operation_id != receipt.operation_id {
        return Err(malformed(format!(
            "the receipt is for operation {:?} but its record is operation {:?}",
            receipt.operation_id, record.operation_id
        )));
    }
    if receipt.leaf_index >= receipt.tree_size {
        return Err(malformed(format!(
            "the leaf index is not inside the tree of size {}",
            receipt.tree_size
        )));
    }
    let value = rmp_serde::to_vec_named(receipt).map_err(|source| IndexError::Encode {
        what: format!("the receipt at leaf index {}", receipt.leaf_index),
        source,
    })?;
    Ok(Prepared {
        receipt,
        value,
        job_key: keys::job_key(&record.job_id, receipt.leaf_index),
        operator_time_key: keys::operator_time_key(
            &record.operator,
            record.started_at_us,
            receipt.leaf_index,
        ),
        time_key: keys::time_key(record.started_at_us, receipt.leaf_index),
    })
}

fn decode_receipt(leaf_index: u64, bytes: &[u8]) -> Result<Receipt, IndexError> {
    rmp_serde::from_slice(bytes).map_err(|e| IndexError::Corrupt {
        cf: CF_RECEIPTS,
        reason: format!("receipt at leaf index {leaf_index} does not decode: {e}"),
    })
}

fn decode_checkpoint(tree_size: u64, bytes: &[u8]) -> Result<Checkpoint, IndexError> {
    rmp_serde::from_slice(bytes).map_err(|e| IndexError::Corrupt {
        cf: CF_CHECKPOINTS,
        reason: format!("checkpoint of tree size {tree_size} does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<IndexStore>();
    }
}
