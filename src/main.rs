//! `sparkrtc-gateway`: parse the command line, then hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use sparkrtc_gateway::cli::{self, Cli, Command};

// A call allocates some dozens of short-lived blocks (headers, buffers, futures); mimalloc's
// per-thread free lists serve them with less CPU than glibc's malloc (BENCHMARKS.md, "What
// changed each number").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = match Cli::try_parse() {
        Ok(parsed) => parsed.command,
        Err(e) => return cli::usage(&e),
    };
    // `check` runs nothing concurrently: a current-thread runtime never polls a task it does
    // not await, so nothing it builds can reach the network.
    let cores = match command {
        Command::Check { .. } => 1,
        _ => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    // One core available (a sidecar's CPU limit, a pinned process): a single-threaded runtime
    // does the same work without cross-thread wake-ups.
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            cli::err(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(cli::EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        match command {
            Command::Check { config } => cli::check(&config.path),
            Command::Serve { config, listen } => cli::serve(&config.path, listen).await,
            Command::Sandbox { config, listen, tls_cert, tls_key } => {
                cli::sandbox(&config.path, listen, tls_cert.as_deref(), tls_key.as_deref()).await
            }
            Command::Demo { listen } => sparkrtc_gateway::demo::run(listen).await,
        }
    })
}
