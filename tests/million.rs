//! A million processes on a stock kernel with a default `Vm::new()`: a million alive at once
//! (parked in `receive`, then released), a million short-lived spawns (W1), and skynet's
//! 10-ary tree with a million leaves; the process count returns to 1, then 0.

mod heavy_common;

use std::sync::Arc;
use std::time::Duration;

use heavy_common::{guarded, wait_until_no_processes};
use starling::{process, receive, self_pid, send, spawn, Pid, Status, Vm};

const MILLION: u64 = 1_000_000;

/// Releases a parked process.
#[derive(Debug)]
struct Go;

/// A released process's answer.
#[derive(Debug)]
struct Reply(u64);

/// Sleeps in 1 ms steps (inside a process) until `done()`; the test's hang guard bounds it.
fn poll_until(mut done: impl FnMut() -> bool) {
    while !done() {
        process::sleep(Duration::from_millis(1));
    }
}

// (a) + (d): a million processes alive at once, each blocked in `receive`; then all released,
// each replies; the count goes 1,000,001 -> 1 -> 0.
#[test]
fn a_million_processes_alive_at_once() {
    guarded("a million parked processes", || {
        let vm = Arc::new(Vm::new());
        let inner = vm.clone();
        let replies = vm.run(move || {
            let root = self_pid();
            let mut pids: Vec<Pid> = Vec::with_capacity(MILLION as usize);
            for i in 0..MILLION {
                pids.push(spawn(move || {
                    let Go = receive::<Go>();
                    send(root, Reply(i));
                }));
            }
            let last = *pids.last().unwrap();
            poll_until(|| process::info(last).is_some_and(|info| info.status == Status::Waiting));
            assert_eq!(
                inner.process_count(),
                MILLION as usize + 1,
                "a million parked processes plus the root"
            );
            assert_eq!(
                process::info(last).map(|info| info.status),
                Some(Status::Waiting),
                "the last spawned process is parked in receive"
            );
            for pid in pids.drain(..) {
                send(pid, Go);
            }
            let mut count = 0u64;
            let mut sum = 0u64;
            for _ in 0..MILLION {
                let Reply(i) = receive::<Reply>();
                count += 1;
                sum += i;
            }
            assert_eq!(
                sum,
                MILLION * (MILLION - 1) / 2,
                "every process replied once"
            );
            // Children end right after replying; wait until only the root is left.
            poll_until(|| inner.process_count() == 1);
            assert_eq!(process::list(), vec![self_pid()], "only the root is left");
            count
        });
        assert_eq!(replies, Ok(MILLION));
        assert_eq!(
            vm.process_count(),
            0,
            "no process is left once run returned"
        );
        assert!(vm.processes().is_empty());
    });
}

// (b) W1: a million short-lived spawns, each sends i*i to the root.
#[test]
fn w1_a_million_short_lived_spawns() {
    guarded("W1: a million short-lived spawns", || {
        let vm = Vm::new();
        let sum = vm.run(|| {
            let root = self_pid();
            for i in 0..MILLION {
                spawn(move || send(root, i * i));
            }
            (0..MILLION).fold(0u128, |sum, _| sum + u128::from(receive::<u64>()))
        });
        let n = u128::from(MILLION);
        assert_eq!(sum, Ok((n - 1) * n * (2 * n - 1) / 6));
        wait_until_no_processes(&vm);
    });
}

/// Skynet: a node of `size` leaves numbered from `num` sends the sum of its leaves' numbers to
/// `parent`; an inner node spawns 10 children.
fn skynet(parent: Pid, num: u64, size: u64) {
    if size == 1 {
        send(parent, num);
        return;
    }
    let me = self_pid();
    let part = size / 10;
    for i in 0..10 {
        spawn(move || skynet(me, num + i * part, part));
    }
    let sum = (0..10).map(|_| receive::<u64>()).sum::<u64>();
    send(parent, sum);
}

// (c) skynet: a 10-ary tree of processes with a million leaves.
#[test]
fn skynet_a_million_leaves() {
    guarded("skynet", || {
        let vm = Vm::new();
        let sum = vm.run(|| {
            let root = self_pid();
            spawn(move || skynet(root, 0, MILLION));
            receive::<u64>()
        });
        assert_eq!(sum, Ok(499_999_500_000));
        wait_until_no_processes(&vm);
    });
}
