//! Runs one workload in this OS process, on the runtime its parameters name.

pub mod starling;
pub mod threads;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::measurement::ChildOutcome;
use crate::cli::workload::{Params, Runtime};

/// Runs the workload here and now. `Err` carries a message for a run that could not start
/// (a VM that failed to build, a root process that did not return).
pub fn run(params: Params) -> Result<ChildOutcome, String> {
    match params.runtime {
        Runtime::Starling => starling::run(params).map(ChildOutcome::Completed),
        Runtime::Threads => Ok(match threads::run(params) {
            Ok(measurement) => ChildOutcome::Completed(measurement),
            Err(refusal) => ChildOutcome::Refused(refusal),
        }),
    }
}

/// W6's spinner: pure computation that never calls the VM or blocks, until `stop` is set.
pub fn spin(stop: &AtomicBool) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while !stop.load(Ordering::Relaxed) {
        // A xorshift step keeps the loop busy with work the optimiser cannot remove.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::hint::black_box(state);
    }
}
