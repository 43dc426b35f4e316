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
