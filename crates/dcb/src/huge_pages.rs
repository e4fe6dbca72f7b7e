//! Huge pages for the large in-memory structures of a store: a building block for stores.
//!
//! At a million events an index spans tens of megabytes or more, and each lookup lands on a
//! different 4 KiB page: a TLB miss, and a page walk, on top of the cache miss. Backed by 2 MiB
//! pages the whole index needs few TLB entries. Linux grants transparent huge pages to memory that
//! asks for them (`madvise(MADV_HUGEPAGE)`) even where they are not on for everything, which is the
//! usual setting; elsewhere nothing here changes anything.
//!
//! The in-memory store allocates its large structures with an allocator that aligns them to huge
//! pages and asks for them; the file store asks for them on the index checkpoint it maps.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// The size of a huge page, and the threshold above which allocations ask for them.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the huge-page-aligned part of `buf` with huge pages. Called before
/// `buf` is first touched (a fresh zeroed allocation, or a file mapping, is not yet backed by
/// anything), its pages are then faulted in as huge ones: for a file mapping, where the file
/// system caches the file in pages that large. A hint: where the kernel declines, nothing
/// changes.
///
/// ```
/// let mut index = vec![0u64; 1 << 20];
/// dcb::huge_pages::advise_huge_pages(&index);
/// index[12_345] = 7;
/// ```
pub fn advise_huge_pages<T>(buf: &[T]) {
    advise_range(buf.as_ptr().cast(), size_of_val(buf));
}

/// The global allocator, with allocations of at least [`HUGE_PAGE`] bytes aligned to huge pages
/// and advised to use them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HugePages;

impl HugePages {
    /// The layout actually requested from the global allocator for `layout`: huge-page aligned
    /// when large, so that the whole allocation can be backed by huge pages. Deterministic, so
    /// that deallocation passes the global allocator the layout it allocated with.
    fn actual(layout: Layout) -> Layout {
        if layout.size() < HUGE_PAGE {
            return layout;
        }
        layout.align_to(HUGE_PAGE).unwrap_or(layout)
    }
}

// SAFETY: every call is forwarded to `Global` with a layout derived deterministically from the
// caller's (`HugePages::actual`), so memory is freed with the layout it was allocated with, and the
// returned blocks are at least as large and as aligned as requested. `madvise` only changes how the
// kernel backs the pages; it never moves or changes their contents.
#[allow(unsafe_code)]
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let actual = Self::actual(layout);
        let block = Global.allocate(actual)?;
        if actual.size() >= HUGE_PAGE {
            advise_range(block.as_ptr().cast(), block.len());
        }
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned for `layout`, which `Global`
        // allocated for `Self::actual(layout)`.
        unsafe { Global.deallocate(ptr, Self::actual(layout)) }
    }
}

/// `madvise(MADV_HUGEPAGE)` on the whole huge pages within `len` bytes from `start`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_range(start: *const u8, len: usize) {
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: the range lies inside memory the caller owns; `MADV_HUGEPAGE` is a hint about its
        // backing that never moves or changes its contents. Failure (kernels without transparent
        // huge pages) changes nothing.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_aligned_to_huge_pages_and_small_ones_are_left_alone() {
        let large = Layout::from_size_align(3 * HUGE_PAGE, 8).unwrap();
        let small = Layout::from_size_align(4096, 8).unwrap();
        assert_eq!(HugePages::actual(large).align(), HUGE_PAGE);
        assert_eq!(HugePages::actual(small), small);
        let mut vector = allocator_api2::vec::Vec::<u64, _>::with_capacity_in(HUGE_PAGE, HugePages);
        assert_eq!(vector.as_ptr() as usize % HUGE_PAGE, 0, "a large vector starts on a huge page");
        vector.extend((0..HUGE_PAGE as u64).map(|i| i * 3));
        assert!(vector.iter().enumerate().all(|(i, &v)| v == i as u64 * 3));
    }
}
