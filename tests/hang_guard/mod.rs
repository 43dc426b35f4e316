//! What the test helper modules (`common`, `signal_common`, `heavy_common`) share: the hang
//! guard (a test body runs on a helper OS thread and the test FAILS with a message when it
//! overruns its limit, instead of hanging the suite), `run` (a root process that must
//! return), `eventually` (inside a process and outside), the text of a panic payload, and the macro behind `on_schedulers!`
//! and `signal_tests!`.

#![allow(dead_code, unused_macros)]

use std::any::Any;

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a helper OS thread and returns its result; panics if it takes longer than
/// `limit`, and re-raises the helper's panic (with its message) if it panicked.
///
/// A helper that hangs is left behind: the test binary exits when the harness is done.
#[track_caller]
pub fn with_timeout<T, F>(limit: Duration, what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("hang-guarded: {what}"))
        .spawn(move || {
            let value = f();
            // The receiver is gone only if the test already failed by timeout.
            let _ = tx.send(value);
        })
        .expect("could not start the hang-guard helper thread");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            let _ = handle.join();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("helper thread ended without a result and without panicking"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "TIMEOUT: `{what}` did not finish within {limit:?} (deadlock, lost wake-up, lost \
             signal or starvation in the VM?)"
        ),
    }
}

/// `vm.run(f)`, expecting the root process to return normally.
#[track_caller]
pub fn run<T, F>(vm: &starling::Vm, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match vm.run(f) {
        Ok(value) => value,
        Err(reason) => panic!("the root process did not return normally: {reason:?}"),
    }
}

/// Inside a process: polls `condition` (sleeping 1 ms between tries) until it holds, panicking
/// with `what` if it does not within 10 s.
#[track_caller]
pub fn eventually(what: &str, condition: impl FnMut() -> bool) {
    poll(what, condition, starling::process::sleep);
}

/// Outside any process: polls `condition` (sleeping the OS thread) like [`eventually`].
#[track_caller]
pub fn eventually_outside(what: &str, condition: impl FnMut() -> bool) {
    poll(what, condition, std::thread::sleep);
}

#[track_caller]
fn poll(what: &str, mut condition: impl FnMut() -> bool, sleep: fn(std::time::Duration)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened within 10 s: {what}"
        );
        sleep(std::time::Duration::from_millis(1));
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Turns each `fn name(vm) { body }` into a module `name` with the tests `schedulers_1`,
/// `schedulers_2` and `schedulers_4`, each calling `$with_vm(n, body)` (a function that builds
/// an `n`-scheduler VM under a hang guard and hands it to the body). Attributes before `fn`
/// go on all three tests. `on_schedulers!` and `signal_tests!` are this with their helper
/// module's `with_vm`.
macro_rules! per_scheduler_tests {
    ($with_vm:path; $( $(#[$attr:meta])* fn $name:ident($vm:ident) $body:block )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn test_body($vm: &::starling::Vm) $body

            $(#[$attr])*
            #[test]
            fn schedulers_1() {
                $with_vm(1, test_body)
            }

            $(#[$attr])*
            #[test]
            fn schedulers_2() {
                $with_vm(2, test_body)
            }

            $(#[$attr])*
            #[test]
            fn schedulers_4() {
                $with_vm(4, test_body)
            }
        }
    )*};
}
