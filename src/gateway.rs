//! The request path. [`Gateway::handle`] always answers; [`Gateway::proxy`] is the path itself,
//! a list of named phases in order, each returning early with the error that ends the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;

use crate::body::Body;
use crate::catalog::{Catalog, Route};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Profile};
use crate::error::{BoxError, GatewayError};
use crate::relay;
use crate::signer::{self, SdkDate, SignInput};
use crate::upstream::Upstream;
use crate::validate;

/// How long a caller may take to send its (at most 12 MB) body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

const USER_AGENT: &str = concat!("sparkrtc-gateway/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    catalog: Catalog,
    upstream: Upstream,
    clock: Arc<dyn Clock>,
}

/// What the access log says about one call.
#[derive(Default)]
struct CallLog {
    operation: Option<&'static str>,
    app: Option<String>,
    upstream_ms: Option<u128>,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Self, BoxError> {
        Gateway::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, BoxError> {
        let upstream = Upstream::new(&config.upstream)?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                catalog: Catalog,
                upstream,
                clock,
            }),
        })
    }

    /// Handles one call and always answers: errors become gateway-made responses here.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let request_id = crate::request_id::from_caller(req.headers());
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let mut log = CallLog::default();
        let rsp = match self.proxy(req, &request_id, &mut log).await {
            Ok(rsp) => rsp,
            Err(err) => {
                let (status, ..) = err.parts();
                if status.is_server_error() {
                    tracing::warn!(request_id = %request_id, error = %err, cause = ?std::error::Error::source(&err), "call failed");
                } else {
                    tracing::debug!(request_id = %request_id, error = %err, "call refused");
                }
                let mut rsp = err.to_response(&request_id);
                relay::mark(rsp.headers_mut(), &request_id);
                rsp
            }
        };
        tracing::info!(
            target: "access",
            request_id = %request_id,
            method = %method,
            path = %path,
            operation = log.operation.unwrap_or("-"),
            app = log.app.as_deref().unwrap_or("-"),
            status = rsp.status().as_u16(),
            origin = if rsp.headers().contains_key(crate::error::HEADER_GATEWAY_ERROR) { "gateway" } else { "upstream" },
            upstream_request_id = rsp.headers().get(crate::request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            upstream_ms = log.upstream_ms.unwrap_or(0),
            total_ms = started.elapsed().as_millis(),
        );
        rsp
    }

    async fn proxy<B>(
        &self,
        req: Request<B>,
        request_id: &str,
        log: &mut CallLog,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let config = &self.inner.config;
        let route = self
            .inner
            .catalog
            .resolve(req.method(), req.uri(), req.version())?; // 404: not a SparkRTC operation
        log.operation = Some(route.operation.name);
        log.app.clone_from(&route.app);
        let profile = self.credentials_for(&route)?; // 403: app not served, foreign project
        let (parts, body) = req.into_parts();
        let mut headers =
            relay::signed_headers(&parts.headers, route.operation, &profile.project_id)?; // 400: unusable Content-Type
        let body = relay::read_body(
            body,
            &parts.headers,
            config.max_body_bytes,
            BODY_READ_TIMEOUT,
        )
        .await?; // 413
        validate::body(route.operation, &body)?; // 400: SparkRTC would refuse it too
        let signed = self.sign(&route, &mut headers, profile, body)?; // AK/SK signature
        let sent = Instant::now();
        let rsp = self.inner.upstream.send(signed).await; // 502 / 504
        log.upstream_ms = Some(sent.elapsed().as_millis());
        Ok(relay::to_caller(
            rsp?,
            request_id,
            self.inner.upstream.response_timeout(),
        )) // status, X-request-Id, body
    }

    /// The app's credential profile. For v1 paths naming a project, only that profile's project
    /// is accepted, so a caller cannot reach another project with this gateway's keys.
    fn credentials_for(&self, route: &Route) -> Result<&Arc<Profile>, GatewayError> {
        let profile = self
            .inner
            .config
            .profile_for(route.app.as_deref())
            .ok_or_else(|| GatewayError::AppNotServed {
                app: route.app.clone(),
            })?;
        match &route.project_id {
            Some(project) if *project != profile.project_id => Err(GatewayError::ProjectMismatch),
            _ => Ok(profile),
        }
    }

    /// Signs the exact bytes that will be forwarded, and builds the upstream request from the
    /// signed parts only.
    fn sign(
        &self,
        route: &Route,
        headers: &mut signer::HeaderList,
        profile: &Profile,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, GatewayError> {
        let upstream = &self.inner.config.upstream;
        let query = route.query.to_string();
        let input = SignInput {
            method: route.operation.method.as_str(),
            host: upstream.authority.as_str(),
            path: &route.path,
            query: &route.query,
            body: &body,
        };
        let now = SdkDate::from_system_time(self.inner.clock.now());
        signer::sign(&input, headers, &profile.key, now)
            .map_err(|e| GatewayError::Internal(Box::new(e)))?;

        let path_and_query = if query.is_empty() {
            route.path.clone()
        } else {
            format!("{}?{query}", route.path)
        };
        let uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| GatewayError::Internal(Box::new(e)))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = route.operation.method.clone();
        *req.uri_mut() = uri;
        let out = req.headers_mut();
        for (name, value) in headers.iter() {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| GatewayError::Internal(Box::new(e)))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| GatewayError::Internal(Box::new(e)))?;
            out.insert(name, value);
        }
        // Not signed, so the upstream ignores it for authentication; it only names us in its logs.
        out.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        Ok(req)
    }
}
