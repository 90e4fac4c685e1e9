//! The schema of the gateway's JSON log lines, checked on every line a test's child process
//! writes: fields typed (numbers as numbers), absent values absent, errors as words, never
//! Rust `Debug` output.

use std::net::SocketAddr;

use serde_json::{Map, Value};

/// Fields that are numbers wherever they appear.
const NUMBERS: &[&str] = &[
    "status",
    "request_bytes",
    "response_bytes",
    "upstream_ms",
    "total_ms",
    "retry_in_s",
    "skew_secs",
    "max_connections",
    "descriptor_limit",
    "idle_timeout_ms",
    "grace_ms",
    "timeout_ms",
    "failures",
    "open",
    "calls",
    "refresh_before_s",
    "token_lifetime_s",
];

const BOOLEANS: &[&str] = &["tls", "shed"];

/// Optional fields: present with a value, or absent; never a placeholder.
const OPTIONAL: &[&str] = &["caller", "operation", "app", "room", "user_ids", "upstream_request_id", "user_agent"];

/// What every access line carries.
const ACCESS: &[&str] = &[
    "request_id",
    "method",
    "path",
    "http_version",
    "client_addr",
    "status",
    "origin",
    "request_bytes",
    "total_ms",
    "trace_id",
];

/// What Rust `Debug` output of options and errors looks like inside a string.
const DEBUG_ARTEFACTS: &[&str] = &["Some(", "Error {", "Custom {", "Os {", "kind: ", "Error(", "\"None\""];

/// Checks one line; returns the event, or what is wrong with it.
pub fn check(line: &str) -> Result<Value, String> {
    let event: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let Some(fields) = event.as_object() else { return Err(format!("not an object: {line}")) };
    let problems = problems(fields);
    if problems.is_empty() {
        Ok(event)
    } else {
        Err(format!("{}: {line}", problems.join("; ")))
    }
}

fn problems(fields: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["timestamp", "level", "target"] {
        if !fields.get(key).is_some_and(Value::is_string) {
            out.push(format!("{key} missing or not a string"));
        }
    }
    let target = fields.get("target").and_then(Value::as_str).unwrap_or("");
    // Dependencies (h2, hyper, rustls through `log`) write their own fields; only the
    // gateway's lines are held to the schema.
    let ours = target.starts_with("sparkrtc_gateway") || ["access", "audit", "sandbox"].contains(&target);
    if !ours {
        return out;
    }
    for (key, value) in fields {
        if NUMBERS.contains(&key.as_str()) && !value.is_u64() && !value.is_i64() {
            out.push(format!("{key} is not a number"));
        }
        if BOOLEANS.contains(&key.as_str()) && !value.is_boolean() {
            out.push(format!("{key} is not a boolean"));
        }
        if OPTIONAL.contains(&key.as_str()) && (value == "-" || value == "") {
            out.push(format!("{key} is a placeholder, not absent"));
        }
        if key == "cause" && value == "" {
            out.push("an empty cause".to_owned());
        }
        if let Some(text) = value.as_str() {
            let quoted = format!("\"{text}\"");
            if let Some(artefact) = DEBUG_ARTEFACTS.iter().find(|a| text.contains(**a) || quoted == **a) {
                out.push(format!("{key} looks like Debug output ({artefact})"));
            }
        }
    }
    if target == "access" {
        out.extend(access(fields));
    }
    out
}

fn access(fields: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> =
        ACCESS.iter().filter(|k| !fields.contains_key(**k)).map(|k| format!("access line without {k}")).collect();
    let text = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or("");
    if fields.contains_key("client_addr") && text("client_addr").parse::<SocketAddr>().is_err() {
        out.push("client_addr is not an address".to_owned());
    }
    let trace = text("trace_id");
    if fields.contains_key("trace_id")
        && !(trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        out.push("trace_id is not 32 lowercase hex digits".to_owned());
    }
    if !["1.0", "1.1", "2"].contains(&text("http_version")) {
        out.push("http_version is not 1.0, 1.1 or 2".to_owned());
    }
    out
}
