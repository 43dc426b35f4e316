//! Bench `spawn_exit`: spawning a process that exits at once, from inside a process, on a warm
//! VM and (`spawn_cold`) as the first spawns of a fresh VM.
//!
//! These benches are intended to be used as a form of regression testing and not as a general
//! purpose benchmark.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use starling::{receive, self_pid, send, spawn, Vm};

/// Children spawned before the root collects their exit notes: bounds the processes alive at
/// once, so that millions of iterations never approach `max_processes` (value guessed: large
/// enough that collecting costs little per spawn, small enough to stay in cache).
const BATCH: u64 = 1_024;

/// Spawns measured per iteration of `spawn_cold`: a fresh VM's first thousand spawns.
const COLD_SPAWNS: u64 = 1_000;

/// A child's note to the root that it ran; one word, so the send adds only a few nanoseconds.
struct Exited;

/// Spawns `count` children that each send [`Exited`] and end, collecting the notes in batches.
fn spawn_and_collect(count: u64) {
    let root = self_pid();
    let mut outstanding = 0;
    for _ in 0..count {
        spawn(move || send(root, Exited));
        outstanding += 1;
        if outstanding == BATCH {
            for _ in 0..outstanding {
                let Exited = receive::<Exited>();
            }
            outstanding = 0;
        }
    }
    for _ in 0..outstanding {
        let Exited = receive::<Exited>();
    }
}

fn spawn_exit(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("spawn_exit");
    group.throughput(Throughput::Elements(1));

    // Warm: one VM for the whole bench, built here, outside the timed loop. Each sample is one
    // `vm.run`, and the root process times its own loop with `Instant`, so VM start-up and the
    // root's own spawn are not measured.
    let vm = Vm::new();
    group.bench_function("warm", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let started = Instant::now();
                spawn_and_collect(iterations);
                started.elapsed()
            })
            .expect("the root process returns")
        });
    });

    // Cold: a fresh VM per iteration, built and dropped outside the measured time; only the
    // first `COLD_SPAWNS` spawns on it (fresh stacks, empty caches) are timed, from inside the
    // root process.
    group.throughput(Throughput::Elements(COLD_SPAWNS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("spawn_cold", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let vm = Vm::new();
                total += vm
                    .run(|| {
                        let started = Instant::now();
                        spawn_and_collect(COLD_SPAWNS);
                        started.elapsed()
                    })
                    .expect("the root process returns");
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, spawn_exit);
criterion_main!(benches);
