//! The six reference workloads (W1..W6), the two runtimes that run them, and one run's parameters.

use serde::{Deserialize, Serialize};

/// One of the six reference workloads of DESIGN.md, measured on Starling and on OS threads alike.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, clap::ValueEnum)]
pub enum Workload {
    /// W1: spawn N processes, each sends i*i to the root, which checks the sum.
    #[value(name = "w1", alias = "spawn")]
    #[serde(rename = "w1")]
    Spawn,
    /// W2: N processes alive at once, each blocked in receive, then all released; each replies.
    #[value(name = "w2", alias = "alive")]
    #[serde(rename = "w2")]
    Alive,
    /// W3: a ring of N processes passes a token M laps (N * M hops).
    #[value(name = "w3", alias = "ring")]
    #[serde(rename = "w3")]
    Ring,
    /// W4: N ping-pong round trips between two processes.
    #[value(name = "w4", alias = "ping-pong", alias = "pingpong")]
    #[serde(rename = "w4")]
    PingPong,
    /// W5: skynet, a 10-ary tree of processes with N leaves; each leaf sends its number up.
    #[value(name = "w5", alias = "skynet")]
    #[serde(rename = "w5")]
    Skynet,
    /// W6: N ping-pong round trips while 2 processes spin in pure computation, on 2 schedulers.
    #[value(name = "w6", alias = "starvation")]
    #[serde(rename = "w6")]
    Starvation,
}

impl Workload {
    /// All six, in the order the report lists them.
    pub const ALL: [Workload; 6] = [
        Workload::Spawn,
        Workload::Alive,
        Workload::Ring,
        Workload::PingPong,
        Workload::Skynet,
        Workload::Starvation,
    ];

    /// The short identifier, `w1`..`w6`.
    pub fn id(self) -> &'static str {
        match self {
            Workload::Spawn => "w1",
            Workload::Alive => "w2",
            Workload::Ring => "w3",
            Workload::PingPong => "w4",
            Workload::Skynet => "w5",
            Workload::Starvation => "w6",
        }
    }

    /// The descriptive alias, as accepted by `starling run`.
    pub fn alias(self) -> &'static str {
        match self {
            Workload::Spawn => "spawn",
            Workload::Alive => "alive",
            Workload::Ring => "ring",
            Workload::PingPong => "ping-pong",
            Workload::Skynet => "skynet",
            Workload::Starvation => "starvation",
        }
    }

    /// What the size N counts for this workload on `runtime`.
    pub fn size_meaning(self, runtime: Runtime) -> &'static str {
        match (self, runtime) {
            (Workload::Spawn, Runtime::Starling) => "processes spawned",
            (Workload::Spawn, Runtime::Threads) => "threads spawned",
            (Workload::Alive, Runtime::Starling) => "processes alive at once",
            (Workload::Alive, Runtime::Threads) => "threads alive at once",
            (Workload::Ring, Runtime::Starling) => "processes in the ring",
            (Workload::Ring, Runtime::Threads) => "threads in the ring",
            (Workload::PingPong | Workload::Starvation, _) => "round trips",
            (Workload::Skynet, _) => "leaves",
        }
    }

    /// The unit of the per-operation time on `runtime`.
    pub fn operation(self, runtime: Runtime) -> &'static str {
        match self {
            Workload::Spawn => "spawn",
            Workload::Alive if runtime == Runtime::Threads => "thread",
            Workload::Alive => "process",
            Workload::Ring => "hop",
            Workload::PingPong => "round trip",
            Workload::Skynet => "leaf",
            Workload::Starvation => "round trip",
        }
    }

    /// The size DESIGN.md's reference figures use.
    pub fn reference_size(self) -> usize {
        match self {
            Workload::Spawn | Workload::Alive | Workload::PingPong | Workload::Skynet => 1_000_000,
            Workload::Ring | Workload::Starvation => 10_000,
        }
    }

    /// The size of the `--quick` suite: small enough that the whole suite takes seconds.
    pub fn quick_size(self) -> usize {
        match self {
            Workload::Spawn | Workload::Alive | Workload::PingPong | Workload::Skynet => 10_000,
            Workload::Ring | Workload::Starvation => 1_000,
        }
    }

    /// Laps of the ring (W3) in the reference run; 1 for every other workload.
    pub fn reference_laps(self) -> usize {
        if self == Workload::Ring {
            1_000
        } else {
            1
        }
    }

    /// Laps of the ring (W3) in the `--quick` suite; 1 for every other workload.
    pub fn quick_laps(self) -> usize {
        if self == Workload::Ring {
            10
        } else {
            1
        }
    }

    /// Schedulers the reference run uses: W6 is defined on 2, the others use one per core.
    pub fn default_schedulers(self) -> usize {
        if self == Workload::Starvation {
            2
        } else {
            available_cores()
        }
    }

    /// Operations one run performs: the denominator of the per-operation time.
    pub fn operations(self, size: usize, laps: usize) -> u64 {
        match self {
            Workload::Ring => size as u64 * laps as u64,
            _ => size as u64,
        }
    }

    /// One line on what the workload does, for tables and `--help`.
    pub fn title(self) -> &'static str {
        match self {
            Workload::Spawn => "W1 spawn",
            Workload::Alive => "W2 alive",
            Workload::Ring => "W3 ring",
            Workload::PingPong => "W4 ping-pong",
            Workload::Skynet => "W5 skynet",
            Workload::Starvation => "W6 starvation",
        }
    }
}

/// Which runtime runs a workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Starling processes on a Starling VM.
    Starling,
    /// `std::thread` threads talking over `std::sync::mpsc` channels.
    Threads,
}

impl Runtime {
    /// The name printed in tables.
    pub fn label(self) -> &'static str {
        match self {
            Runtime::Starling => "Starling",
            Runtime::Threads => "OS threads",
        }
    }
}

/// Everything one run needs; the parent passes it to the child process as arguments.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Params {
    /// Which workload.
    pub workload: Workload,
    /// Which runtime.
    pub runtime: Runtime,
    /// N: see [`Workload::size_meaning`].
    pub size: usize,
    /// Laps of the ring (W3 only; 1 otherwise).
    pub laps: usize,
    /// Scheduler threads of the Starling VM (ignored by OS threads).
    pub schedulers: usize,
    /// Processes or threads spinning in pure computation (W6 only).
    pub spinners: usize,
    /// Stack size of every OS thread the threads runtime starts, in bytes.
    pub thread_stack_bytes: usize,
}

/// Stack reserved for each OS thread: 64 KiB instead of the default 2 MiB, so that thread
/// counts are limited by the kernel's mapping and pid limits rather than by address space;
/// every workload body here needs well under 16 KiB of stack (guessed, and checked by running).
pub const DEFAULT_THREAD_STACK_BYTES: usize = 64 * 1024;

/// Processes that spin beside the ping-pong in W6, as DESIGN.md defines it.
pub const STARVATION_SPINNERS: usize = 2;

/// Cores this OS process may run on (at least 1).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// Sum of `i * i` for `i` in `0..n`: what W1's root must receive.
pub fn sum_of_squares(n: u64) -> u128 {
    let n = n as u128;
    if n == 0 {
        return 0;
    }
    (n - 1) * n * (2 * n - 1) / 6
}

/// Sum of `i` for `i` in `0..n`: what W2's and W5's roots must receive.
pub fn sum_below(n: u64) -> u128 {
    let n = n as u128;
    n * n.saturating_sub(1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_match_the_loops() {
        for n in [0u64, 1, 2, 10, 1000] {
            assert_eq!(
                sum_of_squares(n),
                (0..n as u128).map(|i| i * i).sum::<u128>()
            );
            assert_eq!(sum_below(n), (0..n as u128).sum::<u128>());
        }
        assert_eq!(sum_below(1_000_000), 499_999_500_000);
    }
}
