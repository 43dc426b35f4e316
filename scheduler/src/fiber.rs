//! Fibers: one green thread's coroutine, saved stack, reduction budget and scheduling state.
//!
//! # States
//!
//! A fiber's scheduling state is one atomic word with named transitions (`State::transition_*`):
//!
//! - **Idle** (`0`): parked, waiting for a wake-up. On no run queue; nobody runs it. Its frames
//!   are in its home slot or, if evicted, in its saved buffer, which the slot's holder owns.
//! - **Scheduled** (`SCHEDULED`): on exactly one run queue, a runnext slot, or a stack slot's
//!   wait list, or held by the worker that just popped it. Not running.
//! - **Running** (`RUNNING`): a worker is executing it on its home slot. Only that worker's thread
//!   touches the fiber's `Core`.
//! - **Running + notified** (`RUNNING | NOTIFIED`): woken while running; when it next tries to
//!   park it runs again instead (no lost wake-up).
//! - **Done** (`DONE`): its coroutine returned. Never scheduled again.
//!
//! A fiber is put on a run queue only by the transition that moves it from Idle to Scheduled (or
//! by the worker that owns it as Running), so it is never on two queues at once.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use corosensei::trap::CoroutineTrapHandler;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::arch;
use crate::entry::Entry;
use crate::frames::SavedFrames;
use crate::slot::{self, SlotStack};

/// Reductions in one time slice: after spending them a process yields at its next VM call.
///
/// Derived: the BEAM's `CONTEXT_REDS` is 4,000. A reduction here is one VM call (see the table
/// in the crate docs); with VM calls of 10–100 ns a slice lasts 40–400 µs, the same order as the
/// BEAM's ~1 ms.
pub const REDUCTIONS_PER_SLICE: i32 = 4000;

/// Marks "no home slot yet" in `Fiber::home`.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Why a coroutine gave control back to its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Suspend {
    /// Wait for a wake-up (`transition_to_idle`).
    Park,
    /// Stay runnable but let others run first (reductions spent, or `yield_now`).
    Yield,
}

/// How long a park made while the thread is unwinding blocks the thread before it returns (see
/// `Fiber::suspend_self`). Guessed: short enough that a wake-up is noticed within a tenth of a
/// millisecond, long enough that a long wait costs a few percent of a core.
const UNWINDING_PARK_POLL: std::time::Duration = std::time::Duration::from_micros(100);

/// Whether this thread is unwinding a panic. Never inlined: it reads a thread-local, and the
/// read must not be merged into a caller that may resume on another thread (the thread rule).
#[inline(never)]
fn thread_is_unwinding() -> bool {
    std::thread::panicking()
}

/// What the worker must do after resuming a fiber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    /// The fiber suspended with `Suspend::Park`.
    Parked,
    /// The fiber suspended with `Suspend::Yield`.
    Yielded,
    /// The fiber's body returned; it will never run again.
    Completed,
}

pub(crate) type FiberYielder = Yielder<(), Suspend>;

/// Where a coroutine's yielder lives: this many bytes below its stack's base. corosensei's
/// `Yielder` is a `repr(transparent)` wrapper of the *parent link*, the word in which a switch
/// into the coroutine saves the resumer's stack pointer, and corosensei keeps that word at a
/// fixed offset below the base (its `PARENT_LINK_OFFSET`: 16 bytes on x86_64 and on aarch64).
/// A fiber derives its yielder from its stack's base instead of keeping a pointer to it (8
/// bytes of every control block); every coroutine checks the offset when it starts
/// (`entry.rs`), and the program aborts with a message if a corosensei version moved it.
pub(crate) const YIELDER_BELOW_BASE: usize = 16;

pub(crate) type FiberCoroutine = Coroutine<(), Suspend, (), SlotStack>;

/// The only function that ever suspends a coroutine.
///
/// It records the stack pointer of its own frame in `stack_pointer` before switching away, so
/// that the slot pool can find the lowest live byte of the suspended coroutine by subtracting a
/// calibrated constant (see [`slot::live_frames_offset`]). It must stay one non-generic,
/// non-inlined function: the calibration measures exactly this code.
#[inline(never)]
pub(crate) fn suspend(yielder: &FiberYielder, reason: Suspend, stack_pointer: &Cell<usize>) {
    stack_pointer.set(arch::stack_pointer());
    yielder.suspend(reason)
}

const SCHEDULED: u32 = 0b0001;
const RUNNING: u32 = 0b0010;
const NOTIFIED: u32 = 0b0100;
const DONE: u32 = 0b1000;

/// Observable scheduling status of a fiber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiberStatus {
    /// Parked, waiting for a wake-up.
    Waiting,
    /// On a run queue.
    Runnable,
    /// Executing on a worker.
    Running,
    /// Finished.
    Done,
}

/// A fiber's scheduling state word.
struct State(AtomicU32);

impl State {
    /// Wake-up: Idle → Scheduled (returns `true`: the caller must enqueue the fiber), Running →
    /// Running + notified, or Scheduled → Scheduled + notified. A fiber already notified keeps
    /// its word, but the waker still writes it (see below); a fiber done is left alone.
    ///
    /// A waker that finds the fiber already notified must still write the word, not just read
    /// it. Its message was pushed before the wake, and the fiber may consume the earlier
    /// notification, look at its mailbox and park. If the waker had only loaded the word, nothing
    /// would order its push before that look: the fiber could miss the message, park, and never
    /// be woken for it. (That happened: with a mailbox lock whose unlock is a plain store,
    /// skynet hung about once in 200 runs, one process parked with a message in its mailbox.
    /// std's mutex unlocks with an `xchg`, a full barrier on x86, which hid the race there.)
    /// Written, the word's modification order puts the waker's Release either before the
    /// fiber's Acquire of it (the fiber then sees the message) or after the notification was
    /// consumed (the waker then sets a new one).
    ///
    /// A scheduled fiber is notified too, not left alone: it may be scheduled because it
    /// *yielded* in the middle of a wait loop (its slice ran out while it scanned its mailbox),
    /// and when it resumes it goes on to park without looking again. The notification travels
    /// with it (`transition_to_running`) and makes that park return at once, into the wait
    /// loop's re-check.
    fn transition_on_wake(&self) -> bool {
        // Acquire/Release on success: Release publishes what the waker did before waking (a
        // message pushed to a mailbox) to the worker that runs the fiber next, which loads this
        // word with Acquire in `transition_to_running` / `transition_to_idle`.
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = match current {
                0 => SCHEDULED,
                RUNNING => RUNNING | NOTIFIED,
                SCHEDULED => SCHEDULED | NOTIFIED,
                // Already notified: the same value, written (see above).
                notified if notified & NOTIFIED != 0 && notified & DONE == 0 => notified,
                _ => return false,
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next == SCHEDULED,
                Err(actual) => current = actual,
            }
        }
    }

    /// Scheduled (+ notified) → Running (+ notified), by the worker that popped the fiber.
    fn transition_to_running(&self) {
        // Acquire: pairs with the Release of the wake that scheduled or notified us. One swap on
        // the common path; a carried notification is put back with `fetch_or`, which is safe
        // because while Running the only other change to the word is a waker setting NOTIFIED.
        let previous = self.0.swap(RUNNING, Ordering::Acquire);
        assert_eq!(
            previous & !NOTIFIED,
            SCHEDULED,
            "runtime: ran a fiber that was not scheduled"
        );
        if previous & NOTIFIED != 0 {
            // Relaxed: the Acquire swap above already synchronized with the waker.
            self.0.fetch_or(NOTIFIED, Ordering::Relaxed);
        }
    }

    /// After `Suspend::Park`: Running → Idle, or Running + notified → Scheduled. Returns `true`
    /// if the fiber must be enqueued again (it was woken while running).
    fn transition_to_idle(&self) -> bool {
        // AcqRel: pairs with `transition_on_wake` (the CAS makes the two RMWs totally ordered,
        // so either the waker sees Idle and enqueues, or we see NOTIFIED and re-enqueue).
        match self
            .0
            .compare_exchange(RUNNING, 0, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(actual) => {
                assert_eq!(
                    actual,
                    RUNNING | NOTIFIED,
                    "runtime: inconsistent fiber state"
                );
                self.0.store(SCHEDULED, Ordering::Relaxed);
                true
            }
        }
    }

    /// After `Suspend::Yield`: Running (+ notified) → Scheduled (+ notified). The notification
    /// is kept (see `transition_on_wake`): the fiber may resume inside a wait loop about to park.
    fn transition_to_scheduled(&self) {
        // AcqRel: pairs with `transition_on_wake`; the RMW orders a concurrent wake before or
        // after us, and either way its NOTIFIED survives.
        let previous = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                Some(SCHEDULED | (state & NOTIFIED))
            })
            .unwrap_or_else(|state| state);
        debug_assert!(
            previous & RUNNING != 0,
            "runtime: yielded fiber was not running"
        );
    }

    /// Running + notified → Running. Returns `true` if a notification was consumed, so the
    /// caller need not park at all.
    fn take_notification(&self) -> bool {
        // Relaxed first: without a notification (the common case) no atomic write is needed;
        // a notification that lands after this load is caught by `transition_to_idle`'s CAS.
        if self.0.load(Ordering::Relaxed) != RUNNING | NOTIFIED {
            return false;
        }
        // Acquire: pairs with the waker's Release, like `transition_to_running`.
        self.0
            .compare_exchange(
                RUNNING | NOTIFIED,
                RUNNING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn transition_to_done(&self) {
        // Release: nothing reads through it but `status`; kept ordered for introspection.
        self.0.store(DONE, Ordering::Release);
    }

    fn status(&self) -> FiberStatus {
        // Relaxed: introspection only.
        let state = self.0.load(Ordering::Relaxed);
        if state & DONE != 0 {
            FiberStatus::Done
        } else if state & RUNNING != 0 {
            FiberStatus::Running
        } else if state & SCHEDULED != 0 {
            FiberStatus::Runnable
        } else {
            FiberStatus::Waiting
        }
    }
}

/// A fiber's body: waiting for its first run, running on its coroutine, or finished.
enum Body {
    /// Not started; the coroutine is created at the first run, when a home slot is resident.
    Waiting(Entry),
    Started(FiberCoroutine),
    Finished,
}

impl Body {
    fn coroutine(&self) -> Option<&FiberCoroutine> {
        match self {
            Body::Started(coroutine) => Some(coroutine),
            _ => None,
        }
    }
}

/// The part of a fiber that one thread at a time owns: the worker running it, or the holder of
/// its home slot while it is suspended (see the slot invariants), or the worker that popped it
/// before its first run.
#[repr(C)] // the order below keeps `budget` far from the wakers' fields; see `Fiber`
struct Core {
    /// Reductions left in the current slice. First: the field every VM call writes.
    budget: i32,
    /// Set by the overflow trampoline (`overflow.rs`; Release, paired with the Acquire in
    /// `Fiber::overflowed`) on the thread running the fiber when the coroutine hit its guard
    /// page; read by that thread once `resume` returned. Atomic because the trampoline writes
    /// it through a raw address. Here rather than in `Fiber` because it fits in `budget`'s
    /// padding (the control block is most of what a parked process costs).
    overflowed: AtomicBool,
    /// Stack pointer recorded by `suspend` at the last suspension.
    suspend_stack_pointer: Cell<usize>,
    /// Base (highest address) of the home slot's stack; 0 before the first run. The
    /// coroutine's yielder lives [`YIELDER_BELOW_BASE`] bytes below it.
    stack_base: usize,
    /// Live frames copied out of the slot at the last eviction, while they are out: they
    /// belong at `stack_base - saved.len()`, and an empty `saved` means the frames are in the
    /// slot (a restore empties it and keeps its buffer for the next eviction).
    saved: SavedFrames,
    /// The body, until the coroutine is created at the first run. Last: touched once per
    /// resume, so it may share a cache line with the wakers' fields that follow the core.
    body: Body,
}

/// A green thread.
///
/// Owned by the VM's process (`Schedulable::fiber`); the scheduler only ever touches it through
/// a [`crate::Handle`] of its process.
#[repr(C)]
pub struct Fiber {
    core: UnsafeCell<Core>,
    /// Total reductions spent. Written by the owner, read by introspection; Relaxed.
    reductions: AtomicU64,
    /// Bytes of stack this fiber holds: its saved buffer while evicted, its live frames while
    /// resident (as of its last suspension). Relaxed; introspection only. 32 bits: a slot is
    /// far smaller than 4 GiB.
    stack_bytes: AtomicU32,
    /// Counts timed waits, so a stale timer of an earlier wait does not wake a later one.
    /// Any thread, atomically.
    wait_generation: AtomicU32,
    /// Home slot index, `NO_SLOT` until the first run. Written once by the worker of the first
    /// run; read by later workers, ordered by the run-queue handoff (Relaxed suffices).
    home: AtomicU32,
    /// Last: the word every waker writes. The VM puts its mailbox's senders' fields right after
    /// the fiber, so that the fields other threads write share cache lines with each other
    /// rather than with `budget`, which the running process writes at every VM call.
    state: State,
}

// SAFETY: `core` is only touched by the one thread that owns it at a time (see `Core`), with the
// ownership handed over through the state word, the run queues, and the slot's `busy` flag, all
// of which synchronize (Release/Acquire). The body is `Send`; the coroutine's stack holds only
// values of that `Send` body, and processes are told never to hold `!Send` values across a VM
// call (crate docs, "The thread rule").
unsafe impl Send for Fiber {}
// SAFETY: shared access goes through atomics only; see `Send`.
unsafe impl Sync for Fiber {}

impl Fiber {
    /// A fiber that will run `body` on its own coroutine when first scheduled.
    pub fn new<F: FnOnce() + Send + 'static>(body: F) -> Fiber {
        let entry = Entry::new(body);
        Fiber {
            state: State(AtomicU32::new(SCHEDULED)),
            home: AtomicU32::new(NO_SLOT),
            wait_generation: AtomicU32::new(0),
            reductions: AtomicU64::new(0),
            stack_bytes: AtomicU32::new(0),
            core: UnsafeCell::new(Core {
                body: Body::Waiting(entry),
                suspend_stack_pointer: Cell::new(0),
                saved: SavedFrames::new(),
                budget: REDUCTIONS_PER_SLICE,
                overflowed: AtomicBool::new(false),
                stack_base: 0,
            }),
        }
    }

    /// Makes this fiber new again, in place, with `body`: as if replaced by `Fiber::new(body)`,
    /// without building one elsewhere and copying it over (a recycled control block's spawn).
    pub fn renew<F: FnOnce() + Send + 'static>(&mut self, body: F) {
        let core = self.core.get_mut();
        retire(std::mem::replace(
            &mut core.body,
            Body::Waiting(Entry::new(body)),
        ));
        core.saved.release();
        core.suspend_stack_pointer.set(0);
        core.budget = REDUCTIONS_PER_SLICE;
        *core.overflowed.get_mut() = false;
        core.stack_base = 0;
        *self.state.0.get_mut() = SCHEDULED;
        *self.home.get_mut() = NO_SLOT;
        *self.wait_generation.get_mut() = 0;
        *self.reductions.get_mut() = 0;
        *self.stack_bytes.get_mut() = 0;
    }

    /// The fiber's scheduling status (for introspection; may be stale at once).
    pub fn status(&self) -> FiberStatus {
        self.state.status()
    }

    /// Returns `true` if the fiber ended by overflowing its stack (see `overflow.rs`).
    ///
    /// # Safety
    ///
    /// Called on the thread that ran the fiber, after `resume` returned (it owns the core).
    pub(crate) unsafe fn overflowed(&self) -> bool {
        // SAFETY: the caller owns the core; a shared borrow of one atomic field.
        let flag = unsafe { &(*self.core.get()).overflowed };
        // Acquire: pairs with the Release store of the overflow trampoline.
        flag.load(Ordering::Acquire)
    }

    /// Ends this fiber as a stack overflow, now, if fewer than `headroom` bytes of its stack
    /// are left below the caller's frame: it reads its own guard page, and the overflow handler
    /// abandons the coroutine there (`overflow.rs`), exactly as if it had recursed into it.
    /// `slot_size` is its runtime's `Config::slot_size` (the slot starts, with its guard page,
    /// that many bytes below the stack's base; a field for it would make every control block
    /// a size class larger).
    ///
    /// # Safety
    ///
    /// The caller runs on this fiber's coroutine (it owns the core), and `slot_size` is the
    /// slot size of the runtime running it.
    #[inline]
    pub(crate) unsafe fn ensure_headroom(&self, slot_size: usize, headroom: usize) {
        // SAFETY: the caller runs this fiber, so it owns the core.
        let base = unsafe { (*self.core.get()).stack_base };
        let guard = base - slot_size;
        if crate::arch::stack_pointer() < guard + crate::slot::GUARD_SIZE + headroom {
            // SAFETY: the guard page of the slot this fiber runs on (caller's contract):
            // reading it faults, and the handler redirects the coroutine out (or aborts the OS
            // process with a message where the platform cannot); no memory is read or written.
            unsafe { crate::arch::fault_at(guard) };
        }
    }

    /// Address of the overflow flag, for the trampoline (which must not capture references).
    pub(crate) fn overflow_flag(&self) -> usize {
        // SAFETY: only the field's address is taken (no reference is created); the core lives
        // as long as the fiber.
        unsafe { std::ptr::addr_of!((*self.core.get()).overflowed) as usize }
    }

    /// The trap handler of this fiber's coroutine if its home slot starts at `slot_start`.
    ///
    /// # Safety
    ///
    /// Called on the thread running this fiber (it owns the core).
    pub(crate) unsafe fn trap_handler(
        &self,
        slot_start: usize,
    ) -> Option<CoroutineTrapHandler<()>> {
        // SAFETY: the caller runs this fiber, so it owns the core.
        let core = unsafe { &*self.core.get() };
        let trap = core.body.coroutine()?.trap_handler();
        // The slot's lowest address is this coroutine's stack limit only if it is its slot.
        trap.stack_ptr_in_bounds(slot_start).then_some(trap)
    }

    /// Total reductions this fiber has spent.
    pub fn reductions(&self) -> u64 {
        // Relaxed: introspection.
        self.reductions.load(Ordering::Relaxed)
    }

    /// Bytes of stack this fiber holds (see the field's docs).
    pub fn stack_bytes(&self) -> usize {
        // Relaxed: introspection.
        self.stack_bytes.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn home(&self) -> Option<u32> {
        // Relaxed: see the field's docs.
        match self.home.load(Ordering::Relaxed) {
            NO_SLOT => None,
            index => Some(index),
        }
    }

    pub(crate) fn set_home(&self, index: u32) {
        // Relaxed: see the field's docs.
        self.home.store(index, Ordering::Relaxed);
    }

    pub(crate) fn transition_on_wake(&self) -> bool {
        self.state.transition_on_wake()
    }

    pub(crate) fn transition_to_scheduled(&self) {
        self.state.transition_to_scheduled()
    }

    pub(crate) fn transition_to_idle(&self) -> bool {
        self.state.transition_to_idle()
    }

    pub(crate) fn wait_generation(&self) -> u32 {
        // Relaxed: a stale read only causes a harmless spurious wake-up.
        self.wait_generation.load(Ordering::Relaxed)
    }

    pub(crate) fn next_wait_generation(&self) -> u32 {
        // Relaxed: see `wait_generation`.
        self.wait_generation
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// Copies this suspended fiber's live frames out of its slot.
    ///
    /// # Safety
    ///
    /// The caller holds this fiber's home slot, whose base is `base`, and the fiber is its
    /// resident, suspended in [`suspend`] (or never started).
    pub(crate) unsafe fn evict(&self, base: usize, live_offset: usize) {
        // SAFETY: the slot holder owns the core of a suspended resident (slot invariant 1).
        let core = unsafe { &mut *self.core.get() };
        if core.body.coroutine().is_none() {
            return;
        }
        let low = core.suspend_stack_pointer.get() - live_offset;
        // SAFETY: [low, base) is inside the held slot: the suspended frames plus at most
        // `live_offset` bytes below the recorded stack pointer, all of it mapped read-write
        // (the frames were written there).
        unsafe { core.saved.copy_from(low, base) };
        // Relaxed: introspection.
        self.stack_bytes
            .store(saturating_u32(core.saved.capacity()), Ordering::Relaxed);
    }

    /// The lowest live address of this suspended resident's frames, if it has started.
    ///
    /// # Safety
    ///
    /// The caller holds this fiber's home slot and the fiber is its suspended resident.
    pub(crate) unsafe fn live_low(&self, live_offset: usize) -> Option<usize> {
        // SAFETY: the slot holder owns the core of a suspended resident.
        let core = unsafe { &*self.core.get() };
        core.body.coroutine()?;
        Some(core.suspend_stack_pointer.get() - live_offset)
    }

    /// Copies this fiber's frames back into its slot if they were evicted.
    ///
    /// # Safety
    ///
    /// The caller holds this fiber's home slot, whose base is `base` and lowest usable address
    /// `floor`, and the fiber is not running.
    pub(crate) unsafe fn restore(&self, base: usize, floor: usize) {
        // SAFETY: the slot holder owns the core of a non-running fiber homed there.
        let core = unsafe { &mut *self.core.get() };
        if core.saved.is_empty() {
            return;
        }
        debug_assert_eq!(core.stack_base, base);
        // The frames were copied from `[low, base)` (`evict`), and the home slot never changes.
        let low = base - core.saved.len();
        // SAFETY: the destination is the range the frames were copied from, inside the held
        // slot; the buffer is the saved-frames store's memory, disjoint from it.
        unsafe { slot::copy_in(low, core.saved.as_slice()) };
        #[cfg(debug_assertions)]
        // SAFETY: below the restored frames the slot holds nothing live.
        unsafe {
            slot::poison_below(low, floor)
        };
        #[cfg(not(debug_assertions))]
        let _ = floor;
        core.saved.clear();
    }

    /// Runs the fiber on `stack` until it suspends or completes. Creates the coroutine on the
    /// first run.
    ///
    /// # Safety
    ///
    /// The caller holds the fiber's home slot, whose stack is `stack`, the fiber is its
    /// resident (frames restored), and the fiber was just transitioned to Running by this
    /// worker.
    /// Returns how the run ended and the reductions left of `slice`.
    pub(crate) unsafe fn resume(&self, stack: SlotStack, slice: i32) -> (RunOutcome, i32) {
        self.state.transition_to_running();
        // SAFETY: the running worker owns the core (see `Core`).
        let core = unsafe { &mut *self.core.get() };
        core.budget = slice;
        // The body of a first run, until the coroutine moves it out at the start of the resume
        // below (see `Entry::start`): here, in this frame, where it stays put.
        let mut starting: Option<std::mem::ManuallyDrop<Entry>> = None;
        if let Body::Waiting(_) = core.body {
            let Body::Waiting(entry) = std::mem::replace(&mut core.body, Body::Finished) else {
                unreachable!()
            };
            core.stack_base = corosensei::stack::Stack::base(&stack).get();
            let entry = starting.insert(std::mem::ManuallyDrop::new(entry));
            // SAFETY: the caller made the slot resident; `entry` stays in this frame, unmoved,
            // until the resume just below has run the coroutine's first step, which takes the
            // body out.
            core.body = Body::Started(unsafe { Entry::start(entry, stack) });
        }
        let Body::Started(coroutine) = &mut core.body else {
            panic!("runtime: resumed a fiber that has finished");
        };
        // Past this call the body, if this was the first run, lives in the coroutine's frames:
        // `starting` is empty (and `ManuallyDrop`, so nothing is dropped twice).
        let result = coroutine.resume(());
        // SAFETY: the coroutine gave control back; the core is ours again. Re-borrow: the
        // coroutine may have written through its own pointer meanwhile.
        let core = unsafe { &mut *self.core.get() };
        let spent = (slice - core.budget).max(0) as u64;
        // Relaxed: introspection; only the owner writes.
        self.reductions.fetch_add(spent, Ordering::Relaxed);
        let left = core.budget;
        let outcome = match result {
            CoroutineResult::Yield(reason) => {
                let live = core
                    .stack_base
                    .saturating_sub(core.suspend_stack_pointer.get());
                // Relaxed: introspection.
                self.stack_bytes
                    .store(saturating_u32(live), Ordering::Relaxed);
                match reason {
                    Suspend::Park => RunOutcome::Parked,
                    Suspend::Yield => RunOutcome::Yielded,
                }
            }
            CoroutineResult::Return(()) => {
                core.body = Body::Finished;
                core.saved.release();
                self.stack_bytes.store(0, Ordering::Relaxed);
                self.state.transition_to_done();
                RunOutcome::Completed
            }
        };
        (outcome, left)
    }

    /// From inside this fiber's own coroutine: suspends it with `reason`.
    ///
    /// # Safety
    ///
    /// Must be called on this fiber's coroutine while it runs.
    pub(crate) unsafe fn suspend_self(&self, reason: Suspend) {
        if thread_is_unwinding() {
            // Rust's panic state (`std::thread::panicking`, the panic count) belongs to the OS
            // thread, not to the coroutine: a fiber that switched out while unwinding (a
            // destructor that parks or yields) would leave every other fiber on this thread
            // "panicking" (its kills ignored, its mutexes poisoned), and would end its unwinding
            // on another thread, whose count it would then wrap. So an unwinding fiber keeps its
            // thread: a yield is put off (its slice stays used up, so it yields at its first VM
            // call after the unwinding), and a park blocks the thread briefly and returns, a
            // spurious wake-up its caller's wait loop re-checks. The watchdog hands the thread's
            // other processes to a spare meanwhile, as for any long computation.
            if matches!(reason, Suspend::Park) {
                std::thread::sleep(UNWINDING_PARK_POLL);
            }
            return;
        }
        let (yielder, stack_pointer) = {
            // SAFETY: the running fiber's thread owns its core (caller's contract).
            let core = unsafe { &*self.core.get() };
            (
                (core.stack_base - YIELDER_BELOW_BASE) as *const FiberYielder,
                &core.suspend_stack_pointer as *const Cell<usize>,
            )
        };
        // SAFETY: a started coroutine's yielder lives `YIELDER_BELOW_BASE` bytes below its
        // stack's base (checked when it started, `entry.rs`), in the slot where this (running,
        // resident) coroutine's frames are; the Cell lives in the fiber, which outlives the call.
        unsafe { suspend(&*yielder, reason, &*stack_pointer) };
    }

    /// From inside this fiber's coroutine: parks unless a wake-up already arrived.
    ///
    /// # Safety
    ///
    /// As [`Fiber::suspend_self`].
    pub(crate) unsafe fn park_self(&self) {
        if self.state.take_notification() {
            return;
        }
        // SAFETY: caller's contract.
        unsafe { self.suspend_self(Suspend::Park) };
    }

    /// From inside this fiber's coroutine: uses up the rest of its slice, so that its next
    /// [`Fiber::spend`] says to yield.
    ///
    /// # Safety
    ///
    /// As [`Fiber::suspend_self`].
    pub(crate) unsafe fn end_slice(&self) {
        // SAFETY: the running fiber's thread owns its core (caller's contract).
        let core = unsafe { &mut *self.core.get() };
        core.budget = core.budget.min(0);
    }

    /// From inside this fiber's coroutine: spends `reductions`; returns `true` if the slice is
    /// used up and the caller should yield.
    ///
    /// # Safety
    ///
    /// As [`Fiber::suspend_self`].
    pub(crate) unsafe fn spend(&self, reductions: i32) -> bool {
        // SAFETY: the running fiber's thread owns its core (caller's contract).
        let core = unsafe { &mut *self.core.get() };
        core.budget -= reductions;
        core.budget <= 0
    }
}

impl Drop for Fiber {
    fn drop(&mut self) {
        retire(std::mem::replace(
            &mut self.core.get_mut().body,
            Body::Finished,
        ));
    }
}

/// Disposes of a fiber's body that is being replaced or dropped (`Drop`, `Fiber::renew`). A
/// suspended coroutine can only be unwound while resident (slot invariant 3); one still
/// suspended (its runtime was torn down around it) leaks its frames instead of risking a
/// switch onto foreign memory. Anything else is dropped.
fn retire(body: Body) {
    if let Body::Started(coroutine) = body {
        if coroutine.started() && !coroutine.done() {
            std::mem::forget(coroutine);
        }
    }
}

/// `bytes` as a `u32`, saturating (for the introspection-only `stack_bytes`).
fn saturating_u32(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renewed fiber is a new one: its old body (never started here) is dropped once, the new
    /// one is kept until the fiber goes, and the scheduling fields start over.
    #[test]
    fn a_renewed_fiber_is_new() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let old_drops = Arc::new(AtomicUsize::new(0));
        let new_drops = Arc::new(AtomicUsize::new(0));
        let old = Guard(old_drops.clone());
        let mut fiber = Fiber::new(move || drop(old));
        fiber.set_home(3);
        fiber.reductions.store(7, Ordering::Relaxed);
        fiber.stack_bytes.store(480, Ordering::Relaxed);
        fiber.state.transition_to_done();
        let new = Guard(new_drops.clone());
        fiber.renew(move || drop(new));
        assert_eq!(old_drops.load(Ordering::SeqCst), 1);
        assert_eq!(new_drops.load(Ordering::SeqCst), 0);
        assert_eq!(fiber.status(), Fiber::new(|| ()).status());
        assert_eq!(fiber.home(), None);
        assert_eq!(fiber.reductions.load(Ordering::Relaxed), 0);
        assert_eq!(fiber.stack_bytes(), 0);
        assert!(matches!(fiber.core.get_mut().body, Body::Waiting(_)));
        drop(fiber);
        assert_eq!(new_drops.load(Ordering::SeqCst), 1);
    }

    /// The layout rule in `Fiber`'s docs: the budget (written at every VM call by the running
    /// process) and the state word (written by wakers) never share a cache line, whatever the
    /// block's alignment; and the state word is the fiber's last field, so the VM's mailbox
    /// fields follow it.
    #[test]
    fn the_budget_is_a_cache_line_away_from_the_wakers_word() {
        let budget = std::mem::offset_of!(Fiber, core) + std::mem::offset_of!(Core, budget);
        let state = std::mem::offset_of!(Fiber, state);
        assert!(state >= budget + 64, "budget at {budget}, state at {state}");
        assert_eq!(
            state + std::mem::size_of::<State>(),
            std::mem::size_of::<Fiber>()
        );
    }
}
