//! The real binary under real signals: SIGHUP reloads (a valid config changes the next call, an
//! invalid one is reported in full and changes nothing), SIGTERM drains (readiness fails, the
//! call in flight gets its real answer, the process exits 0, the port is closed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::process::Process;
use support::{config_with, mock_upstream, Harness, Reply, ALLOW_ALL, APP};
use tokio::sync::Notify;

/// A generous bound on any one wait, so a broken build fails instead of hanging CI.
const PATIENCE: Duration = Duration::from_secs(60);

fn config(upstream: SocketAddr, operations: &str) -> String {
    config_with(upstream, &format!(r#"allow = [{{ callers = ["*"], operations = [{operations}] }}]"#), ALLOW_ALL, "")
        .replace("secret_key_env = \"TEST_SK\"", "secret_key_file = \"sk\"")
        .replace("drain_delay = \"0s\"", "drain_delay = \"5s\"")
        .replace("[profiles.main]", "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[profiles.main]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_the_real_process() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let gate = (arrived.clone(), release.clone());
    let script = move |seen: &support::Seen| match seen.body.as_ref() {
        b if b.windows(5).any(|w| w == b"gated") => Reply::Gate { arrived: gate.0.clone(), release: gate.1.clone() },
        _ => Reply::status(202),
    };
    let (upstream, upstream_addr, _) = mock_upstream(script, |addr| support::config_text(addr, "")).await;
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config(upstream_addr, r#""ShowApp""#)).unwrap();

    let process = Process::serve(&path, None);
    let serving = process.wait_for("gateway serving");
    let addr: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = serving["admin"].as_str().unwrap().parse().unwrap();
    let h = Arc::new(Harness::client_for(addr));
    let json = [("content-type", "application/json")];
    let remove = format!("/v2/apps/{APP}/rooms/r1/batch-remove-users");

    h.call("POST", &remove, &json, r#"{"user_ids":["u1"]}"#).await.assert_gateway_error(403, "RTCGW.4033");

    std::fs::write(&path, config(upstream_addr, r#""ShowApp", "RemoveUsers""#)).unwrap();
    process.signal("HUP");
    process.wait_for("config reloaded");
    assert_eq!(h.call("POST", &remove, &json, r#"{"user_ids":["u1"]}"#).await.status, 202);

    std::fs::write(&path, config(upstream_addr, r#""Nope""#).replace("max_body_bytes = 4096", "max_body_bytes = 0"))
        .unwrap();
    process.signal("HUP");
    let refused = process.wait_for("config reload refused");
    let report = refused["message"].as_str().unwrap();
    assert!(
        report.contains("has 2 problems")
            && report.contains("server.max_body_bytes")
            && report.contains("apps.app-123.allow[0].operations"),
        "{report}"
    );
    assert_eq!(h.call("POST", &remove, &json, r#"{"user_ids":["u1"]}"#).await.status, 202, "the running config stayed");

    let in_flight = {
        let (h, remove) = (h.clone(), remove.clone());
        tokio::spawn(async move {
            h.call("POST", &remove, &[("content-type", "application/json")], r#"{"user_ids":["gated"]}"#).await
        })
    };
    arrived.notified().await;
    process.signal("TERM");
    process.wait_for("stop signal received");
    let readyz = h.call_at(admin, "GET", "/readyz", &[], "").await;
    assert_eq!(readyz.status, 503, "readiness fails as soon as the stop signal is handled");
    release.notify_one();
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.header("x-request-id")), (202, Some("up-gated")));

    let mut process = process;
    let status = tokio::task::spawn_blocking(move || {
        let status = process.child().wait();
        (status, process)
    });
    let (status, _process) = tokio::time::timeout(PATIENCE, status).await.unwrap().unwrap();
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port is closed after exit");
    assert_eq!(upstream.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_config_file_reloads_without_a_signal() {
    let (_, upstream_addr, _) = mock_upstream(|_| Reply::status(202), |addr| support::config_text(addr, "")).await;
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    let path = dir.join("gateway.toml");
    let watched = |ops: &str| {
        config(upstream_addr, ops).replace("drain_delay = \"5s\"", "drain_delay = \"0s\"\nwatch_config = true")
    };
    std::fs::write(&path, watched(r#""ShowApp""#)).unwrap();

    let process = Process::serve(&path, None);
    let serving = process.wait_for("gateway serving");
    let h = Harness::client_for(serving["listen"].as_str().unwrap().parse().unwrap());
    let json = [("content-type", "application/json")];
    let remove = format!("/v2/apps/{APP}/rooms/r1/batch-remove-users");
    h.call("POST", &remove, &json, r#"{"user_ids":["u1"]}"#).await.assert_gateway_error(403, "RTCGW.4033");

    std::fs::write(&path, watched(r#""ShowApp", "RemoveUsers""#)).unwrap();
    process.wait_for("config file changed; reloading");
    process.wait_for("config reloaded");
    assert_eq!(h.call("POST", &remove, &json, r#"{"user_ids":["u1"]}"#).await.status, 202);
}
