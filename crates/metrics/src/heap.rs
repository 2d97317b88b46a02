//! A global allocator that counts: the system allocator plus relaxed counters, so every
//! service can report its heap (allocations, bytes allocated, bytes live) in `$SRV.STATS`,
//! on `/metrics` and on `/debug/heap`; `hsync bench pooling` measures allocations per job
//! with it. The cost is a few uncontended atomic adds per allocation.
//!
//! A binary opts in with
//! `#[global_allocator] static ALLOCATOR: hsync_metrics::heap::CountingAllocator = hsync_metrics::heap::CountingAllocator;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed; its high-water mark since start.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static PEAK_LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator; the counters do not
// touch the memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    // A growing Vec reallocates: that is an allocation as far as pooling is concerned.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        allocated(new_size);
        freed(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn allocated(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    let live = LIVE_BYTES.fetch_add(bytes as i64, Ordering::Relaxed) + bytes as i64;
    PEAK_LIVE_BYTES.fetch_max(live, Ordering::Relaxed);
}

fn freed(bytes: usize) {
    FREED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    LIVE_BYTES.fetch_sub(bytes as i64, Ordering::Relaxed);
}

/// (allocations, bytes allocated) since start; zero when another allocator is installed.
pub fn snapshot() -> (u64, u64) {
    (ALLOCATIONS.load(Ordering::Relaxed), ALLOCATED_BYTES.load(Ordering::Relaxed))
}

/// The heap as the counting allocator sees it (all zero without it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct HeapStats {
    /// Allocation calls (reallocations included) since start.
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    /// Requested bytes not yet freed (the allocator's own overhead is not counted).
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    /// Whether this process counts at all.
    pub counting: bool,
}

pub fn stats() -> HeapStats {
    let (allocations, allocated_bytes) = snapshot();
    HeapStats {
        allocations,
        allocated_bytes,
        freed_bytes: FREED_BYTES.load(Ordering::Relaxed),
        live_bytes: LIVE_BYTES.load(Ordering::Relaxed).max(0) as u64,
        peak_live_bytes: PEAK_LIVE_BYTES.load(Ordering::Relaxed).max(0) as u64,
        counting: allocations > 0,
    }
}
