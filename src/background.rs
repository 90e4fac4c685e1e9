//! Upstream calls that outlive their caller. A caller that hangs up while its call is at
//! SparkRTC (a client timeout, a load generator stopping, a pod going away) would drop the call
//! half-way: the pooled TLS connection it was on is closed, so the next call pays a new
//! handshake, and the access and audit records can only say "abandoned", although SparkRTC may
//! have acted. Instead the call goes on in a task of its own until its answer is in and read, so
//! the connection goes back to the pool and the record shows SparkRTC's status.
//!
//! Bounded twice: by the upstream's own timeouts (response headers, then each pause of the body),
//! and by a number of such calls at once. Past that number a call is dropped, as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::relay;
use crate::telemetry::CallRecord;
use crate::upstream;

/// Calls finished in the background at once, at most. Each holds a request, a pooled
/// connection and a record: a few kilobytes.
pub(crate) const MAX_BACKGROUND_CALLS: usize = 1024;

/// What one upstream call gives.
pub(crate) type Sent = Result<Response<Incoming>, upstream::Error>;

/// The room for background calls, shared by every call of the gateway.
#[derive(Clone)]
pub(crate) struct Slots {
    free: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Slots {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Slots { free: Arc::new(Semaphore::new(MAX_BACKGROUND_CALLS)), metrics }
    }

    /// Awaits `call` for `record`'s caller; if the caller goes first, the call is finished in
    /// the background when there is room (`idle`: the longest pause in the response body).
    pub(crate) fn guard<'a, F>(&'a self, call: F, record: &'a mut CallRecord, idle: Duration) -> Guarded<'a>
    where
        F: Future<Output = Sent> + Send + 'static,
    {
        Guarded {
            call: Some(Box::pin(call)),
            record,
            slots: self,
            idle,
            sent: Instant::now(),
            sent_at: SystemTime::now(),
        }
    }
}

/// An upstream call as its caller awaits it.
pub(crate) struct Guarded<'a> {
    call: Option<Pin<Box<dyn Future<Output = Sent> + Send>>>,
    record: &'a mut CallRecord,
    slots: &'a Slots,
    idle: Duration,
    sent: Instant,
    /// `sent` on the wall clock, for the upstream span.
    sent_at: SystemTime,
}

impl Future for Guarded<'_> {
    type Output = Sent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let Some(call) = self.call.as_mut() else { return Poll::Pending };
        let sent = std::task::ready!(call.as_mut().poll(cx));
        self.call = None;
        let (at, took) = (self.sent_at, self.sent.elapsed());
        self.record.upstream_done(at, took, sent.as_ref().err().map(ToString::to_string));
        Poll::Ready(sent)
    }
}

impl Drop for Guarded<'_> {
    /// Dropped before the answer: the caller went away.
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        // Off the runtime (it is shutting down) nothing can finish it; at the bound, nor can we.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Ok(slot) = self.slots.free.clone().try_acquire_owned() else { return };
        let record = self.record.detach();
        let sent = (self.sent, self.sent_at);
        runtime.spawn(finish(call, record, self.slots.metrics.clone(), sent, self.idle, slot));
    }
}

/// Awaits the answer, records it as the caller's answer would have been, and reads the body to
/// its end so the connection is kept.
async fn finish(
    call: Pin<Box<dyn Future<Output = Sent> + Send>>,
    mut record: CallRecord,
    metrics: Arc<Metrics>,
    (sent, sent_at): (Instant, SystemTime),
    idle: Duration,
    _slot: OwnedSemaphorePermit,
) {
    let answer = call.await;
    record.upstream_done(sent_at, sent.elapsed(), answer.as_ref().err().map(ToString::to_string));
    let rsp = match answer {
        Ok(rsp) => relay::to_caller(rsp, &record.request_id, idle),
        Err(e) => {
            let err = GatewayError::from(e);
            metrics.counters.refused(&err, record.app_label());
            record.failed(&err);
            err.to_response(&record.request_id)
        }
    };
    record.finish(&rsp);
    tracing::debug!(request_id = %record.request_id, status = rsp.status().as_u16(), "the caller left; its call finished in the background");
    // Each pause is bounded by `idle` (the body's stall timeout), so this ends.
    let _ = rsp.into_body().collect().await;
}
