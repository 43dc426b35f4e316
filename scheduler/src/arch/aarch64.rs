//! aarch64: reading the stack pointer.

/// Returns the current value of SP.
///
/// Register state: at entry SP is the stack pointer of the frame this is inlined into; nothing
/// is clobbered, no memory is touched and the flags are preserved.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let stack_pointer: usize;
    // SAFETY: a register move with no memory access and no side effects.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) stack_pointer, options(nomem, nostack, preserves_flags));
    }
    stack_pointer
}

/// Reads the byte at `address` for its fault, and never returns: `address` lies in a guard page.
///
/// # Safety
///
/// As on x86_64.
#[inline(never)]
pub(crate) unsafe fn fault_at(address: usize) -> ! {
    // SAFETY: as on x86_64.
    unsafe {
        core::arch::asm!("ldrb wzr, [{0}]", "udf #0", in(reg) address, options(nostack, noreturn));
    }
}

/// Points the interrupted context of a signal at corosensei's trap trampoline. Not implemented
/// on aarch64 yet: returns `false`, and the overflow handler aborts with a clear message.
///
/// # Safety
///
/// As on x86_64.
pub(crate) unsafe fn redirect_to_trap_handler(
    _context: *mut libc::c_void,
    _regs: corosensei::trap::TrapHandlerRegs,
) -> bool {
    false
}
