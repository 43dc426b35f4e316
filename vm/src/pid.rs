//! Process identifiers.

use std::fmt;

/// Identifies one process of a VM.
///
/// A pid is an index into the VM's process table plus the generation of that table entry, so a
/// dead process's pid never addresses a later process during the VM's life (generations are
/// 64-bit and never wrap in practice). It prints like Erlang's, `<0.INDEX.GENERATION>`.
///
/// # Examples
///
/// ```
/// let vm = starling::Vm::builder().schedulers(1).build().unwrap();
/// let text = vm.run(|| starling::self_pid().to_string()).unwrap();
/// assert!(text.starts_with("<0.") && text.ends_with('>'));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid {
    /// The VM this pid belongs to (not printed; Erlang's local node is always 0).
    pub(crate) vm: u32,
    pub(crate) index: u32,
    pub(crate) generation: u64,
}

impl Pid {
    pub(crate) fn new(vm: u32, index: u32, generation: u64) -> Pid {
        Pid {
            vm,
            index,
            generation,
        }
    }

    /// Sends `message` to this process: the same as [`crate::send`].
    pub fn send<M: Send + 'static>(self, message: M) {
        crate::kernel::send(self, message)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<0.{}.{}>", self.index, self.generation)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_copy<T: Send + Sync + Copy + Ord + std::hash::Hash>() {}

    #[test]
    fn pid_is_send_sync_copy() {
        assert_send_sync_copy::<Pid>();
    }

    #[test]
    fn pid_prints_like_erlang() {
        assert_eq!(Pid::new(1, 42, 0).to_string(), "<0.42.0>");
        assert_eq!(format!("{:?}", Pid::new(1, 7, 3)), "<0.7.3>");
    }
}
