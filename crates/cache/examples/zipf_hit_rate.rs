//! Hit rate of the result cache on the benchmark's workload (Zipf(1.0) over 100k distinct
//! inputs, 10k entries), every eviction policy on the same request sequence, without NATS
//! in the way: `cargo run --release -p hsync-cache --example zipf_hit_rate`.
//!
//! A second column replays the sequence with the popularity moved halfway through the
//! measured requests (every key renamed): a policy that only remembers well would win the
//! first column and lose this one.

use std::collections::BTreeSet;

use hsync_cache::zipf::{Rng, Zipf};
use hsync_cache::{Cache, Tuning};

const KEYS: usize = 100_000;
const ENTRIES: usize = 10_000;
const WARMUP: usize = 200_000;
const MEASURED: usize = 1_000_000;

/// The seeded request sequence, each request as (key, counted in the hit rate).
fn requests(shifted: bool) -> impl Iterator<Item = (usize, bool)> {
    let z = Zipf::new(KEYS, 1.0);
    let mut rng = Rng::new(42);
    (0..WARMUP + MEASURED).map(move |i| {
        let rank = z.sample(&mut rng);
        // 7919 is prime to KEYS, so this is a permutation: the same Zipf, new hot keys.
        let moved = shifted && i >= WARMUP + MEASURED / 2;
        let key = if moved { (rank * 7919 + 12_345) % KEYS } else { rank };
        (key, i >= WARMUP)
    })
}

fn unit(_: &()) -> usize {
    1
}

fn hit_rate(new_cache: impl Fn() -> Cache<usize, (), ()>, shifted: bool) -> f64 {
    let cache = new_cache();
    let mut hits = 0;
    for (k, measured) in requests(shifted) {
        match cache.get(&k) {
            Some(()) if measured => hits += 1,
            Some(()) => {}
            None => cache.insert(k, ()),
        }
    }
    hits as f64 / MEASURED as f64
}

/// LFU with exact counts since the first request, never aged: about the best a policy can
/// do that knows the past requests but not the distribution.
fn perfect_lfu(shifted: bool) -> f64 {
    let mut counts = vec![0u32; KEYS];
    let mut cached = vec![false; KEYS];
    let mut by_count = BTreeSet::new();
    let mut hits = 0;
    for (k, measured) in requests(shifted) {
        counts[k] += 1;
        if cached[k] {
            hits += measured as usize;
            by_count.remove(&(counts[k] - 1, k));
            by_count.insert((counts[k], k));
        } else if by_count.len() < ENTRIES {
            cached[k] = true;
            by_count.insert((counts[k], k));
        } else if let Some(&(c, victim)) = by_count.first() {
            if counts[k] > c {
                by_count.pop_first();
                cached[victim] = false;
                cached[k] = true;
                by_count.insert((counts[k], k));
            }
        }
    }
    hits as f64 / MEASURED as f64
}

fn row(name: &str, rate: impl Fn(bool) -> f64) {
    println!("{name:<68} {:>6.2}%  {:>6.2}%", rate(false) * 100.0, rate(true) * 100.0);
}

fn tuned(t: Tuning) -> impl Fn(bool) -> f64 {
    move |shifted| hit_rate(|| Cache::new(ENTRIES, usize::MAX, unit).with_tuning(t), shifted)
}

fn describe(t: Tuning) -> String {
    format!(
        "window {}%, protected {}%, sketch {}x, ageing {}x",
        t.window_percent, t.protected_percent, t.sketch_width, t.ageing_period
    )
}

fn main() {
    println!("Zipf(1.0), {KEYS} keys, {ENTRIES} entries, {WARMUP} warm-up + {MEASURED} measured");
    println!("{:<68} {:>7}  {:>7}", "policy", "static", "shifted");
    let ideal = Zipf::new(KEYS, 1.0).top_share(ENTRIES);
    let name = format!("ideal (top {ENTRIES} keys pinned)");
    println!("{name:<68} {:>6.2}%  {:>7}", ideal * 100.0, "-");
    row("perfect-memory LFU (exact counts, never aged)", perfect_lfu);
    row("LRU", |s| hit_rate(|| Cache::new(ENTRIES, usize::MAX, unit).without_admission(), s));
    row("LRU + TinyLFU admission (previous default)", tuned(Tuning::LRU_TINYLFU));
    let wider = Tuning { sketch_width: 8, ..Tuning::LRU_TINYLFU };
    row("LRU + TinyLFU admission, sketch 8x", tuned(wider));
    let w = Tuning::W_TINYLFU;
    row(&format!("W-TinyLFU, default: {}", describe(w)), |s| {
        hit_rate(|| Cache::new(ENTRIES, usize::MAX, unit), s)
    });
    // The default's parameters, changed one at a time.
    let variants = [
        Tuning { window_percent: 0, ..w },
        Tuning { window_percent: 2, ..w },
        Tuning { window_percent: 5, ..w },
        Tuning { protected_percent: 50, ..w },
        Tuning { sketch_width: 4, ..w },
        Tuning { sketch_width: 16, ..w },
        Tuning { ageing_period: 10, ..w },
        Tuning { ageing_period: 100, ..w },
    ];
    for t in variants {
        row(&format!("W-TinyLFU, {}", describe(t)), tuned(t));
    }
}
