//! The real binary's JSON logs under `RUST_LOG=info` and `debug`, through a call of each kind
//! (allowed, each refusal class, SparkRTC down, IAM down), a reload that works and one that
//! fails, and a drain: every line passes the schema (`support::logline`, checked by the
//! process helper), and access lines carry the caller's address, user agent, HTTP version,
//! trace id and the real body size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;
use support::process::Process;
use support::{config_with, logline, mock_upstream, Harness, Reply, ALLOW_ALL, APP};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const USERS: &str = r#"{"user_ids":["u1"]}"#;

/// A port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// `upstream` serves the main app; `iam` is the IAM endpoint of the token app's profile.
fn config(upstream: SocketAddr, iam: SocketAddr, operations: &str) -> String {
    let app_policy = format!(r#"allow = [{{ callers = ["local"], operations = [{operations}] }}]"#);
    let account_policy = format!("{ALLOW_ALL}\nlimit = {{ rate = \"1/h\" }}");
    let extra = format!(
        r#"
[callers.local]
addresses = ["127.0.0.1"]

[profiles.tok]
kind = "token"
iam_endpoint = "https://127.0.0.1:{iam}"
domain = "my-account"
user = "gateway-user"
password = "iam-password-value"
project_id = "fedcba9876543210fedcba9876543210"
token_wait = "1s"
iam_timeout = "15s"

[apps."app-tok"]
profile = "tok"
{ALLOW_ALL}
"#,
        iam = iam.port()
    );
    config_with(upstream, &app_policy, &account_policy, &extra)
        .replace("secret_key_env = \"TEST_SK\"", "secret_key_file = \"sk\"")
        .replace("[profiles.main]", "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[profiles.main]")
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-logs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The access line of the call answered with `request_id` (the gateway's for its refusals,
/// SparkRTC's for its answers).
fn access_line(process: &Process, request_id: &str) -> Value {
    process.wait_until(&format!("access line of {request_id}"), |e| {
        e["target"] == "access"
            && (e["request_id"].as_str() == Some(request_id) || e["upstream_request_id"].as_str() == Some(request_id))
    })
}

async fn every_kind_of_call(rust_log: &str) {
    let (upstream, upstream_addr, _) = mock_upstream(|_| Reply::status(202), |a| support::config_text(a, "")).await;
    let iam = closed_port().await;
    let path = write_config(rust_log, &config(upstream_addr, iam, r#""RemoveUsers""#));
    let process = Process::serve_logging(&path, None, Some(rust_log));
    let serving = process.wait_for("gateway serving");
    let addr: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let _admin: SocketAddr = serving["admin"].as_str().unwrap().parse().unwrap();
    let h = Harness::client_for(addr);
    let remove = format!("/v2/apps/{APP}/rooms/r1/batch-remove-users");
    let json = ("content-type", "application/json");

    // Allowed, from a named caller, in a caller's trace.
    let headers = [json, ("user-agent", "logs-test/1.0"), ("traceparent", TRACEPARENT)];
    let ok = h.call("POST", &remove, &headers, USERS).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    let line = access_line(&process, ok.header("x-request-id").unwrap());
    assert_eq!(line["caller"], "local");
    assert!(line["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
    assert_eq!(line["user_agent"], "logs-test/1.0");
    assert_eq!(line["http_version"], "1.1");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["request_bytes"], USERS.len());
    assert!(line["response_bytes"].is_u64() && line["upstream_ms"].is_u64() && line["total_ms"].is_u64(), "{line}");
    let sent = &upstream.seen()[0].headers;
    let forwarded = sent.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        forwarded.starts_with(&format!("00-{TRACE_ID}-")) && !forwarded.contains("00f067aa0ba902b7"),
        "{forwarded}"
    );

    // 400 for its body: the size read is still logged.
    let bad = r#"{"user_ids": 7}"#;
    let invalid = h.call("POST", &remove, &[json], bad).await;
    assert_eq!(invalid.status, 400, "{invalid:?}");
    let line = access_line(&process, invalid.header("x-request-id").unwrap());
    assert_eq!(line["request_bytes"], bad.len(), "{line}");
    assert!(
        line.get("upstream_ms").is_none() && line.get("upstream_request_id").is_none(),
        "absent, not 0 or -: {line}"
    );

    // 404, 403, 413 and 429: every refusal class logs a typed access line with a new trace.
    let unknown = h.call("GET", "/v2/nothing-here", &[], "").await;
    assert_eq!(unknown.status, 404);
    let line = access_line(&process, unknown.header("x-request-id").unwrap());
    assert!(line.get("operation").is_none() && line.get("app").is_none(), "{line}");
    assert_ne!(line["trace_id"], TRACE_ID);
    let other_op = h.call("GET", &format!("/v2/apps/{APP}"), &[], "").await;
    assert_eq!(other_op.status, 403);
    let big = format!(r#"{{"user_ids":["{}"]}}"#, "u".repeat(5000));
    assert_eq!(h.call("POST", &remove, &[json], &big).await.status, 413);
    assert_eq!(h.call("GET", "/v2/apps", &[], "").await.status, 202);
    assert_eq!(h.call("GET", "/v2/apps", &[], "").await.status, 429);

    // IAM down: 503 for the token app.
    let iam_down = h.call("GET", "/v2/apps/app-tok", &[], "").await;
    assert_eq!(iam_down.status, 503, "{iam_down:?}");
    access_line(&process, iam_down.header("x-request-id").unwrap());

    // A reload that works, and one that fails.
    std::fs::write(&path, config(upstream_addr, iam, r#""RemoveUsers", "ShowApp""#)).unwrap();
    process.signal("HUP");
    process.wait_for("config reloaded");
    std::fs::write(&path, "[server]\nmax_body_bytes = 0\n").unwrap();
    process.signal("HUP");
    process.wait_for("config reload refused");

    // SparkRTC down: 502, logged with its cause as words.
    std::fs::write(&path, config(closed_port().await, iam, r#""RemoveUsers""#)).unwrap();
    process.signal("HUP");
    process.wait_for("config reloaded");
    let down = h.call("POST", &remove, &[json], USERS).await;
    assert_eq!(down.status, 502, "{down:?}");
    let failed = process.wait_for("call failed");
    assert!(failed["cause"].as_str().is_some_and(|c| !c.is_empty()), "{failed}");

    // Drain: the process exits 0, and every line it wrote passes the schema.
    process.signal("TERM");
    let status = tokio::task::spawn_blocking(move || process.exit()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_line_at_info_is_typed_and_access_lines_carry_the_new_fields() {
    every_kind_of_call("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_line_at_debug_is_typed() {
    every_kind_of_call("debug").await;
}

#[test]
fn the_schema_refuses_what_the_issue_quotes() {
    let base = r#""timestamp":"t","level":"INFO","target":"sparkrtc_gateway::server""#;
    assert!(logline::check(&format!("{{{base},\"admin\":\"127.0.0.1:19090\"}}")).is_ok());
    assert!(logline::check(&format!("{{{base},\"admin\":\"Some(127.0.0.1:19090)\"}}")).is_err());
    let debug_cause = r#""cause":"Some(hyper_util::client::legacy::Error(Connect, Custom { kind: Other }))""#;
    assert!(logline::check(&format!("{{{base},{debug_cause}}}")).is_err());
    assert!(logline::check(&format!("{{{base},\"descriptor_limit\":\"1024\"}}")).is_err());
    let access = r#""timestamp":"t","level":"INFO","target":"access""#;
    assert!(logline::check(&format!("{{{access},\"total_ms\":\"12\"}}")).is_err());
    assert!(logline::check(&format!("{{{access},\"caller\":\"-\"}}")).is_err());
    assert!(logline::check("not json").is_err());
}

/// Access lines wait in memory for company (`[log]` in the README); none is lost when the
/// gateway stops right after answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_before_the_process_exits() {
    let (_upstream, upstream_addr, _) = mock_upstream(|_| Reply::status(202), |a| support::config_text(a, "")).await;
    let iam = closed_port().await;
    let path = write_config("exit", &config(upstream_addr, iam, r#""RemoveUsers""#));
    let process = Process::serve_logging(&path, None, Some("info"));
    let serving = process.wait_for("gateway serving");
    let h = Harness::client_for(serving["listen"].as_str().unwrap().parse().unwrap());
    let remove = format!("/v2/apps/{APP}/rooms/r1/batch-remove-users");
    for _ in 0..40 {
        let rsp = h.call("POST", &remove, &[("content-type", "application/json")], USERS).await;
        assert_eq!(rsp.status, 202, "{rsp:?}");
    }
    process.signal("TERM");
    let (status, events) = tokio::task::spawn_blocking(move || process.exit_with_events()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    // The last line, written just before the process exits: only the final flush can carry it.
    assert!(messages.contains(&"stopped"), "{messages:?}");
    let access = events.iter().filter(|e| e["target"] == "access" && e["status"] == 202).count();
    assert_eq!(access, 40, "access lines of the 40 calls");
}
