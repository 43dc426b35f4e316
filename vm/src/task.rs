//! Tasks: a process that computes one value for the process that started it (Elixir's `Task`).
//!
//! `Task::spawn` is `Task.async`: the task is linked to its owner and monitored by it, and sends
//! its result back tagged with a unique reference. `join` waits for that reply or for the
//! monitor's `Down`; `join_timeout` shuts the task down on timeout and flushes its reply, so a
//! late reply never reaches the owner's mailbox.

use std::any::Any;
use std::marker::PhantomData;
use std::time::Duration;

use crate::control_block::{current, current_arc, CALL_COST};
use crate::exit::{Down, ExitReason};
use crate::monitor::MonitorRef;
use crate::pid::Pid;
use crate::receive::select_or_time_out;
use crate::signal::{self, ExitKind};

/// Why a task gave no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// The task ended without replying, with this reason.
    Exited(ExitReason),
    /// No reply within the timeout.
    Timeout,
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::Exited(reason) => write!(f, "task exited: {reason}"),
            TaskError::Timeout => f.write_str("task timed out"),
        }
    }
}

impl std::error::Error for TaskError {}

/// The reply a task sends its owner.
struct Reply<T> {
    tag: MonitorRef,
    value: T,
}

/// A running computation whose result the spawning process can wait for.
///
/// Only the process that spawned a task can join it (the reply goes to its mailbox), so `Task`
/// is not `Send`:
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<starling::Task<u32>>();
/// ```
///
/// # Examples
///
/// ```
/// let vm = starling::Vm::builder().schedulers(2).build().unwrap();
/// let sum = vm.run(|| {
///     let tasks: Vec<_> = (1..=4u64).map(|i| starling::Task::spawn(move || i * 10)).collect();
///     starling::task::join_all(tasks).into_iter().map(Result::unwrap).sum::<u64>()
/// });
/// assert_eq!(sum, Ok(100));
/// ```
#[must_use = "a task's result arrives in the caller's mailbox; join it or shut it down"]
#[derive(Debug)]
pub struct Task<T> {
    pid: Pid,
    monitor: MonitorRef,
    /// `!Send`: the reply arrives in the spawning process's mailbox.
    owner_only: PhantomData<*const ()>,
    result: PhantomData<fn() -> T>,
}

enum Outcome<T> {
    Value(T),
    Down(ExitReason),
}

impl<T: Send + 'static> Task<T> {
    /// Starts `f` in a new process linked to and monitored by the caller (`Task.async`).
    ///
    /// # Panics
    ///
    /// Outside a process (naming `Task::spawn`), and at the process limit.
    pub fn spawn<F>(f: F) -> Task<T>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let owner = current_arc("Task::spawn");
        owner.checkpoint(CALL_COST);
        let owner_pid = owner.pid;
        // The monitor's reference doubles as the reply's tag: made before the task exists, so
        // the task knows it from its first instruction.
        let tag = MonitorRef(owner.vm.references.next());
        let body = move || {
            let value = f();
            crate::kernel::send(owner_pid, Reply { tag, value });
        };
        let options = crate::kernel::SpawnOptions {
            link: Some(&owner),
            monitor: Some(&owner),
            monitor_reference: Some(tag),
            ..Default::default()
        };
        let (pid, monitor) = match crate::kernel::spawn_in(&owner.vm, body, options) {
            Ok((pid, Some(monitor))) => (pid, monitor),
            Ok((_, None)) => unreachable!("spawn_in sets up the monitor it was asked for"),
            Err(error) => crate::kernel::spawn_failed("Task::spawn", &owner.vm, error),
        };
        Task {
            pid,
            monitor,
            owner_only: PhantomData,
            result: PhantomData,
        }
    }

    /// The task's process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the reply or the task's end, at most `timeout` (`None`: forever).
    fn wait(&self, function: &str, timeout: Option<Duration>) -> Option<Outcome<T>> {
        let tag = self.monitor;
        let message = select_or_time_out(
            function,
            &mut |message: &(dyn Any + Send)| {
                if let Some(reply) = message.downcast_ref::<Reply<T>>() {
                    return reply.tag == tag;
                }
                message
                    .downcast_ref::<Down>()
                    .is_some_and(|down| down.monitor == tag)
            },
            timeout,
        )?;
        if message.as_any().is::<Reply<T>>() {
            let reply = message.take::<Reply<T>>();
            // Drop the monitor and any `Down` it already queued.
            let me = current_arc(function);
            signal::demonitor(&me, tag);
            Some(Outcome::Value(reply.value))
        } else {
            Some(Outcome::Down(message.take::<Down>().reason))
        }
    }

    /// Waits for the task's result without limit (`Task.await(task, :infinity)`).
    ///
    /// If the task crashes, the link usually ends the caller first (unless it traps exits);
    /// a task that ends without replying gives `Err(TaskError::Exited(reason))`.
    ///
    /// # Panics
    ///
    /// Outside a process (naming `Task::join`).
    pub fn join(self) -> Result<T, TaskError> {
        match self.wait("Task::join", None) {
            Some(Outcome::Value(value)) => Ok(value),
            Some(Outcome::Down(reason)) => Err(TaskError::Exited(reason)),
            None => unreachable!("a wait without timeout returns"),
        }
    }

    /// Waits at most `timeout` (`Task.await/2`). On timeout the task is shut down and its late
    /// reply never reaches the caller's mailbox.
    ///
    /// # Panics
    ///
    /// Outside a process (naming `Task::join_timeout`).
    pub fn join_timeout(self, timeout: Duration) -> Result<T, TaskError> {
        match self.wait("Task::join_timeout", Some(timeout)) {
            Some(Outcome::Value(value)) => Ok(value),
            Some(Outcome::Down(reason)) => Err(TaskError::Exited(reason)),
            None => {
                // A reply that raced the timeout is dropped too: the caller asked for a bound.
                let _ = self.shutdown_named("Task::join_timeout");
                Err(TaskError::Timeout)
            }
        }
    }

    /// Waits at most `timeout` for the result (`Task.yield/2`); `None` if the task is still
    /// running (it keeps running and can be joined again).
    ///
    /// # Panics
    ///
    /// Outside a process (naming `Task::try_join`).
    pub fn try_join(&mut self, timeout: Duration) -> Option<Result<T, TaskError>> {
        match self.wait("Task::try_join", Some(timeout))? {
            Outcome::Value(value) => Some(Ok(value)),
            Outcome::Down(reason) => Some(Err(TaskError::Exited(reason))),
        }
    }

    /// Stops the task (`Task.shutdown/1` with `:brutal_kill`): unlinks it first, then kills it
    /// and waits for it to end. Returns its result if it replied before it ended.
    ///
    /// # Panics
    ///
    /// Outside a process (naming `Task::shutdown`).
    pub fn shutdown(self) -> Option<T> {
        self.shutdown_named("Task::shutdown")
    }

    fn shutdown_named(self, function: &str) -> Option<T> {
        let me = current_arc(function);
        let task = me.vm.table.get(self.pid);
        signal::unlink(&me, task.as_ref(), self.pid);
        if let Some(task) = &task {
            let mut state = task.lock_signals();
            if !task.is_dead(&state) {
                signal::deliver_exit(
                    task,
                    &mut state,
                    me.pid,
                    ExitReason::Kill,
                    ExitKind::Explicit,
                );
            }
        }
        // Wait for the end (the monitor's `Down`), taking a reply that came first (its
        // monitor is then dropped and a queued `Down` flushed).
        match self.wait(function, None) {
            Some(Outcome::Value(reply)) => Some(reply),
            Some(Outcome::Down(_)) | None => None,
        }
    }
}

/// Waits for every task, in order (`Task.await_many/1`); the tasks run concurrently.
///
/// # Panics
///
/// Outside a process (naming `task::join_all`).
pub fn join_all<T: Send + 'static>(tasks: Vec<Task<T>>) -> Vec<Result<T, TaskError>> {
    current("task::join_all");
    tasks.into_iter().map(Task::join).collect()
}
