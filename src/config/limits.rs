//! `[limits]`: default limits, the backend that keeps limiter state, and each limit's spec.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use super::profile::secret;
use super::reader::{Problems, Table};
use super::DefaultLimits;
use crate::ratelimit::{Backend, LimitSpec, OnBackendError, Rate, RedisSpec};

pub(crate) const DEFAULT_REDIS_PREFIX: &str = "sparkrtc-gateway:";
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `[limits]` `on_backend_error`, read before any limit so each limit can default to it.
pub(super) fn on_backend_error(t: &mut Table<'_>, key: &str, p: &mut Problems) -> Option<OnBackendError> {
    match t.string(key, p)? {
        "allow" => Some(OnBackendError::Allow),
        "deny" => Some(OnBackendError::Deny),
        other => {
            p.push(
                t.key_path(key),
                format!("{other:?} must be \"allow\" (forward uncounted while Redis is down) or \"deny\" (answer 503)"),
            );
            None
        }
    }
}

/// The rest of `[limits]`: default limits and the backend.
pub(super) fn defaults(
    t: &mut Table<'_>,
    on_error: OnBackendError,
    base: &Path,
    env: Env<'_>,
    p: &mut Problems,
) -> DefaultLimits {
    let per_app = limit(t, "per_app", on_error, p);
    let per_caller = limit(t, "per_caller", on_error, p);
    let backend = match t.string("backend", p) {
        None | Some("local") => {
            if t.has("redis") {
                let _ = t.table("redis", p);
                p.push(t.key_path("redis"), "is set but limits.backend is \"local\"; set backend = \"redis\" to share limits across replicas, or remove [limits.redis]");
            }
            Backend::Local
        }
        Some("redis") => {
            let mut rt = t.table("redis", p);
            let spec = redis(&mut rt, base, env, p);
            rt.finish(p);
            spec.map_or(Backend::Local, Backend::Redis)
        }
        Some(other) => {
            p.push(
                t.key_path("backend"),
                format!("{other:?} is not a limiter backend; use \"local\" (per replica) or \"redis\" (shared)"),
            );
            Backend::Local
        }
    };
    DefaultLimits { per_app, per_caller, backend }
}

/// `[limits.redis]`.
fn redis(t: &mut Table<'_>, base: &Path, env: Env<'_>, p: &mut Problems) -> Option<RedisSpec> {
    let url_key = t.key_path("url");
    let url = t.secret_string("url", p);
    let username = t.string("username", p).map(str::to_owned);
    let password = secret(t, "password", false, base, env, p).map(|(s, _)| s);
    let ca_file = super::validate::ca_file(t, base, p);
    let prefix = t.string("prefix", p).unwrap_or(DEFAULT_REDIS_PREFIX).to_owned();
    let timeout =
        t.duration("timeout", Duration::from_millis(1), Duration::from_secs(10), p).unwrap_or(DEFAULT_REDIS_TIMEOUT);
    let local_precheck = t.boolean("local_precheck", p).unwrap_or(true);
    let Some(url) = url else {
        p.push(url_key, "is missing; write it like \"redis://redis.sparkrtc.svc:6379/0\" or \"rediss://...\" for TLS");
        return None;
    };
    let url = redis_url(url, &url_key, ca_file.is_some(), p)?;
    Some(RedisSpec { url, username, password, ca_file, prefix, timeout, local_precheck })
}

/// A Redis URL without credentials (they would end up in logs and `ps`).
fn redis_url(url: &str, key: &str, ca_file: bool, p: &mut Problems) -> Option<String> {
    let parsed: Option<http::Uri> = url.parse().ok();
    let scheme = parsed.as_ref().and_then(|u| u.scheme_str().map(str::to_owned));
    let Some(authority) = parsed.as_ref().and_then(|u| u.authority()) else {
        p.push(key, "is not a Redis URL; write it like \"redis://HOST:6379/0\" or \"rediss://HOST:6380/0\"");
        return None;
    };
    if authority.as_str().contains('@') {
        // Not quoted: the value holds a password.
        p.push(key, "holds credentials; remove them from the URL and set username and password_env or password_file");
        return None;
    }
    match scheme.as_deref() {
        Some("redis") if ca_file => {
            p.push(key, "is plain redis:// but ca_file is set; use rediss:// for TLS, or remove ca_file");
            None
        }
        Some("redis" | "rediss") => Some(url.to_owned()),
        _ => {
            p.push(
                key,
                format!(
                    "{url:?} must start with redis:// or rediss:// (TLS); Sentinel and Cluster URLs are not supported"
                ),
            );
            None
        }
    }
}

/// `NAME = { rate = "10/s", burst = 20, shadow = false, on_backend_error = "allow" }`.
pub(super) fn limit(t: &mut Table<'_>, key: &str, on_error: OnBackendError, p: &mut Problems) -> Option<LimitSpec> {
    t.shaped(key, "limit");
    if !t.has(key) {
        return None;
    }
    let mut lt = t.shaped_table(key, "limit", p);
    let burst = lt.integer("burst", 1, u64::from(u32::MAX), p).and_then(|b| NonZeroU32::new(u32::try_from(b).ok()?));
    let shadow = lt.boolean("shadow", p).unwrap_or(false);
    let on_backend_error = on_backend_error(&mut lt, "on_backend_error", p).unwrap_or(on_error);
    let rate = match lt.string("rate", p) {
        None => {
            p.push(lt.key_path("rate"), "is missing; write it like \"10/s\", \"600/m\" or \"1000/h\"");
            None
        }
        Some(text) => Rate::parse(text, burst).or_else(|| {
            p.push(
                lt.key_path("rate"),
                format!("{text:?} is not a rate; write it like \"10/s\", \"600/m\" or \"1000/h\" (at least 1)"),
            );
            None
        }),
    };
    lt.finish(p);
    rate.map(|rate| LimitSpec { rate, shadow, on_backend_error })
}
