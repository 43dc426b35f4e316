//! Reductions (API.md guarantee 5): a process that loops calling cheap VM functions cannot hold
//! its scheduler; the others still run and answer.

#[macro_use]
mod common;

use std::time::Duration;

use common::{receive_or_fail, run, with_vm_timeout};
use starling::{process, receive_timeout, self_pid, send, spawn, Pid, Vm};

/// How long these tests may take before they count as starved (a hang guard, not a speed
/// claim: the work itself takes milliseconds).
const STARVATION_GUARD: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Stop;

#[derive(Debug)]
struct Ping(Pid);

#[derive(Debug)]
struct Pong;

/// Which cheap VM call the busy loop makes.
#[derive(Clone, Copy)]
enum Busy {
    SelfPid,
    SendToDeadPid(Pid),
    Alive(Pid),
}

/// Loops calling one cheap VM function; every 1,000 calls it polls for `Stop` with a zero
/// timeout. Reports its iteration count to `report` when stopped.
fn busy_loop(busy: Busy, report: Pid) {
    let mut iterations = 0u64;
    loop {
        for _ in 0..1_000 {
            match busy {
                Busy::SelfPid => {
                    std::hint::black_box(self_pid());
                }
                Busy::SendToDeadPid(dead) => send(dead, iterations),
                Busy::Alive(pid) => {
                    std::hint::black_box(process::alive(pid));
                }
            }
            iterations += 1;
        }
        if receive_timeout::<Stop>(Duration::ZERO).is_some() {
            break;
        }
    }
    send(report, iterations);
}

fn start_echo() -> Pid {
    spawn(|| loop {
        let Ping(from) = starling::receive::<Ping>();
        send(from, Pong);
    })
}

fn dead_pid() -> Pid {
    let pid = spawn(|| {});
    while process::alive(pid) {
        process::yield_now();
    }
    pid
}

/// On `vm`, starts `busy_processes` busy loops of kind `busy` and then pings an echo process
/// 100 times; all of it must get through while the busy loops run.
fn others_still_run(vm: &Vm, busy_processes: usize, make_busy: fn() -> Busy) {
    let iterations = run(vm, move || {
        let root = self_pid();
        let busy = make_busy();
        let echo = start_echo();
        let loops: Vec<Pid> = (0..busy_processes)
            .map(|_| spawn(move || busy_loop(busy, root)))
            .collect();
        // Give the busy loops the scheduler(s) first.
        process::yield_now();
        for _ in 0..100 {
            send(echo, Ping(root));
            receive_or_fail::<Pong>("a pong while busy loops run");
        }
        for pid in &loops {
            send(*pid, Stop);
        }
        (0..busy_processes)
            .map(|_| receive_or_fail::<u64>("a busy loop's report"))
            .collect::<Vec<_>>()
    });
    for n in iterations {
        assert!(n >= 1_000, "a busy loop reported only {n} iterations");
    }
}

#[test]
fn self_pid_loop_cannot_hold_the_only_scheduler() {
    with_vm_timeout(1, STARVATION_GUARD, |vm| {
        others_still_run(vm, 1, || Busy::SelfPid)
    });
}

#[test]
fn send_to_dead_pid_loop_cannot_hold_the_only_scheduler() {
    with_vm_timeout(1, STARVATION_GUARD, |vm| {
        others_still_run(vm, 1, || Busy::SendToDeadPid(dead_pid()))
    });
}

#[test]
fn alive_loop_cannot_hold_the_only_scheduler() {
    with_vm_timeout(1, STARVATION_GUARD, |vm| {
        others_still_run(vm, 1, || Busy::Alive(self_pid()))
    });
}

#[test]
fn several_busy_loops_cannot_hold_two_schedulers() {
    with_vm_timeout(2, STARVATION_GUARD, |vm| {
        others_still_run(vm, 4, || Busy::SelfPid)
    });
}

#[test]
fn busy_loops_cannot_hold_four_schedulers() {
    with_vm_timeout(4, STARVATION_GUARD, |vm| {
        others_still_run(vm, 8, || Busy::SelfPid)
    });
}

on_schedulers! {
    // A busy loop and a chain of processes that each wait for the previous one: every link of
    // the chain needs the scheduler in turn.
    fn a_chain_of_waiters_completes_beside_a_busy_loop(vm) {
        run(vm, || {
            let root = self_pid();
            let busy = spawn(move || busy_loop(Busy::SelfPid, root));
            let mut next = root;
            for _ in 0..200 {
                let to = next;
                next = spawn(move || {
                    let n: u32 = starling::receive();
                    send(to, n + 1);
                });
            }
            send(next, 0u32);
            let n: u32 = receive_or_fail("the end of the chain");
            assert_eq!(n, 200);
            send(busy, Stop);
            receive_or_fail::<u64>("the busy loop's report");
        });
    }
}

// Sleepers wake on time-ish (never early) even while a busy loop runs on the only scheduler.
#[test]
fn timers_fire_beside_a_busy_loop() {
    with_vm_timeout(1, STARVATION_GUARD, |vm| {
        run(vm, || {
            let root = self_pid();
            let busy = spawn(move || busy_loop(Busy::SelfPid, root));
            let started = std::time::Instant::now();
            process::sleep(Duration::from_millis(20));
            assert!(started.elapsed() >= Duration::from_millis(20));
            assert_eq!(
                receive_timeout::<Pong>(Duration::from_millis(20)).map(|_| ()),
                None
            );
            send(busy, Stop);
            receive_or_fail::<u64>("the busy loop's report");
        });
    });
}
