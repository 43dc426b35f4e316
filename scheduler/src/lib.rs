//! Starling's green threads: stackful coroutines on shared stack slots, scheduled M:N over one
//! worker thread per core with work stealing, parking, timers and reduction counting.
//!
//! This crate knows nothing of pids, messages or links: that is `starling-vm`. It runs
//! *processes*, values of a type `P: Schedulable` that own a [`Fiber`].
//!
//! # Vocabulary
//!
//! | here            | Go  | BEAM              | what it is                                        |
//! |-----------------|-----|-------------------|---------------------------------------------------|
//! | process / fiber | G   | process           | a closure on its own stackful coroutine           |
//! | worker          | M+P | scheduler         | one OS thread with a local run queue              |
//! | runtime         | —   | the VM's schedulers | all workers of one VM, the injector, the slots |
//! | stack slot      | —   | —                 | a guarded stack region shared through eviction    |
//!
//! Unlike Go, a worker never gives up its queue while a process blocks in the VM: a blocked
//! process *parks* (its coroutine suspends) and the worker runs the next one.
//!
//! # Submitting work
//!
//! 1. A process woken by a process running on a worker goes to that worker's *runnext* slot
//!    and runs next (Go's `runnext`, tokio's LIFO slot); the process it displaces goes to the
//!    worker's local queue, where other workers can steal it. A ping-pong pair thus stays on one
//!    core. A process taken from runnext inherits what is left of the current time slice (as
//!    in Go), so a chain of wake-ups shares one slice; once it is used up, the runnext process
//!    goes to the back of the queue and the rest of the queue is not starved.
//! 2. A process spawned by a process running on a worker goes to that worker's *fresh* deque
//!    (LIFO): new processes run before queued ones, newest first, and idle workers steal the
//!    oldest. A process tree thus unfolds depth-first on each core (skynet's million leaves
//!    with a few hundred processes alive, instead of a third of a million) while thieves take
//!    the largest subtrees (work-first scheduling, as in Cilk). A process that uses up its slice
//!    first moves the fresh deque to its queue, ahead of itself, so a spawner cannot outrun
//!    its children; and every 31st pick takes the queue first, so an endless chain of spawns
//!    cannot starve woken processes.
//!    Processes spawned or woken from outside the runtime go to the shared injector.
//! 3. After making work visible, the submitter wakes one sleeping worker if nobody is searching
//!    (the protocol is in `idle.rs`).
//!
//! # Running
//!
//! A worker loops: take the next process (runnext, fresh deque, local queue, injector — first
//! every 61 ticks — and finally batch steals from the other workers' queues and fresh deques,
//! starting at a rotating victim),
//! acquire its home stack slot, make it resident, resume its coroutine, and file it by how it
//! stopped: parked (wait for a wake-up), yielded (back of the local queue) or completed.
//! Stack slots, eviction and the memory layout are described in `slot.rs`.
//!
//! **Known limit: stealing processes that live for a fraction of a microsecond costs more than
//! it saves.** In W1 (one process spawns a million that each send one message and end), two
//! workers take longer than one: medians 454 ms against 341 ms, 0.75 s of CPU against 0.34 s
//! (`starling child --workload w1 --runtime starling --size 1000000 --schedulers 2`, or `1`;
//! all figures here are medians of five alternating rounds within one series, since this host's
//! times vary up to 2× between series). Each child is ~0.3 µs of work, but one that another
//! core steals brings its control block, table entry and the spawner's mailbox lines over, and
//! its block goes back to the spawner's core for reuse: about ten cache-line transfers. Skynet,
//! whose stolen work is whole subtrees, gains from the second worker (367 ms against 542 ms).
//! Measured and rejected, as temporary switches: thieves that never steal (778 ms against
//! 468 ms with stealing and 378 ms on one worker: the idle worker is woken at every spawn and
//! goes back to sleep), single-process steals (552 ms against 468 ms), and ending a spawner's
//! slice after 16, 255 or unlimited fresh processes instead of 63 (595, 578 and 529 ms against
//! 454 ms). Not tried: telling short processes from long ones before stealing them (neither
//! the BEAM nor Go does).
//!
//! # Reductions
//!
//! Every VM call spends reductions ([`spend`]); after [`REDUCTIONS_PER_SLICE`] the process
//! yields at its next VM call. A process that never calls the VM cannot be preempted safely
//! (switching it inside `malloc` could deadlock).
//!
//! # Parking
//!
//! A worker that runs out of work first searches for up to 25 µs (at most half the workers at
//! once; while one searches, submitters wake nobody), then re-checks every queue after
//! registering as a sleeper and sleeps on its parker until woken or until its next timer is
//! due: an idle runtime uses no CPU. At most once a second, a worker that has been idle for
//! 50 ms gives memory back (not sooner: a worker that runs dry in the middle of a busy run
//! would return pages the next processes fault back in; a worker that ran processes since its
//! last pass sleeps only until the next one is allowed, so a VM that goes quiet shrinks within
//! about a second without being woken; `tests/memory_idle.rs`):
//! dead stack pages below parked processes' frames and in unused slots (`madvise`), the
//! finished processes the workers kept for reuse (`Config::recycle`: a worker that held the last
//! reference to a finished process keeps it, up to a bound, so the next spawn on it reuses the
//! allocation; a full worker hands half of what it keeps to a runtime-wide store, from which a
//! worker with none refills), the pages of freed saved-frame buffers, control blocks and
//! [`Block`]s (the block store, `frames.rs`, whose free lists live inside the free buffers, and
//! whose returned pages are carved again by whichever size class needs memory next), and freed
//! heap (`malloc_trim`).
//!
//! What the VM allocates by the hundred thousand in a burst (boxed messages, `Down`s and
//! `Exit`s, links-and-monitors records) is therefore a [`Block`], not a `Box`: from glibc, a
//! burst grew the worker arenas by megabytes, and afterwards the chunks glibc's per-thread
//! caches kept were scattered over them and pinned their pages for good, which no public glibc
//! call empties (`tests/memory_relations_burst.rs`).
//!
//! The top of each worker thread's glibc arena is another matter: `malloc_trim` releases free
//! chunks inside a thread arena's heap but not its top chunk, which glibc shrinks only when the
//! thread frees a chunk of 64 KiB or more while the top exceeds the trim threshold (128 KiB
//! unless raised dynamically), and then only down to a pad of 128 KiB (`M_TOP_PAD`) that stays
//! resident once touched. Each worker's pass frees one such chunk, carved from the top and its
//! pages discarded first (`trim_own_arena_top` in `runtime.rs`; `tests/memory_arena_pad.rs`), so
//! an idle VM's arena tops shrink, pads included; but while the VM is busy, and in
//! any reading taken then, they stay at their high-water mark. So what a worker allocates and
//! frees over and over must stay small. The run
//! queues' buffers live there (crossbeam-deque grows a deque by doubling past 64 entries and
//! shrinks it again below a quarter; every resize of a buffer over 1 KiB also seals a 2 KiB bag
//! of deferred frees): when a spawner could fill its fresh deque with a whole slice's worth of
//! children (4,000), both deques went up to 32 KiB and back every slice, and the arena tops'
//! high-water mark crept up over ten million spawn/exit cycles in waves of 100,000
//! (`tests/memory_cycles.rs`), by +7 to +16 % of a ~4 MiB process. A spawner's slice now ends
//! once its fresh deque holds 63 (`FRESH_PER_SLICE` in `runtime.rs`), so neither deque leaves
//! its first buffer in a spawn loop: +2.9 to +7.5 % (eleven runs, most +3 to +5 %; +2.4 to
//! +4.6 % in six runs since the VM's mailboxes keep their first message inline, +2.8 to +4.9 %
//! in six since their queues cost a word until used, +2.5 to +4.5 % in eight with the spawn
//! credit and the smaller frames), for ~10 % more time in W2 (a million spawns in one loop).
//! Rejected, measured (2 workers, W2 alternated with the unchanged build):
//! - *Also bounding the local queue*: a spawner whose fresh deque holds 32 ends its slice, and a
//!   queue of 48 moves its older 24 to the injector. The drift fell to +3.3 to +4.7 %, but
//!   skynet (W5) went from ~0.3 s to ~0.5 s. With both bounds at 64, skynet kept its speed but
//!   W2 needed 20 to 50 % more CPU: with small deques the other worker runs dry, sleeps and is
//!   woken far more often (the extra time was in the run loop and in the kernel's wake-up
//!   path). Bounding both at 1,024 entries did not fix the drift (+6.0, +10.3 %), nor did
//!   ending the slice at 255 fresh (+5.2 to +9.6 %).
//! - *Spilling a full fresh deque's older half to the injector* (the spawner then yields into
//!   the injector behind its spilled children, so it still cannot outrun them): W2 took ~10 %
//!   more CPU (four alternating runs), and the injector's blocks are allocations too.
//! - *Charging a spawn more reductions* (64: ~62 spawns a slice) had the same effect on the
//!   drift and on W2 as the fresh-deque bound, but also shortened the slices of processes that
//!   spawn a few children among other work.
//!
//! # Control blocks
//!
//! The runtime and the VM hold a process through a [`Handle<P>`]: `Arc<P>`'s protocol on memory
//! from the same block store as saved frames, committed in 128 KiB windows with one system call
//! each instead of a page fault per page (`handle.rs` has the measurements).
//!
//! # Processes that never yield
//!
//! A watchdog thread (`watchdog.rs`, Go's sysmon) notices a worker that has been inside one
//! process for longer than the long-schedule threshold (5 ms by default) and activates a
//! spare worker thread, which takes over that worker's queue, runnext slot and timers until it
//! comes back; each event is reported to the owner (the VM logs it with the pid). Work known to
//! block goes to the blocking pool (`blocking.rs`) instead, while the process parks.
//!
//! # Stack overflow
//!
//! Every slot keeps a guard page. A fault there on the running process's own slot is turned,
//! through corosensei's trap support, into the end of that process alone (`overflow.rs`); the
//! owner is told through [`Schedulable::overflowed`]. Any other guard-page fault aborts with a
//! message. The overflowed frames are discarded without their destructors, so a lock held in
//! them stays held: an owner calls [`ensure_stack_headroom_as`] where its process enters code
//! that takes locks other processes need, and a process short of stack then overflows there,
//! holding none of them. [`Schedulable::overflowed`] runs on the worker thread's own stack,
//! where an overflow cannot be contained: an owner must not run user code there (the VM drops
//! an overflowed process's process-locals and messages in a new process).
//!
//! # Timers
//!
//! Each worker owns a hierarchical timer wheel (6 levels × 64 slots, 1 ms ticks, `timer.rs`)
//! behind a mutex. A process's timed park inserts into the wheel of the worker it runs on; the
//! worker fires due timers every few ticks while busy and sleeps until the next one when idle.
//! Timers never fire early: the wheel compares exact deadlines. A wheel's slab keeps the cells
//! of its peak until the idle pass that gives memory back cuts it back to its highest live
//! timer (`TimerWheel::shrink`): a burst of a million timed waits no longer leaves ~61 MiB
//! behind for good.
//!
//! # The thread rule
//!
//! A process may resume on another worker thread after any call that can suspend it (every VM
//! call). Therefore:
//!
//! - the runtime finds the current process and worker only through an opaque call that cannot
//!   be cached across a switch (`context.rs`);
//! - process code must not keep `thread_local!` references, thread ids, or a `std::sync`
//!   guard across a VM call, nor hold `!Send` values (like `Rc` clones shared with other
//!   threads' data) across one; use process-local storage instead.
//!
//! Rust's panic state is the thread's too: `std::thread::panicking` and the panic count that
//! `catch_unwind` decrements are thread-locals of std. A fiber that switched out while
//! unwinding (a destructor that parks or spends its slice) would leave every other fiber on its
//! thread "panicking" (a VM kill does not unwind a process that is already panicking, and a
//! mutex unlocked then is poisoned), and would finish unwinding on another thread, whose count
//! it would wrap. So an unwinding fiber never switches: its yields are put off until the
//! unwinding ends, and a park blocks the thread for 100 µs and returns (a spurious wake-up the
//! caller's wait loop re-checks). The watchdog moves the thread's other processes to a spare
//! meanwhile, as for any long computation (`Fiber::suspend_self`).
//!
//! # Shutdown
//!
//! 1. The owner (the VM) stops new spawns and makes every process end (it kills them; each one
//!    unwinds at its next VM call).
//! 2. [`Runtime::shutdown`] sets the shutdown flag and wakes every worker.
//! 3. A worker exits its loop once the flag is set and no fiber is live; the last fiber to
//!    finish wakes everybody. If the only live fibers are stuck in code that never calls the VM
//!    (the watchdog has flagged their workers), the runtime abandons them: the other workers
//!    exit and the stuck threads are detached, to exit if their process ever returns.
//! 4. [`Runtime::join`] joins the threads (the watchdog's and spares' too) and drops pending
//!    timers (breaking reference cycles through processes); dropping the last reference to the
//!    shared state unmaps the stack slots.
//!
//! # Rejected alternatives
//!
//! - *One shared run queue* (BEAM before SMP balancing): every spawn and wake contends on one
//!   lock. Per-worker deques with stealing scale and keep locality.
//! - *A lock-free MPMC run queue per worker*: crossbeam's Chase–Lev deque already gives the
//!   owner cheap push/pop and thieves cheap batch steals.
//! - *Spinning idle workers*: burns the CPU a benchmark or the neighbours need; parking costs a
//!   few microseconds of wake-up latency only when a worker really was idle.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, missing_debug_implementations)]

mod arch;
mod blocking;
mod context;
mod entry;
mod fiber;
mod frames;
mod handle;
mod idle;
mod overflow;
mod pages;
mod park;
mod runnext;
mod runtime;
mod slot;
mod suspend;
mod timer;
mod watchdog;
mod worker;

pub use blocking::{BlockingPool, DEFAULT_BLOCKING_IDLE, DEFAULT_BLOCKING_THREADS};
pub use context::{current_process, in_process};
pub use fiber::{Fiber, FiberStatus, REDUCTIONS_PER_SLICE};
pub use handle::{Block, Handle};
pub use pages::{commit_spare, ZeroPages, PAGE};
pub use runtime::{
    Config, GiveBackHook, LongScheduleHook, Padded, Runtime, StartError, TimerHandle,
    DEFAULT_MAX_SLOTS, DEFAULT_SLOT_SIZE, DEFAULT_SPARES, RECYCLE_SPILL_BATCHES,
};
pub use suspend::{
    ensure_stack_headroom_as, park, park_as, park_until, spend, spend_as, yield_now,
};
pub use watchdog::{LongSchedule, DEFAULT_LONG_SCHEDULE};

/// A process the runtime can schedule: something that owns a [`Fiber`].
///
/// The runtime holds processes as [`Handle<P>`] in its queues; the fiber's body is given to
/// [`Fiber::new`] when the process is created.
pub trait Schedulable: Send + Sync + 'static {
    /// The process's green thread.
    fn fiber(&self) -> &Fiber;

    /// A number identifying the process in long-schedule reports (the VM encodes its pid).
    fn label(&self) -> u64 {
        0
    }

    /// Called on a worker thread (outside any process) after the process's coroutine overflowed
    /// its stack and was abandoned: its frames are gone, its body will never return, and the
    /// owner must end it. It runs on the worker thread's own stack, whose overflow would abort
    /// the program: it must not run unbounded user code (destructors included). The default
    /// does nothing.
    fn overflowed(this: &Handle<Self>)
    where
        Self: Sized,
    {
        let _ = this;
    }
}

impl std::fmt::Debug for Fiber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fiber")
            .field("status", &self.status())
            .finish()
    }
}
