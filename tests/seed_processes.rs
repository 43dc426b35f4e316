//! Seed port: "Session 7: The Hitchhiker's Guide to Concurrency", sections 1–2 (what a process
//! is, the process list, schedulers, spawn/1, spawn/3 with MFA, spawning 1000 processes).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, run, with_timeout, Transcript};
use starling::{process, receive, self_pid, send, spawn, Pid};

/// The line a child process "prints" (IO.puts), sent to whoever collects the output.
#[derive(Debug)]
struct Puts(String);

on_schedulers! {
    // Section 1 "Processes vs OS Threads": `length(Process.list())`, `self()`,
    // `Process.alive?(self())`. In Starling no process exists that the user did not spawn.
    fn process_list_of_a_fresh_vm_holds_only_the_root(vm) {
        assert_eq!(vm.process_count(), 0, "a fresh VM runs no process");
        assert!(vm.processes().is_empty());

        let out = Transcript::new();
        let puts = out.clone();
        let me = run(vm, move || {
            let process_count = process::list().len();
            puts.puts(format!("Current running processes: {process_count}"));
            puts.puts(format!("My PID: {}", self_pid()));
            puts.puts(format!("Am I alive? {}", process::alive(self_pid())));
            assert_eq!(process::list(), vec![self_pid()], "the root is the only process");
            self_pid()
        });
        assert_eq!(
            out.lines(),
            vec![
                "Current running processes: 1".to_string(),
                format!("My PID: {me}"),
                "Am I alive? true".to_string(),
            ]
        );
        assert!(me.to_string().starts_with("<0."), "a pid prints like <0.42.0>: {me}");
    }

    // Section 2 "spawn/1 - Anonymous Function": the child prints its greeting and ends; 100 ms
    // later it is no longer alive.
    fn spawn_anonymous_function_then_the_process_terminates(vm) {
        let out = Transcript::new();
        let puts = out.clone();
        let (pid, child_line) = run(vm, move || {
            let parent = self_pid();
            let pid = spawn(move || {
                send(parent, Puts(format!("Hello from process {}!", self_pid())));
            });
            puts.puts(format!("Spawned process: {pid}"));
            // Give it a moment to execute
            process::sleep(Duration::from_millis(100));
            puts.puts(format!("Is {pid} alive? {}", process::alive(pid)));
            let Puts(line) = starling::receive::<Puts>();
            (pid, line)
        });
        assert_eq!(child_line, format!("Hello from process {pid}!"));
        assert_eq!(
            out.lines(),
            vec![format!("Spawned process: {pid}"), format!("Is {pid} alive? false")]
        );
    }

    // Section 2 "spawn/3 - Module, Function, Args": spawn(Greeter, :say_hello, ["World"]) becomes
    // a closure calling a function with its argument.
    fn spawn_module_function_args(vm) {
        let (pid, line) = run(vm, || {
            let parent = self_pid();
            let pid = spawn(move || Greeter::say_hello("World", parent));
            process::sleep(Duration::from_millis(100));
            let Puts(line) = starling::receive::<Puts>();
            (pid, line)
        });
        assert_eq!(line, format!("Hello, World! I am {pid}"));
    }

    // Section 2 "Exercise: Spawn 1000 Processes": each does a tiny bit of work, i * i. The
    // tutorial only times it; here each also reports its square so the root can check all ran.
    fn spawn_1000_processes_computing_squares(vm) {
        let (sum, micros) = run(vm, || {
            let root = self_pid();
            let started = Instant::now();
            let pids: Vec<Pid> = (1..=1000u64)
                .map(|i| {
                    spawn(move || {
                        // Each process does a tiny bit of work
                        let result = i * i;
                        send(root, (i, result));
                    })
                })
                .collect();
            let time_microseconds = started.elapsed().as_micros();
            assert_eq!(pids.len(), 1000);
            let mut sum = 0;
            for _ in 0..1000 {
                let (i, square): (u64, u64) = starling::receive();
                assert_eq!(square, i * i);
                sum += square;
            }
            (sum, time_microseconds)
        });
        // "Time to spawn 1000 processes: … ms" is informational only.
        eprintln!("Time to spawn 1000 processes: {} ms", micros as f64 / 1000.0);
        assert_eq!(sum, (1..=1000u64).map(|i| i * i).sum::<u64>());
    }
}

// Section 1 "The BEAM Scheduler": `:erlang.system_info(:schedulers)` is the configured count.
#[test]
fn schedulers_equals_the_configured_count() {
    with_timeout(common::TEST_TIMEOUT, "schedulers()", || {
        for n in [1, 2, 3, 4] {
            let vm = common::vm(n);
            assert_eq!(vm.schedulers(), n);
            assert_eq!(run(&vm, process::schedulers), n);
        }
    });
}

// Section 2 "It returns immediately with the new process's PID": on one scheduler the child
// cannot have started when spawn returns; it has run and ended 100 ms later.
#[test]
fn spawn_returns_before_the_child_runs() {
    common::with_vm(1, |vm| {
        run(vm, || {
            let ran = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&ran);
            let pid = spawn(move || flag.store(true, Ordering::SeqCst));
            assert!(
                !ran.load(Ordering::SeqCst),
                "the child ran before spawn returned"
            );
            process::sleep(Duration::from_millis(100));
            assert!(ran.load(Ordering::SeqCst), "the child never ran");
            assert!(
                !process::alive(pid),
                "the child is still alive 100 ms later"
            );
        });
    });
}

/// `defmodule Greeter`.
struct Greeter;

impl Greeter {
    /// `say_hello(name)`: IO.puts becomes a `Puts` message to `out`.
    fn say_hello(name: &str, out: Pid) {
        send(out, Puts(format!("Hello, {name}! I am {}", self_pid())));
    }
}

// Section 2 "Now let's see the process count spike": 1000 processes that stay alive (the
// tutorial sleeps 5 s; 2 s keeps the suite fast) make `length(Process.list())` grow by 1000,
// and once they have slept the count is back where it was.
#[test]
fn process_list_grows_by_1000_sleeping_processes() {
    common::with_vm(2, |vm| {
        let out = Transcript::new();
        let puts = out.clone();
        run(vm, move || {
            let before = process::list().len();
            // Spawn processes that stay alive longer
            let pids: Vec<Pid> = (1..=1000)
                .map(|_| spawn(|| process::sleep(Duration::from_secs(2))))
                .collect();
            let after_spawn = process::list().len();
            puts.puts(format!("Processes before: {before}"));
            puts.puts(format!("Processes after spawning 1000: {after_spawn}"));
            puts.puts(format!("Difference: {}", after_spawn - before));

            let listed = process::list();
            assert!(
                pids.iter().all(|pid| listed.contains(pid)),
                "every sleeper is listed"
            );
            eventually("the 1000 sleepers end after their 2 s", || {
                process::list().len() == before
            });
        });
        assert_eq!(
            out.lines(),
            vec![
                "Processes before: 1".to_string(),
                "Processes after spawning 1000: 1001".to_string(),
                "Difference: 1000".to_string(),
            ]
        );
    });
}

// Section 2 spawn/1, with the output collected by `receive!` instead of a plain receive.
#[test]
fn spawned_greeting_arrives_as_a_message() {
    common::with_vm(2, |vm| {
        let line = run(vm, || {
            let parent = self_pid();
            spawn(move || send(parent, Puts(format!("Hello from process {}!", self_pid()))));
            receive! {
                Puts(line): Puts => line,
                after Duration::from_secs(10) => panic!("the child never printed its greeting"),
            }
        });
        assert!(line.starts_with("Hello from process <0."), "{line}");
    });
}
