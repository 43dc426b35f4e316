//! Panics and exits (API.md guarantee 3): a panic ends only its own process with
//! `ExitReason::Panic(message)`, the VM and every other process go on; `exit` and normal returns
//! give `vm.run` its result; process-only functions panic outside a process, naming themselves.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{eventually, panic_message, quiet_intentional_panics, run, INTENTIONAL};
use starling::{
    exit, process, receive, receive_match_timeout, self_pid, send, spawn, spawn_monitor, Down,
    ExitReason, Pid,
};

#[derive(Debug)]
struct Ping(Pid);

#[derive(Debug, PartialEq)]
struct Pong;

/// A process that answers every `Ping` with a `Pong`, forever.
fn start_echo() -> Pid {
    spawn(|| loop {
        let Ping(from) = starling::receive::<Ping>();
        send(from, Pong);
    })
}

fn ping(echo: Pid) {
    send(echo, Ping(self_pid()));
    let pong = starling::receive_timeout::<Pong>(Duration::from_secs(10));
    assert_eq!(pong, Some(Pong), "{echo} stopped answering");
}

on_schedulers! {
    fn a_panicking_root_returns_err_panic_with_its_message(vm) {
        quiet_intentional_panics();
        let result = vm.run(|| -> u32 { panic!("{INTENTIONAL}: root {}", 42) });
        match result {
            Err(ExitReason::Panic(message)) => assert!(
                message.contains("intentional panic: root 42"),
                "the reason carries the panic message, got {message:?}"
            ),
            other => panic!("expected Err(Panic(..)), got {other:?}"),
        }
        let result = vm.run(|| -> () { std::panic::panic_any("intentional panic: a &str payload") });
        assert!(
            matches!(&result, Err(ExitReason::Panic(m)) if m.contains("a &str payload")),
            "{result:?}"
        );
        // The VM is still healthy.
        assert_eq!(run(vm, || 7), 7);
    }

    fn returning_normally_gives_ok_with_the_value(vm) {
        assert_eq!(vm.run(|| 40 + 2), Ok(42));
        assert_eq!(vm.run(|| "text".to_string()), Ok("text".to_string()));
        assert_eq!(vm.run(|| ()), Ok(()));
    }

    fn exit_custom_from_the_root_gives_err_custom(vm) {
        let result = vm.run(|| -> u32 { exit(ExitReason::Custom("bye".to_string())) });
        assert_eq!(result, Err(ExitReason::Custom("bye".to_string())));
        // Kernel.exit(:normal) from the root is not a normal return.
        let result = vm.run(|| -> u32 { exit(ExitReason::Normal) });
        assert_eq!(result, Err(ExitReason::Normal));
        let result = vm.run(|| -> u32 { exit(ExitReason::Shutdown) });
        assert_eq!(result, Err(ExitReason::Shutdown));
    }

    fn exit_deep_inside_calls_ends_the_process(vm) {
        fn nested(depth: u32) -> u32 {
            if depth == 0 {
                exit(ExitReason::Custom("deep".to_string()))
            }
            nested(depth - 1) + 1
        }
        let result = vm.run(|| nested(50));
        assert_eq!(result, Err(ExitReason::Custom("deep".to_string())));
    }

    // A user catch_unwind cannot keep an exiting process alive past its next VM call.
    fn catch_unwind_does_not_stop_exit(vm) {
        let result = vm.run(|| -> u32 {
            let _ = std::panic::catch_unwind(|| exit(ExitReason::Custom("stubborn".to_string())));
            // The next VM call must not let the process go on.
            let _ = self_pid();
            process::yield_now();
            0
        });
        assert_eq!(result, Err(ExitReason::Custom("stubborn".to_string())));
    }

    fn a_panicking_process_ends_only_itself(vm) {
        quiet_intentional_panics();
        run(vm, || {
            let echo = start_echo();
            ping(echo);
            let doomed = spawn(|| {
                starling::receive::<()>();
                panic!("{INTENTIONAL}: child");
            });
            send(doomed, ());
            eventually("the panicking child ends", || !process::alive(doomed));
            assert_eq!(process::info(doomed).map(|_| ()), None, "a dead process has no info");
            assert!(process::alive(self_pid()));
            assert!(process::alive(echo));
            ping(echo);
            // A message to the dead process is dropped silently.
            send(doomed, ());
            ping(echo);
        });
    }

    fn many_panicking_processes_leave_the_vm_healthy(vm) {
        quiet_intentional_panics();
        run(vm, || {
            let echo = start_echo();
            for i in 0..1_000u32 {
                spawn(move || {
                    if i % 2 == 0 {
                        process::yield_now();
                    }
                    panic!("{INTENTIONAL} #{i}");
                });
                if i % 100 == 0 {
                    ping(echo);
                }
            }
            eventually("all panicking processes end", || process::list().len() == 2);
            ping(echo);

            // New processes still start, run and answer.
            let root = self_pid();
            for i in 0..100u32 {
                spawn(move || send(root, i));
            }
            let sum: u32 = (0..100).map(|_| starling::receive::<u32>()).sum();
            assert_eq!(sum, (0..100).sum());
        });
        // And the VM runs further roots.
        assert_eq!(run(vm, || process::list().len()), 1 + 1, "the echo process is still there");
    }

    // A panic while holding messages and process state unwinds that process's values.
    fn a_panicking_process_drops_its_values(vm) {
        quiet_intentional_panics();
        run(vm, || {
            struct NotifyOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
            impl Drop for NotifyOnDrop {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = NotifyOnDrop(dropped.clone());
            let pid = spawn(move || {
                let _held = flag;
                panic!("{INTENTIONAL}: with a value on the stack");
            });
            eventually("the panicking process ends", || !process::alive(pid));
            eventually("its values are dropped", || dropped.load(std::sync::atomic::Ordering::SeqCst));
        });
    }

    // Rust's panic state belongs to the OS thread. A destructor that waits while its process
    // unwinds must not hand the thread to other processes: they would see
    // `std::thread::panicking()`, and a kill would not unwind them (the VM does not start a
    // second unwind during a panic).
    fn a_destructor_that_waits_while_unwinding_keeps_the_panic_to_its_process(vm) {
        quiet_intentional_panics();
        run(vm, || {
            struct WaitOnDrop;
            impl Drop for WaitOnDrop {
                fn drop(&mut self) {
                    process::sleep(Duration::from_millis(30));
                }
            }
            let (unwinding, monitor) = spawn_monitor(|| {
                let _wait = WaitOnDrop;
                panic!("{INTENTIONAL}: waiting in a destructor");
            });
            let victim = spawn(|| loop {
                receive::<u8>();
            });
            let victim_monitor = process::monitor(victim);
            // While the destructor waits: nobody else is panicking, and a kill kills.
            let mut seen_panicking = false;
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                seen_panicking |= std::thread::panicking();
                process::yield_now();
            }
            process::exit(victim, ExitReason::Kill);
            let down = receive_match_timeout(|d: &Down| d.monitor == victim_monitor, Duration::from_secs(30))
                .expect("a process killed while another one's destructor waited did not die");
            assert_eq!(down.reason, ExitReason::Killed);
            let down = receive_match_timeout(|d: &Down| d.monitor == monitor, Duration::from_secs(30))
                .expect("the unwinding process did not end");
            assert_eq!(down.pid, unwinding);
            assert!(matches!(&down.reason, ExitReason::Panic(m) if m.contains("waiting in a destructor")), "{:?}", down.reason);
            assert!(!seen_panicking, "another process saw the unwinding process's panic");
        });
    }

    // The same for a destructor that uses up its slice (it would yield at a VM call).
    fn a_destructor_that_spends_its_slice_while_unwinding_keeps_the_panic_to_its_process(vm) {
        quiet_intentional_panics();
        run(vm, || {
            struct SendOnDrop;
            impl Drop for SendOnDrop {
                fn drop(&mut self) {
                    let me = self_pid();
                    for i in 0..20_000u32 {
                        send(me, i);
                    }
                }
            }
            let (_, monitor) = spawn_monitor(|| {
                let _send = SendOnDrop;
                panic!("{INTENTIONAL}: sending in a destructor");
            });
            let mut seen_panicking = false;
            let down = loop {
                seen_panicking |= std::thread::panicking();
                if let Some(down) = receive_match_timeout(|d: &Down| d.monitor == monitor, Duration::ZERO) {
                    break down;
                }
                process::yield_now();
            };
            assert!(matches!(&down.reason, ExitReason::Panic(m) if m.contains("sending in a destructor")), "{:?}", down.reason);
            assert!(!seen_panicking, "another process saw the unwinding process's panic");
        });
    }

    fn a_panic_in_a_receive_body_ends_the_process(vm) {
        quiet_intentional_panics();
        let result = vm.run(|| -> u32 {
            send(self_pid(), 5u32);
            receive! {
                n: u32 => if n == 5 { panic!("{INTENTIONAL}: in a receive! body") } else { n },
            }
        });
        assert!(
            matches!(&result, Err(ExitReason::Panic(m)) if m.contains("in a receive! body")),
            "{result:?}"
        );
    }
}

/// Asserts that `f`, called outside any process, panics with a message naming `function`.
fn assert_panics_outside_a_process<R>(
    function: &str,
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
) {
    let payload = match std::panic::catch_unwind(f) {
        Ok(_) => panic!("`{function}` outside a process returned instead of panicking"),
        Err(payload) => payload,
    };
    let message = panic_message(payload.as_ref());
    assert!(
        message.contains(function),
        "the panic of `{function}` outside a process must name it; the message was {message:?}"
    );
}

#[test]
fn self_pid_outside_a_process_panics_naming_it() {
    assert_panics_outside_a_process("self_pid", starling::self_pid);
}

#[test]
fn receive_outside_a_process_panics_naming_it() {
    assert_panics_outside_a_process("receive", starling::receive::<u32>);
}

#[test]
fn receive_timeout_outside_a_process_panics_naming_it() {
    assert_panics_outside_a_process("receive_timeout", || {
        starling::receive_timeout::<u32>(Duration::from_millis(1))
    });
}

#[test]
fn receive_match_outside_a_process_panics_naming_it() {
    assert_panics_outside_a_process("receive_match", || starling::receive_match(|_: &u32| true));
}

#[test]
fn spawn_outside_a_process_panics_naming_it() {
    assert_panics_outside_a_process("spawn", || starling::spawn(|| {}));
}

#[test]
fn yield_now_outside_a_process_panics_naming_it() {
    assert_panics_outside_a_process("yield_now", starling::process::yield_now);
}

#[test]
fn a_vm_outlives_a_panic_in_an_outside_caller() {
    // A panic on an OS thread that merely uses a VM does not poison it.
    common::with_vm(2, |vm| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = vm.run(|| 1);
            panic!("intentional panic outside the VM");
        }));
        assert!(r.is_err());
        assert_eq!(run(vm, || 2), 2);
    });
}
