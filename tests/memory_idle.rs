//! A VM that goes quiet gives the memory of its last processes back on its own: nothing has
//! to call into it, wake it or keep a timer in it. Alone in its test binary: it compares this
//! OS process's `VmRSS` over time, which another test's allocations would skew.

mod heavy_common;

use std::time::Duration;

use heavy_common::{guarded, mib, parked_chain, rss_bytes, wait_for_rss_at_most, Go};
use starling::{receive, send, Vm};

/// Processes parked at once in the burst: ~100 MiB of control blocks, saved frames and stack
/// pages at the peak (about a kilobyte each, `memory.rs`).
const PARKED: usize = 100_000;

/// What the quiet VM may keep above the RSS it had before the burst. Measured: ~6 MiB, mostly
/// the process table's segments, which keep room for the most processes ever alive at once
/// (live memory, reused by later spawns), and the allocator's arenas.
const SLACK: usize = 16 << 20;

/// How long the quiet VM gets: the give-back is rate-limited to once a second.
const WITHIN: Duration = Duration::from_secs(20);

#[test]
fn a_quiet_vm_gives_memory_back_without_being_woken() {
    guarded("a quiet VM gives memory back", || {
        let vm = Vm::new();
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
        std::thread::sleep(Duration::from_millis(100));
        let before = rss_bytes();
        let peak = vm
            .run(|| {
                let last = parked_chain(PARKED);
                let peak = rss_bytes();
                send(last, Go);
                let Go = receive::<Go>();
                peak
            })
            .expect("the root process failed");
        assert!(
            peak >= before + 4 * SLACK,
            "the burst did not use memory: {:.1} MiB before, {:.1} MiB at its peak",
            mib(before),
            mib(peak)
        );
        // From here on nothing calls the VM: it must shrink on its own.
        let (now, waited) = wait_for_rss_at_most(before + SLACK, WITHIN);
        println!(
            "memory: {:.1} MiB before, {:.1} MiB with {PARKED} parked processes, {:.1} MiB \
             {:.1} s after the VM went quiet",
            mib(before),
            mib(peak),
            mib(now),
            waited.as_secs_f64()
        );
        assert!(
            now <= before + SLACK,
            "the quiet VM still holds {:.1} MiB after {WITHIN:?} ({:.1} MiB before the burst, \
             {:.1} MiB at its peak)",
            mib(now),
            mib(before),
            mib(peak)
        );
        assert_eq!(vm.process_count(), 0);
    });
}
