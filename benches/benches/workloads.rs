//! Bench `workloads`: the six reference workloads (W1..W6) at sizes that finish in milliseconds.
//!
//! These benches are intended to be used as a form of regression testing and not as a general
//! purpose benchmark. The full-size runs, with memory and the OS-thread comparison, are the
//! `starling` program's (`cargo run --release`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use starling::{receive, self_pid, send, spawn, Pid, Vm};

/// W1: processes spawned, each sending i*i to the root.
const SPAWN_SIZE: u64 = 10_000;
/// W2: processes alive at once, blocked in receive.
const ALIVE_SIZE: u64 = 10_000;
/// W3: processes in the ring (the root included) and laps of the token.
const RING_SIZE: u64 = 1_000;
const RING_LAPS: u64 = 10;
/// W4: round trips.
const PING_PONG_ROUND_TRIPS: u64 = 10_000;
/// W5: skynet leaves (a 10-ary tree of 11,111 processes).
const SKYNET_LEAVES: u64 = 10_000;
/// W6: round trips beside two spinning processes, on two schedulers.
const STARVATION_ROUND_TRIPS: u64 = 1_000;
const STARVATION_SPINNERS: usize = 2;

/// Runs `workload` once per iteration inside one `vm.run` per sample. The VM is built by the
/// caller, outside the timed loop; the root process times the iterations itself with
/// `Instant`, so VM start-up stays out of the measurement.
fn bench_workload(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    vm: &Vm,
    name: &str,
    elements: u64,
    workload: fn(),
) {
    group.throughput(Throughput::Elements(elements));
    group.bench_function(name, |bencher| {
        bencher.iter_custom(|iterations| {
            vm.run(move || {
                let started = Instant::now();
                for _ in 0..iterations {
                    workload();
                }
                started.elapsed()
            })
            .expect("the root process returns")
        });
    });
}

/// W1's message.
struct Square(u64);

fn spawn_many() {
    let root = self_pid();
    for index in 0..SPAWN_SIZE {
        spawn(move || send(root, Square(index * index)));
    }
    let sum: u64 = (0..SPAWN_SIZE).map(|_| receive::<Square>().0).sum();
    assert_eq!(
        sum,
        (SPAWN_SIZE - 1) * SPAWN_SIZE * (2 * SPAWN_SIZE - 1) / 6
    );
}

/// W2's messages: alive and about to block; the release; the reply.
struct Ready;
struct Release;
struct Released(u64);

fn alive() {
    let root = self_pid();
    let pids: Vec<Pid> = (0..ALIVE_SIZE)
        .map(|index| {
            spawn(move || {
                send(root, Ready);
                let Release = receive::<Release>();
                send(root, Released(index));
            })
        })
        .collect();
    for _ in 0..ALIVE_SIZE {
        let Ready = receive::<Ready>();
    }
    for pid in pids {
        send(pid, Release);
    }
    let sum: u64 = (0..ALIVE_SIZE).map(|_| receive::<Released>().0).sum();
    assert_eq!(sum, ALIVE_SIZE * (ALIVE_SIZE - 1) / 2);
}

/// W3's token: hops so far, and whether the ring should stop.
struct Token {
    hops: u64,
    stop: bool,
}

/// W3, including building and tearing down the ring (the program times the laps alone).
fn ring() {
    let root = self_pid();
    let mut next = root;
    for _ in 1..RING_SIZE {
        let successor = next;
        next = spawn(move || loop {
            let Token { hops, stop } = receive::<Token>();
            send(
                successor,
                Token {
                    hops: hops + 1,
                    stop,
                },
            );
            if stop {
                break;
            }
        });
    }
    let first = next;
    send(
        first,
        Token {
            hops: 1,
            stop: false,
        },
    );
    let mut hops = 0;
    for lap in 0..RING_LAPS {
        hops = receive::<Token>().hops;
        if lap + 1 < RING_LAPS {
            send(
                first,
                Token {
                    hops: hops + 1,
                    stop: false,
                },
            );
        }
    }
    assert_eq!(hops, RING_SIZE * RING_LAPS);
    send(
        first,
        Token {
            hops: 0,
            stop: true,
        },
    );
    let Token { .. } = receive::<Token>();
}

/// W4 and W6: what the ponger receives, and its reply.
enum Serve {
    Ping(u64),
    Stop,
}
struct Pong(u64);

fn round_trips(count: u64) {
    let root = self_pid();
    let ponger = spawn(move || {
        while let Serve::Ping(k) = receive::<Serve>() {
            send(root, Pong(k));
        }
    });
    for k in 0..count {
        send(ponger, Serve::Ping(k));
        assert_eq!(receive::<Pong>().0, k);
    }
    send(ponger, Serve::Stop);
}

fn ping_pong() {
    round_trips(PING_PONG_ROUND_TRIPS);
}

/// W5's message.
struct Partial(u64);

fn skynet() {
    let root = self_pid();
    spawn(move || skynet_node(root, 0, SKYNET_LEAVES));
    assert_eq!(
        receive::<Partial>().0,
        SKYNET_LEAVES * (SKYNET_LEAVES - 1) / 2
    );
}

fn skynet_node(parent: Pid, first: u64, count: u64) {
    if count == 1 {
        send(parent, Partial(first));
        return;
    }
    let me = self_pid();
    let chunk = count.div_ceil(10);
    let mut children = 0;
    let mut start = first;
    while start < first + count {
        let length = chunk.min(first + count - start);
        spawn(move || skynet_node(me, start, length));
        start += length;
        children += 1;
    }
    let sum = (0..children).map(|_| receive::<Partial>().0).sum();
    send(parent, Partial(sum));
}

/// W6's spinner: pure computation that never calls the VM, until `stop` is set.
fn spin(stop: &AtomicBool) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while !stop.load(Ordering::Relaxed) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::hint::black_box(state);
    }
}

fn workloads(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("workloads");
    // Every iteration runs a whole workload (milliseconds), so fewer, longer samples.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let vm = Vm::new();
    bench_workload(&mut group, &vm, "w1_spawn_10k", SPAWN_SIZE, spawn_many);
    bench_workload(&mut group, &vm, "w2_alive_10k", ALIVE_SIZE, alive);
    bench_workload(
        &mut group,
        &vm,
        "w3_ring_1k_x10",
        RING_SIZE * RING_LAPS,
        ring,
    );
    bench_workload(
        &mut group,
        &vm,
        "w4_ping_pong_10k",
        PING_PONG_ROUND_TRIPS,
        ping_pong,
    );
    bench_workload(&mut group, &vm, "w5_skynet_10k", SKYNET_LEAVES, skynet);

    // W6 on its own 2-scheduler VM, built outside the timed loop. The spinners start before
    // the clock and stop after it; only the round trips are timed, from inside the root.
    let starvation_vm = Vm::builder()
        .schedulers(2)
        .build()
        .expect("a VM with 2 schedulers builds");
    group.throughput(Throughput::Elements(STARVATION_ROUND_TRIPS));
    group.bench_function("w6_starvation_1k", |bencher| {
        bencher.iter_custom(|iterations| {
            starvation_vm
                .run(move || {
                    let stop = Arc::new(AtomicBool::new(false));
                    for _ in 0..STARVATION_SPINNERS {
                        let stop = stop.clone();
                        spawn(move || spin(&stop));
                    }
                    let started = Instant::now();
                    for _ in 0..iterations {
                        round_trips(STARVATION_ROUND_TRIPS);
                    }
                    let elapsed = started.elapsed();
                    stop.store(true, Ordering::Relaxed);
                    elapsed
                })
                .expect("the root process returns")
        });
    });
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
