//! Timers: ports of Erlang/OTP's `timer_bif_SUITE` (for `process::send_after` and
//! `process::cancel_timer`), `after_SUITE` (for `receive_timeout`/`receive!`'s `after`), and the
//! timer cases of Elixir's `ProcessTest`, plus API.md's timer rules: a message arrives after at
//! least the delay, timers fire in deadline order, `cancel_timer` returns true iff the timer had
//! not fired yet (and then nothing arrives), `Duration::MAX` never fires, and dropping the
//! `TimerRef` does not cancel.
//!
//! Timing assertions are only "never early" plus a generous upper bound (a hang guard, not a
//! speed claim); OTP's long delays are scaled down.
//!
//! Skipped OTP/Elixir cases:
//! - timer_bif_SUITE `start_timer_1`, `start_timer_big`, `start_timer_e`: `erlang:start_timer`
//!   (the `{timeout, Ref, Msg}` wrapper) has no Starling counterpart; their send_after-relevant
//!   parts are ported with `send_after`.
//! - timer_bif_SUITE `read_timer_trivial`, `read_timer`, `read_timer_async`, the async/info
//!   forms of `cancel_timer`: no `read_timer` and no asynchronous cancel in the API.
//! - timer_bif_SUITE `send_after_e`, `cancel_timer_e`, after_SUITE `receive_after_errors`: bad
//!   argument types/values (negative, float, atom timeouts, non-reference timers) are
//!   unrepresentable with `Duration` and `TimerRef`.
//! - timer_bif_SUITE `cleanup`, `auto_cancel_yielding`: ERTS cancels a timer whose receiver
//!   exits and checks allocator memory; Starling keeps such a timer until it fires (its message
//!   is dropped, which is what `timer_to_a_dead_process_delivers_nothing` checks).
//! - timer_bif_SUITE `registered_process`, Elixir "send_after/4 with absolute time": timers to a
//!   registered name and absolute deadlines are not in the API.
//! - after_SUITE `t_after` is scaled from 1 minute to 300 ms.

#[macro_use]
mod signal_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use signal_common::*;
use starling::{
    process, receive, receive_timeout, self_pid, send, spawn, spawn_monitor, ExitReason,
    MonitorRef, Pid, TimerRef,
};

/// Upper bound on lateness: a hang guard on a loaded 2-core machine (other test binaries and
/// benchmarks may share it), not a speed claim.
const SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Plipp,
    Plopp,
    Hej,
    A(u32),
    B(u32),
    Last,
}

#[derive(Debug)]
struct Never;

#[derive(Debug)]
struct Timers(Vec<(usize, TimerRef)>);

#[derive(Debug)]
struct Cancelled(Vec<(usize, bool)>);

/// timer_bif_SUITE `get(Time, Msg)`: waits up to `limit` for `msg`; `true` if it came.
fn get(limit: Duration, msg: Msg) -> bool {
    starling::receive_match_timeout(|m: &Msg| *m == msg, limit).is_some()
}

/// timer_bif_SUITE `collect(Last)`: every `Msg` up to and including `last`, in arrival order.
fn collect(last: Msg) -> Vec<Msg> {
    let mut got = Vec::new();
    loop {
        let m: Msg = expect("a timer message");
        got.push(m);
        if m == last {
            return got;
        }
    }
}

#[track_caller]
fn assert_on_time(what: &str, requested: Duration, elapsed: Duration) {
    assert!(
        elapsed >= requested,
        "{what}: {requested:?} fired early, after {elapsed:?}"
    );
    assert!(
        elapsed < requested + SLACK,
        "{what}: {requested:?} took {elapsed:?} (hang guard)"
    );
}

signal_tests! {
    // timer_bif_SUITE: send_after_1 (basic send_after), Elixir "send_after/3 sends messages
    // once expired"
    fn send_after_1(vm) {
        run(vm, || {
            for ms in [0u64, 10, 100] {
                let delay = Duration::from_millis(ms);
                let started = Instant::now();
                let timer = process::send_after(self_pid(), Msg::Plipp, delay);
                let _ = timer;
                assert!(get(delay + SLACK, Msg::Plipp), "no message after {ms} ms");
                assert_on_time("send_after", delay, started.elapsed());
                assert!(!process::cancel_timer(timer), "the timer has fired");
            }
        });
    }

    // timer_bif_SUITE: start_timer_1, ported to send_after (fired: cancel is false; cancelled
    // in time: true, and no message; never early)
    fn start_timer_1(vm) {
        run(vm, || {
            let ref1 = process::send_after(self_pid(), Msg::Plopp, Duration::from_millis(100));
            assert!(get(Duration::from_millis(1100), Msg::Plopp));
            assert!(!process::cancel_timer(ref1));
            assert!(!process::cancel_timer(ref1));
            let ref2 = process::send_after(self_pid(), Msg::Plopp, Duration::from_millis(100));
            assert!(process::cancel_timer(ref2), "cancelled before firing");
            assert!(!get(Duration::from_millis(150), Msg::Plopp), "a cancelled timer fired");
            assert!(!process::cancel_timer(ref2));
            let started = Instant::now();
            let _ref3 = process::send_after(self_pid(), Msg::Plopp, Duration::from_millis(100));
            assert!(!get(Duration::from_millis(90), Msg::Plopp), "no_message before 100 ms");
            assert!(get(SLACK, Msg::Plopp));
            assert_on_time("ref3", Duration::from_millis(100), started.elapsed());
            assert_eq!(mailbox_len(), 0);
        });
    }

    // timer_bif_SUITE: send_after_2 (messages in deadline order, kind version, scaled /5)
    fn send_after_2(vm) {
        run(vm, || {
            let me = self_pid();
            let ms = Duration::from_millis;
            let _ = process::send_after(me, Msg::Last, ms(1000));
            let _ = process::send_after(me, Msg::A(0), ms(0));
            let _ = process::send_after(me, Msg::A(2), ms(40));
            let _ = process::send_after(me, Msg::A(1), ms(20));
            let _ = process::send_after(me, Msg::A(5), ms(100));
            let _ = process::send_after(me, Msg::A(3), ms(60));
            let _ = process::send_after(me, Msg::A(4), ms(80));
            assert_eq!(
                collect(Msg::Last),
                [Msg::A(0), Msg::A(1), Msg::A(2), Msg::A(3), Msg::A(4), Msg::A(5), Msg::Last]
            );
        });
    }

    // timer_bif_SUITE: send_after_3 (deadlines 1 ms apart still fire in order)
    fn send_after_3(vm) {
        run(vm, || {
            let me = self_pid();
            let ms = Duration::from_millis;
            let _ = process::send_after(me, Msg::B(1), ms(100));
            let _ = process::send_after(me, Msg::B(2), ms(101));
            let _ = process::send_after(me, Msg::B(3), ms(102));
            let _ = process::send_after(me, Msg::Last, ms(103));
            assert_eq!(collect(Msg::Last), [Msg::B(1), Msg::B(2), Msg::B(3), Msg::Last]);
        });
    }

    // timer_bif_SUITE: cancel_timer_1 (cancelling a timer that is no longer pending is false)
    fn cancel_timer_1(vm) {
        run(vm, || {
            let t = process::send_after(self_pid(), Msg::Hej, Duration::ZERO);
            assert!(get(SLACK, Msg::Hej));
            assert!(!process::cancel_timer(t));
        });
    }

    // timer_bif_SUITE: send_after_big (a timer 2^31 ms away is pending and cancellable)
    fn send_after_big(vm) {
        run(vm, || {
            let big = Duration::from_millis(1 << 31);
            let r = process::send_after(self_pid(), Msg::Hej, big);
            process::sleep(Duration::from_millis(50));
            assert!(process::cancel_timer(r));
            assert!(!process::cancel_timer(r));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: Duration::MAX means never: nothing arrives and cancel_timer returns true once
    fn duration_max_never_fires(vm) {
        run(vm, || {
            let never = process::send_after(self_pid(), Msg::Hej, Duration::MAX);
            let kept = process::send_after(self_pid(), Msg::Plipp, Duration::MAX);
            assert!(!get(Duration::from_millis(100), Msg::Hej));
            assert!(process::cancel_timer(never));
            assert!(!process::cancel_timer(never));
            let _ = kept; // never cancelled: must not fire either
            assert!(!get(Duration::from_millis(20), Msg::Plipp));
        });
    }

    // API.md: dropping the TimerRef does not cancel the timer; neither does the end of the
    // process that started it (ERTS timers belong to the receiver)
    fn dropping_the_timer_ref_or_its_creator_does_not_cancel(vm) {
        run(vm, || {
            let me = self_pid();
            {
                // The reference goes out of scope at once.
                let _t = process::send_after(me, Msg::A(1), Duration::from_millis(10));
            }
            let _ = process::send_after(me, Msg::A(2), Duration::from_millis(20));
            let (creator, m) = spawn_monitor(move || {
                let _ = process::send_after(me, Msg::A(3), Duration::from_millis(30));
            });
            assert_eq!(wait_down_of(m, creator), ExitReason::Normal);
            assert_eq!(collect(Msg::A(3)), [Msg::A(1), Msg::A(2), Msg::A(3)]);
        });
    }

    // timer_bif_SUITE: cleanup (a timer whose receiver is dead, or dies before it fires,
    // delivers nothing and harms nothing)
    fn timer_to_a_dead_process_delivers_nothing(vm) {
        run(vm, || {
            let (p1, m1) = spawn_monitor(|| {});
            wait_down_of(m1, p1);
            let _t1 = process::send_after(p1, Msg::Hej, Duration::from_millis(10));
            let (p2, m2) = spawn_monitor(|| process::sleep(Duration::from_millis(5)));
            let _t2 = process::send_after(p2, Msg::Hej, Duration::from_millis(20));
            wait_down_of(m2, p2);
            process::sleep(Duration::from_millis(40));
            assert!(process::alive(self_pid()));
            assert_eq!(mailbox_len(), 0);
            // A timer to a process that lives, cancelled in time: nothing arrives.
            let me = self_pid();
            let p3 = spawn(move || {
                let got = receive_timeout::<Msg>(Duration::from_millis(100));
                send(me, got.is_none());
            });
            let t5 = process::send_after(p3, Msg::Hej, Duration::from_millis(50));
            assert!(process::cancel_timer(t5));
            assert!(expect::<bool>("p3's verdict"), "a cancelled timer delivered its message");
        });
    }

    // timer_bif_SUITE: evil_timers (scaled: 200 timers with large messages, 1 ms apart; all
    // arrive, in deadline order)
    fn evil_timers(vm) {
        run(vm, || {
            let me = self_pid();
            let payload = vec![0xA5u8; 10_000];
            for n in 0..200u32 {
                let mut m = payload.clone();
                m.extend_from_slice(&n.to_le_bytes());
                let _ = process::send_after(me, (n, m), Duration::from_millis(u64::from(n)));
            }
            for n in 0..200u32 {
                let (got, m): (u32, Vec<u8>) = expect("a timer message");
                assert_eq!(got, n, "timers fire in deadline order");
                assert_eq!(m.len(), 10_004);
                assert_eq!(&m[10_000..], &n.to_le_bytes());
            }
        });
    }

    // timer_bif_SUITE: same_time_yielding (many timers with one deadline all fire, none early)
    fn same_time_yielding(vm) {
        run(vm, || {
            let me = self_pid();
            let deadline = Instant::now() + Duration::from_millis(300);
            let count = 301 * process::schedulers();
            for i in 0..count {
                let delay = deadline.saturating_duration_since(Instant::now());
                let _ = process::send_after(me, i, delay);
            }
            let mut seen = HashSet::new();
            for _ in 0..count {
                let i: usize = expect("a timer message");
                assert!(Instant::now() >= deadline, "a timer fired before its deadline");
                assert!(seen.insert(i));
            }
            assert!(Instant::now() < deadline + SLACK, "hang guard");
        });
    }

    // timer_bif_SUITE: same_time_yielding_with_cancel (cancel racing the deadline: each timer
    // either fires (cancel false) or is cancelled (cancel true), never both, never neither)
    fn same_time_yielding_with_cancel(vm) {
        run(vm, || {
            let me = self_pid();
            let (timers, deadline) = start_same_time_timers(me, 301 * process::schedulers());
            busy_wait_until(deadline - Duration::from_micros(100));
            let results: Vec<(usize, bool)> =
                timers.into_iter().map(|(i, t)| (i, process::cancel_timer(t))).collect();
            check_cancel_results(results, deadline);
        });
    }

    // timer_bif_SUITE: same_time_yielding_with_cancel_other (the same, cancelled by another
    // process)
    fn same_time_yielding_with_cancel_other(vm) {
        run(vm, || {
            let me = self_pid();
            let (timers, deadline) = start_same_time_timers(me, 301 * process::schedulers());
            let cancelor = spawn(move || {
                let Timers(timers) = expect("the timers");
                busy_wait_until(deadline - Duration::from_micros(100));
                let results = timers.into_iter().map(|(i, t)| (i, process::cancel_timer(t))).collect();
                send(me, Cancelled(results));
            });
            send(cancelor, Timers(timers));
            let Cancelled(results) = expect("the cancel results");
            check_cancel_results(results, deadline);
        });
    }

    // Elixir ProcessTest "send_after/3 returns a timer reference that can be read or cancelled"
    fn elixir_send_after_returns_a_cancellable_reference(vm) {
        run(vm, || {
            let timer = process::send_after(self_pid(), Msg::Hej, Duration::from_millis(100_000));
            assert_no_message::<Msg>(Duration::ZERO);
            assert!(process::cancel_timer(timer));
            let timer = process::send_after(self_pid(), Msg::Hej, Duration::ZERO);
            assert!(get(SLACK, Msg::Hej));
            assert!(!process::cancel_timer(timer));
        });
    }

    // Elixir ProcessTest "sleep/1" and "sleep/1 with 2^32" (a huge sleep is not an error)
    fn elixir_sleep(vm) {
        run(vm, || {
            process::sleep(Duration::ZERO);
            let (pid, m) = spawn_monitor(|| process::sleep(Duration::from_millis(1 << 32)));
            assert_no_down(m, Duration::from_millis(100));
            process::exit(pid, ExitReason::Kill);
            assert_eq!(wait_down_of(m, pid), ExitReason::Killed);
        });
    }

    // after_SUITE: t_after (scaled from 1 min: a receive timeout is not early, with a process
    // waking up frequently next to it)
    fn t_after(vm) {
        run(vm, || {
            let frequent = spawn(|| loop {
                let _ = receive_timeout::<Never>(Duration::from_millis(10));
            });
            let period = Duration::from_millis(300);
            let before = Instant::now();
            assert!(receive_timeout::<Never>(period).is_none());
            assert_on_time("t_after", period, before.elapsed());
            process::exit(frequent, ExitReason::Kill);
        });
    }

    // after_SUITE: receive_after (halving timeouts down to 1 ms, each on time)
    fn receive_after(vm) {
        run(vm, || {
            let mut n = 256u64;
            loop {
                let d = Duration::from_millis(n);
                let before = Instant::now();
                receive! {
                    _: Never => unreachable!(),
                    after d => (),
                };
                assert_on_time("receive after", d, before.elapsed());
                if n == 1 {
                    break;
                }
                n /= 2;
            }
        });
    }

    // after_SUITE: receive_after_big (a huge timeout can be set; the message wins)
    fn receive_after_big(vm) {
        run(vm, || {
            let me = self_pid();
            for timeout in [0xf765_4321u64, 0xf799_9977] {
                process::yield_now();
                spawn(move || send(me, Msg::Hej));
                let got = receive! {
                    m: Msg => m,
                    after Duration::from_millis(timeout) => panic!("timeout"),
                };
                assert_eq!(got, Msg::Hej);
            }
        });
    }

    // after_SUITE: receive_var_zero and receive_zero (a zero timeout polls once and leaves
    // unmatched messages in order)
    fn receive_zero(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, Msg::A(1));
            send(me, Msg::B(1));
            let zero = std::hint::black_box(Duration::ZERO);
            let got = receive! {
                Msg::Hej: Msg => "z",
                after zero => "timeout",
            };
            assert_eq!(got, "timeout");
            assert!(receive_timeout::<Never>(Duration::ZERO).is_none());
            send(me, Msg::Plipp);
            assert_eq!(expect::<Msg>("x"), Msg::A(1), "bad_message");
            assert_eq!(expect::<Msg>("y"), Msg::B(1));
            assert_eq!(expect::<Msg>("w"), Msg::Plipp);
        });
    }

    // after_SUITE: multi_timeout (messages arriving while a process waits with a long timeout)
    fn multi_timeout(vm) {
        run(vm, || {
            let (p, m) = spawn_monitor(|| {
                let _ = starling::receive_match(|x: &Msg| *x == Msg::A(0));
                let _ = receive_timeout::<Never>(Duration::from_secs(100));
            });
            send(p, Msg::A(0));
            send(p, Msg::A(1));
            process::sleep(Duration::from_millis(20));
            send(p, Msg::A(2));
            process::sleep(Duration::from_millis(20));
            send(p, Msg::A(3));
            assert!(process::alive(p));
            assert_eq!(process::info(p).unwrap().message_queue_len, 3);
            process::exit(p, ExitReason::Kill);
            assert_eq!(wait_down_of(m, p), ExitReason::Killed);
        });
    }

    // after_SUITE: receive_after_32bit (OTP-7493: timeouts of 2^32-1 ms must not fire at once)
    fn receive_after_32bit(vm) {
        run(vm, || {
            let t = Duration::from_millis(0xffff_ffff);
            let pms: Vec<(Pid, MonitorRef)> = (0..256)
                .map(|_| spawn_monitor(move || {
                    let _ = receive_timeout::<Never>(t);
                }))
                .collect();
            process::sleep(Duration::from_millis(300));
            for &(_, m) in &pms {
                assert_no_down(m, Duration::ZERO);
            }
            for &(p, _) in &pms {
                process::exit(p, ExitReason::Kill);
            }
            for (p, m) in pms {
                assert_eq!(wait_down_of(m, p), ExitReason::Killed);
            }
        });
    }

    // after_SUITE: receive_after_blast (scaled: 1000 processes time out at one deadline)
    fn receive_after_blast(vm) {
        run(vm, || {
            let pms: Vec<(Pid, MonitorRef)> = (0..1000)
                .map(|_| spawn_monitor(|| {
                    let deadline: Instant = expect("go");
                    let tmo = deadline.saturating_duration_since(Instant::now());
                    assert!(receive_timeout::<Never>(tmo).is_none());
                    assert!(Instant::now() >= deadline, "timed out early");
                }))
                .collect();
            let deadline = Instant::now() + Duration::from_millis(300);
            for &(p, _) in &pms {
                send(p, deadline);
            }
            for (p, m) in pms {
                assert_eq!(wait_down_of(m, p), ExitReason::Normal);
            }
            assert!(Instant::now() < deadline + SLACK, "hang guard");
        });
    }

    // API.md: a timer message to another process arrives there, after at least the delay
    fn send_after_to_another_process(vm) {
        run(vm, || {
            let me = self_pid();
            let started = Instant::now();
            let receiver = spawn(move || {
                let m: Msg = expect("the timer message");
                send(me, (m, Instant::now()));
            });
            let _ = process::send_after(receiver, Msg::Hej, Duration::from_millis(50));
            let (m, at): (Msg, Instant) = expect("the receiver's report");
            assert_eq!(m, Msg::Hej);
            assert_on_time("send_after to another process", Duration::from_millis(50), at - started);
        });
    }
}

/// Starts `count` timers to `to` with one deadline 300 ms away (timer_bif_SUITE's `{abs, true}`
/// timers); each message is its index.
fn start_same_time_timers(to: Pid, count: usize) -> (Vec<(usize, TimerRef)>, Instant) {
    let deadline = Instant::now() + Duration::from_millis(300);
    let timers = (0..count)
        .map(|i| {
            let delay = deadline.saturating_duration_since(Instant::now());
            (i, process::send_after(to, i, delay))
        })
        .collect();
    (timers, deadline)
}

/// timer_bif_SUITE `busy_wait_until`.
fn busy_wait_until(at: Instant) {
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// Every timer was either cancelled (its message never comes) or fired (its message comes).
fn check_cancel_results(results: Vec<(usize, bool)>, deadline: Instant) {
    let fired: HashSet<usize> = results
        .iter()
        .filter(|(_, c)| !c)
        .map(|&(i, _)| i)
        .collect();
    let cancelled = results.len() - fired.len();
    let mut arrived = HashSet::new();
    while arrived.len() < fired.len() {
        let i: usize = expect("the message of a timer that cancel_timer said had fired");
        assert!(
            fired.contains(&i),
            "timer {i} was cancelled (true) but its message arrived"
        );
        assert!(arrived.insert(i));
    }
    // Anything still on its way?
    let quiet_until = deadline.max(Instant::now()) + Duration::from_millis(50);
    let late = receive_timeout::<usize>(quiet_until.saturating_duration_since(Instant::now()));
    if let Some(i) = late {
        panic!("timer {i} was cancelled (true) but its message arrived");
    }
    assert_eq!(arrived.len() + cancelled, results.len());
}
