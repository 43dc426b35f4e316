//! Limits: at `max_processes` live processes `try_spawn` returns `Err(SystemLimit)` and `spawn`
//! (in a process, or `Vm::spawn` outside) panics with "system limit" and the limit's value,
//! spawning works again once processes end, and the builder
//! rejects out-of-range options with `Error::InvalidConfig` naming the option.

mod heavy_common;

use std::time::Duration;

use heavy_common::{echo, guarded, ping, stop_echo, wait_until_no_processes};
use starling::{
    process, receive, receive_match, send, spawn, spawn_monitor, try_spawn, Down, Error,
    ExitReason, Pid, Vm,
};

const LIMIT: usize = 100;

/// Releases a holder.
#[derive(Debug)]
struct Release;

/// Tells the prober to try its `spawn`.
#[derive(Debug)]
struct Go;

/// A process that stays alive until released.
fn holder() {
    let Release = receive::<Release>();
}

/// Ends `pid` by releasing it and waits until it is gone.
fn release_and_wait(pid: Pid) {
    let monitor = process::monitor(pid);
    send(pid, Release);
    let down = receive_match::<Down>(|down| down.monitor == monitor);
    assert_eq!(down.reason, ExitReason::Normal);
}

#[test]
fn max_processes_is_enforced_and_recovers() {
    guarded("max_processes(100)", || {
        let vm = Vm::builder()
            .schedulers(2)
            .max_processes(LIMIT)
            .crash_reports(false)
            .build()
            .expect("building the VM");
        let outcome = vm.run(|| {
            // The root counts: 99 holders fill the table.
            let mut holders: Vec<Pid> = Vec::new();
            loop {
                match try_spawn(holder) {
                    Ok(pid) => holders.push(pid),
                    Err(error) => {
                        assert_eq!(error, Error::SystemLimit);
                        break;
                    }
                }
                assert!(holders.len() < LIMIT, "try_spawn never hit the limit");
            }
            assert_eq!(
                holders.len(),
                LIMIT - 1,
                "the root counts against the limit"
            );
            assert_eq!(process::list().len(), LIMIT);
            assert_eq!(try_spawn(|| ()), Err(Error::SystemLimit), "still full");

            // One slot frees up; a prober takes it and finds the table full when it spawns.
            release_and_wait(holders.pop().unwrap());
            let (prober, monitor) = spawn_monitor(|| {
                let Go = receive::<Go>();
                spawn(|| ());
            });
            assert_eq!(try_spawn(|| ()), Err(Error::SystemLimit), "full again");
            send(prober, Go);
            let down = receive_match::<Down>(|down| down.monitor == monitor);
            assert_eq!(down.pid, prober);
            match &down.reason {
                ExitReason::Panic(message) => assert!(
                    message.starts_with("starling::spawn: ")
                        && message.to_lowercase().contains("system limit")
                        && message.contains(&format!("max_processes is {LIMIT}")),
                    "spawn at the limit panicked with {message:?}"
                ),
                other => panic!("spawn at the limit ended the prober with {other:?}"),
            }

            // Ten more end: ten spawns work again, and the table is full again after them.
            for _ in 0..10 {
                release_and_wait(holders.pop().unwrap());
            }
            let me = starling::self_pid();
            let mut spawned = 0;
            for i in 0..11u64 {
                match try_spawn(move || send(me, i)) {
                    Ok(_) => spawned += 1,
                    Err(error) => assert_eq!(error, Error::SystemLimit),
                }
            }
            // The replies end the repliers, so at least the 11 freed slots were usable; some of
            // the eleventh's may have been freed in time too.
            assert!(
                spawned >= 10,
                "only {spawned} spawns after ten processes ended"
            );
            let total: u64 = (0..spawned).map(|_| receive::<u64>()).sum();
            assert!(total >= 45);

            // The VM is healthy: ordinary work goes on.
            for pid in holders.drain(..) {
                release_and_wait(pid);
            }
            let sibling = echo();
            for n in 0..100 {
                ping(sibling, n);
            }
            stop_echo(sibling);
        });
        assert_eq!(outcome, Ok(()));
        // Every process has ended (the repliers may still have been ending), so the table
        // fills up again from outside.
        wait_until_no_processes(&vm);
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
        let outside: Vec<Result<Pid, Error>> =
            (0..LIMIT + 1).map(|_| vm.try_spawn(holder)).collect();
        assert!(outside[..LIMIT].iter().all(Result::is_ok));
        assert_eq!(outside[LIMIT], Err(Error::SystemLimit));
        // `Vm::spawn` at the limit panics in the caller's thread, naming itself and the limit.
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vm.spawn(holder)))
            .expect_err("Vm::spawn at the limit returned");
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            message.starts_with("starling::Vm::spawn: ")
                && message.contains(&format!("max_processes is {LIMIT}")),
            "Vm::spawn at the limit panicked with {message:?}"
        );
        for pid in outside.into_iter().flatten() {
            vm.send(pid, Release);
        }
    });
}

/// Sets one builder option.
type Configure = fn(starling::Builder) -> starling::Builder;

/// Builds a VM with `configure` and returns the `InvalidConfig` message.
fn invalid_config(configure: impl FnOnce(starling::Builder) -> starling::Builder) -> String {
    match configure(Vm::builder()).build() {
        Err(Error::InvalidConfig(message)) => message,
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(vm) => panic!("expected InvalidConfig, got a VM: {vm:?}"),
    }
}

#[test]
fn builder_rejects_out_of_range_options() {
    guarded("builder validation", || {
        let cases: [(&str, Configure); 13] = [
            ("max_processes", |b| b.max_processes(0)),
            ("max_processes", |b| b.max_processes(usize::MAX)),
            ("schedulers", |b| b.schedulers(0)),
            ("schedulers", |b| b.schedulers(100_000)),
            ("stack_size", |b| b.stack_size(1024)),
            ("stack_size", |b| b.stack_size(64 << 30)),
            ("stack_size", |b| b.stack_size(usize::MAX)),
            ("long_schedule", |b| b.long_schedule(Duration::ZERO)),
            ("max_stack_slots", |b| b.max_stack_slots(0)),
            ("max_stack_slots", |b| b.max_stack_slots(usize::MAX)),
            ("spare_threads", |b| b.spare_threads(usize::MAX)),
            ("blocking_threads", |b| b.blocking_threads(0)),
            ("max_processes", |b| b.max_processes(0).schedulers(0)),
        ];
        for (option, configure) in cases {
            let message = invalid_config(configure);
            assert!(
                message.contains(option),
                "the InvalidConfig message for a bad {option} does not name it: {message:?}"
            );
        }
        // A valid builder still builds.
        let vm = Vm::builder()
            .schedulers(1)
            .max_processes(1)
            .stack_size(64 * 1024)
            .long_schedule(Duration::from_millis(1))
            .build()
            .expect("the smallest valid values build");
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
    });
}
