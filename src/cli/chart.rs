//! `--chart FILE.svg`: time per spawn (W1) and memory per alive process (W2) against N, log-log,
//! for Starling and OS threads, with a mark where the threads stop.

use std::ops::Range;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cli::measurement::{RunRecord, RunStatus};
use crate::cli::units;
use crate::cli::workload::{Runtime, Workload};

/// Size of the whole picture in pixels: two panels side by side.
const PICTURE: (u32, u32) = (1280, 560);
/// Colour of Starling's series.
const STARLING_COLOUR: RGBColor = RGBColor(31, 119, 180);
/// Colour of the OS threads' series.
const THREADS_COLOUR: RGBColor = RGBColor(214, 39, 40);
/// The x axis: N from 1 K to 1 M, with a margin on either side.
const N_RANGE: Range<f64> = 700.0..1.5e6;

/// One series: (N, value) points and, if the series stops early, where and why.
struct Series {
    points: Vec<(f64, f64)>,
    stop: Option<(f64, String)>,
}

/// Draws the chart into `path` (written to `path.tmp` first, then renamed).
pub fn write(path: &Path, records: &[RunRecord]) -> Result<(), String> {
    let temporary = path.with_extension("svg.tmp");
    draw(&temporary, records).map_err(|error| format!("drawing {}: {error}", path.display()))?;
    std::fs::rename(&temporary, path)
        .map_err(|error| format!("writing {}: {error}", path.display()))
}

fn draw(path: &Path, records: &[RunRecord]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, PICTURE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Starling processes vs OS threads (log-log)",
        ("sans-serif", 22).into_font(),
    )?;
    let (left, right) = root.split_horizontally(PICTURE.0 / 2);
    panel(
        &left,
        "W1: time per spawn",
        "time per spawn",
        &units::nanoseconds,
        [
            series(records, Workload::Spawn, Runtime::Starling),
            series(records, Workload::Spawn, Runtime::Threads),
        ],
    )?;
    panel(
        &right,
        "W2: memory per alive process (blocked in receive)",
        "bytes per process",
        &axis_bytes,
        [
            series(records, Workload::Alive, Runtime::Starling),
            series(records, Workload::Alive, Runtime::Threads),
        ],
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_description: &str,
    format_value: &dyn Fn(f64) -> String,
    [starling, threads]: [Series; 2],
) -> Result<(), Box<dyn std::error::Error>> {
    let values = starling
        .points
        .iter()
        .chain(&threads.points)
        .map(|&(_, y)| y);
    let low = values.clone().fold(f64::INFINITY, f64::min);
    let high = values.fold(0.0f64, f64::max);
    let (low, high) = if low.is_finite() && high > 0.0 {
        ((low / 3.0).max(1e-3), high * 3.0)
    } else {
        (1.0, 1e6)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17).into_font())
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(78)
        .build_cartesian_2d(N_RANGE.log_scale(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("N (processes or threads)")
        .y_desc(y_description)
        .x_label_formatter(&|n| units::short_count(n.round() as u64))
        .y_labels(8)
        .y_label_formatter(&|value| format_value(*value))
        .draw()?;
    for (name, colour, series) in [
        ("Starling", STARLING_COLOUR, &starling),
        ("OS threads", THREADS_COLOUR, &threads),
    ] {
        chart
            .draw_series(LineSeries::new(
                series.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            series
                .points
                .iter()
                .map(|&point| Circle::new(point, 4, colour.filled())),
        )?;
        if let (Some((n, reason)), Some(&(_, last))) = (&series.stop, series.points.last()) {
            let n = n.clamp(N_RANGE.start, N_RANGE.end);
            // Labels right of the middle end at the mark, so that they stay inside the panel.
            let across = (n / N_RANGE.start).ln() / (N_RANGE.end / N_RANGE.start).ln();
            let (anchor, offset) = if across > 0.5 {
                (HPos::Right, -6)
            } else {
                (HPos::Left, 6)
            };
            let font = ("sans-serif", 13)
                .into_font()
                .color(&colour)
                .pos(Pos::new(anchor, VPos::Top));
            let mark = EmptyElement::at((n, last))
                + Cross::new((0, 0), 7, colour.stroke_width(3))
                + Text::new(format!("{name} stop: {reason}"), (offset, 10), font);
            chart.draw_series(std::iter::once(mark))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The points of `workload` on `runtime`, by N, and where the series stops if a larger N failed.
fn series(records: &[RunRecord], workload: Workload, runtime: Runtime) -> Series {
    let mine = || {
        records.iter().filter(move |record| {
            record.params.workload == workload && record.params.runtime == runtime
        })
    };
    let mut points: Vec<(f64, f64)> = Vec::new();
    for record in mine() {
        let value = match workload {
            Workload::Alive => record.bytes_per_process,
            _ => record.per_operation_nanoseconds,
        };
        if let Some(value) = value.filter(|value| *value > 0.0) {
            let n = record.params.size as f64;
            if !points.iter().any(|&(x, _)| x == n) {
                points.push((n, value));
            }
        }
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let largest = points.last().map_or(0.0, |&(n, _)| n);
    // The failure closest to the last point: a run that died at the limit marks the thread
    // count it reached, which is below the N it was asked for.
    let stop = mine()
        .filter(|record| record.status.measurement().is_none())
        .filter(|record| record.params.size as f64 > largest)
        .map(stop_mark)
        .min_by(|a, b| a.0.total_cmp(&b.0));
    Series { points, stop }
}

/// Where a failed run is marked on the x axis, and a short reason.
fn stop_mark(record: &RunRecord) -> (f64, String) {
    let size = record.params.size as f64;
    match &record.status {
        RunStatus::Refused(refusal) => (
            refusal.threads_started as f64,
            format!(
                "OS refused thread #{}",
                units::count(refusal.threads_started as u64 + 1)
            ),
        ),
        RunStatus::Crashed {
            last_progress: Some(progress),
            ..
        } => (
            progress.threads_alive as f64,
            format!(
                "OS limit, died past {} alive",
                units::count(progress.threads_alive as u64)
            ),
        ),
        RunStatus::Crashed { .. } => (
            size,
            format!("crashed at N = {}", units::short_count(size as u64)),
        ),
        RunStatus::TimedOut { cap_seconds } => (
            size,
            format!(
                "N = {} over the {cap_seconds:.0} s cap",
                units::short_count(size as u64)
            ),
        ),
        RunStatus::Skipped { reason } if reason.contains("would take") => (
            size,
            format!(
                "N = {} not run (time budget)",
                units::short_count(size as u64)
            ),
        ),
        RunStatus::Skipped { .. } => (size, "beyond the OS limit".into()),
        RunStatus::Completed(_) => (size, String::new()),
    }
}

/// Bytes on the y axis in decimal units (`500 B`, `2 kB`): the log axis puts its ticks at
/// decimal steps, which binary units would print as 9.77 KiB.
fn axis_bytes(value: f64) -> String {
    if value >= 1e6 {
        format!("{} MB", value / 1e6)
    } else if value >= 1e3 {
        format!("{} kB", value / 1e3)
    } else {
        format!("{value} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::measurement::{Check, ChildProgress, Measurement, Role};
    use crate::cli::workload::Params;

    fn record(workload: Workload, runtime: Runtime, size: usize, status: RunStatus) -> RunRecord {
        let params = Params {
            workload,
            runtime,
            size,
            laps: 1,
            schedulers: 2,
            spinners: 0,
            thread_stack_bytes: 64 * 1024,
        };
        RunRecord::new(params, Role::Sweep, status, 1.0)
    }

    fn completed(size: usize, per_operation_nanoseconds: u64, bytes_per_process: u64) -> RunStatus {
        RunStatus::Completed(Measurement {
            wall_nanoseconds: per_operation_nanoseconds * size as u64,
            operations: size as u64,
            latency: None,
            resident_before_bytes: 1 << 20,
            resident_all_alive_bytes: Some((1 << 20) + bytes_per_process * size as u64),
            peak_resident_bytes: 1 << 30,
            peak_threads: None,
            check: Check::equal("sum", 1, 1),
        })
    }

    #[test]
    fn draws_both_panels_and_marks_where_threads_stop() {
        let mut records = Vec::new();
        for size in [1_000, 10_000, 100_000, 1_000_000] {
            for workload in [Workload::Spawn, Workload::Alive] {
                records.push(record(
                    workload,
                    Runtime::Starling,
                    size,
                    completed(size, 800, 1_200),
                ));
            }
        }
        for size in [1_000, 10_000] {
            records.push(record(
                Workload::Alive,
                Runtime::Threads,
                size,
                completed(size, 60_000, 10_700),
            ));
        }
        records.push(record(
            Workload::Alive,
            Runtime::Threads,
            1_000_000,
            RunStatus::Crashed {
                exit: "killed by signal 6".into(),
                stderr_tail: String::new(),
                last_progress: Some(ChildProgress {
                    threads_started: 15_360,
                    threads_alive: 15_360,
                    memory_mappings: 61_449,
                }),
            },
        ));
        let directory = std::env::temp_dir().join(format!("starling-chart-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("chart.svg");
        write(&path, &records).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("W1: time per spawn"));
        assert!(svg.contains("OS threads stop: OS limit, died past 15,360 alive"));
        if std::env::var_os("STARLING_KEEP_CHART").is_none() {
            std::fs::remove_dir_all(&directory).unwrap();
        } else {
            eprintln!("chart kept at {}", path.display());
        }
    }
}
