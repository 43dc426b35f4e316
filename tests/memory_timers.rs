//! After 200,000 processes waited at once in `receive_timeout` and were all released by a
//! message, the idle VM is back within 1 MiB of the RSS it had before them.
//!
//! Each timed wait puts a timer in its worker's wheel, and the message that ends the wait
//! cancels it; but the wheel's slab kept every cell of the peak (64 bytes each) for the rest of
//! the VM's life: a million such waits left ~61 MiB in a 3 MiB program for good (a probe,
//! 2026-11-22). The idle pass that gives memory back now cuts each wheel's slab back to its
//! highest live timer (`TimerWheel::shrink`). Here the peak is made certain: every process waits
//! until the root has heard from all of them. Measured with this test: see `SLACK`. Alone in its
//! test binary: it compares this OS process's `VmRSS`, which another test's allocations would
//! skew.

mod heavy_common;

use std::time::Duration;

use heavy_common::{burst_then_idle, guarded};
use starling::{receive, receive_timeout, self_pid, send, spawn, Pid};

/// Processes waiting at once.
const PROCESSES: usize = 200_000;

/// What the idle VM may keep above the RSS it had before the burst. Measured: +196 to +296 KiB
/// in three runs; without the wheel's shrink, +12,660 KiB (the slabs alone kept 200,000 cells
/// of 64 bytes).
const SLACK: usize = 1 << 20;

/// The waits' timeout: far beyond the test, so every timer is cancelled, none fires.
const TIMEOUT: Duration = Duration::from_secs(600);

/// A waiting process tells the root it is about to wait.
struct Waiting;
/// The root ends a wait.
struct Release;
/// A released process tells the root its wait ended with the message.
struct Released(bool);

#[test]
fn an_idle_vm_gives_back_the_timer_cells_of_a_burst_of_timed_waits() {
    guarded("memory after a burst of timed waits", || {
        let burst = || {
            let root = self_pid();
            let pids: Vec<Pid> = (0..PROCESSES)
                .map(|_| {
                    spawn(move || {
                        send(root, Waiting);
                        let released = receive_timeout::<Release>(TIMEOUT).is_some();
                        send(root, Released(released));
                    })
                })
                .collect();
            for _ in 0..PROCESSES {
                let Waiting = receive::<Waiting>();
            }
            for pid in pids {
                send(pid, Release);
            }
            let released = (0..PROCESSES).filter(|_| receive::<Released>().0).count();
            assert_eq!(released, PROCESSES, "a wait ended without its message");
        };
        burst_then_idle(burst, SLACK).check(
            &format!("{PROCESSES} processes in receive_timeout at once"),
            SLACK,
        );
    });
}
