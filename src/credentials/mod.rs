//! Credentials at run time, kept apart from signing: the authorize phase asks for a profile's
//! current AK/SK or IAM token here, then signs or sets `X-Auth-Token`.
//!
//! AK/SK read from files follow the files (re-read every few seconds and on SIGHUP); IAM tokens
//! are cached per profile ([`token::TokenCache`]) and survive config reloads that leave their
//! profile unchanged.

mod iam;
pub mod keys;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Auth, Config, Profile};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use keys::{KeySource, LoadedKey};
use token::{retry_after_secs, Token, TokenCache};

/// How long a call is told to wait when temporary keys have expired and no new ones arrived.
const EXPIRED_KEYS_RETRY_SECS: u64 = 5;

/// One profile's live credential.
pub enum Credential {
    Keys(Arc<KeySource>),
    Token(Arc<TokenCache>),
}

/// What the authorize phase puts on a call.
pub enum Authorization {
    Key(Arc<LoadedKey>),
    Token(Arc<Token>),
}

pub struct Credentials {
    by_profile: HashMap<String, (Arc<Profile>, Credential)>,
    clock: Arc<dyn Clock>,
}

impl Credentials {
    /// Builds every profile's credential. With `previous`, token caches of unchanged profiles
    /// are kept, so a config reload neither drops nor refetches tokens.
    pub fn build(
        config: &Config,
        client: &Upstream,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        previous: Option<&Credentials>,
    ) -> Self {
        let mut keys: HashMap<&str, Arc<KeySource>> = HashMap::new();
        for (name, profile) in &config.profiles {
            if let Auth::Keys { key, files } = &profile.auth {
                keys.insert(name, Arc::new(KeySource::new(key.clone(), files.clone())));
            }
        }
        let mut by_profile = HashMap::new();
        for (name, profile) in &config.profiles {
            let credential = match &profile.auth {
                Auth::Keys { .. } => keys.get(name.as_str()).cloned().map(Credential::Keys),
                Auth::Token(spec) => {
                    let kept = previous.and_then(|p| p.by_profile.get(name)).and_then(|(old, c)| match c {
                        Credential::Token(cache) if **old == **profile => Some(cache.clone()),
                        _ => None,
                    });
                    let via = match &spec.method {
                        crate::config::TokenMethod::Agency { via, .. } => keys.get(via.as_str()).cloned(),
                        crate::config::TokenMethod::Password { .. } => None,
                    };
                    let cache = kept.unwrap_or_else(|| {
                        Arc::new(TokenCache::new(
                            name,
                            &profile.project_id,
                            spec.clone(),
                            via,
                            client.clone(),
                            clock.clone(),
                            metrics.clone(),
                        ))
                    });
                    Some(Credential::Token(cache))
                }
            };
            if let Some(credential) = credential {
                by_profile.insert(name.clone(), (profile.clone(), credential));
            }
        }
        Credentials { by_profile, clock }
    }

    fn credential(&self, profile: &Profile) -> Result<&Credential, GatewayError> {
        self.by_profile
            .get(&profile.name)
            .map(|(_, c)| c)
            .ok_or_else(|| GatewayError::Internal(format!("no credential for profile {:?}", profile.name).into()))
    }

    /// The profile's credential for a call now: 503 when none is usable.
    pub async fn authorization(&self, profile: &Profile) -> Result<Authorization, GatewayError> {
        match self.credential(profile)? {
            Credential::Keys(source) => {
                let key = source.current();
                if key.expires_at.is_some_and(|at| at <= self.clock.now()) {
                    tracing::warn!(profile = %profile.name, "temporary keys have expired and no new ones were found; refusing calls until they arrive");
                    return Err(GatewayError::CredentialsUnavailable { retry_after_secs: EXPIRED_KEYS_RETRY_SECS });
                }
                Ok(Authorization::Key(key))
            }
            Credential::Token(cache) => cache.get().await.map(Authorization::Token).map_err(|u| {
                GatewayError::CredentialsUnavailable { retry_after_secs: retry_after_secs(u.retry_after) }
            }),
        }
    }

    /// Forgets a token SparkRTC refused.
    pub fn invalidate(&self, profile: &Profile, token: &Token) {
        if let Ok(Credential::Token(cache)) = self.credential(profile) {
            cache.invalidate(token);
        }
    }

    /// Each profile's state, by name: `Err` says why calls on its apps get 503 now. Tokens not
    /// yet fetched count as usable until a fetch fails.
    pub fn states(&self) -> BTreeMap<&str, Result<(), String>> {
        let now = self.clock.now();
        let state = |credential: &Credential| match credential {
            Credential::Token(cache) => cache.readiness(),
            Credential::Keys(source) if source.current().expires_at.is_some_and(|at| at <= now) => {
                Err("temporary keys expired and no new ones arrived".to_owned())
            }
            Credential::Keys(_) => Ok(()),
        };
        self.by_profile.iter().map(|(name, (_, credential))| (name.as_str(), state(credential))).collect()
    }

    /// Re-reads key files and refreshes tokens that are due. Run every few seconds and on SIGHUP.
    pub async fn maintain(&self) {
        for (name, (_, credential)) in &self.by_profile {
            match credential {
                Credential::Keys(source) => match source.refresh() {
                    Ok(true) => tracing::info!(profile = %name, "AK/SK files changed; the next calls use the new keys"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(profile = %name, error = %e, "AK/SK files unusable; still signing with the previous keys")
                    }
                },
                Credential::Token(cache) => cache.refresh_if_due().await,
            }
        }
    }
}
