//! The audit file through the real binary in front of a real sandbox: under concurrent mutating
//! calls the file is renamed and SIGUSR1 sent, again and again, as logrotate would; afterwards
//! every answered mutating call has exactly one whole, typed JSON line across the rotated files
//! and the current one. SIGHUP reopens too; refusals are recorded as refusals; reads are not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sparkrtc_gateway::listener;
use sparkrtc_gateway::sandbox::Sandbox;
use support::process::Process;
use support::{Harness, APP};

/// A generous bound on any one wait, so a broken build fails instead of hanging CI.
const PATIENCE: Duration = Duration::from_secs(60);
const CLIENTS: usize = 4;
const CALLS_EACH: usize = 150;
const ROTATIONS: usize = 5;

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A sandbox on plain http accepting the test keys, and the gateway config pointed at it that
/// writes audit records to `audit`.
async fn sandbox_and_config(dir: &Path, audit: &Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let policy = r#"allow = [{ callers = ["*"], operations = ["RemoveUsers", "ShowApp"] }]"#;
    let text = support::config_with(listener.local_addr().unwrap(), policy, support::ALLOW_ALL, "")
        .replace("https://", "http://")
        .replace("[upstream]", "[upstream]\nallow_http = true");
    let sandbox = Sandbox::new(&support::parse_config(&text));
    tokio::spawn(listener::serve(listener, None, sandbox, std::future::pending(), Duration::from_secs(1)));
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    text.replace("secret_key_env = \"TEST_SK\"", "secret_key_file = \"sk\"")
        .replace("[profiles.main]", "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[profiles.main]")
        + &format!("\n[audit]\nfile = \"{}\"\n", audit.display())
}

/// One audit line, parsed, and the file it was in.
type Found = (PathBuf, serde_json::Map<String, Value>);

/// What a call was and what the caller got.
#[derive(Debug, Clone)]
struct Sent {
    mutating: bool,
    status: u16,
}

/// Call `i` of client `c`: mostly RemoveUsers, every tenth a read (ShowApp), every tenth a
/// mutating call the allowlist refuses (RemoveRoom). The request id says which call it was, and
/// so does the trace id of the caller's `traceparent` (the call's numbers in hex).
async fn call(h: &Harness, c: usize, i: usize) -> (String, Sent) {
    let id = format!("audit-{c}-{i}");
    let traceparent = format!("00-{}-00f067aa0ba902b7-01", trace_id(c, i));
    let json =
        [("content-type", "application/json"), ("x-request-id", id.as_str()), ("traceparent", traceparent.as_str())];
    let (method, path, body, mutating) = match i % 10 {
        0 => ("GET", format!("/v2/apps/{APP}"), String::new(), false),
        5 => ("POST", format!("/v2/apps/{APP}/rooms/room-{c}/dismiss"), "{}".to_owned(), true),
        _ => (
            "POST",
            format!("/v2/apps/{APP}/rooms/room-{c}/batch-remove-users"),
            format!(r#"{{"user_ids":["u{c}-{i}","shared"]}}"#),
            true,
        ),
    };
    let answer = h.call(method, &path, &json, &body).await;
    (id, Sent { mutating, status: answer.status })
}

/// Every line of every file: each must be a whole JSON object.
fn records(files: &[PathBuf]) -> Vec<Found> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{} ends in a torn line", file.display());
        for line in text.lines() {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("torn or invalid line in {}: {e}: {line}", file.display()));
            let Value::Object(record) = parsed else { panic!("not an object: {line}") };
            out.push((file.clone(), record));
        }
    }
    out
}

/// The trace id client `c` sends with its call `i`.
fn trace_id(c: usize, i: usize) -> String {
    format!("{:016x}{:016x}", c + 1, i + 1)
}

/// The types a consumer of the audit file relies on.
fn assert_typed(record: &serde_json::Map<String, Value>, started: SystemTime) {
    let timestamp = record["timestamp"].as_str().unwrap();
    assert!(timestamp.len() == 24 && timestamp.ends_with('Z') && &timestamp[19..20] == ".", "{timestamp}");
    let at = humantime::parse_rfc3339(timestamp).unwrap();
    assert!(at + Duration::from_secs(1) >= started && at <= SystemTime::now(), "{timestamp}");
    for key in ["request_id", "trace_id", "caller", "app", "operation", "room", "decision"] {
        assert!(record[key].is_string(), "{key} in {record:?}");
    }
    record["client_addr"].as_str().unwrap().parse::<SocketAddr>().unwrap();
    assert!(record["status"].is_u64(), "{record:?}");
    if let Some(ids) = record.get("user_ids") {
        assert!(ids.as_array().unwrap().iter().all(Value::is_string), "{record:?}");
    }
    if let Some(id) = record.get("upstream_request_id") {
        assert!(id.is_string(), "{record:?}");
    }
    assert!(!record.values().any(|v| v.is_null() || v == "-"), "absent fields are left out: {record:?}");
}

/// `f` on a runtime thread allowed to block: the process's log is read synchronously.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn every_answered_mutating_call_has_exactly_one_record_across_rotations_under_load() {
    let started = SystemTime::now();
    let dir = scratch("rotate");
    let audit = dir.join("audit.jsonl");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, sandbox_and_config(&dir, &audit).await).unwrap();
    let mut process = Process::serve(&path, None);
    let serving = blocking(|| process.wait_for("gateway serving"));
    let h = Arc::new(Harness::client_for(serving["listen"].as_str().unwrap().parse().unwrap()));

    // The clients report each answer, so rotations are spread over the load by count, not time.
    let (answered_tx, mut answered) = tokio::sync::watch::channel(0usize);
    let answered_tx = Arc::new(answered_tx);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (h, answered_tx) = (h.clone(), answered_tx.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..CALLS_EACH {
                    sent.push(call(&h, c, i).await);
                    answered_tx.send_modify(|n| *n += 1);
                }
                sent
            })
        })
        .collect();
    let total = CLIENTS * CALLS_EACH;
    let mut files = Vec::new();
    for k in 1..=ROTATIONS {
        answered.wait_for(|n| *n >= total * k / (ROTATIONS + 1)).await.unwrap();
        let rotated = dir.join(format!("audit.jsonl.{k}"));
        std::fs::rename(&audit, &rotated).unwrap();
        files.push(rotated);
        process.signal("USR1");
        blocking(|| process.wait_for("audit file reopened"));
        assert!(audit.exists(), "the file is there again once the gateway says so");
    }
    let mut sent = BTreeMap::new();
    for client in clients {
        sent.extend(client.await.unwrap());
    }
    assert_eq!(sent.len(), total, "request ids are unique");

    // SIGHUP (reload) reopens too.
    let rotated = dir.join("audit.jsonl.hup");
    std::fs::rename(&audit, &rotated).unwrap();
    files.push(rotated.clone());
    process.signal("HUP");
    blocking(|| process.wait_for("audit file reopened"));
    let (after_hup, answer) = call(&h, 9, 1).await;
    assert_eq!(answer.status, 202);
    sent.insert(after_hup.clone(), answer);
    files.push(audit.clone());

    // A stop writes what is queued before the process ends.
    process.signal("TERM");
    let status = blocking(|| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = process.child().try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the gateway did not stop");
            std::thread::park_timeout(Duration::from_millis(50));
        }
    });
    assert!(status.success(), "{status:?}");

    let all = records(&files);
    let mut by_id: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for (file, record) in all {
        assert_typed(&record, started);
        by_id.entry(record["request_id"].as_str().unwrap().to_owned()).or_default().push((file, record));
    }
    for (id, call) in &sent {
        let found = by_id.get(id).map_or(0, Vec::len);
        match call.mutating {
            true => assert_eq!(found, 1, "{id} ({call:?}) has {found} audit records"),
            false => assert_eq!(found, 0, "{id} is a read ({call:?}) but has an audit record"),
        }
    }
    let expected: BTreeSet<&String> = sent.iter().filter(|(_, c)| c.mutating).map(|(id, _)| id).collect();
    let recorded: BTreeSet<&String> = by_id.keys().collect();
    assert_eq!(recorded, expected, "records for calls nobody made");

    for (id, call) in sent.iter().filter(|(_, c)| c.mutating) {
        let (_, record) = &by_id[id][0];
        assert_eq!(record["status"].as_u64(), Some(u64::from(call.status)), "{record:?}");
        let (c, i) = id.trim_start_matches("audit-").split_once('-').unwrap();
        let sent_trace = trace_id(c.parse().unwrap(), i.parse().unwrap());
        assert_eq!(record["trace_id"].as_str(), Some(sent_trace.as_str()), "the caller's trace: {record:?}");
        if record["operation"] == "RemoveRoom" {
            assert_eq!((call.status, record["decision"].as_str()), (403, Some("refused:RTCGW.4033")), "{record:?}");
            assert!(record.get("upstream_request_id").is_none(), "{record:?}");
        } else {
            assert_eq!((call.status, record["decision"].as_str()), (202, Some("allowed")), "{record:?}");
            assert_eq!(record["user_ids"], serde_json::json!([format!("u{c}-{i}"), "shared"]));
            assert_eq!(record["room"], format!("room-{c}"));
            assert!(record["upstream_request_id"].as_str().is_some_and(|s| s.len() == 32), "{record:?}");
        }
        assert_eq!(
            (record["app"].as_str(), record["caller"].as_str().map(|c| c.starts_with("addr:"))),
            (Some(APP), Some(true))
        );
    }
    // Each rotation really moved records: every file holds some, and the HUP one is where it belongs.
    for file in &files {
        assert!(by_id.values().flatten().any(|(f, _)| f == file), "{} holds no record", file.display());
    }
    assert_eq!(by_id[&after_hup][0].0, audit, "the call after SIGHUP is in the new file");
}

#[test]
fn check_refuses_an_audit_file_in_a_missing_directory() {
    let dir = scratch("check");
    let missing = dir.join("no-such-dir");
    let text = support::config_text("127.0.0.1:9".parse().unwrap(), "")
        .replace("secret_key_env = \"TEST_SK\"", "secret_key = \"sk\"")
        + &format!("\n[audit]\nfile = \"{}/audit.jsonl\"\n", missing.display());
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparkrtc-gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("SPARKRTC_GATEWAY_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("audit.file")
            && stderr.contains(&format!("{:?} does not exist", missing.display().to_string())),
        "{stderr}"
    );
}
