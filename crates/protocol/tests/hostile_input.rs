//! Hostile input for every message a service or client decodes off NATS: requests, replies,
//! stream messages and KV values, through [`Codec::decode`] exactly as `hsync_bus` calls it.
//!
//! * (a) arbitrary bytes, and arbitrary "MessagePack token soup" (headers of any length,
//!   numbers of every width, strings, ext) that reaches much deeper than random bytes;
//! * (b) mutations of valid encodings (every `proto-schemas/examples` message, plus large
//!   zstd-compressed jobs): bit flips, byte overwrites with MessagePack markers,
//!   truncations, insertions, deletions, duplications and splices of two messages;
//! * (c) hand-built hostile messages: containers and strings declaring 2^32-1 elements
//!   over a tiny body, 100 000 levels of nesting, out-of-range and non-finite numbers
//!   where integers are expected, zstd bombs, lying zstd frame headers and zstd garbage.
//!
//! Every decode must not panic, must return either a value that re-encodes stably or an
//! error that names the message type and the layer that refused it, in at most
//! [`MAX_ERROR_TEXT`] bytes, and must stay within a stated heap budget. The budget is
//! measured by the counting allocator below, per thread, so that the test harness's
//! parallel tests do not disturb each other. (zstd's own contexts are allocated by its C
//! library, not through Rust's allocator, and are not counted; the output buffers are.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use async_nats::HeaderMap;
use hsync_protocol::audit::{
    CheckpointQuery, CheckpointReply, ConsistencyQuery, ConsistencyReply, Empty, IndexStats,
    OperatorById, OperatorPage, OperatorReply, OperatorsQuery, ReceiptById, ReceiptByOperation,
    ReceiptPage, ReceiptReply, ReceiptsByJob, ReceiptsByTime,
};
use hsync_protocol::codec::headers;
use hsync_protocol::job::{ExtendJob, Job, JobResult, Node, NodeReport};
use hsync_protocol::operator::{
    ArgSpec, OperatorBatch, OperatorBatchReply, OperatorCall, OperatorDef, OperatorOutput,
    OperatorResult,
};
use hsync_protocol::policy::{PolicyDecision, PolicyEvalReply, PolicyEvalRequest, PolicyQuery};
use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch, VerifierKeys};
use hsync_protocol::record::OperationRecord;
use hsync_protocol::{Arg, Codec, CodecError, ErrorCode, ErrorReply, Format, Tensor, Value};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;

// ---------------------------------------------------------------------------------------
// A heap counter: the system allocator plus per-thread live/peak byte counts.

struct PeakCounter;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Lowest stack address seen at an allocation (the stack grows down).
    static LOW_STACK: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// An address in the caller's stack frame.
#[inline(never)]
fn stack_address() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

fn grew(bytes: usize) {
    let here = stack_address();
    let _ = LOW_STACK.try_with(|low| low.set(low.get().min(here)));
    // `try_with`: never panic inside the allocator, even while a thread is torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - bytes as isize));
}

// SAFETY: every call goes unchanged to the system allocator; the counters are
// const-initialised thread locals without destructors, so updating them never allocates.
unsafe impl GlobalAlloc for PeakCounter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    // Counted as a new block before the old one goes: a moving realloc holds both.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakCounter = PeakCounter;

/// Runs `f` and returns its result and the most heap (bytes) that this thread had live at
/// once while it ran, above what was live before.
fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, usize::try_from(peak - base).unwrap_or(0))
}

/// Runs `f` and returns its result and how deep into this thread's stack it went, as
/// far as its allocations show (a lower bound: frames below the deepest allocation are
/// not seen; decoding a nested array or map allocates at every level).
fn stack_used<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = stack_address();
    LOW_STACK.with(|low| low.set(base));
    let r = f();
    (r, base.saturating_sub(LOW_STACK.with(Cell::get)))
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Heap budget for decoding `len` bytes that are not zstd-compressed: a fixed allowance
/// (serde pre-allocates up to 1 MiB for a sequence whose declared length is a lie, and a
/// few such sequences can be open at once along one path of nested message types) plus
/// [`AMPLIFICATION`] times the input.
fn budget(len: usize) -> usize {
    4 * MIB + AMPLIFICATION * len
}

/// Most heap a decoded byte may cost: a 1-byte MessagePack element (nil, an empty array)
/// becomes a 48-byte `Value`, in a `Vec` that grows by doubling, and a reallocation holds
/// the old block and the new one at once (measured: 94 bytes per byte; see
/// `large_values_cost_a_bounded_multiple_of_their_bytes`). An error that quotes an
/// input string escapes it (up to 6 bytes per byte) on top of the string itself.
const AMPLIFICATION: usize = 128;

/// Heap budget for decoding one of the hand-built hostile messages below (lying lengths,
/// deep nesting; up to 500 KB), whatever its length: nothing in them is worth keeping,
/// so only the bounded pre-allocations may be live (measured: at most 2 MiB).
const HOSTILE_BUDGET: usize = 4 * MIB;

/// Longest error text a decode may give: it travels in a reply and the first line in the
/// `Nats-Service-Error` header; a longer one (serde quotes the offending input) would make
/// the error reply itself too large for NATS.
const MAX_ERROR_TEXT: usize = 2 * KIB;

// ---------------------------------------------------------------------------------------
// Every message type.

/// What decoding some bytes as one type gave.
struct Outcome {
    ty: &'static str,
    result: Result<(), CodecError>,
    /// Heap peak of the decode alone.
    peak: usize,
    /// For a successful decode: whether its value re-encodes to MessagePack that decodes
    /// and re-encodes to the same bytes (`Err` says how it did not).
    stable: Result<(), String>,
}

fn decode_one<T: Serialize + DeserializeOwned>(
    ty: &'static str,
    codec: &Codec,
    h: Option<&HeaderMap>,
    bytes: &[u8],
) -> Outcome {
    let (result, peak) = peak_heap(|| codec.decode::<T>(h, bytes));
    let stable = match &result {
        Ok(v) => reencodes_stably(v),
        Err(_) => Ok(()),
    };
    Outcome {
        ty,
        result: result.map(drop),
        peak,
        stable,
    }
}

/// A decoded value's MessagePack must decode again, to a value with the same encoding.
fn reencodes_stably<T: Serialize + DeserializeOwned>(v: &T) -> Result<(), String> {
    let once = rmp_serde::to_vec_named(v).map_err(|e| format!("re-encoding failed: {e}"))?;
    let back: T =
        rmp_serde::from_slice(&once).map_err(|e| format!("re-encoded bytes do not decode: {e}"))?;
    let twice =
        rmp_serde::to_vec_named(&back).map_err(|e| format!("second re-encoding failed: {e}"))?;
    if once != twice {
        return Err(format!(
            "re-encoding is not stable:\n{once:02x?}\n{twice:02x?}"
        ));
    }
    Ok(())
}

macro_rules! message_types {
    ($($ty:ident),* $(,)?) => {
        /// Every type decoded off NATS (requests, replies, stream messages, KV values) and
        /// the parts with their own schema.
        const TYPE_NAMES: &[&str] = &[$(stringify!($ty)),*];

        fn decode_as_every_type(codec: &Codec, h: Option<&HeaderMap>, bytes: &[u8]) -> Vec<Outcome> {
            vec![$(decode_one::<$ty>(stringify!($ty), codec, h, bytes)),*]
        }

        fn decode_as(ty: &str, codec: &Codec, h: Option<&HeaderMap>, bytes: &[u8]) -> Outcome {
            match ty {
                $(stringify!($ty) => decode_one::<$ty>(stringify!($ty), codec, h, bytes),)*
                other => panic!("no message type {other}"),
            }
        }

        /// The MessagePack encoding of a JSON example of type `ty`.
        fn json_to_msgpack(ty: &str, json: &[u8]) -> Vec<u8> {
            fn conv<T: Serialize + DeserializeOwned>(json: &[u8]) -> Vec<u8> {
                let v: T = Codec::default().decode(Some(&json_headers()), json).expect("a valid example");
                rmp_serde::to_vec_named(&v).expect("encodes")
            }
            match ty {
                $(stringify!($ty) => conv::<$ty>(json),)*
                other => panic!("no message type {other}"),
            }
        }
    };
}

message_types!(
    // requests
    Job,
    ExtendJob,
    OperatorCall,
    OperatorBatch,
    PolicyEvalRequest,
    ReceiptByOperation,
    ReceiptsByJob,
    ReceiptById,
    ReceiptsByTime,
    CheckpointQuery,
    ConsistencyQuery,
    OperatorById,
    OperatorsQuery,
    Empty,
    // stream messages and KV values
    OperationRecord,
    SignedBatch,
    OperatorDef,
    // replies
    JobResult,
    OperatorOutput,
    OperatorBatchReply,
    PolicyEvalReply,
    ReceiptReply,
    ReceiptPage,
    CheckpointReply,
    ConsistencyReply,
    OperatorReply,
    OperatorPage,
    IndexStats,
    VerifierKeys,
    ErrorReply,
    // parts
    Node,
    Arg,
    Value,
    NodeReport,
    PolicyQuery,
    PolicyDecision,
    ArgSpec,
    OperatorResult,
    Receipt,
    Checkpoint,
);

/// Checks one outcome: a clear error or a stable value, within `heap_limit`.
fn check(o: &Outcome, input_len: usize, heap_limit: usize) -> Result<(), String> {
    if o.peak > heap_limit {
        return Err(format!(
            "{}: decoding {input_len} bytes had {} bytes of heap live at once, over the budget of {heap_limit}",
            o.ty, o.peak
        ));
    }
    match &o.result {
        Ok(()) => o.stable.clone().map_err(|e| format!("{}: {e}", o.ty)),
        Err(e) => check_error(o.ty, e),
    }
}

/// A decode error names the type, says which layer refused the bytes, maps to the right
/// error code and is short enough to travel in a reply.
fn check_error(ty: &str, e: &CodecError) -> Result<(), String> {
    let text = e.to_string();
    if text.len() > MAX_ERROR_TEXT {
        return Err(format!(
            "{ty}: the error text is {} bytes: {}…",
            text.len(),
            prefix(&text, 200)
        ));
    }
    let reply = e.to_reply();
    match e {
        CodecError::Malformed { what, message } => {
            let layer_named = ["MessagePack: ", "JSON: ", "zstd: "]
                .iter()
                .any(|p| message.starts_with(p))
                || message == "empty payload";
            if *what != ty || !layer_named || message.ends_with(": ") {
                return Err(format!("{ty}: unclear error: {text}"));
            }
            if !text.starts_with(&format!("cannot decode {ty}: "))
                || reply.code != ErrorCode::Malformed
            {
                return Err(format!(
                    "{ty}: error does not name the type or has code {}: {text}",
                    reply.code
                ));
            }
        }
        CodecError::TooLarge(m) => {
            if !m.contains(ty) || !m.contains("limit") || reply.code != ErrorCode::PayloadTooLarge {
                return Err(format!("{ty}: unclear size error ({}): {text}", reply.code));
            }
        }
        CodecError::Encode { .. } => {
            return Err(format!("{ty}: decoding gave an encoding error: {text}"))
        }
    }
    Ok(())
}

fn prefix(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn check_all(
    outcomes: &[Outcome],
    input_len: usize,
    heap_limit: usize,
) -> Result<(), TestCaseError> {
    assert_eq!(outcomes.len(), TYPE_NAMES.len());
    for o in outcomes {
        check(o, input_len, heap_limit).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::CONTENT_TYPE, headers::JSON);
    h
}

fn zstd_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::CONTENT_ENCODING, headers::ZSTD);
    h
}

fn zstd_json_headers() -> HeaderMap {
    let mut h = zstd_headers();
    h.insert(headers::CONTENT_TYPE, headers::JSON);
    h
}

/// The decoded-size limit the property tests use for zstd: small enough that the budget
/// can be stated in a few MiB.
const SMALL_LIMIT: usize = MIB;

fn small_codec() -> Codec {
    Codec {
        max_decoded_size: SMALL_LIMIT,
        ..Codec::default()
    }
}

/// Budget for a zstd payload: the inflated bytes may reach the limit, and the stream
/// decoder's output `Vec` grows by doubling past it (to less than twice the limit, and a
/// moving reallocation briefly holds the old block too: three times), plus decoding them.
fn zstd_budget(limit: usize) -> usize {
    3 * limit + budget(limit)
}

// ---------------------------------------------------------------------------------------
// Hand-written MessagePack.

mod mp {
    pub fn nil() -> Vec<u8> {
        vec![0xc0]
    }
    pub fn map(n: u32) -> Vec<u8> {
        match n {
            0..=15 => vec![0x80 | n as u8],
            16..=0xffff => [&[0xde][..], &(n as u16).to_be_bytes()].concat(),
            _ => map32(n),
        }
    }
    pub fn map32(n: u32) -> Vec<u8> {
        [&[0xdf][..], &n.to_be_bytes()].concat()
    }
    pub fn arr(n: u32) -> Vec<u8> {
        match n {
            0..=15 => vec![0x90 | n as u8],
            16..=0xffff => [&[0xdc][..], &(n as u16).to_be_bytes()].concat(),
            _ => arr32(n),
        }
    }
    pub fn arr32(n: u32) -> Vec<u8> {
        [&[0xdd][..], &n.to_be_bytes()].concat()
    }
    pub fn str(s: &str) -> Vec<u8> {
        let n = s.len();
        let head = match n {
            0..=31 => vec![0xa0 | n as u8],
            32..=0xff => vec![0xd9, n as u8],
            0x100..=0xffff => [&[0xda][..], &(n as u16).to_be_bytes()].concat(),
            _ => [&[0xdb][..], &(n as u32).to_be_bytes()].concat(),
        };
        [head, s.as_bytes().to_vec()].concat()
    }
    pub fn str32_header(n: u32) -> Vec<u8> {
        [&[0xdb][..], &n.to_be_bytes()].concat()
    }
    pub fn bin(b: &[u8]) -> Vec<u8> {
        [&[0xc6][..], &(b.len() as u32).to_be_bytes(), b].concat()
    }
    pub fn bin32_header(n: u32) -> Vec<u8> {
        [&[0xc6][..], &n.to_be_bytes()].concat()
    }
    pub fn ext32_header(n: u32, kind: i8) -> Vec<u8> {
        [&[0xc9][..], &n.to_be_bytes(), &[kind as u8]].concat()
    }
    pub fn u64(x: u64) -> Vec<u8> {
        [&[0xcf][..], &x.to_be_bytes()].concat()
    }
    pub fn i64(x: i64) -> Vec<u8> {
        [&[0xd3][..], &x.to_be_bytes()].concat()
    }
    pub fn f64(x: f64) -> Vec<u8> {
        [&[0xcb][..], &x.to_be_bytes()].concat()
    }
    pub fn f32(x: f32) -> Vec<u8> {
        [&[0xca][..], &x.to_be_bytes()].concat()
    }
    /// A map from field names to already encoded values.
    pub fn obj(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = map(fields.len() as u32);
        for (k, v) in fields {
            out.extend(str(k));
            out.extend_from_slice(v);
        }
        out
    }
}

/// A job with one `const` node whose `value` argument is `raw` (encoded MessagePack).
fn job_with_arg(raw: &[u8]) -> Vec<u8> {
    let node = mp::obj(&[
        ("id", mp::str("a")),
        ("op", mp::str("const")),
        ("args", mp::obj(&[("value", raw.to_vec())])),
    ]);
    mp::obj(&[("nodes", [mp::arr(1), node].concat())])
}

/// `levels` nested one-element arrays around `nil`.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let mut v = vec![0x91; levels];
    v.push(0xc0);
    v
}

/// Every field name of every message type, for putting a hostile value where each of
/// them is expected (fields a type does not have are skipped by the decoder, which still
/// has to walk the value).
const FIELDS: &[&str] = &[
    "job_id",
    "submitter",
    "nodes",
    "outputs",
    "wait_receipts",
    "timeout_ms",
    "keep_session",
    "id",
    "op",
    "args",
    "operator",
    "status",
    "operation_id",
    "cached",
    "elapsed_us",
    "decided_by",
    "error",
    "receipts",
    "trace_id",
    "outputs_object",
    "bucket",
    "name",
    "size",
    "calls",
    "results",
    "output",
    "queries",
    "principal",
    "stage",
    "capabilities",
    "context",
    "decisions",
    "allowed",
    "policies",
    "errors",
    "version",
    "deterministic",
    "cacheable",
    "provider",
    "kind",
    "subject",
    "batch_subject",
    "cost_hint",
    "description",
    "required",
    "inputs_hash",
    "output_hash",
    "outcome",
    "started_at_us",
    "finished_at_us",
    "leaf_index",
    "leaf",
    "inclusion_proof",
    "tree_size",
    "checkpoint",
    "origin",
    "root_hash",
    "signed_note",
    "key_id",
    "signed_at_us",
    "traceparents",
    "record_seqs",
    "keys",
    "cursor",
    "limit",
    "from_us",
    "to_us",
    "receipt",
    "next_cursor",
    "batches",
    "operators",
    "capability",
    "from_size",
    "to_size",
    "from",
    "to",
    "proof",
    "code",
    "message",
    "node",
    "argument",
    "ref",
    "path",
    "lit",
    "shape",
    "f64",
];

/// `raw` at the top level, as the value of every field name, inside a job's node
/// argument, and as the one element of an array.
fn placements(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("top level".to_string(), raw.to_vec()),
        ("a job argument".to_string(), job_with_arg(raw)),
        (
            "an array element".to_string(),
            [mp::arr(1), raw.to_vec()].concat(),
        ),
    ];
    for f in FIELDS {
        out.push((format!("field `{f}`"), mp::obj(&[(f, raw.to_vec())])));
    }
    out
}

/// The stack of a tokio worker thread, where services decode.
const WORKER_STACK: usize = 2 * MIB;

/// The stack the deep-nesting tests run on: a worker's in release builds, which is what
/// services run (Makefile, deploy/Dockerfile). Unoptimised frames are about seven times
/// larger (4.4 KiB per level of nested maps, against 0.6 KiB), so a debug build would
/// overflow a worker's stack at about 450 levels; there the tests get more room.
const TEST_STACK: usize = if cfg!(debug_assertions) {
    16 * MIB
} else {
    WORKER_STACK
};

/// Runs `f` on a thread with [`TEST_STACK`].
fn on_worker_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(TEST_STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .unwrap_or_else(|_| panic!("the decode panicked (or overflowed its stack)"))
}

// ---------------------------------------------------------------------------------------
// Seeds: valid encodings of every message.

struct Seed {
    ty: &'static str,
    bytes: Vec<u8>,
    headers: Option<HeaderMap>,
}

fn static_name(ty: &str) -> &'static str {
    TYPE_NAMES
        .iter()
        .copied()
        .find(|t| *t == ty)
        .unwrap_or_else(|| panic!("no message type {ty}"))
}

fn big_job(nodes: usize) -> Job {
    Job {
        job_id: "big".into(),
        submitter: "alice".into(),
        nodes: (0..nodes)
            .map(|i| Node {
                id: format!("n{i}"),
                op: "vec.add".into(),
                args: BTreeMap::from([
                    (
                        "a".to_string(),
                        Arg::Lit(Value::Tensor(Tensor::vector(vec![0.5; 8]))),
                    ),
                    ("b".to_string(), Arg::reference(&format!("n{}", i / 2))),
                ]),
            })
            .collect(),
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: Some(1000),
        keep_session: false,
    }
}

/// Every example of `proto-schemas/examples` as MessagePack and as JSON, and large jobs
/// compressed with zstd (MessagePack and JSON).
fn seeds() -> &'static [Seed] {
    static SEEDS: std::sync::OnceLock<Vec<Seed>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas/examples");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut seeds = Vec::new();
        for p in files {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let ty = static_name(name.split('.').next().unwrap());
            let json = std::fs::read(&p).unwrap();
            seeds.push(Seed {
                ty,
                bytes: json_to_msgpack(ty, &json),
                headers: None,
            });
            seeds.push(Seed {
                ty,
                bytes: json,
                headers: Some(json_headers()),
            });
        }
        let codec = Codec::default();
        for format in [Format::MsgPack, Format::Json] {
            let (h, body) = codec.encode(&big_job(40), format).unwrap();
            assert!(
                h.get(headers::CONTENT_ENCODING).is_some(),
                "the big job is compressed"
            );
            seeds.push(Seed {
                ty: "Job",
                bytes: body.to_vec(),
                headers: Some(h),
            });
        }
        assert!(seeds.len() > 100, "{} seeds", seeds.len());
        seeds
    })
}

#[test]
fn the_counter_counts() {
    let (v, peak) = peak_heap(|| vec![1u8; 3 * MIB]);
    assert!((3 * MIB..4 * MIB).contains(&peak), "peak {peak}");
    drop(v);
    let ((), peak) = peak_heap(|| ());
    assert_eq!(peak, 0);
}

/// The seeds themselves decode, re-encode stably and stay well within the budget; a
/// wrongly typed seed gives a clear error. (Guards against the properties below passing
/// because everything fails to decode.)
#[test]
fn seeds_decode_and_reencode_stably() {
    let codec = Codec::default();
    for s in seeds() {
        let o = decode_as(s.ty, &codec, s.headers.as_ref(), &s.bytes);
        assert!(
            o.result.is_ok(),
            "seed {} does not decode: {:?}",
            s.ty,
            o.result
        );
        check(&o, s.bytes.len(), budget(s.bytes.len())).unwrap();
        for o in decode_as_every_type(&codec, s.headers.as_ref(), &s.bytes) {
            check(&o, s.bytes.len(), budget(s.bytes.len())).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// (a) Arbitrary input.

/// One MessagePack token, with lengths that may lie.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        0u32..20,
        Just(u32::MAX),
        Just(u16::MAX as u32),
        any::<u32>()
    ];
    prop_oneof![
        len.clone().prop_map(mp::arr),
        len.clone().prop_map(mp::map),
        len.clone().prop_map(mp::arr32),
        len.clone().prop_map(mp::map32),
        len.clone().prop_map(mp::str32_header),
        len.clone().prop_map(mp::bin32_header),
        (len, any::<i8>()).prop_map(|(n, k)| mp::ext32_header(n, k)),
        "[a-z]{0,4}|ref|lit|path|shape|f64|nodes|args|id|op|job_id|\\PC{0,8}"
            .prop_map(|s| mp::str(&s)),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| mp::bin(&b)),
        any::<u64>().prop_map(mp::u64),
        any::<i64>().prop_map(mp::i64),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0)
        ]
        .prop_map(mp::f64),
        any::<f32>().prop_map(mp::f32),
        Just(mp::nil()),
        any::<u8>().prop_map(|b| vec![b]),
    ]
}

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(token(), 0..64).prop_map(|ts| ts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_as_every_type(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let codec = small_codec();
        let b = budget(bytes.len());
        check_all(&decode_as_every_type(&codec, None, &bytes), bytes.len(), b)?;
        check_all(&decode_as_every_type(&codec, Some(&json_headers()), &bytes), bytes.len(), b)?;
        check_all(&decode_as_every_type(&codec, Some(&zstd_headers()), &bytes), bytes.len(), zstd_budget(SMALL_LIMIT))?;
    }

    #[test]
    fn token_soup_as_every_type(bytes in token_soup()) {
        let codec = small_codec();
        check_all(&decode_as_every_type(&codec, None, &bytes), bytes.len(), budget(bytes.len()))?;
        // The same soup as a job's argument and inside a valid zstd frame.
        let job = job_with_arg(&bytes);
        check_all(&decode_as_every_type(&codec, None, &job), job.len(), budget(job.len()))?;
        let framed = zstd::bulk::compress(&bytes, 1).unwrap();
        check_all(&decode_as_every_type(&codec, Some(&zstd_headers()), &framed), framed.len(), zstd_budget(SMALL_LIMIT))?;
    }
}

// ---------------------------------------------------------------------------------------
// (b) Mutations of valid encodings.

/// MessagePack markers worth writing over a byte: nil, never-used, bool, bin/ext/str/
/// array/map headers of every width, float and integer markers, and edge values.
const MARKERS: &[u8] = &[
    0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xdc,
    0xdd, 0xde, 0xdf, 0xe0, 0xff, b'[', b'{', b'"', b'\\',
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: Index,
        bit: u8,
    },
    Overwrite {
        at: Index,
        byte: u8,
    },
    Truncate {
        at: Index,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        len: u8,
    },
    Duplicate {
        at: Index,
        len: u16,
    },
    /// Keep this message up to `at`, then continue with another seed from `from`.
    Splice {
        at: Index,
        other: Index,
        from: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (any::<Index>(), proptest::sample::select(MARKERS)).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<Index>(), prop_oneof![token(), proptest::collection::vec(any::<u8>(), 1..8)])
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1u8..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<Index>(), 1u16..512).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(at, other, from)| Mutation::Splice { at, other, from }),
    ]
}

fn mutate(mut b: Vec<u8>, m: &Mutation, all: &[Seed]) -> Vec<u8> {
    let pos = |at: &Index, len: usize| if len == 0 { 0 } else { at.index(len) };
    match m {
        Mutation::Flip { at, bit } if !b.is_empty() => {
            let i = pos(at, b.len());
            b[i] ^= 1 << bit;
        }
        Mutation::Overwrite { at, byte } if !b.is_empty() => {
            let i = pos(at, b.len());
            b[i] = *byte;
        }
        Mutation::Truncate { at } => b.truncate(pos(at, b.len())),
        Mutation::Insert { at, bytes } => {
            let i = pos(at, b.len() + 1);
            b.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove { at, len } if !b.is_empty() => {
            let i = pos(at, b.len());
            let end = (i + *len as usize).min(b.len());
            b.drain(i..end);
        }
        Mutation::Duplicate { at, len } if !b.is_empty() => {
            let i = pos(at, b.len());
            let end = (i + *len as usize).min(b.len());
            let copy = b[i..end].to_vec();
            b.splice(end..end, copy);
        }
        Mutation::Splice { at, other, from } => {
            let o = &all[other.index(all.len())].bytes;
            b.truncate(pos(at, b.len() + 1));
            b.extend_from_slice(&o[pos(from, o.len() + 1)..]);
        }
        _ => {}
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn mutated_messages(seed in any::<Index>(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        let all = seeds();
        let s = &all[seed.index(all.len())];
        let bytes = mutations.iter().fold(s.bytes.clone(), |b, m| mutate(b, m, all));
        let codec = small_codec();
        let compressed = s.headers.as_ref().is_some_and(|h| h.get(headers::CONTENT_ENCODING).is_some());
        let limit = if compressed { zstd_budget(SMALL_LIMIT) } else { budget(bytes.len()) };
        // As its own type with its own headers (the structured case), then as every type.
        check(&decode_as(s.ty, &codec, s.headers.as_ref(), &bytes), bytes.len(), limit).map_err(TestCaseError::fail)?;
        check_all(&decode_as_every_type(&codec, s.headers.as_ref(), &bytes), bytes.len(), limit)?;
        // A plain seed's mutation, compressed: the same bytes reached through zstd.
        if !compressed {
            let framed = zstd::bulk::compress(&bytes, 1).unwrap();
            let h = if s.headers.is_some() { zstd_json_headers() } else { zstd_headers() };
            let o = decode_as(s.ty, &codec, Some(&h), &framed);
            check(&o, framed.len(), zstd_budget(SMALL_LIMIT)).map_err(TestCaseError::fail)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// (c) Hand-built hostile messages.

/// Decodes `bytes` as every type on a worker-sized stack and checks every outcome;
/// returns the outcomes' error texts (empty for a success).
fn hostile(
    codec: Codec,
    h: Option<HeaderMap>,
    bytes: Vec<u8>,
    heap_limit: usize,
) -> Vec<(&'static str, String)> {
    on_worker_stack(move || {
        decode_as_every_type(&codec, h.as_ref(), &bytes)
            .into_iter()
            .map(|o| {
                if let Err(e) = check(&o, bytes.len(), heap_limit) {
                    panic!("{e}");
                }
                (
                    o.ty,
                    o.result.err().map(|e| e.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// Containers, strings, binaries and ext values that declare 2^32-1 elements or bytes and
/// end after a few: refused as truncated, without allocating for the declared length.
#[test]
fn lying_lengths_are_refused_without_allocating_for_them() {
    let lies: Vec<(&str, Vec<u8>)> = vec![
        ("array", [mp::arr32(u32::MAX), mp::nil()].concat()),
        (
            "map",
            [mp::map32(u32::MAX), mp::str("k"), mp::nil()].concat(),
        ),
        (
            "str",
            [mp::str32_header(u32::MAX), b"abc".to_vec()].concat(),
        ),
        (
            "bin",
            [mp::bin32_header(u32::MAX), b"abc".to_vec()].concat(),
        ),
        (
            "ext",
            [mp::ext32_header(u32::MAX, 1), b"abc".to_vec()].concat(),
        ),
        // Each element itself a lying array: a lie per level, all open at once.
        ("nested arrays", mp::arr32(u32::MAX).repeat(2000)),
        (
            "nested maps",
            [mp::map32(u32::MAX), mp::str("k")].concat().repeat(2000),
        ),
    ];
    for (what, raw) in lies {
        for (place, bytes) in placements(&raw) {
            for (ty, err) in hostile(Codec::default(), None, bytes, HOSTILE_BUDGET) {
                assert!(
                    !err.is_empty(),
                    "{ty} accepted a lying {what} length at {place}"
                );
            }
        }
    }
}

/// 100 000 levels of nesting are refused at MessagePack's depth limit (1024) and JSON's
/// recursion limit (128), with a clear error, on a worker's stack, wherever they are.
#[test]
fn deep_nesting_is_refused_on_a_worker_stack() {
    let deep: Vec<(&str, Vec<u8>)> = vec![
        ("arrays", nested_arrays(100_000)),
        (
            "maps",
            [&[0x81u8][..], &mp::str("k")].concat().repeat(100_000),
        ),
        ("lying arrays", mp::arr32(u32::MAX).repeat(100_000)),
        (
            "lying maps",
            [mp::map32(u32::MAX), mp::str("k")].concat().repeat(100_000),
        ),
    ];
    for (what, raw) in deep {
        let mut depth_errors = 0;
        for (place, bytes) in placements(&raw) {
            for (ty, err) in hostile(Codec::default(), None, bytes, HOSTILE_BUDGET) {
                assert!(
                    !err.is_empty(),
                    "{ty} accepted 100 000 nested {what} at {place}"
                );
                depth_errors += usize::from(err.contains("depth limit exceeded"));
            }
        }
        // Types that expect a string or a number where the nesting starts refuse it at
        // once; everywhere a value or an unknown field is, it is the depth limit.
        assert!(
            depth_errors >= TYPE_NAMES.len(),
            "{what}: only {depth_errors} depth-limit errors"
        );
    }
    let json = [vec![b'['; 100_000], vec![b']'; 100_000]].concat();
    let json_job = [
        br#"{"nodes":[{"id":"a","op":"const","args":{"value":"#.to_vec(),
        json.clone(),
        b"}}]}".to_vec(),
    ]
    .concat();
    for (bytes, read_by) in [(json, ["Value", "Arg"]), (json_job, ["Job", "ExtendJob"])] {
        for (ty, err) in hostile(
            Codec::default(),
            Some(json_headers()),
            bytes,
            HOSTILE_BUDGET,
        ) {
            // serde_json skips an unknown field without recursing, so a type without
            // `nodes` may accept the job; where the nesting is read, it is the limit.
            if read_by.contains(&ty) {
                assert!(
                    err.starts_with(&format!(
                        "cannot decode {ty}: JSON: recursion limit exceeded"
                    )),
                    "{ty}: {err}"
                );
            } else if !err.is_empty() {
                assert!(
                    err.starts_with(&format!("cannot decode {ty}: JSON: ")),
                    "{ty}: {err}"
                );
            }
        }
    }
    let (_, err) = hostile(
        Codec::default(),
        None,
        job_with_arg(&nested_arrays(100_000)),
        HOSTILE_BUDGET,
    )
    .into_iter()
    .find(|(ty, _)| *ty == "Job")
    .unwrap();
    assert_eq!(err, "cannot decode Job: MessagePack: depth limit exceeded");
}

/// Decoding at the depth limit (1024 levels: arrays, and maps, which cost more per level)
/// leaves most of a worker's stack for everything else on it (the runtime, the handler,
/// and whatever walks the value afterwards).
#[test]
fn the_depth_limit_leaves_most_of_a_worker_stack() {
    let map_level = [&[0x81u8][..], &mp::str("k")].concat();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("Value", "arrays", nested_arrays(1023)),
        (
            "Value",
            "maps",
            [map_level.repeat(1023), mp::nil()].concat(),
        ),
        ("Job", "arrays", job_with_arg(&nested_arrays(1019))),
        (
            "Job",
            "maps",
            job_with_arg(&[map_level.repeat(1019), mp::nil()].concat()),
        ),
        (
            "JobResult",
            "maps",
            mp::obj(&[(
                "outputs",
                mp::obj(&[("o", [map_level.repeat(1021), mp::nil()].concat())]),
            )]),
        ),
    ];
    for (ty, what, bytes) in cases {
        let (ok, used) = on_worker_stack(move || {
            let (o, used) = stack_used(|| decode_as(ty, &Codec::default(), None, &bytes));
            check(&o, bytes.len(), HOSTILE_BUDGET).unwrap();
            (o.result.is_ok(), used)
        });
        // Deep enough to be measured, and a decode of the whole depth (not an early error).
        assert!(
            used > 100 * KIB,
            "{ty} {what}: only {used} bytes of stack seen"
        );
        assert!(ok || ty == "JobResult", "{ty} {what}: refused");
        assert!(
            used < TEST_STACK / 2,
            "{ty} nested {what} at the depth limit used {used} bytes of a {TEST_STACK}-byte stack"
        );
    }
}

/// Nesting just under the limit is a valid job: it decodes, re-encodes and drops on a
/// worker's stack.
#[test]
fn nesting_just_under_the_limit_decodes_on_a_worker_stack() {
    // job map, nodes array, node map, args map: 4 levels before the argument.
    let bytes = job_with_arg(&nested_arrays(1019));
    let job: Job = on_worker_stack(move || {
        let (job, peak) = peak_heap(|| {
            Codec::default()
                .decode::<Job>(None, &bytes)
                .expect("decodes")
        });
        assert!(peak < budget(bytes.len()), "peak {peak}");
        reencodes_stably(&job).unwrap();
        job
    });
    let mut depth = 0;
    let mut v = match &job.nodes[0].args["value"] {
        Arg::Lit(v) => v,
        other => panic!("{other:?}"),
    };
    while let Value::Array(items) = v {
        depth += 1;
        v = &items[0];
    }
    assert_eq!(depth, 1019);
    on_worker_stack(move || drop(job));
    let too_deep = job_with_arg(&nested_arrays(1020));
    let err = on_worker_stack(move || {
        Codec::default()
            .decode::<Job>(None, &too_deep)
            .unwrap_err()
            .to_string()
    });
    assert_eq!(err, "cannot decode Job: MessagePack: depth limit exceeded");
}

/// Numbers that do not fit where integers are expected, and non-finite floats there, are
/// refused naming what was expected; values that do fit are accepted.
#[test]
fn numbers_out_of_range_or_not_finite() {
    let nodes = ("nodes", mp::arr(0));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "Job",
            mp::obj(&[nodes.clone(), ("timeout_ms", mp::i64(-1))]),
            "expected u64",
        ),
        (
            "Job",
            mp::obj(&[nodes.clone(), ("timeout_ms", mp::f64(f64::NAN))]),
            "floating point `NaN`",
        ),
        (
            "Job",
            mp::obj(&[nodes.clone(), ("timeout_ms", mp::f64(f64::INFINITY))]),
            "floating point `inf`",
        ),
        (
            "Job",
            mp::obj(&[nodes.clone(), ("timeout_ms", mp::f32(1.5))]),
            "expected u64",
        ),
        (
            "Job",
            mp::obj(&[nodes.clone(), ("wait_receipts", mp::u64(u64::MAX))]),
            "expected a boolean",
        ),
        (
            "ReceiptsByJob",
            mp::obj(&[("job_id", mp::str("j")), ("limit", mp::u64(1 << 32))]),
            "expected u32",
        ),
        (
            "ReceiptsByJob",
            mp::obj(&[("job_id", mp::str("j")), ("limit", mp::i64(i64::MIN))]),
            "expected u32",
        ),
        (
            "ReceiptById",
            mp::obj(&[("leaf_index", mp::i64(-1))]),
            "expected u64",
        ),
        (
            "ReceiptById",
            mp::obj(&[("leaf_index", mp::f64(f64::NAN))]),
            "floating point `NaN`",
        ),
        (
            "ConsistencyQuery",
            mp::obj(&[
                ("from_size", mp::f64(f64::NEG_INFINITY)),
                ("to_size", mp::u64(1)),
            ]),
            "floating point `-inf`",
        ),
        (
            "ReceiptsByTime",
            mp::obj(&[("from_us", mp::u64(0)), ("to_us", mp::f64(1e300))]),
            "expected u64",
        ),
        (
            "CheckpointQuery",
            mp::obj(&[("tree_size", mp::i64(i64::MIN))]),
            "expected u64",
        ),
        (
            "IndexStats",
            mp::obj(&[
                ("receipts", mp::i64(-5)),
                ("batches", mp::u64(0)),
                ("tree_size", mp::u64(0)),
            ]),
            "expected u64",
        ),
        (
            "OperatorDef",
            mp::obj(&[
                ("id", mp::str("x")),
                ("version", mp::str("1")),
                ("provider", mp::obj(&[("kind", mp::str("builtin"))])),
                ("cost_hint", mp::u64(u64::MAX)),
            ]),
            "expected u32",
        ),
        ("Value", mp::u64(u64::MAX), "larger than the i64 maximum"),
        ("Value", mp::u64(1 << 63), "larger than the i64 maximum"),
        // Tensor shapes: overflow, negative, non-finite, fractional, too many dimensions.
        (
            "Value",
            mp::obj(&[
                (
                    "shape",
                    [mp::arr(2), mp::i64(i64::MAX), mp::i64(4)].concat(),
                ),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "tensor shape overflows",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::i64(-2)].concat()),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "non-negative integers",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::f64(f64::NAN)].concat()),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "non-negative integers",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::f64(f64::INFINITY)].concat()),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "non-negative integers",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::f64(1.5)].concat()),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "non-negative integers",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::f64(1e300)].concat()),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "non-negative integers",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(9), mp::i64(1).repeat(9)].concat()),
                ("f64", mp::bin(&[0; 8])),
            ]),
            "rank 9 exceeds the maximum 8",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::i64(3)].concat()),
                ("f64", mp::bin(&[0; 7])),
            ]),
            "not a multiple of 8",
        ),
        (
            "Value",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::i64(3)].concat()),
                ("f64", mp::bin(&[0; 16])),
            ]),
            "needs 3 elements, found 2",
        ),
        (
            "Arg",
            mp::obj(&[
                ("shape", [mp::arr(1), mp::u64(u64::MAX)].concat()),
                ("f64", mp::bin(&[])),
            ]),
            "larger than the i64 maximum",
        ),
        (
            "Receipt",
            mp::obj(&[
                ("operation_id", mp::str("o")),
                ("leaf_index", mp::u64(0)),
                ("leaf", mp::bin(b"x")),
                ("inclusion_proof", [mp::arr(1), mp::bin(&[0; 31])].concat()),
                ("tree_size", mp::u64(1)),
                ("checkpoint", mp::str("")),
            ]),
            "a hash is 32 bytes, found 31",
        ),
    ];
    for (ty, bytes, expected) in cases {
        let o = decode_as(ty, &Codec::default(), None, &bytes);
        let err = o
            .result
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{ty} accepted {bytes:02x?}"));
        check(&o, bytes.len(), budget(bytes.len())).unwrap();
        assert!(
            err.to_string().contains(expected),
            "{ty}: expected `{expected}` in: {err}"
        );
    }
    // In range: the largest u64 is a valid leaf index, and non-finite floats are values.
    let ok: ReceiptById = Codec::default()
        .decode(None, &mp::obj(&[("leaf_index", mp::u64(u64::MAX))]))
        .unwrap();
    assert_eq!(ok.leaf_index, u64::MAX);
    for x in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE / 2.0,
    ] {
        let v: Value = Codec::default().decode(None, &mp::f64(x)).unwrap();
        assert!(
            matches!(v, Value::Float(y) if y.to_bits() == x.to_bits()),
            "{v:?}"
        );
    }
}

/// Strings are quoted in serde's errors; a long one must not make the error (and so the
/// error reply) long.
#[test]
fn errors_quoting_long_input_stay_short() {
    let long = "\u{1}".repeat(256 * KIB);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Job",
            mp::obj(&[("nodes", mp::arr(0)), ("timeout_ms", mp::str(&long))]),
        ),
        (
            "ErrorReply",
            mp::obj(&[("code", mp::str(&long)), ("message", mp::str(""))]),
        ),
        (
            "PolicyQuery",
            mp::obj(&[
                ("principal", mp::str("p")),
                ("stage", mp::str(&long)),
                ("operator", mp::str("o")),
            ]),
        ),
    ];
    for (ty, bytes) in cases {
        let o = decode_as(ty, &Codec::default(), None, &bytes);
        assert!(o.result.is_err(), "{ty} accepted it");
        check(&o, bytes.len(), budget(bytes.len())).unwrap();
    }
    let json = format!(
        r#"{{"nodes":[],"timeout_ms":{}}}"#,
        serde_json::to_string(&long).unwrap()
    );
    let o = decode_as(
        "Job",
        &Codec::default(),
        Some(&json_headers()),
        json.as_bytes(),
    );
    assert!(o.result.is_err());
    check(&o, json.len(), budget(json.len())).unwrap();
}

// --- zstd under `Content-Encoding: zstd`

/// A zstd frame of `size` zero bytes, written in chunks; `state_size` puts the size in
/// the frame header (as the codec's own frames do), otherwise the header leaves it out.
fn zeros_frame(size: usize, state_size: bool) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    if state_size {
        enc.set_pledged_src_size(Some(size as u64)).unwrap();
    }
    enc.include_contentsize(state_size).unwrap();
    let chunk = vec![0u8; MIB];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

fn content_size(frame: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
}

/// zstd bombs: refused as too large, with a clear error; one that states its size is
/// refused before anything is inflated, one that does not is inflated only to the limit.
#[test]
fn zstd_bombs_are_refused() {
    // 100 MiB of zeros: a few KiB on the wire.
    let size = 100 * MIB;
    for state_size in [true, false] {
        let bomb = zeros_frame(size, state_size);
        assert!(bomb.len() < 64 * KIB, "{} bytes", bomb.len());
        assert_eq!(content_size(&bomb).is_some(), state_size);
        let check_err = |ty: &str, err: &str, limit: usize| {
            assert!(err.starts_with("payload too large: "), "{ty}: {err}");
            assert!(
                err.contains(&format!("limit of {limit} bytes")),
                "{ty}: {err}"
            );
            if state_size {
                assert!(
                    err.contains(&format!("expands to {size} bytes")),
                    "{ty}: {err}"
                );
            }
        };
        // As every type under a small limit.
        for (ty, err) in hostile(
            small_codec(),
            Some(zstd_headers()),
            bomb.clone(),
            zstd_budget(SMALL_LIMIT),
        ) {
            check_err(ty, &err, SMALL_LIMIT);
        }
        // Under the default limit (64 MiB), as a job: memory is bounded by the limit
        // whatever the frame holds (see `zstd_budget` for a frame that does not state its
        // size), and not used at all for one that does.
        let limit = hsync_protocol::codec::DEFAULT_MAX_DECODED_SIZE;
        let heap_limit = if state_size { 64 * KIB } else { 3 * limit };
        let (err, peak) = on_worker_stack(move || {
            peak_heap(|| {
                Codec::default()
                    .decode::<Job>(Some(&zstd_headers()), &bomb)
                    .unwrap_err()
                    .to_string()
            })
        });
        check_err("Job", &err, limit);
        assert!(peak <= heap_limit, "peak {peak} over {heap_limit}");
    }
    // Exactly at the limit is not too large (and zeros are not a message).
    let at_limit = zeros_frame(SMALL_LIMIT, true);
    let err = small_codec()
        .decode::<Job>(Some(&zstd_headers()), &at_limit)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot decode Job: MessagePack: "),
        "{err}"
    );
}

/// A frame whose header lies about its content size (claims little, holds more; claims
/// much, holds little; claims more than the limit) fails clearly, within the limit.
#[test]
fn lying_zstd_frame_headers() {
    let msg = rmp_serde::to_vec_named(&big_job(40)).unwrap();
    let honest = zstd::bulk::compress(&msg, 3).unwrap();
    let stated = content_size(&honest).expect("bulk frames state their size") as usize;
    assert_eq!(stated, msg.len());
    // Frame header: magic (4), descriptor (1), [window (1)], content size (1, 2, 4 or 8).
    let descriptor = honest[4];
    assert_eq!(
        descriptor >> 6,
        1,
        "a 2-byte content size field for {} bytes",
        msg.len()
    );
    let at = 5 + usize::from(descriptor & 0x20 == 0);
    let with_size = |claim: u16| {
        let mut f = honest.clone();
        f[at..at + 2].copy_from_slice(&claim.to_le_bytes()); // stored as size - 256
        f
    };
    let codec = small_codec();
    for frame in [with_size(0), with_size(100), with_size(u16::MAX)] {
        for (ty, err) in hostile(
            codec.clone(),
            Some(zstd_headers()),
            frame,
            zstd_budget(SMALL_LIMIT),
        ) {
            assert!(
                err.starts_with(&format!("cannot decode {ty}: ")),
                "{ty}: {err}"
            );
        }
    }
    // A 24-byte frame that claims 1 TiB, and one that claims exactly the limit + 1.
    for claim in [1u64 << 40, SMALL_LIMIT as u64 + 1] {
        // Descriptor 0xe0: an 8-byte content size, single segment (no window byte).
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        f.extend_from_slice(&claim.to_le_bytes());
        f.extend_from_slice(&[0x01, 0x00, 0x00]); // an empty last raw block
        assert_eq!(content_size(&f), Some(claim));
        for (ty, err) in hostile(codec.clone(), Some(zstd_headers()), f, MIB) {
            assert!(
                err.contains(&format!("expands to {claim} bytes, beyond the limit")),
                "{ty}: {err}"
            );
        }
    }
}

/// zstd garbage: random bytes, a valid magic number over garbage, a frame asking for a
/// 2 GiB window, a skippable frame, an empty payload, two frames back to back, and a frame
/// followed by trailing garbage.
#[test]
fn zstd_garbage() {
    let magic = [0x28, 0xb5, 0x2f, 0xfd];
    let msg = rmp_serde::to_vec_named(&big_job(3)).unwrap();
    let frame = zstd::bulk::compress(&msg, 3).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plain MessagePack", msg.clone()),
        ("magic and garbage", [&magic[..], &[0xff; 64]].concat()),
        ("magic only", magic.to_vec()),
        // Descriptor 0: window descriptor follows; 0xf8: window log 41 (2^41 bytes).
        (
            "a huge window",
            [&magic[..], &[0x00, 0xf8], &[0x01, 0x00, 0x00]].concat(),
        ),
        (
            "skippable frame",
            [&[0x50, 0x2a, 0x4d, 0x18][..], &4u32.to_le_bytes(), b"abcd"].concat(),
        ),
        ("empty", vec![]),
        ("two frames", [frame.clone(), frame.clone()].concat()),
        (
            "trailing garbage",
            [frame.clone(), vec![0xde, 0xad]].concat(),
        ),
        ("truncated frame", frame[..frame.len() / 2].to_vec()),
    ];
    for (what, bytes) in cases {
        let len = bytes.len();
        for (ty, err) in hostile(
            small_codec(),
            Some(zstd_headers()),
            bytes,
            zstd_budget(SMALL_LIMIT),
        ) {
            assert!(!err.is_empty(), "{ty} accepted {what}");
            if what != "skippable frame" && what != "empty" {
                assert!(
                    err.contains("zstd: "),
                    "{what} as {ty} ({len} bytes): {err}"
                );
            }
        }
    }
}

/// Large values made of the smallest elements: the heap they cost is a bounded multiple
/// of their bytes. (The decoded-size limit bounds bytes, not the values they become: under
/// the default 64 MiB, a zstd frame of a few KiB holding 64 MiB of `nil`s in an array
/// costs about 6 GB of heap at its peak.)
#[test]
fn large_values_cost_a_bounded_multiple_of_their_bytes() {
    let n = 256 * 1024;
    let key = |i: usize| mp::str(&format!("{i:x}"));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "Value",
            "nils",
            [mp::arr32(n as u32), vec![0xc0; n]].concat(),
        ),
        (
            "Value",
            "empty arrays",
            [mp::arr32(n as u32), vec![0x90; n]].concat(),
        ),
        (
            "Value",
            "empty maps",
            [mp::arr32(n as u32), vec![0x80; n]].concat(),
        ),
        (
            "Value",
            "map entries",
            [
                mp::map32(n as u32),
                (0..n).flat_map(|i| [key(i), mp::nil()].concat()).collect(),
            ]
            .concat(),
        ),
        (
            "Value",
            "floats",
            [mp::arr32(n as u32), mp::f64(0.5).repeat(n)].concat(),
        ),
        ("Job", "minimal nodes", {
            let node = |i: usize| {
                [
                    mp::map(2),
                    mp::str("id"),
                    key(i),
                    mp::str("op"),
                    mp::str("c"),
                ]
                .concat()
            };
            mp::obj(&[(
                "nodes",
                [mp::arr32(n as u32 / 8), (0..n / 8).flat_map(node).collect()].concat(),
            )])
        }),
    ];
    for (ty, what, bytes) in cases {
        let o = decode_as(ty, &Codec::default(), None, &bytes);
        assert!(o.result.is_ok(), "{what}: {:?}", o.result);
        assert!(
            o.peak >= bytes.len(),
            "{what}: only {} bytes of heap for {} bytes",
            o.peak,
            bytes.len()
        );
        assert!(
            o.peak <= AMPLIFICATION * bytes.len(),
            "{what}: {} bytes of heap for {} bytes ({}x)",
            o.peak,
            bytes.len(),
            o.peak / bytes.len()
        );
    }
}

/// A payload that is not compressed is refused on its length alone when it is over the
/// limit, naming the type, the size and the limit.
#[test]
fn plain_payload_over_the_limit_is_refused_before_parsing() {
    let codec = Codec {
        max_decoded_size: 100,
        ..Codec::default()
    };
    let bytes = rmp_serde::to_vec_named(&big_job(3)).unwrap();
    assert!(bytes.len() > 100);
    for (ty, err) in hostile(codec, None, bytes.clone(), KIB) {
        assert_eq!(
            err,
            format!(
                "payload too large: {ty} payload is {} bytes, the limit is 100",
                bytes.len()
            )
        );
    }
}
