//! The request path. [`Gateway::handle`] always answers; [`Gateway::proxy`] is the path itself,
//! a list of named phases in order, each returning early with the error that ends the call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;

use crate::body::Body;
use crate::catalog::{Catalog, Route};
use crate::clock::{Clock, SystemClock};
use crate::config::{App, Config, Profile};
use crate::error::{BoxError, GatewayError};
use crate::policy::{Decision, Identity};
use crate::ratelimit::Limits;
use crate::relay;
use crate::signer::{self, SdkDate, SignInput};
use crate::telemetry::{CallRecord, Counters};
use crate::upstream::Upstream;
use crate::validate;

/// How long a caller may take to send its (at most 12 MB) body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

const USER_AGENT: &str = concat!("sparkrtc-gateway/", env!("CARGO_PKG_VERSION"));

/// Where a call came from: the TCP peer, and the names on its client certificate if any.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert_names: Arc<[String]>,
}

impl Peer {
    pub fn tcp(addr: SocketAddr) -> Self {
        Peer { addr, cert_names: Arc::new([]) }
    }
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    catalog: Catalog,
    limits: Limits,
    upstream: Upstream,
    clock: Arc<dyn Clock>,
    counters: Counters,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Self, BoxError> {
        Gateway::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, BoxError> {
        let upstream = Upstream::new(&config.upstream)?;
        let limits = Limits::new(&config);
        let config = Arc::new(config);
        Ok(Gateway {
            inner: Arc::new(Inner { config, catalog: Catalog, limits, upstream, clock, counters: Counters::default() }),
        })
    }

    /// Refusals and shadow-mode decisions so far.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Handles one call and always answers: errors become gateway-made responses here.
    pub async fn handle<B>(&self, req: Request<B>, peer: &Peer) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut record = CallRecord::start(&req);
        let rsp = match self.proxy(req, peer, &mut record).await {
            Ok(rsp) => rsp,
            Err(err) => {
                self.inner.counters.refused(&err);
                record.failed(&err);
                let mut rsp = err.to_response(&record.request_id);
                relay::mark(rsp.headers_mut(), &record.request_id);
                rsp
            }
        };
        record.finish(&rsp);
        rsp
    }

    async fn proxy<B>(
        &self,
        req: Request<B>,
        peer: &Peer,
        record: &mut CallRecord,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let route = self.inner.catalog.resolve(req.method(), req.uri(), req.version())?; // 404: not a SparkRTC operation
        record.route(&route);
        let app = self.served_app(&route)?; // 403: app not served, foreign project
        let who = self.inner.config.callers.identify(peer.addr.ip(), req.headers(), &peer.cert_names)?; // 403: unknown key
        record.caller(&who);
        self.authorize(app, &who, &route, record)?; // 403: no rule allows it
                                                    // Limit after authorization, so refused calls spend no app's budget.
        self.limit(&route, &who, record)?; // 429 + Retry-After
        let (parts, body) = req.into_parts();
        let mut headers = relay::signed_headers(&parts.headers, route.operation, &app.profile.project_id)?; // 400
        let body = relay::read_body(body, &parts.headers, self.inner.config.max_body_bytes, BODY_READ_TIMEOUT).await?; // 413
        let json = validate::body(route.operation, &body)?; // 400: SparkRTC would refuse it too
        record.body(json.as_ref());
        let signed = self.sign(&route, &mut headers, &app.profile, body)?; // AK/SK signature
        let sent = Instant::now();
        let rsp = self.inner.upstream.send(signed).await; // 502 / 504
        record.upstream_ms = Some(sent.elapsed().as_millis());
        Ok(relay::to_caller(rsp?, &record.request_id, self.inner.upstream.response_timeout()))
        // status, X-request-Id, body
    }

    /// The served app. For v1 paths naming a project, only its profile's project is accepted, so
    /// a caller cannot reach another project with this gateway's keys.
    fn served_app(&self, route: &Route) -> Result<&App, GatewayError> {
        let app = self
            .inner
            .config
            .app(route.app.as_deref())
            .ok_or_else(|| GatewayError::AppNotServed { app: route.app.clone() })?;
        match &route.project_id {
            Some(project) if *project != app.profile.project_id => Err(GatewayError::ProjectMismatch),
            _ => Ok(app),
        }
    }

    fn authorize(&self, app: &App, who: &Identity, route: &Route, record: &mut CallRecord) -> Result<(), GatewayError> {
        match app.access.decide(who, route.operation) {
            Decision::Allowed => Ok(()),
            Decision::Refused(why) => Err(GatewayError::NotAllowed(why)),
            Decision::ShadowRefused(why) => {
                self.inner.counters.shadow_allowlist();
                record.shadow(&why);
                Ok(())
            }
        }
    }

    fn limit(&self, route: &Route, who: &Identity, record: &mut CallRecord) -> Result<(), GatewayError> {
        let shadowed = self
            .inner
            .limits
            .check(route.app.as_deref(), route.operation.name, who)
            .map_err(GatewayError::RateLimited)?;
        for limited in shadowed {
            self.inner.counters.shadow_rate_limit();
            record.shadow(&format!(
                "{} limit {}/{}s would refuse",
                limited.policy,
                limited.rate.burst,
                limited.rate.window_secs()
            ));
        }
        Ok(())
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
        let input = SignInput {
            method: route.operation.method.as_str(),
            host: upstream.authority.as_str(),
            path: &route.path,
            query: &route.query,
            body: &body,
        };
        let now = SdkDate::from_system_time(self.inner.clock.now());
        signer::sign(&input, headers, &profile.key, now).map_err(|e| GatewayError::Internal(Box::new(e)))?;

        let query = route.query.to_string();
        let path_and_query = if query.is_empty() { route.path.clone() } else { format!("{}?{query}", route.path) };
        let internal = |e: http::Error| GatewayError::Internal(Box::new(e));
        let uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(internal)?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = route.operation.method.clone();
        *req.uri_mut() = uri;
        let out = req.headers_mut();
        for (name, value) in headers.iter() {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| internal(e.into()))?;
            let value = HeaderValue::from_str(value).map_err(|e| internal(e.into()))?;
            out.insert(name, value);
        }
        // Not signed, so the upstream ignores it for authentication; it only names us in its logs.
        out.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        Ok(req)
    }
}
