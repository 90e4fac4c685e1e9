//! The request path. [`Gateway::handle`] always answers; `Gateway::proxy` is the path itself,
//! a list of named phases in order, each returning early with the error that ends the call.
//!
//! The configuration-derived state (config, limiters, upstream client) sits behind one atomic
//! pointer: a reload swaps it whole, and each call keeps the state it started with.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::audit::Audit;
use crate::background::Slots;
use crate::body::Body;
use crate::catalog::{Catalog, Route};
use crate::cause::BoxError;
use crate::clock::{Clock, SystemClock};
use crate::config::{App, Config, Profile};
use crate::credentials::{Authorization, Credentials};
use crate::error::GatewayError;
pub use crate::listener::Peer;
use crate::metrics::{Counters, Metrics};
use crate::policy::{Decision, Identity};
use crate::ratelimit::{Limits, Subject};
use crate::readiness::{self, Report, ServedApp};
use crate::relay;
use crate::signer::{self, HeaderList, SdkDate, SignInput};
use crate::telemetry::CallRecord;
use crate::trace::export::PhaseKind;
use crate::trace::Tracer;
use crate::upstream::Upstream;
use crate::validate;

/// How long a caller may take to send its (at most 12 MB) body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Huawei refuses signatures more than 15 minutes off; warn well before that.
const SKEW_WARN_SECS: u64 = 180;

const USER_AGENT: &str = concat!("sparkrtc-gateway/", env!("CARGO_PKG_VERSION"));

/// Why a gateway could not be built from a validated config, by the stage that failed. Only
/// what validation cannot see fails here: a CA file that is a file but not PEM, a shared
/// limiter that cannot be set up.
#[derive(Debug)]
pub enum BuildError {
    /// The upstream client's TLS configuration (`upstream.ca_file`).
    UpstreamTls(crate::tls::Error),
    /// The rate limiter (the Redis client for `limits.backend`).
    Limiter(crate::ratelimit::BackendError),
    /// The audit file (`audit.file`) or its writer thread.
    Audit(std::io::Error),
}

impl BuildError {
    /// The stage that failed, for logs and reload reports.
    pub fn stage(&self) -> &'static str {
        match self {
            BuildError::UpstreamTls(_) => "build the upstream TLS configuration",
            BuildError::Limiter(_) => "build the rate limiter",
            BuildError::Audit(_) => "open the audit file",
        }
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot {}", self.stage())
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::UpstreamTls(e) => Some(e),
            BuildError::Limiter(e) => Some(e),
            BuildError::Audit(e) => Some(e),
        }
    }
}

/// The gateway: the request path over the state built from one configuration, swapped whole by a reload. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    state: ArcSwap<State>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Opened once: a reload does not move the audit trail (a restart does), SIGHUP reopens it.
    audit: Arc<Audit>,
    /// Room for calls whose caller left, to finish in the background.
    background: Slots,
    draining: AtomicBool,
    last_skew_warning: AtomicU64,
    /// Built once from `[trace]`: a reload keeps it (the exporter owns a thread and a queue).
    tracer: Tracer,
}

/// Everything derived from one configuration.
struct State {
    config: Arc<Config>,
    limits: Limits,
    upstream: Upstream,
    credentials: Credentials,
}

impl Gateway {
    /// Builds the gateway for `config` on the system clock.
    pub fn new(config: Config) -> Result<Self, BuildError> {
        Gateway::with_clock(config, Arc::new(SystemClock))
    }

    /// Builds the gateway for `config` on `clock` (tests pin time with it).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Upstream::new(&config.upstream).map_err(BuildError::UpstreamTls)?;
        let credentials = Credentials::build(
            &config.profiles,
            config.callers.jwt.clone(),
            &upstream,
            clock.clone(),
            metrics.clone(),
            None,
        );
        let limits = Limits::new(config.limit_plan(), &config.limits.backend).map_err(BuildError::Limiter)?;
        let audit = match &config.audit.file {
            Some(path) => Audit::file(path).map_err(BuildError::Audit)?,
            None => Audit::log(),
        };
        let state_config_trace = config.trace.clone();
        let state = State { upstream, limits, credentials, config: Arc::new(config) };
        let inner = Inner {
            state: ArcSwap::from_pointee(state),
            clock,
            background: Slots::new(metrics.clone()),
            metrics,
            audit: Arc::new(audit),
            draining: AtomicBool::new(false),
            last_skew_warning: AtomicU64::new(0),
            tracer: crate::telemetry::tracer(&state_config_trace),
        };
        Ok(Gateway { inner: Arc::new(inner) })
    }

    /// Swaps in a new configuration for the calls that start after this. Limits whose key and
    /// spec are unchanged keep their state, and so do IAM tokens of unchanged profiles; the
    /// connection pool is kept unless the upstream changed.
    pub fn reload(&self, config: Config) -> Result<(), BuildError> {
        let old = self.inner.state.load();
        let upstream = if old.config.upstream == config.upstream {
            old.upstream.clone()
        } else {
            Upstream::new(&config.upstream).map_err(BuildError::UpstreamTls)?
        };
        let limits = old.limits.reloaded(config.limit_plan(), &config.limits.backend).map_err(BuildError::Limiter)?;
        let (clock, metrics) = (self.inner.clock.clone(), self.inner.metrics.clone());
        let credentials = Credentials::build(
            &config.profiles,
            config.callers.jwt.clone(),
            &upstream,
            clock,
            metrics,
            Some(&old.credentials),
        );
        self.inner.state.store(Arc::new(State { config: Arc::new(config), limits, upstream, credentials }));
        self.inner.metrics.counters.config_reloaded();
        Ok(())
    }

    /// The configuration calls that start now are served with.
    pub fn config(&self) -> Arc<Config> {
        self.inner.state.load().config.clone()
    }

    /// From now on `/readyz` answers 503, so load balancers stop sending calls.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether this replica should get traffic, and why: not draining, and able to serve its
    /// apps as `[admin] readiness` asks (see the `readiness` module).
    pub fn readiness(&self) -> Report {
        if self.inner.draining.load(Ordering::SeqCst) {
            return readiness::draining();
        }
        let state = self.inner.state.load();
        let config = &state.config;
        let plan = state.limits.plan();
        let served =
            config.apps.iter().map(|(id, app)| (id.as_str(), app)).chain(config.account.iter().map(|a| ("", a)));
        let apps: Vec<ServedApp<'_>> = served
            .map(|(id, app)| ServedApp {
                id,
                profile: &app.profile.name,
                needs_backend: plan.denies_on_backend_error(id),
            })
            .collect();
        readiness::assess(config.readiness, &apps, &state.credentials.states(), state.limits.backend_up())
    }

    /// The Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let ready = self.readiness().ready;
        let state = self.inner.state.load();
        let profiles: Vec<(&str, bool)> =
            state.credentials.states().into_iter().map(|(name, s)| (name, s.is_ok())).collect();
        self.inner.metrics.render(ready, &profiles, state.limits.backend_up(), state.upstream.resends())
    }

    /// Re-reads key files and refreshes IAM tokens that are due (the server runs this every few
    /// seconds and on SIGHUP).
    pub async fn maintain_credentials(&self) {
        let state = self.inner.state.load_full();
        state.credentials.maintain().await;
    }

    /// Probes the shared limiter backend, so readiness follows Redis and a lost connection is
    /// re-made without waiting for a call (the server runs this with the credentials tick).
    pub async fn probe_limiter(&self) {
        let state = self.inner.state.load_full();
        state.limits.probe().await;
    }

    /// Opens the audit file again (logrotate moved it); records go on to the previous file
    /// until the new one is open, so none is lost.
    pub fn reopen_audit(&self) {
        self.inner.audit.reopen();
    }

    /// Waits until every audit record of a finished call is written (at shutdown).
    pub async fn flush_audit(&self) {
        self.inner.audit.flush().await;
    }

    /// Sends the spans still queued for export, waiting a bounded time (the stop sequence).
    pub async fn flush_traces(&self) {
        self.inner.tracer.flush(Duration::from_secs(5)).await;
    }

    /// Refusals and shadow-mode decisions so far.
    pub fn counters(&self) -> &Counters {
        &self.inner.metrics.counters
    }

    /// Handles one call and always answers: errors become gateway-made responses here.
    pub async fn handle<B>(&self, req: Request<B>, peer: &Peer) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let _in_flight = self.inner.metrics.in_flight();
        let state = self.inner.state.load_full();
        let mut record = CallRecord::start(
            &req,
            peer.addr,
            self.inner.metrics.clone(),
            self.inner.audit.clone(),
            &self.inner.tracer,
        );
        // Boxed: hyper keeps one slot the size of this future per connection for as long as the
        // connection lives, so the request path's few kilobytes of state are allocated per call
        // instead of held by every idle keep-alive connection.
        let rsp = match Box::pin(self.proxy(&state, req, peer, &mut record)).await {
            Ok(rsp) => rsp,
            Err(err) => {
                self.inner.metrics.counters.refused(&err, record.app_label());
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
        state: &Arc<State>,
        req: Request<B>,
        peer: &Peer,
        record: &mut CallRecord,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let config = &state.config;
        // 404: not a SparkRTC operation.
        let route = Catalog.resolve(req.method(), req.uri(), req.version())?;
        record.route(&route);
        // 400: no Host, or several, on HTTP/1.1.
        relay::one_host(req.version(), req.headers())?;
        // 403: app not served, or a v1 path naming a foreign project.
        let app = served_app(config, &route)?;
        record.served();
        // 403: a caller key or bearer token that matches no caller, or a token that does not verify.
        let now = self.inner.clock.now();
        let who = config.callers.identify_at(peer.addr.ip(), req.headers(), &peer.cert_names, now)?;
        record.caller(&who);
        // 403: no rule allows it.
        self.authorize(app, &who, &route, record)?;
        let (parts, body) = req.into_parts();
        // 400: an unusable Content-Type.
        let headers = relay::base_headers(&parts.headers, route.operation)?;
        // 413 / 408: the body, capped; read only for callers allowed to make the call.
        let body = relay::read_body(body, &parts.headers, config.max_body_bytes, BODY_READ_TIMEOUT).await?;
        record.body_size(body.len());
        // 400: SparkRTC would refuse it too, and so would an ambiguous one (duplicate keys).
        let json = validate::body(route.operation, &body)?;
        record.body(body.len(), json.as_ref());
        // 429: after authorization and validation, so refused calls spend no app's budget.
        self.limit(state, &route, &who, record).await?;
        // 503: no usable credentials (IAM down and no valid token, expired temporary keys).
        let auth = record.phase(PhaseKind::Credentials, state.credentials.authorization(&app.profile)).await?;
        // 502 / 504: AK/SK signature or token on, sent, one retry on a refused token; finished
        // in the background if the caller leaves first.
        let mut trace = http::HeaderMap::new();
        record.trace_upstream(&mut trace);
        let rsp = self.send(state, &route, &headers, &trace, &app.profile, auth, body, record).await?;
        self.check_clock(&rsp);
        // Status, X-request-Id, Content-Type and the body, streamed.
        Ok(relay::to_caller(rsp, &record.request_id, state.upstream.response_timeout()))
    }

    fn authorize(&self, app: &App, who: &Identity, route: &Route, record: &mut CallRecord) -> Result<(), GatewayError> {
        match app.access.decide(who, route.operation) {
            Decision::Allowed => Ok(()),
            Decision::Refused(why) => Err(GatewayError::NotAllowed(why)),
            Decision::ShadowRefused(why) => {
                self.inner.metrics.counters.shadow_refused_by_allowlist();
                record.shadow(&why);
                Ok(())
            }
        }
    }

    async fn limit(
        &self,
        state: &Arc<State>,
        route: &Route,
        who: &Identity,
        record: &mut CallRecord,
    ) -> Result<(), GatewayError> {
        let subject = Subject { caller: who.name.as_deref(), address: who.address };
        let checked = state.limits.check(route.app.as_deref(), route.operation.name, subject).await;
        self.inner.metrics.limiter(&checked.via);
        let shadowed = checked.verdict?;
        for limited in shadowed {
            self.inner.metrics.counters.shadow_refused_by_rate_limit();
            record.shadow(&format!(
                "{} limit {}/{}s would refuse",
                limited.policy,
                limited.rate.burst,
                limited.rate.window_secs()
            ));
        }
        Ok(())
    }

    /// Sends the call with its credential. If SparkRTC refuses a token the gateway believed
    /// valid (401), the token is dropped, a new one fetched, and the call retried once: safe,
    /// because the upstream refused it at authentication, before acting on it.
    // One argument more than clippy's default for the unsigned trace headers; a struct of
    // them all would only rename the same inputs.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        state: &Arc<State>,
        route: &Route,
        headers: &HeaderList,
        trace: &http::HeaderMap,
        profile: &Profile,
        auth: Authorization,
        body: Bytes,
        record: &mut CallRecord,
    ) -> Result<Response<Incoming>, GatewayError> {
        let req = self.upstream_request(&state.config, route, headers, trace, profile, &auth, body.clone())?;
        let owner = state.clone();
        let call = async move { owner.upstream.send(req).await };
        let idle = state.upstream.response_timeout();
        let rsp = self.inner.background.guard(call, record, idle).await?;
        let Authorization::Token(token) = &auth else { return Ok(rsp) };
        if rsp.status() != http::StatusCode::UNAUTHORIZED {
            return Ok(rsp);
        }
        tracing::warn!(profile = %profile.name, "SparkRTC refused the IAM token; fetching a new one and retrying once");
        state.credentials.invalidate(profile, token);
        let fresh = state.credentials.authorization(profile).await?;
        Ok(state
            .upstream
            .send(self.upstream_request(&state.config, route, headers, trace, profile, &fresh, body)?)
            .await?)
    }

    /// Builds the upstream request from the signed parts only. AK/SK: signs the exact bytes that
    /// will be forwarded. Token: sets `X-Auth-Token`.
    // One argument more than clippy's default for the unsigned trace headers; a struct of
    // them all would only rename the same inputs.
    #[allow(clippy::too_many_arguments)]
    fn upstream_request(
        &self,
        config: &Config,
        route: &Route,
        base: &HeaderList,
        trace: &http::HeaderMap,
        profile: &Profile,
        auth: &Authorization,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, GatewayError> {
        let upstream = &config.upstream;
        let mut headers = base.clone();
        match auth {
            Authorization::Key(key) => {
                headers.set("X-Project-Id", profile.project_id.as_str());
                let input = SignInput {
                    method: route.operation.method.as_str(),
                    host: upstream.authority.as_str(),
                    path: &route.path,
                    query: &route.query,
                    body: &body,
                };
                let now = SdkDate::from_system_time(self.inner.clock.now());
                signer::sign(&input, &mut headers, &key.key, now).map_err(|e| GatewayError::Internal(Box::new(e)))?;
            }
            Authorization::Token(token) => {
                headers.set("X-Auth-Token", token.value.expose());
                headers.set("Host", upstream.authority.as_str());
            }
        }
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
        *req.headers_mut() = headers.to_header_map().map_err(|e| GatewayError::Internal(Box::new(e)))?;
        let out = req.headers_mut();
        // Not signed, so the upstream ignores it for authentication; it only names us in its logs.
        out.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        // Not signed either: a tracing proxy on the way may rewrite it (W3C Trace Context 3.2).
        out.extend(trace.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(req)
    }

    /// Compares our clock with the upstream's `Date`: signatures more than 15 minutes off are
    /// refused by Huawei, so drift is exposed as a metric and warned about (once a minute).
    fn check_clock(&self, rsp: &Response<Incoming>) {
        let Some(date) =
            rsp.headers().get(http::header::DATE).and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
        else {
            return;
        };
        let now = self.inner.clock.now();
        let skew = match now.duration_since(date) {
            Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
        };
        self.inner.metrics.clock_skew(skew);
        let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.inner.last_skew_warning.load(Ordering::Relaxed);
        if skew.unsigned_abs() > SKEW_WARN_SECS && now_secs >= last + 60 {
            self.inner.last_skew_warning.store(now_secs, Ordering::Relaxed);
            tracing::warn!(skew_secs = skew, "this host's clock is off from SparkRTC's by more than 3 minutes; signatures are refused past 15 minutes: fix NTP");
        }
    }
}

/// The served app. For v1 paths naming a project, only its profile's project is accepted, so a
/// caller cannot reach another project with this gateway's keys.
fn served_app<'c>(config: &'c Config, route: &Route) -> Result<&'c App, GatewayError> {
    let app = config.app(route.app.as_deref()).ok_or_else(|| GatewayError::AppNotServed { app: route.app.clone() })?;
    match &route.project_id {
        Some(project) if *project != app.profile.project_id => Err(GatewayError::ProjectMismatch),
        _ => Ok(app),
    }
}
