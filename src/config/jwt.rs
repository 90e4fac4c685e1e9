//! `[policy.jwt]`: how bearer tokens of callers are verified (see `policy::jwt`), and the
//! SPIFFE id shape accepted in `cert_names`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::reader::{Problems, Table};
use crate::policy::{asymmetric, CallerSpec, JwksSource, JwtSpec, JwtVerifier};

pub(super) const DEFAULT_JWT_CLAIM: &str = "sub";
pub(super) const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(60);
pub(super) const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// What Kubernetes signs service account tokens with.
pub(super) const DEFAULT_JWT_ALGORITHMS: [&str; 1] = ["RS256"];

/// The verifier, when `[policy.jwt]` is present; every problem reported.
pub(super) fn verifier(
    policy: &mut Table<'_>,
    callers: &[CallerSpec],
    base: &Path,
    allow_http: bool,
    p: &mut Problems,
) -> Option<Arc<JwtVerifier>> {
    if !policy.has("jwt") {
        for c in callers.iter().filter(|c| !c.jwt_subjects.is_empty()) {
            p.push(
                format!("callers.{}.jwt_subjects", c.name),
                "can never match: add [policy.jwt] with issuer, audiences and jwks_file or jwks_url",
            );
        }
        return None;
    }
    let mut t = policy.table("jwt", p);
    let spec = spec(&mut t, base, allow_http, p);
    t.finish(p);
    let spec = spec?;
    match JwtVerifier::new(spec) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            p.push(
                "policy.jwt.jwks_file",
                format!("{e}; give a JWKS document ({{\"keys\": [...]}}), e.g. from the cluster's /openid/v1/jwks"),
            );
            None
        }
    }
}

fn spec(t: &mut Table<'_>, base: &Path, allow_http: bool, p: &mut Problems) -> Option<JwtSpec> {
    let issuer = t.string("issuer", p).filter(|s| !s.is_empty()).map(str::to_owned);
    if issuer.is_none() {
        p.push(t.key_path("issuer"), "is missing; set the issuer tokens must carry in iss, e.g. \"https://kubernetes.default.svc.cluster.local\"");
    }
    let audiences: Vec<String> = t.strings("audiences", p).unwrap_or_default().into_iter().map(str::to_owned).collect();
    if audiences.is_empty() {
        p.push(t.key_path("audiences"), "is missing; list the audiences tokens must be issued for, e.g. [\"sparkrtc-gateway\"] (the audience of the projected token)");
    }
    let names = t.strings("algorithms", p).unwrap_or(DEFAULT_JWT_ALGORITHMS.to_vec());
    let mut algorithms = Vec::new();
    for name in names {
        match name.parse::<jsonwebtoken::Algorithm>() {
            Ok(alg) if asymmetric(alg) => algorithms.push(alg),
            _ => p.push(t.key_path("algorithms"), format!("{name:?} is not accepted; list asymmetric algorithms only: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (HMAC and none never)")),
        }
    }
    let claim = t.string("claim", p).unwrap_or(DEFAULT_JWT_CLAIM).to_owned();
    let leeway = t.duration("leeway", Duration::ZERO, Duration::from_secs(300), p).unwrap_or(DEFAULT_JWT_LEEWAY);
    let refresh = t
        .duration("jwks_refresh", Duration::from_secs(10), Duration::from_secs(24 * 3_600), p)
        .unwrap_or(DEFAULT_JWKS_REFRESH);
    let jwks = match (t.string("jwks_file", p), t.string("jwks_url", p)) {
        (Some(file), None) => Some(JwksSource::File(base.join(file))),
        (None, Some(url)) => jwks_url(url, &t.key_path("jwks_url"), allow_http, p),
        _ => {
            p.push(t.key_path("jwks_file"), "set exactly one of jwks_file (a JWKS document, re-read when it changes) or jwks_url (https, fetched every jwks_refresh)");
            None
        }
    };
    Some(JwtSpec { issuer: issuer?, audiences, algorithms, claim, leeway, jwks: jwks?, refresh })
}

fn jwks_url(url: &str, key: &str, allow_http: bool, p: &mut Problems) -> Option<JwksSource> {
    match url.parse::<http::Uri>() {
        Ok(u)
            if u.authority().is_some()
                && (u.scheme_str() == Some("https") || (allow_http && u.scheme_str() == Some("http"))) =>
        {
            Some(JwksSource::Url(u))
        }
        _ => {
            p.push(key, format!("{url:?} must be an https:// URL (http:// needs upstream.allow_http)"));
            None
        }
    }
}

/// `spiffe://trust-domain/path`: a trust domain of lowercase letters, digits, `.`, `-`, `_`,
/// and a non-empty path (the SPIFFE ID spec, section 2).
pub(super) fn spiffe_id(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("spiffe://") else { return false };
    let Some((domain, path)) = rest.split_once('/') else { return false };
    let domain_ok =
        !domain.is_empty() && domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    domain_ok && !path.is_empty() && !path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
}
