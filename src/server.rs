//! Running the gateway: binds the proxy listener (TCP, optionally TLS, optionally a Unix socket
//! too) and the admin listener, and carries out the stop sequence:
//!
//! 1. stop signal: readiness turns 503 at once;
//! 2. the listeners keep accepting for `drain_delay`, so load balancers notice;
//! 3. the sockets close (new connections are refused) and calls in flight get up to
//!    `grace_period` to finish; then [`Running::wait`] returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::cause::{BoxError, ErrorChain};
use crate::config::ConfigError;
use crate::gateway::{BuildError, Gateway};
use crate::listener::{self, ConnectionLimits, Connections};
use crate::tls::{self, ReloadingCert};

/// How often certificate files are checked for changes.
const CERT_CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often key files are re-read and IAM tokens checked for refresh.
const CREDENTIALS_EVERY: Duration = Duration::from_secs(2);
/// How often the shared limiter backend is pinged (readiness, reconnection without traffic).
const LIMITER_PROBE_EVERY: Duration = Duration::from_secs(2);
/// File descriptors kept out of the client connections' share: stdio, the listeners, the
/// runtime's own, config and key files being read.
const RESERVED_DESCRIPTORS: u64 = 32;
/// Open connections on the admin listener: probes and scrapes need few.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The gateway serving in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub gateway: Gateway,
    cert: Option<Arc<ReloadingCert>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts the stop sequence: readiness fails from this moment on; [`Running::wait`]
    /// returns when the sequence is over.
    pub fn shutdown(&self) {
        self.gateway.drain();
        let _ = self.stop.send(true);
    }

    /// Waits for the stop sequence to end (after [`Running::shutdown`]).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        // The calls are over; their audit records must reach the file before the process ends.
        self.gateway.flush_audit().await;
        // Calls have ended: their spans are queued; send them before the process exits.
        self.gateway.flush_traces().await;
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts the stop sequence and waits for it to end.
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }

    /// Re-reads the config file and swaps it in for new calls. A file that cannot be read,
    /// validated or built changes nothing, is counted in `config_reload_failures`, and returns
    /// the stage that failed with every problem. Listener settings (addresses, TLS, admin) need
    /// a restart.
    pub fn reload(&self, path: &std::path::Path) -> Result<(), ReloadError> {
        self.reload_certificate();
        // Whatever becomes of the config: logrotate may send SIGHUP after moving the file.
        self.gateway.reopen_audit();
        let result = self.try_reload(path);
        if let Err(e) = &result {
            self.gateway.counters().config_reload_failed();
            tracing::error!(stage = e.stage(), "config reload refused; the running config stays:\n{}", ErrorChain(e));
        }
        result
    }

    fn try_reload(&self, path: &std::path::Path) -> Result<(), ReloadError> {
        let config = crate::config::Config::load(path).map_err(ReloadError::Config)?;
        let old = self.gateway.config();
        if old.listen != config.listen
            || old.unix_socket != config.unix_socket
            || old.tls != config.tls
            || old.admin_listen != config.admin_listen
        {
            tracing::warn!("listener settings changed in the config; they take effect at the next restart");
        }
        if old.audit != config.audit {
            tracing::warn!("audit.file changed in the config; it takes effect at the next restart");
        }
        self.gateway.reload(config).map_err(ReloadError::Build)?;
        tracing::info!(config = %path.display(), "config reloaded");
        Ok(())
    }

    /// Re-reads the inbound certificate now if its files changed (also done every 10 s).
    pub fn reload_certificate(&self) {
        if let Some(cert) = &self.cert {
            reload_cert(cert);
        }
    }
}

/// Why a reload changed nothing, by the stage that failed.
#[derive(Debug)]
pub enum ReloadError {
    /// Reading or validating the file (every problem at once, as at start).
    Config(ConfigError),
    /// Building what the valid config describes.
    Build(BuildError),
}

impl ReloadError {
    /// `"read"`, `"validate"`, or the build stage (`"build the upstream TLS configuration"`).
    pub fn stage(&self) -> &'static str {
        match self {
            ReloadError::Config(ConfigError::Read { .. }) => "read",
            ReloadError::Config(ConfigError::Syntax { .. } | ConfigError::Invalid { .. }) => "validate",
            ReloadError::Build(e) => e.stage(),
        }
    }
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Config(e) => e.fmt(f),
            ReloadError::Build(_) => write!(f, "the config is valid but the reload failed at: {}", self.stage()),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Config(_) => None,
            ReloadError::Build(e) => Some(e),
        }
    }
}

fn reload_cert(cert: &ReloadingCert) {
    match cert.reload_if_changed() {
        Ok(true) => tracing::info!("inbound TLS certificate reloaded"),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), "inbound TLS certificate not reloaded; still serving the previous one")
        }
    }
}

/// The client connection limits: `server.max_connections`, or else half of the descriptors the
/// process may open beyond a reserve (each proxied call may need an upstream connection too),
/// at most [`listener::DEFAULT_MAX_CONNECTIONS`].
fn connection_limits(config: &crate::Config) -> ConnectionLimits {
    let descriptors = descriptor_limit();
    let max_connections = match (config.max_connections, descriptors) {
        (Some(n), _) => n.get(),
        (None, Some(limit)) => {
            let share = limit.saturating_sub(RESERVED_DESCRIPTORS) / 2;
            usize::try_from(share).unwrap_or(usize::MAX).clamp(8, listener::DEFAULT_MAX_CONNECTIONS)
        }
        (None, None) => listener::DEFAULT_MAX_CONNECTIONS,
    };
    if let Some(limit) = descriptors {
        let needed = (max_connections as u64).saturating_mul(2).saturating_add(RESERVED_DESCRIPTORS);
        if needed > limit {
            tracing::warn!(max_connections, descriptor_limit = limit, "server.max_connections needs about {needed} file descriptors with upstream connections; raise the limit (LimitNOFILE= in systemd, ulimit -n) or lower max_connections");
        }
    }
    tracing::info!(
        max_connections,
        descriptor_limit = descriptors,
        idle_timeout_ms = u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        "client connection limits"
    );
    ConnectionLimits { idle_timeout: config.idle_timeout, max_connections }
}

/// The soft limit on open file descriptors (`ulimit -n`, systemd's `LimitNOFILE=`), read from
/// `/proc/self/limits` since the standard library has no safe call for it. `None` elsewhere.
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// The reloadable certificate and the server configuration that serves it.
pub(crate) type InboundTls = (Arc<ReloadingCert>, Arc<rustls::ServerConfig>);

/// The proxy listener's TLS: the certificate (re-read when its files change) and the server
/// configuration. `check` calls this too, so it refuses exactly the files `start` would.
pub(crate) fn inbound_tls(config: &crate::Config) -> Result<Option<InboundTls>, tls::Error> {
    let Some(t) = &config.tls else { return Ok(None) };
    let cert = Arc::new(ReloadingCert::load(&t.cert_file, &t.key_file)?);
    let server = tls::inbound_config(cert.clone(), t.client_ca_file.as_deref(), t.client_auth_required)?;
    Ok(Some((cert, server)))
}

/// Binds every listener of the gateway's config (`listen` overrides the proxy address) and serves.
pub async fn start(gateway: Gateway, listen: Option<SocketAddr>) -> Result<Running, BoxError> {
    let config = gateway.config();
    let listen = listen.unwrap_or(config.listen);
    let tcp = TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = tcp.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let (drain_delay, grace) = (config.drain_delay, config.grace_period);

    // Stop accepting only after the drain delay, with readiness already failing.
    let drained = {
        let (gateway, stopped) = (gateway.clone(), stopped.clone());
        move || {
            let (gateway, mut stopped) = (gateway.clone(), stopped.clone());
            async move {
                let _ = stopped.wait_for(|s| *s).await;
                gateway.drain();
                tokio::time::sleep(drain_delay).await;
            }
        }
    };

    let (cert, server_tls) = inbound_tls(&config)?.unzip();
    let limits = connection_limits(&config);
    // The TCP and the Unix socket share one count: they share the process's descriptors.
    let connections = Connections::new(limits);
    let mut tasks = vec![tokio::spawn(listener::serve_with(
        tcp,
        server_tls.clone(),
        gateway.clone(),
        drained(),
        grace,
        connections.clone(),
    ))];

    #[cfg(unix)]
    if let Some(path) = &config.unix_socket {
        // A socket file left by a previous run would make bind fail.
        let _ = std::fs::remove_file(path);
        let unix =
            tokio::net::UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        tasks.push(tokio::spawn(listener::serve_with(
            unix,
            server_tls,
            gateway.clone(),
            drained(),
            grace,
            connections,
        )));
    }

    let admin_addr = match config.admin_listen {
        None => None,
        Some(admin_listen) => {
            let admin = TcpListener::bind(admin_listen)
                .await
                .map_err(|e| format!("cannot listen on {admin_listen} (admin): {e}"))?;
            let admin_addr = admin.local_addr()?;
            let admin_limits = ConnectionLimits { max_connections: ADMIN_MAX_CONNECTIONS, ..limits };
            tasks.push(tokio::spawn(listener::serve_with(
                admin,
                None,
                Admin::new(gateway.clone()),
                drained(),
                Duration::from_secs(1),
                Connections::new(admin_limits),
            )));
            Some(admin_addr)
        }
    };

    if let Some(cert) = &cert {
        let cert = cert.clone();
        every(CERT_CHECK_EVERY, Start::AfterPeriod, stopped.clone(), move || {
            reload_cert(&cert);
            std::future::ready(())
        });
    }
    // Fetch tokens before the first call needs one, then keep them and the keys fresh.
    let g = gateway.clone();
    every(CREDENTIALS_EVERY, Start::Now, stopped.clone(), move || {
        let g = g.clone();
        async move { g.maintain_credentials().await }
    });
    // Apart from the credentials loop, which can wait on a slow IAM for many seconds.
    let g = gateway.clone();
    every(LIMITER_PROBE_EVERY, Start::Now, stopped.clone(), move || {
        let g = g.clone();
        async move { g.probe_limiter().await }
    });
    tracing::info!(listen = %addr, admin = admin_addr.map(tracing::field::display), unix_socket = config.unix_socket.as_deref().map(|p| tracing::field::display(p.display())), tls = config.tls.is_some(), "gateway serving");
    Ok(Running { addr, admin_addr, unix_socket: config.unix_socket.clone(), gateway, cert, stop, tasks })
}

/// When a periodic task first runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Now,
    AfterPeriod,
}

/// Runs `task` every `period`, counted from the end of the previous run, until `stopped`.
fn every<F, T>(period: Duration, start: Start, mut stopped: watch::Receiver<bool>, mut task: T)
where
    T: FnMut() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut run = start == Start::Now;
        loop {
            if run {
                task().await;
            }
            let stop = tokio::select! {
                () = tokio::time::sleep(period) => false,
                _ = stopped.wait_for(|s| *s) => true,
            };
            if stop {
                break;
            }
            run = true;
        }
    });
}
