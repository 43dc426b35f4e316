//! A process body waiting for its first run: stored inline in the fiber when small.
//!
//! # Problem
//!
//! A fiber's coroutine can only be created once its home slot is resident (corosensei writes
//! the body into the stack at creation), so the body must wait somewhere typed-erased between
//! the spawn and the first run. A `Box<dyn FnOnce()>` costs an allocation per spawn, and calling
//! it from inside the coroutine adds a vtable-shim frame to every parked process's stack, which
//! is copied at every eviction.
//!
//! # Solution
//!
//! An [`Entry`] keeps a body of up to four words inline (most closures capture a pid and a
//! value or two, e.g. skynet's parent, level and number; larger ones are boxed) with a `start`
//! function monomorphized for the body's type. `start` creates the coroutine on the concrete
//! closure type, so the body is called directly.
//!
//! # Invariants
//!
//! 1. `storage` holds a valid, owned body (inline or as a `Box`'s pointer, per the `start` and
//!    `drop` functions of the vtable chosen for its type) until `start` or `drop` consumes it,
//!    exactly once.

use std::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};

use corosensei::Coroutine;

use crate::fiber::{FiberCoroutine, FiberYielder, YIELDER_BELOW_BASE};
use crate::slot::SlotStack;

type Storage = MaybeUninit<[usize; 4]>;

/// A type-erased `FnOnce() + Send + 'static` that has not started yet.
pub(crate) struct Entry {
    storage: Storage,
    /// The functions for the stored body's type. One pointer, not two: an `Entry` is then as
    /// large as a started coroutine, so the fiber's body enum costs no more than either (the
    /// control block is most of what a parked process costs).
    vtable: &'static EntryVTable,
}

/// What an [`Entry`] can do with its body, monomorphized per body type.
struct EntryVTable {
    /// Creates the coroutine that runs the body; the coroutine moves the body out of the given
    /// storage when it first runs.
    start: unsafe fn(*mut Storage, SlotStack) -> FiberCoroutine,
    /// Drops a body that never started.
    drop: unsafe fn(*mut Storage),
}

/// Holds the [`EntryVTable`] of body type `F` as an associated constant, so that a reference
/// to it is promoted to a `'static`.
struct VTableOf<F>(std::marker::PhantomData<F>);

impl<F: FnOnce() + Send + 'static> VTableOf<F> {
    const VTABLE: EntryVTable = EntryVTable {
        start: start::<F>,
        drop: drop_body::<F>,
    };
}

// SAFETY: invariant 1; the stored body is `Send`.
unsafe impl Send for Entry {}

fn fits_inline<F>() -> bool {
    size_of::<F>() <= size_of::<Storage>() && align_of::<F>() <= align_of::<Storage>()
}

/// Moves the body out of `storage` and runs it.
///
/// # Safety
/// `storage` holds an owned body of type `F`, stored as `fits_inline::<F>()` says; it is moved
/// out and must not be used again.
#[inline(always)]
unsafe fn run_body<F: FnOnce() + Send + 'static>(storage: *mut Storage) {
    if fits_inline::<F>() {
        // SAFETY: the caller guarantees an owned inline `F`, read once.
        let body = unsafe { std::ptr::read(storage as *const F) };
        body()
    } else {
        // SAFETY: the caller guarantees the storage holds a pointer from `Box::into_raw`.
        let body = unsafe { Box::from_raw(*(storage as *const *mut F)) };
        body()
    }
}

/// The coroutine does not carry the body: corosensei writes a coroutine's closure at the top
/// of its stack, where it stays, dead once called, inside the live range that every eviction
/// copies and every parked process keeps. The closure holds only the storage's address (and
/// the stack's base, to check where the yielder is), and the body is moved out of the storage
/// when the coroutine first runs, into the frame that calls it. (W2: 16 bytes fewer at the top
/// of each parked process's frames, 752 bytes per process instead of 784.)
///
/// # Safety
/// As [`run_body`]; the storage must stay valid and unmoved until the coroutine's first resume has
/// begun (the caller resumes it at once).
unsafe fn start<F: FnOnce() + Send + 'static>(
    storage: *mut Storage,
    stack: SlotStack,
) -> FiberCoroutine {
    let storage = storage as usize;
    let base = corosensei::stack::Stack::base(&stack).get();
    Coroutine::with_stack(stack, move |yielder, ()| {
        check_yielder_place(yielder, base);
        // SAFETY: the first thing the coroutine does, during its first resume, while the
        // caller keeps the storage alive: the body is owned there and moved out once
        // (invariant 1).
        unsafe { run_body::<F>(storage as *mut Storage) }
    })
}

/// Aborts the program unless the coroutine's yielder is where `Fiber::suspend_self` looks for
/// it, [`YIELDER_BELOW_BASE`] bytes below its stack's base: a fiber keeps no pointer to
/// its yielder (the control block is most of what a parked process costs), so a corosensei
/// that placed it elsewhere would make every suspension switch through a wrong address. Not
/// generic, so the check is compiled once.
#[inline(never)]
fn check_yielder_place(yielder: &FiberYielder, base: usize) {
    let found = yielder as *const FiberYielder as usize;
    if found != base - YIELDER_BELOW_BASE {
        eprintln!(
            "starling: corosensei's yielder is {} bytes below the stack's base, not {}; \
             this corosensei version is not supported",
            base.wrapping_sub(found),
            YIELDER_BELOW_BASE
        );
        std::process::abort();
    }
}

/// # Safety
/// As [`run_body`]: the body is dropped instead of run.
unsafe fn drop_body<F: FnOnce() + Send + 'static>(storage: *mut Storage) {
    if fits_inline::<F>() {
        // SAFETY: the caller guarantees an owned inline `F`, dropped once.
        unsafe { std::ptr::drop_in_place(storage as *mut F) };
    } else {
        // SAFETY: the caller guarantees the storage holds a pointer from `Box::into_raw`.
        drop(unsafe { Box::from_raw(*(storage as *const *mut F)) });
    }
}

impl Entry {
    /// Stores `body` (inline if it fits in four words).
    pub(crate) fn new<F: FnOnce() + Send + 'static>(body: F) -> Entry {
        let mut storage = Storage::uninit();
        if fits_inline::<F>() {
            // SAFETY: `F` fits the storage's size and alignment.
            unsafe { (storage.as_mut_ptr() as *mut F).write(body) };
        } else {
            let raw = Box::into_raw(Box::new(body));
            // SAFETY: the storage has room for a pointer.
            unsafe { (storage.as_mut_ptr() as *mut *mut F).write(raw) };
        }
        Entry {
            storage,
            vtable: &VTableOf::<F>::VTABLE,
        }
    }

    /// Creates the coroutine running the body on `stack`. The body stays in `this` until the
    /// coroutine's first resume moves it out; `this` is then empty and must not be dropped
    /// (hence `ManuallyDrop`).
    ///
    /// # Safety
    ///
    /// `stack` must be resident for the coroutine (slot invariant 3); `this` must stay where
    /// it is, alive, until the caller has begun the coroutine's first resume, which it must do
    /// before anything else happens to the coroutine (a coroutine dropped before it ever ran
    /// would leave the body in `this`, and `this` is never dropped).
    pub(crate) unsafe fn start(this: &mut ManuallyDrop<Entry>, stack: SlotStack) -> FiberCoroutine {
        // SAFETY: invariant 1: the body is consumed once, by the coroutine; `ManuallyDrop`
        // keeps `Drop` from consuming it again. The caller guarantees the rest.
        unsafe { (this.vtable.start)(&mut this.storage, stack) }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: invariant 1: a body that never started is dropped here, once.
        unsafe { (self.vtable.drop)(&mut self.storage) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn unstarted_bodies_are_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let small = Guard(drops.clone());
        drop(Entry::new(move || drop(small)));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let big = (Guard(drops.clone()), [0u64; 8]);
        drop(Entry::new(move || drop(big)));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }
}
