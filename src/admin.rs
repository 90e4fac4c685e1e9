//! The admin listener, apart from the proxy listener so probes never collide with SparkRTC
//! paths: `/healthz` (the process is alive), `/readyz` (config loaded, credentials usable, not
//! draining) and `/metrics` (Prometheus text).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::gateway::Gateway;
use crate::listener::Handler;
use crate::listener::Peer;

#[derive(Clone)]
pub(crate) struct Admin {
    gateway: Gateway,
}

impl Admin {
    pub(crate) fn new(gateway: Gateway) -> Self {
        Admin { gateway }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut rsp = Response::new(Body::full(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

impl Handler for Admin {
    async fn call(&self, req: Request<Incoming>, _peer: Peer) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_owned());
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" => {
                let report = self.gateway.readiness();
                let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                text(status, "text/plain", report.text)
            }
            "/metrics" => {
                text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.gateway.render_metrics())
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", "admin endpoints: /healthz /readyz /metrics\n".to_owned()),
        }
    }
}
