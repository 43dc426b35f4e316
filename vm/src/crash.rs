//! Crash reports: one line on standard error, naming the pid, when a process panics.
//!
//! A process-wide panic hook is installed once (the first time a VM is built). It wraps the hook
//! that was there before: a panic inside a Starling process prints
//! `starling: process <0.12.1> panicked at src/lib.rs:10:5: message` (unless its VM was built
//! with `crash_reports(false)`); so does a panic in a [`blocking`](crate::blocking) closure,
//! which runs on a pool thread on behalf of its process (the panic then ends that process); any
//! other panic goes to the previous hook unchanged.
//!
//! A report is formatted first and written with one `write` (see [`report`]): `eprintln!`
//! writes each formatted piece with a call of its own on the unbuffered standard error, fifteen
//! system calls for one panic report, under a lock that the schedulers' other threads then
//! wait for.

use std::cell::Cell;
use std::io::Write;
use std::sync::Once;

use crate::control_block::Process;
use crate::pid::Pid;

thread_local! {
    /// On a blocking-pool thread, while it runs a process's `blocking` closure: that process,
    /// and whether its VM prints crash reports. (A plain OS thread: no process ever switches
    /// on it, so the thread rule does not apply.)
    static WORKING_FOR: Cell<Option<(Pid, bool)>> = const { Cell::new(None) };
}

/// Runs `f`, on a blocking-pool thread, as work of process `pid` (whose VM prints crash reports
/// if `reports`): a panic in it is reported as that process's.
pub(crate) fn as_work_of<R>(pid: Pid, reports: bool, f: impl FnOnce() -> R) -> R {
    /// Restores the previous value, also when `f` unwinds (after the hook has run).
    struct Restore(Option<(Pid, bool)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            WORKING_FOR.with(|cell| cell.set(self.0));
        }
    }
    let _restore = Restore(WORKING_FOR.with(|cell| cell.replace(Some((pid, reports)))));
    f()
}

pub(crate) fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let (pid, reports) = match starling_scheduler::current_process::<Process>() {
                Some(process) => {
                    // SAFETY: the hook runs on the panicking process's own coroutine, which the
                    // worker running it keeps alive (see `control_block::current`).
                    let process = unsafe { process.as_ref() };
                    (process.pid, process.vm.crash_reports)
                }
                None => match WORKING_FOR.with(Cell::get) {
                    Some(work) => work,
                    None => return previous(info),
                },
            };
            if !reports {
                return;
            }
            let message = crate::control_block::panic_message(info.payload());
            match info.location() {
                Some(location) => report(format_args!(
                    "process {pid} panicked at {location}: {message}"
                )),
                None => report(format_args!("process {pid} panicked: {message}")),
            }
        }));
    });
}

/// Writes the crash report `starling: {what}` as one line to standard error, in one `write`
/// (one line of up to 4 KiB is then also whole between the lines other programs write to the
/// same pipe). An error is ignored: a report is written from a panic hook, where a second
/// panic would abort the program, and there is nowhere else to tell.
pub(crate) fn report(what: std::fmt::Arguments<'_>) {
    let line = format!("starling: {what}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
