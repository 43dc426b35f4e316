//! Dropping a VM gives its memory back to the OS at once, even the memory of processes that were
//! still parked: the control blocks and saved frames live in a process-wide block store, and
//! without a final give-back when the VM's workers are gone, a program that dropped a VM with a
//! million parked processes kept ~690 MiB resident for good. Alone in its test binary: it
//! compares this OS process's `VmRSS` before and after, which another test's allocations would
//! skew.

mod heavy_common;

use heavy_common::{guarded, mib, parked_chain, rss_bytes};
use starling::Vm;

/// Processes still parked when the VM is dropped: ~140 MiB of control blocks, saved frames and
/// stack pages (about 700 bytes each, `memory.rs`).
const PARKED: usize = 200_000;

/// What may stay above the RSS from before the VM: code pages run for the first time and the
/// allocator's bookkeeping. Measured: ~1 to 3 MiB; before the final give-back, ~140 MiB.
const SLACK: usize = 16 << 20;

#[test]
fn a_dropped_vm_gives_back_the_memory_of_its_parked_processes() {
    guarded("dropping a VM with parked processes", || {
        let before = rss_bytes();
        let vm = Vm::new();
        vm.run(|| {
            // Left parked: the VM's drop kills them.
            parked_chain(PARKED);
        })
        .expect("the root process failed");
        let alive = rss_bytes();
        drop(vm);
        let after = rss_bytes();
        println!(
            "memory: {:.1} MiB before the VM, {:.1} MiB with {PARKED} parked processes, \
             {:.1} MiB right after the VM was dropped",
            mib(before),
            mib(alive),
            mib(after)
        );
        assert!(
            alive > before + PARKED * 300,
            "the parked processes took no memory ({:.1} MiB before, {:.1} MiB with them): the \
             measurement is broken",
            mib(before),
            mib(alive)
        );
        assert!(
            after <= before + SLACK,
            "the dropped VM left {:.1} MiB resident above the {:.1} MiB from before it",
            mib(after.saturating_sub(before)),
            mib(before)
        );
    });
}
