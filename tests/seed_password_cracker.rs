//! Seed port: "Strange Leaflet about Elixir — Using processes to handle asynchronous work" (the
//! password cracker): sequential guessing, spawn/send/receive-with-after, and Task.async per guess
//! collected with `task::join_all` (Task.await_many).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{run, with_timeout, Transcript};
use starling::{process, receive, self_pid, send, spawn, Vm};

/// The tutorial's atoms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Atom {
    AccessGranted,
    AccessDenied,
}

/// `defmodule PasswordSystem`: the right password answers at once, any other one after 3 s.
struct PasswordSystem;

impl PasswordSystem {
    const PASSWORD: &'static str = "my voice is my passport";
    const PENALTY: Duration = Duration::from_secs(3);

    /// `check("my voice is my passport") -> {:ok, :access_granted}`;
    /// `check(_password) -> Process.sleep(3000); {:error, :access_denied}`.
    fn check(password: &str) -> Result<Atom, Atom> {
        if password == Self::PASSWORD {
            Ok(Atom::AccessGranted)
        } else {
            process::sleep(Self::PENALTY);
            Err(Atom::AccessDenied)
        }
    }
}

/// Elixir's `inspect/1` of a string.
fn inspect(s: &str) -> String {
    format!("{s:?}")
}

fn seed_vm() -> Vm {
    common::vm(2)
}

// Seed: "Let's say we have a password system" — the three example calls in the iex session.
#[test]
fn password_system_check_sleeps_three_seconds_for_a_wrong_guess() {
    with_timeout(common::TEST_TIMEOUT, "PasswordSystem.check", || {
        let vm = seed_vm();
        run(&vm, || {
            let started = Instant::now();
            assert_eq!(
                PasswordSystem::check("setec astronomy"),
                Err(Atom::AccessDenied)
            );
            let wrong = started.elapsed();
            assert!(
                wrong >= Duration::from_secs(3),
                "a wrong guess answered after only {wrong:?}"
            );

            let started = Instant::now();
            assert_eq!(
                PasswordSystem::check("my voice is my passport"),
                Ok(Atom::AccessGranted)
            );
            let right = started.elapsed();
            assert!(
                right < Duration::from_secs(3),
                "the right password slept: {right:?}"
            );
        });
    });
}

// Seed: "A process working from top to bottom" — Enum.find over the guesses, one at a time.
// The tutorial's list has the password after a few wrong guesses and then `[5, 6, 7]`; a short
// list (2 wrong guesses) keeps the run at ~6 s.
#[test]
fn sequential_enum_find_waits_three_seconds_per_wrong_guess() {
    with_timeout(common::TEST_TIMEOUT, "sequential password cracking", || {
        let vm = seed_vm();
        let out = Transcript::new();
        let puts = out.clone();
        let started = Instant::now();
        let cracked = run(&vm, move || {
            let guesses: Vec<String> = ["setec astronomy", "reindeer flotilla"]
                .into_iter()
                .map(String::from)
                .chain([PasswordSystem::PASSWORD.to_string()])
                .chain([5, 6, 7].map(|n: i32| n.to_string()))
                .collect();
            puts.puts(format!("password guesses: {guesses:?}"));
            let cracked_password = guesses
                .into_iter()
                .find(|guess| Ok(Atom::AccessGranted) == PasswordSystem::check(guess));
            if let Some(password) = &cracked_password {
                puts.puts(format!(
                    "We're in 😎 the password is: {}",
                    inspect(password)
                ));
            }
            cracked_password
        });
        let elapsed = started.elapsed();

        assert_eq!(cracked.as_deref(), Some(PasswordSystem::PASSWORD));
        assert!(
            elapsed >= Duration::from_secs(6),
            "two wrong guesses must cost 2 × 3 s, took {elapsed:?}"
        );
        assert!(out.contains("We're in 😎 the password is: \"my voice is my passport\""));
    });
}

// Seed: "Processes" — `pid = spawn(fn -> 3 + 1 end)`, alive immediately after spawn (true),
// alive after 100 ms (false). On one scheduler the child cannot run before the parent gives
// up the thread, which makes "true" deterministic; on more it would race the child.
#[test]
fn spawned_process_dies_when_its_function_completes() {
    with_timeout(common::TEST_TIMEOUT, "spawn(fn -> 3 + 1 end)", || {
        let vm = common::vm(1);
        let (alive_at_once, alive_later) = run(&vm, || {
            let pid = spawn(|| {
                let _ = 3 + 1;
            });
            let alive_at_once = process::alive(pid);
            process::sleep(Duration::from_millis(100));
            (alive_at_once, process::alive(pid))
        });
        assert!(
            alive_at_once,
            "process alive immediately after spawn? expected true"
        );
        assert!(!alive_later, "process alive after 100ms? expected false");
    });
}

#[derive(Debug)]
struct Response(i32);

// Seed: "To get a result back ... send a message!" — origin = self(); spawn a child that sends
// {:response, 4 + 1}; receive it with `after 100`.
#[test]
fn spawn_send_and_receive_with_after() {
    with_timeout(common::TEST_TIMEOUT, "spawn + send + receive/after", || {
        let vm = seed_vm();
        let out = Transcript::new();
        let puts = out.clone();
        run(&vm, move || {
            // note who we are
            let origin = self_pid();
            // spawn off the work; the closure captures `origin`
            spawn(move || send(origin, Response(4 + 1)));
            // receive the answer, waiting up to 100ms
            receive! {
                Response(answer): Response => puts.puts(format!("We got an answer! {answer}")),
                after Duration::from_millis(100) => puts.puts("no messages after 100ms"),
            }
        });
        assert_eq!(out.lines(), vec!["We got an answer! 5".to_string()]);
    });
}

// The Task seeds (Task.async / Task.await / Task.await_many).
mod task_seed {
    use super::*;
    use starling::{task, Task};

    // Seed: "The Task module" — `task = Task.async(fn -> 1 + 3 end)` then `Task.await(task)`.
    #[test]
    fn task_async_then_await() {
        with_timeout(common::TEST_TIMEOUT, "Task.async/await", || {
            let vm = seed_vm();
            let result = run(&vm, || Task::spawn(|| 1 + 3).join());
            assert_eq!(result, Ok(4));
        });
    }

    // Seed: "Let's spawn off an async Task per password guess" — 1..1000 mapped to guesses, the
    // password appended last (the worst case), one Task.async per guess, Task.await_many, then
    // Enum.find the {:ok, password}. All wrong guesses sleep at once, so it takes ~3 s in total.
    #[test]
    fn task_per_guess_cracks_the_password_in_about_three_seconds() {
        with_timeout(common::TEST_TIMEOUT, "Task per password guess", || {
            let vm = seed_vm();
            let out = Transcript::new();
            let puts = out.clone();
            let started = Instant::now();
            let (count, found) = run(&vm, move || {
                let guesses: Vec<String> = (1..=1000)
                    .map(|n: i32| n.to_string())
                    .chain([PasswordSystem::PASSWORD.to_string()])
                    .collect();
                let count = guesses.len();
                puts.puts(format!("password guesses count: {count}"));

                let tasks: Vec<Task<Result<String, String>>> = guesses
                    .into_iter()
                    .map(|guess| {
                        Task::spawn(move || match PasswordSystem::check(&guess) {
                            Ok(Atom::AccessGranted) => Ok(guess),
                            _ => Err(guess),
                        })
                    })
                    .collect();

                let results = task::join_all(tasks);
                assert_eq!(
                    results.len(),
                    count,
                    "await_many returns one result per task"
                );
                let found = results.into_iter().find_map(|result| match result {
                    Ok(Ok(password)) => Some(password),
                    Ok(Err(_wrong_guess)) => None,
                    Err(task_error) => panic!("a guessing task failed: {task_error:?}"),
                });
                match &found {
                    Some(password) => puts.puts(format!(
                        "We're in 😎 the password is: {}",
                        inspect(password)
                    )),
                    None => puts.puts("Our hack failed noooooo!"),
                }
                (count, found)
            });
            let elapsed = started.elapsed();

            assert_eq!(count, 1001);
            assert_eq!(found.as_deref(), Some(PasswordSystem::PASSWORD));
            assert_eq!(
                out.lines(),
                vec![
                    "password guesses count: 1001".to_string(),
                    "We're in 😎 the password is: \"my voice is my passport\"".to_string(),
                ]
            );
            assert!(
                elapsed >= Duration::from_secs(3),
                "the wrong guesses cannot answer before 3 s: {elapsed:?}"
            );
            assert!(
                elapsed < Duration::from_secs(20),
                "1,000 concurrent 3 s guesses took {elapsed:?}: were they run one after another?"
            );
        });
    }
}
