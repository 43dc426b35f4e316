//! The process control block: everything the VM keeps about one process.
//!
//! # Fields by access discipline
//!
//! - Immutable after creation: `pid`, `vm`.
//! - Owner only (the process itself, from its coroutine): the mailbox's private queue, `locals`.
//! - Any thread: the mailbox's outer queue (under its mutex); the signal state (kill reason,
//!   `trap_exit`, exit hook, links, monitors, name) and `dead`, under `signals`; `killed` and
//!   `exiting` atomically.
//!
//! # Layout
//!
//! `Process`, `Fiber` and `Mailbox` are `repr(C)`, in an order chosen for the cache: the fields
//! other threads write on every send (the fiber's state word, which a waker flips, then the
//! mailbox's incoming queue and its counters) sit together, from the end of the fiber to the
//! start of the mailbox; the slice budget, which the running process writes at every VM call,
//! sits at the start of the fiber, more than a cache line away. Before, with the compiler's
//! order, the budget shared a line with the mailbox lock: in W1 (a million children sending to
//! one spawning root) the root's budget update missed the cache after every child's send, ~5 %
//! of all samples.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use starling_scheduler::{Fiber, FiberStatus, Handle, Schedulable};

use crate::exit::{ExitReason, Status};
use crate::kernel::SpawnOptions;
use crate::local::Locals;
use crate::mailbox::{Drained, Mailbox};
use crate::pid::Pid;
use crate::signal::{self, SignalState};
use crate::vm::VmShared;

/// Called with the exit reason when a process ends (used by `Vm::run`).
pub(crate) type ExitHook = Box<dyn FnOnce(&ExitReason) + Send>;

/// The unwinding payload that ends a process with the reason stored in its kill state. It
/// never reaches the panic hook (it is raised with `resume_unwind`).
pub(crate) struct ExitUnwind;

/// One process.
#[repr(C)]
pub(crate) struct Process {
    fiber: Fiber,
    pub(crate) mailbox: Mailbox,
    pub(crate) pid: Pid,
    pub(crate) vm: Arc<VmShared>,
    pub(crate) locals: Locals,
    /// Kill reason, exit hook, links, monitors, trap_exit, name; see `signal.rs`.
    signals: Mutex<SignalState>,
    /// The signal state's `kill` is set. Release on set, Acquire on the check.
    killed: AtomicBool,
    /// The process is ending (status `Exiting`). Relaxed: introspection only.
    exiting: AtomicBool,
    /// The process has ended: its links and monitors have fired (set once, by
    /// `signal::propagate_exit`). Part of the signal state, read and written only under
    /// `signals` (see [`Process::is_dead`]), but kept here, in the padding after the other two
    /// flags: in `SignalState` it made the mutex, and so every control block, 8 bytes larger.
    /// Relaxed: the lock orders it.
    dead: AtomicBool,
}

impl Schedulable for Process {
    fn fiber(&self) -> &Fiber {
        &self.fiber
    }

    fn overflowed(this: &Handle<Self>) {
        if this.vm.crash_reports {
            crate::crash::report(format_args!(
                "process {} overflowed its stack ({} KiB) and was ended",
                this.pid,
                this.vm.stack_size / 1024
            ));
        }
        this.kill_self(ExitReason::StackOverflow);
        // SAFETY: the overflow discarded the process's frames (this runs outside it, on the
        // worker's stack), so none holds a reference into its mailbox: a matcher that
        // overflowed left the private queue marked borrowed, and nothing borrows it now.
        unsafe { this.mailbox.forget_borrow() };
        // Outside the process now: its frames are gone, so it ends from here, as `terminate`
        // does, except that the user's values it leaves are dropped in a process of their own.
        let reason = Process::begin_exit(this, Ok(()));
        let locals = this.locals.take();
        Process::announce_exit(this, &reason);
        drop_in_a_process(&this.vm, locals, this.mailbox.take_all());
    }

    /// The pid's index and the low 32 bits of its generation (see `pid_of_label`).
    fn label(&self) -> u64 {
        (u64::from(self.pid.index) << 32) | (self.pid.generation & 0xFFFF_FFFF)
    }
}

/// The pid a `label` stands for (exact while generations stay below 2^32, which takes 4
/// billion reuses of one table entry).
pub(crate) fn pid_of_label(vm: u32, label: u64) -> Pid {
    Pid::new(vm, (label >> 32) as u32, label & 0xFFFF_FFFF)
}

/// The calling process.
///
/// # Panics
///
/// Outside a process, with a message naming `function`.
pub(crate) fn current(function: &str) -> &'static Process {
    match starling_scheduler::current_process::<Process>() {
        Some(process) => {
            // SAFETY: the pointer addresses the running process inside a `Handle` that the
            // worker running it holds for as long as it runs. Process code is the only code
            // that can call this, and all of it runs before the process ends, so the reference
            // never outlives the process in practice ('static is the only lifetime we can name
            // for "as long as the calling process runs"; it is never stored anywhere that
            // outlives it).
            let process = unsafe { &*process.as_ptr() };
            // Every VM call starts here, before it takes any lock: a process too close to the
            // end of its stack overflows now rather than inside a mailbox's or a table entry's
            // lock, which it would then hold for good (the overflow discards its frames).
            // SAFETY: `process` is the calling process (from the context), and its VM's stack
            // size is its runtime's slot size (`Builder::build`).
            unsafe {
                starling_scheduler::ensure_stack_headroom_as(
                    process,
                    process.vm.stack_size,
                    VM_CALL_HEADROOM,
                )
            };
            process
        }
        None => panic!("starling::{function} called outside a process"),
    }
}

/// Stack a VM call may need below its caller's frame. A process with less left when it calls
/// the VM ends with `StackOverflow` at the call (see [`current`]). A quarter of the smallest
/// stack a VM accepts (64 KiB), and six times the deepest VM call measured: a probe that paints
/// the free stack below its frame, calls the VM and finds the lowest word written (session 19,
/// one scheduler) saw 2.4 KiB for a spawn at the process limit (its panic and unwinding
/// included), 1.2 KiB for a `blocking` call that started a pool thread, 1.1 KiB for spawns
/// (20,000 of them, through table and block-store growth), 1.0 KiB for 200,000 sends into a
/// growing queue, 0.8 KiB for a receive that parks with a timer, and 0.5 to 0.7 KiB for
/// send, receive, `process::info`, `monitor`, `link` and `send_after`.
pub(crate) const VM_CALL_HEADROOM: usize = 16 * 1024;

/// The calling process, as a `Handle` (for operations that hand it to other threads).
///
/// # Panics
///
/// Outside a process, with a message naming `function`.
pub(crate) fn current_arc(function: &str) -> Handle<Process> {
    let process: *const Process = current(function);
    // SAFETY: the scheduler only runs processes it holds as `Handle<Process>`, and the running
    // worker holds one right now, so the count is at least one while we add ours.
    unsafe {
        Handle::increment_strong_count(process);
        Handle::from_raw(process)
    }
}

/// Calls `f` with the calling process as a `Handle`, without counting a reference: the worker
/// running the process holds one for the whole run, so a borrowed one stays valid while `f`
/// runs (saves the two atomic operations of [`current_arc`] and its drop on a path every
/// process takes once, its end).
///
/// # Panics
///
/// Outside a process, with a message naming `function`.
pub(crate) fn with_current_handle<R>(function: &str, f: impl FnOnce(&Handle<Process>) -> R) -> R {
    let process: *const Process = current(function);
    // SAFETY: as in `current_arc`, the pointer addresses the running process inside a `Handle`
    // that the worker running it holds until the run returns, which cannot happen while `f`
    // runs on the process's own stack. `ManuallyDrop` keeps this uncounted handle from
    // decrementing the count when it goes out of scope (also when `f` unwinds).
    let borrowed = std::mem::ManuallyDrop::new(unsafe { Handle::from_raw(process) });
    f(&borrowed)
}

/// Reductions each VM call costs; see the crate docs' table.
pub(crate) const CALL_COST: u32 = 1;

impl Process {
    pub(crate) fn new(
        pid: Pid,
        vm: Arc<VmShared>,
        fiber: Fiber,
        on_exit: Option<ExitHook>,
    ) -> Process {
        Process {
            pid,
            vm,
            fiber,
            mailbox: Mailbox::new(),
            locals: Locals::new(),
            killed: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            signals: Mutex::new(SignalState::with_exit_hook(on_exit)),
        }
    }

    /// Turns this finished process's husk into process `pid` (of the same VM, at the same table
    /// index), in place: what the old process left (a stale message pushed after it ended, its
    /// finished fiber) is dropped, and every field is as [`Process::new`] makes it.
    pub(crate) fn reuse<F: FnOnce() + Send + 'static>(
        &mut self,
        pid: Pid,
        vm: &Arc<VmShared>,
        body: F,
        on_exit: Option<ExitHook>,
    ) {
        // Blocks are kept per runtime, i.e. per VM: the husk's table index is this VM's.
        debug_assert!(
            Arc::ptr_eq(&self.vm, vm),
            "a control block reused in another VM"
        );
        self.pid = pid;
        self.fiber.renew(body);
        self.mailbox.reset();
        self.locals = Locals::new();
        *self.killed.get_mut() = false;
        *self.exiting.get_mut() = false;
        *self.dead.get_mut() = false;
        *self.signals.get_mut().unwrap_or_else(|e| e.into_inner()) =
            SignalState::with_exit_hook(on_exit);
        // A poisoned lock of the old process must not poison the new one.
        self.signals.clear_poison();
    }

    /// Whether the process has ended: its links and monitors have fired. `_locked` is this
    /// process's signal state, locked (the flag belongs to it; see the field).
    pub(crate) fn is_dead(&self, _locked: &SignalState) -> bool {
        // Relaxed: written and read only under the signal lock, which orders it.
        self.dead.load(Ordering::Relaxed)
    }

    /// Marks the process as ended; `_locked` is its signal state, locked.
    pub(crate) fn set_dead(&self, _locked: &mut SignalState) {
        // Relaxed: see `is_dead`.
        self.dead.store(true, Ordering::Relaxed);
    }

    /// Locks this process's links, monitors and flags (see `signal.rs` for the lock order).
    pub(crate) fn lock_signals(&self) -> MutexGuard<'_, SignalState> {
        self.signals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Owner only: the common entry of every VM call. Dies if killed, spends `reductions`
    /// (yielding if the slice is used up), and dies if killed meanwhile.
    #[inline]
    pub(crate) fn checkpoint(&self, reductions: u32) {
        self.die_if_killed();
        // SAFETY: `checkpoint` is owner only: `self` is the calling process.
        unsafe { starling_scheduler::spend_as(self, reductions) };
        self.die_if_killed();
    }

    /// Owner only: unwinds the process if it has been killed.
    #[inline]
    pub(crate) fn die_if_killed(&self) {
        // Acquire: pairs with the Release in `kill`.
        if self.killed.load(Ordering::Acquire) {
            die();
        }
    }

    /// Owner only: `true` if the process has been killed and is not unwinding already, i.e. if
    /// [`Process::die_if_killed`] would unwind it now. For a wait loop that returns to its
    /// caller, which then calls [`unwind_killed`], so that the unwind does not start in the
    /// loop's frames (see `receive::select`).
    #[inline]
    pub(crate) fn must_die(&self) -> bool {
        // Acquire: pairs with the Release in `record_kill`.
        self.killed.load(Ordering::Acquire) && not_unwinding()
    }

    /// Any thread: makes the process end with `reason` at its next VM call (or now, if it is
    /// parked: it is woken). Only the first kill counts. Returns `true` if this kill counted.
    pub(crate) fn kill(this: &Handle<Self>, reason: ExitReason) -> bool {
        let mut state = this.lock_signals();
        Process::kill_locked(this, &mut state, reason)
    }

    /// [`Process::kill`] for a caller that holds this process's signal lock as `state`.
    pub(crate) fn kill_locked(
        this: &Handle<Self>,
        state: &mut SignalState,
        reason: ExitReason,
    ) -> bool {
        if !this.record_kill(state, reason) {
            return false;
        }
        this.vm.runtime.wake(this);
        true
    }

    /// Records the first kill's reason. Returns `true` if this one counted.
    fn record_kill(&self, state: &mut SignalState, reason: ExitReason) -> bool {
        if state.kill().is_some() {
            return false;
        }
        state.relations_mut().kill = Some(reason);
        // Release: pairs with the Acquire in `die_if_killed`.
        self.killed.store(true, Ordering::Release);
        true
    }

    /// Owner only: records `reason` as the process's own exit reason (`exit/1`), unless a kill
    /// already counted. The caller then unwinds.
    pub(crate) fn kill_self(&self, reason: ExitReason) {
        let mut state = self.lock_signals();
        self.record_kill(&mut state, reason);
    }

    /// The reason of the kill that counted, if any.
    fn kill_reason(&self) -> Option<ExitReason> {
        self.lock_signals().kill().cloned()
    }

    /// Returns `true` until the process is killed or starts to exit (Erlang's
    /// `is_process_alive`: an exiting process exists but is not alive).
    pub(crate) fn is_alive(&self) -> bool {
        // Acquire: pairs with the Release in `record_kill`; Relaxed for `exiting`, a flag set by
        // the owner before it leaves the table.
        !self.killed.load(Ordering::Acquire) && !self.exiting.load(Ordering::Relaxed)
    }

    /// What `process::info` reports as the status.
    pub(crate) fn status(&self) -> Status {
        // Relaxed: introspection.
        if self.exiting.load(Ordering::Relaxed) {
            return Status::Exiting;
        }
        match self.fiber.status() {
            FiberStatus::Running => Status::Running,
            FiberStatus::Runnable => Status::Runnable,
            FiberStatus::Waiting => Status::Waiting,
            FiberStatus::Done => Status::Exiting,
        }
    }

    /// Bytes this process holds: its stack bytes, its queued messages and its control block.
    pub(crate) fn memory(&self) -> usize {
        self.fiber.stack_bytes() + self.mailbox.bytes() + std::mem::size_of::<Process>()
    }

    /// Owner only: the body wrapper's last step. Computes the exit reason from how the body
    /// ended, releases what the process holds, and tells whoever waits for it.
    pub(crate) fn terminate(this: &Handle<Self>, outcome: std::thread::Result<()>) {
        let reason = Process::begin_exit(this, outcome);
        // Process-locals may run arbitrary Drop code; a panic there must not escape the fiber.
        let _ = catch_unwind(AssertUnwindSafe(|| this.locals.drop_all()));
        Process::announce_exit(this, &reason);
        // Nothing to drop in an empty mailbox (its queues' memory goes with the control block,
        // or when a new process reuses it). Exact here: every send through the table happened
        // before `remove` took the entry's lock.
        if this.mailbox.len() != 0 {
            let _ = catch_unwind(AssertUnwindSafe(|| this.mailbox.clear()));
        }
    }

    /// The first step of ending: the exit reason, from how the body ended and any kill, and
    /// the process marked as exiting.
    #[inline]
    fn begin_exit(this: &Handle<Self>, outcome: std::thread::Result<()>) -> ExitReason {
        // Acquire: pairs with the Release in `record_kill`; unkilled, no lock is needed.
        let kill = if this.killed.load(Ordering::Acquire) {
            this.kill_reason()
        } else {
            None
        };
        let reason = match (kill, outcome) {
            // The first kill counts, even if the process then panicked while unwinding.
            (Some(reason), _) => reason,
            (None, Ok(())) => ExitReason::Normal,
            (None, Err(payload)) => ExitReason::Panic(panic_message(&*payload)),
        };
        // Relaxed: introspection.
        this.exiting.store(true, Ordering::Relaxed);
        reason
    }

    /// The pid dies (the table entry goes), and links, monitors and the exit hook are told.
    #[inline]
    fn announce_exit(this: &Handle<Self>, reason: &ExitReason) {
        let shard = this.vm.table.shard_of(this.vm.runtime.current_worker());
        this.vm.table.remove(this.pid, shard);
        let hook = signal::propagate_exit(this, reason);
        if let Some(hook) = hook {
            let _ = catch_unwind(AssertUnwindSafe(|| hook(reason)));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The block's table index is free once the block is gone (table invariant 4).
        let shard = self.vm.table.shard_of(self.vm.runtime.current_worker());
        self.vm.table.free_index(self.pid.index, shard);
    }
}

/// Drops what an overflowed process left, its process-locals and its queued messages, in a new
/// process. Their destructors are user code, and [`Process::overflowed`] runs on the worker
/// thread's own stack: a destructor that recursed without bound there would overflow the
/// thread's stack, which the platform cannot contain (the whole program aborts). In a process
/// it overflows a guarded stack and ends only that process (the values it had not dropped yet
/// are lost with its frames). At the process limit the spawn fails, and its closure, with the
/// values, is dropped here after all.
fn drop_in_a_process(vm: &Arc<VmShared>, locals: Locals, messages: Drained) {
    if locals.is_empty() && messages.is_empty() {
        return;
    }
    // Locals first, as in `terminate`.
    let leftovers = move || drop((locals, messages));
    let _ = crate::kernel::spawn_in(vm, leftovers, SpawnOptions::default());
}

/// Unwinds the calling process with [`ExitUnwind`], unless it is already unwinding (a Drop
/// that calls the VM during a panic must not start a second unwind, which would abort).
#[cold]
#[inline(never)]
fn die() {
    if not_unwinding() {
        unwind_killed();
    }
}

/// `true` unless the calling thread is unwinding.
///
/// Never inlined: `std::thread::panicking` reads a thread-local, and this read must not be
/// merged into a caller that may resume on another thread (crate docs, the thread rule).
#[cold]
#[inline(never)]
fn not_unwinding() -> bool {
    !std::thread::panicking()
}

/// Unwinds the calling process with [`ExitUnwind`], for a caller that has just seen
/// [`Process::must_die`] return `true` (in the same slice: no park or yield in between).
#[inline(always)]
pub(crate) fn unwind_killed() -> ! {
    std::panic::resume_unwind(Box::new(ExitUnwind))
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

#[cfg(test)]
mod tests {
    /// The layout rule in the module docs: the mailbox (its senders' fields first) follows the
    /// fiber (its wakers' word last).
    #[test]
    fn the_mailbox_follows_the_fiber() {
        use std::mem::{offset_of, size_of};
        assert_eq!(
            offset_of!(super::Process, mailbox),
            offset_of!(super::Process, fiber) + size_of::<starling_scheduler::Fiber>()
        );
    }

    /// The control block is most of what a parked process costs (with its saved stack); keep it
    /// from growing by accident. Raise the bound only with a measurement of W2's bytes/process.
    /// 248: with the `Handle`'s count, 256 bytes, exactly a class of the block store (its
    /// classes are multiples of 32 bytes). It was 296 until the mailbox kept its oldest message
    /// inline (32 bytes: 328, a 352-byte block; W2 went from 848 to 880 bytes per process, and
    /// no longer mallocs and frees a queue buffer for each of its million releases), then 280
    /// once the mailbox's two queues cost a word each until first used (48 bytes: W2 816), then
    /// 248 once the fiber derived its yielder and its saved frames' address from its stack's
    /// base, and the signal state kept its kill reason and `trap_exit` in its relations box and
    /// its `dead` flag in the control block's padding (32 bytes).
    #[test]
    fn control_block_stays_small() {
        assert!(std::mem::size_of::<super::Process>() <= 248);
    }
}
