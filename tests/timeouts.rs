//! Timeouts never fire early: `receive_timeout`, `receive!`'s `after` and `process::sleep` wait
//! at least the requested time, alone, while unrelated messages arrive, and with many processes
//! waiting at once. (The upper bounds are only hang guards, not speed claims.)

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::run;
use starling::{process, receive, receive_timeout, self_pid, send, spawn};

const DURATIONS_MS: [u64; 4] = [1, 5, 20, 50];
/// Sanity bound on lateness: far beyond any scheduling delay on a loaded test machine.
const SLACK: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Never;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    ReceiveTimeout,
    ReceiveAfter,
    Sleep,
}

/// Waits `requested` in one of the three ways and returns the time measured around it.
fn measure(how: Wait, requested: Duration) -> Duration {
    let started = Instant::now();
    match how {
        Wait::ReceiveTimeout => assert!(receive_timeout::<Never>(requested).is_none()),
        Wait::ReceiveAfter => receive! {
            _: Never => panic!("nobody sends Never"),
            after requested => (),
        },
        Wait::Sleep => process::sleep(requested),
    }
    started.elapsed()
}

/// Fails the test with a description of the processes that never finished their waits.
fn stuck_waiters(received: usize) -> ! {
    let me = self_pid();
    let stuck: Vec<String> = process::list()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            process::info(pid)
                .map(|i| format!("{pid} {:?} queue={}", i.status, i.message_queue_len))
        })
        .collect();
    panic!(
        "after {received} reports, no process reported for 20 s although every wait is at most \
         50 ms: {} processes are stuck (a lost timer wake-up?): {:?}",
        stuck.len(),
        &stuck[..stuck.len().min(10)]
    );
}

fn check(how: Wait, requested: Duration, elapsed: Duration) {
    assert!(
        elapsed >= requested,
        "{how:?} of {requested:?} returned early, after {elapsed:?}"
    );
    assert!(
        elapsed < requested + SLACK,
        "{how:?} of {requested:?} took {elapsed:?} (hang guard)"
    );
}

on_schedulers! {
    fn each_wait_takes_at_least_the_requested_time(vm) {
        run(vm, || {
            for how in [Wait::ReceiveTimeout, Wait::ReceiveAfter, Wait::Sleep] {
                for ms in DURATIONS_MS {
                    let requested = Duration::from_millis(ms);
                    for _ in 0..3 {
                        check(how, requested, measure(how, requested));
                    }
                }
            }
        });
    }

    fn many_processes_waiting_at_once_never_wake_early(vm) {
        const PROCESSES: usize = 500;
        let results = run(vm, || {
            let root = self_pid();
            for i in 0..PROCESSES {
                spawn(move || {
                    let mut samples = Vec::new();
                    // Rotate the order so waits of every length overlap across processes.
                    for k in 0..DURATIONS_MS.len() {
                        let ms = DURATIONS_MS[(i + k) % DURATIONS_MS.len()];
                        let requested = Duration::from_millis(ms);
                        for how in [Wait::ReceiveTimeout, Wait::ReceiveAfter, Wait::Sleep] {
                            samples.push((how, requested, measure(how, requested)));
                        }
                    }
                    send(root, samples);
                });
            }
            (0..PROCESSES)
                .map(|received| {
                    starling::receive_timeout::<Vec<(Wait, Duration, Duration)>>(Duration::from_secs(20))
                        .unwrap_or_else(|| stuck_waiters(received))
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(results.len(), PROCESSES);
        for samples in results {
            assert_eq!(samples.len(), 3 * DURATIONS_MS.len());
            for (how, requested, elapsed) in samples {
                check(how, requested, elapsed);
            }
        }
    }

    // Messages of other types arriving during the wait do not end it early.
    fn unrelated_messages_do_not_end_a_wait_early(vm) {
        run(vm, || {
            let me = self_pid();
            let requested = Duration::from_millis(50);
            let noise = spawn(move || {
                for i in 0..40u32 {
                    send(me, i);
                    process::sleep(Duration::from_millis(1));
                }
            });
            let started = Instant::now();
            assert!(receive_timeout::<Never>(requested).is_none());
            check(Wait::ReceiveTimeout, requested, started.elapsed());

            let started = Instant::now();
            let fired = receive! {
                n: u32 if *n > 1_000 => n == 0,
                after requested => true,
            };
            assert!(fired);
            check(Wait::ReceiveAfter, requested, started.elapsed());

            let started = Instant::now();
            let got = starling::receive_match_timeout(|n: &u32| *n > 1_000, requested);
            assert_eq!(got, None);
            check(Wait::ReceiveTimeout, requested, started.elapsed());
            common::eventually("the noise sender ends", || !process::alive(noise));
        });
    }

    // A sleeping process wakes even though messages arrive while it sleeps, and they wait for it.
    fn sleep_is_not_cut_short_by_messages(vm) {
        run(vm, || {
            let me = self_pid();
            let sleeper = spawn(move || {
                let requested = Duration::from_millis(40);
                let started = Instant::now();
                process::sleep(requested);
                let elapsed = started.elapsed();
                let mut got = Vec::new();
                while let Some(n) = receive_timeout::<u32>(Duration::ZERO) {
                    got.push(n);
                }
                send(me, (elapsed, got));
            });
            for i in 0..10u32 {
                send(sleeper, i);
            }
            let (elapsed, got): (Duration, Vec<u32>) = starling::receive();
            check(Wait::Sleep, Duration::from_millis(40), elapsed);
            assert_eq!(got, (0..10).collect::<Vec<_>>());
        });
    }

    fn zero_duration_waits_return_at_once(vm) {
        run(vm, || {
            for how in [Wait::ReceiveTimeout, Wait::ReceiveAfter, Wait::Sleep] {
                let elapsed = measure(how, Duration::ZERO);
                check(how, Duration::ZERO, elapsed);
            }
        });
    }

    // Many processes doing only the shortest waits: each kind on its own, so a lost wake-up
    // points at the kind of wait that lost it.
    fn many_processes_with_1ms_receive_timeouts(vm) {
        many_short_waits(vm, Wait::ReceiveTimeout);
    }

    fn many_processes_with_1ms_receive_after(vm) {
        many_short_waits(vm, Wait::ReceiveAfter);
    }

    fn many_processes_with_1ms_sleeps(vm) {
        many_short_waits(vm, Wait::Sleep);
    }
}

/// 1,000 processes each wait 1 ms five times in the way `how`; each reports its shortest wait.
fn many_short_waits(vm: &starling::Vm, how: Wait) {
    const PROCESSES: usize = 1_000;
    let shortest = run(vm, move || {
        let root = self_pid();
        for _ in 0..PROCESSES {
            spawn(move || {
                let requested = Duration::from_millis(1);
                let shortest = (0..5).map(|_| measure(how, requested)).min().unwrap();
                send(root, shortest);
            });
        }
        (0..PROCESSES)
            .map(|received| {
                starling::receive_timeout::<Duration>(Duration::from_secs(20))
                    .unwrap_or_else(|| stuck_waiters(received))
            })
            .min()
            .unwrap()
    });
    check(how, Duration::from_millis(1), shortest);
}
