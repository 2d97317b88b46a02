//! Receipt-log throughput: signing receipts in batches against the SHA-256 ceiling, and
//! offline verification.
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/hsync/target
//! cd /work/main
//! nice -n 10 cargo run --release -p hsync-receipts --example receipt_bench [-- seconds]
//! ```
//!
//! `seconds` (default 1.0) is the minimum time each variant runs in each round. All variants
//! run in one process, alternating, for 3 rounds (the start variant rotates each round);
//! every figure is reported as the **median of the 3 rounds**, with the best round beside it.
//!
//! * **Signing** (batch sizes 1, 100, 1000) repeats per batch the in-memory work of
//!   `receipt_signer::Signer::sign_batch` (services/receipt-signer): drop operation ids already
//!   in the previous batch or repeated within the batch (the same two `HashSet`s), `leaf_hash`
//!   the canonical record bytes, clone the compact range and `append_batch` (new root plus one
//!   inclusion proof per leaf), sign one checkpoint note (`sign_checkpoint`, Ed25519 via ring),
//!   then assemble one receipt per record (index, proof, its own copy of the signed note) and a
//!   checkpoint header (origin, size, root, note, hex key id, timestamp). Left out: NATS
//!   (decoding, publishing, acks, tracing spans) and the state file (the `batch.clone()` kept
//!   as `last_batch`, the JSON encoding of the state and the fsync'd atomic write). The time of
//!   each step is recorded separately (7 `Instant::now()` calls per batch; the cost of one
//!   call is printed).
//! * **Ceiling**: `leaf_hash` (SHA-256 of `0x00 || record`, ring) of the same records, once
//!   each — the least work any signer must do per receipt.
//! * **Verification** against a tree of exactly 2^20 = 1,048,576 leaves, so every inclusion
//!   proof has 20 hashes: `verify_inclusion` alone (leaf hash given), `leaf_hash` +
//!   `verify_inclusion`, `open_checkpoint` alone (Ed25519 verify + note/body parsing), and the
//!   full `verify_receipt`.
//!
//! The log starts at 2^20 − 1024 = 1,047,552 leaves (appended untimed); each signing variant
//! keeps its own copy of the log, which keeps growing through the rounds.
//!
//! Records: `hsync-protocol` is not a dependency of `hsync-receipts`, so the leaves are
//! MessagePack encoded by hand in the layout of `OperationRecord::canonical_bytes`
//! (`rmp_serde::to_vec_named`: a 13-entry map with named fields in declaration order, hashes
//! as `bin 8`, the outcome as its variant name) with realistic values — a 32-hex operation id
//! distinct per record, a uuid-v7-like job id, trace id, two SHA-256 hashes, microsecond
//! timestamps. A pool of 16,384 records (several MB, more than the caches) is reused
//! cyclically; no batch ever repeats an id of itself or of the previous batch, so the
//! de-duplication never drops a record.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hsync_receipts::keys::SigningKey;
use hsync_receipts::merkle::{leaf_hash, verify_inclusion, CompactRange, Hash};
use hsync_receipts::note::{open_checkpoint, sign_checkpoint, Checkpoint, VerifierKey};
use hsync_receipts::verify_receipt;

const ORIGIN: &str = "hsync.local/receipts";
const POOL: usize = 1 << 14;
const PRE_APPEND: u64 = (1 << 20) - 1024;
const ROUNDS: usize = 3;
const BATCHES: [usize; 3] = [1, 100, 1000];

// ---------------------------------------------------------------------------------------
// Records shaped like `OperationRecord::canonical_bytes`.

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_bytes<const N: usize>(s: &mut u64) -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let v = splitmix(s).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

fn mp_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn mp_bin32(out: &mut Vec<u8>, b: &[u8; 32]) {
    out.extend_from_slice(&[0xc4, 32]);
    out.extend_from_slice(b);
}

/// rmp writes the shortest unsigned form.
fn mp_u64(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v < 1 << 8 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v < 1 << 16 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

struct Record {
    operation_id: String,
    bytes: Vec<u8>,
}

/// Record `i`: step `i % 8` of job `i / 8`.
fn record(i: u64) -> Record {
    let mut s = i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5DEE_CE66;
    let mut job_seed = (i / 8).wrapping_add(0xA076_1D64_78BD_642F);
    let job_id = hex::encode(random_bytes::<16>(&mut job_seed));
    let trace_id = hex::encode(random_bytes::<16>(&mut job_seed));
    let node_id = format!("step-{}", i % 8);
    // The runner's id: hex(SHA-256(job_id || 0 || node_id)[..16]); any distinct 32 hex will do.
    let operation_id = hex::encode(&leaf_hash(format!("{job_id}\0{node_id}").as_bytes())[..16]);
    let started = 1_750_000_000_000_000 + i * 1_370;
    let cached = i % 10 == 3;
    let mut b = Vec::with_capacity(400);
    b.push(0x80 | 13);
    mp_str(&mut b, "operation_id");
    mp_str(&mut b, &operation_id);
    mp_str(&mut b, "job_id");
    mp_str(&mut b, &job_id);
    mp_str(&mut b, "node_id");
    mp_str(&mut b, &node_id);
    mp_str(&mut b, "operator");
    mp_str(&mut b, "hsync.text.tokenize@1.2.0");
    mp_str(&mut b, "inputs_hash");
    mp_bin32(&mut b, &random_bytes::<32>(&mut s));
    mp_str(&mut b, "output_hash");
    mp_bin32(&mut b, &random_bytes::<32>(&mut s));
    mp_str(&mut b, "outcome");
    mp_str(&mut b, if cached { "cached" } else { "executed" });
    mp_str(&mut b, "policies");
    b.push(0x90 | 1);
    mp_str(&mut b, "default-allow");
    mp_str(&mut b, "submitter");
    mp_str(&mut b, "alice@example.org");
    mp_str(&mut b, "trace_id");
    mp_str(&mut b, &trace_id);
    mp_str(&mut b, "started_at_us");
    mp_u64(&mut b, started);
    mp_str(&mut b, "finished_at_us");
    mp_u64(&mut b, started + if cached { 180 } else { 2_450 });
    mp_str(&mut b, "error");
    b.push(0xc0);
    Record {
        operation_id,
        bytes: b,
    }
}

// ---------------------------------------------------------------------------------------
// The signer's per-batch work, without NATS and without the state file.

/// Mirrors `hsync_protocol::receipt::Receipt` (leaf bytes borrowed instead of moved).
struct Receipt<'a> {
    operation_id: String,
    leaf_index: u64,
    leaf: &'a [u8],
    inclusion_proof: Vec<Hash>,
    tree_size: u64,
    checkpoint: String,
}

/// Mirrors `hsync_protocol::receipt::Checkpoint`.
struct BatchCheckpoint {
    origin: String,
    tree_size: u64,
    root_hash: Hash,
    signed_note: String,
    key_id: String,
    signed_at_us: u64,
}

#[derive(Default, Clone, Copy)]
struct Phases {
    dedup: Duration,
    hash: Duration,
    append: Duration,
    sign: Duration,
    assemble: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.dedup + self.hash + self.append + self.sign + self.assemble
    }
}

struct Signer<'a> {
    key: &'a SigningKey,
    origin: String,
    range: CompactRange,
    last_receipts: Vec<Receipt<'a>>,
    last_checkpoint: Option<BatchCheckpoint>,
    phases: Phases,
    receipts: u64,
    batches: u64,
    proof_hashes: u64,
}

impl<'a> Signer<'a> {
    fn new(key: &'a SigningKey, range: CompactRange) -> Self {
        Signer {
            key,
            origin: ORIGIN.to_string(),
            range,
            last_receipts: Vec::new(),
            last_checkpoint: None,
            phases: Phases::default(),
            receipts: 0,
            batches: 0,
            proof_hashes: 0,
        }
    }

    fn sign_batch(&mut self, records: &'a [Record]) {
        let t0 = Instant::now();
        let already: HashSet<&str> = self
            .last_receipts
            .iter()
            .map(|r| r.operation_id.as_str())
            .collect();
        let mut seen = HashSet::new();
        let fresh: Vec<&'a Record> = records
            .iter()
            .filter(|r| {
                !already.contains(r.operation_id.as_str()) && seen.insert(r.operation_id.clone())
            })
            .collect();
        assert_eq!(fresh.len(), records.len(), "the pool must not repeat ids");
        let t1 = Instant::now();

        let leaves: Vec<Hash> = fresh.iter().map(|r| leaf_hash(&r.bytes)).collect();
        let t2 = Instant::now();

        let mut range = self.range.clone();
        let proofs = range.append_batch(&leaves);
        let t3 = Instant::now();

        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: proofs.new_size,
            root: proofs.root,
        };
        let signed_note = sign_checkpoint(&cp, self.key).expect("checkpoint signs");
        let t4 = Instant::now();

        let checkpoint = BatchCheckpoint {
            origin: self.origin.clone(),
            tree_size: proofs.new_size,
            root_hash: proofs.root,
            signed_note: signed_note.clone(),
            key_id: self
                .key
                .key_id()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            signed_at_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
        };
        let receipts: Vec<Receipt<'a>> = fresh
            .into_iter()
            .zip(proofs.proofs)
            .enumerate()
            .map(|(i, (record, proof))| Receipt {
                operation_id: record.operation_id.clone(),
                leaf_index: proofs.old_size + i as u64,
                leaf: &record.bytes,
                inclusion_proof: proof,
                tree_size: proofs.new_size,
                checkpoint: signed_note.clone(),
            })
            .collect();
        self.proof_hashes += receipts
            .iter()
            .map(|r| r.inclusion_proof.len() as u64)
            .sum::<u64>();
        self.receipts += receipts.len() as u64;
        self.batches += 1;
        self.range = range;
        self.last_receipts = receipts; // drops the previous batch, as the signer's state swap does
        self.last_checkpoint = Some(checkpoint);
        let t5 = Instant::now();

        self.phases.dedup += t1 - t0;
        self.phases.hash += t2 - t1;
        self.phases.append += t3 - t2;
        self.phases.sign += t4 - t3;
        self.phases.assemble += t5 - t4;
    }

    /// Untimed: every receipt of the last batch verifies offline.
    fn check_last_batch(&self, vk: &VerifierKey) {
        let cp = self.last_checkpoint.as_ref().expect("a batch was signed");
        assert_eq!(cp.origin, ORIGIN);
        assert_eq!(cp.tree_size, self.range.size());
        assert_eq!(cp.root_hash, self.range.root());
        assert_eq!(cp.key_id.len(), 8);
        assert!(cp.signed_at_us > 0);
        for r in &self.last_receipts {
            assert_eq!(r.tree_size, cp.tree_size);
            assert_eq!(r.checkpoint, cp.signed_note);
            let opened = verify_receipt(r.leaf, r.leaf_index, &r.inclusion_proof, &r.checkpoint, vk)
                .expect("receipt verifies");
            assert_eq!(opened.size, r.tree_size);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Variants and rounds.

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Ceiling,
    Sign(usize),
    Inclusion,
    LeafAndInclusion,
    OpenCheckpoint,
    VerifyReceipt,
}

/// Receipts signed against the 2^20-leaf tree, for the verification variants.
struct Fixture<'a> {
    leaves: Vec<Hash>,
    receipts: Vec<Receipt<'a>>,
    root: Hash,
    vk: VerifierKey,
}

struct Bench<'a> {
    pool: &'a [Record],
    signers: Vec<Signer<'a>>,
    cursors: Vec<usize>,
    ceiling_cursor: usize,
    fixture: Fixture<'a>,
    min: Duration,
}

impl Bench<'_> {
    /// Runs one variant for at least `self.min`; returns (units done, elapsed).
    fn run(&mut self, v: Variant, min: Duration) -> (u64, Duration) {
        let start = Instant::now();
        let mut done = 0u64;
        match v {
            Variant::Ceiling => {
                while start.elapsed() < min {
                    for _ in 0..1024 {
                        let r = &self.pool[self.ceiling_cursor];
                        black_box(leaf_hash(black_box(&r.bytes)));
                        self.ceiling_cursor = (self.ceiling_cursor + 1) % self.pool.len();
                    }
                    done += 1024;
                }
            }
            Variant::Sign(batch) => {
                let k = BATCHES.iter().position(|&b| b == batch).expect("known batch size");
                let pool = self.pool;
                let signer = &mut self.signers[k];
                let cursor = &mut self.cursors[k];
                while start.elapsed() < min {
                    if *cursor + batch > pool.len() {
                        *cursor = 0;
                    }
                    signer.sign_batch(&pool[*cursor..*cursor + batch]);
                    *cursor += batch;
                    done += batch as u64;
                }
            }
            Variant::Inclusion
            | Variant::LeafAndInclusion
            | Variant::OpenCheckpoint
            | Variant::VerifyReceipt => {
                let f = &self.fixture;
                while start.elapsed() < min {
                    for (r, leaf) in f.receipts.iter().zip(&f.leaves) {
                        match v {
                            Variant::Inclusion => {
                                let ok = verify_inclusion(
                                    black_box(r.leaf_index),
                                    r.tree_size,
                                    leaf,
                                    &r.inclusion_proof,
                                    &f.root,
                                );
                                black_box(ok).expect("inclusion verifies");
                            }
                            Variant::LeafAndInclusion => {
                                let ok = verify_inclusion(
                                    r.leaf_index,
                                    r.tree_size,
                                    &leaf_hash(black_box(r.leaf)),
                                    &r.inclusion_proof,
                                    &f.root,
                                );
                                black_box(ok).expect("inclusion verifies");
                            }
                            Variant::OpenCheckpoint => {
                                let cp = open_checkpoint(black_box(&r.checkpoint), &f.vk);
                                black_box(cp).expect("checkpoint opens");
                            }
                            _ => {
                                let cp = verify_receipt(
                                    r.leaf,
                                    r.leaf_index,
                                    &r.inclusion_proof,
                                    black_box(&r.checkpoint),
                                    &f.vk,
                                );
                                black_box(cp).expect("receipt verifies");
                            }
                        }
                    }
                    done += f.receipts.len() as u64;
                }
            }
        }
        (done, start.elapsed())
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

/// 1234567.8 -> "1,234,568".
fn grouped(x: f64) -> String {
    let s = format!("{x:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(part: Duration, total: Duration) -> f64 {
    100.0 * part.as_secs_f64() / total.as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: f64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 1.0,
    };
    let min = Duration::from_secs_f64(secs);

    let setup = Instant::now();
    let key = SigningKey::generate(ORIGIN)?;
    let vk = key.verifier_key();
    let pool: Vec<Record> = (0..POOL as u64).map(record).collect();
    let ids: HashSet<&str> = pool.iter().map(|r| r.operation_id.as_str()).collect();
    assert_eq!(ids.len(), POOL, "operation ids are distinct");
    let leaf_bytes: usize = pool.iter().map(|r| r.bytes.len()).sum();
    let (min_len, max_len) = pool.iter().fold((usize::MAX, 0), |(lo, hi), r| {
        (lo.min(r.bytes.len()), hi.max(r.bytes.len()))
    });
    let avg_len = leaf_bytes as f64 / POOL as f64;

    let mut base = CompactRange::new();
    for i in 0..PRE_APPEND {
        base.append(leaf_hash(&i.to_be_bytes()));
    }

    // Verification fixture: one batch of 1024 brings the tree to exactly 2^20 leaves.
    let mut fixture_signer = Signer::new(&key, base.clone());
    fixture_signer.sign_batch(&pool[..1024]);
    fixture_signer.check_last_batch(&vk);
    assert_eq!(fixture_signer.range.size(), 1 << 20);
    assert!(fixture_signer
        .last_receipts
        .iter()
        .all(|r| r.inclusion_proof.len() == 20));
    let fixture = Fixture {
        leaves: fixture_signer
            .last_receipts
            .iter()
            .map(|r| leaf_hash(r.leaf))
            .collect(),
        root: fixture_signer.range.root(),
        receipts: std::mem::take(&mut fixture_signer.last_receipts),
        vk: vk.clone(),
    };
    let note_len = fixture.receipts[0].checkpoint.len();

    let mut bench = Bench {
        pool: &pool,
        signers: BATCHES.iter().map(|_| Signer::new(&key, base.clone())).collect(),
        cursors: vec![1024; BATCHES.len()],
        ceiling_cursor: 0,
        fixture,
        min,
    };
    let setup_time = setup.elapsed();

    let clock_overhead = {
        let n = 1_000_000u32;
        let t = Instant::now();
        for _ in 0..n {
            black_box(Instant::now());
        }
        t.elapsed() / n
    };

    let variants: Vec<Variant> = std::iter::once(Variant::Ceiling)
        .chain(BATCHES.iter().map(|&b| Variant::Sign(b)))
        .chain([
            Variant::Inclusion,
            Variant::LeafAndInclusion,
            Variant::OpenCheckpoint,
            Variant::VerifyReceipt,
        ])
        .collect();

    // Warm-up (untimed), then the measured rounds.
    for &v in &variants {
        bench.run(v, Duration::from_millis(200));
    }
    for s in &mut bench.signers {
        s.phases = Phases::default();
        s.receipts = 0;
        s.batches = 0;
        s.proof_hashes = 0;
    }
    let size_before: Vec<u64> = bench.signers.iter().map(|s| s.range.size()).collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..ROUNDS {
        for j in 0..variants.len() {
            let k = (j + round * 3) % variants.len();
            let (n, t) = bench.run(variants[k], bench.min);
            rates[k].push(n as f64 / t.as_secs_f64());
        }
    }
    for s in &bench.signers {
        s.check_last_batch(&vk);
    }

    println!(
        "hsync-receipts receipt_bench: {ROUNDS} rounds, each variant >= {secs} s per round, \
         variants alternating; figures = median of the {ROUNDS} rounds (best round beside it)"
    );
    println!(
        "setup (untimed): {} records, canonical-bytes-shaped MessagePack of {min_len}..{max_len} \
         bytes (avg {avg_len:.1}); log pre-appended to {} leaves; signed note {note_len} bytes; \
         {:.1} s",
        grouped(POOL as f64),
        grouped(PRE_APPEND as f64),
        setup_time.as_secs_f64()
    );
    println!("Instant::now() costs {clock_overhead:?} (7 per signed batch, plus one SystemTime::now())");
    println!();

    let ceiling = median(&rates[0]);
    println!("### Signing receipts (per-batch work of receipt-signer's sign_batch, no NATS, no state file)");
    println!();
    println!(
        "| work | batch | receipts/s (median) | receipts/s (best) | µs/receipt (median) | \
         signatures/receipt | % of SHA-256 ceiling | Ed25519 sign µs/batch | avg proof hashes | \
         time split: dedup / leaf hash / clone+append_batch+proofs / sign note / assemble | \
         log size start → end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| SHA-256 ceiling: leaf_hash once per record ({:.0} MB/s) | – | {} | {} | {:.3} | – | 100% | – | – | – | – |",
        ceiling * avg_len / 1e6,
        grouped(ceiling),
        grouped(best(&rates[0])),
        1e6 / ceiling,
    );
    for (k, &batch) in BATCHES.iter().enumerate() {
        let r = &rates[1 + k];
        let s = &bench.signers[k];
        let p = s.phases;
        let total = p.total();
        println!(
            "| sign_batch work | {batch} | {} | {} | {:.3} | {} | {:.1}% | {:.1} | {:.1} | \
             {:.1}% / {:.1}% / {:.1}% / {:.1}% / {:.1}% | {} → {} |",
            grouped(median(r)),
            grouped(best(r)),
            1e6 / median(r),
            if batch == 1 { "1".to_string() } else { format!("1/{batch} = {}", 1.0 / batch as f64) },
            100.0 * median(r) / ceiling,
            p.sign.as_secs_f64() * 1e6 / s.batches as f64,
            s.proof_hashes as f64 / s.receipts as f64,
            pct(p.dedup, total),
            pct(p.hash, total),
            pct(p.append, total),
            pct(p.sign, total),
            pct(p.assemble, total),
            grouped(size_before[k] as f64),
            grouped(s.range.size() as f64),
        );
    }
    println!();
    println!("### Verifying receipts (tree of 1,048,576 leaves, every inclusion proof 20 hashes)");
    println!();
    println!("| check | per second (median) | per second (best) | µs each (median) | SHA-256 calls |");
    println!("|---|---|---|---|---|");
    let rows = [
        ("verify_inclusion (leaf hash given)", "20"),
        ("leaf_hash + verify_inclusion", "21"),
        ("open_checkpoint (Ed25519 verify + parse)", "0 (Ed25519 uses SHA-512)"),
        ("verify_receipt (signature + inclusion)", "21, plus one Ed25519 verify"),
    ];
    for (i, (name, hashes)) in rows.iter().enumerate() {
        let r = &rates[1 + BATCHES.len() + i];
        println!(
            "| {name} | {} | {} | {:.3} | {hashes} |",
            grouped(median(r)),
            grouped(best(r)),
            1e6 / median(r),
        );
    }
    println!();
    println!(
        "per-round rates (units/s): {}",
        variants
            .iter()
            .zip(&rates)
            .map(|(v, r)| {
                let name = match v {
                    Variant::Ceiling => "ceiling".to_string(),
                    Variant::Sign(b) => format!("batch {b}"),
                    Variant::Inclusion => "inclusion".to_string(),
                    Variant::LeafAndInclusion => "leaf+inclusion".to_string(),
                    Variant::OpenCheckpoint => "open_checkpoint".to_string(),
                    Variant::VerifyReceipt => "verify_receipt".to_string(),
                };
                let xs: Vec<String> = r.iter().map(|&x| grouped(x)).collect();
                format!("{name} [{}]", xs.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}
