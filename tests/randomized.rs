//! The core signal scenarios under randomized scheduling: each runs 50 times, on VMs built
//! with `randomize_scheduling(seed)` for seeds 0..50 (random runnext bypass, steal victims and
//! slice lengths), with 2 and with 4 schedulers. A failure names its seed, so it can be
//! replayed with `Vm::builder().randomize_scheduling(seed)`.
//!
//! Scenarios (the deterministic versions, with the OTP/Elixir cases they come from, are in
//! `links.rs`, `monitors.rs`, `exit_signals.rs` and `task.rs`):
//! - every link and monitor fires exactly once;
//! - `unlink` racing the linked process's exit: no `Exit` after `unlink` returns;
//! - `demonitor` racing the exit: no `Down` after `demonitor` returns;
//! - messages sent before a crash arrive before its `Exit` and its `Down`;
//! - only the first killing signal counts, and links and monitors agree on it;
//! - `join_timeout` racing the task's reply: on `Timeout` nothing reaches the mailbox later.

#[macro_use]
mod signal_common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use signal_common::*;
use starling::{
    exit, process, receive, receive_match_timeout, self_pid, send, spawn, spawn_link,
    spawn_monitor, Down, Exit, ExitReason, MonitorRef, Pid, Task, TaskError, Vm,
};

const SEEDS: std::ops::Range<u64> = 0..50;

#[derive(Debug)]
struct Go;

#[derive(Debug)]
struct ParentIs(Pid);

/// A per-run generator: seeded from the root's pid, so runs differ a little.
fn rng() -> Rng {
    let pid = self_pid().to_string();
    Rng::new(pid.bytes().map(u64::from).sum::<u64>() + 17)
}

fn exactly_once(vm: &Vm) {
    run(vm, || {
        process::trap_exit(true);
        const N: usize = 60;
        let mut kinds = HashMap::new();
        let mut monitors = HashMap::new();
        let mut pids = Vec::new();
        for i in 0..N {
            let pid = spawn_link(move || {
                let _: Go = expect("go");
                match i % 5 {
                    0 => {}
                    1 => panic!("boom"),
                    2 => exit(custom("custom")),
                    3 => process::sleep(Duration::MAX),
                    _ => exit(ExitReason::Kill),
                }
            });
            monitors.insert(process::monitor(pid), pid);
            kinds.insert(pid, i % 5);
            pids.push(pid);
        }
        for (i, &pid) in pids.iter().enumerate() {
            send(pid, Go);
            if i % 5 == 3 {
                process::exit(pid, ExitReason::Kill);
            }
        }
        let mut exits: HashMap<Pid, ExitReason> = HashMap::new();
        let mut downs: HashSet<MonitorRef> = HashSet::new();
        while exits.len() + downs.len() < 2 * N {
            receive! {
                e: Exit => {
                    assert!(kinds.contains_key(&e.from));
                    assert!(exits.insert(e.from, e.reason).is_none(), "a second Exit");
                },
                d: Down => {
                    assert_eq!(monitors.get(&d.monitor), Some(&d.pid));
                    assert!(downs.insert(d.monitor), "a second Down");
                    if let Some(reason) = exits.get(&d.pid) {
                        assert_eq!(*reason, d.reason, "link and monitor disagree");
                    }
                },
            }
        }
        for (pid, reason) in &exits {
            let ok = match (kinds[pid], reason) {
                (0, ExitReason::Normal) | (3, ExitReason::Killed) | (4, ExitReason::Kill) => true,
                (1, ExitReason::Panic(m)) => m == "boom",
                (2, r) => *r == custom("custom"),
                _ => false,
            };
            assert!(ok, "kind {}: {reason:?}", kinds[pid]);
        }
        assert_no_message::<Exit>(Duration::from_millis(5));
        assert_no_message::<Down>(Duration::ZERO);
    });
}

fn unlink_race(vm: &Vm) {
    run(vm, || {
        process::trap_exit(true);
        let mut rng = rng();
        for _ in 0..40 {
            let delay = rng.below(5) as u32;
            let linked = spawn_link(move || {
                spin(delay);
                exit(custom("racing"));
            });
            let m = process::monitor(linked);
            spin(rng.below(5) as u32);
            process::unlink(linked);
            wait_down_of(m, linked);
            assert_no_exit_from(linked, Duration::ZERO);
        }
        assert_no_message::<Exit>(Duration::from_millis(5));
        assert_eq!(mailbox_len(), 0);
    });
}

fn demonitor_race(vm: &Vm) {
    run(vm, || {
        let mut rng = rng();
        for _ in 0..40 {
            let delay = rng.below(5) as u32;
            let (target, m) = spawn_monitor(move || {
                spin(delay);
                exit(custom("racing"));
            });
            spin(rng.below(5) as u32);
            process::demonitor(m);
            assert_no_down(m, Duration::ZERO);
            wait_down(target);
            assert_no_down(m, Duration::ZERO);
        }
        assert_eq!(mailbox_len(), 0);
    });
}

fn ordering(vm: &Vm) {
    run(vm, || {
        process::trap_exit(true);
        let a = spawn_link(|| {
            let ParentIs(parent) = expect("parent");
            for i in 0..300u32 {
                send(parent, i);
            }
            panic!("after 300");
        });
        let m = process::monitor(a);
        send(a, ParentIs(self_pid()));
        let mut next = 0u32;
        let mut signals = 0;
        while signals < 2 {
            receive! {
                i: u32 => {
                    assert_eq!(i, next);
                    assert_eq!(signals, 0, "a message after a signal");
                    next += 1;
                },
                e: Exit => {
                    assert_eq!((e.from, next), (a, 300), "the Exit overtook messages");
                    signals += 1;
                },
                d: Down => {
                    assert_eq!((d.monitor, next), (m, 300), "the Down overtook messages");
                    signals += 1;
                },
            }
        }
    });
}

fn first_kill_wins(vm: &Vm) {
    run(vm, || {
        process::trap_exit(true);
        let mut rng = rng();
        for round in 0..5u64 {
            let target = spawn_link(|| process::sleep(Duration::MAX));
            let m = process::monitor(target);
            let killers: Vec<Pid> = (0..6u64)
                .map(|k| {
                    let delay = rng.below(4) as u32;
                    spawn(move || {
                        let _: Go = expect("go");
                        spin(delay);
                        let reason = if (k + round) % 6 == 0 {
                            ExitReason::Kill
                        } else {
                            custom(&format!("killer {k}"))
                        };
                        process::exit(target, reason);
                    })
                })
                .collect();
            for &k in &killers {
                send(k, Go);
            }
            let down = wait_down_of(m, target);
            assert!(
                down == ExitReason::Killed
                    || matches!(&down, ExitReason::Custom(s) if s.starts_with("killer ")),
                "{down:?}"
            );
            assert_eq!(wait_exit(target), down, "link and monitor disagree");
            assert_no_exit_from(target, Duration::ZERO);
        }
    });
}

fn task_timeout_flush(vm: &Vm) {
    run(vm, || {
        let mut rng = rng();
        for _ in 0..6 {
            let work = Duration::from_millis(rng.below(6));
            let limit = Duration::from_millis(rng.below(6));
            let task = Task::spawn(move || {
                process::yield_now();
                process::sleep(work);
                7u8
            });
            let pid = task.pid();
            match task.join_timeout(limit) {
                Ok(v) => assert_eq!(v, 7),
                Err(TaskError::Timeout) => assert!(!process::alive(pid), "not shut down"),
                Err(other) => panic!("unexpected {other:?}"),
            }
            process::sleep(Duration::from_millis(8));
            assert_eq!(
                mailbox_len(),
                0,
                "a late reply, Down or Exit reached the mailbox"
            );
            assert!(receive_match_timeout(|_: &Exit| true, Duration::ZERO).is_none());
        }
        assert!(process::info(self_pid()).unwrap().links.is_empty());
        assert!(process::info(self_pid()).unwrap().monitors.is_empty());
    });
}

macro_rules! randomized {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn schedulers_2() {
                crate::signal_common::with_randomized_vms(2, crate::SEEDS, super::$name);
            }

            #[test]
            fn schedulers_4() {
                crate::signal_common::with_randomized_vms(4, crate::SEEDS, super::$name);
            }
        }
    )*};
}

randomized!(
    exactly_once,
    unlink_race,
    demonitor_race,
    ordering,
    first_kill_wins,
    task_timeout_flush,
);
