//! Why processes end, and the messages the VM sends about it.

use std::fmt;

use crate::monitor::MonitorRef;
use crate::pid::Pid;

/// Why a process ended (or the reason carried by an exit signal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The process's function returned, or it exited with `Normal`.
    Normal,
    /// An orderly shutdown (a supervisor's or `Task::shutdown`'s).
    Shutdown,
    /// The reason `process::exit(pid, Kill)` sends: cannot be trapped, and the target dies with
    /// [`ExitReason::Killed`]. A process that *ends itself* with `Kill` sends `Kill` along its
    /// links as an ordinary, trappable reason.
    Kill,
    /// The process was killed by an untrappable `Kill` signal (or by the VM shutting down).
    Killed,
    /// The process did not exist (linking to or monitoring a dead pid).
    NoProc,
    /// The process panicked; the panic's message.
    Panic(String),
    /// The process overflowed its stack.
    StackOverflow,
    /// Any other reason, given by the program.
    Custom(String),
}

impl ExitReason {
    /// Returns `true` for `Normal`.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::Panic(message) => write!(f, "panic: {message}"),
            ExitReason::StackOverflow => f.write_str("stack overflow"),
            ExitReason::Custom(reason) => f.write_str(reason),
        }
    }
}

/// The message a process that traps exits receives when a linked process ends (or when
/// someone sends it an exit signal with `process::exit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The process the signal came from.
    pub from: Pid,
    /// Why.
    pub reason: ExitReason,
}

/// The message a monitoring process receives when the monitored process ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The monitor that fired.
    pub monitor: MonitorRef,
    /// The process that ended.
    pub pid: Pid,
    /// Why it ended.
    pub reason: ExitReason,
}

/// What a process is doing, as [`crate::process::info`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Executing on a scheduler.
    Running,
    /// Ready to run, waiting for a scheduler.
    Runnable,
    /// Blocked (in `receive`, `sleep`, ...).
    Waiting,
    /// Ending: its exit is being propagated.
    Exiting,
}
