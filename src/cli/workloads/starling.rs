//! W1..W6 on a Starling VM: the VM is built first, then the root process times the workload itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use starling::{receive, self_pid, send, spawn, Pid};

use crate::cli::measurement::{Check, Latency, Measurement};
use crate::cli::memory;
use crate::cli::workload::{sum_below, sum_of_squares, Params, Workload};
use crate::cli::workloads::spin;

/// Runs one workload on a fresh VM with `params.schedulers` schedulers.
pub fn run(params: Params) -> Result<Measurement, String> {
    let vm = starling::Vm::builder()
        .schedulers(params.schedulers)
        .build()
        .map_err(|error| {
            format!(
                "building a VM with {} schedulers: {error}",
                params.schedulers
            )
        })?;
    let size = params.size;
    let laps = params.laps;
    let spinners = params.spinners;
    // VM start-up is outside the measurement: each body starts its clock inside the root process.
    let result = match params.workload {
        Workload::Spawn => vm.run(move || spawn_many(size)),
        Workload::Alive => vm.run(move || alive(size)),
        Workload::Ring => vm.run(move || ring(size, laps)),
        Workload::PingPong => vm.run(move || ping_pong(size)),
        Workload::Skynet => vm.run(move || skynet(size)),
        Workload::Starvation => vm.run(move || starvation(size, spinners)),
    };
    let mut measurement =
        result.map_err(|reason| format!("the root process ended with {reason:?}"))?;
    measurement.operations = params.workload.operations(size, laps);
    measurement.peak_resident_bytes = memory::peak_resident_bytes();
    Ok(measurement)
}

/// A measurement whose operation count and peak the caller fills in.
fn measured(started: Instant, resident_before: u64, check: Check) -> Measurement {
    Measurement {
        wall_nanoseconds: started.elapsed().as_nanos() as u64,
        operations: 0,
        latency: None,
        resident_before_bytes: resident_before,
        resident_all_alive_bytes: None,
        peak_resident_bytes: 0,
        peak_threads: None,
        check,
    }
}

/// W1's message: a child's number squared.
struct Square(u64);

/// W1: spawn `size` processes; process i sends i*i to the root, which sums them.
fn spawn_many(size: usize) -> Measurement {
    let root = self_pid();
    let resident_before = memory::resident_bytes();
    let started = Instant::now();
    for index in 0..size as u64 {
        spawn(move || send(root, Square(index * index)));
    }
    let mut sum: u128 = 0;
    for _ in 0..size {
        sum += receive::<Square>().0 as u128;
    }
    let check = Check::equal("sum of squares", sum, sum_of_squares(size as u64));
    measured(started, resident_before, check)
}

/// W2: a process tells the root it is alive and about to block.
struct Ready;
/// W2: the root releases a blocked process.
struct Release;
/// W2: a released process replies with its index.
struct Released(u64);

/// W2: `size` processes alive at once, each blocked in receive; RSS is read when all are
/// blocked; then all are released and each replies.
fn alive(size: usize) -> Measurement {
    let root = self_pid();
    // The pid list is filled before the first reading so its pages do not count as process memory.
    let mut pids: Vec<Pid> = vec![root; size];
    let resident_before = memory::resident_bytes();
    let started = Instant::now();
    for (index, slot) in pids.iter_mut().enumerate() {
        *slot = spawn(move || {
            send(root, Ready);
            let Release = receive::<Release>();
            send(root, Released(index as u64));
        });
    }
    for _ in 0..size {
        let Ready = receive::<Ready>();
    }
    let resident_all_alive = memory::resident_bytes();
    for pid in &pids {
        send(*pid, Release);
    }
    let mut count = 0usize;
    let mut sum: u128 = 0;
    for _ in 0..size {
        sum += receive::<Released>().0 as u128;
        count += 1;
    }
    let check = Check::equal("replies", count, size).and(Check::equal(
        "sum of indices",
        sum,
        sum_below(size as u64),
    ));
    let mut measurement = measured(started, resident_before, check);
    measurement.resident_all_alive_bytes = Some(resident_all_alive);
    measurement
}

/// W3's token: hops made so far, and whether it tells the ring to stop.
struct Token {
    hops: u64,
    stop: bool,
}

/// W3: a ring of `size` processes (the root is one of them) passes a token `laps` laps.
/// Building the ring is outside the measured time; the laps are inside.
fn ring(size: usize, laps: usize) -> Measurement {
    let root = self_pid();
    let resident_before = memory::resident_bytes();
    // Spawned from the end of the ring back to its start, so each knows the next pid.
    let mut next = root;
    for _ in 1..size {
        let successor = next;
        next = spawn(move || loop {
            let token = receive::<Token>();
            let stop = token.stop;
            send(
                successor,
                Token {
                    hops: token.hops + 1,
                    stop,
                },
            );
            if stop {
                break;
            }
        });
    }
    let first = next;
    let started = Instant::now();
    let mut hops = 0;
    let mut laps_seen = 0usize;
    send(
        first,
        Token {
            hops: 1,
            stop: false,
        },
    );
    for lap in 0..laps {
        let token = receive::<Token>();
        hops = token.hops;
        laps_seen += 1;
        if lap + 1 < laps {
            send(
                first,
                Token {
                    hops: hops + 1,
                    stop: false,
                },
            );
        }
    }
    let measurement = measured(
        started,
        resident_before,
        Check::equal("laps", laps_seen, laps).and(Check::equal(
            "hops",
            hops,
            size as u64 * laps as u64,
        )),
    );
    // Tear the ring down (not timed): the stop token goes round once and every process ends.
    send(
        first,
        Token {
            hops: 0,
            stop: true,
        },
    );
    let Token { .. } = receive::<Token>();
    measurement
}

/// W4 and W6: what the ponger receives.
enum Serve {
    Ping(u64),
    Stop,
}
/// W4 and W6: the ponger's reply.
struct Pong(u64);

/// Starts a process that answers every `Ping(k)` with `Pong(k)` until `Stop`.
fn start_ponger(root: Pid) -> Pid {
    spawn(move || {
        while let Serve::Ping(k) = receive::<Serve>() {
            send(root, Pong(k));
        }
    })
}

/// W4: `size` round trips between the root and one other process.
fn ping_pong(size: usize) -> Measurement {
    let root = self_pid();
    let resident_before = memory::resident_bytes();
    let ponger = start_ponger(root);
    let started = Instant::now();
    let mut answered = 0usize;
    for k in 0..size as u64 {
        send(ponger, Serve::Ping(k));
        if receive::<Pong>().0 == k {
            answered += 1;
        }
    }
    let measurement = measured(
        started,
        resident_before,
        Check::equal("round trips answered in order", answered, size),
    );
    send(ponger, Serve::Stop);
    measurement
}

/// W5's message: the sum of a subtree's leaf numbers.
struct Partial(u64);

/// W5: skynet, a 10-ary tree of processes whose leaves are the numbers `0..size`.
fn skynet(size: usize) -> Measurement {
    let root = self_pid();
    let resident_before = memory::resident_bytes();
    let started = Instant::now();
    spawn(move || skynet_node(root, 0, size as u64));
    let sum = receive::<Partial>().0;
    let check = Check::equal("sum", sum as u128, sum_below(size as u64));
    measured(started, resident_before, check)
}

/// Children per skynet node.
const SKYNET_FAN_OUT: u64 = 10;

/// One skynet node: a leaf sends its number; an inner node splits its range into up to ten
/// children and sends their total.
fn skynet_node(parent: Pid, first: u64, count: u64) {
    if count == 1 {
        send(parent, Partial(first));
        return;
    }
    let me = self_pid();
    let chunk = count.div_ceil(SKYNET_FAN_OUT);
    let end = first + count;
    let mut start = first;
    let mut children = 0;
    while start < end {
        let length = chunk.min(end - start);
        spawn(move || skynet_node(me, start, length));
        start += length;
        children += 1;
    }
    let mut sum = 0;
    for _ in 0..children {
        sum += receive::<Partial>().0;
    }
    send(parent, Partial(sum));
}

/// W6: `size` timed round trips while `spinners` processes compute without calling the VM.
fn starvation(size: usize, spinners: usize) -> Measurement {
    let root = self_pid();
    let resident_before = memory::resident_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..spinners {
        let stop = stop.clone();
        spawn(move || spin(&stop));
    }
    let ponger = start_ponger(root);
    let mut samples = Vec::with_capacity(size);
    let started = Instant::now();
    let mut answered = 0usize;
    for k in 0..size as u64 {
        let sent = Instant::now();
        send(ponger, Serve::Ping(k));
        let Pong(reply) = receive::<Pong>();
        samples.push(sent.elapsed().as_nanos() as u64);
        if reply == k {
            answered += 1;
        }
    }
    let mut measurement = measured(
        started,
        resident_before,
        Check::equal("round trips answered in order", answered, size),
    );
    stop.store(true, Ordering::Relaxed);
    send(ponger, Serve::Stop);
    measurement.latency = Latency::from_samples(&mut samples);
    measurement
}
