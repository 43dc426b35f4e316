//! VM and process lifecycle through the public API: building (and refusing bad configs),
//! spawning and sending from outside, `run` repeated and concurrent, several VMs at once,
//! shutdown and drop with blocked processes, pids (format, uniqueness, traits) and
//! `process::info`.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, eventually_outside, run, with_timeout};
use starling::{process, receive, self_pid, send, spawn, Error, Pid, Status, Vm};

#[derive(Debug)]
struct Wake;

#[test]
fn new_vm_has_no_processes() {
    with_timeout(common::TEST_TIMEOUT, "Vm::new", || {
        let vm = Vm::new();
        assert_eq!(vm.process_count(), 0);
        assert!(vm.processes().is_empty());
        assert!(vm.schedulers() >= 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            vm.schedulers(),
            cores,
            "Vm::new() starts one scheduler per available core"
        );
    });
}

#[test]
fn builder_rejects_zero_schedulers() {
    match Vm::builder().schedulers(0).build() {
        Err(Error::InvalidConfig(why)) => assert!(!why.is_empty(), "InvalidConfig says why"),
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("a VM with 0 schedulers must not build"),
    }
}

#[test]
fn builder_accepts_every_documented_option() {
    with_timeout(common::TEST_TIMEOUT, "builder options", || {
        let vm = Vm::builder()
            .schedulers(2)
            .stack_size(256 * 1024)
            .max_processes(2_000_000)
            .build()
            .expect("a valid configuration builds");
        assert_eq!(vm.schedulers(), 2);
        assert_eq!(run(&vm, || 1 + 1), 2);
    });
}

#[test]
fn error_is_a_std_error_with_display() {
    fn assert_error<E: std::error::Error + Debug + Display>() {}
    assert_error::<Error>();
    assert!(
        !Error::InvalidConfig("schedulers must be at least 1".into())
            .to_string()
            .is_empty()
    );
    assert!(!Error::SystemLimit.to_string().is_empty());
}

#[test]
fn pid_and_vm_have_the_documented_traits() {
    fn assert_pid<T: Copy + Eq + Ord + Hash + Send + Sync + Debug + Display + 'static>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_pid::<Pid>();
    assert_send_sync::<Vm>();
}

on_schedulers! {
    fn spawn_and_send_from_outside_a_process(vm) {
        let (tx, rx) = mpsc::channel::<u64>();
        let pid = vm.spawn(move || {
            let n: u64 = starling::receive();
            tx.send(n + 1).unwrap();
            let Wake = starling::receive::<Wake>();
            tx.send(0).unwrap();
        });
        assert!(vm.processes().contains(&pid));
        assert_eq!(vm.process_count(), 1);
        vm.send(pid, 41u64);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(42));
        vm.send(pid, Wake);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(0));
        eventually_outside("the process ends", || vm.process_count() == 0);
        // Sending to a dead pid from outside is silently dropped.
        vm.send(pid, 1u64);
    }

    fn run_can_be_called_again_and_again(vm) {
        for i in 0..200u64 {
            let v = run(vm, move || {
                let root = self_pid();
                spawn(move || send(root, i * 2));
                starling::receive::<u64>()
            });
            assert_eq!(v, i * 2);
        }
    }

    fn roots_see_only_processes_that_exist(vm) {
        // The root of one run is gone by the next run.
        let first = run(vm, self_pid);
        let (second, alive_first) = run(vm, move || (self_pid(), process::alive(first)));
        assert_ne!(first, second);
        assert!(!alive_first);
    }

    fn pid_display_looks_like_erlang(vm) {
        let pids = run(vm, || {
            let mut pids = vec![self_pid()];
            pids.extend((0..100).map(|_| spawn(|| {})));
            pids
        });
        for pid in pids {
            let text = pid.to_string();
            let inner = text
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or_else(|| panic!("{text} is not <...>"));
            let parts: Vec<&str> = inner.split('.').collect();
            assert!(text.starts_with("<0."), "{text}");
            assert_eq!(parts.len(), 3, "{text} has three dot-separated numbers");
            for part in parts {
                assert!(!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()), "{text}");
            }
        }
    }

    // A dead process's pid never addresses a later process during the VM's life.
    fn dead_pids_are_never_reused(vm) {
        let pids = run(vm, || {
            let root = self_pid();
            let mut pids = Vec::with_capacity(10_000);
            for _ in 0..10_000 {
                let pid = spawn(move || send(root, self_pid()));
                let reported: Pid = starling::receive();
                assert_eq!(reported, pid);
                while process::alive(pid) {
                    process::yield_now();
                }
                pids.push(pid);
            }
            // Messages to the dead pids reach none of the processes alive now.
            let probes: Vec<Pid> = (0..100)
                .map(|_| spawn(move || {
                    let got = starling::receive_timeout::<Wake>(Duration::from_millis(300));
                    send(root, got.is_some());
                }))
                .collect();
            for pid in &pids {
                send(*pid, Wake);
            }
            for _ in 0..probes.len() {
                assert!(!starling::receive::<bool>(), "a message to a dead pid reached a live process");
            }
            for probe in probes {
                assert!(!pids.contains(&probe), "{probe} reuses a dead pid");
            }
            pids
        });
        let distinct: HashSet<Pid> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), pids.len(), "10,000 processes that lived one after another got distinct pids");
    }

    fn process_info_fields(vm) {
        run(vm, || {
            let me = self_pid();
            let info = process::info(me).expect("info of self");
            assert_eq!(info.pid, me);
            assert_eq!(info.status, Status::Running, "a process asking about itself is running");
            assert!(info.memory > 0, "a process holds some memory");
            assert_eq!(info.message_queue_len, 0);
            assert!(!info.trap_exit);
            assert_eq!(info.registered_name, None);

            // Reductions grow as the process calls the VM.
            let before = info.reductions;
            for _ in 0..1_000 {
                let _ = self_pid();
                process::yield_now();
            }
            let after = process::info(me).unwrap().reductions;
            assert!(after > before, "reductions went from {before} to {after}");

            send(me, 1u8);
            send(me, 2u8);
            assert_eq!(process::info(me).unwrap().message_queue_len, 2);

            // A process blocked in receive is Waiting; messages it does not match pile up.
            let blocked = spawn(|| {
                let Wake = starling::receive::<Wake>();
            });
            eventually("the blocked process is Waiting", || {
                process::info(blocked).map(|i| i.status) == Some(Status::Waiting)
            });
            for n in 1..=3usize {
                send(blocked, n);
                assert_eq!(process::info(blocked).unwrap().message_queue_len, n);
            }
            eventually("the blocked process is Waiting again after scanning the new messages", || {
                process::info(blocked).map(|i| i.status) == Some(Status::Waiting)
            });
            let info = process::info(blocked).unwrap();
            assert_eq!(info.pid, blocked);
            assert!(info.memory > 0);

            send(blocked, Wake);
            eventually("the woken process ends", || !process::alive(blocked));
            assert_eq!(process::info(blocked).map(|_| ()), None, "a dead process has no info");
        });
    }
}

#[test]
fn run_from_several_os_threads_at_once() {
    with_timeout(common::TEST_TIMEOUT, "concurrent run", || {
        let vm = Arc::new(common::vm(2));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let vm = Arc::clone(&vm);
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let expected = t * 1_000 + i;
                        let got = run(&vm, move || {
                            let root = self_pid();
                            let child = spawn(move || {
                                let n: u64 = starling::receive();
                                send(root, n);
                            });
                            send(child, expected);
                            starling::receive::<u64>()
                        });
                        assert_eq!(got, expected, "each run gets its own answer");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread calling run failed");
        }
    });
}

#[test]
fn several_vms_do_not_interfere() {
    with_timeout(common::TEST_TIMEOUT, "several VMs", || {
        let a = common::vm(2);
        let b = common::vm(1);
        let c = common::vm(4);
        for _ in 0..100 {
            a.spawn(|| {
                let Wake = starling::receive::<Wake>();
            });
        }
        eventually_outside("A's processes exist", || a.process_count() == 100);
        assert_eq!(b.process_count(), 0);
        assert_eq!(c.process_count(), 0);
        assert_eq!(
            run(&b, || process::list().len()),
            1,
            "B's root sees only itself"
        );
        assert_eq!(
            run(&c, || process::list().len()),
            1,
            "C's root sees only itself"
        );
        assert_eq!(run(&b, process::schedulers), 1);
        assert_eq!(run(&c, process::schedulers), 4);

        // Both run message-heavy work at the same time from two threads.
        let work = |vm: &Vm| {
            run(vm, || {
                let root = self_pid();
                for i in 0..100u64 {
                    spawn(move || send(root, i));
                }
                (0..100).map(|_| starling::receive::<u64>()).sum::<u64>()
            })
        };
        std::thread::scope(|s| {
            let hb = s.spawn(|| work(&b));
            let hc = s.spawn(|| work(&c));
            assert_eq!(hb.join().unwrap(), 4950);
            assert_eq!(hc.join().unwrap(), 4950);
        });
        assert_eq!(a.process_count(), 100, "A is untouched by B and C");
        drop(b);
        assert_eq!(run(&c, || 5), 5, "dropping B leaves C running");
        assert_eq!(a.process_count(), 100);
    });
}

#[test]
fn shutdown_while_processes_block_returns_promptly() {
    for schedulers in [1, 2, 4] {
        let what = format!("vm.shutdown() with blocked processes on {schedulers} schedulers");
        with_timeout(Duration::from_secs(20), &what, move || {
            let vm = common::vm(schedulers);
            for _ in 0..1_000 {
                vm.spawn(|| {
                    let Wake = starling::receive::<Wake>();
                });
            }
            for _ in 0..100 {
                vm.spawn(|| process::sleep(Duration::from_secs(3_600)));
            }
            eventually_outside("the processes exist", || vm.process_count() == 1_100);
            vm.shutdown();
        });
    }
}

#[test]
fn drop_while_processes_block_returns_promptly() {
    with_timeout(
        Duration::from_secs(20),
        "dropping a VM with blocked processes",
        || {
            let vm = common::vm(2);
            for _ in 0..1_000 {
                vm.spawn(|| {
                    let Wake = starling::receive::<Wake>();
                });
            }
            for _ in 0..10 {
                // Busy processes that keep calling the VM.
                vm.spawn(|| loop {
                    process::yield_now();
                });
            }
            eventually_outside("the processes exist", || vm.process_count() == 1_010);
            drop(vm);
        },
    );
}

#[test]
fn shutdown_of_an_idle_vm_and_of_a_used_one() {
    with_timeout(Duration::from_secs(20), "shutdown", || {
        common::vm(1).shutdown();
        let vm = common::vm(4);
        assert_eq!(run(&vm, || 3), 3);
        vm.shutdown();
        drop(Vm::new());
    });
}

#[test]
fn receive_macro_is_usable_in_processes_spawned_from_outside() {
    with_timeout(common::TEST_TIMEOUT, "vm.spawn + receive!", || {
        let vm = common::vm(2);
        let (tx, rx) = mpsc::channel();
        let pid = vm.spawn(move || {
            let v = receive! {
                n: u32 => n,
                after Duration::from_secs(20) => 0,
            };
            tx.send(v).unwrap();
        });
        vm.send(pid, 5u32);
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(5));
    });
}
