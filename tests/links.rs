//! Links: ports of Erlang/OTP's `erl_link_SUITE` (and the link cases of `signal_SUITE`), plus
//! the link rules of API.md: link to a dead pid, exactly-once delivery, `unlink` racing an exit,
//! and per-pair ordering of messages and the `Exit` signal.
//!
//! Every case runs on VMs with 1, 2 and 4 schedulers (`signal_tests!`).
//!
//! Skipped OTP cases:
//! - erl_link_SUITE `dist_links`, `monitor_nodes`, `dist_process_monitors`, `otp_5772_dist_link`,
//!   `otp_5772_dist_monitor`, `otp_7946`: distribution (nodes, `noconnection`).
//! - erl_link_SUITE `busy_dist_port_monitor`, `busy_dist_port_link`: distribution ports.
//! - erl_link_SUITE `process_monitors`, `otp_5772_monitor`: monitors, ported in `monitors.rs`.
//! - signal_SUITE `busy_dist_unlink_ack_signal`: distribution.
//! - distribution_SUITE `link_to_busy`, `link_to_dead_new_node`: distribution; the local
//!   equivalent (`link_to_dead`) is covered by `link_to_dead_pid_*` below.

#[macro_use]
mod signal_common;

use std::collections::HashMap;
use std::time::Duration;

use signal_common::*;
use starling::{
    exit, process, receive, receive_match_timeout, self_pid, send, spawn, spawn_link,
    spawn_monitor, Exit, ExitReason, Pid,
};

#[derive(Debug)]
struct Go;

#[derive(Debug)]
struct Survived;

#[derive(Debug)]
struct ChildIs(Pid);

#[derive(Debug)]
struct ParentIs(Pid);

#[derive(Debug)]
struct GoFrom(Pid);

#[derive(Debug)]
struct Report(usize, ExitReason);

#[derive(Debug)]
struct Check;

#[derive(Debug)]
struct Clean(usize, bool);

signal_tests! {
    // erl_link_SUITE: links (common_link_test on the local node, then link/unlink of self)
    fn links(vm) {
        run(vm, || {
            let me = self_pid();
            let tp1 = TestProc::spawn();
            check_unlink(tp1.pid(), me);
            let tp2 = TestProc(tp1.call(|| TestProc::spawn_link().pid()));
            check_link(tp1.pid(), tp2.pid());
            let p1 = tp1.pid();
            tp2.call(move || process::unlink(p1));
            check_unlink(p1, tp2.pid());
            tp2.call(move || process::link(p1));
            check_link(p1, tp2.pid());
            assert!(!tp2.call(|| process::trap_exit(true)), "trap_exit returns the old value");
            tp1.cast(|| exit(custom("died")));
            assert_eq!(tp2.call(move || wait_exit(p1)), custom("died"));
            check_unlink(p1, tp2.pid());
            let tp3 = tp2.call(|| TestProc::spawn_link().pid());
            check_link(tp3, tp2.pid());
            let tp3_monitor = process::monitor(tp3);
            tp2.cast(|| exit(custom("died")));
            assert_eq!(
                wait_down_of(tp3_monitor, tp3),
                custom("died"),
                "a non-trapping linked process dies with the linked process's reason"
            );
            check_unlink(tp3, tp2.pid());
            // link(self()) is allowed and makes no link.
            process::link(me);
            assert!(!process::info(me).unwrap().links.contains(&me));
            process::unlink(me);
            assert!(process::info(me).unwrap().links.is_empty());
        });
    }

    // API.md: linking to a dead pid sends the caller an exit signal NoProc (trapping caller)
    fn link_to_dead_pid_gives_a_trapping_caller_exit_noproc(vm) {
        run(vm, || {
            process::trap_exit(true);
            let (dead, monitor) = spawn_monitor(|| {});
            assert_eq!(wait_down_of(monitor, dead), ExitReason::Normal);
            process::link(dead);
            let exit = receive_match_timeout(|e: &Exit| e.from == dead, Duration::ZERO)
                .expect("the Exit{NoProc} is queued when link returns");
            assert_eq!(exit.reason, ExitReason::NoProc);
            assert!(process::info(self_pid()).unwrap().links.is_empty(), "no link was made");
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: linking to a dead pid kills a non-trapping caller with NoProc
    fn link_to_dead_pid_kills_a_non_trapping_caller_with_noproc(vm) {
        run(vm, || {
            let parent = self_pid();
            let (dead, monitor) = spawn_monitor(|| {});
            wait_down_of(monitor, dead);
            let (linker, linker_monitor) = spawn_monitor(move || {
                process::link(dead);
                send(parent, Survived);
            });
            assert_eq!(wait_down_of(linker_monitor, linker), ExitReason::NoProc);
            assert_no_message::<Survived>(Duration::ZERO);
        });
    }

    // monitor_SUITE: otp_5827, for links: a pid that never named a process of this VM (here: a
    // live process of another VM) behaves as a dead pid
    fn link_to_a_pid_of_another_vm_gives_noproc(vm) {
        let other = build_vm(1);
        let foreign = other.spawn(|| process::sleep(Duration::MAX));
        run(vm, move || {
            process::trap_exit(true);
            process::link(foreign);
            assert_eq!(wait_exit(foreign), ExitReason::NoProc);
            assert!(process::info(self_pid()).unwrap().links.is_empty());
        });
        drop(other);
    }

    // erl_link_SUITE: otp_5772_link (exit/2 then unlink: no EXIT may arrive after unlink)
    fn otp_5772_link(vm) {
        run(vm, || {
            let old = process::trap_exit(true);
            assert!(!old);
            for _ in 0..20 {
                let tp1 = TestProc::spawn_link().pid();
                process::exit(tp1, custom("bang"));
                process::unlink(tp1);
                // OTP lets one EXIT through here (`after 0`); Starling's unlink removes an
                // already queued one, so none may be left.
                assert_no_exit_from(tp1, Duration::ZERO);
                assert_no_exit_from(tp1, Duration::from_millis(10));
            }
            assert!(process::trap_exit(old));
        });
    }

    // API.md: after unlink returns no Exit from that link arrives, also when the linked
    // process dies right then (raced many times with shifting timing)
    fn unlink_racing_the_linked_process_exit_never_delivers_an_exit(vm) {
        run(vm, || {
            process::trap_exit(true);
            let mut rng = Rng::new(5772);
            for _ in 0..300 {
                let delay = rng.below(4) as u32;
                let linked = spawn_link(move || {
                    spin(delay);
                    exit(custom("racing"));
                });
                let monitor = process::monitor(linked);
                spin(rng.below(4) as u32);
                process::unlink(linked);
                let reason = wait_down_of(monitor, linked);
                assert!(
                    reason == custom("racing") || reason == ExitReason::NoProc,
                    "unexpected reason {reason:?}"
                );
                assert_no_exit_from(linked, Duration::ZERO);
                assert!(process::info(self_pid()).unwrap().links.is_empty());
            }
            assert_no_message::<Exit>(Duration::from_millis(20));
        });
    }

    // signal_SUITE: unlink_exit (OTP-18177): a child linking to a parent that has just
    // unlinked it and is exiting gets Exit{bye} or Exit{noproc}, never nothing (and noproc if
    // the parent was already not alive)
    fn unlink_exit(vm) {
        run(vm, || {
            let tester = self_pid();
            for _ in 0..150 {
                let (parent, parent_monitor) = spawn_monitor(move || {
                    let child = spawn_link(move || {
                        process::trap_exit(true);
                        send(tester, ChildIs(self_pid()));
                        let ParentIs(parent) = expect("the parent's pid");
                        send(parent, GoFrom(self_pid()));
                        while receive_match_timeout(|g: &GoFrom| g.0 == parent, Duration::ZERO)
                            .is_none()
                        {
                            process::yield_now();
                        }
                        let was_alive = process::alive(parent);
                        process::link(parent);
                        let got = receive_match_timeout(
                            |e: &Exit| e.from == parent,
                            Duration::from_secs(5),
                        );
                        let verdict = match (was_alive, got) {
                            (false, Some(e)) if e.reason == ExitReason::NoProc => "ok".into(),
                            (true, Some(e))
                                if e.reason == ExitReason::NoProc
                                    || e.reason == custom("bye") =>
                            {
                                "ok".into()
                            }
                            (alive, Some(e)) => format!("alive={alive}: unexpected {e:?}"),
                            (alive, None) => format!("alive={alive}: missing exit"),
                        };
                        exit(ExitReason::Custom(verdict));
                    });
                    let _ = starling::receive_match(|g: &GoFrom| g.0 == child);
                    process::unlink(child);
                    send(child, GoFrom(self_pid()));
                    exit(custom("bye"));
                });
                let ChildIs(child) = expect("the child's pid");
                let child_monitor = process::monitor(child);
                send(child, ParentIs(parent));
                assert_eq!(wait_down_of(parent_monitor, parent), custom("bye"));
                assert_eq!(wait_down_of(child_monitor, child), custom("ok"));
            }
        });
    }

    // signal_SUITE: unlink_exit, deterministic form (OTP-18177): a process that is exiting is
    // no longer alive, and linking to it gives NoProc, not its exit reason
    fn link_to_an_exiting_process_gives_noproc(vm) {
        run(vm, || {
            process::trap_exit(true);
            let gate = ExitGate::new();
            let held = gate.clone();
            let (p, m) = spawn_monitor(move || {
                held.hold();
                exit(custom("bye"));
            });
            eventually("the process is exiting", || gate.entered());
            let alive = process::alive(p);
            let info = process::info(p);
            process::link(p);
            gate.release();
            assert!(!alive, "an exiting process is not alive");
            assert_eq!(info, None);
            assert_eq!(wait_down_of(m, p), custom("bye"));
            assert_eq!(wait_exit(p), ExitReason::NoProc, "link to an exiting process");
            assert!(process::info(self_pid()).unwrap().links.is_empty());
        });
    }

    // API.md: when a process ends, every link fires exactly once (all kinds of endings)
    fn every_link_fires_exactly_once(vm) {
        run(vm, || {
            process::trap_exit(true);
            const N: usize = 240;
            let mut kinds = HashMap::new();
            let mut pids = Vec::new();
            for i in 0..N {
                let pid = spawn_link(move || {
                    let _: Go = expect("go");
                    match i % 6 {
                        0 => {}
                        1 => panic!("boom {i}"),
                        2 => exit(custom("custom")),
                        3 => process::exit(self_pid(), custom("self")),
                        4 => process::sleep(Duration::MAX),
                        _ => exit(ExitReason::Kill),
                    }
                });
                kinds.insert(pid, i % 6);
                pids.push(pid);
            }
            for (i, &pid) in pids.iter().enumerate() {
                send(pid, Go);
                if i % 6 == 4 {
                    process::exit(pid, ExitReason::Kill);
                }
            }
            let mut seen: HashMap<Pid, ExitReason> = HashMap::new();
            while seen.len() < N {
                let e: Exit = expect("an Exit from a linked process");
                let kind = kinds.get(&e.from).copied().expect("an Exit from one of ours");
                match (kind, &e.reason) {
                    (0, ExitReason::Normal)
                    | (4, ExitReason::Killed)
                    | (5, ExitReason::Kill) => {}
                    (1, ExitReason::Panic(message)) if message.starts_with("boom") => {}
                    (2, r) if *r == custom("custom") => {}
                    (3, r) if *r == custom("self") => {}
                    _ => panic!("kind {kind}: unexpected {e:?}"),
                }
                assert!(seen.insert(e.from, e.reason).is_none(), "a second Exit from {}", e.from);
            }
            assert_no_message::<Exit>(Duration::from_millis(30));
            assert!(process::info(self_pid()).unwrap().links.is_empty());
            for pid in pids {
                assert!(!process::alive(pid));
            }
        });
    }

    // API.md: links made while the target is dying fire exactly once (its reason or NoProc)
    fn links_made_while_the_target_dies_fire_exactly_once(vm) {
        run(vm, || {
            let me = self_pid();
            for round in 0..15u32 {
                let target = spawn(move || {
                    let _: Go = expect("go");
                    spin(round % 4);
                    exit(custom("target_down"));
                });
                let linkers: Vec<Pid> = (0..16usize)
                    .map(|j| {
                        spawn(move || {
                            process::trap_exit(true);
                            spin(j as u32 % 5);
                            process::link(target);
                            send(me, Report(j, wait_exit(target)));
                            let _: Check = expect("check");
                            let clean =
                                receive_match_timeout(|e: &Exit| e.from == target, Duration::ZERO)
                                    .is_none();
                            send(me, Clean(j, clean));
                        })
                    })
                    .collect();
                send(target, Go);
                for _ in 0..linkers.len() {
                    let Report(j, reason) = expect("a linker's report");
                    assert!(
                        reason == custom("target_down") || reason == ExitReason::NoProc,
                        "linker {j} got {reason:?}"
                    );
                }
                process::sleep(Duration::from_millis(5));
                for &linker in &linkers {
                    send(linker, Check);
                }
                for _ in 0..linkers.len() {
                    let Clean(j, clean) = expect("a linker's check");
                    assert!(clean, "linker {j} got a second Exit");
                }
            }
        });
    }

    // API.md guarantee 1: A sends 1000 messages then panics; a trapping linked B receives all
    // 1000, in order, before the Exit
    fn messages_sent_before_a_crash_arrive_before_its_exit(vm) {
        run(vm, || {
            process::trap_exit(true);
            for _ in 0..5 {
                let a = spawn_link(|| {
                    let parent = expect::<ParentIs>("parent").0;
                    for i in 0..1000u32 {
                        send(parent, i);
                    }
                    panic!("after 1000 messages");
                });
                send(a, ParentIs(self_pid()));
                let mut next = 0u32;
                loop {
                    let done = receive! {
                        i: u32 => {
                            assert_eq!(i, next, "messages arrive in send order");
                            next += 1;
                            false
                        },
                        e: Exit => {
                            assert_eq!(e.from, a);
                            assert_eq!(next, 1000, "the Exit overtook messages");
                            assert_eq!(e.reason, ExitReason::Panic("after 1000 messages".into()));
                            true
                        },
                    };
                    if done {
                        break;
                    }
                }
            }
        });
    }

    // erl_link_SUITE: common_link_test (spawn_link makes the link before the child runs: a
    // child that dies at once still gives its reason, never NoProc)
    fn spawn_link_links_before_the_child_runs(vm) {
        run(vm, || {
            process::trap_exit(true);
            for i in 0..50 {
                let child = if i % 2 == 0 {
                    spawn_link(|| panic!("at once"))
                } else {
                    spawn_link(|| exit(custom("at once")))
                };
                let reason = wait_exit(child);
                if i % 2 == 0 {
                    assert_eq!(reason, ExitReason::Panic("at once".into()));
                } else {
                    assert_eq!(reason, custom("at once"));
                }
            }
        });
    }

    // Erlang link semantics: a Normal exit along a link is ignored by a non-trapping process
    // and delivered as Exit{normal} to a trapping one
    fn a_normal_exit_along_a_link_is_ignored_unless_trapping(vm) {
        run(vm, || {
            let parent = self_pid();
            let survivor = TestProc::spawn();
            let trapper = TestProc::spawn();
            trapper.call(|| process::trap_exit(true));
            let finisher = survivor.call(|| spawn_link(|| {
                let _: Go = expect("go");
            }));
            trapper.call(move || process::link(finisher));
            let m = process::monitor(finisher);
            send(finisher, Go);
            assert_eq!(wait_down_of(m, finisher), ExitReason::Normal);
            assert_eq!(trapper.call(move || wait_exit(finisher)), ExitReason::Normal);
            // The non-trapping one is alive and well.
            assert_eq!(survivor.call(move || { send(parent, Survived); 7 }), 7);
            let _: Survived = expect("survivor's message");
            assert!(process::info(survivor.pid()).unwrap().links.is_empty());
        });
    }

    // Erlang: links form a set — linking twice makes one link, and one Exit
    fn linking_twice_makes_one_link(vm) {
        run(vm, || {
            process::trap_exit(true);
            let other = spawn_sleeper();
            process::link(other);
            process::link(other);
            assert_eq!(process::info(self_pid()).unwrap().links, vec![other]);
            assert_eq!(process::info(other).unwrap().links, vec![self_pid()]);
            process::exit(other, custom("bye"));
            assert_eq!(wait_exit(other), custom("bye"));
            assert_no_message::<Exit>(Duration::from_millis(20));
        });
    }

    // Erlang: unlink of a pid that is not linked (alive or dead) is a no-op
    fn unlink_of_an_unlinked_or_dead_pid_is_a_no_op(vm) {
        run(vm, || {
            let stranger = spawn_sleeper();
            let friend = spawn_link(|| process::sleep(Duration::MAX));
            let (dead, m) = spawn_monitor(|| {});
            wait_down_of(m, dead);
            process::unlink(stranger);
            process::unlink(dead);
            assert_eq!(process::info(self_pid()).unwrap().links, vec![friend]);
            assert_eq!(process::info(friend).unwrap().links, vec![self_pid()]);
            process::unlink(friend);
            let m = process::monitor(friend);
            process::exit(stranger, ExitReason::Kill);
            process::exit(friend, ExitReason::Kill);
            assert_eq!(wait_down_of(m, friend), ExitReason::Killed);
        });
    }

    // API.md: unlink also removes an Exit from that link that is already queued
    fn unlink_removes_an_exit_already_queued(vm) {
        run(vm, || {
            process::trap_exit(true);
            let linked = spawn_link(|| exit(custom("gone")));
            eventually("the Exit is queued", || mailbox_len() == 1);
            process::unlink(linked);
            assert_eq!(mailbox_len(), 0);
            assert_no_exit_from(linked, Duration::from_millis(10));
        });
    }

    // Erlang unlink/1 docs: an {'EXIT', Id, _} already queued "can also be the result of Id
    // calling exit/2" — that signal does not come from the link, and unlink must not drop it
    fn unlink_keeps_an_exit_signal_sent_with_exit_2(vm) {
        run(vm, || {
            process::trap_exit(true);
            let me = self_pid();
            let linked = spawn_link(move || {
                process::exit(me, custom("explicit"));
                process::sleep(Duration::MAX);
            });
            eventually("the explicit Exit is queued", || mailbox_len() == 1);
            process::unlink(linked);
            let e = receive_match_timeout(|e: &Exit| e.from == linked, Duration::ZERO)
                .expect("the Exit sent with exit/2 is still there after unlink");
            assert_eq!(e.reason, custom("explicit"));
            process::exit(linked, ExitReason::Kill);
        });
    }
}

signal_tests! {
    // Not from OTP: a process trapping exits, linked to thousands of processes, some unlinked,
    // all ending in the reverse of their spawn order, gets exactly one `Exit` from each one it
    // is still linked to, and has no links afterwards (links are a hash set: every one is
    // found wherever it sits; `benches/benches/relations.rs` times the same).
    fn many_links_end_in_any_order(vm) {
        run(vm, || {
            const LINKED: usize = 3_000;
            process::trap_exit(true);
            let linked: Vec<Pid> = (0..LINKED)
                .map(|_| spawn_link(receive::<()>))
                .collect();
            let mut expected = HashMap::new();
            for (i, &pid) in linked.iter().enumerate() {
                if i % 3 == 1 {
                    process::unlink(pid);
                } else {
                    expected.insert(pid, ());
                }
            }
            assert_eq!(process::info(self_pid()).unwrap().links.len(), expected.len());
            for &pid in linked.iter().rev() {
                send(pid, ());
            }
            for _ in 0..expected.len() {
                let exit: Exit = expect("an Exit");
                assert_eq!(expected.remove(&exit.from), Some(()), "{exit:?}");
                assert_eq!(exit.reason, ExitReason::Normal);
            }
            assert!(process::info(self_pid()).unwrap().links.is_empty());
            assert!(
                receive_match_timeout(|_: &Exit| true, Duration::from_millis(50)).is_none(),
                "an Exit from an unlinked process"
            );
        });
    }
}
