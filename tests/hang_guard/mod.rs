//! The hang guard shared by the test helper modules: a test body runs on a helper OS thread
//! and the test FAILS with a message when it overruns its limit, instead of hanging the suite.

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
