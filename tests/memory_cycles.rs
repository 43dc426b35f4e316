//! Ten million spawn/exit cycles end with the resident set the first wave left (the VM gives
//! memory back when idle). Alone in its test binary: it compares this OS process's `VmRSS`
//! before and after, which another test's allocations in the same process would skew.

mod heavy_common;

use heavy_common::{guarded, mib, wait_until_no_processes, waves_then_idle, WAVE, WAVES};
use starling::Vm;

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
