//! `starling cycles`: many spawn/exit cycles in one VM, in one of several styles, with the
//! memory of this OS process read before, after the first run and after the last (right away
//! and once the VM has idled and given memory back). It reproduces issue 4's check that
//! 10 million spawn/exit cycles end with the RSS they started with, and shows how the answer
//! depends on how the cycles are run.

use std::time::{Duration, Instant};

use starling::{process, receive, self_pid, send, spawn, spawn_link, spawn_monitor, Down, Exit};
use starling::{Task, Vm};

use crate::cli::memory::resident_bytes;

/// How each cycle spawns its process and learns that it ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Style {
    /// Each process sends its number to the run's root (W1's cycle).
    Message,
    /// Like `message`, with a 48-byte message (boxed in its envelope).
    BigMessage,
    /// `spawn_monitor`; the root receives each `Down`.
    Monitor,
    /// `spawn_link` with `trap_exit`; the root receives each `Exit`.
    Link,
    /// `Task::spawn` and `join`, one at a time.
    Task,
    /// `Vm::spawn` from outside the VM; the batch ends when `process_count` is 0.
    Outside,
}

/// What to run.
#[derive(Debug)]
pub struct CyclesConfig {
    pub style: Style,
    pub total: usize,
    pub batch: usize,
    pub schedulers: Option<usize>,
}

/// Memory of this OS process at one moment.
#[derive(Clone, Copy, Debug)]
struct Reading {
    rss: u64,
    heap_in_use: Option<u64>,
}

impl Reading {
    fn now() -> Reading {
        Reading {
            rss: resident_bytes(),
            heap_in_use: heap_in_use(),
        }
    }
}

/// Bytes glibc's allocator counts as in use (live chunks and those its per-thread caches hold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<u64> {
    // SAFETY: `mallinfo2` only reads the allocator's statistics.
    Some(unsafe { libc::mallinfo2() }.uordblks as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<u64> {
    None
}

/// How long the VM is left idle before an "after idle" reading: its workers give memory back
/// once they have idled 50 ms, at most once a second.
const IDLE: Duration = Duration::from_millis(2_500);

/// Inside a run's root: `batch` processes each send `message(i)` to the root, which receives
/// them all and checks that every `number` came back.
fn replies<M: Send + 'static>(batch: usize, message: fn(u64) -> M, number: fn(&M) -> u64) {
    let root = self_pid();
    for i in 0..batch as u64 {
        spawn(move || send(root, message(i)));
    }
    let sum: u64 = (0..batch).map(|_| number(&receive::<M>())).sum();
    assert_eq!(
        sum,
        (batch as u64) * (batch as u64 - 1) / 2,
        "lost messages"
    );
}

/// Runs one batch of `batch` cycles in `style`.
fn batch(vm: &Vm, style: Style, batch: usize) {
    let ran = match style {
        Style::Message => vm.run(move || replies(batch, |i| i, |&i| i)),
        Style::BigMessage => vm.run(move || replies(batch, |i| [i; 6], |message| message[5])),
        Style::Monitor => vm.run(move || {
            for _ in 0..batch {
                spawn_monitor(|| ());
            }
            for _ in 0..batch {
                receive::<Down>();
            }
        }),
        Style::Link => vm.run(move || {
            process::trap_exit(true);
            for _ in 0..batch {
                spawn_link(|| ());
            }
            for _ in 0..batch {
                receive::<Exit>();
            }
        }),
        Style::Task => vm.run(move || {
            for i in 0..batch {
                assert_eq!(Task::spawn(move || i).join(), Ok(i));
            }
        }),
        Style::Outside => {
            for _ in 0..batch {
                vm.spawn(|| ());
            }
            while vm.process_count() != 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        }
    };
    if let Err(reason) = ran {
        panic!("starling cycles: a batch's root ended with {reason:?}");
    }
}

/// Runs the cycles and prints the readings. Returns `false` if the arguments are unusable.
pub fn run(config: CyclesConfig) -> bool {
    run_with_idle(config, IDLE)
}

/// [`run`], leaving the VM idle for `idle` before each "after idle" reading.
fn run_with_idle(config: CyclesConfig, idle: Duration) -> bool {
    if config.batch == 0 || config.total < config.batch {
        eprintln!("error: starling cycles: --batch must be at least 1 and at most --total");
        return false;
    }
    let vm = match config.schedulers {
        Some(schedulers) => match Vm::builder().schedulers(schedulers).build() {
            Ok(vm) => vm,
            Err(error) => {
                eprintln!("error: starling cycles: {error}");
                return false;
            }
        },
        None => Vm::new(),
    };
    let batches = config.total / config.batch;
    let style = clap::ValueEnum::to_possible_value(&config.style).map_or_else(
        || format!("{:?}", config.style),
        |value| value.get_name().to_string(),
    );
    println!(
        "{} spawn/exit cycles ({style}), {batches} batches of {}, {} schedulers",
        batches * config.batch,
        config.batch,
        vm.schedulers()
    );
    let empty = Reading::now();
    let started = Instant::now();
    batch(&vm, config.style, config.batch);
    let first_batch = started.elapsed();
    let first = Reading::now();
    std::thread::sleep(idle);
    let first_idle = Reading::now();
    let resumed = Instant::now();
    for _ in 1..batches {
        batch(&vm, config.style, config.batch);
    }
    let cycling = first_batch + resumed.elapsed();
    let last = Reading::now();
    std::thread::sleep(idle);
    let last_idle = Reading::now();
    // The last readings are compared with the first batch's (same moment: right away or
    // after idling) and with the empty VM's, the RSS the cycles started with.
    let show = |label: &str, reading: Reading, against: Option<Reading>| {
        let heap = reading.heap_in_use.map_or(String::new(), |bytes| {
            format!(", heap in use {} KiB", bytes >> 10)
        });
        let percent = |base: Reading| (reading.rss as f64 / base.rss as f64 - 1.0) * 100.0;
        let change = against.map_or(String::new(), |first| {
            format!(
                " ({:+.1} % on the first batch, {:+.1} % on the empty VM)",
                percent(first),
                percent(empty)
            )
        });
        println!(
            "  {label:<34} RSS {:>8.2} MiB{change}{heap}",
            reading.rss as f64 / (1024.0 * 1024.0)
        );
    };
    show("empty VM", empty, None);
    show("after the first batch", first, None);
    let idled = format!("... and {:.1} s idle", idle.as_secs_f64());
    show(&idled, first_idle, None);
    show("after the last batch", last, Some(first));
    show(&idled, last_idle, Some(first_idle));
    println!(
        "  {:.2} s of cycling, {:.0} ns per cycle",
        cycling.as_secs_f64(),
        cycling.as_nanos() as f64 / (batches * config.batch) as f64
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every style runs its cycles to the end (each batch checks its own replies).
    #[test]
    fn every_style_completes() {
        for &style in <Style as clap::ValueEnum>::value_variants() {
            let config = CyclesConfig {
                style,
                total: 3_000,
                batch: 1_000,
                schedulers: Some(2),
            };
            assert!(run_with_idle(config, Duration::ZERO), "{style:?}");
        }
    }

    #[test]
    fn unusable_arguments_are_refused() {
        for (total, batch, schedulers) in [(10, 0, None), (10, 20, None), (10, 5, Some(0))] {
            let config = CyclesConfig {
                style: Style::Message,
                total,
                batch,
                schedulers,
            };
            assert!(!run_with_idle(config, Duration::ZERO));
        }
    }
}
