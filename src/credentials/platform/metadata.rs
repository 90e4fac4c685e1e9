//! `kind = "metadata"`: temporary keys of the node's cloud service agency from the instance
//! metadata service (spec: workload-identity.md, section 1).
//!
//! A session token is asked for first (`PUT /meta-data/latest/api/token`); 404, 405 and 503 mean
//! the service has none and the keys are asked for without one. The session token is kept and
//! reused; a 401 that is not "no agency" means it expired: a new one is fetched and the keys
//! asked for once more.

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Full;

use super::{exchange, join, sensitive, Credential, Platform};
use crate::credentials::error::FetchError;
use crate::secret::Secret;

const FROM: &str = "the metadata service";
/// The SDK's session token lifetime.
const SESSION_TTL_SECS: &str = "21600";
/// The metadata service's answer when the node has no agency to hand out keys for.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";

pub(super) async fn fetch(platform: &Platform, endpoint: &Uri) -> Result<Credential, FetchError> {
    let kept = platform.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let session = match kept {
        Some(token) => Some(token),
        None => session_token(platform, endpoint).await?,
    };
    match securitykey(platform, endpoint, session.as_ref()).await? {
        Ok(credential) => Ok(credential),
        Err(()) => {
            // The session token expired: one new token, one more try.
            let session = session_token(platform, endpoint).await?;
            securitykey(platform, endpoint, session.as_ref()).await?.map_err(|()| FetchError::Refused {
                peer: FROM,
                status: 401,
                code: "-".to_owned(),
                during: Some("a new session token"),
            })
        }
    }
}

/// A new session token, or `None` when the service hands out none. Kept for the next fetch.
async fn session_token(platform: &Platform, endpoint: &Uri) -> Result<Option<Secret>, FetchError> {
    let req = Request::put(join(endpoint, "/meta-data/latest/api/token")?)
        .header("X-Metadata-Token-Ttl-Seconds", SESSION_TTL_SECS)
        .body(Full::new(Bytes::new()))
        .map_err(|e| FetchError::Request { what: format!("metadata request: {e}") })?;
    let answer = exchange(&platform.client, req, FROM).await?;
    let token = match answer.status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::SERVICE_UNAVAILABLE => None,
        s if s.is_success() => {
            let text = std::str::from_utf8(&answer.body).map(str::trim).unwrap_or_default();
            if text.is_empty() {
                return Err(FetchError::Malformed { peer: FROM, what: "is an empty session token".to_owned() });
            }
            Some(Secret::new(text))
        }
        s => {
            let during = Some("the session token request");
            return Err(FetchError::Refused { peer: FROM, status: s.as_u16(), code: "-".to_owned(), during });
        }
    };
    *platform.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = token.clone();
    Ok(token)
}

/// `GET /openstack/latest/securitykey`; `Ok(Err(()))` when the session token was refused.
async fn securitykey(
    platform: &Platform,
    endpoint: &Uri,
    session: Option<&Secret>,
) -> Result<Result<Credential, ()>, FetchError> {
    let mut req = Request::get(join(endpoint, "/openstack/latest/securitykey")?);
    if let Some(token) = session {
        req = req.header("X-Metadata-Token", sensitive(token.expose())?);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| FetchError::Request { what: format!("metadata request: {e}") })?;
    let answer = exchange(&platform.client, req, FROM).await?;
    if answer.status == StatusCode::UNAUTHORIZED {
        if String::from_utf8_lossy(&answer.body).contains(NO_AGENCY) {
            let what = "this node has no cloud service agency: give the node pool an agency";
            return Err(FetchError::Setup { peer: FROM, what });
        }
        if session.is_some() {
            *platform.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            return Ok(Err(()));
        }
    }
    answer.success(FROM, None)?;
    Credential::parse(&answer.body, FROM).map(Ok)
}
