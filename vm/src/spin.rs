//! A lock for short critical sections that many threads hit at once: it spins, then yields
//! the core, and never sleeps in the kernel.
//!
//! # Problem
//!
//! A million processes on two schedulers all send to one root (W1, W2). Each send appends to
//! the root's mailbox under a lock held for a few dozen nanoseconds. With `std::sync::Mutex`,
//! a sender that finds the lock taken spins a little and then sleeps on a futex; once one
//! waiter sleeps, the lock's state says "contended", so every later contender sleeps at once
//! and every unlock makes a `futex_wake` system call. The two workers fell into that convoy:
//! 7,000 futex calls in a W1 run, 92 % of them on the root's mailbox, each sleep taking a
//! scheduler thread (half the VM on this machine) away from its run queue.
//!
//! # Solution
//!
//! Test-and-test-and-set on one atomic flag. A contender waits on a plain load (its cache
//! line stays shared until the holder's release), with a spin-loop hint, and after
//! [`SPINS`] rounds gives its core away with `sched_yield`: the holder may be a thread the
//! kernel preempted inside its critical section, or one copying a large queue buffer. Unlock
//! is one store; nobody is ever woken.
//!
//! # Rule
//!
//! Only for critical sections that never block and never call the VM: no system call, no
//! lock taken inside, no wait. A long hold makes the others yield again and again instead of
//! sleeping.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spin rounds before a waiter starts yielding its core. Guessed: 64 rounds of `pause` are a
/// few microseconds at most, well above one push's hold and well below a time slice.
const SPINS: u32 = 64;

/// Spins a little, then gives the core away (see the module documentation). `spins` counts
/// the caller's rounds so far.
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < SPINS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A value behind a spin lock (see the module documentation).
pub(crate) struct SpinMutex<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out at most one guard at a time (`locked` is set by a successful
// compare-and-swap and cleared only by that guard's drop), so the value is reached by one
// thread at a time, as with `std::sync::Mutex`; it must therefore only be `Send`.
unsafe impl<T: Send> Sync for SpinMutex<T> {}

impl<T> SpinMutex<T> {
    pub(crate) const fn new(value: T) -> SpinMutex<T> {
        SpinMutex {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning and yielding while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        // Acquire: pairs with the Release of `SpinGuard::drop` (the previous holder's writes).
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { mutex: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            backoff(&mut spins);
            // Relaxed: only the compare-and-swap acquires; the load keeps waiters off the
            // holder's cache line until it lets go.
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    // Acquire: as in `lock`.
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
    }
}

/// Holds a [`SpinMutex`] until dropped (also on unwinding: a panic inside the critical
/// section releases the lock and leaves the value as the panic found it; there is no
/// poisoning, like `parking_lot`'s).
pub(crate) struct SpinGuard<'a, T> {
    mutex: &'a SpinMutex<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard is the lock's only holder (see `Sync` above) until it drops.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the guard's only live borrow.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire of `lock` (our writes to the value).
        self.mutex.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Four threads each add to a counter that a torn update would visibly break: a plain
    /// read, a yield inside the critical section, then the write.
    #[test]
    fn the_lock_is_exclusive() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 20_000;
        let counter = Arc::new(SpinMutex::new(0usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let mut guard = counter.lock();
                        let seen = *guard;
                        if round % 1000 == 0 {
                            // A holder the kernel preempts: the others must wait it out.
                            std::thread::yield_now();
                        }
                        *guard = seen + 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*counter.lock(), THREADS * ROUNDS);
    }

    #[test]
    fn a_panic_inside_releases_the_lock() {
        let mutex = SpinMutex::new(vec![1]);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut guard = mutex.lock();
            guard.push(2);
            panic!("inside the critical section");
        }));
        assert!(caught.is_err());
        assert_eq!(*mutex.lock(), vec![1, 2]);
    }
}
