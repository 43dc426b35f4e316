//! The process table: pids to processes, with generational entries.
//!
//! # Invariants
//!
//! 1. An entry's generation only grows; a pid addresses an entry's process only while the
//!    generations match, so a dead pid never addresses a later process.
//! 2. An entry holds its process from `insert` until `remove`, which the process itself does as
//!    the first step of ending; a process's pid is alive exactly while its entry holds it.
//! 3. At most `max` entries hold a process at once (`reserve` before `insert`).
//!
//! Entries live in segments allocated on first use, so the table costs memory in proportion to
//! the most processes alive at once, not to `max`.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::control_block::Process;
use crate::pid::Pid;

/// Entries per segment. 64 Ki entries × 24 bytes = 1.5 MiB per segment; guessed as a balance
/// between the cost of an empty VM and the number of segments at 4 M processes (64).
const SEGMENT_BITS: u32 = 16;
const SEGMENT_LEN: usize = 1 << SEGMENT_BITS;

struct EntryState {
    generation: u64,
    process: Option<Arc<Process>>,
}

type Entry = Mutex<EntryState>;

/// The process table of one VM.
pub(crate) struct ProcessTable {
    /// Segments of entries; segment `s` holds indices `[s * SEGMENT_LEN, (s+1) * SEGMENT_LEN)`.
    segments: Box<[OnceLock<Box<[Entry]>>]>,
    /// Free indices to reuse, sharded by index so that spawns and exits on different workers
    /// rarely meet on a lock. Each shard is LIFO (for cache locality), under its mutex.
    free: [Mutex<Vec<u32>>; FREE_SHARDS],
    /// The first never-used index. Any thread, atomically.
    next_fresh: AtomicU32,
    /// Indices in the free shards (a hint: lets `insert` skip scanning sixteen empty shards).
    /// Relaxed: a stale zero only means a fresh index is used where a free one existed.
    free_len: AtomicUsize,
    /// Processes in the table (and reserved slots). Any thread, atomically.
    count: AtomicUsize,
    /// Most processes at once.
    max: usize,
    /// The VM's id, stamped into every pid.
    vm: u32,
}

/// Shards of the free-index list. Guessed: a power of two well above the worker count, so two
/// workers seldom pick the same shard.
const FREE_SHARDS: usize = 16;

impl ProcessTable {
    pub(crate) fn new(vm: u32, max: usize) -> ProcessTable {
        let segment_count = max.div_ceil(SEGMENT_LEN);
        ProcessTable {
            segments: (0..segment_count).map(|_| OnceLock::new()).collect(),
            free: std::array::from_fn(|_| Mutex::new(Vec::new())),
            next_fresh: AtomicU32::new(0),
            free_len: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            max,
            vm,
        }
    }

    fn entry(&self, index: u32) -> Option<&Entry> {
        let segment = self.segments.get((index >> SEGMENT_BITS) as usize)?;
        let entries = segment.get()?;
        entries.get(index as usize & (SEGMENT_LEN - 1))
    }

    fn entry_or_create(&self, index: u32) -> &Entry {
        let segment = &self.segments[(index >> SEGMENT_BITS) as usize];
        let entries = segment.get_or_init(|| {
            (0..SEGMENT_LEN)
                .map(|_| {
                    Mutex::new(EntryState {
                        generation: 0,
                        process: None,
                    })
                })
                .collect()
        });
        &entries[index as usize & (SEGMENT_LEN - 1)]
    }

    /// Counts one more process. Returns `false` at the limit.
    pub(crate) fn reserve(&self) -> bool {
        // Relaxed: a counter; the limit is approximate only under a race of the last slots,
        // where the fetch_add/fetch_sub pair keeps it exact.
        let previous = self.count.fetch_add(1, Ordering::Relaxed);
        if previous >= self.max {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Allocates a pid for a reserved process; `make` builds the process knowing its pid.
    /// `hint` spreads concurrent callers over the free-list shards (any number will do).
    pub(crate) fn insert(
        &self,
        hint: usize,
        make: impl FnOnce(Pid) -> Arc<Process>,
    ) -> Arc<Process> {
        let index = self.take_free(hint).unwrap_or_else(|| {
            // Relaxed: only uniqueness matters; the entry is published under its own lock.
            self.next_fresh.fetch_add(1, Ordering::Relaxed)
        });
        let entry = self.entry_or_create(index);
        let mut state = entry.lock().unwrap_or_else(|e| e.into_inner());
        state.generation += 1;
        let process = make(Pid::new(self.vm, index, state.generation));
        state.process = Some(process.clone());
        process
    }

    /// The live process with this pid.
    pub(crate) fn get(&self, pid: Pid) -> Option<Arc<Process>> {
        if pid.vm != self.vm {
            return None;
        }
        let state = self
            .entry(pid.index)?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if state.generation != pid.generation {
            return None;
        }
        state.process.clone()
    }

    /// Removes the process with this pid (it is ending).
    pub(crate) fn remove(&self, pid: Pid) -> Option<Arc<Process>> {
        let removed = {
            let mut state = self
                .entry(pid.index)?
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if state.generation != pid.generation {
                return None;
            }
            state.process.take()
        };
        if removed.is_some() {
            self.free[pid.index as usize % FREE_SHARDS]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pid.index);
            self.free_len.fetch_add(1, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// A free index from the first shard, starting at `hint`, that is neither empty nor busy.
    fn take_free(&self, hint: usize) -> Option<u32> {
        // Relaxed: see the field.
        if self.free_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let index = (0..FREE_SHARDS).find_map(|offset| {
            let shard = &self.free[(hint + offset) % FREE_SHARDS];
            shard.try_lock().ok()?.pop()
        })?;
        self.free_len.fetch_sub(1, Ordering::Relaxed);
        Some(index)
    }

    /// Processes in the table.
    pub(crate) fn len(&self) -> usize {
        // Relaxed: a statistic.
        self.count.load(Ordering::Relaxed)
    }

    /// Every live process, in index order.
    pub(crate) fn processes(&self) -> Vec<Arc<Process>> {
        let mut all = Vec::new();
        for segment in self.segments.iter() {
            let Some(entries) = segment.get() else { break };
            for entry in entries.iter() {
                if let Some(process) = &entry.lock().unwrap_or_else(|e| e.into_inner()).process {
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
            let Some(entries) = segment.get() else { break };
            for (offset, entry) in entries.iter().enumerate() {
                let state = entry.lock().unwrap_or_else(|e| e.into_inner());
                if state.process.is_some() {
                    let index = ((segment_index << SEGMENT_BITS) | offset) as u32;
                    pids.push(Pid::new(self.vm, index, state.generation));
                }
            }
        }
        pids
    }
}
