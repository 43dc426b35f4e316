//! Bench `context_switch`: `yield_now` on one scheduler, by a process alone (it resumes itself)
//! and by two processes that alternate (one iteration = two switches).
//!
//! These benches are intended to be used as a form of regression testing and not as a general
//! purpose benchmark.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use starling::process::yield_now;
use starling::{spawn, Vm};

fn context_switch(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("context_switch");
    group.throughput(Throughput::Elements(1));
    // One scheduler, so that the two processes of `yield_pair` must take turns. The VM is
    // built once, outside the timed loop; each sample is one `vm.run` whose root process times
    // its own loop with `Instant`.
    let vm = Vm::builder()
        .schedulers(1)
        .build()
        .expect("a VM with 1 scheduler builds");

    group.bench_function("yield_self", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let started = Instant::now();
                for _ in 0..iterations {
                    yield_now();
                }
                started.elapsed()
            })
            .expect("the root process returns")
        });
    });

    group.bench_function("yield_pair", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let stop = Arc::new(AtomicBool::new(false));
                let partner_stop = stop.clone();
                // Spawning the partner is outside the measured time.
                spawn(move || {
                    while !partner_stop.load(Ordering::Relaxed) {
                        yield_now();
                    }
                });
                // Let the partner start before the clock does.
                yield_now();
                let started = Instant::now();
                for _ in 0..iterations {
                    yield_now();
                }
                let elapsed = started.elapsed();
                stop.store(true, Ordering::Relaxed);
                // One more turn lets the partner see the flag and end.
                yield_now();
                elapsed
            })
            .expect("the root process returns")
        });
    });
    group.finish();
}

criterion_group!(benches, context_switch);
criterion_main!(benches);
