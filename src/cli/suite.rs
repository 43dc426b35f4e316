//! The suite: which runs to make, in which order, with which time caps, and the fallbacks for
//! OS threads where the OS cannot take the reference size.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::measurement::{Role, RunRecord, RunStatus};
use crate::cli::memory::OsLimits;
use crate::cli::probe;
use crate::cli::progress::Progress;
use crate::cli::units;
use crate::cli::workload::{Params, Runtime, Workload, STARVATION_SPINNERS};
use crate::cli::workloads::threads::SPAWN_WAVE;

/// How the suite was asked to run.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteConfig {
    /// The small suite (`--quick`).
    pub quick: bool,
    /// Whether the OS-thread runs are made.
    pub threads: bool,
    /// Whether the scaling sweep (W1 and W2 at 1 K .. 1 M) is made.
    pub sweep: bool,
    /// Stack size of every OS thread, in bytes.
    pub thread_stack_bytes: usize,
}

/// Everything the suite measured.
#[derive(Debug, Serialize)]
pub struct SuiteResult {
    /// How it was run.
    pub config: SuiteConfig,
    /// The machine's limits on threads.
    pub limits: OsLimits,
    /// Every run, in the order made.
    pub records: Vec<RunRecord>,
    /// Time the whole suite took, in seconds.
    pub wall_seconds: f64,
}

/// Cap of one Starling run in the full suite: each should take a few seconds (W2, the slowest,
/// 3.5 s here), so 30 s means a hang.
const STARLING_CAP: Duration = Duration::from_secs(30);
/// Cap of one OS-thread run in the full suite (the 1 M-thread W1 has its own).
const THREADS_CAP: Duration = Duration::from_secs(60);
/// Cap of the 1 M-thread W1: 45–65 µs per thread spawn and join here makes it 45–65 s.
const THREADS_SPAWN_MILLION_CAP: Duration = Duration::from_secs(90);
/// The whole default suite must finish within 3 minutes; this leaves 10 s for the report.
const SUITE_BUDGET: Duration = Duration::from_secs(170);
/// Safety factor on a predicted run time (guessed: runs here vary by ±20% with the load).
const PREDICTION_MARGIN: f64 = 1.2;
/// Cap of a size that is expected to hit the OS limit (it usually dies in a few seconds).
const THREADS_PROBE_CAP: Duration = Duration::from_secs(30);
/// Cap of any run in the `--quick` suite (its largest runs take under 3 s here).
const QUICK_CAP: Duration = Duration::from_secs(20);
/// A thread run predicted (from a smaller run) to take longer than this is skipped, keeping
/// the default suite under 3 minutes on a 2-core machine.
const THREADS_PREDICTED_BUDGET_SECONDS: f64 = 70.0;
/// Sizes of the scaling sweep behind the chart.
const SWEEP_SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Sizes of the scaling sweep in the `--quick` suite.
const QUICK_SWEEP_SIZES: [usize; 2] = [1_000, 10_000];
/// Hops a thread ring makes in the full suite: at ~20 µs per hop through 10 K threads that is
/// about 2 s, where the 10 M hops of the reference run would take minutes.
const THREADS_RING_HOPS: usize = 100_000;

/// Runs the suite, showing progress on standard error.
pub fn run(config: SuiteConfig) -> SuiteResult {
    let started = Instant::now();
    let planned = Workload::ALL.len() * if config.threads { 2 } else { 1 };
    let mut suite = Suite {
        progress: Progress::new(planned as u64),
        records: Vec::new(),
        config: config.clone(),
    };
    for workload in Workload::ALL {
        suite.run_starling(workload);
    }
    if config.threads {
        for workload in Workload::ALL {
            suite.run_threads(workload);
        }
    }
    if config.sweep {
        suite.run_sweep();
    }
    if config.threads && !config.quick {
        suite.run_threads_spawn_million(started);
    }
    let Suite {
        progress, records, ..
    } = suite;
    progress.finish();
    SuiteResult {
        config,
        limits: OsLimits::read(),
        records,
        wall_seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs one workload in a child process with a progress spinner: `starling run`.
pub fn run_single(params: Params, cap: Duration) -> RunRecord {
    let progress = Progress::new(1);
    let record = run_one(&progress, params, Role::Main, cap);
    progress.finish();
    record
}

struct Suite {
    progress: Progress,
    records: Vec<RunRecord>,
    config: SuiteConfig,
}

impl Suite {
    fn params(&self, workload: Workload, runtime: Runtime, size: usize, laps: usize) -> Params {
        Params {
            workload,
            runtime,
            size,
            laps,
            schedulers: workload.default_schedulers(),
            spinners: if workload == Workload::Starvation {
                STARVATION_SPINNERS
            } else {
                0
            },
            thread_stack_bytes: self.config.thread_stack_bytes,
        }
    }

    fn cap(&self, normal: Duration) -> Duration {
        if self.config.quick {
            QUICK_CAP
        } else {
            normal
        }
    }

    fn run(&mut self, params: Params, role: Role, cap: Duration) -> &RunRecord {
        let record = run_one(&self.progress, params, role, cap);
        self.records.push(record);
        self.records.last().expect("just pushed")
    }

    fn skip(&mut self, params: Params, role: Role, reason: String) {
        let record = RunRecord::new(params, role, RunStatus::Skipped { reason }, 0.0);
        let run = self.progress.start(label(&params), Duration::ZERO);
        run.finish(&summary(&record));
        self.records.push(record);
    }

    fn run_starling(&mut self, workload: Workload) {
        let (size, laps) = if self.config.quick {
            (workload.quick_size(), workload.quick_laps())
        } else {
            (workload.reference_size(), workload.reference_laps())
        };
        let params = self.params(workload, Runtime::Starling, size, laps);
        let cap = self.cap(STARLING_CAP);
        self.run(params, Role::Main, cap);
    }

    /// Tries the sizes of [`thread_attempts`] in order until one completes: that one is the
    /// main run; the ones given up are kept as probes, and sizes beyond a limit already seen,
    /// or predicted to take too long, are skipped.
    fn run_threads(&mut self, workload: Workload) {
        for (index, attempt) in thread_attempts(workload, self.config.quick)
            .into_iter()
            .enumerate()
        {
            if index > 0 {
                self.progress.add_runs(1);
            }
            let params = self.params(workload, Runtime::Threads, attempt.size, attempt.laps);
            if attempt.calibration {
                let cap = self.cap(attempt.cap);
                self.run(params, Role::Sweep, cap);
                continue;
            }
            if let Some(reason) = self.reason_to_skip(params) {
                self.skip(params, Role::Probe, reason);
                continue;
            }
            let cap = self.cap(attempt.cap);
            if self
                .run(params, Role::Probe, cap)
                .status
                .measurement()
                .is_some()
            {
                self.records.last_mut().expect("just pushed").role = Role::Main;
                return;
            }
        }
    }

    /// Why a threads run need not be made: a limit already seen, or a predicted time over budget.
    fn reason_to_skip(&self, params: Params) -> Option<String> {
        if let Some(needed) = threads_needed(params) {
            // The limit seen by the same workload: other workloads reach it at other counts
            // (a skynet tree dies with threads still starting up, for one).
            let limit = self
                .records
                .iter()
                .filter(|record| {
                    record.params.runtime == Runtime::Threads
                        && record.params.workload == params.workload
                })
                .filter_map(|record| threads_at_failure(&record.status))
                .min();
            if let Some(limit) = limit.filter(|limit| needed >= *limit) {
                return Some(format!(
                    "not run: needs {} threads alive at once, and the larger run died or was \
                     refused with {} alive",
                    units::count(needed as u64),
                    units::count(limit as u64)
                ));
            }
        }
        if self.config.quick {
            return None;
        }
        let per_operation = self
            .records
            .iter()
            .filter(|record| {
                record.params.runtime == Runtime::Threads
                    && record.params.workload == params.workload
                    && record.params.size >= 10_000
            })
            .filter_map(|record| record.per_operation_nanoseconds)
            .next_back()?;
        let operations = params.workload.operations(params.size, params.laps) as f64;
        let predicted_seconds = per_operation * operations / 1e9;
        (predicted_seconds > THREADS_PREDICTED_BUDGET_SECONDS).then(|| {
            format!(
                "not run: would take ~{:.0} s at the {} per {} measured at a smaller size, over \
                 the {:.0} s budget that keeps the suite under 3 minutes (`starling run {} \
                 --threads -n {}` runs it)",
                predicted_seconds,
                units::nanoseconds(per_operation),
                params.workload.operation(params.runtime),
                THREADS_PREDICTED_BUDGET_SECONDS,
                params.workload.alias(),
                params.size
            )
        })
    }

    /// W1 on 1 M OS threads, the reference size, made last and only if its predicted time
    /// (from the largest W1 threads run so far) fits in what is left of [`SUITE_BUDGET`]. If it
    /// completes it becomes the main run and the smaller one a sweep point.
    fn run_threads_spawn_million(&mut self, suite_started: Instant) {
        let size = Workload::Spawn.reference_size();
        let params = self.params(Workload::Spawn, Runtime::Threads, size, 1);
        let measured = self
            .records
            .iter()
            .filter(|record| {
                record.params.workload == Workload::Spawn
                    && record.params.runtime == Runtime::Threads
            })
            .filter_map(|record| Some((record.params.size, record.per_operation_nanoseconds?)))
            .max_by_key(|(size, _)| *size);
        let Some((_, per_spawn)) = measured else {
            return;
        };
        self.progress.add_runs(1);
        let predicted = per_spawn * size as f64 / 1e9 * PREDICTION_MARGIN;
        let left = SUITE_BUDGET.saturating_sub(suite_started.elapsed());
        if predicted > left.as_secs_f64() {
            let reason = format!(
                "not run: predicted ~{predicted:.0} s ({} per spawn measured, +{:.0}% margin), \
                 and {:.0} s of the suite's 3-minute budget were left (`starling run spawn \
                 --threads -n {size}` runs it)",
                units::nanoseconds(per_spawn),
                (PREDICTION_MARGIN - 1.0) * 100.0,
                left.as_secs_f64()
            );
            self.skip(params, Role::Probe, reason);
            return;
        }
        let cap = THREADS_SPAWN_MILLION_CAP.min(left);
        if self
            .run(params, Role::Probe, cap)
            .status
            .measurement()
            .is_none()
        {
            return;
        }
        for record in &mut self.records {
            if record.params.workload == Workload::Spawn
                && record.params.runtime == Runtime::Threads
                && record.role == Role::Main
            {
                record.role = Role::Sweep;
            }
        }
        self.records.last_mut().expect("just pushed").role = Role::Main;
    }

    /// W1 and W2 at 1 K .. 1 M on both runtimes, reusing runs already made.
    fn run_sweep(&mut self) {
        let sizes: &[usize] = if self.config.quick {
            &QUICK_SWEEP_SIZES
        } else {
            &SWEEP_SIZES
        };
        let mut wanted = Vec::new();
        for workload in [Workload::Spawn, Workload::Alive] {
            for runtime in [Runtime::Starling, Runtime::Threads] {
                if runtime == Runtime::Threads && !self.config.threads {
                    continue;
                }
                for &size in sizes {
                    if runtime == Runtime::Threads
                        && workload == Workload::Spawn
                        && size == workload.reference_size()
                    {
                        // Made last, within the suite's budget: `run_threads_spawn_million`.
                        continue;
                    }
                    let done = self.records.iter().any(|record| {
                        record.params.workload == workload
                            && record.params.runtime == runtime
                            && record.params.size == size
                            && !matches!(record.status, RunStatus::Skipped { .. })
                    });
                    if !done {
                        wanted.push(self.params(workload, runtime, size, 1));
                    }
                }
            }
        }
        self.progress.add_runs(wanted.len() as u64);
        for params in wanted {
            if params.runtime == Runtime::Threads {
                if let Some(reason) = self.reason_to_skip(params) {
                    self.skip(params, Role::Sweep, reason);
                    continue;
                }
            }
            let cap = match params.runtime {
                Runtime::Starling => STARLING_CAP,
                Runtime::Threads => THREADS_CAP,
            };
            let cap = self.cap(cap);
            self.run(params, Role::Sweep, cap);
        }
    }
}

/// Threads a run needs alive at once, if that is known in advance.
fn threads_needed(params: Params) -> Option<usize> {
    match params.workload {
        Workload::Spawn => Some(params.size.min(SPAWN_WAVE) + 1),
        Workload::Alive => Some(params.size + 1),
        Workload::Ring => Some(params.size),
        Workload::PingPong => Some(2),
        Workload::Skynet => None,
        Workload::Starvation => Some(params.spinners + 2),
    }
}

/// Threads a run had started when the OS refused one or the child died.
fn threads_at_failure(status: &RunStatus) -> Option<usize> {
    match status {
        RunStatus::Refused(refusal) => Some(refusal.threads_started),
        RunStatus::Crashed {
            last_progress: Some(progress),
            ..
        } => Some(progress.threads_alive),
        _ => None,
    }
}

/// One size a threads run tries.
struct Attempt {
    size: usize,
    laps: usize,
    cap: Duration,
    /// Made only to predict the time of the next attempt; recorded as a sweep point.
    calibration: bool,
}

impl Attempt {
    fn new(size: usize, laps: usize, cap: Duration) -> Attempt {
        Attempt {
            size,
            laps,
            cap,
            calibration: false,
        }
    }
}

/// The sizes a threads run tries, in order; the first that completes is the main run.
fn thread_attempts(workload: Workload, quick: bool) -> Vec<Attempt> {
    if quick {
        return vec![Attempt::new(
            workload.quick_size(),
            workload.quick_laps(),
            QUICK_CAP,
        )];
    }
    match workload {
        // 100 K here; 1 M short-lived threads fit too (spawned and joined in waves) but take
        // about a minute, so they run last, if the suite's budget allows: see
        // `run_threads_spawn_million`. The 10 K calibration run is a sweep point.
        Workload::Spawn => vec![
            Attempt {
                calibration: true,
                ..Attempt::new(10_000, 1, THREADS_CAP)
            },
            Attempt::new(100_000, 1, THREADS_CAP),
        ],
        // 1 M alive threads cannot exist here (~16 K do); the probe shows where it stops.
        Workload::Alive => vec![
            Attempt::new(1_000_000, 1, THREADS_PROBE_CAP),
            Attempt::new(10_000, 1, THREADS_CAP),
            Attempt::new(1_000, 1, THREADS_CAP),
        ],
        // A 10 K ring is about at the limit; smaller rings if it fails. Fewer laps: see
        // THREADS_RING_HOPS.
        Workload::Ring => [10_000, 5_000, 1_000]
            .into_iter()
            .map(|size| Attempt::new(size, THREADS_RING_HOPS / size, THREADS_CAP))
            .collect(),
        // ~11 µs per round trip through the kernel here: 100 K round trips take about 1 s.
        Workload::PingPong => vec![Attempt::new(100_000, 1, THREADS_CAP)],
        // 1,111,111 threads: the probe shows where the OS stops it; then 10 K leaves.
        Workload::Skynet => vec![
            Attempt::new(1_000_000, 1, THREADS_PROBE_CAP),
            Attempt::new(10_000, 1, THREADS_CAP),
        ],
        Workload::Starvation => vec![Attempt::new(10_000, 1, THREADS_CAP)],
    }
}

/// Runs one workload in a child process with a spinner, and records it.
fn run_one(progress: &Progress, params: Params, role: Role, cap: Duration) -> RunRecord {
    let run = progress.start(label(&params), cap);
    let (status, seconds) = probe::run_in_child(params, cap, &|latest| run.update(latest));
    let record = RunRecord::new(params, role, status, seconds);
    run.finish(&summary(&record));
    record
}

/// What a run is, in words: `W3 ring · Starling · 10,000 processes in the ring × 1,000 laps`.
pub fn label(params: &Params) -> String {
    let mut text = format!(
        "{} · {} · {} {}",
        params.workload.title(),
        params.runtime.label(),
        units::count(params.size as u64),
        params.workload.size_meaning(params.runtime)
    );
    if params.workload == Workload::Ring {
        text.push_str(&format!(" × {} laps", units::count(params.laps as u64)));
    }
    text
}

/// How a run ended, in a few words: `0.42 s, 420 ns per spawn, check passed`.
pub fn summary(record: &RunRecord) -> String {
    match record.status.measurement() {
        Some(measurement) => format!(
            "{}, {} per {}, {}",
            units::nanoseconds(measurement.wall_nanoseconds as f64),
            units::nanoseconds(measurement.per_operation_nanoseconds()),
            record.params.workload.operation(record.params.runtime),
            if measurement.check.passed {
                "check passed".to_string()
            } else {
                format!("CHECK FAILED ({})", measurement.check.detail)
            }
        ),
        None => record.status.failure(),
    }
}

impl SuiteResult {
    /// Every failed check, and every Starling run that did not complete, named.
    pub fn failures(&self) -> Vec<String> {
        failures(&self.records)
    }
}

/// Failed checks and incomplete Starling runs among `records`, one line each; OS-thread runs
/// that hit the OS's limits are expected and are not failures.
pub fn failures(records: &[RunRecord]) -> Vec<String> {
    let mut failures = Vec::new();
    for record in records {
        let what = label(&record.params);
        match &record.status {
            RunStatus::Completed(measurement) if !measurement.check.passed => {
                failures.push(format!(
                    "{what}: check failed: {}",
                    measurement.check.detail
                ));
            }
            RunStatus::Completed(_) | RunStatus::Skipped { .. } => {}
            status if record.params.runtime == Runtime::Starling => {
                failures.push(format!("{what}: {}", status.failure()));
            }
            _ => {}
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::measurement::{Check, Measurement};

    fn record(runtime: Runtime, status: RunStatus) -> RunRecord {
        let params = Params {
            workload: Workload::Ring,
            runtime,
            size: 10,
            laps: 2,
            schedulers: 2,
            spinners: 0,
            thread_stack_bytes: 64 * 1024,
        };
        RunRecord::new(params, Role::Main, status, 1.0)
    }

    fn completed(check: Check) -> RunStatus {
        RunStatus::Completed(Measurement {
            wall_nanoseconds: 1_000,
            operations: 20,
            latency: None,
            resident_before_bytes: 0,
            resident_all_alive_bytes: None,
            peak_resident_bytes: 0,
            peak_threads: None,
            check,
        })
    }

    #[test]
    fn names_failed_checks_and_incomplete_starling_runs_only() {
        let records = [
            record(Runtime::Starling, completed(Check::equal("hops", 19, 20))),
            record(Runtime::Threads, completed(Check::equal("hops", 20, 20))),
            record(Runtime::Starling, RunStatus::TimedOut { cap_seconds: 30.0 }),
            record(
                Runtime::Threads,
                RunStatus::Crashed {
                    exit: "killed by signal 6".into(),
                    stderr_tail: String::new(),
                    last_progress: None,
                },
            ),
        ];
        let failures = failures(&records);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("W3 ring · Starling · 10 processes in the ring × 2 laps"));
        assert!(failures[0].contains("hops 19, expected 20"));
        assert!(failures[1].contains("30 s cap"));
    }
}
