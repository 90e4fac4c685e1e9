//! Configuration: the TOML file read into validated types. Loading reports every problem at once
//! (key path, value found, what to write instead); the binary exits 64 when there are any.
//!
//! Secrets are never required inline: each may come from the file (`secret_key`), an
//! environment variable (`secret_key_env`) or a file of its own (`secret_key_file`).

mod audit;
mod jwt;
mod keys;
mod limits;
mod platform;
mod policy;
mod profile;
mod reader;
mod trace;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{Access, Callers};
use crate::ratelimit::{AppLimits, Backend, LimitPlan, LimitSpec};

pub use crate::credentials::{Auth, Profile, TokenMethod, TokenSpec};
pub use crate::readiness::Readiness;
pub use crate::upstream::Settings as Upstream;

pub use keys::known_keys;
pub(crate) use reader::Problem;
pub use reader::Recorded as KnownKeys;

pub use audit::Audit;
pub use trace::Trace;

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_ENDPOINT: &str = "https://rtc-api.myhuaweicloud.com";
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub(crate) const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// How long calls in flight may take to finish after a stop (`server.grace_period`, and the
/// sandbox's own).
pub(crate) const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Below the idle timeout of the load balancers in front of cloud APIs (60 s is common), so the
/// gateway drops an idle connection before the far end does and a call rarely meets a
/// connection closed under it.
pub(crate) const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_V11_SERVICE: &str = "CloudRTC";

/// A validated configuration: every value checked, every secret loaded, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// A Unix socket to serve on as well, for sidecars that want no TCP port.
    pub unix_socket: Option<PathBuf>,
    pub tls: Option<InboundTls>,
    pub max_body_bytes: u64,
    /// After a stop signal: how long to keep accepting while readiness reports 503.
    pub drain_delay: Duration,
    /// Then: how long calls in flight may take to finish.
    pub grace_period: Duration,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`); `None` when disabled.
    pub admin_listen: Option<SocketAddr>,
    /// What `/readyz` requires.
    pub readiness: Readiness,
    /// Reload when the config file changes, as on SIGHUP.
    pub watch_config: bool,
    /// A client connection with no call in flight is closed after this long (from accept,
    /// between keep-alive requests, HTTP/2 without streams).
    pub idle_timeout: Duration,
    /// Open client connections at most; `None`: derived from the file-descriptor limit at start.
    pub max_connections: Option<std::num::NonZeroUsize>,
    pub upstream: Upstream,
    pub log: Log,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    /// Apps the gateway serves, by SparkRTC app id.
    pub apps: BTreeMap<String, App>,
    /// Account-level operations (no app id), if served.
    pub account: Option<App>,
    pub callers: Callers,
    /// Per-caller limits set on `[callers.NAME]`, overriding `limits.per_caller`.
    pub caller_limits: BTreeMap<Arc<str>, LimitSpec>,
    pub limits: DefaultLimits,
    /// `[audit]`: where audit records go.
    pub audit: Audit,
    /// `[trace]`: sampling and the OTLP collector (read at start; a reload keeps the first).
    pub trace: Trace,
}

/// `[limits]`: what applies where nothing more specific is set, and where state is kept.
#[derive(Debug, Clone, Default)]
pub struct DefaultLimits {
    pub per_app: Option<LimitSpec>,
    /// Each caller: named ones by name, unnamed ones by address.
    pub per_caller: Option<LimitSpec>,
    pub backend: Backend,
}

/// TLS on the proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA certificates that sign client certificates; enables client authentication.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse connections without a valid client certificate (only with `client_ca_file`).
    pub client_auth_required: bool,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`: how the gateway logs.
#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `sparkrtc_gateway=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

/// A served app (or the account-level operations): its credentials, allowlist and limits.
#[derive(Debug, Clone)]
pub struct App {
    pub profile: Arc<Profile>,
    pub access: Access,
    /// Overrides `limits.per_app`.
    pub limit: Option<LimitSpec>,
    pub operation_limits: BTreeMap<&'static str, LimitSpec>,
}

/// Why the configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, source: std::io::Error },
    Syntax { origin: String, message: String },
    Invalid { origin: String, problems: Vec<Problem> },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax { origin, message } => {
                write!(f, "{origin} is not valid TOML: {message}")
            }
            ConfigError::Invalid { origin, problems } => {
                write!(f, "{origin} has {} problem{}:", problems.len(), if problems.len() == 1 { "" } else { "s" })?;
                for p in problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the syntax error is and what it is, without quoting the line: the line may hold a
/// secret (an inline password with a stray quote).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let position = e.span().map(|span| {
        let before = &text.as_bytes()[..span.start.min(text.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = before.len() - before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", position.unwrap_or_default(), e.message())
}

impl Config {
    /// Reads and validates a config file. Relative `*_file` paths are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base, &|name| std::env::var(name).ok())
    }

    /// Validates config text. `env` looks up environment variables, so tests need not set any.
    pub fn parse(
        text: &str,
        origin: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: syntax_message(text, &e),
        })?;
        validate::config(&doc, base, env)
            .map_err(|problems| ConfigError::Invalid { origin: origin.to_owned(), problems })
    }

    /// Every limit, as the limiter takes them: app limits default to `limits.per_app`, caller
    /// limits to `limits.per_caller`, unnamed callers per address.
    pub fn limit_plan(&self) -> LimitPlan {
        let served = self.apps.iter().map(|(id, app)| (id.as_str(), app)).chain(self.account.iter().map(|a| ("", a)));
        let apps = served
            .map(|(id, app)| {
                let limits =
                    AppLimits { app: app.limit.or(self.limits.per_app), operations: app.operation_limits.clone() };
                (id.to_owned(), limits)
            })
            .collect();
        let callers = self
            .callers
            .named
            .iter()
            .filter_map(|c| {
                let spec = self.caller_limits.get(&c.name).copied().or(self.limits.per_caller)?;
                Some((c.name.clone(), spec))
            })
            .collect();
        LimitPlan { apps, callers, per_address: self.limits.per_caller }
    }

    /// The served app a call acts on (`None`: account-level).
    pub fn app(&self, id: Option<&str>) -> Option<&App> {
        match id {
            Some(id) => self.apps.get(id),
            None => self.account.as_ref(),
        }
    }
}
