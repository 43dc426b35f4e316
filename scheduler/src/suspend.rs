//! What a running process asks of its scheduler: park, park with a deadline, yield, and spend
//! reductions.
//!
//! Every function here must be called from inside a process of the runtime whose process type
//! is `P`; outside one they panic (the VM checks first and panics with its own function's name).
//! None of them keeps anything thread-specific across the suspension: the process may come back
//! on another worker.

use std::sync::Arc;
use std::time::Instant;

use crate::context::{self, current_process};
use crate::fiber::Suspend;
use crate::handle::Handle;
use crate::runtime::{Shared, TimerEntry};
use crate::timer::TimerKey;
use crate::worker::WorkerLocal;
use crate::Schedulable;

fn running<P: Schedulable>(function: &str) -> &'static P {
    let process = current_process::<P>()
        .unwrap_or_else(|| panic!("starling_scheduler::{function} called outside a process"));
    // SAFETY: the VM keeps a running process alive until its body returns, and this call is
    // made from that body; the reference is not kept past the call by any caller in this file
    // beyond the process's own lifetime.
    unsafe { process.as_ref() }
}

/// Parks the calling process until someone wakes it ([`crate::Runtime::wake`]). Returns at once
/// if a wake-up arrived since it last ran. Spurious returns are possible: callers re-check their
/// condition in a loop.
pub fn park<P: Schedulable>() {
    let process = running::<P>("park");
    // SAFETY: called on the process's own coroutine (it is the running process).
    unsafe { process.fiber().park_self() };
}

/// Parks the calling process until it is woken or `deadline` passes, whichever is first.
/// Spurious returns are possible, as for [`park`].
///
/// Never inlined: a caller that parks without a deadline as well (the VM's receive loop) would
/// otherwise keep this function's locals in its own frame, which a parked process keeps.
#[inline(never)]
pub fn park_until<P: Schedulable>(deadline: Instant) {
    let process = running::<P>("park_until");
    // The timer is set and cancelled in calls of their own, so that this frame, which the
    // process keeps while parked, holds only what the cancellation needs (a process parked in
    // `receive_timeout` kept 856 bytes, against 568 in `receive`; see `tests/memory.rs`).
    let (shared, index, key) = arm_timer(process, deadline);
    // SAFETY: called on the process's own coroutine.
    unsafe { process.fiber().park_self() };
    // Woken by a message or by the timer: drop the timer if it is still pending.
    disarm_timer(&shared, index, key);
}

/// Sets the timer that wakes the calling process `process` at `deadline`: on its worker's
/// wheel, whose runtime and index it returns with the timer's key.
#[inline(never)]
fn arm_timer<P: Schedulable>(process: &P, deadline: Instant) -> (Arc<Shared<P>>, usize, TimerKey) {
    let current = context::context();
    // SAFETY: we run in a process of a runtime with process type `P` (checked by
    // `current_process`), so the context's worker is that runtime's `WorkerLocal<P>` on this
    // very thread. We copy out what we need before suspending and drop the reference.
    let (shared, index) = {
        // SAFETY: see above: the context's worker is this runtime's `WorkerLocal<P>`.
        let worker = unsafe { &*(current.worker as *const WorkerLocal<P>) };
        (worker.shared.clone(), worker.index)
    };
    // SAFETY: `process` lives inside a `Handle<P>` (the scheduler only runs `Handle<P>`s), which
    // the worker that runs us holds, so bumping the count and rebuilding a `Handle` is sound.
    let owned = unsafe {
        let raw = process as *const P;
        Handle::increment_strong_count(raw);
        Handle::from_raw(raw)
    };
    let generation = process.fiber().next_wait_generation();
    let key =
        shared.workers[index]
            .timers
            .insert(&shared, deadline, TimerEntry::Wake(owned, generation));
    (shared, index, key)
}

/// Cancels the timer [`arm_timer`] set, if it has not fired.
#[inline(never)]
fn disarm_timer<P: Schedulable>(shared: &Shared<P>, index: usize, key: TimerKey) {
    drop(shared.workers[index].timers.cancel(shared, key));
}

/// Lets every other runnable process of this worker run before the caller continues.
pub fn yield_now<P: Schedulable>() {
    let process = running::<P>("yield_now");
    // SAFETY: called on the process's own coroutine.
    unsafe { process.fiber().suspend_self(Suspend::Yield) };
}

/// Spends `reductions` of the caller's slice; if the slice is used up, yields (the process goes
/// to the back of its worker's queue with a fresh slice).
#[inline]
pub fn spend<P: Schedulable>(reductions: u32) {
    let process = running::<P>("spend");
    // SAFETY: `process` is the calling process.
    unsafe { spend_as(process, reductions) }
}

/// [`spend`] for a caller that already holds a reference to the calling process (it saves the
/// context lookup on the VM's hottest path).
///
/// # Safety
///
/// `process` must be the process whose code is calling this function.
#[inline]
pub unsafe fn spend_as<P: Schedulable>(process: &P, reductions: u32) {
    let fiber = process.fiber();
    // SAFETY: the caller guarantees we run on `process`'s own coroutine.
    if unsafe { fiber.spend(reductions.min(i32::MAX as u32) as i32) } {
        // SAFETY: as above.
        unsafe { fiber.suspend_self(Suspend::Yield) };
    }
}

/// Ends the calling process as a stack overflow, now, if fewer than `headroom` bytes of its
/// stack are left below the caller's frame (see `overflow.rs`): as if it had recursed into its
/// guard page, with the same outcome ([`crate::Schedulable::overflowed`]).
///
/// An owner calls this where its process enters code that takes locks other processes need
/// (a VM call): an overflow that struck inside such code would leave the lock held for good,
/// since an overflow discards the frames without running their destructors. Checked at the
/// entry instead, with `headroom` above what that code can use, the overflow happens before
/// any lock is taken.
///
/// `slot_size` is the `Config::slot_size` of the runtime running the process.
///
/// # Safety
///
/// `process` must be the process whose code is calling this function, and `slot_size` its
/// runtime's slot size (a wrong size makes the check read some other address).
#[inline]
pub unsafe fn ensure_stack_headroom_as<P: Schedulable>(
    process: &P,
    slot_size: usize,
    headroom: usize,
) {
    // SAFETY: the caller guarantees we run on `process`'s own coroutine, and the slot size.
    unsafe { process.fiber().ensure_headroom(slot_size, headroom) };
}

/// [`park`] for a caller that already holds a reference to the calling process.
///
/// # Safety
///
/// `process` must be the process whose code is calling this function.
pub unsafe fn park_as<P: Schedulable>(process: &P) {
    // SAFETY: the caller guarantees we run on `process`'s own coroutine.
    unsafe { process.fiber().park_self() };
}
