//! Test harness: the gateway in-process on 127.0.0.1:0 in front of a mock SparkRTC that listens
//! with real TLS (the committed test CA in tests/data/certs), re-verifies every signature from
//! the bytes it received, records every request and answers as each test scripts it.

#![allow(dead_code)]
// Shared by several test crates: `pub` is how each reaches these helpers, not a library surface.
#![allow(unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sparkrtc_gateway::body::Body;
use sparkrtc_gateway::config::{Config, Profile};
use sparkrtc_gateway::listener::{self, Handler};
use sparkrtc_gateway::sandbox::{self, Rejection};
use sparkrtc_gateway::signer::SdkDate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const AK: &str = "AKTEST0000000000001";
pub const SK: &str = "SKTEST-secret-key-value-0000000000000000";
pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";
pub const APP: &str = "app-123";

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

/// A request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub verified: Result<String, Rejection>,
}

pub enum Reply {
    With {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answer.
    Stall,
    /// Say the request arrived, then answer 202 once released.
    Gate {
        arrived: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    },
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::With { status, headers: vec![("X-request-Id", "up-req-1".to_owned())], body: String::new() }
    }
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
pub struct MockUpstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    profiles: Arc<Mutex<Vec<Arc<Profile>>>>,
    script: Script,
}

impl MockUpstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The keys signatures are verified with from now on (after a key rotation).
    pub fn verify_with(&self, profiles: Vec<Arc<Profile>>) {
        *self.profiles.lock().unwrap_or_else(|e| panic!("{e}")) = profiles;
    }
}

impl Handler for MockUpstream {
    async fn call(&self, req: Request<Incoming>, _peer: sparkrtc_gateway::gateway::Peer) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let now = SdkDate::from_system_time(std::time::SystemTime::now());
        let profiles = self.profiles.lock().map(|p| p.clone()).unwrap_or_default();
        let verified = sandbox::verify(&parts, &body, &profiles, now).map(|p| p.name.clone());
        let seen = Seen {
            method: parts.method.to_string(),
            path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: parts.headers.clone(),
            body,
            verified,
        };
        let reply = (self.script)(&seen);
        if let Ok(mut all) = self.seen.lock() {
            all.push(seen);
        }
        match reply {
            Reply::Stall => std::future::pending().await,
            Reply::Gate { arrived, release } => {
                arrived.notify_one();
                release.notified().await;
                let mut rsp = Response::new(Body::empty());
                *rsp.status_mut() = StatusCode::ACCEPTED;
                rsp.headers_mut().insert("x-request-id", http::HeaderValue::from_static("up-gated"));
                rsp
            }
            Reply::With { status, headers, body } => {
                let mut rsp = Response::new(Body::full(Bytes::from(body)));
                *rsp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                for (name, value) in headers {
                    rsp.headers_mut().insert(name, value.parse().unwrap_or_else(|_| panic!("header {name}")));
                }
                rsp
            }
        }
    }
}

/// The test config's upstream response timeout: long enough that a busy CI machine (two cores
/// shared with parallel builds) never turns a slow answer into a 504. A test that wants a 504
/// stalls the upstream ([`Reply::Stall`]) and sets its own short timeout with
/// [`with_response_timeout`]: a stall outlasts any timeout, so its length decides nothing.
pub const RESPONSE_TIMEOUT: &str = "10s";

/// `text` with the upstream response timeout set to `timeout`.
pub fn with_response_timeout(text: &str, timeout: &str) -> String {
    text.replace(&format!("response_timeout = \"{RESPONSE_TIMEOUT}\""), &format!("response_timeout = \"{timeout}\""))
}

/// Lets any caller run any operation, for tests about everything but the allowlist.
pub const ALLOW_ALL: &str = r#"allow = [{ callers = ["*"], operations = ["*"] }]"#;

/// The gateway config the tests use, pointed at `upstream` over TLS; `extra` is appended.
pub fn config_text(upstream: SocketAddr, extra: &str) -> String {
    config_with(upstream, ALLOW_ALL, ALLOW_ALL, extra)
}

/// Like [`config_text`], with the app's and the account's policy keys given.
pub fn config_with(upstream: SocketAddr, app_policy: &str, account_policy: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 4096
drain_delay = "0s"

[admin]
listen = "127.0.0.1:0"

[upstream]
endpoint = "https://127.0.0.1:{port}"
ca_file = "{ca}"
connect_timeout = "5s"
response_timeout = "{RESPONSE_TIMEOUT}"

[profiles.main]
access_key = "{AK}"
secret_key_env = "TEST_SK"
project_id = "{PROJECT}"

[apps."{APP}"]
profile = "main"
{app_policy}

[account]
profile = "main"
{account_policy}
{extra}
"#,
        port = upstream.port(),
        ca = data("certs/ca.pem").display(),
    )
}

pub fn parse_config(text: &str) -> Config {
    Config::parse(text, "test.toml", Path::new("."), &|name| (name == "TEST_SK").then(|| SK.to_owned()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A running pair: gateway in front of a TLS mock upstream.
pub struct Harness {
    pub gateway: SocketAddr,
    /// The running gateway, for its counters.
    pub instance: Option<sparkrtc_gateway::Gateway>,
    pub upstream: MockUpstream,
    pub upstream_addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Harness {
    start_with(script, |addr| config_text(addr, "")).await
}

/// A mock upstream on TLS; the config text is made by `config` from its address.
pub async fn mock_upstream(
    script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    config: impl FnOnce(SocketAddr) -> String,
) -> (MockUpstream, SocketAddr, String) {
    mock_upstream_on(true, script, config).await
}

/// A mock upstream with or without TLS.
pub async fn mock_upstream_on(
    tls: bool,
    script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    config: impl FnOnce(SocketAddr) -> String,
) -> (MockUpstream, SocketAddr, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let text = config(addr);
    let profiles = parse_config(&text).profiles.values().cloned().collect();
    let upstream =
        MockUpstream { seen: Arc::default(), profiles: Arc::new(Mutex::new(profiles)), script: Arc::new(script) };
    let tls = tls.then(|| {
        sparkrtc_gateway::tls::server_config(&data("certs/server.pem"), &data("certs/server.key"))
            .unwrap_or_else(|e| panic!("{e}"))
    });
    tokio::spawn(listener::serve(listener, tls, upstream.clone(), std::future::pending(), Duration::from_secs(1)));
    (upstream, addr, text)
}

/// A harness whose config is made by `config` from the mock upstream's address.
pub async fn start_with(
    script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    config: impl FnOnce(SocketAddr) -> String,
) -> Harness {
    let (upstream, upstream_addr, text) = mock_upstream(script, config).await;
    let config = parse_config(&text);
    let instance = sparkrtc_gateway::Gateway::new(config).unwrap_or_else(|e| panic!("{e}"));
    let gateway = start_gateway_instance(instance.clone()).await;
    Harness {
        gateway,
        instance: Some(instance),
        upstream,
        upstream_addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

pub async fn start_gateway(config: Config) -> SocketAddr {
    start_gateway_instance(sparkrtc_gateway::Gateway::new(config).unwrap_or_else(|e| panic!("{e}"))).await
}

pub async fn start_gateway_instance(gw: sparkrtc_gateway::Gateway) -> SocketAddr {
    let running = sparkrtc_gateway::start(gw, None).await.unwrap_or_else(|e| panic!("{e}"));
    let addr = running.addr;
    // The gateway lives as long as the test's runtime.
    std::mem::forget(running);
    addr
}

/// What the caller got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }

    /// Asserts a gateway-made refusal: status, code, marker header, SparkRTC shape, request id.
    pub fn assert_gateway_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("x-gateway-error"), Some(code), "{self:?}");
        let json = self.json();
        assert_eq!(json["error_code"], code, "{self:?}");
        assert!(json["error_msg"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        assert!(self.header("x-request-id").is_some_and(|id| !id.is_empty()), "{self:?}");
    }
}

impl Harness {
    /// A harness for a running gateway in front of `upstream`.
    pub fn around(running: &sparkrtc_gateway::Running, upstream: MockUpstream) -> Harness {
        Harness {
            gateway: running.addr,
            instance: Some(running.gateway.clone()),
            upstream_addr: running.addr,
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A harness around a gateway started elsewhere, with no mock upstream of its own.
    pub fn client_for(gateway: SocketAddr) -> Harness {
        let upstream =
            MockUpstream { seen: Arc::default(), profiles: Arc::default(), script: Arc::new(|_| Reply::Stall) };
        Harness {
            gateway,
            instance: None,
            upstream,
            upstream_addr: gateway,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.call_at(self.gateway, method, path, headers, body).await
    }

    /// A call to any address with this harness's client (e.g. the admin listener).
    pub async fn call_at(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap_or_else(|e| panic!("{e}"));
        let rsp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("the gateway hung"))
            .unwrap_or_else(|e| panic!("{e}"));
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn remove_users(&self, body: &str) -> Answer {
        self.call(
            "POST",
            &format!("/v2/apps/{APP}/rooms/room-456/batch-remove-users"),
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Sends raw bytes, for request targets an HTTP client library would not produce.
    pub async fn raw(&self, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.gateway).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        if String::from_utf8_lossy(&out).contains("\r\n\r\n{") && out.ends_with(b"}") {
                            break;
                        }
                    }
                }
            }
        });
        read.await.unwrap_or_else(|_| panic!("the gateway hung"));
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// This test binary's log output, as JSON lines, captured at trace level from first use on.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(sink.clone()))
            .init();
        buffer
    })
    .clone()
}

/// The captured log text, after checking every line against the log schema
/// ([`logline::check`]).
pub fn checked_log_text(logs: &Mutex<Vec<u8>>) -> String {
    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| panic!("{e}"))).into_owned();
    let bad: Vec<String> = text.lines().filter_map(|line| logline::check(line).err()).collect();
    assert!(bad.is_empty(), "{} log line(s) fail the schema:\n{}", bad.len(), bad.join("\n"));
    text
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| panic!("{e}")).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
pub mod logline;
pub mod process;
pub mod redis;
