//! Per-pair FIFO (API.md guarantee 1): messages from one process to another arrive in the order
//! sent, however many other senders interleave with them.

#[macro_use]
mod common;

use common::run;
use starling::{receive, self_pid, send, spawn, Pid};

const SENDERS: usize = 8;
const PER_SENDER: u32 = 10_000;

on_schedulers! {
    fn each_senders_sequence_arrives_in_order(vm) {
        let (next, total) = run(vm, || {
            let receiver = self_pid();
            for sender in 0..SENDERS {
                spawn(move || {
                    for seq in 0..PER_SENDER {
                        send(receiver, (sender, seq));
                    }
                });
            }
            let mut next = [0u32; SENDERS];
            let mut total = 0;
            for _ in 0..SENDERS * PER_SENDER as usize {
                let (sender, seq): (usize, u32) = receive();
                assert_eq!(seq, next[sender], "sender {sender}: expected #{} next, got #{seq}", next[sender]);
                next[sender] += 1;
                total += 1;
            }
            (next, total)
        });
        assert_eq!(next, [PER_SENDER; SENDERS]);
        assert_eq!(total, SENDERS * PER_SENDER as usize);
    }

    // The receiver is not the root and is already blocked when the senders start, and the
    // senders start together (each waits for a go message), so their sends really interleave.
    fn fifo_holds_for_a_blocked_receiver_and_simultaneous_senders(vm) {
        let ok = run(vm, || {
            let root = self_pid();
            let receiver = spawn(move || {
                let mut next = [0u32; SENDERS];
                for _ in 0..SENDERS * PER_SENDER as usize {
                    let (sender, seq): (usize, u32) = receive();
                    if seq != next[sender] {
                        send(root, Err::<(), String>(format!("sender {sender}: expected #{} got #{seq}", next[sender])));
                        return;
                    }
                    next[sender] += 1;
                }
                send(root, Ok::<(), String>(()));
            });
            let senders: Vec<Pid> = (0..SENDERS)
                .map(|sender| {
                    spawn(move || {
                        receive::<Go>();
                        for seq in 0..PER_SENDER {
                            send(receiver, (sender, seq));
                            if seq % 1000 == 0 {
                                starling::process::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for pid in senders {
                send(pid, Go);
            }
            receive::<Result<(), String>>()
        });
        ok.unwrap();
    }

    // Different message types from one sender keep their relative order too (one mailbox).
    fn order_is_kept_across_message_types(vm) {
        let log = run(vm, || {
            let receiver = self_pid();
            spawn(move || {
                for i in 0..1000u32 {
                    if i % 2 == 0 {
                        send(receiver, i);
                    } else {
                        send(receiver, i.to_string());
                    }
                }
            });
            let mut log = Vec::new();
            for _ in 0..1000 {
                let v = receive! {
                    n: u32 => n,
                    s: String => s.parse::<u32>().unwrap(),
                };
                log.push(v);
            }
            log
        });
        assert_eq!(log, (0..1000).collect::<Vec<_>>());
    }
}

#[derive(Debug)]
struct Go;

/// Senders outside the VM, more OS threads than cores (so the kernel preempts some of them
/// while they hold a mailbox's senders' lock): nothing is lost, nothing is duplicated, and each
/// thread's messages arrive in order.
#[test]
fn senders_on_more_threads_than_cores_lose_nothing_and_keep_their_order() {
    const THREADS: usize = 8;
    const PER_THREAD: u32 = 20_000;
    let vm = std::sync::Arc::new(starling::Vm::new());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = vm.spawn(move || {
        let mut next = [0u32; THREADS];
        for _ in 0..THREADS * PER_THREAD as usize {
            let (thread, seq): (usize, u32) = receive();
            if seq != next[thread] {
                let _ = ready_tx.send(Err(format!(
                    "thread {thread}: expected #{} got #{seq}",
                    next[thread]
                )));
                return;
            }
            next[thread] += 1;
        }
        let _ = ready_tx.send(Ok(next));
    });
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let vm = std::sync::Arc::clone(&vm);
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for seq in 0..PER_THREAD {
                    vm.send(receiver, (thread, seq));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a sender thread panicked");
    }
    let got = ready_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the receiver finished");
    assert_eq!(got, Ok([PER_THREAD; THREADS]));
}
