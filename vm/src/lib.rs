//! Starling's processes: pids, the process table, mailboxes with selective receive, exits,
//! process-local storage and introspection, on top of `starling-scheduler`'s green threads.
//!
//! Use it through the `starling` facade crate, which re-exports everything here.
//!
//! # The model
//!
//! A *process* is a Rust closure running on its own stackful coroutine. Processes share no
//! mutable memory through the VM: a message is an owned `Send + 'static` value moved into the
//! receiver's mailbox. A process ends when its closure returns (reason `Normal`), panics
//! (`Panic(message)`, with a one-line crash report), or calls [`exit`](fn@exit); a crash ends only that
//! process.
//!
//! ```
//! use starling::{receive, self_pid, send, spawn, Vm};
//! use std::time::Duration;
//!
//! #[derive(Debug)]
//! enum Request { Add(i64, i64, starling::Pid), Stop }
//!
//! let vm = Vm::builder().schedulers(2).build().unwrap();
//! let result = vm.run(|| {
//!     let calculator = spawn(|| loop {
//!         match starling::receive::<Request>() {
//!             Request::Add(a, b, from) => send(from, a + b),
//!             Request::Stop => break,
//!         }
//!     });
//!     send(calculator, Request::Add(5, 3, self_pid()));
//!     let sum = receive! {
//!         n: i64 => n,
//!         after Duration::from_secs(5) => -1,
//!     };
//!     send(calculator, Request::Stop);
//!     sum
//! });
//! assert_eq!(result, Ok(8));
//! ```
//!
//! # Design records
//!
//! - Mailbox layout and selective receive: `mailbox.rs` (outer queue under a mutex, inner
//!   queue private to the receiver, BEAM-style).
//! - Process table and pids: `table.rs` (generational entries in segments mapped on use; the
//!   idle pass gives the pages above the highest index in use back, under an entry lock whose
//!   zero state is unlocked and a generation floor that keeps pids unique).
//! - The receive loop: `receive.rs` (one loop for every receive form, neither inlined nor
//!   generic, so the frames a parked process keeps are fixed when this crate is built, not by
//!   the inlining of the crate that calls `receive`).
//! - Growing the VM's vectors (mailbox queues): `grow.rs` (a small full
//!   vector moves to a new buffer instead of `realloc`, whose in-place growth filled glibc's
//!   per-thread caches with odd-sized leftovers; `tests/memory_monitors.rs`).
//! - Links and monitors: `signal.rs` (two locks per link or monitor, hash sets and maps so
//!   that a process watching N others pays O(1), not O(N), as each of them ends; a single link
//!   or monitor is held inline, and the record of them is a block-store `Block`, as is a boxed
//!   message: `tests/memory_relations_burst.rs`).
//! - Stack slots, run queues, stealing, parking, timers and reductions: the docs of
//!   `starling-scheduler`.
//!
//! # What a parked process costs
//!
//! A process parked in a receive keeps its control block (a 256-byte block), its table entry
//! (32 bytes) and the live part of its stack: ~280 bytes for a body that only receives, the
//! VM's frames included (`process::info(pid).memory` reports the block, the stack and the
//! mailbox; `tests/memory.rs` checks it for every receive form). A million processes parked
//! in `receive::<M>()` cost 720–800 bytes each, in `receive_timeout` ~930 (the timer too).
//! Large locals of the process's own body, live across the receive, add to that: they are on
//! its stack while it waits.
//!
//! # What each VM call costs
//!
//! Every VM call spends reductions; after `starling_scheduler::REDUCTIONS_PER_SLICE` (4,000)
//! the process yields at its next VM call, so no process that calls the VM can hold a scheduler.
//!
//! | call | reductions |
//! |------|-----------|
//! | `spawn`, `send`, `self_pid`, `process::*`, any receive (entry) | 1 |
//! | receive: scanning messages | 1 more per 16 messages scanned |
//! | `process::bump_reductions(n)` | n |
//!
//! A spawner's slice also ends once 63 of its new processes wait to run on its scheduler: it
//! yields at its next VM call and runs again after them (`starling-scheduler`'s crate docs
//! say why: memory).
//!
//! # The thread rule
//!
//! A process may resume on another OS thread after **any** VM call. So, in process code:
//!
//! - do not keep a reference to `thread_local!` data, a thread id, or thread-affine state across
//!   a VM call; use [`process_local!`] for per-process state;
//! - never hold a `std::sync::Mutex` guard (or any lock guard) across a VM call: another process
//!   on the same thread may try to take it and deadlock, and the guard may be released on
//!   another thread;
//! - do not block the OS thread for long (`std::thread::sleep`, blocking I/O): the scheduler's
//!   other processes wait. Use `process::sleep` and messages instead.
//!
//! The VM itself finds the current process through a lookup the compiler cannot cache across a
//! switch (see `starling-scheduler`'s `context.rs`).
//!
//! # Panics and unwinding
//!
//! A panic inside a process is caught at the process boundary; it never crosses the coroutine
//! boundary into the scheduler. [`exit`](fn@exit) and kills unwind the process's stack with a private
//! payload, running destructors; catching it with `catch_unwind` only delays the end until the
//! next VM call.
//!
//! A destructor may call the VM while its process unwinds (send, receive, sleep), but the
//! process keeps its OS thread until the unwinding ends: Rust's panic state belongs to the
//! thread, and another process run there meanwhile would see `std::thread::panicking()`. Its
//! waits block the thread (the watchdog hands the thread's other processes to a spare after the
//! long-schedule threshold) and its yields wait for the unwinding's end. So on a VM with one
//! scheduler and `spare_threads(0)`, a destructor that waits, while unwinding, for a reply from
//! another process waits in vain: nothing else runs on that thread meanwhile.
//!
//! A destructor that panics while its process unwinds (a panic, [`exit`](fn@exit) or a kill)
//! aborts the whole program: Rust lets no panic escape a destructor during unwinding, and no
//! runtime can catch that. A destructor that may panic should check `std::thread::panicking()`.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, missing_debug_implementations)]
#![doc(test(attr(deny(warnings))))]

mod blocking;
mod control_block;
mod crash;
mod envelope;
mod error;
mod exit;
mod grow;
mod kernel;
mod local;
mod mailbox;
mod monitor;
mod pid;
pub mod process;
mod receive;
mod registry;
#[cfg(test)]
mod resident;
mod signal;
mod table;
pub mod task;
mod vm;

pub use blocking::{blocking, LongSchedule};
pub use error::Error;
pub use exit::{Down, Exit, ExitReason, Status};
pub use kernel::{exit, self_pid, send, spawn, spawn_link, spawn_monitor, try_spawn};
pub use local::ProcessLocal;
pub use monitor::{MonitorRef, TimerRef};
pub use pid::Pid;
pub use process::ProcessInfo;
pub use receive::{receive, receive_match, receive_match_timeout, receive_timeout};
pub use task::{Task, TaskError};
pub use vm::{Builder, Vm, DEFAULT_MAX_PROCESSES};

#[doc(hidden)]
pub use receive::private as __private;

/// Declares process-local values: each process that uses one gets its own, lazily initialised
/// copy, dropped when the process ends.
///
/// ```
/// use std::cell::RefCell;
/// starling::process_local! {
///     static SEEN: RefCell<u32> = RefCell::new(0);
/// }
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// assert_eq!(vm.run(|| { SEEN.with(|n| *n.borrow_mut() += 1); SEEN.with(|n| *n.borrow()) }), Ok(1));
/// ```
#[macro_export]
macro_rules! process_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])*
        $vis static $name: $crate::ProcessLocal<$t> = $crate::ProcessLocal::new({
            fn __starling_init() -> $t {
                $init
            }
            __starling_init
        });
        $crate::process_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr) => {
        $crate::process_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
}

/// Receives the first message, in mailbox order, that matches one of several typed clauses.
///
/// ```
/// use starling::receive;
/// use std::time::Duration;
///
/// #[derive(Debug, PartialEq)]
/// enum Tag { A, B }
///
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// let got = vm.run(|| {
///     let me = starling::self_pid();
///     starling::send(me, (Tag::B, 1));
///     starling::send(me, (Tag::A, -3));
///     starling::send(me, (Tag::A, 5));
///     let first = receive! {
///         (Tag::A, n): (Tag, i32) if *n > 0 => n,
///         s: String => s.len() as i32,
///         after Duration::from_millis(100) => -1,
///     };
///     let none = receive! {
///         s: String => s.len() as i32,
///         after Duration::ZERO => -1,
///     };
///     (first, none)
/// });
/// assert_eq!(got, Ok((5, -1)));
/// ```
///
/// Each clause is `PATTERN: TYPE [if GUARD] => BODY`. A message matches a clause only if its
/// type is exactly `TYPE` and `PATTERN` matches it (and `GUARD`, which sees the bindings by
/// reference, holds). The mailbox is scanned oldest first; for each message the clauses are
/// tried in order. The first match is removed and its `BODY` runs with the bindings by value;
/// every other message stays in place. An optional last clause `after DURATION => BODY` runs if
/// nothing matched in time (`Duration::ZERO` polls once); without it the macro waits forever.
/// `break`, `continue`, `return` and `?` in a body act on the code around the macro. A pattern
/// has no top-level `:` and no `mut`/`ref` binding modifiers; guards must not call the VM.
/// A clause without its type does not compile, and the error names the clause:
///
/// ```compile_fail
/// # let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// // error: receive!: the clause `n => ...` names no message type; write `PATTERN: TYPE => BODY`
/// let got = vm.run(|| starling::receive! { n => n + 1 });
/// ```
///
/// # Panics
///
/// Outside a process.
#[macro_export]
macro_rules! receive {
    ($($tokens:tt)+) => {
        $crate::__receive_parse!(@clauses [] @pattern [] $($tokens)+)
    };
}

/// Parses `receive!` clauses (a token muncher); not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __receive_parse {
    // Rules are ordered most specific first: each accumulator would also swallow the markers
    // (`@type`, `@guard`, `@body`) of the states after it.

    // The body is one expression, followed by `,` unless it is the last clause.
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)+] @guard [$($guard:tt)+] @body => $body:expr , $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)* {[$($pattern)+] [$($type)+] [$($guard)+] ($body)}] @pattern [] $($rest)*)
    };
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)+] @guard [$($guard:tt)+] @body => $body:expr) => {
        $crate::__receive_emit!([$($clauses)* {[$($pattern)+] [$($type)+] [$($guard)+] ($body)}] [])
    };
    // The guard ends at `=>`.
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)+] @guard [$($guard:tt)+] => $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)+] @type [$($type)+] @guard [$($guard)+] @body => $($rest)*)
    };
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)+] @guard [$($guard:tt)*] $token:tt $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)+] @type [$($type)+] @guard [$($guard)* $token] $($rest)*)
    };
    // The type ends at `if` (a guard follows) or `=>`.
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)+] if $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)+] @type [$($type)+] @guard [] $($rest)*)
    };
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)+] => $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)+] @type [$($type)+] @guard [true] @body => $($rest)*)
    };
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] @type [$($type:tt)*] $token:tt $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)+] @type [$($type)* $token] $($rest)*)
    };
    // `after:` starts a pattern that binds a variable named `after`.
    (@clauses [$($clauses:tt)*] @pattern [] after : $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [after] : $($rest)*)
    };
    // The `after` clause, last.
    (@clauses [$($clauses:tt)*] @pattern [] after $timeout:expr => $body:expr $(,)?) => {
        $crate::__receive_emit!([$($clauses)*] [($timeout) ($body)])
    };
    // End of the clauses, no `after`.
    (@clauses [$($clauses:tt)*] @pattern []) => {
        $crate::__receive_emit!([$($clauses)*] [])
    };
    // A clause that reaches `=>` without a `:` has no type: say so, rather than let the
    // muncher run out of rules with "unexpected end of macro invocation".
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] => $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "receive!: the clause `",
            ::core::stringify!($($pattern)+),
            " => ...` names no message type; write `PATTERN: TYPE => BODY`, e.g. `n: u32 => n`"
        ))
    };
    // The pattern ends at the first top-level `:`.
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)+] : $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)+] @type [] $($rest)*)
    };
    (@clauses [$($clauses:tt)*] @pattern [$($pattern:tt)*] $token:tt $($rest:tt)*) => {
        $crate::__receive_parse!(@clauses [$($clauses)*] @pattern [$($pattern)* $token] $($rest)*)
    };
}

/// Expands parsed `receive!` clauses; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __receive_emit {
    ([$({[$($pattern:tt)+] [$($type:tt)+] [$($guard:tt)+] ($body:expr)})+] [$(($timeout:expr) ($after:expr))?]) => {{
        // The clause that accepted the message; written by the matcher, which returns only
        // whether it accepts (so that the receive loop is not generic, see `receive.rs`).
        let mut __starling_index: usize = 0;
        let __starling_selected = $crate::__private::receive_clauses(
            &mut |__starling_message: &(dyn ::core::any::Any + ::core::marker::Send)| {
                let mut __starling_clause: usize = 0;
                $(
                    if let ::core::option::Option::Some(__starling_value) =
                        __starling_message.downcast_ref::<$($type)+>()
                    {
                        #[allow(unused_variables)]
                        let __starling_hit = match __starling_value {
                            $($pattern)+ if $($guard)+ => true,
                            _ => false,
                        };
                        if __starling_hit {
                            __starling_index = __starling_clause;
                            return true;
                        }
                    }
                    __starling_clause += 1;
                )+
                let _ = __starling_clause;
                false
            },
            $crate::__receive_timeout!($($timeout)?),
        );
        match __starling_selected {
            ::core::option::Option::Some(__starling_message) => {
                $crate::__receive_chain!(__starling_index, __starling_message, 0usize,
                    $({[$($pattern)+] [$($type)+] ($body)})+)
            }
            ::core::option::Option::None => $crate::__receive_after!($($after)?),
        }
    }};
}

/// The timeout argument of a `receive!` expansion; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __receive_timeout {
    () => {
        ::core::option::Option::None
    };
    ($timeout:expr) => {
        ::core::option::Option::Some($timeout)
    };
}

/// The `after` body of a `receive!` expansion; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __receive_after {
    () => {
        ::core::unreachable!("receive! without `after` returned without a message")
    };
    ($after:expr) => {
        $after
    };
}

/// Runs the body of the clause that matched, as an `if` chain so that `break`, `continue`,
/// `return` and `?` in bodies act on the surrounding code; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __receive_chain {
    ($index:ident, $message:ident, $position:expr, {[$($pattern:tt)+] [$($type:tt)+] ($body:expr)} $($rest:tt)*) => {
        if $index == $position {
            match $crate::__private::unbox::<$($type)+>($message) {
                $($pattern)+ => $body,
                #[allow(unreachable_patterns)]
                _ => ::core::unreachable!("receive! clause matched, then did not"),
            }
        } else {
            $crate::__receive_chain!($index, $message, $position + 1usize, $($rest)*)
        }
    };
    ($index:ident, $message:ident, $position:expr,) => {
        ::core::unreachable!("receive! clause index out of range")
    };
}
