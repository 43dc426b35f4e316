//! Shared helpers for the heavy integration tests (`million.rs`, `memory.rs`, `memory_cycles.rs`,
//! `memory_monitors.rs`, `memory_idle.rs`, `memory_vm_drop.rs`, `memory_arena_top.rs`, `memory_arena_pad.rs`,
//! `memory_relations_burst.rs`, `stack_overflow.rs`, `limits.rs`, `starvation.rs`,
//! `blocking.rs`): a hang guard, the resident set size and waits for it to fall, a spinner that
//! never calls the VM, a recursion of known stack depth, an echo process, and percentiles.
//!
//! Every test runs its body on a helper OS thread and waits for it with a deadline, so a VM
//! that deadlocks or starves makes the test FAIL with a message instead of hanging the suite.

#![allow(dead_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use starling::{process, receive, self_pid, send, spawn, Pid, Vm};

/// The hang guard of a heavy test: far above what any test needs (a few seconds in
/// `--release`), far below "forever".
pub const HEAVY_TIMEOUT: Duration = Duration::from_secs(120);

#[path = "../hang_guard/mod.rs"]
mod hang_guard;
#[allow(unused_imports)] // not every test file uses them
pub use hang_guard::{eventually, eventually_outside, panic_message, with_timeout};

/// [`with_timeout`] with [`HEAVY_TIMEOUT`].
#[track_caller]
pub fn guarded<T, F>(what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    with_timeout(HEAVY_TIMEOUT, what, f)
}

/// Takes `lock` even if a previous test panicked while holding it (tests that must not run at
/// the same time as the others of their binary serialize on one static mutex).
pub fn serialize(lock: &'static Mutex<()>) -> MutexGuard<'static, ()> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// This OS process's resident set size in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("no VmRSS line in /proc/self/status");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    kib * 1024
}

/// Waits, polling every 100 ms, until the RSS is at most `limit` bytes or `within` has
/// passed; returns the last reading and the time waited. (For a VM left alone to give memory
/// back: nothing here calls it.)
pub fn wait_for_rss_at_most(limit: usize, within: Duration) -> (usize, Duration) {
    let start = std::time::Instant::now();
    let mut now = rss_bytes();
    while now > limit && start.elapsed() < within {
        std::thread::sleep(Duration::from_millis(100));
        now = rss_bytes();
    }
    (now, start.elapsed())
}

/// What [`burst_then_idle`] read: the RSS before the burst, the last reading after it, and how
/// long the VM had idled by then.
pub struct AfterBurst {
    pub before: usize,
    pub now: usize,
    pub waited: Duration,
}

impl AfterBurst {
    /// Waits up to 20 s for the RSS to fall to at most `slack` above `before` (a give-back pass
    /// runs at most once a second, each worker its own).
    pub fn idle(before: usize, slack: usize) -> AfterBurst {
        let (now, waited) = wait_for_rss_at_most(before + slack, Duration::from_secs(20));
        AfterBurst {
            before,
            now,
            waited,
        }
    }

    /// KiB the idle VM held above its reading before the burst (negative: below it).
    pub fn kib_above(&self) -> i64 {
        (self.now as i64 - self.before as i64) / 1024
    }

    /// Prints the readings, then asserts that the idle VM was within `slack` bytes of its RSS
    /// before `what` (e.g. "a burst of 100000 spawn/exit cycles").
    #[track_caller]
    pub fn check(&self, what: &str, slack: usize) {
        println!(
            "memory: {} KiB before {what}, {:+} KiB {:.1} s after",
            self.before >> 10,
            self.kib_above(),
            self.waited.as_secs_f64()
        );
        assert!(
            self.now <= self.before + slack,
            "the idle VM kept {} KiB more than before {what} (slack {} KiB)",
            self.kib_above(),
            slack >> 10
        );
    }
}

/// A VM that has run once and idled past the runtime's first second (no give-back happens in
/// it), and the RSS read then: the reading a burst's memory is compared with.
///
/// The VM reports schedules only from 500 ms (default 5 ms), so that the host's noise does not
/// make its watchdog start spare threads during the burst: each costs its thread stack's
/// touched pages and an arena of its own for as long as it lives (+20 to +50 KiB in the
/// readings of the tests that use this, against the tens of KiB they check).
pub fn settled_vm() -> (Vm, usize) {
    let (vm, (), before) = settle(|vm| assert_eq!(vm.run(|| 1 + 1), Ok(2)));
    (vm, before)
}

/// A [`settled_vm`] and a list of `len` pids for a test to fill from outside the VM, made and
/// written before the RSS is read and meant to be kept until after the last reading: its
/// pages then count on both sides. (A 200,000-pid list is 3.2 MB. Dropped during the test, it
/// sometimes stayed in the test thread's glibc arena, which `malloc_trim` does not shrink:
/// +2.2 to +3.5 MiB in ~5 % of the runs of the table tests, one arena holding it.)
#[allow(dead_code)] // not every test file uses it
pub fn settled_vm_with_pid_list(len: usize) -> (Vm, Vec<Pid>, usize) {
    settle(|vm| {
        let placeholder = vm.run(starling::self_pid).expect("the root process failed");
        vec![placeholder; len]
    })
}

/// Builds the VM of [`settled_vm`], runs `first` on it (which runs it once), lets it idle, and
/// reads the RSS.
fn settle<T>(first: impl FnOnce(&Vm) -> T) -> (Vm, T, usize) {
    let vm = Vm::builder()
        .long_schedule(Duration::from_millis(500))
        .build()
        .expect("a VM with the default schedulers builds");
    let made = first(&vm);
    std::thread::sleep(Duration::from_millis(2_500));
    let before = rss_bytes();
    (vm, made, before)
}

/// Runs `burst` as the root of a [`settled_vm`], then waits for the idle VM to give memory back
/// ([`AfterBurst::idle`]).
pub fn burst_then_idle<F>(burst: F, slack: usize) -> AfterBurst
where
    F: FnOnce() + Send + 'static,
{
    let (vm, before) = settled_vm();
    vm.run(burst).expect("the root process failed");
    AfterBurst::idle(before, slack)
}

/// Bytes as MiB, for printing.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Pure computation that never calls the VM, until `stop` is set. Returns a value derived from
/// the work so it cannot be optimized away.
pub fn spin_until(stop: &AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    // Relaxed: a flag polled in a loop; nothing else is published through it.
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1_000 {
            x = black_box(
                black_box(x)
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407),
            );
        }
    }
    x
}

/// Bytes of stack each [`recurse`] frame pins at least (its local buffer).
pub const FRAME_BUFFER: usize = 512;

/// Recurses until the stack pointer is `target` bytes below `base` (the address of a local in
/// the caller), each frame holding a [`FRAME_BUFFER`]-byte buffer the optimizer cannot remove.
/// Returns the number of frames. With `target == usize::MAX` it recurses without bound.
#[inline(never)]
pub fn recurse(base: usize, target: usize, depth: usize) -> usize {
    let mut frame = [0u8; FRAME_BUFFER];
    frame[depth % FRAME_BUFFER] = depth as u8;
    let frame = black_box(&mut frame);
    let here = frame.as_ptr() as usize;
    if base.saturating_sub(here) >= target {
        return depth;
    }
    // Not a tail call: the frame's buffer is used after the recursive call returns.
    let frames = recurse(base, target, depth + 1);
    black_box(&frame);
    frames
}

/// Recurses `bytes` deep from the caller's frame; returns the number of frames used.
#[inline(never)]
pub fn recurse_bytes(bytes: usize) -> usize {
    let base = black_box(0u8);
    let base = &base as *const u8 as usize;
    recurse(black_box(base), bytes, 1)
}

/// A ping for [`echo`]: the reply goes to `from`.
#[derive(Debug)]
pub struct Ping {
    pub from: Pid,
    pub n: u64,
}

/// The reply to a [`Ping`].
#[derive(Debug, PartialEq, Eq)]
pub struct Pong(pub u64);

/// Tells an [`echo`] process to end.
#[derive(Debug)]
pub struct Stop;

/// Spawns a process that answers every [`Ping`] with a [`Pong`] until it gets [`Stop`].
/// Must be called inside a process.
pub fn echo() -> Pid {
    spawn(|| loop {
        let done = starling::receive! {
            Ping { from, n }: Ping => { send(from, Pong(n)); false },
            Stop: Stop => true,
        };
        if done {
            break;
        }
    })
}

/// Stops an [`echo`] process and waits until it has ended. Must be called inside a process.
pub fn stop_echo(echo: Pid) {
    let monitor = starling::process::monitor(echo);
    send(echo, Stop);
    let down = starling::receive_match::<starling::Down>(|down| down.monitor == monitor);
    assert_eq!(
        down.reason,
        starling::ExitReason::Normal,
        "echo ended badly"
    );
}

/// From outside the VM: waits until `vm` has no live process (processes that just sent their
/// last message may still be ending). The test's hang guard bounds the wait.
pub fn wait_until_no_processes(vm: &starling::Vm) {
    while vm.process_count() != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(vm.processes().is_empty());
}

/// One round trip to an [`echo`] process; checks the reply.
pub fn ping(echo: Pid, n: u64) {
    send(
        echo,
        Ping {
            from: starling::self_pid(),
            n,
        },
    );
    let Pong(back) = receive::<Pong>();
    assert_eq!(back, n, "echo answered the wrong ping");
}

/// The `p`-th percentile (0..=100) of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "percentile of nothing");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Releases a [`parked_chain`]: each process passes it on, and the first one spawned passes it
/// to the chain's spawner.
#[derive(Debug)]
pub struct Go;

/// Spawns `count` processes that park in `receive` until they get [`Go`], chained so that the
/// caller keeps no table of pids: each holds the pid of the one spawned before it and passes
/// `Go` on to it (the first, to the caller). Returns the last one, once it waits; processes
/// start roughly in spawn order, so by then the others wait too (a message-free check, so no
/// mailbox inflates a memory figure taken then). Send it `Go` to release them all; the caller
/// then receives `Go`. Must be called inside a process.
pub fn parked_chain(count: usize) -> Pid {
    let root = self_pid();
    let mut previous: Option<Pid> = None;
    for _ in 0..count {
        let next = previous;
        previous = Some(spawn(move || {
            let Go = receive::<Go>();
            send(next.unwrap_or(root), Go);
        }));
    }
    let last = previous.expect("parked_chain: count must be at least 1");
    while process::info(last).map(|info| info.status) != Some(starling::Status::Waiting) {
        process::sleep(Duration::from_millis(1));
    }
    last
}

// Spawn/exit waves for the memory tests (`memory_cycles.rs` and the burst tests).

pub const WAVE: u64 = 100_000;
pub const WAVES: u64 = 100;

/// Sleeps about 2.5 s in 100 ms steps, so the workers go idle repeatedly and their
/// once-a-second memory return runs.
pub fn idle() {
    for _ in 0..25 {
        process::sleep(Duration::from_millis(100));
    }
}

/// One wave: `WAVE` processes spawned, each replies; returns when all replied.
pub fn wave(number: u64) {
    let root = self_pid();
    for i in 0..WAVE {
        spawn(move || send(root, number * WAVE + i));
    }
    let sum = (0..WAVE).map(|_| receive::<u64>()).sum::<u64>();
    assert_eq!(sum, number * WAVE * WAVE + WAVE * (WAVE - 1) / 2);
}

/// A message too big to travel inline in its envelope (more than three words), so it is boxed.
pub struct Big(pub [u64; 6]);

/// Like [`wave`], with a [`Big`] message: `WAVE` processes each send the root one; returns when
/// all arrived.
pub fn boxed_wave() {
    let root = self_pid();
    for i in 0..WAVE {
        spawn(move || send(root, Big([i; 6])));
    }
    let sum: u64 = (0..WAVE).map(|_| receive::<Big>().0[5]).sum();
    assert_eq!(sum, WAVE * (WAVE - 1) / 2);
}

/// Runs waves `range` on `vm`, each with a root process of its own (a root's mailbox keeps the
/// capacity of its largest burst of replies while it lives: live memory, not a leak), then
/// lets the VM idle ~2.5 s and returns the RSS.
pub fn waves_then_idle(vm: &Vm, range: std::ops::Range<u64>) -> usize {
    for number in range {
        vm.run(move || wave(number))
            .unwrap_or_else(|reason| panic!("wave {number} failed: {reason:?}"));
    }
    vm.run(idle).expect("the idle root failed");
    rss_bytes()
}

/// A value that counts its drops (to see when a process's leftovers are dropped).
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
