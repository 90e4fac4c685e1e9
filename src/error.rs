//! Every refusal the gateway makes, and the ONE place that turns them into responses.
//!
//! Gateway-made responses carry SparkRTC's error shape `{"error_code", "error_msg"}` with codes of
//! the gateway's own `RTCGW.` prefix, an `x-gateway-error: <code>` marker so callers can tell them
//! from upstream answers, and the request id in `X-request-Id`. 5xx messages stay generic; the
//! details go to the log.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::catalog::RouteError;
use crate::cause::BoxError;
use crate::policy::{IdentifyError, TokenRefusal};
use crate::ratelimit::{BackendError, Limited, Refusal};
use crate::upstream;

pub(crate) const HEADER_GATEWAY_ERROR: &str = "x-gateway-error";

/// The shared limiter reconnects within about a second; callers retry after this.
const LIMITER_RETRY_AFTER_SECS: u64 = 1;

/// One request-path error, grouped by whose fault it is.
#[derive(Debug)]
pub enum GatewayError {
    // The caller's: 4xx, no upstream call made.
    /// The target or path cannot name a SparkRTC resource safely.
    BadRoute(RouteError),
    /// No SparkRTC operation has this method and path.
    UnknownOperation(RouteError),
    /// No app of this id is configured (or no profile for account-level operations).
    AppNotServed {
        app: Option<String>,
    },
    /// A v1 path names a project other than the one of the app's credentials.
    ProjectMismatch,
    /// A caller key was sent that belongs to no configured caller.
    UnknownCallerKey,
    /// A bearer token was sent and refused (bad signature, issuer, audience, time, algorithm).
    InvalidCallerToken(TokenRefusal),
    /// A valid bearer token whose claim names no configured caller.
    UnknownTokenSubject,
    /// No allow rule lets this caller run this operation on this app; names the rule set.
    NotAllowed(String),
    /// Over a rate limit.
    RateLimited(Limited),
    /// A header the gateway must sign is unusable (e.g. a non-text `Content-Type`).
    BadHeader(&'static str),
    /// The body fails the operation's validation.
    InvalidBody(String),
    BodyTooLarge {
        limit: u64,
    },
    /// The request's body framing is ambiguous (RFC 9112 §6.1): refused, connection closed.
    AmbiguousFraming(&'static str),
    /// The caller's body could not be read to the end (disconnect, malformed chunking).
    BodyRead(BoxError),
    /// The caller's body did not arrive in time.
    BodyTimeout {
        after: Duration,
    },

    // Ours or the identity provider's: no usable credentials right now.
    /// No valid credential could be had (e.g. IAM is down and no token is cached).
    CredentialsUnavailable {
        retry_after_secs: u64,
    },

    // The shared rate-limit backend's: it could not decide and the limit says deny.
    LimiterUnavailable(BackendError),

    // The upstream's: 5xx.
    UpstreamUnreachable(upstream::Error),
    UpstreamTimeout {
        after: Duration,
    },

    // Ours.
    Internal(BoxError),
}

impl GatewayError {
    /// Status, stable code and `error_msg` name. Exhaustive on purpose: a new variant must be
    /// given its place in the table here and in the README.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use GatewayError::*;
        match self {
            BadRoute(RouteError::AmbiguousApp(_)) => (StatusCode::BAD_REQUEST, "RTCGW.4003", "AmbiguousApp"),
            BadRoute(RouteError::NotOriginForm) => (StatusCode::BAD_REQUEST, "RTCGW.4002", "InvalidRequestTarget"),
            BadRoute(
                RouteError::DotSegment
                | RouteError::EncodedSeparator
                | RouteError::BadEncoding
                | RouteError::NoOperation { .. },
            ) => (StatusCode::BAD_REQUEST, "RTCGW.4001", "InvalidPath"),
            BadHeader(_) => (StatusCode::BAD_REQUEST, "RTCGW.4004", "InvalidHeader"),
            InvalidBody(_) => (StatusCode::BAD_REQUEST, "RTCGW.4005", "InvalidParameterValue"),
            BodyRead(_) => (StatusCode::BAD_REQUEST, "RTCGW.4006", "IncompleteBody"),
            AmbiguousFraming(_) => (StatusCode::BAD_REQUEST, "RTCGW.4007", "InvalidFraming"),
            BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "RTCGW.4080", "BodyTimeout"),
            AppNotServed { .. } => (StatusCode::FORBIDDEN, "RTCGW.4030", "AppNotServed"),
            ProjectMismatch => (StatusCode::FORBIDDEN, "RTCGW.4031", "ProjectMismatch"),
            UnknownCallerKey => (StatusCode::FORBIDDEN, "RTCGW.4032", "CallerNotRecognised"),
            NotAllowed(_) => (StatusCode::FORBIDDEN, "RTCGW.4033", "NotAllowed"),
            InvalidCallerToken(_) => (StatusCode::FORBIDDEN, "RTCGW.4034", "InvalidCallerToken"),
            UnknownTokenSubject => (StatusCode::FORBIDDEN, "RTCGW.4032", "CallerNotRecognised"),
            UnknownOperation(RouteError::NoOperation { allowed }) if !allowed.is_empty() => {
                (StatusCode::METHOD_NOT_ALLOWED, "RTCGW.4050", "MethodNotAllowed")
            }
            UnknownOperation(_) => (StatusCode::NOT_FOUND, "RTCGW.4040", "UnknownOperation"),
            BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RTCGW.4130", "BodyTooLarge"),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "RTCGW.4290", "RateLimited"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "RTCGW.5000", "InternalError"),
            CredentialsUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "RTCGW.5030", "CredentialsUnavailable"),
            LimiterUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "RTCGW.5031", "RateLimiterUnavailable"),
            UpstreamUnreachable(_) => (StatusCode::BAD_GATEWAY, "RTCGW.5020", "UpstreamUnreachable"),
            UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "RTCGW.5040", "UpstreamTimeout"),
        }
    }

    /// The sentence a caller sees. Never holds configured secrets; 5xx stay generic.
    pub fn caller_message(&self) -> String {
        use GatewayError::*;
        match self {
            BadRoute(e) | UnknownOperation(e) => e.to_string(),
            AppNotServed { app: Some(app) } => format!("app {app:?} is not served by this gateway"),
            AppNotServed { app: None } => "account-level operations are not served by this gateway".to_owned(),
            ProjectMismatch => "the project id in the path is not the project of this app's credentials".to_owned(),
            UnknownCallerKey => "the caller key matches no configured caller".to_owned(),
            InvalidCallerToken(refusal) => refusal.reason().to_owned(),
            UnknownTokenSubject => "the bearer token is valid but names no configured caller".to_owned(),
            NotAllowed(why) => why.clone(),
            RateLimited(l) => format!(
                "over the {} limit of {} calls per {} s; retry after {} s",
                l.policy,
                l.rate.burst,
                l.rate.window_secs(),
                l.retry_after_secs
            ),
            BadHeader(why) | AmbiguousFraming(why) => (*why).to_owned(),
            InvalidBody(why) => why.clone(),
            BodyTooLarge { limit } => format!("the request body is larger than {limit} bytes"),
            BodyRead(_) => "the request body ended before it was complete".to_owned(),
            BodyTimeout { after } => format!("the request body did not arrive within {} ms", after.as_millis()),
            UpstreamUnreachable(_) => "SparkRTC could not be reached".to_owned(),
            UpstreamTimeout { after } => format!("SparkRTC did not answer within {} ms", after.as_millis()),
            Internal(_) => "the gateway failed to handle the request".to_owned(),
            CredentialsUnavailable { retry_after_secs } => {
                format!("the gateway has no valid SparkRTC credentials right now; retry after {retry_after_secs} s")
            }
            LimiterUnavailable(_) => {
                format!("the shared rate limiter cannot decide right now; retry after {LIMITER_RETRY_AFTER_SECS} s")
            }
        }
    }

    /// The response for this error; `request_id` goes in `X-request-Id`.
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let (status, code, name) = self.parts();
        let detail = self.caller_message();
        let body = serde_json::json!({ "error_code": code, "error_msg": format!("{name}: {detail}") });
        let mut rsp = Response::new(Body::full(Bytes::from(body.to_string())));
        *rsp.status_mut() = status;
        let headers = rsp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HEADER_GATEWAY_ERROR, HeaderValue::from_static(code));
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(crate::request_id::HEADER, id);
        }
        match self {
            GatewayError::RateLimited(limited) => rate_limit_headers(headers, limited),
            GatewayError::CredentialsUnavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // RFC 9110 §15.5.6: a 405 lists the methods the resource does accept.
            GatewayError::UnknownOperation(RouteError::NoOperation { allowed }) if !allowed.is_empty() => {
                if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
                    headers.insert(header::ALLOW, allow);
                }
            }
            GatewayError::LimiterUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(LIMITER_RETRY_AFTER_SECS));
            }
            _ => {}
        }
        rsp
    }
}

/// `Retry-After` (RFC 9110 §10.2.3) and the `RateLimit-Policy` / `RateLimit` fields of
/// draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w` seconds, `r` remaining, `t`
/// seconds until calls pass again.
fn rate_limit_headers(headers: &mut http::HeaderMap, l: &Limited) {
    let (name, q, w, t) = (l.policy, l.rate.burst, l.rate.window_secs(), l.retry_after_secs);
    let fields = [
        (header::RETRY_AFTER, t.to_string()),
        (header::HeaderName::from_static("ratelimit-policy"), format!("\"{name}\";q={q};w={w}")),
        (header::HeaderName::from_static("ratelimit"), format!("\"{name}\";r=0;t={t}")),
    ];
    for (field, value) in fields {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(field, value);
        }
    }
}

impl From<Refusal> for GatewayError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Over(limited) => GatewayError::RateLimited(limited),
            Refusal::BackendDown(e) => GatewayError::LimiterUnavailable(e),
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, code, name) = self.parts();
        write!(f, "{code} {name}: {}", self.caller_message())
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use GatewayError::*;
        match self {
            BodyRead(e) | Internal(e) => Some(e.as_ref()),
            UpstreamUnreachable(e) => Some(e),
            BadRoute(e) | UnknownOperation(e) => Some(e),
            LimiterUnavailable(e) => Some(e),
            AppNotServed { .. }
            | ProjectMismatch
            | UnknownCallerKey
            | InvalidCallerToken(_)
            | UnknownTokenSubject
            | NotAllowed(_)
            | RateLimited(_)
            | BadHeader(_)
            | AmbiguousFraming(_)
            | InvalidBody(_)
            | BodyTooLarge { .. }
            | BodyTimeout { .. }
            | CredentialsUnavailable { .. }
            | UpstreamTimeout { .. } => None,
        }
    }
}

/// The upstream client's errors, worded for the request path: a timeout is a 504 with its
/// duration, anything else a 502 whose cause (the connect error) goes to the log.
impl From<upstream::Error> for GatewayError {
    fn from(e: upstream::Error) -> Self {
        match e {
            upstream::Error::Timeout { after, .. } => GatewayError::UpstreamTimeout { after },
            e => GatewayError::UpstreamUnreachable(e),
        }
    }
}

impl From<IdentifyError> for GatewayError {
    fn from(e: IdentifyError) -> Self {
        match e {
            IdentifyError::UnknownKey => GatewayError::UnknownCallerKey,
            IdentifyError::InvalidToken(refusal) => GatewayError::InvalidCallerToken(refusal),
            IdentifyError::UnknownSubject => GatewayError::UnknownTokenSubject,
        }
    }
}

impl From<RouteError> for GatewayError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NoOperation { .. } => GatewayError::UnknownOperation(e),
            _ => GatewayError::BadRoute(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(msg: &str) -> BoxError {
        msg.to_owned().into()
    }

    fn limited() -> Limited {
        let rate = crate::ratelimit::Rate::parse("2/s", std::num::NonZeroU32::new(4)).unwrap_or_else(|| panic!());
        Limited { policy: "app", rate, retry_after_secs: 3 }
    }

    #[test]
    fn every_error_has_its_documented_status_and_code() {
        let table: Vec<(GatewayError, u16, &str)> = vec![
            (GatewayError::BadRoute(RouteError::DotSegment), 400, "RTCGW.4001"),
            (GatewayError::BadRoute(RouteError::EncodedSeparator), 400, "RTCGW.4001"),
            (GatewayError::BadRoute(RouteError::BadEncoding), 400, "RTCGW.4001"),
            (GatewayError::BadRoute(RouteError::NotOriginForm), 400, "RTCGW.4002"),
            (GatewayError::BadRoute(RouteError::AmbiguousApp("app")), 400, "RTCGW.4003"),
            (GatewayError::BadHeader("x"), 400, "RTCGW.4004"),
            (GatewayError::InvalidBody("x".into()), 400, "RTCGW.4005"),
            (GatewayError::BodyRead(io("reset")), 400, "RTCGW.4006"),
            (GatewayError::AmbiguousFraming("chunked twice"), 400, "RTCGW.4007"),
            (GatewayError::BodyTimeout { after: Duration::from_secs(1) }, 408, "RTCGW.4080"),
            (GatewayError::AppNotServed { app: None }, 403, "RTCGW.4030"),
            (GatewayError::ProjectMismatch, 403, "RTCGW.4031"),
            (GatewayError::UnknownCallerKey, 403, "RTCGW.4032"),
            (GatewayError::NotAllowed("apps.a.allow: no rule".into()), 403, "RTCGW.4033"),
            (GatewayError::InvalidCallerToken(TokenRefusal::Expired), 403, "RTCGW.4034"),
            (GatewayError::UnknownTokenSubject, 403, "RTCGW.4032"),
            (GatewayError::UnknownOperation(RouteError::NoOperation { allowed: vec![] }), 404, "RTCGW.4040"),
            (GatewayError::UnknownOperation(RouteError::NoOperation { allowed: vec!["POST"] }), 405, "RTCGW.4050"),
            (GatewayError::BodyTooLarge { limit: 1 }, 413, "RTCGW.4130"),
            (GatewayError::RateLimited(limited()), 429, "RTCGW.4290"),
            (GatewayError::Internal(io("bug")), 500, "RTCGW.5000"),
            (GatewayError::UpstreamUnreachable(unreachable()), 502, "RTCGW.5020"),
            (GatewayError::CredentialsUnavailable { retry_after_secs: 5 }, 503, "RTCGW.5030"),
            (GatewayError::LimiterUnavailable(BackendError::Timeout(Duration::from_millis(50))), 503, "RTCGW.5031"),
            (GatewayError::UpstreamTimeout { after: Duration::from_secs(1) }, 504, "RTCGW.5040"),
        ];
        for (err, status, code) in table {
            let rsp = err.to_response("req-1");
            assert_eq!(rsp.status().as_u16(), status, "{err}");
            assert_eq!(rsp.headers()[HEADER_GATEWAY_ERROR], code, "{err}");
            assert_eq!(rsp.headers()["x-request-id"], "req-1");
            assert_eq!(rsp.headers()["content-type"], "application/json");
        }
    }

    #[test]
    fn rate_limited_answers_carry_retry_after_and_ratelimit_fields() {
        let rsp = GatewayError::RateLimited(limited()).to_response("r");
        assert_eq!(rsp.headers()["retry-after"], "3");
        assert_eq!(rsp.headers()["ratelimit-policy"], "\"app\";q=4;w=2");
        assert_eq!(rsp.headers()["ratelimit"], "\"app\";r=0;t=3");
    }

    #[test]
    fn limiter_unavailable_says_when_to_retry() {
        let rsp = GatewayError::LimiterUnavailable(BackendError::Timeout(Duration::from_millis(50))).to_response("r");
        assert_eq!(rsp.headers()["retry-after"], "1");
    }

    /// A real connect failure: a port nothing listens on (bound, then closed).
    fn unreachable() -> upstream::Error {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let port = port.unwrap_or_else(|e| panic!("{e}"));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, http_body_util::Empty<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
        let uri: http::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap_or_else(|e| panic!("{e}"));
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        match runtime.block_on(client.get(uri)) {
            Err(e) => upstream::Error::Connect(e),
            Ok(_) => panic!("nothing listens on port {port}"),
        }
    }

    #[test]
    fn server_side_details_stay_out_of_the_response_and_go_to_the_log() {
        let err = GatewayError::UpstreamUnreachable(unreachable());
        assert!(!err.caller_message().contains("127.0.0.1"));
        assert!(!err.caller_message().contains("refused"));
        let logged = crate::cause::ErrorChain(&err).to_string();
        assert!(
            logged.contains("RTCGW.5020 UpstreamUnreachable: SparkRTC could not be reached: cannot connect"),
            "{logged}"
        );
    }

    #[test]
    fn upstream_timeouts_are_504_with_their_duration() {
        let after = Duration::from_millis(1500);
        for phase in [upstream::Phase::Connect, upstream::Phase::Response] {
            let err = GatewayError::from(upstream::Error::Timeout { phase, after });
            assert!(matches!(err, GatewayError::UpstreamTimeout { after: a } if a == after), "{err}");
        }
    }
}
