//! Stack slots: guarded, warm stack memory shared by many processes through copy-out eviction.
//!
//! # Problem
//!
//! A stack with a guard page costs two kernel memory mappings, and `vm.max_map_count` is 65,530
//! by default, so at most ~32,750 guarded stacks can exist at once. A fresh stack also costs an
//! `mmap` + `mprotect` (5–6.5 µs) and a page fault on first touch (≥ 1.8 µs), which is far more
//! than the rest of a spawn. Yet we want millions of processes, each with a guarded stack that
//! can hold 200 KiB of frames, and a parked process that costs only the bytes it uses.
//!
//! # Solution
//!
//! The pool reserves one region of `max_slots × slot_size` bytes of address space (`PROT_NONE`,
//! one mapping) and turns slots read-write on demand, keeping the lowest page of each slot as
//! its guard page:
//!
//! ```text
//!  region base                                                       region end
//!  +-------+-----------------+-------+-----------------+-------+--------------- -
//!  | guard |  slot 0 stack   | guard |  slot 1 stack   | guard |  not enabled yet
//!  | NONE  |  READ|WRITE     | NONE  |  READ|WRITE     | NONE  |  NONE
//!  +-------+-----------------+-------+-----------------+-------+--------------- -
//!          ^ limit     base ^        (stacks grow down, towards their guard page)
//! ```
//!
//! Every process gets a *home slot* when it first runs and always runs at that address, so
//! pointers into its stack stay valid and it may still migrate between worker threads. The home
//! is a free slot if there is one, else a newly enabled one, else, once the pool is full, a
//! slot shared with other processes, picked from a window of slots that the worker's cache
//! still holds ([`ShareCursor`]). A slot
//! holds the frames of one process at a time, the *resident*. When another process homed on the
//! same slot must run, the parked resident's live bytes (from its saved stack pointer to the
//! slot's base: a few hundred bytes) are copied into a buffer owned by that process (from the
//! saved-frames store, `frames.rs`), and
//! the incoming process's buffer is copied back in. A process that keeps running never copies;
//! a million parked processes cost only their live bytes.
//!
//! ```text
//!  slot base (highest address) +--------------------------+
//!                              | corosensei parent link,  |
//!                              | initial frame, closure   |  <- live range copied on eviction:
//!                              | the process's frames ... |     [saved stack pointer, base)
//!                              | `fiber::suspend` frame   |
//!  saved stack pointer ------> | switch: RIP, RBX, RBP    |
//!                              +--------------------------+
//!                              |   dead (garbage)         |
//!  slot limit (guard page) --> +--------------------------+
//! ```
//!
//! The exact saved stack pointer is private to corosensei. We instead read the stack pointer in
//! [`crate::fiber::suspend`], the only function that ever suspends a coroutine, and subtract a
//! constant that [`live_frames_offset`] measures once per OS process by running that very
//! function on a pattern-filled stack and finding the lowest word it wrote (the switch's pushes).
//! The constant is a property of the compiled code, so it is right in debug and release builds
//! alike; a 32-byte margin is added on top.
//!
//! # Invariants
//!
//! 1. A slot's `busy` flag has one holder at a time. Only the holder reads or writes the slot's
//!    memory, its `resident`, and the saved-stack fields of any fiber homed on it.
//! 2. A fiber runs only in its home slot and only while its worker holds that slot.
//! 3. A coroutine is created, resumed and destroyed only while resident (corosensei touches its
//!    stack in all three); a parked coroutine is never dropped while evicted (see `Fiber`'s
//!    `Drop`).
//! 4. The resident of a slot is suspended in `fiber::suspend` (or has not been created yet)
//!    whenever the slot is not held.
//!
//! # Rejected alternatives
//!
//! - *One mmap'ed stack per process* (may, OS threads): dies at ~32 K processes on a stock kernel
//!   and pays mmap + mprotect + page faults per spawn.
//! - *Unguarded stacks packed into one mapping*: an overflow silently overwrites a neighbour.
//! - *Segmented/split stacks* (old Go): need compiler support Rust does not have.
//! - *Copying every parked process out immediately*: doubles the copies for hot pairs; eviction
//!   is lazy, so a ping-pong pair on two slots never copies.
//!
//! # Benchmark
//!
//! DESIGN.md's prototype of this scheme: a switch that must evict + restore costs 32–35 ns
//! against 23 ns without; 1 M coroutines parked on 4,096 slots cost 304 B each. See the
//! `context_switch` and `spawn_exit` benches.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use corosensei::stack::{Stack, StackPointer};

use crate::fiber::{self, Suspend};
use crate::handle::Handle;
use crate::Schedulable;

/// Size of the guard page at the bottom of every slot: one page, checked against
/// `sysconf(_SC_PAGESIZE)` when a pool is created.
pub(crate) const GUARD_SIZE: usize = crate::pages::PAGE;

/// Bytes copied below the calibrated lowest live word, in case a future corosensei pushes one
/// more register. Guessed; it costs ~1 ns per copy.
const COPY_MARGIN: usize = 16;

/// Slot states (`Slot::busy`).
///
/// `FREE`: nobody holds the slot; its resident, if any, is suspended.
const FREE: u32 = 0;
/// `BUSY`: a worker holds the slot (invariant 1) and nobody waits for it.
const BUSY: u32 = 1;
/// `CONTENDED`: a worker holds the slot and `waiters` may be non-empty; the releaser must drain
/// them under the `waiters` lock.
const CONTENDED: u32 = 2;

/// One stack slot's bookkeeping, on a cache line of its own: neighbouring slots are usually
/// held by processes on different workers, whose `busy` and `homed` updates would otherwise
/// take each other's line away.
#[repr(align(64))]
struct Slot<P> {
    /// `FREE` / `BUSY` / `CONTENDED`, any thread, atomically.
    busy: AtomicU32,
    /// Processes that were popped from a run queue while the slot was held. Under this mutex.
    waiters: Mutex<Vec<Handle<P>>>,
    /// The process whose frames are in the slot's memory. Only the holder of `busy`.
    resident: UnsafeCell<Option<Handle<P>>>,
    /// Number of live processes homed on this slot. Any thread, atomically.
    homed: AtomicU32,
    /// Used since it was last trimmed. Relaxed: a hint for `trim`; a missed store only delays
    /// giving memory back until the next use.
    dirty: AtomicBool,
}

/// The pool of stack slots of one runtime.
pub(crate) struct SlotPool<P> {
    /// Start of the reserved region (the guard page of slot 0).
    region: NonNull<u8>,
    /// Size of the reserved region in bytes.
    region_len: usize,
    /// Bytes per slot, guard page included.
    slot_size: usize,
    slots: Box<[Slot<P>]>,
    /// Slots `[0, enabled)` are mapped read-write. Read with Acquire, pairs with the Release
    /// store in `enable_slot` made after the `mprotect`.
    enabled: AtomicUsize,
    /// Serializes `mprotect` calls that enable slots.
    grow: Mutex<()>,
    /// Set once enabling a slot failed (out of kernel mappings or memory): the pool stops
    /// growing and its processes share the slots it has.
    grown_out: AtomicBool,
    /// Slots with no homed process, shared between workers. Under this mutex; entries may be
    /// stale (a slot re-homed by round robin), `claim_home` re-checks `homed`.
    free: Mutex<Vec<u32>>,
    /// Whether `free` may hold slots: written under its lock, read without it (Relaxed: a
    /// hint; a stale `false` only shares a slot where a free one was, a stale `true` costs a
    /// lock). Once every slot is homed (W2: a million processes parked on 4,096 slots), every
    /// claim found `free` empty, yet took its lock, whose line then moved between the workers
    /// at every first run.
    free_hint: AtomicBool,
    /// Bytes between the stack pointer read in `fiber::suspend` and the lowest live byte.
    live_offset: usize,
    /// Next slot `trim` looks at. Relaxed: any value is correct.
    trim_cursor: AtomicUsize,
    /// Our entry in the overflow handler's region list, if there was room.
    overflow_entry: Option<usize>,
}

// SAFETY: the raw region pointer is only used for address arithmetic and for memory that the
// slot protocol (invariant 1) hands to one thread at a time; `resident` is likewise only touched
// by the holder of `busy`, whose Acquire/Release transitions order the accesses.
unsafe impl<P: Send + Sync> Send for SlotPool<P> {}
// SAFETY: see `Send`.
unsafe impl<P: Send + Sync> Sync for SlotPool<P> {}

/// Slots a worker shares new homes among at a time once the pool is full. Their memory stays
/// in the worker's cache: 64 slots of a few KiB of touched stack each fit a core's L2.
const SHARE_WINDOW: usize = 64;

/// Homes each slot of a worker's window gets before the window moves on: with 64 slots, the
/// window moves every 1,024 homes, so over a long burst every slot gets its share.
const HOMES_PER_WINDOW_SLOT: usize = 16;

/// Where a worker shares its next home once the pool is full.
///
/// Sharing a slot evicts its parked resident (copies its frames out) and then runs the new
/// process over the same memory. Round robin over every slot (4,096 by default) made both
/// cold: W2's burst of a million spawns, each homed on a slot last touched 4,096 first runs
/// before, took two cache misses per line of the evicted frames and of the new process's
/// stack, about 14 per process, and ran 1.9–2.2 s on one scheduler. Homes now go round robin
/// over a window of [`SHARE_WINDOW`] slots, which moves on after [`HOMES_PER_WINDOW_SLOT`]
/// rounds, each worker in windows of its own: the slot evicted was run a window's worth of
/// first runs ago and is still in cache.
///
/// Consecutive homes still get different slots (two new processes can run in parallel), and
/// over a long burst every slot is homed as often as under plain round robin. What is given
/// up: processes spawned close together after the pool filled share fewer slots (64 per
/// worker rather than 4,096); if many of them stay busy together they evict each other more
/// often, at the cost of a frame copy (tens of nanoseconds for a shallow stack) per switch.
#[derive(Debug)]
pub(crate) struct ShareCursor {
    /// Homes this worker has shared so far.
    claims: usize,
    /// This worker's index, and how many workers share the pool: worker `lane` takes windows
    /// `lane`, `lane + lanes`, `lane + 2 * lanes`, ...
    lane: usize,
    lanes: usize,
}

impl ShareCursor {
    pub(crate) fn new(lane: usize, lanes: usize) -> ShareCursor {
        assert!(lane < lanes, "ShareCursor::new: lane {lane} of {lanes}");
        ShareCursor {
            claims: 0,
            lane,
            lanes,
        }
    }

    /// The slot for the next shared home among `enabled` slots (`enabled > 0`).
    fn next(&mut self, enabled: usize) -> u32 {
        let window_len = SHARE_WINDOW.min(enabled);
        let window = self.claims / (window_len * HOMES_PER_WINDOW_SLOT);
        let base = (window * self.lanes + self.lane) * window_len;
        let index = (base + self.claims % window_len) % enabled;
        self.claims = self.claims.wrapping_add(1);
        index as u32
    }
}

/// Outcome of [`SlotPool::try_acquire`].
#[must_use]
pub(crate) enum Acquire {
    /// The caller now holds the slot and must release it with [`SlotPool::release`].
    Held,
    /// The slot was busy: the process was parked in the slot's wait list and will be handed
    /// back by the holder's `release`. The caller must forget about it.
    Queued,
}

impl<P: Schedulable> SlotPool<P> {
    /// Reserves address space for `max_slots` slots of `slot_size` bytes each. No slot is
    /// enabled yet, so an idle pool costs one mapping and no memory.
    pub(crate) fn new(slot_size: usize, max_slots: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if page != GUARD_SIZE {
            return Err(io::Error::other(format!(
                "starling: page size {page} is not the supported {GUARD_SIZE}"
            )));
        }
        assert!(slot_size.is_multiple_of(GUARD_SIZE) && slot_size >= 4 * GUARD_SIZE);
        let region_len = slot_size
            .checked_mul(max_slots)
            .ok_or_else(|| io::Error::other("starling: stack region size overflows"))?;
        // SAFETY: an anonymous private PROT_NONE mapping at an address of the kernel's choosing
        // touches no existing memory.
        let region = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                region_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if region == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slots = (0..max_slots)
            .map(|_| Slot {
                busy: AtomicU32::new(FREE),
                waiters: Mutex::new(Vec::new()),
                resident: UnsafeCell::new(None),
                homed: AtomicU32::new(0),
                dirty: AtomicBool::new(false),
            })
            .collect();
        Ok(SlotPool {
            region: NonNull::new(region.cast()).expect("mmap returned null"),
            region_len,
            slot_size,
            slots,
            enabled: AtomicUsize::new(0),
            grow: Mutex::new(()),
            grown_out: AtomicBool::new(false),
            free: Mutex::new(Vec::new()),
            free_hint: AtomicBool::new(false),
            live_offset: live_frames_offset(),
            trim_cursor: AtomicUsize::new(0),
            overflow_entry: crate::overflow::register(region as usize, region_len, slot_size),
        })
    }

    /// Number of slots that are mapped read-write.
    pub(crate) fn enabled(&self) -> usize {
        // Relaxed: a statistic.
        self.enabled.load(Ordering::Relaxed)
    }

    /// The corosensei stack of slot `index`.
    pub(crate) fn stack(&self, index: u32) -> SlotStack {
        let start = self.region.as_ptr() as usize + index as usize * self.slot_size;
        SlotStack {
            limit: StackPointer::new(start).expect("slot address is null"),
            base: StackPointer::new(start + self.slot_size).expect("slot address is null"),
        }
    }

    /// Picks a home slot for a process that is about to run for the first time and counts it
    /// as homed there. Prefers, in order: a free slot from the worker's `cache`, a free slot from
    /// the shared list, a newly enabled slot, and finally a slot shared with other processes,
    /// which the worker's own [`ShareCursor`] picks (worker-local, not a shared counter: its
    /// line moved between the workers at every first run once the pool was full).
    pub(crate) fn claim_home(&self, cache: &mut Vec<u32>, cursor: &mut ShareCursor) -> u32 {
        while let Some(index) = cache.pop() {
            if self.try_claim_free(index) {
                return index;
            }
        }
        // Relaxed: see the field.
        if self.free_hint.load(Ordering::Relaxed) {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            // Take a batch so the next claims stay worker-local.
            let take = free.len().min(32);
            let at = free.len() - take;
            cache.extend(free.drain(at..));
            self.free_hint.store(!free.is_empty(), Ordering::Relaxed);
        }
        while let Some(index) = cache.pop() {
            if self.try_claim_free(index) {
                return index;
            }
        }
        if let Some(index) = self.enable_slot() {
            // A newly enabled slot is homed by nobody else yet. Relaxed: the slot index itself
            // is published by our caller storing it in the fiber, under the run-queue handoff.
            self.slots[index as usize]
                .homed
                .fetch_add(1, Ordering::Relaxed);
            return index;
        }
        let index = cursor.next(self.enabled.load(Ordering::Acquire));
        // Relaxed: `homed` is a counter; the slot's memory is protected by `busy`.
        self.slots[index as usize]
            .homed
            .fetch_add(1, Ordering::Relaxed);
        index
    }

    /// Claims `index` if nobody is homed on it. Returns `true` if the caller now owns one home
    /// count on it.
    fn try_claim_free(&self, index: u32) -> bool {
        // Relaxed: see `claim_home`.
        self.slots[index as usize]
            .homed
            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Enables one more slot, if the pool has room. Returns its index.
    fn enable_slot(&self) -> Option<u32> {
        // Checked before locking: once the pool is full, every claim that finds no free slot
        // comes here (in W2, a million processes parked on 4,096 slots, every spawn), and need
        // not take the lock the other workers take too. (W2's futex calls did not change
        // measurably, 30,000 to 38,000 per run with and without this check.)
        // Relaxed: `enabled` and `grown_out` only grow and stop growing; a stale value sends
        // us to the locked check below.
        if self.enabled.load(Ordering::Relaxed) == self.slots.len()
            || self.grown_out.load(Ordering::Relaxed)
        {
            return None;
        }
        // Waited for, not tried: a claim that found the lock taken and shared an enabled slot
        // instead could be homed with a process that never yields (a CPU-bound one that the
        // watchdog works around), and wait behind it for ever: `ping_pong_beside_four_spinners`
        // hung that way. Sharing is the last resort, once the pool is full.
        let _grow = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let index = self.enabled.load(Ordering::Relaxed);
        if index == self.slots.len() || self.grown_out.load(Ordering::Relaxed) {
            return None;
        }
        let start = self.region.as_ptr() as usize + index * self.slot_size + GUARD_SIZE;
        // SAFETY: [start, start + slot_size - GUARD_SIZE) lies inside our own reserved region
        // and belongs to slot `index`, which no coroutine uses yet.
        let result = unsafe {
            libc::mprotect(
                start as *mut libc::c_void,
                self.slot_size - GUARD_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if result != 0 {
            // Out of mappings (vm.max_map_count) or memory: keep sharing the slots we have,
            // and do not try again at every spawn (a system call each).
            self.grown_out.store(true, Ordering::Relaxed);
            return None;
        }
        // Release: pairs with the Acquire load in `claim_home`, so a worker that picks this slot
        // round robin sees it enabled.
        self.enabled.store(index + 1, Ordering::Release);
        Some(index as u32)
    }

    /// Drops one home count of `index` (its process ended). Returns `true` if no process is
    /// homed there any more: the caller should cache the slot as free.
    pub(crate) fn unhome(&self, index: u32) -> bool {
        // Relaxed: a counter; see `claim_home`.
        self.slots[index as usize]
            .homed
            .fetch_sub(1, Ordering::Relaxed)
            == 1
    }

    /// Returns free slots that a worker cannot keep to the shared list.
    pub(crate) fn give_back(&self, indices: impl IntoIterator<Item = u32>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend(indices);
        // Relaxed: see the field; written under the lock, like every write of it.
        self.free_hint.store(!free.is_empty(), Ordering::Relaxed);
    }

    /// Tries to take slot `index` for running `process`.
    pub(crate) fn try_acquire(&self, index: u32, process: &Handle<P>) -> Acquire {
        let slot = &self.slots[index as usize];
        // Acquire: pairs with the Release in `release`, so the previous holder's writes to the
        // slot memory and to `resident` are visible to us.
        if slot
            .busy
            .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Acquire::Held;
        }
        let mut waiters = slot.waiters.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match slot.busy.load(Ordering::Acquire) {
                FREE => {
                    // Acquire: as above.
                    if slot
                        .busy
                        .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Acquire::Held;
                    }
                }
                BUSY => {
                    // Relaxed: the waiters mutex orders our push with the releaser's drain.
                    if slot
                        .busy
                        .compare_exchange(BUSY, CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        waiters.push(process.clone());
                        return Acquire::Queued;
                    }
                }
                _ => {
                    waiters.push(process.clone());
                    return Acquire::Queued;
                }
            }
        }
    }

    /// Releases slot `index`, handing the processes that waited for it to `requeue`.
    pub(crate) fn release(&self, index: u32, requeue: &mut dyn FnMut(Handle<P>)) {
        let slot = &self.slots[index as usize];
        // Release: pairs with the Acquire in `try_acquire`; publishes our writes to the slot.
        if slot
            .busy
            .compare_exchange(BUSY, FREE, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let drained = {
            let mut waiters = slot.waiters.lock().unwrap_or_else(|e| e.into_inner());
            // Release: as above. Under the lock so no waiter is added after the drain while the
            // state still says CONTENDED.
            slot.busy.store(FREE, Ordering::Release);
            std::mem::take(&mut *waiters)
        };
        for process in drained {
            requeue(process);
        }
    }

    /// Makes `process` the resident of slot `index`, evicting the current resident's live
    /// frames to its buffer and copying `process`'s frames back in if it was evicted before.
    ///
    /// The caller must hold slot `index` (invariant 1) and `process` must be homed on it.
    pub(crate) fn make_resident(&self, index: u32, process: &Handle<P>) {
        let slot = &self.slots[index as usize];
        debug_assert_ne!(slot.busy.load(Ordering::Relaxed), FREE, "slot not held");
        let base = self.stack(index).base.get();
        // SAFETY: we hold the slot (caller's contract), so we are the only thread touching its
        // `resident` (invariant 1).
        let resident = unsafe { &mut *slot.resident.get() };
        if let Some(current) = resident {
            if Handle::ptr_eq(current, process) {
                return;
            }
            // SAFETY: the resident is homed on this slot and not running (invariants 1, 4), so
            // its saved-stack fields are ours; its frames lie in [stack pointer, base).
            unsafe { current.fiber().evict(base, self.live_offset) };
        }
        // SAFETY: `process` is homed here and not running (it is about to be run by us); its
        // buffer, if valid, was copied from this very slot.
        unsafe {
            process
                .fiber()
                .restore(base, self.stack(index).limit.get() + GUARD_SIZE)
        };
        *resident = Some(process.clone());
    }

    /// Gives the memory of dead stack pages back to the OS, for at most `budget` used slots:
    /// everything below a parked resident's live frames, and the whole of a slot without a
    /// resident. (Trimming runs at most once a second and only on an idle worker, so the next
    /// process started on a trimmed slot pays two or three page faults, ~1 µs, once; keeping
    /// a warm top instead would let the resident set grow with the most slots ever enabled.)
    /// Slots that are busy are skipped; the processes that waited for a slot while we trimmed
    /// it go to `requeue`. Returns `true` if the budget ran out before every slot was looked
    /// at (more may be left to trim).
    pub(crate) fn trim(&self, budget: usize, requeue: &mut dyn FnMut(Handle<P>)) -> bool {
        let enabled = self.enabled.load(Ordering::Acquire);
        if enabled == 0 {
            return false;
        }
        let mut trimmed = 0;
        for _ in 0..enabled {
            if trimmed == budget {
                return true;
            }
            let index = self.trim_cursor.fetch_add(1, Ordering::Relaxed) % enabled;
            let slot = &self.slots[index];
            if !slot.dirty.load(Ordering::Relaxed) {
                continue;
            }
            // Acquire: as in `try_acquire`; we only take a free slot and never queue.
            if slot
                .busy
                .compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            slot.dirty.store(false, Ordering::Relaxed);
            let stack = self.stack(index as u32);
            let floor = stack.limit.get() + GUARD_SIZE;
            // SAFETY: we hold the slot, so its resident is suspended and its fields are ours.
            let live_low = match unsafe { &*slot.resident.get() } {
                // SAFETY: the resident is homed here and suspended while we hold the slot.
                Some(resident) => unsafe { resident.fiber().live_low(self.live_offset) },
                None => None,
            };
            // A page of margin below a resident's live frames; nothing kept without one.
            let end = match live_low {
                Some(low) => low.saturating_sub(GUARD_SIZE) & !(GUARD_SIZE - 1),
                None => stack.base.get() & !(GUARD_SIZE - 1),
            };
            if end > floor {
                // SAFETY: [floor, end) lies in the held slot below every live byte of its
                // resident (or the slot has none); dropping those pages is invisible to it.
                unsafe {
                    libc::madvise(floor as *mut libc::c_void, end - floor, libc::MADV_DONTNEED)
                };
            }
            self.release(index as u32, requeue);
            trimmed += 1;
        }
        false
    }

    /// Marks slot `index` as used (it may hold pages `trim` can give back).
    pub(crate) fn mark_used(&self, index: u32) {
        // Relaxed: see the field.
        let slot = &self.slots[index as usize];
        if !slot.dirty.load(Ordering::Relaxed) {
            slot.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets the resident of slot `index` after its coroutine completed. The caller must hold
    /// the slot.
    pub(crate) fn vacate(&self, index: u32) -> Option<Handle<P>> {
        let slot = &self.slots[index as usize];
        debug_assert_ne!(slot.busy.load(Ordering::Relaxed), FREE, "slot not held");
        // SAFETY: we hold the slot (caller's contract).
        unsafe { (*slot.resident.get()).take() }
    }
}

impl<P> Drop for SlotPool<P> {
    fn drop(&mut self) {
        // Residents first: a leftover coroutine must be gone before its memory is unmapped
        // (`Fiber`'s Drop leaks a suspended coroutine rather than touching its stack).
        for slot in self.slots.iter_mut() {
            slot.resident.get_mut().take();
        }
        if let Some(entry) = self.overflow_entry {
            crate::overflow::unregister(entry);
        }
        // SAFETY: the region was mapped by `new` with this length; no coroutine runs on it any
        // more (all workers have been joined before the pool is dropped).
        unsafe { libc::munmap(self.region.as_ptr().cast(), self.region_len) };
    }
}

/// A slot's stack bounds, handed to corosensei.
pub(crate) struct SlotStack {
    base: StackPointer,
    limit: StackPointer,
}

// SAFETY: the slot's lowest page is a PROT_NONE guard page that no other mapping follows
// directly (the slot below ends in its own stack, but the guard page lies in between), and a
// slot holds far more than MIN_STACK_SIZE usable bytes (checked in `SlotPool::new`).
unsafe impl Stack for SlotStack {
    fn base(&self) -> StackPointer {
        self.base
    }

    fn limit(&self) -> StackPointer {
        self.limit
    }
}

/// Copies `buffer` back to `[low, low + buffer.len())`.
///
/// # Safety
///
/// The range must be writable memory of a slot that the caller holds, and must not overlap
/// `buffer`.
pub(crate) unsafe fn copy_in(low: usize, buffer: &[u8]) {
    // SAFETY: the caller guarantees the destination is writable, exclusively ours, and disjoint
    // from the heap buffer.
    unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr(), low as *mut u8, buffer.len()) };
}

/// Overwrites the dead part of a slot just below a restored coroutine's frames with garbage, so
/// that a copy-out that missed live bytes crashes in tests instead of working by luck.
///
/// # Safety
///
/// `[low - len, low)` must be writable memory of a held slot that holds no live frames.
#[cfg(debug_assertions)]
pub(crate) unsafe fn poison_below(low: usize, floor: usize) {
    let start = low.saturating_sub(4096).max(floor);
    // SAFETY: the caller guarantees the range is writable and dead.
    unsafe { std::ptr::write_bytes(start as *mut u8, 0xCC, low - start) };
}

/// The number of bytes between the stack pointer that [`fiber::suspend`] records and the
/// lowest byte that corosensei's switch writes below it (its pushes), plus [`COPY_MARGIN`].
///
/// Measured once per OS process by suspending a coroutine, through `fiber::suspend` itself, on
/// a stack filled with a pattern, and finding the lowest word that changed; done twice with two
/// patterns and with both suspend reasons, and the largest value is kept.
pub(crate) fn live_frames_offset() -> usize {
    static OFFSET: OnceLock<usize> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let mut worst = 0;
        for pattern in [0xAAAA_AAAA_AAAA_AAAAu64, 0x5555_5555_5555_5555] {
            for reason in [Suspend::Park, Suspend::Yield] {
                worst = worst.max(measure_suspend_depth(pattern, reason));
            }
        }
        assert!(
            worst > 0 && worst < 4096,
            "starling: stack calibration failed (observed {worst} bytes below the suspend point)"
        );
        (worst + COPY_MARGIN + 15) & !15
    })
}

/// One calibration run: see [`live_frames_offset`].
fn measure_suspend_depth(pattern: u64, reason: Suspend) -> usize {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, CoroutineResult};

    /// Depth of the filled window below the initial frame, and the frame the body pushes first
    /// so that the suspend point lies well inside the window.
    const WINDOW: usize = 32 * 1024;
    const TOP_RESERVED: usize = 2048;
    const PAD: usize = 4096;

    let stack = DefaultStack::new(64 * 1024).expect("starling: calibration stack");
    let base = stack.base().get();
    let recorded = std::rc::Rc::new(Cell::new(0usize));
    let recorded_in = recorded.clone();
    let mut coroutine: Coroutine<(), Suspend, (), DefaultStack> =
        Coroutine::with_stack(stack, move |yielder, ()| {
            let pad = std::hint::black_box([0u8; PAD]);
            fiber::suspend(yielder, std::hint::black_box(reason), &recorded_in);
            std::hint::black_box(pad);
        });
    let low = base - WINDOW;
    let high = base - TOP_RESERVED;
    // SAFETY: [low, high) lies in the usable part of a 64 KiB stack (the guard page is below
    // `base - 60 KiB`), above nothing corosensei initialised (it writes only the top few
    // hundred bytes), and the coroutine has not started.
    unsafe {
        let words = std::slice::from_raw_parts_mut(low as *mut u64, (high - low) / 8);
        words.fill(pattern);
    }
    let first = coroutine.resume(());
    assert!(
        matches!(first, CoroutineResult::Yield(_)),
        "calibration coroutine did not suspend"
    );
    // SAFETY: the coroutine is suspended, so nothing writes the stack while we read it.
    let lowest = unsafe {
        let words = std::slice::from_raw_parts(low as *const u64, (high - low) / 8);
        let at = words
            .iter()
            .position(|&w| w != pattern)
            .expect("suspend wrote nothing");
        low + at * 8
    };
    let depth = recorded.get().saturating_sub(lowest);
    assert!(matches!(coroutine.resume(()), CoroutineResult::Return(())));
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fiber;

    struct Bare(Fiber);

    impl Schedulable for Bare {
        fn fiber(&self) -> &Fiber {
            &self.0
        }
    }

    fn pool(max_slots: usize) -> SlotPool<Bare> {
        SlotPool::new(16 * GUARD_SIZE, max_slots).expect("reserve a small pool")
    }

    /// New homes come from new slots until the pool is full, then are shared round robin, and
    /// a full pool is not grown again.
    #[test]
    fn a_full_pool_shares_its_slots() {
        let pool = pool(3);
        let (mut cache, mut cursor) = (Vec::new(), ShareCursor::new(0, 1));
        let homes: Vec<u32> = (0..7)
            .map(|_| pool.claim_home(&mut cache, &mut cursor))
            .collect();
        assert_eq!(&homes[..3], &[0, 1, 2]);
        assert!(homes[3..].iter().all(|&home| home < 3), "{homes:?}");
        assert_eq!(pool.enabled(), 3);
        let homed: u32 = pool
            .slots
            .iter()
            .map(|slot| slot.homed.load(Ordering::Relaxed))
            .sum();
        assert_eq!(homed, 7);
    }

    /// Once the pool is full, a worker shares homes round robin over a window of its own, which
    /// moves on: consecutive homes differ, two workers' windows are apart, and over a long
    /// burst every slot gets the same number of homes.
    #[test]
    fn shared_homes_stay_in_a_moving_window_per_worker() {
        let enabled = 4096;
        let mut first = ShareCursor::new(0, 2);
        let mut second = ShareCursor::new(1, 2);
        let burst = SHARE_WINDOW * HOMES_PER_WINDOW_SLOT;
        let a: Vec<u32> = (0..burst).map(|_| first.next(enabled)).collect();
        let b: Vec<u32> = (0..burst).map(|_| second.next(enabled)).collect();
        for homes in [&a, &b] {
            assert!(homes.windows(2).all(|pair| pair[0] != pair[1]));
            let distinct: std::collections::BTreeSet<u32> = homes.iter().copied().collect();
            assert_eq!(distinct.len(), SHARE_WINDOW, "one window per burst");
        }
        assert!(
            a.iter().all(|home| !b.contains(home)),
            "the workers' windows overlap"
        );
        // The next window is a new one.
        assert!(!a.contains(&first.next(enabled)));
        // Over many bursts, every slot is homed equally often.
        let mut counts = vec![0usize; enabled];
        let mut cursor = ShareCursor::new(0, 1);
        for _ in 0..enabled * HOMES_PER_WINDOW_SLOT * 3 {
            counts[cursor.next(enabled) as usize] += 1;
        }
        assert!(counts
            .iter()
            .all(|&count| count == 3 * HOMES_PER_WINDOW_SLOT));
        // A pool smaller than a window still spreads over all of it.
        let mut small = ShareCursor::new(1, 2);
        let homes: Vec<u32> = (0..6).map(|_| small.next(3)).collect();
        assert_eq!(homes, [0, 1, 2, 0, 1, 2]);
    }

    /// A slot given back to the shared list is the next claim's home, on any worker, ahead of
    /// sharing a slot round robin: the list's emptiness hint is kept up to date.
    #[test]
    fn a_slot_given_back_is_claimed_before_any_is_shared() {
        let pool = pool(3);
        let (mut cache, mut cursor) = (Vec::new(), ShareCursor::new(0, 1));
        for expected in 0..3 {
            assert_eq!(pool.claim_home(&mut cache, &mut cursor), expected);
        }
        assert!(pool.unhome(1));
        pool.give_back([1]);
        // Another worker's claim: its own empty cache and cursor.
        let mut other = ShareCursor::new(1, 2);
        assert_eq!(pool.claim_home(&mut Vec::new(), &mut other), 1);
        // Now none is free: the next claim shares the slot its cursor points at (window 1 of
        // three slots: 3 % 3).
        assert_eq!(pool.claim_home(&mut Vec::new(), &mut other), 0);
        assert_eq!(pool.slots[0].homed.load(Ordering::Relaxed), 2);
    }

    /// While the pool can grow, a claim never shares a slot, not even while another worker
    /// holds the growth lock: it waits and gets a slot of its own. (Sharing there homed new
    /// processes with ones that never yield, and they waited behind them for ever.)
    #[test]
    fn a_claim_waits_for_growth_rather_than_share() {
        use std::sync::Arc;
        use std::time::Duration;
        let pool = Arc::new(pool(8));
        assert_eq!(
            pool.claim_home(&mut Vec::new(), &mut ShareCursor::new(0, 1)),
            0
        );
        // The lock is held as if by another worker enabling a slot.
        let growing = pool.grow.lock().unwrap();
        let claimer = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.claim_home(&mut Vec::new(), &mut ShareCursor::new(0, 1))
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let finished_while_held = claimer.is_finished();
        drop(growing);
        assert_eq!((finished_while_held, claimer.join().unwrap()), (false, 1));
    }
}
