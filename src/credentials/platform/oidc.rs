//! `kind = "oidc"`: an OIDC id token (a projected Kubernetes service account token) exchanged
//! for temporary keys (spec: workload-identity.md, sections 3 and 4). Neither exchange is signed:
//! the id token is the only credential there is.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;

use super::{exchange, join, Credential, OidcExchange};
use crate::credentials::error::FetchError;
use crate::secret::Secret;
use crate::upstream::Upstream;

const JSON: &str = "application/json;charset=UTF-8";

pub(super) async fn fetch(client: &Upstream, how: &OidcExchange, id_token: &Secret) -> Result<Credential, FetchError> {
    match how {
        OidcExchange::Iam { endpoint, idp_id, duration } => {
            let iam_token = id_token_to_iam_token(client, endpoint, idp_id, id_token).await?;
            security_token(client, endpoint, &iam_token, duration.as_secs()).await
        }
        OidcExchange::Sts { endpoint, provider_urn, agency_urn, session_name, duration } => {
            let body = serde_json::json!({
                "provider_urn": provider_urn,
                "agency_urn": agency_urn,
                "agency_session_name": session_name,
                "id_token": id_token.expose(),
                "duration_seconds": duration.as_secs(),
            });
            let answer = exchange(client, post(endpoint, "/v5/agencies/assume-with-oidc", &body)?, "STS").await?;
            answer.success("STS", None)?;
            Credential::parse(&answer.body, "STS")
        }
    }
}

/// `POST /v3.0/OS-AUTH/id-token/tokens`: the unscoped IAM token in `X-Subject-Token`.
async fn id_token_to_iam_token(
    client: &Upstream,
    endpoint: &Uri,
    idp_id: &str,
    id_token: &Secret,
) -> Result<Secret, FetchError> {
    let body = serde_json::json!({ "auth": { "id_token": { "id": id_token.expose() } } });
    let mut req = post(endpoint, "/v3.0/OS-AUTH/id-token/tokens", &body)?;
    let idp = http::HeaderValue::from_str(idp_id)
        .map_err(|_| FetchError::Request { what: "idp_id holds characters no header may carry".to_owned() })?;
    req.headers_mut().insert("X-Idp-Id", idp);
    let answer = exchange(client, req, "IAM").await?;
    answer.success("IAM", None)?;
    answer
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(Secret::new)
        .ok_or_else(|| FetchError::Malformed {
            peer: "IAM",
            what: "to the id token exchange has no X-Subject-Token".to_owned(),
        })
}

/// `POST /v3.0/OS-CREDENTIAL/securitytokens` with the IAM token: the temporary keys.
async fn security_token(
    client: &Upstream,
    endpoint: &Uri,
    token: &Secret,
    secs: u64,
) -> Result<Credential, FetchError> {
    let body = serde_json::json!({ "auth": { "identity": {
        "methods": ["token"], "token": { "id": token.expose(), "duration_seconds": secs } } } });
    let answer = exchange(client, post(endpoint, "/v3.0/OS-CREDENTIAL/securitytokens", &body)?, "IAM").await?;
    answer.success("IAM", None)?;
    Credential::parse(&answer.body, "IAM")
}

fn post(endpoint: &Uri, path: &str, body: &serde_json::Value) -> Result<Request<Full<Bytes>>, FetchError> {
    Request::post(join(endpoint, path)?)
        .header(http::header::CONTENT_TYPE, JSON)
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| FetchError::Request { what: format!("{path}: {e}") })
}
