//! Process-local storage: per-process values, lazily initialised, dropped when the process ends.
//!
//! A process may change OS threads at any VM call, so `thread_local!` state read before and
//! after a VM call can belong to two different threads (see the crate docs). A
//! [`ProcessLocal`] follows its process instead.

use std::any::Any;
use std::cell::UnsafeCell;

use crate::control_block::current;

/// A key for a value that every process has its own copy of. Create it with
/// [`process_local!`](crate::process_local).
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// starling::process_local! { static SEEN: RefCell<u32> = RefCell::new(0); }
///
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// let count = vm.run(|| {
///     SEEN.with(|n| *n.borrow_mut() += 1);
///     SEEN.with(|n| *n.borrow_mut() += 1);
///     let child = starling::spawn(|| SEEN.with(|n| assert_eq!(*n.borrow(), 0)));
///     let _ = child;
///     SEEN.with(|n| *n.borrow())
/// });
/// assert_eq!(count, Ok(2));
/// ```
#[derive(Debug)]
pub struct ProcessLocal<T: Send + 'static> {
    init: fn() -> T,
}

impl<T: Send + 'static> ProcessLocal<T> {
    /// A key whose value starts as `init()` in each process, when first used there.
    pub const fn new(init: fn() -> T) -> ProcessLocal<T> {
        ProcessLocal { init }
    }

    /// Runs `f` with the calling process's value, initialising it first if needed.
    ///
    /// # Panics
    ///
    /// Outside a process (naming `ProcessLocal::with`).
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let process = current("ProcessLocal::with");
        let key = self as *const ProcessLocal<T> as usize;
        let value = match process.locals.get(key) {
            Some(value) => value,
            None => {
                let value: Box<dyn Any + Send> = Box::new((self.init)());
                process.locals.insert(key, value)
            }
        };
        // SAFETY: the value was created for this key as a `T` (keys are the addresses of
        // distinct statics, and each static has one type); it lives in its own heap allocation
        // until the process ends, which cannot happen while its own code runs `f`.
        let value = unsafe { &*(value as *const T) };
        f(value)
    }
}

/// One process-local value: its key and its boxed value.
type Entry = (usize, *mut (dyn Any + Send));

/// The process-local values of one process. Only that process touches them. Boxed on first
/// use: most processes have none and pay one pointer.
#[allow(clippy::box_collection)] // one pointer per process instead of a three-word `Vec`
pub(crate) struct Locals(UnsafeCell<Option<Box<Vec<Entry>>>>);

// SAFETY: only the owning process accesses its `Locals` (from its own coroutine, one thread at a
// time, ordered by the scheduler's handoff); the values are `Send`.
unsafe impl Send for Locals {}
// SAFETY: see `Send`; other processes never touch another process's `Locals`.
unsafe impl Sync for Locals {}

impl Locals {
    pub(crate) fn new() -> Locals {
        Locals(UnsafeCell::new(None))
    }

    /// Owner only: the value stored under `key`.
    fn get(&self, key: usize) -> Option<*const u8> {
        // SAFETY: owner only (see the type); no reference into the Vec outlives this call.
        let entries = unsafe { &*self.0.get() }.as_deref()?;
        entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| *value as *const u8)
    }

    /// Owner only: stores `value` under `key` (absent) and returns its address.
    fn insert(&self, key: usize, value: Box<dyn Any + Send>) -> *const u8 {
        let raw = Box::into_raw(value);
        // SAFETY: owner only; no reference into the Vec is alive (values are reached through
        // their own raw pointers, which moving the Vec does not invalidate).
        unsafe {
            (*self.0.get())
                .get_or_insert_with(Box::default)
                .push((key, raw))
        };
        raw as *const u8
    }

    /// Owner only, at the end of the process: drops every value, newest first.
    /// Owner only (or the last owner of a dead process): takes every value out, to be dropped
    /// by the caller (wherever their destructors are safest to run).
    pub(crate) fn take(&self) -> Locals {
        // SAFETY: owner only; no reference into the Vec is alive.
        Locals(UnsafeCell::new(unsafe { (*self.0.get()).take() }))
    }

    /// Whether no value was ever made (or all were taken).
    pub(crate) fn is_empty(&self) -> bool {
        // SAFETY: owner only; no reference into the Vec outlives this call.
        unsafe { &*self.0.get() }
            .as_deref()
            .is_none_or(|entries| entries.is_empty())
    }

    pub(crate) fn drop_all(&self) {
        loop {
            // SAFETY: owner only; the entry is removed before its value is dropped, so a Drop
            // that uses another process-local sees a consistent Vec.
            let entry = unsafe { (*self.0.get()).as_mut().and_then(|entries| entries.pop()) };
            let Some((_, raw)) = entry else { break };
            // SAFETY: `raw` came from `Box::into_raw` in `insert` and is dropped exactly once.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

impl Drop for Locals {
    fn drop(&mut self) {
        // Most processes never had a process-local: nothing to walk (every recycled control
        // block's spawn drops its husk's empty `Locals`).
        let Some(entries) = self.0.get_mut().take() else {
            return;
        };
        for (_, raw) in *entries {
            // SAFETY: as in `drop_all`; values not dropped by the process are dropped here.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}
