//! The block store: the buffers that hold evicted fibers' live stack bytes ([`SavedFrames`]),
//! and the process control blocks behind [`crate::Handle`].
//!
//! # Problem
//!
//! A million parked processes are a million buffers of a few hundred bytes each (see `slot.rs`).
//! From glibc's malloc, every worker thread allocates them in its own arena, and a thread arena
//! grows its heap one `mprotect` at a time, page by page: W2 (a million parked processes) made
//! 232,000 `mprotect` calls, each taking the address-space lock for writing, so the other
//! worker's page faults queued behind it (`rwsem_spin_on_owner`). `mprotect` was 16 % of
//! skynet's time and more of W2's.
//!
//! # Solution
//!
//! A process-wide store of buffers in size classes of [`GRANULE`] bytes up to [`SMALL_MAX`],
//! carved from anonymous mappings of [`CHUNK`] bytes of address space, committed a [`WINDOW`]
//! at a time ahead of the carving (`MADV_POPULATE_WRITE`). A freed buffer goes to its class's
//! free list and is reused by the next buffer of that class. Larger frames (rare: a process
//! parked under deep recursion) use the global allocator.
//!
//! The store is process-wide (a `static`, like an allocator), so a buffer stays valid whatever
//! outlives what: a fiber dropped after its runtime still frees into it. Mappings are never
//! unmapped. Memory goes back to the OS instead through [`give_back`], which idle workers call
//! once a second (with `malloc_trim`): every page wholly covered by free buffers is returned with
//! `MADV_DONTNEED` and re-faults as zeros if reused, and so are the committed pages ahead of the
//! bump pointer.
//!
//! # Rejected
//!
//! *Transparent huge pages for the chunks* (`MADV_HUGEPAGE`; this kernel has THP in `madvise`
//! mode), so that W2's ~850 MB of buffers would fault in 2 MiB at a time: W2 spent 2.4 to
//! 3.0 s in the kernel instead of ~1.1 s (three alternating runs; wall 2.7 to 3.3 s against
//! 2.2 s), and a give-back that frees single pages would split the huge pages anyway.
//!
//! # Invariants
//!
//! 1. A buffer address is either in exactly one class's free list, or owned by exactly one
//!    [`SavedFrames`] or [`crate::Handle`], never both.
//! 2. While [`give_back`] runs, the free buffers it returns to the OS are out of the free lists
//!    (so no thread writes them meanwhile), and they go back in afterwards.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Buffer sizes are multiples of this many bytes (the class granularity). 32: a parked
/// process's buffer wastes 16 bytes on average (64 wasted 32; W2's bytes per process went from
/// 993 to 964).
pub(crate) const GRANULE: usize = 32;

/// The largest buffer served from the store; larger ones come from the global allocator.
/// Guessed: a process parked in `receive` saves ~550 bytes; 4 KiB covers parking a few frames
/// deep in user code, and keeps the class table at 128 entries.
pub(crate) const SMALL_MAX: usize = 4096;

/// Classes: one per multiple of `GRANULE` up to `SMALL_MAX`.
const CLASSES: usize = SMALL_MAX / GRANULE;

/// Bytes of address space per chunk. Reserved, not committed (`MAP_NORESERVE`): only the
/// windows the bump pointer has reached are committed (see [`WINDOW`]). 16 MiB: one `mmap` per
/// ~28,000 parked processes or ~50,000 control blocks.
pub(crate) const CHUNK: usize = 16 << 20;

/// Bytes committed at a time ahead of the bump pointer, in one `MADV_POPULATE_WRITE` call
/// instead of a page fault per page (~10 µs a fault here against ~0.5 ns a byte populated; see
/// `handle.rs`). 128 KiB: the call's fixed cost is negligible next to 32 pages, and a program
/// that parks a few processes commits no more than that.
const WINDOW: usize = 128 << 10;

/// Alignment of a large buffer (the frames hold 16-byte-aligned stack words).
const LARGE_ALIGN: usize = 16;

/// Free buffers of one class, alone on its cache lines.
#[repr(align(128))]
struct Class {
    free: Mutex<Vec<usize>>,
}

/// The chunks mapped so far, and the part of the current one not yet carved.
struct Bump {
    /// Base address of every chunk mapped so far (for `give_back`).
    chunks: Vec<usize>,
    next: usize,
    /// Pages in `[next, committed)` are committed, or being committed: the thread that moved
    /// `committed` populates the window after releasing the lock (or, where populating is not
    /// supported, the pages fault in as they are first written). Beyond it they are only
    /// reserved.
    committed: usize,
    end: usize,
}

struct Store {
    classes: [Class; CLASSES],
    bump: Mutex<Bump>,
    /// A buffer was freed since the last `give_back`. Relaxed: a hint that lets an idle
    /// worker skip a pass that would find nothing new.
    dirty: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to initialize the array below
const EMPTY_CLASS: Class = Class {
    free: Mutex::new(Vec::new()),
};

static STORE: Store = Store {
    classes: [EMPTY_CLASS; CLASSES],
    bump: Mutex::new(Bump {
        chunks: Vec::new(),
        next: 0,
        committed: 0,
        end: 0,
    }),
    dirty: AtomicBool::new(false),
};

/// The class of a buffer for `len` bytes (`len` in `1..=SMALL_MAX`).
fn class_of(len: usize) -> usize {
    len.div_ceil(GRANULE) - 1
}

/// The class a block for `layout` comes from, or `None` if it comes from the global allocator:
/// size up to [`SMALL_MAX`], alignment up to [`GRANULE`] (every buffer starts at its chunk's
/// page-aligned base plus a multiple of `GRANULE`). One test for both [`allocate_block`] and
/// [`free_block`], so that a block always goes back where it came from.
fn store_class(layout: Layout) -> Option<usize> {
    (layout.size() <= SMALL_MAX && layout.align() <= GRANULE)
        .then(|| class_of(layout.size().max(1)))
}

/// A buffer of class `class`: a free one, or a new one carved from the current chunk.
fn allocate_small(class: usize) -> usize {
    if let Some(address) = STORE.classes[class]
        .free
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
    {
        return address;
    }
    let size = (class + 1) * GRANULE;
    let (address, window) = {
        let mut bump = STORE.bump.lock().unwrap_or_else(|e| e.into_inner());
        if bump.end - bump.next < size {
            // The old chunk's tail (less than `SMALL_MAX` bytes) is left unused.
            let chunk = map_chunk(CHUNK);
            bump.chunks.push(chunk);
            bump.next = chunk;
            bump.committed = chunk;
            bump.end = chunk + CHUNK;
        }
        let address = bump.next;
        bump.next += size;
        let mut window = None;
        if bump.next > bump.committed {
            let start = bump.committed;
            bump.committed = (bump.next.next_multiple_of(WINDOW)).min(bump.end);
            window = Some((start, bump.committed - start));
        }
        (address, window)
    };
    // Populated out of the lock: the call takes ~100 µs here (32 pages, each zeroed and mapped
    // by a hypervisor that charges for every new page), and the other workers carving meanwhile
    // must not queue behind it (in W2's spawn phase the bump lock was the most contended futex;
    // eight rounds of W2 alternated with the build before: median 1.5 s against 2.2 s, see the
    // README). A buffer carved from the window before it is populated faults its own pages in;
    // a `give_back` meanwhile advises away only pages beyond every carved buffer, which
    // populating again merely re-commits.
    if let Some((start, len)) = window {
        populate(start, len);
    }
    address
}

/// Reserves a new chunk of `size` bytes of address space, readable and writable but not
/// committed. Aborts like the global allocator does when the OS refuses.
fn map_chunk(size: usize) -> usize {
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

/// Commits `[start, start + len)` of a chunk in one system call. Best effort: on a kernel
/// without `MADV_POPULATE_WRITE` (before 5.14) the pages fault in as they are first written,
/// which is correct, only slower.
fn populate(start: usize, len: usize) {
    // SAFETY: the range lies in a chunk of ours. It may already hold buffers: it is populated
    // after the bump lock is released, so other threads may have carved from it and written
    // to them meanwhile. That is sound because populating never changes what a page holds:
    // `MADV_POPULATE_WRITE` only faults in the pages that are missing (as zeros, which is
    // what they would read as anyway) and leaves present pages alone; the kernel serializes
    // it with a concurrent writer's own fault on the same page.
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
    }
}

/// A block for `layout`: from the store when it fits a class ([`store_class`]), from the global
/// allocator otherwise. For saved frames and [`crate::handle::Handle`]'s control blocks.
pub(crate) fn allocate_block(layout: Layout) -> std::ptr::NonNull<u8> {
    let address = if let Some(class) = store_class(layout) {
        allocate_small(class)
    } else {
        // SAFETY: the callers' layouts have a non-zero size (a control block holds a count, a
        // frames buffer is at least one granule).
        let pointer = unsafe { std::alloc::alloc(layout) };
        if pointer.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        pointer as usize
    };
    std::ptr::NonNull::new(address as *mut u8).expect("the store never hands out address 0")
}

/// Frees a block from [`allocate_block`].
///
/// # Safety
///
/// `block` came from `allocate_block(layout)` with this `layout` and is not used afterwards.
pub(crate) unsafe fn free_block(block: std::ptr::NonNull<u8>, layout: Layout) {
    if let Some(class) = store_class(layout) {
        free_small(block.as_ptr() as usize, class);
    } else {
        // SAFETY: allocated by the global allocator with this layout (the caller's contract).
        unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
    }
}

/// Puts a buffer of class `class` back on its free list (invariant 1).
fn free_small(address: usize, class: usize) {
    STORE.classes[class]
        .free
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(address);
    // Relaxed: see the field. Read first: once set, the flag's cache line stays shared instead
    // of being written by every release on every core.
    if !STORE.dirty.load(Ordering::Relaxed) {
        STORE.dirty.store(true, Ordering::Relaxed);
    }
}

/// Returns every page wholly covered by free buffers to the OS (`MADV_DONTNEED`). Called by idle
/// workers at most once a second; does nothing if no buffer was freed since the last call.
pub(crate) fn give_back() {
    release_uncarved_tail();
    // Relaxed: see the field.
    if !STORE.dirty.swap(false, Ordering::Relaxed) {
        return;
    }
    // Take the free lists out (invariant 2): other threads carve new buffers meanwhile.
    let mut taken: Vec<Vec<usize>> = STORE
        .classes
        .iter()
        .map(|class| std::mem::take(&mut *class.free.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    advise_free_pages(&taken);
    for (class, free) in taken.iter_mut().enumerate() {
        if free.is_empty() {
            continue;
        }
        let mut list = STORE.classes[class]
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        list.append(free);
        // The lists grew to hold a burst; keep their own memory in proportion to what is free.
        list.shrink_to_fit();
    }
}

/// Returns the committed pages of the current chunk that no buffer has been carved from yet (a
/// burst may have committed up to a [`WINDOW`] ahead of what it used).
fn release_uncarved_tail() {
    let mut bump = STORE.bump.lock().unwrap_or_else(|e| e.into_inner());
    let start = bump.next.next_multiple_of(PAGE);
    if bump.committed > start {
        // `[start, committed)` lies in our current chunk beyond every carved buffer, and we hold
        // the bump lock, so nobody carves from it meanwhile.
        advise_free(start, bump.committed);
        bump.committed = start;
    }
}

/// Bytes per page (checked against `sysconf` by the slot pool; see `slot.rs`).
const PAGE: usize = 4096;

/// Gives back every page wholly covered by the free buffers in `taken` (one list per class).
///
/// One bit per [`GRANULE`] of every chunk marks the free granules; a page is free when its
/// `PAGE / GRANULE` bits are all set. Linear in the free buffers and the chunks' size, and it
/// needs no memory per buffer: a pass over a million free 560-byte buffers took 57–70 ms, most of
/// it the kernel taking back their ~550 MiB (setting the bits one at a time instead of a word at
/// a time: 109 ms). Sorting the buffers' ranges instead cost ~32 M instructions per 200,000
/// buffers (callgrind) and a vector of 16 bytes per buffer, on an idle worker while the others
/// were busy (e.g. between W2's phases).
fn advise_free_pages(taken: &[Vec<usize>]) {
    let mut chunks = STORE
        .bump
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .chunks
        .clone();
    chunks.sort_unstable();
    let granules_per_chunk = CHUNK / GRANULE;
    let mut bits = vec![0u64; chunks.len() * granules_per_chunk / 64];
    for (class, free) in taken.iter().enumerate() {
        for &address in free {
            // Every buffer lies inside the chunk it was carved from (the bump pointer never
            // crosses a chunk's end).
            let chunk = chunks.partition_point(|&base| base <= address) - 1;
            let first = chunk * granules_per_chunk + (address - chunks[chunk]) / GRANULE;
            mark(&mut bits, first, class + 1);
        }
    }
    let words_per_page = PAGE / GRANULE / 64;
    for (chunk, &base) in chunks.iter().enumerate() {
        let words = &bits[chunk * granules_per_chunk / 64..(chunk + 1) * granules_per_chunk / 64];
        let mut run: Option<usize> = None;
        for (page, page_words) in words.chunks(words_per_page).enumerate() {
            let free = page_words.iter().all(|&word| word == u64::MAX);
            match (free, run) {
                (true, None) => run = Some(page),
                (false, Some(first)) => {
                    advise_free(base + first * PAGE, base + page * PAGE);
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(first) = run {
            advise_free(base + first * PAGE, base + CHUNK);
        }
    }
}

/// Sets bits `[first, first + count)` of `bits`, a word at a time (a buffer spans at most
/// three words).
fn mark(bits: &mut [u64], first: usize, count: usize) {
    let end = first + count;
    let mut bit = first;
    while bit < end {
        let offset = bit % 64;
        let width = (64 - offset).min(end - bit);
        bits[bit / 64] |= (u64::MAX >> (64 - width)) << offset;
        bit += width;
    }
}

/// Gives the pages `[start, end)` (page-aligned) of a chunk back to the OS. The callers pass
/// only memory no buffer lives in: wholly free buffers taken out of the free lists (invariant
/// 2), or the uncarved part of the current chunk under the bump lock.
fn advise_free(start: usize, end: usize) {
    // SAFETY: per the callers, no thread reads or writes [start, end) meanwhile; its contents
    // are dead and may read back as zeros.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}

/// Bytes of the buffers in the free lists (for tests).
#[cfg(test)]
fn free_bytes() -> usize {
    STORE
        .classes
        .iter()
        .enumerate()
        .map(|(class, list)| {
            (class + 1) * GRANULE * list.free.lock().unwrap_or_else(|e| e.into_inner()).len()
        })
        .sum()
}

/// One fiber's saved frames: a buffer from the store (or, above [`SMALL_MAX`], from the global
/// allocator) holding a copy of its live stack bytes while it is evicted.
pub(crate) struct SavedFrames {
    /// The buffer's address; 0 when there is none.
    address: usize,
    /// Bytes of frames held. 32 bits, like `capacity`: a stack slot is at most 1 GiB
    /// (`Config::slot_size`), and the two halves keep this in two words, i.e. eight bytes less
    /// for every parked process.
    len: u32,
    /// The buffer's size.
    capacity: u32,
}

// SAFETY: a `SavedFrames` owns its buffer exclusively (invariant 1); moving it to another thread
// moves that ownership.
unsafe impl Send for SavedFrames {}

impl SavedFrames {
    pub(crate) const fn new() -> SavedFrames {
        SavedFrames {
            address: 0,
            len: 0,
            capacity: 0,
        }
    }

    /// Bytes of frames held.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Bytes of the buffer (what the process holds while evicted).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Replaces the contents with a copy of `[low, high)`, keeping the buffer if it is of the
    /// right class.
    ///
    /// # Safety
    ///
    /// `[low, high)` must be readable and not written concurrently, and must not overlap this
    /// buffer.
    pub(crate) unsafe fn copy_from(&mut self, low: usize, high: usize) {
        let len = high - low;
        // A class's size when small (`class_of` rounds up to the same multiple).
        let wanted = len.max(1).next_multiple_of(GRANULE);
        if wanted != self.capacity() {
            // Checked before anything changes: a panic leaves this `SavedFrames` as it was.
            let capacity = u32::try_from(wanted).expect("saved frames larger than a stack slot");
            self.release();
            self.address = allocate_block(Self::layout(wanted)).as_ptr() as usize;
            self.capacity = capacity;
        }
        // SAFETY: the caller guarantees the source; the destination is our own buffer of at
        // least `len` bytes (invariant 1), disjoint from it.
        unsafe { std::ptr::copy_nonoverlapping(low as *const u8, self.address as *mut u8, len) };
        // Lossless: `len <= capacity`, a `u32`.
        self.len = len as u32;
    }

    /// The layout of a buffer of `capacity` bytes (a class's size when small).
    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, LARGE_ALIGN).expect("valid layout")
    }

    /// The frames held.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.address == 0 {
            return &[];
        }
        // SAFETY: the buffer is ours (invariant 1) and its first `len` bytes were written by
        // `copy_from`.
        unsafe { std::slice::from_raw_parts(self.address as *const u8, self.len as usize) }
    }

    /// Gives the buffer back (to its class's free list, or to the global allocator).
    pub(crate) fn release(&mut self) {
        if self.address == 0 {
            return;
        }
        // SAFETY: allocated in `copy_from` with this very layout (from `capacity`), non-null, and
        // not used after this.
        unsafe {
            free_block(
                std::ptr::NonNull::new_unchecked(self.address as *mut u8),
                Self::layout(self.capacity()),
            );
        }
        // Field by field: assigning a whole `SavedFrames` would drop the old one, i.e. release
        // it again.
        self.address = 0;
        self.len = 0;
        self.capacity = 0;
    }
}

impl Drop for SavedFrames {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(bytes: &[u8]) -> SavedFrames {
        let mut frames = SavedFrames::new();
        let range = bytes.as_ptr_range();
        // SAFETY: a live slice, not written while we copy, disjoint from the store.
        unsafe { frames.copy_from(range.start as usize, range.end as usize) };
        frames
    }

    /// The tests share the process-wide store; `give_back` takes every free list out for a
    /// moment, so they run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn frames_round_trip_in_every_size_class_and_above() {
        let _serial = serial();
        for len in [1, 63, 64, 65, 600, 4095, 4096, 4097, 100_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let frames = saved(&bytes);
            assert_eq!(frames.as_slice(), &bytes[..], "len {len}");
            assert_eq!(frames.len(), len);
            assert!(frames.capacity() >= len && frames.capacity() < len + GRANULE);
        }
    }

    #[test]
    fn a_freed_buffer_is_reused_by_the_next_of_its_class() {
        let _serial = serial();
        let first = saved(&[1u8; 3000]);
        let address = first.address;
        drop(first);
        let second = saved(&[2u8; 2990]);
        assert_eq!(second.address, address);
        assert_eq!(second.as_slice(), &[2u8; 2990][..]);
    }

    #[test]
    fn give_back_returns_wholly_free_pages_and_keeps_the_buffers_usable() {
        let _serial = serial();
        // 400 buffers of 2,048 bytes (a class no other test uses): 200 pages, carved one after
        // the other (at most one chunk boundary between them).
        let all: Vec<SavedFrames> = (0..400).map(|_| saved(&[9u8; 2040])).collect();
        let pages = pages_of(&all);
        let resident_before = resident(&pages);
        assert!(
            resident_before >= 190,
            "{resident_before} of 200 pages resident"
        );
        drop(all);
        assert!(free_bytes() >= 400 * 2048);
        give_back();
        let resident_after = resident(&pages);
        assert!(
            resident_after <= 4,
            "{resident_after} pages still resident after give_back"
        );
        // The buffers are still in the free lists and work (their pages fault back in).
        let again: Vec<SavedFrames> = (0..400).map(|_| saved(&[5u8; 2040])).collect();
        assert_eq!(pages_of(&again), pages);
        for frames in &again {
            assert_eq!(frames.as_slice(), &[5u8; 2040][..]);
        }
    }

    #[test]
    fn mark_sets_exactly_the_range_across_words() {
        for (first, count) in [(0, 1), (60, 70), (64, 64), (5, 128), (127, 1), (100, 92)] {
            let mut bits = [0u64; 4];
            mark(&mut bits, first, count);
            for bit in 0..256 {
                let set = bits[bit / 64] >> (bit % 64) & 1 == 1;
                assert_eq!(
                    set,
                    (first..first + count).contains(&bit),
                    "{first}+{count}: {bit}"
                );
            }
        }
    }

    /// The pages the buffers lie on.
    fn pages_of(all: &[SavedFrames]) -> Vec<usize> {
        let mut pages: Vec<usize> = all
            .iter()
            .flat_map(|frames| [frames.address / 4096, (frames.address + 2047) / 4096])
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// How many of `pages` are resident (via `mincore`).
    fn resident(pages: &[usize]) -> usize {
        pages
            .iter()
            .filter(|&&page| {
                let mut vector = 0u8;
                // SAFETY: the page is part of one of our mappings; mincore only reports.
                unsafe { libc::mincore((page * 4096) as *mut libc::c_void, 4096, &mut vector) };
                vector & 1 == 1
            })
            .count()
    }
}
