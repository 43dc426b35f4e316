//! Envelopes: a message of any `Send + 'static` type, stored inline when small.
//!
//! # Problem
//!
//! A mailbox holds values of many types, so each message must be type-erased. `Box<dyn Any>`
//! costs an allocation and a free per message: with glibc's allocator ~150 instructions, about
//! a fifth of a whole send + receive.
//!
//! # Solution
//!
//! An [`Envelope`] has room for three machine words. A message that fits (size ≤ 24 bytes,
//! alignment ≤ 8, which covers integers, pids, small tuples and enums of them, `String` and
//! `Vec` handles) is moved into that room; a larger one is boxed and the box's pointer is stored
//! there instead. The box is a [`Block`] from the scheduler's block store, not glibc's heap: a
//! burst of boxed messages (100,000 `Down`s queued for one monitoring process) then leaves no
//! pages behind once they are received (see `Block`). A per-type table of functions
//! (`MessageType`) knows how to view, take and drop the value either way, so the rest of the VM
//! sees only `&dyn Any` and typed takes.
//!
//! # Invariants
//!
//! 1. `payload` holds a valid value of the type `kind` describes, inline or boxed as
//!    `kind.inline` says, until the envelope is taken or dropped (exactly one of the two).
//! 2. The value is `Send` (checked when the envelope is built), so an envelope is `Send`.

use std::any::{Any, TypeId};
use std::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

use starling_scheduler::Block;

/// Room for an inline message, in machine words.
const INLINE_WORDS: usize = 3;

/// How to handle the value of one message type.
struct MessageType {
    /// The value's type: a typed receive and a take compare it without an indirect call (a
    /// `dyn Any` view and its `type_id` are two).
    type_id: TypeId,
    /// The value is stored inline (else `payload` holds a `Block<M>`'s raw pointer).
    inline: bool,
    /// Views the value as `&dyn Any`.
    view: unsafe fn(*const Payload) -> *const (dyn Any + Send),
    /// Drops the value in place (or the box).
    drop: unsafe fn(*mut Payload),
    /// Bytes the value occupies on the heap (0 inline).
    bytes: usize,
    /// The message is an `Exit` the VM sent because a link fired (see `new_link_exit`).
    link_exit: bool,
}

type Payload = MaybeUninit<[usize; INLINE_WORDS]>;

/// A type-erased message.
pub(crate) struct Envelope {
    payload: Payload,
    kind: &'static MessageType,
}

// SAFETY: invariant 2: the payload is a `Send` value (or a box of one).
unsafe impl Send for Envelope {}

trait Describe {
    const KIND: MessageType;
}

impl<M: Any + Send> Describe for M {
    const KIND: MessageType = {
        let inline =
            size_of::<M>() <= size_of::<Payload>() && align_of::<M>() <= align_of::<Payload>();
        MessageType {
            type_id: TypeId::of::<M>(),
            inline,
            view: if inline {
                view_inline::<M>
            } else {
                view_boxed::<M>
            },
            drop: if inline {
                drop_inline::<M>
            } else {
                drop_boxed::<M>
            },
            link_exit: false,
            bytes: if inline { 0 } else { size_of::<M>() },
        }
    };
}

/// The type table of an `Exit` sent along a link: the same as `Exit`'s but marked, so that
/// `unlink` can drop exactly the `Exit`s its link queued (and not those `process::exit` sent).
const LINK_EXIT_KIND: MessageType = MessageType {
    link_exit: true,
    ..<crate::exit::Exit as Describe>::KIND
};

/// # Safety
/// `payload` holds an inline `M` (invariant 1).
unsafe fn view_inline<M: Any + Send>(payload: *const Payload) -> *const (dyn Any + Send) {
    payload as *const M as *const (dyn Any + Send)
}

/// # Safety
/// `payload` holds a `Block<M>`'s raw pointer (invariant 1).
unsafe fn view_boxed<M: Any + Send>(payload: *const Payload) -> *const (dyn Any + Send) {
    // SAFETY: the caller guarantees the first word is the block's pointer.
    unsafe { *(payload as *const *const M) as *const (dyn Any + Send) }
}

/// # Safety
/// `payload` holds an inline `M`, which is not used afterwards.
unsafe fn drop_inline<M: Any + Send>(payload: *mut Payload) {
    // SAFETY: the caller guarantees a valid, owned inline `M`.
    unsafe { std::ptr::drop_in_place(payload as *mut M) }
}

/// # Safety
/// `payload` holds a `Block<M>`'s raw pointer, which is not used afterwards.
unsafe fn drop_boxed<M: Any + Send>(payload: *mut Payload) {
    // SAFETY: the caller guarantees the pointer came from `Block::into_raw` and is owned.
    drop(unsafe { Block::from_raw(*(payload as *mut NonNull<M>)) })
}

impl Envelope {
    /// Wraps `message`.
    #[inline]
    pub(crate) fn new<M: Any + Send>(message: M) -> Envelope {
        let kind: &'static MessageType = &<M as Describe>::KIND;
        let mut payload = Payload::uninit();
        if kind.inline {
            // SAFETY: `M` fits the payload's size and alignment (`inline`).
            unsafe { (payload.as_mut_ptr() as *mut M).write(message) };
        } else {
            let raw = Block::into_raw(Block::new(message));
            // SAFETY: the payload has room for a pointer.
            unsafe { (payload.as_mut_ptr() as *mut NonNull<M>).write(raw) };
        }
        Envelope { payload, kind }
    }

    /// Wraps an `Exit` the VM sends because a link fired.
    pub(crate) fn new_link_exit(exit: crate::exit::Exit) -> Envelope {
        let mut envelope = Envelope::new(exit);
        envelope.kind = &LINK_EXIT_KIND;
        envelope
    }

    /// Returns `true` for an `Exit` made by [`Envelope::new_link_exit`].
    pub(crate) fn is_link_exit(&self) -> bool {
        self.kind.link_exit
    }

    /// The message, viewed as `dyn Any`.
    #[inline]
    pub(crate) fn as_any(&self) -> &(dyn Any + Send) {
        // SAFETY: invariant 1; the view borrows from `self`.
        unsafe { &*(self.kind.view)(&self.payload) }
    }

    /// Takes the message out as an `M`.
    ///
    /// # Panics
    ///
    /// If the message is not an `M` (an internal invariant: callers check the type first).
    /// Whether the message is an `M`.
    #[inline]
    pub(crate) fn is<M: Any>(&self) -> bool {
        self.kind.type_id == TypeId::of::<M>()
    }

    #[inline]
    pub(crate) fn take<M: Any + Send>(self) -> M {
        assert!(self.is::<M>(), "starling: envelope taken as the wrong type");
        let this = ManuallyDrop::new(self);
        if this.kind.inline {
            // SAFETY: the payload holds an inline `M` (checked above), which we move out once;
            // `ManuallyDrop` keeps the envelope from dropping it again.
            unsafe { (this.payload.as_ptr() as *const M).read() }
        } else {
            // SAFETY: the payload holds a `Block<M>`'s pointer (checked above), reclaimed once.
            let raw = unsafe { *(this.payload.as_ptr() as *const NonNull<M>) };
            // SAFETY: as above.
            Block::into_inner(unsafe { Block::from_raw(raw) })
        }
    }

    /// Heap bytes this message holds outside its envelope (0 when it is inline).
    pub(crate) fn heap_bytes(&self) -> usize {
        if self.kind.inline {
            0
        } else {
            self.kind.bytes
        }
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        // SAFETY: invariant 1: the value is valid and owned; this is its one drop.
        unsafe { (self.kind.drop)(&mut self.payload) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn small_values_round_trip_inline() {
        let envelope = Envelope::new((7u32, 9u64));
        assert!(envelope.kind.inline);
        assert_eq!(
            envelope.as_any().downcast_ref::<(u32, u64)>(),
            Some(&(7, 9))
        );
        assert_eq!(envelope.take::<(u32, u64)>(), (7, 9));
    }

    /// The type check a typed receive makes without `dyn Any` tells apart types of one layout,
    /// inline and boxed, and a link's `Exit` is still an `Exit`.
    #[test]
    fn is_compares_the_exact_type() {
        let small = Envelope::new(7u64);
        assert!(small.is::<u64>());
        assert!(!small.is::<i64>());
        assert!(!small.is::<crate::Pid>());
        let big = Envelope::new([1u64; 8]);
        assert!(big.is::<[u64; 8]>());
        assert!(!big.is::<[i64; 8]>());
        assert!(!big.is::<u64>());
        let exit = crate::exit::Exit {
            from: crate::Pid::new(1, 2, 3),
            reason: crate::ExitReason::Normal,
        };
        let link = Envelope::new_link_exit(exit.clone());
        assert!(link.is_link_exit());
        assert!(link.is::<crate::exit::Exit>());
        assert_eq!(link.take::<crate::exit::Exit>(), exit);
    }

    #[test]
    fn large_values_round_trip_boxed() {
        let big = [5u64; 16];
        let envelope = Envelope::new(big);
        assert!(!envelope.kind.inline);
        assert!(envelope.as_any().is::<[u64; 16]>());
        assert_eq!(envelope.take::<[u64; 16]>(), big);
    }

    #[test]
    fn strings_and_zero_sized_values() {
        let envelope = Envelope::new(String::from("hello"));
        assert_eq!(envelope.take::<String>(), "hello");
        let envelope = Envelope::new(());
        assert!(envelope.as_any().is::<()>());
        envelope.take::<()>();
    }

    #[test]
    fn drops_exactly_once_inline_and_boxed() {
        let drops = Arc::new(AtomicUsize::new(0));
        drop(Envelope::new(Counted(drops.clone())));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(Envelope::new((Counted(drops.clone()), [0u64; 8])));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        let taken = Envelope::new(Counted(drops.clone())).take::<Counted>();
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(taken);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    #[should_panic(expected = "wrong type")]
    fn taking_the_wrong_type_panics() {
        Envelope::new(1u8).take::<u16>();
    }

    #[test]
    fn over_aligned_values_are_boxed() {
        #[repr(align(16))]
        #[derive(Debug, PartialEq)]
        struct Aligned(u8);
        let envelope = Envelope::new(Aligned(3));
        assert!(!envelope.kind.inline);
        assert_eq!(envelope.take::<Aligned>(), Aligned(3));
    }
}
