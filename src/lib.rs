//! Starling: an M:N green-thread VM for Rust in the spirit of Erlang's BEAM.
//!
//! Millions of isolated, lightweight processes, each a Rust closure on its own small stackful
//! coroutine, talk only by messages and are scheduled over one OS thread per core with work
//! stealing. A crash ends one process; the VM goes on.
//!
//! This crate is the facade: it re-exports the VM (`starling-vm`), whose crate docs describe
//! the model, the cost of each VM call and the thread rule; the scheduler's design essay lives
//! in `starling-scheduler`'s crate docs.
//!
//! ```
//! use starling::{receive, self_pid, send, spawn, Vm};
//!
//! let vm = Vm::builder().schedulers(2).build().unwrap();
//! let total = vm.run(|| {
//!     let me = self_pid();
//!     for i in 0..1000u64 {
//!         spawn(move || send(me, i * i));
//!     }
//!     (0..1000).map(|_| receive::<u64>()).sum::<u64>()
//! });
//! assert_eq!(total, Ok(332_833_500));
//! ```

#![warn(missing_docs)]

pub use starling_vm::*;

/// The scheduler crate, for embedders that want its constants and introspection.
pub use starling_scheduler as scheduler;

/// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
