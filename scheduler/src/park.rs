//! Parks and unparks one worker thread.
//!
//! A `Parker` is a one-token semaphore: `unpark` leaves a token, `park` consumes it or sleeps
//! until one arrives (or a timeout passes). A token left by an unpark that raced with a wake-up
//! that did not need it only causes one spurious return, which every caller tolerates.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Sleep/wake primitive of one worker.
#[derive(Default)]
pub(crate) struct Parker {
    /// `true` when an unpark token is waiting. Under this mutex.
    token: Mutex<bool>,
    condvar: Condvar,
}

impl Parker {
    /// Sleeps until a token arrives or `deadline` passes; consumes the token.
    pub(crate) fn park(&self, deadline: Option<Instant>) {
        let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        while !*token {
            match deadline {
                None => token = self.condvar.wait(token).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    token = self
                        .condvar
                        .wait_timeout(token, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        *token = false;
    }

    /// Leaves a token and wakes the worker if it sleeps.
    pub(crate) fn unpark(&self) {
        let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        *token = true;
        drop(token);
        self.condvar.notify_one();
    }
}
