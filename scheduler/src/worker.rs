//! The worker run loop: pick a process, run it on its home slot, file it by how it stopped.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::{Steal, Worker};

use crate::context::{self, Context};
use crate::fiber::RunOutcome;
use crate::handle::Handle;
use crate::runtime::{GiveBack, Shared};
use crate::slot::{Acquire, ShareCursor};
use crate::Schedulable;

/// Every this many ticks the worker looks at the shared injector before its own queue, so that
/// processes spawned or woken from outside are not starved by a busy local queue. Go and tokio
/// both use 61 (a prime, so it does not resonate with other periodic behaviour).
const INJECTOR_INTERVAL: u64 = 61;

/// Every this many ticks the worker takes from its run queue before its fresh deque, so that
/// processes woken while the runnext slot was taken get a share of a worker that an endless
/// tree of spawns keeps busy. (A process that yields first moves the fresh deque to the queue
/// ahead of itself; see `run_process`.) A prime, like [`INJECTOR_INTERVAL`], and a different
/// one, so that the two checks do not coincide.
const QUEUE_INTERVAL: u64 = 31;

/// Every this many ticks a busy worker checks its timer wheel. Guessed: at ~100 ns per tick
/// this polls the clock every ~1.6 µs of busy work, well under the wheel's 1 ms resolution.
const TIMER_INTERVAL: u64 = 16;

/// State that only the worker's own thread touches: through `&self` from the loop, and from
/// processes running on this thread through the context pointer (one thread, no overlap of
/// borrows: `RefCell`s are borrowed only briefly and never across a process run).
pub(crate) struct WorkerLocal<P> {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared<P>>,
    /// The local run queue (FIFO; the other workers steal from its other end).
    pub(crate) queue: Worker<Handle<P>>,
    /// Processes spawned on this worker that have not run yet (LIFO: the newest runs first;
    /// the other workers steal the oldest). See `next_process` for how it shares the worker with
    /// `queue`.
    pub(crate) fresh: Worker<Handle<P>>,
    /// Reductions left of the current time slice. A process taken from runnext inherits them
    /// (Go's `runnext` inherits the time slice): a chain of wake-ups or spawns shares one slice,
    /// so it stays on this core and runs depth-first, yet cannot starve the queue; once the
    /// slice is used up the runnext process goes to the back of the queue.
    slice_left: Cell<i32>,
    /// The slice the next run gets.
    next_slice: Cell<i32>,
    /// Free stack slots this worker hands out first (see `SlotPool::claim_home`).
    pub(crate) free_slots: RefCell<Vec<u32>>,
    /// Where this worker shares its next home once the pool is full (see `ShareCursor`).
    share_cursor: RefCell<ShareCursor>,
    /// Loop iterations so far.
    tick: Cell<u64>,
    /// Whether this worker counts as searching in `Idle`.
    searching: Cell<bool>,
    /// Whether this worker has run a process since it last gave memory back and found nothing
    /// left to give. While set, its sleep ends in time for the next give-back (see `sleep`).
    owes_give_back: Cell<bool>,
    /// When this worker last went idle (ran out of processes); `None` while it runs them.
    /// A give-back pass waits until the worker has been idle for [`QUIET_BEFORE_GIVE_BACK`].
    idle_since: Cell<Option<Instant>>,
    /// State of the randomized test mode's generator (xorshift64); 0 when the mode is off.
    random: Cell<u64>,
}

/// How long a worker that ran out of work keeps looking before it parks. Guessed from the
/// cost of a futex wake-up here (DESIGN.md: several µs, more with the other core busy): long
/// enough to bridge the gaps of a spawn or message stream, short enough to be invisible in an
/// idle VM's CPU use.
const SPIN_FOR_WORK: std::time::Duration = std::time::Duration::from_micros(25);

/// `spin_loop` hints between two looks at the queues while searching. Guessed: a PAUSE costs
/// tens of cycles on current x86, so this is roughly half a microsecond.
const SPIN_PAUSES: usize = 64;

/// How long a worker must have been idle before it gives memory back. A worker that runs out
/// of work in the middle of a busy run (the other worker has the processes, or a burst of
/// wake-ups is on its way) would otherwise make a pass there: in W2 (a million processes
/// released) passes then took 8 % of the release phase, and their `madvise`s interrupted the
/// other core for TLB shoot-downs (3.5 %), only to return pages the next processes fault back
/// in. Guessed: far longer than the gaps inside a busy run, far shorter than the second a VM
/// that went quiet takes to shrink.
const QUIET_BEFORE_GIVE_BACK: std::time::Duration = std::time::Duration::from_millis(50);

/// Most free slots a worker keeps to itself; the rest go back to the shared list. Guessed.
const FREE_SLOT_CACHE: usize = 64;

impl<P: Schedulable> WorkerLocal<P> {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared<P>>,
        queue: Worker<Handle<P>>,
        fresh: Worker<Handle<P>>,
    ) -> Self {
        let share_cursor = ShareCursor::new(index, shared.workers.len());
        WorkerLocal {
            index,
            queue,
            fresh,
            slice_left: Cell::new(0),
            next_slice: Cell::new(crate::fiber::REDUCTIONS_PER_SLICE),
            free_slots: RefCell::new(Vec::new()),
            share_cursor: RefCell::new(share_cursor),
            tick: Cell::new(0),
            searching: Cell::new(false),
            owes_give_back: Cell::new(false),
            idle_since: Cell::new(None),
            random: Cell::new(shared.randomize.map_or(0, |seed| {
                (seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
            })),
            shared,
        }
    }

    /// In the randomized test mode, returns `true` with probability `1 / one_in`; otherwise
    /// always `false`.
    pub(crate) fn chance(&self, one_in: u64) -> bool {
        let mut x = self.random.get();
        if x == 0 {
            return false;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.set(x);
        x.is_multiple_of(one_in)
    }

    /// The slice a process gets when it is resumed: the full slice, or in the randomized test
    /// mode sometimes a short one, so that processes yield at arbitrary VM calls.
    fn slice(&self) -> i32 {
        if self.chance(2) {
            (self.random.get() % 64) as i32 + 1
        } else {
            crate::fiber::REDUCTIONS_PER_SLICE
        }
    }

    /// Ends the slice of the process running on this worker, if any: it yields at its next VM
    /// call. Called on this worker's thread, by code the running process called (a spawn).
    pub(crate) fn end_running_slice(&self) {
        let fiber = context::current_fiber();
        if fiber.is_null() {
            return;
        }
        // SAFETY: the context's fiber is set only while this thread runs that fiber's
        // coroutine (`run_process` sets it just before `resume` and clears it just after, and
        // spawns nothing in between), and we are on this thread: the fiber is running, and
        // it is the one calling us.
        unsafe { (*fiber).end_slice() };
    }

    /// The worker thread's body.
    pub(crate) fn run(self) {
        crate::overflow::ensure_alternate_stack();
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            // Relaxed: see the field.
            self.shared.workers[self.index]
                .tid
                .store(tid, Ordering::Relaxed);
        }
        context::set_context(Context {
            runtime: Arc::as_ptr(&self.shared) as usize,
            process_type: Some(std::any::TypeId::of::<P>()),
            worker: &self as *const WorkerLocal<P> as *const (),
            process: std::ptr::null(),
            fiber: std::ptr::null(),
        });
        loop {
            if self.index >= self.shared.schedulers && self.shared.spare_should_retire(self.index) {
                self.retire();
                // Acquire: pairs with the Release in `Runtime::join`.
                if self.shared.shutdown.load(Ordering::Acquire) {
                    break;
                }
                continue;
            }
            let tick = self.tick.get().wrapping_add(1);
            self.tick.set(tick);
            if tick.is_multiple_of(TIMER_INTERVAL) {
                self.fire_timers();
            }
            if let Some(process) = self.next_process(tick) {
                if self.searching.replace(false) && self.shared.idle.transition_from_searching() {
                    self.shared.notify_one();
                }
                self.run_process(process);
                continue;
            }
            if self.fire_timers() {
                continue;
            }
            if self.finished() {
                break;
            }
            if self.spin_for_work() {
                continue;
            }
            self.sleep();
        }
        // Wake the others so they notice the end too.
        self.shared.wake_all_workers();
        let leftover = self.free_slots.take();
        self.shared.slots.give_back(leftover);
        context::clear_context();
    }

    /// Returns `true` once the runtime is shutting down and no process is left for us.
    fn finished(&self) -> bool {
        // Acquire: pairs with the Releases in `Runtime::shutdown` and `Runtime::join`.
        self.shared.shutdown.load(Ordering::Acquire)
            && (self.shared.live() == 0 || self.shared.abandon.load(Ordering::Acquire))
    }

    /// A spare that is no longer needed: hands its work to the injector, then sleeps until the
    /// watchdog needs it again (or the runtime shuts down).
    fn retire(&self) {
        let shared = &self.shared;
        if self.searching.replace(false) && shared.idle.transition_from_searching() {
            shared.notify_one();
        }
        while let Some(process) = shared.workers[self.index].runnext.take() {
            shared.injector.push(process);
        }
        while let Some(process) = self.queue.pop() {
            shared.injector.push(process);
        }
        while let Some(process) = self.fresh.pop() {
            shared.injector.push(process);
        }
        // Nobody fires a dormant spare's wheel: its timers go to worker 0's, which all watch.
        shared.workers[self.index]
            .timers
            .move_into(shared, &shared.workers[0].timers);
        shared.wake_all_workers();
        while shared.spare_is_dormant(self.index) && !self.finished() {
            // Acquire: pairs with `Runtime::shutdown`.
            if shared.shutdown.load(Ordering::Acquire) {
                break;
            }
            shared.workers[self.index].parker.park(None);
        }
    }

    /// The next process to run, from (in order) the runnext slot, the fresh deque, the local
    /// queue, the injector and the other workers' queues.
    ///
    /// New processes run before queued ones, newest first: a spawner's children run while
    /// their parent's data is still in this core's cache, and a process tree unfolds
    /// depth-first instead of breadth-first (its live set, and so its memory, stays small).
    /// A process that used up its slice goes behind every process spawned before it (see
    /// `run_process`), so a spawner cannot outrun its children; and so that an endless tree of
    /// spawns cannot starve the queue, every [`QUEUE_INTERVAL`]-th pick takes the queue first.
    fn next_process(&self, tick: u64) -> Option<Handle<P>> {
        if tick.is_multiple_of(INJECTOR_INTERVAL) || self.chance(8) {
            if let Some(process) = self.steal_from_injector() {
                return Some(process);
            }
        }
        if let Some(process) = self.shared.workers[self.index].runnext.take() {
            let left = self.slice_left.get();
            if left > 0 {
                self.next_slice.set(left);
                return Some(process);
            }
            self.queue.push(process);
        }
        self.next_slice.set(self.slice());
        if tick.is_multiple_of(QUEUE_INTERVAL) || self.chance(4) {
            if let Some(process) = self.queue.pop() {
                return Some(process);
            }
        }
        if let Some(process) = self.fresh.pop() {
            return Some(process);
        }
        if let Some(process) = self.queue.pop() {
            return Some(process);
        }
        if let Some(process) = self.steal_from_injector() {
            return Some(process);
        }
        self.steal_from_workers()
    }

    fn steal_from_injector(&self) -> Option<Handle<P>> {
        loop {
            match self.shared.injector.steal_batch_and_pop(&self.queue) {
                Steal::Success(process) => return Some(process),
                Steal::Empty => return None,
                Steal::Retry => continue,
            }
        }
    }

    fn steal_from_workers(&self) -> Option<Handle<P>> {
        let stealers = &self.shared.stealers;
        let count = stealers.len();
        if count <= 1 {
            return None;
        }
        // Start after ourselves so that victims rotate instead of all hitting worker 0.
        let start = if self.chance(1) {
            self.random.get() as usize
        } else {
            self.index + 1 + (self.tick.get() as usize % count)
        };
        let mut retry = true;
        while retry {
            retry = false;
            for offset in 0..count {
                let victim = (start + offset) % count;
                if victim == self.index {
                    continue;
                }
                let worker = &self.shared.workers[victim];
                // Relaxed: a hint (see `WorkerShared::active`).
                if !worker.active.load(Ordering::Relaxed) {
                    continue;
                }
                // Relaxed: a hint; the watchdog flags a worker stuck only after milliseconds.
                if worker.stuck.load(Ordering::Relaxed) {
                    if let Some(process) = worker.runnext.take() {
                        return Some(process);
                    }
                }
                match stealers[victim].steal_batch_and_pop(&self.queue) {
                    Steal::Success(process) => return Some(process),
                    Steal::Empty => {}
                    Steal::Retry => retry = true,
                }
                // The oldest new processes: in a process tree, the largest subtrees.
                match self.shared.fresh_stealers[victim].steal_batch_and_pop(&self.fresh) {
                    Steal::Success(process) => return Some(process),
                    Steal::Empty => {}
                    Steal::Retry => retry = true,
                }
            }
        }
        None
    }

    /// Runs one process until it parks, yields or completes.
    fn run_process(&self, process: Handle<P>) {
        let fiber = process.fiber();
        let slot = match fiber.home() {
            Some(slot) => slot,
            None => {
                let slot = {
                    let mut cache = self.free_slots.borrow_mut();
                    let mut cursor = self.share_cursor.borrow_mut();
                    self.shared.slots.claim_home(&mut cache, &mut cursor)
                };
                fiber.set_home(slot);
                slot
            }
        };
        match self.shared.slots.try_acquire(slot, &process) {
            Acquire::Held => {}
            // The holder of the slot requeues it when it releases the slot.
            Acquire::Queued => return,
        }
        self.shared.slots.make_resident(slot, &process);
        self.shared.slots.mark_used(slot);
        self.owes_give_back.set(true);
        self.idle_since.set(None);
        let shared_self = &self.shared.workers[self.index];
        // Relaxed: the watchdog only samples these (see `watchdog.rs`).
        shared_self.label.store(process.label(), Ordering::Relaxed);
        let runs = shared_self.runs.load(Ordering::Relaxed);
        shared_self.runs.store(runs + 1, Ordering::Relaxed);
        context::set_process(Handle::as_ptr(&process) as *const (), fiber);
        // SAFETY: we hold the fiber's home slot, made it resident just above, and it was
        // Scheduled when we popped it (only one queue ever holds it).
        let (outcome, left) =
            unsafe { fiber.resume(self.shared.slots.stack(slot), self.next_slice.get()) };
        self.slice_left.set(left);
        self.next_slice.set(self.slice());
        context::set_process(std::ptr::null(), std::ptr::null());
        shared_self.runs.store(runs + 2, Ordering::Relaxed);
        if shared_self.stuck.load(Ordering::Relaxed) {
            self.shared.report_finished(self.index);
        }
        match outcome {
            RunOutcome::Parked => {
                self.release_slot(slot);
                if fiber.transition_to_idle() {
                    self.queue.push(process);
                }
            }
            RunOutcome::Yielded => {
                self.release_slot(slot);
                fiber.transition_to_scheduled();
                // Behind what it spawned before (FIFO between the two, as if spawns were
                // queued): a process that spawns in a loop gets one slice per slice's worth of
                // children run, not one per few children, and cannot flood the fresh deque.
                while let Some(spawned) = self.fresh.pop() {
                    self.queue.push(spawned);
                }
                self.queue.push(process);
                self.shared.notify_one();
            }
            RunOutcome::Completed => {
                // SAFETY: this worker ran the fiber and `resume` returned: it owns the core.
                if unsafe { fiber.overflowed() } {
                    // Its frames are gone (overflow.rs); the owner ends it from here.
                    P::overflowed(&process);
                }
                let resident = self.shared.slots.vacate(slot);
                self.release_slot(slot);
                if self.shared.slots.unhome(slot) {
                    let mut cache = self.free_slots.borrow_mut();
                    if cache.len() < FREE_SLOT_CACHE {
                        cache.push(slot);
                    } else {
                        self.shared.slots.give_back([slot]);
                    }
                }
                drop(resident);
                self.keep_or_drop(process);
                self.shared.fiber_finished(self.index);
            }
        }
    }

    /// Keeps a completed process for reuse (`Config::recycle`) if this worker holds its last
    /// reference and has room; drops it otherwise. Out of line: it is off the run loop's hot
    /// path (a process's end), and inlining it there changed the loop's code enough to cost
    /// ~10 % on `context_switch` (measured).
    #[inline(never)]
    fn keep_or_drop(&self, process: Handle<P>) {
        // No `Weak` is ever made of a process, so a strong count of one means nobody else can
        // reach it any more (and nobody can start to: that needs a reference).
        if self.shared.recycle == 0 || Handle::strong_count(&process) != 1 {
            return;
        }
        self.shared.keep_recycled(self.index, process);
    }

    fn release_slot(&self, slot: u32) {
        let mut requeued = false;
        self.shared.slots.release(slot, &mut |waiter| {
            self.queue.push(waiter);
            requeued = true;
        });
        if requeued {
            self.shared.notify_one();
        }
    }

    /// Fires this worker's due timers and worker 0's (which also holds every callback timer).
    /// Returns `true` if any fired.
    fn fire_timers(&self) -> bool {
        // No clock read unless some watched wheel has a timer at all.
        if self
            .watched_wheels()
            .all(|index| !self.shared.workers[index].timers.pending())
        {
            return false;
        }
        let now = Instant::now();
        let mut fired = 0;
        for index in self.watched_wheels() {
            let timers = &self.shared.workers[index].timers;
            if timers.due(&self.shared, now) {
                fired += timers.fire(&self.shared, now);
            }
        }
        fired > 0
    }

    /// The timer wheels this worker fires: its own, worker 0's (callback timers), and those of
    /// stuck workers, which cannot fire their own.
    fn watched_wheels(&self) -> impl Iterator<Item = usize> + '_ {
        let any_stuck = self.shared.any_stuck();
        let stuck = (0..self.shared.workers.len()).filter(move |&index| {
            any_stuck &&
            // Relaxed: a hint, see `steal_from_workers`.
            index != self.index
                && index != 0
                && self.shared.workers[index].stuck.load(Ordering::Relaxed)
        });
        std::iter::once(self.index)
            .chain((self.index != 0).then_some(0))
            .chain(stuck)
    }

    /// Before sleeping, watches the queues for up to [`SPIN_FOR_WORK`] as a searching worker.
    /// Returns `true` if work appeared (the caller loops back and takes it).
    ///
    /// A futex sleep and wake-up costs several microseconds on both sides; under a stream of
    /// spawns or cross-worker wake-ups the second worker would otherwise sleep and be woken for
    /// every few processes. While it searches, submitters do not wake anybody (`idle.rs`).
    fn spin_for_work(&self) -> bool {
        let shared = &self.shared;
        if !self.searching.get() {
            let workers = shared.schedulers;
            if !shared.idle.transition_to_searching(workers) {
                return false;
            }
            self.searching.set(true);
        }
        let start = Instant::now();
        loop {
            if shared.has_visible_work() {
                return true;
            }
            // Look only every ~0.5 µs: every look reads the other workers' queue ends, and
            // reading them continuously would slow down the pushes of the worker that has work
            // (its cache lines would bounce to us and back on every spawn).
            for _ in 0..SPIN_PAUSES {
                std::hint::spin_loop();
            }
            if start.elapsed() >= SPIN_FOR_WORK || self.finished() {
                return false;
            }
        }
    }

    /// Parks the worker until work arrives or its next timer is due (idle protocol, `idle.rs`).
    ///
    /// A worker that has run processes since it last gave memory back also wakes when the next
    /// give-back is allowed: once it has been idle for [`QUIET_BEFORE_GIVE_BACK`], and no sooner
    /// than the rate limit allows (`Shared::give_memory_back`), and again while a pass leaves
    /// work over: the memory of the last processes before the VM went quiet goes back without
    /// anything else waking the VM. Once a give-back leaves nothing, the worker sleeps until
    /// work arrives, so an idle VM uses no CPU.
    fn sleep(&self) {
        let shared = &self.shared;
        let now = Instant::now();
        let idle_since = self.idle_since.get().unwrap_or(now);
        self.idle_since.set(Some(idle_since));
        let quiet_at = idle_since + QUIET_BEFORE_GIVE_BACK;
        let next_give_back = if now < quiet_at {
            self.owes_give_back.get().then_some(quiet_at)
        } else {
            match shared.give_memory_back(&self.queue) {
                GiveBack::Done => {
                    self.owes_give_back.set(false);
                    None
                }
                GiveBack::Continue(at) => Some(at),
                GiveBack::NotBefore(at) => self.owes_give_back.get().then_some(at),
            }
        };
        shared
            .idle
            .transition_to_sleeping(self.index, self.searching.replace(false));
        // Step c of the idle protocol: look again now that we are listed as sleeping.
        // Acquire: pairs with the Release in `Runtime::shutdown`.
        let shutting_down = self.finished();
        if shutting_down || shared.has_visible_work() {
            if !shared.idle.transition_from_sleeping(self.index) {
                // A submitter already woke us and counted us as searching.
                self.searching.set(true);
            }
            return;
        }
        let deadline = self
            .watched_wheels()
            .filter_map(|index| shared.workers[index].timers.next_deadline(shared))
            .chain(next_give_back)
            .min();
        shared.workers[self.index].parker.park(deadline);
        if !shared.idle.transition_from_sleeping(self.index) {
            self.searching.set(true);
        }
        shared.watchdog.worker_woke();
    }
}
