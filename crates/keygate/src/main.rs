//! `keygate`: parses the command line, loads configuration, wires the crates together
//! and runs one command. No business logic lives here.

mod cli;
mod commands;
mod config;
mod masterkey;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// With the `mimalloc` feature, mimalloc instead of the C library's allocator (fewer
/// instructions per allocation, more resident memory: BENCHMARKS.md has both).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
