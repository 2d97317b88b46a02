//! Encoding and decoding of every message.
//!
//! * MessagePack with named fields by default; JSON when the message carries
//!   `Content-Type: application/json` (and replies answer in the request's format).
//! * Payloads above [`Codec::compress_threshold`] are zstd-compressed and marked with
//!   `Content-Encoding: zstd`; readers accept both forms.
//! * Decoding is bounded: a compressed payload may not expand beyond
//!   [`Codec::max_decoded_size`], so a small hostile message cannot exhaust memory.

use std::io::Read;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ErrorCode, ErrorReply};
use crate::pool;

pub mod headers {
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const CONTENT_ENCODING: &str = "Content-Encoding";
    pub const JSON: &str = "application/json";
    pub const MSGPACK: &str = "application/msgpack";
    pub const ZSTD: &str = "zstd";
    /// NATS micro error headers: a human message and a numeric status.
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
    /// The stable string error code.
    pub const HSYNC_ERROR_CODE: &str = "Hsync-Error-Code";
    /// JetStream de-duplication id.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
}

/// Default threshold above which payloads are compressed.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 1024;
/// Payloads from this size are probed with a sample before being compressed whole.
const PROBE_FROM: usize = 4 * 1024;
/// Largest sample (a quarter of the payload up to this).
const PROBE: usize = 4 * 1024;

/// Compression must save at least a tenth of the bytes to be kept.
fn worth_it(compressed: usize, raw: usize) -> bool {
    compressed * 10 <= raw * 9
}

/// Default bound on a decoded (decompressed) payload.
pub const DEFAULT_MAX_DECODED_SIZE: usize = 64 * 1024 * 1024;

/// Longest message of a decode error. serde quotes the offending input (a string of any
/// length) in its errors, and the message travels back in the error reply, which NATS
/// would refuse if it grew past max_payload.
pub const MAX_ERROR_MESSAGE: usize = crate::error::MAX_MESSAGE;

fn bounded(message: String) -> String {
    crate::error::shorten(message, MAX_ERROR_MESSAGE)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    MsgPack,
    Json,
}

impl Format {
    /// The format a message is written in, from its headers (MessagePack by default).
    pub fn of(headers: Option<&HeaderMap>) -> Format {
        match headers.and_then(|h| h.get(headers::CONTENT_TYPE)) {
            Some(v) if v.as_str().trim().starts_with(headers::JSON) => Format::Json,
            _ => Format::MsgPack,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("payload too large: {0}")]
    TooLarge(String),
    #[error("cannot encode {what}: {message}")]
    Encode { what: &'static str, message: String },
}

impl CodecError {
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            CodecError::Malformed { .. } => ErrorCode::Malformed,
            CodecError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            CodecError::Encode { .. } => ErrorCode::Internal,
        };
        ErrorReply::new(code, self.to_string())
    }
}

/// Short type name (`Job` rather than `hsync_protocol::job::Job`) for error messages.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[derive(Clone, Debug)]
pub struct Codec {
    pub compress_threshold: usize,
    pub max_decoded_size: usize,
    pub zstd_level: i32,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_decoded_size: DEFAULT_MAX_DECODED_SIZE,
            zstd_level: 3,
        }
    }
}

impl Codec {
    /// A codec that never compresses (threshold `usize::MAX`).
    pub fn uncompressed() -> Self {
        Codec {
            compress_threshold: usize::MAX,
            ..Codec::default()
        }
    }

    /// Encodes `value` and returns the headers that describe the payload.
    pub fn encode<T: Serialize>(&self, value: &T, format: Format) -> Result<(HeaderMap, Bytes), CodecError> {
        let mut h = HeaderMap::new();
        let body = self.encode_into(value, format, &mut h)?;
        Ok((h, body))
    }

    /// Encodes `value`, adding Content-Type/Content-Encoding to `h`.
    pub fn encode_into<T: Serialize>(
        &self,
        value: &T,
        format: Format,
        h: &mut HeaderMap,
    ) -> Result<Bytes, CodecError> {
        h.insert(
            headers::CONTENT_TYPE,
            match format {
                Format::MsgPack => headers::MSGPACK,
                Format::Json => headers::JSON,
            },
        );
        if pool::pooling() {
            // The pooled buffer stays ours; NATS gets an exact-size copy.
            pool::with_encode_buf(|buf| self.encode_with(value, format, h, buf, |raw| Bytes::copy_from_slice(raw)))
        } else {
            let mut raw = Vec::new();
            self.encode_with(value, format, h, &mut raw, |raw| Bytes::from(std::mem::take(raw)))
        }
    }

    fn encode_with<T: Serialize>(
        &self,
        value: &T,
        format: Format,
        h: &mut HeaderMap,
        raw: &mut Vec<u8>,
        into_bytes: impl FnOnce(&mut Vec<u8>) -> Bytes,
    ) -> Result<Bytes, CodecError> {
        let what = short_type_name::<T>();
        match format {
            Format::MsgPack => rmp_serde::encode::write_named(raw, value).map_err(|e| e.to_string()),
            Format::Json => serde_json::to_writer(&mut *raw, value).map_err(|e| e.to_string()),
        }
        .map_err(|message| CodecError::Encode { what, message })?;
        if raw.len() > self.compress_threshold && self.probably_compressible(raw, what)? {
            let compressed = self.compress(raw, what)?;
            // Keep the compressed form only when it saves enough to pay for the reader's
            // decompression.
            if worth_it(compressed.len(), raw.len()) {
                h.insert(headers::CONTENT_ENCODING, headers::ZSTD);
                return Ok(Bytes::from(compressed));
            }
        }
        Ok(into_bytes(raw))
    }

    fn compress(&self, data: &[u8], what: &'static str) -> Result<Vec<u8>, CodecError> {
        if pool::pooling() { pool::compress(data, self.zstd_level) } else { zstd::bulk::compress(data, self.zstd_level) }
            .map_err(|e| CodecError::Encode { what, message: format!("zstd: {e}") })
    }

    /// For a large payload, compresses a sample from its middle first: raw f64 tensors
    /// (geodesics, embeddings) barely compress, and zstd on them cost 3.5x the geodesic
    /// itself on both ends (docs/PERFORMANCE.md).
    fn probably_compressible(&self, raw: &[u8], what: &'static str) -> Result<bool, CodecError> {
        if raw.len() < PROBE_FROM {
            return Ok(true);
        }
        let size = (raw.len() / 4).min(PROBE);
        let start = raw.len() / 2 - size / 2;
        let sample = &raw[start..start + size];
        Ok(worth_it(self.compress(sample, what)?.len(), size))
    }

    /// Decodes a payload in whatever format and encoding its headers say.
    pub fn decode<T: DeserializeOwned>(&self, headers: Option<&HeaderMap>, payload: &[u8]) -> Result<T, CodecError> {
        let what = short_type_name::<T>();
        let compressed = headers
            .and_then(|h| h.get(headers::CONTENT_ENCODING))
            .map(|v| v.as_str().trim().eq_ignore_ascii_case(headers::ZSTD))
            .unwrap_or(false);
        if !compressed {
            if payload.len() > self.max_decoded_size {
                return Err(CodecError::TooLarge(format!(
                    "{what} payload is {} bytes, the limit is {}",
                    payload.len(),
                    self.max_decoded_size
                )));
            }
            return Self::deserialize(headers, payload);
        }
        // A frame that states its size (ours always do) decompresses in one step into
        // the thread's pooled buffer; any other goes through the bounded stream decoder.
        if pool::pooling() {
            if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(payload) {
                if size > self.max_decoded_size as u64 {
                    return Err(CodecError::TooLarge(format!(
                        "{what} payload expands to {size} bytes, beyond the limit of {} bytes",
                        self.max_decoded_size
                    )));
                }
                return pool::decompress_with(payload, size as usize, |inflated| match inflated {
                    Ok(bytes) => Self::deserialize(headers, bytes),
                    Err(e) => Err(CodecError::Malformed {
                        what,
                        message: format!("zstd: {e}"),
                    }),
                });
            }
        }
        let inflated = self.decompress(payload, what)?;
        Self::deserialize(headers, &inflated)
    }

    fn deserialize<T: DeserializeOwned>(headers: Option<&HeaderMap>, bytes: &[u8]) -> Result<T, CodecError> {
        let what = short_type_name::<T>();
        if bytes.is_empty() {
            return Err(CodecError::Malformed {
                what,
                message: "empty payload".to_string(),
            });
        }
        match Format::of(headers) {
            Format::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed {
                what,
                message: bounded(format!("MessagePack: {e}")),
            }),
            Format::Json => serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed {
                what,
                message: bounded(format!("JSON: {e}")),
            }),
        }
    }

    fn decompress(&self, payload: &[u8], what: &'static str) -> Result<Vec<u8>, CodecError> {
        let decoder = zstd::stream::read::Decoder::new(payload).map_err(|e| CodecError::Malformed {
            what,
            message: format!("zstd: {e}"),
        })?;
        let mut out = Vec::with_capacity(payload.len().saturating_mul(4).min(self.max_decoded_size));
        // Read one byte past the limit to tell "exactly at the limit" from "over it".
        decoder
            .take(self.max_decoded_size as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| CodecError::Malformed {
                what,
                message: format!("zstd: {e}"),
            })?;
        if out.len() > self.max_decoded_size {
            return Err(CodecError::TooLarge(format!(
                "{what} payload expands beyond the limit of {} bytes",
                self.max_decoded_size
            )));
        }
        Ok(out)
    }
}

/// Headers of an error reply: NATS micro error headers plus the stable code.
pub fn error_headers(err: &ErrorReply, format: Format) -> HeaderMap {
    let mut h = HeaderMap::new();
    // Header values cannot hold newlines; keep the first line and bound the length.
    let msg: String = err.message.lines().next().unwrap_or("").chars().take(512).collect();
    h.insert(headers::SERVICE_ERROR, msg.as_str());
    h.insert(headers::SERVICE_ERROR_CODE, err.code.status().to_string().as_str());
    h.insert(headers::HSYNC_ERROR_CODE, err.code.as_str());
    h.insert(
        headers::CONTENT_TYPE,
        match format {
            Format::MsgPack => headers::MSGPACK,
            Format::Json => headers::JSON,
        },
    );
    h
}

/// An error reply's body and headers.
pub fn encode_error(err: &ErrorReply, format: Format) -> (HeaderMap, Bytes) {
    let h = error_headers(err, format);
    let body = match format {
        Format::MsgPack => rmp_serde::to_vec_named(err).unwrap_or_default(),
        Format::Json => serde_json::to_vec(err).unwrap_or_default(),
    };
    (h, Bytes::from(body))
}

/// If the message is an error reply, decodes it (falling back to the headers alone).
pub fn decode_error(headers: Option<&HeaderMap>, payload: &[u8]) -> Option<ErrorReply> {
    let h = headers?;
    let status = h.get(headers::SERVICE_ERROR_CODE)?;
    let codec = Codec::default();
    if let Ok(reply) = codec.decode::<ErrorReply>(Some(h), payload) {
        return Some(reply);
    }
    let code = h
        .get(headers::HSYNC_ERROR_CODE)
        .and_then(|c| ErrorCode::parse(c.as_str()))
        .unwrap_or(match status.as_str() {
            "404" => ErrorCode::NotFound,
            "503" => ErrorCode::Unavailable,
            "504" | "408" => ErrorCode::Timeout,
            s if s.starts_with('4') => ErrorCode::Malformed,
            _ => ErrorCode::Internal,
        });
    let message = h
        .get(headers::SERVICE_ERROR)
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| format!("error status {}", status.as_str()));
    Some(ErrorReply::new(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, Node};
    use crate::value::{Arg, Tensor, Value};
    use std::collections::BTreeMap;

    /// The only test that touches the process-wide pooling switch: both settings must give
    /// the same bytes and decode the same, small (plain) and large (zstd) alike.
    #[test]
    fn pooled_and_unpooled_codecs_agree() {
        let codec = Codec::default();
        for (n, format) in [(1, Format::MsgPack), (200, Format::MsgPack), (200, Format::Json)] {
            let msg = job(n);
            crate::pool::set_pooling(false);
            let (h_off, off) = codec.encode(&msg, format).unwrap();
            crate::pool::set_pooling(true);
            let (h_on, on) = codec.encode(&msg, format).unwrap();
            assert_eq!(on, off, "{n} nodes, {format:?}");
            assert_eq!(h_on.get(headers::CONTENT_ENCODING), h_off.get(headers::CONTENT_ENCODING));
            assert_eq!(n > 1, h_on.get(headers::CONTENT_ENCODING).is_some(), "large messages are compressed");
            // Decoded with the pooled decompressor (and again, reusing it) and without.
            let a: Job = codec.decode(Some(&h_on), &on).unwrap();
            let b: Job = codec.decode(Some(&h_on), &on).unwrap();
            crate::pool::set_pooling(false);
            let c: Job = codec.decode(Some(&h_off), &off).unwrap();
            crate::pool::set_pooling(true);
            assert!(a == c && b == c, "{n} nodes, {format:?}: pooled and unpooled decodes differ");
            // (JSON carries tensors as plain lists by design, so only MessagePack is exact.)
            assert!(format == Format::Json || c == msg);
        }
    }

    /// A frame whose header states a size over the limit is refused before any work, and
    /// one that lies about its size (says small, is larger) fails instead of overflowing.
    #[test]
    fn stated_sizes_are_checked() {
        let codec = Codec {
            max_decoded_size: 1000,
            ..Codec::default()
        };
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_ENCODING, headers::ZSTD);
        let big = zstd::bulk::compress(&[0u8; 5000], 3).unwrap();
        let err = codec.decode::<Job>(Some(&h), &big).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");
        // Same frame with its content-size field rewritten to claim 10 bytes.
        let raw = rmp_serde::to_vec_named(&job(3)).unwrap();
        let mut lying = zstd::bulk::compress(&raw, 3).unwrap();
        let honest: Job = Codec::default().decode(Some(&h), &lying).unwrap();
        assert_eq!(honest, job(3));
        // Frame header: magic (4), descriptor (1), [window (1)], content size (1, 2, 4 or 8 bytes).
        let descriptor = lying[4];
        let single_segment = descriptor & 0x20 != 0;
        let fcs_at = 5 + usize::from(!single_segment);
        if descriptor >> 6 == 1 {
            // 2-byte field, stored as size - 256.
            lying[fcs_at] = 0;
            lying[fcs_at + 1] = 0;
            let err = Codec::default().decode::<Job>(Some(&h), &lying).unwrap_err();
            assert!(matches!(err, CodecError::Malformed { .. }), "{err}");
        } else {
            panic!("unexpected frame header layout {descriptor:#x} for {} bytes", raw.len());
        }
    }

    fn job(n: usize) -> Job {
        Job {
            job_id: "j1".into(),
            submitter: "alice".into(),
            nodes: (0..n)
                .map(|i| Node {
                    id: format!("n{i}"),
                    op: "vec.add".into(),
                    args: BTreeMap::from([
                        ("a".to_string(), Arg::Lit(Value::Tensor(Tensor::vector(vec![1.0; 16])))),
                        ("b".to_string(), Arg::reference("n0")),
                    ]),
                })
                .collect(),
            outputs: vec![],
            wait_receipts: false,
            timeout_ms: None,
            keep_session: false,
        }
    }

    #[test]
    fn small_payloads_are_not_compressed_large_ones_are() {
        let c = Codec::default();
        let (h, b) = c.encode(&job(1), Format::MsgPack).unwrap();
        assert!(h.get(headers::CONTENT_ENCODING).is_none());
        assert!(b.len() < 1024);
        let (h, b) = c.encode(&job(200), Format::MsgPack).unwrap();
        assert_eq!(h.get(headers::CONTENT_ENCODING).unwrap().as_str(), "zstd");
        let back: Job = c.decode(Some(&h), &b).unwrap();
        assert_eq!(back, job(200));
    }

    #[test]
    fn incompressible_payloads_are_sent_raw() {
        // Pseudo-random f64s, like a geodesic's or an embedding's coordinates: zstd saves
        // a few percent at best, so both the small (compressed whole, then dropped) and the
        // large (probed with a sample) payload go out raw, and decode as they are.
        let c = Codec::default();
        let mut s = 1u64;
        let mut noise = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 11) as f64 / (1u64 << 53) as f64
                })
                .collect()
        };
        for n in [500, 50_000] {
            let v = Value::Tensor(crate::Tensor::vector(noise(n)));
            let (h, b) = c.encode(&v, Format::MsgPack).unwrap();
            assert!(h.get(headers::CONTENT_ENCODING).is_none(), "{n} floats were compressed");
            assert!(b.len() > n * 8);
            assert_eq!(c.decode::<Value>(Some(&h), &b).unwrap(), v);
        }
        // A large payload that compresses is still compressed.
        let v = Value::Tensor(crate::Tensor::vector(vec![0.25; 50_000]));
        let (h, b) = c.encode(&v, Format::MsgPack).unwrap();
        assert_eq!(h.get(headers::CONTENT_ENCODING).unwrap().as_str(), "zstd");
        assert!(b.len() < 50_000);
    }

    #[test]
    fn json_is_used_when_the_headers_say_so() {
        let c = Codec::default();
        let (h, b) = c.encode(&job(2), Format::Json).unwrap();
        assert_eq!(Format::of(Some(&h)), Format::Json);
        assert!(std::str::from_utf8(&b).unwrap().contains("\"submitter\":\"alice\""));
        let back: Job = c.decode(Some(&h), &b).unwrap();
        // JSON has no typed arrays: a tensor comes back as plain numbers, equal in value.
        assert_eq!(back.submitter, "alice");
        assert_eq!(back.nodes.len(), 2);
        match &back.nodes[1].args["a"] {
            Arg::Lit(v) => assert_eq!(v.as_vector(), Some(vec![1.0; 16])),
            other => panic!("expected a literal, got {other:?}"),
        }
    }

    #[test]
    fn missing_field_is_named() {
        let c = Codec::default();
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        let err = c.decode::<Job>(Some(&h), br#"{"job_id":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
        assert!(err.to_string().contains("Job"), "{err}");
        let err = c.decode::<Job>(None, b"\xc1garbage").unwrap_err();
        assert!(matches!(err, CodecError::Malformed { .. }));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let c = Codec::default();
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        let j: Job = c
            .decode(Some(&h), br#"{"nodes":[],"future_field":{"x":1}}"#)
            .unwrap();
        assert_eq!(j.submitter, "anonymous");
    }

    #[test]
    fn decompression_bomb_is_refused() {
        let c = Codec {
            max_decoded_size: 1 << 20,
            ..Codec::default()
        };
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap();
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_ENCODING, headers::ZSTD);
        let err = c.decode::<Value>(Some(&h), &bomb).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");
    }

    /// A frame that does not state its size (a streaming encoder's) goes through the
    /// bounded stream decoder: refused as too large once it passes the limit, accepted at
    /// exactly the limit.
    #[test]
    fn frame_without_stated_size_is_bounded_too() {
        use std::io::Write;
        let frame = |raw: &[u8]| {
            let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
            enc.include_contentsize(false).unwrap();
            enc.write_all(raw).unwrap();
            let f = enc.finish().unwrap();
            assert_eq!(zstd::zstd_safe::get_frame_content_size(&f).unwrap(), None);
            f
        };
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_ENCODING, headers::ZSTD);
        let raw = rmp_serde::to_vec_named(&job(20)).unwrap();
        let exact = Codec {
            max_decoded_size: raw.len(),
            ..Codec::default()
        };
        assert_eq!(exact.decode::<Job>(Some(&h), &frame(&raw)).unwrap(), job(20));
        let small = Codec {
            max_decoded_size: raw.len() - 1,
            ..Codec::default()
        };
        let err = small.decode::<Job>(Some(&h), &frame(&raw)).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("payload too large: Job payload expands beyond the limit of {} bytes", raw.len() - 1)
        );
        assert_eq!(err.to_reply().code, ErrorCode::PayloadTooLarge);
        let bomb = frame(&vec![0u8; 8 << 20]);
        let err = small.decode::<Value>(Some(&h), &bomb).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");
    }

    /// An uncompressed payload over the limit is refused on its length, before parsing,
    /// as PAYLOAD_TOO_LARGE (413) naming the type, the size and the limit; one of exactly
    /// the limit is decoded.
    #[test]
    fn oversized_plain_payload_is_refused() {
        let raw = rmp_serde::to_vec_named(&job(3)).unwrap();
        let exact = Codec {
            max_decoded_size: raw.len(),
            ..Codec::default()
        };
        assert_eq!(exact.decode::<Job>(None, &raw).unwrap(), job(3));
        let small = Codec {
            max_decoded_size: raw.len() - 1,
            ..Codec::default()
        };
        for h in [None, Some(HeaderMap::new())] {
            let err = small.decode::<Job>(h.as_ref(), &raw).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("payload too large: Job payload is {} bytes, the limit is {}", raw.len(), raw.len() - 1)
            );
            let reply = err.to_reply();
            assert_eq!((reply.code, reply.code.status()), (ErrorCode::PayloadTooLarge, 413));
        }
        // JSON is held to the same limit.
        let (h, json) = Codec::uncompressed().encode(&job(3), Format::Json).unwrap();
        let small = Codec {
            max_decoded_size: json.len() - 1,
            ..Codec::default()
        };
        assert!(matches!(small.decode::<Job>(Some(&h), &json), Err(CodecError::TooLarge(_))));
    }

    /// serde quotes the offending string in its errors; a long one is cut out of the
    /// message, keeping what was wrong and what was expected.
    #[test]
    fn long_quoted_input_gives_a_short_error() {
        let code = "X".repeat(1 << 20);
        let bytes = rmp_serde::to_vec_named(&BTreeMap::from([("code", code.as_str()), ("message", "m")])).unwrap();
        let err = Codec::default().decode::<ErrorReply>(None, &bytes).unwrap_err();
        let CodecError::Malformed { message, .. } = &err else { panic!("{err}") };
        assert!(message.len() <= MAX_ERROR_MESSAGE + 64, "{} bytes", message.len());
        assert!(message.starts_with("MessagePack: unknown variant `XXX"), "{message}");
        assert!(message.contains("bytes left out)"), "{message}");
        assert!(message.ends_with("`UNAVAILABLE`, `INTERNAL`"), "{message}");
        // Multi-byte characters are cut at character boundaries.
        let s = format!("{}{}", "é".repeat(2000), "ü".repeat(2000));
        let b = bounded(s);
        assert!(b.starts_with('é') && b.ends_with('ü') && b.len() <= MAX_ERROR_MESSAGE + 64, "{b}");
        assert_eq!(bounded("short".into()), "short");
    }

    #[test]
    fn error_replies_roundtrip_through_headers() {
        let e = ErrorReply::new(ErrorCode::Cycle, "cycle: a -> b -> a").at_node("a");
        let (h, b) = encode_error(&e, Format::MsgPack);
        assert_eq!(h.get(headers::SERVICE_ERROR_CODE).unwrap().as_str(), "400");
        assert_eq!(decode_error(Some(&h), &b), Some(e));
        assert_eq!(decode_error(None, &b), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let c = Codec::default();
            let _ = c.decode::<Job>(None, &bytes);
            let _ = c.decode::<Value>(None, &bytes);
            let mut h = HeaderMap::new();
            h.insert(headers::CONTENT_ENCODING, headers::ZSTD);
            let _ = c.decode::<Job>(Some(&h), &bytes);
        }
    }
}
