//! Monitors: ports of Erlang/OTP's `monitor_SUITE`, the process-monitor cases of
//! `erl_link_SUITE` and the monitor-ordering cases of `signal_SUITE`, plus the monitor rules of
//! API.md: `Down{NoProc}` at once for a dead pid, `monitor(self_pid())` never fires, every
//! monitor fires exactly once, `demonitor` also removes a queued `Down`, and `Down` is ordered
//! after the messages the monitored process sent.
//!
//! Starling's `demonitor` is Erlang's `demonitor(Ref, [flush])` (API.md), so the cases that
//! expect a `'DOWN'` to survive a plain `demonitor/1` are ported with the flush semantics.
//!
//! Skipped OTP cases:
//! - monitor_SUITE `mon_e_1`, `demon_e_1` (bad argument types), `demonitor_flush`'s badarg
//!   part: the Rust types make those calls unrepresentable (a `MonitorRef` comes only from
//!   `monitor`).
//! - monitor_SUITE `demon_3`, `mon_2`, `remote_remove_monitor`, the remote parts of
//!   `list_cleanup` and `mixer`, erl_link_SUITE `dist_process_monitors`,
//!   `busy_dist_port_monitor`, `otp_5772_dist_monitor`, signal_SUITE
//!   `busy_dist_demonitor_signal`, `busy_dist_down_signal`, `monitor_named_order_remote`,
//!   `monitor_nodes_order`: distribution.
//! - monitor_SUITE `monitor_time_offset`: time-offset monitors (no such API).
//! - monitor_SUITE `named_down`: ported in `registry.rs`.
//! - Monitoring by registered name (`erlang:monitor(process, Name)`, the named parts of `mon_1`,
//!   `list_cleanup`, erl_link_SUITE `process_monitors`): `process::monitor` takes a pid only; the
//!   name is resolved with `whereis` where the case still makes sense.
//! - signal_SUITE `monitor_named_order_local`: ported with the name resolved by `whereis` and
//!   without aliases (no alias API).

#[macro_use]
mod signal_common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use signal_common::*;
use starling::{
    exit, process, receive, receive_match_timeout, self_pid, send, spawn, spawn_link,
    spawn_monitor, Down, Exit, ExitReason, MonitorRef, Pid,
};

#[derive(Debug)]
struct Go;

#[derive(Debug)]
struct Ok;

#[derive(Debug)]
struct DemonitorDone;

#[derive(Debug)]
struct ParentIs(Pid);

#[derive(Debug)]
struct Tagged(Pid, MonitorRef, u8);

#[derive(Debug)]
struct Report(usize, ExitReason);

#[derive(Debug)]
struct Check;

#[derive(Debug)]
struct Clean(usize, bool);

#[derive(Debug)]
struct GroupDone(Pid, usize);

/// monitor_SUITE's `g(Parent)`: waits for `Ok`, then sends its parent an exit signal `foo`.
fn g(parent: Pid) {
    let _: Ok = expect("ok");
    process::exit(parent, custom("foo"));
}

/// OTP's `check_process_monitor(From, To)`: `from` lists `to` among its monitors and `to` lists
/// `from` among the processes monitoring it.
#[track_caller]
fn check_process_monitor(from: Pid, to: Pid) {
    let monitors = process::info(from).unwrap().monitors;
    let monitored_by = process::info(to).unwrap().monitored_by;
    assert!(
        monitors.contains(&to),
        "{from} does not monitor {to}: {monitors:?}"
    );
    assert!(
        monitored_by.contains(&from),
        "{to} not monitored by {from}: {monitored_by:?}"
    );
}

/// OTP's `check_process_demonitor(From, To)`.
#[track_caller]
fn check_process_demonitor(from: Pid, to: Pid) {
    if let Some(info) = process::info(from) {
        assert!(!info.monitors.contains(&to), "{from} still monitors {to}");
    }
    if let Some(info) = process::info(to) {
        assert!(
            !info.monitored_by.contains(&from),
            "{to} still monitored by {from}"
        );
    }
}

fn sorted(mut pids: Vec<Pid>) -> Vec<Pid> {
    pids.sort();
    pids
}

signal_tests! {
    // monitor_SUITE: case_1 (A monitors B, B kills A and then exits)
    fn case_1(vm) {
        run(vm, || {
            process::trap_exit(true);
            let a = spawn_link(|| {
                let me = self_pid();
                let b = spawn(move || g(me));
                process::monitor(b);
                send(b, Ok);
                let _: Ok = expect("never sent");
            });
            assert_eq!(wait_exit(a), custom("foo"));
        });
    }

    // monitor_SUITE: case_1a (same, with spawn_monitor)
    fn case_1a(vm) {
        run(vm, || {
            process::trap_exit(true);
            let a = spawn_link(|| {
                let me = self_pid();
                let (b, _) = spawn_monitor(move || g(me));
                send(b, Ok);
                let _: Ok = expect("never sent");
            });
            assert_eq!(wait_exit(a), custom("foo"));
        });
    }

    // monitor_SUITE: case_2 (B demonitors A's monitor: no effect, A still gets its Down)
    fn case_2(vm) {
        run(vm, || {
            let parent = self_pid();
            let b = spawn(move || {
                let r: MonitorRef = expect("the monitor reference");
                process::demonitor(r);
                send(parent, DemonitorDone);
            });
            let r = process::monitor(b);
            send(b, r);
            let _: DemonitorDone = expect("B's answer");
            assert_eq!(wait_down_of(r, b), ExitReason::Normal);
        });
    }

    // monitor_SUITE: case_2a (same, with spawn_monitor)
    fn case_2a(vm) {
        run(vm, || {
            let parent = self_pid();
            let (b, r) = spawn_monitor(move || {
                let r: MonitorRef = expect("the monitor reference");
                process::demonitor(r);
                send(parent, DemonitorDone);
            });
            send(b, r);
            let _: DemonitorDone = expect("B's answer");
            assert_eq!(wait_down_of(r, b), ExitReason::Normal);
        });
    }

    // monitor_SUITE: demon_1 (demonitor of a reference that monitors nothing is a no-op)
    fn demon_1(vm) {
        run(vm, || {
            let (p, m) = spawn_monitor(|| {});
            wait_down_of(m, p);
            process::demonitor(m);
            process::demonitor(m);
            assert_eq!(mailbox_len(), 0);
        });
    }

    // monitor_SUITE: demon_2
    fn demon_2(vm) {
        run(vm, || {
            let r1 = process::monitor(self_pid());
            process::demonitor(r1);
            // Extra demonitor.
            process::demonitor(r1);
            assert_eq!(mailbox_len(), 0, "expect_no_msg");
            // Normal 'DOWN'.
            let p2 = spawn(|| process::sleep(Duration::from_millis(1)));
            let r2 = process::monitor(p2);
            let reason = wait_down_of(r2, p2);
            assert!(reason == ExitReason::Normal || reason == ExitReason::NoProc, "{reason:?}");
            // Demonitor before 'DOWN'.
            let p4 = spawn_sleeper();
            let r4 = process::monitor(p4);
            process::demonitor(r4);
            let watch = process::monitor(p4);
            process::exit(p4, custom("frop"));
            assert_eq!(wait_down_of(watch, p4), custom("frop"));
            assert_no_down(r4, Duration::ZERO);
            assert_eq!(mailbox_len(), 0, "expect_no_msg");
        });
    }

    // monitor_SUITE: demonitor_flush (and API.md: demonitor also removes a queued Down)
    fn demonitor_flush(vm) {
        run(vm, || {
            let p = spawn_sleeper();
            let m1 = process::monitor(p);
            let m2 = process::monitor(p);
            let m3 = process::monitor(p);
            let m4 = process::monitor(p);
            process::demonitor(m1);
            process::exit(p, custom("bang"));
            assert_eq!(wait_down_of(m2, p), custom("bang"));
            eventually("the Downs of M3 and M4 are queued", || mailbox_len() == 2);
            process::demonitor(m3);
            assert_eq!(mailbox_len(), 1, "demonitor(M3) removed its queued Down");
            // OTP's demonitor(M4, []) keeps the Down; Starling's demonitor always flushes.
            process::demonitor(m4);
            assert_eq!(mailbox_len(), 0, "demonitor(M4) removed its queued Down");
            for m in [m1, m3, m4] {
                assert_no_down(m, Duration::ZERO);
            }
            assert_no_message::<Down>(Duration::from_millis(10));
        });
    }

    // monitor_SUITE: local_remove_monitor (monitor processes that exit at once, demonitor: no
    // Down may be left behind, whether it had arrived or not)
    fn local_remove_monitor(vm) {
        run(vm, || {
            let master = self_pid();
            let groups: Vec<Pid> = (0..10)
                .map(|_| {
                    spawn_link(move || {
                        let monitors: Vec<MonitorRef> = (0..60)
                            .map(|_| process::monitor(spawn(|| {})))
                            .collect();
                        let mut had_arrived = 0;
                        for m in monitors {
                            if mailbox_len() > 0 {
                                had_arrived += 1;
                            }
                            process::demonitor(m);
                            if receive_match_timeout(|d: &Down| d.monitor == m, Duration::ZERO)
                                .is_some()
                            {
                                exit(custom("down_msg_found"));
                            }
                        }
                        assert_eq!(mailbox_len(), 0);
                        send(master, GroupDone(self_pid(), had_arrived));
                    })
                })
                .collect();
            let mut arrived = 0;
            for _ in &groups {
                let GroupDone(group, had_arrived) = expect("a group's result");
                assert!(groups.contains(&group));
                arrived += had_arrived;
            }
            // OTP prints the split between monitors removed before and after their Down came.
            assert!(arrived <= groups.len() * 60);
        });
    }

    // monitor_SUITE: mon_1 (local cases; the named ones resolve the name with whereis)
    fn mon_1(vm) {
        run(vm, || {
            // Normal case.
            let p2 = spawn(|| process::sleep(Duration::from_millis(1)));
            let r2 = process::monitor(p2);
            let reason = wait_down_of(r2, p2);
            assert!(reason == ExitReason::Normal || reason == ExitReason::NoProc, "{reason:?}");
            let (p2a, r2a) = spawn_monitor(|| process::sleep(Duration::from_millis(1)));
            assert_eq!(wait_down_of(r2a, p2a), ExitReason::Normal);
            // 'DOWN' with other reason.
            let p3 = spawn_sleeper();
            let r3 = process::monitor(p3);
            process::exit(p3, custom("frop"));
            assert_eq!(wait_down_of(r3, p3), custom("frop"));
            let (p3a, r3a) = spawn_monitor(|| process::sleep(Duration::MAX));
            process::exit(p3a, custom("frop"));
            assert_eq!(wait_down_of(r3a, p3a), custom("frop"));
            // Monitor fails because process is dead: Down{noproc} at once.
            let r4 = process::monitor(p3);
            let down = receive_match_timeout(|d: &Down| d.monitor == r4, Duration::ZERO)
                .expect("Down{NoProc} is queued when monitor returns");
            assert_eq!((down.pid, down.reason), (p3, ExitReason::NoProc));
            // Named process (jeeves), resolved with whereis.
            let jeeves = TestProc::spawn();
            process::register("jeeves", jeeves.pid()).unwrap();
            let r5 = process::monitor(process::whereis("jeeves").unwrap());
            jeeves.cast(|| exit(ExitReason::Normal));
            assert_eq!(wait_down_of(r5, jeeves.pid()), ExitReason::Normal);
            assert_eq!(process::whereis("jeeves"), None);
        });
    }

    // monitor_SUITE: otp_5827 (monitoring a pid that is not a process of this VM gives
    // Down{noproc} right away instead of hanging): a pid of another, live VM
    fn otp_5827(vm) {
        let other = build_vm(1);
        let foreign = other.spawn(|| process::sleep(Duration::MAX));
        run(vm, move || {
            let m = process::monitor(foreign);
            let down = receive_match_timeout(|d: &Down| d.monitor == m, Duration::from_secs(1))
                .expect("monitor of a foreign pid hangs");
            assert_eq!((down.pid, down.reason), (foreign, ExitReason::NoProc));
        });
        drop(other);
    }

    // monitor_SUITE: large_exit (a large exit reason reaches the monitor intact)
    fn large_exit(vm) {
        run(vm, || {
            for i in 0..20 {
                let big: String = format!("{{big, tuple, with, [list, {i}]}}").repeat(2000);
                let reason = ExitReason::Custom(big.clone());
                let p = spawn(move || {
                    let _: Go = expect("hej");
                    exit(ExitReason::Custom(big));
                });
                let r = process::monitor(p);
                send(p, Go);
                assert_eq!(wait_down_of(r, p), reason);
            }
        });
    }

    // monitor_SUITE: list_cleanup (local part: monitors/monitored_by are cleaned up on
    // demonitor, on the monitored process's exit and on the monitoring process's exit)
    fn list_cleanup(vm) {
        run(vm, || {
            let p0 = self_pid();
            let monitors = || {
                let info = process::info(p0).unwrap();
                (info.monitors, info.monitored_by)
            };
            let none: (Vec<Pid>, Vec<Pid>) = (vec![], vec![]);
            // Normal local case, monitor and demonitor.
            let p1 = TestProc::spawn();
            assert_eq!(monitors(), none);
            let r1a = process::monitor(p1.pid());
            assert_eq!(monitors(), (vec![p1.pid()], vec![]));
            assert_eq!(process::info(p1.pid()).unwrap().monitored_by, vec![p0]);
            process::demonitor(r1a);
            assert_eq!(mailbox_len(), 0);
            assert_eq!(monitors(), none);
            assert!(process::info(p1.pid()).unwrap().monitored_by.is_empty());
            // Monitor again, now the monitored process exits.
            let r1b = process::monitor(p1.pid());
            p1.cast(|| exit(ExitReason::Normal));
            assert_eq!(wait_down_of(r1b, p1.pid()), ExitReason::Normal);
            assert_eq!(monitors(), none);
            // The monitoring process crashes.
            let p2 = TestProc::spawn();
            p2.call(move || process::monitor(p0));
            assert_eq!(monitors(), (vec![], vec![p2.pid()]));
            assert_eq!(process::info(p2.pid()).unwrap().monitors, vec![p0]);
            let m2 = process::monitor(p2.pid());
            p2.cast(|| exit(custom("frop")));
            assert_eq!(wait_down_of(m2, p2.pid()), custom("frop"));
            assert_eq!(monitors(), none, "a dead monitoring process is removed at once");
            assert_eq!(mailbox_len(), 0);
        });
    }

    // monitor_SUITE: mixer (local part: monitors and monitored_by with many monitors at once)
    fn mixer(vm) {
        run(vm, || {
            let me = self_pid();
            let my = || {
                let info = process::info(me).unwrap();
                (sorted(info.monitors), sorted(info.monitored_by))
            };
            let start = || -> Vec<TestProc> { (0..8).map(|_| TestProc::spawn()).collect() };
            let pids = |js: &[TestProc]| sorted(js.iter().map(|j| j.pid()).collect());
            // 1: they monitor me, then exit.
            let js = start();
            for j in &js {
                j.call(move || process::monitor(me));
            }
            assert_eq!(my(), (vec![], pids(&js)));
            let watch: Vec<_> = js.iter().map(|j| (j.pid(), process::monitor(j.pid()))).collect();
            for j in &js {
                j.cast(|| exit(custom("flaff")));
            }
            for (p, m) in watch {
                wait_down_of(m, p);
            }
            assert_eq!(my(), (vec![], vec![]));
            // 2: they monitor me, then demonitor.
            let js = start();
            let refs: Vec<_> = js.iter().map(|j| (*j, j.call(move || process::monitor(me)))).collect();
            assert_eq!(my(), (vec![], pids(&js)));
            for (j, r) in refs {
                j.call(move || process::demonitor(r));
            }
            assert_eq!(my(), (vec![], vec![]));
            for j in &js {
                j.cast(|| exit(custom("flaff")));
            }
            // 3: both ways, then they exit.
            let js = start();
            for j in &js {
                j.call(move || process::monitor(me));
            }
            let mine: Vec<_> = js.iter().map(|j| (j.pid(), process::monitor(j.pid()))).collect();
            assert_eq!(my(), (pids(&js), pids(&js)));
            for (j, (p, m)) in js.iter().zip(&mine) {
                j.cast(|| exit(custom("flaff")));
                assert_eq!(wait_down_of(*m, *p), custom("flaff"));
            }
            assert_eq!(my(), (vec![], vec![]));
            // 4: both ways, then both demonitor.
            let js = start();
            let theirs: Vec<_> = js.iter().map(|j| (*j, j.call(move || process::monitor(me)))).collect();
            let mine: Vec<_> = js.iter().map(|j| process::monitor(j.pid())).collect();
            assert_eq!(my(), (pids(&js), pids(&js)));
            for (j, r) in theirs {
                j.call(move || process::demonitor(r));
            }
            assert_eq!(my(), (pids(&js), vec![]));
            for r in mine {
                process::demonitor(r);
            }
            assert_eq!(my(), (vec![], vec![]));
            for j in &js {
                j.cast(|| exit(custom("flaff")));
            }
            assert_eq!(mailbox_len(), 0);
        });
    }

    // erl_link_SUITE: process_monitors (common_process_monitors on the local node, then a
    // monitor of self that never fires)
    fn process_monitors(vm) {
        run(vm, || {
            let tp1 = TestProc::spawn();
            let tp2 = TestProc::spawn();
            let (p1, p2) = (tp1.pid(), tp2.pid());
            let r1 = tp1.call(move || process::monitor(p2));
            check_process_monitor(p1, p2);
            // Only the monitoring process can remove its monitor.
            tp2.call(move || process::demonitor(r1));
            check_process_monitor(p1, p2);
            tp1.call(move || process::demonitor(r1));
            check_process_demonitor(p1, p2);
            let r2 = tp1.call(move || process::monitor(p2));
            check_process_monitor(p1, p2);
            let watch = process::monitor(p2);
            tp2.cast(|| exit(custom("bye")));
            wait_down_of(watch, p2);
            assert_eq!(tp1.call(move || wait_down_of(r2, p2)), custom("bye"));
            check_process_demonitor(p1, p2);
            let r3 = tp1.call(move || process::monitor(p2));
            assert_eq!(tp1.call(move || wait_down_of(r3, p2)), ExitReason::NoProc);
            check_process_demonitor(p1, p2);
            let watch = process::monitor(p1);
            tp1.cast(|| exit(ExitReason::Normal));
            assert_eq!(wait_down_of(watch, p1), ExitReason::Normal);
            // A monitor of oneself is not recorded and never fires.
            let me = self_pid();
            let mon1 = process::monitor(me);
            assert!(!process::info(me).unwrap().monitors.contains(&me));
            assert!(!process::info(me).unwrap().monitored_by.contains(&me));
            assert_no_down(mon1, Duration::from_millis(50));
            process::demonitor(mon1);
        });
    }

    // erl_link_SUITE: otp_5772_monitor (exit/2 then demonitor: no Down may arrive later)
    fn otp_5772_monitor(vm) {
        run(vm, || {
            for _ in 0..20 {
                let tp1 = spawn_sleeper();
                let m1 = process::monitor(tp1);
                process::exit(tp1, custom("bang"));
                process::demonitor(m1);
                assert_no_down(m1, Duration::ZERO);
                assert_no_down(m1, Duration::from_millis(10));
            }
        });
    }

    // API.md: monitoring a dead pid delivers Down{NoProc} at once
    fn monitor_of_a_dead_pid_delivers_noproc_at_once(vm) {
        run(vm, || {
            for _ in 0..20 {
                let (dead, m) = spawn_monitor(|| {});
                wait_down_of(m, dead);
                let again = process::monitor(dead);
                let down = receive_match_timeout(|d: &Down| d.monitor == again, Duration::ZERO)
                    .expect("Down{NoProc} is in the mailbox when monitor returns");
                assert_eq!(down.pid, dead);
                assert_eq!(down.reason, ExitReason::NoProc);
                assert!(process::info(self_pid()).unwrap().monitors.is_empty());
            }
        });
    }

    // erlang:monitor/2 docs (and signal_SUITE unlink_exit's reasoning, OTP-18177): monitoring
    // a process that is exiting (no longer alive) gives Down{noproc}, not its exit reason
    fn monitor_of_an_exiting_process_gives_noproc(vm) {
        run(vm, || {
            let gate = ExitGate::new();
            let held = gate.clone();
            let (p, m) = spawn_monitor(move || {
                held.hold();
                exit(custom("bye"));
            });
            eventually("the process is exiting", || gate.entered());
            let alive = process::alive(p);
            let m2 = process::monitor(p);
            gate.release();
            assert!(!alive, "an exiting process is not alive");
            assert_eq!(wait_down_of(m, p), custom("bye"));
            assert_eq!(wait_down_of(m2, p), ExitReason::NoProc, "monitor of an exiting process");
        });
    }

    // API.md: monitor(self_pid()) is allowed and never fires (also not when the process ends)
    fn monitor_of_self_never_fires(vm) {
        run(vm, || {
            let parent = self_pid();
            let (child, m) = spawn_monitor(move || {
                let own = process::monitor(self_pid());
                send(parent, own);
                process::exit(self_pid(), custom("done"));
            });
            let own: MonitorRef = expect("the child's own monitor");
            assert_eq!(wait_down_of(m, child), custom("done"));
            assert_no_down(own, Duration::from_millis(20));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: when a process ends every monitor fires exactly once (several monitors per
    // target, several watchers, all kinds of endings)
    fn every_monitor_fires_exactly_once(vm) {
        run(vm, || {
            const N: usize = 150;
            let me = self_pid();
            let targets: Vec<Pid> = (0..N)
                .map(|i| {
                    spawn(move || {
                        let _: Go = expect("go");
                        match i % 5 {
                            0 => {}
                            1 => panic!("boom"),
                            2 => exit(custom("custom")),
                            3 => process::sleep(Duration::MAX),
                            _ => exit(ExitReason::Kill),
                        }
                    })
                })
                .collect();
            // A second watcher monitors every target twice too and reports its count.
            let list = targets.clone();
            let (watcher, watcher_mon) = spawn_monitor(move || {
                let refs: HashSet<MonitorRef> = list
                    .iter()
                    .flat_map(|&t| [process::monitor(t), process::monitor(t)])
                    .collect();
                send(me, Go);
                let mut seen = HashSet::new();
                while seen.len() < refs.len() {
                    let d: Down = expect("a Down");
                    assert!(refs.contains(&d.monitor), "unknown monitor");
                    assert!(seen.insert(d.monitor), "a second Down for {:?}", d.monitor);
                }
                assert!(receive_match_timeout(|_: &Down| true, Duration::from_millis(30)).is_none());
            });
            let _: Go = expect("watcher ready");
            let mut refs: HashMap<MonitorRef, usize> = HashMap::new();
            for (i, &t) in targets.iter().enumerate() {
                refs.insert(process::monitor(t), i);
                refs.insert(process::monitor(t), i);
            }
            for (i, &t) in targets.iter().enumerate() {
                send(t, Go);
                if i % 5 == 3 {
                    process::exit(t, ExitReason::Kill);
                }
            }
            let mut seen = HashSet::new();
            while seen.len() < refs.len() {
                let d: Down = expect("a Down");
                let i = *refs.get(&d.monitor).expect("one of our monitors");
                assert_eq!(d.pid, targets[i]);
                match (i % 5, &d.reason) {
                    (0, ExitReason::Normal) | (3, ExitReason::Killed) | (4, ExitReason::Kill) => {}
                    (1, ExitReason::Panic(m)) if m == "boom" => {}
                    (2, r) if *r == custom("custom") => {}
                    (k, r) => panic!("kind {k}: unexpected reason {r:?}"),
                }
                assert!(seen.insert(d.monitor), "a second Down for target {i}");
            }
            assert_eq!(wait_down_of(watcher_mon, watcher), ExitReason::Normal);
            assert_no_message::<Down>(Duration::from_millis(30));
            assert!(process::info(me).unwrap().monitors.is_empty());
        });
    }

    // API.md: monitors made while the target dies fire exactly once (its reason or NoProc)
    fn monitors_made_while_the_target_dies_fire_exactly_once(vm) {
        run(vm, || {
            let me = self_pid();
            for round in 0..15u32 {
                let target = spawn(move || {
                    let _: Go = expect("go");
                    spin(round % 4);
                    exit(custom("target_down"));
                });
                let watchers: Vec<Pid> = (0..16usize)
                    .map(|j| {
                        spawn(move || {
                            spin(j as u32 % 5);
                            let m = process::monitor(target);
                            send(me, Report(j, wait_down_of(m, target)));
                            let _: Check = expect("check");
                            send(me, Clean(j, mailbox_len() == 0));
                        })
                    })
                    .collect();
                send(target, Go);
                for _ in 0..watchers.len() {
                    let Report(j, reason) = expect("a watcher's report");
                    assert!(
                        reason == custom("target_down") || reason == ExitReason::NoProc,
                        "watcher {j} got {reason:?}"
                    );
                }
                process::sleep(Duration::from_millis(5));
                for &w in &watchers {
                    send(w, Check);
                }
                for _ in 0..watchers.len() {
                    let Clean(j, clean) = expect("a watcher's check");
                    assert!(clean, "watcher {j} got a second Down");
                }
            }
        });
    }

    // API.md: demonitor racing the target's exit — afterwards no Down is ever in the mailbox
    fn demonitor_racing_the_exit_leaves_no_down(vm) {
        run(vm, || {
            let mut rng = Rng::new(3);
            for _ in 0..300 {
                let delay = rng.below(4) as u32;
                let (target, m) = spawn_monitor(move || {
                    spin(delay);
                    exit(custom("racing"));
                });
                spin(rng.below(4) as u32);
                process::demonitor(m);
                assert_no_down(m, Duration::ZERO);
                assert!(process::info(self_pid()).unwrap().monitors.is_empty());
                wait_down(target);
                assert_no_down(m, Duration::ZERO);
            }
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md guarantee 1: A sends 1000 messages then panics; its monitor's Down arrives after
    // all of them
    fn messages_sent_before_a_crash_arrive_before_its_down(vm) {
        run(vm, || {
            for _ in 0..5 {
                let (a, m) = spawn_monitor(|| {
                    let ParentIs(parent) = expect("parent");
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
                        d: Down => {
                            assert_eq!((d.monitor, d.pid), (m, a));
                            assert_eq!(next, 1000, "the Down overtook messages");
                            assert_eq!(d.reason, ExitReason::Panic("after 1000 messages".into()));
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

    // signal_SUITE: monitor_order (a Down never overtakes the messages sent before the exit)
    fn monitor_order(vm) {
        run(vm, || {
            let me = self_pid();
            for _ in 0..100 {
                let (pid, mref) = spawn_monitor(move || {
                    let mref: MonitorRef = expect("the monitor reference");
                    send(me, Tagged(self_pid(), mref, 1));
                    send(me, Tagged(self_pid(), mref, 2));
                    exit(ExitReason::Normal);
                });
                send(pid, mref);
                receive! {
                    d: Down if d.monitor == mref => panic!("Down arrived before second message: {d:?}"),
                    _t: Tagged if _t.0 == pid && _t.1 == mref && _t.2 == 2 => {
                        let first = receive_match_timeout(
                            |t: &Tagged| t.0 == pid && t.2 == 1,
                            Duration::ZERO,
                        );
                        assert!(first.is_some(), "the first message is there");
                        process::demonitor(mref);
                    },
                }
            }
            assert_eq!(mailbox_len(), 0);
        });
    }

    // signal_SUITE: monitor_named_order_local (messages vs Down from a registered process;
    // the name is resolved with whereis, there are no aliases)
    fn monitor_named_order_local(vm) {
        run(vm, || {
            for n in 0..5u32 {
                let me = self_pid();
                process::register("tester", me).unwrap();
                let num_msg = 1000 + n;
                let sender = spawn_link(move || {
                    process::register("monitor_named_order", self_pid()).unwrap();
                    send(me, Go);
                    let _: Go = expect("go");
                    for i in (1..=num_msg).rev() {
                        let to = if i % 2 == 0 { me } else { process::whereis("tester").unwrap() };
                        send(to, i);
                    }
                    exit(ExitReason::Normal);
                });
                let _: Go = expect("ready");
                let m = process::monitor(process::whereis("monitor_named_order").unwrap());
                send(sender, Go);
                for expected in (1..=num_msg).rev() {
                    let got = receive! {
                        i: u32 => i,
                        d: Down => panic!("Down before message {expected}: {d:?}"),
                    };
                    assert_eq!(got, expected);
                }
                assert_eq!(wait_down_of(m, sender), ExitReason::Normal);
                process::unregister("tester");
            }
        });
    }

    // signal_SUITE: parallel_signal_enqueue_race_1 (monitor/demonitor floods from every
    // scheduler at a receiver while it gets a message; it stays responsive and killable)
    fn parallel_signal_enqueue_race_1(vm) {
        run(vm, || {
            for _ in 0..3 {
                let r = spawn_link(|| {
                    let _: Go = expect("hello");
                    process::sleep(Duration::MAX);
                });
                let loopers: Vec<(Pid, MonitorRef)> = (0..process::schedulers().max(2))
                    .map(|k| {
                        spawn_monitor(move || {
                            let mut rng = Rng::new(k as u64);
                            for _ in 0..300 {
                                spin(rng.below(3) as u32);
                                let m = process::monitor(r);
                                process::demonitor(m);
                            }
                            assert_eq!(mailbox_len(), 0);
                        })
                    })
                    .collect();
                send(r, Go);
                for (p, m) in loopers {
                    assert_eq!(wait_down_of(m, p), ExitReason::Normal);
                }
                assert!(process::alive(r));
                assert!(process::info(r).unwrap().monitored_by.is_empty());
                process::unlink(r);
                let m = process::monitor(r);
                process::exit(r, ExitReason::Kill);
                assert_eq!(wait_down_of(m, r), ExitReason::Killed);
                assert!(!process::alive(r));
            }
        });
    }

    // API.md: spawn_monitor sets the monitor before the child runs (a child that dies at once
    // still reports its own reason, never NoProc)
    fn spawn_monitor_monitors_before_the_child_runs(vm) {
        run(vm, || {
            for i in 0..50 {
                let (child, m) = if i % 2 == 0 {
                    spawn_monitor(|| panic!("at once"))
                } else {
                    spawn_monitor(|| exit(custom("at once")))
                };
                let expected = if i % 2 == 0 {
                    ExitReason::Panic("at once".into())
                } else {
                    custom("at once")
                };
                assert_eq!(wait_down_of(m, child), expected);
            }
        });
    }

    // A monitor is one-way: the monitored process is not affected by the watcher's death, and
    // a Down is a plain message even for a trapping watcher (no Exit)
    fn monitors_are_one_way_and_do_not_trap(vm) {
        run(vm, || {
            process::trap_exit(true);
            let target = spawn_sleeper();
            let (watcher, wm) = spawn_monitor(move || {
                process::monitor(target);
                panic!("watcher dies");
            });
            assert_eq!(wait_down_of(wm, watcher), ExitReason::Panic("watcher dies".into()));
            assert!(process::alive(target));
            assert!(process::info(target).unwrap().monitored_by.is_empty());
            let m = process::monitor(target);
            process::exit(target, custom("bye"));
            assert_eq!(wait_down_of(m, target), custom("bye"));
            assert_no_message::<Exit>(Duration::ZERO);
        });
    }
}

signal_tests! {
    // Not from OTP: a process that monitors thousands of processes, some demonitored, all
    // ending in the reverse of their spawn order, gets exactly one `Down` for each monitor it
    // still holds, and holds none afterwards (links and monitors are hash maps: every one is
    // found wherever it sits; `benches/benches/relations.rs` times the same).
    fn many_monitors_end_in_any_order(vm) {
        run(vm, || {
            const WATCHED: usize = 3_000;
            let watched: Vec<(Pid, MonitorRef)> = (0..WATCHED)
                .map(|_| spawn_monitor(receive::<()>))
                .collect();
            let mut expected = HashMap::new();
            for (i, &(pid, monitor)) in watched.iter().enumerate() {
                if i % 3 == 1 {
                    process::demonitor(monitor);
                } else {
                    expected.insert(monitor, pid);
                }
            }
            let info = process::info(self_pid()).unwrap();
            assert_eq!(info.monitors.len(), expected.len());
            for &(pid, _) in watched.iter().rev() {
                send(pid, ());
            }
            for _ in 0..expected.len() {
                let down: Down = expect("a Down");
                assert_eq!(expected.remove(&down.monitor), Some(down.pid), "{down:?}");
                assert_eq!(down.reason, ExitReason::Normal);
            }
            assert!(expected.is_empty());
            assert!(process::info(self_pid()).unwrap().monitors.is_empty());
            assert!(
                receive_match_timeout(|_: &Down| true, Duration::from_millis(50)).is_none(),
                "a Down for a demonitored process"
            );
        });
    }
}
