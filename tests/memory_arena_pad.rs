//! After a burst of 100,000 spawn/exit cycles whose messages travel inline, the VM, once idle,
//! is back within 48 KiB of the RSS it had before the burst. glibc trims a thread arena's top
//! only down to a pad of 128 KiB (`M_TOP_PAD`), which a busy arena has touched; each worker's
//! give-back pass now discards the pages of that pad (`trim_own_arena_top` in
//! `starling-scheduler`). Measured in thirteen runs of a probe program doing what this test
//! does: +4 to +24 KiB with the pad discarded, +64 to +140 KiB without (one worker's pad or
//! both). Alone in its test binary: it compares this OS process's `VmRSS`, which another
//! test's allocations would skew.

mod heavy_common;

use heavy_common::{burst_then_idle, guarded, wave, WAVE};

/// What the idle VM may keep above the RSS it had before the burst: the code the burst ran
/// for the first time, and the headers of an arena a worker made for its first allocation.
const SLACK: usize = 48 << 10;

#[test]
fn an_idle_vm_gives_back_its_arenas_top_pads() {
    guarded("arena pads after a burst", || {
        // Each of the wave's processes sends the root one inline message.
        burst_then_idle(|| wave(0), SLACK)
            .check(&format!("a burst of {WAVE} spawn/exit cycles"), SLACK);
    });
}
