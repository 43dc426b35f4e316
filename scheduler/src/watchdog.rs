//! The watchdog: notices a worker stuck in one process and hands its work to a spare worker.
//!
//! # Problem
//!
//! A process that never calls the VM (a pure computation, `std::thread::sleep`, a blocking
//! syscall) cannot be preempted safely: switching it away inside `malloc` could deadlock. Until
//! it calls the VM its worker runs nothing else, and with as many such processes as schedulers
//! every other process starves (tokio and may do exactly that on workload W6).
//!
//! # Solution (Go's sysmon + handoff)
//!
//! Each worker counts its process runs in `WorkerShared::runs`: odd while inside a process, even
//! in its own loop (two relaxed stores per run, no clock read on the hot path). A watchdog
//! thread per runtime samples the counters every `interval`. A worker whose counter is odd and
//! unchanged for longer than the *long-schedule threshold* is flagged **stuck**, and one spare
//! worker thread is activated for it. Spares are ordinary workers with their own queues
//! (registered in the stealer list from the start, their threads started on first need) that
//! additionally steal a stuck worker's runnext slot and fire its timers, so everything the stuck
//! worker held keeps running. When the stuck worker's counter moves again, the flag is cleared
//! and one spare retires: it hands its queue to the injector and sleeps until needed again. The
//! number of active spares never exceeds the number of stuck workers, so the number of threads
//! running processes stays at `schedulers`, like Go's GOMAXPROCS.
//!
//! Each detection is reported to the runtime's long-schedule hook (the BEAM's `long_schedule`
//! system monitor is the model): once when detected (`finished: false`, the time so far) and
//! once when the process finally gives its worker back (`finished: true`, the whole run).
//!
//! The watchdog sleeps without a timeout while every worker is parked, so an idle runtime uses
//! no CPU; a worker that wakes up wakes it.
//!
//! # Rejected alternatives
//!
//! - *Signal-based asynchronous preemption* (Go 1.14): only safe with compiler-emitted safe
//!   points; a Rust process interrupted inside the allocator or holding a lock would deadlock.
//! - *Spare threads per blocking call* (the BEAM's dirty schedulers): needs the program to mark
//!   its blocking calls; the watchdog also catches the calls nobody marked. Marked calls go to
//!   `blocking` (the blocking pool) instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::park::Parker;
use crate::runtime::Shared;
use crate::Schedulable;

/// Default time a process may hold a worker without calling the VM before the worker is
/// considered stuck. Guessed from Go's `forcePreemptNS` (10 ms) and the issue's "a few
/// milliseconds": long enough that ordinary slices (40–400 µs) never trigger it, short enough
/// that a starving ping-pong pair waits at most a few milliseconds once.
pub const DEFAULT_LONG_SCHEDULE: Duration = Duration::from_millis(5);

/// One long schedule: a process that held its worker longer than the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongSchedule {
    /// The process's label ([`Schedulable::label`]).
    pub label: u64,
    /// How long it has held (`finished: false`) or held (`finished: true`) its worker.
    pub duration: Duration,
    /// `false` when reported at detection, `true` when the process gave its worker back.
    pub finished: bool,
}

/// The watchdog's own sleep/wake state.
pub(crate) struct WatchdogShared {
    pub(crate) parker: Parker,
    /// The watchdog sleeps without timeout. Set by the watchdog (SeqCst, Dekker pair with
    /// `Idle`'s sleeping count: either it sees a worker awake or that worker sees it dormant).
    pub(crate) dormant: AtomicBool,
}

impl WatchdogShared {
    pub(crate) fn new() -> Self {
        WatchdogShared {
            parker: Parker::default(),
            dormant: AtomicBool::new(false),
        }
    }

    /// Called by a worker that just woke up: make sure the watchdog watches again.
    pub(crate) fn worker_woke(&self) {
        if self.dormant.load(Ordering::SeqCst) {
            self.dormant.store(false, Ordering::SeqCst);
            self.parker.unpark();
        }
    }
}

/// What the watchdog remembers about one worker between samples.
#[derive(Clone, Copy, Default)]
struct Sample {
    runs: u64,
    since: Option<Instant>,
}

/// The watchdog thread's body.
pub(crate) fn run<P: Schedulable>(shared: Arc<Shared<P>>) {
    let threshold = shared.long_schedule;
    // A quarter of the threshold: detection happens within 1.25 × threshold. Clamped so a tiny
    // threshold does not spin and a huge one still notices shutdown.
    let interval = (threshold / 4).clamp(Duration::from_micros(100), Duration::from_millis(50));
    let mut samples = vec![Sample::default(); shared.workers.len()];
    loop {
        // Acquire: pairs with `Runtime::shutdown`.
        if shared.watchdog_exit.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        for (index, worker) in shared.workers.iter().enumerate() {
            // Relaxed: a sample; a stale value delays detection by one interval.
            let runs = worker.runs.load(Ordering::Relaxed);
            let sample = &mut samples[index];
            let in_process = runs % 2 == 1;
            if runs != sample.runs || !in_process {
                if worker.stuck.load(Ordering::Relaxed) {
                    shared.transition_from_stuck(index);
                }
                *sample = Sample {
                    runs,
                    since: in_process.then_some(now),
                };
                continue;
            }
            let since = *sample.since.get_or_insert(now);
            if !worker.stuck.load(Ordering::Relaxed) && now - since >= threshold {
                shared.transition_to_stuck(index, since, now);
            }
        }
        if shared.all_workers_parked() {
            shared.watchdog.dormant.store(true, Ordering::SeqCst);
            if shared.all_workers_parked() {
                shared.watchdog.parker.park(None);
            }
            shared.watchdog.dormant.store(false, Ordering::SeqCst);
        } else {
            shared.watchdog.parker.park(Some(Instant::now() + interval));
        }
    }
}
