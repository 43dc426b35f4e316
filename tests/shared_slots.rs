//! Stack slots shared by many processes: once a VM has more live processes than stack slots,
//! processes share slots, and a process's frames are copied out when another process needs its
//! slot and copied back before it runs again. These tests make that happen constantly, on tiny
//! pools (`max_stack_slots`), with frames from a few hundred bytes to ~100 KiB deep: every frame
//! must come back exactly as it was, and a stack overflow on a shared slot must end only the
//! process that overflowed.

#[macro_use]
#[path = "hang_guard/mod.rs"]
mod hang_guard;

use std::time::Duration;

use hang_guard::with_timeout;
use starling::{receive, self_pid, send, spawn, spawn_monitor, Down, ExitReason, Pid, Vm};

/// Generous: the tests take well under a second.
const LIMIT: Duration = Duration::from_secs(120);

/// A process reached the bottom of its recursion and is about to park there.
struct Parked;

/// A word of the frame at `level` of the process seeded `seed`.
fn word(seed: u64, level: u32, index: usize) -> u64 {
    (seed << 32 | u64::from(level) << 8 | index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Recurses `levels` deep with a 256-byte array of known words in every frame, tells `root`
/// it is parked, parks in `receive` at the bottom, then checks every frame's words on the way
/// back up. Returns whether all were intact.
#[inline(never)]
fn deep_then_park(root: Pid, seed: u64, level: u32, levels: u32) -> bool {
    let mut frame = [0u64; 32];
    for (index, slot) in frame.iter_mut().enumerate() {
        *slot = word(seed, level, index);
    }
    // Through `black_box` the array lives in this frame, in memory, across the call below.
    let frame = std::hint::black_box(frame);
    let below = if level + 1 < levels {
        deep_then_park(root, seed, level + 1, levels)
    } else {
        send(root, Parked);
        let () = receive::<()>();
        true
    };
    let frame = std::hint::black_box(frame);
    below
        && frame
            .iter()
            .enumerate()
            .all(|(index, &value)| value == word(seed, level, index))
}

/// Inside a process: spawns `count` processes that recurse 1 to 120 levels (frames of ~850
/// bytes each in a release build, so up to ~100 KiB of the 256 KiB default stack) and park at
/// the bottom; once all are parked, returns their pids.
fn spawn_parked(count: u64) -> Vec<Pid> {
    let root = self_pid();
    let pids: Vec<Pid> = (0..count)
        .map(|seed| {
            let levels = 1 + (seed * 37 % 120) as u32;
            spawn(move || {
                let intact = deep_then_park(root, seed, 0, levels);
                send(root, (seed, intact));
            })
        })
        .collect();
    for _ in 0..count {
        let Parked = receive::<Parked>();
    }
    pids
}

/// Releases `pids` in a scrambled order and returns the seeds of the processes whose frames
/// did not come back intact, in order. `pids.len()` must be prime to 7.
fn release_and_check(pids: &[Pid]) -> Vec<u64> {
    let count = pids.len();
    assert_ne!(
        count % 7,
        0,
        "release_and_check: {count} processes is a multiple of 7"
    );
    for step in 0..count {
        send(pids[step * 7 % count], ());
    }
    let mut broken: Vec<u64> = (0..count)
        .filter_map(|_| {
            let (seed, intact) = receive::<(u64, bool)>();
            (!intact).then_some(seed)
        })
        .collect();
    broken.sort_unstable();
    broken
}

#[test]
fn frames_of_any_depth_survive_sharing_a_pool_of_three_slots() {
    with_timeout(LIMIT, "deep frames on three slots", || {
        let vm = Vm::builder()
            .schedulers(2)
            .max_stack_slots(3)
            .build()
            .expect("building the VM");
        // 300 processes: a count prime to 7, so the scrambled release reaches them all.
        let broken = vm
            .run(|| release_and_check(&spawn_parked(300)))
            .expect("the root process failed");
        assert!(
            broken.is_empty(),
            "frames corrupted in processes {broken:?}"
        );
        assert_eq!(vm.process_count(), 0);
    });
}

#[test]
fn an_overflow_on_the_only_slot_leaves_the_processes_sharing_it_intact() {
    with_timeout(LIMIT, "an overflow on a shared slot", || {
        let vm = Vm::builder()
            .schedulers(2)
            .max_stack_slots(1)
            .crash_reports(false)
            .build()
            .expect("building the VM");
        let (reason, broken) = vm
            .run(|| {
                let pids = spawn_parked(41);
                // Every process, the root included, runs on the one slot.
                let (_, monitor) = spawn_monitor(|| {
                    deep_then_park(self_pid(), u64::MAX, 0, u32::MAX);
                });
                let down = starling::receive_match::<Down>(|down| down.monitor == monitor);
                (down.reason, release_and_check(&pids))
            })
            .expect("the root process failed");
        assert_eq!(reason, ExitReason::StackOverflow);
        assert!(
            broken.is_empty(),
            "frames corrupted in processes {broken:?}"
        );
        assert_eq!(vm.run(|| 6 * 7), Ok(42), "the VM goes on");
    });
}
