//! `Handle<P>`: the counted reference through which the runtime and the VM hold a process; and
//! `Block<T>`, an owned value in the same block store (see [`Block`]).
//!
//! # Problem
//!
//! A process control block is a few hundred bytes, and a million live processes are a million
//! of them. From glibc's malloc they cost more than their bytes: a worker thread's arena grows
//! its heap one `mprotect` at a time, and every new page of it is then faulted in one at a time
//! (DESIGN.md: ≥ 1.8 µs a fault; measured here with one thread writing one byte per page of a
//! fresh 850 MiB mapping: 2.1–2.9 s, ~10 µs a page, against 0.43–0.45 s for the same bytes
//! mapped with `MAP_POPULATE` in 4 MiB chunks). With the blocks in glibc, `sysmalloc`'s
//! `mprotect`s and page faults were over a third of W2's spawn phase (perf, 1 scheduler).
//!
//! # Solution
//!
//! A `Handle<P>` is `Arc<P>`'s protocol (one atomic strong count, no weak count, the same
//! orderings) on memory from the block store in `frames.rs`, which carves size classes out of
//! populated chunks and gives wholly free pages back to the OS when workers idle. Its API
//! mirrors the parts of `Arc` the runtime uses, so it reads like one.
//!
//! # Invariants
//!
//! 1. `count` is the number of `Handle`s (and raw pointers from [`Handle::into_raw`]) that
//!    refer to the block; the block is dropped and freed exactly once, by whoever takes it from
//!    1 to 0.
//! 2. The block's memory comes from [`crate::frames::allocate_block`] with the layout of
//!    `Inner<P>`, and goes back through [`crate::frames::free_block`] with the same layout.
//!
//! # Rejected alternatives
//!
//! - *`Arc<P>` with a custom allocator*: `Arc::new_in` is unstable.
//! - *A global allocator*: a library must not choose its embedder's allocator.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

use crate::frames;

/// The most references a block may have; like `Arc`, a count beyond it (only reachable by
/// leaking handles in a loop) aborts instead of wrapping.
const MAX_COUNT: usize = isize::MAX as usize;

/// A block: the count, then the value.
#[repr(C)]
struct Inner<P> {
    count: AtomicUsize,
    value: P,
}

/// A counted, shared reference to a `P` in the block store. Like `Arc<P>` without weak
/// references; see the module docs.
///
/// `repr(transparent)` over a `NonNull`, so `Option<Handle<P>>` is one word and all-zero bits
/// are `None` (Rust's guarantee for such wrappers; the VM's process table relies on it).
#[repr(transparent)]
pub struct Handle<P> {
    block: NonNull<Inner<P>>,
    _owns: PhantomData<Inner<P>>,
}

// SAFETY: like `Arc<P>`: a `Handle` hands out `&P` on any thread holding one, and drops the `P`
// on whichever thread drops the last one.
unsafe impl<P: Send + Sync> Send for Handle<P> {}
// SAFETY: as above.
unsafe impl<P: Send + Sync> Sync for Handle<P> {}

impl<P> Handle<P> {
    /// Moves `value` into a new block with a count of one.
    pub fn new(value: P) -> Handle<P> {
        let layout = Layout::new::<Inner<P>>();
        let block = frames::allocate_block(layout).cast::<Inner<P>>();
        // SAFETY: the store returned a fresh block of `Inner<P>`'s size and alignment
        // (invariant 2), owned by nobody else.
        unsafe {
            block.as_ptr().write(Inner {
                count: AtomicUsize::new(1),
                value,
            });
        }
        Handle {
            block,
            _owns: PhantomData,
        }
    }

    fn inner(&self) -> &Inner<P> {
        // SAFETY: the block lives while this handle counts in it (invariant 1).
        unsafe { self.block.as_ref() }
    }

    /// The address of the value (stable for the block's life).
    pub fn as_ptr(this: &Handle<P>) -> *const P {
        // SAFETY: a place projection inside a live block; no reference is made.
        unsafe { &raw const (*this.block.as_ptr()).value }
    }

    /// Gives up the handle without changing the count; [`Handle::from_raw`] takes it back.
    pub fn into_raw(this: Handle<P>) -> *const P {
        let pointer = Handle::as_ptr(&this);
        std::mem::forget(this);
        pointer
    }

    /// Byte offset of the value in its block.
    fn value_offset() -> usize {
        std::mem::offset_of!(Inner<P>, value)
    }

    /// Takes back a reference given up by [`Handle::into_raw`].
    ///
    /// # Safety
    ///
    /// `pointer` came from `Handle::<P>::into_raw` (or is a value pointer of a live block whose
    /// count the caller has raised with [`Handle::increment_strong_count`]), and that reference
    /// is taken back at most once.
    pub unsafe fn from_raw(pointer: *const P) -> Handle<P> {
        // SAFETY: the caller guarantees `pointer` is the `value` field of a live block, so
        // stepping back by the field's offset gives the block.
        let block = unsafe { (pointer as *const u8).sub(Self::value_offset()) } as *mut Inner<P>;
        Handle {
            // SAFETY: derived from a non-null value pointer of a live block.
            block: unsafe { NonNull::new_unchecked(block) },
            _owns: PhantomData,
        }
    }

    /// Adds one to the count of the block holding `pointer`.
    ///
    /// # Safety
    ///
    /// `pointer` is the value pointer of a live block ([`Handle::as_ptr`]) and the caller holds
    /// (directly or through someone it knows outlives the call) a reference to it.
    pub unsafe fn increment_strong_count(pointer: *const P) {
        // SAFETY: per the contract, a live block; `ManuallyDrop` keeps the borrowed handle from
        // decrementing.
        let borrowed = std::mem::ManuallyDrop::new(unsafe { Handle::from_raw(pointer) });
        std::mem::forget(Handle::clone(&borrowed));
    }

    /// The number of references to the block. Like `Arc::strong_count`, exact only when the
    /// caller knows nobody else is cloning or dropping (e.g. it holds the only one).
    pub fn strong_count(this: &Handle<P>) -> usize {
        // Acquire: pairs with the Release decrement in `drop`, so a caller that sees 1 also sees
        // every write the other holders made before letting go (as `Arc::get_mut` requires).
        this.inner().count.load(Ordering::Acquire)
    }

    /// Whether two handles refer to the same block.
    pub fn ptr_eq(this: &Handle<P>, other: &Handle<P>) -> bool {
        this.block == other.block
    }

    /// The value, mutably, if this is the only reference.
    pub fn get_mut(this: &mut Handle<P>) -> Option<&mut P> {
        if Handle::strong_count(this) == 1 {
            // SAFETY: the only reference, and `&mut self` keeps it so for the borrow; the
            // Acquire in `strong_count` ordered us after the previous holders' writes.
            Some(unsafe { &mut (*this.block.as_ptr()).value })
        } else {
            None
        }
    }
}

impl<P> Clone for Handle<P> {
    fn clone(&self) -> Handle<P> {
        // Relaxed: a new reference is made from an existing one, which keeps the block alive;
        // no other memory is published (as in `Arc::clone`).
        let old = self.inner().count.fetch_add(1, Ordering::Relaxed);
        if old > MAX_COUNT {
            std::process::abort();
        }
        Handle {
            block: self.block,
            _owns: PhantomData,
        }
    }
}

impl<P> Drop for Handle<P> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire fence below (and in `strong_count`): whoever drops the
        // block sees every holder's writes made before they let go.
        if self.inner().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // SAFETY: the count went from 1 to 0, so this is the last reference (invariant 1): the
        // value is dropped once and the block freed once, with the layout it was allocated with
        // (invariant 2).
        unsafe {
            std::ptr::drop_in_place(self.block.as_ptr());
            frames::free_block(self.block.cast(), Layout::new::<Inner<P>>());
        }
    }
}

impl<P> Deref for Handle<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.inner().value
    }
}

impl<P: fmt::Debug> fmt::Debug for Handle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// An owned `T` in the block store: `Box<T>`'s counterpart to [`Handle`]'s `Arc<P>`.
///
/// For the VM's own short-lived allocations that come and go by the hundred thousand (a boxed
/// message's value, a process's links and monitors): from glibc, a burst of them grows the
/// allocating worker's arena, and once they are freed the chunks glibc's per-thread cache keeps
/// are scattered over that arena and pin its pages for good (after a burst of 100,000
/// `spawn_monitor` cycles, 23 to 35 pages per worker arena held nothing else). From the block
/// store, whose idle pass returns every wholly free page, a burst leaves nothing behind.
///
/// Invariant 2 of the module holds for it too: the memory comes from the block store's
/// `allocate_block` with `T`'s layout and goes back through its `free_block` with the same
/// layout. A zero-sized `T` takes no memory.
pub struct Block<T> {
    value: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: a `Block<T>` owns its `T` like `Box<T>` does.
unsafe impl<T: Send> Send for Block<T> {}
// SAFETY: as above; `&Block<T>` only hands out `&T`.
unsafe impl<T: Sync> Sync for Block<T> {}

impl<T> Block<T> {
    /// Moves `value` into a block of its own.
    pub fn new(value: T) -> Block<T> {
        let layout = Layout::new::<T>();
        let pointer = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            frames::allocate_block(layout).cast::<T>()
        };
        // SAFETY: a fresh block of `T`'s size and alignment, owned by nobody else (or, for a
        // zero-sized `T`, a well-aligned dangling pointer, which is valid for it).
        unsafe { pointer.as_ptr().write(value) };
        Block {
            value: pointer,
            _owns: PhantomData,
        }
    }

    /// Moves the value out and frees the block.
    pub fn into_inner(this: Block<T>) -> T {
        let this = std::mem::ManuallyDrop::new(this);
        // SAFETY: the value is valid and owned; `ManuallyDrop` keeps it from being dropped
        // again, and the block is freed (not dropped) below.
        let value = unsafe { this.value.as_ptr().read() };
        // SAFETY: the block came from `new` with `T`'s layout and is not used again.
        unsafe { Block::free(this.value) };
        value
    }

    /// Gives up the block without dropping or freeing it; [`Block::from_raw`] takes it back.
    pub fn into_raw(this: Block<T>) -> NonNull<T> {
        std::mem::ManuallyDrop::new(this).value
    }

    /// Takes back a block given up by [`Block::into_raw`].
    ///
    /// # Safety
    ///
    /// `pointer` came from `Block::<T>::into_raw` and is taken back at most once.
    pub unsafe fn from_raw(pointer: NonNull<T>) -> Block<T> {
        Block {
            value: pointer,
            _owns: PhantomData,
        }
    }

    /// Frees the memory of a block whose value is gone (moved out or dropped).
    ///
    /// # Safety
    ///
    /// `pointer` came from `Block::<T>::new`, and neither it nor its value is used afterwards.
    unsafe fn free(pointer: NonNull<T>) {
        let layout = Layout::new::<T>();
        if layout.size() != 0 {
            // SAFETY: allocated by `allocate_block` with this layout (invariant 2).
            unsafe { frames::free_block(pointer.cast(), layout) };
        }
    }
}

impl<T> Drop for Block<T> {
    fn drop(&mut self) {
        // SAFETY: the block owns a valid value, dropped once here; then its memory is freed
        // with the layout it was allocated with (invariant 2).
        unsafe {
            std::ptr::drop_in_place(self.value.as_ptr());
            Block::free(self.value);
        }
    }
}

impl<T> Deref for Block<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the block owns a valid `T` while it lives.
        unsafe { self.value.as_ref() }
    }
}

impl<T> std::ops::DerefMut for Block<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { self.value.as_mut() }
    }
}

impl<T: Default> Default for Block<T> {
    fn default() -> Block<T> {
        Block::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for Block<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_value_is_dropped_once_when_the_last_handle_goes() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = Handle::new(Counted(drops.clone()));
        let second = first.clone();
        assert_eq!(Handle::strong_count(&first), 2);
        drop(first);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(second);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn raw_round_trips_keep_the_count() {
        let handle = Handle::new(41u64);
        let raw = Handle::into_raw(handle.clone());
        assert_eq!(Handle::strong_count(&handle), 2);
        // SAFETY: `raw` came from `into_raw` and is taken back once.
        unsafe { Handle::increment_strong_count(raw) };
        assert_eq!(Handle::strong_count(&handle), 3);
        // SAFETY: the two references `raw` stands for, each taken back once.
        let (back, again) = unsafe { (Handle::from_raw(raw), Handle::from_raw(raw)) };
        assert!(Handle::ptr_eq(&back, &handle));
        assert_eq!(*again, 41);
        drop((back, again));
        assert_eq!(Handle::strong_count(&handle), 1);
    }

    #[test]
    fn get_mut_only_with_one_reference() {
        let mut handle = Handle::new(String::from("a"));
        let other = handle.clone();
        assert!(Handle::get_mut(&mut handle).is_none());
        drop(other);
        Handle::get_mut(&mut handle).expect("sole handle").push('b');
        assert_eq!(&*handle, "ab");
    }

    #[test]
    fn over_aligned_and_large_values_use_the_global_allocator() {
        #[repr(align(64))]
        struct Wide([u8; 64]);
        let wide = Handle::new(Wide([7; 64]));
        assert_eq!(Handle::as_ptr(&wide) as usize % 64, 0);
        assert_eq!(wide.0[63], 7);
        let large = Handle::new([3u8; 10_000]);
        assert_eq!(large[9_999], 3);
    }

    #[test]
    fn blocks_own_their_values() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut block = Block::new((Counted(drops.clone()), 5u64));
        block.1 += 1;
        assert_eq!(block.1, 6);
        drop(block);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let (counted, six) = Block::into_inner(Block::new((Counted(drops.clone()), 6u64)));
        assert_eq!((drops.load(Ordering::SeqCst), six), (1, 6));
        drop(counted);
        let raw = Block::into_raw(Block::new(Counted(drops.clone())));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        // SAFETY: `raw` came from `into_raw` and is taken back once.
        drop(unsafe { Block::from_raw(raw) });
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn blocks_of_every_shape() {
        #[repr(align(64))]
        #[derive(Debug, PartialEq)]
        struct Wide([u8; 64]);
        #[repr(align(16))]
        #[derive(Debug, PartialEq)]
        struct AlignedUnit;
        assert_eq!(Block::into_inner(Block::new(Wide([7; 64]))), Wide([7; 64]));
        let large = Block::new([3u8; 10_000]);
        assert_eq!(large[9_999], 3);
        let unit = Block::new(AlignedUnit);
        assert_eq!(&*unit as *const AlignedUnit as usize % 16, 0);
        assert_eq!(Block::into_inner(unit), AlignedUnit);
        let blocks: Vec<Block<u64>> = (0..1_000).map(Block::new).collect();
        assert!(blocks.iter().enumerate().all(|(i, b)| **b == i as u64));
    }

    #[test]
    fn handles_cross_threads() {
        let drops = Arc::new(AtomicUsize::new(0));
        let handle = Handle::new(Counted(drops.clone()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        drop(handle.clone());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(Handle::strong_count(&handle), 1);
        drop(handle);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
