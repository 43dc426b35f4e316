//! An idle VM uses no CPU: once its processes are all blocked (in `receive`, or in a long
//! `process::sleep`) and its last memory give-back is done, every scheduler thread sleeps. Alone
//! in its test binary: it reads this OS process's CPU time, which another test would add to.

mod heavy_common;

use std::time::Duration;

use heavy_common::{guarded, wait_until_no_processes};
use starling::{process, receive, self_pid, send, spawn, Vm};

/// This OS process's CPU time so far (user + system, all threads), in clock ticks
/// (`/proc/self/stat`; 100 per second on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name may hold spaces; the fields after it are space-separated.
    let after_name = &stat[stat.rfind(')').expect("no ')' in /proc/self/stat") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// How long the idle VM is watched.
const WATCH: Duration = Duration::from_secs(2);

/// Most CPU the whole test process may use while the VM is idle: 3 ticks (30 ms) in 2 s, for
/// this thread's own reads and the coarse tick accounting. A scheduler thread that polled or
/// spun would use the whole 2 s.
const MOST_TICKS: u64 = 3;

#[derive(Debug)]
struct Wake;

#[test]
fn an_idle_vm_with_blocked_processes_uses_no_cpu() {
    guarded("an idle VM uses no CPU", || {
        let vm = Vm::new();
        // A burst of work first (spawns, messages, exits), so that there is memory to give back
        // and the workers have run.
        vm.run(|| {
            let root = self_pid();
            for i in 0..100_000u64 {
                spawn(move || send(root, i));
            }
            let sum: u64 = (0..100_000).map(|_| receive::<u64>()).sum();
            assert_eq!(sum, 100_000 * 99_999 / 2);
        })
        .expect("the burst failed");
        // Then processes that stay blocked while we watch: one in `receive`, one in a sleep
        // that ends long after the watch.
        let receiver = vm.spawn(|| {
            let Wake = receive::<Wake>();
        });
        let sleeper = vm.spawn(|| process::sleep(Duration::from_secs(600)));
        // Let the give-back passes that follow the burst happen (they are rate-limited to one
        // a second).
        std::thread::sleep(Duration::from_secs(3));
        let before = cpu_ticks();
        std::thread::sleep(WATCH);
        let used = cpu_ticks() - before;
        println!("idle: {used} clock ticks of CPU in {WATCH:?}");
        assert!(
            used <= MOST_TICKS,
            "the idle VM used {used} clock ticks of CPU in {WATCH:?} (at most {MOST_TICKS})"
        );
        // The VM still works: the blocked processes wake up and end.
        vm.send(receiver, Wake);
        vm.run(move || process::exit(sleeper, starling::ExitReason::Kill))
            .expect("the killer failed");
        wait_until_no_processes(&vm);
    });
}
