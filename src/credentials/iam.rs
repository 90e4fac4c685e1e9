//! One IAM token request, `POST /v3/auth/tokens?nocatalog=true`, for the token cache: the body
//! for a password or an agency, the assume-role signature, and IAM's answer read into a
//! [`Token`]. The whole exchange, answer body included, runs within the profile's own
//! `iam_timeout` (the cache's fetch timeout): SparkRTC's `response_timeout` says nothing about
//! how long IAM may take.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use super::error::FetchError;
use super::keys::{read_secret, KeySource};
use super::spec::{TokenMethod, TokenSpec};
use super::token::{Source, Token};
use crate::clock::Clock;
use crate::secret::Secret;
use crate::signer::{self, parse_rfc3339, CanonicalQuery, HeaderList, SdkDate, SignInput};
use crate::upstream::Upstream;

const PEER: &str = "IAM";

/// IAM's answer without the catalog is a few kilobytes.
const MAX_IAM_BODY: usize = 1024 * 1024;

/// What a token request needs: whose token, how to ask for it, and the way out.
pub(crate) struct Iam {
    pub(super) project_id: String,
    pub(super) spec: TokenSpec,
    /// The AK/SK that signs an assume-role call.
    pub(super) via: Option<Arc<KeySource>>,
    pub(super) client: Upstream,
    pub(super) clock: Arc<dyn Clock>,
}

impl Source for Iam {
    type Item = Secret;
    const WHAT: &'static str = "IAM token";
    const EXPIRING: &'static str = "a token that expires";

    fn peer(&self) -> &'static str {
        PEER
    }

    async fn fetch(&self) -> Result<Token, FetchError> {
        self.request().await
    }
}

impl Iam {
    /// One `POST /v3/auth/tokens?nocatalog=true`. Errors say what went wrong, never a secret.
    async fn request(&self) -> Result<Token, FetchError> {
        let body = Bytes::from(self.request_body()?.to_string());
        let endpoint = &self.spec.iam_endpoint;
        let authority = endpoint.authority().map(|a| a.as_str()).unwrap_or_default();
        let uri: Uri =
            format!("{}://{authority}/v3/auth/tokens?nocatalog=true", endpoint.scheme_str().unwrap_or("https"))
                .parse()
                .map_err(|e| FetchError::Request { what: format!("IAM endpoint: {e}") })?;
        let mut headers = HeaderList::new();
        headers.set("Content-Type", "application/json;charset=UTF-8");
        if let Some(via) = &self.via {
            // assume_role is authenticated by the caller's own AK/SK signature.
            let key = via.current();
            let query = CanonicalQuery::parse("nocatalog=true");
            let input =
                SignInput { method: "POST", host: authority, path: "/v3/auth/tokens", query: &query, body: &body };
            signer::sign(&input, &mut headers, &key.key, SdkDate::from_system_time(self.clock.now()))
                .map_err(|e| FetchError::Request { what: e.to_string() })?;
        }
        let mut req =
            Request::post(uri).body(Full::new(body)).map_err(|e| FetchError::Request { what: e.to_string() })?;
        *req.headers_mut() = headers.to_header_map().map_err(|e| FetchError::Request { what: e.to_string() })?;
        let rsp = self.client.request(req).await.map_err(|source| FetchError::Unreachable { peer: PEER, source })?;
        let status = rsp.status();
        let subject = rsp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(Secret::new);
        let body = Limited::new(rsp.into_body(), MAX_IAM_BODY)
            .collect()
            .await
            .map_err(|source| FetchError::Unreadable { peer: PEER, source })?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status != StatusCode::CREATED {
            // IAM's error bodies carry a code and a message; neither repeats the credentials.
            let code = json["error"]["code"].as_str().or(json["error_code"].as_str()).unwrap_or("-");
            return Err(FetchError::Refused {
                peer: PEER,
                status: status.as_u16(),
                code: code.to_owned(),
                during: None,
            });
        }
        let malformed = |what: String| FetchError::Malformed { peer: PEER, what };
        let value = subject.ok_or_else(|| malformed("has no X-Subject-Token".to_owned()))?;
        let expires =
            json["token"]["expires_at"].as_str().ok_or_else(|| malformed("has no token.expires_at".to_owned()))?;
        let expires_at = parse_rfc3339(expires)
            .ok_or_else(|| malformed(format!("has token.expires_at {expires:?}, not a UTC time")))?;
        Ok(Token { value, expires_at, fetched_at: self.clock.now() })
    }

    fn request_body(&self) -> Result<serde_json::Value, FetchError> {
        let scope = serde_json::json!({ "project": { "id": self.project_id } });
        Ok(match &self.spec.method {
            TokenMethod::Password { domain, user, password, password_file } => {
                // A password file is read at each fetch, so a rotated password needs no reload.
                let fresh = password_file.as_deref().map(read_secret).transpose()?;
                let password = fresh.as_ref().unwrap_or(password);
                serde_json::json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": {
                        "domain": { "name": domain }, "name": user, "password": password.expose() } } },
                    "scope": scope } })
            }
            TokenMethod::Agency { domain, agency, .. } => serde_json::json!({ "auth": {
                "identity": { "methods": ["assume_role"], "assume_role": { "domain_name": domain, "agency_name": agency } },
                "scope": scope } }),
        })
    }
}
