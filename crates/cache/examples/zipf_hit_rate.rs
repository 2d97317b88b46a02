//! Hit rate of the result cache on the benchmark's workload (Zipf(1.0) over 100k distinct
//! inputs, 10k entries), LRU alone vs LRU with TinyLFU admission, without NATS in the way:
//! `cargo run --release -p hsync-cache --example zipf_hit_rate`.

use hsync_cache::zipf::{Rng, Zipf};
use hsync_cache::Cache;

const KEYS: usize = 100_000;
const ENTRIES: usize = 10_000;
const WARMUP: usize = 200_000;
const MEASURED: usize = 1_000_000;

fn unit(_: &()) -> usize {
    1
}

fn hit_rate(cache: Cache<usize, (), ()>) -> f64 {
    let z = Zipf::new(KEYS, 1.0);
    let mut rng = Rng::new(42);
    let mut hits = 0;
    for i in 0..WARMUP + MEASURED {
        let k = z.sample(&mut rng);
        match cache.get(&k) {
            Some(()) if i >= WARMUP => hits += 1,
            Some(()) => {}
            None => cache.insert(k, ()),
        }
    }
    hits as f64 / MEASURED as f64
}

fn main() {
    let ideal = Zipf::new(KEYS, 1.0).top_share(ENTRIES);
    let lru = hit_rate(Cache::new(ENTRIES, usize::MAX, unit).without_admission());
    let tinylfu = hit_rate(Cache::new(ENTRIES, usize::MAX, unit));
    println!("Zipf(1.0), {KEYS} keys, {ENTRIES} entries, {WARMUP} warm-up + {MEASURED} measured requests");
    println!("ideal (top {ENTRIES} keys pinned): {:.1}%", ideal * 100.0);
    println!("LRU:                            {:.1}%", lru * 100.0);
    println!("LRU + TinyLFU admission:        {:.1}%", tinylfu * 100.0);
}
