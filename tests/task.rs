//! Tasks: ports of Elixir's `TaskTest` (lib/elixir/test/elixir/task_test.exs) for
//! `Task.async` (`Task::spawn`), `Task.await` (`join`, `join_timeout`), `Task.yield`
//! (`try_join`), `Task.shutdown(task, :brutal_kill)` (`shutdown`) and `Task.await_many`
//! (`task::join_all`), plus API.md's Task rules: on `Timeout` the task is shut down and its late
//! reply never reaches the caller's mailbox; `shutdown` unlinks before killing and returns the
//! value if the task had replied; `join_all` keeps order and runs the tasks concurrently; a
//! crashing task kills a non-trapping caller and gives a trapping one `Exited(Panic(..))`.
//!
//! Where Elixir *exits* the caller (`await` on timeout or on a task's exit), Starling returns an
//! `Err(TaskError)`; the cases are ported with that mapping. Starling's `shutdown` returns only
//! `Option<T>` (the `{:exit, reason}` results become `None`).
//!
//! The seeds' password cracker (1,001 tasks) is in `tests/seed_password_cracker.rs`.
//!
//! Skipped Elixir cases:
//! - "can be supervised directly", "generates child_spec/1", `start/1`, `start/3`,
//!   `start_link/1`, `start_link/3`, "start_link with $callers", `completed/1`, `ignore/1`,
//!   `yield_many/2`, every `async_stream` case: no such API (supervisors, `Task.start*`,
//!   `Task.completed`, `Task.ignore`, `Task.yield_many`, `Task.async_stream`).
//! - `async/3` (module/function/args form): Rust closures only; same as `async/1`.
//! - "raises when invoked from a non-owner process" (await, yield, shutdown, await_many): a
//!   `Task` is `!Send`, so this is rejected at compile time (doc test in `vm/src/task.rs`).
//! - "exits on :noconnection" (all forms), "exits on task undef module/function error": no
//!   distribution, no undefined functions in Rust.
//! - `await_many` "exits on timeout": `join_all` has no timeout; "ignores additional messages
//!   after reply": replies are private to the VM.
//! - `shutdown/2` with a timeout ("returns exit on killing task after shutdown timeout") and the
//!   dummy-task variants whose `:DOWN` is faked with `send`: Starling's `shutdown` is the
//!   `:brutal_kill` form and its reply/Down messages cannot be forged; the real-task versions are
//!   ported.

#[macro_use]
mod signal_common;

use std::time::{Duration, Instant};

use signal_common::*;
use starling::task::join_all;
use starling::{
    exit, process, receive_match_timeout, self_pid, send, spawn, spawn_monitor, Down, Exit,
    ExitReason, Pid, Task, TaskError,
};

#[derive(Debug)]
struct Ready;

#[derive(Debug)]
struct Proceed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Done,
}

/// Elixir's `wait_and_send(caller, atom)`: tells the caller it is ready, waits for `Proceed`,
/// then returns `atom` (the task's result).
fn wait_and_send(caller: Pid, atom: Atom) -> Atom {
    send(caller, Ready);
    let _: Proceed = expect("true");
    atom
}

signal_tests! {
    // TaskTest: async/1 (linked to and monitored by the caller; the reply comes; afterwards
    // neither the reply nor the Down is left in the mailbox)
    fn async_1(vm) {
        run(vm, || {
            let parent = self_pid();
            let task = Task::spawn(move || wait_and_send(parent, Atom::Done));
            let pid = task.pid();
            assert!(process::info(parent).unwrap().links.contains(&pid), "the link");
            assert!(process::info(parent).unwrap().monitors.contains(&pid), "the monitor");
            let _: Ready = expect("ready");
            send(pid, Proceed);
            assert_eq!(task.join(), Ok(Atom::Done));
            assert!(process::info(parent).unwrap().monitors.is_empty());
            eventually("the task is gone", || !process::alive(pid));
            assert!(process::info(parent).unwrap().links.is_empty());
            assert_eq!(mailbox_len(), 0);
        });
    }

    // TaskTest: "async with $callers" (a task can start and await its own task)
    fn async_nested(vm) {
        run(vm, || {
            let grandparent = self_pid();
            let outer = Task::spawn(move || {
                let parent = self_pid();
                assert_ne!(parent, grandparent);
                let inner = Task::spawn(move || (parent, self_pid()));
                let (p, inner_pid) = inner.join().unwrap();
                assert_eq!(p, parent);
                inner_pid
            });
            let inner_pid = outer.join().unwrap();
            assert!(!process::alive(inner_pid));
        });
    }

    // TaskTest: await/2 "exits on timeout" and "demonitors and unalias on timeout"; API.md: on
    // Timeout the task is shut down and its late reply never reaches the mailbox
    fn join_timeout_shuts_the_task_down_and_drops_its_late_reply(vm) {
        run(vm, || {
            let task = Task::spawn(|| {
                process::sleep(Duration::from_millis(100));
                Atom::Done
            });
            let pid = task.pid();
            assert_eq!(task.join_timeout(Duration::from_millis(20)), Err(TaskError::Timeout));
            assert!(!process::alive(pid), "the task was shut down");
            process::sleep(Duration::from_millis(200));
            assert_eq!(
                process::info(self_pid()).unwrap().message_queue_len,
                0,
                "a late reply or Down reached the mailbox"
            );
            assert!(process::info(self_pid()).unwrap().links.is_empty());
            assert!(process::info(self_pid()).unwrap().monitors.is_empty());
            // The same with a zero timeout on a task that waits for a message.
            let task = Task::spawn(|| {
                let _: Proceed = expect("go");
                Atom::Done
            });
            let pid = task.pid();
            assert_eq!(task.join_timeout(Duration::ZERO), Err(TaskError::Timeout));
            send(pid, Proceed);
            process::sleep(Duration::from_millis(20));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: join_timeout returns the value when it comes in time
    fn join_timeout_returns_a_timely_value(vm) {
        run(vm, || {
            let task = Task::spawn(|| {
                process::sleep(Duration::from_millis(10));
                42u64
            });
            assert_eq!(task.join_timeout(Duration::from_secs(10)), Ok(42));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // TaskTest: await/2 "exits on normal exit" (Err(Exited(Normal)); a normal exit along the
    // link does not kill the caller)
    fn join_of_a_task_that_exits_normally(vm) {
        run(vm, || {
            let task: Task<u8> = Task::spawn(|| exit(ExitReason::Normal));
            assert_eq!(task.join(), Err(TaskError::Exited(ExitReason::Normal)));
            assert!(process::alive(self_pid()));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // TaskTest: await/2 "exits on task throw" / "exits on task error" (trapping caller:
    // Err(Exited(Panic(..))) and the Exit message)
    fn join_of_a_crashing_task_when_trapping(vm) {
        run(vm, || {
            process::trap_exit(true);
            let task: Task<u8> = Task::spawn(|| panic!("oops"));
            let pid = task.pid();
            assert_eq!(task.join(), Err(TaskError::Exited(ExitReason::Panic("oops".into()))));
            assert_eq!(wait_exit(pid), ExitReason::Panic("oops".into()));
            assert_eq!(mailbox_len(), 0);
        });
    }

    // TaskTest: await/2 "exits on task exit"
    fn join_of_a_task_that_exits_when_trapping(vm) {
        run(vm, || {
            process::trap_exit(true);
            let task: Task<u8> = Task::spawn(|| exit(custom("unknown")));
            assert_eq!(task.join(), Err(TaskError::Exited(custom("unknown"))));
        });
    }

    // API.md: a crashing task kills a non-trapping caller (seen by a monitoring outer process)
    fn a_crashing_task_kills_a_non_trapping_caller(vm) {
        run(vm, || {
            let outer = self_pid();
            let (caller, m) = spawn_monitor(move || {
                let task: Task<u8> = Task::spawn(|| panic!("task crash"));
                let _ = task.join();
                send(outer, Ready);
            });
            assert_eq!(wait_down_of(m, caller), ExitReason::Panic("task crash".into()));
            assert_no_message::<Ready>(Duration::ZERO);
        });
    }

    // API.md: a task killed by someone else gives a trapping caller Exited(Killed)
    fn join_of_a_task_killed_by_another_process(vm) {
        run(vm, || {
            process::trap_exit(true);
            let task: Task<u8> = Task::spawn(|| {
                process::sleep(Duration::MAX);
                0
            });
            let pid = task.pid();
            spawn(move || process::exit(pid, ExitReason::Kill));
            assert_eq!(task.join(), Err(TaskError::Exited(ExitReason::Killed)));
            assert_eq!(wait_exit(pid), ExitReason::Killed);
        });
    }

    // TaskTest: await_many/2 "returns list of replies"
    fn join_all_returns_the_replies(vm) {
        run(vm, || {
            let tasks: Vec<Task<u32>> = [1u32, 3, 9]
                .into_iter()
                .map(|v| Task::spawn(move || v))
                .collect();
            assert_eq!(join_all(tasks), vec![Ok(1), Ok(3), Ok(9)]);
            assert_eq!(mailbox_len(), 0);
        });
    }

    // TaskTest: await_many/2 "returns replies in input order ignoring response order"
    fn join_all_keeps_input_order(vm) {
        run(vm, || {
            let tasks: Vec<Task<u32>> = [30u32, 20, 10, 0]
                .into_iter()
                .map(|ms| Task::spawn(move || {
                    process::sleep(Duration::from_millis(u64::from(ms)));
                    ms
                }))
                .collect();
            assert_eq!(join_all(tasks), vec![Ok(30), Ok(20), Ok(10), Ok(0)]);
        });
    }

    // TaskTest: await_many/2 "returns an empty list immediately"
    fn join_all_of_nothing(vm) {
        run(vm, || {
            let none: Vec<Task<u8>> = Vec::new();
            assert!(join_all(none).is_empty());
        });
    }

    // TaskTest: await_many/2 "ignores messages from other processes" (they stay, in order)
    fn join_all_leaves_other_messages_alone(vm) {
        run(vm, || {
            let me = self_pid();
            let tasks: Vec<Task<char>> = ['a', 'b']
                .into_iter()
                .map(|c| Task::spawn(move || c))
                .collect();
            send(me, 1u32);
            send(me, "z");
            let (other, m) = spawn_monitor(|| {});
            assert_eq!(join_all(tasks), vec![Ok('a'), Ok('b')]);
            assert_eq!(expect::<u32>("the first message"), 1);
            assert_eq!(expect::<&str>("the second message"), "z");
            let d: Down = expect("the unrelated Down");
            assert_eq!((d.monitor, d.pid), (m, other));
        });
    }

    // TaskTest: await_many/2 "exits immediately when any task crashes" (trapping: that task's
    // slot is Exited(..), the others still reply; "all monitors are cleared up afterwards")
    fn join_all_with_a_crashing_task_when_trapping(vm) {
        run(vm, || {
            process::trap_exit(true);
            let tasks: Vec<Task<u8>> = vec![
                Task::spawn(|| {
                    process::sleep(Duration::from_millis(20));
                    1
                }),
                Task::spawn(|| exit(custom("unknown"))),
                Task::spawn(|| panic!("oops")),
            ];
            let pids: Vec<Pid> = tasks.iter().map(|t| t.pid()).collect();
            let results = join_all(tasks);
            assert_eq!(results[0], Ok(1));
            assert_eq!(results[1], Err(TaskError::Exited(custom("unknown"))));
            assert_eq!(results[2], Err(TaskError::Exited(ExitReason::Panic("oops".into()))));
            assert!(process::info(self_pid()).unwrap().monitors.is_empty());
            assert_no_message::<Down>(Duration::ZERO);
            // The Exits of the two failed tasks (trapped), and the normal one of the first.
            for &pid in &pids {
                wait_exit(pid);
            }
        });
    }

    // API.md: join_all runs the tasks concurrently (10 tasks sleeping 200 ms take well under
    // 10 × 200 ms)
    fn join_all_runs_tasks_concurrently(vm) {
        run(vm, || {
            let started = Instant::now();
            let tasks: Vec<Task<usize>> = (0..10usize)
                .map(|i| Task::spawn(move || {
                    process::sleep(Duration::from_millis(200));
                    i
                }))
                .collect();
            let results = join_all(tasks);
            let elapsed = started.elapsed();
            assert_eq!(results, (0..10).map(Ok).collect::<Vec<_>>());
            assert!(elapsed >= Duration::from_millis(200));
            assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}: not concurrent");
        });
    }

    // TaskTest: yield/2 "returns nil on timeout"; API.md: try_join returns None, then later
    // Some, and the task can still be joined
    fn try_join_none_then_some(vm) {
        run(vm, || {
            let parent = self_pid();
            let mut task = Task::spawn(move || wait_and_send(parent, Atom::Done));
            assert_eq!(task.try_join(Duration::ZERO), None);
            assert_eq!(task.try_join(Duration::from_millis(10)), None);
            assert!(process::alive(task.pid()), "the task keeps running");
            let _: Ready = expect("ready");
            send(task.pid(), Proceed);
            assert_eq!(task.try_join(Duration::from_secs(10)), Some(Ok(Atom::Done)));
            assert_eq!(mailbox_len(), 0);
            // A task that is still running after a None can be joined.
            let mut task = Task::spawn(move || wait_and_send(parent, Atom::Done));
            assert_eq!(task.try_join(Duration::ZERO), None);
            let _: Ready = expect("ready");
            send(task.pid(), Proceed);
            assert_eq!(task.join(), Ok(Atom::Done));
        });
    }

    // TaskTest: yield/2 "returns {:ok, result} when reply and :DOWN in message queue"
    fn try_join_with_reply_and_down_queued(vm) {
        run(vm, || {
            let mut task = Task::spawn(|| 7u8);
            let watch = process::monitor(task.pid());
            wait_down_of(watch, task.pid());
            eventually("the reply and the Down are queued", || mailbox_len() == 2);
            assert_eq!(task.try_join(Duration::ZERO), Some(Ok(7)));
            assert_eq!(mailbox_len(), 0, "refute_received {{:DOWN, ...}}");
        });
    }

    // TaskTest: yield/2 "return exit on normal exit"
    fn try_join_of_a_task_that_exits_normally(vm) {
        run(vm, || {
            let mut task: Task<u8> = Task::spawn(|| exit(ExitReason::Normal));
            assert_eq!(
                task.try_join(Duration::from_secs(10)),
                Some(Err(TaskError::Exited(ExitReason::Normal)))
            );
        });
    }

    // TaskTest: shutdown/2 "returns {:ok, result} when reply and ... :DOWN in message queue";
    // API.md: shutdown returns Some(value) if the task had replied
    fn shutdown_returns_the_value_of_a_task_that_replied(vm) {
        run(vm, || {
            let task = Task::spawn(|| "result");
            let watch = process::monitor(task.pid());
            wait_down_of(watch, task.pid());
            assert_eq!(task.shutdown(), Some("result"));
            assert_eq!(mailbox_len(), 0, "refute_received {{:DOWN, ...}}");
        });
    }

    // TaskTest: shutdown/2 "returns nil on shutting down task"; API.md: shutdown unlinks before
    // killing, so a non-trapping caller survives
    fn shutdown_of_a_running_task(vm) {
        run(vm, || {
            let outer = self_pid();
            let (caller, m) = spawn_monitor(move || {
                for _ in 0..20 {
                    let task: Task<u8> = Task::spawn(|| {
                        process::sleep(Duration::MAX);
                        0
                    });
                    let pid = task.pid();
                    assert_eq!(task.shutdown(), None);
                    assert!(!process::alive(pid));
                    assert!(process::info(self_pid()).unwrap().links.is_empty());
                    assert!(process::info(self_pid()).unwrap().monitors.is_empty());
                }
                assert_eq!(mailbox_len(), 0);
                send(outer, Ready);
            });
            let _: Ready = expect("the caller survived");
            assert_eq!(wait_down_of(m, caller), ExitReason::Normal);
        });
    }

    // TaskTest: shutdown/2 "returns nil on killing task" (the task traps exits: still killed,
    // no Down left behind)
    fn shutdown_of_a_trapping_task(vm) {
        run(vm, || {
            let caller = self_pid();
            let task: Task<u8> = Task::spawn(move || {
                process::trap_exit(true);
                send(caller, Ready);
                process::sleep(Duration::MAX);
                0
            });
            let _: Ready = expect("ready");
            let pid = task.pid();
            assert_eq!(task.shutdown(), None);
            assert!(!process::alive(pid));
            assert_no_message::<Down>(Duration::ZERO);
            assert_eq!(mailbox_len(), 0);
        });
    }

    // TaskTest: shutdown/2 "returns exit on abnormal :DOWN in message queue" and "returns
    // {:exit, :noproc} if task handled" (a task that already ended without replying: None)
    fn shutdown_of_a_task_that_already_failed(vm) {
        run(vm, || {
            process::trap_exit(true);
            let task: Task<u8> = Task::spawn(|| exit(custom("abnormal")));
            let pid = task.pid();
            assert_eq!(wait_exit(pid), custom("abnormal"));
            assert_eq!(task.shutdown(), None);
            assert_eq!(mailbox_len(), 0);
        });
    }

    // API.md: shutdown racing the task's own reply (either Some(value) or None, and nothing
    // is left in the mailbox)
    fn shutdown_racing_the_reply(vm) {
        run(vm, || {
            let mut got = 0;
            for i in 0..100u32 {
                let task = Task::spawn(move || {
                    spin(i % 4);
                    i
                });
                spin(i % 3);
                if let Some(v) = task.shutdown() {
                    assert_eq!(v, i);
                    got += 1;
                }
                assert_eq!(mailbox_len(), 0, "round {i}");
                assert!(receive_match_timeout(|_: &Exit| true, Duration::ZERO).is_none());
            }
            assert!(got <= 100);
        });
    }

    // API.md / vm/src/task.rs: a task's reply is tagged before the task runs, so a task that
    // returns at once always replies (many tiny tasks, so that one often starts on another
    // scheduler before Task::spawn has returned)
    fn tasks_that_return_at_once_always_reply(vm) {
        run(vm, || {
            process::trap_exit(true);
            let me = self_pid();
            let workers: Vec<(Pid, starling::MonitorRef)> = (0..4)
                .map(|_| {
                    spawn_monitor(move || {
                        process::trap_exit(true);
                        let mut failures = Vec::new();
                        for _ in 0..20_000 {
                            match Task::spawn(|| 1u8).join() {
                                Ok(1) => {}
                                other => failures.push(format!("{other:?}")),
                            }
                            // Drop the task's trapped Exit so the mailbox stays short.
                            let _ = receive_match_timeout(|_: &Exit| true, Duration::ZERO);
                        }
                        send(me, failures);
                    })
                })
                .collect();
            let mut failures: Vec<String> = Vec::new();
            for _ in &workers {
                failures.extend(expect::<Vec<String>>("a worker's failures"));
            }
            for (p, m) in workers {
                wait_down_of(m, p);
            }
            assert!(
                failures.is_empty(),
                "{} of 80000 tasks failed, e.g. {:?}",
                failures.len(),
                failures.first()
            );
        });
    }
}
