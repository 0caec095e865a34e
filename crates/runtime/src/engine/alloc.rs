//! A QuickJS allocator with a hard limit that records when the limit was hit.
//!
//! QuickJS reports an exhausted heap inconsistently (an `out of memory` error,
//! or a bare `null` for small allocations), so the executor decides "OOM" from
//! this flag, set at the moment an allocation is refused, not from messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rquickjs::allocator::{Allocator, RustAllocator};

/// Shared view of the allocator's accounting.
#[derive(Clone, Debug, Default)]
pub struct MemoryGauge {
    limit: Arc<AtomicUsize>,
    used: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    exhausted: Arc<AtomicBool>,
    cut_off: Arc<AtomicBool>,
}

impl MemoryGauge {
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    /// True once an allocation was refused for exceeding the limit.
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }
    /// Refuse every allocation from now on (not counted as exhaustion).
    /// Used past the run's deadline: code that never returns to the event
    /// loop (an endless chain of microtasks) cannot go on without memory,
    /// while the interrupt handler alone only fires every so many calls.
    pub fn cut_off(&self) {
        self.cut_off.store(true, Ordering::Relaxed);
    }
    /// Sets the heap limit. An engine built before its run is known (the
    /// worker's forked run processes) gets the run's limit this way.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }
}

pub struct LimitedAllocator {
    inner: RustAllocator,
    gauge: MemoryGauge,
}

impl LimitedAllocator {
    pub fn new(limit: usize) -> (Self, MemoryGauge) {
        let gauge = MemoryGauge::default();
        gauge.set_limit(limit);
        (
            LimitedAllocator {
                inner: RustAllocator,
                gauge: gauge.clone(),
            },
            gauge,
        )
    }

    fn admit(&self, extra: usize) -> bool {
        if self.gauge.cut_off.load(Ordering::Relaxed) {
            return false;
        }
        let used = self.gauge.used.load(Ordering::Relaxed);
        if used.saturating_add(extra) > self.gauge.limit.load(Ordering::Relaxed) {
            self.gauge.exhausted.store(true, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    fn add(&self, n: usize) {
        let now = self.gauge.used.fetch_add(n, Ordering::Relaxed) + n;
        self.gauge.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.gauge.used.fetch_sub(n, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `RustAllocator`, which upholds the
// trait's contract; this wrapper only refuses (returns null) before calling
// it, and keeps counters.
unsafe impl Allocator for LimitedAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.admit(size) {
            return std::ptr::null_mut();
        }
        let p = self.inner.alloc(size);
        if !p.is_null() {
            self.add(unsafe { RustAllocator::usable_size(p) });
        }
        p
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        if !self.admit(count.saturating_mul(size)) {
            return std::ptr::null_mut();
        }
        let p = self.inner.calloc(count, size);
        if !p.is_null() {
            self.add(unsafe { RustAllocator::usable_size(p) });
        }
        p
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        if !ptr.is_null() {
            self.sub(unsafe { RustAllocator::usable_size(ptr) });
            unsafe { self.inner.dealloc(ptr) }
        }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        let old = unsafe { RustAllocator::usable_size(ptr) };
        if new_size > old && !self.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { self.inner.realloc(ptr, new_size) };
        if !p.is_null() {
            self.sub(old);
            self.add(unsafe { RustAllocator::usable_size(p) });
        }
        p
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        unsafe { RustAllocator::usable_size(ptr) }
    }
}
