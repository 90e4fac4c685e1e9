//! The sandbox answers like SparkRTC, and the `demo` command runs the whole path as the README
//! says it does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sparkrtc_gateway::clock::FixedClock;
use sparkrtc_gateway::config::Config;
use sparkrtc_gateway::listener;
use sparkrtc_gateway::sandbox::Sandbox;
use sparkrtc_gateway::signer::{self, CanonicalQuery, HeaderList, SdkDate, SignInput};
use sparkrtc_gateway::Gateway;

const PATH: &str = "/v2/apps/app-123/rooms/room-1/batch-remove-users";

/// A sandbox on plain http and a config pointed at it.
async fn sandbox() -> (SocketAddr, Config) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = support::config_text(addr, "")
        .replace("https://", "http://")
        .replace("[upstream]", "[upstream]\nallow_http = true");
    let config = support::parse_config(&text);
    spawn_sandbox(listener, &config);
    (addr, config)
}

/// Serves a sandbox accepting `config`'s keys on `listener` until the test ends.
fn spawn_sandbox(listener: tokio::net::TcpListener, config: &Config) {
    tokio::spawn(listener::serve(listener, None, Sandbox::new(config), std::future::pending(), Duration::from_secs(1)));
}

/// Signs like a client of the official SDK would, with the given secret key.
async fn send_signed(addr: SocketAddr, sk: &str, body: &str) -> (u16, serde_json::Value) {
    let config = support::parse_config(&support::config_text(addr, ""));
    let mut key = config.profiles["main"].signing_key().unwrap().clone();
    key.secret_key = sparkrtc_gateway::secret::Secret::new(sk);
    let host = addr.to_string();
    let query = CanonicalQuery::default();
    let input = SignInput { method: "POST", host: &host, path: PATH, query: &query, body: body.as_bytes() };
    let mut headers: HeaderList =
        [("Content-Type", "application/json;charset=utf-8"), ("X-Project-Id", support::PROJECT)].into_iter().collect();
    signer::sign(&input, &mut headers, &key, SdkDate::from_system_time(SystemTime::now())).unwrap();
    let mut req = Request::post(format!("http://{host}{PATH}"));
    for (n, v) in headers.iter() {
        req = req.header(n, v);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let rsp = client.request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn sandbox_accepts_a_correct_signature_and_refuses_a_wrong_one() {
    let (addr, _) = sandbox().await;
    let (status, _) = send_signed(addr, support::SK, r#"{"user_ids":["user001"]}"#).await;
    assert_eq!(status, 202);
    let (status, body) = send_signed(addr, "SK-wrong", r#"{"user_ids":["user001"]}"#).await;
    assert_eq!((status, body["error_code"].as_str()), (401, Some("APIGW.0301")));
}

#[tokio::test]
async fn sandbox_refuses_bad_input_like_sparkrtc() {
    let (addr, _) = sandbox().await;
    let (status, body) = send_signed(addr, support::SK, r#"{"user_ids":[]}"#).await;
    assert_eq!(
        (status, body["error_code"].as_str(), body["error_msg"].as_str()),
        (400, Some("RTC.00001003"), Some("InvalidParameterValue"))
    );
}

#[tokio::test]
async fn sandbox_refuses_a_signature_from_a_skewed_clock() {
    let (_, config) = sandbox().await;
    let skewed = SystemTime::now() - Duration::from_secs(16 * 60);
    let gateway = Gateway::with_clock(config, Arc::new(FixedClock(skewed))).unwrap();
    let running = sparkrtc_gateway::start(gateway, None).await.unwrap();
    let h = support::Harness::client_for(running.addr);
    let answer = h.remove_users(r#"{"user_ids":["user001"]}"#).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.json()["error_code"], "APIGW.0303");
    assert_eq!(answer.header("x-gateway-error"), None, "the 401 is SparkRTC's answer, relayed");
    running.stop().await;
}

#[tokio::test]
async fn gateway_serves_http2_callers() {
    let (_, config) = sandbox().await;
    let running = sparkrtc_gateway::start(Gateway::new(config).unwrap(), None).await.unwrap();
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{}{PATH}", running.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"user_ids":["user001"]}"#)))
        .unwrap();
    let rsp = client.request(req).await.unwrap();
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    assert_eq!(rsp.status(), 202);
    assert!(rsp.headers().contains_key("x-request-id"));
    running.stop().await;
}

#[test]
fn demo_command_prints_the_relayed_202_and_request_id() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparkrtc-gateway"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    // The deadline only guards against a hang; the demo answers as soon as both servers are up.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let done = line.contains("curl");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(text.contains("<- 202 Accepted"), "{text}");
    assert!(seen.iter().any(|l| l.starts_with("<- x-request-id: ") && l.len() > "<- x-request-id: ".len()), "{text}");
}

#[tokio::test]
async fn sandbox_accepts_a_rotated_key_from_its_file_and_no_longer_the_old_one() {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-sandbox-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = support::config_text(addr, "").replace("secret_key_env = \"TEST_SK\"", "secret_key_file = \"sk\"");
    let config = Config::parse(&text, "t.toml", &dir, &|_| None).unwrap();
    spawn_sandbox(listener, &config);
    let body = r#"{"user_ids":["user001"]}"#;
    assert_eq!(send_signed(addr, support::SK, body).await.0, 202);
    std::fs::write(dir.join("sk"), "SK-rotated-in-the-file").unwrap();
    assert_eq!(send_signed(addr, "SK-rotated-in-the-file", body).await.0, 202, "the live key verifies");
    assert_eq!(send_signed(addr, support::SK, body).await.0, 401, "the key loaded at start is retired");
}
