//! Per-worker timer wheel: one worker's `sleep`, `receive … after` and `send_after` timers.
//!
//! # Design
//!
//! ## Problem
//!
//! Every scheduler worker needs timers for `process::sleep`, `receive … after` timeouts and
//! `send_after`. A worker may hold many thousands of them, and most `receive … after` timers are
//! cancelled long before they fire because the awaited message arrives first. The worker asks
//! three things of its timers:
//!
//! 1. insert and cancel in O(1), because they sit on the message-passing fast path;
//! 2. "when is the next timer due?", to bound how long the worker may park;
//! 3. "fire everything that is due now", in deadline order, also after the worker has been
//!    parked for seconds, without walking every millisecond it slept through.
//!
//! A timer must never fire before its deadline: a process that sleeps 5 ms must not wake after
//! 4.9 ms.
//!
//! ## Solution
//!
//! A hierarchical hashed timing wheel (Varghese and Lauck, "Hashed and Hierarchical Timing
//! Wheels", SOSP 1987, scheme 7), laid out like tokio's time driver
//! (`tokio/src/runtime/time/wheel/`): [`LEVEL_COUNT`] levels of [`SLOTS_PER_LEVEL`] slots, one
//! tick being [`TICK`]. A slot on level `L` covers `64^L` ticks, so the wheel spans `64^6` ticks
//! (about 2.2 years).
//!
//! - **Storage.** Entries live in a slab (a `Vec` of cells plus a free list). Every slot is an
//!   intrusive doubly linked list threaded through slab indices, so unlinking is O(1). A
//!   [`TimerKey`] is a slab index plus the cell's generation, so a stale key never cancels the
//!   timer that later reused its cell.
//! - **Placement.** An entry goes on the level of the highest base-64 digit in which its tick
//!   differs from the wheel's current tick (`elapsed`), in the slot given by that digit. When the
//!   current tick reaches the start of a slot on level `L ≥ 1`, that slot is *cascaded*: its
//!   entries are placed again, which puts them on a lower level.
//! - **Finding work.** One 64-bit occupancy bitmap per level gives the next occupied slot with a
//!   `rotate_right` and a `trailing_zeros`. `poll` jumps from occupied slot to occupied slot, so a
//!   worker that slept 10 s pays for the slots holding timers, not for 10 000 empty ticks.
//! - **Exactness.** The tick only buckets. Each entry keeps its exact [`Instant`] deadline, and
//!   the level-0 slot of the current tick is drained by comparing that deadline with `now`.
//!   Entries in that slot that are not yet due stay there.
//! - **Order.** `poll` first moves every due value out of the wheel into a reusable buffer, then
//!   sorts the buffer by (deadline, insertion sequence), then fires. The `fire` callback
//!   therefore never observes a half-updated wheel, and timers that are due in the same poll fire
//!   in deadline order even when they came from different slots.
//! - **Beyond the span.** A deadline more than one wheel span ahead is placed at the last tick of
//!   the span (always on the top level). It is placed again each time its slot is cascaded, until
//!   its real tick is within the span. Because a placement is never later than the entry's real
//!   tick, a cascade never fires anything early.
//!
//! ## Rejected alternatives
//!
//! - **Binary heap of deadlines.** Insert costs O(log n). Cancel is either an O(n) search or a
//!   tombstone, and a tombstone keeps the memory of a cancelled `receive … after` timer alive until
//!   its deadline passes. Most of our timers are cancelled, so the heap would mostly hold garbage.
//! - **`BTreeMap` keyed by (deadline, sequence).** O(log n) insert and cancel, a node allocation
//!   per timer, and pointer chasing on every operation. The model test uses one as its reference.
//! - **A single-level wheel with round counters** (Varghese and Lauck, scheme 6). Each revolution
//!   has to visit every long-lived entry again to decrement its round count.
//! - **Advancing one tick at a time.** After a 10 s park this is 10 000 iterations over mostly
//!   empty slots. The occupancy bitmaps skip them.
//! - **Rounding deadlines up to the next tick instead of comparing instants.** This never fires
//!   early, but it delays every timer by up to one tick, and then `poll(now)` does not fire every
//!   timer whose deadline is `<= now`.
//! - **Firing while walking the slots.** Timers that are due in one poll would fire in slot order,
//!   not in deadline order. A panicking callback would also leave the wheel half updated.
//!
//! ## Benchmark
//!
//! There is no criterion bench yet. Measured once in a scratch crate (release build, development
//! machine, so treat the numbers as orders of magnitude, not as a baseline):
//!
//! - an insert + cancel pair with 100 000 live timers spread over an hour: 78 ns;
//! - one `poll` jumping an hour ahead and firing those 100 000 timers, cascades and sort
//!   included: 24 ms, or 240 ns per timer.
//!
//! The randomised model test (`model_matches_btree_reference`) checks behaviour, not speed.
//!
//! # Invariants
//!
//! Below, `elapsed` is the wheel's current tick. The *placement* of an entry is its tick
//! clamped into `[elapsed, elapsed + WHEEL_SPAN_TICKS - 1]` when it was last placed.
//!
//! 1. Every tick before `elapsed` has been fully processed. The level-0 slot of `elapsed` may
//!    still hold entries whose exact deadline lies after the last `now` passed to `poll`.
//! 2. A placement is never later than the entry's real tick, except for a deadline that had
//!    already passed: that entry is placed at `elapsed`, on level 0. So the start of the slot
//!    holding an entry on level `L ≥ 1`, which is what [`TimerWheel::next_deadline`] reports for
//!    it, is never later than its deadline.
//! 3. A level-0 entry lies in `elapsed`'s 64-tick block, at or after `elapsed`. An entry on level
//!    `L ≥ 1` lies in a slot that starts strictly after `elapsed`. On the top level, clamped
//!    entries can belong to the next revolution. Their slot index is then at or before the
//!    current one, and their start is one wheel span later than the index suggests. So the next
//!    slot to process on a level `L ≥ 1` is the first occupied one after the current slot, in
//!    cyclic order. It follows that the lowest level with an occupied slot always holds the
//!    earliest expiration.
//! 4. Bit `s` of `occupied[L]` is set if and only if slot `s` of level `L` is non-empty.
//! 5. Every occupied slab cell is on exactly one slot list, the one named by its `level` and
//!    `slot`. Every vacant cell is on the free list and nowhere else. `Slab::live` counts the
//!    occupied cells.
//! 6. A cell's generation changes every time its entry is removed, so a [`TimerKey`] matches only
//!    the entry it was issued for (until the generation wraps after 2^32 reuses of one cell). A
//!    cell made at an index that [`TimerWheel::shrink`] cut off starts above every generation
//!    that index ever had, so the keys issued there before stay stale.

use std::time::{Duration, Instant};

/// Length of one wheel tick: the resolution at which deadlines are bucketed.
///
/// Derived: Erlang timeouts (`receive … after Ms`, `erlang:send_after`) are given in whole
/// milliseconds, and tokio's time driver uses the same 1 ms resolution. Firing stays exact to the
/// `Instant` regardless, because the tick only buckets.
const TICK: Duration = Duration::from_millis(1);

/// [`TICK`] in nanoseconds, for converting between ticks and `Duration`s without floating point.
const TICK_NANOSECONDS: u128 = TICK.as_nanos();

/// log2 of [`SLOTS_PER_LEVEL`]: the width of one base-64 digit of a tick.
const SLOT_BITS: u32 = 6;

/// Slots on each level.
///
/// Derived: 64 is the width of the `u64` occupancy bitmap, so finding the next occupied slot is a
/// single `trailing_zeros`. tokio's wheel uses the same value.
const SLOTS_PER_LEVEL: usize = 1 << SLOT_BITS;

/// Mask that extracts one base-64 digit of a tick.
const SLOT_MASK: u64 = SLOTS_PER_LEVEL as u64 - 1;

/// Number of wheel levels.
///
/// Derived: `64^6` ticks of 1 ms is about 2.2 years, more than any realistic timeout, and it is
/// tokio's value. Longer deadlines still work by re-cascading on the top level (see the module
/// docs). A seventh level would add cost to every `next_deadline` and `poll` for timers nobody
/// sets.
const LEVEL_COUNT: usize = 6;

/// Ticks covered by the whole wheel: `64^LEVEL_COUNT`, about 2.2 years at 1 ms per tick.
///
/// Derived from [`SLOT_BITS`] and [`LEVEL_COUNT`]. A placement is at most
/// `WHEEL_SPAN_TICKS - 1` ticks after the current tick.
const WHEEL_SPAN_TICKS: u64 = 1 << (SLOT_BITS as usize * LEVEL_COUNT);

/// Sentinel slab index meaning "no entry": the end of a slot list or of the free list.
///
/// This is why the slab holds at most `u32::MAX` cells (indices `0..u32::MAX`).
const NO_INDEX: u32 = u32::MAX;

/// Opaque handle to one inserted timer; generational so a stale key never cancels a later timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    /// Slab index of the cell that held the timer when the key was issued.
    index: u32,
    /// Generation of that cell when the key was issued.
    generation: u32,
}

/// One worker's timers, bucketed on a hierarchical hashed timing wheel.
///
/// Single-threaded: only the owning worker touches it, under the caller's mutex, and `&mut self`
/// is the proof. The invariants are listed in the module docs.
pub(crate) struct TimerWheel<T> {
    /// The instant of tick 0. Never changes.
    origin: Instant,
    /// The wheel's current tick (`elapsed` in the module invariants). Only `poll` advances it,
    /// and it never goes backwards.
    elapsed: u64,
    /// Storage for every live entry.
    slab: Slab<T>,
    /// Head of each slot's intrusive list, indexed `[level][slot]`; [`NO_INDEX`] when empty.
    heads: [[u32; SLOTS_PER_LEVEL]; LEVEL_COUNT],
    /// Occupancy bitmap per level: bit `s` is set if and only if `heads[level][s]` is non-empty.
    occupied: [u64; LEVEL_COUNT],
    /// Insertion counter, for breaking ties between equal deadlines in insertion order.
    next_sequence: u64,
    /// Values collected by `poll` before they are sorted and fired. It is always empty between
    /// calls and kept only to reuse its allocation.
    due: Vec<Due<T>>,
}

/// A timer that `poll` has taken out of the wheel and is about to fire.
struct Due<T> {
    /// The timer's exact deadline: the primary sort key.
    deadline: Instant,
    /// The timer's insertion sequence: breaks ties between equal deadlines.
    sequence: u64,
    /// The value handed to the `fire` callback.
    value: T,
}

/// The earliest wheel slot that needs processing, as found by [`TimerWheel::next_expiration`].
#[derive(Clone, Copy, Debug)]
struct Expiration {
    /// Level of the slot.
    level: usize,
    /// Index of the slot within its level.
    slot: usize,
    /// First tick covered by the slot: when `poll` must cascade or drain it.
    tick: u64,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel. `origin` is the instant of tick 0.
    pub(crate) fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            elapsed: 0,
            slab: Slab::new(),
            heads: [[NO_INDEX; SLOTS_PER_LEVEL]; LEVEL_COUNT],
            occupied: [0; LEVEL_COUNT],
            next_sequence: 0,
            due: Vec::new(),
        }
    }

    /// Schedules `value` to fire at `deadline`. A deadline in the past fires at the next poll.
    ///
    /// Deadlines beyond the wheel's span (about 2.2 years) are clamped into the top level and
    /// cascaded again until they are within reach. They never fire early. O(1).
    ///
    /// # Panics
    ///
    /// Panics if the wheel already holds `u32::MAX` timers.
    pub(crate) fn insert(&mut self, deadline: Instant, value: T) -> TimerKey {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let index = self.slab.insert(Entry {
            value,
            deadline,
            sequence,
            previous: NO_INDEX,
            next: NO_INDEX,
            generation: 0,
            level: 0,
            slot: 0,
        });
        self.place(index);
        TimerKey {
            index,
            generation: self.slab.entry(index).generation,
        }
    }

    /// Removes the timer in O(1).
    ///
    /// Returns its value if it had not fired or been cancelled yet. Returns `None` otherwise,
    /// including for a stale key whose cell now holds a later timer.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if !self.slab.holds(key) {
            return None;
        }
        self.unlink(key.index);
        Some(self.slab.remove(key.index).value)
    }

    /// Removes every pending timer and returns them in deadline order (ties: insertion order).
    /// Keys of the removed timers become stale, like after `cancel`.
    pub(crate) fn drain(&mut self) -> Vec<(Instant, T)> {
        let keys: Vec<TimerKey> = self
            .slab
            .cells
            .iter()
            .enumerate()
            .filter_map(|(index, cell)| match cell {
                SlabCell::Occupied(entry) => Some(TimerKey {
                    index: index as u32,
                    generation: entry.generation,
                }),
                SlabCell::Vacant { .. } => None,
            })
            .collect();
        let mut pending: Vec<(Instant, u64, T)> = keys
            .into_iter()
            .map(|key| {
                self.unlink(key.index);
                let entry = self.slab.remove(key.index);
                (entry.deadline, entry.sequence, entry.value)
            })
            .collect();
        pending.sort_by_key(|&(deadline, sequence, _)| (deadline, sequence));
        pending
            .into_iter()
            .map(|(deadline, _, value)| (deadline, value))
            .collect()
    }

    /// The earliest instant at which `poll` could fire something, or `None` if the wheel is empty.
    ///
    /// It may be earlier than the earliest deadline (the start of a slot on a higher level that
    /// must be cascaded first), but it is never later. When the earliest occupied slot is on
    /// level 0, the answer is exact: it is the smallest deadline in that slot, found by walking
    /// the slot's list, whose length is the number of timers due in that one tick. After
    /// `poll(now)` the answer is always later than `now`, so a worker that parks until this
    /// instant never spins.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let expiration = self.next_expiration()?;
        if expiration.level == 0 {
            let mut earliest: Option<Instant> = None;
            let mut index = self.heads[0][expiration.slot];
            while index != NO_INDEX {
                let entry = self.slab.entry(index);
                earliest = Some(earliest.map_or(entry.deadline, |e| e.min(entry.deadline)));
                index = entry.next;
            }
            return earliest;
        }
        Some(self.instant_of_tick(expiration.tick))
    }

    /// Fires (passes to `fire`) every timer whose deadline is `<= now`, in deadline order, with
    /// ties in insertion order.
    ///
    /// Never fires a timer before its deadline. Every due value is removed from the wheel before
    /// the first call to `fire`. If `fire` panics, the wheel stays consistent and the values
    /// that have not been fired yet are dropped. Cost: one step per occupied slot reached and per
    /// cascaded entry, never one step per elapsed tick. `now` should not go backwards. An earlier
    /// `now` is tolerated, and it fires only timers whose deadline is `<= now`.
    pub(crate) fn poll(&mut self, now: Instant, fire: &mut dyn FnMut(T)) {
        let target = self.tick_of(now).max(self.elapsed);
        while let Some(expiration) = self.next_expiration() {
            if expiration.tick > target {
                break;
            }
            self.elapsed = expiration.tick;
            if expiration.level > 0 {
                self.cascade(expiration.level, expiration.slot);
                continue;
            }
            self.collect_due(expiration.slot, now);
            if self.heads[0][expiration.slot] != NO_INDEX {
                // Timers left behind are not yet due by their exact deadline. That is only
                // possible in the slot of the target tick, and every later slot starts after it.
                assert_eq!(
                    expiration.tick, target,
                    "timer wheel: a slot before the target tick kept timers that are not due"
                );
                break;
            }
        }
        self.elapsed = target;
        // Keys are unique because sequences are, so an unstable sort gives a deterministic order.
        self.due
            .sort_unstable_by_key(|due| (due.deadline, due.sequence));
        for due in self.due.drain(..) {
            fire(due.value);
        }
    }

    /// Number of timers that have neither fired nor been cancelled.
    pub(crate) fn len(&self) -> usize {
        self.slab.live
    }

    /// Returns `true` if the wheel holds no timers.
    pub(crate) fn is_empty(&self) -> bool {
        self.slab.live == 0
    }

    /// Takes out the memory that a past peak of timers left behind, for the caller to drop
    /// (after releasing the lock it holds the wheel under): the slab's cells above the highest
    /// live timer, when they are at least half of it and at least [`MIN_SHRINK_CELLS`], and
    /// `poll`'s buffer, when it has grown past [`MIN_SHRINK_CELLS`]. Every live timer keeps its
    /// key, deadline and order. O(cells) when it shrinks the slab, O(1) when the wheel is empty.
    ///
    /// A million processes in `receive … after` at once left ~61 MiB of vacant cells in the
    /// workers' slabs for the rest of the VM's life; the VM's idle pass that gives memory back
    /// calls this for every wheel (`Shared::give_memory_back`).
    pub(crate) fn shrink(&mut self) -> Shrunk<T> {
        let due = if self.due.capacity() > MIN_SHRINK_CELLS {
            std::mem::take(&mut self.due)
        } else {
            Vec::new()
        };
        Shrunk {
            _cells: self.slab.shrink(),
            _due: due,
        }
    }

    /// Cells the slab has room for (occupied, vacant or not yet made).
    #[cfg(test)]
    fn slab_capacity(&self) -> usize {
        self.slab.cells.capacity()
    }

    /// The tick containing `instant`: whole ticks since `origin`. Saturates at 0 for instants
    /// before `origin`, and at `u64::MAX` (over 500 million years at 1 ms per tick).
    fn tick_of(&self, instant: Instant) -> u64 {
        let since_origin = instant.saturating_duration_since(self.origin);
        u64::try_from(since_origin.as_nanos() / TICK_NANOSECONDS).unwrap_or(u64::MAX)
    }

    /// The instant at which `tick` starts.
    ///
    /// # Panics
    ///
    /// Panics if that instant is not representable. This cannot happen for the start of an
    /// occupied slot: by invariant 2 it is never later than the deadline of an entry in it.
    fn instant_of_tick(&self, tick: u64) -> Instant {
        let nanoseconds = u128::from(tick) * TICK_NANOSECONDS;
        let since_origin = Duration::new(
            u64::try_from(nanoseconds / 1_000_000_000).unwrap_or(u64::MAX),
            (nanoseconds % 1_000_000_000) as u32,
        );
        self.origin.checked_add(since_origin).unwrap_or_else(|| {
            panic!(
                "timer wheel: the start of tick {tick} is not representable, yet invariant 2 \
                 puts it no later than a live deadline"
            )
        })
    }

    /// The earliest occupied slot, or `None` if the wheel is empty.
    ///
    /// By invariant 3, the lowest level with an occupied slot holds it, so this looks at most at
    /// one bitmap per level.
    fn next_expiration(&self) -> Option<Expiration> {
        let level = self.occupied.iter().position(|&bitmap| bitmap != 0)?;
        let shift = SLOT_BITS * level as u32;
        let current = ((self.elapsed >> shift) & SLOT_MASK) as u32;
        // On level 0 the slot of the current tick is due now. On higher levels the current slot
        // is either empty or (top level only) holds clamped entries of the next revolution.
        // Either way it comes last, so the search starts one slot after it. In that cyclic order
        // slot starts increase: first the rest of this revolution, then the wrapped slots.
        let first = if level == 0 { current } else { current + 1 };
        let distance = self.occupied[level].rotate_right(first).trailing_zeros();
        let slot = (first + distance) as usize % SLOTS_PER_LEVEL;
        let level_span = 1u64 << (shift + SLOT_BITS);
        let level_start = self.elapsed & !(level_span - 1);
        let mut tick = level_start + ((slot as u64) << shift);
        let already_started = if level == 0 {
            tick < self.elapsed
        } else {
            tick <= self.elapsed
        };
        if already_started {
            // Only clamped timers on the top level can sit in a slot that looks like it has
            // already started: they belong to the next revolution of the top level.
            assert_eq!(
                level,
                LEVEL_COUNT - 1,
                "timer wheel: slot {slot} of level {level} starts at tick {tick}, not after the \
                 current tick {}",
                self.elapsed
            );
            tick += level_span;
        }
        Some(Expiration { level, slot, tick })
    }

    /// Links the entry at `index` into the slot that its deadline maps to from the current tick.
    /// The entry must not be on any slot list.
    fn place(&mut self, index: u32) {
        let elapsed = self.elapsed;
        let real_tick = self.tick_of(self.slab.entry(index).deadline);
        let placement = real_tick
            .max(elapsed)
            .min(elapsed.saturating_add(WHEEL_SPAN_TICKS - 1));
        // The highest base-64 digit in which the placement differs from the current tick picks
        // the level. Or-ing in the low digit maps "no difference" to level 0. Clamped placements
        // can differ above the top digit, so cap the level at the top.
        let differing = (elapsed ^ placement) | SLOT_MASK;
        let highest_bit = u64::BITS - 1 - differing.leading_zeros();
        let level = ((highest_bit / SLOT_BITS) as usize).min(LEVEL_COUNT - 1);
        let slot = ((placement >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize;

        let head = self.heads[level][slot];
        if head != NO_INDEX {
            self.slab.entry_mut(head).previous = index;
        }
        let entry = self.slab.entry_mut(index);
        entry.level = level as u8;
        entry.slot = slot as u8;
        entry.previous = NO_INDEX;
        entry.next = head;
        self.heads[level][slot] = index;
        self.occupied[level] |= 1 << slot;
    }

    /// Unlinks the entry at `index` from its slot list, clearing the slot's occupancy bit if the
    /// list becomes empty. The entry stays in the slab.
    fn unlink(&mut self, index: u32) {
        let entry = self.slab.entry(index);
        let (level, slot) = (entry.level as usize, entry.slot as usize);
        let (previous, next) = (entry.previous, entry.next);
        if previous == NO_INDEX {
            self.heads[level][slot] = next;
            if next == NO_INDEX {
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.slab.entry_mut(previous).next = next;
        }
        if next != NO_INDEX {
            self.slab.entry_mut(next).previous = previous;
        }
    }

    /// Empties slot `slot` of `level` (at least 1) and places each of its entries again from the
    /// current tick. They land on lower levels, except clamped ones, which may stay on the top.
    fn cascade(&mut self, level: usize, slot: usize) {
        let mut index = std::mem::replace(&mut self.heads[level][slot], NO_INDEX);
        self.occupied[level] &= !(1 << slot);
        while index != NO_INDEX {
            let next = self.slab.entry(index).next;
            self.place(index);
            index = next;
        }
    }

    /// Moves every entry of level-0 slot `slot` whose deadline is `<= now` out of the slab and
    /// into `self.due`.
    fn collect_due(&mut self, slot: usize, now: Instant) {
        let mut index = self.heads[0][slot];
        while index != NO_INDEX {
            let entry = self.slab.entry(index);
            let next = entry.next;
            if entry.deadline <= now {
                self.unlink(index);
                let entry = self.slab.remove(index);
                self.due.push(Due {
                    deadline: entry.deadline,
                    sequence: entry.sequence,
                    value: entry.value,
                });
            }
            index = next;
        }
    }
}

/// The fewest cells [`TimerWheel::shrink`] gives back at once: below this the memory (64 bytes
/// a cell) is not worth a pass over the slab. Guessed: 64 KiB.
const MIN_SHRINK_CELLS: usize = 1024;

/// Memory taken out of a wheel by [`TimerWheel::shrink`]; dropping it frees it. It holds no
/// live timer. (Its fields are only ever dropped.)
#[must_use = "dropping it frees the memory: drop it outside the wheel's lock"]
pub(crate) struct Shrunk<T> {
    /// The old cell vector: vacant cells only (the live ones were moved out of it).
    _cells: Vec<SlabCell<T>>,
    /// `poll`'s old buffer, empty.
    _due: Vec<Due<T>>,
}

#[cfg(test)]
impl<T> Shrunk<T> {
    /// Bytes of memory it holds.
    fn bytes(&self) -> usize {
        self._cells.capacity() * std::mem::size_of::<SlabCell<T>>()
            + self._due.capacity() * std::mem::size_of::<Due<T>>()
    }
}

/// One live timer, stored in a slab cell and linked into exactly one wheel slot.
struct Entry<T> {
    /// The value handed to `fire`, or returned by `cancel`.
    value: T,
    /// The exact deadline. The wheel never fires the entry before it.
    deadline: Instant,
    /// Insertion sequence: breaks ties between equal deadlines.
    sequence: u64,
    /// Slab index of the previous entry in the same slot, or [`NO_INDEX`] at the head.
    previous: u32,
    /// Slab index of the next entry in the same slot, or [`NO_INDEX`] at the tail.
    next: u32,
    /// Generation of the cell while it holds this entry. Compared against [`TimerKey`]s.
    generation: u32,
    /// Level of the slot holding this entry (`0..LEVEL_COUNT`).
    level: u8,
    /// Index of the slot holding this entry within its level (`0..SLOTS_PER_LEVEL`).
    slot: u8,
}

/// One slab cell: either a live timer or a link in the free list.
enum SlabCell<T> {
    /// Holds a live timer. It is on exactly one slot list.
    Occupied(Entry<T>),
    /// Free. It is on the free list and nowhere else.
    Vacant {
        /// Generation the next entry stored in this cell will get.
        generation: u32,
        /// Next free cell, or [`NO_INDEX`] at the end of the free list.
        next_free: u32,
    },
}

/// Storage for wheel entries: a vector of cells and an intrusive free list (LIFO), so a fired or
/// cancelled entry's cell is reused before the vector grows. The vector never holds more cells
/// than the peak number of live timers, and [`Slab::shrink`] cuts it back to the highest live
/// one after the peak.
struct Slab<T> {
    /// All cells, occupied or vacant.
    cells: Vec<SlabCell<T>>,
    /// First free cell, or [`NO_INDEX`] if every cell is occupied.
    free_head: u32,
    /// Number of occupied cells.
    live: usize,
    /// The highest generation a vacant cell ever had: a new cell starts at it. A cell that
    /// `shrink` cut off may have issued keys up to one below its vacant generation, so a cell
    /// made again at its index must not start lower (invariant 6).
    generation_ceiling: u32,
}

impl<T> Slab<T> {
    /// Creates an empty slab.
    fn new() -> Self {
        Slab {
            cells: Vec::new(),
            free_head: NO_INDEX,
            live: 0,
            generation_ceiling: 0,
        }
    }

    /// Stores `entry` in a free cell (or a new one) and returns its index. The entry's
    /// `generation` is overwritten with the cell's.
    ///
    /// # Panics
    ///
    /// Panics if the slab already holds `u32::MAX` cells, because [`NO_INDEX`] is reserved.
    fn insert(&mut self, mut entry: Entry<T>) -> u32 {
        if self.free_head == NO_INDEX {
            let index = u32::try_from(self.cells.len())
                .ok()
                .filter(|&index| index != NO_INDEX)
                .expect("timer wheel: more than u32::MAX live timers on one worker");
            entry.generation = self.generation_ceiling;
            self.cells.push(SlabCell::Occupied(entry));
            self.live += 1;
            return index;
        }
        let index = self.free_head;
        let cell = &mut self.cells[index as usize];
        let SlabCell::Vacant {
            generation,
            next_free,
        } = *cell
        else {
            panic!("timer wheel: free-list cell {index} is occupied");
        };
        self.free_head = next_free;
        entry.generation = generation;
        *cell = SlabCell::Occupied(entry);
        self.live += 1;
        index
    }

    /// Empties the occupied cell at `index`, puts it on the free list and returns its entry.
    fn remove(&mut self, index: u32) -> Entry<T> {
        let cell = &mut self.cells[index as usize];
        let generation = match cell {
            SlabCell::Occupied(entry) => entry.generation.wrapping_add(1),
            SlabCell::Vacant { .. } => panic!("timer wheel: removing vacant cell {index}"),
        };
        self.generation_ceiling = self.generation_ceiling.max(generation);
        let vacant = SlabCell::Vacant {
            generation,
            next_free: self.free_head,
        };
        let SlabCell::Occupied(entry) = std::mem::replace(cell, vacant) else {
            unreachable!("the cell was checked to be occupied above");
        };
        self.free_head = index;
        self.live -= 1;
        entry
    }

    /// Returns `true` if `key` names a live entry: its cell is occupied by the generation the key
    /// was issued with.
    fn holds(&self, key: TimerKey) -> bool {
        matches!(
            self.cells.get(key.index as usize),
            Some(SlabCell::Occupied(entry)) if entry.generation == key.generation
        )
    }

    /// Cuts the cells above the highest occupied one off, if they are worth it (see
    /// [`TimerWheel::shrink`]), and returns the old vector holding them. Occupied cells keep
    /// their indices; the free list is rebuilt lowest index first, so new timers fill the slab
    /// from the bottom and its top can be cut again.
    fn shrink(&mut self) -> Vec<SlabCell<T>> {
        let capacity = self.cells.capacity();
        let top = if self.live == 0 {
            0
        } else if self.live.saturating_mul(2) > capacity {
            // At least half is live: at most half could be cut, and not before a scan.
            return Vec::new();
        } else {
            self.cells
                .iter()
                .rposition(|cell| matches!(cell, SlabCell::Occupied(_)))
                .map_or(0, |highest| highest + 1)
        };
        if capacity - top < MIN_SHRINK_CELLS || top > capacity / 2 {
            return Vec::new();
        }
        // The ceiling already covers the cells cut off: it is raised at every `remove`.
        let mut kept = Vec::with_capacity(top);
        kept.extend(self.cells.drain(..top));
        let old = std::mem::replace(&mut self.cells, kept);
        self.free_head = NO_INDEX;
        for (index, cell) in self.cells.iter_mut().enumerate().rev() {
            if let SlabCell::Vacant { next_free, .. } = cell {
                *next_free = self.free_head;
                self.free_head = index as u32;
            }
        }
        old
    }

    /// The entry at `index`, which must be occupied (it is reached through a slot list).
    fn entry(&self, index: u32) -> &Entry<T> {
        match &self.cells[index as usize] {
            SlabCell::Occupied(entry) => entry,
            SlabCell::Vacant { .. } => panic!("timer wheel: slot list reaches vacant cell {index}"),
        }
    }

    /// The entry at `index`, mutably. It must be occupied (it is reached through a slot list).
    fn entry_mut(&mut self, index: u32) -> &mut Entry<T> {
        match &mut self.cells[index as usize] {
            SlabCell::Occupied(entry) => entry,
            SlabCell::Vacant { .. } => panic!("timer wheel: slot list reaches vacant cell {index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// Milliseconds per second, for readable deadlines.
    const SECOND: u64 = 1_000;
    /// Milliseconds per minute.
    const MINUTE: u64 = 60 * SECOND;
    /// Milliseconds per hour.
    const HOUR: u64 = 60 * MINUTE;
    /// Milliseconds per day.
    const DAY: u64 = 24 * HOUR;

    /// Tiny xorshift64 generator (Marsaglia, "Xorshift RNGs", 2003), so the tests need no crates.
    struct XorShift(u64);

    impl XorShift {
        /// The next pseudo-random value; never 0 for a non-zero seed.
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Uniform-ish in `0..bound` (modulo bias is irrelevant here).
        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// The instant `milliseconds` after `origin`.
    fn at_ms(origin: Instant, milliseconds: u64) -> Instant {
        origin + Duration::from_millis(milliseconds)
    }

    /// The instant `microseconds` after `origin`.
    fn at_us(origin: Instant, microseconds: u64) -> Instant {
        origin + Duration::from_micros(microseconds)
    }

    /// Polls and returns the fired values in firing order.
    fn poll_values<T>(wheel: &mut TimerWheel<T>, now: Instant) -> Vec<T> {
        let mut fired = Vec::new();
        wheel.poll(now, &mut |value| fired.push(value));
        fired
    }

    #[test]
    fn smoke() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        wheel.insert(at_ms(origin, 10), "ten");
        wheel.insert(at_ms(origin, 5), "five");
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.next_deadline(), Some(at_ms(origin, 5)));
        assert!(poll_values(&mut wheel, at_ms(origin, 4)).is_empty());
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 5)), ["five"]);
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 100)), ["ten"]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn past_deadlines_fire_at_next_poll() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        wheel.poll(at_ms(origin, 1_000), &mut |_: u32| {
            panic!("nothing inserted")
        });
        wheel.insert(at_ms(origin, 10), 1);
        wheel.insert(origin, 2);
        wheel.insert(at_us(origin, 999_999), 3);
        // Before `origin`, if the platform's clock allows it.
        if let Some(before_origin) = origin.checked_sub(Duration::from_secs(1)) {
            wheel.insert(before_origin, 0);
        } else {
            wheel.insert(origin, 0);
        }
        assert!(wheel.next_deadline().unwrap() <= at_ms(origin, 1_000));
        let fired = poll_values(&mut wheel, at_ms(origin, 1_000));
        assert_eq!(fired, [0, 2, 1, 3]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn exact_within_one_tick() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        wheel.insert(at_us(origin, 7_600), 'b');
        wheel.insert(at_us(origin, 7_300), 'a');
        assert!(poll_values(&mut wheel, at_us(origin, 7_000)).is_empty());
        assert_eq!(wheel.next_deadline(), Some(at_us(origin, 7_300)));
        assert!(poll_values(&mut wheel, at_us(origin, 7_299)).is_empty());
        assert_eq!(poll_values(&mut wheel, at_us(origin, 7_300)), ['a']);
        // The exact answer keeps a worker that parks until `next_deadline` from spinning.
        assert_eq!(wheel.next_deadline(), Some(at_us(origin, 7_600)));
        assert!(poll_values(&mut wheel, at_us(origin, 7_599)).is_empty());
        assert_eq!(poll_values(&mut wheel, at_us(origin, 7_600)), ['b']);
    }

    #[test]
    fn never_fires_early() {
        let origin = Instant::now();
        let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut wheel = TimerWheel::new(origin);
        let mut remaining = 0usize;
        for _ in 0..20_000 {
            // From 0 ms to 5 hours, at microsecond resolution.
            let deadline = at_us(origin, random.below(5 * HOUR * 1_000));
            wheel.insert(deadline, deadline);
            remaining += 1;
        }
        let mut now_us = 0;
        while !wheel.is_empty() {
            // Steps from 1 µs up to about 2 minutes, so some polls land mid-tick and some jump.
            let magnitude = random.below(28) as u32;
            now_us += 1 + random.below(1 << magnitude);
            let now = at_us(origin, now_us);
            let mut previous: Option<Instant> = None;
            wheel.poll(now, &mut |deadline| {
                assert!(deadline <= now, "fired {deadline:?} early at {now:?}");
                assert!(previous.is_none_or(|previous| previous <= deadline));
                previous = Some(deadline);
                remaining -= 1;
            });
            assert_eq!(wheel.len(), remaining);
            if let Some(next) = wheel.next_deadline() {
                assert!(
                    next > now,
                    "next_deadline {next:?} not after poll instant {now:?}"
                );
            }
        }
    }

    #[test]
    fn fires_in_deadline_order_with_ties_in_insertion_order() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        // Spread over several levels, inserted out of order, with ties.
        let deadlines_ms = [
            70 * SECOND,
            3,
            4_100,
            3,
            65,
            70 * SECOND,
            0,
            4_100,
            64,
            2 * HOUR,
            3,
        ];
        for (insertion, &deadline) in deadlines_ms.iter().enumerate() {
            wheel.insert(at_ms(origin, deadline), (deadline, insertion));
        }
        let fired = poll_values(&mut wheel, at_ms(origin, 3 * HOUR));
        let mut expected: Vec<(u64, usize)> = deadlines_ms.iter().copied().zip(0..).collect();
        expected.sort();
        assert_eq!(fired, expected);
    }

    #[test]
    fn drain_returns_everything_in_order_and_invalidates_keys() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let late = wheel.insert(at_ms(origin, 5 * DAY), "late");
        let early = wheel.insert(at_ms(origin, 3), "early");
        let tie = wheel.insert(at_ms(origin, 3), "tie");
        let drained: Vec<_> = wheel.drain().into_iter().map(|(_, value)| value).collect();
        assert_eq!(drained, ["early", "tie", "late"]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        for key in [late, early, tie] {
            assert_eq!(wheel.cancel(key), None);
        }
        let again = wheel.insert(at_ms(origin, 1), "again");
        assert_eq!(wheel.cancel(early), None);
        assert_eq!(wheel.cancel(again), Some("again"));
    }

    #[test]
    fn cancel_before_fire_returns_value_and_it_never_fires() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let keep = wheel.insert(at_ms(origin, 20), "keep");
        let cancelled = wheel.insert(at_ms(origin, 10), "cancelled");
        let far = wheel.insert(at_ms(origin, 5 * DAY), "far");
        assert_eq!(wheel.cancel(cancelled), Some("cancelled"));
        assert_eq!(wheel.cancel(far), Some("far"));
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_deadline(), Some(at_ms(origin, 20)));
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 10 * DAY)), ["keep"]);
        assert_eq!(wheel.cancel(keep), None);
        assert_eq!(wheel.cancel(cancelled), None);
    }

    #[test]
    fn cancel_after_fire_returns_none() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let key = wheel.insert(at_ms(origin, 3), 42);
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 3)), [42]);
        assert_eq!(wheel.cancel(key), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn stale_key_after_slot_reuse_returns_none() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let first = wheel.insert(at_ms(origin, 10), 1);
        assert_eq!(wheel.cancel(first), Some(1));
        let second = wheel.insert(at_ms(origin, 10), 2);
        assert_eq!(first.index, second.index, "the freed cell should be reused");
        assert_ne!(first, second);
        assert_eq!(wheel.cancel(first), None);
        assert_eq!(wheel.len(), 1);
        // Reuse after firing, too.
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 10)), [2]);
        let third = wheel.insert(at_ms(origin, 20), 3);
        assert_eq!(third.index, second.index);
        assert_eq!(wheel.cancel(second), None);
        assert_eq!(wheel.cancel(third), Some(3));
    }

    #[test]
    fn slab_reuses_cells() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        for round in 0..1_000u64 {
            let a = wheel.insert(at_ms(origin, round % 7), round);
            let b = wheel.insert(at_ms(origin, HOUR + round), round);
            assert_eq!(wheel.cancel(b), Some(round));
            if round % 2 == 0 {
                assert_eq!(wheel.cancel(a), Some(round));
            } else {
                assert_eq!(poll_values(&mut wheel, at_ms(origin, round)), [round]);
            }
        }
        assert!(wheel.is_empty());
        assert_eq!(wheel.slab.cells.len(), 2);
    }

    #[test]
    fn entry_stays_small() {
        // value + 16-byte Instant + sequence + two links + generation + level + slot.
        assert!(std::mem::size_of::<SlabCell<()>>() <= 48);
    }

    #[test]
    fn cascades_from_upper_levels_fire_on_time() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        // 100 ms (level 1), 5 s (2), 10 min (3), 3 h (4), 30 days (5) and 5 years (beyond the
        // span, so clamped and cascaded again). Each is also tried 0.3 ms into its millisecond.
        let deadlines_ms = [
            100,
            5 * SECOND,
            10 * MINUTE,
            3 * HOUR,
            30 * DAY,
            5 * 365 * DAY,
        ];
        for &deadline_ms in &deadlines_ms {
            for offset_us in [0, 300] {
                let deadline = at_us(origin, deadline_ms * 1_000 + offset_us);
                wheel.insert(deadline, deadline);
            }
        }
        let mut fired_at: HashMap<Instant, Instant> = HashMap::new();
        let mut poll = |wheel: &mut TimerWheel<Instant>, now: Instant| {
            wheel.poll(now, &mut |deadline| {
                assert!(deadline <= now, "fired {deadline:?} early at {now:?}");
                fired_at.insert(deadline, now);
            });
        };
        for &deadline_ms in &deadlines_ms {
            // Coarse polls on the way: each one jumps and cascades without firing.
            for fraction in [4, 2] {
                poll(
                    &mut wheel,
                    at_ms(origin, deadline_ms - deadline_ms / fraction),
                );
            }
            poll(&mut wheel, at_ms(origin, deadline_ms - 3));
            // Then 1 ms steps across the deadline.
            for step in 0..6 {
                poll(&mut wheel, at_ms(origin, deadline_ms - 2 + step));
            }
        }
        assert!(wheel.is_empty());
        assert_eq!(fired_at.len(), deadlines_ms.len() * 2);
        for (deadline, fired) in fired_at {
            assert!(fired >= deadline);
            assert!(
                fired - deadline <= TICK,
                "deadline {deadline:?} fired {:?} late",
                fired - deadline
            );
        }
    }

    /// Regression test: a clamped timer of the next top-level revolution can sit in the top
    /// level's current slot. It must not hide a later slot of this revolution, which is due
    /// first.
    #[test]
    fn clamped_timer_in_current_top_slot_does_not_hide_later_slots() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let top_slot_ticks = 1u64 << (SLOT_BITS * (LEVEL_COUNT as u32 - 1));
        let start = 4 * top_slot_ticks + top_slot_ticks / 2;
        wheel.poll(at_ms(origin, start), &mut |_: &str| unreachable!());
        // Clamped to `start + WHEEL_SPAN_TICKS - 1`: top level, slot 4, next revolution.
        wheel.insert(at_ms(origin, start + 5 * 365 * DAY), "far");
        // Top level, slot 5, this revolution.
        let near = start + top_slot_ticks;
        wheel.insert(at_ms(origin, near), "near");
        assert!(wheel.next_deadline().unwrap() <= at_ms(origin, near));
        assert!(poll_values(&mut wheel, at_ms(origin, near - 1)).is_empty());
        assert_eq!(poll_values(&mut wheel, at_ms(origin, near)), ["near"]);
        assert_eq!(wheel.len(), 1);
    }

    #[test]
    fn far_jump_fires_everything_in_order() {
        // A worker that parked for hours: one poll, no tick-by-tick walk.
        let origin = Instant::now();
        let mut random = XorShift(7);
        let mut wheel = TimerWheel::new(origin);
        let mut expected = Vec::new();
        for sequence in 0..10_000u64 {
            let deadline = at_us(origin, random.below(10 * HOUR * 1_000));
            wheel.insert(deadline, (deadline, sequence));
            expected.push((deadline, sequence));
        }
        expected.sort();
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 10 * HOUR)), expected);
        assert!(wheel.is_empty());
    }

    /// Random mix of insert, cancel (live and stale keys) and poll, checked against a `BTreeMap`
    /// keyed by (deadline, sequence).
    #[test]
    fn model_matches_btree_reference() {
        const OPERATIONS: usize = 100_000;
        let origin = Instant::now();
        let mut random = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let mut wheel = TimerWheel::new(origin);
        let mut reference: BTreeMap<(Instant, u64), TimerKey> = BTreeMap::new();
        let mut live_keys: Vec<(TimerKey, Instant, u64)> = Vec::new();
        let mut dead_keys: Vec<TimerKey> = Vec::new();
        let mut now_us: u64 = 0;
        let mut sequence: u64 = 0;
        let mut peak_live = 0;
        for _ in 0..OPERATIONS {
            match random.below(100) {
                0..=49 => {
                    let offset_us = match random.below(10) {
                        0 => 0,
                        1..=4 => random.below(5_000),
                        5..=7 => random.below(100 * SECOND * 1_000),
                        8 => random.below(3 * DAY * 1_000),
                        _ => random.below(4 * 365 * DAY * 1_000),
                    };
                    // One insert in ten lands in the past.
                    let deadline_us = if random.below(10) == 0 {
                        now_us.saturating_sub(offset_us)
                    } else {
                        now_us + offset_us
                    };
                    let deadline = at_us(origin, deadline_us);
                    let key = wheel.insert(deadline, sequence);
                    reference.insert((deadline, sequence), key);
                    live_keys.push((key, deadline, sequence));
                    sequence += 1;
                }
                50..=69 => {
                    if random.below(4) == 0 && !dead_keys.is_empty() {
                        let key = dead_keys[random.below(dead_keys.len() as u64) as usize];
                        assert_eq!(wheel.cancel(key), None);
                    } else if !live_keys.is_empty() {
                        let position = random.below(live_keys.len() as u64) as usize;
                        let (key, deadline, value) = live_keys.swap_remove(position);
                        let in_reference = reference.remove(&(deadline, value)).is_some();
                        let cancelled = wheel.cancel(key);
                        // A fired timer stays in `live_keys` until it is picked here.
                        assert_eq!(cancelled, in_reference.then_some(value));
                        dead_keys.push(key);
                    }
                }
                _ => {
                    now_us += match random.below(10) {
                        0 => 0,
                        1..=5 => random.below(2_000),
                        6..=8 => random.below(200 * SECOND * 1_000),
                        _ => random.below(20 * DAY * 1_000),
                    };
                    let now = at_us(origin, now_us);
                    // Sequences stay below `u64::MAX`, so this splits at "deadline <= now".
                    let later = reference.split_off(&(now, u64::MAX));
                    let due = std::mem::replace(&mut reference, later);
                    dead_keys.extend(due.values().copied());
                    let expected: Vec<u64> = due.keys().map(|&(_, value)| value).collect();
                    assert_eq!(poll_values(&mut wheel, now), expected);
                    match (wheel.next_deadline(), reference.keys().next()) {
                        (None, None) => {}
                        (Some(next), Some(&(earliest, _))) => {
                            assert!(next <= earliest, "next_deadline later than a deadline");
                            assert!(next > now, "next_deadline not after the poll instant");
                        }
                        (next, earliest) => panic!("next_deadline {next:?} vs {earliest:?}"),
                    }
                }
            }
            assert_eq!(wheel.len(), reference.len());
            assert_eq!(wheel.is_empty(), reference.is_empty());
            peak_live = peak_live.max(reference.len());
            if dead_keys.len() > 1_000 {
                dead_keys.drain(..500);
            }
        }
        // The slab never grows past the peak live count.
        assert!(wheel.slab.cells.len() <= peak_live);
    }

    #[test]
    fn shrink_gives_back_the_cells_of_a_past_peak_and_keeps_every_live_timer() {
        let origin = Instant::now();
        let mut random = XorShift(0x5EED_0F5A_1B2C_3D4E);
        let mut wheel = TimerWheel::new(origin);
        let peak = 10_000;
        let keys: Vec<(TimerKey, u64)> = (0..peak)
            .map(|value| {
                let deadline = random.below(HOUR);
                (wheel.insert(at_ms(origin, deadline), value), deadline)
            })
            .collect();
        // The first ten timers (the lowest cells) stay; the rest are cancelled.
        for &(key, _) in &keys[10..] {
            assert!(wheel.cancel(key).is_some());
        }
        assert!(wheel.slab_capacity() >= peak as usize);
        let shrunk = wheel.shrink();
        assert!(
            shrunk.bytes() >= (peak as usize - 10) * std::mem::size_of::<SlabCell<u64>>(),
            "gave back {} bytes",
            shrunk.bytes()
        );
        drop(shrunk);
        assert_eq!(wheel.slab_capacity(), 10);
        assert_eq!(wheel.len(), 10);
        // New timers reuse the cut-off indices, yet no key of the cancelled ones matches them.
        let fresh: Vec<TimerKey> = (peak..2 * peak)
            .map(|value| wheel.insert(at_ms(origin, 2 * HOUR + value), value))
            .collect();
        for &(key, _) in &keys[10..] {
            assert_eq!(wheel.cancel(key), None, "a stale key cancelled a new timer");
        }
        assert_eq!(wheel.len(), 10 + peak as usize);
        // The surviving keys still work, and the survivors fire in deadline order.
        for &(key, _) in &keys[..5] {
            assert!(wheel.cancel(key).is_some());
        }
        let mut expected: Vec<(u64, u64)> =
            (5..10).map(|value| (keys[value].1, value as u64)).collect();
        expected.sort();
        let fired = poll_values(&mut wheel, at_ms(origin, HOUR));
        assert_eq!(
            fired,
            expected.iter().map(|&(_, value)| value).collect::<Vec<_>>()
        );
        assert_eq!(wheel.cancel(fresh[0]), Some(peak));
        assert_eq!(wheel.len(), peak as usize - 1);
    }

    #[test]
    fn shrink_empties_an_empty_wheel_and_its_poll_buffer() {
        let origin = Instant::now();
        let mut wheel = TimerWheel::new(origin);
        let keys: Vec<TimerKey> = (0..5_000u32)
            .map(|value| wheel.insert(at_ms(origin, 10), value))
            .collect();
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 10)).len(), 5_000);
        let shrunk = wheel.shrink();
        let least =
            5_000 * (std::mem::size_of::<SlabCell<u32>>() + std::mem::size_of::<Due<u32>>());
        assert!(
            shrunk.bytes() >= least,
            "gave back {} bytes",
            shrunk.bytes()
        );
        drop(shrunk);
        assert_eq!(wheel.slab_capacity(), 0);
        let again = wheel.insert(at_ms(origin, 20), 7);
        for key in keys {
            assert_eq!(wheel.cancel(key), None);
        }
        assert_eq!(poll_values(&mut wheel, at_ms(origin, 20)), [7]);
        assert_eq!(wheel.cancel(again), None);
    }

    /// A wheel holding `count` timers, timer `value` due at `value` ms, and their keys in order
    /// (the cells fill from the bottom, so key `i` is cell `i`).
    fn filled(origin: Instant, count: u32) -> (TimerWheel<u32>, Vec<TimerKey>) {
        let mut wheel = TimerWheel::new(origin);
        let keys = (0..count)
            .map(|value| wheel.insert(at_ms(origin, u64::from(value)), value))
            .collect();
        (wheel, keys)
    }

    #[test]
    fn shrink_leaves_a_busy_or_small_slab_alone() {
        let origin = Instant::now();
        // Most cells live.
        let (mut busy, keys) = filled(origin, 4_000);
        for &key in &keys[..1_000] {
            busy.cancel(key);
        }
        let capacity = busy.slab_capacity();
        assert_eq!(busy.shrink().bytes(), 0);
        assert_eq!(busy.slab_capacity(), capacity);
        // The highest cell live: nothing above it to cut.
        let (mut top, keys) = filled(origin, 4_000);
        for &key in &keys[..3_999] {
            top.cancel(key);
        }
        assert_eq!(top.shrink().bytes(), 0);
        assert_eq!(poll_values(&mut top, at_ms(origin, 4_000)), [3_999]);
        // Too few cells to be worth it.
        let (mut small, keys) = filled(origin, MIN_SHRINK_CELLS as u32 / 2);
        for key in keys {
            small.cancel(key);
        }
        assert_eq!(small.shrink().bytes(), 0);
    }
}
