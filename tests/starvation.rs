//! Starvation: processes that hold a scheduler without calling the VM (pure computation,
//! `std::thread::sleep`, a blocking read) do not stop the others from running (W6), such
//! long schedules are recorded with the culprit's pid, a worker whose thread the OS merely
//! preempted is not flagged, a VM with spinning processes still shuts down, and a process that
//! calls the VM in a tight loop is preempted by reductions.
//!
//! Tests with spinners serialize on one mutex: this machine has two cores, and two tests'
//! spinners at once would only measure the OS scheduler.

mod heavy_common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heavy_common::{echo, guarded, percentile, ping, serialize, spin_until, stop_echo};
use starling::{
    process, receive, receive_match, self_pid, send, spawn, spawn_monitor, Down, ExitReason,
    MonitorRef, Pid, Vm,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// A process has started (and is about to hold its scheduler).
#[derive(Debug)]
struct Started;

/// Runs `body` under the hang guard, then sets `stop` whatever happened (so spinners never
/// outlive their test, even a failed one), then re-raises a failure.
fn with_stop_flag<T: Send + 'static>(
    what: &str,
    stop: &Arc<AtomicBool>,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guarded(what, body)));
    // Relaxed: the spinners poll it; nothing else is published through it.
    stop.store(true, Ordering::Relaxed);
    outcome.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// Inside a process: spawns `count` monitored spinners, and waits until each has started.
fn start_spinners(count: usize, stop: &Arc<AtomicBool>) -> Vec<(Pid, MonitorRef)> {
    let me = self_pid();
    let spinners: Vec<(Pid, MonitorRef)> = (0..count)
        .map(|_| {
            let stop = stop.clone();
            spawn_monitor(move || {
                send(me, Started);
                std::hint::black_box(spin_until(&stop));
            })
        })
        .collect();
    for _ in 0..count {
        let Started = receive::<Started>();
    }
    spinners
}

/// Inside a process: sets `stop` and waits for every spinner to end normally.
fn stop_spinners(stop: &AtomicBool, spinners: &[(Pid, MonitorRef)]) {
    stop.store(true, Ordering::Relaxed);
    for &(pid, monitor) in spinners {
        let down = receive_match::<Down>(|down| down.monitor == monitor);
        assert_eq!((down.pid, down.reason), (pid, ExitReason::Normal));
    }
}

/// `spinners` processes compute without calling the VM on a 2-scheduler VM while a ping-pong
/// pair does `round_trips` round trips; returns each round trip's duration, sorted.
fn ping_pong_beside_spinners(spinners: usize, round_trips: u64) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    let what = format!("{spinners} spinners beside a ping-pong pair");
    with_stop_flag(&what, &stop, move || {
        let vm = Vm::builder()
            .schedulers(2)
            .build()
            .expect("building the VM");
        let mut times = vm
            .run(move || {
                let spinning = start_spinners(spinners, &stop_in);
                let partner = echo();
                let mut times = Vec::with_capacity(round_trips as usize);
                for n in 0..round_trips {
                    let start = Instant::now();
                    ping(partner, n);
                    times.push(start.elapsed());
                }
                stop_spinners(&stop_in, &spinning);
                stop_echo(partner);
                times
            })
            .expect("the root process failed");
        times.sort();
        times
    })
}

// (a) W6: two spinners on two schedulers; a ping-pong pair completes 10,000 round trips.
#[test]
fn w6_ping_pong_beside_two_spinners() {
    let _serial = serialize(&SERIAL);
    let times = ping_pong_beside_spinners(2, 10_000);
    assert_eq!(times.len(), 10_000);
    println!(
        "W6 (2 spinners, 2 schedulers): 10,000 round trips, median {:?}, p99 {:?}, max {:?}",
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().unwrap()
    );
}

// (b) four spinners on two schedulers; a ping-pong pair completes 2,000 round trips.
#[test]
fn ping_pong_beside_four_spinners() {
    let _serial = serialize(&SERIAL);
    let times = ping_pong_beside_spinners(4, 2_000);
    assert_eq!(times.len(), 2_000);
    println!(
        "4 spinners, 2 schedulers: 2,000 round trips, median {:?}, p99 {:?}, max {:?}",
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().unwrap()
    );
}

/// The blocked process is done.
#[derive(Debug)]
struct Unblocked(Vec<u8>);

/// On a 1-scheduler VM, `block` (run by a process, given `pings_done`, which is set once the
/// pings are done) holds the only scheduler without calling the VM; another process answers 50
/// pings meanwhile. `block` must not return before the flag is set.
fn pings_while_blocked(
    what: &str,
    pings_done: Arc<AtomicBool>,
    block: impl FnOnce(&AtomicBool) -> Vec<u8> + Send + 'static,
) {
    let pings_done_in = pings_done.clone();
    with_stop_flag(what, &pings_done, move || {
        let vm = Vm::builder()
            .schedulers(1)
            .build()
            .expect("building the VM");
        let outcome = vm.run(move || {
            let me = self_pid();
            let blocked_done = Arc::new(AtomicBool::new(false));
            let (flag, done) = (pings_done_in.clone(), blocked_done.clone());
            let (blocked, monitor) = spawn_monitor(move || {
                send(me, Started);
                let data = block(&flag);
                done.store(true, Ordering::SeqCst);
                send(me, Unblocked(data));
            });
            let Started = receive::<Started>();
            let partner = echo();
            for n in 0..50 {
                ping(partner, n);
            }
            assert!(
                !blocked_done.load(Ordering::SeqCst),
                "the blocked process finished before the pings"
            );
            pings_done_in.store(true, Ordering::SeqCst);
            let Unblocked(data) = receive::<Unblocked>();
            let down = receive_match::<Down>(|down| down.monitor == monitor);
            assert_eq!((down.pid, down.reason), (blocked, ExitReason::Normal));
            stop_echo(partner);
            data
        });
        assert_eq!(outcome.as_deref(), Ok(&b"hello"[..]));
    });
}

// (c) a process in `std::thread::sleep` on a 1-scheduler VM does not stall the others.
#[test]
fn a_thread_sleep_does_not_stall_others() {
    let _serial = serialize(&SERIAL);
    let pings_done = Arc::new(AtomicBool::new(false));
    pings_while_blocked(
        "thread::sleep on a 1-scheduler VM",
        pings_done,
        |pings_done| {
            // 300 ms sleeps until the pings are through: the scheduler is held the whole time.
            loop {
                std::thread::sleep(Duration::from_millis(300));
                if pings_done.load(Ordering::SeqCst) {
                    break b"hello".to_vec();
                }
            }
        },
    );
}

// (c) a process in a blocking read (a socket written by a plain OS thread after 300 ms, once
// the pings are through) on a 1-scheduler VM does not stall the others.
#[test]
fn a_blocking_read_does_not_stall_others() {
    let _serial = serialize(&SERIAL);
    let (mut reader, mut writer) = UnixStream::pair().expect("socket pair");
    let pings_done = Arc::new(AtomicBool::new(false));
    let writer_flag = pings_done.clone();
    let writer_thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let deadline = Instant::now() + Duration::from_secs(100);
        while !writer_flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.write_all(b"hello").expect("write to the socket");
    });
    pings_while_blocked(
        "blocking read on a 1-scheduler VM",
        pings_done,
        move |flag| {
            let mut data = vec![0u8; 5];
            reader.read_exact(&mut data).expect("read from the socket");
            assert!(
                flag.load(Ordering::SeqCst),
                "the writer wrote before the pings were done"
            );
            data
        },
    );
    writer_thread.join().expect("the writer thread panicked");
}

// (d) long schedules are recorded with the spinner's pid, once detected and once finished.
#[test]
fn long_schedules_are_recorded() {
    let _serial = serialize(&SERIAL);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    with_stop_flag("long schedules", &stop, move || {
        let vm = Vm::builder()
            .schedulers(2)
            .build()
            .expect("building the VM");
        let spinners = vm
            .run(move || {
                let spinning = start_spinners(2, &stop_in);
                let pids: Vec<Pid> = spinning.iter().map(|&(pid, _)| pid).collect();
                process::sleep(Duration::from_millis(50));
                let seen = |finished: bool| {
                    process::long_schedules()
                        .iter()
                        .any(|event| pids.contains(&event.pid) && event.finished == finished)
                };
                while !seen(false) {
                    process::sleep(Duration::from_millis(1));
                }
                stop_spinners(&stop_in, &spinning);
                while !seen(true) {
                    process::sleep(Duration::from_millis(1));
                }
                pids
            })
            .expect("the root process failed");
        let events = vm.long_schedules();
        println!("long schedules: {events:?}");
        let detected = events
            .iter()
            .find(|event| spinners.contains(&event.pid) && !event.finished)
            .expect("vm.long_schedules() has the spinner's detection");
        assert!(
            detected.duration >= Duration::from_millis(5),
            "{detected:?}"
        );
        let finished = events
            .iter()
            .find(|event| spinners.contains(&event.pid) && event.finished)
            .expect("vm.long_schedules() has the spinner's finish");
        assert!(
            finished.duration >= Duration::from_millis(50),
            "{finished:?}"
        );
    });
}

// (e) a VM whose processes spin (stop flag not yet set) still shuts down when dropped.
#[test]
fn shutdown_while_processes_spin() {
    let _serial = serialize(&SERIAL);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    with_stop_flag("dropping a VM while processes spin", &stop, move || {
        let vm = Vm::builder()
            .schedulers(2)
            .build()
            .expect("building the VM");
        let started = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let (stop, started) = (stop_in.clone(), started.clone());
            vm.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                std::hint::black_box(spin_until(&stop));
            });
        }
        while started.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the watchdog see them hold their schedulers.
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        drop(vm);
        println!(
            "dropping a VM with 2 spinning processes took {:?}",
            start.elapsed()
        );
        assert!(
            !stop_in.load(Ordering::Relaxed),
            "the spinners were still spinning"
        );
        // The abandoned spinners may return now; that must not disturb anything.
        stop_in.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        let vm = Vm::builder()
            .schedulers(2)
            .build()
            .expect("building another VM");
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
    });
}

/// A process calls `call` in a tight loop on a 1-scheduler VM whose watchdog would wait 10 s:
/// only reduction counting can let another process run; that one completes 100 round trips.
fn preempted_by_reductions(what: &str, call: fn()) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    with_stop_flag(what, &stop, move || {
        let vm = Vm::builder()
            .schedulers(1)
            .long_schedule(Duration::from_secs(10))
            .build()
            .expect("building the VM");
        let calls = vm
            .run(move || {
                let me = self_pid();
                let stop = stop_in.clone();
                let (looper, monitor) = spawn_monitor(move || {
                    send(me, Started);
                    let mut calls = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        call();
                        calls += 1;
                    }
                    send(me, calls);
                });
                let Started = receive::<Started>();
                let partner = echo();
                for n in 0..100 {
                    ping(partner, n);
                }
                assert!(
                    process::alive(looper),
                    "the looping process stopped by itself"
                );
                stop_in.store(true, Ordering::Relaxed);
                let calls = receive::<u64>();
                let down = receive_match::<Down>(|down| down.monitor == monitor);
                assert_eq!(down.reason, ExitReason::Normal);
                stop_echo(partner);
                calls
            })
            .expect("the root process failed");
        assert!(calls > 0);
        assert!(
            vm.long_schedules().is_empty(),
            "a process that calls the VM was reported as a long schedule: {:?}",
            vm.long_schedules()
        );
    });
}

// (f) a process calling `process::bump_reductions(1)` in a tight loop is preempted.
#[test]
fn a_bump_reductions_loop_is_preempted() {
    let _serial = serialize(&SERIAL);
    preempted_by_reductions("bump_reductions loop on a 1-scheduler VM", || {
        process::bump_reductions(1)
    });
}

// (f) a process calling `self_pid()` in a tight loop is preempted.
#[test]
fn a_self_pid_loop_is_preempted() {
    let _serial = serialize(&SERIAL);
    preempted_by_reductions("self_pid loop on a 1-scheduler VM", || {
        std::hint::black_box(self_pid());
    });
}

// Spawning from inside a spinner's neighbourhood: a spawn storm completes beside two spinners.
#[test]
fn spawns_complete_beside_spinners() {
    let _serial = serialize(&SERIAL);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    with_stop_flag("spawns beside spinners", &stop, move || {
        let vm = Vm::builder()
            .schedulers(2)
            .build()
            .expect("building the VM");
        let sum = vm.run(move || {
            let spinning = start_spinners(2, &stop_in);
            let me = self_pid();
            for i in 0..10_000u64 {
                spawn(move || send(me, i));
            }
            let sum: u64 = (0..10_000).map(|_| receive::<u64>()).sum();
            stop_spinners(&stop_in, &spinning);
            sum
        });
        assert_eq!(sum, Ok(49_995_000));
    });
}

/// The CPUs this thread may run on (Linux).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let got =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(got, 0, "sched_getaffinity failed");
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE and `set` is initialized.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Restricts the calling OS thread to `cpu`.
fn pin_this_thread(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (it came from `allowed_cpus`).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let got = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(got, 0, "sched_setaffinity({cpu}) failed");
}

/// Computes for about `duration` of wall time without calling the VM.
fn compute_for(duration: Duration) {
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < duration {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

// (g) a worker whose thread the OS preempts inside an ordinary run is not flagged stuck (no
// long schedule, no spare): its scheduler shares one CPU with two busy OS threads, so its runs
// of ~50 µs often last several milliseconds of wall time (judged on wall time alone, ~90 of them
// were flagged in 1.5 s). A few may still be: in a virtual machine, time the hypervisor takes
// from the virtual CPU counts as the thread's CPU time. A process that really computes on that
// crowded CPU is still flagged. Needs a second CPU for the watchdog and Linux's per-thread
// state; skipped without them.
#[test]
fn a_preempted_worker_is_not_flagged_stuck() {
    let _serial = serialize(&SERIAL);
    let cpus = allowed_cpus();
    if cpus.len() < 2 || !std::path::Path::new("/proc/thread-self/stat").exists() {
        println!("skipped: needs two CPUs and /proc/thread-self/stat");
        return;
    }
    let crowded = cpus[0];
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    with_stop_flag("a preempted worker", &stop, move || {
        let vm = Vm::builder()
            .schedulers(1)
            .long_schedule(Duration::from_millis(3))
            .build()
            .expect("building the VM");
        // A process runs on its scheduler's thread: this pins the one worker thread.
        vm.run(move || pin_this_thread(crowded))
            .expect("pinning the worker failed");
        let hogs: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop_in.clone();
                std::thread::spawn(move || {
                    pin_this_thread(crowded);
                    std::hint::black_box(spin_until(&stop));
                })
            })
            .collect();
        let runs = vm
            .run(|| {
                let start = Instant::now();
                let mut runs = 0u64;
                while start.elapsed() < Duration::from_millis(1_500) {
                    compute_for(Duration::from_micros(50));
                    process::yield_now();
                    runs += 1;
                }
                runs
            })
            .expect("the short-run process failed");
        let events = vm.long_schedules();
        let preempted: Vec<_> = events.iter().filter(|event| !event.finished).collect();
        vm.run(|| compute_for(Duration::from_millis(100)))
            .expect("the computing process failed");
        stop_in.store(true, Ordering::Relaxed);
        for hog in hogs {
            hog.join().expect("a hog thread panicked");
        }
        let computed = vm.long_schedules().split_off(events.len());
        println!(
            "{runs} short runs beside two busy threads: {} flagged stuck; then a 100 ms \
             computation: {computed:?}",
            preempted.len()
        );
        assert!(
            preempted.len() <= 5,
            "runs of ~50 µs whose thread the OS preempted were flagged stuck {} times: {:?}",
            preempted.len(),
            &preempted[..preempted.len().min(5)]
        );
        assert!(
            computed.iter().any(|event| !event.finished),
            "a 100 ms computation on the crowded CPU was not flagged"
        );
    });
}
