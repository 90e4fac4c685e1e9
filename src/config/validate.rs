//! Turns the TOML document into a [`Config`], checking every key and collecting every problem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;

use super::reader::{Problem, Problems, Table};
use super::*;
use crate::signer::MAX_SIGNED_BODY_BYTES;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn config(doc: &toml::Table, base: &Path, env: Env<'_>) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();
    let mut root = Table::root(doc);

    let mut server = root.table("server", &mut p);
    let listen = address(&mut server, "listen", DEFAULT_LISTEN, &mut p);
    let max_body_bytes =
        server.integer("max_body_bytes", 1, MAX_SIGNED_BODY_BYTES, &mut p).unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let unix_socket = server.string("unix_socket", &mut p).map(|s| base.join(s));
    let drain_delay =
        server.duration("drain_delay", Duration::ZERO, Duration::from_secs(600), &mut p).unwrap_or(DEFAULT_DRAIN_DELAY);
    let grace_period = server
        .duration("grace_period", Duration::ZERO, Duration::from_secs(3600), &mut p)
        .unwrap_or(DEFAULT_GRACE_PERIOD);
    let watch_config = server.boolean("watch_config", &mut p).unwrap_or(false);
    let idle_timeout = server
        .duration("idle_timeout", Duration::from_secs(1), Duration::from_secs(3600), &mut p)
        .unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let max_connections = server
        .integer("max_connections", 1, 1_000_000, &mut p)
        .and_then(|n| std::num::NonZeroUsize::new(usize::try_from(n).ok()?));
    let tls = if server.has("tls") {
        let mut t = server.table("tls", &mut p);
        let tls = inbound_tls(&mut t, base, &mut p);
        t.finish(&mut p);
        tls
    } else {
        None
    };
    server.finish(&mut p);

    let mut admin = root.table("admin", &mut p);
    let readiness = match admin.string("readiness", &mut p) {
        None | Some("any") => Readiness::Any,
        Some("all") => Readiness::All,
        Some(other) => {
            p.push(admin.key_path("readiness"), format!("{other:?} must be \"any\" (ready while some app can be served) or \"all\" (only while every app can)"));
            Readiness::Any
        }
    };
    let admin_listen = match admin.boolean("enabled", &mut p).unwrap_or(true) {
        true => address(&mut admin, "listen", DEFAULT_ADMIN_LISTEN, &mut p),
        false => {
            let _ = admin.string("listen", &mut p);
            None
        }
    };
    admin.finish(&mut p);

    let mut upstream_table = root.table("upstream", &mut p);
    let allow_http = upstream_table.has("allow_http")
        && matches!(doc.get("upstream").and_then(|u| u.get("allow_http")), Some(toml::Value::Boolean(true)));
    let upstream = upstream(&mut upstream_table, base, &mut p);
    upstream_table.finish(&mut p);

    let mut log_table = root.table("log", &mut p);
    let log = log(&mut log_table, &mut p);
    log_table.finish(&mut p);

    let mut profiles = BTreeMap::new();
    let mut profiles_table = root.table("profiles", &mut p);
    let profile_entries = profiles_table.entries(&mut p);
    let declared: Vec<&str> = profile_entries.iter().map(|(name, _)| *name).collect();
    for (name, mut t) in profile_entries {
        if let Some(profile) = super::profile::profile(name, &mut t, base, env, allow_http, &mut p) {
            profiles.insert(name.to_owned(), Arc::new(profile));
        }
        t.finish(&mut p);
    }
    // An agency token is fetched with another profile's AK/SK. A declared profile that failed
    // its own checks is not reported twice.
    for profile in profiles.values() {
        if let Auth::Token(TokenSpec { method: TokenMethod::Agency { via, .. }, .. }) = &profile.auth {
            let is_keys = profiles.get(via).is_some_and(|v| matches!(v.auth, Auth::Keys { .. }));
            let failed_itself = declared.contains(&via.as_str()) && !profiles.contains_key(via);
            if !is_keys && !failed_itself {
                p.push(
                    format!("profiles.{}.via", profile.name),
                    format!("{via:?} must name an aksk profile, whose keys sign the assume-role call"),
                );
            }
        }
    }
    if !profiles_table.has_any() {
        p.push(
            "profiles",
            "no credential profile is defined; add [profiles.NAME] with access_key_env, secret_key_env and project_id",
        );
    }

    // Read first: every limit defaults to its on_backend_error.
    let mut limits_table = root.table("limits", &mut p);
    let on_error = super::limits::on_backend_error(&mut limits_table, "on_backend_error", &mut p).unwrap_or_default();
    let limits = super::limits::defaults(&mut limits_table, on_error, base, env, &mut p);
    limits_table.finish(&mut p);

    let mut policy_table = root.table("policy", &mut p);
    let mut callers_table = root.table("callers", &mut p);
    let (mut callers, caller_limits) = super::policy::callers(&mut policy_table, &mut callers_table, on_error, &mut p);
    callers.jwt = super::jwt::verifier(&mut policy_table, &callers.named, base, allow_http, &mut p);
    policy_table.finish(&mut p);
    let client_certs = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    for caller in callers.named.iter().filter(|c| !c.cert_names.is_empty() && !client_certs) {
        p.push(
            format!("callers.{}.cert_names", caller.name),
            "can never match: set [server.tls] client_ca_file so callers present certificates",
        );
    }

    let mut apps = BTreeMap::new();
    let mut apps_table = root.table("apps", &mut p);
    for (id, mut t) in apps_table.entries(&mut p) {
        if let Some(app) = app(&mut t, &profiles, &declared, &callers, on_error, &mut p) {
            apps.insert(id.to_owned(), app);
        }
        t.finish(&mut p);
    }
    let mut account_table = root.table("account", &mut p);
    let account = if account_table.present() {
        app(&mut account_table, &profiles, &declared, &callers, on_error, &mut p)
    } else {
        None
    };
    account_table.finish(&mut p);
    let mut audit_table = root.table("audit", &mut p);
    let audit = super::audit::audit(&mut audit_table, base, &mut p);
    audit_table.finish(&mut p);
    let mut trace_table = root.table("trace", &mut p);
    let trace = trace::trace(&mut trace_table, &mut p);
    trace_table.finish(&mut p);
    root.finish(&mut p);

    match (listen, upstream) {
        (Some(listen), Some(upstream)) if p.0.is_empty() => Ok(Config {
            unix_socket,
            tls,
            drain_delay,
            grace_period,
            admin_listen,
            readiness,
            watch_config,
            idle_timeout,
            max_connections,
            listen,
            max_body_bytes,
            upstream,
            log,
            profiles,
            apps,
            account,
            callers,
            caller_limits,
            limits,
            audit,
            trace,
        }),
        _ => Err(p.0),
    }
}

fn address(t: &mut Table<'_>, key: &str, default: &str, p: &mut Problems) -> Option<SocketAddr> {
    let text = t.string(key, p).unwrap_or(default);
    text.parse()
        .map_err(|_| {
            p.push(
                t.key_path(key),
                format!("{text:?} is not an address; write it like \"127.0.0.1:8080\" or \"[::]:8080\""),
            )
        })
        .ok()
}

fn inbound_tls(t: &mut Table<'_>, base: &Path, p: &mut Problems) -> Option<InboundTls> {
    let mut file = |key: &str| -> Option<PathBuf> {
        let path = base.join(t.string(key, p)?);
        if !path.is_file() {
            p.push(
                t.key_path(key),
                format!("{:?} is not a readable file; give the path of a PEM file", path.display().to_string()),
            );
            return None;
        }
        Some(path)
    };
    let cert_file = file("cert_file");
    let key_file = file("key_file");
    let client_ca_file = file("client_ca_file");
    if t.has("client_auth") && client_ca_file.is_none() && !t.has("client_ca_file") {
        p.push(t.key_path("client_auth"), "has no effect without client_ca_file, the CA that signs client certificates; add it, or remove client_auth");
    }
    let client_auth = t.string("client_auth", p).unwrap_or("required");
    let client_auth_required = match client_auth {
        "required" => true,
        "optional" => false,
        other => {
            p.push(t.key_path("client_auth"), format!("{other:?} must be \"required\" or \"optional\""));
            true
        }
    };
    for (key, value) in [("cert_file", &cert_file), ("key_file", &key_file)] {
        if value.is_none() && !t.has(key) {
            p.push(t.key_path(key), "is missing; inbound TLS needs cert_file and key_file (PEM)");
        }
    }
    Some(InboundTls { cert_file: cert_file?, key_file: key_file?, client_ca_file, client_auth_required })
}

fn upstream(t: &mut Table<'_>, base: &Path, p: &mut Problems) -> Option<Upstream> {
    let allow_http = t.boolean("allow_http", p).unwrap_or(false);
    let endpoint_text = t.string("endpoint", p).unwrap_or(DEFAULT_ENDPOINT);
    let key = t.key_path("endpoint");
    let connect_timeout = t
        .duration("connect_timeout", Duration::from_millis(10), Duration::from_secs(60), p)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let response_timeout = t
        .duration("response_timeout", Duration::from_millis(10), Duration::from_secs(600), p)
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
    let pool_idle_timeout = t
        .duration("pool_idle_timeout", Duration::from_secs(1), Duration::from_secs(3600), p)
        .unwrap_or(DEFAULT_POOL_IDLE_TIMEOUT);
    // No cap by default: the idle timeout prunes, as nginx's `keepalive` pool does. A cap below
    // the calls in flight closes each connection beyond it as it returns, and the next call pays
    // a new TLS handshake: churn that grows with load.
    let pool_max_idle_per_host = t.integer("pool_max_idle_per_host", 0, 10_000, p).map(|n| n as usize);
    let ca_file = ca_file(t, base, p);

    let uri: Uri = match endpoint_text.parse() {
        Ok(uri) => uri,
        Err(_) => {
            p.push(key, format!("{endpoint_text:?} is not a URL; write it like \"https://rtc-api.myhuaweicloud.com\""));
            return None;
        }
    };
    let scheme = uri.scheme().cloned();
    let path_ok = uri.path_and_query().is_none_or(|pq| pq.as_str() == "/" || pq.as_str().is_empty());
    let (Some(scheme), Some(authority), true) = (scheme, uri.authority().cloned(), path_ok) else {
        p.push(key, format!("{endpoint_text:?} must be scheme and host only, like \"https://rtc-api.myhuaweicloud.com\" (no path or query)"));
        return None;
    };
    if scheme == Scheme::HTTP && !allow_http {
        p.push(key, format!("{endpoint_text:?} is plain http, which sends signed requests unencrypted; use https, or set upstream.allow_http = true for local testing"));
        return None;
    }
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        p.push(key, format!("{endpoint_text:?} must start with https://"));
        return None;
    }
    Some(Upstream {
        scheme,
        allow_http,
        authority,
        connect_timeout,
        response_timeout,
        pool_idle_timeout,
        pool_max_idle_per_host,
        ca_file,
    })
}

/// `ca_file`: extra PEM CA certificates, relative to the config file.
pub(super) fn ca_file(t: &mut Table<'_>, base: &Path, p: &mut Problems) -> Option<PathBuf> {
    let file = base.join(t.string("ca_file", p)?);
    if !file.is_file() {
        let shown = file.display().to_string();
        p.push(
            t.key_path("ca_file"),
            format!("{shown:?} is not a readable file; give the path of a PEM file of CA certificates"),
        );
    }
    Some(file)
}

fn log(t: &mut Table<'_>, p: &mut Problems) -> Log {
    let format = match t.string("format", p) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.push(t.key_path("format"), format!("{other:?} is not a log format; use \"text\" or \"json\""));
            LogFormat::Text
        }
    };
    let level = t.string("level", p).unwrap_or("info").to_owned();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.push(
            t.key_path("level"),
            format!("{level:?} is not a log filter; use one of \"error\", \"warn\", \"info\", \"debug\", \"trace\""),
        );
    }
    Log { format, level }
}

fn app(
    t: &mut Table<'_>,
    profiles: &BTreeMap<String, Arc<Profile>>,
    declared: &[&str],
    callers: &crate::policy::Callers,
    on_error: crate::ratelimit::OnBackendError,
    p: &mut Problems,
) -> Option<App> {
    let profile = profile_ref(t, profiles, declared, p);
    let (access, limit, operation_limits) = super::policy::access(t, callers, on_error, p);
    Some(App { profile: profile?, access, limit, operation_limits })
}

/// The profile named by `profile`. A declared profile with problems of its own is not reported
/// again here.
fn profile_ref(
    t: &mut Table<'_>,
    profiles: &BTreeMap<String, Arc<Profile>>,
    declared: &[&str],
    p: &mut Problems,
) -> Option<Arc<Profile>> {
    let key = t.key_path("profile");
    let Some(name) = t.string("profile", p) else {
        p.push(key, "is missing; name the [profiles.NAME] whose credentials this uses");
        return None;
    };
    let found = profiles.get(name).cloned();
    if found.is_none() && !declared.contains(&name) {
        p.push(key, format!("{name:?} is not a defined profile; defined: {declared:?}"));
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    fn parse(server: &str) -> Result<crate::Config, String> {
        let text = format!(
            "[server]\n{server}\n[profiles.p]\naccess_key = \"ak\"\nsecret_key = \"sk\"\nproject_id = \"p1\"\n"
        );
        crate::Config::parse(&text, "t.toml", Path::new("."), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn connection_limits_are_read_with_defaults_and_checked() {
        let defaults = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((defaults.idle_timeout, defaults.max_connections), (super::DEFAULT_IDLE_TIMEOUT, None));
        let set = parse("idle_timeout = \"5s\"\nmax_connections = 100").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.idle_timeout, Duration::from_secs(5));
        assert_eq!(set.max_connections.map(|n| n.get()), Some(100));
        let bad = parse("idle_timeout = \"0s\"\nmax_connections = 0").err().unwrap_or_default();
        assert!(bad.contains("server.idle_timeout") && bad.contains("server.max_connections"), "{bad}");
    }
}
