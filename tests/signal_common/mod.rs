//! Helpers for the ports of Erlang/OTP's and Elixir's link, monitor, exit-signal, timer, name and
//! Task test cases (`links.rs`, `monitors.rs`, `exit_signals.rs`, `registry.rs`, `timers.rs`,
//! `task.rs`, `randomized.rs`).
//!
//! - [`signal_tests!`] turns one body into three `#[test]`s, on VMs with 1, 2 and 4 schedulers,
//!   each under a hang guard: the body runs on a helper OS thread and the test FAILS with a clear
//!   message if it does not finish within [`HANG_GUARD`].
//! - VMs are built with `crash_reports(false)`: many cases make processes panic on purpose, and a
//!   child's failed assertion still reaches the test through its `Exit`/`Down` reason
//!   (`Panic(message)`), which the helpers below turn into a test failure.
//! - [`TestProc`] is OTP's `test_proc`/`tp_call`/`tp_cast`: a process that runs closures sent to
//!   it, so a test can make *another* process link, unlink, trap exits or exit.

#![allow(dead_code, unused_macros)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use starling::{
    process, receive_match, receive_match_timeout, receive_timeout, self_pid, send, spawn, Down,
    Exit, ExitReason, MonitorRef, Pid, Vm,
};

/// How long one test body may take before the test fails as hung. Far above what any body
/// needs (they take milliseconds to a few seconds), far below "forever".
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// How long a process waits for a reply that must come, before failing the test.
pub const REPLY_LIMIT: Duration = Duration::from_secs(30);

#[macro_use]
#[path = "../hang_guard/mod.rs"]
mod hang_guard;
/// The hang guard (`hang_guard::with_timeout`) under the name these tests use.
#[allow(unused_imports)] // not every test file uses it
pub use hang_guard::with_timeout as guarded;
#[allow(unused_imports)] // not every test file uses it
pub use hang_guard::{eventually, run};

/// A VM with `schedulers` schedulers and no crash reports.
pub fn build_vm(schedulers: usize) -> Vm {
    Vm::builder()
        .schedulers(schedulers)
        .crash_reports(false)
        .build()
        .unwrap_or_else(|e| panic!("building a VM with {schedulers} schedulers failed: {e}"))
}

/// A VM like [`build_vm`] whose scheduling choices are randomized from `seed`.
pub fn build_randomized_vm(schedulers: usize, seed: u64) -> Vm {
    Vm::builder()
        .schedulers(schedulers)
        .crash_reports(false)
        .randomize_scheduling(seed)
        .build()
        .unwrap_or_else(|e| panic!("building a randomized VM ({schedulers}, {seed}) failed: {e}"))
}

/// Builds a VM with `schedulers` schedulers, runs `body` on it and drops it, all on a helper
/// thread under [`HANG_GUARD`]. On a hang, the failure lists every live process of the VM
/// (status, queue length, links, monitors) to show where it is stuck.
#[track_caller]
pub fn with_vm(schedulers: usize, body: fn(&Vm)) {
    run_guarded(
        build_vm(schedulers),
        &format!("test body on a {schedulers}-scheduler VM"),
        body,
    )
}

/// Runs `body` on `vm` under [`HANG_GUARD`], then drops the VM; see [`with_vm`].
#[track_caller]
pub fn run_guarded(vm: Vm, what: &str, body: fn(&Vm)) {
    // The helper owns the VM (so dropping it, which shuts it down, is under the guard too);
    // this thread keeps only a weak reference, to list the live processes on a hang.
    let inside = std::sync::Arc::new(vm);
    let weak = std::sync::Arc::downgrade(&inside);
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("hang-guarded: {what}"))
        .spawn(move || {
            body(&inside);
            drop(inside);
            let _ = tx.send(());
        })
        .expect("could not start the hang-guard helper thread");
    match rx.recv_timeout(HANG_GUARD) {
        Ok(()) => {
            let _ = handle.join();
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("helper thread ended without a result and without panicking"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let Some(vm) = weak.upgrade() else {
                panic!("HANG: `{what}` did not finish within {HANG_GUARD:?} (VM shutdown?)");
            };
            let dump: Vec<String> = vm
                .processes()
                .into_iter()
                .filter_map(|pid| vm.info(pid))
                .map(|i| {
                    format!(
                        "  {} {:?} queue={} links={:?} monitors={:?} monitored_by={:?} trap={} name={:?}",
                        i.pid,
                        i.status,
                        i.message_queue_len,
                        i.links,
                        i.monitors,
                        i.monitored_by,
                        i.trap_exit,
                        i.registered_name
                    )
                })
                .collect();
            // The VM is leaked on purpose: dropping it could hang too.
            std::mem::forget(vm);
            panic!(
                "HANG: `{what}` did not finish within {HANG_GUARD:?} (deadlock, lost wake-up, \
                 lost signal or a missing Exit/Down in the VM?). Live processes:\n{}",
                dump.join("\n")
            );
        }
    }
}

/// Runs `body` once per seed in `seeds`, each time on a fresh randomized VM with `schedulers`
/// schedulers, each run under its own [`HANG_GUARD`]. A failure names the seed.
#[track_caller]
pub fn with_randomized_vms(schedulers: usize, seeds: std::ops::Range<u64>, body: fn(&Vm)) {
    for seed in seeds {
        let what = format!("randomized run, {schedulers} schedulers, seed {seed}");
        let outcome = std::panic::catch_unwind(|| {
            run_guarded(build_randomized_vm(schedulers, seed), &what, body)
        });
        if let Err(payload) = outcome {
            panic!(
                "{what} failed (reproduce with this seed): {}",
                hang_guard::panic_message(&*payload)
            );
        }
    }
}

/// Defines one `#[test]` per scheduler count (1, 2 and 4) for each body:
///
/// ```ignore
/// signal_tests! {
///     // erl_link_SUITE: links
///     fn links(vm) { run(vm, || ...); }
/// }
/// ```
/// expands to a module `links` with the tests `schedulers_1`, `schedulers_2`, `schedulers_4`.
/// `vm` is a `&Vm` (crash reports off); the body runs under the [`HANG_GUARD`]. Attributes
/// before `fn` (e.g. `#[ignore = "BUG: ..."]`) go on all three tests.
macro_rules! signal_tests {
    ($($tests:tt)*) => {
        per_scheduler_tests!(crate::signal_common::with_vm; $($tests)*);
    };
}

/// `ExitReason::Custom(text)`: Erlang's atom exit reasons (`exit(P, frop)`).
pub fn custom(text: &str) -> ExitReason {
    ExitReason::Custom(text.to_string())
}

/// A process that waits forever (until killed): `spawn(timer, sleep, [infinity])`.
pub fn spawn_sleeper() -> Pid {
    spawn(|| process::sleep(Duration::MAX))
}

/// Monitors `pid` and waits for its `Down`; returns the reason.
#[track_caller]
pub fn wait_down(pid: Pid) -> ExitReason {
    let monitor = process::monitor(pid);
    wait_down_of(monitor, pid)
}

/// Waits for the `Down` of `monitor` (on `pid`); returns the reason.
#[track_caller]
pub fn wait_down_of(monitor: MonitorRef, pid: Pid) -> ExitReason {
    let down = receive_match_timeout(|d: &Down| d.monitor == monitor, REPLY_LIMIT)
        .unwrap_or_else(|| panic!("no Down from {pid} within {REPLY_LIMIT:?}"));
    assert_eq!(down.pid, pid, "the Down names the monitored process");
    down.reason
}

/// Waits for the `Exit` from `from`; returns the reason.
#[track_caller]
pub fn wait_exit(from: Pid) -> ExitReason {
    receive_match_timeout(|e: &Exit| e.from == from, REPLY_LIMIT)
        .unwrap_or_else(|| panic!("no Exit from {from} within {REPLY_LIMIT:?}"))
        .reason
}

/// Inside a process: receives an `M`, failing after [`REPLY_LIMIT`] with `what`.
#[track_caller]
pub fn expect<M: Send + 'static>(what: &str) -> M {
    receive_timeout::<M>(REPLY_LIMIT).unwrap_or_else(|| panic!("no {what} within {REPLY_LIMIT:?}"))
}

/// Messages in the caller's mailbox.
pub fn mailbox_len() -> usize {
    process::info(self_pid())
        .expect("the caller is alive")
        .message_queue_len
}

/// Asserts that no `Exit` from `from` is in the caller's mailbox or arrives within `within`.
#[track_caller]
pub fn assert_no_exit_from(from: Pid, within: Duration) {
    if let Some(exit) = receive_match_timeout(|e: &Exit| e.from == from, within) {
        panic!("unexpected {exit:?}");
    }
}

/// Asserts that no `Down` for `monitor` is in the caller's mailbox or arrives within `within`.
#[track_caller]
pub fn assert_no_down(monitor: MonitorRef, within: Duration) {
    if let Some(down) = receive_match_timeout(|d: &Down| d.monitor == monitor, within) {
        panic!("unexpected {down:?}");
    }
}

/// Asserts that no message of type `M` is in the caller's mailbox or arrives within `within`.
#[track_caller]
pub fn assert_no_message<M: Send + std::fmt::Debug + 'static>(within: Duration) {
    if let Some(message) = receive_timeout::<M>(within) {
        panic!("unexpected message {message:?}");
    }
}

/// Spins (calling `yield_now`) `n` times: a cheap way to shift timing in race tests.
pub fn spin(n: u32) {
    for _ in 0..n {
        process::yield_now();
    }
}

/// A small deterministic generator for race tests (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// OTP's test_proc / tp_call / tp_cast
// ---------------------------------------------------------------------------------------------

/// A command for a [`TestProc`]: a closure it runs.
struct TpCommand(Box<dyn FnOnce() + Send>);

/// A reply from a [`TestProc`] to `tp_call`.
struct TpReply<R> {
    tag: u64,
    value: R,
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// OTP's `test_proc`: runs every closure sent to it, in order, until one ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestProc(pub Pid);

impl TestProc {
    /// `spawn(?MODULE, test_proc, [])`.
    pub fn spawn() -> TestProc {
        TestProc(spawn(test_proc_loop))
    }

    /// `spawn_link(?MODULE, test_proc, [])`.
    pub fn spawn_link() -> TestProc {
        TestProc(starling::spawn_link(test_proc_loop))
    }

    pub fn pid(self) -> Pid {
        self.0
    }

    /// `tp_call(TP, Fun)`: runs `f` in the test process and returns its result. Fails the test
    /// if no reply comes within [`REPLY_LIMIT`] (e.g. the closure made the process die).
    #[track_caller]
    pub fn call<R: Send + 'static>(self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let me = self_pid();
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        send(
            self.0,
            TpCommand(Box::new(move || send(me, TpReply { tag, value: f() }))),
        );
        receive_match_timeout(|r: &TpReply<R>| r.tag == tag, REPLY_LIMIT)
            .unwrap_or_else(|| panic!("test process {} did not answer tp_call", self.0))
            .value
    }

    /// `tp_cast(TP, Fun)`: runs `f` in the test process without waiting.
    pub fn cast(self, f: impl FnOnce() + Send + 'static) {
        send(self.0, TpCommand(Box::new(f)));
    }
}

fn test_proc_loop() {
    loop {
        let TpCommand(f) = receive_match(|_: &TpCommand| true);
        f();
    }
}

/// OTP's `check_link(A, B)`: each of the two live processes lists the other among its links.
#[track_caller]
pub fn check_link(a: Pid, b: Pid) {
    let a_links = process::info(a)
        .expect("check_link: first process alive")
        .links;
    let b_links = process::info(b)
        .expect("check_link: second process alive")
        .links;
    assert!(
        a_links.contains(&b),
        "{a} does not list {b} in its links {a_links:?}"
    );
    assert!(
        b_links.contains(&a),
        "{b} does not list {a} in its links {b_links:?}"
    );
}

/// OTP's `check_unlink(A, B)`: neither process (if alive) lists the other among its links.
#[track_caller]
pub fn check_unlink(a: Pid, b: Pid) {
    if let Some(info) = process::info(a) {
        assert!(
            !info.links.contains(&b),
            "{a} still lists {b}: {:?}",
            info.links
        );
    }
    if let Some(info) = process::info(b) {
        assert!(
            !info.links.contains(&a),
            "{b} still lists {a}: {:?}",
            info.links
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Holding a process in the middle of its exit
// ---------------------------------------------------------------------------------------------

/// Lets a test look at a process while it is exiting: the process stores a guard in a
/// process-local ([`ExitGate::hold`]); the guard's `Drop`, which runs while the process ends
/// (after it stopped being alive, before its links and monitors fire), reports that it was
/// entered and blocks its OS thread until [`ExitGate::release`] (at most 10 s). The VM hands the
/// blocked scheduler's other processes to a spare thread meanwhile, so this works with one
/// scheduler too.
#[derive(Debug, Default)]
pub struct ExitGate {
    entered: std::sync::atomic::AtomicBool,
    released: std::sync::atomic::AtomicBool,
}

struct ExitGateGuard(std::sync::Arc<ExitGate>);

impl Drop for ExitGateGuard {
    fn drop(&mut self) {
        self.0.entered.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(10);
        while !self.0.released.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

starling::process_local! {
    static EXIT_GATE: std::cell::RefCell<Option<ExitGateGuard>> = std::cell::RefCell::new(None);
}

impl ExitGate {
    pub fn new() -> std::sync::Arc<ExitGate> {
        std::sync::Arc::new(ExitGate::default())
    }

    /// In the process to hold: its exit will wait at this gate.
    pub fn hold(self: &std::sync::Arc<Self>) {
        let guard = ExitGateGuard(self.clone());
        EXIT_GATE.with(|slot| *slot.borrow_mut() = Some(guard));
    }

    /// Whether the held process has reached the gate (it is exiting).
    pub fn entered(&self) -> bool {
        self.entered.load(Ordering::SeqCst)
    }

    /// Lets the held process finish its exit.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}
