//! The result cache every HyperSync service puts in front of deterministic work.
//!
//! Bounded both by entries and by bytes, because one large matrix must not be able to hold
//! the memory of ten thousand small vectors. Identical computations that are in flight at
//! the same time run once (single-flight): the first caller computes, the others wait for
//! its answer. Errors are shared with the callers that waited for them but never stored.
//!
//! Eviction is W-TinyLFU (Einziger, Friedman, Manes 2017, as in Caffeine), built from three
//! `lru` maps:
//!
//! - a small admission *window* (1% of both bounds) takes every new entry, so that a key
//!   asked for in a short burst gets its hits even before it has a frequency to show (a
//!   value heavier than the window's share of bytes goes straight to the duel below);
//! - the *main* region is a segmented LRU: entries leaving the window enter *probation*;
//!   a hit there promotes them to *protected* (80% of the main region), whose overflow is
//!   demoted back to probation. A key used twice is thus shielded from a scan of one-off
//!   keys, which only ever compete with probation;
//! - when the main region is full, the entry leaving the window replaces probation's least
//!   recently used entry only if a small frequency sketch (TinyLFU) says it has been asked
//!   for more often; otherwise it is dropped (counted as `rejected`).
//!
//! [`Cache::without_admission`] gives plain LRU (the whole cache is one window).
//!
//! On skewed workloads this keeps the popular entries that plain LRU lets the long tail
//! flush out (figures in docs/PERFORMANCE.md, from `examples/zipf_hit_rate.rs`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use tokio::sync::OnceCell;

pub mod zipf;

/// Where an answer of [`Cache::get_or_compute`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Stored in the cache.
    Hit,
    /// Computed by this caller.
    Computed,
    /// Computed by a concurrent caller with the same key (single-flight).
    Joined,
}

impl Source {
    /// True when this caller did not do the work itself.
    pub fn served_from_cache(self) -> bool {
        !matches!(self, Source::Computed)
    }
}

/// Counters and occupancy, for `$SRV.STATS` and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub joined: u64,
    /// Stored entries removed to keep within the bounds (each removal counts once, either
    /// here or in `rejected`).
    pub evictions: u64,
    /// Entries the admission policy turned away: they left the admission window while the
    /// main region was full and were less popular than its victim, so they were dropped
    /// instead of it.
    pub rejected: u64,
    pub entries: usize,
    pub bytes: usize,
}

impl CacheStats {
    /// Hits (including single-flight joins) over all lookups; 0 before the first lookup.
    pub fn hit_rate(&self) -> f64 {
        let served = self.hits + self.joined;
        let total = served + self.misses;
        if total == 0 {
            0.0
        } else {
            served as f64 / total as f64
        }
    }
}

/// The eviction policy's parameters. Not a supported API: `examples/zipf_hit_rate.rs`
/// uses it to measure the alternatives side by side; services use the default.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Admission window, in percent of both bounds (rounded up; 0 = no window).
    pub window_percent: usize,
    /// Protected segment, in percent of the main region (0 = the main region is one LRU).
    pub protected_percent: usize,
    /// Sketch counters per row, per entry of capacity (rounded up to a power of two).
    pub sketch_width: usize,
    /// The sketch is halved every `ageing_period × entries` recorded accesses.
    pub ageing_period: usize,
}

impl Tuning {
    /// W-TinyLFU, the default, tuned with `examples/zipf_hit_rate.rs` (the table in
    /// docs/PERFORMANCE.md). A longer ageing period scores better on a fixed popularity
    /// but adapts far worse when it moves, so it stays at 30×.
    pub const W_TINYLFU: Tuning =
        Tuning { window_percent: 1, protected_percent: 80, sketch_width: 8, ageing_period: 30 };
    /// The previous policy: one LRU, every new entry admitted by TinyLFU against its victim.
    pub const LRU_TINYLFU: Tuning =
        Tuning { window_percent: 0, protected_percent: 0, sketch_width: 4, ageing_period: 30 };
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning::W_TINYLFU
    }
}

type Flight<V, E> = Arc<OnceCell<Result<V, E>>>;

struct Inner<K: Hash + Eq, V, E> {
    /// `None` when the cache is disabled.
    store: Option<Store<K, V>>,
    in_flight: HashMap<K, Flight<V, E>>,
    /// `None` for plain LRU (no admission filter).
    sketch: Option<FrequencySketch>,
}

fn key_hash<K: Hash>(key: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Count-min sketch of recent access frequencies: 4 rows of small saturating counters,
/// halved every `sample` accesses so that old popularity fades.
struct FrequencySketch {
    counters: Vec<u8>,
    width_mask: usize,
    additions: usize,
    sample: usize,
}

const SKETCH_ROWS: usize = 4;
const SKETCH_MAX: u8 = 15;

impl FrequencySketch {
    fn new(capacity: usize, tuning: Tuning) -> Self {
        let capacity = capacity.max(16);
        let width = (capacity * tuning.sketch_width.max(1)).next_power_of_two();
        FrequencySketch {
            counters: vec![0; width * SKETCH_ROWS],
            width_mask: width - 1,
            additions: 0,
            sample: capacity * tuning.ageing_period.max(1),
        }
    }

    fn slots(&self, hash: u64) -> [usize; SKETCH_ROWS] {
        let (h1, h2) = (hash as usize, ((hash >> 32) as usize) | 1);
        let width = self.width_mask + 1;
        std::array::from_fn(|row| {
            row * width + (h1.wrapping_add(row.wrapping_mul(h2)) & self.width_mask)
        })
    }

    fn record(&mut self, hash: u64) {
        for i in self.slots(hash) {
            if self.counters[i] < SKETCH_MAX {
                self.counters[i] += 1;
            }
        }
        self.additions += 1;
        if self.additions >= self.sample {
            for c in &mut self.counters {
                *c /= 2;
            }
            self.additions /= 2;
        }
    }

    fn estimate(&self, hash: u64) -> u8 {
        self.slots(hash).iter().map(|&i| self.counters[i]).min().unwrap_or(0)
    }
}

/// A stored value and its weight in bytes.
type Entry<V> = (V, usize);

/// Evictions and rejections of one insertion, added to the counters afterwards.
#[derive(Default)]
struct Removed {
    evicted: u64,
    rejected: u64,
}

/// The stored entries: W-TinyLFU's window, probation and protected segments. The segments
/// are unbounded `lru` maps; the bounds are kept here, over all three.
struct Store<K: Hash + Eq, V> {
    window: LruCache<K, Entry<V>>,
    probation: LruCache<K, Entry<V>>,
    protected: LruCache<K, Entry<V>>,
    /// The window's share of both bounds. By bytes too, so that a heavy new entry leaves the
    /// window at once and must win the duel before it takes the room of others.
    window_cap: usize,
    window_max_bytes: usize,
    window_bytes: usize,
    protected_cap: usize,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
}

/// `percent`% of `n`, rounded up (so a small cache still has a window of one entry).
fn share(n: usize, percent: usize) -> usize {
    ((n as u128 * percent as u128).div_ceil(100) as usize).min(n)
}

impl<K: Hash + Eq, V> Store<K, V> {
    fn new(max_entries: usize, max_bytes: usize, tuning: Tuning) -> Self {
        let window_cap = share(max_entries, tuning.window_percent);
        Store {
            window: LruCache::unbounded(),
            probation: LruCache::unbounded(),
            protected: LruCache::unbounded(),
            window_cap,
            window_max_bytes: share(max_bytes, tuning.window_percent),
            window_bytes: 0,
            protected_cap: (max_entries - window_cap) * tuning.protected_percent / 100,
            max_entries,
            max_bytes,
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.window.len() + self.probation.len() + self.protected.len()
    }

    /// The stored value, marked as used. A hit in probation is the entry's second use
    /// since it left the window: it moves to protected, out of reach of new candidates.
    fn get(&mut self, key: &K) -> Option<&V> {
        let entry = if self.window.contains(key) {
            self.window.get(key)
        } else if self.protected.contains(key) {
            self.protected.get(key)
        } else {
            let (key_owned, entry) = self.probation.pop_entry(key)?;
            self.protected.push(key_owned, entry);
            while self.protected.len() > self.protected_cap {
                let (k, e) = self.protected.pop_lru().expect("protected is not empty");
                self.probation.push(k, e);
            }
            // With a protected segment of 0 (LRU_TINYLFU) the entry is back in probation.
            self.protected.peek(key).or_else(|| self.probation.peek(key))
        };
        entry.map(|(v, _)| v)
    }

    /// Stores `value` (a new key enters the window), then evicts until both bounds hold.
    fn insert(&mut self, key: K, value: V, weight: usize, sketch: Option<&FrequencySketch>)
        -> Removed {
        // A replaced value keeps its place; only the byte counts change.
        if let Some(entry) = self.window.get_mut(&key) {
            let (_, old) = std::mem::replace(entry, (value, weight));
            self.window_bytes = self.window_bytes - old + weight;
            self.bytes = self.bytes - old + weight;
        } else if let Some(entry) =
            self.probation.get_mut(&key).or_else(|| self.protected.get_mut(&key))
        {
            let (_, old) = std::mem::replace(entry, (value, weight));
            self.bytes = self.bytes - old + weight;
        } else {
            self.window.push(key, (value, weight));
            self.window_bytes += weight;
            self.bytes += weight;
        }
        self.evict(sketch)
    }

    /// Restores both bounds. The window keeps its share; the entries that overflow it are
    /// candidates for the main region. While the cache is over a bound, the newest candidate
    /// duels the main region's victim (probation's least recently used entry, protected's
    /// if probation is empty) and the loser goes: a heavy newcomer is judged before the
    /// older entries it pushed out of the window. Candidates still in hand once the bounds
    /// hold enter probation.
    fn evict(&mut self, sketch: Option<&FrequencySketch>) -> Removed {
        let mut removed = Removed::default();
        let mut candidates = VecDeque::new(); // oldest first
        while self.window.len() > self.window_cap || self.window_bytes > self.window_max_bytes {
            let Some((k, e)) = self.window.pop_lru() else { break };
            self.window_bytes -= e.1;
            candidates.push_back((k, e));
        }
        let mut winners = Vec::new(); // newest first
        // Entries in hand still count towards both bounds.
        while self.len() + candidates.len() + winners.len() > self.max_entries
            || self.bytes > self.max_bytes
        {
            let victim = self.probation.peek_lru().or_else(|| self.protected.peek_lru());
            let Some(victim) = victim.map(|(k, _)| key_hash(k)) else {
                // No main region to compete with (plain LRU has none): the least recently
                // used entry in hand goes. With nothing in hand either, the window alone
                // would be over the bounds, which its share rules out.
                let Some((_, (_, w))) = candidates.pop_front().or_else(|| winners.pop()) else {
                    break;
                };
                self.bytes -= w;
                removed.evicted += 1;
                continue;
            };
            match candidates.pop_back() {
                Some(candidate) => {
                    // Ties go to the victim: a candidate must be asked for strictly more often.
                    let admitted = sketch
                        .is_none_or(|s| s.estimate(key_hash(&candidate.0)) > s.estimate(victim));
                    if admitted {
                        self.evict_main_lru();
                        removed.evicted += 1;
                        winners.push(candidate);
                    } else {
                        self.bytes -= candidate.1 .1;
                        removed.rejected += 1;
                    }
                }
                // Every candidate judged, or none (the window grew back after `clear`, or a
                // value was replaced by a heavier one): the victim goes.
                None => {
                    self.evict_main_lru();
                    removed.evicted += 1;
                }
            }
        }
        for (k, e) in candidates.into_iter().chain(winners.into_iter().rev()) {
            self.probation.push(k, e);
        }
        removed
    }

    fn evict_main_lru(&mut self) {
        if let Some((_, (_, w))) = self.probation.pop_lru().or_else(|| self.protected.pop_lru()) {
            self.bytes -= w;
        }
    }

    fn clear(&mut self) {
        self.window.clear();
        self.probation.clear();
        self.protected.clear();
        self.window_bytes = 0;
        self.bytes = 0;
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    joined: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
}

/// A cache of `V` by `K`; `E` is the error type computations may fail with.
pub struct Cache<K: Hash + Eq, V, E> {
    inner: Mutex<Inner<K, V, E>>,
    weigh: fn(&V) -> usize,
    counters: Counters,
}

impl<K, V, E> Cache<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone,
    E: Clone,
{
    /// `max_entries == 0` turns the cache off (every call computes, nothing is
    /// coalesced); `weigh` gives an entry's size in bytes for the `max_bytes` bound.
    pub fn new(max_entries: usize, max_bytes: usize, weigh: fn(&V) -> usize) -> Self {
        let tuning = Tuning::default();
        Cache {
            inner: Mutex::new(Inner {
                store: (max_entries > 0).then(|| Store::new(max_entries, max_bytes, tuning)),
                in_flight: HashMap::new(),
                sketch: (max_entries > 0).then(|| FrequencySketch::new(max_entries, tuning)),
            }),
            weigh,
            counters: Counters::default(),
        }
    }

    /// Plain LRU: every new entry is admitted (for comparison; W-TinyLFU is the default).
    pub fn without_admission(self) -> Self {
        {
            let mut inner = self.lock();
            // The whole cache is one window: no main region, no filter.
            let lru = Tuning { window_percent: 100, ..Tuning::default() };
            inner.store = inner.store.take().map(|s| Store::new(s.max_entries, s.max_bytes, lru));
            inner.sketch = None;
        }
        self
    }

    /// Another eviction policy, for `examples/zipf_hit_rate.rs`; call it on a new cache.
    #[doc(hidden)]
    pub fn with_tuning(self, tuning: Tuning) -> Self {
        {
            let mut inner = self.lock();
            if let Some(s) = inner.store.take() {
                inner.sketch = Some(FrequencySketch::new(s.max_entries, tuning));
                inner.store = Some(Store::new(s.max_entries, s.max_bytes, tuning));
            }
        }
        self
    }

    /// A cache that stores nothing and coalesces nothing: every call computes.
    pub fn disabled(weigh: fn(&V) -> usize) -> Self {
        Self::new(0, 0, weigh)
    }

    pub fn is_enabled(&self) -> bool {
        self.lock().store.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V, E>> {
        // The lock is never held across a computation, so a poisoned lock only means a
        // panic in our own bookkeeping; the map itself is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored value, if any (counts as a hit or a miss).
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        if let Some(s) = inner.sketch.as_mut() {
            s.record(key_hash(key));
        }
        let found = inner.store.as_mut().and_then(|s| s.get(key)).cloned();
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `value`, evicting entries to stay within both bounds (see the module docs
    /// for which). A value larger than the byte bound is not stored; one heavier than the
    /// window's share of bytes must at once win the admission duel to stay (otherwise it
    /// counts as `rejected`).
    pub fn insert(&self, key: K, value: V) {
        let weight = (self.weigh)(&value);
        let mut inner = self.lock();
        self.insert_locked(&mut inner, key, value, weight);
    }

    fn insert_locked(&self, inner: &mut Inner<K, V, E>, key: K, value: V, weight: usize) {
        let Inner { store, sketch, .. } = inner;
        let Some(store) = store.as_mut() else { return };
        if weight > store.max_bytes {
            return;
        }
        let removed = store.insert(key, value, weight, sketch.as_ref());
        self.counters.evictions.fetch_add(removed.evicted, Ordering::Relaxed);
        self.counters.rejected.fetch_add(removed.rejected, Ordering::Relaxed);
    }

    /// The cached value for `key`, or the result of `compute`. Concurrent calls with the
    /// same key run `compute` once. If the computing caller is cancelled, a waiting one
    /// takes over.
    pub async fn get_or_compute<F, Fut>(&self, key: K, compute: F) -> Result<(V, Source), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        // The guard lives only inside this block: it must never be held across an await.
        let flight = {
            let mut inner = self.lock();
            if let Some(s) = inner.sketch.as_mut() {
                s.record(key_hash(&key));
            }
            match inner.store.as_mut() {
                None => None,
                Some(store) => {
                    if let Some(v) = store.get(&key) {
                        self.counters.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok((v.clone(), Source::Hit));
                    }
                    Some(inner.in_flight.entry(key.clone()).or_default().clone())
                }
            }
        };
        let Some(flight) = flight else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return compute().await.map(|v| (v, Source::Computed));
        };

        let mut computed_here = false;
        let result = flight
            .get_or_init(|| {
                computed_here = true;
                compute()
            })
            .await
            .clone();

        if !computed_here {
            self.counters.joined.fetch_add(1, Ordering::Relaxed);
            return result.map(|v| (v, Source::Joined));
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let weight = result.as_ref().ok().map(|v| (self.weigh)(v));
        {
            let mut inner = self.lock();
            if inner.in_flight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                inner.in_flight.remove(&key);
            }
            if let (Ok(v), Some(w)) = (&result, weight) {
                self.insert_locked(&mut inner, key, v.clone(), w);
            }
        }
        result.map(|v| (v, Source::Computed))
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            joined: self.counters.joined.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
            entries: inner.store.as_ref().map_or(0, |s| s.len()),
            bytes: inner.store.as_ref().map_or(0, |s| s.bytes),
        }
    }

    /// Drops every stored entry (counters are kept).
    pub fn clear(&self) {
        if let Some(s) = self.lock().store.as_mut() {
            s.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[allow(clippy::ptr_arg)] // the weigher must be fn(&V) with V = Vec<u8>
    fn len(v: &Vec<u8>) -> usize {
        v.len()
    }

    #[test]
    fn bounded_by_entries() {
        let c: Cache<u32, Vec<u8>, ()> = Cache::new(2, usize::MAX, len).without_admission();
        c.insert(1, vec![1]);
        c.insert(2, vec![2]);
        assert!(c.get(&1).is_some()); // 1 is now the most recent
        c.insert(3, vec![3]);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(vec![1]));
        assert_eq!(c.get(&3), Some(vec![3]));
        let s = c.stats();
        assert_eq!((s.entries, s.evictions, s.bytes), (2, 1, 2));
    }

    #[test]
    fn bounded_by_bytes() {
        let c: Cache<u32, Vec<u8>, ()> = Cache::new(100, 10, len).without_admission();
        c.insert(1, vec![0; 4]);
        c.insert(2, vec![0; 4]);
        c.insert(3, vec![0; 4]); // 12 bytes > 10: the oldest goes
        assert_eq!(c.get(&1), None);
        assert_eq!(c.stats().bytes, 8);
        c.insert(4, vec![0; 11]); // larger than the whole budget: not stored
        assert_eq!(c.get(&4), None);
        assert_eq!(c.stats().entries, 2);
        // Replacing a key adjusts the byte count instead of double-counting it.
        c.insert(2, vec![0; 1]);
        assert_eq!(c.stats().bytes, 5);
        assert_eq!(c.stats().evictions, 1);
    }

    #[tokio::test]
    async fn computes_once_then_hits() {
        let c: Cache<u32, Vec<u8>, String> = Cache::new(10, 1 << 20, len);
        let (v, s) = c.get_or_compute(7, || async { Ok(vec![7]) }).await.unwrap();
        assert_eq!((v, s), (vec![7], Source::Computed));
        let (v, s) = c.get_or_compute(7, || async { Err("must not run".to_string()) }).await.unwrap();
        assert_eq!((v, s), (vec![7], Source::Hit));
        let st = c.stats();
        assert_eq!((st.hits, st.misses), (1, 1));
        assert_eq!(st.hit_rate(), 0.5);
    }

    #[tokio::test]
    async fn errors_are_not_stored() {
        let c: Cache<u32, Vec<u8>, String> = Cache::new(10, 1 << 20, len);
        let e = c.get_or_compute(1, || async { Err("boom".to_string()) }).await.unwrap_err();
        assert_eq!(e, "boom");
        let (_, s) = c.get_or_compute(1, || async { Ok(vec![1]) }).await.unwrap();
        assert_eq!(s, Source::Computed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_calls_in_flight_run_once() {
        let c: Arc<Cache<u32, Vec<u8>, String>> = Arc::new(Cache::new(10, 1 << 20, len));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, runs) = (c.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_compute(42, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(vec![42])
                })
                .await
                .unwrap()
            }));
        }
        let mut sources = Vec::new();
        for t in tasks {
            let (v, s) = t.await.unwrap();
            assert_eq!(v, vec![42]);
            sources.push(s);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::Computed).count(), 1);
        assert_eq!(sources.iter().filter(|s| s.served_from_cache()).count(), 15);
        assert!(c.lock().in_flight.is_empty(), "finished flights are removed");
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let c: Arc<Cache<u32, Vec<u8>, String>> = Arc::new(Cache::new(10, 1 << 20, len));
        let leader = {
            let c = c.clone();
            tokio::spawn(async move {
                c.get_or_compute(1, || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(vec![0])
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let _ = leader.await;
        let (v, s) = tokio::time::timeout(
            Duration::from_secs(5),
            c.get_or_compute(1, || async { Ok(vec![1]) }),
        )
        .await
        .expect("a waiter must not hang on a cancelled leader")
        .unwrap();
        assert_eq!((v, s), (vec![1], Source::Computed));
    }

    /// A lookup as the runner does it: on a miss, compute and store.
    fn use_key(c: &Cache<u32, Vec<u8>, ()>, k: u32, weight: usize) {
        if c.get(&k).is_none() {
            c.insert(k, vec![0; weight]);
        }
    }

    fn segment_of(c: &Cache<u32, Vec<u8>, ()>, k: u32) -> &'static str {
        let inner = c.lock();
        let s = inner.store.as_ref().unwrap();
        if s.window.contains(&k) {
            "window"
        } else if s.probation.contains(&k) {
            "probation"
        } else if s.protected.contains(&k) {
            "protected"
        } else {
            "absent"
        }
    }

    #[test]
    fn hot_keys_survive_a_scan_of_one_hit_wonders() {
        let run = |c: Cache<u32, Vec<u8>, ()>| {
            for round in 0..3 {
                for k in 0..50 {
                    use_key(&c, k, 1);
                }
                // A cold key last, so that no hot key takes its repeat hits in the window
                // (hits there do not promote).
                use_key(&c, 500 + round, 1);
            }
            // 10,000 keys seen once each, 100 times the capacity.
            for k in 1_000..11_000 {
                use_key(&c, k, 1);
            }
            let survivors = (0..50).filter(|k| segment_of(&c, *k) != "absent").count();
            (survivors, c.stats())
        };
        let (survivors, s) = run(Cache::new(100, usize::MAX, len));
        assert_eq!(survivors, 50, "the hot keys are in protected, out of the scan's reach");
        assert_eq!(s.entries, 100);
        assert!(s.rejected > 0);
        // Every stored entry that left was counted once, as an eviction or a rejection.
        assert_eq!(s.evictions + s.rejected, 50 + 3 + 10_000 - 100);
        let (survivors, _) = run(Cache::new(100, usize::MAX, len).without_admission());
        assert_eq!(survivors, 0, "plain LRU lets the scan flush them");
    }

    #[test]
    fn a_second_hit_promotes_from_probation_to_protected() {
        // 10 entries: a window of 1, protected 80% of the other 9 (7 entries).
        let c: Cache<u32, Vec<u8>, ()> = Cache::new(10, usize::MAX, len);
        c.insert(1, vec![1]);
        assert_eq!(segment_of(&c, 1), "window");
        c.insert(2, vec![2]); // the window's overflow goes to probation (there is room)
        assert_eq!((segment_of(&c, 1), segment_of(&c, 2)), ("probation", "window"));
        assert_eq!(c.get(&1), Some(vec![1]));
        assert_eq!(segment_of(&c, 1), "protected");
        assert_eq!(c.get(&2), Some(vec![2]));
        assert_eq!(segment_of(&c, 2), "window", "a hit in the window does not promote");

        // Protected's overflow is demoted to probation, least recently used first.
        for k in 3..=10 {
            c.insert(k, vec![0]);
        }
        for k in 3..=9 {
            assert_eq!(c.get(&k), Some(vec![0]));
        }
        let inner = c.lock();
        let s = inner.store.as_ref().unwrap();
        assert_eq!(s.protected.len(), 7);
        assert!(s.probation.contains(&1), "1 was promoted first, so it is demoted first");
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn both_bounds_hold_and_every_removal_is_counted() {
        let z = zipf::Zipf::new(1_000, 0.9);
        let wide_window = Tuning { window_percent: 10, ..Tuning::W_TINYLFU };
        let weight = |l: &LruCache<u32, Entry<Vec<u8>>>| l.iter().map(|(_, (_, w))| w).sum::<usize>();
        for tuning in [Tuning::W_TINYLFU, Tuning::LRU_TINYLFU, wide_window] {
            for plain in [false, true] {
                let mut c: Cache<u32, Vec<u8>, ()> = Cache::new(50, 400, len).with_tuning(tuning);
                if plain {
                    c = c.without_admission();
                }
                let mut rng = zipf::Rng::new(11);
                let mut stored = 0;
                let mut insert = |k: u32, weight: usize| {
                    stored += (segment_of(&c, k) == "absent") as u64;
                    c.insert(k, vec![0; weight]);
                };
                for i in 0..20_000 {
                    let k = z.sample(&mut rng) as u32;
                    if c.get(&k).is_none() {
                        // Mostly small values, now and then one a quarter of the budget.
                        insert(k, if k % 37 == 1 { 100 } else { 1 + k as usize % 15 });
                    }
                    if i % 7 == 3 {
                        insert(k, 1 + i % 20); // re-weighs the value if it is stored
                    }
                    let st = c.stats();
                    assert!(st.entries <= 50 && st.bytes <= 400, "{tuning:?} plain={plain}: {st:?}");
                    let inner = c.lock();
                    let s = inner.store.as_ref().unwrap();
                    assert_eq!(s.window_bytes, weight(&s.window));
                    assert!(s.window_bytes <= s.window_max_bytes && s.window.len() <= s.window_cap);
                    let main = weight(&s.probation) + weight(&s.protected);
                    assert_eq!(s.bytes, s.window_bytes + main);
                }
                let st = c.stats();
                let removed = stored - st.entries as u64;
                assert_eq!(st.evictions + st.rejected, removed, "{tuning:?} plain={plain}");
                assert_eq!(st.rejected > 0, !plain, "{tuning:?} plain={plain}");
                c.clear();
                let window_bytes = c.lock().store.as_ref().unwrap().window_bytes;
                assert_eq!((c.stats().entries, c.stats().bytes, window_bytes), (0, 0, 0));
            }
        }
    }

    #[test]
    fn a_heavy_one_off_entry_does_not_flush_popular_ones() {
        // 100 bytes: 50 popular 1-byte entries, then a 60-byte value asked for once.
        let popular_then_heavy = |c: &Cache<u32, Vec<u8>, ()>| {
            for _ in 0..3 {
                for k in 0..50 {
                    use_key(c, k, 1);
                }
            }
            use_key(c, 999, 60);
            (0..50).filter(|k| segment_of(c, *k) != "absent").count()
        };
        let c: Cache<u32, Vec<u8>, ()> = Cache::new(100, 100, len);
        assert_eq!(popular_then_heavy(&c), 50);
        // Too heavy for the window, and less popular than the victim.
        assert_eq!(segment_of(&c, 999), "absent");
        assert_eq!((c.stats().rejected, c.stats().evictions, c.stats().bytes), (1, 0, 50));

        // Once it is popular, it gets in and takes the room of the least recently used.
        for _ in 0..10 {
            c.get(&999);
        }
        c.insert(999, vec![0; 60]);
        assert_eq!(segment_of(&c, 999), "probation");
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.evictions), (41, 100, 10));

        let lru: Cache<u32, Vec<u8>, ()> = Cache::new(100, 100, len).without_admission();
        assert_eq!(popular_then_heavy(&lru), 40, "plain LRU drops 10 popular entries for it");
    }

    #[test]
    fn w_tinylfu_beats_lru_on_a_zipf_workload() {
        // The benchmark's shape, scaled down: Zipf(1.0) over 10k keys, 1k entries.
        let rate = |c: Cache<u32, Vec<u8>, ()>| {
            let z = zipf::Zipf::new(10_000, 1.0);
            let mut rng = zipf::Rng::new(3);
            let mut hits = 0;
            for i in 0..300_000 {
                let k = z.sample(&mut rng) as u32;
                match c.get(&k) {
                    Some(_) if i >= 100_000 => hits += 1,
                    Some(_) => {}
                    None => c.insert(k, vec![0]),
                }
            }
            hits as f64 / 200_000.0
        };
        let lru = rate(Cache::new(1_000, usize::MAX, len).without_admission());
        let lru_tinylfu = rate(Cache::new(1_000, usize::MAX, len).with_tuning(Tuning::LRU_TINYLFU));
        let w_tinylfu = rate(Cache::new(1_000, usize::MAX, len));
        eprintln!("LRU {lru:.4}, LRU+TinyLFU {lru_tinylfu:.4}, W-TinyLFU {w_tinylfu:.4}");
        // The top 1k of 10k keys carry H(1000)/H(10000) ≈ 76% of the requests.
        assert!(w_tinylfu > lru + 0.04, "W-TinyLFU {w_tinylfu:.4} vs LRU {lru:.4}");
        assert!(w_tinylfu > lru_tinylfu, "W-TinyLFU {w_tinylfu:.4} vs {lru_tinylfu:.4}");
    }

    #[tokio::test]
    async fn disabled_cache_always_computes() {
        let c: Cache<u32, Vec<u8>, String> = Cache::disabled(len);
        assert!(!c.is_enabled());
        for _ in 0..3 {
            let (_, s) = c.get_or_compute(1, || async { Ok(vec![1]) }).await.unwrap();
            assert_eq!(s, Source::Computed);
        }
        assert_eq!(c.stats().misses, 3);
        assert_eq!(c.stats().entries, 0);
    }
}
