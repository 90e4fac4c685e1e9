//! W3C trace context and OTLP export against a collector stand-in that decodes the protobuf:
//! a caller's trace arrives with the same trace id and the caller's span as parent, with child
//! spans for the credentials and the upstream call; calls succeed while the collector is down;
//! the stop sequence flushes what is queued.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sparkrtc_gateway::body::Body;
use sparkrtc_gateway::listener::{self, Handler, Peer};
use support::{mock_upstream, parse_config, Harness, Reply};
use tokio::sync::Notify;

/// A generous bound on any one wait, so a broken build fails instead of hanging CI.
const PATIENCE: Duration = Duration::from_secs(30);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const USERS: &str = r#"{"user_ids":["u1"]}"#;

/// An OTLP/HTTP collector stand-in: keeps every span it is sent, with its service name.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    arrived: Arc<Notify>,
}

impl Handler for Collector {
    async fn call(&self, req: Request<Incoming>, _peer: Peer) -> Response<Body> {
        assert_eq!(req.uri().path(), "/v1/traces");
        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let export = ExportTraceServiceRequest::decode(bytes).unwrap();
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let spans = resource.scope_spans.into_iter().flat_map(|s| s.spans);
            self.spans.lock().unwrap().extend(spans.map(|s| (service.clone(), s)));
        }
        self.arrived.notify_waiters();
        Response::new(Body::empty())
    }
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(listener::serve(l, None, collector.clone(), std::future::pending(), Duration::from_secs(1)));
        (collector, addr)
    }

    /// The spans of `trace_id` once `count` have arrived.
    async fn wait_for(&self, trace_id: &str, count: usize) -> Vec<(String, Span)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            let spans: Vec<_> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, s)| hex::encode(&s.trace_id) == trace_id)
                .cloned()
                .collect();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "{} of {count} spans arrived",
                spans.len()
            );
        }
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn trace_config(collector: SocketAddr, extra: &str) -> String {
    format!("\n[trace]\notlp_endpoint = \"http://{collector}/v1/traces\"\nservice_name = \"gw-under-test\"\n{extra}")
}

async fn gateway(trace: String) -> (sparkrtc_gateway::Running, Harness) {
    let (upstream, _, text) = mock_upstream(|_| Reply::status(202), |a| support::config_text(a, &trace)).await;
    let gw = sparkrtc_gateway::Gateway::new(parse_config(&text)).unwrap();
    let running = sparkrtc_gateway::start(gw, None).await.unwrap();
    let h = Harness::around(&running, upstream);
    (running, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_arrives_at_the_collector_with_its_parent_and_child_spans() {
    let (collector, addr) = Collector::start().await;
    let (_running, h) = gateway(trace_config(addr, "export_interval = \"1s\"")).await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let path = format!("/v2/apps/{}/rooms/room-1/batch-remove-users", support::APP);
    let headers = [("content-type", "application/json"), ("traceparent", traceparent.as_str())];
    assert_eq!(h.call("POST", &path, &headers, USERS).await.status, 202);

    let spans = collector.wait_for(TRACE_ID, 3).await;
    assert!(spans.iter().all(|(service, _)| service == "gw-under-test"));
    let spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
    let call = spans.iter().find(|s| s.name == "RemoveUsers").expect("the call's span");
    assert_eq!(hex::encode(&call.parent_span_id), CALLER_SPAN, "the caller's span is the parent");
    assert_eq!(attribute(call, "sparkrtc.operation").as_deref(), Some("RemoveUsers"));
    assert_eq!(attribute(call, "sparkrtc.app").as_deref(), Some(support::APP));
    assert_eq!(attribute(call, "http.response.status_code").as_deref(), Some("202"));
    for child in ["credentials", "upstream"] {
        let span = spans.iter().find(|s| s.name == child).unwrap_or_else(|| panic!("no {child} span"));
        assert_eq!(span.parent_span_id, call.span_id, "{child} is a child of the call");
    }
    // SparkRTC is told the trace, with the gateway's upstream span as the parent.
    let upstream_span = spans.iter().find(|s| s.name == "upstream").unwrap();
    let sent = h.upstream.seen()[0].headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(sent, format!("00-{TRACE_ID}-{}-01", hex::encode(&upstream_span.span_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_succeed_while_the_collector_is_down_and_the_stop_sequence_ends() {
    let down = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (running, h) = gateway(trace_config(down, "export_interval = \"1s\"\nmax_queue_size = 4")).await;
    for _ in 0..20 {
        assert_eq!(h.remove_users(USERS).await.status, 202);
    }
    tokio::time::timeout(PATIENCE, running.stop()).await.expect("the stop sequence ends with the collector down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_sequence_flushes_queued_spans() {
    let (collector, addr) = Collector::start().await;
    // No scheduled export before the stop: only the flush can deliver the span.
    let (running, h) = gateway(trace_config(addr, "export_interval = \"10m\"")).await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let headers = [("traceparent", traceparent.as_str())];
    assert_eq!(h.call("GET", &format!("/v2/apps/{}", support::APP), &headers, "").await.status, 202);
    assert!(collector.spans.lock().unwrap().is_empty());
    tokio::time::timeout(PATIENCE, running.stop()).await.unwrap();
    let spans = collector.wait_for(TRACE_ID, 3).await;
    assert!(spans.iter().any(|(_, s)| s.name == "ShowApp"), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_call_is_traced_by_id_but_not_exported() {
    let (collector, addr) = Collector::start().await;
    let (running, h) = gateway(trace_config(addr, "export_interval = \"10m\"\nsample_ratio = 0")).await;
    assert_eq!(h.remove_users(USERS).await.status, 202);
    let sent = h.upstream.seen()[0].headers["traceparent"].to_str().unwrap().to_owned();
    assert!(sent.starts_with("00-") && sent.ends_with("-00"), "forwarded, not sampled: {sent}");
    tokio::time::timeout(PATIENCE, running.stop()).await.unwrap();
    assert!(collector.spans.lock().unwrap().is_empty());
}
