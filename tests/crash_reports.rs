//! Crash reports: a process that overflows its stack or panics makes the VM print one line on
//! standard error that names the process's pid (and, for an overflow, the stack size), unless
//! the VM was built with `crash_reports(false)`.
//!
//! An overflow inside a receive guard is reported like any other, and nothing else is printed:
//! the guard's frames were discarded while the process's private queue was borrowed, and the
//! process's end used to panic on that borrow.
//!
//! A panic in a `blocking` closure (on a pool thread) is reported as its process's.
//!
//! An overflow the platform cannot contain (an OS thread's own stack, not a process's) aborts
//! the program with Rust's message instead of going on.
//!
//! Standard error is the test process's own, so each test runs itself again as a child
//! process (`CHILD` in its environment says which case) and reads the child's output.

mod heavy_common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heavy_common::{eventually_outside, recurse_bytes, Counted};

use starling::{receive_match, self_pid, send, spawn_monitor, Down, ExitReason, Vm};

/// The environment variable that makes a test the child that crashes a process.
const CHILD: &str = "STARLING_CRASH_REPORT_CHILD";

/// Recurses without bound (until the guard page stops it).
fn overflow() {
    recurse_bytes(usize::MAX);
    unreachable!("an unbounded recursion returned");
}

/// In the child: spawns a monitored process running `body` on a VM with 64 KiB stacks and
/// crash reports as given, prints the process's pid on standard output (after libtest's
/// `test NAME ... `, on the same line), and returns the reason it ended with.
fn crash_in_child(reports: bool, body: fn()) -> ExitReason {
    let vm = Vm::builder()
        .schedulers(2)
        .stack_size(64 * 1024)
        .crash_reports(reports)
        .build()
        .expect("building the VM");
    vm.run(move || {
        let (pid, monitor) = spawn_monitor(body);
        println!("CRASHED_PID={pid}");
        receive_match::<Down>(|down| down.monitor == monitor).reason
    })
    .expect("the root process failed")
}

/// Runs test `name` of this binary again as a child with `CHILD=case` and returns its output.
/// Fails if the child has not ended within two minutes (a crash the VM mishandled could hang).
fn child_output(name: &str, case: &str) -> std::process::Output {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the test binary as a child");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("waiting for the child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child running {name} ({case}) did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // It has ended: its output is complete (small enough for the pipes' buffers).
    child
        .wait_with_output()
        .expect("reading the child's output")
}

/// Runs test `name` of this binary again as a child with `CHILD=case`; returns the pid it
/// printed and its standard error.
fn run_child(name: &str, case: &str) -> (String, String) {
    let output = child_output(name, case);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the child failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let pid = stdout
        .lines()
        .find_map(|line| line.split("CRASHED_PID=").nth(1))
        .unwrap_or_else(|| panic!("the child printed no pid\nstdout:\n{stdout}"))
        .to_string();
    (pid, stderr)
}

/// Asserts that `stderr` holds the report of process `pid` panicking in this file with
/// `message`.
fn assert_panic_report(pid: &str, stderr: &str, message: &str) {
    let prefix = format!("starling: process {pid} panicked at tests/crash_reports.rs:");
    let suffix = format!(": {message}");
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with(&prefix) && line.ends_with(&suffix)),
        "no line `{prefix}...{suffix}` in the child's standard error:\n{stderr}"
    );
}

/// Asserts that `stderr` holds the overflow report of process `pid` (64 KiB stacks).
fn assert_overflow_report(pid: &str, stderr: &str) {
    let report = format!("starling: process {pid} overflowed its stack (64 KiB) and was ended");
    assert!(
        stderr.lines().any(|line| line == report),
        "no line `{report}` in the child's standard error:\n{stderr}"
    );
}

#[test]
fn an_overflow_report_names_the_pid_and_the_stack_size() {
    match std::env::var(CHILD).as_deref() {
        Ok("overflow") => {
            let reason = crash_in_child(true, overflow);
            assert_eq!(reason, ExitReason::StackOverflow);
        }
        Ok(_) => {}
        Err(_) => {
            let (pid, stderr) = run_child(
                "an_overflow_report_names_the_pid_and_the_stack_size",
                "overflow",
            );
            assert_overflow_report(&pid, &stderr);
        }
    }
}

#[test]
fn a_panic_report_names_the_pid_and_the_message() {
    match std::env::var(CHILD).as_deref() {
        Ok("panic") => {
            let reason = crash_in_child(true, || panic!("a deliberate panic"));
            assert_eq!(reason, ExitReason::Panic("a deliberate panic".into()));
        }
        Ok(_) => {}
        Err(_) => {
            let (pid, stderr) = run_child("a_panic_report_names_the_pid_and_the_message", "panic");
            assert_panic_report(&pid, &stderr, "a deliberate panic");
        }
    }
}

/// Panics in a `blocking` closure, on a pool thread.
fn panic_in_blocking() {
    starling::blocking(|| panic!("a deliberate panic in blocking"))
}

// A `blocking` closure runs on a pool thread, not in the process, but its panic ends the process
// and is reported as the process's, in the same one-line format (not Rust's default report of a
// thread's panic).
#[test]
fn a_panic_in_blocking_work_is_reported_as_its_process_s() {
    match std::env::var(CHILD).as_deref() {
        Ok("blocking") => {
            assert_eq!(
                crash_in_child(true, panic_in_blocking),
                ExitReason::Panic("a deliberate panic in blocking".into())
            );
        }
        Ok(_) => {}
        Err(_) => {
            let (pid, stderr) = run_child(
                "a_panic_in_blocking_work_is_reported_as_its_process_s",
                "blocking",
            );
            assert_panic_report(&pid, &stderr, "a deliberate panic in blocking");
            assert!(
                !stderr.contains("thread '"),
                "Rust's default report of a thread's panic was printed too:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_vm_without_crash_reports_prints_none() {
    match std::env::var(CHILD).as_deref() {
        Ok("quiet") => {
            assert_eq!(crash_in_child(false, overflow), ExitReason::StackOverflow);
            assert_eq!(
                crash_in_child(false, || panic!("a deliberate panic")),
                ExitReason::Panic("a deliberate panic".into())
            );
            assert_eq!(
                crash_in_child(false, panic_in_blocking),
                ExitReason::Panic("a deliberate panic in blocking".into())
            );
        }
        Ok(_) => {}
        Err(_) => {
            let (pid, stderr) = run_child("a_vm_without_crash_reports_prints_none", "quiet");
            assert!(
                !stderr.contains("starling: process") && !stderr.contains("panicked"),
                "a quiet VM reported a crash (last pid {pid}):\n{stderr}"
            );
        }
    }
}

/// Drops of the [`Counted`] messages `overflow_in_a_guard` leaves in its mailbox.
static GUARD_DROPS: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();

/// Sends itself two messages and overflows in the guard of a receive that scans them.
fn overflow_in_a_guard() {
    let drops = GUARD_DROPS.get_or_init(Arc::default).clone();
    let me = self_pid();
    send(me, Counted(drops.clone()));
    send(me, Counted(drops));
    receive_match::<Counted>(|_| {
        recurse_bytes(usize::MAX);
        unreachable!("an unbounded recursion returned")
    });
}

#[test]
fn an_overflow_inside_a_receive_guard_is_reported_alone_and_drops_the_mailbox() {
    match std::env::var(CHILD).as_deref() {
        Ok("guard") => {
            assert_eq!(
                crash_in_child(true, overflow_in_a_guard),
                ExitReason::StackOverflow
            );
            // The process's end drops its messages right after its `Down` is sent.
            let drops = GUARD_DROPS.get().expect("the process ran");
            eventually_outside("the overflowed process's messages are dropped", || {
                drops.load(Ordering::SeqCst) == 2
            });
        }
        Ok(_) => {}
        Err(_) => {
            let (pid, stderr) = run_child(
                "an_overflow_inside_a_receive_guard_is_reported_alone_and_drops_the_mailbox",
                "guard",
            );
            assert_overflow_report(&pid, &stderr);
            assert!(
                !stderr.contains("panicked"),
                "the overflow in a guard made something panic:\n{stderr}"
            );
        }
    }
}

// Where the platform cannot contain an overflow, the program aborts with a clear message, never
// goes on corrupted: here an OS thread's own stack (a `blocking` closure runs on a pool thread,
// not on a process's guarded slot), whose guard-page fault the VM's handler passes on to Rust's.
#[test]
fn an_overflow_outside_any_process_aborts_with_a_clear_message() {
    match std::env::var(CHILD).as_deref() {
        Ok("thread") => {
            let vm = Vm::builder()
                .schedulers(1)
                .build()
                .expect("building the VM");
            vm.run(|| {
                starling::blocking(|| {
                    recurse_bytes(usize::MAX);
                })
            })
            .expect("the root process failed");
            println!("SURVIVED");
        }
        Ok(_) => {}
        Err(_) => {
            let output = child_output(
                "an_overflow_outside_any_process_aborts_with_a_clear_message",
                "thread",
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success() && !stdout.contains("SURVIVED"),
                "the program went on after a thread's stack overflowed\nstdout:\n{stdout}"
            );
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                output.status.signal(),
                Some(libc_sigabrt()),
                "the child did not abort: {:?}\nstderr:\n{stderr}",
                output.status
            );
            assert!(
                stderr.contains("has overflowed its stack"),
                "no overflow message in the child's standard error:\n{stderr}"
            );
        }
    }
}

/// `SIGABRT`'s number on Linux (every architecture this crate supports).
fn libc_sigabrt() -> i32 {
    6
}
