//! Credentials that expire, one cache per profile: IAM tokens (`X-Auth-Token`, fetched by
//! [`super::iam`]) and temporary AK/SK handed out by the platform ([`super::platform`]). Each is
//! reused until close to expiry and refreshed ahead of it; what is fetched and from where is the
//! [`Source`]'s business, when and how often is this cache's, the same for every kind.
//!
//! Exactly one fetch is in flight however many calls need a token. The fetch runs as a task of
//! its own, so a call that stops waiting (after `token_wait`, or because its caller went away)
//! never cancels it: the next call finds its token. A failed fetch is never cached: it is
//! retried with backoff (1 s, doubling, at most 60 s) counted from the END of the failed attempt,
//! so a stalled IAM is not asked again the moment its timeout fires; a still-valid older token
//! keeps serving meanwhile. With no valid token at all, calls get a clean local 503 with
//! Retry-After. A token IAM hands over already expired, or with less than [`MIN_TOKEN_LIFE`]
//! left, is a failed fetch: it is never sent.
//!
//! When to refresh comes from the token's own lifetime, not from the config alone: a token is
//! refreshed `refresh_before` ahead of its expiry, but never before half its lifetime has
//! passed and never sooner than [`MIN_REFRESH_INTERVAL`] after it was fetched, so tokens that
//! live shorter than `refresh_before` (IAM may issue 15-minute tokens) do not turn every call
//! and every maintenance tick into a fetch.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::error::FetchError;
use super::iam::Iam;
use crate::cause::ErrorChain;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::signer::SdkDate;

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A token with less than this left when IAM hands it over could expire in the middle of the
/// calls it is meant for (or means this host's clock is off): it counts as a failed fetch.
pub(crate) const MIN_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// However short-lived the tokens, a profile is not refreshed more often than this.
pub(crate) const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// A credential and when it expires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Issued<T> {
    pub value: T,
    pub expires_at: SystemTime,
    /// When the gateway fetched it.
    pub fetched_at: SystemTime,
}

/// An IAM token.
pub(crate) type Token = Issued<Secret>;

/// Where a cache's credentials come from: one fetch, errors saying what went wrong and never a
/// secret. The cache bounds each fetch by [`Timing::fetch_timeout`].
pub(crate) trait Source: Send + Sync + 'static {
    type Item: Send + Sync + PartialEq + 'static;
    /// What is fetched, for logs and readiness: "IAM token", "temporary keys".
    const WHAT: &'static str;
    /// The same in "returned ... at <time>": "a token that expires", "keys that expire".
    const EXPIRING: &'static str;
    /// Who is asked, for the timeout message: "IAM", "the metadata service".
    fn peer(&self) -> &'static str;
    fn fetch(&self) -> impl Future<Output = Result<Issued<Self::Item>, FetchError>> + Send;
}

/// When to refresh and how long to wait, from the profile's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Refresh when less than this remains (at most half the lifetime; see [`TokenCache`]).
    pub refresh_before: Duration,
    /// The longest one fetch may take, answer body included.
    pub fetch_timeout: Duration,
    /// The longest a call with no valid credential waits for a fetch before it gets a 503.
    pub wait: Duration,
}

/// Two refusals this close together, the second of a token this fresh, mean SparkRTC refuses
/// every token rather than that one went stale.
const FRESH_TOKEN: Duration = Duration::from_secs(30);

/// No valid token could be had; try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable {
    pub retry_after: Duration,
}

/// The fetch under way. Its sender lives in the fetch task; when the task ends (or is dropped
/// with the runtime) the receivers see the channel close.
#[derive(Clone)]
struct Flight {
    id: u64,
    done: watch::Receiver<()>,
}

struct State<T> {
    token: Option<Arc<Issued<T>>>,
    /// When SparkRTC last refused a token of ours.
    last_refusal: Option<SystemTime>,
    failures: u32,
    next_attempt: Option<SystemTime>,
    last_error: Option<String>,
    flight: Option<Flight>,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State { token: None, last_refusal: None, failures: 0, next_attempt: None, last_error: None, flight: None }
    }
}

pub(crate) struct TokenCache<S: Source = Iam> {
    profile: String,
    source: S,
    timing: Timing,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    state: Mutex<State<S::Item>>,
    flights: AtomicU64,
    /// `refresh_before` was found to exceed half a token's lifetime, and the operator told.
    warned_lifetime: AtomicBool,
}

impl<S: Source> std::fmt::Debug for TokenCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl<S: Source> TokenCache<S> {
    pub(crate) fn new(profile: &str, source: S, timing: Timing, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        TokenCache {
            profile: profile.to_owned(),
            source,
            timing,
            clock,
            metrics,
            state: Mutex::new(State::default()),
            flights: AtomicU64::new(0),
            warned_lifetime: AtomicBool::new(false),
        }
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<S::Item>> {
        // A panic while holding this lock cannot leave the state half-written: every update is a
        // single assignment. Recover the guard rather than poison every later call.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current token if it is still valid.
    fn valid(&self, now: SystemTime) -> Option<Arc<Issued<S::Item>>> {
        self.lock().token.clone().filter(|t| t.expires_at > now)
    }

    /// When `token` should be replaced: `refresh_before` ahead of its expiry, but not before
    /// half its lifetime has passed, nor sooner than [`MIN_REFRESH_INTERVAL`] after its fetch.
    fn refresh_at(&self, token: &Issued<S::Item>) -> SystemTime {
        let lifetime = token.expires_at.duration_since(token.fetched_at).unwrap_or_default();
        let lead = self.timing.refresh_before.min(lifetime / 2);
        (token.expires_at - lead).max(token.fetched_at + MIN_REFRESH_INTERVAL)
    }

    fn due(&self, token: &Issued<S::Item>, now: SystemTime) -> bool {
        now >= self.refresh_at(token)
    }

    /// A token valid now. Once it is due it is still returned, and a refresh starts in the
    /// background. With no valid token, waits for the fetch at most `token_wait`.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<Arc<Issued<S::Item>>, Unavailable> {
        let now = self.now();
        if let Some(token) = self.valid(now) {
            if self.due(&token, now) {
                self.start(now);
            }
            return Ok(token);
        }
        let Some(mut flight) = self.start(now) else { return Err(self.unavailable(now)) };
        // Bounded: a stalled IAM must cost a caller `token_wait`, not the fetch's whole timeout.
        let _ = tokio::time::timeout(self.timing.wait, flight.done.changed()).await;
        let now = self.now();
        self.valid(now).ok_or_else(|| self.unavailable(now))
    }

    /// Refreshes when there is no token or it is due, and waits for that fetch (or for the one
    /// already in flight); for the background ticker. Does nothing during backoff.
    pub(crate) async fn refresh_if_due(self: &Arc<Self>) {
        let now = self.now();
        if self.valid(now).is_some_and(|t| !self.due(&t, now)) {
            return;
        }
        if let Some(mut flight) = self.start(now) {
            // The fetch ends within `fetch_timeout`.
            let _ = flight.done.changed().await;
        }
    }

    /// The fetch in flight, or a new one; `None` while backing off after a failure.
    fn start(self: &Arc<Self>, now: SystemTime) -> Option<Flight> {
        let mut state = self.lock();
        if let Some(flight) = &state.flight {
            return Some(flight.clone());
        }
        if state.next_attempt.is_some_and(|at| at > now) {
            return None;
        }
        let (done, receiver) = watch::channel(());
        let flight = Flight { id: self.flights.fetch_add(1, Ordering::Relaxed), done: receiver };
        state.flight = Some(flight.clone());
        drop(state);
        let landing = Landing { cache: self.clone(), id: flight.id, _done: done };
        tokio::spawn(async move {
            let result = landing.cache.fetch().await;
            landing.cache.settle(result);
        });
        Some(flight)
    }

    /// One fetch within `fetch_timeout`: a stalled source must not hold the fetch (and the
    /// calls waiting on it) for longer.
    async fn fetch(&self) -> Result<Issued<S::Item>, FetchError> {
        let within = self.timing.fetch_timeout;
        match tokio::time::timeout(within, self.source.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { peer: self.source.peer(), after: within }),
        }
    }

    /// Why there is no token for a call now, and when to try again: at once (`Retry-After: 1`)
    /// while a fetch is still under way, else when the backoff ends.
    fn unavailable(&self, now: SystemTime) -> Unavailable {
        let state = self.lock();
        let backoff_left = state.next_attempt.and_then(|at| at.duration_since(now).ok());
        let retry_after = if state.flight.is_some() { Duration::ZERO } else { backoff_left.unwrap_or_default() };
        Unavailable { retry_after }
    }

    /// Records a fetch's outcome. Time is read here, at the end of the attempt, so the backoff
    /// after a failure starts when the failure is known, however long the attempt took.
    fn settle(&self, result: Result<Issued<S::Item>, FetchError>) {
        let now = self.now();
        let result = result.and_then(|token| match token.expires_at.duration_since(now) {
            Ok(left) if left >= MIN_TOKEN_LIFE => Ok(token),
            _ => Err(FetchError::Expiring {
                peer: self.source.peer(),
                what: S::EXPIRING,
                at: token.expires_at,
                min_life: MIN_TOKEN_LIFE,
            }),
        });
        let counters = &self.metrics.counters;
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                self.warn_if_short_lived(&token);
                let mut state = self.lock();
                let last_refusal = state.last_refusal;
                *state = State { token: Some(token.clone()), last_refusal, ..State::default() };
                drop(state);
                counters.token_refreshed();
                tracing::info!(profile = %self.profile, expires_at = %SdkDate::from_system_time(token.expires_at), refresh_at = %SdkDate::from_system_time(self.refresh_at(&token)), "{} fetched", S::WHAT);
            }
            Err(error) => {
                let error = ErrorChain(&error).to_string();
                let mut state = self.lock();
                state.flight = None;
                state.failures = state.failures.saturating_add(1);
                let backoff = backoff(state.failures);
                state.next_attempt = Some(now + backoff);
                state.last_error = Some(error.clone());
                drop(state);
                counters.token_refresh_failed();
                tracing::warn!(profile = %self.profile, error = %error, retry_in_s = backoff.as_secs(), "{} fetch failed", S::WHAT);
            }
        }
    }

    /// Tells the operator, once, that `refresh_before` cannot be honoured for these tokens.
    fn warn_if_short_lived(&self, token: &Issued<S::Item>) {
        let lifetime = token.expires_at.duration_since(token.fetched_at).unwrap_or_default();
        if self.timing.refresh_before > lifetime / 2 && !self.warned_lifetime.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                profile = %self.profile,
                refresh_before_s = self.timing.refresh_before.as_secs(),
                token_lifetime_s = lifetime.as_secs(),
                "refresh_before is more than half the {}'s lifetime; refreshing when half their lifetime remains instead (lower refresh_before to silence this)",
                S::WHAT
            );
        }
    }

    /// Forgets `token` after SparkRTC refused it, so the next call fetches a new one at once.
    /// But when the replacement for a refused token is refused too, soon after, the refusal
    /// counts as a failure and backs off: a SparkRTC that refuses every token (wrong project,
    /// missing permission) must not turn each call into an IAM fetch.
    pub(crate) fn invalidate(&self, token: &Issued<S::Item>) {
        let now = self.now();
        let mut state = self.lock();
        if state.token.as_deref() != Some(token) {
            return;
        }
        state.token = None;
        let recent = |t: SystemTime| now.duration_since(t).is_ok_and(|age| age < FRESH_TOKEN);
        let repeated = state.last_refusal.is_some_and(recent) && recent(token.fetched_at);
        state.last_refusal = Some(now);
        if repeated {
            state.failures = state.failures.saturating_add(1);
            state.next_attempt = Some(now + backoff(state.failures));
            state.last_error = Some(FetchError::RefusedBySparkRtc.to_string());
        } else {
            state.next_attempt = None;
        }
    }

    /// `Ok` while a valid token is held, or before the first fetch has failed.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        let now = self.now();
        let state = self.lock();
        let valid = state.token.as_ref().is_some_and(|t| t.expires_at > now);
        match (&state.last_error, valid) {
            (Some(error), false) => Err(format!("no valid {}: {error}", S::WHAT)),
            _ => Ok(()),
        }
    }
}

/// Owned by the fetch task. Dropping it, when the fetch has settled or when the task is dropped
/// unfinished, clears the flight and closes its channel, so no caller waits on a fetch that no
/// longer runs.
struct Landing<S: Source> {
    cache: Arc<TokenCache<S>>,
    id: u64,
    _done: watch::Sender<()>,
}

impl<S: Source> Drop for Landing<S> {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        if state.flight.as_ref().is_some_and(|f| f.id == self.id) {
            state.flight = None;
        }
    }
}

/// 1 s after the first failure, doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
