//! Logging: set-up, the access log (one line per call), the audit trail (one record per
//! mutating call) and refusal counters. Nothing secret reaches a log line: secrets are
//! [`crate::secret::Secret`]s, which print as `[redacted]`, signed headers are never logged, and
//! callers appear by their configured name, never by their key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Method, Request, Response};
use tracing_subscriber::EnvFilter;

use crate::body::Body;
use crate::catalog::{Operation, Route};
use crate::config::{Log, LogFormat};
use crate::error::{GatewayError, HEADER_GATEWAY_ERROR};
use crate::policy::Identity;

/// Installs the global subscriber; a second call (tests, the demo) keeps the first.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What is known about one call as it moves through the phases.
pub struct CallRecord {
    pub request_id: String,
    started: Instant,
    method: Method,
    path: String,
    operation: Option<&'static Operation>,
    app: Option<String>,
    room: Option<String>,
    caller: Option<String>,
    user_ids: Option<Vec<String>>,
    shadow: Vec<String>,
    pub upstream_ms: Option<u128>,
}

impl CallRecord {
    pub fn start<B>(req: &Request<B>) -> Self {
        CallRecord {
            request_id: crate::request_id::from_caller(req.headers()),
            started: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            operation: None,
            app: None,
            room: None,
            caller: None,
            user_ids: None,
            shadow: Vec::new(),
            upstream_ms: None,
        }
    }

    pub fn route(&mut self, route: &Route) {
        self.operation = Some(route.operation);
        self.app.clone_from(&route.app);
        self.room = route.param("room_id").map(str::to_owned);
    }

    pub fn caller(&mut self, who: &Identity) {
        self.caller = Some(match &who.name {
            Some(name) => name.to_string(),
            None => format!("addr:{}", who.address),
        });
    }

    /// Keeps the user ids of a RemoveUsers body for the audit record.
    pub fn body(&mut self, json: Option<&serde_json::Value>) {
        let ids = json.and_then(|j| j.get("user_ids")).and_then(|ids| ids.as_array());
        self.user_ids = ids.map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect());
    }

    pub fn shadow(&mut self, why: &str) {
        tracing::info!(request_id = %self.request_id, shadow = why, "shadow mode: would refuse; forwarded");
        self.shadow.push(why.to_owned());
    }

    pub fn failed(&self, err: &GatewayError) {
        if err.parts().0.is_server_error() {
            tracing::warn!(request_id = %self.request_id, error = %err, cause = ?std::error::Error::source(err), "call failed");
        } else {
            tracing::debug!(request_id = %self.request_id, error = %err, "call refused");
        }
    }

    /// Writes the access-log line and, for mutating operations, the audit record.
    pub fn finish(&self, rsp: &Response<Body>) {
        let gateway_code = rsp.headers().get(HEADER_GATEWAY_ERROR).and_then(|v| v.to_str().ok());
        let upstream_request_id = match gateway_code {
            None => rsp.headers().get(crate::request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            Some(_) => "-",
        };
        let operation = self.operation.map_or("-", |op| op.name);
        tracing::info!(
            target: "access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            caller = self.caller.as_deref().unwrap_or("-"),
            operation,
            app = self.app.as_deref().unwrap_or("-"),
            status = rsp.status().as_u16(),
            origin = if gateway_code.is_some() { "gateway" } else { "upstream" },
            upstream_request_id,
            upstream_ms = self.upstream_ms.unwrap_or(0),
            total_ms = self.started.elapsed().as_millis(),
        );
        if self.operation.is_some_and(Operation::is_mutating) {
            let decision = match (gateway_code, self.shadow.is_empty()) {
                (Some(code), _) => format!("refused:{code}"),
                (None, true) => "allowed".to_owned(),
                (None, false) => "allowed:shadow-refused".to_owned(),
            };
            tracing::info!(
                target: "audit",
                request_id = %self.request_id,
                caller = self.caller.as_deref().unwrap_or("-"),
                app = self.app.as_deref().unwrap_or("-"),
                operation,
                room = self.room.as_deref().unwrap_or("-"),
                user_ids = %self.user_ids.as_ref().map_or_else(|| "-".to_owned(), |ids| ids.join(",")),
                decision,
                status = rsp.status().as_u16(),
                upstream_request_id,
            );
        }
    }
}

/// Refusal and shadow-mode counts, by reason.
#[derive(Debug, Default)]
pub struct Counters {
    pub refused_allowlist: AtomicU64,
    pub refused_rate_limit: AtomicU64,
    pub refused_validation: AtomicU64,
    pub shadow_allowlist: AtomicU64,
    pub shadow_rate_limit: AtomicU64,
}

impl Counters {
    pub fn refused(&self, err: &GatewayError) {
        let counter = match err {
            GatewayError::NotAllowed(_)
            | GatewayError::UnknownCallerKey
            | GatewayError::AppNotServed { .. }
            | GatewayError::ProjectMismatch => &self.refused_allowlist,
            GatewayError::RateLimited(_) => &self.refused_rate_limit,
            GatewayError::InvalidBody(_) | GatewayError::BadHeader(_) | GatewayError::BodyTooLarge { .. } => {
                &self.refused_validation
            }
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn shadow_allowlist(&self) {
        self.shadow_allowlist.fetch_add(1, Ordering::Relaxed);
    }

    pub fn shadow_rate_limit(&self) {
        self.shadow_rate_limit.fetch_add(1, Ordering::Relaxed);
    }
}
