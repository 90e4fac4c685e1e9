//! The accept loop: HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on a TCP or Unix socket,
//! optionally behind TLS, each connection served by a [`Handler`], and a graceful stop that
//! lets calls in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::gateway::Peer;

/// Slow-loris guard: a connection must send its request head (and finish TLS) within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long calls in flight may take to finish after the stop signal, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Anything that answers requests: the gateway, the admin endpoints, the sandbox.
pub trait Handler: Clone + Send + Sync + 'static {
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
                Ok((Stream::Tcp(s), peer))
            }
            // A Unix-socket peer is a process on this host: it counts as loopback for policy.
            #[cfg(unix)]
            Socket::Unix(l) => Ok((Stream::Unix(l.accept().await?.0), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))),
        }
    }
}

/// An accepted connection.
pub enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            #[cfg(unix)]
            Stream::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Serves until `shutdown` resolves, then stops accepting (the socket is closed, so new
/// connections are refused) and waits up to `grace` for open connections to finish their calls.
pub async fn serve<H: Handler>(
    socket: impl Into<Socket>,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let socket = socket.into();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (handler, builder, acceptor, watcher) =
            (handler.clone(), builder.clone(), acceptor.clone(), graceful.watcher());
        tokio::spawn(async move {
            let (io, peer) = match acceptor {
                None => (Either::Plain(stream), Peer::tcp(addr)),
                Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let names = crate::tls::peer_names(tls.get_ref().1);
                        (Either::Tls(Box::new(tls)), Peer { addr, cert_names: names.into() })
                    }
                    Ok(Err(e)) => return tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(peer = %addr, "TLS handshake timed out"),
                },
            };
            let service = service_fn(move |req| {
                let (handler, peer) = (handler.clone(), peer.clone());
                async move { Ok::<_, Infallible>(handler.call(req, peer).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(io), service).into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(socket);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_ms = grace.as_millis(), "grace period over; closing remaining connections"),
    }
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
enum Either {
    Plain(Stream),
    Tls(Box<tokio_rustls::server::TlsStream<Stream>>),
}

impl AsyncRead for Either {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Either::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Either::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Either {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Either::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Either::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Either::Plain(s) => Pin::new(s).poll_flush(cx),
            Either::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Either::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Either::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
