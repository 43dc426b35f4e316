//! Shared helpers for the public-API integration tests: hang guards, VM builders, the
//! `on_schedulers!` macro that runs one body on 1, 2 and 4 schedulers, and a transcript that
//! stands in for the tutorials' `IO.puts`.
//!
//! Every test runs its body on a helper OS thread and waits for it with a deadline, so a VM that
//! deadlocks makes the test FAIL with a message instead of hanging the suite.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, Once};
use std::thread::ThreadId;
use std::time::Duration;

use starling::Vm;

/// The hang guard of an ordinary test: far above what any test needs, far below "forever".
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

#[macro_use]
#[path = "../hang_guard/mod.rs"]
mod hang_guard;
#[allow(unused_imports)] // not every test file uses them
pub use hang_guard::{eventually, eventually_outside, panic_message, run, with_timeout};

/// Builds a VM with `schedulers` scheduler threads.
pub fn vm(schedulers: usize) -> Vm {
    Vm::builder()
        .schedulers(schedulers)
        .build()
        .unwrap_or_else(|e| panic!("building a VM with {schedulers} schedulers failed: {e}"))
}

/// Builds a VM with `schedulers` schedulers on a hang-guarded helper thread, hands it to `body`,
/// then drops it (which shuts it down) — all within [`TEST_TIMEOUT`].
#[track_caller]
pub fn with_vm(schedulers: usize, body: fn(&Vm)) {
    with_vm_timeout(schedulers, TEST_TIMEOUT, body)
}

/// [`with_vm`] with another hang guard.
#[track_caller]
pub fn with_vm_timeout(schedulers: usize, limit: Duration, body: fn(&Vm)) {
    let what = format!("test body on a {schedulers}-scheduler VM");
    with_timeout(limit, &what, move || {
        let vm = vm(schedulers);
        body(&vm);
        drop(vm);
    })
}

/// Defines one `#[test]` per scheduler count (1, 2 and 4) for each body:
///
/// ```ignore
/// on_schedulers! {
///     fn ping_pong_works(vm) { let n = run(vm, || 1); assert_eq!(n, 1); }
/// }
/// ```
/// expands to a module `ping_pong_works` with the tests `schedulers_1`, `schedulers_2` and
/// `schedulers_4` (shown as `ping_pong_works::schedulers_1` and so on). `vm` is a `&Vm`, and the
/// body runs under the [`TEST_TIMEOUT`] hang guard. Attributes before `fn` (e.g. `#[ignore]`) go
/// on all three tests.
#[allow(unused_macros)]
macro_rules! on_schedulers {
    ($($tests:tt)*) => {
        per_scheduler_tests!(crate::common::with_vm; $($tests)*);
    };
}

/// Stands in for standard output in the tutorial ports: `IO.puts(x)` becomes
/// `out.puts(x)`, and the test asserts on `out.lines()`. Cheap to clone into processes; the lock
/// is held only while pushing or copying, never across a VM call.
#[derive(Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn puts(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, line: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l == line)
    }
}

#[inline(never)]
fn read_current_thread_id() -> ThreadId {
    std::thread::current().id()
}

/// The id of the OS thread running the caller *right now*.
///
/// LLVM assumes a function never changes threads, so it may reuse a thread-local address it
/// computed before a VM call that switched the process to another worker (measured here, see
/// DESIGN.md "Thread-locals and migration"). Calling through a function pointer that
/// `black_box` hides forces a fresh lookup every time.
pub fn current_thread_id() -> ThreadId {
    let read: fn() -> ThreadId = std::hint::black_box(read_current_thread_id);
    read()
}

/// Marker that tests put in panics they cause on purpose.
pub const INTENTIONAL: &str = "intentional panic";

/// Installs (once per test binary) a panic hook that stays silent for panics whose message
/// contains [`INTENTIONAL`] and prints every other panic as the default hook does.
pub fn quiet_intentional_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_message(info.payload()).contains(INTENTIONAL) {
                default_hook(info);
            }
        }));
    });
}

/// Inside a process: receives an `M`, failing after 30 s with `what` — for replies from child
/// processes that assert, so a child's failed assertion (printed as its panic) fails the test
/// instead of leaving the root waiting until the hang guard.
#[track_caller]
pub fn receive_or_fail<M: Send + 'static>(what: &str) -> M {
    starling::receive_timeout::<M>(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no reply within 30 s: {what} (did a child process panic?)"))
}
