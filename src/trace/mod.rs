//! W3C Trace Context for each call (https://www.w3.org/TR/trace-context/): the trace a call
//! belongs to, taken from the caller's `traceparent` / `tracestate` when they are valid and
//! started here otherwise, and the `traceparent` forwarded to SparkRTC. The access line logs
//! the trace id; [`export`] sends the call's spans to an OTLP collector when one is configured.
//!
//! This module knows nothing of the configuration: the config builds a [`Tracer`] from its
//! `[trace]` table.

pub(crate) mod export;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

pub(crate) use export::Exporter;

/// `version "-" trace-id "-" parent-id "-" trace-flags`: 2 + 1 + 32 + 1 + 16 + 1 + 2 (section 3.2.2).
const TRACEPARENT_LEN: usize = 55;

/// Section 3.3.1.1: a `tracestate` holds at most 32 list-members.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// How calls are traced: which share is sampled, and where sampled spans go. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Tracer {
    sample_ratio: f64,
    exporter: Option<Arc<Exporter>>,
}

impl Tracer {
    /// Traces every call for its ids; `exporter` receives the spans of sampled ones. Calls
    /// without a caller's `traceparent` are sampled with probability `sample_ratio`; calls with
    /// one follow the caller's sampled flag, so a trace is kept or dropped whole.
    pub(crate) fn new(sample_ratio: f64, exporter: Option<Exporter>) -> Self {
        Tracer { sample_ratio, exporter: exporter.map(Arc::new) }
    }

    /// The trace of a call with these request headers.
    pub(crate) fn start(&self, headers: &HeaderMap) -> CallTrace {
        let ids = RandomIdGenerator::default();
        let caller = caller_context(headers);
        let (trace_id, parent, sampled, state) = match caller {
            Some(c) => (c.trace_id, Some(c.span_id), c.flags.is_sampled(), c.state),
            None => {
                let sampled = self.sample_ratio >= 1.0 || rand_ratio(&ids) < self.sample_ratio;
                (ids.new_trace_id(), None, sampled, TraceState::NONE)
            }
        };
        CallTrace {
            trace_id,
            trace_id_hex: trace_id.to_string(),
            parent,
            span_id: ids.new_span_id(),
            upstream_span_id: ids.new_span_id(),
            sampled,
            state,
        }
    }

    /// Where a sampled call's spans go, if anywhere.
    pub(crate) fn exporter(&self) -> Option<&Exporter> {
        self.exporter.as_deref()
    }

    /// Sends the spans still queued, waiting at most `timeout` (the stop sequence calls this).
    pub(crate) async fn flush(&self, timeout: std::time::Duration) {
        if let Some(exporter) = &self.exporter {
            exporter.shutdown(timeout).await;
        }
    }
}

/// A number in [0, 1) from the id generator's randomness (no second random source).
fn rand_ratio(ids: &RandomIdGenerator) -> f64 {
    let bits = u64::from_be_bytes(ids.new_span_id().to_bytes());
    // The top 53 bits fill an f64's mantissa exactly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The trace one call belongs to, and the gateway's spans in it.
#[derive(Clone)]
pub(crate) struct CallTrace {
    pub(crate) trace_id: TraceId,
    trace_id_hex: String,
    /// The caller's span, when it sent a valid `traceparent`.
    pub(crate) parent: Option<SpanId>,
    /// The gateway's span for the whole call.
    pub(crate) span_id: SpanId,
    /// The child span for the call to SparkRTC: the parent SparkRTC sees in `traceparent`.
    pub(crate) upstream_span_id: SpanId,
    pub(crate) sampled: bool,
    /// The caller's `tracestate`, forwarded unchanged (section 3.3: a participant that does
    /// not add its own entry passes the list on as received).
    pub(crate) state: TraceState,
}

impl CallTrace {
    /// The trace id, 32 lowercase hex digits.
    pub(crate) fn trace_id(&self) -> &str {
        &self.trace_id_hex
    }

    pub(crate) fn flags(&self) -> TraceFlags {
        if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        }
    }

    /// Sets `traceparent` (and `tracestate` when the caller sent one) on a request to SparkRTC,
    /// naming the gateway's upstream span as the parent.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        let parent = format!("00-{}-{}-{:02x}", self.trace_id, self.upstream_span_id, self.flags().to_u8());
        if let Ok(value) = HeaderValue::from_str(&parent) {
            headers.insert("traceparent", value);
        }
        let state = self.state.header();
        if !state.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&state) {
                headers.insert("tracestate", value);
            }
        }
    }
}

/// What a caller's valid `traceparent` (and `tracestate`) say.
struct CallerContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    state: TraceState,
}

/// The caller's context, or `None` when it sent no `traceparent`, several, or an invalid one:
/// then the gateway starts a new trace (section 4.3) and drops the `tracestate` too, which only
/// has meaning with its `traceparent` (section 3.3).
fn caller_context(headers: &HeaderMap) -> Option<CallerContext> {
    let mut parents = headers.get_all("traceparent").iter();
    let (Some(parent), None) = (parents.next(), parents.next()) else { return None };
    let (trace_id, span_id, flags) = parse_traceparent(parent.to_str().ok()?)?;
    Some(CallerContext { trace_id, span_id, flags, state: tracestate(headers) })
}

/// Section 3.2.2. Version 00 is exactly 55 characters; a later version may append fields after
/// a `-`, and is read as version 00 (section 4.3, "versioning of traceparent"). Version `ff`,
/// upper-case hex and all-zero ids are invalid.
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < TRACEPARENT_LEN || !value.is_ascii() {
        return None;
    }
    let version = &value[0..2];
    let extended = bytes.len() > TRACEPARENT_LEN;
    if !is_lower_hex(version) || version == "ff" || (version == "00" && extended) {
        return None;
    }
    if extended && bytes[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !(is_lower_hex(trace) && is_lower_hex(span) && is_lower_hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, span_id, TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8())))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The caller's `tracestate`, all its header lines joined (section 3.3.1), or empty when it
/// does not parse or has more than 32 members.
fn tracestate(headers: &HeaderMap) -> TraceState {
    let lines: Option<Vec<&str>> = headers.get_all("tracestate").iter().map(|v| v.to_str().ok()).collect();
    let Some(lines) = lines else { return TraceState::NONE };
    let joined = lines.join(",");
    let members: Vec<&str> = joined.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()).collect();
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return TraceState::NONE;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut valid =
        |m: &str| m.split_once('=').is_some_and(|(k, v)| valid_key(k) && valid_value(v) && seen.insert(k.to_owned()));
    if !members.iter().all(|m| valid(m)) {
        return TraceState::NONE;
    }
    members.join(",").parse().unwrap_or(TraceState::NONE)
}

/// Section 3.3.1.3.1: `simple-key`, or `tenant-id "@" system-id`.
fn valid_key(key: &str) -> bool {
    let rest = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b));
    match key.split_once('@') {
        None => key.len() <= 256 && key.as_bytes().first().is_some_and(u8::is_ascii_lowercase) && rest(key),
        Some((tenant, system)) => {
            let tenant_ok = tenant.len() <= 241
                && tenant.as_bytes().first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && rest(tenant);
            let system_ok =
                system.len() <= 14 && system.as_bytes().first().is_some_and(u8::is_ascii_lowercase) && rest(system);
            tenant_ok && system_ok
        }
    }
}

/// Section 3.3.1.3.2: up to 256 printable ASCII characters but `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    let printable = |b: u8| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=';
    value.len() <= 256 && value.bytes().all(printable) && value.as_bytes().last().is_some_and(|b| *b != b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn a_valid_traceparent_is_continued() {
        let t = Tracer::default().start(&headers(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent, Some(SpanId::from_hex("00f067aa0ba902b7").unwrap()));
        assert!(t.sampled);
        let mut out = HeaderMap::new();
        t.inject(&mut out);
        let sent = out["traceparent"].to_str().unwrap();
        assert_eq!(sent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.upstream_span_id));
        assert_eq!(out["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        let bad = [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with more fields
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",    // short
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separator
        ];
        for value in bad {
            let t = Tracer::new(0.0, None).start(&headers(&[("traceparent", value), ("tracestate", "a=b")]));
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{value}");
            assert_eq!(t.parent, None, "{value}");
            assert!(!t.sampled, "{value}: ratio 0 samples nothing new");
            assert_eq!(t.state.header(), "", "{value}");
        }
        let twice = headers(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert_eq!(Tracer::default().start(&twice).parent, None);
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-holds";
        let t = Tracer::default().start(&headers(&[("traceparent", later)]));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled, "only the sampled bit is kept");
        assert_eq!(t.flags().to_u8(), 1);
    }

    #[test]
    fn an_invalid_tracestate_is_dropped_and_the_traceparent_kept() {
        for state in ["a=b,a=c", "UPPER=x", "=x", "k=v=w"] {
            let t = Tracer::default().start(&headers(&[("traceparent", VALID), ("tracestate", state)]));
            assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(t.state.header(), "", "{state}");
        }
        let split = headers(&[("traceparent", VALID), ("tracestate", "a=1"), ("tracestate", "b=2")]);
        assert_eq!(Tracer::default().start(&split).state.header(), "a=1,b=2");
    }

    #[test]
    fn without_a_caller_context_the_sample_ratio_decides() {
        assert!(Tracer::new(1.0, None).start(&HeaderMap::new()).sampled);
        assert!(!Tracer::new(0.0, None).start(&HeaderMap::new()).sampled);
        let (a, b) = (Tracer::default().start(&HeaderMap::new()), Tracer::default().start(&HeaderMap::new()));
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.trace_id().len(), 32);
    }
}
