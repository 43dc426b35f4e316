//! The runtime: worker threads, the shared injector, stealers, timers and the stack-slot pool.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Stealer, Worker};

use crate::context;
use crate::idle::Idle;
use crate::park::Parker;
use crate::slot::{SlotPool, GUARD_SIZE};
use crate::timer::{TimerKey, TimerWheel};
use crate::worker::WorkerLocal;
use crate::Schedulable;

/// Default bytes per stack slot, guard page included: enough for 200 KiB of recursion plus a
/// panic's unwinding (24 KiB with backtraces). From DESIGN.md's slot recommendation.
pub const DEFAULT_SLOT_SIZE: usize = 256 * 1024;

/// Default maximum number of stack slots per runtime. 4,096 slots cost 8,192 kernel mappings
/// (of the default 65,530) when all are enabled, and 1 GiB of address space; DESIGN.md measured
/// 1 M parked coroutines on 4,096 slots at 304 B each.
pub const DEFAULT_MAX_SLOTS: usize = 4096;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schedulers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            slot_size: DEFAULT_SLOT_SIZE,
            max_slots: DEFAULT_MAX_SLOTS,
            thread_name: "starling-worker".to_string(),
            randomize: None,
        }
    }
}

/// A configuration the runtime cannot start with, or an OS refusal.
#[derive(Debug)]
pub enum StartError {
    /// A configuration value is out of range; the message names it.
    InvalidConfig(String),
    /// The OS refused a resource (address space, a thread).
    Os(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidConfig(message) => write!(f, "invalid configuration: {message}"),
            StartError::Os(error) => write!(f, "the OS refused: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What a timer does when it fires.
pub(crate) enum TimerEntry<P> {
    /// Wake a process parked in a timed wait, if it is still in that wait.
    Wake(Arc<P>, u32),
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

    fn clear(&self) {
        let mut wheel = self.wheel.lock().unwrap_or_else(|e| e.into_inner());
        let origin = Instant::now();
        // Dropping the entries breaks reference cycles through processes and callbacks.
        *wheel = TimerWheel::new(origin);
        // Relaxed: see the field.
        self.next_millis.store(u64::MAX, Ordering::Relaxed);
    }
}

/// What every worker shares with the others about one worker.
pub(crate) struct WorkerShared<P> {
    pub(crate) parker: Parker,
    pub(crate) timers: Timers<P>,
}

/// State shared by all workers of one runtime (and by processes, through their context).
pub(crate) struct Shared<P> {
    pub(crate) injector: Injector<Arc<P>>,
    pub(crate) stealers: Box<[Stealer<Arc<P>>]>,
    pub(crate) workers: Box<[WorkerShared<P>]>,
    pub(crate) idle: Idle,
    pub(crate) slots: SlotPool<P>,
    /// Fibers spawned and not completed. Any thread; SeqCst so that the last decrement and the
    /// shutdown flag are seen in one order by the workers deciding to exit.
    live: AtomicUsize,
    /// Set once by `Runtime::shutdown` (Release); workers read it with Acquire.
    pub(crate) shutdown: AtomicBool,
    /// Instant of timer tick 0.
    pub(crate) origin: Instant,
    /// Seed of the randomized test mode, if on (see `Config::randomize`).
    pub(crate) randomize: Option<u64>,
}

impl<P: Schedulable> Shared<P> {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub(crate) fn fiber_finished(&self) {
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 && self.shutdown.load(Ordering::Acquire) {
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
        !self.injector.is_empty() || self.stealers.iter().any(|stealer| !stealer.is_empty())
    }

    /// The worker of this runtime running on the current thread, if any.
    fn local_worker(&self) -> Option<&WorkerLocal<P>> {
        let current = context::context();
        if current.runtime != self as *const Shared<P> as usize || current.worker.is_null() {
            return None;
        }
        // SAFETY: the context names this runtime, so `worker` is the `WorkerLocal<P>` of the
        // current thread, which lives for the whole worker loop, and we are on that thread.
        Some(unsafe { &*(current.worker as *const WorkerLocal<P>) })
    }

    /// Wakes `process`: schedules it if it was parked.
    pub(crate) fn wake(&self, process: &Arc<P>) {
        if !process.fiber().transition_on_wake() {
            return;
        }
        match self.local_worker() {
            Some(worker) if worker.chance(4) => {
                worker.queue.push(process.clone());
                self.notify_one();
            }
            Some(worker) => {
                if let Some(previous) = worker.runnext.replace(Some(process.clone())) {
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

    /// Schedules a fiber that has never run.
    fn schedule_new(&self, process: Arc<P>) {
        match self.local_worker() {
            Some(worker) => worker.queue.push(process),
            None => self.injector.push(process),
        }
        self.notify_one();
    }

    /// The index of the current thread's worker, if it works for this runtime.
    pub(crate) fn local_index(&self) -> Option<usize> {
        self.local_worker().map(|worker| worker.index)
    }
}

/// A set of worker threads running fibers of processes of type `P`.
pub struct Runtime<P: Schedulable> {
    shared: Arc<Shared<P>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<P: Schedulable> fmt::Debug for Runtime<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("schedulers", &self.shared.workers.len())
            .field("live", &self.shared.live())
            .finish()
    }
}

impl<P: Schedulable> Runtime<P> {
    /// Starts `config.schedulers` worker threads.
    pub fn start(config: Config) -> Result<Runtime<P>, StartError> {
        if config.schedulers == 0 || config.schedulers > 1024 {
            return Err(StartError::InvalidConfig(format!(
                "schedulers must be between 1 and 1024, got {}",
                config.schedulers
            )));
        }
        if config.slot_size % GUARD_SIZE != 0 || config.slot_size < 64 * 1024 {
            return Err(StartError::InvalidConfig(format!(
                "stack_size must be a multiple of 4096 and at least 65536 bytes, got {}",
                config.slot_size
            )));
        }
        if config.slot_size > 1 << 30 {
            return Err(StartError::InvalidConfig(format!(
                "stack_size must be at most 1 GiB, got {}",
                config.slot_size
            )));
        }
        if config.max_slots == 0 || config.max_slots > 1 << 20 {
            return Err(StartError::InvalidConfig(format!(
                "max_slots must be between 1 and 1048576, got {}",
                config.max_slots
            )));
        }
        let slots = SlotPool::new(config.slot_size, config.max_slots).map_err(StartError::Os)?;
        let queues: Vec<Worker<Arc<P>>> =
            (0..config.schedulers).map(|_| Worker::new_fifo()).collect();
        let origin = Instant::now();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers: queues.iter().map(Worker::stealer).collect(),
            workers: (0..config.schedulers)
                .map(|_| WorkerShared {
                    parker: Parker::default(),
                    timers: Timers::new(origin),
                })
                .collect(),
            idle: Idle::new(),
            slots,
            live: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            origin,
            randomize: config.randomize,
        });
        let runtime = Runtime {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        };
        for (index, queue) in queues.into_iter().enumerate() {
            let worker = WorkerLocal::new(index, shared.clone(), queue);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{index}", config.thread_name))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => runtime.threads.lock().unwrap().push(handle),
                Err(error) => {
                    runtime.shutdown();
                    runtime.join();
                    return Err(StartError::Os(error));
                }
            }
        }
        Ok(runtime)
    }

    /// Number of worker threads.
    pub fn schedulers(&self) -> usize {
        self.shared.workers.len()
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

    /// Schedules a new process. From a worker of this runtime it goes to that worker's queue,
    /// from anywhere else to the shared injector.
    pub fn spawn(&self, process: Arc<P>) {
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        self.shared.schedule_new(process);
    }

    /// Wakes `process` if it is parked (from any thread). A process woken by a process running
    /// on a worker of this runtime runs next on that worker.
    pub fn wake(&self, process: &Arc<P>) {
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
    /// worker thread calling this does not wait for itself.
    pub fn join(&self) {
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        for worker in self.shared.workers.iter() {
            worker.timers.clear();
        }
    }
}

impl<P: Schedulable> Drop for Runtime<P> {
    fn drop(&mut self) {
        self.shutdown();
        self.join();
    }
}
