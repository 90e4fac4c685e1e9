//! The policy part of the configuration: callers, allow rules and rate limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;

use super::limits::limit;
use super::reader::{Problems, Table};
use crate::catalog::Catalog;
use crate::policy::{expand_operations, Access, CallerSpec, Callers, Cidr, Rule, DEFAULT_KEY_HEADER};
use crate::ratelimit::{LimitSpec, OnBackendError};

/// `[policy]` and `[callers.NAME]`.
pub(super) fn callers(
    policy: &mut Table<'_>,
    callers: &mut Table<'_>,
    on_error: OnBackendError,
    p: &mut Problems,
) -> (Callers, BTreeMap<Arc<str>, LimitSpec>) {
    let header = policy.string("key_header", p).unwrap_or(DEFAULT_KEY_HEADER);
    let key_header = HeaderName::from_bytes(header.as_bytes()).unwrap_or_else(|_| {
        p.push(policy.key_path("key_header"), format!("{header:?} is not a header name; use letters, digits and '-'"));
        HeaderName::from_static(DEFAULT_KEY_HEADER)
    });
    let trusted_proxies = cidrs(policy, "trusted_proxies", p);
    let mut named: Vec<CallerSpec> = Vec::new();
    let mut limits = BTreeMap::new();
    for (name, mut t) in callers.entries(p) {
        let name: Arc<str> = name.into();
        if &*name == "*" {
            p.push(t.key_path(""), "\"*\" means anyone in rules and cannot name a caller");
        }
        let key_sha256 = t.string("key_sha256", p).and_then(|hex_digest| {
            let bytes = hex::decode(hex_digest).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
            if bytes.is_none() {
                p.push(
                    t.key_path("key_sha256"),
                    "must be 64 hex characters: the SHA-256 of the caller's key, e.g. `printf %s \"$KEY\" | sha256sum`",
                );
            }
            bytes
        });
        if let Some(other) = named.iter().find(|c| key_sha256.is_some() && c.key_sha256 == key_sha256) {
            p.push(
                t.key_path("key_sha256"),
                format!("is the same key as callers.{}'s; each caller needs its own key", other.name),
            );
        }
        let addresses = cidrs(&mut t, "addresses", p);
        let cert_names: Vec<String> =
            t.strings("cert_names", p).unwrap_or_default().into_iter().map(str::to_owned).collect();
        for name in cert_names.iter().filter(|n| n.starts_with("spiffe:") && !super::jwt::spiffe_id(n)) {
            p.push(
                t.key_path("cert_names"),
                format!("{name:?} is not a SPIFFE id; write it like \"spiffe://trust-domain/ns/NAMESPACE/sa/ACCOUNT\""),
            );
        }
        let jwt_subjects: Vec<String> =
            t.strings("jwt_subjects", p).unwrap_or_default().into_iter().map(str::to_owned).collect();
        if addresses.is_empty() && key_sha256.is_none() && cert_names.is_empty() && jwt_subjects.is_empty() {
            p.push(
                t.key_path("addresses"),
                "this caller can never be recognised; give addresses, key_sha256, cert_names or jwt_subjects",
            );
        }
        if let Some(spec) = limit(&mut t, "limit", on_error, p) {
            limits.insert(name.clone(), spec);
        }
        t.finish(p);
        named.push(CallerSpec { name, addresses, key_sha256, cert_names, jwt_subjects });
    }
    (Callers { key_header, trusted_proxies, named, jwt: None }, limits)
}

fn cidrs(t: &mut Table<'_>, key: &str, p: &mut Problems) -> Vec<Cidr> {
    let mut out = Vec::new();
    for s in t.strings(key, p).unwrap_or_default() {
        match s.parse() {
            Ok(c) => out.push(c),
            Err(()) => p.push(
                t.key_path(key),
                format!(
                    "{s:?} is not an address range; write it like \"10.0.0.0/8\", \"2001:db8::/32\" or \"127.0.0.1\""
                ),
            ),
        }
    }
    out
}

/// `allow`, `shadow`, `limit` and `operation_limits` of an app or of `[account]`.
pub(super) fn access(
    t: &mut Table<'_>,
    callers: &Callers,
    on_error: OnBackendError,
    p: &mut Problems,
) -> (Access, Option<LimitSpec>, BTreeMap<&'static str, LimitSpec>) {
    let origin = t.key_path("allow");
    let shadow = t.boolean("shadow", p).unwrap_or(false);
    let rules = match t.tables("allow", p) {
        None => {
            p.push(&origin, "is missing, so nothing would be allowed; add allow = [{ callers = [\"NAME\"], operations = [\"moderation\"] }], or allow = [] to refuse every call on purpose");
            Vec::new()
        }
        Some(tables) => tables.into_iter().filter_map(|rt| rule(rt, callers, p)).collect(),
    };
    let app_limit = limit(t, "limit", on_error, p);
    let mut operation_limits = BTreeMap::new();
    if t.has("operation_limits") {
        let mut ot = t.table("operation_limits", p);
        ot.keyed_by_name();
        let names: Vec<String> = ot.keys();
        for name in names {
            match (Catalog.by_name(&name), limit(&mut ot, &name, on_error, p)) {
                (Some(op), Some(spec)) => {
                    operation_limits.insert(op.name, spec);
                }
                (None, _) => p.push(ot.key_path(&name), "is not a SparkRTC operation name such as \"RemoveUsers\""),
                (Some(_), None) => {}
            }
        }
        ot.finish(p);
    }
    (Access { origin, rules, shadow }, app_limit, operation_limits)
}

fn rule(mut t: Table<'_>, callers: &Callers, p: &mut Problems) -> Option<Rule> {
    let names = t.strings("callers", p);
    let ops = t.strings("operations", p);
    let (callers_key, operations_key) = (t.key_path("callers"), t.key_path("operations"));
    t.finish(p);
    let Some(names) = names else {
        p.push(callers_key, "is missing; list caller names from [callers.NAME], or [\"*\"] for anyone");
        return None;
    };
    let Some(ops) = ops else {
        p.push(
            &operations_key,
            "is missing; list operations or groups: \"*\", \"read-only\", \"moderation\", \"recording\", \"app-admin\"",
        );
        return None;
    };
    let operations = expand_operations(ops).map_err(|e| p.push(&operations_key, e)).ok()?;
    if names.contains(&"*") {
        return Some(Rule { callers: None, operations });
    }
    let mut known = Vec::new();
    for name in names {
        match callers.named.iter().find(|c| &*c.name == name) {
            Some(c) => known.push(c.name.clone()),
            None => p.push(&callers_key, format!("{name:?} is not a caller defined as [callers.{name}]")),
        }
    }
    Some(Rule { callers: Some(known), operations })
}
