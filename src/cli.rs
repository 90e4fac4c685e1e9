//! The command line: `serve`, `check`, `sandbox`, `demo`. Exit codes: 0 done, 1 runtime
//! failure (cannot bind, TLS set-up), 2 usage error, 64 invalid configuration.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::{listener, telemetry, Gateway};

/// Exit code: the gateway ran and failed (could not bind, could not start).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_CONFIG: u8 = 64;

/// The environment variable naming the config file when `--config` is not given.
pub(crate) const CONFIG_ENV: &str = "SPARKRTC_GATEWAY_CONFIG";

/// `sparkrtc-gateway --help`.
pub const HELP: &str = "\
sparkrtc-gateway: call Huawei Cloud SparkRTC without holding its credentials

Usage:
  sparkrtc-gateway serve   --config FILE        run the gateway
  sparkrtc-gateway check   --config FILE        validate a config file, print a summary, exit
  sparkrtc-gateway sandbox --config FILE [--listen ADDR] [--tls-cert PEM --tls-key PEM]
                                                 run a local SparkRTC stand-in that verifies
                                                 signatures with the config's keys
  sparkrtc-gateway demo    [--listen ADDR]      gateway + sandbox on loopback, send the example
                                                 RemoveUsers call, keep serving for curl
  sparkrtc-gateway --version | --help

The config file may also be named by SPARKRTC_GATEWAY_CONFIG. RUST_LOG overrides log.level.

Examples:
  sparkrtc-gateway check --config config/gateway.example.toml
  SPARKRTC_GATEWAY_CONFIG=/etc/sparkrtc-gateway/gateway.toml sparkrtc-gateway serve
  curl -X POST http://127.0.0.1:8080/v2/apps/demo-app/rooms/room-1/batch-remove-users \\
       -H 'Content-Type: application/json' -d '{\"user_ids\":[\"user001\"]}'

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 64 invalid configuration.
";

/// Parsed command line.
pub struct Args {
    pub command: String,
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Reads the command line after the program name; `Err` says what is wrong with it.
pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = args.next().ok_or("no command given")?;
    let mut parsed = Args { command, config: None, listen: None, tls_cert: None, tls_key: None };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" | "-c" => parsed.config = Some(PathBuf::from(value()?)),
            "--listen" => {
                parsed.listen = Some(value()?.parse().map_err(|_| "--listen takes an address like 127.0.0.1:8080")?)
            }
            "--tls-cert" => parsed.tls_cert = Some(PathBuf::from(value()?)),
            "--tls-key" => parsed.tls_key = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if parsed.config.is_none() {
        parsed.config = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
    }
    Ok(parsed)
}

/// Writes a line for the user on stdout (the commands' output, not logs).
pub fn out(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Writes a line for the user on stderr.
pub fn err(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn load(args: &Args) -> Result<Config, ExitCode> {
    let Some(path) = &args.config else {
        err(&format!("no config file: pass --config FILE or set {CONFIG_ENV}"));
        return Err(ExitCode::from(EXIT_USAGE));
    };
    Config::load(path).map_err(|e| report(&e))
}

pub(crate) fn report(e: &ConfigError) -> ExitCode {
    err(&e.to_string());
    ExitCode::from(EXIT_CONFIG)
}

/// `check`: validates the config file and reports every problem (exit 64 when there are any).
pub fn check(args: &Args) -> ExitCode {
    match load(args) {
        Err(code) => code,
        Ok(config) => {
            out(&format!(
                "{}: OK. listen {}, upstream {}://{}, {} profile(s), {} app(s){}",
                args.config.as_deref().map_or(Path::new("?"), |p| p).display(),
                config.listen,
                config.upstream.scheme,
                config.upstream.authority,
                config.profiles.len(),
                config.apps.len(),
                if config.account.is_some() { ", account-level operations on" } else { "" }
            ));
            ExitCode::SUCCESS
        }
    }
}

/// `serve`: runs the gateway until SIGTERM or SIGINT; SIGHUP (or a changed file, with `watch_config`) reloads;
/// SIGUSR1 only reopens the audit file (SIGHUP does too).
pub async fn serve(args: &Args) -> ExitCode {
    // Before anything can announce that the gateway serves: a SIGHUP that arrives early must
    // find its handler installed (the default action would end the process), and a change to
    // the file must be measured against the content that was loaded.
    let mut signals = Signals::new();
    let path = args.config.clone().unwrap_or_default();
    let loaded = std::fs::read(&path).ok();
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    telemetry::init(&config.log);
    let started = match Gateway::new(config) {
        Ok(gateway) => crate::server::start(gateway, args.listen).await,
        Err(e) => Err(e.into()),
    };
    let running = match started {
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
pub async fn sandbox(args: &Args) -> ExitCode {
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    telemetry::init(&config.log);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                err(&format!("cannot load the sandbox certificate: {}", crate::cause::ErrorChain(&e)));
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        (None, None) => None,
        _ => {
            err("--tls-cert and --tls-key go together");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let listen = args.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 18443)));
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
