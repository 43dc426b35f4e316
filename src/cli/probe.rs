//! Child-process runs: the parent re-executes this program with the hidden `child` subcommand,
//! waits with a time cap, and turns a crash, abort or OOM kill into a [`RunStatus`].
//!
//! Protocol: the child prints its [`ChildOutcome`] as one JSON line on standard output; on
//! standard error it may print progress lines (see [`progress_line`]) among anything else.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::args::ChildArgs;
use crate::cli::measurement::{ChildOutcome, ChildProgress, RunStatus};
use crate::cli::workload::{Params, Runtime};
use crate::cli::workloads;

/// How often the parent checks on its child and redraws the progress line (guessed: fast
/// enough for a smooth spinner, slow enough to cost nothing).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Telling lines of the child's standard error kept for a crash report.
const STDERR_LINES_KEPT: usize = 3;

/// How a progress line starts.
const PROGRESS_PREFIX: &str = "starling-progress";

/// The progress line a threads run prints on standard error.
pub fn progress_line(
    threads_started: usize,
    threads_alive: usize,
    memory_mappings: usize,
) -> String {
    format!("{PROGRESS_PREFIX} {threads_started} {threads_alive} {memory_mappings}")
}

fn parse_progress(line: &str) -> Option<ChildProgress> {
    let mut fields = line.strip_prefix(PROGRESS_PREFIX)?.split_whitespace();
    let mut next = || fields.next()?.parse::<usize>().ok();
    Some(ChildProgress {
        threads_started: next()?,
        threads_alive: next()?,
        memory_mappings: next()?,
    })
}

/// What the parent knows of a running child, for the progress display.
#[derive(Default)]
struct StderrState {
    /// Everything but progress lines.
    text: String,
    /// The latest progress line.
    progress: Option<ChildProgress>,
}

/// Runs `params` in a child process; kills it after `cap`. Calls `tick` with the child's latest
/// progress while waiting. Returns how the run ended and the child's lifetime in seconds.
pub fn run_in_child(
    params: Params,
    cap: Duration,
    tick: &dyn Fn(Option<ChildProgress>),
) -> (RunStatus, f64) {
    let started = Instant::now();
    let executable = match this_program() {
        Ok(path) => path,
        Err(error) => {
            return (
                crashed(
                    format!("cannot find this program: {error}"),
                    &StderrState::default(),
                ),
                0.0,
            )
        }
    };
    let spawned = Command::new(executable)
        .args(child_arguments(params))
        // One-line panic messages: a backtrace per dying thread would bury the OS's error.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            return (
                crashed(
                    format!("cannot start a child process: {error}"),
                    &StderrState::default(),
                ),
                0.0,
            )
        }
    };
    // Both pipes are drained on their own threads so that a chatty child cannot block on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr_state = Arc::new(Mutex::new(StderrState::default()));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| drain_stderr(pipe, stderr_state.clone()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= cap => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                let progress = stderr_state.lock().map_or(None, |state| state.progress);
                tick(progress);
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return (
                    crashed(
                        format!("waiting for the child: {error}"),
                        &StderrState::default(),
                    ),
                    0.0,
                );
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let stdout = stdout
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    if let Some(reader) = stderr {
        let _ = reader.join();
    }
    let stderr = std::mem::take(
        &mut *stderr_state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()),
    );
    let Some(status) = status else {
        return (timed_out(cap, &stdout), seconds);
    };
    (interpret(status, &stdout, &stderr), seconds)
}

/// The executable to re-run. `/proc/self/exe` names this very program even after a rebuild has
/// replaced or deleted its file (then `current_exe()` ends in " (deleted)" and cannot be run).
fn this_program() -> std::io::Result<std::path::PathBuf> {
    let own = std::path::PathBuf::from("/proc/self/exe");
    if own.exists() {
        Ok(own)
    } else {
        std::env::current_exe()
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn drain_stderr(
    pipe: impl Read + Send + 'static,
    state: Arc<Mutex<StderrState>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut state = state.lock().unwrap_or_else(|poison| poison.into_inner());
            match parse_progress(&line) {
                Some(progress) => state.progress = Some(progress),
                None => {
                    state.text.push_str(&line);
                    state.text.push('\n');
                }
            }
        }
    })
}

fn child_arguments(params: Params) -> Vec<String> {
    let runtime = match params.runtime {
        Runtime::Starling => "starling",
        Runtime::Threads => "threads",
    };
    vec![
        "child".into(),
        "--workload".into(),
        params.workload.id().into(),
        "--runtime".into(),
        runtime.into(),
        "--size".into(),
        params.size.to_string(),
        "--laps".into(),
        params.laps.to_string(),
        "--schedulers".into(),
        params.schedulers.to_string(),
        "--spinners".into(),
        params.spinners.to_string(),
        "--thread-stack-bytes".into(),
        params.thread_stack_bytes.to_string(),
    ]
}

/// A child killed at its cap. If it had already printed a result, the workload finished but
/// the OS process did not exit (a VM shutdown that hangs): the figures stand, the check fails.
fn timed_out(cap: Duration, stdout: &str) -> RunStatus {
    match parse_outcome(stdout) {
        Some(ChildOutcome::Completed(mut measurement)) => {
            measurement.check.passed = false;
            measurement.check.detail.push_str(&format!(
                "; but the child did not exit after printing its result and was killed at its \
                 {:.0} s cap (VM shutdown hung?)",
                cap.as_secs_f64()
            ));
            RunStatus::Completed(measurement)
        }
        _ => RunStatus::TimedOut {
            cap_seconds: cap.as_secs_f64(),
        },
    }
}

fn parse_outcome(stdout: &str) -> Option<ChildOutcome> {
    stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str::<ChildOutcome>(line).ok())
}

fn interpret(status: ExitStatus, stdout: &str, stderr: &StderrState) -> RunStatus {
    match (status.success(), parse_outcome(stdout)) {
        (true, Some(ChildOutcome::Completed(measurement))) => RunStatus::Completed(measurement),
        (true, Some(ChildOutcome::Refused(refusal))) => RunStatus::Refused(refusal),
        (true, None) => crashed("exited without printing a result".into(), stderr),
        (false, _) => crashed(describe_exit(status), stderr),
    }
}

fn crashed(exit: String, stderr: &StderrState) -> RunStatus {
    RunStatus::Crashed {
        exit,
        stderr_tail: telling_lines(&stderr.text),
        last_progress: stderr.progress,
    }
}

/// The lines of a dying child's standard error worth showing: panic messages and the runtime's
/// last words, without the `thread '…' panicked at` headers and notes, each once.
fn telling_lines(stderr: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in stderr.lines().map(str::trim) {
        let noise = line.is_empty()
            || line.starts_with("note:")
            || line.starts_with("stack backtrace")
            || (line.starts_with("thread '") && line.contains("panicked at"));
        if !noise && !kept.contains(&line) {
            kept.push(line);
        }
    }
    if kept.len() > STDERR_LINES_KEPT {
        // The first messages say what went wrong; the last line says how the process ended.
        let last = kept[kept.len() - 1];
        kept.truncate(STDERR_LINES_KEPT - 1);
        kept.push(last);
    }
    kept.join("\n")
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGABRT => "SIGABRT (abort)",
            libc::SIGKILL => "SIGKILL (killed, e.g. by the OOM killer)",
            libc::SIGSEGV => "SIGSEGV (segmentation fault)",
            libc::SIGBUS => "SIGBUS (bus error)",
            libc::SIGILL => "SIGILL (illegal instruction)",
            libc::SIGTRAP => "SIGTRAP (trap)",
            _ => "a signal",
        };
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("killed by signal {signal}, {name}{core}")
    } else {
        format!("exit code {}", status.code().unwrap_or(-1))
    }
}

/// The child side: runs the workload and prints its outcome as one JSON line on standard output.
pub fn child_main(args: ChildArgs) -> ExitCode {
    let params = Params {
        workload: args.workload,
        runtime: args.runtime,
        size: args.size,
        laps: args.laps,
        schedulers: args.schedulers,
        spinners: args.spinners,
        thread_stack_bytes: args.thread_stack_bytes,
    };
    match workloads::run(params) {
        Ok(outcome) => {
            let line = serde_json::to_string(&outcome).expect("an outcome always serializes");
            let mut stdout = std::io::stdout().lock();
            let written = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
            if written.is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_round_trip() {
        let line = progress_line(16_384, 16_385, 65_530);
        assert_eq!(
            parse_progress(&line),
            Some(ChildProgress {
                threads_started: 16_384,
                threads_alive: 16_385,
                memory_mappings: 65_530
            })
        );
        assert_eq!(parse_progress("thread 'x' panicked"), None);
    }

    #[test]
    fn keeps_the_telling_lines() {
        let stderr = "\nthread '<unnamed>' (1) panicked at library/std/src/x.rs:240:13:\n\
                      failed to set up alternative stack guard page: Cannot allocate memory (os error 12)\n\
                      note: run with `RUST_BACKTRACE=1`\n\
                      thread '<unnamed>' (2) panicked at library/std/src/x.rs:236:13:\n\
                      failed to allocate an alternative stack: Cannot allocate memory (os error 12)\n\
                      failed to set up alternative stack guard page: Cannot allocate memory (os error 12)\n\
                      fatal runtime error: failed to initiate panic, error 5, aborting\n";
        assert_eq!(
            telling_lines(stderr),
            "failed to set up alternative stack guard page: Cannot allocate memory (os error 12)\n\
             failed to allocate an alternative stack: Cannot allocate memory (os error 12)\n\
             fatal runtime error: failed to initiate panic, error 5, aborting"
        );
    }
}
