//! Logging: set-up, the access log (one line per call), the audit trail (one record per
//! mutating call) and refusal counters. Nothing secret reaches a log line: secrets are
//! [`crate::secret::Secret`]s, which print as `[redacted]`, signed headers are never logged, and
//! callers appear by their configured name, never by their key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use tracing_subscriber::EnvFilter;

use crate::body::Body;
use crate::catalog::{Operation, Route};
use crate::cause::Causes;
use crate::config::{Log, LogFormat};
use crate::error::{GatewayError, HEADER_GATEWAY_ERROR};
use crate::metrics::Metrics;
use crate::policy::Identity;

/// Installs the global subscriber; a second call (tests, the demo) keeps the first.
pub(crate) fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colour codes only for a person at a terminal, never into files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What is known about one call as it moves through the phases.
pub(crate) struct CallRecord {
    pub request_id: String,
    started: Instant,
    method: Method,
    path: String,
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
    finished: bool,
}

impl CallRecord {
    pub(crate) fn start<B>(req: &Request<B>, metrics: Arc<Metrics>) -> Self {
        CallRecord {
            request_id: crate::request_id::from_caller(req.headers()),
            started: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
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
            finished: false,
        }
    }

    /// Moves the record out, leaving behind one that writes nothing: for a call that goes on
    /// after its caller left (`background`), whose record is written when it ends.
    pub(crate) fn detach(&mut self) -> CallRecord {
        let husk = CallRecord {
            request_id: String::new(),
            started: self.started,
            method: Method::GET,
            path: String::new(),
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
            metrics: self.metrics.clone(),
            finished: true,
        };
        std::mem::replace(self, husk)
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

    /// Keeps the size and the user ids of a RemoveUsers body for the logs.
    pub(crate) fn body(&mut self, bytes: usize, json: Option<&serde_json::Value>) {
        self.request_bytes = bytes;
        let ids = json.and_then(|j| j.get("user_ids")).and_then(|ids| ids.as_array());
        self.user_ids = ids.map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect());
    }

    pub(crate) fn shadow(&mut self, why: &str) {
        tracing::info!(request_id = %self.request_id, shadow = why, "shadow mode: would refuse; forwarded");
        self.shadow.push(why.to_owned());
    }

    pub(crate) fn failed(&self, err: &GatewayError) {
        if err.parts().0.is_server_error() {
            tracing::warn!(request_id = %self.request_id, error = %err, cause = %Causes(err), "call failed");
        } else {
            tracing::debug!(request_id = %self.request_id, error = %err, "call refused");
        }
    }

    /// Writes the access-log line, the metrics and, for mutating operations, the audit record.
    pub(crate) fn finish(&mut self, rsp: &Response<Body>) {
        let gateway_code = rsp.headers().get(HEADER_GATEWAY_ERROR).and_then(|v| v.to_str().ok());
        let upstream_request_id = match gateway_code {
            None => rsp.headers().get(crate::request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            Some(_) => "-",
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
        let app_label = self.served_app.as_deref().unwrap_or(self.app_label);
        self.metrics.call(app_label, self.operation, outcome.status, outcome.origin, total, self.upstream);
        let operation = self.operation.map_or("-", |op| op.name);
        tracing::info!(
            target: "access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            caller = self.caller.as_deref().unwrap_or("-"),
            operation,
            app = self.app.as_deref().unwrap_or("-"),
            status = outcome.status,
            origin = outcome.origin,
            upstream_request_id = outcome.upstream_request_id,
            request_bytes = self.request_bytes,
            response_bytes = outcome.response_bytes.map_or_else(|| "stream".to_owned(), |n| n.to_string()),
            upstream_ms = self.upstream.map_or(0, |d| d.as_millis()),
            total_ms = total.as_millis(),
        );
        if self.operation.is_some_and(Operation::is_mutating) {
            tracing::info!(
                target: "audit",
                request_id = %self.request_id,
                caller = self.caller.as_deref().unwrap_or("-"),
                app = self.app.as_deref().unwrap_or("-"),
                operation,
                room = self.room.as_deref().unwrap_or("-"),
                user_ids = %self.user_ids.as_ref().map_or_else(|| "-".to_owned(), |ids| ids.join(",")),
                decision = outcome.decision.as_str(),
                status = outcome.status,
                upstream_request_id = outcome.upstream_request_id,
            );
        }
    }
}

/// How a call ended, for the logs.
struct Outcome<'a> {
    status: u16,
    origin: &'static str,
    upstream_request_id: &'a str,
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
                upstream_request_id: "-",
                response_bytes: None,
                decision: "abandoned:caller-disconnected".to_owned(),
            };
            self.write(&outcome);
        }
    }
}
