//! The upstream client: one rustls configuration and one keep-alive connection pool for the
//! gateway's life. Connecting (TCP and TLS together) and waiting for the response headers have
//! separate timeouts; redirects are relayed, never followed, so the gateway only ever talks to
//! the one configured endpoint.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::cause::{BoxError, ErrorChain};
use crate::stream::{Either, MaybeTls};

#[derive(Debug, Clone, PartialEq, Eq)]
/// The upstream client's settings, from `[upstream]`.
pub struct Settings {
    pub scheme: Scheme,
    /// Plain `http://` endpoints (SparkRTC's or IAM's) are allowed: local testing only.
    pub allow_http: bool,
    /// Sent and signed as `Host`; includes the port only when the endpoint names one.
    pub authority: Authority,
    pub connect_timeout: Duration,
    /// From the request being sent until the response headers arrive, and the longest pause
    /// between two pieces of the response body.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// Idle connections kept at most; `None`: as many as were in use, until the idle timeout.
    pub pool_max_idle_per_host: Option<usize>,
    /// Extra PEM CA certificates trusted besides the bundled web PKI roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    settings: Settings,
    /// GETs and HEADs sent a second time (below), shared by the clones of this client.
    resends: Arc<AtomicU64>,
}

impl Upstream {
    /// Fails only when the TLS configuration (the extra CA file) cannot be built.
    pub(crate) fn new(config: &Settings) -> Result<Self, crate::tls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = TlsConnector::from(crate::tls::client_config(config.ca_file.as_deref())?);
        let connector = Connector { http, tls, allow_http: config.allow_http, timeout: config.connect_timeout };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host.unwrap_or(usize::MAX))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(Upstream { client, settings: config.clone(), resends: Arc::default() })
    }

    /// Requests sent a second time since this client was built: the upstream saw each twice.
    pub(crate) fn resends(&self) -> u64 {
        self.resends.load(Ordering::Relaxed)
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.settings.response_timeout
    }

    /// A client with these settings that also speaks plain http, for the node-local credential
    /// endpoints (metadata, pod identity), which are http by design. This client itself when
    /// it already does.
    pub(crate) fn allowing_http(&self) -> Result<Upstream, crate::tls::Error> {
        if self.settings.allow_http {
            return Ok(self.clone());
        }
        Upstream::new(&Settings { allow_http: true, ..self.settings.clone() })
    }

    /// Sends one signed request; `Err` when it could not be sent or no response headers came
    /// back within the response timeout.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Error> {
        let after = self.settings.response_timeout;
        match tokio::time::timeout(after, self.request(req)).await {
            Err(_) => Err(Error::Timeout { phase: Phase::Response, after }),
            Ok(result) => result,
        }
    }

    /// Sends one request with no overall deadline (the caller sets its own: IAM calls have
    /// theirs) beyond the connect timeout.
    ///
    /// A pooled connection the far end closed just as the request went out fails with no
    /// answer. GET and HEAD are then sent once more on a fresh connection: they are safe to
    /// repeat (RFC 9110 section 9.2.2 lets a client retry idempotent requests after a connection
    /// failure). Nothing else is: SparkRTC may have acted on a POST before the connection went.
    pub(crate) async fn request(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Error> {
        let again = matches!(*req.method(), Method::GET | Method::HEAD).then(|| copy(&req));
        match (self.client.request(req).await, again) {
            (Err(e), Some(again)) if closed_before_answer(&e) => {
                tracing::debug!(error = %ErrorChain(&e), "pooled upstream connection closed before an answer; sending the GET again");
                self.resends.fetch_add(1, Ordering::Relaxed);
                self.client.request(again).await.map_err(classify)
            }
            (result, _) => result.map_err(classify),
        }
    }
}

fn copy(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut again = Request::new(req.body().clone());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// The request went out on an established connection and the connection ended before the
/// response headers: not a refused or timed-out connect, not an answer.
fn closed_before_answer(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof);
        }
        source = err.source();
    }
    false
}

/// Sorts a client error by where it arose; the client's error is kept as the cause.
fn classify(e: hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(Error::Timeout { phase, after }) = err.downcast_ref::<Error>() {
            return Error::Timeout { phase: *phase, after: *after };
        }
        source = err.source();
    }
    if e.is_connect() {
        Error::Connect(e)
    } else {
        Error::Protocol(e)
    }
}

/// Why the upstream (SparkRTC, or IAM and the other credential endpoints, which share this
/// client) gave no answer. Each caller words it for its own peer: the request path as
/// "SparkRTC could not be reached", the IAM client as "IAM could not be reached".
#[derive(Debug)]
pub enum Error {
    /// A phase of the exchange took longer than its timeout.
    Timeout { phase: Phase, after: Duration },
    /// No connection: DNS, TCP or TLS failed, or the scheme is not allowed. The cause says which.
    Connect(hyper_util::client::legacy::Error),
    /// The connection broke or the far end did not speak HTTP.
    Protocol(hyper_util::client::legacy::Error),
}

/// The part of an exchange a timeout cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP and TLS together.
    Connect,
    /// From sending the request to the response headers.
    Response,
    /// A pause between two pieces of the response body.
    Body,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Timeout { phase: Phase::Connect, after } => {
                write!(f, "connecting took longer than {} ms", after.as_millis())
            }
            Error::Timeout { phase: Phase::Response, after } => {
                write!(f, "no response headers within {} ms", after.as_millis())
            }
            Error::Timeout { phase: Phase::Body, after } => {
                write!(f, "the response body sent nothing for {} ms", after.as_millis())
            }
            Error::Connect(_) => f.write_str("cannot connect"),
            Error::Protocol(_) => f.write_str("the connection failed before a complete answer"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Timeout { .. } => None,
            Error::Connect(e) | Error::Protocol(e) => Some(e),
        }
    }
}

/// TCP, then TLS, both inside one connect timeout. TLS is chosen by each request's own scheme
/// (SparkRTC's and IAM's endpoints may differ), and plain http only where the config allows it.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    tls: TlsConnector,
    allow_http: bool,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut http, tls, timeout) = (self.http.clone(), self.tls.clone(), self.timeout);
        let use_tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP && self.allow_http => false,
            _ => return Box::pin(async move { Err(format!("refusing to connect to {uri}: not https").into()) }),
        };
        Box::pin(async move {
            let connect = async {
                let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
                let tcp = http.call(uri).await?.into_inner();
                if !use_tls {
                    return Ok::<_, BoxError>(TokioIo::new(Either::A(tcp)));
                }
                let name = ServerName::try_from(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Ok(TokioIo::new(Either::B(Box::new(tls.connect(name, tcp).await?))))
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout { phase: Phase::Connect, after: timeout }.into()),
            }
        })
    }
}

/// A pooled upstream connection.
type Stream = TokioIo<MaybeTls<TcpStream, TlsStream<TcpStream>>>;
