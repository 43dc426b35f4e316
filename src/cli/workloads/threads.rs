//! W1..W6 on OS threads (`std::thread` with small stacks, `std::sync::mpsc` channels); a thread
//! the OS refuses ends the run cleanly with a [`Refusal`] instead of a panic.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::cli::measurement::{Check, Latency, Measurement, Refusal};
use crate::cli::memory;
use crate::cli::probe::progress_line;
use crate::cli::workload::{sum_below, sum_of_squares, Params, Workload};
use crate::cli::workloads::spin;

/// Runs one workload on OS threads; the calling thread is the root.
pub fn run(params: Params) -> Result<Measurement, Refusal> {
    let spawner = Arc::new(Spawner::new(params.thread_stack_bytes));
    let size = params.size;
    let mut measurement = match params.workload {
        Workload::Spawn => spawn_many(&spawner, size),
        Workload::Alive => alive(&spawner, size),
        Workload::Ring => ring(&spawner, size, params.laps),
        Workload::PingPong => ping_pong(&spawner, size),
        Workload::Skynet => skynet(&spawner, size),
        Workload::Starvation => starvation(&spawner, size, params.spinners),
    }?;
    measurement.operations = params.workload.operations(size, params.laps);
    measurement.peak_resident_bytes = memory::peak_resident_bytes();
    measurement.peak_threads = Some(spawner.peak_alive.load(Ordering::Relaxed) + 1);
    Ok(measurement)
}

/// Starts threads with a fixed stack size, counts them, and keeps the first refusal.
struct Spawner {
    stack_bytes: usize,
    /// Threads started successfully so far (any thread updates it, atomically).
    started: AtomicUsize,
    /// Threads started and not yet finished.
    alive: AtomicUsize,
    /// Highest value `alive` has reached.
    peak_alive: AtomicUsize,
    /// The first refusal; later ones are the same limit seen again.
    refusal: Mutex<Option<Refusal>>,
    /// Set on the first refusal so that tree-shaped workloads stop spawning.
    refused: AtomicBool,
}

/// Decrements the alive count when a spawned thread's body ends, however it ends.
struct AliveGuard(Arc<Spawner>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spawner {
    fn new(stack_bytes: usize) -> Spawner {
        Spawner {
            stack_bytes,
            started: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            peak_alive: AtomicUsize::new(0),
            refusal: Mutex::new(None),
            refused: AtomicBool::new(false),
        }
    }

    /// Starts `body` on a new thread. Returns `None` if the OS refused; the refusal is recorded
    /// and the caller must clean up what it started and report it.
    fn spawn<T: Send + 'static>(
        self: &Arc<Self>,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> Option<JoinHandle<T>> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        let alive = self.alive.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_alive.fetch_max(alive, Ordering::Relaxed);
        let guard = AliveGuard(self.clone());
        let spawned = std::thread::Builder::new()
            .stack_size(self.stack_bytes)
            .spawn(move || {
                let _guard = guard;
                body()
            });
        match spawned {
            Ok(handle) => {
                let started = self.started.fetch_add(1, Ordering::Relaxed) + 1;
                if started.is_multiple_of(PROGRESS_INTERVAL) {
                    self.report_progress(started);
                }
                Some(handle)
            }
            Err(error) => {
                self.record_refusal(error);
                None
            }
        }
    }

    /// Tells the parent how far the run got (see `probe.rs`): if the OS kills this process a
    /// moment later, the last such line says how many threads and mappings it took.
    fn report_progress(&self, started: usize) {
        let line = progress_line(
            started,
            self.alive.load(Ordering::Relaxed),
            memory::memory_mappings(),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
    }

    fn record_refusal(&self, error: std::io::Error) {
        let memory_mappings = memory::memory_mappings();
        let threads_alive = memory::thread_count();
        self.refused.store(true, Ordering::Relaxed);
        let mut refusal = self
            .refusal
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if refusal.is_none() {
            *refusal = Some(Refusal {
                threads_started: self.started.load(Ordering::Relaxed),
                threads_alive,
                error: error.to_string(),
                memory_mappings,
            });
        }
    }

    /// The recorded refusal; call only after a spawn returned `None`.
    fn take_refusal(&self) -> Refusal {
        let mut refusal = self
            .refusal
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        refusal.take().unwrap_or_else(|| Refusal {
            threads_started: self.started.load(Ordering::Relaxed),
            threads_alive: memory::thread_count(),
            error: "a spawn failed but no error was recorded".into(),
            memory_mappings: memory::memory_mappings(),
        })
    }
}

/// Threads started between two progress lines: fine enough to locate the ~16 K limit, rare
/// enough (one /proc/self/maps read per 1,024 spawns) to cost well under 1% of a spawn's time.
const PROGRESS_INTERVAL: usize = 1_024;

fn measured(started: Instant, resident_before: u64, check: Check) -> Measurement {
    Measurement {
        wall_nanoseconds: started.elapsed().as_nanos() as u64,
        operations: 0,
        latency: None,
        resident_before_bytes: resident_before,
        resident_all_alive_bytes: None,
        peak_resident_bytes: 0,
        peak_threads: None,
        check,
    }
}

fn join_all<T>(handles: impl IntoIterator<Item = JoinHandle<T>>) {
    for handle in handles {
        // A panic in a workload thread shows up in the check (a missing message), not here.
        let _ = handle.join();
    }
}

/// Threads W1 starts before joining them: short-lived threads spawned and joined in waves keep
/// at most this many alive, far below the ~16 K limit of this kernel (value guessed; 1,000
/// measured no slower than 10,000 here).
pub const SPAWN_WAVE: usize = 64;

/// W1: `size` threads, spawned and joined in waves; thread i sends i*i to the root.
fn spawn_many(spawner: &Arc<Spawner>, size: usize) -> Result<Measurement, Refusal> {
    let (sender, receiver) = mpsc::channel::<u64>();
    let resident_before = memory::resident_bytes();
    let started = Instant::now();
    let mut sum: u128 = 0;
    let mut handles = Vec::with_capacity(SPAWN_WAVE);
    let mut next = 0u64;
    while next < size as u64 {
        let wave_end = (next + SPAWN_WAVE as u64).min(size as u64);
        for index in next..wave_end {
            let sender = sender.clone();
            match spawner.spawn(move || {
                let _ = sender.send(index * index);
            }) {
                Some(handle) => handles.push(handle),
                None => {
                    join_all(handles.drain(..));
                    return Err(spawner.take_refusal());
                }
            }
        }
        join_all(handles.drain(..));
        sum += receiver.try_iter().map(u128::from).sum::<u128>();
        next = wave_end;
    }
    drop(sender);
    sum += receiver.iter().map(u128::from).sum::<u128>();
    let check = Check::equal("sum of squares", sum, sum_of_squares(size as u64));
    Ok(measured(started, resident_before, check))
}

/// W2: `size` threads alive at once, each blocked in `recv` on its own channel; RSS is read
/// when all are blocked; then all are released and each replies with its index.
fn alive(spawner: &Arc<Spawner>, size: usize) -> Result<Measurement, Refusal> {
    let (ready_sender, ready_receiver) = mpsc::channel::<()>();
    let (reply_sender, reply_receiver) = mpsc::channel::<u64>();
    // Filled before the first reading so that these lists' pages do not count as thread memory.
    let mut releases: Vec<Option<Sender<()>>> = (0..size).map(|_| None).collect();
    let mut handles: Vec<Option<JoinHandle<()>>> = (0..size).map(|_| None).collect();
    let resident_before = memory::resident_bytes();
    let started = Instant::now();
    for index in 0..size {
        let (release_sender, release_receiver) = mpsc::channel::<()>();
        let ready = ready_sender.clone();
        let reply = reply_sender.clone();
        let spawned = spawner.spawn(move || {
            let _ = ready.send(());
            if release_receiver.recv().is_ok() {
                let _ = reply.send(index as u64);
            }
        });
        match spawned {
            Some(handle) => {
                handles[index] = Some(handle);
                releases[index] = Some(release_sender);
            }
            None => {
                // Dropping every release sender wakes each thread with a disconnect; it ends.
                drop(releases);
                join_all(handles.into_iter().flatten());
                return Err(spawner.take_refusal());
            }
        }
    }
    for _ in 0..size {
        let _ = ready_receiver.recv();
    }
    let resident_all_alive = memory::resident_bytes();
    for release in releases.iter().flatten() {
        let _ = release.send(());
    }
    drop(reply_sender);
    let mut count = 0usize;
    let mut sum: u128 = 0;
    for index in reply_receiver.iter().take(size) {
        count += 1;
        sum += index as u128;
    }
    let check = Check::equal("replies", count, size).and(Check::equal(
        "sum of indices",
        sum,
        sum_below(size as u64),
    ));
    let mut measurement = measured(started, resident_before, check);
    measurement.resident_all_alive_bytes = Some(resident_all_alive);
    join_all(handles.into_iter().flatten());
    Ok(measurement)
}

/// W3: a ring of `size` threads (the root is one of them) passes a token `laps` laps.
/// Building the ring is outside the measured time; the laps are inside.
fn ring(spawner: &Arc<Spawner>, size: usize, laps: usize) -> Result<Measurement, Refusal> {
    let (root_sender, root_receiver) = mpsc::channel::<u64>();
    let resident_before = memory::resident_bytes();
    let mut handles = Vec::with_capacity(size);
    // Built from the end of the ring back to its start; each thread forwards until its
    // channel disconnects, which happens when the root drops the sender to the first one.
    let mut next: Sender<u64> = root_sender;
    for _ in 1..size {
        let (sender, receiver) = mpsc::channel::<u64>();
        let successor = next;
        match spawner.spawn(move || forward(receiver, successor)) {
            Some(handle) => handles.push(handle),
            None => {
                drop(sender);
                join_all(handles);
                return Err(spawner.take_refusal());
            }
        }
        next = sender;
    }
    let first = next;
    let started = Instant::now();
    let mut hops = 0;
    let mut laps_seen = 0usize;
    let _ = first.send(1);
    for lap in 0..laps {
        hops = root_receiver.recv().unwrap_or(0);
        laps_seen += 1;
        if lap + 1 < laps {
            let _ = first.send(hops + 1);
        }
    }
    let check = Check::equal("laps", laps_seen, laps).and(Check::equal(
        "hops",
        hops,
        size as u64 * laps as u64,
    ));
    let measurement = measured(started, resident_before, check);
    drop(first);
    join_all(handles);
    Ok(measurement)
}

/// A ring member: passes every token on, one hop further, until its channel disconnects.
fn forward(receiver: Receiver<u64>, successor: Sender<u64>) {
    for hops in receiver {
        if successor.send(hops + 1).is_err() {
            break;
        }
    }
}

/// The root's ends of a ping-pong: where pings go, where pongs come from, and the ponger thread.
struct Ponger {
    ping: Sender<u64>,
    pong: Receiver<u64>,
    thread: JoinHandle<()>,
}

/// Starts a thread that answers every number with the same number until its channel closes.
fn start_ponger(spawner: &Arc<Spawner>) -> Result<Ponger, Refusal> {
    let (ping_sender, ping_receiver) = mpsc::channel::<u64>();
    let (pong_sender, pong_receiver) = mpsc::channel::<u64>();
    let handle = spawner
        .spawn(move || {
            for k in ping_receiver {
                if pong_sender.send(k).is_err() {
                    break;
                }
            }
        })
        .ok_or_else(|| spawner.take_refusal())?;
    Ok(Ponger {
        ping: ping_sender,
        pong: pong_receiver,
        thread: handle,
    })
}

/// W4: `size` round trips between the root and one other thread.
fn ping_pong(spawner: &Arc<Spawner>, size: usize) -> Result<Measurement, Refusal> {
    let resident_before = memory::resident_bytes();
    let Ponger { ping, pong, thread } = start_ponger(spawner)?;
    let started = Instant::now();
    let mut answered = 0usize;
    for k in 0..size as u64 {
        let _ = ping.send(k);
        if pong.recv() == Ok(k) {
            answered += 1;
        }
    }
    let check = Check::equal("round trips answered in order", answered, size);
    let measurement = measured(started, resident_before, check);
    drop(ping);
    join_all([thread]);
    Ok(measurement)
}

/// Children per skynet node.
const SKYNET_FAN_OUT: u64 = 10;

/// W5: skynet on threads: every node is a thread; a refused spawn anywhere stops the tree.
fn skynet(spawner: &Arc<Spawner>, size: usize) -> Result<Measurement, Refusal> {
    let resident_before = memory::resident_bytes();
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel::<Option<u64>>();
    let tree = spawner.clone();
    let top = spawner.spawn(move || skynet_node(&tree, &sender, 0, size as u64));
    let Some(top) = top else {
        return Err(spawner.take_refusal());
    };
    let sum = receiver.recv().ok().flatten();
    join_all([top]);
    match sum {
        Some(sum) => {
            let check = Check::equal("sum", sum as u128, sum_below(size as u64));
            Ok(measured(started, resident_before, check))
        }
        None => Err(spawner.take_refusal()),
    }
}

/// One skynet node on a thread. Sends `None` up if it or a descendant could not spawn.
fn skynet_node(spawner: &Arc<Spawner>, parent: &Sender<Option<u64>>, first: u64, count: u64) {
    if count == 1 {
        let _ = parent.send(Some(first));
        return;
    }
    let (sender, receiver) = mpsc::channel::<Option<u64>>();
    let chunk = count.div_ceil(SKYNET_FAN_OUT);
    let end = first + count;
    let mut start = first;
    let mut children = Vec::with_capacity(SKYNET_FAN_OUT as usize);
    let mut complete = true;
    while start < end {
        let length = chunk.min(end - start);
        let child_spawner = spawner.clone();
        let child_sender = sender.clone();
        match spawner.spawn(move || skynet_node(&child_spawner, &child_sender, start, length)) {
            Some(handle) => children.push(handle),
            None => {
                complete = false;
                break;
            }
        }
        start += length;
    }
    drop(sender);
    let mut sum = Some(0u64);
    for _ in 0..children.len() {
        let partial = receiver.recv().ok().flatten();
        sum = sum.zip(partial).map(|(total, part)| total + part);
    }
    join_all(children);
    let _ = parent.send(if complete { sum } else { None });
}

/// W6: `size` timed round trips while `spinners` threads compute without blocking.
fn starvation(
    spawner: &Arc<Spawner>,
    size: usize,
    spinners: usize,
) -> Result<Measurement, Refusal> {
    let resident_before = memory::resident_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let mut spinning = Vec::with_capacity(spinners);
    for _ in 0..spinners {
        let flag = stop.clone();
        match spawner.spawn(move || spin(&flag)) {
            Some(handle) => spinning.push(handle),
            None => {
                stop.store(true, Ordering::Relaxed);
                join_all(spinning);
                return Err(spawner.take_refusal());
            }
        }
    }
    let ponger = start_ponger(spawner);
    let Ponger { ping, pong, thread } = match ponger {
        Ok(ponger) => ponger,
        Err(refusal) => {
            stop.store(true, Ordering::Relaxed);
            join_all(spinning);
            return Err(refusal);
        }
    };
    let mut samples = Vec::with_capacity(size);
    let started = Instant::now();
    let mut answered = 0usize;
    for k in 0..size as u64 {
        let sent = Instant::now();
        let _ = ping.send(k);
        let reply = pong.recv();
        samples.push(sent.elapsed().as_nanos() as u64);
        if reply == Ok(k) {
            answered += 1;
        }
    }
    let check = Check::equal("round trips answered in order", answered, size);
    let mut measurement = measured(started, resident_before, check);
    stop.store(true, Ordering::Relaxed);
    drop(ping);
    join_all(spinning);
    join_all([thread]);
    measurement.latency = Latency::from_samples(&mut samples);
    Ok(measurement)
}
