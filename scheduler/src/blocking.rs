//! The blocking pool: OS threads for work that would hold a scheduler (file I/O, blocking
//! syscalls, long computations), so that the process waiting for it parks instead.
//!
//! The pool is bounded (`max_threads`) and elastic: a job starts a new thread only when no
//! thread is idle and the bound is not reached, and a thread that stays idle for `idle_timeout`
//! exits. Jobs beyond the bound wait in a FIFO queue. The defaults follow tokio's blocking pool
//! (512 threads, 10 s idle timeout), which has served that role for years.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Default most threads of a blocking pool (tokio's `max_blocking_threads`).
pub const DEFAULT_BLOCKING_THREADS: usize = 512;

/// Default time an idle blocking thread waits for a job before it exits (tokio's
/// `thread_keep_alive`).
pub const DEFAULT_BLOCKING_IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

struct PoolShared {
    /// Everything mutable, under one mutex: jobs are coarse (they block), so contention is low.
    state: Mutex<PoolState>,
    /// Idle threads wait here for jobs.
    available: Condvar,
    max_threads: usize,
    idle_timeout: Duration,
    name: String,
}

/// A bounded, elastic pool of OS threads for blocking jobs.
#[derive(Clone)]
pub struct BlockingPool {
    shared: Arc<PoolShared>,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPool")
            .field("threads", &self.threads())
            .field("max_threads", &self.shared.max_threads)
            .finish()
    }
}

impl BlockingPool {
    /// A pool of at most `max_threads` threads (at least 1), none started yet.
    pub fn new(max_threads: usize, idle_timeout: Duration, name: String) -> BlockingPool {
        BlockingPool {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                available: Condvar::new(),
                max_threads: max_threads.max(1),
                idle_timeout,
                name,
            }),
        }
    }

    /// Threads alive now.
    pub fn threads(&self) -> usize {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .threads
    }

    /// Runs `job` on a pool thread. A job that panics ends only itself (the panic is the job's
    /// business: wrap it in `catch_unwind` to report it). After `shutdown`, jobs are dropped.
    pub fn submit(&self, job: Job) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.shutdown {
            return;
        }
        state.queue.push_back(job);
        if state.idle > state.queue.len() - 1 {
            drop(state);
            self.shared.available.notify_one();
            return;
        }
        if state.threads < self.shared.max_threads {
            state.threads += 1;
            drop(state);
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(self.shared.name.clone())
                .spawn(move || work(shared));
            if spawned.is_err() {
                // The OS refused a thread: the queued job waits for a running one.
                self.shared
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .threads -= 1;
            }
        }
    }

    /// Stops accepting jobs and lets idle threads exit. Threads inside a job finish it first
    /// (they are not joined: a job may block for as long as it likes).
    pub fn shutdown(&self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.shutdown = true;
        state.queue.clear();
        drop(state);
        self.shared.available.notify_all();
    }
}

/// A pool thread's body.
fn work(shared: Arc<PoolShared>) {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        if state.shutdown {
            break;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .available
            .wait_timeout(state, shared.idle_timeout)
            .unwrap_or_else(|e| e.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.queue.is_empty() {
            break;
        }
    }
    state.threads -= 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn runs_every_job_and_stays_bounded() {
        let pool = BlockingPool::new(4, Duration::from_secs(10), "test-blocking".into());
        let (done, finished) = mpsc::channel();
        let peak = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        for _ in 0..32 {
            let done = done.clone();
            let peak = peak.clone();
            let running = running.clone();
            pool.submit(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                done.send(()).unwrap();
            }));
        }
        for _ in 0..32 {
            finished.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(pool.threads() <= 4);
    }

    #[test]
    fn idle_threads_exit() {
        let pool = BlockingPool::new(8, Duration::from_millis(20), "test-blocking".into());
        let (done, finished) = mpsc::channel();
        for _ in 0..4 {
            let done = done.clone();
            pool.submit(Box::new(move || {
                std::thread::sleep(Duration::from_millis(5));
                done.send(()).unwrap();
            }));
        }
        for _ in 0..4 {
            finished.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool.threads() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "idle threads never exited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_pool() {
        let pool = BlockingPool::new(1, Duration::from_secs(10), "test-blocking".into());
        pool.submit(Box::new(|| panic!("job panics")));
        let (done, finished) = mpsc::channel();
        pool.submit(Box::new(move || done.send(7).unwrap()));
        assert_eq!(finished.recv_timeout(Duration::from_secs(30)).unwrap(), 7);
    }
}
