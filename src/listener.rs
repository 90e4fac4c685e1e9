//! The accept loop: HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on a TCP or Unix socket,
//! optionally behind TLS, each connection served by a [`Handler`], and a graceful stop that
//! lets calls in flight finish. Connections are bounded in number and in idle time
//! (`connections`), and requests with ambiguous framing are refused before any handler sees
//! them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::error::GatewayError;
use crate::stream::{Either, MaybeTls};

mod connections;

pub(crate) use connections::{Connection, ConnectionLimits, Connections, Tracked, DEFAULT_MAX_CONNECTIONS};

/// Slow-loris guard: once a request head has started, it must be complete within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After the gateway starts closing a connection that has carried calls, how long it may stay
/// idle (an HTTP/2 peer answering the GOAWAY's ping) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed accept, so a persistent error (no file descriptors) does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where a call came from: the TCP peer, and the names on its client certificate if any.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert_names: Arc<[String]>,
}

impl Peer {
    /// A TCP peer with no client certificate.
    pub fn tcp(addr: SocketAddr) -> Self {
        Peer { addr, cert_names: Arc::new([]) }
    }
}

/// Anything that answers requests: the gateway, the admin endpoints, the sandbox.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers one request from `peer`; never fails: errors are answers too.
    fn call(&self, req: Request<Incoming>, peer: Peer) -> impl Future<Output = Response<Body>> + Send;
}

/// A bound socket to accept from.
pub enum Socket {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Socket {
    async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Socket::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Either::A(s), peer))
            }
            // A Unix-socket peer is a process on this host: it counts as loopback for policy.
            #[cfg(unix)]
            Socket::Unix(l) => Ok((Either::B(l.accept().await?.0), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))),
        }
    }
}

/// An accepted connection: TCP, or a Unix socket.
#[cfg(unix)]
pub(crate) type Stream = Either<TcpStream, tokio::net::UnixStream>;
/// An accepted connection (TCP only where there are no Unix sockets).
#[cfg(not(unix))]
pub(crate) type Stream = Either<TcpStream, TcpStream>;

/// Serves until `shutdown` resolves, then stops accepting (the socket is closed, so new
/// connections are refused) and waits up to `grace` for open connections to finish their calls.
/// Connections are bounded by `ConnectionLimits::default`.
pub async fn serve<H: Handler>(
    socket: impl Into<Socket>,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let connections = Connections::new(ConnectionLimits::default());
    serve_with(socket, tls, handler, shutdown, grace, connections).await;
}

/// [`serve`], with the open connections counted and bounded by `connections` (which two
/// sockets of one gateway may share).
pub(crate) async fn serve_with<H: Handler>(
    socket: impl Into<Socket>,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    connections: Arc<Connections>,
) {
    let socket = socket.into();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let shared = Arc::new(Shared { builder, acceptor: tls.map(TlsAcceptor::from), handler });
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut failures = 0u64;
    loop {
        // At the limit, new connections wait in the kernel backlog while room is made.
        let accepted = tokio::select! {
            accepted = async { connections.room().await; socket.accept().await } => accepted,
            () = &mut shutdown => break,
        };
        let (stream, addr) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                accept_failed(&e, &connections, &mut failures).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(failures, "accepting connections again");
            failures = 0;
        }
        let conn = connections.open();
        tokio::spawn(connection(shared.clone(), stream, addr, conn, stopping.clone()));
    }
    drop(socket);
    let _ = stop.send(true);
    tokio::select! {
        () = connections.all_closed() => tracing::debug!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), "grace period over; closing remaining connections"),
    }
}

/// What every connection task of one listener needs.
struct Shared<H> {
    builder: auto::Builder<TokioExecutor>,
    acceptor: Option<TlsAcceptor>,
    handler: H,
}

/// An accept error never ends the loop: out of file descriptors (EMFILE, ENFILE), the longest
/// idle connection is closed to free one, and the loop backs off briefly instead of spinning.
/// The first failure of a run is a warning; the rest go to debug so a flood cannot fill the log.
async fn accept_failed(e: &io::Error, connections: &Connections, failures: &mut u64) {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    let out_of_descriptors = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
    let shed = out_of_descriptors && connections.shed_one();
    if *failures == 0 {
        tracing::warn!(error = %crate::cause::ErrorChain(e), open = connections.len(), shed, "accept failed; backing off");
    } else {
        tracing::debug!(error = %crate::cause::ErrorChain(e), open = connections.len(), shed, "accept failed; backing off");
    }
    *failures += 1;
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Why a connection is being closed by the gateway.
#[derive(Debug, Clone, Copy)]
enum Closing {
    Idle,
    Evicted,
    Stopping,
}

impl Closing {
    /// The reason as a log value (a word, not `Debug` output).
    fn as_str(&self) -> &'static str {
        match self {
            Closing::Idle => "idle",
            Closing::Evicted => "evicted",
            Closing::Stopping => "stopping",
        }
    }
}

/// Serves one connection: TLS handshake, then HTTP/1.1 or HTTP/2, until the peer closes it,
/// it stays idle too long, the accept loop evicts it, or the listener stops.
async fn connection<H: Handler>(
    shared: Arc<Shared<H>>,
    stream: Stream,
    addr: SocketAddr,
    conn: Connection,
    mut stopping: watch::Receiver<bool>,
) {
    let idle_timeout = conn.idle_timeout();
    let conn = Arc::new(conn);
    // The idle clock runs from accept: the handshake and the first request head count.
    let handshake = tokio::select! {
        io = handshake(&shared.acceptor, stream, addr) => io,
        () = conn.idle_for(idle_timeout) => return tracing::debug!(peer = %addr, "closing a connection idle since accept"),
        () = conn.evicted() => return tracing::debug!(peer = %addr, "evicted an idle connection"),
        _ = stopping.wait_for(|s| *s) => return,
    };
    let Some((io, peer)) = handshake else { return };
    let service = {
        let (shared, conn) = (shared.clone(), conn.clone());
        service_fn(move |req: Request<Incoming>| {
            let (shared, peer, call) = (shared.clone(), peer.clone(), conn.call());
            async move {
                let rsp = match crate::relay::framing(req.headers()) {
                    Ok(()) => shared.handler.call(req, peer).await,
                    Err(err) => refuse_framing(&err, &req, &peer),
                };
                Ok::<_, Infallible>(rsp.map(|body| Tracked::new(body, call)))
            }
        })
    };
    let served = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let closing = tokio::select! {
        _ = served.as_mut() => return,
        () = conn.idle_for(idle_timeout) => Closing::Idle,
        () = conn.evicted() => Closing::Evicted,
        _ = stopping.wait_for(|s| *s) => Closing::Stopping,
    };
    tracing::debug!(peer = %addr, reason = closing.as_str(), calls = conn.calls(), "closing a connection");
    // A connection that never carried a call has nothing a graceful close would protect.
    if conn.calls() == 0 {
        return;
    }
    // HTTP/1.1: closes at once when idle, after the response otherwise. HTTP/2: GOAWAY, then
    // streams in flight finish. A peer that never answers the GOAWAY's ping cannot hold the
    // connection: it is dropped once idle for CLOSE_GRACE.
    served.as_mut().graceful_shutdown();
    tokio::select! {
        _ = served.as_mut() => {}
        () = conn.idle_for(CLOSE_GRACE) => {}
    }
}

/// Finishes TLS when the listener has it. `None`: the handshake failed.
async fn handshake(acceptor: &Option<TlsAcceptor>, stream: Stream, addr: SocketAddr) -> Option<(Accepted, Peer)> {
    let Some(acceptor) = acceptor else { return Some((Either::A(stream), Peer::tcp(addr))) };
    match acceptor.accept(stream).await {
        Ok(tls) => {
            let names = crate::tls::peer_names(tls.get_ref().1);
            Some((Either::B(Box::new(tls)), Peer { addr, cert_names: names.into() }))
        }
        Err(e) => {
            tracing::debug!(peer = %addr, error = %crate::cause::ErrorChain(&e), "TLS handshake failed");
            None
        }
    }
}

/// The answer to a request whose framing is ambiguous (RFC 9112 §6.1): the refusal, and
/// `Connection: close`, since where the next request would start is exactly what is unclear.
fn refuse_framing(err: &GatewayError, req: &Request<Incoming>, peer: &Peer) -> Response<Body> {
    let request_id = crate::request_id::from_caller(req.headers());
    tracing::warn!(request_id = %request_id, peer = %peer.addr, method = %req.method(), error = %crate::cause::ErrorChain(err), "request refused for its framing; closing the connection");
    let mut rsp = err.to_response(&request_id);
    crate::relay::mark(rsp.headers_mut(), &request_id);
    rsp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    rsp
}

impl From<TcpListener> for Socket {
    fn from(l: TcpListener) -> Self {
        Socket::Tcp(l)
    }
}

#[cfg(unix)]
impl From<tokio::net::UnixListener> for Socket {
    fn from(l: tokio::net::UnixListener) -> Self {
        Socket::Unix(l)
    }
}

/// A connection with or without TLS.
type Accepted = MaybeTls<Stream, tokio_rustls::server::TlsStream<Stream>>;
