//! Crash reports: one line on standard error, naming the pid, when a process panics.
//!
//! A process-wide panic hook is installed once (the first time a VM is built). It wraps the hook
//! that was there before: a panic inside a Starling process prints
//! `starling: process <0.12.1> panicked at src/lib.rs:10:5: message` (unless its VM was built
//! with `crash_reports(false)`); any other panic goes to the previous hook unchanged.

use std::sync::Once;

use crate::control_block::Process;

pub(crate) fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let Some(process) = starling_scheduler::current_process::<Process>() else {
                return previous(info);
            };
            // SAFETY: the hook runs on the panicking process's own coroutine, which the worker
            // running it keeps alive (see `control_block::current`).
            let process = unsafe { process.as_ref() };
            if !process.vm.crash_reports {
                return;
            }
            let message = crate::control_block::panic_message(info.payload());
            match info.location() {
                Some(location) => eprintln!(
                    "starling: process {} panicked at {location}: {message}",
                    process.pid
                ),
                None => eprintln!("starling: process {} panicked: {message}", process.pid),
            }
        }));
    });
}
