//! Seed port: "Session 7: The Hitchhiker's Guide to Concurrency", section 5 (Exercise:
//! Request-Response Pattern — the Calculator process and its recursive receive loop).

#[macro_use]
mod common;

use std::time::Duration;

use common::{run, Transcript};
use starling::{process, receive, self_pid, send, spawn, Pid};

/// `{:add, a, b, from}`, `{:multiply, a, b, from}`, `:stop`.
#[derive(Debug)]
enum Request {
    Add(i64, i64, Pid),
    Multiply(i64, i64, Pid),
    Stop,
}

/// `{:result, n}`.
#[derive(Debug, PartialEq)]
struct CalcResult(i64);

/// `defmodule Calculator`.
struct Calculator;

impl Calculator {
    /// `start/0`: `spawn(fn -> loop() end)`. `out` stands in for standard output.
    fn start(out: Transcript) -> Pid {
        spawn(move || Self::run_loop(&out))
    }

    /// `defp loop`: the recursion of the tutorial becomes a Rust loop; `:stop` leaves it.
    fn run_loop(out: &Transcript) {
        loop {
            receive! {
                Request::Add(a, b, from): Request => {
                    send(from, CalcResult(a + b));
                    continue; // loop() — keep running!
                },
                Request::Multiply(a, b, from): Request => {
                    send(from, CalcResult(a * b));
                    continue;
                },
                Request::Stop: Request => {
                    out.puts("Calculator stopping");
                    break; // don't call loop() — the process ends
                },
            }
        }
    }
}

on_schedulers! {
    // Section 5: start the calculator, 5 + 3, 4 * 7, stop, and it is no longer alive.
    fn calculator_request_response(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        let calc_alive = run(vm, move || {
            // Start the calculator
            let calc = Calculator::start(puts.clone());

            // Send some calculations
            send(calc, Request::Add(5, 3, self_pid()));
            receive! {
                CalcResult(n): CalcResult => puts.puts(format!("5 + 3 = {n}")),
            }
            // Key insight: the recursive loop keeps the process alive between requests.
            assert!(process::alive(calc), "the calculator must survive its first request");

            send(calc, Request::Multiply(4, 7, self_pid()));
            receive! {
                CalcResult(n): CalcResult => puts.puts(format!("4 * 7 = {n}")),
            }

            // Stop the calculator
            send(calc, Request::Stop);
            process::sleep(Duration::from_millis(100));
            let alive = process::alive(calc);
            puts.puts(format!("Calculator alive? {alive}"));
            alive
        });
        assert!(!calc_alive);
        assert_eq!(
            out.lines(),
            vec!["5 + 3 = 8", "4 * 7 = 28", "Calculator stopping", "Calculator alive? false"]
        );
    }

    // Section 5, "Key Pattern 3: Long-running server": many clients share one calculator, each
    // gets exactly its own answers.
    fn calculator_serves_many_clients(vm) {
        run(vm, || {
            let calc = Calculator::start(Transcript::new());
            let root = self_pid();
            for client in 0..20i64 {
                spawn(move || {
                    let mut sum = 0;
                    for i in 0..50 {
                        send(calc, Request::Add(client, i, self_pid()));
                        let CalcResult(n) = starling::receive::<CalcResult>();
                        assert_eq!(n, client + i);
                        send(calc, Request::Multiply(client, i, self_pid()));
                        let CalcResult(m) = starling::receive::<CalcResult>();
                        assert_eq!(m, client * i);
                        sum += n + m;
                    }
                    send(root, (client, sum));
                });
            }
            for _ in 0..20 {
                let (client, sum): (i64, i64) = starling::receive();
                let expected: i64 = (0..50).map(|i| client + i + client * i).sum();
                assert_eq!(sum, expected, "client {client}");
            }
            send(calc, Request::Stop);
        });
    }
}
