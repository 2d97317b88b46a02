//! The index against a real RocksDB in temporary directories.

use std::collections::BTreeMap;
use std::sync::Arc;

use hsync_index::{IndexError, IndexOptions, IndexStore, IngestOutcome};
use hsync_protocol::audit::{IndexStats, MAX_PAGE};
use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch};
use hsync_protocol::record::{OperationRecord, Outcome};
use hsync_protocol::value::{Blob, Hash32};
use proptest::prelude::*;
use tempfile::TempDir;

// ---- fixtures -------------------------------------------------------------------------

fn op_id(leaf: u64) -> String {
    format!("op-{leaf:04}")
}

fn record(leaf: u64, job: &str) -> OperationRecord {
    OperationRecord {
        operation_id: op_id(leaf),
        job_id: job.to_string(),
        node_id: format!("n{leaf}"),
        operator: "geometry.area@1".to_string(),
        inputs_hash: Hash32([leaf as u8; 32]),
        output_hash: Some(Hash32([!(leaf as u8); 32])),
        outcome: Outcome::Executed,
        policies: vec!["default".to_string()],
        submitter: "alice".to_string(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".to_string(),
        started_at_us: 1_700_000_000_000_000 + leaf * 10,
        finished_at_us: 1_700_000_000_000_000 + leaf * 10 + 5,
        error: None,
    }
}

/// A fake root that differs per tree size (and per `fork`), enough for the index.
fn root(tree_size: u64, fork: u8) -> Hash32 {
    let mut h = [fork; 32];
    h[..8].copy_from_slice(&tree_size.to_be_bytes());
    Hash32(h)
}

fn checkpoint(tree_size: u64) -> Checkpoint {
    Checkpoint {
        origin: "hsync.test/log".to_string(),
        tree_size,
        root_hash: root(tree_size, 0),
        signed_note: format!("hsync.test/log\n{tree_size}\nfake-root\n\n— test sig\n"),
        key_id: "0badc0de".to_string(),
        signed_at_us: 1_700_000_000_000_000 + tree_size,
    }
}

fn receipt(leaf: u64, job: &str, tree_size: u64) -> Receipt {
    Receipt {
        operation_id: op_id(leaf),
        leaf_index: leaf,
        leaf: Blob(record(leaf, job).canonical_bytes()),
        inclusion_proof: vec![Hash32([1; 32]), Hash32([2; 32])],
        tree_size,
        checkpoint: checkpoint(tree_size).signed_note,
    }
}

fn signed(checkpoint: Checkpoint, receipts: Vec<Receipt>) -> SignedBatch {
    SignedBatch {
        checkpoint,
        receipts,
        traceparents: Vec::new(),
        record_seqs: Vec::new(),
    }
}

/// The batch of leaves `from..to` (tree size `to`), the job of each leaf chosen by `job`.
fn batch(from: u64, to: u64, job: impl Fn(u64) -> String) -> SignedBatch {
    signed(
        checkpoint(to),
        (from..to)
            .map(|leaf| receipt(leaf, &job(leaf), to))
            .collect(),
    )
}

fn open(dir: &TempDir) -> IndexStore {
    IndexStore::open(&IndexOptions::new(dir.path().join("index"))).expect("open the index")
}

fn stats(receipts: u64, batches: u64, tree_size: u64) -> IndexStats {
    IndexStats {
        receipts,
        batches,
        tree_size,
        operators: 0,
    }
}

/// Every receipt of a job, following cursors; asserts the pages are full but the last.
fn all_pages(store: &IndexStore, job: &str, limit: usize) -> (Vec<u64>, usize) {
    let mut leaves = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, next) = store
            .receipts_by_job(job, cursor.as_deref(), limit)
            .unwrap();
        pages += 1;
        assert!(pages < 10_000, "pagination does not terminate");
        leaves.extend(page.iter().map(|r| r.leaf_index));
        match next {
            Some(c) => {
                assert_eq!(page.len(), limit, "only the last page may be short");
                cursor = Some(c);
            }
            None => return (leaves, pages),
        }
    }
}

// ---- tests ----------------------------------------------------------------------------

#[test]
fn ingest_then_look_up_by_operation_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let b = batch(0, 5, |l| format!("job-{}", l % 2));
    let out = store.ingest(&b).unwrap();
    assert_eq!(
        out,
        IngestOutcome {
            receipts_written: 5,
            duplicates: 0
        }
    );

    for r in &b.receipts {
        assert_eq!(
            store
                .receipt_by_operation(&r.operation_id)
                .unwrap()
                .as_ref(),
            Some(r)
        );
        assert_eq!(
            store.receipt_by_index(r.leaf_index).unwrap().as_ref(),
            Some(r)
        );
    }
    let third = store.receipt_by_operation("op-0003").unwrap().unwrap();
    assert_eq!(third.leaf_index, 3);
    assert_eq!(third.record().unwrap().job_id, "job-1");

    assert_eq!(store.receipt_by_operation("op-9999").unwrap(), None);
    assert_eq!(store.receipt_by_operation("").unwrap(), None);
    assert_eq!(store.receipt_by_index(5).unwrap(), None);
    assert_eq!(store.stats().unwrap(), stats(5, 1, 5));
}

#[test]
fn receipts_by_job_pages_in_leaf_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // 75 leaves in three batches; job "a" holds every third leaf (25 of them), interleaved
    // with "ab" (a longer id sharing the prefix) and "b".
    let job = |l: u64| ["a", "ab", "b"][(l % 3) as usize].to_string();
    // Ingested newest first: the order of the answer must not depend on arrival order.
    for (from, to) in [(50, 75), (0, 25), (25, 50)] {
        store.ingest(&batch(from, to, job)).unwrap();
    }
    let expected: Vec<u64> = (0..75).filter(|l| l % 3 == 0).collect();

    let (p1, c1) = store.receipts_by_job("a", None, 10).unwrap();
    let c1 = c1.expect("a second page");
    let (p2, c2) = store.receipts_by_job("a", Some(&c1), 10).unwrap();
    let c2 = c2.expect("a third page");
    let (p3, c3) = store.receipts_by_job("a", Some(&c2), 10).unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (10, 10, 5));
    assert_eq!(c3, None, "the third page is the last");

    let got: Vec<u64> = p1
        .iter()
        .chain(&p2)
        .chain(&p3)
        .map(|r| r.leaf_index)
        .collect();
    assert_eq!(got, expected, "all of job a, in leaf order, each once");
    for r in p1.iter().chain(&p2).chain(&p3) {
        assert_eq!(r.record().unwrap().job_id, "a");
    }
    // Stable: the same cursor gives the same page.
    let (again, again_next) = store.receipts_by_job("a", Some(&c1), 10).unwrap();
    assert_eq!(again, p2);
    assert_eq!(again_next.as_deref(), Some(c2.as_str()));

    // A page size that divides the job exactly ends without an empty extra page.
    let (leaves, pages) = all_pages(&store, "a", 5);
    assert_eq!((leaves, pages), (expected.clone(), 5));
    let (leaves, pages) = all_pages(&store, "a", 1);
    assert_eq!((leaves.len(), pages), (25, 25));
    // limit 0 is treated as 1 rather than returning empty pages forever.
    let (one, next) = store.receipts_by_job("a", None, 0).unwrap();
    assert_eq!((one.len(), next.is_some()), (1, true));

    // The prefix-sharing job is separate.
    let (ab, _) = all_pages(&store, "ab", 7);
    assert_eq!(ab, (0..75).filter(|l| l % 3 == 1).collect::<Vec<_>>());
    let (none, next) = store.receipts_by_job("nope", None, 10).unwrap();
    assert!(none.is_empty() && next.is_none());
}

#[test]
fn page_limit_is_clamped_to_max_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let n = MAX_PAGE as u64 + 5;
    store.ingest(&batch(0, n, |_| "big".to_string())).unwrap();
    let (page, next) = store.receipts_by_job("big", None, usize::MAX).unwrap();
    assert_eq!(page.len(), MAX_PAGE as usize);
    let (rest, last) = store
        .receipts_by_job("big", next.as_deref(), usize::MAX)
        .unwrap();
    assert_eq!(rest.len(), 5);
    assert_eq!(rest[0].leaf_index, MAX_PAGE as u64);
    assert_eq!(last, None);
}

#[test]
fn bad_cursor_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for bad in ["", "not a cursor", "00ff", "zzzzzzzzzzzzzzzz"] {
        let err = store.receipts_by_job("a", Some(bad), 10).unwrap_err();
        assert!(
            matches!(err, IndexError::InvalidCursor { .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn job_ids_with_nul_bytes_stay_separate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // "x\0y"'s keys start with "x\0", job "x"'s prefix.
    store
        .ingest(&batch(0, 6, |l| {
            if l % 2 == 0 {
                "x".into()
            } else {
                "x\0y".into()
            }
        }))
        .unwrap();
    let (x, _) = all_pages(&store, "x", 2);
    assert_eq!(x, vec![0, 2, 4]);
    let (xy, _) = all_pages(&store, "x\0y", 2);
    assert_eq!(xy, vec![1, 3, 5]);
}

#[test]
fn checkpoints_by_size_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    let job = |_: u64| "j".to_string();
    // Out of order: the latest is the largest tree size, not the last ingested.
    store.ingest(&batch(3, 300, job)).unwrap();
    store.ingest(&batch(0, 3, job)).unwrap();
    assert_eq!(store.checkpoint(3).unwrap(), Some(checkpoint(3)));
    assert_eq!(store.checkpoint(300).unwrap(), Some(checkpoint(300)));
    assert_eq!(store.checkpoint(4).unwrap(), None);
    assert_eq!(store.latest_checkpoint().unwrap(), Some(checkpoint(300)));
    assert_eq!(store.stats().unwrap(), stats(300, 2, 300));
}

#[test]
fn reingesting_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let b1 = batch(0, 4, |_| "j".to_string());
    let b2 = batch(4, 7, |_| "j".to_string());
    store.ingest(&b1).unwrap();
    let before = store.stats().unwrap();
    assert_eq!(before, stats(4, 1, 4));

    let again = store.ingest(&b1).unwrap();
    assert_eq!(
        again,
        IngestOutcome {
            receipts_written: 0,
            duplicates: 4
        }
    );
    assert_eq!(store.stats().unwrap(), before);

    // The same batch twice in one call, plus one already indexed.
    let many = store
        .ingest_many(&[b2.clone(), b2.clone(), b1.clone()])
        .unwrap();
    assert_eq!(
        many,
        IngestOutcome {
            receipts_written: 3,
            duplicates: 7
        }
    );
    assert_eq!(store.stats().unwrap(), stats(7, 2, 7));
    let (leaves, _) = all_pages(&store, "j", 3);
    assert_eq!(
        leaves,
        (0..7).collect::<Vec<_>>(),
        "no receipt listed twice"
    );
}

#[test]
fn an_operation_is_never_indexed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.ingest(&batch(0, 3, |_| "j".to_string())).unwrap();

    // op-0001 again, now claiming leaf 7: the first (leaf 1) is kept.
    let mut moved = receipt(1, "j", 8);
    moved.leaf_index = 7;
    // leaf 2 again, now claiming another operation: the first is kept.
    let mut usurper = receipt(5, "j", 8);
    usurper.leaf_index = 2;
    let fresh = receipt(6, "j", 8);
    let out = store
        .ingest(&signed(checkpoint(8), vec![moved, usurper, fresh]))
        .unwrap();
    assert_eq!(
        out,
        IngestOutcome {
            receipts_written: 1,
            duplicates: 2
        }
    );
    assert_eq!(
        store
            .receipt_by_operation("op-0001")
            .unwrap()
            .unwrap()
            .leaf_index,
        1
    );
    assert_eq!(store.receipt_by_index(7).unwrap(), None);
    assert_eq!(
        store.receipt_by_index(2).unwrap().unwrap().operation_id,
        "op-0002"
    );
    assert_eq!(store.receipt_by_operation("op-0005").unwrap(), None);
    let (leaves, _) = all_pages(&store, "j", 10);
    assert_eq!(leaves, vec![0, 1, 2, 6]);
    assert_eq!(store.stats().unwrap(), stats(4, 2, 8));
}

#[test]
fn malformed_leaf_fails_the_batch_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut bad = batch(0, 4, |_| "j".to_string());
    bad.receipts[2].leaf = Blob(vec![0xc1, 0xff, 0x00]);
    let err = store.ingest(&bad).unwrap_err();
    match &err {
        IndexError::Malformed { leaf_index, .. } => assert_eq!(*leaf_index, 2),
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(err.to_string().contains("leaf index 2"), "{err}");

    // One bad batch in an ingest_many sinks the good one with it.
    let good = batch(4, 6, |_| "j".to_string());
    assert!(store.ingest_many(&[good.clone(), bad]).is_err());

    // A record of another operation than the receipt claims is malformed too.
    let mut mismatched = batch(6, 7, |_| "j".to_string());
    mismatched.receipts[0].operation_id = "op-else".to_string();
    assert!(matches!(
        store.ingest(&mismatched),
        Err(IndexError::Malformed { leaf_index: 6, .. })
    ));

    assert_eq!(store.stats().unwrap(), IndexStats::default());
    for leaf in 0..7 {
        assert_eq!(store.receipt_by_index(leaf).unwrap(), None);
        assert_eq!(store.receipt_by_operation(&op_id(leaf)).unwrap(), None);
    }
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    assert!(store.receipts_by_job("j", None, 10).unwrap().0.is_empty());

    // The good batch alone goes in.
    assert_eq!(store.ingest(&good).unwrap().receipts_written, 2);
}

#[test]
fn split_view_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.ingest(&batch(0, 2, |_| "j".to_string())).unwrap();
    let mut fork = batch(2, 4, |_| "j".to_string());
    fork.checkpoint.tree_size = 2;
    fork.checkpoint.root_hash = root(2, 9);
    for r in &mut fork.receipts {
        r.tree_size = 4;
    }
    let err = store.ingest(&fork).unwrap_err();
    assert!(
        matches!(err, IndexError::CheckpointConflict { tree_size: 2, .. }),
        "{err}"
    );
    assert_eq!(store.receipt_by_index(2).unwrap(), None);
    assert_eq!(store.stats().unwrap(), stats(2, 1, 2));

    // The same tree re-signed later (same root, new note) is just a known checkpoint.
    let mut resigned = batch(0, 2, |_| "j".to_string());
    resigned.checkpoint.signed_at_us += 1_000_000;
    assert_eq!(store.ingest(&resigned).unwrap().duplicates, 2);
    assert_eq!(
        store.checkpoint(2).unwrap(),
        Some(checkpoint(2)),
        "the first is kept"
    );
    assert_eq!(store.stats().unwrap(), stats(2, 1, 2));
}

#[test]
fn data_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(0, 12, |l| format!("job-{}", l % 4));
    {
        let store = IndexStore::open(&IndexOptions {
            path: dir.path().join("index"),
            block_cache_bytes: 1024 * 1024,
            sync_writes: true,
            ..IndexOptions::new(dir.path().join("index"))
        })
        .unwrap();
        store.ingest(&b).unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.stats().unwrap(), stats(12, 1, 12));
    assert_eq!(
        store.receipt_by_operation("op-0007").unwrap().as_ref(),
        Some(&b.receipts[7])
    );
    assert_eq!(
        store.receipt_by_index(11).unwrap().as_ref(),
        Some(&b.receipts[11])
    );
    assert_eq!(all_pages(&store, "job-3", 2).0, vec![3, 7, 11]);
    assert_eq!(store.latest_checkpoint().unwrap(), Some(checkpoint(12)));
    // Still idempotent after the reopen.
    assert_eq!(store.ingest(&b).unwrap().duplicates, 12);
    assert_eq!(store.stats().unwrap(), stats(12, 1, 12));
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let err = IndexStore::open(&IndexOptions::new(&file)).unwrap_err();
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");

    // A second open of a live index fails on RocksDB's lock, also naming the path.
    let path = dir.path().join("index");
    let _first = IndexStore::open(&IndexOptions::new(&path)).unwrap();
    let err = IndexStore::open(&IndexOptions::new(&path)).unwrap_err();
    assert!(matches!(err, IndexError::Open { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
}

#[test]
fn concurrent_ingests_count_each_receipt_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let batches: Vec<SignedBatch> = (0..8)
        .map(|i| batch(i * 10, i * 10 + 10, |l| format!("j{}", l % 5)))
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            // Every thread ingests every batch, starting at a different one.
            let mine: Vec<SignedBatch> = batches
                .iter()
                .cycle()
                .skip(t * 2)
                .take(8)
                .cloned()
                .collect();
            std::thread::spawn(move || {
                mine.iter()
                    .map(|b| store.ingest(b).unwrap())
                    .fold(0, |n, o| n + o.receipts_written)
            })
        })
        .collect();
    let written: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(written, 80, "each receipt written by exactly one thread");
    assert_eq!(store.stats().unwrap(), stats(80, 8, 80));
}

// ---- property -------------------------------------------------------------------------

/// Batch sizes, and a permutation to ingest them in.
fn sizes_and_order() -> impl Strategy<Value = (Vec<u64>, Vec<usize>)> {
    prop::collection::vec(1u64..6, 1..7).prop_flat_map(|sizes| {
        let order: Vec<usize> = (0..sizes.len()).collect();
        (Just(sizes), Just(order).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_order_gives_consistent_stats(
        (sizes, order) in sizes_and_order(),
        chunk in 1usize..4,
        replay in any::<bool>(),
    ) {
        let job = |l: u64| format!("job-{}", l % 3);
        let mut batches = Vec::new();
        let mut end = 0;
        for size in &sizes {
            batches.push(batch(end, end + size, job));
            end += size;
        }
        let total = end;
        let shuffled: Vec<SignedBatch> = order.iter().map(|&i| batches[i].clone()).collect();

        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut written = 0;
        for group in shuffled.chunks(chunk) {
            let out = store.ingest_many(group).unwrap();
            prop_assert_eq!(out.duplicates, 0);
            written += out.receipts_written;
        }
        if replay {
            let out = store.ingest_many(&batches).unwrap();
            prop_assert_eq!(out, IngestOutcome { receipts_written: 0, duplicates: total as usize });
        }
        prop_assert_eq!(written as u64, total);
        prop_assert_eq!(store.stats().unwrap(), stats(total, sizes.len() as u64, total));
        prop_assert_eq!(store.latest_checkpoint().unwrap().map(|c| c.tree_size), Some(total));

        // In-order ingestion, one call per batch, reaches the same state.
        let dir2 = tempfile::tempdir().unwrap();
        let in_order = open(&dir2);
        for b in &batches {
            in_order.ingest(b).unwrap();
        }
        prop_assert_eq!(in_order.stats().unwrap(), store.stats().unwrap());

        let mut by_job: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for leaf in 0..total {
            by_job.entry(job(leaf)).or_default().push(leaf);
        }
        for (j, leaves) in by_job {
            prop_assert_eq!(all_pages(&store, &j, 2).0, leaves.clone());
            prop_assert_eq!(all_pages(&in_order, &j, 2).0, leaves);
        }
        for leaf in 0..total {
            let r = store.receipt_by_operation(&op_id(leaf)).unwrap().unwrap();
            prop_assert_eq!(r.leaf_index, leaf);
        }
    }
}

// ---- time and operator ranges ---------------------------------------------------------

fn timed_receipt(leaf: u64, tree_size: u64, operator: &str, started_at_us: u64) -> Receipt {
    let mut rec = record(leaf, "timed-job");
    rec.operator = operator.to_string();
    rec.started_at_us = started_at_us;
    let mut r = receipt(leaf, "timed-job", tree_size);
    r.leaf = Blob(rec.canonical_bytes());
    r
}

/// Every page of a time query, as (start time, leaf) pairs in the order returned.
fn time_pages(store: &IndexStore, operator: Option<&str>, from: u64, to: u64, limit: usize) -> Vec<(u64, u64)> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let (page, next) = match operator {
            Some(op) => store.receipts_by_operator(op, from, to, cursor.as_deref(), limit),
            None => store.receipts_by_time(from, to, cursor.as_deref(), limit),
        }
        .unwrap();
        assert!(page.len() <= limit);
        out.extend(page.iter().map(|r| (r.record().unwrap().started_at_us, r.leaf_index)));
        match next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn receipts_by_time_and_by_operator_page_in_start_order() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // Start times out of log order, two operators, two steps in the same microsecond.
    let specs: Vec<(u64, &str, u64)> = vec![
        (0, "geo.a@1", 500),
        (1, "geo.b@1", 100),
        (2, "geo.a@1", 300),
        (3, "geo.a@1", 300),
        (4, "geo.b@1", 900),
        (5, "geo.a@2", 200),
        (6, "geo.a@1", 1000),
    ];
    let receipts = specs.iter().map(|&(leaf, op, t)| timed_receipt(leaf, 7, op, t)).collect();
    store.ingest(&signed(checkpoint(7), receipts)).unwrap();

    let all: Vec<(u64, u64)> = vec![(100, 1), (200, 5), (300, 2), (300, 3), (500, 0), (900, 4), (1000, 6)];
    for limit in [1, 2, 3, 100] {
        assert_eq!(time_pages(&store, None, 0, u64::MAX, limit), all, "limit {limit}");
    }
    // Half-open: from is included, to is not.
    assert_eq!(time_pages(&store, None, 300, 900, 2), vec![(300, 2), (300, 3), (500, 0)]);
    assert_eq!(time_pages(&store, None, 301, 300, 2), vec![]);
    // One operator, exactly as recorded (another version is another operator).
    assert_eq!(time_pages(&store, Some("geo.a@1"), 0, u64::MAX, 2), vec![(300, 2), (300, 3), (500, 0), (1000, 6)]);
    assert_eq!(time_pages(&store, Some("geo.a@1"), 400, 1000, 1), vec![(500, 0)]);
    assert_eq!(time_pages(&store, Some("geo.a"), 0, u64::MAX, 10), vec![]);
    assert_eq!(time_pages(&store, Some("geo.b@1"), 0, u64::MAX, 10), vec![(100, 1), (900, 4)]);

    // A cursor that is not one of ours is refused; one from another window ends the query.
    assert!(matches!(store.receipts_by_time(0, 10, Some("nonsense"), 5), Err(IndexError::InvalidCursor { .. })));
    let (_, next) = store.receipts_by_time(0, u64::MAX, None, 1).unwrap();
    let (page, _) = store.receipts_by_time(0, 50, next.as_deref(), 5).unwrap();
    assert!(page.is_empty());
}

// ---- operators ------------------------------------------------------------------------

fn operator(id: &str, capabilities: &[&str]) -> hsync_protocol::operator::OperatorDef {
    hsync_protocol::operator::OperatorDef {
        id: id.to_string(),
        version: "1".to_string(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        deterministic: true,
        cacheable: true,
        provider: hsync_protocol::operator::Provider::Nats {
            subject: format!("hsync.op.{id}"),
            batch_subject: None,
        },
        args: vec![],
        cost_hint: 1,
        description: format!("test operator {id}"),
    }
}

/// Every operator of a capability (or all), following cursors with pages of `limit`.
fn all_operators(store: &IndexStore, capability: Option<&str>, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.operators(capability, cursor.as_deref(), limit).unwrap();
        assert!(page.len() <= limit);
        if next.is_some() {
            assert_eq!(page.len(), limit, "a page before the last one is full");
        }
        ids.extend(page.into_iter().map(|d| d.id));
        match next {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
}

#[test]
fn operators_by_id_and_capability_follow_puts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..25 {
        let caps: &[&str] = if i % 2 == 0 { &["geometry", "pure"] } else { &["geometry"] };
        store.put_operator(&format!("geo.op{i:02}"), &operator(&format!("geo.op{i:02}"), caps)).unwrap();
    }
    store.put_operator("text.upper", &operator("text.upper", &["text", "pure"])).unwrap();
    // "geo" is a prefix of "geometry" and must not see its operators.
    store.put_operator("other", &operator("other", &["geo"])).unwrap();

    assert_eq!(store.operator("text.upper").unwrap().unwrap(), operator("text.upper", &["text", "pure"]));
    assert_eq!(store.operator("missing").unwrap(), None);
    assert_eq!(store.operator_count().unwrap(), 27);

    let geometry = all_operators(&store, Some("geometry"), 7);
    assert_eq!(geometry, (0..25).map(|i| format!("geo.op{i:02}")).collect::<Vec<_>>());
    assert_eq!(all_operators(&store, Some("geo"), 7), ["other"]);
    let pure = all_operators(&store, Some("pure"), 4);
    assert_eq!(pure.len(), 14);
    assert_eq!(pure.last().unwrap(), "text.upper");
    assert_eq!(all_operators(&store, None, 10).len(), 27);
    assert!(all_operators(&store, Some("nothing"), 10).is_empty());

    // A new version that drops a capability leaves that capability's list.
    store.put_operator("text.upper", &operator("text.upper", &["text"])).unwrap();
    assert_eq!(all_operators(&store, Some("pure"), 100).len(), 13);
    assert_eq!(all_operators(&store, Some("text"), 100), ["text.upper"]);

    store.delete_operator("geo.op03").unwrap();
    store.delete_operator("never-there").unwrap();
    assert_eq!(store.operator("geo.op03").unwrap(), None);
    assert!(!all_operators(&store, Some("geometry"), 100).contains(&"geo.op03".to_string()));

    // After a resync, whatever the bucket no longer holds goes.
    let keep: std::collections::HashSet<String> = ["geo.op00", "text.upper"].iter().map(|s| s.to_string()).collect();
    assert_eq!(store.retain_operators(&keep).unwrap(), 24);
    assert_eq!(all_operators(&store, None, 100), ["geo.op00", "text.upper"]);
    assert_eq!(all_operators(&store, Some("geometry"), 100), ["geo.op00"]);
    assert!(all_operators(&store, Some("geo"), 100).is_empty());

    drop(store);
    let store = open(&dir);
    assert_eq!(all_operators(&store, Some("pure"), 100), ["geo.op00"]);
}

#[test]
fn operator_cursor_from_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.put_operator("a", &operator("a", &["x"])).unwrap();
    for bad in ["zz", "", "00"] {
        let err = store.operators(Some("x"), Some(bad), 10).unwrap_err();
        assert!(matches!(err, IndexError::InvalidCursor { .. }), "{bad:?}: {err}");
    }
}
