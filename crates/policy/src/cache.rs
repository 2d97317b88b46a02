//! The decision cache: what one policy decided for one step state.
//!
//! The key is `(policy key, state hash)`. The policy key hashes the policy's id, its text
//! and the schema it was validated against, so an entry can never answer for another
//! version of the policy: a change makes the old entries unreachable at once, on every
//! replica, as soon as that replica has installed the new policy. Removing them
//! ([`DecisionCache::invalidate_policy`]) only frees their room.
//!
//! The state hash covers what the policy can read: the principal, the stage, the
//! operator and its capabilities, and only the context attributes the policy mentions
//! (a policy that reads `context.curvature` is not re-evaluated because `job_id`
//! changed).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

/// Identifies one version of one policy: SHA-256 of (schema, id, text), first 16 bytes.
pub type PolicyKey = [u8; 16];
/// SHA-256 of the part of a step's state a policy reads, first 16 bytes.
pub type StateHash = [u8; 16];

/// What evaluating one policy on one step state gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A `permit` whose scope and conditions matched.
    Permit,
    /// A `forbid` whose scope and conditions matched.
    Forbid,
    /// The policy does not apply.
    NoMatch,
    /// Evaluation raised an error (fail closed: the step is denied).
    Error(Arc<str>),
}

struct Entry {
    outcome: Outcome,
    stored: Instant,
}

/// Shards keep the lock short and uncontended when the evaluation pool runs many
/// policies at once.
const SHARDS: usize = 16;

/// A bounded, TTL-limited LRU of per-policy outcomes. `capacity == 0` turns it off.
pub struct DecisionCache {
    shards: Vec<Mutex<LruCache<(PolicyKey, StateHash), Entry>>>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    invalidated: AtomicU64,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expired: u64,
    pub invalidated: u64,
}

impl DecisionCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = match NonZeroUsize::new(per_shard) {
            Some(n) => (0..SHARDS).map(|_| Mutex::new(LruCache::new(n))).collect(),
            None => Vec::new(),
        };
        DecisionCache {
            shards,
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            invalidated: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, state: &StateHash) -> &Mutex<LruCache<(PolicyKey, StateHash), Entry>> {
        // The state hash is uniform; any byte picks a shard evenly.
        &self.shards[state[0] as usize % self.shards.len()]
    }

    pub fn get(&self, policy: &PolicyKey, state: &StateHash) -> Option<Outcome> {
        if !self.enabled() {
            return None;
        }
        let mut shard = self.shard(state).lock().unwrap_or_else(|p| p.into_inner());
        let key = (*policy, *state);
        let found = match shard.get(&key) {
            Some(e) if e.stored.elapsed() < self.ttl => Some(e.outcome.clone()),
            Some(_) => {
                shard.pop(&key);
                self.expired.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        };
        drop(shard);
        match &found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    pub fn put(&self, policy: &PolicyKey, state: &StateHash, outcome: Outcome) {
        if !self.enabled() {
            return;
        }
        let entry = Entry {
            outcome,
            stored: Instant::now(),
        };
        let mut shard = self.shard(state).lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old, _)) = shard.push((*policy, *state), entry) {
            if old != (*policy, *state) {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops every entry of one policy version; returns how many.
    pub fn invalidate_policy(&self, policy: &PolicyKey) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<_> = shard.iter().filter(|(k, _)| &k.0 == policy).map(|(k, _)| *k).collect();
            for k in keys {
                shard.pop(&k);
                removed += 1;
            }
        }
        self.invalidated.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Drops everything (a schema change touches every policy's key).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            self.invalidated.fetch_add(shard.len() as u64, Ordering::Relaxed);
            shard.clear();
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self
                .shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
                .sum(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            invalidated: self.invalidated.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_ttl_and_invalidation() {
        let c = DecisionCache::new(64, Duration::from_millis(50));
        let (p1, p2, s) = ([1; 16], [2; 16], [3; 16]);
        assert_eq!(c.get(&p1, &s), None);
        c.put(&p1, &s, Outcome::Permit);
        c.put(&p2, &s, Outcome::Forbid);
        assert_eq!(c.get(&p1, &s), Some(Outcome::Permit));
        assert_eq!(c.invalidate_policy(&p1), 1);
        assert_eq!(c.get(&p1, &s), None, "invalidated");
        assert_eq!(c.get(&p2, &s), Some(Outcome::Forbid), "another policy's entry stays");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&p2, &s), None, "expired after the TTL");
        let st = c.stats();
        assert_eq!((st.hits, st.misses, st.expired, st.invalidated), (2, 3, 1, 1));
    }

    #[test]
    fn bounded_and_off() {
        let c = DecisionCache::new(32, Duration::from_secs(60));
        for i in 0..1000u32 {
            let mut s = [0; 16];
            s[..4].copy_from_slice(&i.to_le_bytes());
            c.put(&[0; 16], &s, Outcome::NoMatch);
        }
        let st = c.stats();
        assert!(st.entries <= 32, "{st:?}");
        assert_eq!(st.evictions as usize, 1000 - st.entries);
        let off = DecisionCache::new(0, Duration::from_secs(60));
        off.put(&[0; 16], &[0; 16], Outcome::Permit);
        assert_eq!(off.get(&[0; 16], &[0; 16]), None);
        assert!(!off.enabled());
    }
}
