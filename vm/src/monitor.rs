//! Monitor and timer references.

use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one monitor (the value in [`crate::Down::monitor`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct MonitorRef(pub(crate) u64);

/// Identifies one timer started by [`crate::process::send_after`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerRef(pub(crate) u64);

/// Source of unique references for one VM.
#[derive(Debug, Default)]
pub(crate) struct References(AtomicU64);

impl References {
    pub(crate) fn next(&self) -> u64 {
        // Relaxed: uniqueness needs only atomicity.
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}
