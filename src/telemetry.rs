//! Logging: set-up, the access log (one line per call), the audit trail (one record per
//! mutating call) and refusal counters. Nothing secret reaches a log line: secrets are
//! [`crate::secret::Secret`]s, which print as `[redacted]`, signed headers are never logged, and
//! callers appear by their configured name, never by their key.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Request, Response, Version};
use opentelemetry::KeyValue;
use tracing_subscriber::EnvFilter;

use crate::audit::{self, Audit};
use crate::body::Body;
use crate::catalog::{Operation, Route};
use crate::cause::{Causes, ErrorChain};
use crate::config::{Log, LogFormat, Trace};
use crate::error::{GatewayError, HEADER_GATEWAY_ERROR};
use crate::log_writer::{LogGuard, LogWriter};
use crate::metrics::Metrics;
use crate::policy::Identity;
use crate::trace::export::ExportSettings;
use crate::trace::export::{Phase, PhaseKind, Span};
use crate::trace::{CallTrace, Exporter, Tracer};

/// One request to the collector at most this long, so a stalled collector holds up no flush.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the global subscriber, writing to stderr through [`LogWriter`]; a second call
/// (tests, the demo) keeps the first. Hold the guard until the command ends: dropping it writes
/// out the lines still buffered.
pub(crate) fn init(log: &Log) -> LogGuard {
    if tracing::dispatcher::has_been_set() {
        return LogGuard::none();
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colour codes only for a person at a terminal, never into files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = LogWriter::start();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// The call tracer for `[trace]`. An exporter that cannot start is reported and left out: the
/// calls are served, traced by id, and not exported.
pub(crate) fn tracer(config: &Trace) -> Tracer {
    let exporter = config.otlp_endpoint.as_deref().and_then(|endpoint| {
        let settings = ExportSettings {
            endpoint,
            service_name: &config.service_name,
            max_queue: config.max_queue_size,
            interval: config.export_interval,
            timeout: EXPORT_TIMEOUT,
        };
        Exporter::start(&settings)
            .map_err(|e| tracing::error!(error = %ErrorChain(&e), "traces will not be exported"))
            .ok()
    });
    Tracer::new(config.sample_ratio, exporter)
}

/// What is known about one call as it moves through the phases.
#[derive(Clone)]
pub(crate) struct CallRecord {
    pub request_id: String,
    started: Instant,
    started_at: SystemTime,
    method: Method,
    path: String,
    /// The connection's peer (for named callers too: the name says who, this says from where).
    client_addr: SocketAddr,
    user_agent: Option<String>,
    http_version: Version,
    trace: CallTrace,
    tracer: Tracer,
    /// Finished phases with their own spans (credentials, upstream call).
    phases: Vec<Phase>,
    operation: Option<&'static Operation>,
    app: Option<String>,
    room: Option<String>,
    caller: Option<String>,
    /// The app as a metrics label: a served app id, `-` for account-level, `other` otherwise.
    app_label: &'static str,
    served_app: Option<String>,
    user_ids: Option<Vec<String>>,
    shadow: Vec<String>,
    request_bytes: usize,
    pub upstream: Option<Duration>,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
    finished: bool,
}

impl CallRecord {
    pub(crate) fn start<B>(
        req: &Request<B>,
        client_addr: SocketAddr,
        metrics: Arc<Metrics>,
        audit: Arc<Audit>,
        tracer: &Tracer,
    ) -> Self {
        let user_agent = req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
        CallRecord {
            request_id: crate::request_id::from_caller(req.headers()),
            started: Instant::now(),
            started_at: SystemTime::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            client_addr,
            user_agent: user_agent.map(str::to_owned),
            http_version: req.version(),
            trace: tracer.start(req.headers()),
            tracer: tracer.clone(),
            phases: Vec::new(),
            operation: None,
            app: None,
            room: None,
            caller: None,
            app_label: "other",
            served_app: None,
            user_ids: None,
            shadow: Vec::new(),
            request_bytes: 0,
            upstream: None,
            metrics,
            audit,
            finished: false,
        }
    }

    /// The call's trace id (W3C, 32 hex digits), for the access line and the audit record.
    pub(crate) fn trace_id(&self) -> &str {
        self.trace.trace_id()
    }

    /// Sets `traceparent` (and the caller's `tracestate`) on the request to SparkRTC.
    pub(crate) fn trace_upstream(&self, headers: &mut http::HeaderMap) {
        self.trace.inject(headers);
    }

    /// Runs one phase of the call that gets its own span (when traces are exported).
    pub(crate) async fn phase<T, E: std::fmt::Display>(
        &mut self,
        kind: PhaseKind,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let (start, clock) = (SystemTime::now(), Instant::now());
        let result = work.await;
        let error = result.as_ref().err().map(ToString::to_string);
        self.phases.push(Phase { kind, start, end: start + clock.elapsed(), error });
        result
    }

    /// The upstream call's answer is in (or it failed), `took` after `start`: its time for the
    /// access line and metrics, and its span.
    pub(crate) fn upstream_done(&mut self, start: SystemTime, took: Duration, error: Option<String>) {
        self.upstream = Some(took);
        self.phases.push(Phase { kind: PhaseKind::Upstream, start, end: start + took, error });
    }

    /// Hands the record to a call that goes on after its caller left (`background`), whose
    /// record is written when it ends; this one writes nothing.
    pub(crate) fn detach(&mut self) -> CallRecord {
        let detached = self.clone();
        self.finished = true;
        detached
    }

    pub(crate) fn route(&mut self, route: &Route) {
        self.operation = Some(route.operation);
        self.app.clone_from(&route.app);
        self.room = route.param("room_id").map(str::to_owned);
    }

    /// The call's app is served: it may appear as a metrics label.
    pub(crate) fn served(&mut self) {
        match &self.app {
            Some(app) => self.served_app = Some(app.clone()),
            None => self.app_label = "-",
        }
    }

    pub(crate) fn caller(&mut self, who: &Identity) {
        self.caller = Some(match &who.name {
            Some(name) => name.to_string(),
            None => format!("addr:{}", who.address),
        });
    }

    /// The size of the body read, valid or not.
    pub(crate) fn body_size(&mut self, bytes: usize) {
        self.request_bytes = bytes;
    }

    /// Keeps the size and the user ids of a RemoveUsers body for the logs.
    pub(crate) fn body(&mut self, bytes: usize, json: Option<&serde_json::Value>) {
        self.request_bytes = bytes;
        let ids = json.and_then(|j| j.get("user_ids")).and_then(|ids| ids.as_array());
        self.user_ids = ids.map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect());
    }

    /// The call's app as a metrics label: a served app id, `-` for account-level, `other` otherwise.
    pub(crate) fn app_label(&self) -> &str {
        self.served_app.as_deref().unwrap_or(self.app_label)
    }

    pub(crate) fn shadow(&mut self, why: &str) {
        tracing::info!(request_id = %self.request_id, shadow = why, "shadow mode: would refuse; forwarded");
        self.shadow.push(why.to_owned());
    }

    pub(crate) fn failed(&self, err: &GatewayError) {
        if err.parts().0.is_server_error() {
            tracing::warn!(request_id = %self.request_id, error = %err, cause = Causes::of(err).map(display), "call failed");
        } else {
            tracing::debug!(request_id = %self.request_id, error = %err, "call refused");
        }
    }

    /// Writes the access-log line, the metrics and, for mutating operations, the audit record.
    pub(crate) fn finish(&mut self, rsp: &Response<Body>) {
        let gateway_code = rsp.headers().get(HEADER_GATEWAY_ERROR).and_then(|v| v.to_str().ok());
        let upstream_request_id = match gateway_code {
            None => rsp.headers().get(crate::request_id::HEADER).and_then(|v| v.to_str().ok()),
            Some(_) => None,
        };
        let decision = match (gateway_code, self.shadow.is_empty()) {
            (Some(code), _) => format!("refused:{code}"),
            (None, true) => "allowed".to_owned(),
            (None, false) => "allowed:shadow-refused".to_owned(),
        };
        let outcome = Outcome {
            status: rsp.status().as_u16(),
            origin: if gateway_code.is_some() { "gateway" } else { "upstream" },
            upstream_request_id,
            response_bytes: http_body::Body::size_hint(rsp.body()).exact(),
            decision,
        };
        self.write(&outcome);
    }

    fn write(&mut self, outcome: &Outcome<'_>) {
        self.finished = true;
        let total = self.started.elapsed();
        self.metrics.call(self.app_label(), self.operation, outcome.status, outcome.origin, total, self.upstream);
        let operation = self.operation.map(|op| op.name);
        tracing::info!(
            target: "access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            http_version = http_version(self.http_version),
            client_addr = %self.client_addr,
            user_agent = self.user_agent.as_deref(),
            caller = self.caller.as_deref(),
            operation,
            app = self.app.as_deref(),
            status = outcome.status,
            origin = outcome.origin,
            upstream_request_id = outcome.upstream_request_id,
            request_bytes = self.request_bytes as u64,
            response_bytes = outcome.response_bytes,
            upstream_ms = self.upstream.map(millis),
            total_ms = millis(total),
            trace_id = self.trace_id(),
        );
        if let Some(op) = self.operation.filter(|op| op.is_mutating()) {
            self.audit.write(&audit::Record {
                timestamp: std::time::SystemTime::now(),
                request_id: &self.request_id,
                trace_id: Some(self.trace_id()),
                caller: self.caller.as_deref(),
                client_addr: Some(self.client_addr),
                app: self.app.as_deref(),
                operation: op.name,
                room: self.room.as_deref(),
                user_ids: self.user_ids.as_deref(),
                decision: &outcome.decision,
                status: outcome.status,
                upstream_request_id: outcome.upstream_request_id,
            });
        }
        self.export(outcome, total);
    }

    /// Queues the call's spans when it is sampled and an exporter is configured.
    fn export(&mut self, outcome: &Outcome<'_>, total: Duration) {
        let Some(exporter) = self.tracer.exporter().filter(|_| self.trace.sampled) else { return };
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("url.path", self.path.clone()),
            KeyValue::new("http.response.status_code", i64::from(outcome.status)),
            KeyValue::new("sparkrtc.request_id", self.request_id.clone()),
            KeyValue::new("sparkrtc.origin", outcome.origin),
        ];
        let optional = [
            ("sparkrtc.operation", self.operation.map(|op| op.name.to_owned())),
            ("sparkrtc.app", self.app.clone()),
            ("sparkrtc.caller", self.caller.clone()),
        ];
        attributes.extend(optional.into_iter().filter_map(|(k, v)| Some(KeyValue::new(k, v?))));
        let error = (outcome.status >= 500).then(|| outcome.decision.clone());
        let name = self.operation.map_or("unknown operation", |op| op.name);
        let call = Span { name, start: self.started_at, end: self.started_at + total, error, attributes };
        exporter.call(&self.trace, call, &self.phases);
    }
}

/// Whole milliseconds, as a JSON number.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// As `http.flavor` is written: `1.1`, `2`.
fn http_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "other",
    }
}

/// How a call ended, for the logs.
struct Outcome<'a> {
    status: u16,
    origin: &'static str,
    upstream_request_id: Option<&'a str>,
    response_bytes: Option<u64>,
    decision: String,
}

/// A call whose caller went away before it was answered still gets its access line and, for a
/// mutating operation, its audit record: the upstream may have acted on it. Status 499, as
/// nginx logs a request the client closed.
impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.finished {
            let outcome = Outcome {
                status: 499,
                origin: "caller",
                upstream_request_id: None,
                response_bytes: None,
                decision: "abandoned:caller-disconnected".to_owned(),
            };
            self.write(&outcome);
        }
    }
}
