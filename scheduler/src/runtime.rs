//! The runtime: worker threads, the shared injector, stealers, timers and the stack-slot pool.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Stealer, Worker};

use crate::context;
use crate::handle::Handle;
use crate::idle::Idle;
use crate::park::Parker;
use crate::runnext::RunNext;
use crate::slot::{SlotPool, GUARD_SIZE};
use crate::timer::{TimerKey, TimerWheel};
use crate::watchdog::{self, LongSchedule, WatchdogShared, DEFAULT_LONG_SCHEDULE};
use crate::worker::WorkerLocal;
use crate::Schedulable;

/// Default bytes per stack slot, guard page included: enough for 200 KiB of recursion plus a
/// panic's unwinding (24 KiB with backtraces). From DESIGN.md's slot recommendation.
pub const DEFAULT_SLOT_SIZE: usize = 256 * 1024;

/// Least time between two passes of giving memory back on the idle path. Guessed: rare enough
/// that the syscalls never show in a profile, frequent enough that an idle VM shrinks within
/// seconds.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes of the block [`trim_own_arena_top`] allocates and frees: at least glibc's
/// `FASTBIN_CONSOLIDATION_THRESHOLD` (64 KiB), and with its 16-byte header below glibc's
/// smallest threshold for serving an allocation with `mmap` (128 KiB unless raised), so that
/// it comes from the thread's arena; as close to that as page rounding allows, so that it
/// covers nearly all of the 128 KiB the arena keeps at its top (`M_TOP_PAD`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_TRIM_NUDGE: usize = 124 << 10;

/// Returns the top of the calling thread's glibc arena to the OS.
///
/// `malloc_trim` returns the free pages inside every arena, but shrinks only the main arena's
/// top chunk, not a thread arena's: that one shrinks only when the thread frees a chunk of at
/// least 64 KiB (glibc's `heap_trim`, called from `free`). A burst whose memory was carved from
/// the top last merges back into the top when freed, and there it stayed resident while the VM
/// idled: 100,000 boxed messages freed by their receiver, before those moved to the block store
/// (`Block`), left 5.2 to 6.3 MiB for a 3.4 MiB process after a first batch of such cycles,
/// until a later burst happened to free a large chunk; a program's own bursts of allocations do
/// the same. So each worker's pass frees one such chunk. A worker gives memory back itself before it stops owing a pass
/// (`WorkerLocal::sleep`), so every worker's arena gets its nudge.
///
/// Even trimmed, the top keeps a pad of 128 KiB (`M_TOP_PAD`), which a busy arena has touched:
/// 128 KiB stayed resident per worker that had ever allocated much, the largest part of what
/// an idle VM kept above an empty one after ten million cycles (a 3 MiB probe program running
/// W1's cycle in batches of 100,000: +11 to +12 %; now +4.5 to +6.5 %). The block is carved
/// from the start of the top when no free chunk fits, so before it is freed its whole pages
/// are discarded: the pad is no longer resident until the thread allocates from it again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_own_arena_top() {
    // SAFETY: a block from `malloc` is freed exactly once (`free` accepts null) and not read
    // in between. Until then its `ARENA_TRIM_NUDGE` bytes are ours, so discarding the whole
    // pages inside them only zeroes our own bytes: glibc keeps its chunk headers before the
    // block and after its end, and the range is rounded inwards, so no header is touched.
    // `black_box` keeps the pair from being optimized away.
    unsafe {
        let block = std::hint::black_box(libc::malloc(ARENA_TRIM_NUDGE));
        if !block.is_null() {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(1) as usize;
            let start = (block as usize).next_multiple_of(page);
            let end = (block as usize + ARENA_TRIM_NUDGE) / page * page;
            if end > start {
                // Its result does not matter: the pages stay resident if it fails.
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
        libc::free(block);
    }
}

/// New processes a worker's fresh deque holds before the process spawning them has its slice
/// ended (it yields at its next VM call, behind its children; see `WorkerLocal::run_process`).
///
/// 63: crossbeam-deque's first buffer holds 64 entries, so the fresh deque never grows, and
/// the local queue, which takes the fresh deque's contents at each yield, rarely does: a spawn
/// loop no longer makes both deques grow to 32 KiB and shrink again every slice in the
/// workers' glibc arenas (the crate docs, under "Parking", have the measurements;
/// 255 was not enough). It also keeps fewer processes alive at once in a spawn loop.
///
/// The price is in W2 (a million processes spawned in one loop, then parked): the spawner
/// now alternates with its children every 63 spawns instead of every 4,000, and six
/// alternating rounds took ~10 % more wall and CPU time (median 2.45 s against 2.2 s);
/// W1 and skynet did not change.
const FRESH_PER_SLICE: usize = 63;

/// Least time between two passes of giving memory back while the previous pass left slots
/// over (its budget ran out). Guessed: a pass takes ~1 ms, so the worker stays asleep 90 % of
/// the time, and a VM with thousands of used slots is trimmed within a second.
const TRIM_CONTINUE: Duration = Duration::from_millis(10);

/// Most stack slots one trimming pass looks at (one `madvise` each). Guessed: ~5 µs each, so a
/// pass delays the worker's sleep by at most ~1 ms.
const TRIM_SLOTS: usize = 256;

/// Default number of spare worker threads (see `Config::spares`). Guessed: far more processes
/// stuck at once than this is a program bug, not a scheduling problem; unused spares cost an
/// empty queue each, their threads start only when needed.
pub const DEFAULT_SPARES: usize = 64;

/// Default maximum number of stack slots per runtime. 4,096 slots cost 8,192 kernel mappings
/// (of the default 65,530) when all are enabled, and 1 GiB of address space; DESIGN.md measured
/// 1 M parked coroutines on 4,096 slots at 304 B each.
pub const DEFAULT_MAX_SLOTS: usize = 4096;

/// The most worker threads (`Config::schedulers`) a runtime accepts.
const MAX_SCHEDULERS: usize = 1024;

/// The largest `Config::slot_size` a runtime accepts (1 GiB).
const MAX_SLOT_SIZE: usize = 1 << 30;

/// The most stack slots (`Config::max_slots`) a runtime accepts.
const MAX_SLOTS: usize = 1 << 20;

/// The most spare threads (`Config::spares`) a runtime accepts.
const MAX_SPARES: usize = 4096;

/// Receives the runtime's long-schedule reports (see `watchdog.rs`).
#[derive(Clone)]
pub struct LongScheduleHook(pub Arc<dyn Fn(LongSchedule) + Send + Sync>);

impl fmt::Debug for LongScheduleHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LongScheduleHook")
    }
}

/// Called by the idle pass that gives memory back (see [`Config::on_give_back`]).
#[derive(Clone)]
pub struct GiveBackHook(pub Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for GiveBackHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GiveBackHook")
    }
}

/// Runtime configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads (schedulers).
    pub schedulers: usize,
    /// Bytes per stack slot, guard page included; a multiple of 4 KiB, at least 64 KiB.
    pub slot_size: usize,
    /// Most stack slots (and so most processes running at the very same time without copying).
    pub max_slots: usize,
    /// Prefix of the worker threads' names.
    pub thread_name: String,
    /// Randomize scheduling choices (runnext or queue, steal victims, slice lengths) from this
    /// seed, to shake out order assumptions in tests (Go's `randomizeScheduler`). `None`: off.
    pub randomize: Option<u64>,
    /// How long a process may hold a worker without calling the VM before the watchdog hands
    /// the worker's queue to a spare worker thread.
    pub long_schedule: Duration,
    /// Called with every long schedule the watchdog sees.
    pub on_long_schedule: Option<LongScheduleHook>,
    /// Spare worker threads the watchdog may start for stuck workers: this many processes can
    /// be stuck at once (never calling the VM) without starving the others.
    pub spares: usize,
    /// Finished processes each worker may keep for [`Runtime::take_recycled`] (0: none). A
    /// worker keeps a process that completed on it only if it holds the last reference, so the
    /// owner can reuse the allocation for a new process instead of freeing one and allocating
    /// another (which, with a process allocated on one worker and freed on another, makes the
    /// allocator's threads contend). A worker whose store is full hands half of it, as one
    /// batch, to a runtime-wide store of up to [`RECYCLE_SPILL_BATCHES`] batches (when that is
    /// full too, it frees the half), from which a worker with an empty store refills (Go's per-P
    /// and global free-G lists): so the blocks of processes spawned on one worker and finished
    /// on another flow back to the spawner instead of being freed on one thread and allocated
    /// on another. Idle workers drop what they keep when they give memory back, and `join`
    /// drops the rest.
    pub recycle: usize,
    /// Called on a worker thread, outside any process, by each idle pass that gives memory
    /// back, after the finished processes kept for reuse are dropped and before the block
    /// store's pages go back: the owner returns memory of its own there (the VM shrinks its
    /// process table). At most once per pass, so at most about once a second.
    pub on_give_back: Option<GiveBackHook>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schedulers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            slot_size: DEFAULT_SLOT_SIZE,
            max_slots: DEFAULT_MAX_SLOTS,
            thread_name: "starling-worker".to_string(),
            randomize: None,
            long_schedule: DEFAULT_LONG_SCHEDULE,
            on_long_schedule: None,
            spares: DEFAULT_SPARES,
            recycle: 0,
            on_give_back: None,
        }
    }
}

/// A configuration the runtime cannot start with, or an OS refusal.
#[derive(Debug)]
pub enum StartError {
    /// `Config::{field}` is out of range: `field` {problem}. The field is named apart so that an
    /// owner can report it under its own name for the setting.
    InvalidConfig {
        /// The `Config` field's name.
        field: &'static str,
        /// What is wrong with it, with its value ("must be at most 4096, got 5000").
        problem: String,
    },
    /// The OS refused a resource (address space, a thread).
    Os(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidConfig { field, problem } => {
                write!(f, "invalid configuration: {field} {problem}")
            }
            StartError::Os(error) => write!(f, "the OS refused: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What a timer does when it fires.
pub(crate) enum TimerEntry<P> {
    /// Wake a process parked in a timed wait, if it is still in that wait.
    Wake(Handle<P>, u32),
    /// Run a callback on the worker thread, outside any process.
    Call(Box<dyn FnOnce() + Send>),
}

/// Handle of a callback timer ([`Runtime::call_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    worker: usize,
    key: TimerKey,
}

/// One worker's timer wheel with a lock-free hint of its next deadline.
pub(crate) struct Timers<P> {
    /// Under this mutex; any thread may insert or cancel.
    wheel: Mutex<TimerWheel<TimerEntry<P>>>,
    /// Earliest deadline, in whole milliseconds since the runtime's origin rounded down, or
    /// `u64::MAX`. Relaxed: a hint that only decides whether to lock the wheel; a stale value
    /// delays a check by at most one loop tick of the owning worker, which re-reads it.
    next_millis: AtomicU64,
    /// Held while due timers are taken and fired, so that two workers firing the same wheel
    /// (worker 0's also holds every callback timer) fire them in deadline order.
    firing: Mutex<()>,
}

impl<P: Schedulable> Timers<P> {
    fn new(origin: Instant) -> Self {
        Timers {
            wheel: Mutex::new(TimerWheel::new(origin)),
            next_millis: AtomicU64::new(u64::MAX),
            firing: Mutex::new(()),
        }
    }

    fn refresh_hint(&self, shared: &Shared<P>, wheel: &TimerWheel<TimerEntry<P>>) {
        let next = wheel
            .next_deadline()
            .map_or(u64::MAX, |deadline| shared.millis_since_origin(deadline));
        // Relaxed: see the field.
        self.next_millis.store(next, Ordering::Relaxed);
    }

    /// Returns `true` if the wheel holds any timer (a hint, see `next_millis`).
    pub(crate) fn pending(&self) -> bool {
        // Relaxed: see the field.
        self.next_millis.load(Ordering::Relaxed) != u64::MAX
    }

    /// Returns `true` if a timer may be due at `now`.
    pub(crate) fn due(&self, shared: &Shared<P>, now: Instant) -> bool {
        // Relaxed: see the field.
        self.next_millis.load(Ordering::Relaxed) <= shared.millis_since_origin(now)
    }

    /// The instant the owning worker must wake up at, if any timer is pending.
    pub(crate) fn next_deadline(&self, shared: &Shared<P>) -> Option<Instant> {
        // Relaxed: see the field.
        match self.next_millis.load(Ordering::Relaxed) {
            u64::MAX => None,
            millis => Some(shared.origin + Duration::from_millis(millis)),
        }
    }

    pub(crate) fn insert(
        &self,
        shared: &Shared<P>,
        deadline: Instant,
        entry: TimerEntry<P>,
    ) -> TimerKey {
        let mut wheel = self.wheel.lock().unwrap_or_else(|e| e.into_inner());
        let key = wheel.insert(deadline, entry);
        self.refresh_hint(shared, &wheel);
        key
    }

    pub(crate) fn cancel(&self, shared: &Shared<P>, key: TimerKey) -> Option<TimerEntry<P>> {
        let mut wheel = self.wheel.lock().unwrap_or_else(|e| e.into_inner());
        let entry = wheel.cancel(key);
        if entry.is_some() {
            self.refresh_hint(shared, &wheel);
        }
        entry
    }

    /// Fires every timer due at `now`, outside the wheel's lock but under `firing`. Returns how
    /// many fired (0 if another worker is firing this wheel right now).
    pub(crate) fn fire(&self, shared: &Shared<P>, now: Instant) -> usize {
        let Ok(_firing) = self.firing.try_lock() else {
            return 0;
        };
        let mut due = Vec::new();
        {
            let mut wheel = self.wheel.lock().unwrap_or_else(|e| e.into_inner());
            wheel.poll(now, &mut |entry| due.push(entry));
            self.refresh_hint(shared, &wheel);
        }
        let fired = due.len();
        for entry in due {
            match entry {
                TimerEntry::Wake(process, generation) => {
                    if process.fiber().wait_generation() == generation {
                        shared.wake(&process);
                    }
                }
                TimerEntry::Call(callback) => callback(),
            }
        }
        fired
    }

    /// Moves every pending timer of this wheel into `target`'s (a spare worker retiring: its
    /// own wheel would no longer be fired by anyone). The moved timers keep their deadlines and
    /// order; their old keys become stale, so a later `cancel` with them finds nothing and the
    /// moved wake-up, if it fires, is ignored by its process's wait generation.
    pub(crate) fn move_into(&self, shared: &Shared<P>, target: &Timers<P>) {
        let pending = {
            let mut wheel = self.wheel.lock().unwrap_or_else(|e| e.into_inner());
            let pending = wheel.drain();
            self.refresh_hint(shared, &wheel);
            pending
        };
        for (deadline, entry) in pending {
            target.insert(shared, deadline, entry);
        }
    }

    /// Gives back the memory a past peak of timers left in this wheel (`TimerWheel::shrink`),
    /// freeing it after the wheel's lock is released.
    fn shrink(&self) {
        let shrunk = self
            .wheel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shrink();
        drop(shrunk);
    }

    fn clear(&self) {
        let mut wheel = self.wheel.lock().unwrap_or_else(|e| e.into_inner());
        let origin = Instant::now();
        // Dropping the entries breaks reference cycles through processes and callbacks.
        *wheel = TimerWheel::new(origin);
        // Relaxed: see the field.
        self.next_millis.store(u64::MAX, Ordering::Relaxed);
    }
}

/// A value alone on its own two cache lines (the adjacent-line prefetcher pairs them), so that
/// writes to its neighbours do not take its line away from the cores that read it, and vice
/// versa (crossbeam's `CachePadded`, in a few lines). Also used by the VM's process table.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What every worker shares with the others about one worker. Aligned to two cache lines, so
/// that two workers' states never share one; within it, what other threads write (`parker`)
/// or read while spinning (`active`, `stuck`) is padded away from the counters the worker
/// writes for every process (`runs`, `label`, `finished`, ...): with `finished` on the line
/// that thieves read `active` from, the worker's per-process update missed the cache, ~2 % of
/// skynet's samples.
#[repr(align(128))]
pub(crate) struct WorkerShared<P> {
    /// Written by whoever wakes this worker.
    pub(crate) parker: Padded<Parker>,
    pub(crate) timers: Timers<P>,
    /// The process woken by a process of this worker; stolen only when the worker is stuck.
    pub(crate) runnext: RunNext<P>,
    /// Process runs started, times two: odd while inside a process. Written by the worker
    /// (Relaxed: the watchdog only samples it), read by the watchdog.
    pub(crate) runs: AtomicU64,
    /// Label of the process being run (Relaxed, like `runs`).
    pub(crate) label: AtomicU64,
    /// The worker thread's kernel thread id (Linux), 0 until its thread starts or where
    /// unknown: lets the watchdog tell a stuck worker from a preempted one (`watchdog.rs`).
    /// Relaxed: a number written once at thread start; a stale 0 reads as "unknown".
    pub(crate) tid: AtomicI32,
    /// Flagged by the watchdog: inside one process for longer than the threshold. Relaxed
    /// reads are hints for stealing and timer firing; the watchdog owns the transitions.
    pub(crate) stuck: Padded<AtomicBool>,
    /// When the current stuck run began, for the final report. Under this mutex.
    pub(crate) stuck_since: Mutex<Option<Instant>>,
    /// Fibers spawned by processes on this worker, and fibers that completed on it. Written
    /// only by this worker's thread (so the cache line stays with its core); summed by `live`.
    pub(crate) spawned: AtomicU64,
    pub(crate) finished: AtomicU64,
    /// The worker's thread runs its loop: always for schedulers, while activated for spares.
    /// Relaxed: a hint that lets thieves skip dormant spares, whose queues are empty.
    pub(crate) active: Padded<AtomicBool>,
    /// Finished processes this worker holds the only reference to, kept for reuse
    /// (`Config::recycle`). Under this mutex: pushed by the worker's thread, popped by processes
    /// spawning on it (the same thread, but a spare standing in for a stuck worker may too).
    pub(crate) recycled: Mutex<Vec<Handle<P>>>,
}

/// Batches of finished processes (each half a worker's `Config::recycle`) the runtime-wide store
/// holds at most; beyond it a full worker frees what it cannot keep. It takes bursts of exits
/// (a release of thousands of parked processes) for the spawns that follow, and the flow of
/// blocks from a worker where stolen children end to the one that spawns them.
///
/// 4: with the VM's 256 per worker, 512 control blocks of 256 bytes (~130 KiB). It was 32 (4,096,
/// ~1.2 MB), sized when a spawner's slice still held up to 4,000 spawns; since a spawner yields
/// every 63 (`FRESH_PER_SLICE`), W1 and skynet on two schedulers allocate the same ~350 and
/// ~150 fresh blocks per million spawns with 4 as with 32 (with none, W1 allocated 400,000 to
/// 575,000). But a store that large fills slowly, in a random walk of keeps and takes, and
/// nothing empties it until the VM idles: ten million spawn/exit cycles in 10,000 `Vm::run`s
/// of 1,000 processes ended 1.7 MiB above the first run's RSS measured right after it (+50 %
/// of a 3.3 MiB process; 0.5 MiB, +15 %, with 4), the table having grown a segment for the
/// indices of the kept blocks.
pub const RECYCLE_SPILL_BATCHES: usize = 4;

/// The runtime-wide store of recycled control blocks: batches handed over by full workers, and
/// the emptied vectors of batches already taken, so that handing a batch over allocates nothing
/// once the store has warmed up. (A fresh vector per batch was the commonest allocation of a
/// spawn/exit burst: 3,778 of the 11,955 allocations of five 100 K waves, each a 1 KiB chunk
/// freed later on another core.)
pub(crate) struct RecycleSpill<P> {
    /// Batches of finished processes; at most [`RECYCLE_SPILL_BATCHES`].
    full: Vec<Vec<Handle<P>>>,
    /// Empty vectors with capacity for a batch; at most [`RECYCLE_SPILL_BATCHES`].
    empty: Vec<Vec<Handle<P>>>,
}

impl<P> RecycleSpill<P> {
    fn new() -> Self {
        RecycleSpill {
            full: Vec::new(),
            empty: Vec::new(),
        }
    }
}

/// State shared by all workers of one runtime (and by processes, through their context).
pub(crate) struct Shared<P> {
    pub(crate) injector: Injector<Handle<P>>,
    pub(crate) stealers: Box<[Stealer<Handle<P>>]>,
    /// The other end of every worker's `fresh` deque (processes that never ran).
    pub(crate) fresh_stealers: Box<[Stealer<Handle<P>>]>,
    pub(crate) workers: Box<[WorkerShared<P>]>,
    pub(crate) idle: Idle,
    pub(crate) slots: SlotPool<P>,
    /// Fibers spawned from outside any worker. With the workers' `spawned` and `finished`
    /// counts it gives the number of live fibers (see `live`).
    outside_spawned: AtomicU64,
    /// Set once by `Runtime::shutdown` (Release); workers read it with Acquire.
    pub(crate) shutdown: AtomicBool,
    /// Instant of timer tick 0.
    pub(crate) origin: Instant,
    /// Finished processes each worker may keep (`Config::recycle`).
    pub(crate) recycle: usize,
    /// The owner's part of giving memory back (`Config::on_give_back`).
    on_give_back: Option<GiveBackHook>,
    /// Batches of finished processes that full workers handed over, for workers with none
    /// (`Config::recycle`).
    pub(crate) recycled_spill: Mutex<RecycleSpill<P>>,
    /// Seed of the randomized test mode, if on (see `Config::randomize`).
    pub(crate) randomize: Option<u64>,
    /// Prefix of thread names.
    thread_name: String,
    /// Workers `[0, schedulers)` run from the start; `[schedulers, workers.len())` are spares.
    pub(crate) schedulers: usize,
    pub(crate) watchdog: WatchdogShared,
    /// Set (Release) when the watchdog must end.
    pub(crate) watchdog_exit: AtomicBool,
    pub(crate) long_schedule: Duration,
    hook: Option<LongScheduleHook>,
    /// Spares that should be active (= stuck workers) and that are. SeqCst: compared with each
    /// other by retiring spares and the watchdog.
    spares_wanted: AtomicUsize,
    spares_active: AtomicUsize,
    /// Per spare: its queue until its thread starts (`None` once started), and whether it is
    /// active. Under this mutex.
    spares: Mutex<Vec<SpareSlot<P>>>,
    /// Threads to join at shutdown (workers, started spares, the watchdog). Under this mutex.
    threads: Mutex<Vec<(Option<usize>, JoinHandle<()>)>>,
    /// When memory may next be given back (`give_memory_back`), in ms since `origin`. Relaxed:
    /// a rate limit; two workers trimming at once is harmless.
    next_trim: AtomicU64,
    /// Set at shutdown when only stuck processes are left: workers exit even though fibers are
    /// live (those stay on their stuck threads, which are detached).
    pub(crate) abandon: AtomicBool,
}

/// What [`Shared::give_memory_back`] asks of the worker that called it.
pub(crate) enum GiveBack {
    /// Memory was given back and nothing is left over: no need to come back.
    Done,
    /// A pass ran out of budget: the caller should make the next pass at this instant.
    Continue(Instant),
    /// No pass now (too soon, or another worker is making one): memory the caller freed may
    /// be held until a pass at or after this instant.
    NotBefore(Instant),
}

/// A worker's own ends of its run queue (FIFO) and of its fresh deque (LIFO).
type WorkerQueues<P> = (Worker<Handle<P>>, Worker<Handle<P>>);

/// A spare worker's state.
struct SpareSlot<P> {
    /// The spare's queues, until its thread is started.
    queue: Option<WorkerQueues<P>>,
    active: bool,
}

impl<P: Schedulable> Shared<P> {
    /// Fibers spawned and not completed: the sum of per-worker counts, so that spawning and
    /// finishing on different cores never fight over one cache line. Exact once the counted
    /// operations have returned; only shutdown decisions and introspection read it.
    pub(crate) fn live(&self) -> usize {
        // SeqCst: pairs with the SeqCst increments, so that a worker deciding to exit sees every
        // spawn that happened before it checked (shutdown ordering).
        let mut live = self.outside_spawned.load(Ordering::SeqCst);
        for worker in self.workers.iter() {
            live = live.wrapping_add(worker.spawned.load(Ordering::SeqCst));
            live = live.wrapping_sub(worker.finished.load(Ordering::SeqCst));
        }
        live as usize
    }

    /// Worker `index` completed a fiber.
    pub(crate) fn fiber_finished(&self, index: usize) {
        self.workers[index].finished.fetch_add(1, Ordering::SeqCst);
        // Acquire: pairs with the Release in `Runtime::shutdown`.
        if self.shutdown.load(Ordering::Acquire) && self.live() == 0 {
            self.wake_all_workers();
        }
    }

    fn millis_since_origin(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.origin).as_millis() as u64
    }

    pub(crate) fn notify_one(&self) {
        if let Some(index) = self.idle.worker_to_notify() {
            self.workers[index].parker.unpark();
        }
    }

    pub(crate) fn wake_all_workers(&self) {
        self.idle.take_all_sleepers();
        for worker in self.workers.iter() {
            worker.parker.unpark();
        }
    }

    /// Returns `true` if any queue holds work another worker could take.
    pub(crate) fn has_visible_work(&self) -> bool {
        !self.injector.is_empty()
            || self
                .stealers
                .iter()
                .zip(self.fresh_stealers.iter())
                .zip(self.workers.iter())
                // Relaxed: see `WorkerShared::active`.
                .any(|((stealer, fresh), worker)| {
                    worker.active.load(Ordering::Relaxed)
                        && !(stealer.is_empty() && fresh.is_empty())
                })
    }

    /// The worker of this runtime running on the current thread, if any.
    fn local_worker(&self) -> Option<&WorkerLocal<P>> {
        let worker = context::worker_of(self as *const Shared<P> as usize);
        if worker.is_null() {
            return None;
        }
        // SAFETY: the context names this runtime, so `worker` is the `WorkerLocal<P>` of the
        // current thread, which lives for the whole worker loop, and we are on that thread.
        Some(unsafe { &*(worker as *const WorkerLocal<P>) })
    }

    /// Wakes `process`: schedules it if it was parked.
    pub(crate) fn wake(&self, process: &Handle<P>) {
        if !process.fiber().transition_on_wake() {
            return;
        }
        match self.local_worker() {
            Some(worker) if worker.chance(4) => {
                worker.queue.push(process.clone());
                self.notify_one();
            }
            Some(worker) => {
                if let Some(previous) = self.workers[worker.index].runnext.put(process.clone()) {
                    worker.queue.push(previous);
                    self.notify_one();
                }
            }
            None => {
                self.injector.push(process.clone());
                self.notify_one();
            }
        }
    }

    /// Schedules a fiber that has never run, from `local` (the calling thread's worker, if it
    /// is one of this runtime's).
    fn schedule_new(&self, local: Option<&WorkerLocal<P>>, process: Handle<P>) {
        match local {
            // Onto the worker's LIFO deque of new processes: the newest runs first, so a process
            // tree unfolds depth-first and its live set stays small (skynet: a few hundred
            // processes alive instead of a third of a million), while idle workers steal the
            // oldest, i.e. the largest subtrees (work-first scheduling, as in Cilk).
            Some(worker) => {
                worker.fresh.push(process);
                if worker.fresh.len() >= FRESH_PER_SLICE {
                    worker.end_running_slice();
                }
            }
            None => self.injector.push(process),
        }
        self.notify_one();
    }

    /// The index of the current thread's worker, if it works for this runtime.
    pub(crate) fn local_index(&self) -> Option<usize> {
        self.local_worker().map(|worker| worker.index)
    }
}

impl<P: Schedulable> Shared<P> {
    /// Starts the thread of worker `index` with its run queue and fresh deque.
    fn start_worker(
        self: &Arc<Self>,
        index: usize,
        (queue, fresh): WorkerQueues<P>,
    ) -> std::io::Result<()> {
        // Relaxed: see the field.
        self.workers[index].active.store(true, Ordering::Relaxed);
        let worker = WorkerLocal::new(index, self.clone(), queue, fresh);
        let handle = std::thread::Builder::new()
            .name(format!("{}-{index}", self.thread_name))
            .spawn(move || worker.run())?;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Some(index), handle));
        Ok(())
    }

    /// On the idle path, at most once per [`TRIM_INTERVAL`]: gives dead stack pages (up to
    /// [`TRIM_SLOTS`] slots), the timer cells of a past peak and freed heap memory back to the
    /// OS, so a parked or finished process's memory returns. Processes that waited for a
    /// trimmed slot go to `queue`. Says whether the caller is done or should come back (see
    /// `WorkerLocal::sleep`).
    pub(crate) fn give_memory_back(&self, queue: &Worker<Handle<P>>) -> GiveBack {
        let now = self.millis_since_origin(Instant::now());
        // Relaxed: see the field.
        let next = self.next_trim.load(Ordering::Relaxed);
        let not_before =
            |millis: u64| GiveBack::NotBefore(self.origin + Duration::from_millis(millis));
        if now < next {
            return not_before(next);
        }
        let interval = TRIM_INTERVAL.as_millis() as u64;
        if self
            .next_trim
            .compare_exchange(next, now + interval, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Another worker is giving memory back right now, perhaps without what we freed
            // last: come back after the interval.
            return not_before(now + interval);
        }
        let mut requeued = false;
        let more = self.slots.trim(TRIM_SLOTS, &mut |process| {
            queue.push(process);
            requeued = true;
        });
        if requeued {
            self.notify_one();
        }
        self.drop_recycled();
        for worker in self.workers.iter() {
            worker.timers.shrink();
        }
        if let Some(GiveBackHook(hook)) = &self.on_give_back {
            // A panicking hook is a bug in the owner; it must not take the worker with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook()));
        }
        give_back_free_memory();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        trim_own_arena_top();
        if more {
            let soon = now + TRIM_CONTINUE.as_millis() as u64;
            // Relaxed: see the field. Only lowers our own mark; if another worker moved it
            // since, its pass is newer and we keep its schedule.
            let _ = self.next_trim.compare_exchange(
                now + interval,
                soon,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return GiveBack::Continue(self.origin + Duration::from_millis(soon));
        }
        GiveBack::Done
    }

    /// Drops the finished processes every worker kept for reuse.
    pub(crate) fn drop_recycled(&self) {
        for worker in self.workers.iter() {
            let kept =
                std::mem::take(&mut *worker.recycled.lock().unwrap_or_else(|e| e.into_inner()));
            drop(kept);
        }
        let spilled = std::mem::replace(
            &mut *self
                .recycled_spill
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            RecycleSpill::new(),
        );
        drop(spilled);
    }

    /// Worker `worker` keeps `process`, finished, for reuse (`Config::recycle`); the caller
    /// holds its only reference. A full store hands half of itself to the runtime-wide one, in a
    /// vector that one kept from a batch already taken; if that store is full too, it frees that
    /// half instead.
    pub(crate) fn keep_recycled(&self, worker: usize, process: Handle<P>) {
        let mut kept = self.workers[worker]
            .recycled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if kept.len() < self.recycle {
            kept.push(process);
            return;
        }
        // Lock order: a worker's store, then the runtime-wide one (as in `take_recycled`).
        let mut spill = self
            .recycled_spill
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let half = kept.len() / 2;
        if spill.full.len() >= RECYCLE_SPILL_BATCHES {
            // Both full: free the newer half, so that the next half-store's worth of finished
            // processes is kept without taking the runtime-wide lock again.
            drop(spill);
            let doomed = kept.split_off(half);
            kept.push(process);
            drop(kept);
            // Out of both locks: freeing processes runs their destructors.
            drop(doomed);
            return;
        }
        let mut batch = spill.empty.pop().unwrap_or_default();
        batch.extend(kept.drain(half..));
        spill.full.push(batch);
        drop(spill);
        kept.push(process);
    }

    /// Returns `true` if the watchdog has flagged any worker (a hint).
    pub(crate) fn any_stuck(&self) -> bool {
        self.spares_wanted.load(Ordering::Relaxed) > 0
    }

    /// Workers flagged stuck.
    pub(crate) fn stuck_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|worker| worker.stuck.load(Ordering::Relaxed))
            .count()
    }

    /// Returns `true` if every running worker thread is parked (the watchdog may sleep).
    pub(crate) fn all_workers_parked(&self) -> bool {
        self.idle.sleeping() >= self.schedulers + self.spares_active.load(Ordering::SeqCst)
    }

    /// The watchdog found worker `index` inside one process since `since`.
    pub(crate) fn transition_to_stuck(
        self: &Arc<Self>,
        index: usize,
        since: Instant,
        now: Instant,
    ) {
        let worker = &self.workers[index];
        *worker.stuck_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(since);
        // Relaxed: see the field.
        worker.stuck.store(true, Ordering::Relaxed);
        self.report(LongSchedule {
            label: worker.label.load(Ordering::Relaxed),
            duration: now - since,
            finished: false,
        });
        self.spares_wanted.fetch_add(1, Ordering::SeqCst);
        self.activate_spare();
        // Whatever the stuck worker holds is now stealable: wake someone to take it.
        self.notify_one();
    }

    /// The watchdog saw worker `index` come back from its long run.
    pub(crate) fn transition_from_stuck(&self, index: usize) {
        // Relaxed: see the field.
        self.workers[index].stuck.store(false, Ordering::Relaxed);
        self.spares_wanted.fetch_sub(1, Ordering::SeqCst);
        // An active spare notices at its next loop tick and retires; wake sleeping ones.
        self.wake_all_workers();
    }

    /// Called by a worker whose process returned after the watchdog flagged it.
    pub(crate) fn report_finished(&self, index: usize) {
        let since = self.workers[index]
            .stuck_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(since) = since {
            self.report(LongSchedule {
                label: self.workers[index].label.load(Ordering::Relaxed),
                duration: since.elapsed(),
                finished: true,
            });
        }
    }

    fn report(&self, event: LongSchedule) {
        if let Some(hook) = &self.hook {
            (hook.0)(event);
        }
    }

    /// Starts or wakes one dormant spare, if any is left.
    fn activate_spare(self: &Arc<Self>) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = spares.iter().position(|spare| !spare.active) else {
            return;
        };
        spares[slot].active = true;
        self.spares_active.fetch_add(1, Ordering::SeqCst);
        let index = self.schedulers + slot;
        match spares[slot].queue.take() {
            Some(queue) => {
                drop(spares);
                if self.start_worker(index, queue).is_err() {
                    // No thread to be had: the stuck worker's work waits for it.
                    let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                    spares[slot].active = false;
                    self.spares_active.fetch_sub(1, Ordering::SeqCst);
                }
            }
            None => {
                // Relaxed: see the field.
                self.workers[index].active.store(true, Ordering::Relaxed);
                self.workers[index].parker.unpark();
            }
        }
    }

    /// A spare asks whether it should retire. Returns `true` if it must (and is now counted as
    /// dormant); the caller hands its work back and waits in `spare_dormant`.
    pub(crate) fn spare_should_retire(&self, index: usize) -> bool {
        loop {
            let active = self.spares_active.load(Ordering::SeqCst);
            if active <= self.spares_wanted.load(Ordering::SeqCst) {
                return false;
            }
            if self
                .spares_active
                .compare_exchange(active, active - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                spares[index - self.schedulers].active = false;
                // Relaxed: see the field; the spare's queue is emptied right after.
                self.workers[index].active.store(false, Ordering::Relaxed);
                return true;
            }
        }
    }

    /// Returns `true` while spare `index` is dormant.
    pub(crate) fn spare_is_dormant(&self, index: usize) -> bool {
        let spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        !spares[index - self.schedulers].active
    }
}

/// A set of worker threads running fibers of processes of type `P`.
pub struct Runtime<P: Schedulable> {
    shared: Arc<Shared<P>>,
}

impl<P: Schedulable> fmt::Debug for Runtime<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("schedulers", &self.shared.schedulers)
            .field("live", &self.shared.live())
            .finish()
    }
}

impl Config {
    /// Checks every value against its range.
    fn validate(&self) -> Result<(), StartError> {
        let invalid = |field: &'static str, problem: String| {
            Err(StartError::InvalidConfig { field, problem })
        };
        if self.schedulers == 0 || self.schedulers > MAX_SCHEDULERS {
            return invalid(
                "schedulers",
                format!(
                    "must be between 1 and {MAX_SCHEDULERS}, got {}",
                    self.schedulers
                ),
            );
        }
        if !self.slot_size.is_multiple_of(GUARD_SIZE)
            || !(64 * 1024..=MAX_SLOT_SIZE).contains(&self.slot_size)
        {
            return invalid(
                "slot_size",
                format!(
                    "must be a multiple of 4 KiB between 64 KiB and 1 GiB, got {}",
                    self.slot_size
                ),
            );
        }
        if self.max_slots == 0 || self.max_slots > MAX_SLOTS {
            return invalid(
                "max_slots",
                format!("must be between 1 and {MAX_SLOTS}, got {}", self.max_slots),
            );
        }
        if self.spares > MAX_SPARES {
            return invalid(
                "spares",
                format!("must be at most {MAX_SPARES}, got {}", self.spares),
            );
        }
        Ok(())
    }
}

impl<P: Schedulable> Runtime<P> {
    /// Starts `config.schedulers` worker threads.
    pub fn start(config: Config) -> Result<Runtime<P>, StartError> {
        config.validate()?;
        let slots = SlotPool::new(config.slot_size, config.max_slots).map_err(StartError::Os)?;
        let total = config.schedulers + config.spares;
        let mut queues: Vec<WorkerQueues<P>> = (0..total)
            .map(|_| (Worker::new_fifo(), Worker::new_lifo()))
            .collect();
        let origin = Instant::now();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers: queues.iter().map(|(queue, _)| queue.stealer()).collect(),
            fresh_stealers: queues.iter().map(|(_, fresh)| fresh.stealer()).collect(),
            workers: (0..total)
                .map(|_| WorkerShared {
                    parker: Padded(Parker::default()),
                    timers: Timers::new(origin),
                    runnext: RunNext::new(),
                    runs: AtomicU64::new(0),
                    label: AtomicU64::new(0),
                    tid: AtomicI32::new(0),
                    stuck: Padded(AtomicBool::new(false)),
                    stuck_since: Mutex::new(None),
                    active: Padded(AtomicBool::new(false)),
                    spawned: AtomicU64::new(0),
                    finished: AtomicU64::new(0),
                    recycled: Mutex::new(Vec::new()),
                })
                .collect(),
            idle: Idle::new(),
            slots,
            outside_spawned: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            origin,
            randomize: config.randomize,
            recycle: config.recycle,
            on_give_back: config.on_give_back.clone(),
            recycled_spill: Mutex::new(RecycleSpill::new()),
            schedulers: config.schedulers,
            watchdog: WatchdogShared::new(),
            watchdog_exit: AtomicBool::new(false),
            long_schedule: config.long_schedule,
            hook: config.on_long_schedule.clone(),
            spares_wanted: AtomicUsize::new(0),
            spares_active: AtomicUsize::new(0),
            spares: Mutex::new(
                queues
                    .drain(config.schedulers..)
                    .map(|queue| SpareSlot {
                        queue: Some(queue),
                        active: false,
                    })
                    .collect(),
            ),
            threads: Mutex::new(Vec::new()),
            abandon: AtomicBool::new(false),
            // Not in the runtime's first second: a short-lived runtime (a test, a one-off
            // `Vm::run`) has little to give back and would pay for the pass.
            next_trim: AtomicU64::new(TRIM_INTERVAL.as_millis() as u64),
            thread_name: config.thread_name.clone(),
        });
        let runtime = Runtime {
            shared: shared.clone(),
        };
        for (index, queue) in queues.into_iter().enumerate() {
            if let Err(error) = shared.start_worker(index, queue) {
                runtime.shutdown();
                runtime.join();
                return Err(StartError::Os(error));
            }
        }
        let watchdog_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-watchdog", config.thread_name))
            .spawn(move || watchdog::run(watchdog_shared));
        match spawned {
            Ok(handle) => shared.threads.lock().unwrap().push((None, handle)),
            Err(error) => {
                runtime.shutdown();
                runtime.join();
                return Err(StartError::Os(error));
            }
        }
        Ok(runtime)
    }

    /// Number of worker threads.
    pub fn schedulers(&self) -> usize {
        self.shared.schedulers
    }

    /// The index of the worker the calling thread is (schedulers first, then spares), if it is
    /// one of this runtime's.
    pub fn current_worker(&self) -> Option<usize> {
        self.shared.local_index()
    }

    /// Fibers spawned and not yet completed.
    pub fn live(&self) -> usize {
        self.shared.live()
    }

    /// Timers pending on all workers' wheels (introspection).
    pub fn pending_timers(&self) -> usize {
        self.shared
            .workers
            .iter()
            .map(|worker| {
                let wheel = worker
                    .timers
                    .wheel
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if wheel.is_empty() {
                    0
                } else {
                    wheel.len()
                }
            })
            .sum()
    }

    /// Stack slots enabled so far (introspection).
    pub fn stack_slots(&self) -> usize {
        self.shared.slots.enabled()
    }

    /// Schedules a new process. From a worker of this runtime it goes to that worker's fresh deque
    /// (newest first), from anywhere else to the shared injector.
    pub fn spawn(&self, process: Handle<P>) {
        let local = self.shared.local_worker();
        match local {
            Some(worker) => self.shared.workers[worker.index]
                .spawned
                .fetch_add(1, Ordering::SeqCst),
            None => self.shared.outside_spawned.fetch_add(1, Ordering::SeqCst),
        };
        self.shared.schedule_new(local, process);
    }

    /// A finished process that worker `worker` (the caller's, from [`current_worker`]) kept for
    /// reuse (`Config::recycle`), if it has one. Nothing else references it: the caller may
    /// overwrite it in place (`Handle::get_mut` succeeds).
    ///
    /// [`current_worker`]: Runtime::current_worker
    pub fn take_recycled(&self, worker: usize) -> Option<Handle<P>> {
        let mut kept = self.shared.workers[worker]
            .recycled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(process) = kept.pop() {
            return Some(process);
        }
        // Lock order: a worker's store, then the runtime-wide one (as in `keep_recycled`).
        let mut spill = self
            .shared
            .recycled_spill
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut batch = spill.full.pop()?;
        kept.append(&mut batch);
        if spill.empty.len() < RECYCLE_SPILL_BATCHES {
            spill.empty.push(batch);
        }
        drop(spill);
        kept.pop()
    }

    /// Finished processes the workers keep for reuse right now (introspection).
    pub fn recycled_len(&self) -> usize {
        self.shared
            .workers
            .iter()
            .map(|worker| {
                worker
                    .recycled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .len()
            })
            .sum::<usize>()
            + self
                .shared
                .recycled_spill
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .full
                .iter()
                .map(Vec::len)
                .sum::<usize>()
    }

    /// Wakes `process` if it is parked (from any thread). A process woken by a process running
    /// on a worker of this runtime runs next on that worker.
    pub fn wake(&self, process: &Handle<P>) {
        self.shared.wake(process);
    }

    /// Runs `callback` on a worker thread (outside any process) at `deadline`. Callbacks run in
    /// deadline order (ties in the order they were added): they all live in worker 0's wheel,
    /// which every worker fires when it is due.
    pub fn call_after(&self, deadline: Instant, callback: Box<dyn FnOnce() + Send>) -> TimerHandle {
        let worker = 0;
        let remote = self.shared.local_index() != Some(0);
        let key = self.shared.workers[worker].timers.insert(
            &self.shared,
            deadline,
            TimerEntry::Call(callback),
        );
        if remote {
            // Sleeping workers may have computed a later wake-up time: let them re-compute.
            self.shared.wake_all_workers();
        }
        TimerHandle { worker, key }
    }

    /// Cancels a callback timer. Returns `true` if it had not fired yet (it never will now).
    pub fn cancel_timer(&self, handle: TimerHandle) -> bool {
        self.shared.workers[handle.worker]
            .timers
            .cancel(&self.shared, handle.key)
            .is_some()
    }

    /// Asks the workers to stop once every fiber has completed. Does not wait.
    pub fn shutdown(&self) {
        // Release: pairs with the workers' Acquire loads.
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake_all_workers();
    }

    /// Returns `true` once `shutdown` has been called.
    pub fn is_shutting_down(&self) -> bool {
        // Acquire: pairs with `shutdown`.
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// Waits for the worker threads to end (after `shutdown`), then drops pending timers. A
    /// worker thread calling this does not wait for itself. Processes that never call the VM
    /// again (stuck on their worker) cannot end: once only they are left, the other threads are
    /// joined and the stuck ones detached (they exit if their process ever returns).
    pub fn join(&self) {
        let shared = &self.shared;
        let me = std::thread::current().id();
        let on_worker = shared.local_index().is_some();
        while !on_worker && shared.live() > 0 {
            if shared.live() <= shared.stuck_workers() && !shared.has_visible_work() {
                // Release: pairs with the workers' Acquire loads.
                shared.abandon.store(true, Ordering::Release);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Release: pairs with the watchdog's Acquire load.
        shared.watchdog_exit.store(true, Ordering::Release);
        shared.watchdog.parker.unpark();
        shared.wake_all_workers();
        let handles =
            std::mem::take(&mut *shared.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for (worker, handle) in handles {
            let stuck =
                worker.is_some_and(|index| shared.workers[index].stuck.load(Ordering::Relaxed));
            if handle.thread().id() != me && !stuck {
                let _ = handle.join();
            }
        }
        for worker in shared.workers.iter() {
            worker.timers.clear();
        }
        // Kept processes may own the runtime's owner (the VM's shared state): drop them now,
        // or the cycle would keep everything alive.
        shared.drop_recycled();
        // No worker is left to give back what the processes freed, and the block store is
        // process-wide: without this, a dropped VM that had held a million parked processes
        // left ~690 MiB resident in the program for good (free blocks, and free memory in the
        // workers' glibc arenas).
        give_back_free_memory();
    }
}

/// Returns the block store's free pages and the allocator's free heap memory to the OS.
fn give_back_free_memory() {
    crate::frames::give_back();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl<P: Schedulable> Drop for Runtime<P> {
    fn drop(&mut self) {
        self.shutdown();
        self.join();
    }
}
