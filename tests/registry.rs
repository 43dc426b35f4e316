//! Registered names and process introspection: ports of the `register/2` and `process_info`
//! cases of Erlang/OTP's `process_SUITE`, of monitor_SUITE `named_down`, and of Elixir's
//! `ProcessTest` "info/2 with registered name", plus API.md's name rules (errors `NameTaken`,
//! `AlreadyRegistered`, `NoProc`; a name is freed when its process dies; `whereis`,
//! `unregister`) and the `ProcessInfo` fields `links`, `monitors`, `monitored_by`, `trap_exit`
//! and `registered_name`.
//!
//! Skipped OTP cases:
//! - process_SUITE `bad_register`'s bad-name and non-pid parts (`{bad,name}`, `undefined`,
//!   `make_ref()`, `[]`, `<<>>`) and `Name ! anything_goes`: the Rust types make them
//!   unrepresentable and there is no send-by-name; the dead-pid part is ported.
//! - process_SUITE `t_process_info`'s `min_heap_size`, `min_bin_vheap_size`,
//!   `current_function`, `group_leader` items: no such fields.
//! - process_SUITE `otp_6237`'s ETS part: no ETS (the whereis loop is ported).
//! - timer_bif_SUITE `registered_process`: timers addressed to a name (no such API).
//! - monitor_SUITE `named_down`'s high-priority CPU hogs: no priorities (the name must be free
//!   when the `Down` arrives, which is what is checked).

#[macro_use]
mod signal_common;

use std::collections::HashSet;
use std::time::Duration;

use signal_common::*;
use starling::{
    exit, process, self_pid, send, spawn, spawn_link, spawn_monitor, Error, ExitReason, Pid, Status,
};

#[derive(Debug)]
struct Go;

#[derive(Debug)]
struct Die;

#[derive(Debug)]
struct Info(starling::ProcessInfo);

#[derive(Debug)]
struct Registered(usize, Result<(), Error>);

#[derive(Debug)]
struct Done(Pid);

signal_tests! {
    // API.md: register / whereis / unregister
    fn register_whereis_unregister(vm) {
        run(vm, || {
            let me = self_pid();
            assert_eq!(process::whereis("registry_basic"), None);
            process::register("registry_basic", me).unwrap();
            assert_eq!(process::whereis("registry_basic"), Some(me));
            assert_eq!(
                process::info(me).unwrap().registered_name.as_deref(),
                Some("registry_basic")
            );
            process::unregister("registry_basic");
            assert_eq!(process::whereis("registry_basic"), None);
            assert_eq!(process::info(me).unwrap().registered_name, None);
            // Unregistering an unknown name does nothing.
            process::unregister("registry_basic");
            process::unregister("never registered");
            // The process can take a name again, another one too.
            process::register("registry_basic_2", me).unwrap();
            assert_eq!(process::whereis("registry_basic_2"), Some(me));
            // Another process can register a different process, and unregister its name.
            let other = spawn_sleeper();
            let helper = TestProc::spawn();
            helper.call(move || process::register("other", other)).unwrap();
            assert_eq!(process::whereis("other"), Some(other));
            assert_eq!(process::info(other).unwrap().registered_name.as_deref(), Some("other"));
            helper.call(|| process::unregister("other"));
            assert_eq!(process::whereis("other"), None);
            assert_eq!(process::info(other).unwrap().registered_name, None);
        });
    }

    // API.md: register errors
    fn register_errors(vm) {
        run(vm, || {
            let me = self_pid();
            let other = spawn_sleeper();
            process::register("taken", other).unwrap();
            assert_eq!(process::register("taken", me), Err(Error::NameTaken));
            assert_eq!(process::register("taken", other), Err(Error::AlreadyRegistered));
            assert_eq!(process::register("second name", other), Err(Error::AlreadyRegistered));
            assert_eq!(process::whereis("second name"), None);
            assert_eq!(process::whereis("taken"), Some(other));
            for e in [Error::NameTaken, Error::AlreadyRegistered, Error::NoProc] {
                assert!(!e.to_string().is_empty());
            }
        });
    }

    // process_SUITE: bad_register (a dead process cannot be registered: NoProc)
    fn bad_register(vm) {
        run(vm, || {
            let (dead, m) = spawn_monitor(|| {});
            wait_down_of(m, dead);
            assert_eq!(process::register("a_long_and_unused_name", dead), Err(Error::NoProc));
            assert_eq!(process::whereis("a_long_and_unused_name"), None);
        });
    }

    // monitor_SUITE: otp_5827 for names (a pid of another VM is NoProc here)
    fn register_a_pid_of_another_vm_is_noproc(vm) {
        let other = build_vm(1);
        let foreign = other.spawn(|| process::sleep(Duration::MAX));
        run(vm, move || {
            assert_eq!(process::register("foreign", foreign), Err(Error::NoProc));
            assert_eq!(process::whereis("foreign"), None);
        });
        drop(other);
    }

    // monitor_SUITE: named_down (the Down of a registered process is not delivered until its
    // name has been freed: the monitoring process can take the name at once)
    fn named_down(vm) {
        run(vm, || {
            for i in 0..50 {
                let name = format!("monitor_SUITE-named_down-{i}");
                let named = spawn_link(|| process::sleep(Duration::MAX));
                process::register(&name, named).unwrap();
                process::unlink(named);
                process::exit(named, custom("bang"));
                let m = process::monitor(named);
                wait_down_of(m, named);
                assert_eq!(process::whereis(&name), None);
                assert_eq!(process::register(&name, self_pid()), Ok(()));
                process::unregister(&name);
            }
        });
    }

    // API.md: a registered name is freed when its process dies, however it dies
    fn a_name_is_freed_when_its_process_dies(vm) {
        run(vm, || {
            for kind in 0..5 {
                let name = format!("dies-{kind}");
                let p = spawn(move || {
                    let _: Go = expect("go");
                    match kind {
                        0 => {}
                        1 => panic!("crash"),
                        2 => exit(custom("bye")),
                        3 => process::exit(self_pid(), ExitReason::Normal),
                        _ => process::sleep(Duration::MAX),
                    }
                });
                process::register(&name, p).unwrap();
                let m = process::monitor(p);
                send(p, Go);
                if kind == 4 {
                    process::exit(p, ExitReason::Kill);
                }
                wait_down_of(m, p);
                assert_eq!(process::whereis(&name), None, "kind {kind}");
                let successor = spawn_sleeper();
                assert_eq!(process::register(&name, successor), Ok(()));
                assert_eq!(process::whereis(&name), Some(successor));
                process::exit(successor, ExitReason::Kill);
            }
        });
    }

    // process_SUITE: otp_6237 (whereis of a dying process's name becomes undefined)
    fn otp_6237(vm) {
        run(vm, || {
            let parent = self_pid();
            for _ in 0..50 {
                let pid = spawn_link(move || {
                    process::register("otp_6237", self_pid()).unwrap();
                    for _ in 0..100 {
                        let _ = process::send_after(self_pid(), (1u8, 2u8, 3u8), Duration::from_secs(1000));
                    }
                    send(parent, Go);
                    let _: Die = expect("die");
                });
                let _: Go = expect("inited");
                assert_eq!(process::whereis("otp_6237"), Some(pid));
                send(pid, Die);
                let mut polls = 0u64;
                while process::whereis("otp_6237").is_some() {
                    polls += 1;
                    assert!(polls < 10_000_000, "the name is never freed");
                    process::yield_now();
                }
                assert_eq!(process::register("otp_6237", self_pid()), Ok(()));
                process::unregister("otp_6237");
            }
        });
    }

    // API.md: processes racing for one name — exactly one wins, the others get NameTaken
    fn racing_for_one_name_exactly_one_wins(vm) {
        run(vm, || {
            let me = self_pid();
            for round in 0..10 {
                let name = format!("race-{round}");
                let racers: Vec<Pid> = (0..24usize)
                    .map(|i| {
                        let name = name.clone();
                        spawn(move || {
                            let _: Go = expect("go");
                            spin(i as u32 % 3);
                            send(me, Registered(i, process::register(&name, self_pid())));
                            let _: Die = expect("die");
                        })
                    })
                    .collect();
                for &r in &racers {
                    send(r, Go);
                }
                let mut winners = Vec::new();
                for _ in 0..racers.len() {
                    let Registered(i, result) = expect("a racer's result");
                    match result {
                        Ok(()) => winners.push(racers[i]),
                        Err(e) => assert_eq!(e, Error::NameTaken),
                    }
                }
                assert_eq!(winners.len(), 1, "winners: {winners:?}");
                assert_eq!(process::whereis(&name), Some(winners[0]));
                for &r in &racers {
                    send(r, Die);
                }
                let m = process::monitor(winners[0]);
                wait_down_of(m, winners[0]);
                assert_eq!(process::whereis(&name), None);
            }
        });
    }

    // API.md: register/unregister churn from many processes keeps names and pids consistent
    fn register_unregister_churn_stays_consistent(vm) {
        run(vm, || {
            let me = self_pid();
            let workers: Vec<(Pid, starling::MonitorRef)> = (0..8usize)
                .map(|k| {
                    spawn_monitor(move || {
                        let mine = self_pid();
                        for i in 0..300usize {
                            let name = format!("churn-{}", (k + i) % 4);
                            match process::register(&name, mine) {
                                Ok(()) => {
                                    assert_eq!(process::whereis(&name), Some(mine));
                                    assert_eq!(
                                        process::info(mine).unwrap().registered_name.as_deref(),
                                        Some(name.as_str())
                                    );
                                    process::unregister(&name);
                                }
                                Err(Error::NameTaken) => {}
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                            if i % 7 == 0 {
                                process::yield_now();
                            }
                        }
                        assert_eq!(process::info(mine).unwrap().registered_name, None);
                        send(me, Done(mine));
                    })
                })
                .collect();
            for (p, m) in workers {
                assert_eq!(wait_down_of(m, p), ExitReason::Normal);
            }
            for n in 0..4 {
                assert_eq!(process::whereis(&format!("churn-{n}")), None);
            }
        });
    }

    // process_SUITE: t_process_info (registered_name), and Elixir ProcessTest "info/2 with
    // registered name"
    fn t_process_info(vm) {
        run(vm, || {
            let me = self_pid();
            let (dead, m) = spawn_monitor(|| {});
            process::exit(dead, ExitReason::Kill);
            wait_down_of(m, dead);
            assert_eq!(process::info(dead), None);
            let info = process::info(me).unwrap();
            assert_eq!(info.registered_name, None);
            assert_eq!(info.pid, me);
            assert_eq!(info.status, Status::Running);
            process::register("my_name", me).unwrap();
            assert_eq!(process::info(me).unwrap().registered_name.as_deref(), Some("my_name"));
            process::unregister("my_name");
        });
    }

    // process_SUITE: process_info_other_msg (message_queue_len of another process)
    fn process_info_other_msg(vm) {
        run(vm, || {
            let me = self_pid();
            let pid = spawn_link(move || {
                send(self_pid(), "my own message");
                send(me, Go);
                loop {
                    let _: Go = expect("empty");
                    while starling::receive_timeout::<(char, Vec<u8>)>(Duration::ZERO).is_some() {}
                    let _ = starling::receive_timeout::<&str>(Duration::ZERO);
                    send(me, Done(self_pid()));
                }
            });
            let _: Go = expect("go_ahead");
            assert_eq!(process::info(pid).unwrap().message_queue_len, 1);
            let garbage = vec![7u8; 128 * 1024];
            for (i, tag) in ['a', 'b', 'c', 'd', 'e'].into_iter().enumerate() {
                send(pid, (tag, garbage.clone()));
                assert_eq!(process::info(pid).unwrap().message_queue_len, i + 2);
            }
            // OTP only prints the memory of both processes.
            assert!(process::info(pid).unwrap().memory > 0);
            send(pid, Go);
            let _: Done = expect("empty");
            assert_eq!(process::info(pid).unwrap().message_queue_len, 0);
            process::unlink(pid);
            process::exit(pid, ExitReason::Kill);
        });
    }

    // process_SUITE: process_info_lock_reschedule (registered_name of a running and of a
    // waiting process, read many times)
    fn process_info_lock_reschedule(vm) {
        run(vm, || {
            let target1 = spawn_link(|| loop {
                process::yield_now();
            });
            process::register("process_info_lock_reschedule_running", target1).unwrap();
            let target2 = spawn_link(|| process::sleep(Duration::MAX));
            process::register("process_info_lock_reschedule_waiting", target2).unwrap();
            for _ in 0..1000 {
                process::yield_now();
                assert_eq!(
                    process::info(target1).unwrap().registered_name.as_deref(),
                    Some("process_info_lock_reschedule_running")
                );
                assert_eq!(
                    process::info(target2).unwrap().registered_name.as_deref(),
                    Some("process_info_lock_reschedule_waiting")
                );
            }
            let status = process::info(target1).unwrap().status;
            assert!(
                matches!(status, Status::Runnable | Status::Running),
                "the looping process stopped: {status:?}"
            );
            // It may still be running on its way to sleep (a worker thread the OS preempted in
            // the middle of running it stays "running" for a whole OS time slice).
            eventually("the sleeping process waits", || {
                process::info(target2).unwrap().status == Status::Waiting
            });
            process::unlink(target1);
            process::unlink(target2);
            process::exit(target1, custom("bang"));
            process::exit(target2, custom("bang"));
        });
    }

    // process_SUITE: process_info_lock_reschedule2 (registered processes reading each other's
    // registered_name concurrently)
    fn process_info_lock_reschedule2(vm) {
        run(vm, || {
            let me = self_pid();
            let names: Vec<String> =
                (1..=6).map(|i| format!("process_info_lock_reschedule2_{i}")).collect();
            let pids: Vec<Pid> = names
                .iter()
                .map(|name| {
                    let p = spawn_link(move || {
                        let (name, pid): (String, Pid) = expect("go");
                        for _ in 0..3000 {
                            assert_eq!(
                                process::info(pid).unwrap().registered_name.as_deref(),
                                Some(name.as_str())
                            );
                        }
                        send(me, Done(self_pid()));
                        process::sleep(Duration::MAX);
                    });
                    process::register(name, p).unwrap();
                    p
                })
                .collect();
            for (i, j) in [(0, 1), (1, 0), (2, 0), (3, 0), (4, 5), (5, 4)] {
                send(pids[i], (names[j].clone(), pids[j]));
            }
            let mut done = HashSet::new();
            for _ in 0..6 {
                let Done(p) = expect("done");
                done.insert(p);
            }
            assert_eq!(done.len(), 6);
            for p in pids {
                process::unlink(p);
                process::exit(p, custom("bang"));
            }
        });
    }

    // process_SUITE: process_info_lock_reschedule3 (message_queue_len of a running process,
    // read many times)
    fn process_info_lock_reschedule3(vm) {
        run(vm, || {
            let target1 = spawn_link(|| loop {
                process::yield_now();
            });
            let mut reads = 0usize;
            for n in 0..20_000 {
                if n % 10 == 0 {
                    process::yield_now();
                }
                reads += process::info(target1).unwrap().message_queue_len;
            }
            assert_eq!(reads, 0);
            assert!(matches!(process::info(target1).unwrap().status, Status::Runnable | Status::Running));
            process::unlink(target1);
            process::exit(target1, custom("bang"));
        });
    }

    // process_SUITE: otp_4725 (process_info of a process read by itself and by another agree)
    fn otp_4725(vm) {
        run(vm, || {
            let tester = self_pid();
            for linked in [true, false] {
                let body = move || {
                    send(tester, Info(process::info(self_pid()).unwrap()));
                    let _: Die = expect("ref");
                };
                let pid = if linked { spawn_link(body) } else { spawn(body) };
                let Info(inside) = expect("the process's own info");
                let outside = process::info(pid).unwrap();
                assert_eq!(inside.pid, outside.pid);
                assert_eq!(inside.links, outside.links);
                assert_eq!(inside.trap_exit, outside.trap_exit);
                assert_eq!(inside.registered_name, outside.registered_name);
                assert_eq!(inside.monitors, outside.monitors);
                assert_eq!(inside.monitored_by, outside.monitored_by);
                assert_eq!(outside.links, if linked { vec![tester] } else { vec![] });
                send(pid, Die);
                if linked {
                    process::unlink(pid);
                }
            }
        });
    }

    // API.md: the ProcessInfo fields links, monitors, monitored_by, trap_exit and
    // registered_name, and their cleanup when the other side dies
    fn process_info_signal_fields(vm) {
        run(vm, || {
            let me = self_pid();
            let a = TestProc::spawn();
            let b = TestProc::spawn();
            let (pa, pb) = (a.pid(), b.pid());
            a.call(move || {
                process::trap_exit(true);
                process::link(pb);
                process::monitor(pb);
                process::monitor(me);
                process::register("field_a", self_pid()).unwrap();
            });
            let ia = process::info(pa).unwrap();
            assert_eq!(ia.links, vec![pb]);
            assert_eq!(sorted(ia.monitors), sorted(vec![pb, me]));
            assert_eq!(ia.monitored_by, Vec::<Pid>::new());
            assert!(ia.trap_exit);
            assert_eq!(ia.registered_name.as_deref(), Some("field_a"));
            let ib = process::info(pb).unwrap();
            assert_eq!(ib.links, vec![pa]);
            assert_eq!(ib.monitors, Vec::<Pid>::new());
            assert_eq!(ib.monitored_by, vec![pa]);
            assert!(!ib.trap_exit);
            assert_eq!(ib.registered_name, None);
            let im = process::info(me).unwrap();
            assert_eq!(im.monitored_by, vec![pa]);
            // B dies: A's link and monitor on B go away, A lives on (it traps).
            b.cast(|| exit(custom("b down")));
            assert_eq!(a.call(move || wait_exit(pb)), custom("b down"));
            let ia = process::info(pa).unwrap();
            assert_eq!(ia.links, Vec::<Pid>::new());
            assert_eq!(ia.monitors, vec![me]);
            // A dies: my monitored_by empties, its name is freed.
            let m = process::monitor(pa);
            a.cast(|| exit(ExitReason::Normal));
            wait_down_of(m, pa);
            let im = process::info(me).unwrap();
            assert_eq!(im.monitored_by, Vec::<Pid>::new());
            assert_eq!(process::whereis("field_a"), None);
        });
    }
}

fn sorted(mut pids: Vec<Pid>) -> Vec<Pid> {
    pids.sort();
    pids
}
