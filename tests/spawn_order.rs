//! Where a new process runs: newest first, on the scheduler that spawned it, so a process tree
//! unfolds depth-first and keeps few processes alive; yet a process that spawns in a loop runs
//! again only after what it spawned, and an endless chain of spawns cannot starve a process
//! waiting in the run queue.

mod hang_guard;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hang_guard::with_timeout;
use starling::*;

/// Processes created and not yet ended, and the most at any time.
#[derive(Default)]
struct Live {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Live {
    fn created(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
    }

    fn ended(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A skynet node: a leaf sends its number; an inner node spawns ten children and sends the sum.
fn node(live: Arc<Live>, parent: Pid, first: u64, count: u64) {
    if count == 1 {
        send(parent, first);
    } else {
        let me = self_pid();
        let chunk = count / 10;
        for child in 0..10 {
            let live_child = live.clone();
            live.created();
            spawn(move || node(live_child, me, first + child * chunk, chunk));
        }
        let sum: u64 = (0..10).map(|_| receive::<u64>()).sum();
        send(parent, sum);
    }
    live.ended();
}

/// Skynet with 100,000 leaves on one scheduler: breadth-first it would hold ~100,000 processes
/// at once (all leaves spawned before the first runs); depth-first it holds a few per level.
#[test]
fn a_process_tree_unfolds_depth_first() {
    let most = with_timeout(Duration::from_secs(60), "skynet 100 K", || {
        let vm = Vm::builder().schedulers(1).build().unwrap();
        let live = Arc::new(Live::default());
        let tree = live.clone();
        let sum = vm
            .run(move || {
                let root = self_pid();
                tree.created();
                spawn(move || node(tree, root, 0, 100_000));
                receive::<u64>()
            })
            .unwrap();
        assert_eq!(sum, (0..100_000u64).sum::<u64>());
        live.most.load(Ordering::Relaxed)
    });
    // The randomized test mode (STARLING_RANDOMIZE_SCHEDULING) cuts slices short and takes the
    // run queue first at random on purpose: there only the sum is checked.
    if std::env::var_os("STARLING_RANDOMIZE_SCHEDULING").is_none() {
        assert!(
            most <= 1_000,
            "{most} processes alive at once: the tree did not unfold depth-first"
        );
    }
}

/// A process that spawns in a loop runs again only after the processes it spawned before its
/// slice ended: it cannot pile up new processes faster than they run. Its slice ends after at
/// most 63 spawns (the scheduler keeps its deque of new processes within its first buffer),
/// so 200,000 spawns of processes that end at once never have more than about two batches
/// alive (before the bound, a slice's worth of 4,000 spawns at one reduction each).
#[test]
fn a_spawner_runs_again_only_after_its_children() {
    let most = with_timeout(Duration::from_secs(60), "200 K spawns", || {
        let vm = Vm::builder().schedulers(1).build().unwrap();
        let live = Arc::new(Live::default());
        let children = live.clone();
        vm.run(move || {
            for _ in 0..200_000 {
                let child = children.clone();
                children.created();
                spawn(move || child.ended());
            }
        })
        .unwrap();
        live.most.load(Ordering::Relaxed)
    });
    assert!(
        most <= 2 * 64,
        "{most} processes alive at once: the spawner outran its children"
    );
}

/// On one scheduler, a chain in which every process spawns the next and ends keeps a new
/// process ready at every moment; a process that yields 1,000 times must still get its turns.
#[test]
fn an_endless_chain_of_spawns_does_not_starve_a_yielding_process() {
    with_timeout(
        Duration::from_secs(60),
        "yields beside a spawn chain",
        || {
            let vm = Vm::builder().schedulers(1).build().unwrap();
            vm.run(|| {
                let stop = Arc::new(AtomicBool::new(false));
                fn link(stop: Arc<AtomicBool>) {
                    if !stop.load(Ordering::Relaxed) {
                        spawn(move || link(stop));
                    }
                }
                let chain = stop.clone();
                spawn(move || link(chain));
                for _ in 0..1_000 {
                    process::yield_now();
                }
                stop.store(true, Ordering::Relaxed);
            })
            .unwrap();
        },
    );
}
