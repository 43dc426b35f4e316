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
//! A process-wide store of buffers in size classes, carved from anonymous mappings of [`CHUNK`]
//! bytes of address space, committed a [`WINDOW`] at a time ahead of the carving
//! (`MADV_POPULATE_WRITE`). A freed buffer goes to its class's free list and is reused by the
//! next buffer of that class. The classes are multiples of [`GRANULE`] bytes up to
//! [`SMALL_MAX`] (a process parked in `receive` saves a few hundred bytes), then
//! [`MEDIUM_STEPS`] classes per doubling up to [`STORE_MAX`] (a process parked a few frames
//! deep in user code, or under recursion; a boxed message of many KiB), which waste less than a
//! sixteenth of a buffer. Only larger blocks use the global allocator: before the medium classes,
//! every frame buffer above 4 KiB came from glibc, whose thread arenas grow one `mprotect` at a
//! time under a lock all the workers share: 700,000 processes parked with ~4.2 KiB of frames
//! each took 2.8–6.1 s to park, against 1.8–2.1 s from the store (see the README).
//!
//! The free lists are intrusive: a free buffer's first word holds the address of the next one.
//! They cost no memory of their own, so a burst that frees 100,000 buffers at once does not
//! grow a vector of 100,000 addresses in glibc's heap (800 KB that, once freed, raised glibc's
//! dynamic mmap and trim thresholds and left the top of a worker's arena resident for good).
//!
//! The store is process-wide (a `static`, like an allocator), so a buffer stays valid whatever
//! outlives what: a fiber dropped after its runtime still frees into it. Mappings are never
//! unmapped. Memory goes back to the OS instead through [`give_back`], which idle workers call
//! once a second (with `malloc_trim`): every page wholly covered by free memory is returned with
//! `MADV_DONTNEED`, and so are the committed pages ahead of the bump pointer. The buffers that
//! start on a returned page leave their free lists (their links would read back as zeros), and
//! the free memory around them becomes a *pool* of address ranges, from which buffers of any
//! class are carved again (before the bump pointer moves on) and re-fault as they are written.
//! So after a burst the free lists hold only the buffers on pages still in use, and a page
//! given back is reused by whichever class needs memory next.
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
//!    [`SavedFrames`], [`crate::Handle`] or [`crate::Block`], never both. A buffer in a free
//!    list holds the address of the next one (0 for none) in its first word, and nothing else
//!    of it is read or written until it is taken out.
//! 2. A granule of a chunk is in at most one of: a buffer (free or in use), a pool range, the
//!    uncarved rest of the current chunk.
//! 3. While [`give_back`] runs, the free lists and the pool it took are out of the store (so no
//!    other thread reads or writes that memory meanwhile), and what is left of them goes back
//!    in afterwards.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::pages::{self, ZeroPages, PAGE};

/// Buffer sizes are multiples of this many bytes (the class granularity). 32: a parked
/// process's buffer wastes 16 bytes on average (64 wasted 32; W2's bytes per process went from
/// 993 to 964).
pub(crate) const GRANULE: usize = 32;

/// The largest class that is a multiple of [`GRANULE`]. Up to here a buffer wastes less than a
/// granule; above it the classes grow geometrically ([`MEDIUM_STEPS`]). Guessed: a process
/// parked in `receive` saves ~400 bytes, and 4 KiB covers parking a few frames deep in user
/// code with 128 classes.
pub(crate) const SMALL_MAX: usize = 4096;

/// Classes per doubling of size above [`SMALL_MAX`]: a buffer wastes less than a sixteenth of
/// its size. jemalloc splits each doubling in four (up to a fifth wasted); with eight, 700,000
/// processes parked ~4.2 KiB deep held 4,966 bytes each against glibc's 4,504, with sixteen
/// 4,711 (see the README).
const MEDIUM_STEPS: usize = 16;

/// The largest block served from the store; larger ones come from the global allocator.
/// 1 MiB: frames parked deeper than that are rare and each is big enough for glibc's own
/// `mmap`, and a chunk holds at least 16 such buffers.
pub(crate) const STORE_MAX: usize = 1 << 20;

/// Classes of multiples of `GRANULE`, up to `SMALL_MAX`.
const SMALL_CLASSES: usize = SMALL_MAX / GRANULE;

/// All classes: the small ones, then `MEDIUM_STEPS` per doubling up to `STORE_MAX`.
const CLASSES: usize = SMALL_CLASSES + MEDIUM_STEPS * (STORE_MAX / SMALL_MAX).ilog2() as usize;

/// Bytes of address space per chunk. Reserved, not committed (`MAP_NORESERVE`): only the
/// windows the bump pointer has reached are committed (see [`WINDOW`]). 16 MiB: one `mmap` per
/// ~28,000 parked processes or ~50,000 control blocks.
pub(crate) const CHUNK: usize = 16 << 20;

/// Bytes committed at a time ahead of the bump pointer, in one `MADV_POPULATE_WRITE` call
/// instead of a page fault per page (~10 µs a fault here against ~0.5 ns a byte populated; see
/// `handle.rs`), kept at least a window ahead of it. 128 KiB: the call's fixed cost is
/// negligible next to 32 pages, and a program that parks a few processes commits no more than
/// two windows.
const WINDOW: usize = 128 << 10;

/// Alignment of a large buffer (the frames hold 16-byte-aligned stack words).
const LARGE_ALIGN: usize = 16;

/// Free buffers of one class, alone on its cache lines.
#[repr(align(128))]
struct Class {
    free: Mutex<FreeList>,
}

/// An intrusive LIFO list of free buffers of one class (invariant 1).
#[derive(Default)]
struct FreeList {
    /// The first buffer; 0 when the list is empty.
    head: usize,
    len: usize,
}

impl FreeList {
    const fn new() -> FreeList {
        FreeList { head: 0, len: 0 }
    }

    /// Puts `address`, a buffer of this list's class that nobody uses, at the front.
    fn push(&mut self, address: usize) {
        // SAFETY: the buffer is ours to write (the caller gives it up) and at least a granule
        // long and granule-aligned, so its first word is in bounds and aligned (invariant 1).
        unsafe { (address as *mut usize).write(self.head) };
        self.head = address;
        self.len += 1;
    }

    /// Takes the front buffer out.
    fn pop(&mut self) -> Option<usize> {
        if self.head == 0 {
            return None;
        }
        let address = self.head;
        // SAFETY: a buffer in the list holds the next one's address in its first word
        // (invariant 1).
        self.head = unsafe { (address as *const usize).read() };
        self.len -= 1;
        Some(address)
    }

    /// Moves every buffer of `other` to the front of this list.
    fn append(&mut self, mut other: FreeList) {
        while let Some(address) = other.pop() {
            self.push(address);
        }
    }
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
    /// Free ranges `[start, end)` of chunks, no buffer's and no list's (invariant 2): pages
    /// [`give_back`] returned to the OS, and the free memory around them. Carved before the
    /// bump pointer moves on, the last range first.
    pool: Vec<(usize, usize)>,
}

impl Bump {
    /// A buffer of `size` bytes from the last pool range, if one is long enough. A last range
    /// too short for `size` becomes free buffers ([`free_range`]), so nothing of it is lost,
    /// and the next range is tried.
    fn carve_pool(&mut self, size: usize) -> Option<usize> {
        while let Some(range) = self.pool.last_mut() {
            let (start, end) = *range;
            if end - start >= size {
                range.0 += size;
                if range.0 == end {
                    self.pool.pop();
                }
                return Some(start);
            }
            self.pool.pop();
            free_range(start, end);
        }
        None
    }
}

/// Puts the free memory `[start, end)` (a multiple of [`GRANULE`] long, in no buffer or list)
/// on the free lists, as buffers of the largest classes that fit ([`split_range`]), each freed
/// like any other ([`free_in_store`], so the next give-back looks at them too). The caller
/// holds the bump lock: lock order bump, then a class (nobody takes the bump lock holding a
/// class's).
fn free_range(start: usize, end: usize) {
    split_range(start, end, free_in_store);
}

/// Cuts `[start, end)` (a multiple of [`GRANULE`] long) into buffers that cover it exactly,
/// each of the largest class that fits in what is left, and calls `buffer(address, class)` for
/// each in address order. Every class size is a multiple of `GRANULE`, and the smallest is one
/// granule, so the cut always ends exactly at `end`.
fn split_range(start: usize, end: usize, mut buffer: impl FnMut(usize, usize)) {
    let mut address = start;
    while address < end {
        let class = class_at_most(end - address);
        buffer(address, class);
        address += class_size(class);
    }
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
    free: Mutex::new(FreeList::new()),
};

static STORE: Store = Store {
    classes: [EMPTY_CLASS; CLASSES],
    bump: Mutex::new(Bump {
        chunks: Vec::new(),
        next: 0,
        committed: 0,
        end: 0,
        pool: Vec::new(),
    }),
    dirty: AtomicBool::new(false),
};

/// Bytes of a buffer of class `class` (a multiple of [`GRANULE`]; increasing with the class).
const fn class_size(class: usize) -> usize {
    if class < SMALL_CLASSES {
        return (class + 1) * GRANULE;
    }
    let medium = class - SMALL_CLASSES;
    // The doubling `(base, 2 * base]` the class lies in, cut into `MEDIUM_STEPS` equal steps.
    let base = SMALL_MAX << (medium / MEDIUM_STEPS);
    base + (medium % MEDIUM_STEPS + 1) * (base / MEDIUM_STEPS)
}

/// The smallest class whose buffers hold `len` bytes (`len` in `1..=STORE_MAX`).
fn class_of(len: usize) -> usize {
    if len <= SMALL_MAX {
        return len.div_ceil(GRANULE) - 1;
    }
    // `len` lies in `(base, 2 * base]`.
    let doubling = ((len - 1) / SMALL_MAX).ilog2() as usize;
    let base = SMALL_MAX << doubling;
    let step = (len - base).div_ceil(base / MEDIUM_STEPS) - 1;
    SMALL_CLASSES + doubling * MEDIUM_STEPS + step
}

/// The largest class whose buffers fit in `len` bytes (`len` at least [`GRANULE`]).
fn class_at_most(len: usize) -> usize {
    let class = class_of(len.min(STORE_MAX));
    if class_size(class) <= len {
        class
    } else {
        class - 1
    }
}

/// Bytes of the block [`allocate_block`] hands out for `len` bytes (alignment up to
/// [`GRANULE`]): its class's size, or above [`STORE_MAX`] `len` rounded up to a granule.
pub(crate) fn block_size(len: usize) -> usize {
    if len <= STORE_MAX {
        class_size(class_of(len.max(1)))
    } else {
        len.next_multiple_of(GRANULE)
    }
}

/// The class a block for `layout` comes from, or `None` if it comes from the global allocator:
/// size up to [`STORE_MAX`], alignment up to [`GRANULE`] (every buffer starts at its chunk's
/// page-aligned base plus a multiple of `GRANULE`). One test for both [`allocate_block`] and
/// [`free_block`], so that a block always goes back where it came from.
fn store_class(layout: Layout) -> Option<usize> {
    (layout.size() <= STORE_MAX && layout.align() <= GRANULE)
        .then(|| class_of(layout.size().max(1)))
}

/// A buffer of class `class`: a free one, or a new one carved from the current chunk.
fn allocate_in_store(class: usize) -> usize {
    if let Some(address) = STORE.classes[class]
        .free
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
    {
        return address;
    }
    let size = class_size(class);
    let (address, window) = {
        let mut bump = STORE.bump.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(address) = bump.carve_pool(size) {
            return address;
        }
        if bump.end - bump.next < size {
            // The old chunk's tail (less than `STORE_MAX` bytes) becomes free buffers of smaller
            // classes. Those beyond `committed` fault their pages in when first written.
            free_range(bump.next, bump.end);
            let chunk = pages::map(CHUNK);
            bump.chunks.push(chunk);
            bump.next = chunk;
            bump.committed = chunk;
            bump.end = chunk + CHUNK;
        }
        let address = bump.next;
        bump.next += size;
        let mut window = None;
        // A window ahead: the buffers carved meanwhile, by us or by a worker racing us, come
        // from pages populated already (when the frontier was the carved end, a buffer carved
        // from a window whose populate call was still running faulted its page in: 12 % of
        // W2's page faults, in `Fiber::evict`).
        if bump.next + WINDOW > bump.committed && bump.committed < bump.end {
            let start = bump.committed;
            bump.committed = ((bump.next + WINDOW).next_multiple_of(WINDOW)).min(bump.end);
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
        // SAFETY: the window lies in a chunk of ours, read-write. It may already hold buffers
        // that other threads carved and wrote meanwhile, which `pages::populate` allows.
        unsafe { pages::populate(start, len) };
    }
    address
}

/// A block for `layout`: from the store when it fits a class ([`store_class`]), from the global
/// allocator otherwise. For saved frames and [`crate::handle::Handle`]'s control blocks.
pub(crate) fn allocate_block(layout: Layout) -> std::ptr::NonNull<u8> {
    let address = if let Some(class) = store_class(layout) {
        allocate_in_store(class)
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
        free_in_store(block.as_ptr() as usize, class);
    } else {
        // SAFETY: allocated by the global allocator with this layout (the caller's contract).
        unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
    }
}

/// Puts a buffer of class `class` back on its free list (invariant 1).
fn free_in_store(address: usize, class: usize) {
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

/// Returns every page wholly covered by free memory to the OS (`MADV_DONTNEED`). Called by idle
/// workers at most once a second; does nothing if no buffer was freed since the last call.
pub(crate) fn give_back() {
    release_uncarved_tail();
    // Relaxed: see the field.
    if !STORE.dirty.swap(false, Ordering::Relaxed) {
        return;
    }
    // Take the free lists and the pool out (invariant 3): other threads carve new buffers from
    // the bump pointer meanwhile, and what they free goes to the (now empty) lists.
    let (mut chunks, pool) = {
        let mut bump = STORE.bump.lock().unwrap_or_else(|e| e.into_inner());
        if bump.chunks.is_empty() {
            // Nothing was ever carved, so nothing was freed into the store.
            return;
        }
        (bump.chunks.clone(), std::mem::take(&mut bump.pool))
    };
    chunks.sort_unstable();
    let taken: Vec<FreeList> = STORE
        .classes
        .iter()
        .map(|class| std::mem::take(&mut *class.free.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let (kept, pool) = return_free_pages(&chunks, taken, &pool);
    let mut bump = STORE.bump.lock().unwrap_or_else(|e| e.into_inner());
    bump.pool.extend_from_slice(&pool);
    drop(bump);
    for (class, list) in kept.into_iter().enumerate() {
        if list.len > 0 {
            STORE.classes[class]
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(list);
        }
    }
}

/// Returns the committed pages of the current chunk that no buffer has been carved from yet (a
/// burst may have committed up to two [`WINDOW`]s ahead of what it used).
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

/// Gives back every page of `chunks` wholly covered by the free buffers in `taken` (one list
/// per class) and the ranges of `pool`, and returns what is left of them: the lists without
/// the buffers that start on a returned page, and the new pool (every granule of `taken` and
/// `pool` that is in no list any more).
///
/// One bit per [`GRANULE`] of every chunk marks the free granules; a page is free when its
/// `PAGE / GRANULE` bits are all set. Then the buffers that stay in their lists clear their
/// bits, and the runs of bits still set are the new pool. Linear in the free buffers and the
/// chunks' size, and it needs no memory per buffer: a pass over a million free 560-byte buffers
/// took 57–70 ms, most of it the kernel taking back their ~550 MiB (setting the bits one at a
/// time instead of a word at a time: 109 ms). Sorting the buffers' ranges instead cost ~32 M
/// instructions per 200,000 buffers (callgrind) and a vector of 16 bytes per buffer, on an idle
/// worker while the others were busy (e.g. between W2's phases).
fn return_free_pages(
    chunks: &[usize],
    taken: Vec<FreeList>,
    pool: &[(usize, usize)],
) -> (Vec<FreeList>, Vec<(usize, usize)>) {
    let granules_per_chunk = CHUNK / GRANULE;
    let granules_per_page = PAGE / GRANULE;
    // Every buffer and pool range lies inside one chunk (the bump pointer never crosses a
    // chunk's end, and pool ranges are cut from what it carved).
    let granule_of = |address: usize| {
        let chunk = chunks.partition_point(|&base| base <= address) - 1;
        chunk * granules_per_chunk + (address - chunks[chunk]) / GRANULE
    };
    let mut bits = Bitmap::new(chunks.len() * granules_per_chunk);
    for (class, list) in taken.iter().enumerate() {
        let mut address = list.head;
        while address != 0 {
            mark(&mut bits, granule_of(address), class_size(class) / GRANULE);
            // SAFETY: a listed buffer holds the next one's address (invariant 1); the list is
            // ours while this pass holds it (invariant 3).
            address = unsafe { (address as *const usize).read() };
        }
    }
    for &(start, end) in pool {
        mark(&mut bits, granule_of(start), (end - start) / GRANULE);
    }
    // The pages to return: every granule free. One bit per page.
    let mut returned = vec![0u64; (chunks.len() * CHUNK / PAGE).div_ceil(64)];
    for (page, words) in bits.chunks(granules_per_page / 64).enumerate() {
        if words.iter().all(|&word| word == u64::MAX) {
            returned[page / 64] |= 1 << (page % 64);
        }
    }
    let is_returned = |granule: usize| {
        let page = granule / granules_per_page;
        returned[page / 64] >> (page % 64) & 1 == 1
    };
    // Rebuild the lists before any page goes (the links are read from the old ones): a buffer
    // that starts on a page being returned leaves its list and its granules stay marked.
    let mut kept: Vec<FreeList> = std::iter::repeat_with(FreeList::new)
        .take(taken.len())
        .collect();
    for (class, mut list) in taken.into_iter().enumerate() {
        while let Some(address) = list.pop() {
            let first = granule_of(address);
            if !is_returned(first) {
                clear(&mut bits, first, class_size(class) / GRANULE);
                kept[class].push(address);
            }
        }
    }
    let mut new_pool = Vec::new();
    let pages_per_chunk = CHUNK / PAGE;
    for (chunk, &base) in chunks.iter().enumerate() {
        let granules =
            &bits[chunk * granules_per_chunk / 64..(chunk + 1) * granules_per_chunk / 64];
        for_each_run(granules, |first, count| {
            new_pool.push((base + first * GRANULE, base + (first + count) * GRANULE));
        });
        let pages = &returned[chunk * pages_per_chunk / 64..(chunk + 1) * pages_per_chunk / 64];
        for_each_run(pages, |first, count| {
            advise_free(base + first * PAGE, base + (first + count) * PAGE);
        });
    }
    (kept, new_pool)
}

/// One bit per granule of every chunk, in memory mapped for the pass and unmapped after it: a
/// vector from glibc of 64 KiB per chunk would be mapped and unmapped by glibc too, and each
/// such free raises glibc's dynamic mmap threshold, after which big vectors of the program stay
/// in (and keep resident) a worker's arena.
struct Bitmap {
    pages: ZeroPages,
    len: usize,
}

impl Bitmap {
    /// A bitmap of `bits` zero bits (`bits` a multiple of 64, at least 64).
    fn new(bits: usize) -> Bitmap {
        let len = bits / 64;
        Bitmap {
            // Zeroed: a fresh anonymous mapping reads as zeros.
            pages: ZeroPages::new(len * 8),
            len,
        }
    }
}

impl std::ops::Deref for Bitmap {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        // SAFETY: `len` words of our own page-aligned mapping, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr() as *const u64, self.len) }
    }
}

impl std::ops::DerefMut for Bitmap {
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.pages.as_ptr() as *mut u64, self.len) }
    }
}

/// Calls `run(first, count)` for each maximal run of set bits in `bits` (bit 0 of word 0
/// first), a word at a time where a word is all set or all clear.
fn for_each_run(bits: &[u64], mut run: impl FnMut(usize, usize)) {
    let mut open: Option<usize> = None;
    let mut step = |set: bool, at: usize| match (set, open) {
        (true, None) => open = Some(at),
        (false, Some(first)) => {
            run(first, at - first);
            open = None;
        }
        _ => {}
    };
    for (index, &word) in bits.iter().enumerate() {
        if word == 0 || word == u64::MAX {
            step(word == u64::MAX, index * 64);
        } else {
            for bit in 0..64 {
                step(word >> bit & 1 == 1, index * 64 + bit);
            }
        }
    }
    step(false, bits.len() * 64);
}

/// Clears bits `[first, first + count)` of `bits`.
fn clear(bits: &mut [u64], first: usize, count: usize) {
    for bit in first..first + count {
        bits[bit / 64] &= !(1 << (bit % 64));
    }
}

/// Sets bits `[first, first + count)` of `bits`, a word at a time (a small buffer spans at
/// most three words, a medium one up to 512).
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
/// only memory no buffer lives in: free buffers and pool ranges taken out of the store
/// (invariant 3), or the uncarved part of the current chunk under the bump lock.
fn advise_free(start: usize, end: usize) {
    // SAFETY: per the callers, no thread reads or writes [start, end) meanwhile; its contents
    // are dead and may read back as zeros. (If the OS refuses, the pages merely stay.)
    unsafe { pages::discard(start, end) };
}

/// Bytes of the buffers in the free lists and of the pool (for tests).
#[cfg(test)]
fn free_bytes() -> usize {
    let listed: usize = STORE
        .classes
        .iter()
        .enumerate()
        .map(|(class, list)| {
            class_size(class) * list.free.lock().unwrap_or_else(|e| e.into_inner()).len
        })
        .sum();
    let bump = STORE.bump.lock().unwrap_or_else(|e| e.into_inner());
    listed
        + bump
            .pool
            .iter()
            .map(|(start, end)| end - start)
            .sum::<usize>()
}

/// One fiber's saved frames: a buffer from the store (or, above [`STORE_MAX`], from the global
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

    /// Whether no frames are held (there may still be a buffer, kept for the next copy).
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the frames held, keeping the buffer for the next [`copy_from`](Self::copy_from).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
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
        // The class's size (the layout below then maps back to the same class).
        let wanted = block_size(len);
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

    /// The layout of a buffer of `capacity` bytes (a class's size up to [`STORE_MAX`]).
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
        for len in [
            1,
            63,
            64,
            65,
            600,
            4095,
            4096,
            4097,
            4608,
            4609,
            100_000,
            STORE_MAX - 1,
            STORE_MAX,
            STORE_MAX + 1,
            3 << 20,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let frames = saved(&bytes);
            assert_eq!(frames.as_slice(), &bytes[..], "len {len}");
            assert_eq!(frames.len(), len);
            let waste = frames.capacity() - len;
            assert!(
                waste < GRANULE.max(len / MEDIUM_STEPS),
                "len {len}: {waste}"
            );
        }
    }

    #[test]
    fn classes_grow_by_granules_then_by_sixteenths_up_to_the_store_maximum() {
        for class in 0..CLASSES {
            let size = class_size(class);
            assert_eq!(size % GRANULE, 0, "class {class}");
            assert_eq!(class_of(size), class, "class {class} of {size} bytes");
            assert_eq!(class_at_most(size), class, "class {class}");
            if class > 0 {
                let below = class_size(class - 1);
                assert!(below < size);
                let step = if size <= SMALL_MAX {
                    GRANULE
                } else {
                    let doubling = ((size - 1) / SMALL_MAX).ilog2();
                    (SMALL_MAX << doubling) / MEDIUM_STEPS
                };
                assert_eq!(size - below, step, "class {class}");
                assert_eq!(class_of(below + 1), class, "class {class}");
                assert_eq!(class_at_most(size - GRANULE), class - 1, "class {class}");
            }
        }
        assert_eq!(class_size(CLASSES - 1), STORE_MAX);
        assert_eq!(class_size(SMALL_CLASSES - 1), SMALL_MAX);
        assert_eq!(
            class_size(SMALL_CLASSES),
            SMALL_MAX + SMALL_MAX / MEDIUM_STEPS
        );
        assert_eq!(class_at_most(10 * STORE_MAX), CLASSES - 1);
        assert_eq!(block_size(STORE_MAX + 1), STORE_MAX + GRANULE);
    }

    #[test]
    fn split_range_covers_a_range_exactly_with_the_largest_classes() {
        for len in [
            GRANULE,
            4064,
            SMALL_MAX + GRANULE,
            SMALL_MAX + 512,
            100_032,
            STORE_MAX - GRANULE,
            3 * STORE_MAX + 4160,
        ] {
            let start = 1 << 30;
            let mut next = start;
            let mut pieces = 0;
            split_range(start, start + len, |address, class| {
                assert_eq!(address, next, "len {len}: a gap or an overlap");
                let left = start + len - address;
                assert!(
                    class_size(class) <= left,
                    "len {len}: a buffer past the end"
                );
                assert!(
                    class == CLASSES - 1 || class_size(class + 1) > left,
                    "len {len}: a smaller class than fits"
                );
                next += class_size(class);
                pieces += 1;
            });
            assert_eq!(next, start + len, "len {len}");
            assert!(
                pieces <= 3 + len / STORE_MAX + 2 * MEDIUM_STEPS,
                "len {len}"
            );
        }
    }

    #[test]
    fn a_freed_medium_buffer_is_reused_by_the_next_of_its_class() {
        let _serial = serial();
        // 10,000 and 10,200 bytes are both in the class of 10,240 (8 KiB + 2 × 1 KiB).
        let first = saved(&[3u8; 10_000]);
        let address = first.address;
        assert_eq!(first.capacity(), 10_240);
        drop(first);
        let second = saved(&[4u8; 10_200]);
        assert_eq!(second.address, address);
        assert_eq!(second.as_slice(), &[4u8; 10_200][..]);
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
        // The memory is reused (from the pool, before the bump pointer moves on) and works:
        // its pages fault back in.
        // (The pool is the store's, so which of its ranges they come from depends on what the
        // other tests freed: the check is that no new chunk was needed.)
        let carved = carved_bytes();
        let again: Vec<SavedFrames> = (0..400).map(|_| saved(&[5u8; 2040])).collect();
        assert_eq!(
            carved_bytes(),
            carved,
            "new memory carved for reused buffers"
        );
        for frames in &again {
            assert_eq!(frames.as_slice(), &[5u8; 2040][..]);
        }
    }

    /// Buffers of many classes, interleaved so that pages hold live and free buffers side by
    /// side, through rounds of frees, give-backs and new buffers: every live buffer keeps its
    /// contents, no two overlap, and the free memory ends up back in use rather than leaked.
    #[test]
    fn give_back_keeps_live_buffers_and_reuses_every_free_granule() {
        let _serial = serial();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let mut live: Vec<(SavedFrames, u8)> = Vec::new();
        let carved = carved_bytes();
        for round in 0..12u8 {
            for _ in 0..3_000 {
                // One in ten of a medium class (to ~34 KiB), spanning several pages.
                let len = if random(10) == 0 {
                    SMALL_MAX + 1 + random(30_000)
                } else {
                    1 + random(1_500)
                };
                let fill = round.wrapping_mul(31).wrapping_add(len as u8);
                live.push((saved(&vec![fill; len]), fill));
            }
            // Free about two thirds, at random, so most pages keep a live buffer or two.
            let mut index = 0;
            while index < live.len() {
                if random(3) > 0 {
                    live.swap_remove(index);
                } else {
                    index += 1;
                }
            }
            give_back();
            let mut ranges: Vec<(usize, usize)> = live
                .iter()
                .map(|(frames, _)| (frames.address, frames.address + frames.capacity()))
                .collect();
            ranges.sort_unstable();
            for pair in ranges.windows(2) {
                assert!(pair[0].1 <= pair[1].0, "buffers overlap: {pair:?}");
            }
            for (frames, fill) in &live {
                assert!(
                    frames.as_slice().iter().all(|byte| byte == fill),
                    "a live buffer lost its contents in round {round}"
                );
            }
        }
        // What the rounds freed was reused: 36,000 buffers of ~2,800 bytes on average would
        // have carved ~100 MB if nothing came back; the live ones at the end hold ~4.2 MB, and
        // the run carves ~13.9 MB (a medium class's free buffers serve only that class until a
        // give-back turns their pages into pool ranges).
        let fresh = carved_bytes() - carved;
        let held: usize = live.iter().map(|(frames, _)| frames.capacity()).sum();
        eprintln!("{fresh} bytes carved afresh, {held} held at the end");
        assert!(fresh < 20 << 20, "{fresh} bytes carved afresh");
    }

    /// Bytes of address space the bump pointer has carved so far (never decreases).
    fn carved_bytes() -> usize {
        let bump = STORE.bump.lock().unwrap();
        bump.chunks.len() * CHUNK - (bump.end - bump.next)
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

    #[test]
    fn for_each_run_finds_every_maximal_run() {
        let mut bits = [0u64; 4];
        for (first, count) in [(0, 3), (60, 70), (140, 1), (192, 64)] {
            mark(&mut bits, first, count);
        }
        clear(&mut bits, 100, 2);
        let mut runs = Vec::new();
        for_each_run(&bits, |first, count| runs.push((first, count)));
        assert_eq!(runs, [(0, 3), (60, 40), (102, 28), (140, 1), (192, 64)]);
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
