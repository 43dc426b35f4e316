//! Exit signals: ports of the exit cases of Erlang/OTP's `process_SUITE` and `signal_SUITE` and
//! of Elixir's `ProcessTest`, plus the exit-signal rules table of API.md / `vm/src/signal.rs`:
//!
//! | signal | trapping receiver | other receiver |
//! |--------|-------------------|----------------|
//! | `process::exit(pid, Kill)` | dies, `Killed` | dies, `Killed` |
//! | reason `Normal`, from another process | `Exit` message | ignored |
//! | `process::exit(self_pid(), Normal)` | `Exit` message | dies, `Normal` |
//! | any other reason (`Kill` along a link included) | `Exit` message | dies with it |
//!
//! Only the first signal that kills a process counts; `alive` is false and `info` is `None`
//! once the `Exit`/`Down` has been received; signals are ordered with messages per pair.
//!
//! On "pending exits" (signal_SUITE `pending_exit_*`, `exit_before_pending_exit`): ERTS handles
//! an exit signal lazily, when the receiver next looks at its signal queue, while Starling marks
//! the receiver killed when the signal is delivered. So a process that calls `exit/1` after an
//! exit signal reached it dies with the signal's reason in Starling (the first kill counts,
//! API.md; `starling::exit`'s docs) where OTP's test expects the process's own reason. Those two
//! cases are ported with Starling's documented outcome.
//!
//! Skipped OTP/Elixir cases:
//! - process_SUITE `spawn_with_binaries`, `garbage_collect`, `process_flag_heap_size`,
//!   `spawn_opt_heap_size`, `garb_other_running`, signal_SUITE `pending_exit_gc`,
//!   `move_msgs_off_heap_signal_*`, `copy_literal_area_signal_*`: garbage collection, heaps and
//!   literal areas (no such thing in Starling).
//! - process_SUITE `bump_reductions`, `yield`, `yield2`: reductions and tracing (covered by
//!   `tests/reductions.rs`, no tracing API); `low_prio`, `process_status_exiting`,
//!   `otp_7738_*`: priorities, suspend/resume and internal process states (no such API);
//!   `process_flag_badarg`: bad argument types are unrepresentable; `processes_*`: the ERTS
//!   `processes/0` BIF's trapping internals; `process_info_2_list`,
//!   `process_info_other_dist_msg`, `process_info_messages`: the `messages`/item-list forms of
//!   `process_info` and distribution (Starling's `ProcessInfo` is a struct; its fields are
//!   ported in `registry.rs`).
//! - signal_SUITE `pending_exit_unlink_dist_process`, `busy_dist_*`: distribution;
//!   `pending_exit_unlink_port`, `contended_signal_handling`, `dirty_signal_handling*`,
//!   `dirty_schedule`: ports and dirty schedulers; `pending_exit_process_display`,
//!   `pending_exit_group_leader`: no such API; `priority_messages_*`: no priority messages.
//! - Elixir ProcessTest `dictionary`, `group_leader/2`, `monitor/1 ... inlined`,
//!   `monitor/2 with monitor options`, `alias/0 ...`, `get_label/1`, `set_label/1`: no such API.

#[macro_use]
mod signal_common;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_common::*;
use starling::{
    exit, process, receive, receive_match_timeout, receive_timeout, self_pid, send, spawn,
    spawn_link, spawn_monitor, Down, Exit, ExitReason, Pid,
};

#[derive(Debug)]
struct Go;

#[derive(Debug)]
struct X;

#[derive(Debug)]
struct Survived;

#[derive(Debug)]
struct EndOfLine(Pid);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    MayReach,
    MayNotReach,
}

#[derive(Debug)]
struct Ready(Pid);

/// OTP's `kb_128()` / `eight_kb()`: a large exit reason.
fn garbage(kb: usize) -> ExitReason {
    ExitReason::Custom("garbage-".repeat(kb * 128))
}

/// How the last process of a `kill2killed` line ends (signal_SUITE `spawn_link_line`).
#[derive(Clone, Copy, Debug)]
enum LineEnd {
    /// The tester sends it `exit(EOL, kill)`.
    OtherExit2,
    /// `exit(kill)`.
    Exit1,
    /// `exit(self(), kill)`.
    Exit2,
}

/// signal_SUITE `spawn_link_line`: `n` more processes, each linked to the one before.
fn line(end: LineEnd, n: u32, tester: Pid) {
    if n == 0 {
        match end {
            LineEnd::OtherExit2 => {
                send(tester, EndOfLine(self_pid()));
                process::sleep(Duration::MAX);
            }
            LineEnd::Exit1 => exit(ExitReason::Kill),
            LineEnd::Exit2 => process::exit(self_pid(), ExitReason::Kill),
        }
    } else {
        spawn_link(move || line(end, n - 1, tester));
        process::sleep(Duration::MAX);
    }
}

/// signal_SUITE `pending_exit_test`: a process gets an exit signal while it is not at a VM call
/// (it waits in `blocking`, whose job ends right after the signal), then does `op` and then
/// `exit(exit_by_myself)`. Returns the reasons seen by its monitor and by its trapping, linked
/// master (the caller).
fn pending_exit_test(op: fn(Pid)) -> (ExitReason, ExitReason) {
    let master = self_pid();
    let old = process::trap_exit(true);
    let delivered = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicBool::new(false));
    let (seen, done) = (delivered.clone(), returned.clone());
    let pid = spawn_link(move || {
        let _: Go = expect("go");
        send(master, Ready(self_pid()));
        starling::blocking(move || {
            while !seen.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_micros(20));
            }
            done.store(true, Ordering::Release);
        });
        op(master);
        exit(custom("exit_by_myself"));
    });
    let monitor = process::monitor(pid);
    send(pid, Go);
    let _: Ready = expect("ready");
    process::exit(pid, custom("exit_by_signal"));
    delivered.store(true, Ordering::Release);
    // Hold this scheduler until the blocking job is over, so that the process usually resumes
    // with its result ready (the signal is then "pending" when `op` runs). Bounded: the kill may
    // also reach the process before its `blocking` call (its next VM call), and then the job
    // never starts.
    let give_up = Instant::now() + Duration::from_secs(1);
    while !returned.load(Ordering::Acquire) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_micros(20));
    }
    std::thread::sleep(Duration::from_millis(1));
    let down = wait_down_of(monitor, pid);
    let exit = wait_exit(pid);
    process::trap_exit(old);
    (down, exit)
}

signal_tests! {
    // process_SUITE: t_exit_1 (exit/1 with a big reason reaches a trapping linked process)
    fn t_exit_1(vm) {
        run(vm, || {
            process::trap_exit(true);
            for _ in 0..10 {
                let pid = spawn_link(|| exit(garbage(128)));
                assert_eq!(wait_exit(pid), garbage(128));
            }
        });
    }

    // process_SUITE: t_exit_2_other (exit/2 with a big reason kills a non-trapping process)
    fn t_exit_2_other(vm) {
        run(vm, || {
            process::trap_exit(true);
            for _ in 0..10 {
                let pid = spawn_link(|| {
                    let _: X = expect("x");
                });
                process::exit(pid, garbage(128));
                assert_eq!(wait_exit(pid), garbage(128));
            }
        });
    }

    // process_SUITE: t_exit_2_other_normal, and Elixir ProcessTest "exit(pid, :normal) does
    // not cause the target process to exit"
    fn t_exit_2_other_normal(vm) {
        run(vm, || {
            process::trap_exit(true);
            let pid = spawn_link(|| {
                let _: X = expect("x");
            });
            process::exit(pid, ExitReason::Normal);
            assert_no_exit_from(pid, Duration::from_millis(100));
            assert!(process::info(pid).is_some(), "process_died_on_normal");
            assert!(process::alive(pid));
            process::exit(pid, custom("abnormal"));
            assert_eq!(wait_exit(pid), custom("abnormal"));
            assert!(!process::alive(pid));
        });
    }

    // process_SUITE: self_exit (a trapping process traps exit(self(), Reason))
    fn self_exit(vm) {
        run(vm, || {
            process::trap_exit(true);
            let me = self_pid();
            for _ in 0..200 {
                process::exit(me, garbage(8));
                let e = receive_match_timeout(|e: &Exit| e.from == me, Duration::ZERO)
                    .expect("the Exit to oneself is queued when exit returns");
                assert_eq!(e.reason, garbage(8));
            }
            assert!(process::alive(me));
        });
    }

    // process_SUITE: normal_suicide_exit, and Elixir ProcessTest "exit(self(), :normal)
    // causes the calling process to exit"
    fn normal_suicide_exit(vm) {
        run(vm, || {
            process::trap_exit(true);
            let parent = self_pid();
            let pid = spawn_link(move || {
                process::exit(self_pid(), ExitReason::Normal);
                send(parent, Survived);
            });
            assert_eq!(wait_exit(pid), ExitReason::Normal);
            assert!(!process::alive(pid));
            assert_no_message::<Survived>(Duration::ZERO);
        });
    }

    // process_SUITE: abnormal_suicide_exit
    fn abnormal_suicide_exit(vm) {
        run(vm, || {
            process::trap_exit(true);
            let parent = self_pid();
            let pid = spawn_link(move || {
                process::exit(self_pid(), garbage(8));
                send(parent, Survived);
            });
            assert_eq!(wait_exit(pid), garbage(8));
            assert_no_message::<Survived>(Duration::ZERO);
        });
    }

    // process_SUITE: t_exit_2_catch (exit(self(), die) cannot be caught)
    fn t_exit_2_catch(vm) {
        run(vm, || {
            process::trap_exit(true);
            let parent = self_pid();
            let pid = spawn_link(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    process::exit(self_pid(), custom("die"));
                }));
                process::yield_now();
                send(parent, Survived);
            });
            assert_eq!(wait_exit(pid), custom("die"), "catch_worked");
            assert_no_message::<Survived>(Duration::ZERO);
        });
    }

    // process_SUITE: trap_exit_badarg (a crash's reason, with its big message, reaches a
    // trapping linked process)
    fn trap_exit_badarg(vm) {
        run(vm, || {
            process::trap_exit(true);
            for i in 0..10 {
                let pid = spawn_link(move || {
                    let big = "x".repeat(128 * 1024);
                    panic!("badarg {i}: {big}");
                });
                match wait_exit(pid) {
                    ExitReason::Panic(message) => {
                        assert!(message.starts_with(&format!("badarg {i}: xxx")));
                        assert_eq!(message.len(), format!("badarg {i}: ").len() + 128 * 1024);
                    }
                    other => panic!("Bad EXIT message: {other:?}"),
                }
            }
        });
    }

    // process_SUITE: trap_exit_badarg_in_bif (a panic inside a library call)
    fn trap_exit_badarg_in_bif(vm) {
        run(vm, || {
            process::trap_exit(true);
            for _ in 0..10 {
                let pid = spawn_link(|| {
                    let v: Vec<u32> = Vec::new();
                    let at = std::hint::black_box(1usize);
                    let _ = v[at];
                });
                match wait_exit(pid) {
                    ExitReason::Panic(message) => assert!(message.contains("index out of bounds")),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
    }

    // process_SUITE: exit_and_timeout (an exit signal reaches a process waiting in a receive
    // with a timeout; the timeout firing later does no harm)
    fn exit_and_timeout(vm) {
        run(vm, || {
            process::trap_exit(true);
            let low = spawn_link(|| {
                assert!(receive_timeout::<X>(Duration::from_millis(250)).is_none());
                let _ = receive_timeout::<X>(Duration::from_millis(100));
            });
            let high = spawn_link(move || {
                process::sleep(Duration::from_millis(100));
                process::exit(low, custom("you are dead"));
                let until = Instant::now() + Duration::from_millis(50);
                while Instant::now() < until {
                    process::yield_now();
                }
            });
            loop {
                let e: Exit = expect("an Exit");
                if e.from == low {
                    assert_eq!(e.reason, custom("you are dead"));
                    break;
                }
                assert_eq!((e.from, e.reason), (high, ExitReason::Normal), "bad_message");
            }
        });
    }

    // process_SUITE: exit_twice (the second exit signal is ignored)
    fn exit_twice(vm) {
        run(vm, || {
            process::trap_exit(true);
            for _ in 0..20 {
                let low = spawn_link(|| loop {
                    process::yield_now();
                });
                let high = spawn_link(move || {
                    process::exit(low, custom("first"));
                    process::exit(low, custom("second"));
                });
                // Both linked processes end; their Exits come from two different senders, so
                // either may arrive first (only per-pair order is guaranteed).
                let (mut low_seen, mut high_seen) = (false, false);
                while !(low_seen && high_seen) {
                    let e: Exit = expect("an Exit");
                    if e.from == low {
                        assert_eq!(e.reason, custom("first"), "wrong_exit_reason");
                        low_seen = true;
                    } else {
                        assert_eq!((e.from, e.reason), (high, ExitReason::Normal), "bad_message");
                        high_seen = true;
                    }
                }
            }
            assert_no_message::<Exit>(Duration::from_millis(10));
        });
    }

    // signal_SUITE: xm_sig_order (a message sent after an exit signal is never received by the
    // non-trapping target: it dies first)
    fn xm_sig_order(vm) {
        run(vm, || {
            for _ in 0..1000 {
                let bad = Arc::new(AtomicBool::new(false));
                let flag = bad.clone();
                let p = spawn(move || loop {
                    match receive_timeout::<Sig>(Duration::ZERO) {
                        Some(Sig::MayNotReach) => {
                            // Record it before any VM call (which would end the process).
                            flag.store(true, Ordering::SeqCst);
                            exit(custom("bad_signal_order"));
                        }
                        Some(Sig::MayReach) => {}
                        None => process::yield_now(),
                    }
                });
                let m = process::monitor(p);
                for _ in 0..3 {
                    send(p, Sig::MayReach);
                }
                process::exit(p, custom("good_signal_order"));
                for _ in 0..3 {
                    send(p, Sig::MayNotReach);
                }
                assert_eq!(wait_down_of(m, p), custom("good_signal_order"));
                assert!(
                    !bad.load(Ordering::SeqCst),
                    "the target received a message sent after the exit signal that killed it"
                );
            }
        });
    }

    // signal_SUITE: kill2killed (exit(kill) travels links as `kill`; exit(P, kill) and
    // exit(self(), kill) make `killed`)
    fn kill2killed(vm) {
        run(vm, || {
            process::trap_exit(true);
            let me = self_pid();
            for end in [LineEnd::OtherExit2, LineEnd::Exit2, LineEnd::Exit1] {
                for n in [1u32, 2, 9, 10] {
                    let p = spawn_link(move || line(end, n - 1, me));
                    if let LineEnd::OtherExit2 = end {
                        let EndOfLine(eol) = expect("end_of_line");
                        process::exit(eol, ExitReason::Kill);
                    }
                    let expected = match end {
                        LineEnd::Exit1 => ExitReason::Kill,
                        _ => ExitReason::Killed,
                    };
                    assert_eq!(wait_exit(p), expected, "{end:?} length {n}");
                }
            }
        });
    }

    // signal_SUITE: pending_exit_unlink_process (unlink does not save a process that already
    // got an exit signal; the link is still there, so the master gets the Exit)
    fn pending_exit_unlink_process(vm) {
        run(vm, || {
            let (down, exit) = pending_exit_test(process::unlink);
            assert_eq!(down, custom("exit_by_signal"));
            assert_eq!(exit, custom("exit_by_signal"));
        });
    }

    // signal_SUITE: pending_exit_trap_exit (trapping exits after the signal came is too late)
    fn pending_exit_trap_exit(vm) {
        run(vm, || {
            let (down, exit) = pending_exit_test(|_| {
                process::trap_exit(true);
            });
            assert_eq!(down, custom("exit_by_signal"));
            assert_eq!(exit, custom("exit_by_signal"));
        });
    }

    // signal_SUITE: pending_exit_receive
    fn pending_exit_receive(vm) {
        run(vm, || {
            let (down, exit) = pending_exit_test(|_| {
                let _ = receive_timeout::<X>(Duration::ZERO);
            });
            assert_eq!(down, custom("exit_by_signal"));
            assert_eq!(exit, custom("exit_by_signal"));
        });
    }

    // signal_SUITE: pending_exit_exit (OTP expects exit_by_myself: ERTS had not handled the
    // signal yet; in Starling the delivered signal is the first kill, see the file docs)
    fn pending_exit_exit(vm) {
        run(vm, || {
            let (down, exit) = pending_exit_test(|_| {});
            assert_eq!(down, custom("exit_by_signal"));
            assert_eq!(exit, custom("exit_by_signal"));
        });
    }

    // signal_SUITE: exit_before_pending_exit (a process exits by itself while an exit signal
    // races towards it: it ends exactly once, with one of the two reasons, and its link and
    // monitor agree on which)
    fn exit_before_pending_exit(vm) {
        run(vm, || {
            process::trap_exit(true);
            for _ in 0..50 {
                let tester = spawn_link(|| {
                    let me = self_pid();
                    let exiter = spawn(move || {
                        let Ready(p) = expect("exit_me");
                        process::exit(p, custom("exited_by_exiter"));
                    });
                    send(exiter, Ready(me));
                    let mut x = 0u64;
                    for i in 0..2000u64 {
                        x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
                    }
                    std::hint::black_box(x);
                    exit(custom("exited_by_myself"));
                });
                let m = process::monitor(tester);
                let down = wait_down_of(m, tester);
                let exit = wait_exit(tester);
                assert!(
                    down == custom("exited_by_myself") || down == custom("exited_by_exiter")
                        || down == ExitReason::NoProc,
                    "{down:?}"
                );
                if down != ExitReason::NoProc {
                    assert_eq!(down, exit, "the link and the monitor see the same reason");
                }
            }
            assert_no_message::<Exit>(Duration::from_millis(10));
        });
    }

    // signal_SUITE: pending_exit_is_process_alive (is_process_alive(P) after exit(P, _) is
    // false: "all signals sent from P1 to P2 before the call are delivered before the
    // aliveness of P2 is checked", erlang:is_process_alive/1 docs)
    fn pending_exit_is_process_alive(vm) {
        run(vm, || {
            for _ in 0..100 {
                let p = spawn(|| loop {
                    process::yield_now();
                });
                process::yield_now();
                process::exit(p, custom("bang"));
                assert!(!process::alive(p), "is_process_alive after exit/2");
                wait_down(p);
            }
        });
    }

    // signal_SUITE: pending_exit_process_info_1 / _2, and Elixir ProcessTest "info/2"
    // (process_info(P) after exit(P, _) is undefined)
    fn pending_exit_process_info(vm) {
        run(vm, || {
            for i in 0..100 {
                let p = spawn(|| process::sleep(Duration::from_secs(1)));
                process::yield_now();
                let reason = if i % 2 == 0 { ExitReason::Kill } else { custom("bang") };
                process::exit(p, reason);
                assert_eq!(process::info(p), None, "process_info after exit/2");
                wait_down(p);
            }
        });
    }

    // signal_SUITE: simultaneous_signals_basic / _exit (scaled down: processes with large
    // mailboxes, most of them killed with exit(P, terminated) while busy)
    fn simultaneous_signals_exit(vm) {
        run(vm, || {
            let pms: Vec<(Pid, starling::MonitorRef)> = (0..20)
                .map(|_| {
                    spawn_monitor(|| {
                        let _: Go = expect("go");
                        while receive_timeout::<Vec<u32>>(Duration::ZERO).is_some() {}
                        let _: X = expect("check");
                    })
                })
                .collect();
            for &(p, _) in &pms {
                for n in 0..2000u32 {
                    if n % 100 == 0 {
                        send(p, vec![n, n]);
                    } else {
                        send(p, n);
                    }
                }
                send(p, Go);
            }
            for (i, &(p, _)) in pms.iter().enumerate() {
                if i % 10 != 0 {
                    process::exit(p, custom("terminated"));
                } else {
                    send(p, X);
                }
            }
            for (i, (p, m)) in pms.into_iter().enumerate() {
                let reason = wait_down_of(m, p);
                if i % 10 != 0 {
                    assert_eq!(reason, custom("terminated"));
                } else {
                    assert_eq!(reason, ExitReason::Normal);
                }
            }
        });
    }

    // signal_SUITE: parallel_signal_enqueue_race_2 (info(R).message_queue_len polled while
    // others send to R; R gets every message)
    fn parallel_signal_enqueue_race_2(vm) {
        run(vm, || {
            let me = self_pid();
            let r = spawn(move || {
                let mut count = 0;
                while count < 4 * 2000 {
                    let _: u64 = expect("a message");
                    count += 1;
                }
                send(me, Go);
            });
            let (prober, prober_monitor) = spawn_monitor(move || {
                while let Some(info) = process::info(r) {
                    std::hint::black_box(info.message_queue_len);
                }
            });
            let senders: Vec<_> = (0..4u64)
                .map(|k| {
                    spawn_monitor(move || {
                        for i in 0..2000u64 {
                            send(r, k * 10_000 + i);
                        }
                    })
                })
                .collect();
            for (p, m) in senders {
                assert_eq!(wait_down_of(m, p), ExitReason::Normal);
            }
            let _: Go = expect("R got all messages");
            assert_eq!(wait_down_of(prober_monitor, prober), ExitReason::Normal);
        });
    }

    // API.md: exit(pid, Kill) cannot be trapped; the target dies with Killed and its links and
    // monitors see Killed
    fn kill_is_untrappable_and_links_see_killed(vm) {
        run(vm, || {
            process::trap_exit(true);
            let target = spawn_link(|| {
                process::trap_exit(true);
                process::sleep(Duration::MAX);
            });
            let watcher = TestProc::spawn();
            watcher.call(|| process::trap_exit(true));
            watcher.call(move || process::link(target));
            let bystander = TestProc::spawn();
            bystander.call(move || process::link(target));
            let bystander_monitor = process::monitor(bystander.pid());
            let m = process::monitor(target);
            process::exit(target, ExitReason::Kill);
            assert_eq!(wait_down_of(m, target), ExitReason::Killed);
            assert_eq!(wait_exit(target), ExitReason::Killed);
            assert_eq!(watcher.call(move || wait_exit(target)), ExitReason::Killed);
            assert_eq!(
                wait_down_of(bystander_monitor, bystander.pid()),
                ExitReason::Killed,
                "a non-trapping linked process dies with Killed too"
            );
        });
    }

    // API.md: a process that ends itself with exit(Kill) sends Kill along its links as an
    // ordinary reason: a trapping linked process gets Exit{Kill}, another dies with Kill
    fn exit_kill_travels_links_as_an_ordinary_reason(vm) {
        run(vm, || {
            process::trap_exit(true);
            let parent = self_pid();
            let ender = spawn_link(move || {
                let _: Go = expect("go");
                exit(ExitReason::Kill);
            });
            let linked = TestProc::spawn();
            linked.call(move || process::link(ender));
            let linked_monitor = process::monitor(linked.pid());
            let trapper = TestProc::spawn();
            trapper.call(move || {
                process::trap_exit(true);
                process::link(ender);
            });
            let m = process::monitor(ender);
            send(ender, Go);
            assert_eq!(wait_down_of(m, ender), ExitReason::Kill);
            assert_eq!(wait_exit(ender), ExitReason::Kill);
            assert_eq!(trapper.call(move || wait_exit(ender)), ExitReason::Kill);
            assert!(trapper.call(|| true), "the trapping process survived a Kill along a link");
            assert_eq!(wait_down_of(linked_monitor, linked.pid()), ExitReason::Kill);
            let _ = parent;
        });
    }

    // API.md rules table: Normal from another process reaches a trapping target as a message;
    // any other reason kills a non-trapping target; the trapping target lives on
    fn exit_signals_follow_the_rules_table(vm) {
        run(vm, || {
            let me = self_pid();
            let trapper = TestProc::spawn();
            trapper.call(|| process::trap_exit(true));
            for reason in [ExitReason::Normal, custom("custom"), ExitReason::Shutdown, ExitReason::Kill] {
                let expected = if reason == ExitReason::Kill { ExitReason::Killed } else { reason.clone() };
                let r = reason.clone();
                if reason != ExitReason::Kill {
                    process::exit(trapper.pid(), reason.clone());
                    let e = trapper.call(move || wait_exit(me));
                    assert_eq!(e, r, "a trapping process receives Exit{{{r:?}}}");
                }
                // A non-trapping target.
                let plain = spawn_sleeper();
                let m = process::monitor(plain);
                process::exit(plain, reason.clone());
                if reason == ExitReason::Normal {
                    assert_no_down(m, Duration::from_millis(20));
                    assert!(process::alive(plain), "Normal from another process is ignored");
                    process::exit(plain, ExitReason::Kill);
                    assert_eq!(wait_down_of(m, plain), ExitReason::Killed);
                } else {
                    assert_eq!(wait_down_of(m, plain), expected);
                }
            }
            assert!(process::alive(trapper.pid()));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: process::exit(self_pid(), Kill) kills even a trapping caller, with Killed
    fn exit_self_kill_kills_a_trapping_process(vm) {
        run(vm, || {
            let parent = self_pid();
            let (p, m) = spawn_monitor(move || {
                process::trap_exit(true);
                process::exit(self_pid(), ExitReason::Kill);
                send(parent, Survived);
            });
            assert_eq!(wait_down_of(m, p), ExitReason::Killed);
            assert_no_message::<Survived>(Duration::ZERO);
        });
    }

    // API.md: process::exit to a dead pid is ignored
    fn exit_to_a_dead_pid_is_ignored(vm) {
        run(vm, || {
            let (dead, m) = spawn_monitor(|| {});
            wait_down_of(m, dead);
            for reason in [ExitReason::Normal, custom("x"), ExitReason::Kill] {
                process::exit(dead, reason);
            }
            assert!(process::alive(self_pid()));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: only the first exit signal that kills a process counts; its links and monitors
    // all see that one reason (many killers racing)
    fn only_the_first_killing_signal_counts(vm) {
        run(vm, || {
            process::trap_exit(true);
            for round in 0..20u32 {
                let target = spawn_link(|| process::sleep(Duration::MAX));
                let m = process::monitor(target);
                let watcher = TestProc::spawn();
                watcher.call(move || {
                    process::trap_exit(true);
                    process::link(target);
                });
                let killers: Vec<Pid> = (0..12u32)
                    .map(|k| {
                        spawn(move || {
                            let _: Go = expect("go");
                            spin(k % 3);
                            let reason = if k == round % 12 && round % 2 == 0 {
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
                assert_eq!(wait_exit(target), down, "the link saw another reason");
                assert_eq!(watcher.call(move || wait_exit(target)), down);
                assert_no_exit_from(target, Duration::from_millis(5));
                watcher.cast(|| exit(ExitReason::Normal));
            }
        });
    }

    // API.md: a trapping process gets the exit signals from one sender in order, interleaved
    // with that sender's messages in send order
    fn exit_signals_are_ordered_with_messages(vm) {
        run(vm, || {
            let me = self_pid();
            let trapper = spawn(move || {
                process::trap_exit(true);
                send(me, Ready(self_pid()));
                let from: Pid = expect("the sender");
                let mut log = Vec::new();
                for _ in 0..6 {
                    receive! {
                        e: Exit => { assert_eq!(e.from, from); log.push(format!("{}", e.reason)) },
                        n: u32 => log.push(n.to_string()),
                    }
                }
                send(from, log);
            });
            let _: Ready = expect("the trapper traps exits");
            send(trapper, self_pid());
            send(trapper, 1u32);
            process::exit(trapper, custom("a"));
            send(trapper, 2u32);
            process::exit(trapper, custom("b"));
            process::exit(trapper, ExitReason::Normal);
            send(trapper, 3u32);
            let log: Vec<String> = expect("the log");
            assert_eq!(log, ["1", "a", "2", "b", "normal", "3"]);
        });
    }

    // API.md: alive() is false and info() is None once the Exit/Down has been received
    fn dead_once_exit_or_down_is_received(vm) {
        run(vm, || {
            process::trap_exit(true);
            let mut pending = HashSet::new();
            for i in 0..120u32 {
                let p = spawn_link(move || {
                    let _: Go = expect("go");
                    match i % 4 {
                        0 => {}
                        1 => panic!("crash"),
                        2 => exit(custom("x")),
                        _ => process::sleep(Duration::MAX),
                    }
                });
                process::monitor(p);
                send(p, Go);
                if i % 4 == 3 {
                    process::exit(p, ExitReason::Kill);
                }
                pending.insert(p);
            }
            let mut exits = 0;
            let mut downs = 0;
            while exits + downs < 2 * 120 {
                let pid = receive! {
                    e: Exit => { exits += 1; e.from },
                    d: Down => { downs += 1; d.pid },
                };
                assert!(pending.contains(&pid));
                assert!(!process::alive(pid), "{pid} alive after its Exit/Down");
                assert_eq!(process::info(pid), None, "{pid} has info after its Exit/Down");
                assert!(!process::list().contains(&pid));
            }
            assert_eq!((exits, downs), (120, 120));
        });
    }

    // API.md: trap_exit returns the previous value
    fn trap_exit_returns_the_previous_value(vm) {
        run(vm, || {
            let me = self_pid();
            assert!(!process::info(me).unwrap().trap_exit);
            assert!(!process::trap_exit(true));
            assert!(process::info(me).unwrap().trap_exit);
            assert!(process::trap_exit(true));
            assert!(process::trap_exit(false));
            assert!(!process::trap_exit(false));
            assert!(!process::info(me).unwrap().trap_exit);
        });
    }

    // A process killed while parked (sleep, receive without timeout, receive with a long
    // timeout) is woken and dies at once
    fn a_parked_process_is_woken_by_an_exit_signal(vm) {
        run(vm, || {
            let sleepers = [
                spawn(|| process::sleep(Duration::MAX)),
                spawn(|| {
                    let _: X = starling::receive();
                }),
                spawn(|| {
                    let _ = receive_timeout::<X>(Duration::from_secs(3600));
                }),
                spawn(|| process::sleep(Duration::from_secs(3600))),
            ];
            process::sleep(Duration::from_millis(5));
            let started = Instant::now();
            for (i, &p) in sleepers.iter().enumerate() {
                let m = process::monitor(p);
                process::exit(p, custom(&format!("wake {i}")));
                assert_eq!(wait_down_of(m, p), custom(&format!("wake {i}")));
            }
            assert!(started.elapsed() < Duration::from_secs(20), "hang guard");
        });
    }

    // A process killed while parked in any wait ends with the kill's reason, runs its
    // destructors, and never goes on as if its wait had returned (a timed wait must not look
    // like a timeout). The receive loop returns on a kill and the receive function's caller
    // unwinds (`receive::select`), so each form has its own path to the unwind.
    fn a_process_parked_in_any_wait_unwinds_when_killed(vm) {
        run(vm, || {
            struct Guard(Pid, usize);
            impl Drop for Guard {
                fn drop(&mut self) {
                    send(self.0, Dropped(self.1));
                }
            }
            #[derive(Debug)]
            struct Dropped(usize);
            let hour = Duration::from_secs(3600);
            type Wait = fn(Duration);
            let waits: [(&str, Wait); 10] = [
                ("receive", |_| _ = receive::<X>()),
                ("receive_timeout", |hour| _ = receive_timeout::<X>(hour)),
                ("receive_match", |_| _ = starling::receive_match(|_: &X| true)),
                ("receive_match_timeout", |hour| _ = receive_match_timeout(|_: &X| true, hour)),
                ("receive!", |_| starling::receive! { _x: X => () }),
                ("receive! after", |hour| starling::receive! { _x: X => (), after hour => () }),
                ("Task::join", |_| {
                    _ = starling::Task::spawn(|| process::sleep(Duration::MAX)).join();
                }),
                ("Task::join_timeout", |hour| {
                    let task = starling::Task::spawn(|| process::sleep(Duration::MAX));
                    _ = task.join_timeout(hour);
                }),
                ("Task::try_join", |hour| {
                    let mut task = starling::Task::spawn(|| process::sleep(Duration::MAX));
                    _ = task.try_join(hour);
                }),
                ("sleep", process::sleep),
            ];
            let root = self_pid();
            for (i, (form, wait)) in waits.into_iter().enumerate() {
                // Set without a VM call (which would end a killed process anyway).
                let went_on = Arc::new(AtomicBool::new(false));
                let flag = went_on.clone();
                let pid = spawn(move || {
                    let _guard = Guard(root, i);
                    wait(hour);
                    flag.store(true, Ordering::SeqCst);
                });
                eventually(&format!("{form}: parked"), || {
                    process::info(pid).is_some_and(|info| info.status == starling::Status::Waiting)
                });
                let m = process::monitor(pid);
                process::exit(pid, custom(form));
                assert_eq!(wait_down_of(m, pid), custom(form), "{form}: the exit reason");
                assert!(
                    !went_on.load(Ordering::SeqCst),
                    "{form}: the process went on after its wait"
                );
                let dropped = receive_match_timeout(|d: &Dropped| d.0 == i, REPLY_LIMIT);
                assert!(dropped.is_some(), "{form}: the guard was not dropped");
            }
        });
    }

    // API.md: Vm::run reports the root's exit signal reason
    fn root_killed_by_a_signal_reports_its_reason(vm) {
        let result = vm.run(|| {
            let root = self_pid();
            spawn(move || process::exit(root, custom("from child")));
            process::sleep(Duration::MAX);
        });
        assert_eq!(result, Err(custom("from child")));
        let result = vm.run(|| {
            process::exit(self_pid(), ExitReason::Normal);
            7
        });
        assert_eq!(result, Err(ExitReason::Normal));
    }
}
