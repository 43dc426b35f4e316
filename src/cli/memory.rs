//! Memory and OS-limit readings from /proc: resident set size, its high-water mark, mapping counts.
//!
//! VmHWM is the peak of the whole OS process, so the suite runs every workload in its own child
//! process (see `probe.rs`): there the peak belongs to that one run and nothing else.

use serde::{Deserialize, Serialize};

/// Resident set size of this OS process now (VmRSS), in bytes; 0 if /proc cannot be read.
pub fn resident_bytes() -> u64 {
    status_field_bytes("VmRSS:").unwrap_or(0)
}

/// Highest resident set size this OS process has had (VmHWM), in bytes; 0 if unknown.
pub fn peak_resident_bytes() -> u64 {
    status_field_bytes("VmHWM:").unwrap_or(0)
}

/// Memory mappings (VMAs) this OS process holds: the count `vm.max_map_count` limits.
pub fn memory_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count())
}

/// OS threads (tasks) in this OS process right now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

fn status_field_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kibibytes: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kibibytes * 1024)
}

/// The kernel limits that decide how many OS threads can be alive at once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OsLimits {
    /// `vm.max_map_count`: memory mappings per OS process; each thread needs a few.
    pub max_map_count: Option<u64>,
    /// `kernel.pid_max`: every thread takes a pid.
    pub pid_max: Option<u64>,
    /// `kernel.threads-max`: threads in the whole system.
    pub threads_max: Option<u64>,
    /// `RLIMIT_NPROC` ("Max processes" in /proc/self/limits): threads of this user.
    pub max_user_processes: Option<String>,
    /// Cores available to this OS process.
    pub cores: usize,
    /// Total memory of the machine (MemTotal), in bytes.
    pub memory_total_bytes: Option<u64>,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
}

impl OsLimits {
    /// Reads the limits of this machine.
    pub fn read() -> OsLimits {
        OsLimits {
            max_map_count: read_number("/proc/sys/vm/max_map_count"),
            pid_max: read_number("/proc/sys/kernel/pid_max"),
            threads_max: read_number("/proc/sys/kernel/threads-max"),
            max_user_processes: read_user_process_limit(),
            cores: crate::cli::workload::available_cores(),
            memory_total_bytes: read_memory_total(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|text| text.trim().to_string()),
        }
    }

    /// One line naming the limits, for notes under the table.
    pub fn describe(&self) -> String {
        let show = |value: Option<u64>| value.map_or("?".to_string(), |v| v.to_string());
        format!(
            "vm.max_map_count = {}, kernel.pid_max = {}, kernel.threads-max = {}, ulimit -u = {}",
            show(self.max_map_count),
            show(self.pid_max),
            show(self.threads_max),
            self.max_user_processes.as_deref().unwrap_or("?"),
        )
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_user_process_limit() -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max processes"))?;
    // Columns: name (two words), soft limit, hard limit, units.
    line.split_whitespace().nth(2).map(str::to_string)
}

fn read_memory_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kibibytes: u64 = line["MemTotal:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kibibytes * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(resident_bytes() > 0);
        assert!(peak_resident_bytes() >= resident_bytes() / 2);
        assert!(memory_mappings() > 0);
        assert!(thread_count() >= 1);
    }
}
