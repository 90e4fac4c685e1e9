//! Credentials at run time, kept apart from signing: the authorize phase asks for a profile's
//! current AK/SK or IAM token here, then signs or sets `X-Auth-Token`.
//!
//! AK/SK read from files follow the files (re-read every few seconds and on SIGHUP); IAM tokens
//! and temporary keys from the platform ([`platform`]) are cached per profile
//! ([`token::TokenCache`]) and survive config reloads that leave their profile unchanged.

mod error;
mod iam;
pub(crate) mod keys;
pub(crate) mod platform;
mod spec;
pub(crate) mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cause::ErrorChain;
use crate::clock::{retry_after_secs, Clock};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::JwtVerifier;
use crate::upstream::Upstream;
use error::FetchError;
use keys::{KeySource, LoadedKey};
use platform::Platform;
use token::{Timing, Token, TokenCache};

pub use spec::{Auth, Profile, TokenMethod, TokenSpec};

/// How long a call is told to wait when temporary keys have expired and no new ones arrived.
const EXPIRED_KEYS_RETRY_SECS: u64 = 5;

/// One profile's live credential.
pub(crate) enum Credential {
    Keys(Arc<KeySource>),
    Token(Arc<TokenCache>),
    /// Temporary keys from the platform (metadata, pod identity, OIDC).
    Temporary(Arc<TokenCache<Platform>>),
}

/// What the authorize phase puts on a call.
pub(crate) enum Authorization {
    Key(Arc<LoadedKey>),
    Token(Arc<Token>),
}

pub(crate) struct Credentials {
    by_profile: HashMap<String, (Arc<Profile>, Credential)>,
    clock: Arc<dyn Clock>,
    /// The callers' JWKS, when fetched from a URL: refreshed here with the credentials, by the
    /// same maintenance loop and through the same client.
    jwks: Option<(Arc<JwtVerifier>, Upstream)>,
}

/// The longest a JWKS fetch may take.
const JWKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Credentials {
    /// Builds every profile's credential; `jwks` is the callers' JWKS verifier, refreshed here
    /// when it comes from a URL. With `previous`, token caches of unchanged profiles are kept,
    /// so a config reload neither drops nor refetches tokens.
    pub(crate) fn build(
        profiles: &BTreeMap<String, Arc<Profile>>,
        jwks: Option<Arc<JwtVerifier>>,
        client: &Upstream,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        previous: Option<&Credentials>,
    ) -> Self {
        let mut keys: HashMap<&str, Arc<KeySource>> = HashMap::new();
        for (name, profile) in profiles {
            if let Auth::Keys { key, files } = &profile.auth {
                keys.insert(name, Arc::new(KeySource::new(key.clone(), files.clone())));
            }
        }
        let node_local = node_local_client(profiles, client);
        let mut by_profile = HashMap::new();
        for (name, profile) in profiles {
            let kept = previous.and_then(|p| p.by_profile.get(name)).filter(|(old, _)| **old == **profile);
            let credential = match &profile.auth {
                Auth::Keys { .. } => keys.get(name.as_str()).cloned().map(Credential::Keys),
                Auth::Platform(spec) => {
                    let kept = kept.and_then(|(_, c)| match c {
                        Credential::Temporary(cache) => Some(cache.clone()),
                        _ => None,
                    });
                    let client = if spec.source.node_local() { &node_local } else { client };
                    let cache = kept.unwrap_or_else(|| {
                        let source = Platform::new(spec.clone(), client.clone(), clock.clone());
                        Arc::new(TokenCache::new(name, source, spec.timing, clock.clone(), metrics.clone()))
                    });
                    Some(Credential::Temporary(cache))
                }
                Auth::Token(spec) => {
                    let kept = kept.and_then(|(_, c)| match c {
                        Credential::Token(cache) => Some(cache.clone()),
                        _ => None,
                    });
                    let via = match &spec.method {
                        TokenMethod::Agency { via, .. } => keys.get(via.as_str()).cloned(),
                        TokenMethod::Password { .. } => None,
                    };
                    let cache = kept.unwrap_or_else(|| {
                        let source = iam::Iam {
                            project_id: profile.project_id.clone(),
                            spec: spec.clone(),
                            via,
                            client: client.clone(),
                            clock: clock.clone(),
                        };
                        let timing = Timing {
                            refresh_before: spec.refresh_before,
                            fetch_timeout: spec.iam_timeout,
                            wait: spec.token_wait,
                        };
                        Arc::new(TokenCache::new(name, source, timing, clock.clone(), metrics.clone()))
                    });
                    Some(Credential::Token(cache))
                }
            };
            if let Some(credential) = credential {
                by_profile.insert(name.clone(), (profile.clone(), credential));
            }
        }
        let jwks = jwks.map(|v| (v, client.clone()));
        Credentials { by_profile, clock, jwks }
    }

    fn credential(&self, profile: &Profile) -> Result<&Credential, GatewayError> {
        self.by_profile
            .get(&profile.name)
            .map(|(_, c)| c)
            .ok_or_else(|| GatewayError::Internal(format!("no credential for profile {:?}", profile.name).into()))
    }

    /// The profile's credential for a call now: 503 when none is usable.
    pub(crate) async fn authorization(&self, profile: &Profile) -> Result<Authorization, GatewayError> {
        match self.credential(profile)? {
            Credential::Keys(source) => {
                let key = source.current();
                if key.expires_at.is_some_and(|at| at <= self.clock.now()) {
                    tracing::warn!(profile = %profile.name, "temporary keys have expired and no new ones were found; refusing calls until they arrive");
                    return Err(GatewayError::CredentialsUnavailable { retry_after_secs: EXPIRED_KEYS_RETRY_SECS });
                }
                Ok(Authorization::Key(key))
            }
            Credential::Token(cache) => cache.get().await.map(Authorization::Token).map_err(unavailable),
            // Never a doomed upstream call: the cache hands out only keys valid now.
            Credential::Temporary(cache) => {
                cache.get().await.map(|k| Authorization::Key(k.value.clone())).map_err(unavailable)
            }
        }
    }

    /// Forgets a token SparkRTC refused.
    pub(crate) fn invalidate(&self, profile: &Profile, token: &Token) {
        if let Ok(Credential::Token(cache)) = self.credential(profile) {
            cache.invalidate(token);
        }
    }

    /// Each profile's state, by name: `Err` says why calls on its apps get 503 now. Tokens not
    /// yet fetched count as usable until a fetch fails.
    pub(crate) fn states(&self) -> BTreeMap<&str, Result<(), String>> {
        let now = self.clock.now();
        let state = |credential: &Credential| match credential {
            Credential::Token(cache) => cache.readiness(),
            Credential::Temporary(cache) => cache.readiness(),
            Credential::Keys(source) if source.current().expires_at.is_some_and(|at| at <= now) => {
                Err("temporary keys expired and no new ones arrived".to_owned())
            }
            Credential::Keys(_) => Ok(()),
        };
        self.by_profile.iter().map(|(name, (_, credential))| (name.as_str(), state(credential))).collect()
    }

    /// Re-reads key files and refreshes tokens that are due. Run every few seconds and on SIGHUP.
    pub(crate) async fn maintain(&self) {
        self.refresh_jwks().await;
        for (name, (_, credential)) in &self.by_profile {
            match credential {
                Credential::Keys(source) => match source.refresh() {
                    Ok(true) => tracing::info!(profile = %name, "AK/SK files changed; the next calls use the new keys"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(profile = %name, error = %ErrorChain(&e), "AK/SK files unusable; still signing with the previous keys")
                    }
                },
                Credential::Token(cache) => cache.refresh_if_due().await,
                Credential::Temporary(cache) => cache.refresh_if_due().await,
            }
        }
    }
}

fn unavailable(u: token::Unavailable) -> GatewayError {
    GatewayError::CredentialsUnavailable { retry_after_secs: retry_after_secs(u.retry_after) }
}

/// The client for node-local endpoints (metadata, pod identity), which are plain http by design:
/// the upstream's own settings with http allowed. The upstream client when there are none, or
/// when the client cannot be built (the fetches then fail and say so).
fn node_local_client(profiles: &BTreeMap<String, Arc<Profile>>, client: &Upstream) -> Upstream {
    let needed = profiles.values().any(|p| matches!(&p.auth, Auth::Platform(s) if s.source.node_local()));
    if !needed {
        return client.clone();
    }
    client.allowing_http().unwrap_or_else(|e| {
        tracing::error!(error = %ErrorChain(&e), "cannot build the client for the metadata and pod identity endpoints");
        client.clone()
    })
}

impl Credentials {
    /// Fetches the callers' JWKS URL when it is due, or when a token named a key id not in it.
    async fn refresh_jwks(&self) {
        let Some((verifier, client)) = &self.jwks else { return };
        let Some(uri) = verifier.url_due(self.clock.now()) else { return };
        const PEER: &str = "the JWKS URL";
        let fetch = async {
            let req = http::Request::get(uri.clone())
                .header(http::header::ACCEPT, "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .map_err(|e| FetchError::Request { what: e.to_string() })?;
            let rsp = client.request(req).await.map_err(|source| FetchError::Unreachable { peer: PEER, source })?;
            if !rsp.status().is_success() {
                let status = rsp.status().as_u16();
                return Err(FetchError::Refused { peer: PEER, status, code: "-".to_owned(), during: None });
            }
            let body = http_body_util::Limited::new(rsp.into_body(), 256 * 1024);
            http_body_util::BodyExt::collect(body)
                .await
                .map(|b| b.to_bytes())
                .map_err(|source| FetchError::Unreadable { peer: PEER, source })
        };
        let result = tokio::time::timeout(JWKS_TIMEOUT, fetch)
            .await
            .unwrap_or_else(|_| Err(FetchError::Timeout { peer: PEER, after: JWKS_TIMEOUT }))
            .map_err(|e| ErrorChain(&e).to_string());
        verifier.fetched(result, self.clock.now());
    }
}
