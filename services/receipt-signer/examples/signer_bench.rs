//! The receipt-signer's own throughput, with everything `receipt_bench` leaves out: the
//! state file (the new compact range and the whole batch, JSON, fsync'd atomic write) and,
//! in the second part, NATS (consume, decode, sign, publish with the expected sequence,
//! confirmed acks).
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/hsync/target
//! nice -n 10 cargo run --release -p receipt-signer --example signer_bench [-- in-process|nats]
//! ```
//!
//! * **In process**: `Signer::sign_batch` on batches of 1, 100 and 1000 records, with the
//!   state directory on the disk and on tmpfs (/dev/shm: the same work without a real
//!   fsync), 3 alternating rounds, median.
//! * **Through nats-server**: N records are put into `HSYNC_RECORDS` first; then the service
//!   loop (`receipt_signer::run`) starts and the clock runs until its `$SRV.STATS` tree size
//!   reaches N. One fresh nats-server per run, 3 alternating rounds, median.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use hsync_protocol::names::services;
use hsync_protocol::record::OperationRecord;
use hsync_testkit::NatsServer;
use receipt_signer::{run, SignedRecord, Signer, SignerConfig};

const ROUNDS: usize = 3;

fn config(dir: &Path, batch_size: usize) -> SignerConfig {
    SignerConfig {
        state_dir: dir.to_path_buf(),
        key_file: None,
        origin: "bench.example/log".into(),
        batch_size,
        batch_window_ms: 10,
        lease_ttl_ms: 5000,
        signer_id: Some("bench".into()),
    }
}

fn record(i: u64) -> OperationRecord {
    let mut r: OperationRecord =
        serde_json::from_str(include_str!("../../../proto-schemas/examples/OperationRecord.executed.json")).unwrap();
    r.operation_id = format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.job_id = format!("job-{:08}", i / 4);
    r.started_at_us += i;
    r.finished_at_us += i;
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Receipts per second of `sign_batch` alone, state file included; and the state file's
/// bytes per receipt.
fn in_process(base: &Path, batch: usize, receipts: usize, next_id: &mut u64) -> (f64, f64) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut signer = Signer::open(&config(dir.path(), batch)).unwrap();
    let batches: Vec<Vec<SignedRecord>> = (0..receipts / batch)
        .map(|_| {
            (0..batch)
                .map(|_| {
                    *next_id += 1;
                    let record = record(*next_id);
                    let bytes = record.canonical_bytes();
                    SignedRecord { record, bytes, traceparent: String::new(), stream_seq: *next_id }
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for b in batches {
        signer.sign_batch(b).unwrap().expect("a batch");
    }
    let rate = receipts as f64 / start.elapsed().as_secs_f64();
    let state = std::fs::metadata(config(dir.path(), batch).state_path()).unwrap().len();
    (rate, state as f64 / batch as f64)
}

/// Receipts per second of the whole service loop through a fresh nats-server.
async fn through_nats(batch: usize, receipts: usize) -> f64 {
    let nats = NatsServer::start().expect("nats-server");
    let cfg = BusConfig::for_url(&nats.url());
    let client = Arc::new(Bus::connect(&cfg, "bench-client").await.unwrap());
    let js = client.jetstream();
    streams::records_stream(&js, client.names()).await.unwrap();
    streams::receipts_stream(&js, client.names()).await.unwrap();
    let mut acks = Vec::with_capacity(receipts);
    for i in 0..receipts as u64 {
        let (headers, body) = client.encode(&record(i)).unwrap();
        acks.push(js.publish_with_headers(client.names().ops_records(), headers, body).await.unwrap());
        if acks.len() >= 2000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let signer_cfg = config(dir.path(), batch);
    let signer = Signer::open(&signer_cfg).unwrap();
    let bus = Arc::new(Bus::connect(&cfg, "bench-signer").await.unwrap());
    let shutdown = Shutdown::new();
    let start = Instant::now();
    let task = tokio::spawn(run(bus, signer, signer_cfg, shutdown.signal()));
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stats = hsync_client::discovery::collect(client.primary(), "STATS", services::RECEIPT_SIGNER, Duration::from_millis(200))
            .await
            .unwrap_or_default();
        let size = stats.first().and_then(|s| s["endpoints"][0]["data"]["tree_size"].as_u64()).unwrap_or(0);
        if size >= receipts as u64 {
            break;
        }
    }
    let elapsed = start.elapsed();
    shutdown.trigger();
    task.await.unwrap().unwrap();
    receipts as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let only = std::env::args().nth(1);
    if only.as_deref() != Some("nats") {
        in_process_part();
    }
    if only.as_deref() != Some("in-process") {
        nats_part().await;
    }
}

fn in_process_part() {
    let disk = std::env::temp_dir();
    let tmpfs = Path::new("/dev/shm");
    println!("in process: Signer::sign_batch with its state file (median of {ROUNDS} rounds)");
    println!("| batch | receipts/s, state on disk | receipts/s, state on tmpfs | state file bytes per receipt |");
    println!("|---|---|---|---|");
    let mut next_id = 0;
    for &(batch, receipts) in &[(1usize, 2_000usize), (100, 50_000), (1000, 100_000)] {
        let (mut on_disk, mut on_tmpfs, mut bytes) = (Vec::new(), Vec::new(), 0.0);
        for round in 0..ROUNDS {
            let order: [&Path; 2] = if round % 2 == 0 { [&disk, tmpfs] } else { [tmpfs, &disk] };
            for base in order {
                let (rate, b) = in_process(base, batch, receipts, &mut next_id);
                bytes = b;
                if base == tmpfs { on_tmpfs.push(rate) } else { on_disk.push(rate) }
            }
        }
        println!("| {batch} | {:.0} | {:.0} | {bytes:.0} |", median(on_disk), median(on_tmpfs));
    }

    // The state file's encoding, side by side: what the state held as JSON before, and
    // holds as MessagePack now (the last batch is nearly all of it).
    let dir = tempfile::tempdir().unwrap();
    let mut signer = Signer::open(&config(dir.path(), 1000)).unwrap();
    let batch = signer
        .sign_batch((0..1000u64).map(|i| {
            let record = record(1 << 40 | i);
            let bytes = record.canonical_bytes();
            SignedRecord { record, bytes, traceparent: String::new(), stream_seq: i + 1 }
        }).collect())
        .unwrap()
        .unwrap();
    let (mut json, mut msgpack) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(serde_json::to_vec(&batch).unwrap());
        }
        json.push(start.elapsed().as_secs_f64() / 20.0);
        let start = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(rmp_serde::to_vec_named(&batch).unwrap());
        }
        msgpack.push(start.elapsed().as_secs_f64() / 20.0);
    }
    let (json, msgpack) = (median(json), median(msgpack));
    println!();
    println!(
        "encoding a batch of 1000 for the state file: JSON {:.2} ms ({} bytes), MessagePack {:.2} ms ({} bytes): {:.1}x",
        json * 1e3,
        serde_json::to_vec(&batch).unwrap().len(),
        msgpack * 1e3,
        rmp_serde::to_vec_named(&batch).unwrap().len(),
        json / msgpack
    );

}

async fn nats_part() {
    println!();
    println!("through nats-server: the service loop, records waiting in the stream (median of {ROUNDS} rounds)");
    println!("| batch | receipts | receipts/s |");
    println!("|---|---|---|");
    let variants = [(1usize, 1_000usize), (100, 20_000), (1000, 20_000)];
    let mut rates = vec![Vec::new(); variants.len()];
    for round in 0..ROUNDS {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let (batch, receipts) = variants[i];
            rates[i].push(through_nats(batch, receipts).await);
        }
    }
    for (i, (batch, receipts)) in variants.iter().enumerate() {
        println!("| {batch} | {receipts} | {:.0} |", median(rates[i].clone()));
    }
}
