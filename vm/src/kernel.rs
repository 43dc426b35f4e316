//! The kernel functions every process uses: spawn, send, self_pid, exit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use starling_scheduler::{Fiber, Handle};

use crate::control_block::{
    current, current_arc, with_current_handle, ExitHook, ExitUnwind, Process, CALL_COST,
};
use crate::envelope::Envelope;
use crate::error::Error;
use crate::exit::ExitReason;
use crate::mailbox::Message;
use crate::monitor::MonitorRef;
use crate::pid::Pid;
use crate::signal;
use crate::vm::VmShared;

/// What to set up around a new process before it can run.
#[derive(Default)]
pub(crate) struct SpawnOptions<'a> {
    /// Called with the exit reason when the process ends.
    pub(crate) on_exit: Option<ExitHook>,
    /// Link the new process to this one.
    pub(crate) link: Option<&'a Handle<Process>>,
    /// Let this process monitor the new one.
    pub(crate) monitor: Option<&'a Handle<Process>>,
    /// The monitor's reference, if the caller made one already (else a new one).
    pub(crate) monitor_reference: Option<MonitorRef>,
}

/// Creates a process running `body` on `vm` and schedules it. The process is in the table (its
/// pid alive), linked and monitored as asked, before this returns, and has not run yet.
pub(crate) fn spawn_in<F>(
    vm: &Arc<VmShared>,
    body: F,
    options: SpawnOptions<'_>,
) -> Result<(Pid, Option<MonitorRef>), Error>
where
    F: FnOnce() + Send + 'static,
{
    let worker = vm.runtime.current_worker();
    let shard = vm.table.shard_of(worker);
    if !vm.table.reserve(shard) {
        return Err(Error::SystemLimit);
    }
    let entry = move || {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // Killed before it ever ran (e.g. spawned during shutdown).
            current("spawn").die_if_killed();
            body();
        }));
        finish(outcome);
    };
    // A control block this scheduler kept from a finished process, if any (taken before the
    // table entry's lock: dropping the old contents runs their destructors). Only a block
    // nothing else references can be reused; one always is (a worker keeps a block only when it
    // holds its last reference, and no process ever has a `Weak`, so a strong count of one
    // proves it with a plain load; `reuse` then borrows it mutably once).
    let recycled = worker
        .and_then(|worker| vm.runtime.take_recycled(worker))
        .filter(|block| Handle::strong_count(block) == 1);
    // A reused block keeps its table index (table invariant 4).
    let reused_index = recycled.as_ref().map(|block| block.pid.index);
    let process = vm.table.insert(shard, reused_index, |pid| match recycled {
        Some(block) => reuse(block, pid, vm, entry, options.on_exit),
        None => Handle::new(Process::new(
            pid,
            vm.clone(),
            Fiber::new(entry),
            options.on_exit,
        )),
    });
    let pid = process.pid;
    if let Some(parent) = options.link {
        signal::link(parent, &process);
    }
    let monitor = options
        .monitor
        .map(|watcher| match options.monitor_reference {
            Some(reference) => signal::monitor_as(watcher, Some(&process), pid, reference),
            None => signal::monitor(watcher, Some(&process), pid),
        });
    if vm.is_shutting_down() {
        Process::kill(&process, ExitReason::Killed);
    }
    vm.runtime.spawn(process);
    Ok((pid, monitor))
}

/// Makes the new process `pid` in `recycled`'s allocation, which nothing else references (in
/// place: its VM reference is kept, and nothing is built on the stack and copied). The old
/// contents are a finished process's husk (its mailbox, locals and links were emptied when it
/// ended).
fn reuse<F: FnOnce() + Send + 'static>(
    mut recycled: Handle<Process>,
    pid: Pid,
    vm: &Arc<VmShared>,
    body: F,
    on_exit: Option<ExitHook>,
) -> Handle<Process> {
    Handle::get_mut(&mut recycled)
        .expect("a recycled control block is referenced only by its taker")
        .reuse(pid, vm, body, on_exit);
    recycled
}

/// The last step of every process body. Kept out of line: the entry closure's frame stays on
/// the stack for the process's whole life (and is copied at every eviction), so it must not
/// carry `terminate`'s locals.
#[inline(never)]
fn finish(outcome: std::thread::Result<()>) {
    with_current_handle("spawn", |process| Process::terminate(process, outcome));
}

/// Spawns a process running `f` and returns its pid at once, before the child runs.
///
/// # Panics
///
/// Outside a process, and at the VM's `max_processes` limit (`SystemLimit`; use [`try_spawn`]
/// to get an error instead).
///
/// # Examples
///
/// ```
/// let vm = starling::Vm::builder().schedulers(2).build().unwrap();
/// let answer = vm.run(|| {
///     let parent = starling::self_pid();
///     starling::spawn(move || starling::send(parent, 6 * 7));
///     starling::receive::<i32>()
/// });
/// assert_eq!(answer, Ok(42));
/// ```
pub fn spawn<F>(f: F) -> Pid
where
    F: FnOnce() + Send + 'static,
{
    let process = current("spawn");
    process.checkpoint(CALL_COST);
    match spawn_in(&process.vm, f, SpawnOptions::default()) {
        Ok((pid, _)) => pid,
        Err(error) => spawn_failed("spawn", &process.vm, error),
    }
}

/// Panics for the spawn function `starling::{function}`, which failed with `error`; at the
/// process limit the message names the limit and its value.
#[cold]
#[inline(never)]
pub(crate) fn spawn_failed(function: &str, vm: &VmShared, error: Error) -> ! {
    match error {
        Error::SystemLimit => panic!(
            "starling::{function}: {error}: this VM's max_processes is {}",
            vm.table.max()
        ),
        error => panic!("starling::{function}: {error}"),
    }
}

/// Like [`spawn`], but returns `Err(Error::SystemLimit)` at the process limit.
///
/// # Panics
///
/// Outside a process.
pub fn try_spawn<F>(f: F) -> Result<Pid, Error>
where
    F: FnOnce() + Send + 'static,
{
    let process = current("try_spawn");
    process.checkpoint(CALL_COST);
    spawn_in(&process.vm, f, SpawnOptions::default()).map(|(pid, _)| pid)
}

/// Spawns a process linked to the caller (atomically: the link exists before the child runs).
///
/// # Panics
///
/// Outside a process, and at the process limit.
///
/// # Examples
///
/// ```
/// use starling::{process, receive, spawn_link, Exit, ExitReason};
///
/// let vm = starling::Vm::builder().schedulers(2).crash_reports(false).build().unwrap();
/// let got = vm.run(|| {
///     process::trap_exit(true);
///     let child = spawn_link(|| panic!("boom"));
///     let exit: Exit = receive();
///     (exit.from == child, exit.reason)
/// });
/// assert_eq!(got, Ok((true, ExitReason::Panic("boom".into()))));
/// ```
pub fn spawn_link<F>(f: F) -> Pid
where
    F: FnOnce() + Send + 'static,
{
    let process = current_arc("spawn_link");
    process.checkpoint(CALL_COST);
    let options = SpawnOptions {
        link: Some(&process),
        ..SpawnOptions::default()
    };
    match spawn_in(&process.vm, f, options) {
        Ok((pid, _)) => pid,
        Err(error) => spawn_failed("spawn_link", &process.vm, error),
    }
}

/// Spawns a process monitored by the caller (atomically: the monitor exists before the child
/// runs). Returns its pid and the monitor's reference.
///
/// # Panics
///
/// Outside a process, and at the process limit.
pub fn spawn_monitor<F>(f: F) -> (Pid, MonitorRef)
where
    F: FnOnce() + Send + 'static,
{
    let process = current_arc("spawn_monitor");
    process.checkpoint(CALL_COST);
    let options = SpawnOptions {
        monitor: Some(&process),
        ..SpawnOptions::default()
    };
    match spawn_in(&process.vm, f, options) {
        Ok((pid, monitor)) => (
            pid,
            monitor.expect("spawn_in sets up the monitor it was asked for"),
        ),
        Err(error) => spawn_failed("spawn_monitor", &process.vm, error),
    }
}

/// The calling process's pid.
///
/// # Panics
///
/// Outside a process.
pub fn self_pid() -> Pid {
    let process = current("self_pid");
    process.checkpoint(CALL_COST);
    process.pid
}

/// Sends `message` to `pid`. Never blocks and never fails: a message to a dead process (or to a
/// pid of another VM) is dropped. The message counts in the receiver's `message_queue_len` as
/// soon as this returns, and messages from one process to another arrive in the order sent.
///
/// # Panics
///
/// Outside a process (use [`Vm::send`](crate::Vm::send) there).
pub fn send<M: Send + 'static>(pid: Pid, message: M) {
    let process = current("send");
    process.checkpoint(CALL_COST);
    deliver(&process.vm, pid, Envelope::new(message));
}

/// Puts `message` into `pid`'s mailbox and wakes it (any thread).
pub(crate) fn deliver(vm: &VmShared, pid: Pid, message: Message) {
    if pid.vm != vm.id {
        return;
    }
    // Under the entry's read lock (lock order: table entry, then mailbox, then the scheduler's
    // own); nothing that holds a mailbox or scheduler lock ever takes an entry's.
    vm.table.with(pid, |target| {
        target.mailbox.push(message);
        vm.runtime.wake(target);
    });
}

/// Ends the calling process with `reason` (Elixir's `Kernel.exit/1`). Unwinds the process's
/// stack, running destructors; a `catch_unwind` in user code cannot keep the process alive past
/// its next VM call.
///
/// # Panics
///
/// Outside a process.
pub fn exit(reason: ExitReason) -> ! {
    let process = current("exit");
    // A kill that already counted wins (only the first reason counts).
    if let Some(me) = process.vm.table.get(process.pid) {
        me.kill_self(reason);
    }
    std::panic::resume_unwind(Box::new(ExitUnwind))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::Arc;

    use crate::control_block::current;
    use crate::process::monitor;
    use crate::{process, receive, receive_timeout, send, spawn, Down, ExitReason, Vm};

    crate::process_local! {
        static MARK: RefCell<u32> = RefCell::new(0);
    }

    /// The address of the live process `pid`'s control block (the reference is dropped at once,
    /// so it does not keep the block from being recycled).
    fn block_address(pid: crate::Pid) -> usize {
        let process = current("test").vm.table.get(pid).expect("alive");
        starling_scheduler::Handle::as_ptr(&process) as usize
    }

    /// Inside a process: spawns `count` processes that wait for `()`, then releases them all and
    /// waits for each one's reply, so that `count` processes end in one burst. (In a plain
    /// spawn loop the children end between the spawner's batches, and the next batch reuses
    /// their blocks.)
    fn release_parked(count: usize) {
        let root = crate::self_pid();
        let pids: Vec<crate::Pid> = (0..count)
            .map(|_| {
                spawn(move || {
                    let () = receive::<()>();
                    send(root, "done");
                })
            })
            .collect();
        for pid in pids {
            send(pid, ());
        }
        for _ in 0..count {
            assert_eq!(receive::<&str>(), "done");
        }
    }

    /// Kept control blocks own a reference to the VM's shared state: dropping the VM must
    /// still free it (the runtime drops what its workers kept when it joins them).
    #[test]
    fn dropping_a_vm_frees_the_blocks_its_schedulers_kept() {
        let vm = Vm::builder().schedulers(2).build().unwrap();
        let kept = vm
            .run(|| {
                let root = crate::self_pid();
                for i in 0..100u32 {
                    spawn(move || send(root, i));
                }
                for _ in 0..100 {
                    receive::<u32>();
                }
                // Let the last children finish on their workers. (Idle workers drop what they
                // keep at most once a second, and never in a runtime's first second: this whole
                // body takes a few milliseconds.)
                process::sleep(std::time::Duration::from_millis(20));
                current("test").vm.runtime.recycled_len()
            })
            .unwrap();
        assert!(kept > 0, "the schedulers kept no finished process");
        let shared = Arc::downgrade(&vm.shared);
        drop(vm);
        assert!(
            shared.upgrade().is_none(),
            "the VM's shared state outlived the VM"
        );
    }

    /// On one scheduler, a process that ended leaves its control block to the next spawn, and
    /// the new process starts fresh there: no messages, no locals, not trapping exits, not
    /// killed, its own pid.
    #[test]
    fn a_recycled_control_block_starts_fresh() {
        let vm = Vm::builder().schedulers(1).build().unwrap();
        let result = vm.run(|| {
            let root = crate::self_pid();
            let first = spawn(move || {
                process::trap_exit(true);
                MARK.with(|mark| *mark.borrow_mut() = 7);
                send(root, "ready");
                // Dies here with messages still queued (sent below).
                let () = receive::<()>();
            });
            let first_block = block_address(first);
            let first_down = monitor(first);
            assert_eq!(receive::<&str>(), "ready");
            send(first, 1u64);
            send(first, 2u64);
            process::exit(first, ExitReason::Kill);
            let down = crate::receive_match::<Down>(|down| down.monitor == first_down);
            assert_eq!(down.reason, ExitReason::Killed);
            let runtime = &current("test").vm.runtime;
            let kept_before = runtime.recycled_len();

            let second = spawn(move || {
                let fresh = MARK.with(|mark| *mark.borrow()) == 0
                    && !process::trap_exit(false)
                    && receive_timeout::<u64>(std::time::Duration::ZERO).is_none();
                send(root, (crate::self_pid(), fresh));
                let () = receive::<()>();
            });
            let kept_after = runtime.recycled_len();
            let second_block = block_address(second);
            let (reported, fresh) = receive::<(crate::Pid, bool)>();
            send(second, ());
            (
                (kept_before, kept_after),
                first_block == second_block,
                reported == second && second != first,
                fresh,
            )
        });
        assert_eq!(result, Ok(((1, 0), true, true, true)));
    }

    /// A scheduler keeps the blocks of processes that ended on it beyond its own store in the
    /// runtime-wide one, and a worker whose store is empty refills from there: so blocks flow
    /// from the worker where processes end to the one where they are spawned (the processes end
    /// in one burst, see `release_parked`).
    #[test]
    fn finished_blocks_beyond_a_workers_store_are_kept_for_other_workers() {
        let vm = Vm::builder().schedulers(1).build().unwrap();
        let result = vm.run(|| {
            release_parked(1000);
            let runtime = &current("test").vm.runtime;
            let kept = runtime.recycled_len();
            // Worker 1 is a spare that never ran anything: its own store is empty.
            let refilled = runtime.take_recycled(1).is_some();
            (kept, refilled)
        });
        let (kept, refilled) = result.unwrap();
        assert!(
            kept > crate::vm::RECYCLED_PER_WORKER,
            "only {kept} blocks kept"
        );
        assert!(
            refilled,
            "a worker with no blocks did not take from the shared store"
        );
    }

    /// What the schedulers keep for reuse after a burst of exits is bounded by a few hundred
    /// KiB, however many processes ended: at most `RECYCLED_PER_WORKER` per worker plus
    /// `RECYCLE_SPILL_BATCHES` half-stores runtime-wide. (With 32 batches this test kept 4,496
    /// blocks, 1.26 MB, which a VM holds until it idles.) The bound counts two workers, so the
    /// watchdog must start no spare (a spare keeps up to `RECYCLED_PER_WORKER` of its own: a full
    /// suite run on a busy host once read 1,168 against 1,024); long schedules are reported from
    /// 10 s, not 5 ms.
    #[test]
    fn what_the_schedulers_keep_after_a_burst_stays_small() {
        let vm = Vm::builder()
            .schedulers(2)
            .long_schedule(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let kept = vm
            .run(|| {
                let mut most = 0;
                for _ in 0..5 {
                    release_parked(10_000);
                    most = most.max(current("test").vm.runtime.recycled_len());
                }
                most
            })
            .unwrap();
        let bound = 2 * crate::vm::RECYCLED_PER_WORKER
            + starling_scheduler::RECYCLE_SPILL_BATCHES * crate::vm::RECYCLED_PER_WORKER / 2;
        assert!(kept > 0, "the schedulers kept no finished process");
        assert!(kept <= bound, "{kept} blocks kept, bound {bound}");
        let bytes = kept * std::mem::size_of::<crate::control_block::Process>();
        assert!(
            bytes <= 400 << 10,
            "{kept} kept control blocks hold {bytes} bytes until the VM idles"
        );
    }

    /// Table indices are not leaked whatever happens to a finished process's block: a block
    /// the schedulers keep takes its index along into the next process made in it, and a block
    /// that is freed (more processes ended at once than the schedulers keep) frees its index.
    /// Three waves of 20,000 processes alive at once end with about 20,000 indices used, not
    /// 60,000.
    #[test]
    fn table_indices_are_reused_whether_blocks_are_kept_or_freed() {
        let vm = Vm::builder().schedulers(2).build().unwrap();
        let used = vm
            .run(|| {
                for _ in 0..3 {
                    release_parked(20_000);
                    // Let the last ones finish (after their send) before the next wave.
                    process::sleep(std::time::Duration::from_millis(20));
                }
                current("test").vm.table.indices_used()
            })
            .unwrap();
        assert!(
            (20_000..30_000).contains(&used),
            "{used} table indices used for waves of 20,000"
        );
    }

    /// Polls (inside a process) until `read` of the table satisfies `done`; fails after 20 s,
    /// which is many idle passes (one runs about once a second while the VM idles).
    fn wait_for_table<T: Copy + std::fmt::Debug>(
        what: &str,
        read: impl Fn(&crate::table::ProcessTable) -> T,
        done: impl Fn(T) -> bool,
    ) -> T {
        let start = std::time::Instant::now();
        loop {
            let value = read(&current("test").vm.table);
            if done(value) {
                return value;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "the table stayed at {value:?}: {what}"
            );
            process::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// [`wait_for_table`] on the fresh mark.
    fn wait_for_mark(what: &str, done: impl Fn(u32) -> bool) -> u32 {
        wait_for_table(what, |table| table.indices_used(), done)
    }

    /// [`wait_for_table`] on the pages given back below the mark.
    fn wait_for_discarded(what: &str, done: impl Fn(usize) -> bool) -> usize {
        wait_for_table(what, |table| table.discarded_pages(), done)
    }

    /// Spawns `count` processes that each wait for a `()` and then send "done" to `root`.
    fn parked(root: crate::Pid, count: usize) -> Vec<crate::Pid> {
        (0..count)
            .map(|_| {
                spawn(move || {
                    let () = receive::<()>();
                    send(root, "done");
                })
            })
            .collect()
    }

    /// The idle pass gives the top of the table back: the fresh mark falls to just above the
    /// highest index a live process holds (a live process pins everything below it), and once
    /// that one ends, to the bottom. Pids of processes whose entries were given back stay dead,
    /// and no new pid repeats one of them.
    #[test]
    fn the_table_gives_its_top_back_and_pids_stay_unique() {
        let vm = Vm::builder().schedulers(2).build().unwrap();
        vm.run(|| {
            let root = crate::self_pid();
            let parked = |count: usize| parked(root, count);
            let below = parked(10_000);
            let pinned = spawn(|| {
                let () = receive::<()>();
            });
            let above = parked(10_000);
            let top = current("test").vm.table.indices_used();
            assert!(top > pinned.index + 5_000, "the table grew to {top}");
            for &pid in below.iter().chain(&above) {
                send(pid, ());
            }
            for _ in 0..below.len() + above.len() {
                assert_eq!(receive::<&str>(), "done");
            }
            let pinned_mark =
                wait_for_mark("a pass should lower it to the pinned process", |used| {
                    used <= pinned.index + 1
                });
            assert_eq!(
                pinned_mark,
                pinned.index + 1,
                "the live process's entry was kept"
            );
            assert!(process::alive(pinned), "a live process survives the pass");
            for &pid in &above {
                assert!(!process::alive(pid), "{pid:?} was given back, not revived");
                send(pid, ()); // to a dead pid: dropped
            }
            send(pinned, ());
            let bottom = wait_for_mark("a pass should lower it to the bottom", |used| used < 100);
            let stale: std::collections::HashSet<crate::Pid> = below
                .iter()
                .chain(&above)
                .chain([&pinned])
                .copied()
                .collect();
            let fresh = parked(30_000);
            assert!(
                fresh.iter().all(|pid| !stale.contains(pid)),
                "a new pid repeated one whose entry was given back"
            );
            assert!(fresh.iter().all(|&pid| process::alive(pid)));
            assert!(stale.iter().all(|&pid| !process::alive(pid)));
            for &pid in &fresh {
                send(pid, ());
            }
            for _ in 0..fresh.len() {
                assert_eq!(receive::<&str>(), "done");
            }
            assert!(bottom < 100);
        })
        .unwrap();
    }

    /// Below a live process at a high index, the idle pass gives back the pages whose entries
    /// are all free, without moving the fresh mark. Their pids stay dead; new processes fill
    /// those pages before the table grows, with pids that repeat none of the old ones; a walk
    /// of the table lists exactly the live processes.
    #[test]
    fn the_table_gives_back_free_pages_below_a_live_process() {
        let vm = Vm::builder().schedulers(2).build().unwrap();
        vm.run(|| {
            let root = crate::self_pid();
            let parked = |count: usize| parked(root, count);
            let release = |pids: &[crate::Pid]| {
                for &pid in pids {
                    send(pid, ());
                }
                for _ in 0..pids.len() {
                    assert_eq!(receive::<&str>(), "done");
                }
            };
            let below = parked(20_000);
            let pinned = spawn(|| {
                let () = receive::<()>();
            });
            let mark = current("test").vm.table.indices_used();
            assert_eq!(mark, pinned.index + 1, "the pinned process is the highest");
            release(&below);
            // 20,000 indices are 156 whole pages; the root's page and the pinned one's stay.
            let pages = wait_for_discarded("a pass should give the free pages back", |pages| {
                pages >= 150
            });
            assert!(pages <= 157, "{pages} pages given back of ~157");
            let table = &current("test").vm.table;
            assert_eq!(
                table.indices_used(),
                mark,
                "the mark stays at the pinned process"
            );
            assert!(process::alive(pinned), "a live process survives the pass");
            let mut listed = process::list();
            listed.sort_by_key(|pid| pid.index);
            assert_eq!(
                listed,
                vec![root, pinned],
                "a walk lists the live processes only"
            );
            for &pid in &below {
                assert!(!process::alive(pid), "{pid:?} was given back, not revived");
                send(pid, ()); // to a dead pid: dropped
            }
            let stale: std::collections::HashSet<crate::Pid> = below.iter().copied().collect();
            let refill = parked(15_000);
            assert_eq!(
                table.indices_used(),
                mark,
                "new processes fill the given-back pages before the table grows"
            );
            assert!(
                table.discarded_pages() < pages,
                "new processes took given-back pages"
            );
            assert!(
                refill.iter().all(|pid| !stale.contains(pid)),
                "a new pid repeated one whose entry was given back"
            );
            assert!(refill.iter().all(|&pid| process::alive(pid)));
            assert!(stale.iter().all(|&pid| !process::alive(pid)));
            release(&refill);
            send(pinned, ());
            wait_for_mark("a pass should lower it to the bottom", |used| used < 100);
            wait_for_discarded("pages above the lowered mark leave the set", |pages| {
                pages == 0
            });
        })
        .unwrap();
    }

    /// What a process of the racing test tells the root.
    #[derive(Debug, PartialEq)]
    enum Reply {
        Done,
        /// A message sent to a dead pid reached this process.
        Stale,
    }

    /// Sent to pids of processes that have ended.
    struct Stale;

    /// Give-back passes racing with everything that touches the table: a thread forces one
    /// every 200 µs while waves of processes are spawned, listed, sent to through stale pids
    /// and released, a few of each wave staying alive across later waves (so live entries pin
    /// pages at random heights: the top and the interior paths both run). No pid repeats, no
    /// message sent to a dead pid reaches a new process, and a walk lists exactly the live
    /// processes.
    #[test]
    fn give_back_passes_racing_with_spawns_keep_pids_unique() {
        use std::collections::HashSet;
        use std::sync::atomic::{AtomicBool, Ordering};

        let vm = Vm::builder().schedulers(2).build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let passes = {
            let shared = Arc::clone(&vm.shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut discarded = 0;
                while !stop.load(Ordering::Relaxed) {
                    shared.table.give_back();
                    discarded = discarded.max(shared.table.discarded_pages());
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                discarded
            })
        };
        vm.run(|| {
            let root = crate::self_pid();
            let spawn_parked = |count: usize| -> Vec<crate::Pid> {
                (0..count)
                    .map(|_| {
                        spawn(move || loop {
                            crate::receive! {
                                (): () => {
                                    send(root, Reply::Done);
                                    break;
                                },
                                Stale: Stale => send(root, Reply::Stale),
                            }
                        })
                    })
                    .collect()
            };
            let release = |pids: &[crate::Pid]| {
                for &pid in pids {
                    send(pid, ());
                }
                for _ in 0..pids.len() {
                    assert_eq!(
                        receive::<Reply>(),
                        Reply::Done,
                        "a stale pid reached a process"
                    );
                }
            };
            // xorshift64: the same waves every run.
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let mut random = move |below: usize| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % below as u64) as usize
            };
            let mut seen: HashSet<crate::Pid> = HashSet::from([root]);
            let mut dead: Vec<crate::Pid> = Vec::new();
            let mut kept: Vec<crate::Pid> = Vec::new();
            for wave in 0..40 {
                let pids = spawn_parked(2_000 + random(8_000));
                for &pid in &pids {
                    assert!(
                        seen.insert(pid),
                        "wave {wave}: pid {pid:?} was handed out before"
                    );
                }
                for _ in 0..dead.len().min(2_000) {
                    send(dead[random(dead.len())], Stale);
                }
                let mut listed = process::list();
                listed.sort();
                let mut live: Vec<crate::Pid> =
                    pids.iter().chain(&kept).copied().chain([root]).collect();
                live.sort();
                assert_eq!(
                    listed, live,
                    "wave {wave}: a walk lists exactly the live processes"
                );
                // A few stay (at random places in the table), the rest end.
                let (stay, end): (Vec<_>, Vec<_>) = pids.iter().partition(|_| random(500) == 0);
                release(&end);
                dead.extend(end);
                kept.extend(stay);
                if !kept.is_empty() && random(3) == 0 {
                    let ended = kept.swap_remove(random(kept.len()));
                    release(&[ended]);
                    dead.push(ended);
                }
                if random(4) == 0 {
                    // Idle a little: the workers' own passes run too.
                    process::sleep(std::time::Duration::from_millis(60));
                }
            }
            release(&kept);
        })
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let discarded = passes.join().unwrap();
        assert!(discarded > 0, "no pass gave an interior page back");
    }
}
