//! Shared by the fuzz targets: an allocator that refuses any single allocation above
//! `ALLOC_LIMIT_BYTES`, so that a length read from the input which makes a decoder reserve a
//! huge buffer is a crash (Rust aborts on a failed allocation; libFuzzer saves the input)
//! whichever sanitizer is in use, and even when the memory would never be touched (which
//! libFuzzer's `-rss_limit_mb` cannot see). ASan builds also have `-malloc_limit_mb`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Largest single allocation a decoder may ask for (the broker's largest frame is 100 MiB).
pub const ALLOC_LIMIT_BYTES: usize = 512 << 20;

/// The system allocator, refusing allocations above `ALLOC_LIMIT_BYTES`.
pub struct CappedAlloc;

// SAFETY: every call is passed on unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the only other outcome is a null pointer, which the contract allows for any
// allocation that cannot be satisfied.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT_BYTES {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout as given to us, under the same contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT_BYTES {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT_BYTES {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` and `layout` come from a previous allocation by `System` (through us).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
