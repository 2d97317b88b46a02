//! Per-thread reusable encode/decode state for the codec: a serialization buffer, a zstd
//! compression context and a decompression context with its output buffer.
//!
//! Without them every message grows a fresh `Vec` by doubling (several allocations for a
//! few kilobytes) and every compressed message builds and frees a zstd context (the
//! largest allocations on the hot path). With them a message costs one exact-size
//! allocation for the bytes handed to NATS. Pooling can be switched off (`HSYNC_POOLING=0`)
//! to measure what it buys.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

static POOLING: AtomicBool = AtomicBool::new(true);

/// A buffer that grew past this is dropped after use rather than kept, so that one huge
/// message does not pin its memory in every thread for good.
pub const MAX_KEPT_BUFFER: usize = 1 << 20;

/// Turns the pools on or off for the whole process.
pub fn set_pooling(on: bool) {
    POOLING.store(on, Ordering::Relaxed);
}

pub fn pooling() -> bool {
    POOLING.load(Ordering::Relaxed)
}

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DECODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's cleared encode buffer.
pub(crate) fn with_encode_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    with_buf(&ENCODE_BUF, f)
}

/// Runs `f` with this thread's cleared decode buffer.
pub(crate) fn with_decode_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    with_buf(&DECODE_BUF, f)
}

fn with_buf<R>(key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > MAX_KEPT_BUFFER {
                *buf = Vec::new();
            }
            r
        }
        // Re-entered (a serializer that encodes inside encoding): a buffer of its own.
        Err(_) => f(&mut Vec::new()),
    })
}

/// Compresses with this thread's zstd context (made again only when the level changes).
pub(crate) fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::compress(data, level);
        };
        if !matches!(&*slot, Some((l, _)) if *l == level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, c) = slot.as_mut().expect("set above");
        c.compress(data)
    })
}

/// Decompresses a frame whose header states its content size (`size`, already checked
/// against the limit) into this thread's decode buffer and runs `f` on the result.
pub(crate) fn decompress_with<R>(data: &[u8], size: usize, f: impl FnOnce(std::io::Result<&[u8]>) -> R) -> R {
    DECOMPRESSOR.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return f(zstd::bulk::decompress(data, size).as_deref().map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
        };
        if slot.is_none() {
            match zstd::bulk::Decompressor::new() {
                Ok(d) => *slot = Some(d),
                Err(e) => return f(Err(e)),
            }
        }
        let d = slot.as_mut().expect("set above");
        with_decode_buf(|buf| {
            // Exactly `size` bytes of room (not the buffer's whole capacity): a frame that
            // expands further fails instead of going past the checked limit.
            buf.resize(size, 0);
            match d.decompress_to_buffer(data, buf.as_mut_slice()) {
                Ok(n) => f(Ok(&buf[..n])),
                Err(e) => f(Err(e)),
            }
        })
    })
}
