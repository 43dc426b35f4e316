//! Stress: 100,000 live processes exchanging messages with their neighbours, and a stampede
//! of messages to scattered peers, complete with every message accounted for on 1, 2 and 4
//! schedulers.

#[macro_use]
mod common;

use common::run;
use starling::{process, receive, self_pid, send, spawn, Pid};

const PROCESSES: usize = 100_000;

#[derive(Debug)]
struct Next(Pid);

#[derive(Debug)]
struct Ping {
    from: Pid,
    n: u64,
}

#[derive(Debug)]
struct Pong(u64);

#[derive(Debug)]
struct Done(u64);

on_schedulers! {
    // Every process sends a Ping to the next one, answers the Ping of the previous one, checks
    // the Pong it gets back, and reports. All 100,000 are alive at once.
    fn hundred_thousand_processes_ping_their_neighbours(vm) {
        let (sum, count, peak) = run(vm, || {
            let root = self_pid();
            let pids: Vec<Pid> = (0..PROCESSES as u64)
                .map(|i| {
                    spawn(move || {
                        let Next(next) = receive::<Next>();
                        send(next, Ping { from: self_pid(), n: i });
                        let Ping { from, n } = receive::<Ping>();
                        send(from, Pong(n));
                        let Pong(m) = receive::<Pong>();
                        assert_eq!(m, i, "my neighbour answered someone else's ping");
                        send(root, Done(i));
                    })
                })
                .collect();
            let peak = process::list().len();
            for (i, pid) in pids.iter().enumerate() {
                send(*pid, Next(pids[(i + 1) % PROCESSES]));
            }
            let mut sum = 0u64;
            let mut count = 0usize;
            for _ in 0..PROCESSES {
                let Done(i) = receive::<Done>();
                sum += i;
                count += 1;
            }
            (sum, count, peak)
        });
        assert_eq!(count, PROCESSES);
        assert_eq!(sum, (PROCESSES as u64) * (PROCESSES as u64 - 1) / 2);
        assert_eq!(peak, PROCESSES + 1, "all of them plus the root were alive at once");
    }

    // Stampede: 20,000 processes each send 10 messages to scattered peers; each peer knows how
    // many it will get. Every message must arrive exactly once.
    fn stampede_to_scattered_peers(vm) {
        const N: usize = 20_000;
        const FANOUT: usize = 10;
        let (received_sum, reports) = run(vm, || {
            let root = self_pid();
            let dests = |i: usize| (0..FANOUT).map(move |k| (i * 7_919 + k * 104_729 + k * k) % N);
            let mut expected = vec![0usize; N];
            for i in 0..N {
                for d in dests(i) {
                    expected[d] += 1;
                }
            }
            let pids: Vec<Pid> = (0..N)
                .map(|_| {
                    spawn(move || {
                        let (targets, count): (Vec<Pid>, usize) = receive();
                        let me = self_pid();
                        for (k, target) in targets.into_iter().enumerate() {
                            send(target, (me, k as u64));
                        }
                        let mut sum = 0u64;
                        for _ in 0..count {
                            let (_from, k): (Pid, u64) = receive();
                            sum += k;
                        }
                        send(root, Done(sum));
                    })
                })
                .collect();
            for i in 0..N {
                let targets: Vec<Pid> = dests(i).map(|d| pids[d]).collect();
                send(pids[i], (targets, expected[i]));
            }
            let mut received_sum = 0u64;
            for _ in 0..N {
                let Done(s) = receive::<Done>();
                received_sum += s;
            }
            (received_sum, N)
        });
        assert_eq!(reports, N);
        assert_eq!(received_sum, (N as u64) * (0..FANOUT as u64).sum::<u64>());
    }
}
