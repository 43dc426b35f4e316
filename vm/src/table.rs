//! The process table: pids to processes, with generational entries.
//!
//! # Invariants
//!
//! 1. A pid addresses an entry's process only while the generations match, and no two
//!    processes ever get the same pid: an entry's generation only grows while its memory is
//!    kept, and an entry whose memory was given back (it then reads as generation 0) is next
//!    filled with a generation above every generation the table gave back (`floor`).
//! 2. An entry holds its process from `insert` until `remove`, which the process itself does as
//!    the first step of ending; a process's pid is alive exactly while its entry holds it.
//! 3. At most `max` entries hold a process at once (`reserve` before `insert`).
//! 4. An index belongs to one control block from `insert` until the block is dropped (its
//!    `Drop` calls `free_index`): a finished process's block that the schedulers keep for
//!    reuse keeps its index, and the next process made in that block takes the same index with
//!    the next generation, without touching the free lists.
//! 5. Every index below `next_fresh` is in exactly one place: held by a control block, in
//!    one free shard, or on a discarded page (every index of a page in `discarded` is free and
//!    in no shard). No index at or above `next_fresh` is held, free or discarded.
//!
//! Entries live in segments allocated on first use, each twice the size of the one before
//! (1 Ki entries, then 2 Ki, 4 Ki, ...), so the table's address space grows in proportion to
//! the most processes alive at once (within a factor of two), not to `max`: 32 KiB for a VM
//! that never held more than 1,024 processes, 32 MiB at a million. A segment is a mapping of
//! its own, and all-zero bits are a valid, empty entry: only the pages of entries ever used are
//! resident.
//!
//! # Giving memory back
//!
//! After a burst (a thread outside the VM spawning faster than the schedulers finish
//! processes held 360,000 alive at once), the entries the burst used stayed resident: 11 MiB
//! of a 3 MiB program, +600 % for good. So the idle pass that gives memory back
//! ([`ProcessTable::give_back`], called through the runtime's `on_give_back` hook) lowers the
//! fresh mark to just above the highest index in use and discards the whole pages of entries
//! above it (`MADV_DONTNEED`: they read back as zeros, empty entries).
//!
//! Senders may read any entry at any time through a stale pid. Two rules make a discard safe
//! under them:
//!
//! - An entry's lock is this module's own [`EntryLock`]: zero means unlocked, a reader changes
//!   the word only with a compare-and-swap from an unlocked state, and nobody ever sleeps on
//!   it (critical sections are a few hundred nanoseconds at most; a waiter spins, then
//!   yields). The pass write-locks every entry of a page before it discards the page; a reader
//!   spinning meanwhile then finds an unlocked, empty entry. (A futex-based lock could not be
//!   zeroed under a sleeping waiter, nor a reader's increment be lost to the discard.)
//! - Generations: the pass raises `floor` to the highest generation of the entries it
//!   discards, before any of them can be reused, and `insert` starts an entry at
//!   `max(its generation, floor) + 1` (invariant 1).
//!
//! Below the fresh mark, the pass also discards every page whose entries are all free, when
//! there are at least [`MIN_DISCARD`] entries' worth of them: a process alive at a high index
//! (a coordinator spawned during a burst) would otherwise keep the whole burst's entries
//! resident below it. A discarded page's indices leave the free shards (4 bytes each, which
//! would otherwise stay behind too) and the page goes to the `discarded` set; a spawn that
//! finds the shards empty takes the lowest discarded page whole, before a fresh index, so the
//! table refills from the bottom and its top can shrink again. Free indices are reused newest
//! first, so steady work stays on the pages it keeps warm. Walks of the table (`processes`,
//! `pids`) skip discarded pages under the set's lock, so they do not fault them back in.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use starling_scheduler::{Handle, Padded, ZeroPages, PAGE};

use crate::control_block::Process;
use crate::pid::Pid;

/// Entries in the first segment (log2); segment `s` holds `1 << (FIRST_SEGMENT_BITS + s)`.
/// 1 Ki entries × 32 bytes = 32 KiB: what an empty VM reserves.
const FIRST_SEGMENT_BITS: u32 = 10;

/// Segments enough for every `u32` index.
const SEGMENTS: usize = (u32::BITS + 1 - FIRST_SEGMENT_BITS) as usize;

/// Entries per page.
const ENTRIES_PER_PAGE: usize = PAGE / std::mem::size_of::<Entry>();

/// Entries a spawn that takes a fresh index commits ahead when it reaches a multiple of this
/// (from the third segment on: a VM that never held 3,072 processes commits nothing ahead).
/// 2,048 entries, 64 KiB: one `MADV_POPULATE_WRITE` call instead of 16 page faults, each
/// taken by the spawner itself (~7,000 of W2's page faults). Guessed.
const COMMIT_ENTRIES: usize = 2048;

/// The fewest entries a give-back pass discards: below this, the pages are not worth the
/// page faults of filling them again. Guessed: 64 KiB.
const MIN_DISCARD: usize = 16 * ENTRIES_PER_PAGE;

/// The segment holding `index` and the offset in it.
fn locate(index: u32) -> (usize, usize) {
    let shifted = u64::from(index) + (1 << FIRST_SEGMENT_BITS);
    let segment = (u64::BITS - 1 - shifted.leading_zeros() - FIRST_SEGMENT_BITS) as usize;
    let offset = (shifted - (1 << (FIRST_SEGMENT_BITS as usize + segment))) as usize;
    (segment, offset)
}

/// The first index of segment `segment`.
fn first_index(segment: usize) -> u32 {
    ((1u64 << (FIRST_SEGMENT_BITS as usize + segment)) - (1 << FIRST_SEGMENT_BITS)) as u32
}

/// Entries in segment `segment`.
fn segment_len(segment: usize) -> usize {
    1 << (FIRST_SEGMENT_BITS as usize + segment)
}

/// A reader-writer spin lock whose unlocked state is zero and whose readers never change the
/// word while a writer holds or waits for it (see the module docs: a discarded page must read
/// back as an unlocked entry, and no reader's increment may be lost to the discard).
///
/// Senders only read (`insert` and `remove` write, the process itself, once each), so any
/// number of them deliver to one process at once. (With a mutex, W1's million children sending
/// to one root queued on its entry from both cores and slept on the futex: ~10 % of W1's time;
/// a read lock made W1 ~15 % faster.) Writers win over new readers (`WAITING`), so a process's
/// `remove` is not starved by a stream of senders. Nobody sleeps: every critical section is
/// short and never blocks.
struct EntryLock(AtomicU32);

/// A writer holds the lock.
const WRITER: u32 = 1 << 31;
/// A writer waits: new readers hold back.
const WAITING: u32 = 1 << 30;

impl EntryLock {
    fn read(&self) {
        let mut spins = 0;
        loop {
            // Relaxed: only the compare-and-swap below acquires.
            let state = self.0.load(Ordering::Relaxed);
            // A reader count reaching `WAITING` would need a billion threads.
            if state & (WRITER | WAITING) == 0
                // Acquire: pairs with the Release of `write_unlock` (the entry's contents).
                && self
                    .0
                    .compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            backoff(&mut spins);
        }
    }

    fn read_unlock(&self) {
        // Release: pairs with the Acquire of `write` (our reads happen before its writes).
        self.0.fetch_sub(1, Ordering::Release);
    }

    fn write(&self) {
        // First a compare-and-swap from unlocked, not a load: the first touch of a fresh
        // table page is then a write, which maps a page of its own. A load first would map
        // the shared zero page, and the write after it would copy that page and flush the
        // stale mapping from every core's TLB (an IPI per page: 6 % of W2's profile).
        // Acquire: pairs with the Releases of both unlocks.
        if self
            .0
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let mut spins = 0;
        loop {
            // Relaxed: only the compare-and-swap acquires.
            let state = self.0.load(Ordering::Relaxed);
            if state & !WAITING == 0 {
                // Acquire: pairs with the Releases of both unlocks.
                if self
                    .0
                    .compare_exchange_weak(state, WRITER, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
            } else if state & WAITING == 0 {
                // Relaxed: a hint to readers; the lock itself is taken above.
                self.0.fetch_or(WAITING, Ordering::Relaxed);
            }
            backoff(&mut spins);
        }
    }

    fn write_unlock(&self) {
        // Release: pairs with the Acquires of `read` and `write`. A writer that set `WAITING`
        // meanwhile sets it again if it still waits.
        self.0.store(0, Ordering::Release);
    }
}

/// Spins a little, then gives the core away: the holder may be an OS thread the kernel
/// preempted inside its (short) critical section.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// One entry: all-zero bits are an unlocked, empty entry of generation 0. One 32-byte
/// alignment unit, so an entry never straddles a cache line or a page.
#[repr(C, align(32))]
struct Entry {
    lock: EntryLock,
    /// Under `lock`.
    generation: UnsafeCell<u64>,
    /// Under `lock`. `Handle` is `repr(transparent)` over a `NonNull`, so zero is `None`.
    process: UnsafeCell<Option<Handle<Process>>>,
}

// SAFETY: the cells are only touched under the entry's lock (readers share, a writer is alone),
// and what they hold (`u64`, `Handle<Process>`) is `Send + Sync`.
unsafe impl Sync for Entry {}
// SAFETY: as above: an entry owns a `Handle<Process>`, which is `Send`.
unsafe impl Send for Entry {}

/// A held read lock of an entry.
struct ReadGuard<'a>(&'a Entry);

impl ReadGuard<'_> {
    fn generation(&self) -> u64 {
        // SAFETY: we hold the read lock: no writer touches the cell meanwhile.
        unsafe { *self.0.generation.get() }
    }

    fn process(&self) -> Option<&Handle<Process>> {
        // SAFETY: as in `generation`; the reference lives no longer than the guard.
        unsafe { (*self.0.process.get()).as_ref() }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.0.lock.read_unlock();
    }
}

/// A held write lock of an entry.
struct WriteGuard<'a>(&'a Entry);

impl WriteGuard<'_> {
    fn generation(&mut self) -> &mut u64 {
        // SAFETY: we hold the write lock: nobody else touches the cell.
        unsafe { &mut *self.0.generation.get() }
    }

    fn process(&mut self) -> &mut Option<Handle<Process>> {
        // SAFETY: as in `generation`.
        unsafe { &mut *self.0.process.get() }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.0.lock.write_unlock();
    }
}

impl Entry {
    fn read(&self) -> ReadGuard<'_> {
        self.lock.read();
        ReadGuard(self)
    }

    fn write(&self) -> WriteGuard<'_> {
        self.lock.write();
        WriteGuard(self)
    }
}

/// A segment: `len` entries in a mapping of its own (zero pages, resident only once touched).
struct Segment {
    pages: ZeroPages,
    len: usize,
}

impl Segment {
    fn new(len: usize) -> Segment {
        Segment {
            pages: ZeroPages::new(len * std::mem::size_of::<Entry>()),
            len,
        }
    }

    /// Commits the pages of entries `[from, from + COMMIT_ENTRIES)` (fewer at the end).
    fn commit_ahead(&self, from: usize) {
        let size = std::mem::size_of::<Entry>();
        let to = (from + COMMIT_ENTRIES).min(self.len);
        self.pages.commit(from * size, to * size);
    }

    fn entries(&self) -> &[Entry] {
        // SAFETY: `len` entries of a page-aligned mapping of our own, zero pages until written
        // (a valid empty entry each, see `Entry`), alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr() as *const Entry, self.len) }
    }

    /// Discards the whole pages of entries `range` (they read back as empty entries) and
    /// returns the highest generation they held. Every entry of a discarded page is
    /// write-locked, and must be empty.
    fn discard(&self, range: std::ops::Range<usize>) -> u64 {
        // The segment starts on a page, and a page holds whole entries.
        let first = range.start.next_multiple_of(ENTRIES_PER_PAGE);
        let end = range.end / ENTRIES_PER_PAGE * ENTRIES_PER_PAGE;
        if end <= first {
            return 0;
        }
        let entries = &self.entries()[first..end];
        let mut highest = 0;
        for entry in entries {
            let mut guard = entry.write();
            debug_assert!(guard.process().is_none(), "discarding a live entry");
            highest = highest.max(*guard.generation());
            // Held on: the discard below unlocks it (zero is unlocked).
            std::mem::forget(guard);
        }
        let size = std::mem::size_of::<Entry>();
        // SAFETY: whole pages of our own mapping, and every entry on them is write-locked and
        // empty: nothing else reads or writes them until they are unlocked, and zero bits are a
        // valid, unlocked, empty entry (see the module docs).
        let discarded = unsafe { self.pages.discard(first * size, end * size) };
        if discarded.is_none() {
            // The entries are as they were: unlock them.
            for entry in entries {
                entry.lock.write_unlock();
            }
        }
        highest
    }
}

/// The process table of one VM.
pub(crate) struct ProcessTable {
    /// Segments of entries (see [`locate`]); only those `max` can reach exist.
    segments: Box<[OnceLock<Segment>]>,
    /// Free indices to reuse, one shard per scheduler plus one for everyone else (spare
    /// threads, threads outside the VM): an exit frees its index into its own scheduler's shard
    /// and a spawn takes from its own first, so the common path takes a lock no other core has
    /// touched lately. Each shard is LIFO (for cache locality), under its mutex.
    free: Box<[FreeShard]>,
    /// The first never-used index (invariant 5). Any thread, atomically; only a give-back
    /// pass lowers it.
    next_fresh: Padded<AtomicU32>,
    /// The highest generation of any entry whose memory was given back (invariant 1).
    floor: AtomicU64,
    /// Pages below the fresh mark given back while all their indices were free (invariant 5).
    /// Lock order: after the free shards; no entry lock is held while taking it.
    discarded: Mutex<DiscardedPages>,
    /// Pages in `discarded`, readable without its lock. Relaxed: a hint, like
    /// [`FreeShard::len`]; a stale zero only means a fresh index is used where a discarded page
    /// existed.
    discarded_pages: AtomicUsize,
    /// Room for more processes that no shard holds as credit (see [`FreeShard::credit`]):
    /// `max` minus the processes in the table (and reserved) minus every shard's credit.
    /// Any thread, atomically; touched once per [`CREDIT_BATCH`] spawns or exits per shard.
    available: Padded<AtomicUsize>,
    /// Most processes at once.
    max: usize,
    /// The VM's id, stamped into every pid.
    vm: u32,
}

/// Spawns a shard's credit serves between two visits to the shared pool, and half of what it
/// may hold before it gives back (see [`FreeShard::credit`]). Guessed: 32 makes the shared
/// counter's cache line move between cores once per 32 spawns or exits instead of at each, and
/// a VM with a few schedulers strands at most a few hundred slots of `max_processes` as credit
/// (which [`ProcessTable::reserve`] takes back from the other shards at the limit).
const CREDIT_BATCH: usize = 32;

/// One shard of free indices and of spawn credit, alone on its cache lines (two: the
/// adjacent-line prefetcher pairs them) so that two schedulers' shards never share one.
#[repr(align(128))]
struct FreeShard {
    indices: Mutex<Vec<u32>>,
    /// `indices.len()`, stored under the lock, read without it: lets a spawn skip other
    /// schedulers' empty shards without touching their locks. Relaxed: a stale zero only means a
    /// fresh index is used where a free one existed (the table grows by one entry).
    len: AtomicUsize,
    /// Room for this many more processes, taken from the table's `available` in batches: a
    /// spawn on this shard's scheduler spends one, an exit on it earns one. Atomic because the
    /// last shard is shared (spare workers and threads outside the VM use it), and a spawn at
    /// the limit takes credit from other shards; but a scheduler's shard is written almost only
    /// by that scheduler, so the common path touches no line another core wrote. (One shared
    /// counter was written by every spawn and exit on both cores: W1 and skynet moved its line
    /// between cores 2 M times.)
    credit: AtomicUsize,
}

impl FreeShard {
    fn new() -> Self {
        FreeShard {
            indices: Mutex::new(Vec::new()),
            len: AtomicUsize::new(0),
            credit: AtomicUsize::new(0),
        }
    }

    /// Spends one unit of credit, if there is any.
    fn spend(&self) -> bool {
        // Relaxed: a counter of room; no other memory is published through it (the table entry
        // is published under its own lock).
        self.credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |credit| {
                credit.checked_sub(1)
            })
            .is_ok()
    }

    fn push(&self, index: u32) {
        let mut indices = self.indices.lock().unwrap_or_else(|e| e.into_inner());
        indices.push(index);
        // Relaxed: see the field.
        self.len.store(indices.len(), Ordering::Relaxed);
    }

    fn pop(&self) -> Option<u32> {
        // Relaxed: see the field.
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut indices = self.indices.lock().unwrap_or_else(|e| e.into_inner());
        let index = indices.pop();
        self.len.store(indices.len(), Ordering::Relaxed);
        index
    }
}

/// A set of pages of entries (page `p` holds indices `p * ENTRIES_PER_PAGE ..`): one bit each.
#[derive(Default)]
struct DiscardedPages {
    bits: Vec<u64>,
    /// Pages in the set.
    len: usize,
}

impl DiscardedPages {
    fn contains(&self, page: usize) -> bool {
        self.bits
            .get(page / 64)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    fn insert(&mut self, page: usize) {
        if self.bits.len() <= page / 64 {
            self.bits.resize(page / 64 + 1, 0);
        }
        let word = &mut self.bits[page / 64];
        if *word & (1 << (page % 64)) == 0 {
            *word |= 1 << (page % 64);
            self.len += 1;
        }
    }

    /// Removes and returns the lowest page.
    fn pop_lowest(&mut self) -> Option<usize> {
        let (at, word) = self
            .bits
            .iter_mut()
            .enumerate()
            .find(|(_, word)| **word != 0)?;
        let bit = word.trailing_zeros() as usize;
        *word &= !(1 << bit);
        self.len -= 1;
        Some(at * 64 + bit)
    }

    /// Removes every page from `first` on.
    fn truncate(&mut self, first: usize) {
        for page in first..self.bits.len() * 64 {
            let word = &mut self.bits[page / 64];
            if *word & (1 << (page % 64)) != 0 {
                *word &= !(1 << (page % 64));
                self.len -= 1;
            }
        }
        self.bits.truncate(first.div_ceil(64));
        if self.len == 0 {
            self.bits = Vec::new();
        }
    }

    fn pages(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(at, &word)| {
            (0..64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| at * 64 + bit)
        })
    }
}

impl ProcessTable {
    /// A table for at most `max` processes of VM `vm`, whose processes run on `schedulers`
    /// schedulers.
    pub(crate) fn new(vm: u32, max: usize, schedulers: usize) -> ProcessTable {
        let last_index = u32::try_from(max.saturating_sub(1)).unwrap_or(u32::MAX);
        let segment_count = (locate(last_index).0 + 1).min(SEGMENTS);
        ProcessTable {
            segments: (0..segment_count).map(|_| OnceLock::new()).collect(),
            free: (0..=schedulers).map(|_| FreeShard::new()).collect(),
            next_fresh: Padded(AtomicU32::new(0)),
            floor: AtomicU64::new(0),
            discarded: Mutex::new(DiscardedPages::default()),
            discarded_pages: AtomicUsize::new(0),
            available: Padded(AtomicUsize::new(max)),
            max,
            vm,
        }
    }

    fn entry(&self, index: u32) -> Option<&Entry> {
        let (segment, offset) = locate(index);
        self.segments.get(segment)?.get()?.entries().get(offset)
    }

    fn entry_or_create(&self, index: u32) -> &Entry {
        let (segment, offset) = locate(index);
        let entries = self.segments[segment].get_or_init(|| Segment::new(segment_len(segment)));
        &entries.entries()[offset]
    }

    /// Counts one more process, spending credit of shard `shard` (the caller's,
    /// [`shard_of`](Self::shard_of)). Returns `false` at the limit: when the table holds (or
    /// has reserved) `max` processes, since at the limit it takes the last units of credit
    /// from the other shards. (A spawn racing with exits on other schedulers may see the limit
    /// a moment before their room is back, as with any limit checked while others change it;
    /// an exit that happened before the spawn is always counted.)
    pub(crate) fn reserve(&self, shard: usize) -> bool {
        let own = &self.free[shard];
        if own.spend() {
            return true;
        }
        // Relaxed (all three): counters of room, as in `spend`.
        if let Ok(before) =
            self.available
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |available| {
                    (available > 0).then(|| available - available.min(CREDIT_BATCH))
                })
        {
            let taken = before.min(CREDIT_BATCH);
            own.credit.fetch_add(taken - 1, Ordering::Relaxed);
            return true;
        }
        self.free.iter().any(FreeShard::spend)
    }

    /// One process fewer (it left the table, or its reservation is given up), counted on
    /// shard `shard`: its credit grows, and beyond two batches one batch goes back to the
    /// shared pool for the other shards.
    fn release(&self, shard: usize) {
        let own = &self.free[shard];
        // Relaxed (both): counters of room, as in `spend`.
        let credit = own.credit.fetch_add(1, Ordering::Relaxed) + 1;
        if credit > 2 * CREDIT_BATCH
            && own
                .credit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |credit| {
                    credit.checked_sub(CREDIT_BATCH)
                })
                .is_ok()
        {
            self.available.fetch_add(CREDIT_BATCH, Ordering::Relaxed);
        }
    }

    /// The free-index shard of the calling thread: its scheduler's, given the index of the
    /// worker it runs (`None` outside the VM's workers), or the shared last one.
    pub(crate) fn shard_of(&self, worker: Option<usize>) -> usize {
        let shared = self.free.len() - 1;
        worker.map_or(shared, |worker| worker.min(shared))
    }

    /// Allocates a pid for a reserved process; `make` builds the process knowing its pid.
    /// `shard` is the caller's free-index shard ([`shard_of`](Self::shard_of)). `reused`: the
    /// index of the recycled control block the process will be made in (invariant 4), if any.
    pub(crate) fn insert(
        &self,
        shard: usize,
        reused: Option<u32>,
        make: impl FnOnce(Pid) -> Handle<Process>,
    ) -> Handle<Process> {
        let mut fresh = false;
        let index = reused
            .or_else(|| self.take_free(shard))
            .or_else(|| self.take_discarded(shard))
            .unwrap_or_else(|| {
                fresh = true;
                // Acquire: pairs with the Release of `give_back`'s lowering of the mark, so that
                // an index it discarded is reused only after its `floor` (the entry itself is
                // published under its own lock).
                self.next_fresh.fetch_add(1, Ordering::Acquire)
            });
        let entry = self.entry_or_create(index);
        if fresh {
            let (segment, offset) = locate(index);
            if segment >= 2 && offset.is_multiple_of(COMMIT_ENTRIES) {
                // The segment exists: `entry_or_create` made it.
                if let Some(entries) = self.segments[segment].get() {
                    entries.commit_ahead(offset);
                }
            }
        }
        let mut state = entry.write();
        // Relaxed: `floor` was raised before the index could reach us: under the free shards'
        // locks or the discarded set's, or before the mark that handed it out (see above).
        let floor = self.floor.load(Ordering::Relaxed);
        let generation = (*state.generation()).max(floor) + 1;
        *state.generation() = generation;
        let process = make(Pid::new(self.vm, index, generation));
        *state.process() = Some(process.clone());
        process
    }

    /// The live process with this pid.
    pub(crate) fn get(&self, pid: Pid) -> Option<Handle<Process>> {
        self.with(pid, Handle::clone)
    }

    /// Calls `f` with the live process with this pid, under its entry's read lock, without
    /// taking a reference count (a send's hot path: two atomic operations fewer than [`get`]).
    /// `f` may run on several threads at once for one process; it must be short and must not
    /// touch the table (a writer waiting on the entry would deadlock it); it may take the
    /// process's own locks (the mailbox) and wake it. Returns `None` if the pid is dead.
    ///
    /// [`get`]: ProcessTable::get
    pub(crate) fn with<R>(&self, pid: Pid, f: impl FnOnce(&Handle<Process>) -> R) -> Option<R> {
        if pid.vm != self.vm {
            return None;
        }
        let state = self.entry(pid.index)?.read();
        if state.generation() != pid.generation {
            return None;
        }
        state.process().map(f)
    }

    /// Removes the process with this pid (it is ending), counting it on shard `shard` (the
    /// caller's, [`shard_of`](Self::shard_of)). Its index stays with its control block
    /// (invariant 4).
    pub(crate) fn remove(&self, pid: Pid, shard: usize) -> Option<Handle<Process>> {
        let removed = {
            let mut state = self.entry(pid.index)?.write();
            if *state.generation() != pid.generation {
                return None;
            }
            state.process().take()
        };
        if removed.is_some() {
            self.release(shard);
        }
        removed
    }

    /// A control block that held `index` is gone (invariant 4): the index goes to free-index
    /// shard `shard` (the caller's, [`shard_of`](Self::shard_of)).
    pub(crate) fn free_index(&self, index: u32, shard: usize) {
        self.free[shard].push(index);
    }

    /// A free index: from shard `shard` if it has one, else from the first other shard that
    /// does (so an index freed on one scheduler is reused when spawns happen on another).
    fn take_free(&self, shard: usize) -> Option<u32> {
        let shards = self.free.len();
        (0..shards).find_map(|offset| self.free[(shard + offset) % shards].pop())
    }

    /// The first index of the lowest discarded page, whose other indices go to shard `shard`
    /// (invariant 5: they leave the page's set and enter a shard at once, under the set's
    /// lock and then the shard's; nothing else holds both).
    fn take_discarded(&self, shard: usize) -> Option<u32> {
        // Relaxed: see the field.
        if self.discarded_pages.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let page = {
            let mut discarded = self.discarded.lock().unwrap_or_else(|e| e.into_inner());
            let page = discarded.pop_lowest()?;
            // Relaxed: see the field.
            self.discarded_pages.store(discarded.len, Ordering::Relaxed);
            page
        };
        let first = page * ENTRIES_PER_PAGE;
        let shard = &self.free[shard];
        let mut indices = shard.indices.lock().unwrap_or_else(|e| e.into_inner());
        // Highest first: the shard is LIFO, so the page fills from its bottom.
        indices.extend(
            (first + 1..first + ENTRIES_PER_PAGE)
                .rev()
                .map(|index| index as u32),
        );
        // Relaxed: see `FreeShard::len`.
        shard.len.store(indices.len(), Ordering::Relaxed);
        Some(first as u32)
    }

    /// Pages given back below the fresh mark (for tests).
    #[cfg(test)]
    pub(crate) fn discarded_pages(&self) -> usize {
        // Relaxed: a statistic.
        self.discarded_pages.load(Ordering::Relaxed)
    }

    /// Indices ever used: the table's high-water mark (for tests).
    #[cfg(test)]
    pub(crate) fn indices_used(&self) -> u32 {
        // Relaxed: a statistic.
        self.next_fresh.load(Ordering::Relaxed)
    }

    /// The most processes the table holds at once (`max_processes`).
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Processes in the table (and reserved): exact when no spawn or exit runs meanwhile.
    pub(crate) fn len(&self) -> usize {
        // Relaxed: a statistic.
        let credit: usize = self
            .free
            .iter()
            .map(|shard| shard.credit.load(Ordering::Relaxed))
            .sum();
        self.max
            .saturating_sub(self.available.load(Ordering::Relaxed))
            .saturating_sub(credit)
    }

    /// The entries that may hold a process: those below the fresh mark (invariant 5) and off
    /// the `discarded` pages, so a walk never touches (and faults back in) a given-back page.
    /// The caller holds the discarded set's lock for the walk, or owns the table.
    fn used_entries<'a>(
        &'a self,
        discarded: &'a DiscardedPages,
    ) -> impl Iterator<Item = (u32, &'a Entry)> {
        // Acquire: pairs with `insert`'s increment (an entry below the mark was made).
        let fresh = self.next_fresh.load(Ordering::Acquire);
        self.segments
            .iter()
            .enumerate()
            .map_while(move |(segment, entries)| {
                let first = first_index(segment);
                (first < fresh).then(|| {
                    let entries = entries.get().map_or(&[][..], Segment::entries);
                    let used = entries.len().min((fresh - first) as usize);
                    (first..).zip(&entries[..used])
                })
            })
            .flatten()
            .filter(|&(index, _)| !discarded.contains(index as usize / ENTRIES_PER_PAGE))
    }

    /// Every live process, in index order.
    pub(crate) fn processes(&self) -> Vec<Handle<Process>> {
        // Held for the walk: no discarded page is taken (and filled) meanwhile.
        let discarded = self.discarded.lock().unwrap_or_else(|e| e.into_inner());
        self.used_entries(&discarded)
            .filter_map(|(_, entry)| entry.read().process().cloned())
            .collect()
    }

    /// Every live pid, in index order.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let mut pids = Vec::with_capacity(self.len());
        // Held for the walk, as in `processes`.
        let discarded = self.discarded.lock().unwrap_or_else(|e| e.into_inner());
        for (index, entry) in self.used_entries(&discarded) {
            let state = entry.read();
            if state.process().is_some() {
                pids.push(Pid::new(self.vm, index, state.generation()));
            }
        }
        pids
    }

    /// Gives back the memory of free entries: lowers the fresh mark to just above the highest
    /// index in use and discards the whole pages above it, discards the pages below it whose
    /// entries are all free, and shrinks the free shards. Called by the idle pass that gives
    /// memory back (see the module docs). Discards nothing unless at least [`MIN_DISCARD`]
    /// entries at the top, or as many on wholly free pages below, are free.
    pub(crate) fn give_back(&self) {
        // Shards in index order, then the discarded set (nothing else holds two of these
        // locks): while we hold them, no free index or discarded page is taken or added.
        let mut shards: Vec<MutexGuard<'_, Vec<u32>>> = self
            .free
            .iter()
            .map(|shard| shard.indices.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut discarded = self.discarded.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: a spawn that takes a fresh index meanwhile makes the compare-and-swap below
        // fail; nothing is read through the mark before it.
        let fresh = self.next_fresh.load(Ordering::Relaxed) as usize;
        let in_shards: usize = shards.iter().map(|indices| indices.len()).sum();
        if in_shards < MIN_DISCARD && discarded.len == 0 {
            return;
        }
        // Every free index below the mark (invariant 5: it is then held by no block and no
        // process), one bit each; a page is two words.
        let mut free = vec![0u64; fresh.div_ceil(64)];
        for &index in shards.iter().flat_map(|indices| indices.iter()) {
            free[index as usize / 64] |= 1 << (index % 64);
        }
        const WORDS_PER_PAGE: usize = ENTRIES_PER_PAGE / 64;
        for page in discarded.pages() {
            free[page * WORDS_PER_PAGE..(page + 1) * WORDS_PER_PAGE].fill(u64::MAX);
        }
        // The top: the lowest `low` with every index in `low..fresh` free.
        let mut low = fresh;
        while low > 0 && free[(low - 1) / 64] & (1 << ((low - 1) % 64)) != 0 {
            low -= 1;
        }
        let top = fresh - low >= MIN_DISCARD;
        let below = if top { low } else { fresh };
        // Below it: whole pages of free entries not given back yet.
        let interior: Vec<usize> = (0..below / ENTRIES_PER_PAGE)
            .filter(|&page| {
                !discarded.contains(page)
                    && free[page * WORDS_PER_PAGE..(page + 1) * WORDS_PER_PAGE]
                        .iter()
                        .all(|&word| word == u64::MAX)
            })
            .collect();
        let interior = if interior.len() * ENTRIES_PER_PAGE >= MIN_DISCARD {
            interior
        } else {
            Vec::new()
        };
        if !top && interior.is_empty() {
            return;
        }
        // The top's whole pages, but for those given back already (their entries are zero;
        // locking them would fault them in again).
        let top_pages: Vec<usize> = if top {
            (low.div_ceil(ENTRIES_PER_PAGE)..fresh / ENTRIES_PER_PAGE)
                .filter(|&page| !discarded.contains(page))
                .collect()
        } else {
            Vec::new()
        };
        let highest = self
            .discard_pages(&interior)
            .max(self.discard_pages(&top_pages));
        // Release (both): pairs with `insert`'s loads, through the shard locks or the set's
        // lock we hold, or the mark's Acquire (invariant 1 holds before any discarded entry is
        // reused).
        self.floor.fetch_max(highest, Ordering::Release);
        for &page in &interior {
            discarded.insert(page);
        }
        let lowered = top
            && self
                .next_fresh
                .compare_exchange(
                    fresh as u32,
                    low as u32,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok();
        // If a spawn took a fresh index meanwhile, the mark stays: the top's discarded entries
        // stay in the shards, free, to be reused (empty entries are valid).
        if lowered {
            // Wholly free pages at or above `low` start at or above it (`low` is the lowest
            // index of the free run that reaches the mark).
            discarded.truncate(low.div_ceil(ENTRIES_PER_PAGE));
        }
        // Relaxed: see the field.
        self.discarded_pages.store(discarded.len, Ordering::Relaxed);
        let limit = if lowered { low } else { fresh };
        for (indices, shard) in shards.iter_mut().zip(self.free.iter()) {
            indices.retain(|&index| {
                (index as usize) < limit && !discarded.contains(index as usize / ENTRIES_PER_PAGE)
            });
            let kept = indices.len();
            indices.shrink_to(kept.max(MIN_DISCARD));
            // Relaxed: see `FreeShard::len`.
            shard.len.store(indices.len(), Ordering::Relaxed);
        }
    }

    /// Discards the pages `pages` (ascending; every entry on them free) and returns the highest
    /// generation they held. One `madvise` per run of adjacent pages in one segment.
    fn discard_pages(&self, pages: &[usize]) -> u64 {
        let mut highest = 0;
        let mut rest = pages;
        while let Some(&first) = rest.first() {
            let (segment, offset) = locate((first * ENTRIES_PER_PAGE) as u32);
            let segment_end =
                (first_index(segment) as usize + segment_len(segment)) / ENTRIES_PER_PAGE;
            let run = rest
                .iter()
                .enumerate()
                .take_while(|&(at, &page)| page == first + at && page < segment_end)
                .count();
            if let Some(entries) = self.segments[segment].get() {
                highest = highest.max(entries.discard(offset..offset + run * ENTRIES_PER_PAGE));
            }
            rest = &rest[run..];
        }
        highest
    }
}

impl Drop for ProcessTable {
    fn drop(&mut self) {
        // Only entries below the fresh mark can hold a process (invariant 5): the pages above
        // are never touched again. The segments' mappings go with them.
        let discarded = std::mem::take(self.discarded.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (_, entry) in self.used_entries(&discarded) {
            drop(entry.write().process().take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every process costs an entry; keep it from growing by accident (W2's bytes per process),
    /// and whole entries fill a page (discards are by page).
    #[test]
    fn an_entry_stays_small() {
        assert!(std::mem::size_of::<Entry>() <= 32);
        assert_eq!(PAGE % std::mem::size_of::<Entry>(), 0);
        assert_eq!(std::mem::size_of::<Option<Handle<Process>>>(), 8);
    }

    /// A fresh segment's entries, and a discarded page's, are empty and unlocked: a reader and
    /// a writer take them at once, and their generations restart at 0 (the floor covers that).
    #[test]
    fn zero_pages_are_empty_entries_and_discards_report_the_highest_generation() {
        let segment = Segment::new(segment_len(0));
        for entry in segment.entries() {
            let state = entry.read();
            assert_eq!(state.generation(), 0);
            assert!(state.process().is_none());
        }
        for (n, entry) in segment.entries().iter().enumerate() {
            *entry.write().generation() = n as u64 + 1;
        }
        // Entries 100..700 cover pages 1..5 wholly (128 entries a page): only those go.
        let highest = segment.discard(100..700);
        assert_eq!(
            highest, 640,
            "the highest generation on the discarded pages"
        );
        for (n, entry) in segment.entries().iter().enumerate() {
            let expected = if (128..640).contains(&n) {
                0
            } else {
                n as u64 + 1
            };
            let mut state = entry.write();
            assert_eq!(*state.generation(), expected, "entry {n}");
            assert!(state.process().is_none());
        }
    }

    /// The entry lock excludes writers from each other and from readers, under contention.
    #[test]
    fn the_discarded_set_hands_out_its_lowest_page_and_truncates() {
        let mut set = DiscardedPages::default();
        for page in [130, 3, 64, 3, 200] {
            set.insert(page);
        }
        assert_eq!(set.len, 4, "a page is in the set once");
        assert_eq!(set.pages().collect::<Vec<_>>(), [3, 64, 130, 200]);
        assert!(set.contains(64) && !set.contains(65) && !set.contains(10_000));
        assert_eq!(set.pop_lowest(), Some(3));
        set.truncate(130);
        assert_eq!(set.pages().collect::<Vec<_>>(), [64]);
        assert_eq!(set.len, 1);
        assert_eq!(set.pop_lowest(), Some(64));
        assert_eq!(set.pop_lowest(), None);
        assert_eq!(set.len, 0);
    }

    #[test]
    fn the_entry_lock_is_exclusive_for_writers() {
        let segment = Segment::new(segment_len(0));
        let entry = &segment.entries()[7];
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 20_000;
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                scope.spawn(move || {
                    for round in 0..ROUNDS {
                        if (round + thread) % 3 == 0 {
                            // A reader sees an even count: writers add 2 in two steps.
                            assert_eq!(entry.read().generation() % 2, 0);
                        } else {
                            let mut state = entry.write();
                            *state.generation() += 1;
                            std::hint::spin_loop();
                            *state.generation() += 1;
                        }
                    }
                });
            }
        });
        let writes = (0..THREADS)
            .map(|thread| {
                (0..ROUNDS)
                    .filter(|round| (round + thread) % 3 != 0)
                    .count() as u64
            })
            .sum::<u64>();
        assert_eq!(entry.read().generation(), 2 * writes);
    }

    /// Spawn credit lives in the shards, yet the limit is exact: whichever shard the room was
    /// freed on, a spawn on any shard finds it, and not one more; the count is exact whenever
    /// nothing runs meanwhile.
    #[test]
    fn the_limit_is_exact_whichever_shard_holds_the_room() {
        for max in [1, 5, CREDIT_BATCH, 3 * CREDIT_BATCH + 7, 1000] {
            let table = ProcessTable::new(0, max, 2);
            let reserved = (0..).take_while(|_| table.reserve(0)).count();
            assert_eq!(reserved, max, "max {max}: shard 0 alone");
            assert_eq!(table.len(), max);
            // Room freed on shard 1 (more than two batches: some goes back to the shared pool),
            // spent from shard 2.
            let freed = max.min(2 * CREDIT_BATCH + 3);
            for _ in 0..freed {
                table.release(1);
            }
            assert_eq!(table.len(), max - freed);
            let respawned = (0..).take_while(|_| table.reserve(2)).count();
            assert_eq!(respawned, freed, "max {max}: room freed on another shard");
            assert_eq!(table.len(), max);
            // Everything ends on shard 0; all of it is usable from shard 1.
            for _ in 0..max {
                table.release(0);
            }
            assert_eq!(table.len(), 0);
            assert_eq!((0..).take_while(|_| table.reserve(1)).count(), max);
        }
    }

    #[test]
    fn segments_double_and_cover_every_index() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        assert_eq!(locate(u32::MAX).0, SEGMENTS - 1);
        for segment in 0..SEGMENTS - 1 {
            let first = first_index(segment);
            assert_eq!(locate(first), (segment, 0));
            let last = first_index(segment + 1) - 1;
            assert_eq!(
                locate(last),
                (segment, (1 << (FIRST_SEGMENT_BITS as usize + segment)) - 1)
            );
        }
    }

    /// A spawn that takes the first fresh index of a stretch of [`COMMIT_ENTRIES`] (from the
    /// third segment on) commits the stretch's pages at once: the spawns after it take no page
    /// fault on their entries.
    #[test]
    fn fresh_indices_commit_their_entries_ahead() {
        use crate::control_block::current;
        use crate::{receive, send, spawn, Vm};
        let vm = Vm::builder().schedulers(1).build().unwrap();
        let resident = vm
            .run(|| {
                // Parked processes keep their indices, so every spawn takes a fresh one: the
                // root has index 0, the last child the second of segment 2.
                let children = first_index(2) as usize + 1;
                let pids: Vec<crate::Pid> = (0..children).map(|_| spawn(receive::<()>)).collect();
                let table = &current("test").vm.table;
                let segment = table.segments[2].get().expect("segment 2 is in use");
                // The pages after the first (which entries 0 and 1 share): committed, never
                // written.
                let size = std::mem::size_of::<Entry>();
                let ahead = segment.pages.as_ptr() as usize + 4096;
                let resident = crate::resident::resident_pages(ahead, COMMIT_ENTRIES * size - 4096);
                for pid in pids {
                    send(pid, ());
                }
                resident
            })
            .unwrap();
        let pages = (COMMIT_ENTRIES * std::mem::size_of::<Entry>() - 4096) / 4096;
        assert_eq!(
            resident, pages,
            "pages of the stretch resident after two entries"
        );
    }

    #[test]
    fn a_table_reaches_exactly_max_entries() {
        for max in [1, 1024, 1025, 3072, 3073, 1_000_000] {
            let table = ProcessTable::new(0, max, 2);
            let reachable: usize = (0..table.segments.len())
                .map(|s| 1usize << (FIRST_SEGMENT_BITS as usize + s))
                .sum();
            assert!(reachable >= max, "max {max}: only {reachable} entries");
            assert!(
                reachable < 2 * max + 2048,
                "max {max}: {reachable} entries is too many"
            );
        }
    }
}
