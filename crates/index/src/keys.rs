//! Key encodings for every column family, and the opaque page cursor.
//!
//! Integers are big-endian everywhere so that RocksDB's bytewise comparator orders them
//! numerically; string components are followed by a 0x00 separator so that one id is never
//! a byte prefix of another id's keys (see [`job_upper_bound`] for ids that contain 0x00).

use crate::IndexError;

/// Size of every big-endian integer component.
pub(crate) const U64_LEN: usize = 8;

/// `receipts` and `checkpoints` key: a leaf index or tree size, big-endian.
pub(crate) fn u64_key(n: u64) -> [u8; U64_LEN] {
    n.to_be_bytes()
}

/// Reads a big-endian u64 that must be exactly eight bytes.
pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; U64_LEN]>::try_from(bytes)
        .ok()
        .map(u64::from_be_bytes)
}

/// `job_id || 0x00`: every `by_job` key of the job starts with it.
pub(crate) fn job_prefix(job_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(job_id.len() + 1 + U64_LEN);
    k.extend_from_slice(job_id.as_bytes());
    k.push(0);
    k
}

/// `by_job` key: `job_id || 0x00 || leaf_index BE`.
pub(crate) fn job_key(job_id: &str, leaf_index: u64) -> Vec<u8> {
    let mut k = job_prefix(job_id);
    k.extend_from_slice(&leaf_index.to_be_bytes());
    k
}

/// `job_id || 0x01`: sorts after every `job_id || 0x00 || ..` key, so it bounds a scan.
///
/// A job id that itself contains 0x00 (say `"a\0b"`) has keys that also start with
/// `"a\0"` and fall inside job `"a"`'s range; readers therefore accept only keys of the
/// exact length `prefix + 8`, which no other job id can produce (same length and same
/// leading bytes would make it the same id).
pub(crate) fn job_upper_bound(job_id: &str) -> Vec<u8> {
    let mut k = job_prefix(job_id);
    *k.last_mut().expect("the prefix ends with the separator") = 1;
    k
}

/// Leaf index of a `by_job` key of the job whose prefix is `prefix`, or `None` for a key
/// of another job that merely shares the prefix (see [`job_upper_bound`]).
pub(crate) fn job_key_leaf(prefix: &[u8], key: &[u8]) -> Option<u64> {
    if key.len() != prefix.len() + U64_LEN || !key.starts_with(prefix) {
        return None;
    }
    read_u64(&key[prefix.len()..])
}

/// `by_operator_time` key: `operator || 0x00 || started_at_us BE || leaf_index BE`; the
/// leaf index keeps two steps that started in the same microsecond apart.
pub(crate) fn operator_time_key(operator: &str, started_at_us: u64, leaf_index: u64) -> Vec<u8> {
    let mut k = operator_prefix(operator);
    k.extend_from_slice(&time_key(started_at_us, leaf_index));
    k
}

/// `operator || 0x00`: every `by_operator_time` key of the operator starts with it.
pub(crate) fn operator_prefix(operator: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(operator.len() + 1 + 2 * U64_LEN);
    k.extend_from_slice(operator.as_bytes());
    k.push(0);
    k
}

/// `by_time` key (and the tail of a `by_operator_time` key): `started_at_us BE || leaf BE`.
pub(crate) fn time_key(started_at_us: u64, leaf_index: u64) -> [u8; 2 * U64_LEN] {
    let mut k = [0u8; 2 * U64_LEN];
    k[..U64_LEN].copy_from_slice(&started_at_us.to_be_bytes());
    k[U64_LEN..].copy_from_slice(&leaf_index.to_be_bytes());
    k
}

/// (time, leaf) of a key that is exactly `prefix || time || leaf`.
pub(crate) fn time_key_parts(prefix: &[u8], key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != prefix.len() + 2 * U64_LEN || !key.starts_with(prefix) {
        return None;
    }
    let rest = &key[prefix.len()..];
    Some((read_u64(&rest[..U64_LEN])?, read_u64(&rest[U64_LEN..])?))
}

/// A time-ordered page starts at a (start time, leaf index) pair; hex, opaque to clients.
pub(crate) fn encode_time_cursor(time: u64, leaf: u64) -> String {
    hex::encode(time_key(time, leaf))
}

pub(crate) fn decode_time_cursor(cursor: &str) -> Result<(u64, u64), IndexError> {
    let invalid = || IndexError::InvalidCursor {
        cursor: cursor.chars().take(64).collect(),
    };
    if cursor.len() != 4 * U64_LEN {
        return Err(invalid());
    }
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    time_key_parts(&[], &bytes).ok_or_else(invalid)
}

/// The cursor names the leaf index the next page starts at. It is hex so that it travels
/// as a plain string in JSON and MessagePack; clients must treat it as opaque.
pub(crate) fn encode_cursor(next_leaf: u64) -> String {
    hex::encode(next_leaf.to_be_bytes())
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<u64, IndexError> {
    let invalid = || IndexError::InvalidCursor {
        cursor: cursor.chars().take(64).collect(),
    };
    if cursor.len() != 2 * U64_LEN {
        return Err(invalid());
    }
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    read_u64(&bytes).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_keys_sort_numerically() {
        assert!(u64_key(255) < u64_key(256));
        assert!(job_key("j", 9) < job_key("j", 10));
        assert!(operator_time_key("op@1", 5, 99) < operator_time_key("op@1", 6, 0));
    }

    #[test]
    fn job_range_holds_only_that_job() {
        let prefix = job_prefix("a");
        let upper = job_upper_bound("a");
        for leaf in [0, 1, u64::MAX] {
            let k = job_key("a", leaf);
            assert!(k >= prefix && k < upper);
            assert_eq!(job_key_leaf(&prefix, &k), Some(leaf));
        }
        // "ab" sorts after "a\x01", outside the range.
        assert!(job_key("ab", 0) > upper);
        // "a\0b" sorts inside the range, but the exact-length check rejects it.
        let inside = job_key("a\0b", 3);
        assert!(inside > prefix && inside < upper);
        assert_eq!(job_key_leaf(&prefix, &inside), None);
    }

    #[test]
    fn time_cursor_round_trips_and_rejects_garbage() {
        for (t, l) in [(0, 0), (1_764_093_600_001_120, 42), (u64::MAX, u64::MAX)] {
            assert_eq!(decode_time_cursor(&encode_time_cursor(t, l)).unwrap(), (t, l));
        }
        for bad in ["", "00", &"0".repeat(16), &"g".repeat(32)] {
            assert!(matches!(decode_time_cursor(bad), Err(IndexError::InvalidCursor { .. })), "{bad:?} accepted");
        }
        // An operator whose id contains 0x00 does not read as another operator's keys.
        let a = operator_prefix("a");
        assert_eq!(time_key_parts(&a, &operator_time_key("a", 5, 6)), Some((5, 6)));
        assert_eq!(time_key_parts(&a, &operator_time_key("a\0b", 5, 6)), None);
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        for n in [0, 1, 42, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(n)).unwrap(), n);
        }
        for bad in ["", "zz", "0123", "000000000000000g", "00000000000000000"] {
            assert!(
                matches!(decode_cursor(bad), Err(IndexError::InvalidCursor { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
