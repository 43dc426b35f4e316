//! The `starling` program: runs the reference workloads on Starling and on OS threads and reports.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
