//! An allocator that asks the kernel to back large allocations with huge pages.
//!
//! At a million events the store's name table spans tens of megabytes, and each lookup of a tag
//! lands on a different 4 KiB page: a TLB miss, and a page walk, on top of the cache miss. Backed
//! by 2 MiB pages the whole table needs a few dozen TLB entries. Linux grants transparent huge
//! pages to memory that asks for them (`madvise(MADV_HUGEPAGE)`) even where they are not on for
//! everything, which is the usual setting; elsewhere this is the global allocator unchanged.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// The size of a huge page, and the threshold above which allocations ask for them.
pub(super) const HUGE_PAGE: usize = 2 << 20;

/// The global allocator, with allocations of at least [`HUGE_PAGE`] bytes aligned to huge pages
/// and advised to use them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HugePages;

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
            advise_huge_pages(block);
        }
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned for `layout`, which `Global`
        // allocated for `Self::actual(layout)`.
        unsafe { Global.deallocate(ptr, Self::actual(layout)) }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_huge_pages(block: NonNull<[u8]>) {
    // SAFETY: the range is a block just allocated and owned by the caller; `MADV_HUGEPAGE` is a
    // hint about its backing. Failure (kernels without transparent huge pages) changes nothing.
    unsafe {
        libc::madvise(block.as_ptr().cast(), block.len(), libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_block: NonNull<[u8]>) {}

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
