//! What one run measured, how it ended, and the record the suite keeps of it (all serializable).

use serde::{Deserialize, Serialize};

use crate::cli::units;
use crate::cli::workload::{Params, Workload};

/// The figures of one completed run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// Time of the measured part, in nanoseconds (VM or thread start-up excluded; for W3 the
    /// laps only, after the ring is built).
    pub wall_nanoseconds: u64,
    /// Operations performed: spawns, processes, hops, round trips or leaves.
    pub operations: u64,
    /// Round-trip latencies (W6 only).
    pub latency: Option<Latency>,
    /// VmRSS just before the workload started, in bytes.
    pub resident_before_bytes: u64,
    /// VmRSS when all N processes were alive and blocked (W2 only), in bytes.
    pub resident_all_alive_bytes: Option<u64>,
    /// VmHWM of the child OS process after the run, in bytes.
    pub peak_resident_bytes: u64,
    /// Most OS threads alive at once during the run (threads runtime only).
    pub peak_threads: Option<usize>,
    /// Whether the workload's own result (sum, count, laps) came out right.
    pub check: Check,
}

impl Measurement {
    /// Time per operation, in nanoseconds: the median round trip for W6, wall / operations otherwise.
    pub fn per_operation_nanoseconds(&self) -> f64 {
        match &self.latency {
            Some(latency) => latency.median_nanoseconds as f64,
            None => self.wall_nanoseconds as f64 / self.operations.max(1) as f64,
        }
    }

    /// Resident bytes each of N alive processes added (W2 only): (RSS all alive − RSS before) / N.
    pub fn bytes_per_process(&self, size: usize) -> Option<f64> {
        let alive = self.resident_all_alive_bytes?;
        Some((alive as f64 - self.resident_before_bytes as f64) / size.max(1) as f64)
    }
}

/// Median and tail of a latency sample.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    /// Median, in nanoseconds.
    pub median_nanoseconds: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_nanoseconds: u64,
    /// Largest sample, in nanoseconds.
    pub max_nanoseconds: u64,
}

impl Latency {
    /// Summarises samples (sorts them in place). Returns `None` for an empty sample.
    pub fn from_samples(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction).round() as usize];
        Some(Latency {
            median_nanoseconds: at(0.5),
            p99_nanoseconds: at(0.99),
            max_nanoseconds: samples[samples.len() - 1],
        })
    }
}

/// The outcome of a workload's self-check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    /// `true` if the result matched the expected value.
    pub passed: bool,
    /// What was compared, e.g. `sum 499999500000 (expected 499999500000)`.
    pub detail: String,
}

impl Check {
    /// Compares an observed value with the expected one and says what was compared.
    pub fn equal<T: PartialEq + std::fmt::Display>(what: &str, observed: T, expected: T) -> Check {
        Check {
            passed: observed == expected,
            detail: if observed == expected {
                format!("{what} {observed}")
            } else {
                format!("{what} {observed}, expected {expected}")
            },
        }
    }

    /// Both checks must pass.
    pub fn and(self, other: Check) -> Check {
        Check {
            passed: self.passed && other.passed,
            detail: format!("{}; {}", self.detail, other.detail),
        }
    }
}

/// What a child OS process reports on its standard output, as one JSON line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ChildOutcome {
    /// The workload ran to the end (its check may still have failed).
    Completed(Measurement),
    /// The OS refused a thread (spawn error); the child cleaned up and exited normally.
    Refused(Refusal),
}

/// The OS refused to start another thread.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refusal {
    /// Threads this run had started when the refusal came.
    pub threads_started: usize,
    /// OS threads alive in the process at that moment.
    pub threads_alive: usize,
    /// The error the OS gave, as `std::io::Error` prints it.
    pub error: String,
    /// Memory mappings the process held at that moment.
    pub memory_mappings: usize,
}

/// How far a threads run had got: the child prints one of these every 1,024 threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildProgress {
    /// Threads started so far.
    pub threads_started: usize,
    /// Threads started and not yet finished.
    pub threads_alive: usize,
    /// Memory mappings of the child at that moment.
    pub memory_mappings: usize,
}

/// How a run in a child process ended, as seen by the parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunStatus {
    /// The workload completed; see its check.
    Completed(Measurement),
    /// The OS refused to start a thread; the size is beyond what OS threads can do here.
    Refused(Refusal),
    /// The child died (abort, signal, OOM kill) or printed no result.
    Crashed {
        /// Exit status or signal.
        exit: String,
        /// The telling lines of what the child wrote to standard error (panic messages, the
        /// runtime's last words), at most a few.
        stderr_tail: String,
        /// The child's last progress report before it died (threads runtime only).
        last_progress: Option<ChildProgress>,
    },
    /// The child ran past its time cap and was killed.
    TimedOut {
        /// The cap, in seconds.
        cap_seconds: f64,
    },
    /// The run was not attempted: a smaller size already hit the OS limit.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl RunStatus {
    /// The measurement, if the run completed.
    pub fn measurement(&self) -> Option<&Measurement> {
        match self {
            RunStatus::Completed(measurement) => Some(measurement),
            _ => None,
        }
    }

    /// One line saying why the run has no figures (empty for a completed run).
    pub fn failure(&self) -> String {
        match self {
            RunStatus::Completed(_) => String::new(),
            RunStatus::Refused(refusal) => format!(
                "the OS refused thread #{} ({}); {} threads alive, {} memory mappings",
                units::count(refusal.threads_started as u64 + 1),
                refusal.error,
                units::count(refusal.threads_alive as u64),
                units::count(refusal.memory_mappings as u64)
            ),
            RunStatus::Crashed {
                exit,
                stderr_tail,
                last_progress,
            } => {
                let mut text = format!("child process died: {exit}");
                if let Some(progress) = last_progress {
                    text.push_str(&format!(
                        "; its last progress report (one per 1,024 threads) said {} threads \
                         started, {} alive, {} memory mappings",
                        units::count(progress.threads_started as u64),
                        units::count(progress.threads_alive as u64),
                        units::count(progress.memory_mappings as u64)
                    ));
                }
                let tail = stderr_tail.trim();
                if !tail.is_empty() {
                    text.push_str(&format!("; it said: {}", tail.replace('\n', " | ")));
                }
                text
            }
            RunStatus::TimedOut { cap_seconds } => {
                format!("did not finish within its {cap_seconds:.0} s cap (killed)")
            }
            RunStatus::Skipped { reason } => reason.clone(),
        }
    }
}

/// Why the suite made a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The run shown in the main table.
    Main,
    /// A size tried first and given up (OS limit, crash or time cap); a smaller one followed.
    Probe,
    /// A point of the scaling sweep behind the chart (1 K .. 1 M).
    Sweep,
}

/// One run as the suite records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// What was run.
    pub params: Params,
    /// Why it was run.
    pub role: Role,
    /// How it ended.
    #[serde(flatten)]
    pub status: RunStatus,
    /// Time the child process took from start to exit, in seconds.
    pub child_seconds: f64,
    /// Per-operation time in nanoseconds (copied here for readers of the JSON).
    pub per_operation_nanoseconds: Option<f64>,
    /// Bytes per alive process (W2 only).
    pub bytes_per_process: Option<f64>,
}

impl RunRecord {
    /// Builds the record and fills in the derived figures.
    pub fn new(params: Params, role: Role, status: RunStatus, child_seconds: f64) -> RunRecord {
        let measurement = status.measurement();
        let per_operation_nanoseconds = measurement.map(Measurement::per_operation_nanoseconds);
        let bytes_per_process = measurement
            .filter(|_| params.workload == Workload::Alive)
            .and_then(|measurement| measurement.bytes_per_process(params.size));
        RunRecord {
            params,
            role,
            status,
            child_seconds,
            per_operation_nanoseconds,
            bytes_per_process,
        }
    }

    /// `true` if the run completed and its check passed.
    pub fn passed(&self) -> bool {
        self.status.measurement().is_some_and(|m| m.check.passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let latency = Latency::from_samples(&mut samples).unwrap();
        assert_eq!(latency.median_nanoseconds, 51);
        assert_eq!(latency.p99_nanoseconds, 99);
        assert_eq!(latency.max_nanoseconds, 100);
        assert!(Latency::from_samples(&mut []).is_none());
    }

    #[test]
    fn outcome_round_trips_through_json() {
        let outcome = ChildOutcome::Refused(Refusal {
            threads_started: 16_350,
            threads_alive: 16_351,
            error: "Resource temporarily unavailable (os error 11)".into(),
            memory_mappings: 65_530,
        });
        let line = serde_json::to_string(&outcome).unwrap();
        let back: ChildOutcome = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, ChildOutcome::Refused(r) if r.threads_started == 16_350));
    }
}
