//! Receipt-index benchmark: ingest throughput against raw RocksDB, lookup latency, write
//! amplification, and mmap reads against pread, all measured in one run.
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/hsync/target
//! cd /work/main
//! nice -n 10 cargo build --release --workspace --examples
//! nice -n 10 $CARGO_TARGET_DIR/release/examples/index_bench [--receipts N] [--batch 1000]
//!     [--group 16] [--lookups 20000] [--op-ids uuid7|hash] [--block-cache-mb 64]
//!     [--cache-stats] [--dir PATH] [--no-raw] [--keep]
//! ```
//!
//! Defaults: 10,000,000 receipts, signed batches of 1000, 16 signed batches per ingest call
//! (the indexer's `--ingest-batch` default), 20,000 lookups of each kind per pass, data under
//! `/root/.cache/hsync/bench-index` (deleted at the end unless `--keep`). Progress goes to
//! stderr, the report to stdout.
//!
//! # The data
//!
//! Receipts are made the way the receipt signer makes them (`services/receipt-signer`,
//! `Signer::sign_batch`): an `OperationRecord` in its canonical bytes, leaf hashes appended
//! to a `CompactRange` in batches (`append_batch`: real RFC 6962 inclusion proofs, ~log2(n)
//! hashes each), one Ed25519-signed checkpoint note per batch, copied into every receipt.
//! Records: operation ids are UUIDv7 strings (time ordered, ms granularity; `--op-ids hash`
//! gives the runner's real form instead, 32 hex digits of a SHA-256, in random order), job
//! ids UUIDv7 (simple form) shared by 5..=15 consecutive steps (10 on average), 5 operators
//! chosen uniformly, 4 submitters, `started_at_us` strictly increasing by 500..=2240 µs
//! (1370 on average, ~730 operations/s), 80% executed, 15% cached, 3% failed, 2% denied.
//! Generation is deterministic (fixed seeds, the checkpoint's `signed_at_us` derived from the
//! records), so both phases below see exactly the same receipts; it is never timed.
//!
//! # What is measured
//!
//! 1. **Raw baseline** (skipped with `--no-raw`): the same key and value bytes that the index
//!    writes (receipt MessagePack, the by-operation / by-job / by-operator-time / by-time
//!    entries, checkpoints, meta counters), each key prefixed with a one-byte family tag,
//!    `put` into the default column family of a database opened with default options (plus
//!    statistics), one `WriteBatch` per group of signed batches, WAL on, no fsync. Encoding
//!    (record decode, receipt encode, key building) is timed apart from the write. The raw
//!    database is deleted before the index phase (disk space, and no contention).
//! 2. **Index ingest**: `IndexStore::ingest_many` per group, `IndexOptions { statistics:
//!    true, .. }`, otherwise the service defaults. "Foreground" is the time inside the calls;
//!    "settle" is the final flush plus waiting until no flush or compaction is pending or
//!    running, so that the statistics hold the whole cost of the data.
//! 3. **Write amplification** from RocksDB's tickers: bytes written by the user, WAL bytes,
//!    flush bytes, compaction bytes; WA = (flush + compaction) / user bytes. Sizes from
//!    `rocksdb.total-sst-files-size`.
//! 4. **Lookups** (`receipt_by_operation` hit and miss, `receipts_by_time` and
//!    `receipts_by_operator` over a random window of ~120 receipts with limit 100), the four
//!    kinds interleaved, for `mmap_reads: false` then `true` on the same data. Each mode
//!    reopens the store (a fresh 64 MiB block cache) and runs two passes with different keys:
//!    **cold**, after evicting the SST files from the OS page cache (`dd iflag=nocache
//!    count=0`, per file; no root needed), and **warm OS cache**, after reading every SST
//!    file once and reopening (fresh block cache, data in the page cache, as a long-running
//!    service that has the RAM would see).
//!
//! Diagnostics: `--block-cache-mb` sets the index's block cache for ingest and lookups (the
//! service's `--block-cache-mb`, default 64); `--cache-stats` opens the lookup passes with
//! RocksDB statistics on (a few percent of CPU) and reports block-cache misses and bytes
//! inserted per lookup, by block type (data, index, filter).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hsync_index::{IndexOptions, IndexStore};
use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch};
use hsync_protocol::record::{OperationRecord, Outcome};
use hsync_protocol::value::{Blob, Hash32};
use hsync_receipts::keys::SigningKey;
use hsync_receipts::merkle::{leaf_hash, CompactRange, Hash};
use hsync_receipts::{note, verify_receipt};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

const ORIGIN: &str = "hsync.local/receipts";
const OPERATORS: [&str; 5] = [
    "geometry.area@1.0.0",
    "text.tokenize@1.2.0",
    "embeddings.encode@2.1.0",
    "policy.check@1.0.3",
    "geometry.buffer@1.1.0",
];
const SUBMITTERS: [&str; 4] = [
    "alice@example.org",
    "bob@example.org",
    "ci-pipeline@hsync.local",
    "carol@example.org",
];
/// First `started_at_us` (2025-06-15).
const T0_US: u64 = 1_750_000_000_000_000;
const MIN_GAP_US: u64 = 500;
const GAP_SPREAD_US: u64 = 1_741;
const MEAN_GAP_US: u64 = MIN_GAP_US + (GAP_SPREAD_US - 1) / 2;
/// Page size of the range queries, and the number of receipts their windows hold on average.
const PAGE: usize = 100;
const WINDOW_RECEIPTS: u64 = 120;

// ---- configuration --------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OpIds {
    /// UUIDv7 strings, time ordered.
    Uuid7,
    /// 32 hex digits of a SHA-256, as the runner derives them: random order.
    Hash,
}

struct Config {
    receipts: u64,
    batch: usize,
    group: usize,
    lookups: usize,
    op_ids: OpIds,
    dir: PathBuf,
    raw: bool,
    keep: bool,
    block_cache_bytes: usize,
    cache_stats: bool,
}

fn parse_args() -> Config {
    let mut c = Config {
        receipts: 10_000_000,
        batch: 1000,
        group: 16,
        lookups: 20_000,
        op_ids: OpIds::Uuid7,
        dir: PathBuf::from("/root/.cache/hsync/bench-index"),
        raw: true,
        keep: false,
        block_cache_bytes: IndexOptions::DEFAULT_BLOCK_CACHE_BYTES,
        cache_stats: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .replace('_', "")
        };
        let number = |v: String, name: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|e| panic!("{name}: {v:?} is not a number: {e}"))
        };
        match a.as_str() {
            "--receipts" => c.receipts = number(value("--receipts"), "--receipts"),
            "--batch" => c.batch = number(value("--batch"), "--batch") as usize,
            "--group" => c.group = number(value("--group"), "--group") as usize,
            "--lookups" => c.lookups = number(value("--lookups"), "--lookups") as usize,
            "--op-ids" => {
                c.op_ids = match value("--op-ids").as_str() {
                    "uuid7" => OpIds::Uuid7,
                    "hash" => OpIds::Hash,
                    other => panic!("--op-ids is uuid7 or hash, not {other:?}"),
                }
            }
            "--dir" => {
                c.dir = PathBuf::from(args.next().expect("--dir needs a value"));
            }
            "--no-raw" => c.raw = false,
            "--keep" => c.keep = true,
            "--block-cache-mb" => {
                c.block_cache_bytes = number(value("--block-cache-mb"), "--block-cache-mb") as usize * 1024 * 1024
            }
            "--cache-stats" => c.cache_stats = true,
            "-h" | "--help" => {
                println!(
                    "index_bench [--receipts N] [--batch N] [--group N] [--lookups N] \
                     [--op-ids uuid7|hash] [--block-cache-mb N] [--cache-stats] [--dir PATH] \
                     [--no-raw] [--keep]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (see --help)"),
        }
    }
    assert!(c.receipts > 0 && c.batch > 0 && c.group > 0, "sizes must be positive");
    c
}

// ---- deterministic receipts -----------------------------------------------------------

/// splitmix64: tiny, fast and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn hash32(&mut self) -> Hash32 {
        let mut h = [0u8; 32];
        for chunk in h.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        Hash32(h)
    }
}

/// The two 64-bit halves of a UUIDv7 for unix milliseconds `ms`.
fn uuid7_bits(ms: u64, rng: &mut Rng) -> (u64, u64) {
    let hi = (ms << 16) | 0x7000 | (rng.next() & 0x0fff);
    let lo = (0b10 << 62) | (rng.next() >> 2);
    (hi, lo)
}

/// `xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx`.
fn uuid7(ms: u64, rng: &mut Rng) -> String {
    let (hi, lo) = uuid7_bits(ms, rng);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// The 32-hex "simple" form, as the runner writes job ids (`Uuid::now_v7().simple()`).
fn uuid7_simple(ms: u64, rng: &mut Rng) -> String {
    let (hi, lo) = uuid7_bits(ms, rng);
    format!("{hi:016x}{lo:016x}")
}

struct Job {
    id: String,
    trace_id: String,
    submitter: &'static str,
    steps_left: u64,
    step: u64,
}

/// Produces signed batches in log order, like the receipt signer, and remembers the
/// operation ids of the sampled leaves (the lookup keys).
struct Generator {
    rng: Rng,
    op_ids: OpIds,
    key: SigningKey,
    key_id: String,
    range: CompactRange,
    total: u64,
    batch: usize,
    started_at_us: u64,
    job: Option<Job>,
    /// Sampled leaf index → (pass, slot).
    samples: HashMap<u64, (usize, usize)>,
    sampled_ops: [Vec<String>; 2],
}

impl Generator {
    fn new(cfg: &Config, samples: &HashMap<u64, (usize, usize)>, per_pass: usize) -> Generator {
        let key = SigningKey::from_seed(ORIGIN, &[0x42; 32]).expect("signing key from seed");
        let key_id = key.key_id().iter().map(|b| format!("{b:02x}")).collect();
        Generator {
            rng: Rng(0x005E_ED0F_1DE7),
            op_ids: cfg.op_ids,
            key,
            key_id,
            range: CompactRange::new(),
            total: cfg.receipts,
            batch: cfg.batch,
            started_at_us: T0_US,
            job: None,
            samples: samples.clone(),
            sampled_ops: [vec![String::new(); per_pass], vec![String::new(); per_pass]],
        }
    }

    fn done(&self) -> bool {
        self.range.size() >= self.total
    }

    fn record(&mut self, leaf: u64) -> OperationRecord {
        let rng = &mut self.rng;
        self.started_at_us += MIN_GAP_US + rng.below(GAP_SPREAD_US);
        let started = self.started_at_us;
        let ms = started / 1000;
        let job = match &mut self.job {
            Some(j) if j.steps_left > 0 => j,
            slot => slot.insert(Job {
                id: uuid7_simple(ms, rng),
                trace_id: format!("{:016x}{:016x}", rng.next(), rng.next()),
                submitter: SUBMITTERS[rng.below(SUBMITTERS.len() as u64) as usize],
                steps_left: 5 + rng.below(11),
                step: 0,
            }),
        };
        job.steps_left -= 1;
        job.step += 1;
        let node_id = format!("step-{}", job.step);
        let operation_id = match self.op_ids {
            OpIds::Uuid7 => uuid7(ms, rng),
            OpIds::Hash => hex::encode(&leaf_hash(format!("{}\0{node_id}", job.id).as_bytes())[..16]),
        };
        let (outcome, duration, error) = match rng.below(100) {
            0..=79 => (Outcome::Executed, 200 + rng.below(5_000), None),
            80..=94 => (Outcome::Cached, 180, None),
            95..=97 => (
                Outcome::Failed,
                200 + rng.below(5_000),
                Some("operator error: input geometry is not a valid polygon (self-intersection)".to_string()),
            ),
            _ => (
                Outcome::Denied,
                150,
                Some("denied by policy deny-external-urls".to_string()),
            ),
        };
        let output_hash = matches!(outcome, Outcome::Executed | Outcome::Cached).then(|| rng.hash32());
        let policies = match outcome {
            Outcome::Denied => vec!["default-allow".to_string(), "deny-external-urls".to_string()],
            _ => vec!["default-allow".to_string()],
        };
        if let Some(&(pass, slot)) = self.samples.get(&leaf) {
            self.sampled_ops[pass][slot] = operation_id.clone();
        }
        OperationRecord {
            operation_id,
            job_id: job.id.clone(),
            node_id,
            operator: OPERATORS[rng.below(OPERATORS.len() as u64) as usize].to_string(),
            inputs_hash: rng.hash32(),
            output_hash,
            outcome,
            policies,
            submitter: job.submitter.to_string(),
            trace_id: job.trace_id.clone(),
            started_at_us: started,
            finished_at_us: started + duration,
            error,
        }
    }

    /// The next signed batch (the last one may be short), as `Signer::sign_batch` builds it.
    fn signed_batch(&mut self) -> SignedBatch {
        let old_size = self.range.size();
        let n = (self.total - old_size).min(self.batch as u64);
        let records: Vec<(String, Vec<u8>)> = (old_size..old_size + n)
            .map(|leaf| {
                let r = self.record(leaf);
                let bytes = r.canonical_bytes();
                (r.operation_id, bytes)
            })
            .collect();
        let leaves: Vec<Hash> = records.iter().map(|(_, b)| leaf_hash(b)).collect();
        let proofs = self.range.append_batch(&leaves);
        let cp = note::Checkpoint {
            origin: ORIGIN.to_string(),
            size: proofs.new_size,
            root: proofs.root,
        };
        let signed_note = note::sign_checkpoint(&cp, &self.key).expect("checkpoint signs");
        let checkpoint = Checkpoint {
            origin: ORIGIN.to_string(),
            tree_size: proofs.new_size,
            root_hash: Hash32(proofs.root),
            signed_note: signed_note.clone(),
            key_id: self.key_id.clone(),
            // Deterministic, ~50 ms after the last operation started.
            signed_at_us: self.started_at_us + 50_000,
        };
        let receipts = records
            .into_iter()
            .zip(proofs.proofs)
            .enumerate()
            .map(|(i, ((operation_id, bytes), proof))| Receipt {
                operation_id,
                leaf_index: proofs.old_size + i as u64,
                leaf: Blob(bytes),
                inclusion_proof: proof.into_iter().map(Hash32).collect(),
                tree_size: proofs.new_size,
                checkpoint: signed_note.clone(),
            })
            .collect();
        SignedBatch {
            checkpoint,
            receipts,
            traceparents: Vec::new(),
            record_seqs: Vec::new(),
        }
    }

    /// Up to `group` signed batches: what one ingest call (one WriteBatch) receives.
    fn group(&mut self, group: usize) -> Vec<SignedBatch> {
        let mut out = Vec::with_capacity(group);
        while out.len() < group && !self.done() {
            out.push(self.signed_batch());
        }
        out
    }
}

/// Picks `2 * per_pass` distinct leaf indices: the hits of the cold and of the warm passes.
fn pick_samples(n: u64, per_pass: usize) -> HashMap<u64, (usize, usize)> {
    let mut rng = Rng(0x00C0_FFEE);
    let mut samples = HashMap::with_capacity(2 * per_pass);
    for pass in 0..2 {
        let mut slot = 0;
        while slot < per_pass {
            let leaf = rng.below(n);
            if let std::collections::hash_map::Entry::Vacant(e) = samples.entry(leaf) {
                e.insert((pass, slot));
                slot += 1;
            }
        }
    }
    samples
}

// ---- the index's key layout, for the raw baseline (see crates/index/src/lib.rs) ----------

/// One-byte family tags: all families share the raw database's single column family.
const TAG_RECEIPTS: u8 = 1;
const TAG_BY_OPERATION: u8 = 2;
const TAG_BY_JOB: u8 = 3;
const TAG_BY_OPERATOR_TIME: u8 = 4;
const TAG_BY_TIME: u8 = 5;
const TAG_CHECKPOINTS: u8 = 6;
const TAG_META: u8 = 7;

fn tagged(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Key/value pairs of one group, exactly as `ingest_many` writes them (plus the tag byte);
/// `counters` are the meta counters (receipts, batches, tree size) carried across groups.
fn raw_entries(batches: &[SignedBatch], counters: &mut [u64; 3]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| 5 * b.receipts.len() + 1).sum::<usize>() + 3);
    for b in batches {
        let cp = &b.checkpoint;
        out.push((
            tagged(TAG_CHECKPOINTS, &[&cp.tree_size.to_be_bytes()]),
            rmp_serde::to_vec_named(cp).expect("checkpoint encodes"),
        ));
        counters[1] += 1;
        counters[2] = counters[2].max(cp.tree_size);
        for r in &b.receipts {
            let record = r.record().expect("record decodes");
            let leaf = r.leaf_index.to_be_bytes();
            let started = record.started_at_us.to_be_bytes();
            out.push((
                tagged(TAG_RECEIPTS, &[&leaf]),
                rmp_serde::to_vec_named(r).expect("receipt encodes"),
            ));
            out.push((tagged(TAG_BY_OPERATION, &[r.operation_id.as_bytes()]), leaf.to_vec()));
            out.push((tagged(TAG_BY_JOB, &[record.job_id.as_bytes(), &[0], &leaf]), Vec::new()));
            out.push((
                tagged(TAG_BY_OPERATOR_TIME, &[record.operator.as_bytes(), &[0], &started, &leaf]),
                Vec::new(),
            ));
            out.push((tagged(TAG_BY_TIME, &[&started, &leaf]), Vec::new()));
            counters[0] += 1;
        }
    }
    for (name, v) in [&b"receipts"[..], b"batches", b"tree_size"].iter().zip(*counters) {
        out.push((tagged(TAG_META, &[name]), v.to_be_bytes().to_vec()));
    }
    out
}

// ---- RocksDB statistics and properties --------------------------------------------------

/// A ticker (`name COUNT : n`) or a histogram's `SUM` from a statistics dump.
fn stat(dump: &str, name: &str, field: &str) -> u64 {
    for line in dump.lines() {
        let mut tokens = line.split_whitespace();
        if tokens.next() != Some(name) {
            continue;
        }
        let tokens: Vec<&str> = tokens.collect();
        for w in tokens.windows(3) {
            if w[0] == field && w[1] == ":" {
                return w[2].parse().unwrap_or(0);
            }
        }
    }
    0
}

struct WriteStats {
    user_bytes: u64,
    keys_written: u64,
    wal_bytes: u64,
    flush_bytes: u64,
    compact_write_bytes: u64,
    compact_read_bytes: u64,
    stall_micros: u64,
    compaction_cpu_micros: u64,
    sst_bytes: u64,
    dir_bytes: u64,
}

impl WriteStats {
    fn from_dump(dump: &str, sst_bytes: u64, dir: &Path) -> WriteStats {
        WriteStats {
            user_bytes: stat(dump, "rocksdb.bytes.written", "COUNT"),
            keys_written: stat(dump, "rocksdb.number.keys.written", "COUNT"),
            wal_bytes: stat(dump, "rocksdb.wal.bytes", "COUNT"),
            flush_bytes: stat(dump, "rocksdb.flush.write.bytes", "COUNT"),
            compact_write_bytes: stat(dump, "rocksdb.compact.write.bytes", "COUNT"),
            compact_read_bytes: stat(dump, "rocksdb.compact.read.bytes", "COUNT"),
            stall_micros: stat(dump, "rocksdb.stall.micros", "COUNT"),
            compaction_cpu_micros: stat(dump, "rocksdb.compaction.times.cpu_micros", "SUM"),
            sst_bytes,
            dir_bytes: dir_size(dir),
        }
    }

    fn write_amp(&self) -> f64 {
        (self.flush_bytes + self.compact_write_bytes) as f64 / self.user_bytes.max(1) as f64
    }
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn sst_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list the database directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    files.sort();
    files
}

/// Drops the SST files from the OS page cache: `dd iflag=nocache count=0` asks the kernel
/// (POSIX_FADV_DONTNEED) to forget the whole file; clean pages only, so sync first.
fn evict_page_cache(dir: &Path) {
    for f in sst_files(dir) {
        fs::File::open(&f)
            .and_then(|h| h.sync_all())
            .unwrap_or_else(|e| panic!("cannot sync {}: {e}", f.display()));
        let status = Command::new("dd")
            .arg(format!("if={}", f.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .expect("run dd to evict a file from the page cache");
        assert!(status.success(), "dd iflag=nocache failed on {}", f.display());
    }
}

/// Reads every SST file once, so that they sit in the OS page cache.
fn warm_page_cache(dir: &Path) -> u64 {
    let mut total = 0;
    for f in sst_files(dir) {
        let mut h = fs::File::open(&f).expect("open an SST file");
        total += io::copy(&mut h, &mut io::sink()).expect("read an SST file");
    }
    total
}

fn mem_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Polls `busy` until it is false twice in a row, half a second apart.
fn wait_quiescent(mut busy: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if !busy() {
            std::thread::sleep(Duration::from_millis(500));
            if !busy() {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(4 * 3600), "compactions never settled");
    }
}

fn index_prop(store: &IndexStore, cf: Option<&str>, name: &str) -> u64 {
    store
        .property(cf, name)
        .expect("read an index property")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn index_busy(store: &IndexStore) -> bool {
    index_prop(store, None, "rocksdb.num-running-compactions") > 0
        || index_prop(store, None, "rocksdb.num-running-flushes") > 0
        || IndexStore::column_families().iter().any(|cf| {
            index_prop(store, Some(cf), "rocksdb.compaction-pending") > 0
                || index_prop(store, Some(cf), "rocksdb.mem-table-flush-pending") > 0
        })
}

fn raw_prop(db: &DB, name: &str) -> u64 {
    db.property_int_value(name)
        .expect("read a raw database property")
        .unwrap_or(0)
}

fn raw_busy(db: &DB) -> bool {
    raw_prop(db, "rocksdb.num-running-compactions") > 0
        || raw_prop(db, "rocksdb.num-running-flushes") > 0
        || raw_prop(db, "rocksdb.compaction-pending") > 0
        || raw_prop(db, "rocksdb.mem-table-flush-pending") > 0
}

/// (Write(GB), Moved(GB), Comp(sec)) of the `Sum` row of a column family's compaction
/// stats, read by header name.
fn cf_compaction_sum(cfstats: &str) -> Option<(f64, f64, f64)> {
    let header: Vec<&str> = cfstats
        .lines()
        .find(|l| l.trim_start().starts_with("Level") && l.contains("W-Amp"))?
        .split_whitespace()
        .collect();
    let sum: Vec<&str> = cfstats
        .lines()
        .find(|l| l.trim_start().starts_with("Sum "))?
        .split_whitespace()
        .collect();
    // Header: Level Files Size Score ...; row: Sum n/m <size> <unit> score ...
    let col = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| *h == name)?;
        sum.get(i + 1)?.parse().ok()
    };
    Some((col("Write(GB)")?, col("Moved(GB)")?, col("Comp(sec)")?))
}

// ---- the phases ---------------------------------------------------------------------

struct IngestResult {
    receipts: u64,
    batches: u64,
    groups: u64,
    /// Time inside ingest_many / db.write.
    foreground: Duration,
    /// Raw baseline only: record decode, receipt encode and key building.
    encode: Duration,
    settle: Duration,
    generate: Duration,
    per_call: Vec<Duration>,
    payload_bytes: u64,
    stats: WriteStats,
}

fn progress(what: &str, done: u64, total: u64, fg: Duration, start: Instant) {
    eprintln!(
        "  {what}: {done}/{total} receipts, {:.0} receipts/s in the calls, {:.0} s elapsed",
        done as f64 / fg.as_secs_f64().max(1e-9),
        start.elapsed().as_secs_f64()
    );
}

fn run_raw(cfg: &Config, samples: &HashMap<u64, (usize, usize)>, per_pass: usize) -> IngestResult {
    let path = cfg.dir.join("raw");
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.enable_statistics();
    let db = DB::open(&opts, &path).expect("open the raw baseline database");
    let wo = WriteOptions::default();
    let mut generator = Generator::new(cfg, samples, per_pass);
    let mut counters = [0u64; 3];
    let (mut fg, mut encode, mut generate) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut batches, mut groups, mut payload_bytes) = (0u64, 0u64, 0u64);
    let mut per_call = Vec::new();
    let start = Instant::now();
    while !generator.done() {
        let t = Instant::now();
        let group = generator.group(cfg.group);
        generate += t.elapsed();

        let t = Instant::now();
        let entries = raw_entries(&group, &mut counters);
        encode += t.elapsed();
        payload_bytes += entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();

        let t = Instant::now();
        let mut wb = WriteBatch::default();
        for (k, v) in &entries {
            wb.put(k, v);
        }
        db.write_opt(wb, &wo).expect("raw WriteBatch");
        let d = t.elapsed();
        fg += d;
        per_call.push(d);
        batches += group.len() as u64;
        groups += 1;
        if groups % 100 == 0 {
            progress("raw", generator.range.size(), cfg.receipts, fg, start);
        }
    }
    let t = Instant::now();
    db.flush().expect("flush the raw database");
    let settle = t.elapsed() + wait_quiescent(|| raw_busy(&db));
    let stats = WriteStats::from_dump(
        &opts.get_statistics().expect("statistics are enabled"),
        raw_prop(&db, "rocksdb.total-sst-files-size"),
        &path,
    );
    drop(db);
    IngestResult {
        receipts: cfg.receipts,
        batches,
        groups,
        foreground: fg,
        encode,
        settle,
        generate,
        per_call,
        payload_bytes,
        stats,
    }
}

struct CfRow {
    name: String,
    sst_bytes: u64,
    keys: u64,
    compaction: Option<(f64, f64, f64)>,
}

fn run_index(
    cfg: &Config,
    samples: &HashMap<u64, (usize, usize)>,
    per_pass: usize,
) -> (IngestResult, Vec<CfRow>, [Vec<String>; 2], (u64, u64)) {
    let path = cfg.dir.join("index");
    let opts = IndexOptions {
        statistics: true,
        block_cache_bytes: cfg.block_cache_bytes,
        ..IndexOptions::new(&path)
    };
    let store = IndexStore::open(&opts).expect("open the index");
    let mut generator = Generator::new(cfg, samples, per_pass);
    let (mut fg, mut generate) = (Duration::ZERO, Duration::ZERO);
    let (mut batches, mut groups) = (0u64, 0u64);
    let mut per_call = Vec::new();
    let start = Instant::now();
    while !generator.done() {
        let t = Instant::now();
        let group = generator.group(cfg.group);
        generate += t.elapsed();
        let n: usize = group.iter().map(|b| b.receipts.len()).sum();

        let t = Instant::now();
        let outcome = store.ingest_many(&group).expect("ingest_many");
        let d = t.elapsed();
        fg += d;
        per_call.push(d);
        assert_eq!(outcome.receipts_written, n, "every receipt is new");
        batches += group.len() as u64;
        groups += 1;
        if groups % 100 == 0 {
            progress("index", generator.range.size(), cfg.receipts, fg, start);
        }
    }
    let t = Instant::now();
    store.flush().expect("flush the index");
    let settle = t.elapsed() + wait_quiescent(|| index_busy(&store));

    let cf_rows: Vec<CfRow> = IndexStore::column_families()
        .iter()
        .map(|cf| CfRow {
            name: cf.to_string(),
            sst_bytes: index_prop(&store, Some(cf), "rocksdb.total-sst-files-size"),
            keys: index_prop(&store, Some(cf), "rocksdb.estimate-num-keys"),
            compaction: store
                .property(Some(cf), "rocksdb.cfstats-no-file-histogram")
                .ok()
                .flatten()
                .as_deref()
                .and_then(cf_compaction_sum),
        })
        .collect();
    let stats = WriteStats::from_dump(
        &store.statistics().expect("statistics are enabled"),
        cf_rows.iter().map(|r| r.sst_bytes).sum(),
        &path,
    );
    let s = store.stats().expect("index stats");
    assert_eq!(s.receipts, cfg.receipts, "the index counts every receipt");

    // Untimed: the stored receipts carry real proofs that verify against their checkpoint.
    let vk = generator.key.verifier_key();
    for op in generator.sampled_ops[0].iter().take(200) {
        let r = store
            .receipt_by_operation(op)
            .expect("lookup")
            .expect("sampled operation is indexed");
        let proof: Vec<Hash> = r.inclusion_proof.iter().map(|h| h.0).collect();
        verify_receipt(&r.leaf.0, r.leaf_index, &proof, &r.checkpoint, &vk)
            .expect("a stored receipt verifies offline");
    }
    drop(store);
    let time_span = (T0_US, generator.started_at_us);
    (
        IngestResult {
            receipts: cfg.receipts,
            batches,
            groups,
            foreground: fg,
            encode: Duration::ZERO,
            settle,
            generate,
            per_call,
            payload_bytes: 0,
            stats,
        },
        cf_rows,
        generator.sampled_ops,
        time_span,
    )
}

// ---- lookups --------------------------------------------------------------------------

const KINDS: [&str; 4] = [
    "receipt_by_operation (hit)",
    "receipt_by_operation (miss)",
    "receipts_by_time (limit 100)",
    "receipts_by_operator (limit 100)",
];

struct Plan {
    hits: Vec<String>,
    misses: Vec<String>,
    time_windows: Vec<(u64, u64)>,
    operator_windows: Vec<(&'static str, u64, u64)>,
}

fn plan(hits: Vec<String>, seed: u64, op_ids: OpIds, (t_first, t_last): (u64, u64)) -> Plan {
    let mut rng = Rng(seed);
    let n = hits.len();
    let span = t_last.saturating_sub(t_first).max(1);
    let misses = (0..n)
        .map(|_| match op_ids {
            OpIds::Uuid7 => uuid7((t_first + rng.below(span)) / 1000, &mut rng),
            OpIds::Hash => format!("{:016x}{:016x}", rng.next(), rng.next()),
        })
        .collect();
    let window = |rng: &mut Rng, width: u64| {
        let from = t_first + rng.below(span.saturating_sub(width).max(1));
        (from, from + width)
    };
    let time_windows = (0..n)
        .map(|_| window(&mut rng, WINDOW_RECEIPTS * MEAN_GAP_US))
        .collect();
    let operator_windows = (0..n)
        .map(|_| {
            let op = OPERATORS[rng.below(OPERATORS.len() as u64) as usize];
            let (from, to) = window(&mut rng, WINDOW_RECEIPTS * MEAN_GAP_US * OPERATORS.len() as u64);
            (op, from, to)
        })
        .collect();
    Plan {
        hits,
        misses,
        time_windows,
        operator_windows,
    }
}

struct Pass {
    lat: [Vec<Duration>; 4],
    /// Receipts returned per kind, summed.
    returned: [u64; 4],
    wall: Duration,
    /// Statistics dump at the end of the pass (with `--cache-stats`).
    stats: Option<String>,
}

fn run_pass(store: &IndexStore, plan: &Plan) -> Pass {
    let n = plan.hits.len();
    let mut lat: [Vec<Duration>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut returned = [0u64; 4];
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let r = store.receipt_by_operation(&plan.hits[i]).expect("lookup by operation");
        lat[0].push(t.elapsed());
        let r = r.expect("an indexed operation is found");
        returned[0] += 1;
        black_box(r);

        let t = Instant::now();
        let r = store.receipt_by_operation(&plan.misses[i]).expect("lookup by operation (miss)");
        lat[1].push(t.elapsed());
        assert!(r.is_none(), "a random operation id is not indexed");

        let (from, to) = plan.time_windows[i];
        let t = Instant::now();
        let (page, _next) = store
            .receipts_by_time(from, to, None, PAGE)
            .expect("lookup by time");
        lat[2].push(t.elapsed());
        returned[2] += page.len() as u64;
        black_box(page);

        let (op, from, to) = plan.operator_windows[i];
        let t = Instant::now();
        let (page, _next) = store
            .receipts_by_operator(op, from, to, None, PAGE)
            .expect("lookup by operator");
        lat[3].push(t.elapsed());
        returned[3] += page.len() as u64;
        black_box(page);
    }
    let wall = start.elapsed();
    for v in &mut lat {
        v.sort_unstable();
    }
    Pass {
        lat,
        returned,
        wall,
        stats: None,
    }
}

/// (cold, warm) passes for one mmap setting.
fn run_lookups(cfg: &Config, path: &Path, mmap_reads: bool, plans: &[Plan; 2]) -> (Pass, Pass, u64) {
    let opts = IndexOptions {
        mmap_reads,
        block_cache_bytes: cfg.block_cache_bytes,
        statistics: cfg.cache_stats,
        ..IndexOptions::new(path)
    };
    evict_page_cache(path);
    let store = IndexStore::open(&opts).expect("reopen the index for lookups");
    eprintln!("  mmap_reads={mmap_reads}: cold pass");
    let mut cold = run_pass(&store, &plans[0]);
    cold.stats = store.statistics();
    drop(store);
    let warmed = warm_page_cache(path);
    let store = IndexStore::open(&opts).expect("reopen the index for lookups");
    eprintln!("  mmap_reads={mmap_reads}: warm-OS-cache pass");
    let mut warm = run_pass(&store, &plans[1]);
    warm.stats = store.statistics();
    drop(store);
    (cold, warm, warmed)
}

// ---- report ---------------------------------------------------------------------------

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn us(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Filesystem and device holding `dir`, from /proc/mounts (longest mount-point prefix).
fn storage_info(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1])).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .max_by_key(|(_, mp, _)| mp.len());
    let Some((dev, mp, fstype)) = best else {
        return "unknown".to_string();
    };
    let in_memory = matches!(fstype.as_str(), "tmpfs" | "ramfs");
    let rotational = dev
        .strip_prefix("/dev/")
        .and_then(|d| fs::read_to_string(format!("/sys/block/{d}/queue/rotational")).ok())
        .map(|r| if r.trim() == "1" { ", kernel flags it rotational" } else { ", non-rotational" })
        .unwrap_or("");
    format!(
        "{dev} mounted on {mp} ({fstype}{rotational}): {}",
        if in_memory { "IN MEMORY, not disk" } else { "on disk" }
    )
}

fn ingest_rows(out: &mut String, r: &IngestResult, label: &str) {
    let rate = |d: Duration| r.receipts as f64 / d.as_secs_f64().max(1e-9);
    let mut calls = r.per_call.clone();
    calls.sort_unstable();
    let _ = writeln!(
        out,
        "  {label:<34} {:>12.0} receipts/s in the calls ({} in {} calls of {} signed batches)",
        rate(r.foreground),
        secs(r.foreground),
        r.groups,
        r.batches.div_ceil(r.groups.max(1))
    );
    if r.encode > Duration::ZERO {
        let _ = writeln!(
            out,
            "  {:<34} {:>12.0} receipts/s (encode {} + write {})",
            "  incl. encoding",
            rate(r.encode + r.foreground),
            secs(r.encode),
            secs(r.foreground)
        );
    }
    let _ = writeln!(
        out,
        "  {:<34} {:>12.0} receipts/s (calls + final flush and compactions: {} + {})",
        "  sustained",
        rate(r.foreground + r.settle),
        secs(r.foreground),
        secs(r.settle)
    );
    let _ = writeln!(
        out,
        "  {:<34} p50 {} ms, p99 {} ms, max {} ms; write stalls {}; untimed generation {}",
        "  per call",
        us(pct(&calls, 0.5) / 1000),
        us(pct(&calls, 0.99) / 1000),
        us(pct(&calls, 1.0) / 1000),
        secs(Duration::from_micros(r.stats.stall_micros)),
        secs(r.generate)
    );
}

fn main() {
    let cfg = parse_args();
    let per_pass = cfg.lookups.min((cfg.receipts / 2) as usize).max(1);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    fs::create_dir_all(&cfg.dir).expect("create the data directory");
    for sub in ["raw", "index"] {
        let p = cfg.dir.join(sub);
        if p.exists() {
            fs::remove_dir_all(&p).expect("remove a previous run's data");
        }
    }

    let mut report = String::new();
    let _ = writeln!(report, "command: {command}");
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "machine: nproc {}, {cpu}, RAM {} (available {} at start)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        bytes(mem_kib("MemTotal:") * 1024),
        bytes(mem_kib("MemAvailable:") * 1024)
    );
    let _ = writeln!(report, "data dir: {} — {}", cfg.dir.display(), storage_info(&cfg.dir));
    let _ = writeln!(
        report,
        "data: {} receipts in signed batches of {} (real Ed25519 checkpoints, real inclusion proofs), \
         {} signed batches per ingest call; op ids {:?}; {} lookups of each kind per pass; block cache {}{}",
        cfg.receipts,
        cfg.batch,
        cfg.group,
        cfg.op_ids,
        per_pass,
        bytes(cfg.block_cache_bytes as u64),
        if cfg.cache_stats { "; statistics on during lookups" } else { "" }
    );

    let samples = pick_samples(cfg.receipts, per_pass);
    let total = Instant::now();

    let raw = cfg.raw.then(|| {
        eprintln!("raw baseline: ingest");
        let r = run_raw(&cfg, &samples, per_pass);
        fs::remove_dir_all(cfg.dir.join("raw")).expect("delete the raw database");
        r
    });

    eprintln!("index: ingest");
    let t = Instant::now();
    let (index, cf_rows, sampled, span) = run_index(&cfg, &samples, per_pass);
    let index_wall = t.elapsed();

    eprintln!("lookups");
    let [cold_ops, warm_ops] = sampled;
    let plans = [
        plan(cold_ops, 0xC01D, cfg.op_ids, span),
        plan(warm_ops, 0x3A53, cfg.op_ids, span),
    ];
    let path = cfg.dir.join("index");
    let index_sst = index.stats.sst_bytes;
    let avail = mem_kib("MemAvailable:") * 1024;
    let (p_cold, p_warm, warmed) = run_lookups(&cfg, &path, false, &plans);
    let (m_cold, m_warm, _) = run_lookups(&cfg, &path, true, &plans);

    // ---- ingest
    let _ = writeln!(report, "\n== 1. Ingest ({} receipts) ==", cfg.receipts);
    ingest_rows(&mut report, &index, "IndexStore::ingest_many");
    let _ = writeln!(report, "  {:<34} {}", "  phase wall (gen., settle, checks)", secs(index_wall));
    if let Some(raw) = &raw {
        ingest_rows(&mut report, raw, "raw WriteBatch, 1 CF, default opts");
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let _ = writeln!(
            report,
            "  raw is {:.2}x the index's receipts/s in the calls, {:.2}x counting its encoding, {:.2}x sustained",
            ratio(index.foreground, raw.foreground),
            ratio(index.foreground, raw.foreground + raw.encode),
            ratio(index.foreground + index.settle, raw.foreground + raw.settle),
        );
        let _ = writeln!(
            report,
            "  raw payload (key + value bytes put, incl. 1 tag byte per key): {} ({} per receipt)",
            bytes(raw.payload_bytes),
            raw.payload_bytes / cfg.receipts
        );
    }

    // ---- write amplification
    let _ = writeln!(report, "\n== 3. Write amplification and size (after flush, compactions settled) ==");
    let _ = writeln!(
        report,
        "  {:<30} {:>14} {:>14}",
        "",
        "index",
        if raw.is_some() { "raw baseline" } else { "" }
    );
    let row = |report: &mut String, name: &str, f: &dyn Fn(&WriteStats) -> String| {
        let _ = writeln!(
            report,
            "  {name:<30} {:>14} {:>14}",
            f(&index.stats),
            raw.as_ref().map(|r| f(&r.stats)).unwrap_or_default()
        );
    };
    row(&mut report, "user bytes (bytes.written)", &|s| bytes(s.user_bytes));
    row(&mut report, "keys written", &|s| s.keys_written.to_string());
    row(&mut report, "WAL bytes (wal.bytes)", &|s| bytes(s.wal_bytes));
    row(&mut report, "flush bytes (flush.write.bytes)", &|s| bytes(s.flush_bytes));
    row(&mut report, "compaction write (compact.write)", &|s| bytes(s.compact_write_bytes));
    row(&mut report, "compaction read (compact.read)", &|s| bytes(s.compact_read_bytes));
    row(&mut report, "compaction CPU", &|s| secs(Duration::from_micros(s.compaction_cpu_micros)));
    row(&mut report, "write amp (flush+compact)/user", &|s| format!("{:.2}", s.write_amp()));
    row(&mut report, "SST size (total-sst-files-size)", &|s| bytes(s.sst_bytes));
    row(&mut report, "SST bytes per receipt", &|s| (s.sst_bytes / cfg.receipts).to_string());
    row(&mut report, "directory size (SST+WAL+meta)", &|s| bytes(s.dir_bytes));
    let _ = writeln!(report, "  index column families:");
    let _ = writeln!(
        report,
        "    {:<24} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "cf", "SST size", "keys (est.)", "write (GB)", "moved (GB)", "comp (s)"
    );
    for r in &cf_rows {
        let (w, m, c) = r
            .compaction
            .map(|(w, m, c)| (format!("{w:.2}"), format!("{m:.2}"), format!("{c:.1}")))
            .unwrap_or_else(|| ("n/a".into(), "n/a".into(), "n/a".into()));
        let _ = writeln!(
            report,
            "    {:<24} {:>12} {:>12} {:>12} {:>12} {:>10}",
            r.name,
            bytes(r.sst_bytes),
            r.keys,
            w,
            m,
            c
        );
    }

    // ---- lookups
    let _ = writeln!(
        report,
        "\n== 2 + 4. Lookup latency, µs ({} of each kind per pass, kinds interleaved, {} block cache, fresh per pass) ==",
        per_pass,
        bytes(cfg.block_cache_bytes as u64)
    );
    let _ = writeln!(
        report,
        "  cold = SST files evicted from the OS page cache before the pass; warm = all SST files read once \
         ({} of {} SST; {} RAM available before lookups)",
        bytes(warmed),
        bytes(index_sst),
        bytes(avail)
    );
    let _ = writeln!(
        report,
        "  {:<33} {:<5} | {:>7} {:>7} {:>7} {:>8} {:>7} | {:>7} {:>7} {:>7} {:>8} {:>7} | {:>6}",
        "", "", "pread", "", "", "", "", "mmap", "", "", "", "", "p50"
    );
    let _ = writeln!(
        report,
        "  {:<33} {:<5} | {:>7} {:>7} {:>7} {:>8} {:>7} | {:>7} {:>7} {:>7} {:>8} {:>7} | {:>6}",
        "query", "cache", "p50", "p99", "p99.9", "max", "mean", "p50", "p99", "p99.9", "max", "mean", "mmap/pr"
    );
    for (cache, p, m) in [("cold", &p_cold, &m_cold), ("warm", &p_warm, &m_warm)] {
        for (k, kind) in KINDS.iter().enumerate() {
            let cols = |pass: &Pass| {
                let v = &pass.lat[k];
                let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
                format!(
                    "{:>7} {:>7} {:>7} {:>8} {:>7}",
                    us(pct(v, 0.5)),
                    us(pct(v, 0.99)),
                    us(pct(v, 0.999)),
                    us(pct(v, 1.0)),
                    us(mean)
                )
            };
            let speed = pct(&m.lat[k], 0.5).as_secs_f64() / pct(&p.lat[k], 0.5).as_secs_f64().max(1e-12);
            let _ = writeln!(
                report,
                "  {kind:<33} {cache:<5} | {} | {} | {speed:>6.2}",
                cols(p),
                cols(m)
            );
        }
    }
    let _ = writeln!(report, "  receipts returned per range query (mean):");
    for (cache, p, m) in [("cold", &p_cold, &m_cold), ("warm", &p_warm, &m_warm)] {
        let _ = writeln!(
            report,
            "    {cache}: by_time {:.1} / {:.1}, by_operator {:.1} / {:.1} (pread / mmap); pass wall {} / {}",
            p.returned[2] as f64 / per_pass as f64,
            m.returned[2] as f64 / per_pass as f64,
            p.returned[3] as f64 / per_pass as f64,
            m.returned[3] as f64 / per_pass as f64,
            secs(p.wall),
            secs(m.wall)
        );
    }
    if cfg.cache_stats {
        let _ = writeln!(
            report,
            "  block cache per lookup round (one lookup of each kind): misses / KiB inserted, by block type"
        );
        for (cache, p, m) in [("cold", &p_cold, &m_cold), ("warm", &p_warm, &m_warm)] {
            for (mode, pass) in [("pread", p), ("mmap", m)] {
                let Some(dump) = &pass.stats else { continue };
                let per = |name: &str| stat(dump, name, "COUNT") as f64 / per_pass as f64;
                let kinds = ["data", "index", "filter"].map(|t| {
                    format!(
                        "{t} {:.1} / {:.0}",
                        per(&format!("rocksdb.block.cache.{t}.miss")),
                        per(&format!("rocksdb.block.cache.{t}.bytes.insert")) / 1024.0
                    )
                });
                let _ = writeln!(
                    report,
                    "    {cache} {mode:<5}: {}; hits {:.1}; bloom useful {:.2}",
                    kinds.join(", "),
                    per("rocksdb.block.cache.hit"),
                    per("rocksdb.bloom.filter.useful")
                );
            }
        }
    }
    let _ = writeln!(report, "\ntotal run time: {}", secs(total.elapsed()));
    print!("{report}");

    if cfg.keep {
        eprintln!("kept {}", cfg.dir.display());
    } else {
        fs::remove_dir_all(&cfg.dir).expect("delete the data directory");
    }
}
