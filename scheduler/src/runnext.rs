//! The runnext slot: one process that runs next on its worker, stealable when the worker is stuck.
//!
//! # Problem
//!
//! A process woken by a process running on a worker should run next on that worker (a ping-pong
//! pair then never leaves its core). But if the waker then runs for a long time without calling
//! the VM, the woken process must not wait behind it: a spare worker must be able to take it.
//!
//! # Solution
//!
//! One atomic pointer holding a `Handle<P>` turned into a raw pointer (Go's `runnext` is likewise
//! an atomic `guintptr`). Only the owner puts: a plain store into an empty slot (a thief only
//! ever empties it), else a `swap`. The owner and thieves take with `swap`; a thief only does so
//! for a worker the watchdog flagged as stuck. Every transfer out is one atomic exchange, so each
//! `Handle` is owned by exactly one side at a time.

use crate::handle::Handle;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A slot holding at most one `Handle<P>`.
pub(crate) struct RunNext<P> {
    /// Null, or a pointer from `Handle::into_raw` that this slot owns.
    slot: AtomicPtr<P>,
}

impl<P> RunNext<P> {
    pub(crate) fn new() -> RunNext<P> {
        RunNext {
            slot: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Puts `process` in the slot; returns the process it displaced.
    pub(crate) fn put(&self, process: Handle<P>) -> Option<Handle<P>> {
        let raw = Handle::into_raw(process) as *mut P;
        // Only the owner puts, and a thief only ever empties the slot: if it is empty now, it
        // stays empty until our store, which then needs no read-modify-write.
        if self.slot.load(Ordering::Relaxed).is_null() {
            // Release: as for the swap below.
            self.slot.store(raw, Ordering::Release);
            return None;
        }
        // AcqRel: Release publishes the process to a thief's Acquire swap in `take`; Acquire
        // takes ownership of a displaced pointer that another thread may have put.
        let previous = self.slot.swap(raw, Ordering::AcqRel);
        // SAFETY: a non-null pointer in the slot came from `Handle::into_raw` and the swap made us
        // its only owner.
        (!previous.is_null()).then(|| unsafe { Handle::from_raw(previous) })
    }

    /// Takes the process out of the slot, if any (owner or thief).
    pub(crate) fn take(&self) -> Option<Handle<P>> {
        if self.slot.load(Ordering::Relaxed).is_null() {
            return None;
        }
        // AcqRel: Acquire pairs with the Release in `put`, so the process's state written
        // before it was put is visible; Release keeps the swap ordered for the next `put`.
        let previous = self.slot.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: as in `put`.
        (!previous.is_null()).then(|| unsafe { Handle::from_raw(previous) })
    }
}

impl<P> Drop for RunNext<P> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

// SAFETY: the slot only transfers `Handle<P>`s between threads, which is sound when `Handle<P>` is
// `Send` (`P: Send + Sync`).
unsafe impl<P: Send + Sync> Send for RunNext<P> {}
// SAFETY: all access is through atomic swaps; see `Send`.
unsafe impl<P: Send + Sync> Sync for RunNext<P> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn put_take_displace() {
        let slot = RunNext::new();
        assert!(slot.take().is_none());
        assert!(slot.put(Handle::new(1)).is_none());
        assert_eq!(slot.put(Handle::new(2)).as_deref(), Some(&1));
        assert_eq!(slot.take().as_deref(), Some(&2));
        assert!(slot.take().is_none());
    }

    #[test]
    fn drop_releases_the_process() {
        let process = Handle::new(7);
        let slot = RunNext::new();
        slot.put(process.clone());
        assert_eq!(Handle::strong_count(&process), 2);
        drop(slot);
        assert_eq!(Handle::strong_count(&process), 1);
    }

    #[test]
    fn stampede_transfers_each_process_exactly_once() {
        // One owner puts and takes; three thieves take. Every process put must come out exactly
        // once: displaced by a put, taken by the owner or a thief, or left at the end.
        const PUTS: usize = 200_000;
        let slot = Arc::new(RunNext::new());
        let out = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thieves: Vec<_> = (0..3)
            .map(|_| {
                let slot = slot.clone();
                let out = out.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        if slot.take().is_some() {
                            out.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for i in 0..PUTS {
            if slot.put(Handle::new(i)).is_some() {
                out.fetch_add(1, Ordering::Relaxed);
            }
            if i % 3 == 0 && slot.take().is_some() {
                out.fetch_add(1, Ordering::Relaxed);
            }
        }
        done.store(true, Ordering::Release);
        for thief in thieves {
            thief.join().unwrap();
        }
        let left = usize::from(slot.take().is_some());
        assert_eq!(out.load(Ordering::Relaxed) + left, PUTS);
    }
}
