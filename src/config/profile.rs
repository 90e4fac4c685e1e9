//! `[profiles.NAME]`: the credentials the gateway signs or authenticates with.
//!
//! Kinds: `aksk` (default): an AK/SK pair, optionally temporary keys with a security token.
//! `token`: an IAM token, fetched with an IAM user's password or by assuming an agency.
//! `metadata`, `pod-identity`, `oidc`: temporary keys from the platform (see `super::platform`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;

use super::reader::{Problems, Table};
use super::{Auth, Profile, TokenMethod, TokenSpec, DEFAULT_V11_SERVICE};
use crate::cause::ErrorChain;
use crate::credentials::keys::{read_credentials, KeyFiles, LoadedKey};
use crate::credentials::token::Timing;
use crate::secret::Secret;
use crate::signer::{Algorithm, SigningKey};

pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Tokens are valid for 24 hours; by default a new one is fetched when less than this remains.
pub(super) const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(3_600);
/// IAM answers a token request in well under a second; one that takes longer than this is
/// treated as down (and retried with backoff), whatever SparkRTC's own `response_timeout`.
pub(super) const DEFAULT_IAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call with no valid token waits for the fetch under way before it gets a 503.
pub(super) const DEFAULT_TOKEN_WAIT: Duration = Duration::from_secs(3);

pub(super) fn profile(
    name: &str,
    t: &mut Table<'_>,
    base: &Path,
    env: Env<'_>,
    allow_http: bool,
    p: &mut Problems,
) -> Option<Profile> {
    let project_id = t.string("project_id", p);
    if project_id.is_none_or(|id| id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) {
        p.push(t.key_path("project_id"), "set the Huawei Cloud project id of the region SparkRTC runs in (32 hex characters, from the console's My Credentials page)");
    }
    let auth = match t.string("kind", p).unwrap_or("aksk") {
        "aksk" => keys(t, base, env, p),
        "token" => token(t, base, env, allow_http, p),
        kind @ ("metadata" | "pod-identity" | "oidc") => super::platform::platform(kind, t, base, env, allow_http, p),
        other => {
            p.push(t.key_path("kind"), format!("{other:?} is not a profile kind; use \"aksk\" (default), \"token\", \"metadata\", \"pod-identity\" or \"oidc\""));
            None
        }
    };
    Some(Profile { name: name.to_owned(), project_id: project_id?.to_owned(), auth: auth? })
}

fn keys(t: &mut Table<'_>, base: &Path, env: Env<'_>, p: &mut Problems) -> Option<Auth> {
    let algorithm = algorithm(t, p);
    let mut files = KeyFiles::default();
    if t.has("credentials_file") {
        // Temporary keys: access key, secret key, security token and expiry in one JSON file.
        let path = base.join(t.string("credentials_file", p)?);
        files.credentials = Some(path.clone());
        return match read_credentials(&path) {
            Ok((access_key, secret_key, token, expires_at)) => {
                let key = SigningKey { algorithm: algorithm?, access_key, secret_key, security_token: Some(token) };
                Some(Auth::Keys { key: LoadedKey { key, expires_at: Some(expires_at) }, files })
            }
            Err(e) => {
                p.push(
                    t.key_path("credentials_file"),
                    format!(
                        "{}; it must hold {{\"access\", \"secret\", \"securitytoken\", \"expires_at\"}}",
                        ErrorChain(&e)
                    ),
                );
                None
            }
        };
    }
    let access_key = secret(t, "access_key", true, base, env, p).map(|(s, f)| (s, files.access_key = f).0);
    let secret_key = secret(t, "secret_key", true, base, env, p).map(|(s, f)| (s, files.secret_key = f).0);
    let security_token = secret(t, "security_token", false, base, env, p).map(|(s, f)| (s, files.security_token = f).0);
    let key = SigningKey { algorithm: algorithm?, access_key: access_key?, secret_key: secret_key?, security_token };
    Some(Auth::Keys { key: LoadedKey { key, expires_at: None }, files })
}

pub(super) fn algorithm(t: &mut Table<'_>, p: &mut Problems) -> Option<Algorithm> {
    match t.string("algorithm", p).unwrap_or("SDK-HMAC-SHA256") {
        "SDK-HMAC-SHA256" => Some(Algorithm::HmacSha256),
        "SDK-HMAC-SM3" => Some(Algorithm::HmacSm3),
        "V11-HMAC-SHA256" => match t.string("region", p) {
            Some(region) => Some(Algorithm::V11HmacSha256 {
                region: region.to_owned(),
                service: t.string("service", p).unwrap_or(DEFAULT_V11_SERVICE).to_owned(),
            }),
            None => {
                p.push(
                    t.key_path("region"),
                    "V11-HMAC-SHA256 derives its key per region; set region, e.g. \"cn-north-4\"",
                );
                None
            }
        },
        other => {
            p.push(t.key_path("algorithm"), format!("{other:?} is not supported; use \"SDK-HMAC-SHA256\" (default), \"SDK-HMAC-SM3\" or \"V11-HMAC-SHA256\""));
            None
        }
    }
}

fn token(t: &mut Table<'_>, base: &Path, env: Env<'_>, allow_http: bool, p: &mut Problems) -> Option<Auth> {
    let region = t.string("region", p);
    let endpoint_key = t.key_path("iam_endpoint");
    let endpoint = match (t.string("iam_endpoint", p), region) {
        (Some(e), _) => e.to_owned(),
        (None, Some(region)) => format!("https://iam.{region}.myhuaweicloud.com"),
        (None, None) => {
            p.push(&endpoint_key, "is missing; set iam_endpoint, or region (e.g. \"cn-north-4\") for https://iam.<region>.myhuaweicloud.com");
            String::new()
        }
    };
    let iam_endpoint = iam_endpoint(&endpoint, &endpoint_key, allow_http, p);
    let Timing { refresh_before, fetch_timeout: iam_timeout, wait: token_wait } =
        timing(t, DEFAULT_REFRESH_BEFORE, ("iam_timeout", DEFAULT_IAM_TIMEOUT), p);
    let domain = t.string("domain", p);
    if domain.is_none() {
        p.push(t.key_path("domain"), "is missing; set the account (domain) name the IAM user or agency belongs to");
    }
    let method = if t.has("agency") {
        let agency = t.string("agency", p);
        let via = t.string("via", p);
        if via.is_none() {
            p.push(t.key_path("via"), "is missing; name the aksk profile whose keys sign the assume-role call");
        }
        TokenMethod::Agency { domain: domain?.to_owned(), agency: agency?.to_owned(), via: via?.to_owned() }
    } else {
        let user = t.string("user", p);
        if user.is_none() {
            p.push(t.key_path("user"), "is missing; set the IAM user name (or agency and via to assume an agency)");
        }
        let (password, password_file) = secret(t, "password", true, base, env, p)?;
        TokenMethod::Password { domain: domain?.to_owned(), user: user?.to_owned(), password, password_file }
    };
    Some(Auth::Token(TokenSpec { iam_endpoint: iam_endpoint?, method, refresh_before, iam_timeout, token_wait }))
}

/// When a cache of expiring credentials refreshes and how long it waits: `refresh_before`,
/// the fetch timeout (`iam_timeout` or `fetch_timeout`, with its default) and `token_wait`,
/// with the same bounds for every kind.
pub(super) fn timing(
    t: &mut Table<'_>,
    refresh_before: Duration,
    (fetch_key, fetch_timeout): (&str, Duration),
    p: &mut Problems,
) -> Timing {
    Timing {
        refresh_before: t
            .duration("refresh_before", Duration::from_secs(60), Duration::from_secs(20 * 3_600), p)
            .unwrap_or(refresh_before),
        fetch_timeout: t
            .duration(fetch_key, Duration::from_secs(1), Duration::from_secs(300), p)
            .unwrap_or(fetch_timeout),
        wait: t
            .duration("token_wait", Duration::from_millis(100), Duration::from_secs(60), p)
            .unwrap_or(DEFAULT_TOKEN_WAIT),
    }
}

fn iam_endpoint(text: &str, key: &str, allow_http: bool, p: &mut Problems) -> Option<Uri> {
    let uri: Option<Uri> = text.parse().ok();
    let scheme_ok = |u: &Uri| u.scheme() == Some(&Scheme::HTTPS) || (allow_http && u.scheme() == Some(&Scheme::HTTP));
    match uri {
        Some(u)
            if u.authority().is_some() && scheme_ok(&u) && u.path_and_query().is_none_or(|pq| pq.as_str() == "/") =>
        {
            Some(u)
        }
        _ if text.is_empty() => None,
        _ => {
            p.push(key, format!("{text:?} must be https:// and a host only, like \"https://iam.cn-north-4.myhuaweicloud.com\" (http:// needs upstream.allow_http)"));
            None
        }
    }
}

/// A secret from exactly one of `NAME` (inline), `NAME_env` or `NAME_file`, with the file's path
/// when it came from one (so it can be re-read). Messages never show the secret.
pub(super) fn secret(
    t: &mut Table<'_>,
    name: &str,
    required: bool,
    base: &Path,
    env: Env<'_>,
    p: &mut Problems,
) -> Option<(Secret, Option<PathBuf>)> {
    let env_key = format!("{name}_env");
    let file_key = format!("{name}_file");
    let given = [name, env_key.as_str(), file_key.as_str()].into_iter().filter(|k| t.has(k)).count();
    if given != 1 {
        if given > 1 || required {
            let what = if given > 1 { "is given more than once" } else { "is missing" };
            p.push(t.key_path(name), format!("{what}; set exactly one of {env_key} (an environment variable), {file_key} (a file holding it) or {name} (inline, for demos only)"));
        }
        // Mark the keys read so they are not also reported as unknown.
        let _ = (t.secret_string(name, p), t.string(&env_key, p), t.string(&file_key, p));
        return None;
    }
    if let Some(value) = t.secret_string(name, p) {
        return non_empty(Secret::new(value), t.key_path(name), "is empty", p).map(|s| (s, None));
    }
    if let Some(var) = t.string(&env_key, p) {
        // Never quoted: a secret pasted here by mistake must not be repeated in the message,
        // which ends up in logs and CI output; the key path names the setting.
        if !is_env_name(var) {
            p.push(t.key_path(&env_key), "is not an environment variable's name (letters, digits and _); if the secret itself was written here, move it to a variable and rotate it");
            return None;
        }
        let value = env(var).unwrap_or_default();
        // Not quoted even then: a secret key can look like a variable's name too.
        let message = "names an environment variable that is not set or is empty; export it before starting";
        return non_empty(Secret::new(value.trim()), t.key_path(&env_key), message, p).map(|s| (s, None));
    }
    let file = base.join(t.string(&file_key, p)?);
    match crate::credentials::keys::read_secret(&file) {
        Ok(value) => Some((value, Some(file))),
        // The path is not repeated, for the same reason; the key names the setting.
        Err(e) => {
            p.push(
                t.key_path(&file_key),
                format!("{}; check the path and that the gateway's user may read it", e.unnamed()),
            );
            None
        }
    }
}

/// POSIX's portable environment variable names: letters, digits and `_`, not starting with a digit.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

fn non_empty(s: Secret, key: String, message: &str, p: &mut Problems) -> Option<Secret> {
    if s.expose().is_empty() {
        p.push(key, message);
        return None;
    }
    Some(s)
}
