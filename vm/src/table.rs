//! The process table: pids to processes, with generational entries.
//!
//! # Invariants
//!
//! 1. An entry's generation only grows; a pid addresses an entry's process only while the
//!    generations match, so a dead pid never addresses a later process.
//! 2. An entry holds its process from `insert` until `remove`, which the process itself does as
//!    the first step of ending; a process's pid is alive exactly while its entry holds it.
//! 3. At most `max` entries hold a process at once (`reserve` before `insert`).
//! 4. An index belongs to one control block from `insert` until the block is dropped (its
//!    `Drop` calls `free_index`): a finished process's block that the schedulers keep for
//!    reuse keeps its index, and the next process made in that block takes the same index with
//!    the next generation, without touching the free lists.
//!
//! Entries live in segments allocated on first use, each twice the size of the one before
//! (1 Ki entries, then 2 Ki, 4 Ki, ...), so the table costs memory in proportion to the most
//! processes alive at once (within a factor of two), not to `max`: 32 KiB for a VM that never
//! held more than 1,024 processes, 32 MiB at a million.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use starling_scheduler::{Handle, Padded};

use crate::control_block::Process;
use crate::pid::Pid;

/// Entries in the first segment (log2); segment `s` holds `1 << (FIRST_SEGMENT_BITS + s)`.
/// 1 Ki entries × 32 bytes = 32 KiB: what an empty VM pays.
const FIRST_SEGMENT_BITS: u32 = 10;

/// Segments enough for every `u32` index.
const SEGMENTS: usize = (u32::BITS + 1 - FIRST_SEGMENT_BITS) as usize;

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

struct EntryState {
    generation: u64,
    process: Option<Handle<Process>>,
}

/// A reader-writer lock: `insert` and `remove` write (the process itself, once each), while
/// senders only read, so any number of them deliver to one process at once. (With a mutex, W1's
/// million children sending to one root queued on its entry from both cores and slept on the
/// futex: ~10 % of W1's time; the read lock made W1 ~15 % faster. It costs 8 bytes per entry.)
type Entry = RwLock<EntryState>;

/// The process table of one VM.
pub(crate) struct ProcessTable {
    /// Segments of entries (see [`locate`]); only those `max` can reach exist.
    segments: Box<[OnceLock<Box<[Entry]>>]>,
    /// Free indices to reuse, one shard per scheduler plus one for everyone else (spare
    /// threads, threads outside the VM): an exit frees its index into its own scheduler's shard
    /// and a spawn takes from its own first, so the common path takes a lock no other core has
    /// touched lately. Each shard is LIFO (for cache locality), under its mutex.
    free: Box<[FreeShard]>,
    /// The first never-used index. Any thread, atomically.
    next_fresh: Padded<AtomicU32>,
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
            available: Padded(AtomicUsize::new(max)),
            max,
            vm,
        }
    }

    fn entry(&self, index: u32) -> Option<&Entry> {
        let (segment, offset) = locate(index);
        self.segments.get(segment)?.get()?.get(offset)
    }

    fn entry_or_create(&self, index: u32) -> &Entry {
        let (segment, offset) = locate(index);
        let entries = self.segments[segment].get_or_init(|| {
            (0..1usize << (FIRST_SEGMENT_BITS as usize + segment))
                .map(|_| {
                    RwLock::new(EntryState {
                        generation: 0,
                        process: None,
                    })
                })
                .collect()
        });
        &entries[offset]
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
        let index = reused.or_else(|| self.take_free(shard)).unwrap_or_else(|| {
            // Relaxed: only uniqueness matters; the entry is published under its own lock.
            self.next_fresh.fetch_add(1, Ordering::Relaxed)
        });
        let entry = self.entry_or_create(index);
        let mut state = entry.write().unwrap_or_else(|e| e.into_inner());
        state.generation += 1;
        let process = make(Pid::new(self.vm, index, state.generation));
        state.process = Some(process.clone());
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
        let state = self
            .entry(pid.index)?
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if state.generation != pid.generation {
            return None;
        }
        state.process.as_ref().map(f)
    }

    /// Removes the process with this pid (it is ending), counting it on shard `shard` (the
    /// caller's, [`shard_of`](Self::shard_of)). Its index stays with its control block
    /// (invariant 4).
    pub(crate) fn remove(&self, pid: Pid, shard: usize) -> Option<Handle<Process>> {
        let removed = {
            let mut state = self
                .entry(pid.index)?
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if state.generation != pid.generation {
                return None;
            }
            state.process.take()
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

    /// Indices ever used: the table's high-water mark (for tests).
    #[cfg(test)]
    pub(crate) fn indices_used(&self) -> u32 {
        // Relaxed: a statistic.
        self.next_fresh.load(Ordering::Relaxed)
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

    /// Every live process, in index order.
    pub(crate) fn processes(&self) -> Vec<Handle<Process>> {
        let mut all = Vec::new();
        for segment in self.segments.iter() {
            let Some(entries) = segment.get() else {
                continue;
            };
            for entry in entries.iter() {
                if let Some(process) = &entry.read().unwrap_or_else(|e| e.into_inner()).process {
                    all.push(process.clone());
                }
            }
        }
        all
    }

    /// Every live pid, in index order.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let mut pids = Vec::with_capacity(self.len());
        for (segment_index, segment) in self.segments.iter().enumerate() {
            let Some(entries) = segment.get() else {
                continue;
            };
            for (offset, entry) in entries.iter().enumerate() {
                let state = entry.read().unwrap_or_else(|e| e.into_inner());
                if state.process.is_some() {
                    let index = first_index(segment_index) + offset as u32;
                    pids.push(Pid::new(self.vm, index, state.generation));
                }
            }
        }
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every process costs an entry; keep it from growing by accident (W2's bytes per process).
    #[test]
    fn an_entry_stays_small() {
        assert!(std::mem::size_of::<Entry>() <= 32);
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
