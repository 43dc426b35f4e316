//! Bench `selective_receive_deep_mailbox`: receiving the one matching message that sits behind
//! 1,000 unmatched ones, by predicate, by type and with `receive!`.
//!
//! These benches are intended to be used as a form of regression testing and not as a general
//! purpose benchmark.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use starling::{receive, receive_match, self_pid, send, Vm};

/// Unmatched messages in front of the wanted one.
const DEPTH: u32 = 1_000;

/// Messages of one type: the predicate must step over every `Noise`.
enum Message {
    Noise(u32),
    Wanted(u64),
}

/// A message of another type than the wanted one.
struct Noise(u32);

/// The wanted message when matching by type.
struct Wanted(u64);

/// Empties the mailbox after the timed loop (not measured) and checks that every unmatched
/// message stayed, in order.
fn drain_noise_messages() {
    for expected in 0..DEPTH {
        match receive::<Message>() {
            Message::Noise(index) => assert_eq!(index, expected, "unmatched messages kept order"),
            Message::Wanted(_) => panic!("a wanted message was left behind"),
        }
    }
}

fn selective_receive(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("selective_receive_deep_mailbox");
    group.throughput(Throughput::Elements(1));
    // The VM is built once, outside the timed loop. Each sample is one `vm.run`: the root fills
    // its own mailbox with the unmatched messages first, then times only the loop with
    // `Instant`. Every iteration sends the wanted message to itself (a send is part of the
    // measured cost) and receives it from behind the `DEPTH` unmatched ones.
    let vm = Vm::new();

    group.bench_function("by_predicate", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let me = self_pid();
                for index in 0..DEPTH {
                    send(me, Message::Noise(index));
                }
                let started = Instant::now();
                for k in 0..iterations {
                    send(me, Message::Wanted(k));
                    let message = receive_match::<Message>(|m| matches!(m, Message::Wanted(_)));
                    debug_assert!(matches!(message, Message::Wanted(j) if j == k));
                }
                let elapsed = started.elapsed();
                drain_noise_messages();
                elapsed
            })
            .expect("the root process returns")
        });
    });

    group.bench_function("by_type", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let me = self_pid();
                for index in 0..DEPTH {
                    send(me, Noise(index));
                }
                let started = Instant::now();
                for k in 0..iterations {
                    send(me, Wanted(k));
                    let Wanted(j) = receive::<Wanted>();
                    debug_assert_eq!(j, k);
                }
                let elapsed = started.elapsed();
                let sum: u32 = (0..DEPTH).map(|_| receive::<Noise>().0).sum();
                assert_eq!(
                    sum,
                    DEPTH * (DEPTH - 1) / 2,
                    "every unmatched message stayed"
                );
                elapsed
            })
            .expect("the root process returns")
        });
    });

    group.bench_function("receive_macro", |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let me = self_pid();
                for index in 0..DEPTH {
                    send(me, Message::Noise(index));
                }
                let started = Instant::now();
                for k in 0..iterations {
                    send(me, Message::Wanted(k));
                    let j = starling::receive! {
                        Message::Wanted(j): Message => j,
                    };
                    debug_assert_eq!(j, k);
                }
                let elapsed = started.elapsed();
                drain_noise_messages();
                elapsed
            })
            .expect("the root process returns")
        });
    });
    group.finish();
}

criterion_group!(benches, selective_receive);
criterion_main!(benches);
