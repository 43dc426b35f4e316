//! Errors of VM operations.

use std::fmt;

/// An operation the VM refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The process limit (`max_processes`) was reached.
    SystemLimit,
    /// `register`: the name is already taken by another process.
    NameTaken,
    /// `register`: the process already has a name.
    AlreadyRegistered,
    /// The process does not exist.
    NoProc,
    /// A builder value is out of range; the message names it.
    InvalidConfig(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SystemLimit => f.write_str("system limit: too many processes (max_processes)"),
            Error::NameTaken => f.write_str("name is already registered to another process"),
            Error::AlreadyRegistered => f.write_str("process already has a registered name"),
            Error::NoProc => f.write_str("no such process"),
            Error::InvalidConfig(message) => write!(f, "invalid VM configuration: {message}"),
        }
    }
}

impl std::error::Error for Error {}
