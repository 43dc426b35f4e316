//! Ten million spawn/exit cycles end with the resident set the first wave left (the VM gives
//! memory back when idle). Alone in its test binary: it compares this OS process's `VmRSS`
//! before and after, which another test's allocations in the same process would skew.

mod heavy_common;

use std::time::Duration;

use heavy_common::{guarded, mib, rss_bytes, wait_until_no_processes};
use starling::{process, receive, self_pid, send, spawn, Vm};

const WAVE: u64 = 100_000;
const WAVES: u64 = 100;

/// Sleeps about 2.5 s in 100 ms steps, so the workers go idle repeatedly and their
/// once-a-second memory return runs.
fn idle() {
    for _ in 0..25 {
        process::sleep(Duration::from_millis(100));
    }
}

/// One wave: `WAVE` processes spawned, each replies; returns when all replied.
fn wave(number: u64) {
    let root = self_pid();
    for i in 0..WAVE {
        spawn(move || send(root, number * WAVE + i));
    }
    let sum = (0..WAVE).map(|_| receive::<u64>()).sum::<u64>();
    assert_eq!(sum, number * WAVE * WAVE + WAVE * (WAVE - 1) / 2);
}

/// Runs waves `range` on `vm`, each with a root process of its own (a root's mailbox keeps the
/// capacity of its largest burst of replies while it lives: live memory, not a leak), then
/// lets the VM idle ~2.5 s and returns the RSS.
fn waves_then_idle(vm: &Vm, range: std::ops::Range<u64>) -> usize {
    for number in range {
        vm.run(move || wave(number))
            .unwrap_or_else(|reason| panic!("wave {number} failed: {reason:?}"));
    }
    vm.run(idle).expect("the idle root failed");
    rss_bytes()
}

// (b) ten million spawn/exit cycles in waves of 100,000 end within +25 % of the RSS after the
// first wave.
#[test]
fn ten_million_spawn_exit_cycles_stay_near_the_first_wave() {
    guarded("ten million spawn/exit cycles", || {
        let vm = Vm::new();
        let warm = waves_then_idle(&vm, 0..1);
        let end = waves_then_idle(&vm, 1..WAVES);
        let growth = (end as f64 / warm as f64 - 1.0) * 100.0;
        println!(
            "memory: RSS after the first wave {:.1} MiB, after {} spawn/exit cycles {:.1} MiB \
             ({growth:+.1} %)",
            mib(warm),
            WAVE * WAVES,
            mib(end)
        );
        assert!(
            end as f64 <= warm as f64 * 1.25,
            "RSS grew from {:.1} MiB to {:.1} MiB over {} spawn/exit cycles (guard +25 %)",
            mib(warm),
            mib(end),
            WAVE * WAVES
        );
        wait_until_no_processes(&vm);
    });
}
