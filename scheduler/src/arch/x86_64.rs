//! x86_64: reading the stack pointer.

/// Returns the current value of RSP.
///
/// Register state: at entry RSP is the stack pointer of the frame this is inlined into; nothing
/// is clobbered, no memory is touched and the flags are preserved.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let stack_pointer: usize;
    // SAFETY: a register move with no memory access and no side effects.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) stack_pointer, options(nomem, nostack, preserves_flags));
    }
    stack_pointer
}

/// Reads the byte at `address` for its fault, and never returns: `address` lies in a guard page.
///
/// # Safety
///
/// `address` must lie in the guard page of the stack slot the calling coroutine runs on, so
/// that the SIGSEGV handler (`overflow.rs`) takes the fault as this coroutine's overflow.
#[inline(never)]
pub(crate) unsafe fn fault_at(address: usize) -> ! {
    // SAFETY: the load faults (caller's contract); the handler redirects the coroutine out of
    // this frame and never resumes it here. No memory is written.
    unsafe {
        core::arch::asm!("cmp byte ptr [{0}], 0", "ud2", in(reg) address, options(nostack, noreturn));
    }
}

/// Points the interrupted context of a signal at corosensei's trap trampoline.
///
/// # Safety
///
/// `context` must be the `ucontext_t` a SIGSEGV handler received for a fault on the thread
/// running the handler, and `regs` must come from `CoroutineTrapHandler::setup_trap_handler` for
/// the coroutine that faulted.
pub(crate) unsafe fn redirect_to_trap_handler(
    context: *mut libc::c_void,
    regs: corosensei::trap::TrapHandlerRegs,
) -> bool {
    let context = context as *mut libc::ucontext_t;
    // SAFETY: the caller guarantees `context` is the live ucontext of this signal.
    let gregs = unsafe { &mut (*context).uc_mcontext.gregs };
    gregs[libc::REG_RIP as usize] = regs.rip as i64;
    gregs[libc::REG_RSP as usize] = regs.rsp as i64;
    gregs[libc::REG_RBP as usize] = regs.rbp as i64;
    gregs[libc::REG_RDI as usize] = regs.rdi as i64;
    gregs[libc::REG_RSI as usize] = regs.rsi as i64;
    true
}
