//! The `process` module: Elixir's `Process` functions (introspection, sleep, yield).

use std::time::{Duration, Instant};

pub use crate::blocking::long_schedules;
use crate::control_block::{current, current_arc, Process, CALL_COST};
use crate::envelope::Envelope;
use crate::error::Error;
use crate::exit::{ExitReason, Status};
use crate::kernel::deliver;
use crate::monitor::{MonitorRef, TimerRef};
use crate::pid::Pid;
use crate::signal::{self, ExitKind};

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

/// Returns `true` if `pid` is a live process of the caller's VM: it exists and is not exiting.
/// As in Erlang, a process that has been killed (an exit signal that ends it, `exit/1`, a
/// shutdown) is not alive any more, even while it is still unwinding: so after
/// `process::exit(pid, Kill)` returns, `alive(pid)` is `false`.
///
/// # Panics
///
/// Outside a process (naming `process::alive`).
pub fn alive(pid: Pid) -> bool {
    let process = current("process::alive");
    process.checkpoint(CALL_COST);
    process
        .vm
        .table
        .get(pid)
        .is_some_and(|target| target.is_alive())
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

/// Information about a live process, or `None` if it is dead or exiting (see [`alive`]).
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
    target.is_alive().then(|| info_of(&target))
}

pub(crate) fn info_of(target: &Process) -> ProcessInfo {
    use starling_scheduler::Schedulable;
    let state = target.lock_signals();
    ProcessInfo {
        pid: target.pid,
        status: target.status(),
        message_queue_len: target.mailbox.len(),
        reductions: target.fiber().reductions(),
        memory: target.memory(),
        links: state
            .relations()
            .map(|r| r.links.iter().map(|(pid, ())| *pid).collect())
            .unwrap_or_default(),
        monitors: state
            .relations()
            .map(|r| r.monitors.iter().map(|(_, pid)| *pid).collect())
            .unwrap_or_default(),
        monitored_by: state
            .relations()
            .map(|r| r.monitored_by.iter().map(|(_, pid)| *pid).collect())
            .unwrap_or_default(),
        trap_exit: state.trap_exit(),
        registered_name: state.relations().and_then(|r| r.registered_name.clone()),
    }
}

/// Sends an exit signal with `reason` to `pid`, with Erlang's `exit/2` semantics: a
/// non-trapping target dies with `reason`, except that `Normal` is ignored unless the target is
/// the caller itself; a trapping target receives an [`Exit`](crate::Exit) message instead;
/// `Kill` cannot be trapped and the target dies with `Killed`. A dead `pid` is ignored.
///
/// # Panics
///
/// Outside a process (naming `process::exit`).
pub fn exit(pid: Pid, reason: ExitReason) {
    let me = current_arc("process::exit");
    me.checkpoint(CALL_COST);
    if let Some(target) = me.vm.table.get(pid) {
        let mut state = target.lock_signals();
        if !target.is_dead(&state) {
            signal::deliver_exit(&target, &mut state, me.pid, reason, ExitKind::Explicit);
        }
    }
    // An exit signal to oneself takes effect at once.
    me.die_if_killed();
}

/// Links the caller and `pid`: when either ends with a reason other than `Normal`, the other
/// gets an exit signal. Linking to a dead pid sends the caller an exit signal `NoProc` (a
/// trapping caller gets `Exit { reason: NoProc }`, another dies).
///
/// # Panics
///
/// Outside a process (naming `process::link`).
pub fn link(pid: Pid) {
    let me = current_arc("process::link");
    me.checkpoint(CALL_COST);
    match me.vm.table.get(pid) {
        Some(other) => signal::link(&me, &other),
        None => signal::link_to_dead(&me, pid),
    }
    me.die_if_killed();
}

/// Removes the link between the caller and `pid`. Once this returns, no `Exit` from that link
/// arrives (one already queued is removed).
///
/// # Panics
///
/// Outside a process (naming `process::unlink`).
pub fn unlink(pid: Pid) {
    let me = current_arc("process::unlink");
    me.checkpoint(CALL_COST);
    let other = me.vm.table.get(pid);
    signal::unlink(&me, other.as_ref(), pid);
}

/// Monitors `pid`: when it ends the caller receives [`Down`](crate::Down) with this reference.
/// Monitoring a dead pid delivers `Down { reason: NoProc }` at once; monitoring oneself is
/// allowed and never fires.
///
/// # Panics
///
/// Outside a process (naming `process::monitor`).
pub fn monitor(pid: Pid) -> MonitorRef {
    let me = current_arc("process::monitor");
    me.checkpoint(CALL_COST);
    let target = me.vm.table.get(pid);
    signal::monitor(&me, target.as_ref(), pid)
}

/// Stops a monitor; its `Down`, if already queued, is removed too.
///
/// # Panics
///
/// Outside a process (naming `process::demonitor`).
pub fn demonitor(monitor: MonitorRef) {
    let me = current_arc("process::demonitor");
    me.checkpoint(CALL_COST);
    signal::demonitor(&me, monitor);
}

/// Sets whether the caller traps exits (exit signals become [`Exit`](crate::Exit) messages).
/// Returns the previous value.
///
/// # Panics
///
/// Outside a process (naming `process::trap_exit`).
pub fn trap_exit(enabled: bool) -> bool {
    let me = current("process::trap_exit");
    me.checkpoint(CALL_COST);
    me.lock_signals().set_trap_exit(enabled)
}

/// Registers `name` for `pid`.
///
/// # Errors
///
/// `NoProc` if `pid` is dead, `AlreadyRegistered` if it already has a name, `NameTaken` if
/// another process has this name.
///
/// # Panics
///
/// Outside a process (naming `process::register`).
pub fn register(name: &str, pid: Pid) -> Result<(), Error> {
    let me = current("process::register");
    me.checkpoint(CALL_COST);
    let target = me.vm.table.get(pid).ok_or(Error::NoProc)?;
    me.vm.registry.register(name, &target)
}

/// Removes a registered name (no effect if it is not registered).
///
/// # Panics
///
/// Outside a process (naming `process::unregister`).
pub fn unregister(name: &str) {
    let me = current("process::unregister");
    me.checkpoint(CALL_COST);
    if let Some(pid) = me.vm.registry.unregister(name) {
        if let Some(process) = me.vm.table.get(pid) {
            let mut state = process.lock_signals();
            let relations = state.relations_mut();
            if relations.registered_name.as_deref() == Some(name) {
                relations.registered_name = None;
            }
        }
    }
}

/// The pid registered under `name`, if any.
///
/// # Panics
///
/// Outside a process (naming `process::whereis`).
pub fn whereis(name: &str) -> Option<Pid> {
    let me = current("process::whereis");
    me.checkpoint(CALL_COST);
    me.vm.registry.whereis(name)
}

/// Sends `message` to `pid` after `delay`. Timers fire in deadline order; `Duration::MAX`
/// means never. Dropping the returned reference does not cancel the timer.
///
/// # Panics
///
/// Outside a process (naming `process::send_after`).
pub fn send_after<M: Send + 'static>(pid: Pid, message: M, delay: Duration) -> TimerRef {
    let me = current("process::send_after");
    me.checkpoint(CALL_COST);
    let reference = me.vm.references.next();
    let mut timers = me.vm.timers.lock().unwrap_or_else(|e| e.into_inner());
    match Instant::now().checked_add(delay) {
        None => {
            timers.insert(reference, None);
        }
        Some(deadline) => {
            let vm = me.vm.clone();
            let envelope = Envelope::new(message);
            let handle = me.vm.runtime.call_after(
                deadline,
                Box::new(move || {
                    // Fired: it left the wheel, so a concurrent `cancel_timer` returns false
                    // and the message must arrive. The map entry is only bookkeeping.
                    vm.timers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&reference);
                    deliver(&vm, pid, envelope);
                }),
            );
            timers.insert(reference, Some(handle));
        }
    }
    TimerRef(reference)
}

/// Cancels a timer started by [`send_after`]. Returns `true` iff it had not fired yet (it
/// never will now).
///
/// # Panics
///
/// Outside a process (naming `process::cancel_timer`).
pub fn cancel_timer(timer: TimerRef) -> bool {
    let me = current("process::cancel_timer");
    me.checkpoint(CALL_COST);
    let pending = me
        .vm
        .timers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&timer.0);
    match pending {
        None => false,
        Some(None) => true,
        Some(Some(handle)) => me.vm.runtime.cancel_timer(handle),
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
