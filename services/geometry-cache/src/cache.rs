//! Per-operator result caches: LRU, bounded by entries and by bytes, with counters.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hsync_operators::{canonical_hash, Args};
use hsync_protocol::{ErrorReply, Value};
use lru::LruCache;

use crate::ops::OPS;

/// Sizes of the operator caches: defaults for all, and overrides per operator.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Entries per operator cache; 0 turns caching off.
    pub entries: usize,
    /// Bytes per operator cache (approximate size of the cached values); 0 turns it off.
    pub bytes: usize,
    /// Operator id → (entries, bytes), replacing the defaults for that operator.
    pub per_operator: BTreeMap<String, (usize, usize)>,
}

impl CacheConfig {
    /// The same bounds for every operator, except where an operator has its own default
    /// entry count (embeddings are large: `geo.embed` keeps 64).
    pub fn new(entries: usize, bytes: usize) -> Self {
        CacheConfig { entries, bytes, per_operator: BTreeMap::new() }
    }

    /// Parses `op=ENTRIES` or `op=ENTRIES:BYTES` and records it; the operator must exist.
    pub fn set_override(&mut self, spec: &str) -> Result<(), String> {
        let (op, sizes) = spec
            .split_once('=')
            .ok_or_else(|| format!("cache override `{spec}`: expected OPERATOR=ENTRIES[:BYTES]"))?;
        let Some(found) = OPS.iter().find(|o| o.id == op) else {
            let known: Vec<&str> = OPS.iter().map(|o| o.id).collect();
            return Err(format!("cache override `{spec}`: no operator `{op}` (this service has {})", known.join(", ")));
        };
        if !found.deterministic() {
            return Err(format!("cache override `{spec}`: `{op}` is never cached (it reads tables that can change)"));
        }
        let parse = |s: &str| s.trim().parse::<usize>().map_err(|e| format!("cache override `{spec}`: `{s}` is not a size: {e}"));
        let (entries, bytes) = match sizes.split_once(':') {
            Some((e, b)) => (parse(e)?, parse(b)?),
            None => (parse(sizes)?, self.bytes),
        };
        self.per_operator.insert(op.to_string(), (entries, bytes));
        Ok(())
    }

    /// (entries, bytes) for an operator; none for one that is not deterministic.
    pub fn for_operator(&self, id: &str) -> (usize, usize) {
        let op = OPS.iter().find(|o| o.id == id);
        if op.is_some_and(|o| !o.deterministic()) {
            return (0, 0);
        }
        if let Some(&sizes) = self.per_operator.get(id) {
            return sizes;
        }
        let default = op.and_then(|o| o.default_entries);
        (default.map_or(self.entries, |d| d.min(self.entries)), self.bytes)
    }
}

/// One LRU cache per operator, bounded by entries and by bytes, with counters.
///
/// The byte bound matters: one geodesic may be 10,000 points of dimension 65,536, so an
/// entry count alone would let a handful of hostile requests hold gigabytes.
pub struct GeoCache {
    cache: Option<Mutex<Bounded>>,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Results larger than the whole byte budget, served but not kept.
    too_large: AtomicU64,
}

struct Bounded {
    lru: LruCache<[u8; 32], Value>,
    bytes: usize,
}

impl GeoCache {
    /// `capacity` entries and `max_bytes` (by `Value::approx_size`); either 0 turns the
    /// cache off.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        GeoCache {
            cache: NonZeroUsize::new(capacity)
                .filter(|_| max_bytes > 0)
                .map(|n| Mutex::new(Bounded { lru: LruCache::new(n), bytes: 0 })),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
        }
    }

    /// Serves from the cache, or computes and remembers. Errors are not cached.
    pub fn get_or_compute(&self, args: &Args, f: impl FnOnce(&Args) -> Result<Value, ErrorReply>) -> Result<(Value, bool), ErrorReply> {
        let Some(cache) = &self.cache else {
            return f(args).map(|v| (v, false));
        };
        let key = canonical_hash(args);
        if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).lru.get(&key).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((v, true));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let v = f(args)?;
        let size = v.approx_size();
        if size > self.max_bytes {
            self.too_large.fetch_add(1, Ordering::Relaxed);
            return Ok((v, false));
        }
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old_key, old)) = c.lru.push(key, v.clone()) {
            c.bytes -= old.approx_size();
            if old_key != key {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.bytes += size;
        while c.bytes > self.max_bytes {
            let Some((_, old)) = c.lru.pop_lru() else { break };
            c.bytes -= old.approx_size();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok((v, false))
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        serde_json::json!({
            "cache_hits": hits,
            "cache_misses": misses,
            "cache_hit_rate": if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 },
            "cache_entries": self.cache.as_ref().map(|c| c.lock().map(|c| c.lru.len()).unwrap_or(0)).unwrap_or(0),
            "cache_bytes": self.cache.as_ref().map(|c| c.lock().map(|c| c.bytes).unwrap_or(0)).unwrap_or(0),
            "cache_evictions": self.evictions.load(Ordering::Relaxed),
            "cache_too_large": self.too_large.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{geodesic, poincare_distance};
    use hsync_protocol::Tensor;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn cache_serves_repeats_and_counts() {
        let cache = GeoCache::new(10, 1 << 20);
        let a = args(&[("x", Value::Tensor(Tensor::vector(vec![0.1]))), ("y", Value::Tensor(Tensor::vector(vec![0.2])))]);
        let (v1, hit1) = cache.get_or_compute(&a, poincare_distance).unwrap();
        let (v2, hit2) = cache.get_or_compute(&a, poincare_distance).unwrap();
        assert_eq!(v1, v2);
        assert!(!hit1 && hit2);
        assert_eq!(cache.stats_json()["cache_hits"], 1);
    }

    #[test]
    fn the_byte_bound_evicts_and_refuses_what_cannot_fit() {
        // Geodesics of 100 points in 8 dimensions are ~6.4 kB each; allow ~3 of them.
        let cache = GeoCache::new(1000, 20_000);
        for i in 0..10 {
            let a = args(&[
                ("x", Value::Tensor(Tensor::vector(vec![0.01 * i as f64; 8]))),
                ("y", Value::Tensor(Tensor::vector(vec![-0.05; 8]))),
                ("n", Value::Int(100)),
            ]);
            cache.get_or_compute(&a, geodesic).unwrap();
            let st = cache.stats_json();
            assert!(st["cache_bytes"].as_u64().unwrap() <= 20_000, "{st}");
        }
        let st = cache.stats_json();
        assert!(st["cache_evictions"].as_u64().unwrap() >= 6, "{st}");
        assert!(st["cache_entries"].as_u64().unwrap() >= 2, "{st}");
        // One result bigger than the whole budget is served, not kept.
        let huge = args(&[
            ("x", Value::Tensor(Tensor::vector(vec![0.0; 64]))),
            ("y", Value::Tensor(Tensor::vector(vec![0.01; 64]))),
            ("n", Value::Int(1000)),
        ]);
        let (_, hit) = cache.get_or_compute(&huge, geodesic).unwrap();
        assert!(!hit);
        assert_eq!(cache.stats_json()["cache_too_large"], 1);
        assert!(!cache.get_or_compute(&huge, geodesic).unwrap().1, "not kept, so not a hit");
    }

    #[test]
    fn per_operator_sizes_override_the_defaults() {
        let mut config = CacheConfig::new(1000, 1 << 20);
        assert_eq!(config.for_operator("geo.geodesic"), (1000, 1 << 20));
        // Embeddings keep few entries unless told otherwise.
        assert_eq!(config.for_operator("geo.embed"), (64, 1 << 20));
        config.set_override("geo.embed=5:4096").unwrap();
        config.set_override("geo.knn=7").unwrap();
        assert_eq!(config.for_operator("geo.embed"), (5, 4096));
        assert_eq!(config.for_operator("geo.knn"), (7, 1 << 20));
        let err = config.set_override("geo.nope=1").unwrap_err();
        assert!(err.contains("no operator `geo.nope`"), "{err}");
        assert!(config.set_override("geo.knn").unwrap_err().contains("OPERATOR=ENTRIES"));
        assert!(config.set_override("geo.knn=lots").unwrap_err().contains("not a size"));
        // Table lookups are never cached: the tables can change under the same arguments.
        assert_eq!(config.for_operator("geo.table.knn"), (0, 0));
        assert!(config.set_override("geo.table.knn=10").unwrap_err().contains("never cached"));
    }
}
