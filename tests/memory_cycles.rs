//! Ten million spawn/exit cycles end within 5 % of the RSS they started with (an empty VM that
//! had idled), issue 4's target, and leak nothing per cycle after a warm-up. Alone in its test
//! binary: it compares this OS process's `VmRSS` before and after, which another test's
//! allocations in the same process would skew.
//!
//! Measured since the idle workers discard their glibc arenas' top pads: +1.5 to +2.0 % on the
//! empty VM (+0.6 to +1.0 % on the first wave) in seven quiet runs; +2.4 to +3.8 % in six runs
//! where the host was busy (four with both cores loaded by other programs) and the watchdog saw
//! 14 to 40 long schedules and started spare threads. Before, +2.2 to +3.9 % on the first
//! wave, whose own reading already held one arena pad (128 KiB) per worker more than the empty
//! VM. What is left varies by a
//! hundred KiB or so from run to run (measured with `/proc/self/smaps` diffs and a malloc
//! tracer):
//! - the code the waves run for the first time (file pages of the test binary);
//! - glibc's per-thread caches and free chunks an arena cannot return because a live chunk
//!   shares their page;
//! - when a later wave has more processes alive at once than the first, the process table's
//!   next segment is allocated (128 KiB for indices 3,072 to 7,167): live memory that stays;
//! - a spare thread the watchdog started brings a glibc arena of its own (in a virtual
//!   machine, time the hypervisor takes from a CPU can still look like a long computation).
//!
//! That last one is why the VM here reports long schedules only from 500 ms. In one slow phase
//! of this host, with the default 5 ms, the watchdog saw 140 to 194 long schedules over the
//! run, and the end read +5.2 to +9.2 % on the empty VM (three runs, the code before the
//! block-store change as much as after it). With 500 ms: +1.3 to +1.5 % and no long schedule
//! (three later runs). The watchdog and its spare threads have their own tests.
//!
//! A leak of 0.02 bytes per cycle would cross the 5 % (~170 KiB of a ~3.4 MiB process).

mod heavy_common;

use heavy_common::{guarded, mib, wait_until_no_processes, waves_then_idle, WAVE, WAVES};
use std::time::Duration;

use starling::Vm;

/// What 10 M cycles may add to the resident set of the empty VM, in percent: issue 4's target.
const TARGET_PERCENT: f64 = 5.0;

/// Most bytes of RSS growth per spawn/exit cycle after warm-up. A leaked allocation per
/// process is at least 16 bytes; the allocator's per-thread arenas add a few MiB over ten
/// million cycles (measured ~0.5 bytes per cycle; a spare thread's new arena adds ~0.5).
const LEAK_GUARD_BYTES_PER_CYCLE: f64 = 4.0;

/// Waves of the run that count as warm-up for the per-cycle figure.
const WARM_UP_WAVES: u64 = 10;

// (b) ten million spawn/exit cycles in waves of 100,000 end within 5 % of the RSS of the VM
// before them, idle; and (b') after a warm-up of ten waves, the RSS grows by less than four
// bytes per cycle, so no spawn/exit cycle leaks memory. One run measures both. (The second was
// a test of its own in `memory.rs`, with ten million cycles more, and in a binary shared with
// the million-parked-processes test, whose freed memory the waves then touched again: it
// measured +1.6 bytes per cycle in about a third of its runs, and once +4.0, over its guard.)
#[test]
fn ten_million_spawn_exit_cycles_end_near_the_rss_they_started_with() {
    guarded("ten million spawn/exit cycles", || {
        // Long schedules are reported from 500 ms (default 5 ms): see the module docs.
        let vm = Vm::builder()
            .long_schedule(Duration::from_millis(500))
            .build()
            .expect("a VM with the default schedulers builds");
        // The VM, started and idle: the RSS the cycles start with.
        let start = waves_then_idle(&vm, 0..0);
        let first = waves_then_idle(&vm, 0..1);
        let warm = waves_then_idle(&vm, 1..WARM_UP_WAVES);
        let end = waves_then_idle(&vm, WARM_UP_WAVES..WAVES);
        let growth = (end as f64 / start as f64 - 1.0) * 100.0;
        let since_first = (end as f64 / first as f64 - 1.0) * 100.0;
        let cycles_after_warm_up = WAVE * (WAVES - WARM_UP_WAVES);
        let per_cycle = (end as f64 - warm as f64) / cycles_after_warm_up as f64;
        println!(
            "memory: RSS of the idle empty VM {:.2} MiB, after the first wave {:.2} MiB, after \
             {} spawn/exit cycles {:.2} MiB ({growth:+.1} % on the empty VM, {since_first:+.1} % \
             on the first wave); after {WARM_UP_WAVES} waves (warm-up) {:.2} MiB, \
             {per_cycle:+.3} bytes per cycle since; {} long schedules",
            mib(start),
            mib(first),
            WAVE * WAVES,
            mib(end),
            mib(warm),
            vm.long_schedules().len()
        );
        assert!(
            growth <= TARGET_PERCENT,
            "RSS grew from {:.2} MiB (the idle empty VM) to {:.2} MiB over {} spawn/exit cycles: \
             {growth:+.1} % (target {TARGET_PERCENT} %)",
            mib(start),
            mib(end),
            WAVE * WAVES
        );
        assert!(
            per_cycle <= LEAK_GUARD_BYTES_PER_CYCLE,
            "RSS grew from {:.1} MiB to {:.1} MiB over {cycles_after_warm_up} spawn/exit cycles: \
             {per_cycle:.2} bytes per cycle (guard {LEAK_GUARD_BYTES_PER_CYCLE})",
            mib(warm),
            mib(end)
        );
        wait_until_no_processes(&vm);
    });
}
