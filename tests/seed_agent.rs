//! Seed port: "Session 7: The Hitchhiker's Guide to Concurrency", section 6 (Building a Simple
//! Agent Process: SimpleAgentProcess with its state map, memory, inbox and every message kind,
//! including the `other ->` catch-all).

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use common::{eventually, run, Transcript};
use starling::{process, receive, self_pid, send, spawn, Pid};

/// An Elixir term, for the values an agent stores and the tasks it queues, printed like
/// `inspect/1` does.
#[derive(Clone, Debug, PartialEq)]
enum Term {
    Atom(&'static str),
    Int(i64),
    Str(String),
    Tuple(Vec<Term>),
    /// `%{key: value}` with atom keys, kept sorted like small Elixir maps print.
    Map(BTreeMap<&'static str, Term>),
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Atom(a) => write!(f, ":{a}"),
            Term::Int(n) => write!(f, "{n}"),
            Term::Str(s) => write!(f, "{s:?}"),
            Term::Tuple(items) => {
                write!(f, "{{")?;
                for (i, item) in items.iter().enumerate() {
                    write!(f, "{}{item}", if i == 0 { "" } else { ", " })?;
                }
                write!(f, "}}")
            }
            Term::Map(entries) => {
                write!(f, "%{{")?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    write!(f, "{}{key}: {value}", if i == 0 { "" } else { ", " })?;
                }
                write!(f, "}}")
            }
        }
    }
}

fn map<const N: usize>(entries: [(&'static str, Term); N]) -> Term {
    Term::Map(entries.into_iter().collect())
}

fn string(s: &str) -> Term {
    Term::Str(s.to_string())
}

/// The agent's state: `%{name: name, memory: %{}, inbox: []}`.
#[derive(Clone, Debug, PartialEq)]
struct AgentState {
    name: String,
    memory: BTreeMap<&'static str, Term>,
    inbox: Vec<Term>,
}

/// The messages SimpleAgentProcess understands.
#[derive(Debug)]
enum AgentMsg {
    /// `{:get_state, from}`
    GetState(Pid),
    /// `{:remember, key, value}`
    Remember(&'static str, Term),
    /// `{:recall, key, from}`
    Recall(&'static str, Pid),
    /// `{:task, task}`
    Task(Term),
    /// `{:process_next, from}`
    ProcessNext(Pid),
    /// `:stop`
    Stop,
}

/// The agent's replies.
#[derive(Debug, PartialEq)]
enum Reply {
    /// `{:state, state}`
    State(AgentState),
    /// `{:recalled, key, value}`; `Map.get` of a missing key is `nil`, here `None`.
    Recalled(&'static str, Option<Term>),
    /// `{:empty, "No tasks in inbox"}`
    Empty(String),
    /// `{:processed, task}`
    Processed(Term),
}

/// `defmodule SimpleAgentProcess`.
struct SimpleAgentProcess;

impl SimpleAgentProcess {
    /// `start(name)`: `spawn(fn -> loop(%{name: name, memory: %{}, inbox: []}) end)`.
    fn start(name: &str, out: Transcript) -> Pid {
        let state = AgentState {
            name: name.to_string(),
            memory: BTreeMap::new(),
            inbox: Vec::new(),
        };
        spawn(move || Self::run_loop(state, &out))
    }

    /// `defp loop(state)`; every clause that calls `loop(new_state)` becomes `continue`
    /// with the new state, `:stop` returns.
    fn run_loop(mut state: AgentState, out: &Transcript) {
        loop {
            receive! {
                // Get current state
                AgentMsg::GetState(from): AgentMsg => send(from, Reply::State(state.clone())),
                // Store something in memory
                AgentMsg::Remember(key, value): AgentMsg => {
                    state.memory.insert(key, value);
                },
                // Recall from memory
                AgentMsg::Recall(key, from): AgentMsg => {
                    let value = state.memory.get(key).cloned();
                    send(from, Reply::Recalled(key, value));
                },
                // Receive a task (add to inbox)
                AgentMsg::Task(task): AgentMsg => {
                    out.puts(format!("[{}] Received task: {task}", state.name));
                    state.inbox.push(task);
                },
                // Process next task
                AgentMsg::ProcessNext(from): AgentMsg => {
                    if state.inbox.is_empty() {
                        send(from, Reply::Empty("No tasks in inbox".to_string()));
                    } else {
                        let task = state.inbox.remove(0);
                        out.puts(format!("[{}] Processing: {task}", state.name));
                        send(from, Reply::Processed(task));
                    }
                },
                AgentMsg::Stop: AgentMsg => {
                    out.puts(format!("[{}] Shutting down", state.name));
                    return;
                },
                // `other ->`: any other term. In Rust a message has a type, so the catch-all is a
                // clause on the general `Term` type; messages of types the agent knows nothing
                // about at all simply stay in its mailbox.
                other: Term => out.puts(format!("[{}] Unknown message: {other}", state.name)),
            }
        }
    }
}

on_schedulers! {
    // Section 6: the tutorial's whole script — remember, recall, two tasks, get_state,
    // process_next, stop.
    fn simple_agent_process_script(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        let (context, state, processed, agent) = run(vm, move || {
            // Create an agent
            let agent = SimpleAgentProcess::start("Worker-1", puts.clone());

            // Store some memory
            send(agent, AgentMsg::Remember("context", string("Researching Elixir")));
            send(agent, AgentMsg::Remember("priority", Term::Atom("high")));

            // Recall memory
            send(agent, AgentMsg::Recall("context", self_pid()));
            let context = receive! {
                Reply::Recalled("context", Some(value)): Reply => {
                    // `IO.puts("Context: #{value}")` interpolates the string without quotes.
                    let Term::Str(text) = &value else { panic!("context is a string") };
                    puts.puts(format!("Context: {text}"));
                    value
                },
            };

            // Send tasks
            send(agent, AgentMsg::Task(map([("action", Term::Atom("search")), ("query", string("OTP"))])));
            send(agent, AgentMsg::Task(map([("action", Term::Atom("summarize")), ("doc", string("results"))])));

            // Check state
            send(agent, AgentMsg::GetState(self_pid()));
            let state = receive! {
                Reply::State(state): Reply => state,
            };

            // Process tasks
            send(agent, AgentMsg::ProcessNext(self_pid()));
            let processed = receive! {
                Reply::Processed(task): Reply => {
                    puts.puts(format!("Processed: {task}"));
                    task
                },
            };

            // Clean up
            send(agent, AgentMsg::Stop);
            eventually("the agent stops after :stop", || !process::alive(agent));
            (context, state, processed, agent)
        });

        assert_eq!(context, string("Researching Elixir"));
        assert_eq!(state.name, "Worker-1");
        assert_eq!(
            state.memory,
            BTreeMap::from([("context", string("Researching Elixir")), ("priority", Term::Atom("high"))])
        );
        assert_eq!(state.inbox.len(), 2);
        assert_eq!(processed.to_string(), "%{action: :search, query: \"OTP\"}");
        assert!(!agent.to_string().is_empty());
        assert_eq!(
            out.lines(),
            vec![
                "Context: Researching Elixir",
                "[Worker-1] Received task: %{action: :search, query: \"OTP\"}",
                "[Worker-1] Received task: %{action: :summarize, doc: \"results\"}",
                "[Worker-1] Processing: %{action: :search, query: \"OTP\"}",
                "Processed: %{action: :search, query: \"OTP\"}",
                "[Worker-1] Shutting down",
            ]
        );
    }

    // Section 6, `{:process_next, from}` with an empty inbox answers {:empty, "No tasks in
    // inbox"}; tasks are processed first in, first out; recall of an unknown key is nil.
    fn agent_inbox_is_fifo_and_reports_empty(vm) {
        run(vm, || {
            let agent = SimpleAgentProcess::start("Worker-2", Transcript::new());
            send(agent, AgentMsg::ProcessNext(self_pid()));
            assert_eq!(starling::receive::<Reply>(), Reply::Empty("No tasks in inbox".to_string()));

            for i in 0..10 {
                send(agent, AgentMsg::Task(Term::Int(i)));
            }
            for i in 0..10 {
                send(agent, AgentMsg::ProcessNext(self_pid()));
                assert_eq!(starling::receive::<Reply>(), Reply::Processed(Term::Int(i)));
            }
            send(agent, AgentMsg::ProcessNext(self_pid()));
            assert_eq!(starling::receive::<Reply>(), Reply::Empty("No tasks in inbox".to_string()));

            send(agent, AgentMsg::Recall("nothing", self_pid()));
            assert_eq!(starling::receive::<Reply>(), Reply::Recalled("nothing", None));
            send(agent, AgentMsg::Stop);
        });
    }

    // Section 6, the `other ->` clause: an unknown message is reported and the agent loops on;
    // a message of a type it has no clause for at all does not hurt it either.
    fn agent_survives_unknown_messages(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        run(vm, move || {
            let agent = SimpleAgentProcess::start("Worker-3", puts);
            send(agent, Term::Tuple(vec![Term::Atom("bogus"), Term::Int(1)]));
            send(agent, 12345u64); // a type SimpleAgentProcess has no clause for
            send(agent, AgentMsg::Remember("after", Term::Atom("unknown")));
            send(agent, AgentMsg::Recall("after", self_pid()));
            let recalled = starling::receive_timeout::<Reply>(Duration::from_secs(10));
            assert_eq!(recalled, Some(Reply::Recalled("after", Some(Term::Atom("unknown")))));
            assert!(process::alive(agent), "the agent must survive unknown messages");

            send(agent, AgentMsg::GetState(self_pid()));
            let Reply::State(state) = starling::receive::<Reply>() else {
                panic!("expected the agent's state");
            };
            assert_eq!(state.name, "Worker-3");
            assert_eq!(
                process::info(agent).expect("the agent is alive").message_queue_len,
                1,
                "only the message of an unknown type stays queued"
            );
            send(agent, AgentMsg::Stop);
        });
        // The agent may still be printing its "Shutting down" when the root returns.
        assert_eq!(out.lines()[0], "[Worker-3] Unknown message: {:bogus, 1}");
    }
}
