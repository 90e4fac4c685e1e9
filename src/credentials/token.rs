//! IAM tokens (`X-Auth-Token`): one per profile, fetched from IAM `POST /v3/auth/tokens`,
//! reused until close to expiry and refreshed ahead of it.
//!
//! Exactly one fetch is in flight however many calls need a token (the first caller fetches,
//! the rest wait on the same lock and find the fresh token). A failed fetch is never cached: it
//! is retried with backoff (1 s, doubling, at most 60 s), and a still-valid older token keeps
//! serving meanwhile. With no valid token at all, calls get a clean local 503 with Retry-After.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use super::keys::{read_secret, KeySource};
use crate::clock::Clock;
use crate::config::{TokenMethod, TokenSpec};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::signer::{self, parse_rfc3339, CanonicalQuery, HeaderList, SdkDate, SignInput};
use crate::upstream::Upstream;

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// IAM's answer without the catalog is a few kilobytes.
const MAX_IAM_BODY: usize = 1024 * 1024;

/// A token and when it expires.
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    pub value: Secret,
    pub expires_at: SystemTime,
    /// When the gateway fetched it.
    pub fetched_at: SystemTime,
}

/// Two refusals this close together, the second of a token this fresh, mean SparkRTC refuses
/// every token rather than that one went stale.
const FRESH_TOKEN: Duration = Duration::from_secs(30);

/// No valid token could be had; try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    pub retry_after: Duration,
}

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    /// When SparkRTC last refused a token of ours.
    last_refusal: Option<SystemTime>,
    failures: u32,
    next_attempt: Option<SystemTime>,
    last_error: Option<String>,
}

pub struct TokenCache {
    profile: String,
    project_id: String,
    spec: TokenSpec,
    /// The AK/SK that signs an assume-role call.
    via: Option<Arc<KeySource>>,
    client: Upstream,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    single_flight: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl TokenCache {
    pub fn new(
        profile: &str,
        project_id: &str,
        spec: TokenSpec,
        via: Option<Arc<KeySource>>,
        client: Upstream,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TokenCache {
            profile: profile.to_owned(),
            project_id: project_id.to_owned(),
            spec,
            via,
            client,
            clock,
            metrics,
            state: Mutex::new(State::default()),
            single_flight: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written: every update is a
        // single assignment. Recover the guard rather than poison every later call.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current token if it is still valid.
    fn valid(&self, now: SystemTime) -> Option<Arc<Token>> {
        self.lock().token.clone().filter(|t| t.expires_at > now)
    }

    fn due(&self, token: &Token, now: SystemTime) -> bool {
        token.expires_at <= now + self.spec.refresh_before
    }

    /// A token valid now. Inside the refresh window it still returns the current token and
    /// starts a refresh in the background; with no valid token it waits for the one fetch.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<Token>, Unavailable> {
        let now = self.clock.now();
        if let Some(token) = self.valid(now) {
            if self.due(&token, now) {
                let cache = self.clone();
                tokio::spawn(async move { cache.refresh_if_due().await });
            }
            return Ok(token);
        }
        self.refresh().await
    }

    /// Refreshes when there is no token or it is inside the refresh window (and no fetch is
    /// already in flight); for the background ticker and ahead-of-time refresh.
    pub async fn refresh_if_due(&self) {
        let now = self.clock.now();
        if self.valid(now).is_some_and(|t| !self.due(&t, now)) {
            return;
        }
        if let Ok(_flight) = self.single_flight.try_lock() {
            let _ = self.fetch_under_lock().await;
        }
    }

    /// Forgets `token` after SparkRTC refused it, so the next call fetches a new one at once.
    /// But when the replacement for a refused token is refused too, soon after, the refusal
    /// counts as a failure and backs off: a SparkRTC that refuses every token (wrong project,
    /// missing permission) must not turn each call into an IAM fetch.
    pub fn invalidate(&self, token: &Token) {
        let now = self.clock.now();
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
            state.last_error = Some("SparkRTC refused a token just fetched".to_owned());
        } else {
            state.next_attempt = None;
        }
    }

    /// Takes over another cache's token (a config reload that left this profile unchanged).
    pub fn adopt(&self, previous: &TokenCache) {
        let token = previous.lock().token.clone();
        self.lock().token = token;
    }

    /// `Ok` while a valid token is held, or before the first fetch has failed.
    pub fn readiness(&self) -> Result<(), String> {
        let now = self.clock.now();
        let state = self.lock();
        let valid = state.token.as_ref().is_some_and(|t| t.expires_at > now);
        match (&state.last_error, valid) {
            (Some(error), false) => Err(format!("no valid IAM token: {error}")),
            _ => Ok(()),
        }
    }

    /// Waits for the single fetch in flight, or makes it.
    async fn refresh(&self) -> Result<Arc<Token>, Unavailable> {
        let _flight = self.single_flight.lock().await;
        // Another caller may have fetched while this one waited for the lock.
        if let Some(token) = self.valid(self.clock.now()) {
            return Ok(token);
        }
        self.fetch_under_lock().await
    }

    async fn fetch_under_lock(&self) -> Result<Arc<Token>, Unavailable> {
        let now = self.clock.now();
        let waiting = self.lock().next_attempt.and_then(|at| at.duration_since(now).ok());
        if let Some(wait) = waiting {
            return self.valid(now).ok_or(Unavailable { retry_after: wait });
        }
        match self.fetch().await {
            Ok(token) => {
                let token = Arc::new(token);
                let mut state = self.lock();
                let last_refusal = state.last_refusal;
                *state = State { token: Some(token.clone()), last_refusal, ..State::default() };
                self.metrics.counters.token_refreshes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(profile = %self.profile, expires_at = %SdkDate::from_system_time(token.expires_at), "IAM token fetched");
                Ok(token)
            }
            Err(error) => {
                self.metrics.counters.token_refresh_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut state = self.lock();
                state.failures = state.failures.saturating_add(1);
                let backoff = backoff(state.failures);
                state.next_attempt = Some(now + backoff);
                state.last_error = Some(error.clone());
                tracing::warn!(profile = %self.profile, error = %error, retry_in_s = backoff.as_secs(), "IAM token fetch failed");
                let still_valid = state.token.clone().filter(|t| t.expires_at > now);
                still_valid.ok_or(Unavailable { retry_after: backoff })
            }
        }
    }

    /// One token request, answer body included, within the response timeout: a stalled IAM
    /// must not hold the single-flight lock (and every call waiting on it) forever.
    async fn fetch(&self) -> Result<Token, String> {
        let within = self.client.response_timeout();
        match tokio::time::timeout(within, self.request()).await {
            Ok(result) => result,
            Err(_) => Err(format!("IAM did not answer within {} ms", within.as_millis())),
        }
    }

    /// One `POST /v3/auth/tokens?nocatalog=true`. Errors say what went wrong, never a secret.
    async fn request(&self) -> Result<Token, String> {
        let body = Bytes::from(self.request_body()?.to_string());
        let endpoint = &self.spec.iam_endpoint;
        let authority = endpoint.authority().map(|a| a.as_str()).unwrap_or_default();
        let uri: Uri =
            format!("{}://{authority}/v3/auth/tokens?nocatalog=true", endpoint.scheme_str().unwrap_or("https"))
                .parse()
                .map_err(|e| format!("IAM endpoint: {e}"))?;
        let mut headers = HeaderList::new();
        headers.set("Content-Type", "application/json;charset=UTF-8");
        if let Some(via) = &self.via {
            // assume_role is authenticated by the caller's own AK/SK signature.
            let key = via.current();
            let query = CanonicalQuery::parse("nocatalog=true");
            let input =
                SignInput { method: "POST", host: authority, path: "/v3/auth/tokens", query: &query, body: &body };
            signer::sign(&input, &mut headers, &key.key, SdkDate::from_system_time(self.clock.now()))
                .map_err(|e| e.to_string())?;
        }
        let mut req = Request::post(uri).body(Full::new(body)).map_err(|e| e.to_string())?;
        for (name, value) in headers.iter() {
            let value = HeaderValue::from_str(value).map_err(|_| format!("header {name} is not sendable"))?;
            req.headers_mut().insert(http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?, value);
        }
        let rsp = self.client.send(req).await.map_err(|e| format!("IAM could not be reached: {e}"))?;
        let status = rsp.status();
        let subject = rsp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(Secret::new);
        let body = Limited::new(rsp.into_body(), MAX_IAM_BODY)
            .collect()
            .await
            .map_err(|e| format!("IAM answer unreadable: {e}"))?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status != StatusCode::CREATED {
            // IAM's error bodies carry a code and a message; neither repeats the credentials.
            let code = json["error"]["code"].as_str().or(json["error_code"].as_str()).unwrap_or("-");
            return Err(format!("IAM answered {} (error code {code})", status.as_u16()));
        }
        let value = subject.ok_or("IAM's answer has no X-Subject-Token")?;
        let expires = json["token"]["expires_at"].as_str().ok_or("IAM's answer has no token.expires_at")?;
        let expires_at =
            parse_rfc3339(expires).ok_or_else(|| format!("token.expires_at {expires:?} is not a UTC time"))?;
        Ok(Token { value, expires_at, fetched_at: self.clock.now() })
    }

    fn request_body(&self) -> Result<serde_json::Value, String> {
        let scope = serde_json::json!({ "project": { "id": self.project_id } });
        Ok(match &self.spec.method {
            TokenMethod::Password { domain, user, password, password_file } => {
                // A password file is read at each fetch, so a rotated password needs no reload.
                let fresh = password_file.as_deref().map(read_secret).transpose()?;
                let password = fresh.as_ref().unwrap_or(password);
                serde_json::json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": {
                        "domain": { "name": domain }, "name": user, "password": password.expose() } } },
                    "scope": scope } })
            }
            TokenMethod::Agency { domain, agency, .. } => serde_json::json!({ "auth": {
                "identity": { "methods": ["assume_role"], "assume_role": { "domain_name": domain, "agency_name": agency } },
                "scope": scope } }),
        })
    }
}

/// 1 s after the first failure, doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF)
}

/// `Retry-After` seconds for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1_000)).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}
