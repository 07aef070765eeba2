//! The global allocator of the fuzz targets: the system allocator, counting the bytes in use,
//! that aborts the process when one allocation asks for more than [`MAX_FRAME`] bytes (the most
//! a peer may make a decoder allocate) or when the bytes in use pass [`LIVE_LIMIT`]. libFuzzer
//! records an abort as a crash, with the input that caused it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use peer_node::core::wire::codec::MAX_FRAME;

/// Most bytes in use at once: one frame buffer and what its contents decode to.
pub const LIVE_LIMIT: usize = 2 * MAX_FRAME;

/// The system allocator with the limits above.
pub struct CappedAlloc {
    live: AtomicUsize,
    peak: AtomicUsize,
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc::new();

/// Set while a limit violation is being reported, so that the report's own allocations pass.
static REPORTING: AtomicBool = AtomicBool::new(false);

impl CappedAlloc {
    const fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Counts `size` more bytes in use; `false` if that breaks a limit.
    fn take(&self, size: usize) -> bool {
        let live = self.live.fetch_add(size, Ordering::Relaxed) + size;
        self.peak.fetch_max(live, Ordering::Relaxed);
        size <= MAX_FRAME && live <= LIVE_LIMIT
    }

    fn give(&self, size: usize) {
        self.live.fetch_sub(size, Ordering::Relaxed);
    }

    fn check(&self, size: usize) {
        if !self.take(size) && !REPORTING.swap(true, Ordering::Relaxed) {
            over_limit(size, self.live.load(Ordering::Relaxed));
        }
    }
}

/// Bytes allocated through the global allocator and not yet freed.
pub fn live_bytes() -> usize {
    GLOBAL.live.load(Ordering::Relaxed)
}

/// The most bytes in use at once since the process started.
pub fn peak_bytes() -> usize {
    GLOBAL.peak.load(Ordering::Relaxed)
}

/// Says which limit broke and where, then aborts.
#[cold]
fn over_limit(size: usize, live: usize) -> ! {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "==peer-fuzz: allocation of {size} bytes ({live} in use) breaks the limits: \
         {MAX_FRAME} bytes at once, {LIVE_LIMIT} in use\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    std::process::abort()
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counting
// and the checks never touch the memory.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        // SAFETY: forwarded from our caller, who upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.give(layout.size());
        // SAFETY: `ptr` came from `System` with this layout (every allocation here does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.give(layout.size());
        self.check(new_size);
        // SAFETY: as for `dealloc`, and `new_size` is our caller's, valid for `layout.align()`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_in_use_and_the_peak() {
        let before = live_bytes();
        let v = vec![1u8; 1 << 20];
        assert!(live_bytes() >= before + (1 << 20));
        assert!(peak_bytes() >= before + (1 << 20));
        drop(v);
        assert!(live_bytes() < before + (1 << 20));
    }

    #[test]
    fn limits() {
        let a = CappedAlloc::new();
        assert!(a.take(MAX_FRAME), "one frame at once");
        assert!(a.take(MAX_FRAME), "up to the limit in use");
        assert!(!a.take(1), "over the limit in use");
        a.give(2 * MAX_FRAME + 1);
        assert!(!a.take(MAX_FRAME + 1), "over the frame limit at once");
        a.give(MAX_FRAME + 1);
        assert_eq!(a.live.load(Ordering::Relaxed), 0);
        assert_eq!(a.peak.load(Ordering::Relaxed), 2 * MAX_FRAME + 1);
    }
}
