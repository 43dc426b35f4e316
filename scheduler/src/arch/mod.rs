//! Platform code: the few machine operations the scheduler needs that Rust cannot express portably.
//!
//! Every target file implements the same documented set of functions:
//!
//! - `stack_pointer() -> usize`: the caller's current stack pointer. It must be
//!   `#[inline(always)]` so that the value is the stack pointer *of the calling function's
//!   frame*, which is what the copy-out calibration in [`crate::slot`] relies on.
//!
//! Stack switching itself is corosensei's (`corosensei::arch`); we only need to know where a
//! suspended coroutine's live frames begin, and that is derived from `stack_pointer`.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub(crate) use self::aarch64::*;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("starling-scheduler supports x86_64 and aarch64 only");

#[cfg(not(target_os = "linux"))]
compile_error!("starling-scheduler supports Linux only (mmap/mprotect/madvise stack slots)");
