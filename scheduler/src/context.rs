//! The current thread's scheduler context, read so that it stays right when a process migrates.
//!
//! # Problem
//!
//! A process that suspends on worker A and resumes on worker B still sees A's thread-local
//! addresses if the thread-local access sits in the same function around the switch: LLVM
//! treats the thread pointer as constant within a function and caches the address across the
//! call to `suspend` (DESIGN.md measured this in a release build, even through an
//! `#[inline(never)]` helper that got merged).
//!
//! # Solution
//!
//! The context lives in one `thread_local!`, but it is only ever read or written through
//! functions called via an opaque function pointer (`std::hint::black_box`), which the optimizer
//! can neither inline nor hoist out of a loop: every read recomputes the thread pointer on the
//! thread it actually runs on. Nothing derived from a worker (its local queue, its index) may be
//! kept by a process across a VM call; everything is fetched again through [`context`].
//! The cost is one indirect call, ~1–2 ns.
//!
//! # Rejected alternatives
//!
//! - *Masking the stack pointer* to find a header in a size-aligned slot: works only while on a
//!   slot, and several VMs' regions would need a global registry to tell the cases apart.
//! - *Passing a context argument* to every VM call: the API (Erlang-style free functions) is
//!   fixed.

use std::any::TypeId;
use std::cell::Cell;
use std::ptr::NonNull;

use crate::fiber::Fiber;

/// What the current OS thread is doing for a runtime.
#[derive(Clone, Copy)]
pub(crate) struct Context {
    /// Address of the runtime's shared state this thread works for; 0 if none.
    pub(crate) runtime: usize,
    /// Type of the runtime's processes (guards the type-erased pointers below).
    pub(crate) process_type: Option<TypeId>,
    /// The worker's `WorkerLocal<P>`, type-erased; null if not a worker.
    pub(crate) worker: *const (),
    /// The running process `P` (inside a `Handle`), type-erased; null in the worker's own loop.
    pub(crate) process: *const (),
    /// The running process's fiber; null in the worker's own loop.
    pub(crate) fiber: *const Fiber,
}

impl Context {
    const EMPTY: Context = Context {
        runtime: 0,
        process_type: None,
        worker: std::ptr::null(),
        process: std::ptr::null(),
        fiber: std::ptr::null(),
    };
}

thread_local! {
    static CONTEXT: Cell<Context> = const { Cell::new(Context::EMPTY) };
}

#[inline(never)]
fn read_context() -> Context {
    CONTEXT.with(Cell::get)
}

#[inline(never)]
fn write_context(context: Context) {
    CONTEXT.with(|cell| cell.set(context));
}

/// Reads the current thread's context through an opaque call (see the module docs).
#[inline]
pub(crate) fn context() -> Context {
    let read: fn() -> Context = std::hint::black_box(read_context);
    read()
}

/// Replaces the current thread's context through an opaque call.
#[inline]
pub(crate) fn set_context(context: Context) {
    let write: fn(Context) = std::hint::black_box(write_context);
    write(context)
}

/// Clears the context (a worker thread ending).
pub(crate) fn clear_context() {
    set_context(Context::EMPTY)
}

/// The fiber running on this thread, or null. Async-signal-safe (a static thread-local read),
/// for the overflow handler.
pub(crate) fn current_fiber() -> *const Fiber {
    let read: fn() -> Context = std::hint::black_box(read_context);
    read().fiber
}

/// The running process of any type, or null.
#[inline(never)]
fn read_process() -> *const () {
    CONTEXT.with(|cell| cell.get().process)
}

/// The running process if it is a `P`, else null: one pointer, returned in a register (the
/// type check happens here, once per process type, instead of in every caller).
#[inline(never)]
fn read_process_of<P: 'static>() -> *const () {
    CONTEXT.with(|cell| {
        let current = cell.get();
        if current.process_type == Some(TypeId::of::<P>()) {
            current.process
        } else {
            std::ptr::null()
        }
    })
}

/// The current thread's worker if it works for the runtime at `runtime`, else null.
#[inline(never)]
fn read_worker_of(runtime: usize) -> *const () {
    CONTEXT.with(|cell| {
        let current = cell.get();
        if current.runtime == runtime {
            current.worker
        } else {
            std::ptr::null()
        }
    })
}

/// The current thread's worker (type-erased `WorkerLocal`) if it works for the runtime whose
/// shared state is at `runtime`; null otherwise. Through an opaque call, like every read.
#[inline]
pub(crate) fn worker_of(runtime: usize) -> *const () {
    let read: fn(usize) -> *const () = std::hint::black_box(read_worker_of);
    read(runtime)
}

/// Sets the running process and its fiber on this worker thread (nulls when the worker is back
/// in its loop).
///
/// A direct thread-local access, unlike every read: only a worker's loop calls this, and the
/// loop never runs on a coroutine (it resumes them), so its thread never changes under it and a
/// cached thread-local address stays right. Saves an indirect call on every switch.
#[inline]
pub(crate) fn set_process(process: *const (), fiber: *const Fiber) {
    CONTEXT.with(|cell| {
        let mut current = cell.get();
        current.process = process;
        current.fiber = fiber;
        cell.set(current);
    });
}

/// The process of type `P` running on this thread, if any.
///
/// Returns a raw pointer because the scheduler does not know how long the process lives; the
/// VM keeps every process alive until its body has returned, so it may turn the pointer into a
/// reference for the duration of one VM call. The pointer addresses the `P` inside a `Handle<P>`.
///
/// Re-read it after every call that may suspend: the process may have moved to another worker.
#[inline]
pub fn current_process<P: 'static>() -> Option<NonNull<P>> {
    let read: fn() -> *const () = std::hint::black_box(read_process_of::<P>);
    NonNull::new(read() as *mut P)
}

/// Returns `true` if the calling code runs inside a process (on a fiber) of any runtime.
pub fn in_process() -> bool {
    let read: fn() -> *const () = std::hint::black_box(read_process);
    !read().is_null()
}
