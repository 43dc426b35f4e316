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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::iter::{Chain, Flatten};
use std::sync::MutexGuard;

use starling_scheduler::{Block, Handle};

use crate::control_block::{ExitHook, Process};
use crate::envelope::Envelope;
use crate::exit::{Down, Exit, ExitReason};
use crate::grow;
use crate::monitor::MonitorRef;
use crate::pid::Pid;

/// Kill reason, `trap_exit`, links, monitors and name of one process. Under `Process::signals`,
/// with the process's `dead` flag (see `Process::is_dead`).
///
/// Most processes are never killed, never trap exits and never link, monitor or register, so
/// all of that lives in a box allocated on first use: a parked process costs one pointer for
/// it. The box is a [`Block`] from the block store, so that a burst of 100,000 monitored or
/// linked processes leaves no pages of glibc's heap behind once they end (see `Block`).
/// (The kill reason had a box of its own and the two flags sat here: the mutex around this
/// state took 32 bytes instead of 16, and the control block a size class more.)
#[derive(Default)]
pub(crate) struct SignalState {
    pub(crate) relations: Option<Block<Relations>>,
}

/// A hasher for pids and monitor references (a few integers each): multiply-rotate, like
/// rustc's FxHash. Not resistant to chosen keys, which a VM's own pids and references are not.
#[derive(Default)]
pub(crate) struct RelationHasher(u64);

impl Hasher for RelationHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type BuildRelationHasher = BuildHasherDefault<RelationHasher>;

/// The processes a process is linked to.
pub(crate) type Links = RelationMap<Pid, ()>;

/// Monitors by reference: the monitored process (in the watcher) or the watcher (in the
/// monitored process).
pub(crate) type Monitors = RelationMap<MonitorRef, Pid>;

/// A map of a process's links or monitors: inline while it holds one entry, hashed beyond.
///
/// Most related processes have exactly one relation of a kind (a worker monitored by its
/// supervisor, a task linked to its caller). Inline, that relation costs no allocation of its
/// own: a hash map's first table came from glibc, and after a burst of 100,000 such processes
/// glibc's per-thread caches kept chunks of it scattered over the worker arenas, pinning their
/// pages. A process with many (the supervisor itself) gets a hash map, so that each of its
/// relations is found in O(1) (see [`Relations`]).
pub(crate) enum RelationMap<K, V> {
    Inline(Option<(K, V)>),
    Hashed(HashMap<K, V, BuildRelationHasher>),
}

impl<K, V> Default for RelationMap<K, V> {
    fn default() -> Self {
        RelationMap::Inline(None)
    }
}

impl<K: Copy + Eq + std::hash::Hash, V> RelationMap<K, V> {
    /// Inserts `key`; returns the value it had, if it was there.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            RelationMap::Inline(slot @ None) => {
                *slot = Some((key, value));
                None
            }
            RelationMap::Inline(Some((held, old))) if *held == key => {
                Some(std::mem::replace(old, value))
            }
            RelationMap::Inline(slot @ Some(_)) => {
                let (held, old) = slot.take().expect("matched as `Some`");
                let mut map = HashMap::with_capacity_and_hasher(2, BuildRelationHasher::default());
                map.insert(held, old);
                map.insert(key, value);
                *self = RelationMap::Hashed(map);
                None
            }
            RelationMap::Hashed(map) => map.insert(key, value),
        }
    }

    /// Removes `key`; returns its value, if it was there.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            RelationMap::Inline(slot) if slot.as_ref().is_some_and(|(held, _)| held == key) => {
                slot.take().map(|(_, value)| value)
            }
            RelationMap::Inline(_) => None,
            RelationMap::Hashed(map) => map.remove(key),
        }
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (inline, hashed) = match self {
            RelationMap::Inline(slot) => (slot.as_ref(), None),
            RelationMap::Hashed(map) => (None, Some(map)),
        };
        let inline = inline.into_iter().map(|(key, value)| (key, value));
        inline.chain(hashed.into_iter().flatten())
    }
}

impl<K, V> IntoIterator for RelationMap<K, V> {
    type Item = (K, V);
    type IntoIter = Chain<
        std::option::IntoIter<(K, V)>,
        Flatten<std::option::IntoIter<HashMap<K, V, BuildRelationHasher>>>,
    >;

    /// The entries, by value.
    fn into_iter(self) -> Self::IntoIter {
        let (inline, hashed) = match self {
            RelationMap::Inline(slot) => (slot, None),
            RelationMap::Hashed(map) => (None, Some(map)),
        };
        inline.into_iter().chain(hashed.into_iter().flatten())
    }
}

/// The kill reason, `trap_exit`, links, monitors, name and exit hook of a process that has any.
///
/// Links and monitors are hash sets and maps, not vectors: a process that monitors or links
/// to N processes that then end (a supervisor, a pool) found each in a scan of its vector, and
/// N processes ending in the reverse of their spawn order cost O(N²): releasing 100,000
/// monitored processes that way took 5.4 s (30,000: 0.52 s). Now each lookup is O(1).
#[derive(Default)]
pub(crate) struct Relations {
    /// The reason of the first kill (exit signal, `exit/1`, shutdown); it is the exit reason.
    pub(crate) kill: Option<ExitReason>,
    /// Exit signals arrive as `Exit` messages (`process::trap_exit`).
    pub(crate) trap_exit: bool,
    /// Called with the exit reason when the process ends (`Vm::run`'s root).
    pub(crate) on_exit: Option<ExitHook>,
    pub(crate) links: Links,
    /// Monitors this process holds: reference to monitored process.
    pub(crate) monitors: Monitors,
    /// Monitors on this process: reference to monitoring process.
    pub(crate) monitored_by: Monitors,
    pub(crate) registered_name: Option<String>,
    /// Links and monitors asked for while this process was already exiting: they get `NoProc`
    /// once its exit is complete (its name freed, its other links and monitors fired), as in
    /// Erlang, where the exiting process answers such requests itself. `None`: a link.
    pub(crate) noproc_on_exit: Vec<(Pid, Option<MonitorRef>)>,
}

impl SignalState {
    /// The state of a new process, with the exit hook it is spawned with, if any.
    pub(crate) fn with_exit_hook(on_exit: Option<ExitHook>) -> SignalState {
        SignalState {
            relations: on_exit.map(|hook| {
                Block::new(Relations {
                    on_exit: Some(hook),
                    ..Relations::default()
                })
            }),
        }
    }

    /// The reason of the kill that counted, if any.
    pub(crate) fn kill(&self) -> Option<&ExitReason> {
        self.relations()
            .and_then(|relations| relations.kill.as_ref())
    }

    /// Whether exit signals arrive as messages.
    pub(crate) fn trap_exit(&self) -> bool {
        self.relations()
            .is_some_and(|relations| relations.trap_exit)
    }

    /// Sets whether exit signals arrive as messages; returns the previous setting.
    pub(crate) fn set_trap_exit(&mut self, enabled: bool) -> bool {
        if !enabled && self.relations.is_none() {
            return false;
        }
        std::mem::replace(&mut self.relations_mut().trap_exit, enabled)
    }

    /// The process's relations, if it has any.
    pub(crate) fn relations(&self) -> Option<&Relations> {
        self.relations.as_deref()
    }

    /// The process's relations, created on first use.
    pub(crate) fn relations_mut(&mut self) -> &mut Relations {
        self.relations.get_or_insert_with(Block::default)
    }

    /// Returns `true` if the process (whose state this is) can still be linked to, monitored or
    /// named: it is neither dead nor exiting. Linking to or monitoring an exiting process gives
    /// `NoProc`, as in Erlang (it is not alive any more, see `Process::is_alive`). A recorded
    /// kill needs no look of its own: `record_kill` sets `killed` with it, under this lock, and
    /// `is_alive` reads that flag.
    pub(crate) fn accepts_relations(&self, process: &Process) -> bool {
        !process.is_dead(self) && process.is_alive()
    }

    /// Removes the link to `pid`; says whether there was one.
    pub(crate) fn remove_link(&mut self, pid: Pid) -> bool {
        self.relations
            .as_mut()
            .is_some_and(|relations| relations.links.remove(&pid).is_some())
    }
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
    target: &Handle<Process>,
    state: &mut SignalState,
    from: Pid,
    reason: ExitReason,
    kind: ExitKind,
) {
    if kind == ExitKind::Explicit && reason == ExitReason::Kill {
        Process::kill_locked(target, state, ExitReason::Killed);
    } else if state.trap_exit() {
        let exit = Exit { from, reason };
        target.mailbox.push(match kind {
            ExitKind::Link => Envelope::new_link_exit(exit),
            ExitKind::Explicit => Envelope::new(exit),
        });
        target.vm.runtime.wake(target);
    } else if reason == ExitReason::Normal {
        if kind == ExitKind::Explicit && from == target.pid {
            Process::kill_locked(target, state, ExitReason::Normal);
        }
    } else {
        Process::kill_locked(target, state, reason);
    }
}

/// Links `me` and `other` (both directions). If `other` is dead, `me` gets an exit signal
/// `NoProc` from it instead.
pub(crate) fn link(me: &Handle<Process>, other: &Handle<Process>) {
    if me.pid == other.pid {
        return;
    }
    let (mut mine, mut theirs) = lock_pair(me, other);
    if other.is_dead(&theirs) {
        drop(theirs);
        deliver_exit(me, &mut mine, other.pid, ExitReason::NoProc, ExitKind::Link);
        return;
    }
    if !theirs.accepts_relations(other) {
        // Exiting: `NoProc` comes when its exit is complete (`propagate_exit`).
        grow::push(&mut theirs.relations_mut().noproc_on_exit, (me.pid, None));
        return;
    }
    if mine.relations_mut().links.insert(other.pid, ()).is_none() {
        theirs.relations_mut().links.insert(me.pid, ());
    }
}

/// `me` links to a pid that is not in the process table (already dead).
pub(crate) fn link_to_dead(me: &Handle<Process>, dead: Pid) {
    let mut state = me.lock_signals();
    deliver_exit(me, &mut state, dead, ExitReason::NoProc, ExitKind::Link);
}

/// Removes the link between `me` and `other`, and any `Exit` from `other` already queued for
/// `me` (so that none arrives after this returns).
pub(crate) fn unlink(me: &Handle<Process>, other: Option<&Handle<Process>>, other_pid: Pid) {
    match other {
        Some(other) if other.pid != me.pid => {
            let (mut mine, mut theirs) = lock_pair(me, other);
            mine.remove_link(other_pid);
            theirs.remove_link(me.pid);
        }
        _ => {
            me.lock_signals().remove_link(other_pid);
        }
    }
    // Only the `Exit`s this link queued: one that `process::exit` sent stays.
    me.mailbox.remove_all(|message| {
        message.is_link_exit()
            && matches!(message.as_any().downcast_ref::<Exit>(), Some(exit) if exit.from == other_pid)
    });
}

/// Starts monitoring `target` from `me`; a dead target gives `Down { NoProc }` at once.
pub(crate) fn monitor(
    me: &Handle<Process>,
    target: Option<&Handle<Process>>,
    target_pid: Pid,
) -> MonitorRef {
    monitor_as(me, target, target_pid, MonitorRef(me.vm.references.next()))
}

/// [`monitor`] with a reference the caller made beforehand (`Task` tags its reply with it).
pub(crate) fn monitor_as(
    me: &Handle<Process>,
    target: Option<&Handle<Process>>,
    target_pid: Pid,
    reference: MonitorRef,
) -> MonitorRef {
    if target_pid == me.pid {
        // Monitoring oneself is allowed and never fires.
        return reference;
    }
    let down_now = match target {
        Some(target) => {
            let (mut mine, mut theirs) = lock_pair(me, target);
            if target.is_dead(&theirs) {
                true
            } else if !theirs.accepts_relations(target) {
                // Exiting: `Down { NoProc }` comes when its exit is complete (`propagate_exit`);
                // until then `demonitor` can cancel it like any monitor.
                mine.relations_mut().monitors.insert(reference, target_pid);
                grow::push(
                    &mut theirs.relations_mut().noproc_on_exit,
                    (me.pid, Some(reference)),
                );
                false
            } else {
                mine.relations_mut().monitors.insert(reference, target_pid);
                theirs
                    .relations_mut()
                    .monitored_by
                    .insert(reference, me.pid);
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
pub(crate) fn demonitor(me: &Handle<Process>, reference: MonitorRef) {
    let target_pid = {
        let mut mine = me.lock_signals();
        mine.relations
            .as_mut()
            .and_then(|relations| relations.monitors.remove(&reference))
    };
    if let Some(target_pid) = target_pid {
        if let Some(target) = me.vm.table.get(target_pid) {
            if let Some(relations) = target.lock_signals().relations.as_mut() {
                relations.monitored_by.remove(&reference);
            }
        }
    }
    me.mailbox.remove_all(|message| {
        matches!(message.as_any().downcast_ref::<Down>(), Some(down) if down.monitor == reference)
    });
}

/// Delivers `Down { reference, me, reason }` to `watcher_pid`, under its lock, if it still holds
/// that monitor (a `demonitor` that got there first wins; the monitor fires at most once).
fn fire_monitor(me: &Process, watcher_pid: Pid, reference: MonitorRef, reason: ExitReason) {
    let Some(watcher) = me.vm.table.get(watcher_pid) else {
        return;
    };
    let mut state = watcher.lock_signals();
    let Some(relations) = state.relations.as_mut() else {
        return;
    };
    if relations.monitors.remove(&reference).is_none() {
        return;
    }
    watcher.mailbox.push(Envelope::new(Down {
        monitor: reference,
        pid: me.pid,
        reason,
    }));
    drop(state);
    me.vm.runtime.wake(&watcher);
}

/// The ending process's last signals: every link and monitor fires once with `reason`.
/// `me` has already left the process table. Returns the exit hook, taken under the same lock,
/// for the caller to run.
pub(crate) fn propagate_exit(me: &Handle<Process>, reason: &ExitReason) -> Option<ExitHook> {
    let relations = {
        let mut state = me.lock_signals();
        me.set_dead(&mut state);
        state.relations.take()
    };
    // Most processes never link, monitor or register.
    let mut relations = Block::into_inner(relations?);
    let hook = relations.on_exit.take();
    propagate_relations(me, reason, relations);
    hook
}

/// [`propagate_exit`] for a process that had relations.
fn propagate_relations(me: &Handle<Process>, reason: &ExitReason, relations: Relations) {
    let Relations {
        kill: _,
        trap_exit: _,
        on_exit: _,
        links,
        monitors,
        monitored_by,
        registered_name: name,
        noproc_on_exit,
    } = relations;
    if let Some(name) = name {
        me.vm.registry.remove_if(&name, me.pid);
    }
    let vm = &me.vm;
    for (reference, target_pid) in monitors {
        if let Some(target) = vm.table.get(target_pid) {
            if let Some(relations) = target.lock_signals().relations.as_mut() {
                relations.monitored_by.remove(&reference);
            }
        }
    }
    for (linked_pid, ()) in links {
        let Some(linked) = vm.table.get(linked_pid) else {
            continue;
        };
        let mut state = linked.lock_signals();
        if !state.remove_link(me.pid) {
            continue;
        }
        deliver_exit(&linked, &mut state, me.pid, reason.clone(), ExitKind::Link);
    }
    for (reference, watcher_pid) in monitored_by {
        fire_monitor(me, watcher_pid, reference, reason.clone());
    }
    // Requests that arrived while we were exiting, answered now that the exit is complete.
    for (pid, monitor) in noproc_on_exit {
        match monitor {
            Some(reference) => fire_monitor(me, pid, reference, ExitReason::NoProc),
            None => {
                let Some(requester) = vm.table.get(pid) else {
                    continue;
                };
                let mut state = requester.lock_signals();
                deliver_exit(
                    &requester,
                    &mut state,
                    me.pid,
                    ExitReason::NoProc,
                    ExitKind::Link,
                );
            }
        }
    }
}
