//! `[trace]`: W3C trace context is always on; this table says which share of new traces is
//! sampled and, optionally, the OTLP/HTTP collector that sampled calls' spans are sent to.

use std::time::Duration;

use http::Uri;

use super::reader::{Problems, Table};

pub(crate) const DEFAULT_SERVICE_NAME: &str = "sparkrtc-gateway";
pub(crate) const DEFAULT_SAMPLE_RATIO: f64 = 1.0;
/// The OpenTelemetry SDK's own default (`OTEL_BSP_MAX_QUEUE_SIZE`): about 1 MB of spans.
pub(crate) const DEFAULT_MAX_QUEUE_SIZE: u64 = 2048;
pub(crate) const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);

/// `[trace]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The collector's OTLP/HTTP traces URL; `None`: spans are not exported.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// The share of calls without a caller's `traceparent` that are sampled, 0 to 1.
    pub sample_ratio: f64,
    /// Spans waiting for export at most; more are dropped while the collector is down.
    pub max_queue_size: usize,
    /// How often queued spans are sent.
    pub export_interval: Duration,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            otlp_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sample_ratio: DEFAULT_SAMPLE_RATIO,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE as usize,
            export_interval: DEFAULT_EXPORT_INTERVAL,
        }
    }
}

pub(super) fn trace(t: &mut Table<'_>, p: &mut Problems) -> Trace {
    let otlp_endpoint = t.string("otlp_endpoint", p).and_then(|text| endpoint(t, text, p));
    let service_name = t.string("service_name", p).unwrap_or(DEFAULT_SERVICE_NAME).to_owned();
    let sample_ratio = t.fraction("sample_ratio", p).unwrap_or(DEFAULT_SAMPLE_RATIO);
    let max_queue_size = t.integer("max_queue_size", 1, 1_000_000, p).unwrap_or(DEFAULT_MAX_QUEUE_SIZE);
    let export_interval = t
        .duration("export_interval", Duration::from_millis(100), Duration::from_secs(600), p)
        .unwrap_or(DEFAULT_EXPORT_INTERVAL);
    Trace {
        otlp_endpoint,
        service_name,
        sample_ratio,
        max_queue_size: usize::try_from(max_queue_size).unwrap_or(usize::MAX),
        export_interval,
    }
}

/// The exporter speaks plain HTTP (its client is the hyper one already in the gateway, without
/// TLS): a collector agent beside the gateway is the usual setup.
fn endpoint(t: &Table<'_>, text: &str, p: &mut Problems) -> Option<String> {
    let key = t.key_path("otlp_endpoint");
    match text.parse::<Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Some(text.to_owned()),
        Ok(uri) if uri.scheme_str() == Some("https") => {
            p.push(key, format!("{text:?}: the OTLP exporter sends plain HTTP; point it at a collector agent on this host or network, like \"http://127.0.0.1:4318/v1/traces\""));
            None
        }
        _ => {
            p.push(key, format!("{text:?} is not an http:// URL; write it like \"http://127.0.0.1:4318/v1/traces\""));
            None
        }
    }
}
