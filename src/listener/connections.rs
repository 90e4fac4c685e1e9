//! The open client connections of a listener: how many there are, which are idle and since
//! when. It bounds both of the things a silent client could otherwise hold for ever:
//!
//! - time: a connection with no call in flight (from accept, through the TLS handshake, between
//!   keep-alive requests, or an HTTP/2 connection without streams) is closed after the idle
//!   timeout;
//! - descriptors: at `max_connections` the accept loop stops accepting (new connections wait in
//!   the kernel backlog) and closes the connection idle the longest to make room. Connections
//!   with a call in flight are never evicted; when every one is busy, the loop waits for one to
//!   finish or close.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cause::BoxError;

/// How long a connection may stay open with nothing in flight, by default.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Open connections per listener when nothing else is said.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The limits one listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { idle_timeout: DEFAULT_IDLE_TIMEOUT, max_connections: DEFAULT_MAX_CONNECTIONS }
    }
}

/// The registry of one listener's open connections (shared when two sockets serve the same
/// gateway, so the limit counts both).
pub(crate) struct Connections {
    limits: ConnectionLimits,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    /// A connection closed or went idle: room may have appeared.
    changed: Notify,
    /// The limit was hit and not yet left, so it is logged once per episode, not per accept.
    at_limit: AtomicBool,
}

/// One connection's activity.
struct Slot {
    activity: Mutex<Activity>,
    /// This connection's activity changed.
    changed: Notify,
    /// The accept loop wants this connection closed.
    evict: Notify,
}

struct Activity {
    in_flight: usize,
    /// Calls started on this connection so far.
    calls: u64,
    idle_since: Instant,
    evicting: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent at every await point, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connections {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Self> {
        let max_connections = limits.max_connections.max(1);
        Arc::new(Connections {
            limits: ConnectionLimits { max_connections, ..limits },
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            changed: Notify::new(),
            at_limit: AtomicBool::new(false),
        })
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.open).len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a connection just accepted; it counts until the returned handle is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> Connection {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            activity: Mutex::new(Activity { in_flight: 0, calls: 0, idle_since: Instant::now(), evicting: false }),
            changed: Notify::new(),
            evict: Notify::new(),
        });
        lock(&self.open).insert(id, slot.clone());
        Connection { id, slot, registry: self.clone() }
    }

    /// Returns once a new connection may be accepted. At the limit, asks the connections idle
    /// the longest to close (as many as needed for one more) and waits for them to go.
    pub(crate) async fn room(&self) {
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.make_room() {
                if !waited {
                    self.at_limit.store(false, Ordering::Relaxed);
                }
                return;
            }
            waited = true;
            if !self.at_limit.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_connections = self.limits.max_connections,
                    "connection limit reached: not accepting until a connection closes; closing the longest idle ones"
                );
            }
            changed.await;
        }
    }

    /// `false` when there is room now; otherwise evicts what it can and returns `true`.
    fn make_room(&self) -> bool {
        let open = lock(&self.open);
        if open.len() < self.limits.max_connections {
            return false;
        }
        // Room for one more means this many fewer.
        let excess = open.len() + 1 - self.limits.max_connections;
        let evicting = open.values().filter(|s| lock(&s.activity).evicting).count();
        let wanted = excess.saturating_sub(evicting);
        evict_oldest_idle(&open, wanted);
        true
    }

    /// Closes the connection idle the longest, if any (the accept loop does this when the
    /// process runs out of file descriptors).
    pub(crate) fn shed_one(&self) -> bool {
        evict_oldest_idle(&lock(&self.open), 1) > 0
    }

    /// Returns when no connection is open any more.
    pub(crate) async fn all_closed(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_empty() {
                return;
            }
            changed.await;
        }
    }
}

/// Asks up to `n` idle connections, the longest idle first, to close. Returns how many.
fn evict_oldest_idle(open: &HashMap<u64, Arc<Slot>>, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut idle: Vec<(Instant, u64, &Arc<Slot>)> = open
        .iter()
        .filter_map(|(id, slot)| {
            let a = lock(&slot.activity);
            (a.in_flight == 0 && !a.evicting).then_some((a.idle_since, *id, slot))
        })
        .collect();
    idle.sort_unstable_by_key(|(since, id, _)| (*since, *id));
    let chosen = idle.into_iter().take(n);
    let mut count = 0;
    for (_, _, slot) in chosen {
        lock(&slot.activity).evicting = true;
        // `notify_one` keeps a permit, so an eviction asked before the task waits is not lost.
        slot.evict.notify_one();
        count += 1;
    }
    count
}

/// One open connection's handle, held by its task.
pub(crate) struct Connection {
    id: u64,
    slot: Arc<Slot>,
    registry: Arc<Connections>,
}

impl Connection {
    /// Marks a call as started; the call counts as in flight until the guard is dropped, which
    /// [`Tracked`] does when the response body has been sent.
    pub(crate) fn call(&self) -> CallGuard {
        {
            let mut a = lock(&self.slot.activity);
            a.in_flight += 1;
            a.calls += 1;
        }
        self.slot.changed.notify_waiters();
        CallGuard { slot: self.slot.clone(), registry: self.registry.clone() }
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.registry.limits.idle_timeout
    }

    /// Calls started on this connection.
    pub(crate) fn calls(&self) -> u64 {
        lock(&self.slot.activity).calls
    }

    /// Resolves once nothing has been in flight for `timeout`, counted from the last call's end
    /// or from now, whichever is later.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let changed = self.slot.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let a = lock(&self.slot.activity);
                (a.in_flight == 0).then(|| a.idle_since.max(start) + timeout)
            };
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Resolves when the accept loop wants this connection closed to make room.
    pub(crate) async fn evicted(&self) {
        self.slot.evict.notified().await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        lock(&self.registry.open).remove(&self.id);
        self.registry.changed.notify_waiters();
    }
}

/// A call in flight on a connection.
pub(crate) struct CallGuard {
    slot: Arc<Slot>,
    registry: Arc<Connections>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let idle = {
            let mut a = lock(&self.slot.activity);
            a.in_flight = a.in_flight.saturating_sub(1);
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
            }
            a.in_flight == 0
        };
        self.slot.changed.notify_waiters();
        if idle {
            self.registry.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its call in flight until the last frame is sent (or the body is
/// dropped), so a connection streaming a long answer is neither idle nor evictable.
pub(crate) struct Tracked<B> {
    inner: B,
    guard: Option<CallGuard>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, guard: CallGuard) -> Self {
        Tracked { inner, guard: Some(guard) }
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_connections: usize) -> Arc<Connections> {
        Connections::new(ConnectionLimits { idle_timeout: Duration::from_secs(60), max_connections })
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_connection_is_asked_to_close_never_a_busy_one() {
        let conns = registry(3);
        let busy = conns.open();
        let _call = busy.call();
        tokio::time::advance(Duration::from_secs(1)).await;
        let older = conns.open();
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = conns.open();
        let room = conns.room();
        tokio::pin!(room);
        tokio::select! {
            () = &mut room => panic!("room at the limit"),
            () = older.evicted() => {}
            () = newer.evicted() => panic!("the newer idle connection was chosen"),
            () = busy.evicted() => panic!("a busy connection was chosen"),
        }
        drop(older);
        room.await;
        assert_eq!(conns.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_call() {
        let conns = registry(10);
        let conn = conns.open();
        let call = conn.call();
        let idle = conn.idle_for(Duration::from_secs(5));
        tokio::pin!(idle);
        tokio::select! {
            () = &mut idle => panic!("idle with a call in flight"),
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        drop(call);
        let ended = Instant::now();
        idle.await;
        assert_eq!(ended.elapsed(), Duration::from_secs(5));
    }
}
