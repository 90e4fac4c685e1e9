//! The least a signing proxy can be on this stack, as a benchmark reference (`benches/run.sh`):
//! hyper's HTTP/1.1 server in, hyper-util's pooled legacy client over rustls out, each call
//! signed with the crate's signer (`SDK-HMAC-SHA256`). No policy, limits, validation, logs or
//! metrics: what the stack alone costs, so the gateway's own cost is the difference.
//!
//! ```sh
//! cargo run --release --example min_signing_proxy -- LISTEN UPSTREAM_HOST:PORT CA_PEM
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use sparkrtc_gateway::secret::Secret;
use sparkrtc_gateway::signer::{self, Algorithm, CanonicalQuery, HeaderList, SdkDate, SignInput, SigningKey};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TLS connection the legacy client can pool.
struct Tls(TlsStream<TcpStream>);

impl Connection for Tls {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
impl AsyncRead for Tls {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}
impl AsyncWrite for Tls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// TCP then TLS to the one upstream.
#[derive(Clone)]
struct Connector(HttpConnector, TlsConnector);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Tls>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<TokioIo<Tls>, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut http, tls) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let name = rustls_pki_types::ServerName::try_from(uri.host().unwrap_or_default().to_owned())?;
            let tcp = http.call(uri).await?.into_inner();
            Ok(TokioIo::new(Tls(tls.connect(name, tcp).await?)))
        })
    }
}

struct Proxy {
    client: Client<Connector, Full<Bytes>>,
    authority: String,
    key: SigningKey,
}

impl Proxy {
    async fn call(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, BoxError> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut headers: HeaderList = [("X-Project-Id", "0123456789abcdef0123456789abcdef")].into_iter().collect();
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            headers.set("Content-Type", ct);
        }
        let query = CanonicalQuery::parse(parts.uri.query().unwrap_or(""));
        let path = parts.uri.path();
        let input =
            SignInput { method: parts.method.as_str(), host: &self.authority, path, query: &query, body: &body };
        signer::sign(&input, &mut headers, &self.key, SdkDate::from_system_time(SystemTime::now()))?;
        let uri = format!("https://{}{}", self.authority, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        let mut out = Request::builder().method(parts.method).uri(uri);
        for (name, value) in headers.iter() {
            out = out.header(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?);
        }
        let rsp = self.client.request(out.body(Full::new(body))?).await?;
        let (parts, body) = rsp.into_parts();
        let mut answer = Response::new(Full::new(body.collect().await?.to_bytes()));
        *answer.status_mut() = parts.status;
        if let Some(id) = parts.headers.get("x-request-id") {
            answer.headers_mut().insert("x-request-id", id.clone());
        }
        Ok(answer)
    }
}

async fn serve(listen: String, upstream: String, ca: String) -> Result<(), BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = Connector(http, TlsConnector::from(Arc::new(tls)));
    let key = SigningKey {
        algorithm: Algorithm::HmacSha256,
        access_key: Secret::new("BENCHAKEXAMPLE000000"),
        secret_key: Secret::new("BENCHSKEXAMPLE0000000000000000000000000"),
        security_token: None,
    };
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let proxy = Arc::new(Proxy { client, authority: upstream, key });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move {
                    let answer = proxy.call(req).await.unwrap_or_else(|_| {
                        let mut failed = Response::new(Full::new(Bytes::new()));
                        *failed.status_mut() = http::StatusCode::BAD_GATEWAY;
                        failed
                    });
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = || "usage: min_signing_proxy LISTEN UPSTREAM_HOST:PORT CA_PEM";
    let (listen, upstream, ca) =
        (args.next().ok_or_else(usage)?, args.next().ok_or_else(usage)?, args.next().ok_or_else(usage)?);
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(listen, upstream, ca))
}
