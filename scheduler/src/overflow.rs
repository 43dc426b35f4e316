//! Stack overflow containment: a process that runs into its slot's guard page ends alone.
//!
//! # Solution
//!
//! A process-wide SIGSEGV handler (installed once, on the alternate signal stack, chaining to
//! the handler it replaced) looks at the faulting address. If the fault lies in the guard page
//! of the stack slot the current thread's running process lives in, it uses corosensei's trap
//! support to abandon that coroutine's stack: on return from the handler the coroutine runs a
//! tiny function that marks the fiber as overflowed and returns, so `resume` reports it
//! completed. The worker then asks the process's owner to end it with its overflow reason
//! ([`crate::Schedulable::overflowed`]).
//!
//! The overflowed frames are discarded without running their destructors (their heap memory
//! leaks), and if the overflow struck inside code holding a lock (the allocator's, say) that
//! lock stays held: the platform allows no better without compiler support. For the owner's
//! own locks it does better: [`crate::ensure_stack_headroom_as`], called where a process enters
//! code that takes them (the VM calls it at the entry of every VM call), makes a process short
//! of stack overflow right there, by reading its own guard page, before it takes any. (A
//! process recursing through sends used to overflow inside its send, holding the receiver's
//! mailbox lock, and every later sender to that process waited forever.) Every other case —
//! a fault in a guard page that is not the current process's, or a fault on a target without
//! trap support — aborts the OS process with a message naming the address, never silently
//! corrupting another process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use crate::context;
use crate::fiber::Fiber;

/// Most stack regions (one per runtime) that can be registered at once; a runtime beyond this
/// keeps working but its overflows abort. Guessed: tests run a few VMs at once.
const MAX_REGIONS: usize = 64;

/// Registered regions: (start, length, slot size); 0 start = free entry. Written under
/// `REGISTER` and read lock-free by the signal handler (Acquire pairs with the Release store of
/// the start, which is written last).
static REGIONS: [[AtomicUsize; 3]; MAX_REGIONS] =
    [const { [const { AtomicUsize::new(0) }; 3] }; MAX_REGIONS];
static REGISTER: Mutex<()> = Mutex::new(());

/// The handler that was installed before ours.
static mut PREVIOUS: Option<libc::sigaction> = None;
static INSTALL: Once = Once::new();

/// Registers a stack region so its guard pages are recognized, installing the handler on first
/// use. Returns the entry to pass to [`unregister`].
pub(crate) fn register(start: usize, length: usize, slot_size: usize) -> Option<usize> {
    INSTALL.call_once(install_handler);
    let _guard = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
    let entry = REGIONS
        .iter()
        .position(|region| region[0].load(Ordering::Relaxed) == 0)?;
    REGIONS[entry][1].store(length, Ordering::Relaxed);
    REGIONS[entry][2].store(slot_size, Ordering::Relaxed);
    // Release: publishes length and slot size to the handler's Acquire load of the start.
    REGIONS[entry][0].store(start, Ordering::Release);
    Some(entry)
}

/// Forgets a region (its pool is being unmapped).
pub(crate) fn unregister(entry: usize) {
    let _guard = REGISTER.lock().unwrap_or_else(|e| e.into_inner());
    // Relaxed: the region is unmapped only after no coroutine runs on it any more.
    REGIONS[entry][0].store(0, Ordering::Relaxed);
}

/// The slot whose guard page contains `address`: (slot start, slot size).
fn guard_page_of(address: usize) -> Option<(usize, usize)> {
    for region in REGIONS.iter() {
        // Acquire: pairs with the Release in `register`.
        let start = region[0].load(Ordering::Acquire);
        if start == 0 {
            continue;
        }
        let length = region[1].load(Ordering::Relaxed);
        let slot_size = region[2].load(Ordering::Relaxed);
        if address >= start && address < start + length {
            let slot_start = start + (address - start) / slot_size * slot_size;
            if address < slot_start + crate::slot::GUARD_SIZE {
                return Some((slot_start, slot_size));
            }
            return None;
        }
    }
    None
}

fn install_handler() {
    // SAFETY: a zeroed sigaction is a valid value to fill in; we install a handler with
    // SA_ONSTACK (std gives every thread an alternate signal stack, and workers make sure of
    // one) and keep the previous action to chain to. `PREVIOUS` is written once, here, before
    // the handler can run.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handle_segv as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGSEGV, &action, &mut previous) == 0 {
            PREVIOUS = Some(previous);
        }
    }
}

/// Makes sure the calling (worker) thread has an alternate signal stack for the handler.
pub(crate) fn ensure_alternate_stack() {
    /// Size of the alternate stack we map if the thread has none (std uses SIGSTKSZ or more;
    /// the handler itself needs little). 64 KiB, guessed.
    const SIZE: usize = 64 * 1024;
    // SAFETY: sigaltstack with a null new stack only reads the current one.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigaltstack(std::ptr::null(), &mut current) };
    if current.ss_flags & libc::SS_DISABLE == 0 {
        return;
    }
    // SAFETY: an anonymous private mapping; on failure we simply keep no alternate stack.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if memory == libc::MAP_FAILED {
        return;
    }
    let stack = libc::stack_t {
        ss_sp: memory,
        ss_flags: 0,
        ss_size: SIZE,
    };
    // SAFETY: the mapping stays alive for the thread's life (it is leaked on purpose: 64 KiB
    // per worker thread, once).
    unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) };
}

/// Writes `message` to standard error without allocating (signal context).
fn write_stderr(message: &[u8]) {
    // SAFETY: write(2) is async-signal-safe; the buffer is valid for its length.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

extern "C" fn handle_segv(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    ucontext: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    if let Some((slot_start, _)) = guard_page_of(address) {
        let fiber = context::current_fiber();
        // SAFETY: a non-null current fiber is the one running on this thread (the worker set
        // it before resuming the coroutine that faulted) and outlives this handler.
        let trapped = !fiber.is_null() && unsafe { (*fiber).trap_overflow(slot_start, ucontext) };
        if trapped {
            return;
        }
        write_stderr(b"starling: fatal: a stack guard page was hit outside the running process's own stack slot; aborting\n");
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() };
    }
    chain(signal, info, ucontext);
}

/// Passes a signal that is not ours to the handler we replaced.
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
    // SAFETY: `PREVIOUS` was written once before our handler was installed.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(previous)
            if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN =>
        {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed as an SA_SIGINFO handler.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(previous.sa_sigaction) };
                handler(signal, info, ucontext);
            } else {
                // SAFETY: the previous handler was installed as a plain handler.
                let handler: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(previous.sa_sigaction) };
                handler(signal);
            }
        }
        _ => {
            // Restore the default action and return: the fault repeats and kills the process
            // the usual way (core dump), as if we had never been installed.
            // SAFETY: resetting a signal's disposition to SIG_DFL is always valid.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

/// The trampoline's body: marks the fiber at `flag` (the address of its overflow flag).
fn mark_overflowed(flag: usize) {
    // SAFETY: the fiber owns the coroutine this runs on, so its flag is alive.
    let flag = unsafe { &*(flag as *const std::sync::atomic::AtomicBool) };
    // Release: pairs with the Acquire in `Fiber::overflowed`.
    flag.store(true, Ordering::Release);
}

impl Fiber {
    /// In the SIGSEGV handler: if this fiber's home slot starts at `slot_start`, redirects the
    /// faulting coroutine into its trap trampoline and returns `true`.
    ///
    /// # Safety
    ///
    /// Called from the SIGSEGV handler on the thread running this fiber, with that signal's
    /// ucontext.
    pub(crate) unsafe fn trap_overflow(
        &self,
        slot_start: usize,
        ucontext: *mut libc::c_void,
    ) -> bool {
        // SAFETY: the running thread owns the core (`fiber.rs`); the handler runs on it.
        let Some(trap) = (unsafe { self.trap_handler(slot_start) }) else {
            return false;
        };
        let flag = self.overflow_flag();
        // SAFETY: the fault happened on this coroutine's stack (its guard page), and the
        // trampoline function only stores to an atomic in the fiber (which outlives the
        // coroutine) and returns: it touches no memory the interrupted code could have held.
        let regs = unsafe { trap.setup_trap_handler(move || mark_overflowed(flag)) };
        // SAFETY: `ucontext` is this signal's context (caller's contract) and `regs` belongs to
        // the coroutine that faulted.
        unsafe { crate::arch::redirect_to_trap_handler(ucontext, regs) }
    }
}
