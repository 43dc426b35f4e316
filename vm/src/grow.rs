//! Growing the VM's vectors without `realloc`.
//!
//! # Problem
//!
//! `Vec` and `VecDeque` grow with `realloc`. glibc's `realloc` grows a chunk in place when the
//! chunk after it is free, and frees what it does not need of that neighbour as a new chunk of
//! whatever size is left over; a chunk of up to 1,032 bytes freed that way goes to the freeing
//! thread's cache (tcache: up to 7 chunks in each of 64 sizes, ~230 KiB a thread), which
//! `malloc_trim` never empties and only an allocation of exactly that size takes from. The VM
//! grows a vector on every burst: a process's mailbox when messages arrive faster than it
//! receives them (and its links and monitors, until they became hash sets and maps). Over ten
//! million `spawn_monitor`/`Down` cycles in 10,000 runs of 1,000, those leftovers filled nearly
//! every size of both workers' caches: the heap's bytes in use grew from ~220 KiB after the
//! first run to ~700 KiB, and the RSS, even after the VM had idled and given memory back,
//! ended 19 to 22 % above the first run's (two runs of a probe program). No chunk was leaked:
//! each was free, in a cache that nothing drained.
//!
//! # Solution
//!
//! A full vector of up to [`COPY_GROWTH_MAX`] bytes grows by moving into a new buffer of twice
//! the capacity, and the old buffer is freed whole. The freed sizes are then the vector's own
//! capacities, the same few every burst, and each thread's cache holds at most 7 of each, which
//! the next burst takes again. The same two runs: ~290–320 KiB in use at the end, and the RSS
//! 4 and 11 % above the first run's. Larger vectors keep `realloc` (a buffer above glibc's
//! mapping threshold is moved by `mremap`, without copying); growing them by moving too was
//! far worse (+150 %: large buffers freed in an arena stay in it). `tests/memory_monitors.rs`
//! checks the heap after three million monitored cycles.
//!
//! The cost is a copy that `realloc` in place would have saved, of at most
//! [`COPY_GROWTH_MAX`] bytes, once per doubling.
//!
//! # Large vectors: their new pages are committed at once
//!
//! A vector that grows past [`COPY_GROWTH_MAX`] by `realloc` gets fresh pages (glibc maps a
//! buffer that large on its own, and `mremap` extends it), and each faulted in when first
//! written, at ~10 µs a fault on this host. For a mailbox that fault was taken under its
//! senders' lock: in W2 (a million processes each send the root a message while it spawns),
//! the root's queue grew to 32 MiB one page fault at a time, the sender on the other worker
//! that found the lock taken for that long slept in the kernel, and the mailbox lock made 71 %
//! of the run's 33,000 futex calls. So the spare capacity of every such growth is committed in
//! one `MADV_POPULATE_WRITE` call ([`starling_scheduler::commit_spare`]), up to
//! [`COMMIT_MAX`] of it. W2 on 2 schedulers (`starling child --workload w2 --size 1000000
//! --schedulers 2`, runs alternated with the build before): futex calls ~36,000 → ~21,000 and
//! page faults ~39,800 → ~32,000 a run; median wall 1,723 → 1,543 ms and 1,535 → 1,350 ms in
//! two series of 7 and 8 runs (this host's runs spread over ±30 %). Committing the whole spare
//! did more (10,500 futex calls, 24,500 faults, 1,404 ms in the first series), but a 16 MiB
//! growth then held the lock ~10 ms: longer than the watchdog's long-schedule threshold, so the
//! sender and a waiting one were reported as long schedules and their workers handed to spares.
//! W1 showed no difference through the noise.
//!
//! The cost: a vector that stops growing just after a growth holds up to [`COMMIT_MAX`] of
//! committed memory it never fills, until it drains (a mailbox then gives its buffer back,
//! `Queue::shrink_after_burst`), where those pages used to be resident only once written.
//!
//! A `Vec` that [`push`] fills goes further: it commits its spare capacity a [`COMMIT_STEP`]
//! at a time, just before its length reaches each step, so none of its pages faults in. The
//! senders' queue of a mailbox is such a `Vec` (`mailbox.rs`), because only the senders, under
//! their lock, ever write it: committing the first 4 MiB of a growth still left the rest of a
//! 16 MiB doubling to fault in page by page under that lock (~7,000 faults in a W2 run, a
//! fifth of all). A step of 256 KiB is ~160 µs under the lock, once per 8,192 messages.

use std::collections::VecDeque;
use std::mem::size_of;

/// Bytes of buffer up to which a full vector grows by moving into a new one (see the module
/// docs). Guessed: 64 KiB copies in a few microseconds, and is far above every size glibc's
/// per-thread cache takes (1,032 bytes).
pub(crate) const COPY_GROWTH_MAX: usize = 64 << 10;

/// Bytes of a large vector's new spare capacity committed at once when it grows (see the
/// module docs); the rest faults in as it is written. At ~1.6 GB/s here, 4 MiB takes ~2.5 ms,
/// under the lock of a mailbox's senders: below the watchdog's 5 ms long-schedule threshold,
/// which committing a 16 MiB growth whole crossed, handing the sender's worker to a spare.
const COMMIT_MAX: usize = 4 << 20;

/// Bytes of spare capacity a large `Vec` that [`push`] fills commits at a time (see the module
/// docs). Guessed: 64 pages per system call, far below the watchdog's threshold under a lock.
const COMMIT_STEP: usize = 256 << 10;

/// Items of `T` per [`COMMIT_STEP`] (at least one).
const fn step_items<T>() -> usize {
    let size = size_of::<T>();
    if size == 0 || size >= COMMIT_STEP {
        1
    } else {
        COMMIT_STEP / size
    }
}

/// The capacity a vector of capacity `capacity` holding `len` items moves to so that
/// `additional` more fit, if it should move rather than `realloc`.
fn moved_capacity<T>(len: usize, capacity: usize, additional: usize) -> Option<usize> {
    let needed = len.checked_add(additional)?;
    if needed <= capacity || capacity == 0 {
        // Room already, or a first allocation (nothing to move).
        return None;
    }
    let new_capacity = needed.max(capacity.saturating_mul(2));
    (new_capacity.saturating_mul(size_of::<T>()) <= COPY_GROWTH_MAX).then_some(new_capacity)
}

/// `vec.push(item)`, growing a small full vector by moving it, and committing a large one's
/// spare capacity a step ahead of its length (see the module docs).
#[inline]
pub(crate) fn push<T>(vec: &mut Vec<T>, item: T) {
    if vec.len() == vec.capacity() {
        grow_vec(vec);
    } else if vec.len().is_multiple_of(step_items::<T>()) && is_large::<T>(vec.capacity()) {
        commit_ahead(vec, step_items::<T>());
    }
    vec.push(item);
}

/// Whether a buffer of `capacity` items of `T` is large (grown by `realloc`, its pages
/// committed by us).
fn is_large<T>(capacity: usize) -> bool {
    capacity.saturating_mul(size_of::<T>()) > COPY_GROWTH_MAX
}

/// Commits the pages of the next `items` items of `vec`'s spare capacity (fewer if it has
/// fewer).
#[inline(never)]
fn commit_ahead<T>(vec: &mut Vec<T>, items: usize) {
    let spare = vec.spare_capacity_mut();
    let items = items.min(spare.len());
    starling_scheduler::commit_spare(&mut spare[..items]);
}

#[inline(never)]
fn grow_vec<T>(vec: &mut Vec<T>) {
    if let Some(capacity) = moved_capacity::<T>(vec.len(), vec.capacity(), 1) {
        let mut bigger = Vec::with_capacity(capacity);
        bigger.append(vec);
        *vec = bigger;
    } else if grow_large(vec, 1) {
        // Up to the next step: from there `push` commits a step at a time.
        let step = step_items::<T>();
        commit_ahead(vec, step - vec.len() % step);
    }
}

/// Grows `vec` by `realloc` so that `additional` more items fit. Returns whether it grew into
/// a large buffer, whose new pages the caller commits.
fn grow_large<T>(vec: &mut Vec<T>, additional: usize) -> bool {
    let before = vec.capacity();
    vec.reserve(additional);
    vec.capacity() != before && is_large::<T>(vec.capacity())
}

/// Makes room in `deque` for `additional` more items, growing a small full deque by moving it
/// (see the module docs).
#[inline]
pub(crate) fn reserve<T>(deque: &mut VecDeque<T>, additional: usize) {
    if deque.capacity() - deque.len() < additional {
        grow_deque(deque, additional);
    }
}

#[inline(never)]
fn grow_deque<T>(deque: &mut VecDeque<T>, additional: usize) {
    if let Some(capacity) = moved_capacity::<T>(deque.len(), deque.capacity(), additional) {
        let mut bigger = VecDeque::with_capacity(capacity);
        bigger.extend(deque.drain(..));
        *deque = bigger;
    } else {
        // Through a `Vec`, whose spare capacity is one slice after its items: the conversions
        // reuse the buffer (`From<VecDeque>` rotates the items to its start first, within it:
        // at most one more move of each item per doubling), and allocate nothing for an empty
        // deque, whose first buffer `grow_large` then reserves.
        let mut vec = Vec::from(std::mem::take(deque));
        if grow_large(&mut vec, additional) {
            // A deque is written at both ends, so its spare is committed at once, in part.
            commit_ahead(&mut vec, COMMIT_MAX / size_of::<T>().max(1));
        }
        *deque = VecDeque::from(vec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small vectors move (keeping their items in order) to twice their capacity; large ones
    /// and first allocations are left to the standard growth.
    #[test]
    fn small_full_vectors_move_and_keep_their_order() {
        let mut vec: Vec<u64> = Vec::new();
        for i in 0..100_000u64 {
            let before = vec.as_ptr();
            let (len, capacity) = (vec.len(), vec.capacity());
            push(&mut vec, i);
            if len == capacity && capacity > 0 && 2 * capacity * 8 <= COPY_GROWTH_MAX {
                assert_eq!(vec.capacity(), 2 * capacity);
                assert_ne!(vec.as_ptr(), before, "grew without moving");
            }
        }
        assert!(vec.iter().copied().eq(0..100_000));

        let mut deque: VecDeque<u32> = VecDeque::new();
        // Past `COPY_GROWTH_MAX` (16,384 `u32`s) the deque grows through a `Vec` by `realloc`,
        // twice here, with its items wrapped around the ring.
        for i in 0..100_000u32 {
            // Wrap the ring around so that moving must keep the logical order.
            if i % 3 == 0 {
                deque.push_front(u32::MAX);
                deque.pop_front();
            }
            reserve(&mut deque, 1);
            deque.push_back(i);
        }
        assert!(deque.iter().copied().eq(0..100_000));
        let mut batch = VecDeque::from(vec![1u8]);
        reserve(&mut batch, 100);
        assert!(batch.capacity() >= 101);
        assert_eq!(batch, [1]);
    }

    /// A large vector that `push` fills has the rest of the current step resident before it
    /// writes there: its pages are committed ahead (one system call per step), not faulted in
    /// one by one.
    #[test]
    fn a_large_vector_is_committed_a_step_ahead_of_its_length() {
        type Item = [u64; 4];
        let step = step_items::<Item>();
        let mut vec: Vec<Item> = Vec::new();
        // 10 MiB and half a step (a 16 MiB buffer, mapped on its own by glibc).
        let len = 40 * step + step / 2;
        for i in 0..len {
            push(&mut vec, [i as u64; 4]);
        }
        // The rest of the current step, from the page after the last item written: committed,
        // never touched.
        let ahead = (vec.as_ptr() as usize + len * size_of::<Item>()).next_multiple_of(4096);
        let pages = (COMMIT_STEP / 2 - 4096) / 4096;
        let resident = crate::resident::resident_pages(ahead, pages * 4096);
        assert_eq!(
            resident, pages,
            "pages of the step ahead of the length resident"
        );
        assert!(vec
            .iter()
            .enumerate()
            .all(|(i, item)| *item == [i as u64; 4]));
    }

    #[test]
    fn only_small_full_vectors_move() {
        assert_eq!(moved_capacity::<u64>(4, 4, 1), Some(8));
        assert_eq!(moved_capacity::<u64>(3, 4, 1), None);
        assert_eq!(moved_capacity::<u64>(0, 0, 1), None);
        assert_eq!(moved_capacity::<u64>(4, 4, 100), Some(104));
        assert_eq!(moved_capacity::<u64>(8192, 8192, 1), None);
        assert_eq!(moved_capacity::<u64>(4096, 4096, 1), Some(8192));
        assert_eq!(moved_capacity::<u64>(usize::MAX, 4, 1), None);
    }
}
