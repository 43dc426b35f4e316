//! The `process` module: Elixir's `Process` functions (introspection, sleep, yield).

use std::time::{Duration, Instant};

use crate::control_block::{current, Process, CALL_COST};
use crate::exit::Status;
use crate::pid::Pid;

/// What [`info`] reports about a process (Erlang's `process_info/1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process.
    pub pid: Pid,
    /// What it is doing.
    pub status: Status,
    /// Messages in its mailbox.
    pub message_queue_len: usize,
    /// Reductions it has spent (updated whenever it gives up its scheduler).
    pub reductions: u64,
    /// Bytes it holds: its stack bytes, its queued messages and its control block.
    pub memory: usize,
    /// Processes it is linked to.
    pub links: Vec<Pid>,
    /// Processes it monitors.
    pub monitors: Vec<Pid>,
    /// Processes that monitor it.
    pub monitored_by: Vec<Pid>,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// Its registered name.
    pub registered_name: Option<String>,
}

/// Returns `true` if `pid` is a live process of the caller's VM.
///
/// # Panics
///
/// Outside a process (naming `process::alive`).
pub fn alive(pid: Pid) -> bool {
    let process = current("process::alive");
    process.checkpoint(CALL_COST);
    process.vm.table.contains(pid)
}

/// Every live process of the caller's VM, the caller included.
///
/// # Panics
///
/// Outside a process (naming `process::list`).
pub fn list() -> Vec<Pid> {
    let process = current("process::list");
    process.checkpoint(CALL_COST);
    process.vm.table.pids()
}

/// Information about a live process, or `None` if it is dead.
///
/// # Panics
///
/// Outside a process (naming `process::info`).
///
/// # Examples
///
/// ```
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// let queued = vm.run(|| {
///     let me = starling::self_pid();
///     starling::send(me, 1u8);
///     starling::process::info(me).unwrap().message_queue_len
/// });
/// assert_eq!(queued, Ok(1));
/// ```
pub fn info(pid: Pid) -> Option<ProcessInfo> {
    let process = current("process::info");
    process.checkpoint(CALL_COST);
    let target = process.vm.table.get(pid)?;
    Some(info_of(&target))
}

pub(crate) fn info_of(target: &Process) -> ProcessInfo {
    use starling_scheduler::Schedulable;
    ProcessInfo {
        pid: target.pid,
        status: target.status(),
        message_queue_len: target.mailbox.len(),
        reductions: target.fiber().reductions(),
        memory: target.memory(),
        links: Vec::new(),
        monitors: Vec::new(),
        monitored_by: Vec::new(),
        trap_exit: false,
        registered_name: None,
    }
}

/// Suspends the calling process for at least `duration` (never less). Messages that arrive
/// meanwhile stay in the mailbox. `Duration::MAX` sleeps forever.
///
/// # Panics
///
/// Outside a process (naming `process::sleep`).
pub fn sleep(duration: Duration) {
    let process = current("process::sleep");
    process.checkpoint(CALL_COST);
    let deadline = Instant::now().checked_add(duration);
    loop {
        process.die_if_killed();
        match deadline {
            None => starling_scheduler::park::<Process>(),
            Some(deadline) => {
                if Instant::now() >= deadline {
                    return;
                }
                starling_scheduler::park_until::<Process>(deadline);
            }
        }
    }
}

/// Lets the other runnable processes of this scheduler run first.
///
/// # Panics
///
/// Outside a process (naming `process::yield_now`).
pub fn yield_now() {
    let process = current("process::yield_now");
    process.checkpoint(CALL_COST);
    starling_scheduler::yield_now::<Process>();
    process.die_if_killed();
}

/// Number of schedulers (worker threads) of the caller's VM, like
/// `:erlang.system_info(:schedulers)`.
///
/// # Panics
///
/// Outside a process (naming `process::schedulers`).
pub fn schedulers() -> usize {
    let process = current("process::schedulers");
    process.checkpoint(CALL_COST);
    process.vm.runtime.schedulers()
}

/// Charges the calling process `reductions` for work it did without calling the VM (like
/// `erlang:bump_reductions/1`); if its slice is used up it yields.
///
/// # Panics
///
/// Outside a process (naming `process::bump_reductions`).
pub fn bump_reductions(reductions: u32) {
    let process = current("process::bump_reductions");
    process.checkpoint(reductions.max(1));
}
