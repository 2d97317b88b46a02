//! The result cache every HyperSync service puts in front of deterministic work.
//!
//! An LRU map (the `lru` crate) bounded both by entries and by bytes, because one large
//! matrix must not be able to hold the memory of ten thousand small vectors. Identical
//! computations that are in flight at the same time run once (single-flight): the first
//! caller computes, the others wait for its answer. Errors are shared with the callers
//! that waited for them but never stored.
//!
//! Admission is TinyLFU (Einziger, Friedman, Manes 2017): when the cache is full, a new
//! entry replaces the least recently used one only if a small frequency sketch says it has
//! been asked for more often. On skewed workloads this keeps the popular entries that plain
//! LRU lets one-off keys flush out (figures in docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
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
    pub evictions: u64,
    /// New entries the admission policy turned away (less popular than the LRU victim).
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

type Flight<V, E> = Arc<OnceCell<Result<V, E>>>;

struct Inner<K: Hash + Eq, V, E> {
    lru: Option<LruCache<K, (V, usize)>>,
    bytes: usize,
    in_flight: HashMap<K, Flight<V, E>>,
    sketch: Option<FrequencySketch>,
}

fn key_hash<K: Hash>(key: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Count-min sketch of recent access frequencies: 4 rows of small saturating counters,
/// halved every `sample` accesses so that old popularity fades. Width 4× and sample 30×
/// the capacity were chosen by `examples/zipf_hit_rate.rs` (2× / 10× gave 76.5%, 4× / 30×
/// 79.1% on the benchmark's workload; the ideal is 81.0%).
struct FrequencySketch {
    counters: Vec<u8>,
    width_mask: usize,
    additions: usize,
    sample: usize,
}

const SKETCH_ROWS: usize = 4;
const SKETCH_MAX: u8 = 15;

impl FrequencySketch {
    fn new(capacity: usize) -> Self {
        let width = (capacity.max(16) * 4).next_power_of_two();
        FrequencySketch {
            counters: vec![0; width * SKETCH_ROWS],
            width_mask: width - 1,
            additions: 0,
            sample: capacity.max(16) * 30,
        }
    }

    fn slots(&self, hash: u64) -> [usize; SKETCH_ROWS] {
        let (h1, h2) = (hash as usize, ((hash >> 32) as usize) | 1);
        let width = self.width_mask + 1;
        std::array::from_fn(|row| row * width + (h1.wrapping_add(row.wrapping_mul(h2)) & self.width_mask))
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
    max_bytes: usize,
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
        Cache {
            inner: Mutex::new(Inner {
                lru: NonZeroUsize::new(max_entries).map(LruCache::new),
                bytes: 0,
                in_flight: HashMap::new(),
                sketch: (max_entries > 0).then(|| FrequencySketch::new(max_entries)),
            }),
            max_bytes,
            weigh,
            counters: Counters::default(),
        }
    }

    /// Plain LRU: every new entry is admitted (for comparison; TinyLFU is the default).
    pub fn without_admission(self) -> Self {
        self.lock().sketch = None;
        self
    }

    /// A cache that stores nothing and coalesces nothing: every call computes.
    pub fn disabled(weigh: fn(&V) -> usize) -> Self {
        Self::new(0, 0, weigh)
    }

    pub fn is_enabled(&self) -> bool {
        self.lock().lru.is_some()
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
        let found = inner.lru.as_mut().and_then(|l| l.get(key)).map(|(v, _)| v.clone());
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `value`, evicting least recently used entries to stay within both bounds.
    /// A value larger than the byte bound is not stored.
    pub fn insert(&self, key: K, value: V) {
        let weight = (self.weigh)(&value);
        let mut inner = self.lock();
        self.insert_locked(&mut inner, key, value, weight);
    }

    fn insert_locked(&self, inner: &mut Inner<K, V, E>, key: K, value: V, weight: usize) {
        if weight > self.max_bytes {
            return;
        }
        let Some(lru) = inner.lru.as_mut() else { return };
        let full = lru.len() >= lru.cap().get() || inner.bytes + weight > self.max_bytes;
        if full && !lru.contains(&key) {
            if let (Some(sketch), Some((victim, _))) = (inner.sketch.as_ref(), lru.peek_lru()) {
                if sketch.estimate(key_hash(&key)) <= sketch.estimate(key_hash(victim)) {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let mut freed = 0;
        let mut evicted = 0;
        if let Some((old_key, (_, old_weight))) = lru.push(key.clone(), (value, weight)) {
            freed += old_weight;
            if old_key != key {
                evicted += 1;
            }
        }
        let mut bytes = inner.bytes + weight - freed;
        while bytes > self.max_bytes {
            match lru.pop_lru() {
                Some((_, (_, w))) => {
                    bytes -= w;
                    evicted += 1;
                }
                None => break,
            }
        }
        inner.bytes = bytes;
        self.counters.evictions.fetch_add(evicted, Ordering::Relaxed);
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
            match inner.lru.as_mut() {
                None => None,
                Some(lru) => {
                    if let Some((v, _)) = lru.get(&key) {
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
            entries: inner.lru.as_ref().map_or(0, |l| l.len()),
            bytes: inner.bytes,
        }
    }

    /// Drops every stored entry (counters are kept).
    pub fn clear(&self) {
        let mut inner = self.lock();
        if let Some(l) = inner.lru.as_mut() {
            l.clear();
        }
        inner.bytes = 0;
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

    #[test]
    fn admission_keeps_popular_entries_that_lru_would_flush() {
        let c: Cache<u32, Vec<u8>, ()> = Cache::new(2, usize::MAX, len);
        for _ in 0..5 {
            for k in [1, 2] {
                if c.get(&k).is_none() {
                    c.insert(k, vec![k as u8]);
                }
            }
        }
        // A scan of one-off keys: each is seen once, less than 1 and 2, so none gets in.
        for k in 100..120 {
            if c.get(&k).is_none() {
                c.insert(k, vec![0]);
            }
        }
        assert_eq!(c.get(&1), Some(vec![1]));
        assert_eq!(c.get(&2), Some(vec![2]));
        assert_eq!(c.stats().rejected, 20);
        // A key that becomes popular does get in.
        for _ in 0..20 {
            c.get(&300);
        }
        c.insert(300, vec![3]);
        assert_eq!(c.get(&300), Some(vec![3]));
    }

    #[test]
    fn tinylfu_beats_lru_on_a_zipf_workload() {
        // The benchmark's shape, scaled down: Zipf(1.0) over 10k keys, 1k entries.
        let rate = |c: Cache<usize, Vec<u8>, ()>| {
            let z = zipf::Zipf::new(10_000, 1.0);
            let mut rng = zipf::Rng::new(3);
            let mut hits = 0;
            for i in 0..200_000 {
                let k = z.sample(&mut rng);
                match c.get(&k) {
                    Some(_) if i >= 100_000 => hits += 1,
                    Some(_) => {}
                    None => c.insert(k, vec![0]),
                }
            }
            hits as f64 / 100_000.0
        };
        let lru = rate(Cache::new(1_000, usize::MAX, len).without_admission());
        let tinylfu = rate(Cache::new(1_000, usize::MAX, len));
        // The top 1k of 10k keys carry H(1000)/H(10000) ≈ 76% of the requests.
        assert!(tinylfu > lru + 0.03, "TinyLFU {tinylfu:.3} vs LRU {lru:.3}");
        assert!(tinylfu > 0.70, "TinyLFU {tinylfu:.3}");
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
