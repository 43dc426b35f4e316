//! Coordinates idle workers: who sleeps, who searches for work, and whom to wake.
//!
//! # Protocol
//!
//! Workers are *running* (executing processes), *searching* (just woken, looking for work to
//! steal) or *sleeping* (parked, listed in `sleepers`).
//!
//! Submitting work (a spawn, a wake-up onto a stealable queue, an injection from outside):
//!
//! 1. Make the work visible (push onto a deque or the injector).
//! 2. `SeqCst` fence.
//! 3. If some worker is searching, stop: it will find the work (see step c).
//! 4. Otherwise, if some worker sleeps, wake one and count it as searching.
//!
//! Going to sleep:
//!
//! a. Register in `sleepers` (and stop counting as searching).
//! b. `SeqCst` fence.
//! c. Look at every queue once more; if anything is there, deregister and run it.
//! d. Otherwise park.
//!
//! Steps 2/b make the two sides a Dekker pair: either the submitter sees the sleeper (or the
//! searcher) or the sleeper sees the work, so no work is left behind with every worker asleep.
//! Only one sleeper is woken per submission, and none while someone searches, so a burst of
//! spawns does not wake the whole machine; a searcher that finds work and was the last one
//! wakes the next (`transition_from_searching`), which spreads a burst across cores.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Idle-worker bookkeeping of one runtime.
pub(crate) struct Idle {
    /// Workers that are searching. Any thread, SeqCst (Dekker pair with the submitters).
    searching: AtomicUsize,
    /// Length of `sleepers`, readable without the lock. SeqCst, as `searching`.
    sleeping: AtomicUsize,
    /// Indices of sleeping workers. Under this mutex.
    sleepers: Mutex<Vec<usize>>,
}

impl Idle {
    pub(crate) fn new() -> Idle {
        Idle {
            searching: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            sleepers: Mutex::new(Vec::new()),
        }
    }

    /// Step 2–4 of the protocol. Returns the index of the worker the caller must unpark.
    pub(crate) fn worker_to_notify(&self) -> Option<usize> {
        // SeqCst fence: step 2; pairs with the fence in `transition_to_sleeping`'s caller.
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) > 0 || self.sleeping.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        let index = sleepers.pop()?;
        // SeqCst: the woken worker counts as searching before it runs, so concurrent submitters
        // do not wake a second one for the same work.
        self.searching.fetch_add(1, Ordering::SeqCst);
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        Some(index)
    }

    /// A worker that ran out of work wants to search (spin) before it sleeps. Returns `true`
    /// if it may: at most half the workers search at once (tokio's rule), so spinning never
    /// takes every core from the workers that have work.
    pub(crate) fn transition_to_searching(&self, workers: usize) -> bool {
        let mut searching = self.searching.load(Ordering::SeqCst);
        loop {
            if 2 * searching >= workers.max(2) {
                return false;
            }
            // SeqCst: see the fields.
            match self.searching.compare_exchange(
                searching,
                searching + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => searching = actual,
            }
        }
    }

    /// A searching worker found work. Returns `true` if it was the last searcher: the caller
    /// **must** then notify another worker, since more work may be waiting.
    pub(crate) fn transition_from_searching(&self) -> bool {
        // SeqCst: part of the Dekker pair with submitters (step 3).
        self.searching.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Step a. The caller then fences (step b) and re-checks all queues (step c).
    pub(crate) fn transition_to_sleeping(&self, index: usize, was_searching: bool) {
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        sleepers.push(index);
        // SeqCst: see the fields.
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        if was_searching {
            self.searching.fetch_sub(1, Ordering::SeqCst);
        }
        drop(sleepers);
        // Step b.
        fence(Ordering::SeqCst);
    }

    /// After a park returned, or when step c found work: removes `index` from the sleepers.
    /// Returns `true` if it was still listed (the worker woke by itself: timeout or found
    /// work); `false` if a submitter already removed it and counted it as searching.
    pub(crate) fn transition_from_sleeping(&self, index: usize) -> bool {
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        match sleepers.iter().position(|&i| i == index) {
            Some(at) => {
                sleepers.swap_remove(at);
                // SeqCst: see the fields.
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Workers listed as sleeping (SeqCst, see the fields).
    pub(crate) fn sleeping(&self) -> usize {
        self.sleeping.load(Ordering::SeqCst)
    }

    /// Wakes everybody (shutdown): returns all sleepers and empties the list. Like
    /// `worker_to_notify`, each of them now counts as searching.
    pub(crate) fn take_all_sleepers(&self) -> Vec<usize> {
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        // SeqCst: see the fields.
        self.searching.fetch_add(sleepers.len(), Ordering::SeqCst);
        self.sleeping.fetch_sub(sleepers.len(), Ordering::SeqCst);
        std::mem::take(&mut *sleepers)
    }
}
