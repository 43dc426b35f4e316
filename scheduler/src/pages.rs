//! Read-write anonymous mappings: address space whose pages read as zeros and are resident
//! only once written, and a way to give written pages back. Used by the block store
//! (`frames.rs`: its chunks and its give-back bitmap) and by the VM's process table (its
//! segments), so that the `mmap`, `munmap` and `madvise` calls and their invariants are written
//! once.

use std::alloc::Layout;
use std::ptr::NonNull;

/// Bytes of a page as far as mappings and discards go (Linux's on x86-64, and the smallest on
/// aarch64). The slot pool refuses to start on a system whose page size differs (`slot.rs`).
pub const PAGE: usize = 4096;

/// Maps `size` bytes (a multiple of [`PAGE`]) of fresh, uncommitted, read-write address space
/// and returns its address; the mapping lasts as long as the OS process. Aborts like the global
/// allocator does when the OS refuses.
pub(crate) fn map(size: usize) -> usize {
    debug_assert!(size > 0 && size.is_multiple_of(PAGE));
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::alloc::handle_alloc_error(Layout::from_size_align(size, PAGE).expect("valid layout"));
    }
    address as usize
}

/// Gives the pages `[start, end)` (page-aligned) back to the OS: they read as zeros afterwards
/// and are resident again only once written. Returns whether the OS did so.
///
/// # Safety
///
/// The range lies in a mapping of the caller's, and its contents are dead: no thread reads or
/// writes it meanwhile except as the caller's own invariants allow for memory that may turn to
/// zeros under them.
pub(crate) unsafe fn discard(start: usize, end: usize) -> bool {
    debug_assert!(start.is_multiple_of(PAGE) && end.is_multiple_of(PAGE) && start <= end);
    // SAFETY: per the caller, the range is ours and dead.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) == 0 }
}

/// Commits the pages `[start, start + len)` in one system call instead of a page fault per
/// page as each is first written (~10 µs a fault on this host against ~0.5 ns a byte
/// populated; see `handle.rs`). Best effort: on a kernel without `MADV_POPULATE_WRITE` (before
/// 5.14) the pages fault in as they are first written, which is correct, only slower.
///
/// # Safety
///
/// The range lies in read-write memory of the caller's. It may hold live data, and other
/// threads may write to it meanwhile: populating never changes what a page holds
/// (`MADV_POPULATE_WRITE` only faults in the pages that are missing, as the zeros they would
/// read as anyway, and leaves present pages alone; the kernel serializes it with a concurrent
/// writer's own fault on the same page).
pub(crate) unsafe fn populate(start: usize, len: usize) {
    // SAFETY: per the caller, the range is ours and read-write, and populating preserves its
    // contents.
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
    }
}

/// Commits the whole pages inside `spare` (a vector's unused capacity, say) in one system call,
/// so that filling it does not take a page fault per page: the partial pages at either end are
/// left alone. Worth it only for memory that will be written soon and is large (a fault costs
/// ~10 µs here, so a few pages are not worth a system call); memory the heap had committed
/// already is left as it is.
///
/// The VM grows large message queues this way: their pages used to fault in one by one while
/// the senders' lock was held, and a sender on another worker that found the lock taken for
/// that long slept in the kernel (W2: ~36,000 futex calls a run, ~21,000 with up to 4 MiB of
/// each growth committed at once; the VM's `grow.rs` has the figures).
pub fn commit_spare<T>(spare: &mut [std::mem::MaybeUninit<T>]) {
    let range = spare.as_mut_ptr_range();
    let start = (range.start as usize).next_multiple_of(PAGE);
    let end = range.end as usize / PAGE * PAGE;
    if end > start {
        // SAFETY: the whole pages lie inside `spare`, which we borrow exclusively; its bytes
        // are uninitialized as far as anyone is concerned, and populating preserves them
        // anyway.
        unsafe { populate(start, end - start) };
    }
}

/// An owned mapping of zero pages, resident only once written; unmapped when dropped.
#[derive(Debug)]
pub struct ZeroPages {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; what lives in it is the owner's to
// synchronize (the accessors hand out raw pointers only).
unsafe impl Send for ZeroPages {}
// SAFETY: as above.
unsafe impl Sync for ZeroPages {}

impl ZeroPages {
    /// A mapping of at least `bytes` bytes (rounded up to whole pages), all zeros. Aborts like
    /// the global allocator does when the OS refuses.
    pub fn new(bytes: usize) -> ZeroPages {
        let len = bytes.max(1).next_multiple_of(PAGE);
        ZeroPages {
            start: NonNull::new(map(len) as *mut u8).expect("a mapping is never at address 0"),
            len,
        }
    }

    /// The first byte (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.start.as_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: a mapping holds at least a page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Commits the pages that bytes `[from, to)` of the mapping touch, in one system call
    /// (`MADV_POPULATE_WRITE`) instead of a page fault per page as each is first written. What
    /// they hold is unchanged, so this is safe whoever reads or writes them meanwhile.
    pub fn commit(&self, from: usize, to: usize) {
        let first = from / PAGE * PAGE;
        let end = to.min(self.len).next_multiple_of(PAGE);
        if end > first {
            // SAFETY: whole pages of our own read-write mapping; populating preserves what they
            // hold, under any concurrent reader or writer.
            unsafe { populate(self.start.as_ptr() as usize + first, end - first) };
        }
    }

    /// Gives back the whole pages inside bytes `[from, to)` of the mapping (the partial pages
    /// at either end are kept): they read as zeros afterwards. Returns the byte range given
    /// back, or `None` if it was empty or the OS refused.
    ///
    /// # Safety
    ///
    /// The bytes of those pages are dead: nobody reads or writes them meanwhile except as the
    /// caller's own invariants allow for memory that may turn to zeros under them.
    pub unsafe fn discard(&self, from: usize, to: usize) -> Option<std::ops::Range<usize>> {
        let first = from.next_multiple_of(PAGE);
        let end = to.min(self.len) / PAGE * PAGE;
        if end <= first {
            return None;
        }
        let base = self.start.as_ptr() as usize;
        // SAFETY: whole pages of our own mapping, dead per the caller.
        unsafe { discard(base + first, base + end) }.then_some(first..end)
    }
}

impl Drop for ZeroPages {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, of this length; `&mut self`: nothing borrows it.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mapping reads as zeros, and a discard keeps the partial pages at its ends and zeroes
    /// the whole pages between them.
    #[test]
    fn discard_zeroes_only_whole_pages_inside_the_range() {
        let pages = ZeroPages::new(3 * PAGE + 1);
        assert_eq!(pages.len(), 4 * PAGE);
        // SAFETY: our own mapping, nobody else uses it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(pages.as_ptr(), pages.len()) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(7);
        // SAFETY: as above.
        let given = unsafe { pages.discard(100, 3 * PAGE + 5) };
        assert_eq!(given, Some(PAGE..3 * PAGE));
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(pages.as_ptr(), pages.len()) };
        for (at, &byte) in bytes.iter().enumerate() {
            let expected = if (PAGE..3 * PAGE).contains(&at) { 0 } else { 7 };
            assert_eq!(byte, expected, "byte {at}");
        }
        // SAFETY: as above.
        assert_eq!(unsafe { pages.discard(10, PAGE - 1) }, None);
    }

    /// Whether each page of `[start, start + len)` (page-aligned) is resident.
    fn resident_pages(start: usize, len: usize) -> Vec<bool> {
        let mut map = vec![0u8; len / PAGE];
        // SAFETY: the range is mapped (the caller's own memory); `map` has a byte per page.
        let result = unsafe { libc::mincore(start as *mut libc::c_void, len, map.as_mut_ptr()) };
        assert_eq!(result, 0, "mincore: {}", std::io::Error::last_os_error());
        map.iter().map(|&flags| flags & 1 != 0).collect()
    }

    /// `commit` makes every page its byte range touches resident (and only those), and keeps
    /// what they hold.
    #[test]
    fn commit_makes_the_pages_of_a_range_resident() {
        let pages = ZeroPages::new(8 * PAGE);
        let base = pages.as_ptr() as usize;
        // SAFETY: our own mapping, nobody else uses it.
        unsafe { (base as *mut u8).add(PAGE + 5).write(9) };
        pages.commit(PAGE + 100, 3 * PAGE + 1);
        let resident = resident_pages(base, 8 * PAGE);
        let expected = [false, true, true, true, false, false, false, false];
        assert_eq!(resident, expected);
        // SAFETY: as above.
        assert_eq!(unsafe { (base as *const u8).add(PAGE + 5).read() }, 9);
        // Past the end: clipped to the mapping.
        pages.commit(7 * PAGE, 100 * PAGE);
        assert!(resident_pages(base, 8 * PAGE)[7]);
    }

    /// Committing a vector's spare capacity makes its whole pages resident at once and leaves
    /// its items alone.
    #[test]
    fn commit_spare_makes_whole_spare_pages_resident_and_keeps_the_items() {
        let pages = ZeroPages::new(16 * PAGE);
        let base = pages.as_ptr() as usize;
        assert!(resident_pages(base, 16 * PAGE)
            .iter()
            .all(|&resident| !resident));
        // SAFETY: our own mapping, nobody else uses it; `u64`s of any bits are valid.
        let words =
            unsafe { std::slice::from_raw_parts_mut(pages.as_ptr() as *mut u64, 16 * PAGE / 8) };
        words[..100].fill(7);
        let (items, spare) = words.split_at_mut(100);
        // SAFETY: `MaybeUninit<u64>` has `u64`'s layout, and the slice is borrowed exclusively.
        let spare = unsafe {
            std::slice::from_raw_parts_mut(
                spare.as_mut_ptr().cast::<std::mem::MaybeUninit<u64>>(),
                spare.len(),
            )
        };
        commit_spare(spare);
        assert!(items.iter().all(|&item| item == 7));
        // The first page holds the items (it was resident already); every page after it is
        // wholly spare and must be resident now.
        assert!(resident_pages(base, 16 * PAGE)
            .iter()
            .all(|&resident| resident));
        commit_spare::<u64>(&mut []);
    }
}
