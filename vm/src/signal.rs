//! Exit signals, links and monitors, with Erlang's semantics.
//!
//! # Problem
//!
//! When a process ends, every process linked to it or monitoring it must learn why, exactly
//! once, after the messages the ending process sent it; `unlink`/`demonitor` must stop that for
//! good once they return; and the links, monitors, names and exits of two processes can change
//! concurrently on different schedulers.
//!
//! # Solution
//!
//! Each process has one `SignalState` under one mutex: its links, the monitors it holds, the
//! monitors on it, its `trap_exit` flag, its registered name and a `dead` flag. Every change
//! that involves two processes takes both locks (in pid order, so two of them never deadlock),
//! and every exit signal or `Down` is *delivered under the receiver's lock* after checking that
//! the link or monitor still exists there. So `unlink`/`demonitor`, which remove it under that
//! same lock, either happen before the delivery (it is skipped) or after it (and then flush the
//! queued `Exit`/`Down`). Deliveries go through the receiver's mailbox, behind every message the
//! ending process sent earlier: per-pair order holds for signals too.
//!
//! An ending process (in `terminate`) first leaves the process table (so `alive` is false before
//! anyone hears of the exit), then sets `dead` under its lock and takes its links and monitors:
//! a concurrent `link`/`monitor` either sees `dead` (and gets `NoProc` at once) or is in the
//! taken set (and fires). Each link and monitor therefore fires exactly once.
//!
//! # Exit signal rules (Erlang's `exit/2` and link semantics)
//!
//! | signal | trapping receiver | other receiver |
//! |--------|-------------------|----------------|
//! | `process::exit(pid, Kill)` | dies, `Killed` | dies, `Killed` |
//! | reason `Normal`, from another process | `Exit` message | ignored |
//! | `process::exit(self_pid(), Normal)` | `Exit` message | dies, `Normal` |
//! | any other reason (`Kill` along a link included) | `Exit` message | dies with it |
//!
//! Only the first signal that kills a process counts (`Process::kill`).
//!
//! # Rejected alternatives
//!
//! - *Signals as asynchronous messages processed by the receiver* (the BEAM): exact, but needs a
//!   signal-handling step in every VM call; the two-lock scheme gives the same observable
//!   guarantees with no work on the message path.
//! - *One global lock for links*: serializes every spawn_link and exit of the whole VM.

use std::sync::{Arc, MutexGuard};

use crate::control_block::Process;
use crate::envelope::Envelope;
use crate::exit::{Down, Exit, ExitReason};
use crate::monitor::MonitorRef;
use crate::pid::Pid;

/// Links, monitors and exit flags of one process. Under `Process::signals`.
#[derive(Default)]
pub(crate) struct SignalState {
    /// The process has ended (set once, in `terminate`).
    pub(crate) dead: bool,
    pub(crate) trap_exit: bool,
    pub(crate) links: Vec<Pid>,
    /// Monitors this process holds: (reference, monitored process).
    pub(crate) monitors: Vec<(MonitorRef, Pid)>,
    /// Monitors on this process: (reference, monitoring process).
    pub(crate) monitored_by: Vec<(MonitorRef, Pid)>,
    pub(crate) registered_name: Option<String>,
}

/// Where an exit signal comes from: a link (the sender ended) or `process::exit(pid, reason)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitKind {
    Link,
    Explicit,
}

/// Locks the signal states of two distinct processes in pid order.
fn lock_pair<'a>(
    first: &'a Process,
    second: &'a Process,
) -> (MutexGuard<'a, SignalState>, MutexGuard<'a, SignalState>) {
    if first.pid < second.pid {
        let a = first.lock_signals();
        let b = second.lock_signals();
        (a, b)
    } else {
        let b = second.lock_signals();
        let a = first.lock_signals();
        (a, b)
    }
}

/// Delivers an exit signal to `target`, whose signal lock the caller holds as `state`.
pub(crate) fn deliver_exit(
    target: &Arc<Process>,
    state: &SignalState,
    from: Pid,
    reason: ExitReason,
    kind: ExitKind,
) {
    if kind == ExitKind::Explicit && reason == ExitReason::Kill {
        target.kill(ExitReason::Killed);
    } else if state.trap_exit {
        target.mailbox.push(Envelope::new(Exit { from, reason }));
        target.vm.runtime.wake(target);
    } else if reason == ExitReason::Normal {
        if kind == ExitKind::Explicit && from == target.pid {
            target.kill(ExitReason::Normal);
        }
    } else {
        target.kill(reason);
    }
}

/// Links `me` and `other` (both directions). If `other` is dead, `me` gets an exit signal
/// `NoProc` from it instead.
pub(crate) fn link(me: &Arc<Process>, other: &Arc<Process>) {
    if me.pid == other.pid {
        return;
    }
    let (mut mine, mut theirs) = lock_pair(me, other);
    if theirs.dead {
        drop(theirs);
        deliver_exit(me, &mine, other.pid, ExitReason::NoProc, ExitKind::Link);
        return;
    }
    if !mine.links.contains(&other.pid) {
        mine.links.push(other.pid);
        theirs.links.push(me.pid);
    }
}

/// `me` links to a pid that is not in the process table (already dead).
pub(crate) fn link_to_dead(me: &Arc<Process>, dead: Pid) {
    let state = me.lock_signals();
    deliver_exit(me, &state, dead, ExitReason::NoProc, ExitKind::Link);
}

/// Removes the link between `me` and `other`, and any `Exit` from `other` already queued for
/// `me` (so that none arrives after this returns).
pub(crate) fn unlink(me: &Arc<Process>, other: Option<&Arc<Process>>, other_pid: Pid) {
    match other {
        Some(other) if other.pid != me.pid => {
            let (mut mine, mut theirs) = lock_pair(me, other);
            mine.links.retain(|&pid| pid != other_pid);
            theirs.links.retain(|&pid| pid != me.pid);
        }
        _ => me.lock_signals().links.retain(|&pid| pid != other_pid),
    }
    me.mailbox.remove_all(
        |message| matches!(message.downcast_ref::<Exit>(), Some(exit) if exit.from == other_pid),
    );
}

/// Starts monitoring `target` from `me`; a dead target gives `Down { NoProc }` at once.
pub(crate) fn monitor(
    me: &Arc<Process>,
    target: Option<&Arc<Process>>,
    target_pid: Pid,
) -> MonitorRef {
    let reference = MonitorRef(me.vm.references.next());
    if target_pid == me.pid {
        // Monitoring oneself is allowed and never fires.
        return reference;
    }
    let down_now = match target {
        Some(target) => {
            let (mut mine, mut theirs) = lock_pair(me, target);
            if theirs.dead {
                true
            } else {
                mine.monitors.push((reference, target_pid));
                theirs.monitored_by.push((reference, me.pid));
                false
            }
        }
        None => true,
    };
    if down_now {
        me.mailbox.push(Envelope::new(Down {
            monitor: reference,
            pid: target_pid,
            reason: ExitReason::NoProc,
        }));
    }
    reference
}

/// Stops the monitor `reference` held by `me`, and drops its `Down` if already queued.
pub(crate) fn demonitor(me: &Arc<Process>, reference: MonitorRef) {
    let target_pid = {
        let mut mine = me.lock_signals();
        let at = mine.monitors.iter().position(|(r, _)| *r == reference);
        at.map(|at| mine.monitors.swap_remove(at).1)
    };
    if let Some(target_pid) = target_pid {
        if let Some(target) = me.vm.table.get(target_pid) {
            target
                .lock_signals()
                .monitored_by
                .retain(|(r, _)| *r != reference);
        }
    }
    me.mailbox.remove_all(
        |message| matches!(message.downcast_ref::<Down>(), Some(down) if down.monitor == reference),
    );
}

/// The ending process's last signals: every link and monitor fires once with `reason`.
/// `me` has already left the process table.
pub(crate) fn propagate_exit(me: &Arc<Process>, reason: &ExitReason) {
    let (links, monitors, monitored_by, name) = {
        let mut state = me.lock_signals();
        state.dead = true;
        (
            std::mem::take(&mut state.links),
            std::mem::take(&mut state.monitors),
            std::mem::take(&mut state.monitored_by),
            state.registered_name.take(),
        )
    };
    if let Some(name) = name {
        me.vm.registry.remove_if(&name, me.pid);
    }
    let vm = &me.vm;
    for (reference, target_pid) in monitors {
        if let Some(target) = vm.table.get(target_pid) {
            target
                .lock_signals()
                .monitored_by
                .retain(|(r, _)| *r != reference);
        }
    }
    for linked_pid in links {
        let Some(linked) = vm.table.get(linked_pid) else {
            continue;
        };
        let mut state = linked.lock_signals();
        let Some(at) = state.links.iter().position(|&pid| pid == me.pid) else {
            continue;
        };
        state.links.swap_remove(at);
        deliver_exit(&linked, &state, me.pid, reason.clone(), ExitKind::Link);
    }
    for (reference, watcher_pid) in monitored_by {
        let Some(watcher) = vm.table.get(watcher_pid) else {
            continue;
        };
        let mut state = watcher.lock_signals();
        let Some(at) = state.monitors.iter().position(|(r, _)| *r == reference) else {
            continue;
        };
        state.monitors.swap_remove(at);
        watcher.mailbox.push(Envelope::new(Down {
            monitor: reference,
            pid: me.pid,
            reason: reason.clone(),
        }));
        drop(state);
        vm.runtime.wake(&watcher);
    }
}
