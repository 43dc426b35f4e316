//! Selective receive: take the first message, in mailbox order, that a matcher accepts.
//!
//! All receive functions and the [`receive!`](macro@crate::receive) macro share one loop
//! ([`select`]): move new arrivals into the private queue, scan from where the last scan of this
//! call stopped, and park (with a timer if there is a deadline) when nothing matches. A timeout
//! never fires early: the deadline is compared with the clock after every wake-up.

use std::any::Any;
use std::time::{Duration, Instant};

use crate::control_block::{current, unwind_killed, Process, CALL_COST};
use crate::mailbox::{Matcher, Message, OfType};

/// Reductions charged per this many messages scanned, on top of the call's cost. Guessed: a
/// scan step is a type check and a guard, ~2–5 ns, so 16 of them cost about one cheap VM call.
const SCAN_STEPS_PER_REDUCTION: usize = 16;

/// The shared receive loop. `timeout`: `None` waits forever; `Some(Duration::ZERO)` polls once.
/// Returns `None` on timeout, and also if the process has been killed: every wait calls it
/// through [`select_forever`] or [`select_or_time_out`], which then unwind the process.
///
/// A parked process keeps this function's frame, so it is kept small and fixed:
///
/// - Not inlined, so that its caller's locals and its own are separate frames, and only what
///   the loop keeps across the park stays on the stack (its frames are copied at every
///   eviction). The scan is a separate call ([`attempt`]) for the same reason: its temporaries
///   are not in this frame while the process is parked (for `receive::<M>()` the frame went from
///   144 to 64 bytes); so is the wait with a deadline (`park_until`, never inlined).
/// - Not generic (the matcher answers only yes or no; `receive!`'s matcher notes the clause
///   itself), so that it is compiled once, here. It used to be generic over the matcher's
///   answer, and was then compiled again in every crate that called a receive function, with
///   that crate's inlining: in some builds of a user's program the compiler inlined the timer
///   path into it, and its frame was 376 bytes instead of 40 (a million parked processes: 1,119
///   bytes each instead of 768). `tests/memory.rs` checks every receive form.
///
/// A kill ends the loop instead of unwinding from inside it, so that the unwind starts in the
/// receive function's caller, two frames up. The unwinder's cost is per frame, twice over (it
/// finds the `catch_unwind` at the process's root in one pass, then runs the clean-ups in a
/// second): ending a process parked in `receive` took ~30,800 instructions from inside
/// [`attempt`] and ~22,200 from the caller, so dropping a VM with a million parked processes
/// took a median of 2.76 s instead of 3.88 s (see the README).
#[inline(never)]
fn select(function: &str, matcher: &mut dyn Matcher, timeout: Option<Duration>) -> Option<Message> {
    let process = current(function);
    process.checkpoint(CALL_COST);
    // `None` inside: the deadline is too far to represent, i.e. never.
    let deadline = timeout.map(|timeout| Instant::now().checked_add(timeout));
    let mut scanned = 0;
    loop {
        // `attempt`'s message is returned as is. Held in a local here (to check it against a
        // kill), it made this frame, and so every parked process, 80 bytes larger.
        if let Some(found) = attempt(process, matcher, &mut scanned) {
            return Some(found);
        }
        // Killed since the checkpoint, or while parked (a kill wakes the process).
        if process.must_die() {
            return None;
        }
        match deadline {
            // SAFETY: `process` is the calling process (from `current`).
            None | Some(None) => unsafe { starling_scheduler::park_as(process) },
            Some(Some(deadline)) => {
                if Instant::now() >= deadline {
                    return None;
                }
                starling_scheduler::park_until::<Process>(deadline);
            }
        }
    }
}

/// One look at the mailbox for [`select`]: the first match from position `*scanned` on, or
/// `None` with `*scanned` advanced.
#[inline(never)]
fn attempt(process: &Process, matcher: &mut dyn Matcher, scanned: &mut usize) -> Option<Message> {
    let before = *scanned;
    let found = process.mailbox.take_first(scanned, matcher);
    let steps = (*scanned - before) / SCAN_STEPS_PER_REDUCTION;
    if steps > 0 {
        // SAFETY: `process` is the calling process (`select`'s caller's).
        unsafe { starling_scheduler::spend_as(process, steps as u32) };
    }
    if found.is_some() {
        // A kill that arrived while we scanned ends the process before user code sees a
        // message sent after it (signals are ordered with messages). A race, so it unwinds
        // from here: one frame deeper than a kill seen in `select`.
        process.die_if_killed();
    }
    found
}

/// [`select`] without timeout: the message, or (killed) the unwind, from the caller's frame.
/// Inlined, so that the caller's frame is the receive function's caller's.
#[inline(always)]
fn select_forever(function: &str, matcher: &mut dyn Matcher) -> Message {
    match select(function, matcher, None) {
        Some(message) => message,
        None => killed(function),
    }
}

/// [`select`] with a timeout (or, for Task's waits, perhaps none): the message, or `None` if
/// the wait timed out; a kill unwinds the process from the caller's frame. Inlined, as
/// [`select_forever`].
#[inline(always)]
pub(crate) fn select_or_time_out(
    function: &str,
    matcher: &mut dyn Matcher,
    timeout: Option<Duration>,
) -> Option<Message> {
    let found = select(function, matcher, timeout);
    if found.is_none() {
        killed_or_timed_out(function);
    }
    found
}

/// [`select`] returned `None` to a receive without timeout: the process was killed. Unwinds it
/// from here, one frame above the caller's (see [`select`]).
///
/// # Panics
///
/// If the process was not killed after all (a bug in [`select`]).
#[cold]
#[inline(never)]
fn killed(function: &str) -> ! {
    if current(function).must_die() {
        unwind_killed();
    }
    unreachable!("starling: {function}: the receive loop returned without a message or a kill");
}

/// [`select`] returned `None` to a receive with a timeout: unwinds the process if it was
/// killed; else the wait timed out, and this returns.
#[cold]
#[inline(never)]
fn killed_or_timed_out(function: &str) {
    if current(function).must_die() {
        unwind_killed();
    }
}

fn take<M: Send + 'static>(message: Message) -> M {
    message.take::<M>()
}

/// Receives the first message of type `M` in mailbox order, waiting as long as it takes.
/// Messages of other types stay in the mailbox, in order.
///
/// # Panics
///
/// Outside a process (naming `receive`).
///
/// # Examples
///
/// ```
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// let got = vm.run(|| {
///     let me = starling::self_pid();
///     starling::send(me, "text");
///     starling::send(me, 7u32);
///     (starling::receive::<u32>(), starling::receive::<&str>())
/// });
/// assert_eq!(got, Ok((7, "text")));
/// ```
// Inlined into the caller, always: a process parked in `receive` keeps every frame between its
// body and the switch, and this one was a frame of its own around `select`'s result. Inlined,
// W2's parked processes held 448 bytes of frames instead of 480, and cost 784 bytes each
// instead of 816 (`tests/memory.rs` then: 801 instead of 832). The same holds for the other
// receive functions below.
#[inline(always)]
pub fn receive<M: Send + 'static>() -> M {
    take(select_forever("receive", &mut OfType::<M>::new()))
}

/// Like [`receive`], but gives up after `timeout` and returns `None`. `Duration::ZERO` checks the
/// mailbox once without waiting.
///
/// # Panics
///
/// Outside a process (naming `receive_timeout`).
#[inline(always)]
pub fn receive_timeout<M: Send + 'static>(timeout: Duration) -> Option<M> {
    select_or_time_out("receive_timeout", &mut OfType::<M>::new(), Some(timeout)).map(take)
}

/// Receives the first message of type `M` that `predicate` accepts. The predicate may borrow
/// locals but must not call the VM.
///
/// # Panics
///
/// Outside a process (naming `receive_match`), or if `predicate` calls a receive function.
#[inline(always)]
pub fn receive_match<M: Send + 'static>(mut predicate: impl FnMut(&M) -> bool) -> M {
    take(select_forever(
        "receive_match",
        &mut |m: &(dyn Any + Send)| m.downcast_ref::<M>().is_some_and(&mut predicate),
    ))
}

/// Like [`receive_match`], but gives up after `timeout` and returns `None`.
///
/// # Panics
///
/// As [`receive_match`] (naming `receive_match_timeout`).
#[inline(always)]
pub fn receive_match_timeout<M: Send + 'static>(
    mut predicate: impl FnMut(&M) -> bool,
    timeout: Duration,
) -> Option<M> {
    select_or_time_out(
        "receive_match_timeout",
        &mut |m: &(dyn Any + Send)| m.downcast_ref::<M>().is_some_and(&mut predicate),
        Some(timeout),
    )
    .map(take)
}

/// Support for the [`receive!`](macro@crate::receive) macro; not a public API.
#[doc(hidden)]
pub mod private {
    use super::*;

    /// A message a `receive!` clause accepted.
    #[allow(missing_debug_implementations)]
    pub struct Selected(Message);

    /// Waits for the first message some clause accepts (the matcher notes which), or returns
    /// `None` on timeout. Inlined, like the receive functions: one frame fewer while parked.
    #[inline(always)]
    pub fn receive_clauses<F: FnMut(&(dyn Any + Send)) -> bool>(
        matcher: &mut F,
        timeout: Option<Duration>,
    ) -> Option<Selected> {
        select_or_time_out("receive!", matcher, timeout).map(Selected)
    }

    /// Takes the message out as the type of the clause that accepted it.
    pub fn unbox<M: Send + 'static>(message: Selected) -> M {
        take(message.0)
    }
}
