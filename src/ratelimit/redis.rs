//! The shared backend: limiter state in Redis, so every replica draws on one budget.
//!
//! One round trip per call: `gcra.lua` checks every limit the call meets and spends none unless
//! all enforced ones admit it (EVALSHA, falling back to EVAL when Redis has lost the script).
//! Each limit's key names its spec (`app:ID:5/60s~5`), so replicas reloading a changed limit
//! start a fresh bucket and never misread another spec's state.
//!
//! Redis slow or down never stalls a call: each decision has a short timeout, and then the
//! limits' `on_backend_error` decides. The connection manager reconnects by itself; the
//! maintenance tick probes Redis so readiness and reconnection do not wait for traffic.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisError};

use super::{Checked, LimitPlan, LimitSpec, Limited, OnBackendError, Refusal, Subject, Via};
use crate::cause::Causes;
use crate::secret::Secret;

const SCRIPT: &str = include_str!("gcra.lua");

/// How long the readiness probe waits for `PONG`: longer than a call's budget, since a probe
/// stalls no caller.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Remembered refusals (local pre-check) beyond this are pruned; past it after pruning, dropped.
const MAX_REMEMBERED: usize = 16_384;
/// Calls forwarded because Redis could not decide are warned about at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// `[limits.redis]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSpec {
    /// `redis://HOST:PORT/DB` or `rediss://...`, with no credentials in it.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Extra PEM CA certificates for `rediss://`; without it, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Namespaces every key, so gateways of different accounts can share one Redis.
    pub prefix: String,
    /// How long one decision may take before `on_backend_error` applies.
    pub timeout: Duration,
    /// Refuse locally, without a round trip, calls on a limit Redis already refused for longer.
    pub local_precheck: bool,
}

/// Why Redis could not decide, or could not be set up.
#[derive(Debug)]
pub enum BackendError {
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    Client(RedisError),
    Timeout(Duration),
    Command(RedisError),
    /// Redis answered something the script never returns.
    Reply(String),
}

impl BackendError {
    /// The `kind` label of `sparkrtc_gateway_ratelimit_backend_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Timeout(_) => "timeout",
            BackendError::Command(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                "connection"
            }
            BackendError::CaFile { .. } | BackendError::Client(_) => "setup",
            BackendError::Command(_) | BackendError::Reply(_) => "response",
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::CaFile { path, .. } => write!(f, "cannot read the Redis CA file {}", path.display()),
            BackendError::Client(_) => f.write_str("the Redis client cannot be set up"),
            BackendError::Timeout(after) => write!(f, "Redis did not answer within {after:?}"),
            BackendError::Command(_) => f.write_str("Redis refused or failed the rate-limit script"),
            BackendError::Reply(what) => write!(f, "Redis answered the rate-limit script with {what}"),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::CaFile { source, .. } => Some(source),
            BackendError::Client(e) | BackendError::Command(e) => Some(e),
            BackendError::Timeout(_) | BackendError::Reply(_) => None,
        }
    }
}

/// One limit a call meets, and where its state lives.
struct Meet<'p> {
    policy: &'static str,
    spec: &'p LimitSpec,
    key: String,
}

pub(super) struct Limits {
    spec: RedisSpec,
    client: Client,
    /// Made on first use: the connection manager needs the runtime, which config checks lack.
    connection: OnceLock<ConnectionManager>,
    script: redis::Script,
    up: AtomicBool,
    /// Local pre-check: until when each key is known to refuse.
    refused_until: Mutex<HashMap<String, Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

impl Limits {
    pub(super) fn new(spec: RedisSpec) -> Result<Self, BackendError> {
        Ok(Limits {
            client: client(&spec)?,
            spec,
            connection: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            up: AtomicBool::new(true),
            refused_until: Mutex::new(HashMap::new()),
            last_warning: Mutex::new(None),
        })
    }

    pub(super) fn spec(&self) -> &RedisSpec {
        &self.spec
    }

    pub(super) fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn connection(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        // Reconnection: up to 2 tries per lost connection, 50 ms doubling to 2 s between them,
        // each connect bounded; calls never wait for it beyond their own timeout.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let made =
            ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(BackendError::Client)?;
        Ok(self.connection.get_or_init(|| made).clone())
    }

    pub(super) async fn check(
        &self,
        plan: &LimitPlan,
        app: &str,
        operation: &'static str,
        who: Subject<'_>,
    ) -> Checked {
        let meets = self.meets(plan, app, operation, who);
        if meets.is_empty() {
            return Checked { verdict: Ok(Vec::new()), via: Via::Process };
        }
        let started = Instant::now();
        if let Some(limited) = self.precheck(&meets, started) {
            return Checked { verdict: Err(Refusal::Over(limited)), via: Via::Precheck };
        }
        let answer = match tokio::time::timeout(self.spec.timeout, self.run(&meets)).await {
            Ok(answer) => answer,
            Err(_) => Err(BackendError::Timeout(self.spec.timeout)),
        };
        match answer {
            Ok(waits) => {
                self.mark(true);
                let verdict = self.decide(&meets, &waits, started);
                Checked { verdict, via: Via::Redis(started.elapsed()) }
            }
            Err(error) => self.backend_failed(&meets, error),
        }
    }

    /// The limits a call meets, most specific first.
    fn meets<'p>(&self, plan: &'p LimitPlan, app: &str, operation: &'static str, who: Subject<'_>) -> Vec<Meet<'p>> {
        let prefix = &self.spec.prefix;
        let mut meets = Vec::with_capacity(3);
        if let Some(limits) = plan.apps.get(app) {
            if let Some(spec) = limits.operations.get(operation) {
                meets.push(Meet {
                    policy: "operation",
                    spec,
                    key: format!("{prefix}op:{app}:{operation}:{}", fp(spec)),
                });
            }
            if let Some(spec) = &limits.app {
                meets.push(Meet { policy: "app", spec, key: format!("{prefix}app:{app}:{}", fp(spec)) });
            }
        }
        match who.caller {
            Some(name) => {
                if let Some(spec) = plan.callers.get(name) {
                    meets.push(Meet { policy: "caller", spec, key: format!("{prefix}caller:{name}:{}", fp(spec)) });
                }
            }
            None => {
                if let Some(spec) = &plan.per_address {
                    let address = address_key(who.address);
                    meets.push(Meet { policy: "caller", spec, key: format!("{prefix}addr:{address}:{}", fp(spec)) });
                }
            }
        }
        meets
    }

    /// Runs the script: EVALSHA, and EVAL when Redis does not have it (after a restart or
    /// `SCRIPT FLUSH`); EVAL also caches it for the next EVALSHA.
    async fn run(&self, meets: &[Meet<'_>]) -> Result<Vec<i64>, BackendError> {
        let mut connection = self.connection()?;
        let mut args: Vec<String> = Vec::with_capacity(meets.len() * 3);
        for m in meets {
            let interval = u64::try_from(m.spec.rate.interval().as_micros()).unwrap_or(u64::MAX).max(1);
            let tolerance = interval.saturating_mul(u64::from(m.spec.rate.burst.get() - 1));
            args.extend([interval.to_string(), tolerance.to_string(), u8::from(!m.spec.shadow).to_string()]);
        }
        let keys: Vec<&str> = meets.iter().map(|m| m.key.as_str()).collect();
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(self.script.get_hash()).arg(keys.len()).arg(&keys).arg(&args);
        let reply: Result<Vec<i64>, RedisError> = evalsha.query_async(&mut connection).await;
        let reply = match reply {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(SCRIPT).arg(keys.len()).arg(&keys).arg(&args);
                eval.query_async(&mut connection).await
            }
            other => other,
        };
        let reply = reply.map_err(BackendError::Command)?;
        if reply.len() != meets.len() + 1 {
            return Err(BackendError::Reply(format!("{} values for {} limits", reply.len(), meets.len())));
        }
        Ok(reply)
    }

    /// The verdict from the script's answer `{admitted, wait_1, ...}`.
    fn decide(&self, meets: &[Meet<'_>], reply: &[i64], started: Instant) -> Result<Vec<Limited>, Refusal> {
        let mut shadowed = Vec::new();
        let mut refusal = None;
        for (m, wait) in meets.iter().zip(&reply[1..]) {
            let Ok(micros @ 1..) = u64::try_from(*wait) else { continue };
            let wait = Duration::from_micros(micros);
            let limited = Limited::new(m.policy, m.spec.rate, wait);
            if m.spec.shadow {
                shadowed.push(limited);
            } else {
                self.remember(&m.key, started + wait);
                refusal = refusal.or(Some(limited));
            }
        }
        match (reply[0], refusal) {
            (1, _) => Ok(shadowed),
            (_, Some(limited)) => Err(Refusal::Over(limited)),
            (_, None) => Err(Refusal::BackendDown(BackendError::Reply("a refusal that names no limit".to_owned()))),
        }
    }

    fn backend_failed(&self, meets: &[Meet<'_>], error: BackendError) -> Checked {
        if !matches!(error, BackendError::Timeout(_)) {
            self.mark(false);
        }
        let error_kind = error.kind();
        if meets.iter().any(|m| m.spec.on_backend_error == OnBackendError::Deny) {
            tracing::debug!(error = %error, cause = Causes::of(&error).map(tracing::field::display), "rate-limit backend failed; refusing per on_backend_error = \"deny\"");
            return Checked {
                verdict: Err(Refusal::BackendDown(error)),
                via: Via::BackendFailed { error_kind, admitted: false },
            };
        }
        self.warn_allowed(&error);
        Checked { verdict: Ok(Vec::new()), via: Via::BackendFailed { error_kind, admitted: true } }
    }

    fn warn_allowed(&self, error: &BackendError) {
        let Ok(mut last) = self.last_warning.lock() else { return };
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(error = %error, cause = Causes::of(error).map(tracing::field::display), "rate-limit backend failed; forwarding calls unlimited per on_backend_error = \"allow\" (warned at most once a minute)");
        }
    }

    /// Pre-check: a key Redis refused keeps refusing until the instant it named. Only Redis
    /// can move that instant later (other replicas' calls), never earlier, so refusing here
    /// never turns away a call Redis would admit, and admits nothing itself.
    fn precheck(&self, meets: &[Meet<'_>], now: Instant) -> Option<Limited> {
        if !self.spec.local_precheck {
            return None;
        }
        let refused = self.refused_until.lock().ok()?;
        meets.iter().filter(|m| !m.spec.shadow).find_map(|m| {
            let until = *refused.get(&m.key)?;
            (until > now).then(|| Limited::new(m.policy, m.spec.rate, until - now))
        })
    }

    fn remember(&self, key: &str, until: Instant) {
        if !self.spec.local_precheck {
            return;
        }
        let Ok(mut refused) = self.refused_until.lock() else { return };
        if refused.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            refused.retain(|_, until| *until > now);
            if refused.len() >= MAX_REMEMBERED {
                refused.clear();
            }
        }
        refused.insert(key.to_owned(), until);
    }

    fn mark(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        match (was, up) {
            (true, false) => {
                tracing::warn!(redis = %self.spec.url, "rate-limit backend unreachable; on_backend_error applies until it answers again")
            }
            (false, true) => {
                tracing::info!(redis = %self.spec.url, "rate-limit backend reachable again; shared limits apply")
            }
            _ => {}
        }
    }

    /// `PING`, so readiness reflects Redis and a lost connection is re-made without traffic.
    pub(super) async fn probe(&self) {
        let pong = match self.connection() {
            Ok(mut connection) => {
                let ping = redis::cmd("PING");
                matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut connection)).await,
                    Ok(Ok(_))
                )
            }
            Err(_) => false,
        };
        self.mark(pong);
    }
}

/// The spec part of a key: `count/secs~burst`.
fn fp(spec: &LimitSpec) -> String {
    let r = &spec.rate;
    format!("{}/{}s~{}", r.count, r.per.as_secs(), r.burst)
}

/// IPv6 clients are keyed by their /64, the block one host holds, as in process.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

fn client(spec: &RedisSpec) -> Result<Client, BackendError> {
    let mut info = spec.url.as_str().into_connection_info().map_err(BackendError::Client)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &spec.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &spec.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    match &spec.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| BackendError::CaFile { path: path.clone(), source })?;
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            Client::build_with_tls(info, certs).map_err(BackendError::Client)
        }
        None => Client::open(info).map_err(BackendError::Client),
    }
}
