//! A connection that is one of two kinds, decided per connection: TCP or a Unix socket (the
//! listener's accepted connections), plain or TLS (the listener's with a certificate, the
//! upstream client's for `https://` endpoints). One set of I/O impls for all of them,
//! delegating to whichever it is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One of two streams. For plain-or-TLS, the TLS session is boxed by the caller: a session is
/// over a kilobyte, a plain stream a few words.
pub(crate) enum Either<A, B> {
    A(A),
    B(B),
}

/// A plain connection, or TLS over one.
pub(crate) type MaybeTls<P, T> = Either<P, Box<T>>;

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Either::A($s) => $e,
            Either::B($s) => $e,
        }
    };
}

impl<A, B> AsyncRead for Either<A, B>
where
    A: AsyncRead + Unpin,
    B: AsyncRead + Unpin,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<A, B> AsyncWrite for Either<A, B>
where
    A: AsyncWrite + Unpin,
    B: AsyncWrite + Unpin,
{
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

/// For the upstream pool: nothing about the connection (proxy, ALPN) changes how hyper uses it.
impl<A, B> Connection for Either<A, B> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
