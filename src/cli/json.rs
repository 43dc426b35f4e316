//! `--json FILE`: every figure of a suite or a single run, machine-readable (serde_json).

use std::path::Path;

use serde::Serialize;

use crate::cli::measurement::{Role, RunRecord};
use crate::cli::memory::OsLimits;
use crate::cli::suite::{failures, SuiteConfig, SuiteResult};
use crate::cli::workload::{Runtime, Workload};

/// The document written for a suite.
#[derive(Serialize)]
struct SuiteDocument<'a> {
    program: &'static str,
    version: &'static str,
    config: &'a SuiteConfig,
    limits: &'a OsLimits,
    wall_seconds: f64,
    passed: bool,
    failures: Vec<String>,
    /// One entry per workload: the main Starling run against the main OS-threads run.
    comparison: Vec<Comparison>,
    /// Every run, including probes given up and sweep points.
    runs: &'a [RunRecord],
}

/// Starling against OS threads for one workload.
#[derive(Serialize)]
struct Comparison {
    workload: Workload,
    starling_size: Option<usize>,
    starling_per_operation_nanoseconds: Option<f64>,
    starling_bytes_per_process: Option<f64>,
    threads_size: Option<usize>,
    threads_per_operation_nanoseconds: Option<f64>,
    threads_bytes_per_process: Option<f64>,
    /// Threads' per-operation time over Starling's (> 1: Starling is faster).
    speedup: Option<f64>,
}

/// The document written for `starling run`.
#[derive(Serialize)]
struct RunDocument<'a> {
    program: &'static str,
    version: &'static str,
    limits: OsLimits,
    passed: bool,
    failures: Vec<String>,
    run: &'a RunRecord,
}

/// Writes the suite's figures to `path`.
pub fn write_suite(path: &Path, result: &SuiteResult) -> Result<(), String> {
    let failures = result.failures();
    let document = SuiteDocument {
        program: "starling",
        version: env!("CARGO_PKG_VERSION"),
        config: &result.config,
        limits: &result.limits,
        wall_seconds: result.wall_seconds,
        passed: failures.is_empty(),
        failures,
        comparison: Workload::ALL
            .into_iter()
            .map(|workload| comparison(&result.records, workload))
            .collect(),
        runs: &result.records,
    };
    write(path, &document)
}

/// Writes one run's figures to `path`.
pub fn write_single(path: &Path, record: &RunRecord) -> Result<(), String> {
    let failures = failures(std::slice::from_ref(record));
    let document = RunDocument {
        program: "starling",
        version: env!("CARGO_PKG_VERSION"),
        limits: OsLimits::read(),
        passed: failures.is_empty() && record.status.measurement().is_some(),
        failures,
        run: record,
    };
    write(path, &document)
}

fn comparison(records: &[RunRecord], workload: Workload) -> Comparison {
    let main = |runtime: Runtime| {
        records.iter().find(|record| {
            record.role == Role::Main
                && record.params.workload == workload
                && record.params.runtime == runtime
        })
    };
    let starling = main(Runtime::Starling);
    let threads = main(Runtime::Threads);
    let starling_time = starling.and_then(|record| record.per_operation_nanoseconds);
    let threads_time = threads.and_then(|record| record.per_operation_nanoseconds);
    Comparison {
        workload,
        starling_size: starling.map(|record| record.params.size),
        starling_per_operation_nanoseconds: starling_time,
        starling_bytes_per_process: starling.and_then(|record| record.bytes_per_process),
        threads_size: threads.map(|record| record.params.size),
        threads_per_operation_nanoseconds: threads_time,
        threads_bytes_per_process: threads.and_then(|record| record.bytes_per_process),
        speedup: starling_time
            .zip(threads_time)
            .filter(|(ours, _)| *ours > 0.0)
            .map(|(ours, theirs)| theirs / ours),
    }
}

fn write(path: &Path, document: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(document)
        .map_err(|error| format!("serializing the figures: {error}"))?;
    std::fs::write(path, text + "\n")
        .map_err(|error| format!("writing {}: {error}", path.display()))
}
