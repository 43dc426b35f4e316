//! Bench `relations`: one process monitors (or links to, trapping exits) 10,000 processes and
//! releases them in the reverse of their spawn order; the time is per process, from the first
//! release to the last `Down` (or `Exit`). With links and monitors in vectors this was O(N²):
//! each ending process was found by a scan of its watcher's vector (100,000 monitored
//! processes released in reverse took 5.4 s); with hash sets and maps it is O(1) per process.
//!
//! These benches are intended to be used as a form of regression testing and not as a general
//! purpose benchmark.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use starling::{process, receive, spawn_link, spawn_monitor, Down, Exit, Pid, Vm};

/// Processes watched at once.
const WATCHED: usize = 10_000;

/// Spawns `WATCHED` processes with `spawn` (each waits for `()`), releases them in reverse
/// order and waits for each one's notice with `wait`; returns the time from the first release
/// to the last notice.
fn reverse_release(spawn: fn() -> Pid, wait: fn()) -> Duration {
    let pids: Vec<Pid> = (0..WATCHED).map(|_| spawn()).collect();
    let started = Instant::now();
    for pid in pids.iter().rev() {
        starling::send(*pid, ());
    }
    for _ in 0..WATCHED {
        wait();
    }
    started.elapsed()
}

fn relations(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("relations");
    group.throughput(Throughput::Elements(WATCHED as u64));
    group.sample_size(10);
    let vm = Vm::new();

    group.bench_function("monitors_released_in_reverse", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                (0..iterations)
                    .map(|_| {
                        reverse_release(
                            || spawn_monitor(receive::<()>).0,
                            || drop(receive::<Down>()),
                        )
                    })
                    .sum()
            })
            .expect("the bench's root failed")
        });
    });

    group.bench_function("links_released_in_reverse", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                process::trap_exit(true);
                (0..iterations)
                    .map(|_| {
                        reverse_release(|| spawn_link(receive::<()>), || drop(receive::<Exit>()))
                    })
                    .sum()
            })
            .expect("the bench's root failed")
        });
    });
    group.finish();
}

criterion_group!(benches, relations);
criterion_main!(benches);
