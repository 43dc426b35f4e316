//! Bench `ping_pong`: one message round trip between two processes, on one and on two schedulers.
//!
//! These benches are intended to be used as a form of regression testing and not as a general
//! purpose benchmark.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use starling::{receive, self_pid, send, spawn, Vm};

/// What the ponger receives.
enum Serve {
    Ping(u64),
    Stop,
}

/// The ponger's reply.
struct Pong(u64);

fn ping_pong(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("ping_pong");
    group.throughput(Throughput::Elements(1));
    for schedulers in [1, 2] {
        // The VM is built once per configuration, outside the timed loop. Each sample is one
        // `vm.run`; the root process spawns the ponger, then times only the round trips with
        // `Instant`, so VM start-up and both spawns stay out of the measurement.
        let vm = Vm::builder()
            .schedulers(schedulers)
            .build()
            .expect("a VM with 1 or 2 schedulers builds");
        let name = format!(
            "{schedulers}_scheduler{}",
            if schedulers > 1 { "s" } else { "" }
        );
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                vm.run(move || {
                    let root = self_pid();
                    let ponger = spawn(move || {
                        while let Serve::Ping(k) = receive::<Serve>() {
                            send(root, Pong(k));
                        }
                    });
                    let started = Instant::now();
                    for k in 0..iterations {
                        send(ponger, Serve::Ping(k));
                        let Pong(reply) = receive::<Pong>();
                        debug_assert_eq!(reply, k);
                    }
                    let elapsed = started.elapsed();
                    send(ponger, Serve::Stop);
                    elapsed
                })
                .expect("the root process returns")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, ping_pong);
criterion_main!(benches);
