//! Wake-ups that arrive while a process has yielded in the middle of a wait are not lost.
//!
//! A process whose slice runs out while it scans a long mailbox yields inside `receive`; when
//! it resumes it goes on to park. A kill or a message that woke it during that yield must make
//! that park return at once (the notification travels with the yielded process). Randomized
//! scheduling gives short slices, so the yield happens at arbitrary points; before the fix about
//! one run in six left a killed process parked until its own 30 s receive timeout.

use starling::*;
use std::time::Duration;

#[derive(Debug)]
struct Go;
#[derive(Debug)]
struct Check;

/// Ported from signal_SUITE's simultaneous_signals: 20 processes with 2,000 queued messages
/// each; 18 are killed and 2 told to finish; every `Down` must come promptly.
#[test]
fn kills_and_messages_reach_processes_that_yielded_mid_receive() {
    for round in 0..60u64 {
        let vm = Vm::builder()
            .schedulers(4)
            .randomize_scheduling(11 + round)
            .crash_reports(false)
            .build()
            .unwrap();
        let outcome = vm
            .run(move || {
                let watched: Vec<(Pid, MonitorRef)> = (0..20)
                    .map(|_| {
                        spawn_monitor(|| {
                            let _: Go = receive_timeout(Duration::from_secs(30)).expect("go");
                            while receive_timeout::<Vec<u32>>(Duration::ZERO).is_some() {}
                            let _: Check = receive_timeout(Duration::from_secs(30)).expect("check");
                        })
                    })
                    .collect();
                for &(pid, _) in &watched {
                    for n in 0..2000u32 {
                        if n % 100 == 0 {
                            send(pid, vec![n, n]);
                        } else {
                            send(pid, n);
                        }
                    }
                    send(pid, Go);
                }
                for (i, &(pid, _)) in watched.iter().enumerate() {
                    if i % 10 != 0 {
                        process::exit(pid, ExitReason::Custom("terminated".into()));
                    } else {
                        send(pid, Check);
                    }
                }
                for (i, (pid, monitor)) in watched.iter().enumerate() {
                    // 2 s instead of the processes' own 30 s timeouts: a lost wake-up would
                    // only be rescued by those.
                    if receive_match_timeout(
                        |d: &Down| d.monitor == *monitor,
                        Duration::from_secs(2),
                    )
                    .is_none()
                    {
                        return Err(format!("round {round}: no Down from #{i} {pid} within 2 s"));
                    }
                }
                Ok(())
            })
            .expect("the root process ended abnormally");
        if let Err(message) = outcome {
            panic!("{message}");
        }
    }
}
