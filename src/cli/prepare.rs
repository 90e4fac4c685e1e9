//! What `serve` builds before it binds a socket, in one place so that `check` reaches the same
//! verdict: the validated config, the gateway (upstream TLS client, credentials, limiter), the
//! inbound TLS configuration and every CA file parsed. Nothing here binds or touches the
//! network; the Redis client is built but connects lazily, on the first call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::cause::{BoxError, ErrorChain};
use crate::config::{Auth, Config, ConfigError};
use crate::credentials::platform::PlatformSource;
use crate::gateway::BuildError;
use crate::ratelimit::Backend;
use crate::Gateway;

#[cfg(test)]
use super::EXIT_CONFIG;
use super::EXIT_RUNTIME;

/// Temporary keys that expire sooner than this are reported: whatever rewrites the file is
/// expected to have replaced them by then (the SDK refreshes its own 40 minutes ahead).
const EXPIRY_WARNING: Duration = Duration::from_secs(40 * 60);

/// Why `serve` would not start, and so why `check` fails.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The file cannot be read or is invalid: exit 64, every problem listed.
    Config(ConfigError),
    /// The config is valid but what it names cannot be built (a TLS or CA file): exit 1.
    Start(StartProblem),
}

impl Refusal {
    /// Reports the refusal on stderr and returns the documented exit code.
    pub(crate) fn report(&self) -> ExitCode {
        match self {
            Refusal::Config(e) => super::report(e),
            Refusal::Start(e) => {
                super::err(&format!("cannot start: {e}"));
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    }

    #[cfg(test)]
    fn code(&self) -> u8 {
        match self {
            Refusal::Config(_) => EXIT_CONFIG,
            Refusal::Start(_) => EXIT_RUNTIME,
        }
    }
}

/// A file the config names that cannot be used: the key, why (with its cause chain) and the fix.
#[derive(Debug)]
pub(crate) struct StartProblem {
    key: &'static str,
    fix: &'static str,
    source: BoxError,
}

impl std::fmt::Display for StartProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.key, ErrorChain(&*self.source), self.fix)
    }
}

fn problem(key: &'static str, fix: &'static str, source: impl Into<BoxError>) -> Refusal {
    Refusal::Start(StartProblem { key, fix, source: source.into() })
}

/// What `serve` goes on to bind, and what the operator should know before it does.
pub(crate) struct Prepared {
    pub(crate) gateway: Gateway,
    /// Things that do not stop the gateway but will refuse calls (expired keys, unreadable
    /// token files): printed by `check`, logged by `serve`.
    pub(crate) warnings: Vec<String>,
}

/// Reads and validates the config file (secrets and key files are read here too).
pub(crate) fn load(path: &Path) -> Result<Config, Refusal> {
    Config::load(path).map_err(Refusal::Config)
}

/// Builds everything of `config` that can fail before binding.
pub(crate) fn build(config: Config) -> Result<Prepared, Refusal> {
    const PEM_FIX: &str = "give a PEM file with the certificate chain (-----BEGIN CERTIFICATE-----) and a PEM private key that belongs to it";
    crate::server::inbound_tls(&config).map_err(|e| {
        let tls = config.tls.as_ref();
        let key = match &e {
            crate::tls::Error::Pem { path, .. } | crate::tls::Error::Key { path, .. }
                if tls.is_some_and(|t| &t.key_file == path) =>
            {
                "server.tls.key_file"
            }
            crate::tls::Error::Pem { path, .. }
            | crate::tls::Error::NoCertificate { path }
            | crate::tls::Error::Certificate { path, .. }
            | crate::tls::Error::ClientCa { path, .. }
                if tls.is_some_and(|t| t.client_ca_file.as_ref() == Some(path)) =>
            {
                "server.tls.client_ca_file"
            }
            _ => "server.tls.cert_file",
        };
        problem(key, PEM_FIX, e)
    })?;
    if let Backend::Redis(spec) = &config.limits.backend {
        if let Some(ca) = &spec.ca_file {
            crate::tls::ca_certificates(ca).map_err(|e| {
                problem("limits.redis.ca_file", "give a PEM file of the CA certificates that sign Redis's", e)
            })?;
        }
    }
    let warnings = warnings(&config, SystemTime::now());
    let gateway = Gateway::new(config).map_err(|e| match e {
        BuildError::UpstreamTls(e) => {
            problem("upstream.ca_file", "give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)", e)
        }
        BuildError::Limiter(e) => problem("limits.redis", "check url, username, password and ca_file", e),
        BuildError::Audit(e) => problem("audit.file", "make the file's directory writable by the gateway's user", e),
    })?;
    Ok(Prepared { gateway, warnings })
}

/// Temporary keys that have expired or soon will, and token files that cannot be read now
/// (they are read at each fetch, so the gateway starts, but calls would get 503 RTCGW.5030).
fn warnings(config: &Config, now: SystemTime) -> Vec<String> {
    let mut out = Vec::new();
    for (name, profile) in &config.profiles {
        match &profile.auth {
            Auth::Keys { key, files } => {
                let (Some(at), Some(_)) = (key.expires_at, &files.credentials) else { continue };
                let shown = humantime::format_rfc3339_seconds(at);
                let key = format!("profiles.{name}.credentials_file");
                let fix = "write fresh temporary keys to the file (it is re-read every 2 s)";
                match at.duration_since(now) {
                    Err(_) => out.push(format!(
                        "{key}: the temporary keys expired at {shown}; calls get 503 RTCGW.5030 until you {fix}"
                    )),
                    Ok(left) if left < EXPIRY_WARNING => out.push(format!(
                        "{key}: the temporary keys expire at {shown}, in {}; {fix}",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    )),
                    Ok(_) => {}
                }
            }
            Auth::Platform(spec) => {
                let file: Option<(&str, &PathBuf)> = match &spec.source {
                    PlatformSource::PodIdentity { token_file, .. } => Some(("token_file", token_file)),
                    PlatformSource::Oidc { id_token_file, .. } => Some(("id_token_file", id_token_file)),
                    PlatformSource::Metadata { .. } => None,
                };
                if let Some((key, path)) = file {
                    if let Err(e) = std::fs::File::open(path) {
                        out.push(format!("profiles.{name}.{key}: {:?} cannot be read ({e}); it is read at each fetch, so calls get 503 RTCGW.5030 until it can", path.display().to_string()));
                    }
                }
            }
            Auth::Token(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "t.toml", Path::new("."), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_certificate_file_without_a_certificate_names_the_key() {
        let config = parse(
            "[server.tls]\ncert_file = \"/etc/hosts\"\nkey_file = \"/etc/hosts\"\n\
             [profiles.p]\naccess_key = \"a\"\nsecret_key = \"s\"\nproject_id = \"p\"\n",
        );
        let refusal = build(config).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(refusal.code(), EXIT_RUNTIME);
        let Refusal::Start(problem) = refusal else { panic!("not a start problem") };
        assert!(problem.to_string().starts_with("server.tls.cert_file: /etc/hosts: no PEM certificate"), "{problem}");
    }
}
