//! Stack overflow: a process that recurses without bound ends alone with
//! `ExitReason::StackOverflow` (seen through a monitor and through a trapped link) while the VM
//! and every other process go on; 200 KiB of recursion fits the default stack, and a small
//! `stack_size` bounds the recursion; what an overflowed process leaves (process-locals, queued
//! messages) is dropped on a guarded stack, so even a destructor that overflows is contained.

mod heavy_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use heavy_common::{echo, eventually, guarded, ping, recurse_bytes, stop_echo, Counted};
use starling::{
    process, receive, receive_match, send, spawn_link, spawn_monitor, Down, Exit, ExitReason, Vm,
};

/// A VM that prints no crash report for the overflows these tests cause on purpose.
fn quiet_vm(schedulers: usize) -> Vm {
    quiet_builder(schedulers).build().expect("building the VM")
}

/// [`quiet_vm`] with stacks of `bytes`.
fn quiet_vm_with_stacks(schedulers: usize, bytes: usize) -> Vm {
    quiet_builder(schedulers)
        .stack_size(bytes)
        .build()
        .expect("building the VM")
}

fn quiet_builder(schedulers: usize) -> starling::Builder {
    Vm::builder().schedulers(schedulers).crash_reports(false)
}

/// Recurses without bound (until the guard page stops it).
fn overflow() {
    recurse_bytes(usize::MAX);
    unreachable!("an unbounded recursion returned");
}

/// Spawns `f` under a monitor and returns the reason it ended with.
fn exit_reason_of(f: impl FnOnce() + Send + 'static) -> ExitReason {
    let (pid, monitor) = spawn_monitor(f);
    let down = receive_match::<Down>(|down| down.monitor == monitor);
    assert_eq!(down.pid, pid);
    down.reason
}

#[test]
fn overflow_is_seen_through_a_monitor() {
    guarded("overflow seen through a monitor", || {
        let vm = quiet_vm(2);
        let reason = vm.run(|| exit_reason_of(overflow));
        assert_eq!(reason, Ok(ExitReason::StackOverflow));
    });
}

#[test]
fn overflow_is_seen_through_a_link_by_a_trapping_process() {
    guarded("overflow seen through a trapped link", || {
        let vm = quiet_vm(2);
        let exit = vm.run(|| {
            process::trap_exit(true);
            let pid = spawn_link(overflow);
            let exit = receive::<Exit>();
            assert_eq!(exit.from, pid);
            assert!(!process::alive(pid));
            exit.reason
        });
        assert_eq!(exit, Ok(ExitReason::StackOverflow));
    });
}

#[test]
fn overflows_are_contained_and_the_vm_goes_on() {
    guarded("overflows contained", || {
        let vm = quiet_vm(2);
        let outcome = vm.run(|| {
            let sibling = echo();
            ping(sibling, 0);
            assert_eq!(exit_reason_of(overflow), ExitReason::StackOverflow);
            ping(sibling, 1);
            for i in 0..100 {
                assert_eq!(
                    exit_reason_of(overflow),
                    ExitReason::StackOverflow,
                    "overflow number {i}"
                );
            }
            ping(sibling, 2);
            assert!(process::alive(sibling));
            // A process that overflows while others are alive and busy does not disturb them.
            let (pid, monitor) = spawn_monitor(overflow);
            ping(sibling, 3);
            let down = receive_match::<Down>(|down| down.monitor == monitor);
            assert_eq!((down.pid, down.reason), (pid, ExitReason::StackOverflow));
            stop_echo(sibling);
        });
        assert_eq!(outcome, Ok(()));
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
        assert_eq!(vm.process_count(), 0);
    });
}

#[test]
fn two_hundred_kib_of_recursion_fits_the_default_stack() {
    guarded("200 KiB recursion on the default stack", || {
        let vm = quiet_vm(2);
        let frames = vm.run(|| recurse_bytes(200 * 1024));
        let frames = frames.expect("a 200 KiB recursion must return normally");
        // Each frame holds at least its 512-byte buffer.
        assert!(frames <= 401, "{frames} frames for 200 KiB");
        assert!(
            frames >= 200,
            "{frames} frames for 200 KiB: frames are too big"
        );
        // And again, from a process that is not the root, monitored.
        let reason = vm.run(|| {
            exit_reason_of(|| {
                recurse_bytes(200 * 1024);
            })
        });
        assert_eq!(reason, Ok(ExitReason::Normal));
    });
}

#[test]
fn a_small_stack_size_bounds_the_recursion() {
    guarded("64 KiB stacks", || {
        let vm = quiet_vm_with_stacks(2, 64 * 1024);
        let (deep, shallow) = vm
            .run(|| {
                let deep = exit_reason_of(|| {
                    recurse_bytes(100 * 1024);
                });
                let shallow = exit_reason_of(|| {
                    recurse_bytes(30 * 1024);
                });
                (deep, shallow)
            })
            .expect("the root process failed");
        assert_eq!(deep, ExitReason::StackOverflow, "100 KiB on a 64 KiB stack");
        assert_eq!(shallow, ExitReason::Normal, "30 KiB on a 64 KiB stack");
        assert_eq!(vm.run(|| recurse_bytes(30 * 1024) > 0), Ok(true));
    });
}

/// Writes into a local array of `BYTES`, one frame far larger than the stack.
#[inline(never)]
fn one_huge_frame() -> u8 {
    const BYTES: usize = 4 << 20;
    let mut frame = [0u8; BYTES];
    for (at, byte) in frame.iter_mut().enumerate().step_by(4096) {
        *byte = at as u8;
    }
    std::hint::black_box(&mut frame)[BYTES - 1]
}

/// A single frame larger than the whole stack does not jump over the guard page into other
/// memory: the compiler's stack probes touch it page by page, the first touch below the stack
/// hits the guard, and the process ends alone with `StackOverflow`.
#[test]
fn one_frame_larger_than_the_stack_overflows_into_the_guard() {
    guarded("a frame larger than the stack", || {
        let vm = quiet_vm(2);
        let outcome = vm.run(|| {
            let sibling = echo();
            ping(sibling, 0);
            let reason = exit_reason_of(|| {
                one_huge_frame();
            });
            ping(sibling, 1);
            stop_echo(sibling);
            reason
        });
        assert_eq!(outcome, Ok(ExitReason::StackOverflow));
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
    });
}

/// What the deep process tells its parent at every level of its recursion.
struct Level(u64);

/// Recurses until `level` reaches `until` (never, with `u64::MAX`), calling the VM at every
/// level: sends to `parent` (its mailbox and table entry locks), reads its info, and every few
/// levels spawns (the table's and the run queues' locks) and polls its own mailbox.
fn recurse_calling_the_vm(parent: starling::Pid, level: u64, until: u64) -> u64 {
    if level == until {
        return 0;
    }
    let frame = std::hint::black_box([level as u8; 256]);
    starling::send(parent, Level(level));
    let _ = process::info(parent);
    if level.is_multiple_of(5) {
        starling::spawn(|| {});
        let _ = starling::receive_timeout::<u8>(std::time::Duration::ZERO);
    }
    recurse_calling_the_vm(parent, level + 1, until) + u64::from(frame[0])
}

/// A process that runs out of stack while it recurses through VM calls ends at a VM call, with
/// `StackOverflow`, before that call takes any lock. (Before the check at every VM call's entry,
/// it ended inside its send, holding its parent's mailbox lock, and the VM hung: the parent's
/// `Down` could never be delivered.) Each of 50 such processes is seen to end, its parent keeps
/// receiving, and a sibling keeps answering.
#[test]
fn an_overflow_during_vm_calls_leaves_no_lock_held() {
    guarded("overflows during VM calls", || {
        let vm = quiet_vm_with_stacks(2, 64 * 1024);
        let outcome = vm.run(|| {
            let sibling = echo();
            for round in 0..50 {
                let parent = starling::self_pid();
                let (pid, monitor) = spawn_monitor(move || {
                    recurse_calling_the_vm(parent, 0, u64::MAX);
                });
                let mut levels = 0u64;
                let reason = loop {
                    starling::receive! {
                        Level(level): Level => {
                            assert_eq!(level, levels, "round {round}: levels arrive in order");
                            levels += 1;
                        },
                        down: Down if down.monitor == monitor => break down.reason,
                    }
                };
                assert_eq!(reason, ExitReason::StackOverflow, "round {round}");
                assert!(levels > 10, "round {round}: only {levels} levels");
                assert!(!process::alive(pid));
                ping(sibling, round);
            }
            stop_echo(sibling);
        });
        assert_eq!(outcome, Ok(()));
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
    });
}

/// A value whose destructor recurses without bound.
struct Bottomless;

impl Drop for Bottomless {
    fn drop(&mut self) {
        overflow();
    }
}

starling::process_local! {
    static KEPT: std::cell::RefCell<Option<Counted>> = std::cell::RefCell::new(None);
}

// An overflowed process's frames are gone, and the VM ends it from the worker thread's own
// stack. What it leaves (process-locals, queued messages) is user code to drop: a destructor
// that overflows there would overflow the thread's stack and abort the whole program (this test
// binary). They are dropped in a process of their own instead.
#[test]
fn what_an_overflowed_process_leaves_is_dropped_on_a_guarded_stack() {
    guarded("the leftovers of an overflowed process", || {
        let vm = quiet_vm(2);
        let outcome = vm.run(|| {
            let sibling = echo();
            let drops = Arc::new(AtomicUsize::new(0));
            let counted = drops.clone();
            let reason = exit_reason_of(move || {
                KEPT.with(|kept| *kept.borrow_mut() = Some(Counted(counted.clone())));
                let me = starling::self_pid();
                send(me, Counted(counted));
                send(me, Bottomless);
                overflow();
            });
            assert_eq!(reason, ExitReason::StackOverflow);
            // The process-local and the message queued before the bottomless one are dropped
            // (then the bottomless destructor overflows the process dropping them).
            eventually("the overflowed process's values are dropped", || {
                drops.load(Ordering::SeqCst) >= 2
            });
            ping(sibling, 0);
            stop_echo(sibling);
        });
        assert_eq!(outcome, Ok(()));
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
    });
}
