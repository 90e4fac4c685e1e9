//! The command line: `serve`, `check`, `sandbox`, `demo` (grammar in [`args`], what `serve`
//! builds before binding in `prepare`). Exit codes: 0 done, 1 runtime failure (cannot bind,
//! TLS set-up), 2 usage error, 64 invalid configuration.

mod args;
mod prepare;

pub use args::{Cli, Command, ConfigArg};

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::{listener, telemetry};

/// Exit code: the gateway ran and failed (could not bind, could not start).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the config file is invalid.
pub const EXIT_CONFIG: u8 = 64;

/// The environment variable naming the config file when `--config` is not given.
pub(crate) const CONFIG_ENV: &str = "SPARKRTC_GATEWAY_CONFIG";

/// Writes a line for the user on stdout (the commands' output, not logs).
pub fn out(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Writes a line for the user on stderr.
pub fn err(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

pub(crate) fn report(e: &ConfigError) -> ExitCode {
    err(&e.to_string());
    ExitCode::from(EXIT_CONFIG)
}

/// Answers a command line clap could not take: `--help` and `--version` on stdout with exit
/// 0, anything else on stderr with the usage exit code.
pub fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `check`: builds what `serve` would ([`prepare`]) without binding, prints a summary and any
/// warnings; exits as `serve` would fail to start (64 invalid config, 1 unusable TLS file).
pub fn check(path: &Path) -> ExitCode {
    let prepared = match prepare::load(path).and_then(prepare::build) {
        Ok(p) => p,
        Err(refusal) => return refusal.report(),
    };
    for warning in &prepared.warnings {
        err(&format!("warning: {warning}"));
    }
    let config = prepared.gateway.config();
    out(&format!(
        "{}: OK. listen {}, upstream {}://{}, {} profile(s), {} app(s){}{}",
        path.display(),
        config.listen,
        config.upstream.scheme,
        config.upstream.authority,
        config.profiles.len(),
        config.apps.len(),
        if config.account.is_some() { ", account-level operations on" } else { "" },
        match prepared.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning(s) on stderr"),
        }
    ));
    ExitCode::SUCCESS
}

/// `serve`: runs the gateway until SIGTERM or SIGINT; SIGHUP (or a changed file, with `watch_config`) reloads;
/// SIGUSR1 only reopens the audit file (SIGHUP does too).
pub async fn serve(path: &Path, listen: Option<SocketAddr>) -> ExitCode {
    // Before anything can announce that the gateway serves: a SIGHUP that arrives early must
    // find its handler installed (the default action would end the process), and a change to
    // the file must be measured against the content that was loaded.
    let mut signals = Signals::new();
    let path = path.to_owned();
    let loaded = std::fs::read(&path).ok();
    let config = match prepare::load(&path) {
        Ok(c) => c,
        Err(refusal) => return refusal.report(),
    };
    let _log = telemetry::init(&config.log);
    // The same steps as `check`, so `check` passes exactly the files this accepts.
    let prepared = match prepare::build(config) {
        Ok(p) => p,
        Err(refusal) => return refusal.report(),
    };
    for warning in &prepared.warnings {
        tracing::warn!("{warning}");
    }
    let running = match crate::server::start(prepared.gateway, listen).await {
        Ok(r) => r,
        Err(e) => {
            err(&format!("cannot start: {}", crate::cause::ErrorChain(&*e)));
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if running.gateway.config().watch_config {
        signals.watch(path.clone(), loaded);
    }
    loop {
        match signals.next().await {
            Signal::Stop => break,
            Signal::Reopen => running.gateway.reopen_audit(),
            Signal::Reload => {
                let _ = running.reload(&path);
                // Token fetches may take a while; the loop must stay free to see a stop signal.
                let gateway = running.gateway.clone();
                tokio::spawn(async move { gateway.maintain_credentials().await });
            }
        }
    }
    tracing::info!("stop signal received; draining");
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

enum Signal {
    Stop,
    Reload,
    /// SIGUSR1: logrotate moved the audit file.
    Reopen,
}

/// How often a watched config file is read for changes.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The process's signal streams, registered once so that a signal arriving while the previous
/// one is being handled is queued, not lost; and, with `server.watch_config`, changes of the
/// config file, which count as SIGHUP.
struct Signals {
    changed: Option<tokio::sync::mpsc::Receiver<()>>,
    #[cfg(unix)]
    streams: Option<[tokio::signal::unix::Signal; 4]>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
                signal(SignalKind::user_defined1()),
            );
            match streams {
                (Ok(term), Ok(int), Ok(hup), Ok(usr1)) => {
                    Signals { changed: None, streams: Some([term, int, hup, usr1]) }
                }
                _ => Signals { changed: None, streams: None },
            }
        }
        #[cfg(not(unix))]
        Signals { changed: None }
    }

    /// Reports a change of `path`'s content (read every 2 s) as a reload. Content, not mtime:
    /// a Kubernetes ConfigMap update swaps a symlink and may keep old timestamps.
    fn watch(&mut self, path: PathBuf, loaded: Option<Vec<u8>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        self.changed = Some(rx);
        tokio::spawn(async move {
            let mut last = loaded;
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let now = std::fs::read(&path).ok();
                if now.is_some() && now != last {
                    last = now;
                    tracing::info!(config = %path.display(), "config file changed; reloading");
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    /// Waits for SIGTERM or SIGINT (stop), SIGHUP (reload) or SIGUSR1 (reopen).
    async fn next(&mut self) -> Signal {
        let watched = self.changed.as_mut();
        let changed = async move {
            match watched {
                Some(rx) => {
                    if rx.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        if let Some([term, int, hup, usr1]) = &mut self.streams {
            return tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
                _ = usr1.recv() => Signal::Reopen,
                () = changed => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

/// `sandbox`: runs the SparkRTC stand-in until SIGTERM or SIGINT.
pub async fn sandbox(
    path: &Path,
    listen: Option<SocketAddr>,
    tls_cert: Option<&Path>,
    tls_key: Option<&Path>,
) -> ExitCode {
    let config = match prepare::load(path) {
        Ok(c) => c,
        Err(refusal) => return refusal.report(),
    };
    let _log = telemetry::init(&config.log);
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                err(&format!("cannot load the sandbox certificate: {}", crate::cause::ErrorChain(&e)));
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        (None, None) => None,
        // clap refuses one without the other; kept so a caller of this function cannot either.
        _ => {
            err("--tls-cert and --tls-key go together");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 18443)));
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            err(&format!("cannot listen on {listen}: {e}"));
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    out(&format!("sandbox: SparkRTC stand-in on {}://{listen}", if tls.is_some() { "https" } else { "http" }));
    listener::serve(
        listener,
        tls,
        crate::sandbox::Sandbox::new(&config),
        stop_signal(),
        crate::config::DEFAULT_GRACE_PERIOD,
    )
    .await;
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C); SIGHUP and SIGUSR1 are ignored here.
pub(crate) async fn stop_signal() {
    let mut signals = Signals::new();
    while !matches!(signals.next().await, Signal::Stop) {}
}
