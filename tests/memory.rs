//! Memory: a parked process costs less than a kilobyte of resident memory, whatever receive it
//! waits in. That spawn/exit cycles leak nothing is checked in `memory_cycles.rs`, alone in its
//! binary, so that no other test's heap skews it (the million parked processes here did).
//!
//! Both tests read this OS process's memory, so they serialize on one mutex (cargo runs the
//! tests of a binary on parallel threads).

mod heavy_common;

use std::sync::Mutex;
use std::time::Duration;

use heavy_common::{guarded, mib, parked_chain, rss_bytes, serialize, Go};
use starling::{process, receive, receive_match, receive_timeout, send, spawn, Pid, Status, Vm};

static RSS_LOCK: Mutex<()> = Mutex::new(());

const PARKED: usize = 1_000_000;

// (a) bytes per parked process: a million processes parked in `receive`.
#[test]
fn bytes_per_parked_process() {
    let _serial = serialize(&RSS_LOCK);
    guarded("a million parked processes, measured", || {
        let vm = Vm::new();
        // Warm the VM up (threads, the first slots, the allocator's arenas).
        assert_eq!(vm.run(|| 1 + 1), Ok(2));
        std::thread::sleep(Duration::from_millis(100));
        let empty = rss_bytes();
        let peak = vm
            .run(|| {
                let last = parked_chain(PARKED);
                process::sleep(Duration::from_millis(50));
                let peak = rss_bytes();
                assert_eq!(process::list().len(), PARKED + 1);
                send(last, Go);
                let Go = receive::<Go>();
                peak
            })
            .expect("the root process failed");
        let per_process = peak.saturating_sub(empty) as f64 / PARKED as f64;
        println!(
            "memory: empty VM {:.1} MiB, {PARKED} parked processes {:.1} MiB: \
             {per_process:.0} bytes per parked process",
            mib(empty),
            mib(peak)
        );
        assert!(
            per_process <= 1_000.0,
            "{per_process:.0} bytes per parked process (target 1,000)"
        );
    });
}

/// Most bytes `process::info` may report for a process parked in any receive form: the
/// 1,000-byte target less ~100 bytes of what `memory` leaves out (its table entry, the
/// allocator's rounding, the slot pages shared by the residents).
const PARKED_INFO_BYTES: usize = 900;

// (b) every way to wait for a message parks a process small, whatever the message type, and
// however this crate's code is compiled: the receive loop is compiled once, in the VM's crate.
// (It was generic, so compiled again in each calling crate; in some builds the compiler
// inlined its timer path there, and its frame, which every parked process keeps, was 376
// bytes instead of 40: 1,119 bytes per parked process instead of 768.)
#[test]
fn every_receive_form_parks_small() {
    let _serial = serialize(&RSS_LOCK);
    let hour = Duration::from_secs(3600);
    let sizes = guarded("processes parked in each receive form", move || {
        let vm = Vm::new();
        vm.run(move || {
            let forms: Vec<(&str, Pid)> = vec![
                ("receive::<u32>", spawn(|| _ = receive::<u32>())),
                ("receive::<String>", spawn(|| drop(receive::<String>()))),
                (
                    "receive_timeout",
                    spawn(move || _ = receive_timeout::<u32>(hour)),
                ),
                (
                    "receive_match",
                    spawn(|| _ = receive_match::<u32>(|value| *value > 0)),
                ),
                (
                    "receive!",
                    spawn(|| {
                        let _: usize = receive! {
                            value: u32 => value as usize,
                            text: String => text.len(),
                        };
                    }),
                ),
                (
                    "receive! after",
                    spawn(move || {
                        let _: u32 = receive! {
                            value: u32 if *value > 0 => value,
                            after hour => 0,
                        };
                    }),
                ),
            ];
            let parked =
                |pid: &Pid| process::info(*pid).is_some_and(|info| info.status == Status::Waiting);
            while !forms.iter().all(|(_, pid)| parked(pid)) {
                process::sleep(Duration::from_millis(1));
            }
            let sizes: Vec<(&str, usize)> = forms
                .iter()
                .map(|(form, pid)| (*form, process::info(*pid).map_or(0, |info| info.memory)))
                .collect();
            for (_, pid) in &forms {
                send(*pid, 1u32);
            }
            sizes
        })
        .expect("the root process failed")
    });
    println!("memory of a parked process, by receive form: {sizes:?}");
    for (form, bytes) in sizes {
        assert!(
            bytes > 0 && bytes <= PARKED_INFO_BYTES,
            "parked in {form}: {bytes} bytes (at most {PARKED_INFO_BYTES})"
        );
    }
}
