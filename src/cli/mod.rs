//! Wiring of the `starling` program: parses arguments and hands over to the suite, a single run or a child run.

mod args;
mod chart;
mod cycles;
mod json;
mod measurement;
mod memory;
mod probe;
mod progress;
mod report;
mod suite;
mod units;
mod workload;
mod workloads;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use args::{Cli, Command, CyclesArgs, RunArgs, SuiteArgs};
use workload::{Params, Runtime, Workload};

/// Runs the program. Exit code: 0 if every check passed, 1 if a check failed or a Starling run
/// did not complete (or, for `starling run`, the run did not complete), 2 if a file could not
/// be written.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Child(args)) => probe::child_main(args),
        Some(Command::Run(args)) => run_single(args),
        Some(Command::Cycles(args)) => run_cycles(args),
        None => run_suite(cli.suite),
    }
}

fn run_suite(args: SuiteArgs) -> ExitCode {
    let config = suite::SuiteConfig {
        quick: args.quick,
        threads: !args.no_threads,
        sweep: !args.no_sweep,
        thread_stack_bytes: args.thread_stack_kib * 1024,
    };
    let result = suite::run(config);
    report::print_suite(&result);
    let mut written = true;
    if let Some(path) = &args.json {
        written &= report_written(json::write_suite(path, &result), "figures", path);
    }
    if let Some(path) = &args.chart {
        written &= report_written(chart::write(path, &result.records), "chart", path);
    }
    if !result.failures().is_empty() {
        ExitCode::from(1)
    } else if !written {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_single(args: RunArgs) -> ExitCode {
    let workload = args.workload;
    let params = Params {
        workload,
        runtime: if args.threads {
            Runtime::Threads
        } else {
            Runtime::Starling
        },
        size: args
            .procs
            .unwrap_or_else(|| workload.reference_size())
            .max(1),
        laps: args
            .laps
            .unwrap_or_else(|| workload.reference_laps())
            .max(1),
        schedulers: args
            .schedulers
            .unwrap_or_else(|| workload.default_schedulers())
            .max(1),
        spinners: if workload == Workload::Starvation {
            args.spinners
        } else {
            0
        },
        thread_stack_bytes: args.thread_stack_kib * 1024,
    };
    let record = suite::run_single(params, Duration::from_secs_f64(args.timeout.max(0.1)));
    report::print_single(&record);
    let written = match &args.json {
        Some(path) => report_written(json::write_single(path, &record), "figures", path),
        None => true,
    };
    if !record.passed() {
        ExitCode::from(1)
    } else if !written {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_cycles(args: CyclesArgs) -> ExitCode {
    let config = cycles::CyclesConfig {
        style: args.style,
        total: args.total,
        batch: args.batch,
        schedulers: args.schedulers,
    };
    if cycles::run(config) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Says where a file went, or why it did not; returns `true` if it was written.
fn report_written(result: Result<(), String>, what: &str, path: &std::path::Path) -> bool {
    match result {
        Ok(()) => {
            println!("Wrote the {what} to {}.", path.display());
            true
        }
        Err(error) => {
            eprintln!("error: {error}");
            false
        }
    }
}
