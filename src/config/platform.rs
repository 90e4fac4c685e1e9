//! `[profiles.NAME]` of the platform kinds: `metadata`, `pod-identity` and `oidc`, whose
//! temporary keys come from where the gateway runs (see `credentials::platform`).

use std::path::Path;
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;

use super::profile::{algorithm, Env};
use super::reader::{Problems, Table};
use super::Auth;
use crate::credentials::platform::{
    OidcExchange, PlatformSource, PlatformSpec, DEFAULT_METADATA_ENDPOINT, DEFAULT_SESSION_NAME,
    ENV_POD_IDENTITY_TOKEN_FILE, ENV_POD_IDENTITY_URI,
};

/// The SDK refreshes temporary keys when less than 40 minutes remain.
pub(super) const DEFAULT_PLATFORM_REFRESH_BEFORE: Duration = Duration::from_secs(40 * 60);
/// The SDK's timeouts: 3 s for the metadata service, 5 s for the rest.
pub(super) const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(3);
pub(super) const DEFAULT_PLATFORM_TIMEOUT: Duration = Duration::from_secs(5);
/// IAM security tokens: the SDK asks for 6 hours; STS sessions: 1 hour.
pub(super) const DEFAULT_IAM_KEYS_DURATION: Duration = Duration::from_secs(6 * 3_600);
pub(super) const DEFAULT_STS_DURATION: Duration = Duration::from_secs(3_600);

pub(super) fn platform(
    kind: &str,
    t: &mut Table<'_>,
    base: &Path,
    env: Env<'_>,
    allow_http: bool,
    p: &mut Problems,
) -> Option<Auth> {
    let algorithm = algorithm(t, p);
    let source = match kind {
        "metadata" => metadata(t, p),
        "pod-identity" => pod_identity(t, base, env, p),
        _ => oidc(t, base, allow_http, p),
    };
    let default_timeout = if kind == "metadata" { DEFAULT_METADATA_TIMEOUT } else { DEFAULT_PLATFORM_TIMEOUT };
    let timing = super::profile::timing(t, DEFAULT_PLATFORM_REFRESH_BEFORE, ("fetch_timeout", default_timeout), p);
    Some(Auth::Platform(PlatformSpec { source: source?, algorithm: algorithm?, timing }))
}

fn metadata(t: &mut Table<'_>, p: &mut Problems) -> Option<PlatformSource> {
    let text = t.string("endpoint", p).unwrap_or(DEFAULT_METADATA_ENDPOINT);
    // The metadata service is plain http on a link-local address; https works too.
    let endpoint = endpoint(text, &t.key_path("endpoint"), true, "http://169.254.169.254", p)?;
    Some(PlatformSource::Metadata { endpoint })
}

fn pod_identity(t: &mut Table<'_>, base: &Path, env: Env<'_>, p: &mut Problems) -> Option<PlatformSource> {
    let uri_key = t.key_path("credentials_uri");
    let uri_text = t.string("credentials_uri", p).map(str::to_owned).or_else(|| env(ENV_POD_IDENTITY_URI));
    let file_key = t.key_path("token_file");
    let file =
        t.string("token_file", p).map(|f| base.join(f)).or_else(|| env(ENV_POD_IDENTITY_TOKEN_FILE).map(Into::into));
    let Some(uri_text) = uri_text else {
        p.push(uri_key, format!("is missing and {ENV_POD_IDENTITY_URI} is not set; enable pod identity for the workload, or set credentials_uri"));
        return None;
    };
    let uri: Option<Uri> = uri_text.parse().ok();
    let uri = match uri {
        Some(u) if u.authority().is_some() && matches!(u.scheme_str(), Some("http" | "https")) => u,
        _ => {
            p.push(uri_key, format!("{uri_text:?} is not an http(s) URL; use the pod identity endpoint's full URL"));
            return None;
        }
    };
    let Some(token_file) = file else {
        p.push(
            file_key,
            format!(
                "is missing and {ENV_POD_IDENTITY_TOKEN_FILE} is not set; set token_file to the projected token's path"
            ),
        );
        return None;
    };
    Some(PlatformSource::PodIdentity { uri, token_file })
}

fn oidc(t: &mut Table<'_>, base: &Path, allow_http: bool, p: &mut Problems) -> Option<PlatformSource> {
    let id_token_file = t.string("id_token_file", p).map(|f| base.join(f));
    if id_token_file.is_none() {
        p.push(
            t.key_path("id_token_file"),
            "is missing; set the path of the id token (a projected service account token)",
        );
    }
    let region = t.string("region", p);
    let regional = |service: &str| region.map(|r| format!("https://{service}.{r}.myhuaweicloud.com"));
    let duration_max = Duration::from_secs(12 * 3_600);
    let exchange = match (t.has("idp_id"), t.has("provider_urn") || t.has("agency_urn")) {
        (true, false) => {
            let idp_id = t.string("idp_id", p);
            let text = t.string("iam_endpoint", p).map(str::to_owned).or_else(|| regional("iam"));
            let endpoint =
                required_endpoint(t, "iam_endpoint", text, allow_http, "https://iam.cn-north-4.myhuaweicloud.com", p);
            let duration =
                t.duration("duration", Duration::from_secs(900), duration_max, p).unwrap_or(DEFAULT_IAM_KEYS_DURATION);
            OidcExchange::Iam { endpoint: endpoint?, idp_id: idp_id?.to_owned(), duration }
        }
        (false, true) => {
            let provider_urn = urn(t, "provider_urn", "iam::<account id>:identity-provider:<name>", p);
            let agency_urn = urn(t, "agency_urn", "iam::<account id>:agency:<name>", p);
            let text = t.string("sts_endpoint", p).map(str::to_owned).or_else(|| regional("sts"));
            let endpoint =
                required_endpoint(t, "sts_endpoint", text, allow_http, "https://sts.cn-north-4.myhuaweicloud.com", p);
            let session_name = t.string("session_name", p).unwrap_or(DEFAULT_SESSION_NAME).to_owned();
            let duration =
                t.duration("duration", Duration::from_secs(900), duration_max, p).unwrap_or(DEFAULT_STS_DURATION);
            OidcExchange::Sts {
                endpoint: endpoint?,
                provider_urn: provider_urn?,
                agency_urn: agency_urn?,
                session_name,
                duration,
            }
        }
        (true, true) => {
            p.push(t.key_path("idp_id"), "is given with provider_urn/agency_urn; choose one exchange: idp_id (through IAM) or provider_urn and agency_urn (through STS)");
            let _ = (t.string("idp_id", p), t.string("provider_urn", p), t.string("agency_urn", p));
            return None;
        }
        (false, false) => {
            p.push(
                t.key_path("idp_id"),
                "is missing; set idp_id (IAM identity provider) or provider_urn and agency_urn (STS assume-with-oidc)",
            );
            return None;
        }
    };
    Some(PlatformSource::Oidc { id_token_file: id_token_file?, exchange })
}

fn urn(t: &mut Table<'_>, key: &str, shape: &str, p: &mut Problems) -> Option<String> {
    match t.string(key, p) {
        Some(v) if v.starts_with("iam::") => Some(v.to_owned()),
        Some(v) => {
            p.push(t.key_path(key), format!("{v:?} is not an IAM URN; write it like \"{shape}\""));
            None
        }
        None => {
            p.push(t.key_path(key), format!("is missing; set it like \"{shape}\""));
            None
        }
    }
}

fn required_endpoint(
    t: &mut Table<'_>,
    key: &str,
    text: Option<String>,
    allow_http: bool,
    example: &str,
    p: &mut Problems,
) -> Option<Uri> {
    match text {
        Some(text) => endpoint(&text, &t.key_path(key), allow_http, example, p),
        None => {
            p.push(t.key_path(key), format!("is missing; set {key} (like \"{example}\") or region"));
            None
        }
    }
}

/// Scheme and host only; plain http only where `http_ok`.
fn endpoint(text: &str, key: &str, http_ok: bool, example: &str, p: &mut Problems) -> Option<Uri> {
    let uri: Option<Uri> = text.parse().ok();
    let scheme_ok = |u: &Uri| u.scheme() == Some(&Scheme::HTTPS) || (http_ok && u.scheme() == Some(&Scheme::HTTP));
    match uri {
        Some(u)
            if u.authority().is_some() && scheme_ok(&u) && u.path_and_query().is_none_or(|pq| pq.as_str() == "/") =>
        {
            Some(u)
        }
        _ => {
            let http = if http_ok { "" } else { " (http:// needs upstream.allow_http)" };
            p.push(key, format!("{text:?} must be a scheme and host only, like \"{example}\"{http}"));
            None
        }
    }
}
