//! Selective receive: unmatched messages keep their order, typed receive skips other types,
//! predicates, timeouts and polling, when a message starts counting in the queue length, and
//! what a guard that breaks the rule (it calls the VM) gets: a panic that names the rule.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::run;
use starling::*;

fn queue_len(pid: Pid) -> usize {
    process::info(pid)
        .expect("the process is alive")
        .message_queue_len
}

/// A type nobody ever sends.
#[derive(Debug)]
struct Never;

on_schedulers! {
    fn unmatched_messages_keep_their_order(vm) {
        run(vm, || {
            let me = self_pid();
            for i in 0..100u32 {
                send(me, i);
            }
            // Take every multiple of 7 out of the middle of the mailbox, newest-wanted first.
            for wanted in (0..100u32).filter(|i| i % 7 == 0).rev() {
                assert_eq!(receive_match(|m: &u32| *m == wanted), wanted);
            }
            let rest: Vec<u32> = (0..queue_len(me)).map(|_| receive::<u32>()).collect();
            let expected: Vec<u32> = (0..100).filter(|i| i % 7 != 0).collect();
            assert_eq!(rest, expected, "the messages left behind must keep their order");
        });
    }

    fn typed_receive_skips_other_types(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, 1u32);
            send(me, "two".to_string());
            send(me, 3u32);
            send(me, 4i64);
            send(me, "five".to_string());
            assert_eq!(receive::<String>(), "two");
            assert_eq!(receive::<i64>(), 4);
            assert_eq!(receive::<String>(), "five");
            assert_eq!(queue_len(me), 2);
            assert_eq!(receive::<u32>(), 1);
            assert_eq!(receive::<u32>(), 3);
            // u32 and u64 are different types: a u64 never matches receive::<u32>.
            send(me, 6u64);
            assert_eq!(receive_timeout::<u32>(Duration::ZERO), None);
            assert_eq!(receive::<u64>(), 6);
        });
    }

    fn typed_receive_waits_for_its_type_while_others_arrive(vm) {
        run(vm, || {
            let me = self_pid();
            spawn(move || {
                for i in 0..50u32 {
                    send(me, i);
                }
                send(me, "done".to_string());
            });
            assert_eq!(receive::<String>(), "done");
            let numbers: Vec<u32> = (0..50).map(|_| receive::<u32>()).collect();
            assert_eq!(numbers, (0..50).collect::<Vec<_>>());
        });
    }

    fn receive_match_predicate_borrows_locals(vm) {
        run(vm, || {
            let me = self_pid();
            for i in 0..20u32 {
                send(me, i);
            }
            let wanted: HashSet<u32> = [13, 5, 17].into_iter().collect();
            let mut calls = 0;
            let first = receive_match(|m: &u32| {
                calls += 1;
                wanted.contains(m)
            });
            assert_eq!(first, 5, "the first accepted message in mailbox order");
            assert!(calls >= 6, "the predicate saw 0..=5 at least: {calls} calls");
            assert_eq!(receive_match(|m: &u32| wanted.contains(m)), 13);
            assert_eq!(receive_match(|m: &u32| wanted.contains(m)), 17);
            assert_eq!(receive_match_timeout(|m: &u32| wanted.contains(m), Duration::ZERO), None);
            assert_eq!(queue_len(me), 17);
        });
    }

    fn receive_match_timeout_leaves_rejected_messages(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, 1u32);
            send(me, 2u32);
            let started = Instant::now();
            let got = receive_match_timeout(|m: &u32| *m > 10, Duration::from_millis(20));
            assert_eq!(got, None);
            assert!(started.elapsed() >= Duration::from_millis(20));
            assert_eq!(receive::<u32>(), 1);
            assert_eq!(receive::<u32>(), 2);
        });
    }

    fn receive_timeout_returns_none_after_the_timeout(vm) {
        run(vm, || {
            let timeout = Duration::from_millis(30);
            let started = Instant::now();
            assert_eq!(receive_timeout::<Never>(timeout).map(|_| ()), None);
            let elapsed = started.elapsed();
            assert!(elapsed >= timeout, "returned after {elapsed:?}, before the {timeout:?} timeout");
        });
    }

    fn receive_timeout_returns_the_message_that_arrives_in_time(vm) {
        run(vm, || {
            let me = self_pid();
            // Before the spawn: another scheduler may steal the child and start its sleep
            // before `spawn` even returns here.
            let started = Instant::now();
            spawn(move || {
                process::sleep(Duration::from_millis(30));
                send(me, 99u32);
            });
            assert_eq!(receive_timeout::<u32>(Duration::from_secs(20)), Some(99));
            assert!(started.elapsed() >= Duration::from_millis(30));
        });
    }

    fn zero_timeout_polls_once(vm) {
        run(vm, || {
            let me = self_pid();
            assert_eq!(receive_timeout::<u32>(Duration::ZERO), None, "empty mailbox");
            send(me, "other".to_string());
            assert_eq!(receive_timeout::<u32>(Duration::ZERO), None, "only another type queued");
            send(me, 7u32);
            assert_eq!(receive_timeout::<u32>(Duration::ZERO), Some(7), "a queued message is found");
            assert_eq!(receive_timeout::<String>(Duration::ZERO).as_deref(), Some("other"));
        });
    }

    fn message_counts_in_queue_len_as_soon_as_send_returns(vm) {
        run(vm, || {
            let me = self_pid();
            // A receiver blocked on a type nobody sends.
            let blocked = spawn(|| {
                let _ = receive::<Never>();
            });
            for n in 1..=100usize {
                send(blocked, n);
                assert_eq!(queue_len(blocked), n, "after {n} sends");
            }
            for n in 1..=10usize {
                send(me, n);
                assert_eq!(queue_len(me), n);
            }
            // The receiver never saw a message it accepts, so all 100 are still there.
            assert_eq!(queue_len(blocked), 100);
            send(blocked, Never);
            common::eventually("the blocked receiver ends", || !process::alive(blocked));
        });
    }

    fn many_senders_one_selective_receiver(vm) {
        run(vm, || {
            let me = self_pid();
            const SENDERS: u32 = 20;
            for s in 0..SENDERS {
                spawn(move || {
                    for i in 0..100u32 {
                        send(me, (s, i));
                    }
                });
            }
            // Drain sender by sender, in reverse: each is a selective receive through the others.
            for s in (0..SENDERS).rev() {
                for i in 0..100u32 {
                    let got = receive_match(|&(from, _): &(u32, u32)| from == s);
                    assert_eq!(got, (s, i), "sender {s}'s messages arrive in order");
                }
            }
            assert_eq!(queue_len(me), 0);
        });
    }
    fn a_guard_that_calls_the_vm_panics_naming_the_rule_and_loses_nothing(vm) {
        run(vm, || {
            let reentrant = || receive_match(|_: &u32| receive_timeout::<u8>(Duration::ZERO).is_some());
            // Caught inside the process: the messages are all there, in order, and receiving
            // works again (the private queue's borrow ended with the unwinding).
            let (pid, monitor) = spawn_monitor(move || {
                let me = self_pid();
                send(me, 1u32);
                send(me, 2u32);
                let caught = std::panic::catch_unwind(reentrant);
                assert!(caught.is_err(), "a guard that called receive returned");
                assert_eq!((receive::<u32>(), receive::<u32>()), (1, 2));
                // Not caught: the process ends with the panic, which names the rule.
                send(me, 3u32);
                reentrant();
            });
            let down = receive_match(|down: &Down| down.monitor == monitor);
            assert_eq!(down.pid, pid);
            match down.reason {
                ExitReason::Panic(message) => assert!(
                    message.contains("guards must not call the VM"),
                    "the panic does not name the rule: {message}"
                ),
                other => panic!("the process ended with {other:?}"),
            }
        });
    }
}
