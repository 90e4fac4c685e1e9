//! Who may call what: the second phase of the request path. It names the caller (client
//! certificate by DNS name or SPIFFE id, then a bearer JWT, then a per-caller key, then the
//! address) and checks the app's allowlist. Default deny: a call goes on only when a rule allows
//! it. A token or key that was sent but does not check out is refused, never downgraded to the
//! address: a caller that meant to prove who it is must not be served as someone weaker.

mod cidr;
mod jwt;
mod san;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

pub(crate) use cidr::Cidr;
pub(crate) use jwt::{asymmetric, JwksSource, JwtSpec, JwtVerifier, TokenRefusal};
pub(crate) use san::spiffe_ids;

use crate::catalog::{Catalog, Operation};

pub(crate) const DEFAULT_KEY_HEADER: &str = "x-gateway-key";

/// Named operation groups usable in rules besides single operation names and `*`.
pub(crate) const GROUPS: [(&str, &[&str]); 3] = [
    ("moderation", &["RemoveUsers", "RemoveRoom"]),
    (
        "recording",
        &[
            "CreateRecordRule",
            "DeleteRecordRule",
            "ListRecordRules",
            "ShowRecordRule",
            "UpdateRecordRule",
            "ShowAutoRecord",
            "UpdateAutoRecord",
            "ShowRecordCallback",
            "UpdateRecordCallback",
            "CreateIndividualStreamJob",
            "ShowIndividualStreamJob",
            "UpdateIndividualStreamJob",
            "StopIndividualStreamJob",
            "CreateMixJob",
            "ShowMixJob",
            "UpdateMixJob",
            "StopMixJob",
        ],
    ),
    (
        "app-admin",
        &[
            "CreateApp",
            "DeleteApp",
            "StartApp",
            "StopApp",
            "ShowApp",
            "ListApps",
            "ListObsBuckets",
            "ListObsBucketObjects",
            "UpdateObsBucketAuthority",
        ],
    ),
];

/// Expands operation names, groups (`read-only`: every GET; see [`GROUPS`]) and `*`.
pub(crate) fn expand_operations<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<&'static str>, String> {
    let all = Catalog.operations();
    let mut out = BTreeSet::new();
    for name in names {
        match name {
            "*" => out.extend(all.iter().map(|op| op.name)),
            "read-only" => out.extend(all.iter().filter(|op| !op.is_mutating()).map(|op| op.name)),
            _ => match (GROUPS.iter().find(|(g, _)| *g == name), Catalog.by_name(name)) {
                (Some((_, ops)), _) => out.extend(ops.iter().filter_map(|n| Catalog.by_name(n)).map(|op| op.name)),
                (None, Some(op)) => {
                    out.insert(op.name);
                }
                (None, None) => {
                    return Err(format!(
                        "{name:?} is neither an operation (e.g. \"RemoveUsers\") nor a group (\"*\", \"read-only\", \"moderation\", \"recording\", \"app-admin\")"
                    ))
                }
            },
        }
    }
    Ok(out)
}

/// A configured caller.
#[derive(Clone, Debug)]
pub struct CallerSpec {
    pub name: Arc<str>,
    pub addresses: Vec<Cidr>,
    /// SHA-256 of the caller's key; the key itself is never stored.
    pub key_sha256: Option<[u8; 32]>,
    /// DNS names, or SPIFFE ids (`spiffe://trust-domain/path`, URI names), in the subject
    /// alternative names of the caller's client certificate.
    pub cert_names: Vec<String>,
    /// Values of the JWT claim that name this caller (`system:serviceaccount:NS:NAME`).
    pub jwt_subjects: Vec<String>,
}

/// How callers are recognised.
#[derive(Clone, Debug)]
pub struct Callers {
    pub key_header: HeaderName,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    pub named: Vec<CallerSpec>,
    /// Bearer JWTs are verified (`[policy.jwt]`).
    pub jwt: Option<Arc<JwtVerifier>>,
}

/// How the caller was recognised, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Certificate,
    Token,
    Key,
    Address,
    Unidentified,
}

/// The caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: Option<Arc<str>>,
    /// The client address: the peer's, or from `X-Forwarded-For` when the peer is a trusted proxy.
    pub address: IpAddr,
    pub via: Via,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "caller {name:?}"),
            None => write!(f, "an unidentified caller at {}", self.address),
        }
    }
}

/// Why no identity could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifyError {
    /// A key was sent that belongs to no caller: refused rather than silently downgraded to the
    /// address, so a typo or a revoked key shows up at once.
    UnknownKey,
    /// A bearer token was sent and does not verify.
    InvalidToken(TokenRefusal),
    /// A valid token whose claim names no configured caller.
    UnknownSubject,
}

impl Callers {
    pub fn identify(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        cert_names: &[String],
    ) -> Result<Identity, IdentifyError> {
        self.identify_at(peer, headers, cert_names, std::time::SystemTime::now())
    }

    /// [`Callers::identify`] with the time tokens are checked against.
    pub fn identify_at(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        cert_names: &[String],
        now: std::time::SystemTime,
    ) -> Result<Identity, IdentifyError> {
        let address = self.client_address(peer.to_canonical(), headers);
        if let Some(c) = self.named.iter().find(|c| c.cert_names.iter().any(|n| cert_names.contains(n))) {
            return Ok(Identity { name: Some(c.name.clone()), address, via: Via::Certificate });
        }
        if let Some((jwt, token)) = self.jwt.as_ref().zip(bearer(headers)) {
            let subject = jwt.verify(token, now).map_err(IdentifyError::InvalidToken)?;
            let caller = self.named.iter().find(|c| c.jwt_subjects.contains(&subject));
            return caller
                .map(|c| Identity { name: Some(c.name.clone()), address, via: Via::Token })
                .ok_or(IdentifyError::UnknownSubject);
        }
        if let Some(key) = headers.get(&self.key_header) {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            // Compare against every caller, in constant time each, so timing tells nothing.
            let mut found = None;
            for c in &self.named {
                if c.key_sha256.is_some_and(|k| crate::secret::constant_time_eq(&k, &digest)) {
                    found = Some(c.name.clone());
                }
            }
            return found
                .map(|name| Identity { name: Some(name), address, via: Via::Key })
                .ok_or(IdentifyError::UnknownKey);
        }
        match self.named.iter().find(|c| c.addresses.iter().any(|cidr| cidr.contains(address))) {
            Some(c) => Ok(Identity { name: Some(c.name.clone()), address, via: Via::Address }),
            None => Ok(Identity { name: None, address, via: Via::Unidentified }),
        }
    }

    /// The peer, unless it is a trusted proxy: then `X-Forwarded-For` is walked from the right
    /// (the entry the nearest proxy appended) past trusted proxies; the first other address is
    /// the client. An entry that is not an address ends the walk at the last trusted hop, so
    /// nothing to its left (which the client wrote) is ever believed.
    fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |a: IpAddr| self.trusted_proxies.iter().any(|c| c.contains(a));
        if !trusted(peer) {
            return peer;
        }
        let values: Vec<&[u8]> = headers.get_all("x-forwarded-for").iter().map(http::HeaderValue::as_bytes).collect();
        let mut hop = peer;
        for value in values.iter().rev() {
            let Ok(text) = std::str::from_utf8(value) else { return hop };
            for entry in text.rsplit(',') {
                match entry.trim().parse::<IpAddr>().map(|a| a.to_canonical()) {
                    Ok(addr) if trusted(addr) => hop = addr,
                    Ok(addr) => return addr,
                    Err(_) => return hop,
                }
            }
        }
        hop
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 9110
/// section 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// One allow rule: these callers may run these operations.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `None`: anyone, identified or not (`callers = ["*"]`).
    pub callers: Option<Vec<Arc<str>>>,
    pub operations: BTreeSet<&'static str>,
}

/// The allowlist of one app (or of the account-level operations).
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Where it is configured, to name it in refusals (`apps."app-123".allow`).
    pub origin: String,
    pub rules: Vec<Rule>,
    /// Evaluate and count refusals, but forward anyway.
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused by a rule set in shadow mode: logged and counted, forwarded.
    ShadowRefused(String),
    Refused(String),
}

impl Access {
    pub fn decide(&self, who: &Identity, op: &Operation) -> Decision {
        let allowed = self.rules.iter().any(|rule| {
            let caller_ok = match (&rule.callers, &who.name) {
                (None, _) => true,
                (Some(names), Some(name)) => names.contains(name),
                (Some(_), None) => false,
            };
            caller_ok && rule.operations.contains(op.name)
        });
        if allowed {
            return Decision::Allowed;
        }
        let why = format!("{}: no rule lets {who} run {}", self.origin, op.name);
        if self.shadow {
            Decision::ShadowRefused(why)
        } else {
            Decision::Refused(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn callers() -> Callers {
        let key: [u8; 32] = Sha256::digest(b"billing-key").into();
        Callers {
            key_header: HeaderName::from_static(DEFAULT_KEY_HEADER),
            trusted_proxies: vec!["10.9.0.0/16".parse().unwrap_or_else(|()| panic!())],
            named: vec![
                CallerSpec {
                    name: "billing".into(),
                    addresses: vec![],
                    key_sha256: Some(key),
                    cert_names: vec!["billing.internal".into()],
                    jwt_subjects: vec![],
                },
                CallerSpec {
                    name: "ops".into(),
                    addresses: vec!["10.1.0.0/16".parse().unwrap_or_else(|()| panic!())],
                    key_sha256: None,
                    cert_names: vec!["spiffe://example.org/ns/ops/sa/tool".into()],
                    jwt_subjects: vec![],
                },
            ],
            jwt: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn identifies_by_certificate_then_key_then_address() {
        let c = callers();
        let by_cert = c.identify(ip("10.1.2.3"), &headers(&[]), &["billing.internal".to_owned()]);
        assert_eq!(by_cert.map(|i| (i.name, i.via)), Ok((Some("billing".into()), Via::Certificate)));
        let by_key = c.identify(ip("10.1.2.3"), &headers(&[("x-gateway-key", "billing-key")]), &[]);
        assert_eq!(by_key.map(|i| (i.name, i.via)), Ok((Some("billing".into()), Via::Key)));
        let by_spiffe = c.identify(ip("192.0.2.1"), &headers(&[]), &["spiffe://example.org/ns/ops/sa/tool".to_owned()]);
        assert_eq!(by_spiffe.map(|i| (i.name, i.via)), Ok((Some("ops".into()), Via::Certificate)));
        let by_addr = c.identify(ip("10.1.2.3"), &headers(&[]), &[]);
        assert_eq!(by_addr.map(|i| (i.name, i.via)), Ok((Some("ops".into()), Via::Address)));
        let nobody = c.identify(ip("192.0.2.1"), &headers(&[]), &[]);
        assert_eq!(nobody.map(|i| (i.name, i.via)), Ok((None, Via::Unidentified)));
        assert_eq!(
            c.identify(ip("10.1.2.3"), &headers(&[("x-gateway-key", "wrong")]), &[]),
            Err(IdentifyError::UnknownKey)
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let c = callers();
        let spoof = headers(&[("x-forwarded-for", "10.1.2.3")]);
        assert_eq!(c.identify(ip("192.0.2.1"), &spoof, &[]).map(|i| i.address), Ok(ip("192.0.2.1")));
        let via_proxy = headers(&[("x-forwarded-for", "6.6.6.6, 10.1.2.3, 10.9.0.7")]);
        let who = c.identify(ip("10.9.0.1"), &via_proxy, &[]);
        assert_eq!(who.map(|i| (i.address, i.name)), Ok((ip("10.1.2.3"), Some("ops".into()))));
    }

    #[test]
    fn forwarded_for_cannot_be_steered_by_entries_the_client_wrote() {
        let c = callers();
        let proxy = ip("10.9.0.1");
        for spoof in ["10.1.2.3, x, 6.6.6.6", "10.1.2.3,,6.6.6.6", "10.1.2.3, 6.6.6.6"] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_str(spoof).unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(c.identify(proxy, &h, &[]).map(|i| i.address), Ok(ip("6.6.6.6")), "{spoof}");
        }
        // Two header lines: the last one is the nearest proxy's.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.2.3"));
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        assert_eq!(c.identify(proxy, &h, &[]).map(|i| i.address), Ok(ip("6.6.6.6")));
        // Garbage right after a trusted hop: that hop is the client address, nothing further left.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.2.3, garbage, 10.9.0.7"));
        assert_eq!(c.identify(proxy, &h, &[]).map(|i| i.address), Ok(ip("10.9.0.7")));
    }

    #[test]
    fn groups_expand_and_unknown_names_are_errors() {
        let ro = expand_operations(["read-only"]).unwrap_or_default();
        assert!(ro.contains("ShowApp") && ro.contains("ListApps") && !ro.contains("RemoveUsers"));
        assert_eq!(
            expand_operations(["moderation"]).map(|s| s.into_iter().collect::<Vec<_>>()),
            Ok(vec!["RemoveRoom", "RemoveUsers"])
        );
        assert_eq!(expand_operations(["*"]).map(|s| s.len()), Ok(42));
        assert!(expand_operations(["recording"]).is_ok_and(|s| s.len() == 17));
        assert!(expand_operations(["RemoveUser"]).is_err());
    }

    #[test]
    fn access_is_default_deny_and_names_the_rule_set() {
        let access = Access {
            origin: "apps.\"a\".allow".into(),
            rules: vec![Rule {
                callers: Some(vec!["ops".into()]),
                operations: expand_operations(["moderation"]).unwrap_or_default(),
            }],
            shadow: false,
        };
        let ops = Identity { name: Some("ops".into()), address: ip("10.1.0.1"), via: Via::Address };
        let anon = Identity { name: None, address: ip("192.0.2.1"), via: Via::Unidentified };
        let remove = Catalog.by_name("RemoveUsers").unwrap_or_else(|| panic!());
        let show = Catalog.by_name("ShowApp").unwrap_or_else(|| panic!());
        assert_eq!(access.decide(&ops, remove), Decision::Allowed);
        assert_eq!(
            access.decide(&ops, show),
            Decision::Refused("apps.\"a\".allow: no rule lets caller \"ops\" run ShowApp".into())
        );
        assert!(
            matches!(access.decide(&anon, remove), Decision::Refused(m) if m.contains("unidentified caller at 192.0.2.1"))
        );
        let shadow = Access { shadow: true, ..access };
        assert!(matches!(shadow.decide(&ops, show), Decision::ShadowRefused(_)));
    }
}
