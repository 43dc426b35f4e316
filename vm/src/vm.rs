//! The VM handle: building, running a root process, spawning and sending from outside, shutdown.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use std::collections::HashMap;

use std::time::Duration;

use starling_scheduler::{
    BlockingPool, Config, GiveBackHook, LongScheduleHook, Runtime, StartError, TimerHandle,
    DEFAULT_BLOCKING_IDLE, DEFAULT_BLOCKING_THREADS, DEFAULT_LONG_SCHEDULE,
};

use crate::blocking::{LongSchedule, LongScheduleLog};

use crate::control_block::Process;
use crate::error::Error;
use crate::exit::ExitReason;
use crate::kernel::{deliver, spawn_in, SpawnOptions};
use crate::monitor::References;
use crate::pid::Pid;
use crate::registry::Registry;
use crate::table::ProcessTable;

/// Finished processes each scheduler keeps so that the next spawns on it reuse their control
/// blocks instead of asking the block store (see `starling_scheduler::Config::recycle`; a full
/// store hands half to the runtime-wide one, which covers bursts of exits, e.g. thousands of
/// parked processes released at once). Guessed: a spawn loop yields every 63 spawns and its
/// children end in between, so this covers it several times over; ~90 KiB per scheduler; idle
/// schedulers give them back.
pub(crate) const RECYCLED_PER_WORKER: usize = 256;

/// Default process limit (like `erl +P`): 4 Mi processes.
pub const DEFAULT_MAX_PROCESSES: usize = 4 * 1024 * 1024;

/// Most processes a VM may be configured for. The table's segments are allocated on use, so a
/// high limit costs only a pointer per 64 Ki processes.
pub const MAX_MAX_PROCESSES: usize = 1 << 30;

/// State shared by a VM's handle and all its processes.
pub(crate) struct VmShared {
    /// Distinguishes this VM's pids from other VMs' in the same OS process.
    pub(crate) id: u32,
    pub(crate) runtime: Runtime<Process>,
    pub(crate) table: ProcessTable,
    pub(crate) references: References,
    pub(crate) registry: Registry,
    /// The pool `blocking` runs its work on.
    pub(crate) blocking: BlockingPool,
    pub(crate) long_schedules: Arc<LongScheduleLog>,
    /// Pending `send_after` timers by reference. Under this mutex.
    pub(crate) timers: Mutex<HashMap<u64, Option<TimerHandle>>>,
    /// Print a line on standard error when a process panics or overflows its stack.
    pub(crate) crash_reports: bool,
    /// Bytes of stack per process (for crash reports).
    pub(crate) stack_size: usize,
    /// Set once by `shutdown`. Release/Acquire: pairs with `is_shutting_down`.
    shutting_down: AtomicBool,
}

impl VmShared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        // Acquire: pairs with the Release in `Vm::shutdown_now`.
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Configures a [`Vm`]; see [`Vm::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    schedulers: Option<usize>,
    stack_size: usize,
    max_processes: usize,
    max_stack_slots: usize,
    crash_reports: bool,
    randomize_scheduling: Option<u64>,
    long_schedule: Duration,
    blocking_threads: usize,
    spare_threads: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            schedulers: None,
            stack_size: starling_scheduler::DEFAULT_SLOT_SIZE,
            max_processes: DEFAULT_MAX_PROCESSES,
            max_stack_slots: starling_scheduler::DEFAULT_MAX_SLOTS,
            crash_reports: true,
            long_schedule: DEFAULT_LONG_SCHEDULE,
            blocking_threads: DEFAULT_BLOCKING_THREADS,
            spare_threads: starling_scheduler::DEFAULT_SPARES,
            randomize_scheduling: std::env::var("STARLING_RANDOMIZE_SCHEDULING")
                .ok()
                .and_then(|seed| seed.parse().ok()),
        }
    }
}

impl Builder {
    /// OS threads running processes (default: one per available core; 1 to 1,024).
    pub fn schedulers(mut self, schedulers: usize) -> Self {
        self.schedulers = Some(schedulers);
        self
    }

    /// Bytes of stack each process may use, guard page included (default 256 KiB: 200 KiB of
    /// recursion fits). Rounded up to a multiple of 4 KiB; 64 KiB to 1 GiB.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Most processes alive at once (default 4,194,304), like `erl +P`.
    pub fn max_processes(mut self, max: usize) -> Self {
        self.max_processes = max;
        self
    }

    /// Most stack slots (default 4,096): processes beyond this many share slots by copying
    /// their live frames out and in. Each slot costs two kernel memory mappings. 1 to 1,048,576.
    pub fn max_stack_slots(mut self, slots: usize) -> Self {
        self.max_stack_slots = slots;
        self
    }

    /// Whether a panicking process prints a one-line crash report (default `true`).
    pub fn crash_reports(mut self, enabled: bool) -> Self {
        self.crash_reports = enabled;
        self
    }

    /// How long a process may hold a scheduler without calling the VM before the watchdog
    /// hands that scheduler's other processes to a spare thread and records a long schedule
    /// (default 5 ms; at least 1 ms).
    pub fn long_schedule(mut self, threshold: Duration) -> Self {
        self.long_schedule = threshold;
        self
    }

    /// Spare scheduler threads the watchdog may start (default 64): up to this many processes
    /// can compute without calling the VM at once while every other process keeps running.
    /// At most 4,096. With none, such a process stalls its scheduler's other processes (with one
    /// scheduler, all of them); so does one waiting in a destructor while it unwinds a panic
    /// (see the crate docs, "Panics and unwinding").
    pub fn spare_threads(mut self, threads: usize) -> Self {
        self.spare_threads = threads;
        self
    }

    /// Most OS threads of the pool that runs [`blocking`](fn@crate::blocking) work (default 512).
    pub fn blocking_threads(mut self, threads: usize) -> Self {
        self.blocking_threads = threads;
        self
    }

    /// Randomizes scheduling choices from `seed` (whether a woken process runs next, which
    /// worker to steal from, how long a slice lasts), to shake out hidden assumptions about
    /// scheduling order in tests. Also switched on for every VM by the environment variable
    /// `STARLING_RANDOMIZE_SCHEDULING=<seed>`. Slower; not for production.
    pub fn randomize_scheduling(mut self, seed: u64) -> Self {
        self.randomize_scheduling = Some(seed);
        self
    }

    /// Starts the VM's schedulers.
    ///
    /// # Errors
    ///
    /// `Error::InvalidConfig` naming the bad value, if a value is out of range or the OS refused
    /// a resource.
    pub fn build(self) -> Result<Vm, Error> {
        if self.max_processes == 0 || self.max_processes > MAX_MAX_PROCESSES {
            return Err(Error::InvalidConfig(format!(
                "max_processes must be between 1 and {MAX_MAX_PROCESSES}, got {}",
                self.max_processes
            )));
        }
        if self.long_schedule < Duration::from_millis(1) {
            return Err(Error::InvalidConfig(format!(
                "long_schedule must be at least 1 ms, got {:?}",
                self.long_schedule
            )));
        }
        if self.blocking_threads == 0 {
            return Err(Error::InvalidConfig(
                "blocking_threads must be at least 1".to_string(),
            ));
        }
        let stack_size = self
            .stack_size
            .checked_next_multiple_of(4096)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "stack_size must be at most 1 GiB, got {}",
                    self.stack_size
                ))
            })?;
        let mut config = Config {
            slot_size: stack_size,
            max_slots: self.max_stack_slots,
            randomize: self.randomize_scheduling,
            recycle: RECYCLED_PER_WORKER,
            ..Config::default()
        };
        if let Some(schedulers) = self.schedulers {
            config.schedulers = schedulers;
        }
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        // Relaxed: uniqueness only.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let long_schedules = Arc::new(LongScheduleLog::default());
        let log = long_schedules.clone();
        config.long_schedule = self.long_schedule;
        config.spares = self.spare_threads;
        config.on_long_schedule = Some(LongScheduleHook(Arc::new(move |event| {
            log.record(LongSchedule {
                pid: crate::control_block::pid_of_label(id, event.label),
                duration: event.duration,
                finished: event.finished,
            })
        })));
        config.thread_name = format!("starling-{id}");
        // The table is made after the runtime, inside the `VmShared` that owns both: the hook
        // finds it through a weak reference set below (a strong one would keep the VM alive
        // from its own runtime).
        let vm_cell: Arc<OnceLock<Weak<VmShared>>> = Arc::new(OnceLock::new());
        let hook_cell = vm_cell.clone();
        config.on_give_back = Some(GiveBackHook(Arc::new(move || {
            // The `Vm` handle holds the VM until the workers are joined, so this reference is
            // never the last one (the VM is not dropped on a worker thread).
            if let Some(vm) = hook_cell.get().and_then(Weak::upgrade) {
                vm.table.give_back();
            }
        })));
        let runtime = Runtime::start(config).map_err(|error| match error {
            // The scheduler's field, under the builder option that sets it.
            StartError::InvalidConfig { field, problem } => {
                let option = match field {
                    "slot_size" => "stack_size",
                    "max_slots" => "max_stack_slots",
                    "spares" => "spare_threads",
                    field => field,
                };
                Error::InvalidConfig(format!("{option} {problem}"))
            }
            StartError::Os(error) => Error::InvalidConfig(format!("the OS refused: {error}")),
        })?;
        crate::crash::install_panic_hook();
        let schedulers = runtime.schedulers();
        let vm = Vm {
            shared: Arc::new(VmShared {
                id,
                runtime,
                table: ProcessTable::new(id, self.max_processes, schedulers),
                references: References::default(),
                registry: Registry::default(),
                timers: Mutex::new(HashMap::new()),
                blocking: BlockingPool::new(
                    self.blocking_threads,
                    DEFAULT_BLOCKING_IDLE,
                    format!("starling-{id}-blocking"),
                ),
                long_schedules,
                crash_reports: self.crash_reports,
                stack_size,
                shutting_down: AtomicBool::new(false),
            }),
        };
        let _ = vm_cell.set(Arc::downgrade(&vm.shared));
        Ok(vm)
    }
}

/// A Starling VM: a set of schedulers running isolated processes that talk by messages.
///
/// `Vm` is `Send + Sync`: [`run`](Vm::run) may be called again, and from several OS threads at
/// once. Dropping it (or calling [`shutdown`](Vm::shutdown)) kills every process and joins the
/// scheduler threads.
///
/// # Examples
///
/// ```
/// use starling::{receive, send, self_pid, spawn, Vm};
///
/// let vm = Vm::builder().schedulers(2).build().unwrap();
/// let sum = vm.run(|| {
///     let me = self_pid();
///     for i in 1..=10u64 {
///         spawn(move || send(me, i * i));
///     }
///     (0..10).map(|_| receive::<u64>()).sum::<u64>()
/// });
/// assert_eq!(sum, Ok(385));
/// ```
pub struct Vm {
    pub(crate) shared: Arc<VmShared>,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("schedulers", &self.schedulers())
            .field("process_count", &self.process_count())
            .finish()
    }
}

impl Default for Vm {
    fn default() -> Self {
        Vm::new()
    }
}

impl Vm {
    /// A VM with one scheduler per available core and default settings.
    ///
    /// # Panics
    ///
    /// If the OS refuses the schedulers' threads or the stack region.
    pub fn new() -> Vm {
        Vm::builder()
            .build()
            .unwrap_or_else(|error| panic!("starling::Vm::new: {error}"))
    }

    /// A builder to configure a VM.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Spawns a root process running `f` and blocks the calling OS thread until it ends.
    ///
    /// Returns `Ok(value)` if `f` returned, `Err(reason)` if the process ended any other way
    /// (a panic, `exit(..)` — `exit(Normal)` included —, a kill, or the VM shutting down).
    ///
    /// # Panics
    ///
    /// If called from inside a process (it would block a scheduler thread): spawn a process and
    /// receive its reply instead.
    pub fn run<T, F>(&self, f: F) -> Result<T, ExitReason>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        assert!(
            !starling_scheduler::in_process(),
            "starling::Vm::run called from inside a process; spawn a process and receive its reply instead"
        );
        let value = Arc::new(Mutex::new(None::<T>));
        let outcome = Arc::new((Mutex::new(None::<Result<T, ExitReason>>), Condvar::new()));
        let value_in = value.clone();
        let outcome_in = outcome.clone();
        let body = move || {
            let returned = f();
            *value_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(returned);
        };
        let on_exit = Box::new(move |reason: &ExitReason| {
            let returned = value.lock().unwrap_or_else(|e| e.into_inner()).take();
            let result = match (returned, reason) {
                (Some(returned), ExitReason::Normal) => Ok(returned),
                _ => Err(reason.clone()),
            };
            let (slot, ready) = &*outcome_in;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            ready.notify_all();
        });
        let options = SpawnOptions {
            on_exit: Some(on_exit),
            ..SpawnOptions::default()
        };
        if let Err(error) = spawn_in(&self.shared, body, options) {
            return Err(ExitReason::Custom(format!("starling::Vm::run: {error}")));
        }
        let (slot, ready) = &*outcome;
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(result) = slot.take() {
                return result;
            }
            slot = ready.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Spawns a process from outside any process (fire and forget).
    ///
    /// # Panics
    ///
    /// At the `max_processes` limit (`SystemLimit`); see [`Vm::try_spawn`].
    pub fn spawn<F>(&self, f: F) -> Pid
    where
        F: FnOnce() + Send + 'static,
    {
        self.try_spawn(f)
            .unwrap_or_else(|error| crate::kernel::spawn_failed("Vm::spawn", &self.shared, error))
    }

    /// Like [`Vm::spawn`], but returns `Err(Error::SystemLimit)` at the process limit.
    pub fn try_spawn<F>(&self, f: F) -> Result<Pid, Error>
    where
        F: FnOnce() + Send + 'static,
    {
        spawn_in(&self.shared, f, SpawnOptions::default()).map(|(pid, _)| pid)
    }

    /// Delivers `message` to `pid` from outside any process. Dropped if `pid` is dead.
    pub fn send<M: Send + 'static>(&self, pid: Pid, message: M) {
        deliver(&self.shared, pid, crate::envelope::Envelope::new(message));
    }

    /// Number of schedulers (OS threads running processes).
    pub fn schedulers(&self) -> usize {
        self.shared.runtime.schedulers()
    }

    /// Number of live processes.
    pub fn process_count(&self) -> usize {
        self.shared.table.len()
    }

    /// Pids of all live processes.
    pub fn processes(&self) -> Vec<Pid> {
        self.shared.table.pids()
    }

    /// Information about a live process, from outside any process.
    pub fn info(&self, pid: Pid) -> Option<crate::process::ProcessInfo> {
        self.shared
            .table
            .get(pid)
            .map(|process| crate::process::info_of(&process))
    }

    /// The long schedules this VM has seen (most recent last): processes that held a scheduler
    /// for longer than the `long_schedule` threshold without calling the VM.
    pub fn long_schedules(&self) -> Vec<LongSchedule> {
        self.shared.long_schedules.events()
    }

    /// Kills every process and joins the scheduler threads (dropping the VM does the same).
    pub fn shutdown(self) {
        drop(self);
    }

    fn shutdown_now(&self) {
        // Release: pairs with `VmShared::is_shutting_down`.
        if self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // 1. No process survives: each one unwinds at its next VM call (parked ones are woken).
        //    A process spawned from now on is killed before it runs (`spawn_in`).
        for process in self.shared.table.processes() {
            Process::kill(&process, ExitReason::Killed);
        }
        // 2–4. The runtime's shutdown sequence: workers exit once no fiber is live.
        self.shared.runtime.shutdown();
        self.shared.runtime.join();
        self.shared.blocking.shutdown();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}
