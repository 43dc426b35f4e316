//! Registered names: at most one name per process and one process per name; a name is freed
//! when its process ends.

use std::collections::HashMap;
use std::sync::Mutex;

use starling_scheduler::Handle;

use crate::control_block::Process;
use crate::error::Error;
use crate::pid::Pid;

/// The names of one VM. Lock order: this mutex before any process's signal lock.
#[derive(Default)]
pub(crate) struct Registry {
    names: Mutex<HashMap<String, Pid>>,
}

impl Registry {
    /// Names `process`.
    pub(crate) fn register(&self, name: &str, process: &Handle<Process>) -> Result<(), Error> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = process.lock_signals();
        if !state.accepts_relations(process) {
            return Err(Error::NoProc);
        }
        if state
            .relations()
            .is_some_and(|r| r.registered_name.is_some())
        {
            return Err(Error::AlreadyRegistered);
        }
        if names.contains_key(name) {
            return Err(Error::NameTaken);
        }
        names.insert(name.to_string(), process.pid);
        state.relations_mut().registered_name = Some(name.to_string());
        Ok(())
    }

    /// Removes `name`, returning the pid it named.
    pub(crate) fn unregister(&self, name: &str) -> Option<Pid> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// The pid registered under `name`.
    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// Removes `name` if it still names `pid` (its process ended).
    pub(crate) fn remove_if(&self, name: &str, pid: Pid) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.get(name) == Some(&pid) {
            names.remove(name);
        }
    }
}
