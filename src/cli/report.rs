//! The tables a person reads: one row per workload and runtime, the scaling sweep, and notes.

use crate::cli::measurement::{Role, RunRecord, RunStatus};
use crate::cli::suite::{failures, SuiteResult};
use crate::cli::units;
use crate::cli::workload::{Runtime, Workload};

/// Prints the whole report of a suite on standard output.
pub fn print_suite(result: &SuiteResult) {
    println!();
    println!(
        "Starling vs OS threads on {} cores ({}); OS threads: std::thread with {} stacks, \
         std::sync::mpsc channels",
        result.limits.cores,
        result
            .limits
            .kernel
            .as_deref()
            .map_or("Linux".to_string(), |kernel| format!("Linux {kernel}")),
        units::bytes(result.config.thread_stack_bytes as f64),
    );
    println!();
    print!("{}", main_table(&result.records, true));
    let sweep = sweep_table(&result.records);
    if !sweep.is_empty() {
        println!();
        println!("Scaling: W1 time per spawn and W2 memory per alive process against N");
        print!("{sweep}");
    }
    println!();
    println!("Notes:");
    for note in notes(result) {
        println!("  - {note}");
    }
    println!();
    print_verdict(&result.failures(), result.wall_seconds);
}

/// Prints the report of one `starling run`.
pub fn print_single(record: &RunRecord) {
    println!();
    print!("{}", main_table(std::slice::from_ref(record), false));
    if let Some(measurement) = record.status.measurement() {
        println!();
        println!("check: {}", measurement.check.detail);
    } else {
        println!();
        println!("{}", record.status.failure());
    }
    let failed = failures(std::slice::from_ref(record));
    if !failed.is_empty() {
        println!();
        print_verdict(&failed, record.child_seconds);
    }
}

fn print_verdict(failures: &[String], seconds: f64) {
    if failures.is_empty() {
        println!("All checks passed ({} in all).", units::seconds(seconds));
    } else {
        println!("FAILED ({} check(s)):", failures.len());
        for failure in failures {
            println!("  - {failure}");
        }
    }
}

/// The main table: per workload, the Starling row and the OS-threads row (each run's main record).
fn main_table(records: &[RunRecord], with_comparison: bool) -> String {
    let mut header = vec![
        "workload",
        "runtime",
        "N",
        "wall",
        "per operation",
        "peak RSS",
        "memory/process",
        "check",
    ];
    if with_comparison {
        header.push("Starling vs threads");
    }
    let mut table = Table::new(&header);
    for workload in Workload::ALL {
        let starling = main_record(records, workload, Runtime::Starling)
            .or_else(|| last_attempt(records, workload, Runtime::Starling));
        let threads = main_record(records, workload, Runtime::Threads)
            .or_else(|| last_attempt(records, workload, Runtime::Threads));
        let comparison = match (starling, threads) {
            (Some(starling), Some(threads)) => compare(starling, threads),
            _ => String::new(),
        };
        let mut first = true;
        for record in [starling, threads].into_iter().flatten() {
            let mut row = record_cells(record);
            row[0] = if first {
                workload.title().to_string()
            } else {
                String::new()
            };
            if with_comparison && first {
                row.push(comparison.clone());
            }
            first = false;
            table.push(row);
        }
    }
    table.render()
}

fn main_record(records: &[RunRecord], workload: Workload, runtime: Runtime) -> Option<&RunRecord> {
    records.iter().find(|record| {
        record.role == Role::Main
            && record.params.workload == workload
            && record.params.runtime == runtime
    })
}

fn last_attempt(records: &[RunRecord], workload: Workload, runtime: Runtime) -> Option<&RunRecord> {
    records.iter().rev().find(|record| {
        matches!(record.role, Role::Probe | Role::Main)
            && record.params.workload == workload
            && record.params.runtime == runtime
    })
}

/// The cells of one row, without the comparison column.
fn record_cells(record: &RunRecord) -> Vec<String> {
    let params = &record.params;
    let mut size = units::count(params.size as u64);
    if params.workload == Workload::Ring {
        size.push_str(&format!(" × {} laps", units::count(params.laps as u64)));
    }
    let runtime = record.params.runtime.label().to_string();
    let Some(measurement) = record.status.measurement() else {
        let reason = match &record.status {
            RunStatus::Refused(_) => "OS refused a thread",
            RunStatus::Crashed { .. } => "crashed",
            RunStatus::TimedOut { .. } => "timed out",
            RunStatus::Skipped { .. } => "not run",
            RunStatus::Completed(_) => "",
        };
        return vec![
            String::new(),
            runtime,
            size,
            "—".into(),
            reason.into(),
            "—".into(),
            "—".into(),
            "✗ see below".into(),
        ];
    };
    let per_operation = match &measurement.latency {
        Some(latency) => format!(
            "median {}, p99 {}",
            units::nanoseconds(latency.median_nanoseconds as f64),
            units::nanoseconds(latency.p99_nanoseconds as f64)
        ),
        None => format!(
            "{}/{}",
            units::nanoseconds(measurement.per_operation_nanoseconds()),
            params.workload.operation(params.runtime)
        ),
    };
    vec![
        String::new(),
        runtime,
        size,
        units::nanoseconds(measurement.wall_nanoseconds as f64),
        per_operation,
        units::bytes(measurement.peak_resident_bytes as f64),
        record
            .bytes_per_process
            .map_or("—".into(), |bytes| units::bytes(bytes).to_string()),
        if measurement.check.passed {
            "✓".into()
        } else {
            "✗ FAILED".into()
        },
    ]
}

/// "12.3× faster" (threads' per-operation time over Starling's), plus memory for W2.
fn compare(starling: &RunRecord, threads: &RunRecord) -> String {
    let (Some(fast), Some(slow)) = (
        starling.per_operation_nanoseconds,
        threads.per_operation_nanoseconds,
    ) else {
        return String::new();
    };
    let mut text = speed_ratio(slow / fast.max(f64::MIN_POSITIVE));
    if let (Some(ours), Some(theirs)) = (starling.bytes_per_process, threads.bytes_per_process) {
        if ours > 0.0 {
            text.push_str(&format!(", {} less memory", units::ratio(theirs / ours)));
        }
    }
    if starling.params.size != threads.params.size || starling.params.laps != threads.params.laps {
        text.push_str(" (threads at a smaller size)");
    }
    text
}

fn speed_ratio(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{} faster", units::ratio(ratio))
    } else {
        format!("{} slower", units::ratio(1.0 / ratio))
    }
}

/// The sweep table: N down, time per spawn and memory per process across.
fn sweep_table(records: &[RunRecord]) -> String {
    if !records.iter().any(|record| record.role == Role::Sweep) {
        return String::new();
    }
    // Every N at which W1 or W2 ran, whatever the run's role (the main runs are points too).
    let mut sizes: Vec<usize> = records
        .iter()
        .filter(|record| matches!(record.params.workload, Workload::Spawn | Workload::Alive))
        .map(|record| record.params.size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut table = Table::new(&[
        "N",
        "W1 Starling",
        "W1 threads",
        "W2 Starling",
        "W2 threads",
    ]);
    for size in sizes {
        let cell = |workload: Workload, runtime: Runtime| {
            let Some(record) = point(records, workload, runtime, size) else {
                return "—".to_string();
            };
            match (workload, record.status.measurement()) {
                (Workload::Spawn, Some(measurement)) => format!(
                    "{}/spawn",
                    units::nanoseconds(measurement.per_operation_nanoseconds())
                ),
                (_, Some(_)) => record.bytes_per_process.map_or("—".into(), |bytes| {
                    format!("{}/process", units::bytes(bytes))
                }),
                (_, None) => match &record.status {
                    RunStatus::Skipped { reason } if reason.contains("budget") => {
                        "not run (time)".into()
                    }
                    RunStatus::Skipped { .. } => "beyond the OS limit".into(),
                    RunStatus::TimedOut { .. } => "timed out".into(),
                    RunStatus::Refused(_) => "OS refused".into(),
                    RunStatus::Crashed {
                        last_progress: Some(_),
                        ..
                    } => "died at the OS limit".into(),
                    _ => "crashed".into(),
                },
            }
        };
        table.push(vec![
            units::count(size as u64),
            cell(Workload::Spawn, Runtime::Starling),
            cell(Workload::Spawn, Runtime::Threads),
            cell(Workload::Alive, Runtime::Starling),
            cell(Workload::Alive, Runtime::Threads),
        ]);
    }
    table.render()
}

/// The record of `workload` on `runtime` at `size`, preferring a completed one.
pub fn point(
    records: &[RunRecord],
    workload: Workload,
    runtime: Runtime,
    size: usize,
) -> Option<&RunRecord> {
    let matching = || {
        records.iter().filter(move |record| {
            record.params.workload == workload
                && record.params.runtime == runtime
                && record.params.size == size
        })
    };
    matching()
        .find(|record| record.status.measurement().is_some())
        .or_else(|| matching().next_back())
}

/// The notes under the tables: how things were measured, and every run given up, with why.
fn notes(result: &SuiteResult) -> Vec<String> {
    let mut notes = vec![
        "wall = the measured part only: Starling's clock runs inside the root process after the \
         VM is built; W3 times the laps after the ring is built; W6 shows round-trip latency."
            .to_string(),
        "peak RSS = VmHWM of the child process that made the run: every run has its own child, \
         so the figure is that run's alone (it includes the program's own few MiB)."
            .to_string(),
        "memory/process (W2) = (VmRSS when all N were alive and blocked − VmRSS just before \
         spawning) / N, all N having reported they were about to block."
            .to_string(),
    ];
    if result.config.threads {
        notes.push(format!(
            "OS limits here: {}. Each OS thread takes 4 memory mappings (its stack and guard \
             page, and Rust's signal stack and its guard page), so about max_map_count / 4 \
             threads can be alive at once{}.",
            result.limits.describe(),
            mappings_per_thread(&result.records)
                .map_or(String::new(), |measured| format!(" (measured: {measured})"))
        ));
    }
    for record in &result.records {
        if record.params.runtime == Runtime::Threads && record.role == Role::Probe {
            notes.push(format!(
                "{}: {}",
                crate::cli::suite::label(&record.params),
                record.status.failure()
            ));
        }
        if record.params.runtime == Runtime::Threads
            && record.role == Role::Main
            && record.params.workload == Workload::Ring
            && record.params.laps != record.params.workload.reference_laps()
            && !result.config.quick
        {
            notes.push(format!(
                "W3 on OS threads makes {} laps instead of {}: each hop costs a kernel wake-up, \
                 and 10 M of them would take minutes; the time per hop is comparable.",
                units::count(record.params.laps as u64),
                units::count(record.params.workload.reference_laps() as u64)
            ));
        }
    }
    notes
}

/// Mappings per thread as a run that died at the limit saw them: the W2 probe, whose threads
/// are all alive and set up when it reports.
fn mappings_per_thread(records: &[RunRecord]) -> Option<String> {
    records.iter().find_map(|record| {
        let (alive, mappings) = match &record.status {
            RunStatus::Crashed {
                last_progress: Some(progress),
                ..
            } if record.params.workload == Workload::Alive => {
                (progress.threads_alive, progress.memory_mappings)
            }
            RunStatus::Refused(refusal) if record.params.workload == Workload::Alive => {
                (refusal.threads_alive, refusal.memory_mappings)
            }
            _ => return None,
        };
        (alive > 0).then(|| {
            format!(
                "{} mappings with {} threads alive, {:.1} per thread",
                units::count(mappings as u64),
                units::count(alive as u64),
                mappings as f64 / alive as f64
            )
        })
    })
}

/// A plain-text table with columns as wide as their widest cell.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|cell| cell.to_string()).collect()],
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if column + 1 < row.len() {
                    let padding = widths[column] - cell.chars().count() + 2;
                    line.push_str(&" ".repeat(padding));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
            if index == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * (columns.max(1) - 1);
                text.push_str(&"─".repeat(total));
                text.push('\n');
            }
        }
        text
    }
}
