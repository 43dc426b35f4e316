//! Progress display: an overall bar and a spinner per run on a terminal, one plain line per run otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::measurement::ChildProgress;
use crate::cli::units;

/// How often a spinner redraws by itself (guessed: smooth to the eye, cheap).
const SPINNER_TICK: Duration = Duration::from_millis(100);

/// The display of a whole suite (or of a single run).
pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    /// `true` when standard error is not a terminal: no bars, one line per finished run.
    plain: bool,
}

impl Progress {
    /// A display for `runs` runs (more can be added as fallbacks are decided).
    pub fn new(runs: u64) -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let target = if plain {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(runs));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} runs, {elapsed}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        overall.set_prefix("suite");
        Progress {
            multi,
            overall,
            plain,
        }
    }

    /// Adds runs to the total (fallback sizes, sweep points).
    pub fn add_runs(&self, runs: u64) {
        self.overall.inc_length(runs);
    }

    /// Starts the spinner of one run.
    pub fn start(&self, label: String, cap: Duration) -> RunProgress {
        let spinner = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed:>4}")
                .expect("the template is valid"),
        );
        spinner.set_message(format!("{label} (cap {:.0} s)", cap.as_secs_f64()));
        spinner.enable_steady_tick(SPINNER_TICK);
        RunProgress {
            spinner,
            label,
            cap,
            overall: self.overall.clone(),
            plain: self.plain,
        }
    }

    /// Removes the overall bar.
    pub fn finish(self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// The spinner of one run.
pub struct RunProgress {
    spinner: ProgressBar,
    label: String,
    cap: Duration,
    overall: ProgressBar,
    plain: bool,
}

impl RunProgress {
    /// Shows the child's latest progress report, if any.
    pub fn update(&self, progress: Option<ChildProgress>) {
        if let Some(progress) = progress {
            self.spinner.set_message(format!(
                "{} (cap {:.0} s): {} threads started, {} alive",
                self.label,
                self.cap.as_secs_f64(),
                units::count(progress.threads_started as u64),
                units::count(progress.threads_alive as u64),
            ));
        }
    }

    /// Replaces the spinner with a line saying how the run ended.
    pub fn finish(self, summary: &str) {
        let line = format!("{}: {summary}", self.label);
        if self.plain {
            eprintln!("  {line}");
        } else {
            self.spinner
                .set_style(ProgressStyle::with_template("  {msg}").expect("the template is valid"));
            self.spinner.finish_with_message(line);
        }
        self.overall.inc(1);
    }
}
