//! Command-line arguments (clap derive); the doc comments here are the program's `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cli::workload::{Runtime, Workload, DEFAULT_THREAD_STACK_BYTES};

/// Starling's stress runner: the six reference workloads on Starling and on OS threads.
///
/// Without a subcommand it runs the default suite: W1 spawn 1 M processes, W2 1 M processes
/// alive at once, W3 a ring of 10 K processes passing a token 1 K laps, W4 1 M ping-pong round
/// trips, W5 skynet with 1 M leaves, W6 10 K round trips beside 2 spinning processes on 2
/// schedulers; then the same workloads on OS threads (std::thread with 64 KiB stacks and
/// std::sync::mpsc) at the largest sizes the OS allows, and a scaling sweep (1 K .. 1 M) of W1
/// and W2. It prints one table and exits non-zero if any workload's own check fails.
///
/// Every run happens in a child process (this program re-executed), so an abort, a crash or an
/// OOM kill at a size the OS cannot take ends only that child, every run has a time cap, and the
/// peak RSS (VmHWM) reported is that one run's. Thread runs that the OS refuses are reported with
/// the error it gave, and a smaller size is run instead. W1 on 1 M OS threads takes about a
/// minute here and runs last, only if the suite's 3-minute budget still allows it.
///
/// Exit status: 0 if every check passed; 1 if a check failed or a Starling run did not complete
/// (each is named at the end of the report); 2 if a --json or --chart file could not be written.
#[derive(Parser, Debug)]
#[command(name = "starling", version, about, long_about)]
pub struct Cli {
    /// What to do; the default suite if omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of the default suite.
    #[command(flatten)]
    pub suite: SuiteArgs,
}

/// Options of the default suite.
#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Run a small suite (sizes of 1 K to 10 K; seconds in all), e.g. for tests.
    #[arg(long)]
    pub quick: bool,

    /// Write every figure of the suite (all runs, probes and sweep points) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw time per spawn (W1) and memory per process (W2) against N as an SVG chart in FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,

    /// Run Starling only: skip every OS-thread run.
    #[arg(long)]
    pub no_threads: bool,

    /// Skip the scaling sweep (1 K, 10 K, 100 K of W1 and W2) behind the chart.
    #[arg(long)]
    pub no_sweep: bool,

    /// Stack size of each OS thread, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_THREAD_STACK_BYTES / 1024)]
    pub thread_stack_kib: usize,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one workload with your own parameters and print its figures.
    ///
    /// N means: W1 processes spawned; W2 processes alive at once; W3 processes in the ring;
    /// W4 and W6 round trips; W5 leaves of the skynet tree (any N; powers of ten give the
    /// classic tree). The run happens in a child process with a time cap, like the suite's.
    Run(RunArgs),

    /// Run many spawn/exit cycles in one VM and print this OS process's memory before, after
    /// the first batch and after the last (right away and after the VM idled).
    ///
    /// Issue 4 asks that 10 million cycles end with the RSS they started with (± 5 %); the
    /// styles show how the answer depends on how the cycles are run.
    Cycles(CyclesArgs),

    /// Internal: run one workload in this process and print its outcome as one JSON line.
    #[command(hide = true)]
    Child(ChildArgs),
}

/// Arguments of `starling run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The workload: w1..w6, or spawn, alive, ring, ping-pong, skynet, starvation.
    pub workload: Workload,

    /// N, the workload's size (see above); the reference size if omitted.
    #[arg(long, short = 'n', visible_alias = "size", value_name = "N")]
    pub procs: Option<usize>,

    /// Laps of the ring (W3 only); 1,000 if omitted.
    #[arg(long, value_name = "M")]
    pub laps: Option<usize>,

    /// Scheduler threads of the Starling VM; one per core if omitted (2 for W6).
    #[arg(long, short = 's', value_name = "S")]
    pub schedulers: Option<usize>,

    /// Run the OS-thread version instead of Starling.
    #[arg(long)]
    pub threads: bool,

    /// Spinning processes (or threads) beside the ping-pong (W6 only).
    #[arg(long, default_value_t = 2)]
    pub spinners: usize,

    /// Stack size of each OS thread, in KiB (with --threads).
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_THREAD_STACK_BYTES / 1024)]
    pub thread_stack_kib: usize,

    /// Kill the run after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub timeout: f64,

    /// Also write the run's figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Arguments of `starling cycles`.
#[derive(Args, Debug)]
pub struct CyclesArgs {
    /// How each cycle spawns its process and learns that it ended.
    #[arg(long, value_enum, default_value = "message")]
    pub style: crate::cli::cycles::Style,

    /// Spawn/exit cycles in all.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 10_000_000)]
    pub total: usize,

    /// Cycles per batch (one `Vm::run` each, or one burst of `Vm::spawn`).
    #[arg(long, value_name = "B", default_value_t = 100_000)]
    pub batch: usize,

    /// Scheduler threads; one per core if omitted.
    #[arg(long, short = 's', value_name = "S")]
    pub schedulers: Option<usize>,
}

/// Arguments of the hidden `child` subcommand: one run, fully specified.
#[derive(Args, Debug)]
pub struct ChildArgs {
    /// The workload.
    #[arg(long)]
    pub workload: Workload,
    /// The runtime.
    #[arg(long)]
    pub runtime: Runtime,
    /// N.
    #[arg(long)]
    pub size: usize,
    /// Laps (W3).
    #[arg(long, default_value_t = 1)]
    pub laps: usize,
    /// Starling schedulers.
    #[arg(long)]
    pub schedulers: usize,
    /// Spinners (W6).
    #[arg(long, default_value_t = 2)]
    pub spinners: usize,
    /// OS thread stack size in bytes.
    #[arg(long)]
    pub thread_stack_bytes: usize,
}
