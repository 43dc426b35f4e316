//! `process_local!`: each process sees its own lazily initialised value, and the value is
//! dropped when the process ends (normally, by panic or by exit).

#[macro_use]
mod common;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{eventually, quiet_intentional_panics, receive_or_fail, run, INTENTIONAL};
use starling::{exit, process, process_local, self_pid, send, spawn, ExitReason, Pid};

process_local! {
    static COUNTER: RefCell<u32> = RefCell::new(0);
}

process_local! {
    static OWNER: Cell<Option<Pid>> = Cell::new(None);
}

// Counts initialisations of LAZY; only `each_process_initialises_lazily` touches LAZY.
static LAZY_INITS: AtomicUsize = AtomicUsize::new(0);

process_local! {
    static LAZY: u32 = {
        LAZY_INITS.fetch_add(1, Ordering::SeqCst);
        7
    };
}

/// A value that counts its drops in a static counter chosen by the test that creates it.
struct DropCounter(&'static AtomicUsize);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// One static per test, because tests of one file run in parallel.
static NORMAL_DROPS: AtomicUsize = AtomicUsize::new(0);
static PANIC_DROPS: AtomicUsize = AtomicUsize::new(0);
static EXIT_DROPS: AtomicUsize = AtomicUsize::new(0);

process_local! {
    static NORMAL_GUARD: RefCell<Option<DropCounter>> = RefCell::new(None);
}

process_local! {
    static PANIC_GUARD: RefCell<Option<DropCounter>> = RefCell::new(None);
}

process_local! {
    static EXIT_GUARD: RefCell<Option<DropCounter>> = RefCell::new(None);
}

on_schedulers! {
    fn each_process_sees_its_own_value(vm) {
        run(vm, || {
            let root = self_pid();
            COUNTER.with(|c| *c.borrow_mut() = 1000);
            for i in 0..100u32 {
                spawn(move || {
                    OWNER.with(|o| o.set(Some(self_pid())));
                    assert_eq!(COUNTER.with(|c| *c.borrow()), 0, "a new process starts from the initialiser");
                    for _ in 0..=i {
                        COUNTER.with(|c| *c.borrow_mut() += 1);
                        process::yield_now();
                    }
                    let mine = OWNER.with(Cell::get) == Some(self_pid());
                    send(root, (i, COUNTER.with(|c| *c.borrow()), mine));
                });
            }
            for _ in 0..100 {
                let (i, count, mine): (u32, u32, bool) = receive_or_fail("a process's count");
                assert_eq!(count, i + 1, "process {i} counted only its own increments");
                assert!(mine);
            }
            assert_eq!(COUNTER.with(|c| *c.borrow()), 1000, "the root's value is its own");
            assert_eq!(OWNER.with(Cell::get), None, "the root never set OWNER");
        });
    }
}

#[test]
fn each_process_initialises_lazily() {
    common::with_vm(2, |vm| {
        run(vm, || {
            let root = self_pid();
            for i in 0..50u32 {
                spawn(move || {
                    if i % 2 == 0 {
                        assert_eq!(LAZY.with(|v| *v), 7);
                        // A second access does not initialise again.
                        assert_eq!(LAZY.with(|v| *v), 7);
                    }
                    send(root, ());
                });
            }
            for _ in 0..50 {
                receive_or_fail::<()>("a process finished");
            }
            assert_eq!(
                LAZY_INITS.load(Ordering::SeqCst),
                25,
                "only the processes that touched it initialise it, once each"
            );
        });
    });
}

#[test]
fn values_are_dropped_when_the_process_returns() {
    common::with_vm(2, |vm| {
        run(vm, || {
            let root = self_pid();
            let pids: Vec<Pid> = (0..100)
                .map(|i| {
                    spawn(move || {
                        if i % 2 == 0 {
                            NORMAL_GUARD
                                .with(|g| *g.borrow_mut() = Some(DropCounter(&NORMAL_DROPS)));
                        }
                        starling::receive::<()>();
                        send(root, ());
                    })
                })
                .collect();
            process::sleep(Duration::from_millis(20));
            assert_eq!(
                NORMAL_DROPS.load(Ordering::SeqCst),
                0,
                "nothing is dropped while the processes live"
            );
            for pid in &pids {
                send(*pid, ());
            }
            for _ in 0..100 {
                receive_or_fail::<()>("a process finished");
            }
            eventually("every set value is dropped once its process ends", || {
                NORMAL_DROPS.load(Ordering::SeqCst) == 50
            });
            process::sleep(Duration::from_millis(20));
            assert_eq!(
                NORMAL_DROPS.load(Ordering::SeqCst),
                50,
                "each value is dropped exactly once"
            );
        });
    });
}

#[test]
fn values_are_dropped_when_the_process_panics() {
    quiet_intentional_panics();
    common::with_vm(2, |vm| {
        run(vm, || {
            for _ in 0..20 {
                spawn(|| {
                    PANIC_GUARD.with(|g| *g.borrow_mut() = Some(DropCounter(&PANIC_DROPS)));
                    process::yield_now();
                    panic!("{INTENTIONAL}: with a process-local value");
                });
            }
            eventually(
                "process-local values of panicked processes are dropped",
                || PANIC_DROPS.load(Ordering::SeqCst) == 20,
            );
        });
    });
}

#[test]
fn values_are_dropped_when_the_process_exits() {
    common::with_vm(2, |vm| {
        run(vm, || {
            for _ in 0..20 {
                spawn(|| {
                    EXIT_GUARD.with(|g| *g.borrow_mut() = Some(DropCounter(&EXIT_DROPS)));
                    process::yield_now();
                    exit(ExitReason::Custom("done".to_string()));
                });
            }
            eventually(
                "process-local values of exited processes are dropped",
                || EXIT_DROPS.load(Ordering::SeqCst) == 20,
            );
        });
    });
}
