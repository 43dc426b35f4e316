//! The mailbox: an outer queue any sender appends to, and an inner queue only its process scans.
//!
//! # Problem
//!
//! Selective receive scans messages in arrival order and removes the first match from the
//! middle, leaving the rest in order; meanwhile any number of senders append concurrently.
//!
//! # Solution
//!
//! Like the BEAM's signal queue (`erl_proc_sig_queue.h`: an outer queue under the process lock,
//! middle and inner queues private to the receiver), a mailbox has:
//!
//! - `incoming`: appended to by senders under a mutex (a short critical section: one push). Its
//!   oldest message sits inline in the control block, so a process that gets one message at a
//!   time (a request, a reply, a release) never allocates a queue buffer: W2's million
//!   released processes each malloc'ed one from the root's thread arena and freed it on
//!   whichever worker ran them, and the arena lock that cross-thread free takes was 64 % of
//!   W2's 196,000 futex calls;
//! - `seen`: private to the receiving process; `receive` moves everything from `incoming` to the
//!   end of `seen` in one locked swap and scans `seen` from where the previous scan of the same
//!   `receive` call stopped, so waiting for a match behind N unmatched messages rescans nothing.
//!
//! # Invariants
//!
//! 1. Messages from one sender are appended in send order and move to `seen` in that order:
//!    per-pair FIFO.
//! 2. `pushed - taken` counts messages in both queues; a send counts before it returns.
//! 3. Only the owning process touches `seen`, and never re-entrantly (a receive guard must not
//!    call the VM; doing so panics instead of corrupting the queue).
//!
//! # Rejected alternatives
//!
//! - *A lock-free MPSC list*: one allocation per node on top of the message's own box and a
//!   pointer chase per scanned message; the uncontended mutex push is ~15 ns and the receiver
//!   takes the whole batch at once.
//! - *Scanning under the senders' lock*: a long scan would block every sender.
//! - *Queues in fixed chunks* (256 envelopes, 8 KiB each) instead of one `VecDeque` that
//!   doubles, so that a sender never copies a big buffer under the lock: no W2 gain (six runs
//!   alternated with the `VecDeque` build: 1.91–2.54 s against 2.00–2.21 s), and 16 bytes more
//!   per W2 process, because the root's consumed chunks went back to glibc's arena and stayed
//!   resident, where its drained big buffer (mapped) went back to the OS.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::envelope::Envelope;
use crate::grow;

/// A message in a mailbox.
pub(crate) type Message = Envelope;

/// What a receive asks of each message it scans: `true` takes the message, `false` leaves it in
/// place. Used as `&mut dyn Matcher`, not generically (a `receive!` matcher notes which clause
/// accepted in a variable of its own), so that the receive loop is compiled once, in this
/// crate (see `receive::select`).
pub(crate) trait Matcher {
    fn accepts(&mut self, message: &Message) -> bool;
}

/// A guard or a `receive!` clause list: it sees the message as `&dyn Any`.
impl<F: FnMut(&(dyn Any + Send)) -> bool> Matcher for F {
    fn accepts(&mut self, message: &Message) -> bool {
        self(message.as_any())
    }
}

/// Accepts the messages of type `M` (a plain `receive::<M>()`). It compares the envelope's
/// type id, where a closure over `&dyn Any` made two indirect calls per message scanned (the
/// view and `Any::type_id`). A zero-sized value, like the closure it replaces, so a parked
/// process's frames do not grow.
pub(crate) struct OfType<M>(PhantomData<fn() -> M>);

impl<M> OfType<M> {
    pub(crate) fn new() -> Self {
        OfType(PhantomData)
    }
}

impl<M: Any> Matcher for OfType<M> {
    #[inline]
    fn accepts(&mut self, message: &Message) -> bool {
        message.is::<M>()
    }
}

/// The private inner queue; see invariant 3. A `RefCell` of our own making: its borrow flag can
/// be cleared when a stack overflow has discarded the frames that held the borrow
/// ([`Mailbox::forget_borrow`]). A matcher that overflows does so while its process borrows this
/// queue, and with a `RefCell` the flag stayed set: the process's end then panicked on it (a
/// misleading "receive called from inside a receive guard" on standard error, even with crash
/// reports off) and left its messages undropped.
struct Seen {
    queue: UnsafeCell<Queue>,
    /// Set while a [`SeenRef`] exists.
    borrowed: Cell<bool>,
}

// SAFETY: `Seen` is only ever accessed by the process that owns the mailbox, from its own
// coroutine (invariant 3), or by whoever ends it once its coroutine is gone; the process may
// move between threads, but never runs on two at once, and the scheduler's handoff (run-queue
// and slot Acquire/Release) orders its accesses.
unsafe impl Sync for Seen {}

impl Seen {
    fn new() -> Seen {
        Seen {
            queue: UnsafeCell::new(Queue::default()),
            borrowed: Cell::new(false),
        }
    }

    /// The queue, exclusively. Panics (naming the rule) if it is borrowed already: a receive
    /// guard or matcher called the VM (invariant 3).
    fn borrow_mut(&self) -> SeenRef<'_> {
        if self.borrowed.replace(true) {
            panic!("{REENTRANT}");
        }
        SeenRef { seen: self }
    }
}

/// An exclusive borrow of [`Seen`]'s queue; clears the flag when dropped.
struct SeenRef<'a> {
    seen: &'a Seen,
}

impl std::ops::Deref for SeenRef<'_> {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: the flag was clear when this `SeenRef` was made and stays set while it lives,
        // so it is the only way to the queue (`Seen::borrow_mut`).
        unsafe { &*self.seen.queue.get() }
    }
}

impl std::ops::DerefMut for SeenRef<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference derived from it.
        unsafe { &mut *self.seen.queue.get() }
    }
}

impl Drop for SeenRef<'_> {
    fn drop(&mut self) {
        self.seen.borrowed.set(false);
    }
}

/// One process's mailbox.
#[repr(C)] // senders' fields first, right after the fiber's `state` (see `Process`)
pub(crate) struct Mailbox {
    /// Senders append here. Under this mutex.
    incoming: Mutex<Incoming>,
    /// Heap bytes of the queued messages that are boxed (small messages travel inline in their
    /// envelope and are counted as envelopes). Relaxed, like `pushed`; untouched by small
    /// messages, so the common path pays no extra atomic operation.
    heap_bytes: AtomicUsize,
    /// Messages ever pushed, modulo 2^32 (a mailbox never holds 2^31 messages, so the
    /// wrapping difference with `taken` is exact). Written only under `incoming`'s lock (a plain
    /// load and store, no read-modify-write), read by anyone; Relaxed, like `taken`.
    pushed: AtomicU32,
    /// Messages ever taken out (received or dropped). Written only by the owner. The length of
    /// the mailbox is `pushed - taken`: exact once the sends and receives it counts have
    /// returned, and without an atomic read-modify-write on either side.
    /// Modulo 2^32, like `pushed`.
    taken: AtomicU32,
    /// The receiver's private queue.
    seen: Seen,
}

/// Every message a mailbox held, taken out by [`Mailbox::take_all`]; dropping it drops them.
pub(crate) struct Drained {
    seen: Queue,
    first: Option<Message>,
    rest: Arrivals,
}

impl Drained {
    pub(crate) fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.first.is_none() && self.rest.is_empty()
    }
}

/// The senders' queue: its oldest message inline, the others in [`Arrivals`].
///
/// Invariant: `rest` is empty while `first` is `None`.
struct Incoming {
    first: Option<Message>,
    rest: Arrivals,
}

/// A queue of messages that costs one word until it first holds one: a `VecDeque` behind a
/// box made on the first push.
///
/// Most processes never hold two messages at once (the oldest waits inline in [`Incoming`]),
/// and then a plain `VecDeque`'s four words, in each of the two queues, sit unused in every
/// control block: 48 bytes of a million parked processes' ~880. Boxed, the control block
/// fits the block store's 288-byte class instead of the 352-byte one. A process that does
/// queue messages pays one more allocation (the box, once in its life: a queue that drains keeps
/// its box) and one more pointer to follow per queue operation.
#[derive(Default)]
#[allow(clippy::box_collection)] // the box is the point: one word instead of four until used
struct Queue(Option<Box<VecDeque<Message>>>);

impl Queue {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.capacity())
    }

    /// The queue itself, made on first use.
    fn deque(&mut self) -> &mut VecDeque<Message> {
        self.0.get_or_insert_with(Box::default)
    }

    fn push_back(&mut self, message: Message) {
        let deque = self.deque();
        grow::reserve(deque, 1);
        deque.push_back(message);
    }

    /// Gives memory back once a burst has drained (see [`drained_burst`]).
    fn shrink_after_burst(&mut self) {
        if let Some(queue) = self.0.as_mut() {
            if drained_burst(queue.len(), queue.capacity()) {
                queue.shrink_to(KEEP_CAPACITY);
            }
        }
    }
}

/// Whether a queue of `len` messages and room for `capacity` is an emptied burst's buffer,
/// which gives its memory back down to [`KEEP_CAPACITY`]. At least twice `KEEP_CAPACITY`: the
/// tail a shrink in place frees is then at least 2 KiB, too large for glibc's per-thread cache
/// (see `grow`).
fn drained_burst(len: usize, capacity: usize) -> bool {
    len == 0 && capacity >= 2 * KEEP_CAPACITY
}

/// The senders' messages after the first: a `Vec`, one word until first used, like [`Queue`].
///
/// Senders only append and the receiver takes them all at once, so a `Vec` serves, and unlike
/// a `VecDeque` it shows its spare capacity: `grow::push` commits that a step ahead of the
/// senders, so that a burst of millions of messages (W1's and W2's replies to the root) takes
/// no page fault under the senders' lock (see `grow.rs`).
#[derive(Default)]
#[allow(clippy::box_collection)] // as for `Queue`: one word instead of three until used
struct Arrivals(Option<Box<Vec<Message>>>);

impl Arrivals {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |arrivals| arrivals.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |arrivals| arrivals.capacity())
    }

    fn push(&mut self, message: Message) {
        grow::push(self.0.get_or_insert_with(Box::default), message);
    }

    /// Gives memory back once a burst has drained (see [`drained_burst`]).
    fn shrink_after_burst(&mut self) {
        if let Some(arrivals) = self.0.as_mut() {
            if drained_burst(arrivals.len(), arrivals.capacity()) {
                arrivals.shrink_to(KEEP_CAPACITY);
            }
        }
    }
}

impl Incoming {
    fn push(&mut self, message: Message) {
        if self.first.is_none() {
            self.first = Some(message);
        } else {
            self.rest.push(message);
        }
    }

    /// Moves every message, in order, to the end of `seen`. Into an empty `seen` the batch
    /// moves without copying a message: the two buffers are swapped (a `Vec` becomes a
    /// `VecDeque` and back without moving its items or its buffer), and the emptied `rest`
    /// keeps the old private queue's capacity for the senders (less than `2 * KEEP_CAPACITY`).
    fn move_into(&mut self, seen: &mut Queue) {
        let Some(first) = self.first.take() else {
            return;
        };
        match self.rest.0.as_mut() {
            Some(arrivals) if seen.is_empty() && !arrivals.is_empty() => {
                let seen = seen.deque();
                let batch = VecDeque::from(std::mem::take(&mut **arrivals));
                **arrivals = Vec::from(std::mem::replace(seen, batch));
                grow::reserve(seen, 1);
                seen.push_front(first);
                self.rest.shrink_after_burst();
            }
            rest => {
                let seen = seen.deque();
                grow::reserve(seen, 1 + rest.as_ref().map_or(0, |rest| rest.len()));
                seen.push_back(first);
                if let Some(rest) = rest {
                    seen.extend(rest.drain(..));
                }
            }
        }
    }
}

/// A message taken out of the queues while a matcher looks at it; unless taken, the drop puts
/// it at the end of `seen`: when the matcher declines it, and when the matcher unwinds.
struct Pending<'a> {
    seen: &'a mut Queue,
    message: Option<Message>,
}

impl Pending<'_> {
    fn message(&self) -> &Message {
        self.message
            .as_ref()
            .expect("a pending message is taken once")
    }

    fn take(&mut self) -> Message {
        self.message
            .take()
            .expect("a pending message is taken once")
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            self.seen.push_back(message);
        }
    }
}

/// Queue capacity (in messages) a mailbox keeps once a burst has drained; from twice this the
/// memory goes back (below, the queue keeps its capacity, under 4 KiB). Guessed: 64 × 32-byte
/// envelopes = 2 KiB, far above a steady request/response process's needs, far below what a
/// 100 K-message burst leaves behind (3 MiB per queue).
const KEEP_CAPACITY: usize = 64;

/// A receive guard or matcher called the VM (invariant 3).
const REENTRANT: &str =
    "starling: receive called from inside a receive guard or matcher (guards must not call the VM)";

impl Mailbox {
    pub(crate) fn new() -> Mailbox {
        Mailbox {
            incoming: Mutex::new(Incoming {
                first: None,
                rest: Arrivals::default(),
            }),
            seen: Seen::new(),
            pushed: AtomicU32::new(0),
            taken: AtomicU32::new(0),
            heap_bytes: AtomicUsize::new(0),
        }
    }

    /// Makes this mailbox as new for a process reusing its control block, which nothing else
    /// references (`&mut`). The husk's mailbox is empty (its process took or dropped every
    /// message when it ended); when its queues were never allocated either (most processes),
    /// only the counters are reset, without running the drop of a whole mailbox and building a
    /// new one (~35 instructions of a spawn).
    pub(crate) fn reset(&mut self) {
        let incoming = self.incoming.get_mut().unwrap_or_else(|e| e.into_inner());
        let untouched = incoming.first.is_none()
            && incoming.rest.0.is_none()
            && self.seen.queue.get_mut().0.is_none();
        if !untouched {
            *self = Mailbox::new();
            return;
        }
        // A poisoned lock of the old process must not poison the new one.
        self.incoming.clear_poison();
        *self.heap_bytes.get_mut() = 0;
        *self.pushed.get_mut() = 0;
        *self.taken.get_mut() = 0;
        *self.seen.borrowed.get_mut() = false;
    }

    /// Appends a message (any thread).
    pub(crate) fn push(&self, message: Message) {
        let heap_bytes = message.heap_bytes();
        {
            let mut incoming = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            incoming.push(message);
            // Relaxed: the lock serializes the writers; readers only need a recent value.
            let pushed = self.pushed.load(Ordering::Relaxed);
            self.pushed.store(pushed.wrapping_add(1), Ordering::Relaxed);
        }
        if heap_bytes > 0 {
            self.heap_bytes.fetch_add(heap_bytes, Ordering::Relaxed);
        }
    }

    /// Messages in the mailbox.
    pub(crate) fn len(&self) -> usize {
        // Relaxed: see the fields. `taken` is read second, so a concurrent receive can only make
        // it larger than the `pushed` we read; that shows as a "negative" difference, which
        // counts as empty.
        let pushed = self.pushed.load(Ordering::Relaxed);
        let len = pushed.wrapping_sub(self.taken.load(Ordering::Relaxed));
        if len > u32::MAX / 2 {
            0
        } else {
            len as usize
        }
    }

    /// Approximate bytes held by queued messages: their envelopes and boxed contents.
    pub(crate) fn bytes(&self) -> usize {
        // Relaxed: see the fields.
        self.len() * std::mem::size_of::<Envelope>() + self.heap_bytes.load(Ordering::Relaxed)
    }

    /// Owner only: scans messages from position `*scanned` on, after moving new arrivals into
    /// the private queue. Removes and returns the first message `matcher` accepts; otherwise
    /// records how far it scanned.
    pub(crate) fn take_first(
        &self,
        scanned: &mut usize,
        matcher: &mut dyn Matcher,
    ) -> Option<Message> {
        let mut seen = self.seen.borrow_mut();
        // The private queue first: everything in it arrived before anything in `incoming`, so
        // a match there is the first match, found without touching the senders' cache line.
        if let Some(found) = Self::scan(&mut seen, scanned, matcher) {
            self.account_removed(1, found.heap_bytes());
            return Some(found);
        }
        // Relaxed: `pushed` is raised under the senders' lock; if we miss a message that is
        // being pushed right now, its sender's wake-up (after the push) makes us scan again.
        if self.len() == seen.len() {
            return None;
        }
        let lone = {
            let mut incoming = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            if seen.is_empty() && incoming.rest.is_empty() {
                incoming.first.take()
            } else {
                incoming.move_into(&mut seen);
                None
            }
        };
        if let Some(message) = lone {
            // The only message, matched where it is: no queue buffer is allocated for it
            // unless it must wait in `seen` for a later receive. Should the matcher panic (and
            // the process catch it), the message still goes to `seen`: nothing is lost.
            let mut pending = Pending {
                seen: &mut seen,
                message: Some(message),
            };
            if matcher.accepts(pending.message()) {
                let message = pending.take();
                self.account_removed(1, message.heap_bytes());
                return Some(message);
            }
            // Not accepted: the guard puts it where a panic would have, at the end of `seen`.
            drop(pending);
            *scanned = seen.len();
            return None;
        }
        let found = Self::scan(&mut seen, scanned, matcher)?;
        self.account_removed(1, found.heap_bytes());
        Some(found)
    }

    /// Scans `seen` from `*scanned` on; removes and returns the first message `matcher`
    /// accepts, or records how far it scanned.
    fn scan(seen: &mut Queue, scanned: &mut usize, matcher: &mut dyn Matcher) -> Option<Message> {
        let queue = seen.0.as_mut()?;
        while *scanned < queue.len() {
            if matcher.accepts(&queue[*scanned]) {
                let message = if *scanned == 0 {
                    queue.pop_front()
                } else {
                    queue.remove(*scanned)
                }
                .expect("scanned index in range");
                seen.shrink_after_burst();
                return Some(message);
            }
            *scanned += 1;
        }
        None
    }

    /// Owner only: removes every message `matches` accepts (used to flush an `Exit` or `Down`
    /// that `unlink`/`demonitor` made stale).
    pub(crate) fn remove_all(&self, mut matches: impl FnMut(&Envelope) -> bool) {
        let mut seen = self.seen.borrow_mut();
        {
            let mut incoming = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            incoming.move_into(&mut seen);
        }
        let mut removed = 0;
        let mut removed_bytes = 0;
        if let Some(seen) = seen.0.as_mut() {
            seen.retain(|message| {
                let keep = !matches(message);
                if !keep {
                    removed += 1;
                    removed_bytes += message.heap_bytes();
                }
                keep
            });
        }
        self.account_removed(removed, removed_bytes);
    }

    /// Counts messages taken out of the mailbox.
    fn account_removed(&self, messages: usize, heap_bytes: usize) {
        // Relaxed: only the owner writes `taken`.
        let taken = self.taken.load(Ordering::Relaxed);
        // Truncation is the modulo-2^32 counting `taken` documents.
        self.taken
            .store(taken.wrapping_add(messages as u32), Ordering::Relaxed);
        if heap_bytes > 0 {
            self.heap_bytes.fetch_sub(heap_bytes, Ordering::Relaxed);
        }
    }

    /// Clears the private queue's borrow flag, which a stack overflow inside a receive matcher
    /// leaves set (its frames, and the borrow in them, were discarded without unwinding).
    ///
    /// # Safety
    ///
    /// The owning process's coroutine is gone: no frame that could hold a reference into the
    /// queue exists any more.
    pub(crate) unsafe fn forget_borrow(&self) {
        self.seen.borrowed.set(false);
    }

    /// Owner only (or the last owner of a dead process): drops every message.
    pub(crate) fn clear(&self) {
        drop(self.take_all());
    }

    /// Owner only (or the last owner of a dead process): takes every message out, to be
    /// dropped by the caller (wherever their destructors are safest to run).
    pub(crate) fn take_all(&self) -> Drained {
        let (first, rest) = {
            let mut incoming = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            (incoming.first.take(), std::mem::take(&mut incoming.rest))
        };
        let seen = std::mem::take(&mut *self.seen.borrow_mut());
        // Relaxed: see the fields; the owner is the only writer of `taken`.
        self.taken
            .store(self.pushed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.heap_bytes.store(0, Ordering::Relaxed);
        Drained { seen, first, rest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes the first `u32` the mailbox holds that `accept` accepts.
    fn take(mailbox: &Mailbox, accept: impl Fn(u32) -> bool) -> Option<u32> {
        let mut scanned = 0;
        let mut matcher = |message: &(dyn Any + Send)| {
            message
                .downcast_ref::<u32>()
                .is_some_and(|&value| accept(value))
        };
        mailbox
            .take_first(&mut scanned, &mut matcher)
            .map(|message| message.take::<u32>())
    }

    fn capacities(mailbox: &Mailbox) -> (usize, usize) {
        let incoming = mailbox.incoming.lock().unwrap().rest.capacity();
        (incoming, mailbox.seen.borrow_mut().capacity())
    }

    /// The layout rule in `control_block.rs`: the senders' fields open the mailbox, right
    /// after the fiber's wakers' word.
    /// `reset` gives a reused control block an empty, working mailbox whether the old one was
    /// untouched, only counted messages, or had allocated its queues.
    #[test]
    fn a_reset_mailbox_is_as_new() {
        let check = |mut mailbox: Mailbox| {
            mailbox.reset();
            assert_eq!(mailbox.len(), 0);
            assert_eq!(mailbox.bytes(), 0);
            mailbox.push(Envelope::new(7u32));
            mailbox.push(Envelope::new(8u32));
            assert_eq!(mailbox.len(), 2);
            assert_eq!(take(&mailbox, |_| true), Some(7));
            assert_eq!(take(&mailbox, |_| true), Some(8));
            assert_eq!(mailbox.len(), 0);
        };
        check(Mailbox::new());
        // One message in and out: only the counters moved.
        let once = Mailbox::new();
        once.push(Envelope::new(1u32));
        assert_eq!(take(&once, |_| true), Some(1));
        check(once);
        // Queues allocated (three messages, the middle one taken first), then emptied by
        // receiving, which keeps them (a process that ends with an empty mailbox keeps them too).
        let queued = Mailbox::new();
        for n in 0..3u32 {
            queued.push(Envelope::new(n));
        }
        assert_eq!(take(&queued, |n| n == 1), Some(1));
        assert_eq!(take(&queued, |_| true), Some(0));
        assert_eq!(take(&queued, |_| true), Some(2));
        assert!(capacities(&queued) != (0, 0), "the queues were allocated");
        check(queued);
    }

    #[test]
    fn the_senders_fields_come_first() {
        assert_eq!(std::mem::offset_of!(Mailbox, incoming), 0);
        assert!(std::mem::offset_of!(Mailbox, pushed) < std::mem::offset_of!(Mailbox, seen));
    }

    #[test]
    fn a_lone_message_is_received_without_a_queue_buffer() {
        let mailbox = Mailbox::new();
        for value in 0..3 {
            mailbox.push(Envelope::new(value));
            assert_eq!(take(&mailbox, |_| true), Some(value));
        }
        assert_eq!(capacities(&mailbox), (0, 0));
        assert_eq!(mailbox.len(), 0);
        // Not even the queues' boxes: they are made on the first message that must wait.
        assert!(mailbox.incoming.lock().unwrap().rest.0.is_none());
        assert!(mailbox.seen.borrow_mut().0.is_none());
    }

    /// The layout `control_block.rs` counts on: each queue is one word until first used.
    #[test]
    fn an_unused_queue_is_one_word() {
        assert_eq!(std::mem::size_of::<Queue>(), std::mem::size_of::<usize>());
        assert_eq!(
            std::mem::size_of::<Arrivals>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn a_lone_message_that_does_not_match_waits_in_order() {
        let mailbox = Mailbox::new();
        mailbox.push(Envelope::new(1u32));
        assert_eq!(take(&mailbox, |value| value == 2), None);
        mailbox.push(Envelope::new(2u32));
        mailbox.push(Envelope::new(3u32));
        assert_eq!(take(&mailbox, |value| value == 2), Some(2));
        assert_eq!(mailbox.len(), 2);
        assert_eq!(take(&mailbox, |_| true), Some(1));
        assert_eq!(take(&mailbox, |_| true), Some(3));
        assert_eq!(mailbox.len(), 0);
    }

    #[test]
    fn batches_keep_arrival_order_whatever_the_queues_capacities() {
        let mailbox = Mailbox::new();
        let mut next = 0u32;
        let mut expected = 0u32;
        // Batches of every size from 1 to 20 (filling `rest` exactly to its capacity among
        // them), each taken half before the next batch arrives.
        for batch in 1..=20u32 {
            for _ in 0..batch {
                mailbox.push(Envelope::new(next));
                next += 1;
            }
            for _ in 0..batch.div_ceil(2) {
                assert_eq!(take(&mailbox, |_| true), Some(expected));
                expected += 1;
            }
        }
        while expected < next {
            assert_eq!(take(&mailbox, |_| true), Some(expected));
            expected += 1;
        }
        assert_eq!(take(&mailbox, |_| true), None);
        assert_eq!(mailbox.len(), 0);
    }

    #[test]
    fn a_matcher_that_panics_on_a_lone_message_loses_nothing() {
        let mailbox = Mailbox::new();
        mailbox.push(Envelope::new(1u32));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            take(&mailbox, |_| panic!("a guard that panics"))
        }));
        assert!(caught.is_err());
        assert_eq!(mailbox.len(), 1);
        assert_eq!(take(&mailbox, |_| true), Some(1));
        assert_eq!(mailbox.len(), 0);
    }

    #[test]
    fn remove_all_and_clear_see_the_inline_message() {
        let mailbox = Mailbox::new();
        mailbox.push(Envelope::new(1u32));
        mailbox.push(Envelope::new(2u32));
        mailbox.remove_all(|message| message.as_any().downcast_ref::<u32>() == Some(&1));
        assert_eq!(mailbox.len(), 1);
        assert_eq!(take(&mailbox, |_| true), Some(2));
        mailbox.push(Envelope::new(3u32));
        mailbox.clear();
        assert_eq!(mailbox.len(), 0);
        assert_eq!(take(&mailbox, |_| true), None);
    }
}
