//! The `receive!` macro as API.md specifies it: typed clauses, tuple/struct/enum patterns, guards
//! over borrowed bindings, clause order versus mailbox order, `after` (including
//! `Duration::ZERO`), control flow in bodies, one body type, and waiting without `after`.

#[macro_use]
mod common;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use common::run;
use starling::{process, receive, self_pid, send, spawn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    A,
    B,
}

#[derive(Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Debug, PartialEq)]
enum Cmd {
    Add(i32, i32),
    Neg(i32),
    Stop,
}

#[derive(Debug)]
struct Stop;

fn queue_len() -> usize {
    process::info(self_pid())
        .expect("info of self")
        .message_queue_len
}

/// `return` in a body returns from this function.
fn first_even() -> u32 {
    loop {
        receive! {
            n: u32 if *n % 2 == 0 => return n,
            _odd: u32 => continue,
        }
    }
}

/// `?` in a body propagates from this function.
fn add_one(input: u32) -> Result<u32, String> {
    send(
        self_pid(),
        if input == 0 {
            Err("zero".to_string())
        } else {
            Ok(input)
        },
    );
    let value = receive! {
        r: Result<u32, String> => r?,
    };
    Ok(value + 1)
}

on_schedulers! {
    // The example of API.md, clause by clause.
    fn api_example_clauses(vm) {
        run(vm, || {
            let me = self_pid();
            let take = || {
                receive! {
                    (Tag::A, n): (Tag, i32) if *n > 0 => n,
                    s: String => s.len() as i32,
                    Point { x, .. }: Point => -2 - x,
                    after Duration::from_millis(100) => -1,
                }
            };
            send(me, (Tag::A, -5)); // guard fails: stays
            send(me, (Tag::B, 5)); // pattern fails: stays
            send(me, "four".to_string());
            send(me, (Tag::A, 7));
            send(me, Point { x: 10, y: 0 });
            assert_eq!(take(), 4);
            assert_eq!(take(), 7);
            assert_eq!(take(), -12);
            assert_eq!(take(), -1, "nothing else matches, so `after` fires");
            assert_eq!(queue_len(), 2, "the two unmatched tuples are still queued");
            assert_eq!(starling::receive::<(Tag, i32)>(), (Tag::A, -5));
            assert_eq!(starling::receive::<(Tag, i32)>(), (Tag::B, 5));
        });
    }

    fn a_message_matches_only_its_exact_type(vm) {
        run(vm, || {
            send(self_pid(), 5u64);
            send(self_pid(), 5i32);
            let got = receive! {
                n: u32 => format!("u32 {n}"),
                n: i32 => format!("i32 {n}"),
                after Duration::ZERO => "nothing".to_string(),
            };
            assert_eq!(got, "i32 5");
            assert_eq!(queue_len(), 1);
        });
    }

    fn tuple_struct_and_enum_patterns(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, Cmd::Neg(3));
            send(me, Point { x: 1, y: 2 });
            send(me, (1u8, ("nested", 2u8)));
            send(me, Cmd::Add(2, 40));
            send(me, Cmd::Stop);

            let v = receive! { Cmd::Add(a, b): Cmd => a + b, };
            assert_eq!(v, 42);
            let v = receive! { Point { x, y }: Point => x * 10 + y, };
            assert_eq!(v, 12);
            let v = receive! { (a, (label, b)): (u8, (&'static str, u8)) => format!("{label}{}", a + b), };
            assert_eq!(v, "nested3");
            let v = receive! {
                Cmd::Neg(n): Cmd => -n,
                Cmd::Stop: Cmd => 0,
            };
            assert_eq!(v, -3, "mailbox order: Neg was sent before Stop");
            let v = receive! { Cmd::Stop: Cmd => 1, };
            assert_eq!(v, 1);
        });
    }

    fn literal_and_wildcard_patterns(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, 3u32);
            send(me, 0u32);
            send(me, (Tag::B, 9));
            let v = receive! { 0: u32 => "zero", };
            assert_eq!(v, "zero");
            let v = receive! { (_, 9): (Tag, i32) => "nine", };
            assert_eq!(v, "nine");
            let v = receive! { _: u32 => "any u32", };
            assert_eq!(v, "any u32");
        });
    }

    fn guards_see_bindings_by_reference(vm) {
        run(vm, || {
            let me = self_pid();
            let limit = 4; // a local the guard borrows
            send(me, 2i32);
            send(me, Point { x: 1, y: 2 });
            send(me, "short".to_string());
            send(me, 9i32);
            send(me, Point { x: 3, y: 3 });
            send(me, "a much longer string".to_string());

            // `n: &i32`, `x, y: &i32`, `s: &String` inside the guards.
            let n = receive! { n: i32 if *n > limit => n, };
            assert_eq!(n, 9);
            let p = receive! { Point { x, y }: Point if x == y => (x, y), };
            assert_eq!(p, (3, 3));
            let s = receive! { s: String if s.len() > 10 => s, };
            assert_eq!(s, "a much longer string");
            // Guards can call methods on the borrowed message without moving it.
            let s = receive! { s: String if s.starts_with('s') => s, };
            assert_eq!(s, "short");
            assert_eq!(queue_len(), 2);
        });
    }

    fn guard_runs_once_per_candidate_and_rejects_leave_messages(vm) {
        run(vm, || {
            let me = self_pid();
            for i in 0..10i32 {
                send(me, i);
            }
            // A RefCell, so the guard needs only a shared borrow of the local.
            let seen = RefCell::new(Vec::new());
            let got = receive! {
                n: i32 if { seen.borrow_mut().push(*n); *n == 6 } => n,
            };
            assert_eq!(got, 6);
            assert_eq!(
                seen.into_inner(),
                (0..=6).collect::<Vec<_>>(),
                "the guard runs once per candidate, in mailbox order, and not again on the taken message"
            );
            let rest: Vec<i32> = (0..9).map(|_| starling::receive::<i32>()).collect();
            assert_eq!(rest, vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
        });
    }

    // The mailbox is scanned oldest first; for each message the clauses are tried in order.
    fn mailbox_order_beats_clause_order(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, "older".to_string());
            send(me, 1u32);
            let first = receive! {
                n: u32 => format!("u32 {n}"),
                s: String => format!("string {s}"),
            };
            assert_eq!(first, "string older", "the oldest matching message wins, whatever the clause order");
            let second = receive! {
                n: u32 => format!("u32 {n}"),
                s: String => format!("string {s}"),
            };
            assert_eq!(second, "u32 1");
        });
    }

    fn for_one_message_clauses_are_tried_in_order(vm) {
        run(vm, || {
            send(self_pid(), 7u32);
            let v = receive! {
                n: u32 if *n > 5 => format!("first {n}"),
                n: u32 => format!("second {n}"),
            };
            assert_eq!(v, "first 7");
            send(self_pid(), 3u32);
            let v = receive! {
                n: u32 if *n > 5 => format!("first {n}"),
                n: u32 => format!("second {n}"),
            };
            assert_eq!(v, "second 3");
        });
    }

    fn first_message_matching_any_clause_wins(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, 1u32); // matches no clause (guard)
            send(me, (Tag::B, 0)); // matches no clause (pattern)
            send(me, 2.5f64); // no clause for f64
            send(me, 20u32); // first match
            send(me, (Tag::A, 0)); // would match, but is younger
            let v = receive! {
                (Tag::A, n): (Tag, i32) => format!("tag {n}"),
                n: u32 if *n > 10 => format!("big {n}"),
            };
            assert_eq!(v, "big 20");
            assert_eq!(queue_len(), 4);
        });
    }

    fn after_zero_polls_once(vm) {
        run(vm, || {
            let poll = || receive! {
                n: u32 => Some(n),
                after Duration::ZERO => None,
            };
            let started = Instant::now();
            assert_eq!(poll(), None);
            assert!(started.elapsed() < Duration::from_secs(5), "a zero timeout does not wait");
            send(self_pid(), 5u32);
            assert_eq!(poll(), Some(5));
            assert_eq!(poll(), None);
        });
    }

    fn after_fires_no_earlier_than_its_timeout(vm) {
        run(vm, || {
            let timeout = Duration::from_millis(25);
            let started = Instant::now();
            let fired = receive! {
                _: Stop => false,
                after timeout => true,
            };
            let elapsed = started.elapsed();
            assert!(fired);
            assert!(elapsed >= timeout, "after fired at {elapsed:?}, before {timeout:?}");
        });
    }

    fn after_does_not_fire_when_a_message_arrives_in_time(vm) {
        run(vm, || {
            let me = self_pid();
            spawn(move || {
                process::sleep(Duration::from_millis(20));
                send(me, Stop);
            });
            let got = receive! {
                Stop: Stop => "stop",
                after Duration::from_secs(20) => "timeout",
            };
            assert_eq!(got, "stop");
        });
    }

    fn break_and_continue_act_on_the_enclosing_loop(vm) {
        run(vm, || {
            let me = self_pid();
            for n in [1u32, 2, 3, 100, 4] {
                send(me, n);
            }
            send(me, Stop);
            let mut sum = 0;
            let mut skipped = 0;
            loop {
                receive! {
                    n: u32 if *n >= 100 => {
                        skipped += u32::from(n >= 100);
                        continue;
                    },
                    n: u32 => sum += n,
                    Stop: Stop => break,
                }
            }
            assert_eq!((sum, skipped), (10, 1));
            // `break` with a value from a `loop`.
            send(me, 41u32);
            #[allow(clippy::never_loop)] // the point: `break` inside the body leaves this loop
            let v = loop {
                receive! { n: u32 => break n + 1, }
            };
            assert_eq!(v, 42);
        });
    }

    fn return_and_question_mark_act_on_the_enclosing_function(vm) {
        run(vm, || {
            let me = self_pid();
            for n in [1u32, 3, 5, 8, 9] {
                send(me, n);
            }
            assert_eq!(first_even(), 8);
            // `continue` consumed the odd ones before 8; 9 is still queued.
            assert_eq!(queue_len(), 1);
            assert_eq!(starling::receive::<u32>(), 9);

            assert_eq!(add_one(41), Ok(42));
            assert_eq!(add_one(0), Err("zero".to_string()));
        });
    }

    fn bodies_share_one_type(vm) {
        run(vm, || {
            let me = self_pid();
            send(me, 12u32);
            send(me, "text".to_string());
            send(me, Point { x: 1, y: 1 });
            let describe = || -> String {
                receive! {
                    n: u32 => n.to_string(),
                    s: String => s,
                    p: Point => format!("{p:?}"),
                    after Duration::ZERO => String::new(),
                }
            };
            assert_eq!(describe(), "12");
            assert_eq!(describe(), "text");
            assert_eq!(describe(), "Point { x: 1, y: 1 }");
            assert_eq!(describe(), "");
        });
    }

    fn bodies_take_bindings_by_value(vm) {
        run(vm, || {
            send(self_pid(), (vec![1, 2, 3], "owned".to_string()));
            let (v, s) = receive! {
                (v, s): (Vec<i32>, String) if v.len() == 3 && s == "owned" => (v, s),
            };
            // Moved out of the message: owned values.
            let v: Vec<i32> = v;
            let s: String = s;
            assert_eq!((v, s.as_str()), (vec![1, 2, 3], "owned"));
        });
    }

    fn without_after_it_waits_until_a_message_arrives(vm) {
        run(vm, || {
            let me = self_pid();
            let delay = Duration::from_millis(200);
            // Before the spawn: another scheduler may steal the child and start its sleep
            // before `spawn` even returns here.
            let started = Instant::now();
            spawn(move || {
                process::sleep(delay);
                send(me, Stop);
            });
            receive! { Stop: Stop => (), }
            let elapsed = started.elapsed();
            assert!(elapsed >= delay, "receive! without after returned after {elapsed:?} with no message");
        });
    }
}
