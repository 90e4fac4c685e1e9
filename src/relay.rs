//! Header hygiene and passthrough: what the gateway takes from the caller, and what it gives back.
//!
//! Outbound, nothing the caller sent reaches the upstream except the body and `Content-Type`:
//! caller credentials (`Authorization`, `X-Auth-Token`, `X-Sdk-Date`, `X-Security-Token`,
//! `X-Sdk-Content-Sha256`, `X-Project-Id`), `Host` and the hop-by-hop headers of RFC 9110 §7.6.1
//! are dropped by construction, since the upstream request is built from scratch. So a service
//! using the official SDK with placeholder keys works unchanged behind the gateway.
//!
//! Inbound, the caller gets the upstream status, `X-request-Id` (matched case-insensitively,
//! value unchanged), `Content-Type`, `Retry-After` and the body, streamed.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::Body;
use crate::catalog::Operation;
use crate::cause::BoxError;
use crate::error::GatewayError;
use crate::signer::{py_strip, HeaderList};

/// Marks every response with the gateway's id for the call, whoever made it.
pub(crate) const HEADER_GATEWAY_REQUEST_ID: &str = "x-gateway-request-id";

/// Upstream headers relayed to the caller besides the status and body.
const RELAYED: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::RETRY_AFTER];

/// Reads the caller's body, refusing more than `limit` bytes before reading them when
/// `Content-Length` already says so.
pub(crate) async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: u64,
    within: Duration,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(within, limited.collect()).await {
        Err(_) => Err(GatewayError::BodyTimeout { after: within }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge { limit }),
        Ok(Err(e)) => Err(GatewayError::BodyRead(e)),
    }
}

/// Refuses a request whose body framing two HTTP/1.1 parsers could read differently. RFC 9112
/// §6.1: chunked must not be applied more than once, and the only transfer coding SparkRTC's
/// calls need is a single `chunked`; anything else (`chunked, chunked`, `gzip, chunked`, two
/// `Transfer-Encoding` lines, parameters) is the raw material of request smuggling when another
/// proxy sits in front. hyper itself refuses a final coding other than chunked, and when
/// `Content-Length` comes with `Transfer-Encoding` it drops the length and closes the
/// connection after the answer (RFC 9112 §6.3), so the handler never sees both.
pub(crate) fn framing(headers: &HeaderMap) -> Result<(), GatewayError> {
    let mut codings = 0usize;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| GatewayError::AmbiguousFraming("Transfer-Encoding is not text"))?;
        // Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
        for coding in text.split(',').map(|c| c.trim_matches([' ', '\t'])).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(GatewayError::AmbiguousFraming("the only transfer coding accepted is chunked"));
            }
            codings += 1;
        }
    }
    if codings > 1 {
        return Err(GatewayError::AmbiguousFraming(
            "chunked must not be applied more than once (RFC 9112 section 6.1)",
        ));
    }
    if codings == 1 && headers.contains_key(header::CONTENT_LENGTH) {
        return Err(GatewayError::AmbiguousFraming("send Transfer-Encoding or Content-Length, not both"));
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host` (HTTP/2 names its authority
/// in a pseudo-header; HTTP/1.0 may omit it). The gateway never forwards or signs the caller's
/// `Host`, but a proxy in front may route on it, so a request two readers could route apart is
/// refused rather than guessed at.
pub(crate) fn one_host(version: http::Version, headers: &HeaderMap) -> Result<(), GatewayError> {
    let hosts = headers.get_all(header::HOST).iter().count();
    match (version, hosts) {
        (http::Version::HTTP_11, 0) => Err(GatewayError::BadHeader("an HTTP/1.1 request needs a Host header")),
        (_, 2..) => Err(GatewayError::BadHeader("a request carries one Host header, not several")),
        _ => Ok(()),
    }
}

/// The one header taken from the caller: `Content-Type` (the caller's, else the operation's).
/// The authorize phase adds `X-Project-Id` and the signer `Host`, `X-Sdk-Date`,
/// `X-Security-Token` and `Authorization`; or `X-Auth-Token` with a token.
pub fn base_headers(caller: &HeaderMap, op: &Operation) -> Result<HeaderList, GatewayError> {
    let content_type = match caller.get(header::CONTENT_TYPE) {
        None => op.content_type,
        Some(v) => v
            .to_str()
            .ok()
            .map(py_strip)
            .filter(|ct| !ct.is_empty())
            .ok_or(GatewayError::BadHeader("Content-Type must be visible ASCII text such as application/json"))?,
    };
    if op.has_body && !content_type.starts_with("application/json") {
        return Err(GatewayError::BadHeader("SparkRTC takes JSON bodies; send Content-Type: application/json"));
    }
    let mut headers = HeaderList::new();
    headers.set("Content-Type", content_type);
    Ok(headers)
}

/// The caller's response: upstream status, `X-request-Id`, `Content-Type`, `Retry-After`, body.
pub(crate) fn to_caller(rsp: Response<Incoming>, request_id: &str, idle: Duration) -> Response<Body> {
    let (parts, incoming) = rsp.into_parts();
    let mut out = Response::new(Body::upstream(incoming, idle));
    *out.status_mut() = parts.status;
    let headers = out.headers_mut();
    // HeaderMap names are case-insensitive: this finds X-request-Id, X-Request-Id, x-request-id.
    if let Some(id) = parts.headers.get(crate::request_id::HEADER) {
        headers.insert(crate::request_id::HEADER, id.clone());
    }
    for name in RELAYED {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    mark(headers, request_id);
    out
}

/// Adds the gateway's request id to any response.
pub(crate) fn mark(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HEADER_GATEWAY_REQUEST_ID, v);
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    fn framing(te: &[&str], content_length: bool) -> bool {
        let mut headers = HeaderMap::new();
        for v in te {
            headers.append("transfer-encoding", HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")));
        }
        if content_length {
            headers.insert("content-length", HeaderValue::from_static("5"));
        }
        super::framing(&headers).is_ok()
    }

    #[test]
    fn only_one_chunked_coding_frames_a_body() {
        assert!(framing(&[], false));
        assert!(framing(&[], true));
        assert!(framing(&["chunked"], false));
        assert!(framing(&["Chunked"], false));
        assert!(framing(&["chunked, "], false));
        for bad in
            [&["chunked, chunked"][..], &["chunked", "chunked"], &["gzip, chunked"], &["chunked;x=1"], &["identity"]]
        {
            assert!(!framing(bad, false), "{bad:?} was accepted");
        }
        assert!(!framing(&["chunked"], true), "Transfer-Encoding with Content-Length was accepted");
    }
}
