//! Callers named by a JWT: a bearer token in `Authorization` (a Kubernetes projected service
//! account token, a mesh's workload token) verified against a JWKS, its issuer, audience, expiry
//! and not-before checked, and one claim (default `sub`, e.g.
//! `system:serviceaccount:NS:NAME`) mapped to a configured caller.
//!
//! Only the asymmetric algorithms the config lists are accepted; `none` does not parse and
//! HMAC (`HS*`) can never be listed, so a token "signed" with the public key as an HMAC secret
//! is refused before any key is tried. Symmetric (`oct`) keys in a JWKS are ignored.
//!
//! Keys come from a file, re-read when it changes (and when a token names a key id not in the
//! set), or from an https URL, fetched by the gateway's maintenance loop every `jwks_refresh` and
//! soon after a token names an unknown key id.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The longest a JWKS document may be.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(http::Uri),
}

/// `[policy.jwt]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSpec {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// The claim that names the caller.
    pub claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    pub jwks: JwksSource,
    /// How often a JWKS URL is fetched again.
    pub refresh: Duration,
}

/// Why a bearer token was refused: said to the caller, so never a key or a claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Malformed,
    AlgorithmNotAccepted,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    NoCallerClaim,
}

impl TokenRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "the bearer token is not a well-formed JWT",
            TokenRefusal::AlgorithmNotAccepted => "the bearer token's algorithm is not accepted",
            TokenRefusal::UnknownKey => "the bearer token is signed with a key not in the JWKS",
            TokenRefusal::BadSignature => "the bearer token's signature does not verify",
            TokenRefusal::WrongIssuer => "the bearer token is from another issuer",
            TokenRefusal::WrongAudience => "the bearer token is not meant for this gateway (audience)",
            TokenRefusal::Expired => "the bearer token has expired",
            TokenRefusal::NotYetValid => "the bearer token is not valid yet",
            TokenRefusal::NoCallerClaim => "the bearer token lacks the claim that names the caller",
        }
    }
}

/// One usable key of the JWKS.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    /// `RSA`, `EC` or `OKP`, matched against the token's algorithm.
    family: &'static str,
}

#[derive(Default)]
struct KeySet(Vec<Key>);

impl KeySet {
    /// Parses a JWKS document, keeping only asymmetric keys.
    fn parse(text: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => "RSA",
                AlgorithmParameters::EllipticCurve(_) => "EC",
                AlgorithmParameters::OctetKeyPair(_) => "OKP",
                // A shared secret in a key set meant for public keys: never used.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a key in the JWKS is unusable: {e}"))?;
            keys.push(Key { kid: jwk.common.key_id.clone(), key, family });
        }
        if keys.is_empty() {
            return Err("the JWKS holds no RSA, EC or OKP public key".to_owned());
        }
        Ok(KeySet(keys))
    }
}

fn family(alg: Algorithm) -> Option<&'static str> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some("RSA"),
        ES256 | ES384 => Some("EC"),
        EdDSA => Some("OKP"),
        HS256 | HS384 | HS512 => None,
    }
}

/// Whether `alg` may be configured: asymmetric ones only.
pub(crate) fn asymmetric(alg: Algorithm) -> bool {
    family(alg).is_some()
}

/// Verifies bearer tokens; holds the current JWKS.
pub struct JwtVerifier {
    pub spec: JwtSpec,
    keys: ArcSwap<KeySet>,
    /// The JWKS file's modification time and length when last read.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// A token named a key id not in the set: fetch the URL soon.
    wanted: AtomicBool,
    next_fetch: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier; a JWKS file is read now, so `check` reports a missing or broken one.
    pub fn new(spec: JwtSpec) -> Result<Self, String> {
        let verifier = JwtVerifier {
            spec,
            keys: ArcSwap::from_pointee(KeySet::default()),
            stamp: Mutex::new(None),
            wanted: AtomicBool::new(false),
            next_fetch: Mutex::new(None),
        };
        if let JwksSource::File(path) = &verifier.spec.jwks {
            verifier.reload_file(path, true)?;
        }
        Ok(verifier)
    }

    /// Re-reads the JWKS file if it changed (or `force`). A broken new file keeps the old keys.
    fn reload_file(&self, path: &std::path::Path, force: bool) -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let stamp = meta.modified().ok().map(|m| (m, meta.len()));
        let mut seen = self.stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !force && stamp.is_some() && *seen == stamp {
            return Ok(());
        }
        let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let keys = KeySet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        self.keys.store(Arc::new(keys));
        *seen = stamp;
        Ok(())
    }

    fn refresh_file(&self, force: bool) {
        if let JwksSource::File(path) = &self.spec.jwks {
            if let Err(e) = self.reload_file(path, force) {
                tracing::error!(error = %e, "JWKS file unusable; verifying with the keys read before");
            }
        }
    }

    /// The value of the configured claim of a valid token, or why it is refused.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<String, TokenRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An algorithm the library does not know, `none` among them.
            jsonwebtoken::errors::ErrorKind::Json(_) => TokenRefusal::AlgorithmNotAccepted,
            _ => TokenRefusal::Malformed,
        })?;
        let alg = header.alg;
        let family = family(alg).filter(|_| self.spec.algorithms.contains(&alg));
        let family = family.ok_or(TokenRefusal::AlgorithmNotAccepted)?;
        self.refresh_file(false);
        let mut keys = self.keys.load_full();
        let known = |keys: &KeySet| keys.0.iter().any(|k| header.kid.is_none() || k.kid == header.kid);
        if !known(&keys) {
            // A new signing key may have been added: look once more before refusing.
            self.refresh_file(true);
            self.wanted.store(true, Ordering::Relaxed);
            keys = self.keys.load_full();
        }
        let candidates: Vec<&Key> =
            keys.0.iter().filter(|k| k.family == family && (header.kid.is_none() || k.kid == header.kid)).collect();
        if candidates.is_empty() {
            return Err(TokenRefusal::UnknownKey);
        }
        let mut validation = Validation::new(alg);
        // Time, issuer and audience are checked below, against the gateway's clock, each with
        // its own refusal.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = candidates
            .iter()
            .find_map(|k| jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &validation).ok())
            .ok_or(TokenRefusal::BadSignature)?
            .claims;
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, claims: &serde_json::Value, now: SystemTime) -> Result<String, TokenRefusal> {
        if claims["iss"].as_str() != Some(self.spec.issuer.as_str()) {
            return Err(TokenRefusal::WrongIssuer);
        }
        let audiences: Vec<&str> = match &claims["aud"] {
            serde_json::Value::String(a) => vec![a.as_str()],
            serde_json::Value::Array(list) => list.iter().filter_map(|a| a.as_str()).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| self.spec.audiences.iter().any(|want| want == a)) {
            return Err(TokenRefusal::WrongAudience);
        }
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let leeway = self.spec.leeway.as_secs();
        let exp = claims["exp"].as_u64().ok_or(TokenRefusal::Expired)?;
        if now >= exp.saturating_add(leeway) {
            return Err(TokenRefusal::Expired);
        }
        if claims["nbf"].as_u64().is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(TokenRefusal::NotYetValid);
        }
        let name = claims[self.spec.claim.as_str()].as_str().filter(|s| !s.is_empty());
        name.map(str::to_owned).ok_or(TokenRefusal::NoCallerClaim)
    }

    /// Whether the JWKS URL should be fetched now: due, or a token named an unknown key.
    pub fn url_due(&self, now: SystemTime) -> Option<&http::Uri> {
        let JwksSource::Url(uri) = &self.spec.jwks else { return None };
        let next = *self.next_fetch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = next.is_none_or(|at| now >= at) || self.wanted.load(Ordering::Relaxed);
        due.then_some(uri)
    }

    /// Takes a fetched JWKS document. A broken one keeps the old keys and is retried sooner.
    pub fn fetched(&self, result: Result<bytes::Bytes, String>, now: SystemTime) {
        self.wanted.store(false, Ordering::Relaxed);
        let parsed = result.and_then(|body| {
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            KeySet::parse(&body)
        });
        let next = match parsed {
            Ok(keys) => {
                self.keys.store(Arc::new(keys));
                self.spec.refresh
            }
            Err(e) => {
                tracing::error!(error = %e, "JWKS fetch failed; verifying with the keys fetched before");
                self.spec.refresh.min(Duration::from_secs(30))
            }
        };
        *self.next_fetch.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now + next);
    }
}
