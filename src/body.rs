//! The response body type: a gateway-made body held in memory, or the upstream's body streamed
//! through frame by frame, never buffered whole. A streamed body that stalls longer than the
//! response timeout ends with an error, so a caller is never left hanging mid-body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{sleep, Sleep};

use crate::cause::BoxError;
use crate::upstream::{Error as UpstreamError, Phase};

/// The body of every response the gateway sends: one it made, or the upstream's streamed.
pub enum Body {
    Full(Option<Bytes>),
    Upstream { inner: Incoming, idle: Duration, timer: Pin<Box<Sleep>> },
}

impl Body {
    /// A body held in memory; an empty one sends no data frame.
    pub fn full(bytes: Bytes) -> Self {
        Body::Full(Some(bytes).filter(|b| !b.is_empty()))
    }

    /// No body.
    pub fn empty() -> Self {
        Body::Full(None)
    }

    /// The upstream's body, streamed. An empty one (a 202) needs no stall timer.
    pub fn upstream(inner: Incoming, idle: Duration) -> Self {
        if http_body::Body::is_end_stream(&inner) {
            return Body::empty();
        }
        Body::Upstream { inner, idle, timer: Box::pin(sleep(idle)) }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream { inner, idle, timer } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    timer.as_mut().reset(tokio::time::Instant::now() + *idle);
                    Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
                }
                Poll::Pending => match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(UpstreamError::Timeout { phase: Phase::Body, after: *idle }.into())))
                    }
                    Poll::Pending => Poll::Pending,
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
