//! `sparkrtc-gateway`: parse the command line, then hand over to the library.

use std::process::ExitCode;

use sparkrtc_gateway::cli::{self, EXIT_USAGE};

// A call allocates some dozens of short-lived blocks (headers, buffers, futures); mimalloc's
// per-thread free lists serve them with less CPU than glibc's malloc (BENCHMARKS.md, "What
// changed each number").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        None | Some("--help" | "-h" | "help") => {
            cli::out(cli::HELP);
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            cli::out(concat!(
                "sparkrtc-gateway ",
                env!("CARGO_PKG_VERSION"),
                " (commit ",
                env!("SPARKRTC_GATEWAY_COMMIT"),
                ")"
            ));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let args = match cli::parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            cli::err(&format!("{e}\n\n{}", cli::HELP));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.command == "check" {
        return cli::check(&args);
    }
    // One core available (a sidecar's CPU limit, a pinned process): a single-threaded runtime
    // does the same work without cross-thread wake-ups.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
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
        match args.command.as_str() {
            "serve" => cli::serve(&args).await,
            "sandbox" => cli::sandbox(&args).await,
            "demo" => sparkrtc_gateway::demo::run(args.listen).await,
            other => {
                cli::err(&format!("unknown command {other:?}\n\n{}", cli::HELP));
                ExitCode::from(EXIT_USAGE)
            }
        }
    })
}
