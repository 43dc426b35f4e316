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
//! # Preempted is not stuck
//!
//! A worker's thread can also sit inside one process because the *OS* took its core away: on a
//! busy or oversubscribed machine the thread waits in the kernel's run queue for several
//! milliseconds in the middle of an ordinary 50 µs run. A spare does not help then (it is one
//! more thread waiting for a core), and each one costs a thread, its stack and a glibc arena
//! that stay for the VM's life. So before flagging a worker, the watchdog asks the kernel about
//! the worker's thread. It is **stuck** if, since the run was first seen, the thread used at
//! least half the threshold of CPU time (its per-thread CPU clock: a computation that does not
//! call the VM), or if it is blocked in the kernel now (state not `R` in
//! `/proc/self/task/<tid>/stat`: `std::thread::sleep`, blocking I/O). A runnable thread that
//! used little CPU is **preempted** and is not flagged yet. The CPU time counts from the start
//! of the run, so a long computation on a crowded machine is still flagged once it has had half
//! the threshold of CPU. The kernel is asked only about runs that outlast one sampling interval
//! (rare: slices are 40–400 µs), and where it will not tell (other kernels) every long run
//! counts as stuck, as before. In a virtual machine, time the hypervisor takes from a virtual
//! CPU counts as CPU time of the thread that was on it, so a run there can still be flagged
//! once in a while; measured on this project's 2-vCPU machine, 0–1 detections in 1.5 s of
//! 50 µs runs sharing a CPU with two busy threads, against 87 on wall time alone.
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
    /// The worker thread's CPU time when this run was seen for the second time: the start of
    /// the window the stuck-or-preempted verdict looks at. `None` until then; `Some(None)` if
    /// the kernel would not tell.
    window: Option<Option<CpuTime>>,
}

/// The CPU time a thread has used, read at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CpuTime {
    at: Instant,
    used: Duration,
}

/// What the kernel says a thread is doing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThreadState {
    /// On a CPU, or runnable and waiting for one (`R`).
    Runnable,
    /// Anything else: sleeping, in uninterruptible I/O, stopped.
    Blocked,
}

/// The CPU time thread `tid` of this OS process has used (Linux: its per-thread CPU clock, up
/// to date even while it runs); `None` where unknown.
#[cfg(target_os = "linux")]
fn cpu_time(tid: i32, now: Instant) -> Option<CpuTime> {
    if tid <= 0 {
        return None;
    }
    // The kernel's clock id for a thread's CPU clock (`MAKE_THREAD_CPUCLOCK(tid,
    // CPUCLOCK_SCHED)` in the kernel's posix-timers.h, what glibc's `pthread_getcpuclockid`
    // computes): the tid inverted and shifted, "scheduler clock" (2), "per thread" (4).
    let clock = (!tid << 3) | 4 | 2;
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec; an unknown or exited thread's clock id
    // fails with EINVAL and writes nothing.
    if unsafe { libc::clock_gettime(clock, &mut spec) } != 0 {
        return None;
    }
    Some(CpuTime {
        at: now,
        used: Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32),
    })
}

#[cfg(not(target_os = "linux"))]
fn cpu_time(_tid: i32, _now: Instant) -> Option<CpuTime> {
    None
}

/// What thread `tid` of this OS process is doing (`/proc/self/task/<tid>/stat`); `None` where
/// unknown.
fn thread_state(tid: i32) -> Option<ThreadState> {
    if tid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    parse_state(&stat)
}

/// The state field of a `/proc/<pid>/stat` line: the first field after the command name,
/// which is in parentheses and may itself contain spaces and parentheses.
fn parse_state(stat: &str) -> Option<ThreadState> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    match after_name.split_ascii_whitespace().next()? {
        "R" => Some(ThreadState::Runnable),
        _ => Some(ThreadState::Blocked),
    }
}

/// Whether a worker thread that has been inside one process for at least `threshold` is
/// stuck, from the CPU time it used in the window from `start` to `end` and, only if that does
/// not decide, what `state` says it is doing now (see "Preempted is not stuck"). Anything
/// unknown counts as stuck.
fn is_stuck(
    start: Option<CpuTime>,
    end: Option<CpuTime>,
    threshold: Duration,
    state: impl FnOnce() -> Option<ThreadState>,
) -> bool {
    let (Some(start), Some(end)) = (start, end) else {
        return true;
    };
    if end.used.saturating_sub(start.used) * 2 >= threshold {
        // Computing without calling the VM.
        return true;
    }
    // Little CPU: blocked in the kernel (a sleep, blocking I/O) is stuck; runnable means the
    // thread waits for a CPU the OS gave to someone else.
    state() != Some(ThreadState::Runnable)
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
                    window: None,
                };
                continue;
            }
            let since = *sample.since.get_or_insert(now);
            if worker.stuck.load(Ordering::Relaxed) {
                continue;
            }
            // Relaxed: the thread id is written once, before the worker runs any process; a
            // stale 0 only means "unknown", which counts as stuck.
            let tid = worker.tid.load(Ordering::Relaxed);
            let Some(start) = sample.window else {
                // The run outlasted one interval: note its thread's CPU time so far.
                sample.window = Some(cpu_time(tid, now));
                continue;
            };
            if now - since >= threshold {
                let end = cpu_time(tid, now);
                if is_stuck(start, end, threshold, || thread_state(tid)) {
                    shared.transition_to_stuck(index, since, now);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const THRESHOLD: Duration = Duration::from_millis(5);

    /// `used_ms` of CPU time, read `at_ms` after `origin`.
    fn cpu(origin: Instant, at_ms: u32, used_ms: u32) -> Option<CpuTime> {
        Some(CpuTime {
            at: origin + MS * at_ms,
            used: MS * used_ms,
        })
    }

    /// The verdict with a known `state`, which the check must ask for only when the CPU time
    /// does not decide.
    fn verdict(start: Option<CpuTime>, end: Option<CpuTime>, state: Option<ThreadState>) -> bool {
        is_stuck(start, end, THRESHOLD, || state)
    }

    #[test]
    fn the_state_is_asked_only_when_cpu_time_does_not_decide() {
        let origin = Instant::now();
        let unasked = || -> Option<ThreadState> { panic!("asked for the state") };
        assert!(is_stuck(
            cpu(origin, 0, 0),
            cpu(origin, 4, 4),
            THRESHOLD,
            unasked
        ));
        assert!(is_stuck(None, cpu(origin, 4, 4), THRESHOLD, unasked));
    }

    #[test]
    fn stat_lines_give_the_state() {
        let runnable = "4242 (starling-0) R 1 2 3";
        assert_eq!(parse_state(runnable), Some(ThreadState::Runnable));
        let sleeping = "4242 (a (strange) name) S 1 2 3";
        assert_eq!(parse_state(sleeping), Some(ThreadState::Blocked));
        assert_eq!(parse_state("4242 (x) D 1"), Some(ThreadState::Blocked));
        assert_eq!(parse_state("no name"), None);
        assert_eq!(parse_state("4242 (x)"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_threads_cpu_time_and_state_are_readable_on_linux() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let before = cpu_time(tid, Instant::now()).expect("this thread's CPU clock");
        let start = Instant::now();
        let mut x = 1u64;
        while start.elapsed() < 20 * MS {
            x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
        }
        let after = cpu_time(tid, Instant::now()).expect("this thread's CPU clock");
        let used = after.used - before.used;
        assert!(
            used >= 5 * MS,
            "20 ms of spinning showed {used:?} of CPU time"
        );
        assert_eq!(thread_state(tid), Some(ThreadState::Runnable));
        let (tell, told) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tell.send(unsafe { libc::gettid() })
                .expect("the test waits");
            std::thread::sleep(300 * MS);
        });
        let sleeper_tid = told.recv().expect("the sleeper's tid");
        std::thread::sleep(50 * MS);
        assert_eq!(thread_state(sleeper_tid), Some(ThreadState::Blocked));
        sleeper.join().expect("the sleeper panicked");
        assert!(
            cpu_time(sleeper_tid, Instant::now()).is_none(),
            "an exited thread's clock"
        );
        assert!(cpu_time(-1, Instant::now()).is_none());
        assert_eq!(thread_state(-1), None);
    }

    #[test]
    fn a_thread_that_computes_is_stuck() {
        let origin = Instant::now();
        let runnable = Some(ThreadState::Runnable);
        // The whole window on a CPU.
        assert!(verdict(cpu(origin, 0, 100), cpu(origin, 4, 104), runnable));
        // Half the threshold on a CPU in a longer window, waiting for one the rest of it.
        assert!(verdict(cpu(origin, 0, 0), cpu(origin, 20, 3), runnable));
    }

    #[test]
    fn a_thread_blocked_in_the_kernel_is_stuck() {
        let origin = Instant::now();
        let blocked = Some(ThreadState::Blocked);
        assert!(verdict(cpu(origin, 0, 9), cpu(origin, 6, 9), blocked));
    }

    #[test]
    fn a_runnable_thread_with_little_cpu_time_is_preempted_not_stuck() {
        let origin = Instant::now();
        let runnable = Some(ThreadState::Runnable);
        assert!(!verdict(cpu(origin, 0, 50), cpu(origin, 6, 50), runnable));
        assert!(!verdict(cpu(origin, 0, 50), cpu(origin, 8, 52), runnable));
    }

    #[test]
    fn anything_unknown_counts_as_stuck() {
        let origin = Instant::now();
        let runnable = Some(ThreadState::Runnable);
        assert!(verdict(None, cpu(origin, 6, 0), runnable));
        assert!(verdict(cpu(origin, 0, 0), None, runnable));
        assert!(verdict(cpu(origin, 0, 0), cpu(origin, 6, 0), None));
    }
}
