//! `starling::blocking`: work run on the blocking pool returns its value to the calling
//! process, many blocked processes complete while others keep running, a panic in the work
//! ends only the caller, a killed caller dies with `Killed`, outside a process it panics, and
//! a small pool (`blocking_threads`) still completes every call.

mod heavy_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heavy_common::{echo, guarded, panic_message, ping, stop_echo};
use starling::{
    blocking, process, receive, receive_match, self_pid, send, spawn, spawn_monitor, Down,
    ExitReason, Pid, Status, Vm,
};

fn quiet_vm(schedulers: usize) -> Vm {
    Vm::builder()
        .schedulers(schedulers)
        .crash_reports(false)
        .build()
        .expect("building the VM")
}

#[test]
fn blocking_returns_the_value_of_a_file_read() {
    guarded("blocking file read", || {
        let path =
            std::env::temp_dir().join(format!("starling-blocking-test-{}.bin", std::process::id()));
        let contents: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &contents).expect("writing the test file");
        let vm = quiet_vm(2);
        let path_in = path.clone();
        let read = vm.run(move || blocking(move || std::fs::read(path_in)));
        std::fs::remove_file(&path).ok();
        let read = read.expect("the root process failed");
        assert_eq!(read.expect("the read failed"), contents);
        // An error from the work comes back as a value, too.
        let missing = vm.run(|| blocking(|| std::fs::read("/nonexistent/starling/file")));
        assert!(missing.expect("the root process failed").is_err());
    });
}

/// A blocked process is done.
#[derive(Debug)]
struct Done(u64);

// 1,000 processes each block 100 ms on a 2-scheduler VM; all complete while another process
// keeps answering pings.
#[test]
fn a_thousand_blocking_sleeps_complete_while_others_run() {
    guarded("1,000 blocking sleeps", || {
        let vm = quiet_vm(2);
        let (pings_during, finished_by_then) = vm
            .run(|| {
                let me = self_pid();
                // One more blocked call that only ends once the pings are through, so the pings
                // provably run while blocking work is in flight.
                let entered = Arc::new(AtomicBool::new(false));
                let gate = Arc::new(AtomicBool::new(false));
                let (entered_in, gate_in) = (entered.clone(), gate.clone());
                let gatekeeper = spawn(move || {
                    blocking(move || {
                        entered_in.store(true, Ordering::SeqCst);
                        while !gate_in.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    });
                    send(me, Done(u64::MAX));
                });
                let finished = Arc::new(AtomicUsize::new(0));
                for i in 0..1_000u64 {
                    let finished = finished.clone();
                    spawn(move || {
                        blocking(|| std::thread::sleep(Duration::from_millis(100)));
                        finished.fetch_add(1, Ordering::SeqCst);
                        send(me, Done(i));
                    });
                }
                let partner = echo();
                while !entered.load(Ordering::SeqCst) {
                    process::sleep(Duration::from_millis(1));
                }
                let mut pings = 0;
                for n in 0..200 {
                    ping(partner, n);
                    pings += 1;
                }
                let finished_by_then = finished.load(Ordering::SeqCst);
                // The gatekeeper is still blocked: open its gate.
                assert!(process::alive(gatekeeper));
                gate.store(true, Ordering::SeqCst);
                let mut sum = 0u64;
                let mut gatekeeper_done = false;
                for _ in 0..1_001 {
                    match receive::<Done>() {
                        Done(u64::MAX) => gatekeeper_done = true,
                        Done(i) => sum += i,
                    }
                }
                assert!(gatekeeper_done);
                assert_eq!(sum, 999 * 1_000 / 2, "every blocked process finished once");
                assert_eq!(finished.load(Ordering::SeqCst), 1_000);
                // Still answering after the storm.
                ping(partner, 1_000);
                stop_echo(partner);
                (pings, finished_by_then)
            })
            .expect("the root process failed");
        println!(
            "blocking: {pings_during} pings answered while blocking calls were in flight \
             ({finished_by_then} of 1,000 sleeps had finished by then)"
        );
    });
}

#[test]
fn a_panic_in_blocking_work_ends_the_caller_with_that_panic() {
    guarded("panic inside blocking", || {
        let vm = quiet_vm(2);
        let (reason, pid_ok) = vm
            .run(|| {
                let sibling = echo();
                let (pid, monitor) = spawn_monitor(|| {
                    blocking(|| -> u32 { panic!("the disk is on fire") });
                    unreachable!("blocking returned after its work panicked");
                });
                let down = receive_match::<Down>(|down| down.monitor == monitor);
                // Only the caller ended.
                ping(sibling, 1);
                stop_echo(sibling);
                (down.reason, down.pid == pid)
            })
            .expect("the root process failed");
        assert!(pid_ok);
        match reason {
            ExitReason::Panic(message) => assert!(
                message.contains("the disk is on fire"),
                "the panic's message is lost: {message:?}"
            ),
            other => panic!("expected Panic(..), got {other:?}"),
        }
        assert_eq!(vm.run(|| blocking(|| 6 * 7)), Ok(42));
    });
}

#[test]
fn blocking_outside_a_process_panics_naming_it() {
    guarded("blocking outside a process", || {
        let outcome = std::panic::catch_unwind(|| blocking(|| 1 + 1));
        let payload = outcome.expect_err("blocking outside a process returned");
        let message = panic_message(&*payload);
        assert!(
            message.contains("blocking"),
            "the panic does not name `blocking`: {message:?}"
        );
    });
}

#[test]
fn a_process_killed_while_in_blocking_dies_killed() {
    guarded("kill while in blocking", || {
        let vm = quiet_vm(2);
        let entered = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (entered_in, release_in) = (entered.clone(), release.clone());
        let outcome = vm.run(move || {
            let (entered_w, release_w) = (entered_in.clone(), release_in.clone());
            let (pid, monitor) = spawn_monitor(move || {
                blocking(move || {
                    entered_w.store(true, Ordering::SeqCst);
                    // Held until the test lets go (bounded, in case it never does).
                    for _ in 0..60_000 {
                        if release_w.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
                unreachable!("a killed process returned from blocking");
            });
            while !entered_in.load(Ordering::SeqCst) {
                process::sleep(Duration::from_millis(1));
            }
            // The work has started; the caller parks right after handing it over.
            while process::info(pid).map(|info| info.status) != Some(Status::Waiting) {
                process::sleep(Duration::from_millis(1));
            }
            process::exit(pid, ExitReason::Kill);
            let down = receive_match::<Down>(|down| down.monitor == monitor);
            assert_eq!((down.pid, down.reason), (pid, ExitReason::Killed));
            assert!(!process::alive(pid));
            // The work is still running on the pool; let it finish; its result is dropped.
            release_in.store(true, Ordering::SeqCst);
            // The VM is healthy.
            let sibling = echo();
            ping(sibling, 7);
            stop_echo(sibling);
            blocking(|| "still works")
        });
        assert_eq!(outcome, Ok("still works"));
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
    });
}

// With a pool of 4 threads, 40 concurrent 50 ms blocking calls all complete, never more than
// 4 at once.
#[test]
fn a_small_blocking_pool_completes_every_call() {
    guarded("blocking_threads(4)", || {
        let vm = Vm::builder()
            .schedulers(2)
            .blocking_threads(4)
            .crash_reports(false)
            .build()
            .expect("building the VM");
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (running_in, most_in) = (running.clone(), most.clone());
        let done = vm.run(move || {
            let me = self_pid();
            let callers: Vec<Pid> = (0..40u64)
                .map(|i| {
                    let (running, most) = (running_in.clone(), most_in.clone());
                    spawn(move || {
                        let value = blocking(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            running.fetch_sub(1, Ordering::SeqCst);
                            i * 2
                        });
                        send(me, Done(value));
                    })
                })
                .collect();
            let sum: u64 = (0..callers.len()).map(|_| receive::<Done>().0).sum();
            assert_eq!(sum, 2 * 39 * 40 / 2);
            callers.len()
        });
        assert_eq!(done, Ok(40));
        let most = most.load(Ordering::SeqCst);
        println!("blocking_threads(4): at most {most} blocking calls ran at once");
        assert!(
            most <= 4,
            "{most} blocking calls ran at once on a 4-thread pool"
        );
        assert!(most >= 1);
    });
}
