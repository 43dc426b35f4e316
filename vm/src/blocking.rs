//! `blocking`: run blocking work on the blocking pool while the calling process parks, and the
//! long-schedule log the watchdog fills.

use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::control_block::{current, current_arc, CALL_COST};
use crate::pid::Pid;

/// Runs `f` on a separate pool of OS threads while the calling process waits; the scheduler
/// runs other processes meanwhile. Use it for file I/O, blocking syscalls and long computations
/// that do not call the VM. A panic in `f` ends the calling process with that panic, and its
/// crash report names the process.
///
/// The pool is bounded (512 threads by default, `Builder::blocking_threads`), grows on demand
/// and shrinks when idle.
///
/// # Panics
///
/// Outside a process (naming `blocking`), or if `f` panics.
///
/// # Examples
///
/// ```
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// let bytes = vm.run(|| starling::blocking(|| std::fs::read("Cargo.toml").map(|b| b.len())));
/// assert!(bytes.unwrap().unwrap() > 0);
/// ```
pub fn blocking<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let me = current_arc("blocking");
    me.checkpoint(CALL_COST);
    let result = Arc::new(Mutex::new(None::<std::thread::Result<R>>));
    let result_in = result.clone();
    let waiter = me.clone();
    let (pid, reports) = (me.pid, me.vm.crash_reports);
    me.vm.blocking.submit(Box::new(move || {
        // A panic in `f` is reported as the process's (or not at all, as its VM says).
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            crate::crash::as_work_of(pid, reports, f)
        }));
        *result_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        waiter.vm.runtime.wake(&waiter);
    }));
    loop {
        if let Some(outcome) = result.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return match outcome {
                Ok(value) => value,
                Err(payload) => resume_unwind(payload),
            };
        }
        // A kill ends the wait; the job finishes on its own and its result is dropped.
        me.die_if_killed();
        // SAFETY: `me` is the calling process.
        unsafe { starling_scheduler::park_as(&*me) };
    }
}

/// A process that held its scheduler for longer than the VM's long-schedule threshold without
/// calling the VM (the BEAM's `long_schedule` monitor event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongSchedule {
    /// The process.
    pub pid: Pid,
    /// How long it had held its scheduler when reported.
    pub duration: Duration,
    /// `false`: reported when detected (it may still be running); `true`: reported when it gave
    /// its scheduler back, with the whole duration.
    pub finished: bool,
}

/// Most long-schedule events a VM keeps (the oldest are dropped). Guessed: enough to see a
/// pattern, small enough to never matter for memory (~32 KiB).
const LOG_CAPACITY: usize = 1024;

/// The recent long-schedule events of one VM.
#[derive(Default)]
pub(crate) struct LongScheduleLog {
    events: Mutex<VecDeque<LongSchedule>>,
}

impl LongScheduleLog {
    pub(crate) fn record(&self, event: LongSchedule) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == LOG_CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    pub(crate) fn events(&self) -> Vec<LongSchedule> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// The long schedules the calling process's VM has seen (most recent last).
///
/// # Panics
///
/// Outside a process (naming `process::long_schedules`).
pub fn long_schedules() -> Vec<LongSchedule> {
    let me = current("process::long_schedules");
    me.checkpoint(CALL_COST);
    me.vm.long_schedules.events()
}
