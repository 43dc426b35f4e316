//! Seed port: "Session 7: The Hitchhiker's Guide to Concurrency", section 8 (Practice
//! Exercises: Echo Server, Counter Process, Two Agents Communicating).

#[macro_use]
mod common;

use std::time::Duration;

use common::{eventually, run, Transcript};
use starling::{process, receive, self_pid, send, spawn, Pid};

/// `:stop`.
#[derive(Debug)]
struct Stop;

/// `{:echo, msg}`.
#[derive(Debug, PartialEq)]
struct Echo(String);

/// Exercise 1: `defmodule EchoServer`.
struct EchoServer;

impl EchoServer {
    fn start() -> Pid {
        spawn(Self::run_loop)
    }

    fn run_loop() {
        loop {
            receive! {
                // {msg, from} -> send(from, {:echo, msg}); loop()
                (msg, from): (String, Pid) => send(from, Echo(msg)),
                // :stop -> :ok
                Stop: Stop => break,
            }
        }
    }
}

/// Exercise 2's messages: `:increment`, `{:get, from}`, `:stop`.
#[derive(Debug)]
enum CounterMsg {
    Increment,
    Get(Pid),
    Stop,
}

/// `{:count, n}`.
#[derive(Debug, PartialEq)]
struct Count(u64);

/// Exercise 2: `defmodule Counter`.
struct Counter;

impl Counter {
    /// `start(initial \\ 0)`.
    fn start(initial: u64, out: Transcript) -> Pid {
        spawn(move || Self::run_loop(initial, &out))
    }

    fn run_loop(mut count: u64, out: &Transcript) {
        loop {
            receive! {
                CounterMsg::Increment: CounterMsg => count += 1,
                CounterMsg::Get(from): CounterMsg => send(from, Count(count)),
                CounterMsg::Stop: CounterMsg => {
                    out.puts(format!("Final count: {count}"));
                    return;
                },
            }
        }
    }
}

on_schedulers! {
    // Exercise 1: Echo Server.
    fn echo_server(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        run(vm, move || {
            let echo = EchoServer::start();
            send(echo, ("Hello!".to_string(), self_pid()));
            receive! {
                Echo(msg): Echo => puts.puts(format!("Echo: {msg}")),
            }
            // It keeps echoing until told to stop.
            for i in 0..100 {
                send(echo, (format!("message {i}"), self_pid()));
                assert_eq!(starling::receive::<Echo>(), Echo(format!("message {i}")));
            }
            send(echo, Stop);
            eventually("the echo server stops on :stop", || !process::alive(echo));
        });
        assert_eq!(out.lines(), vec!["Echo: Hello!"]);
    }

    // Exercise 2: Counter Process.
    fn counter_process(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        run(vm, move || {
            let counter = Counter::start(0, puts.clone());
            send(counter, CounterMsg::Increment);
            send(counter, CounterMsg::Increment);
            send(counter, CounterMsg::Increment);
            send(counter, CounterMsg::Get(self_pid()));
            receive! {
                Count(n): Count => puts.puts(format!("Current count: {n}")),
            }
            send(counter, CounterMsg::Stop);
            eventually("the counter stops on :stop", || !process::alive(counter));
        });
        assert_eq!(out.lines(), vec!["Current count: 3", "Final count: 3"]);
    }

    // Exercise 2, `start(initial \\ 0)` with another initial value and increments from many
    // processes: none is lost.
    fn counter_counts_increments_from_many_processes(vm) {
        run(vm, || {
            let counter = Counter::start(10, Transcript::new());
            let root = self_pid();
            for _ in 0..50 {
                spawn(move || {
                    for _ in 0..100 {
                        send(counter, CounterMsg::Increment);
                    }
                    send(root, ());
                });
            }
            for _ in 0..50 {
                starling::receive::<()>();
            }
            // A message is in the receiver's mailbox as soon as `send` returns, so every
            // increment was queued at the counter before its sender's `()` reached the root,
            // and so before this Get.
            send(counter, CounterMsg::Get(self_pid()));
            assert_eq!(starling::receive::<Count>(), Count(10 + 50 * 100));
            send(counter, CounterMsg::Stop);
        });
    }

    // Exercise 3: Two Agents Communicating — "Agent A receives a task, does partial work, sends
    // to Agent B; Agent B completes the work and reports back". Both agents run the same code,
    // so each can also hand work to the other: task 1 goes A -> B, task 2 goes B -> A.
    fn two_agents_communicating(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        let reports = run(vm, move || {
            let a = CollaboratingAgent::start("Agent-A", puts.clone());
            let b = CollaboratingAgent::start("Agent-B", puts.clone());
            send(a, Collab::Peer(b));
            send(b, Collab::Peer(a));

            send(a, Collab::Task { id: 1, text: "  the hitchhiker's guide  ".to_string(), report_to: self_pid() });
            send(b, Collab::Task { id: 2, text: "to concurrency".to_string(), report_to: self_pid() });

            let mut reports: Vec<Report> = (0..2)
                .map(|_| {
                    receive! {
                        r: Report => r,
                        after Duration::from_secs(10) => panic!("an agent never reported back"),
                    }
                })
                .collect();
            reports.sort_by_key(|r| r.id);

            send(a, Collab::Stop);
            send(b, Collab::Stop);
            eventually("both agents stop", || !process::alive(a) && !process::alive(b));
            assert_eq!(reports[0].started_by, a);
            assert_eq!(reports[0].completed_by, b);
            assert_eq!(reports[1].started_by, b);
            assert_eq!(reports[1].completed_by, a);
            reports
        });
        assert_eq!(reports[0].result, "THE HITCHHIKER'S GUIDE (3 words)");
        assert_eq!(reports[1].result, "TO CONCURRENCY (2 words)");
        let lines = out.lines();
        for expected in [
            "[Agent-A] partial work on task 1",
            "[Agent-B] completed task 1",
            "[Agent-B] partial work on task 2",
            "[Agent-A] completed task 2",
            "[Agent-A] Shutting down",
            "[Agent-B] Shutting down",
        ] {
            assert!(lines.iter().any(|l| l == expected), "missing {expected:?} in {lines:?}");
        }
    }

    // Exercise 3 at volume: a stream of tasks through A -> B arrives completed, in order (each
    // hop is one sender to one receiver, so FIFO holds end to end).
    fn two_agents_pipeline_keeps_order(vm) {
        run(vm, || {
            let a = CollaboratingAgent::start("A", Transcript::new());
            let b = CollaboratingAgent::start("B", Transcript::new());
            send(a, Collab::Peer(b));
            send(b, Collab::Peer(a));
            for id in 0..500 {
                send(a, Collab::Task { id, text: format!("task number {id}"), report_to: self_pid() });
            }
            for id in 0..500 {
                let report = starling::receive::<Report>();
                assert_eq!(report.id, id);
                assert_eq!(report.result, format!("TASK NUMBER {id} (3 words)"));
            }
            send(a, Collab::Stop);
            send(b, Collab::Stop);
        });
    }
}

/// Exercise 3's protocol.
#[derive(Debug)]
enum Collab {
    /// Who to hand partial work to.
    Peer(Pid),
    /// A new task: do the first half of the work, then hand it to the peer.
    Task {
        id: u32,
        text: String,
        report_to: Pid,
    },
    /// Work a peer started: finish it and report.
    Handoff {
        id: u32,
        words: Vec<String>,
        started_by: Pid,
        report_to: Pid,
    },
    Stop,
}

/// What the agent that completes a task reports back.
#[derive(Debug)]
struct Report {
    id: u32,
    result: String,
    started_by: Pid,
    completed_by: Pid,
}

/// Exercise 3: an agent that splits a task with its peer.
struct CollaboratingAgent;

impl CollaboratingAgent {
    fn start(name: &'static str, out: Transcript) -> Pid {
        spawn(move || Self::run_loop(name, &out))
    }

    fn run_loop(name: &'static str, out: &Transcript) {
        let peer = receive! { Collab::Peer(peer): Collab => peer, };
        loop {
            receive! {
                // Partial work: trim and upper-case the words, then pass them on.
                Collab::Task { id, text, report_to }: Collab => {
                    out.puts(format!("[{name}] partial work on task {id}"));
                    let words = text.split_whitespace().map(str::to_uppercase).collect();
                    send(peer, Collab::Handoff { id, words, started_by: self_pid(), report_to });
                },
                // Completing the work: join the words and count them, then report back.
                Collab::Handoff { id, words, started_by, report_to }: Collab => {
                    out.puts(format!("[{name}] completed task {id}"));
                    let result = format!("{} ({} words)", words.join(" "), words.len());
                    send(report_to, Report { id, result, started_by, completed_by: self_pid() });
                },
                Collab::Stop: Collab => {
                    out.puts(format!("[{name}] Shutting down"));
                    break;
                },
                Collab::Peer(_): Collab => panic!("{name} got a second peer"),
            }
        }
    }
}
