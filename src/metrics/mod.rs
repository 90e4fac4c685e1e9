//! Prometheus metrics, rendered in the text exposition format on the admin listener.
//!
//! Label values are bounded by the configuration: apps are configured app ids (anything else is
//! `other`), operations are catalog names (or `-` before one is known), statuses are numbers.
//! No raw paths, user ids or caller keys ever become labels.

mod process;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::catalog::{Catalog, Operation};
use crate::error::GatewayError;
use crate::ratelimit::Via;

/// Histogram buckets, in seconds.
const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SLOTS: usize = 43; // 42 operations and "-"

struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// `sparkrtc_gateway_refusals_total` labels: app (already a bounded label) and reason.
type RefusalLabels = (String, &'static str);

/// Refusals by app and reason, shadow-mode decisions, upstream failures, token fetches and
/// reloads. Bumped only through the methods below, each named for the event it counts; read
/// through one method per counter.
#[derive(Debug, Default)]
pub struct Counters {
    refusals: Mutex<BTreeMap<RefusalLabels, u64>>,
    shadow_allowlist: AtomicU64,
    shadow_rate_limit: AtomicU64,
    upstream_connect_errors: AtomicU64,
    upstream_timeouts: AtomicU64,
    token_refreshes: AtomicU64,
    token_refresh_failures: AtomicU64,
    config_reloads: AtomicU64,
    config_reload_failures: AtomicU64,
}

/// One reader per counter: `counters.config_reload_failures()`.
macro_rules! readers {
    ($($name:ident),* $(,)?) => {
        impl Counters {
            $(
                #[doc = concat!("The `", stringify!($name), "` count so far.")]
                pub fn $name(&self) -> u64 {
                    self.$name.load(Ordering::Relaxed)
                }
            )*
        }
    };
}

readers!(
    shadow_allowlist,
    shadow_rate_limit,
    upstream_connect_errors,
    upstream_timeouts,
    token_refreshes,
    token_refresh_failures,
    config_reloads,
    config_reload_failures,
);

impl Counters {
    /// A call the gateway refused (or could not complete upstream), by reason; `app` must
    /// already be a bounded label.
    pub(crate) fn refused(&self, err: &GatewayError, app: &str) {
        use GatewayError::*;
        let reason = match err {
            NotAllowed(_)
            | UnknownCallerKey
            | InvalidCallerToken(_)
            | UnknownTokenSubject
            | AppNotServed { .. }
            | ProjectMismatch => "allowlist",
            RateLimited(_) => "rate_limit",
            InvalidBody(_) | BadHeader(_) | BodyTooLarge { .. } | BodyRead(_) | BodyTimeout { .. } => "validation",
            // Refused by the listener before the gateway sees the call; listed for exhaustiveness.
            AmbiguousFraming(_) => "validation",
            BadRoute(_) | UnknownOperation(_) => "routing",
            CredentialsUnavailable { .. } => "credentials",
            LimiterUnavailable(_) => "limiter_unavailable",
            UpstreamUnreachable(_) => return bump(&self.upstream_connect_errors),
            UpstreamTimeout { .. } => return bump(&self.upstream_timeouts),
            Internal(_) => return,
        };
        if let Ok(mut refusals) = self.refusals.lock() {
            *refusals.entry((app.to_owned(), reason)).or_default() += 1;
        }
    }

    /// Calls refused for `reason` (as in the metric's `reason` label), over every app.
    pub fn refusals(&self, reason: &str) -> u64 {
        let refusals = self.refusals.lock().map(|r| r.iter().filter(|((_, r), _)| *r == reason).map(|(_, n)| *n).sum());
        refusals.unwrap_or(0)
    }

    pub(crate) fn shadow_refused_by_allowlist(&self) {
        bump(&self.shadow_allowlist);
    }

    pub(crate) fn shadow_refused_by_rate_limit(&self) {
        bump(&self.shadow_rate_limit);
    }

    pub(crate) fn token_refreshed(&self) {
        bump(&self.token_refreshes);
    }

    pub(crate) fn token_refresh_failed(&self) {
        bump(&self.token_refresh_failures);
    }

    pub(crate) fn config_reloaded(&self) {
        bump(&self.config_reloads);
    }

    pub(crate) fn config_reload_failed(&self) {
        bump(&self.config_reload_failures);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The shared limiter backend: how long its decisions take and how it fails.
struct LimiterMetrics {
    decisions: Histogram,
    /// By kind: timeout, connection, response, setup.
    errors: [AtomicU64; 4],
    /// Calls forwarded because the backend could not decide and the limits said allow.
    failed_open: AtomicU64,
    /// Calls the local pre-check refused without a round trip.
    local_refusals: AtomicU64,
}

const BACKEND_ERROR_KINDS: [&str; 4] = ["timeout", "connection", "response", "setup"];

/// `sparkrtc_gateway_requests_total` labels: app, operation, status, origin.
type RequestLabels = (String, &'static str, u16, &'static str);

pub(crate) struct Metrics {
    pub counters: Counters,
    requests: Mutex<BTreeMap<RequestLabels, u64>>,
    call_latency: [Histogram; SLOTS],
    upstream_latency: [Histogram; SLOTS],
    in_flight: AtomicI64,
    /// Last measured offset of our clock from the upstream's `Date`, in seconds (ours minus theirs).
    clock_skew_secs: AtomicI64,
    limiter: LimiterMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Counters::default(),
            requests: Mutex::new(BTreeMap::new()),
            call_latency: std::array::from_fn(|_| Histogram::new()),
            upstream_latency: std::array::from_fn(|_| Histogram::new()),
            in_flight: AtomicI64::new(0),
            clock_skew_secs: AtomicI64::new(0),
            limiter: LimiterMetrics {
                decisions: Histogram::new(),
                errors: std::array::from_fn(|_| AtomicU64::new(0)),
                failed_open: AtomicU64::new(0),
                local_refusals: AtomicU64::new(0),
            },
        }
    }
}

fn slot(op: Option<&'static Operation>) -> usize {
    op.and_then(|op| Catalog.operations().iter().position(|o| std::ptr::eq(o, op))).unwrap_or(SLOTS - 1)
}

fn slot_name(i: usize) -> &'static str {
    Catalog.operations().get(i).map_or("-", |op| op.name)
}

/// Decrements the in-flight gauge when the call is over, however it ends.
pub(crate) struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Our clock minus the upstream's `Date`, in seconds, as last measured.
    pub(crate) fn clock_skew(&self, secs: i64) {
        self.clock_skew_secs.store(secs, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Records one finished call. `app` must already be a bounded label.
    pub(crate) fn call(
        &self,
        app: &str,
        op: Option<&'static Operation>,
        status: u16,
        origin: &'static str,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let i = slot(op);
        self.call_latency[i].observe(total);
        if let Some(up) = upstream {
            self.upstream_latency[i].observe(up);
        }
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((app.to_owned(), slot_name(i), status, origin)).or_default() += 1;
        }
    }

    /// Records how the limiter decided a call.
    pub(crate) fn limiter(&self, via: &Via) {
        let l = &self.limiter;
        match via {
            Via::Process => {}
            Via::Precheck => bump(&l.local_refusals),
            Via::Redis(took) => l.decisions.observe(*took),
            Via::BackendFailed { error_kind, admitted } => {
                if let Some(i) = BACKEND_ERROR_KINDS.iter().position(|k| k == error_kind) {
                    bump(&l.errors[i]);
                }
                if *admitted {
                    bump(&l.failed_open);
                }
            }
        }
    }

    /// The Prometheus text exposition (version 0.0.4). `profiles`: each profile and whether its
    /// credentials are usable; `backend_up`: the shared limiter's state (`None`: local).
    pub(crate) fn render(
        &self,
        ready: bool,
        profiles: &[(&str, bool)],
        backend_up: Option<bool>,
        upstream_resends: u64,
    ) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str("# HELP sparkrtc_gateway_requests_total Calls answered, by app, operation, status and who made the answer.\n");
        out.push_str("# TYPE sparkrtc_gateway_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((app, op, status, origin), n) in requests.iter() {
                let _ = writeln!(out, "sparkrtc_gateway_requests_total{{app=\"{}\",operation=\"{op}\",status=\"{status}\",origin=\"{origin}\"}} {n}", escape(app));
            }
        }
        self.histograms(
            &mut out,
            "sparkrtc_gateway_request_duration_seconds",
            "Whole call, from request head to response head.",
            &self.call_latency,
        );
        self.histograms(
            &mut out,
            "sparkrtc_gateway_upstream_duration_seconds",
            "Upstream part: from sending to SparkRTC's response head.",
            &self.upstream_latency,
        );
        let c = &self.counters;
        out.push_str("# HELP sparkrtc_gateway_refusals_total Calls the gateway refused, by app and reason.\n");
        out.push_str("# TYPE sparkrtc_gateway_refusals_total counter\n");
        if let Ok(refusals) = c.refusals.lock() {
            for ((app, reason), n) in refusals.iter() {
                let _ =
                    writeln!(out, "sparkrtc_gateway_refusals_total{{app=\"{}\",reason=\"{reason}\"}} {n}", escape(app));
            }
        }
        let shadow = [("allowlist", &c.shadow_allowlist), ("rate_limit", &c.shadow_rate_limit)];
        counter_family(
            &mut out,
            "sparkrtc_gateway_shadow_refusals_total",
            "Calls shadow-mode rules or limits would have refused, forwarded.",
            "reason",
            &shadow,
        );
        let upstream = [("connect", &c.upstream_connect_errors), ("timeout", &c.upstream_timeouts)];
        counter_family(
            &mut out,
            "sparkrtc_gateway_upstream_errors_total",
            "Upstream calls that failed, by kind.",
            "kind",
            &upstream,
        );
        let tokens = [("ok", &c.token_refreshes), ("failed", &c.token_refresh_failures)];
        counter_family(
            &mut out,
            "sparkrtc_gateway_token_refreshes_total",
            "IAM token fetches, by result.",
            "result",
            &tokens,
        );
        let reloads = [("ok", &c.config_reloads), ("failed", &c.config_reload_failures)];
        counter_family(
            &mut out,
            "sparkrtc_gateway_config_reloads_total",
            "Configuration reloads, by result.",
            "result",
            &reloads,
        );
        gauge(
            &mut out,
            "sparkrtc_gateway_in_flight_requests",
            "Calls being handled now.",
            self.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "sparkrtc_gateway_clock_skew_seconds",
            "Our clock minus the upstream's Date header, last seen.",
            self.clock_skew_secs.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "sparkrtc_gateway_ready",
            "1 when ready for traffic, 0 when draining or no app can be served.",
            i64::from(ready),
        );
        out.push_str("# HELP sparkrtc_gateway_profile_usable 1 while the profile's credentials can sign calls.\n");
        out.push_str("# TYPE sparkrtc_gateway_profile_usable gauge\n");
        for (name, usable) in profiles {
            let _ =
                writeln!(out, "sparkrtc_gateway_profile_usable{{profile=\"{}\"}} {}", escape(name), u8::from(*usable));
        }
        if let Some(up) = backend_up {
            self.render_limiter(&mut out, up);
        }
        let name = "sparkrtc_gateway_upstream_resends_total";
        let _ = writeln!(out, "# HELP {name} GETs sent to SparkRTC a second time after a pooled connection closed before answering (since the upstream client was built).\n# TYPE {name} counter\n{name} {upstream_resends}");
        process::render(&mut out);
        out
    }

    fn render_limiter(&self, out: &mut String, up: bool) {
        let l = &self.limiter;
        gauge(
            out,
            "sparkrtc_gateway_ratelimit_backend_up",
            "1 while the shared limiter backend (Redis) answers.",
            i64::from(up),
        );
        let name = "sparkrtc_gateway_ratelimit_backend_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Rate-limit decisions made by the shared backend, round trip included.\n# TYPE {name} histogram");
        write_histogram(out, name, "", &l.decisions);
        let errors: Vec<(&str, &AtomicU64)> = BACKEND_ERROR_KINDS.iter().copied().zip(&l.errors).collect();
        counter_family(
            out,
            "sparkrtc_gateway_ratelimit_backend_errors_total",
            "Rate-limit decisions the shared backend failed, by kind.",
            "kind",
            &errors,
        );
        let _ = writeln!(out, "# HELP sparkrtc_gateway_ratelimit_backend_failed_open_total Calls forwarded unlimited because the backend failed and on_backend_error is allow.\n# TYPE sparkrtc_gateway_ratelimit_backend_failed_open_total counter\nsparkrtc_gateway_ratelimit_backend_failed_open_total {}", l.failed_open.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP sparkrtc_gateway_ratelimit_local_refusals_total Calls the local pre-check refused without asking the backend.\n# TYPE sparkrtc_gateway_ratelimit_local_refusals_total counter\nsparkrtc_gateway_ratelimit_local_refusals_total {}", l.local_refusals.load(Ordering::Relaxed));
    }

    fn histograms(&self, out: &mut String, name: &str, help: &str, family: &[Histogram; SLOTS]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, h) in family.iter().enumerate() {
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            write_histogram(out, name, &format!("operation=\"{}\",", slot_name(i)), h);
        }
    }
}

/// One histogram's series; `labels` is empty or ends in a comma.
fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let count = h.count.load(Ordering::Relaxed);
    let mut cumulative = 0;
    for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
        cumulative += bucket.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let plain = labels.trim_end_matches(',');
    let braced = if plain.is_empty() { String::new() } else { format!("{{{plain}}}") };
    let _ = writeln!(out, "{name}_sum{braced} {sum}\n{name}_count{braced} {count}");
}

fn counter_family(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", n.load(Ordering::Relaxed));
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Label values escape `\`, `"` and newlines.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        let op = Catalog.by_name("RemoveUsers");
        m.call("app-1", op, 202, "upstream", Duration::from_millis(3), Some(Duration::from_millis(2)));
        m.call("other", None, 404, "gateway", Duration::from_micros(100), None);
        let text = m.render(true, &[("main", true), ("iam", false)], None, 0);
        assert!(text.contains("sparkrtc_gateway_requests_total{app=\"app-1\",operation=\"RemoveUsers\",status=\"202\",origin=\"upstream\"} 1"), "{text}");
        assert!(
            text.contains("sparkrtc_gateway_request_duration_seconds_bucket{operation=\"RemoveUsers\",le=\"0.005\"} 1")
        );
        assert!(text
            .contains("sparkrtc_gateway_request_duration_seconds_bucket{operation=\"RemoveUsers\",le=\"0.0025\"} 0"));
        assert!(text.contains("sparkrtc_gateway_upstream_duration_seconds_count{operation=\"RemoveUsers\"} 1"));
        assert!(text.contains(
            "sparkrtc_gateway_requests_total{app=\"other\",operation=\"-\",status=\"404\",origin=\"gateway\"} 1"
        ));
        assert!(text.contains("sparkrtc_gateway_ready 1"));
        assert!(text.contains("sparkrtc_gateway_profile_usable{profile=\"iam\"} 0"), "{text}");
        assert!(!text.contains("ratelimit_backend"), "no backend series with the local limiter");
    }

    #[test]
    fn renders_the_shared_limiter_backend() {
        let m = Metrics::default();
        m.limiter(&Via::Redis(Duration::from_micros(300)));
        m.limiter(&Via::Precheck);
        m.limiter(&Via::BackendFailed { error_kind: "timeout", admitted: true });
        m.limiter(&Via::BackendFailed { error_kind: "connection", admitted: false });
        let text = m.render(true, &[], Some(false), 0);
        for line in [
            "sparkrtc_gateway_ratelimit_backend_up 0",
            "sparkrtc_gateway_ratelimit_backend_duration_seconds_bucket{le=\"0.001\"} 1",
            "sparkrtc_gateway_ratelimit_backend_duration_seconds_count 1",
            "sparkrtc_gateway_ratelimit_backend_errors_total{kind=\"timeout\"} 1",
            "sparkrtc_gateway_ratelimit_backend_errors_total{kind=\"connection\"} 1",
            "sparkrtc_gateway_ratelimit_backend_failed_open_total 1",
            "sparkrtc_gateway_ratelimit_local_refusals_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
