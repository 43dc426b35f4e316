//! Seed port: "Session 7: The Hitchhiker's Guide to Concurrency", sections 3–4 (send to self,
//! receive by pattern, the mailbox as a FIFO with selective receive, basic ping-pong).

#[macro_use]
mod common;

use std::time::Duration;

use common::{run, Transcript};
use starling::{process, receive, self_pid, send, spawn, Pid};

/// Section 3's messages: `{:greeting, "Hello!"}`, `{:number, 42}`, `:done`.
#[derive(Debug, PartialEq)]
enum Msg {
    Greeting(String),
    Number(i32),
    Done,
}

/// Section 3's `:a` and `:b` tags in `{:a, 1}`, `{:b, 2}`, `{:a, 3}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    A,
    B,
}

/// Section 4's `{:hello, from_pid}` and `{:world, child_pid}`.
#[derive(Debug)]
enum Talk {
    Hello(Pid),
    World(Pid),
}

/// A child's IO.puts, forwarded to the parent.
#[derive(Debug)]
struct Puts(String);

fn message_queue_len() -> usize {
    process::info(self_pid())
        .expect("info of self")
        .message_queue_len
}

on_schedulers! {
    // Section 3 "send/2 - Sending Messages" and "receive/1 - Receiving Messages".
    fn send_to_self_then_receive_by_pattern(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        run(vm, move || {
            // Send a message to ourselves
            send(self_pid(), Msg::Greeting("Hello!".to_string()));
            send(self_pid(), Msg::Number(42));
            send(self_pid(), Msg::Done);
            // Check our mailbox (without consuming messages): Process.info(self(), :messages)
            assert_eq!(message_queue_len(), 3);

            // Now consume the messages we sent
            receive! {
                Msg::Greeting(msg): Msg => puts.puts(format!("Got greeting: {msg}")),
            }
            receive! {
                Msg::Number(n): Msg => puts.puts(format!("Got number: {n}")),
            }
            receive! {
                Msg::Done: Msg => puts.puts("Got done signal"),
            }
            assert_eq!(message_queue_len(), 0);
        });
        assert_eq!(
            out.lines(),
            vec!["Got greeting: Hello!", "Got number: 42", "Got done signal"]
        );
    }

    // Section 3, the same three messages received in another order than sent: each receive
    // takes the one message its pattern matches and leaves the others queued, in order.
    fn receive_by_pattern_out_of_send_order(vm) {
        run(vm, || {
            send(self_pid(), Msg::Greeting("Hello!".to_string()));
            send(self_pid(), Msg::Number(42));
            send(self_pid(), Msg::Done);
            receive! { Msg::Done: Msg => (), }
            assert_eq!(message_queue_len(), 2);
            let n = receive! { Msg::Number(n): Msg => n, };
            assert_eq!(n, 42);
            assert_eq!(starling::receive::<Msg>(), Msg::Greeting("Hello!".to_string()));
        });
    }

    // Section 3 "The Mailbox is a Queue (FIFO)": {:a, 1}, {:b, 2}, {:a, 3}; the first receive
    // matches the FIRST {:a, _}; {:b, 2} and {:a, 3} stay queued; then clean up.
    fn mailbox_is_fifo_with_selective_receive(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        run(vm, move || {
            send(self_pid(), (Key::A, 1));
            send(self_pid(), (Key::B, 2));
            send(self_pid(), (Key::A, 3));

            // This will match the FIRST {:a, _} message
            receive! {
                (Key::A, n): (Key, i32) => puts.puts(format!("First match for :a -> {n}")),
            }
            // The {:b, 2} is still in queue, along with {:a, 3}: Process.info(self(), :messages)
            assert_eq!(message_queue_len(), 2);

            // Clean up remaining messages
            receive! {
                (Key::B, n): (Key, i32) => puts.puts(format!("Got :b -> {n}")),
            }
            receive! {
                (Key::A, n): (Key, i32) => puts.puts(format!("Got remaining :a -> {n}")),
            }
            assert_eq!(message_queue_len(), 0);
        });
        assert_eq!(
            out.lines(),
            vec!["First match for :a -> 1", "Got :b -> 2", "Got remaining :a -> 3"]
        );
    }

    // Section 3, `Process.info(self(), :messages)` after the first selective receive lists
    // [{:b, 2}, {:a, 3}] in that order: receiving without a pattern shows the order.
    fn mailbox_keeps_the_unmatched_messages_in_order(vm) {
        let rest = run(vm, || {
            send(self_pid(), (Key::A, 1));
            send(self_pid(), (Key::B, 2));
            send(self_pid(), (Key::A, 3));
            let first_a = receive! { (Key::A, n): (Key, i32) => n, };
            assert_eq!(first_a, 1);
            let rest: Vec<(Key, i32)> = (0..message_queue_len()).map(|_| starling::receive()).collect();
            rest
        });
        assert_eq!(rest, vec![(Key::B, 2), (Key::A, 3)]);
    }

    // Section 4 "Basic Ping-Pong": the child waits for {:hello, parent}, replies {:world, self()}.
    fn basic_ping_pong(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        let (parent, child, from, child_lines) = run(vm, move || {
            // The parent process (us)
            let parent = self_pid();
            // Spawn a child that waits for a message
            let child = spawn(move || {
                send(parent, Puts(format!("Child {} waiting for message...", self_pid())));
                receive! {
                    Talk::Hello(from_pid): Talk => {
                        send(parent, Puts(format!("Child received :hello from {from_pid}")));
                        // Send a reply back
                        send(from_pid, Talk::World(self_pid()));
                    },
                }
                send(parent, Puts("Child done".to_string()));
            });
            puts.puts(format!("Parent {parent} sending :hello to child {child}"));
            // Send message to child
            send(child, Talk::Hello(parent));
            // Wait for reply
            let from = receive! {
                Talk::World(from_pid): Talk => {
                    puts.puts(format!("Parent received :world from {from_pid}"));
                    from_pid
                },
            };
            puts.puts("Conversation complete!");
            let child_lines: Vec<String> = (0..3).map(|_| starling::receive::<Puts>().0).collect();
            (parent, child, from, child_lines)
        });
        assert_eq!(from, child, "the :world reply comes from the child");
        assert_eq!(
            out.lines(),
            vec![
                format!("Parent {parent} sending :hello to child {child}"),
                format!("Parent received :world from {child}"),
                "Conversation complete!".to_string(),
            ]
        );
        assert_eq!(
            child_lines,
            vec![
                format!("Child {child} waiting for message..."),
                format!("Child received :hello from {parent}"),
                "Child done".to_string(),
            ]
        );
    }
}

// Section 4 "Diagram: Message Flow": the child exits after replying.
#[test]
fn ping_pong_child_exits_after_replying() {
    common::with_vm(2, |vm| {
        run(vm, || {
            let parent = self_pid();
            let child = spawn(|| {
                if let Talk::Hello(from) = starling::receive::<Talk>() {
                    send(from, Talk::World(self_pid()));
                }
            });
            send(child, Talk::Hello(parent));
            let reply = starling::receive_timeout::<Talk>(Duration::from_secs(10));
            assert!(
                matches!(reply, Some(Talk::World(pid)) if pid == child),
                "{reply:?}"
            );
            common::eventually("the child exits after replying", || !process::alive(child));
        });
    });
}
