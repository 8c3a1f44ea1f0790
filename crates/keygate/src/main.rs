//! `keygate`: parses the command line, loads configuration, wires the crates together
//! and runs one command. No business logic lives here.

mod cli;
mod commands;
mod config;
mod masterkey;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// With the `mimalloc` feature (on by default), mimalloc instead of the C library's
/// allocator: less CPU a proxied call at the same resident memory (BENCHMARKS.md, round six).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match worker_threads().and_then(runtime) {
        Ok(rt) => rt,
        Err(err) => {
            output::error(&format!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            output::error(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// How many threads run keygate's async work: `KEYGATE_WORKER_THREADS`, else one per CPU
/// the process may run on (its affinity and cgroup quota, as `taskset` or a container
/// sets them).
fn worker_threads() -> Result<usize, String> {
    match std::env::var("KEYGATE_WORKER_THREADS") {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "KEYGATE_WORKER_THREADS (from the environment): '{value}' is not a number of threads from 1 to 1024"
            )),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
    }
}

/// The async runtime: on one thread, tokio's single-threaded scheduler (a work-stealing
/// one only adds cost there: about a fifth of the CPU of a proxied call, BENCHMARKS.md);
/// on more, the work-stealing scheduler with that many workers. Either way, blocking
/// work (argon2, SQLite) runs on threads of its own.
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build().map_err(|e| e.to_string())
}
