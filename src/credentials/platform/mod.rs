//! Temporary AK/SK handed to the workload by the platform, so no long-lived key is stored
//! anywhere: the node's metadata service, CCE pod identity, or an OIDC id token (a projected
//! Kubernetes service account token) exchanged through IAM or STS. Facts from the official SDK
//! core (`huaweicloudsdkcore` `auth/provider.py`), summarised in
//! `shared/spec/workload-identity.md`.
//!
//! Each source yields the same thing, temporary keys with a security token and an expiry; the
//! [`TokenCache`](super::token::TokenCache) decides when to fetch, so single flight, backoff and
//! serving through outages are the same as for IAM tokens. Token files are re-read at each fetch:
//! Kubernetes rotates projected tokens in place.

mod metadata;
mod oidc;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use super::error::FetchError;
use super::keys::{read_secret, LoadedKey};
use super::token::{Issued, Source, Timing};
use crate::clock::Clock;
use crate::secret::Secret;
use crate::signer::{parse_rfc3339, Algorithm, SigningKey};
use crate::upstream::Upstream;

/// A credential answer is well under a kilobyte.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// The default metadata endpoint: the link-local address every ECS instance reaches.
pub(crate) const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";
pub(crate) const DEFAULT_SESSION_NAME: &str = "oidc-sts-session";
/// Pod identity: where the SDK finds the endpoint and the token file.
pub(crate) const ENV_POD_IDENTITY_URI: &str = "HC_CONTAINER_CREDENTIALS_FULL_URI";
pub(crate) const ENV_POD_IDENTITY_TOKEN_FILE: &str = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// A platform profile as configured: where its keys come from, how they sign, and when to
/// refresh them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub source: PlatformSource,
    pub algorithm: Algorithm,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSource {
    /// `kind = "metadata"`: the node's metadata service (an ECS or CCE node with an agency).
    Metadata { endpoint: Uri },
    /// `kind = "pod-identity"`: CCE pod identity.
    PodIdentity { uri: Uri, token_file: PathBuf },
    /// `kind = "oidc"`: an id token exchanged for keys.
    Oidc { id_token_file: PathBuf, exchange: OidcExchange },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcExchange {
    /// Id token -> unscoped IAM token (identity provider `idp_id`) -> temporary keys.
    Iam { endpoint: Uri, idp_id: String, duration: Duration },
    /// STS `assume-with-oidc`: the agency's keys straight away.
    Sts { endpoint: Uri, provider_urn: String, agency_urn: String, session_name: String, duration: Duration },
}

impl PlatformSource {
    /// Plain http is the norm for the node-local endpoints (metadata, pod identity), so their
    /// requests go through a client that allows it; IAM and STS never do without opt-in.
    pub fn node_local(&self) -> bool {
        matches!(self, PlatformSource::Metadata { .. } | PlatformSource::PodIdentity { .. })
    }
}

/// One profile's source of temporary keys.
pub(crate) struct Platform {
    spec: PlatformSpec,
    client: Upstream,
    clock: Arc<dyn Clock>,
    /// The metadata service's session token, reused until it is refused.
    session: Mutex<Option<Secret>>,
}

impl Platform {
    pub(crate) fn new(spec: PlatformSpec, client: Upstream, clock: Arc<dyn Clock>) -> Self {
        Platform { spec, client, clock, session: Mutex::new(None) }
    }

    fn issued(&self, credential: Credential) -> Issued<Arc<LoadedKey>> {
        let key = SigningKey {
            algorithm: self.spec.algorithm.clone(),
            access_key: credential.access,
            secret_key: credential.secret,
            security_token: Some(credential.security_token),
        };
        let expires_at = credential.expires_at;
        Issued {
            value: Arc::new(LoadedKey { key, expires_at: Some(expires_at) }),
            expires_at,
            fetched_at: self.clock.now(),
        }
    }

    /// `POST <uri>` with the token file's content in `Authorization` and body `{}`.
    async fn pod_identity(&self, uri: &Uri, token_file: &std::path::Path) -> Result<Credential, FetchError> {
        const PEER: &str = "the pod identity endpoint";
        let token = read_secret(token_file)?;
        let req = Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, sensitive(token.expose())?)
            .body(Full::new(Bytes::from_static(b"{}")))
            .map_err(|e| FetchError::Request { what: format!("pod identity request: {e}") })?;
        let answer = exchange(&self.client, req, PEER).await?;
        answer.success(PEER, None)?;
        Credential::parse(&answer.body, PEER)
    }
}

impl Source for Platform {
    type Item = Arc<LoadedKey>;
    const WHAT: &'static str = "temporary keys";
    const EXPIRING: &'static str = "temporary keys that expire";

    fn peer(&self) -> &'static str {
        match &self.spec.source {
            PlatformSource::Metadata { .. } => "the metadata service",
            PlatformSource::PodIdentity { .. } => "the pod identity endpoint",
            PlatformSource::Oidc { exchange: OidcExchange::Iam { .. }, .. } => "IAM",
            PlatformSource::Oidc { exchange: OidcExchange::Sts { .. }, .. } => "STS",
        }
    }

    async fn fetch(&self) -> Result<Issued<Arc<LoadedKey>>, FetchError> {
        let credential = match &self.spec.source {
            PlatformSource::Metadata { endpoint } => metadata::fetch(self, endpoint).await?,
            PlatformSource::PodIdentity { uri, token_file } => self.pod_identity(uri, token_file).await?,
            PlatformSource::Oidc { id_token_file, exchange } => {
                // Re-read at every fetch: the kubelet rotates projected tokens in place.
                let id_token = read_secret(id_token_file)?;
                oidc::fetch(&self.client, exchange, &id_token).await?
            }
        };
        Ok(self.issued(credential))
    }
}

/// Temporary keys as every source returns them.
struct Credential {
    access: Secret,
    secret: Secret,
    security_token: Secret,
    expires_at: std::time::SystemTime,
}

impl Credential {
    /// The credential JSON, bare or inside `credential` / `credentials`; the first field name
    /// found of each alias list wins, as in the SDK. Errors name fields, never values.
    fn parse(body: &[u8], from: &'static str) -> Result<Credential, FetchError> {
        let malformed = |what: String| FetchError::Malformed { peer: from, what };
        let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| malformed("is not JSON".to_owned()))?;
        let c = json.get("credential").or_else(|| json.get("credentials")).unwrap_or(&json);
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| c.get(*n).and_then(|v| v.as_str()).filter(|v| !v.is_empty()))
                .ok_or_else(|| malformed(format!("has no {:?}", names[0])))
        };
        let expires = field(&["expires_at", "expiration"])?;
        let expires_at = parse_rfc3339(expires)
            .ok_or_else(|| malformed(format!("has expires_at {expires:?}, not a UTC RFC 3339 time")))?;
        Ok(Credential {
            access: Secret::new(field(&["access", "accessKeyId", "access_key_id"])?),
            secret: Secret::new(field(&["secret", "secretAccessKey", "secret_access_key"])?),
            security_token: Secret::new(field(&["securitytoken", "securityToken", "security_token"])?),
            expires_at,
        })
    }
}

/// An answer read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// `Err` unless 2xx. The body is not quoted: it may echo what was sent.
    fn success(&self, from: &'static str, during: Option<&'static str>) -> Result<(), FetchError> {
        if self.status.is_success() {
            return Ok(());
        }
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let code = json["error"]["code"].as_str().or(json["error_code"].as_str()).unwrap_or("-").to_owned();
        Err(FetchError::Refused { peer: from, status: self.status.as_u16(), code, during })
    }
}

/// Sends `req` and reads the answer whole (the cache's fetch timeout bounds it all).
async fn exchange(client: &Upstream, req: Request<Full<Bytes>>, to: &'static str) -> Result<Answer, FetchError> {
    let rsp = client.request(req).await.map_err(|source| FetchError::Unreachable { peer: to, source })?;
    let (parts, body) = rsp.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BODY)
        .collect()
        .await
        .map_err(|source| FetchError::Unreadable { peer: to, source })?
        .to_bytes();
    Ok(Answer { status: parts.status, headers: parts.headers, body })
}

/// A header value holding a secret, kept out of hyper's debug output.
fn sensitive(value: &str) -> Result<http::HeaderValue, FetchError> {
    let mut v = http::HeaderValue::from_str(value)
        .map_err(|_| FetchError::Request { what: "a token holds characters no header may carry".to_owned() })?;
    v.set_sensitive(true);
    Ok(v)
}

/// `{endpoint}{path}` for an endpoint given as scheme and host.
fn join(endpoint: &Uri, path: &str) -> Result<Uri, FetchError> {
    let authority = endpoint.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{}://{authority}{path}", endpoint.scheme_str().unwrap_or("https"))
        .parse()
        .map_err(|e| FetchError::Request { what: format!("endpoint {endpoint}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_json_takes_every_alias_and_wrapper() {
        let shapes = [
            r#"{"credential":{"access":"A","secret":"S","securitytoken":"T","expires_at":"2030-01-02T03:04:05.000000Z"}}"#,
            r#"{"credentials":{"accessKeyId":"A","secretAccessKey":"S","securityToken":"T","expiration":"2030-01-02T03:04:05Z"}}"#,
            r#"{"access_key_id":"A","secret_access_key":"S","security_token":"T","expires_at":"2030-01-02T03:04:05Z"}"#,
        ];
        for shape in shapes {
            let c = Credential::parse(shape.as_bytes(), "x").unwrap_or_else(|e| panic!("{shape}: {e}"));
            assert_eq!((c.access.expose(), c.secret.expose(), c.security_token.expose()), ("A", "S", "T"));
        }
    }

    #[test]
    fn malformed_credentials_say_what_is_missing_and_show_no_value() {
        let no_token = r#"{"credential":{"access":"A","secret":"SECRET-VALUE","expires_at":"2030-01-02T03:04:05Z"}}"#;
        let e = Credential::parse(no_token.as_bytes(), "x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("securitytoken") && !e.contains("SECRET-VALUE"), "{e}");
        let bad_time = r#"{"access":"A","secret":"S","securitytoken":"T","expires_at":"tomorrow"}"#;
        assert!(Credential::parse(bad_time.as_bytes(), "x").is_err());
        assert!(Credential::parse(b"<html>", "x").is_err());
    }
}
