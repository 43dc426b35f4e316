//! Processes migrate between scheduler threads at VM calls, and what they can see stays theirs:
//! `self_pid()` is right after every VM call, `process_local!` values follow the process, and
//! migration really happens on a multi-scheduler VM.
//!
//! The thread-local rule (DESIGN.md, "Thread-locals and migration"): a process may resume on
//! another OS thread after any VM call (`yield_now`, `receive`, `sleep`, `send`, ...). A plain
//! `thread_local!` read before such a call and again after it may therefore belong to two
//! different workers — and, worse, the compiler may reuse the thread-local *address* it computed
//! before the call, so the process would silently keep using the old worker's slot. That
//! behaviour is undefined from the process's point of view, so no test asserts it; use
//! `process_local!` instead, which these tests check.

#[macro_use]
mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::thread::ThreadId;

use common::{current_thread_id, receive_or_fail, run};
use starling::{process, process_local, receive, self_pid, send, spawn, Pid};

const PROCESSES: usize = 64;
const BOUNCES: usize = 2_000;

process_local! {
    static MY_PID: Cell<Option<Pid>> = Cell::new(None);
}

process_local! {
    static STEPS: RefCell<Vec<usize>> = RefCell::new(Vec::new());
}

/// A token with the number of hops it has left.
#[derive(Debug)]
struct Token(u64);

#[derive(Debug)]
struct Stop;

/// What one bouncing process reports back.
#[derive(Debug)]
struct Report {
    pid: Pid,
    threads: HashSet<ThreadId>,
    thread_changes: usize,
}

/// Yields `BOUNCES + extra` times, checking after every VM call that `self_pid()` and the
/// process-local values are still this process's, and records the OS threads it ran on.
fn bounce(extra: usize) -> Report {
    let me = self_pid();
    MY_PID.with(|p| p.set(Some(me)));
    let mut threads = HashSet::new();
    let mut thread_changes = 0;
    let mut last = current_thread_id();
    threads.insert(last);
    for step in 0..BOUNCES + extra {
        process::yield_now();
        assert_eq!(self_pid(), me, "self_pid() changed after yield_now #{step}");
        assert_eq!(
            MY_PID.with(Cell::get),
            Some(me),
            "process-local value lost after yield #{step}"
        );
        STEPS.with(|s| s.borrow_mut().push(step));
        let now = current_thread_id();
        if now != last {
            thread_changes += 1;
            last = now;
        }
        threads.insert(now);
    }
    STEPS.with(|s| {
        let steps = s.borrow();
        assert_eq!(
            steps.len(),
            BOUNCES + extra,
            "process-local Vec has another process's pushes"
        );
        assert!(steps.iter().copied().eq(0..BOUNCES + extra));
    });
    Report {
        pid: me,
        threads,
        thread_changes,
    }
}

on_schedulers! {
    // Many processes yield thousands of times; their loads differ so workers run dry at
    // different moments and steal from each other.
    fn self_pid_and_process_locals_survive_yield_migration(vm) {
        let multi = vm.schedulers() > 1;
        let reports = run(vm, || {
            let root = self_pid();
            let pids: Vec<Pid> = (0..PROCESSES)
                .map(|i| spawn(move || send(root, bounce(i * 37))))
                .collect();
            let reports: Vec<Report> = (0..PROCESSES)
                .map(|_| receive_or_fail::<Report>("a bouncing process's report"))
                .collect();
            let mut reported: Vec<Pid> = reports.iter().map(|r| r.pid).collect();
            let mut spawned = pids.clone();
            reported.sort();
            spawned.sort();
            assert_eq!(reported, spawned, "each process reports its own pid");
            reports
        });
        let migrated = reports.iter().filter(|r| r.threads.len() > 1).count();
        let changes: usize = reports.iter().map(|r| r.thread_changes).sum();
        eprintln!(
            "{} schedulers: {migrated}/{PROCESSES} processes ran on more than one thread, {changes} thread changes",
            vm.schedulers()
        );
        if multi {
            assert!(
                migrated >= 1,
                "no process ever changed OS thread on a {}-scheduler VM: processes never migrate \
                 (work stealing does not move processes that have run)",
                vm.schedulers()
            );
        }
        // No claim for one scheduler: a worker stuck in one process may hand its run queue to a
        // spare OS thread (DESIGN.md, "Scheduling"), so even there a process may change threads.
    }

    // The same through blocking receives: a ring of processes passes several tokens around
    // at once; each hop is a wake-up that may come from a process on another worker.
    fn self_pid_survives_receive_in_a_ring(vm) {
        const RING: usize = 50;
        const TOKENS: usize = 4;
        const HOPS: u64 = 5_000;
        let visits = run(vm, || {
            let root = self_pid();
            let members: Vec<Pid> = (0..RING)
                .map(|_| {
                    spawn(move || {
                        let me = self_pid();
                        MY_PID.with(|p| p.set(Some(me)));
                        let next: Pid = receive! { p: Pid => p, };
                        let mut visits = 0u64;
                        loop {
                            receive! {
                                Token(left): Token => {
                                    assert_eq!(self_pid(), me, "self_pid() changed after receive");
                                    assert_eq!(MY_PID.with(Cell::get), Some(me));
                                    visits += 1;
                                    if left == 0 {
                                        send(root, Token(0));
                                    } else {
                                        send(next, Token(left - 1));
                                    }
                                },
                                Stop: Stop => break,
                            }
                        }
                        send(root, visits);
                    })
                })
                .collect();
            for (i, pid) in members.iter().enumerate() {
                send(*pid, members[(i + 1) % RING]);
            }
            for t in 0..TOKENS {
                send(members[t * RING / TOKENS], Token(HOPS));
            }
            for _ in 0..TOKENS {
                let Token(left) = receive_or_fail::<Token>("a token back from the ring");
                assert_eq!(left, 0);
            }
            for pid in &members {
                send(*pid, Stop);
            }
            (0..RING).map(|_| receive_or_fail::<u64>("a ring member's visit count")).sum::<u64>()
        });
        assert_eq!(visits, TOKENS as u64 * (HOPS + 1), "every hop reached exactly one member");
    }

    // Each process's process-local values are independent while many of them interleave on
    // the same workers.
    fn process_locals_do_not_leak_between_interleaved_processes(vm) {
        run(vm, || {
            let root = self_pid();
            for i in 0..PROCESSES {
                spawn(move || {
                    for step in 0..200 {
                        STEPS.with(|s| s.borrow_mut().push(i * 1000 + step));
                        process::yield_now();
                    }
                    let ok = STEPS.with(|s| s.borrow().iter().copied().eq((0..200).map(|s| i * 1000 + s)));
                    send(root, ok);
                });
            }
            for _ in 0..PROCESSES {
                assert!(receive_or_fail::<bool>("a result"), "a process saw another process's values");
            }
            // The root's own value was never touched by the others.
            assert!(STEPS.with(|s| s.borrow().is_empty()));
        });
    }
}
