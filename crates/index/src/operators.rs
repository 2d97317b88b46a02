//! Operator definitions, mirrored from the registry bucket: by id and by capability.
//!
//! The registry bucket is the truth; the indexer replays it into these two families at
//! start and follows its changes (see the indexer service). [`IndexStore::put_operator`]
//! and [`IndexStore::delete_operator`] apply one change each, atomically with the
//! capability entries it implies; [`IndexStore::retain_operators`] drops what the bucket no
//! longer holds after a resync.

use std::collections::HashSet;

use hsync_protocol::audit::MAX_PAGE;
use hsync_protocol::operator::OperatorDef;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use crate::{IndexError, IndexStore, CF_OPERATORS, CF_OPERATORS_BY_CAPABILITY};

/// `capability || 0x00`: every `operators_by_capability` key of the capability starts with it.
fn capability_prefix(capability: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(capability.len() + 1 + 32);
    k.extend_from_slice(capability.as_bytes());
    k.push(0);
    k
}

/// `operators_by_capability` key: `capability || 0x00 || operator id`.
fn capability_key(capability: &str, id: &str) -> Vec<u8> {
    let mut k = capability_prefix(capability);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The operator id of a key under `prefix`. Registry ids are KV keys and never hold 0x00,
/// so a remainder with one belongs to another capability that merely shares the prefix
/// (`"a\0b"` against `"a"`).
fn capability_key_id<'k>(prefix: &[u8], key: &'k [u8]) -> Option<&'k [u8]> {
    let id = key.strip_prefix(prefix)?;
    (!id.is_empty() && !id.contains(&0)).then_some(id)
}

fn encode_cursor(next_id: &[u8]) -> String {
    hex::encode(next_id)
}

fn decode_cursor(cursor: &str) -> Result<Vec<u8>, IndexError> {
    let invalid = || IndexError::InvalidCursor {
        cursor: cursor.chars().take(64).collect(),
    };
    match hex::decode(cursor) {
        Ok(id) if !id.is_empty() && id.len() <= 1024 && !id.contains(&0) => Ok(id),
        _ => Err(invalid()),
    }
}

fn decode_operator(id: &[u8], value: &[u8]) -> Result<OperatorDef, IndexError> {
    rmp_serde::from_slice(value).map_err(|e| IndexError::Corrupt {
        cf: CF_OPERATORS,
        reason: format!("operator {:?} does not decode: {e}", String::from_utf8_lossy(id)),
    })
}

impl IndexStore {
    /// Stores (or replaces) one definition under `id`, the registry key it came from, and
    /// moves its capability entries to the new set.
    pub fn put_operator(&self, id: &str, def: &OperatorDef) -> Result<(), IndexError> {
        let value = rmp_serde::to_vec_named(def).map_err(|source| IndexError::Encode {
            what: format!("operator {id}"),
            source,
        })?;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut wb = WriteBatch::default();
        if let Some(old) = self.operator(id)? {
            for c in &old.capabilities {
                wb.delete_cf(self.cf(CF_OPERATORS_BY_CAPABILITY), capability_key(c, id));
            }
        }
        for c in &def.capabilities {
            wb.put_cf(self.cf(CF_OPERATORS_BY_CAPABILITY), capability_key(c, id), b"");
        }
        wb.put_cf(self.cf(CF_OPERATORS), id.as_bytes(), value);
        self.db.write_opt(wb, &self.write_opts)?;
        Ok(())
    }

    /// Removes one definition and its capability entries; absent ids are a no-op.
    pub fn delete_operator(&self, id: &str) -> Result<(), IndexError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(old) = self.operator(id)? else {
            return Ok(());
        };
        let mut wb = WriteBatch::default();
        for c in &old.capabilities {
            wb.delete_cf(self.cf(CF_OPERATORS_BY_CAPABILITY), capability_key(c, id));
        }
        wb.delete_cf(self.cf(CF_OPERATORS), id.as_bytes());
        self.db.write_opt(wb, &self.write_opts)?;
        Ok(())
    }

    /// Deletes every stored operator whose id is not in `keep`, and returns how many.
    pub fn retain_operators(&self, keep: &HashSet<String>) -> Result<usize, IndexError> {
        let mut gone = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_OPERATORS), IteratorMode::Start) {
            let (key, _) = item?;
            let id = String::from_utf8_lossy(&key).into_owned();
            if !keep.contains(&id) {
                gone.push(id);
            }
        }
        for id in &gone {
            self.delete_operator(id)?;
        }
        Ok(gone.len())
    }

    /// One definition by its registry id.
    pub fn operator(&self, id: &str) -> Result<Option<OperatorDef>, IndexError> {
        self.db
            .get_pinned_cf(self.cf(CF_OPERATORS), id.as_bytes())?
            .map(|v| decode_operator(id.as_bytes(), &v))
            .transpose()
    }

    /// Number of operators stored.
    pub fn operator_count(&self) -> Result<u64, IndexError> {
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(CF_OPERATORS), IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// One page of the operators that declare `capability` (all operators when `None`),
    /// ordered by id, and the cursor of the next page (`None` on the last page).
    pub fn operators(
        &self,
        capability: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<OperatorDef>, Option<String>), IndexError> {
        let limit = limit.clamp(1, MAX_PAGE as usize);
        let start = cursor.map(decode_cursor).transpose()?.unwrap_or_default();
        // One more than the page: it tells whether there is a next page, and where it starts.
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(limit + 1);
        match capability {
            Some(capability) => {
                let prefix = capability_prefix(capability);
                let mut from = prefix.clone();
                from.extend_from_slice(&start);
                let mut upper = prefix.clone();
                *upper.last_mut().expect("the prefix ends with the separator") = 1;
                let mut ro = ReadOptions::default();
                ro.set_iterate_upper_bound(upper);
                let iter = self.db.iterator_cf_opt(
                    self.cf(CF_OPERATORS_BY_CAPABILITY),
                    ro,
                    IteratorMode::From(&from, Direction::Forward),
                );
                for item in iter {
                    let (key, _) = item?;
                    if let Some(id) = capability_key_id(&prefix, &key) {
                        ids.push(id.to_vec());
                        if ids.len() > limit {
                            break;
                        }
                    }
                }
            }
            None => {
                let iter = self.db.iterator_cf(
                    self.cf(CF_OPERATORS),
                    IteratorMode::From(&start, Direction::Forward),
                );
                for item in iter {
                    let (key, _) = item?;
                    ids.push(key.to_vec());
                    if ids.len() > limit {
                        break;
                    }
                }
            }
        }
        let next = if ids.len() > limit {
            ids.pop().map(|id| encode_cursor(&id))
        } else {
            None
        };
        let values = self
            .db
            .batched_multi_get_cf(self.cf(CF_OPERATORS), &ids, true);
        let mut defs = Vec::with_capacity(ids.len());
        for (id, value) in ids.iter().zip(values) {
            // Capability entries change in the same WriteBatch as their definition.
            let value = value?.ok_or_else(|| IndexError::Corrupt {
                cf: CF_OPERATORS_BY_CAPABILITY,
                reason: format!("lists operator {:?}, which is not stored", String::from_utf8_lossy(id)),
            })?;
            defs.push(decode_operator(id, &value)?);
        }
        Ok((defs, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_keys_stay_inside_their_capability() {
        let p = capability_prefix("geo");
        assert_eq!(capability_key_id(&p, &capability_key("geo", "geo.knn")), Some(&b"geo.knn"[..]));
        // A capability "geo\0x" shares the prefix; its keys are not "geo"'s.
        assert_eq!(capability_key_id(&p, &capability_key("geo\0x", "op")), None);
        assert_eq!(capability_key_id(&p, &capability_key("geography", "op")), None);
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(b"geo.knn")).unwrap(), b"geo.knn");
        for bad in ["", "zz", "0", "00", "6100"] {
            assert!(matches!(decode_cursor(bad), Err(IndexError::InvalidCursor { .. })), "{bad:?} accepted");
        }
    }
}
