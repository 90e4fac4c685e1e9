//! Hostile and careless clients through the running gateway: connections that never send a
//! request, more connections than allowed, a process out of file descriptors, JSON bodies with a
//! key given twice, and ambiguous `Transfer-Encoding` framing. Waits are for observable
//! conditions (the socket reaching EOF, a log line) with generous deadlines, never for a time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::process::Process;
use support::{config_text, data, mock_upstream, start_with, Harness, Reply, APP};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A generous bound on any one wait, so a broken build fails instead of hanging CI.
const PATIENCE: Duration = Duration::from_secs(60);

const REMOVE_USERS: &str = "/v2/apps/app-123/rooms/room-456/batch-remove-users";

/// The test config with `keys` added to `[server]`, and `extra` appended.
fn config(upstream: SocketAddr, keys: &str, extra: &str) -> String {
    config_text(upstream, extra).replacen("[server]\n", &format!("[server]\n{keys}\n"), 1)
}

async fn gateway(keys: &'static str) -> Harness {
    start_with(|_| Reply::status(202), move |addr| config(addr, keys, "")).await
}

/// Reads and keeps everything until the gateway closes the connection (EOF or reset).
async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.unwrap_or_else(|_| panic!("the gateway kept the connection open"));
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn finding1_a_silent_tcp_connection_is_closed_by_the_idle_timeout() {
    let h = gateway(r#"idle_timeout = "1s""#).await;
    let mut silent = TcpStream::connect(h.gateway).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "", "nothing is sent to a connection that sent nothing");
    assert_eq!(h.remove_users(r#"{"user_ids":["u1"]}"#).await.status, 202, "the gateway still serves");
}

#[tokio::test]
async fn finding1_a_tls_connection_silent_after_its_handshake_is_closed_by_the_idle_timeout() {
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        data("certs/server.pem").display(),
        data("certs/server.key").display()
    );
    // [server.tls] must follow [server].
    let h = start_with(
        |_| Reply::status(202),
        move |addr| config(addr, r#"idle_timeout = "1s""#, "").replace("[admin]", &format!("{tls}\n[admin]")),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(data("certs/ca.pem")).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(h.gateway).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake completes");
    read_until_closed(&mut tls).await;
}

#[tokio::test]
async fn finding1_an_h2c_connection_silent_after_its_preface_is_closed_by_the_idle_timeout() {
    let h = gateway(r#"idle_timeout = "1s""#).await;
    let mut h2c = TcpStream::connect(h.gateway).await.unwrap();
    // The client connection preface (RFC 9113 §3.4): the magic octets and an empty SETTINGS frame.
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    read_until_closed(&mut h2c).await;
}

/// Not a regression test: hyper's 30 s header-read timer, which runs while an HTTP/1.1
/// connection waits for its next request, closes it too; the idle timeout only comes sooner.
#[tokio::test]
async fn an_http1_keep_alive_connection_idle_after_its_call_is_closed() {
    let h = gateway(r#"idle_timeout = "1s""#).await;
    let body = r#"{"user_ids":["u1"]}"#;
    let mut conn = TcpStream::connect(h.gateway).await.unwrap();
    let request = format!(
        "POST {REMOVE_USERS} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

#[tokio::test]
async fn finding1_an_h2_connection_without_streams_is_closed_after_its_last_call() {
    let h = gateway(r#"idle_timeout = "1s""#).await;
    let tcp = TcpStream::connect(h.gateway).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::post(format!("http://{}{REMOVE_USERS}", h.gateway))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"user_ids":["u1"]}"#)))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 202);
    // The sender stays alive, so only the gateway can end the connection (GOAWAY, then close).
    tokio::time::timeout(PATIENCE, conn).await.expect("the gateway kept the idle HTTP/2 connection open").unwrap().ok();
    drop(sender);
}

/// With `max_connections = 4` and no idle timeout in reach, 8 silent connections do not keep a
/// caller out: at the limit the gateway stops accepting and closes the connection idle the
/// longest to make room, so the oldest silent ones go first and the newest stay.
#[tokio::test]
async fn finding1_at_max_connections_the_longest_idle_are_evicted_and_a_caller_is_served() {
    let h = gateway("idle_timeout = \"1h\"\nmax_connections = 4").await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(h.gateway).await.unwrap());
    }
    let answer = h.remove_users(r#"{"user_ids":["u1"]}"#).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(h.upstream.seen().len(), 1);
    read_until_closed(&mut silent[0]).await;
    let mut buf = [0u8; 16];
    let newest = silent.last().unwrap();
    assert!(
        matches!(newest.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the newest idle connection was closed before older ones"
    );
}

/// A config file for the real binary in a directory of its own, with the key in a file.
fn config_file(name: &str, upstream: SocketAddr, keys: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    let text = config(upstream, keys, "")
        .replace("secret_key_env = \"TEST_SK\"", "secret_key_file = \"sk\"")
        .replace("[profiles.main]", "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[profiles.main]");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn connect_silently(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut silent = Vec::new();
    for _ in 0..n {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    silent
}

/// Under `ulimit -n 64` with no `max_connections` set, the limit comes from the descriptor
/// limit, so 100 silent connections held open cannot exhaust descriptors: the gateway keeps
/// accepting by evicting the longest idle ones and still has descriptors to reach SparkRTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding1_under_a_low_descriptor_limit_silent_connections_do_not_stop_callers_being_served() {
    let (upstream, upstream_addr, _) = mock_upstream(|_| Reply::status(202), |a| config_text(a, "")).await;
    let path = config_file("fd-default", upstream_addr, r#"idle_timeout = "1h""#);
    let process = Process::serve(&path, Some(64));
    let limits = process.wait_for("client connection limits");
    assert_eq!(limits["max_connections"], 16, "half of 64 descriptors beyond the 32 reserved: {limits}");
    let serving = process.wait_for("gateway serving");
    let addr: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();

    let _silent = connect_silently(addr, 100).await;
    let answer = Harness::client_for(addr).remove_users(r#"{"user_ids":["u1"]}"#).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(upstream.seen().len(), 1);
}

/// With `max_connections` above what the descriptor limit allows, accept fails with EMFILE.
/// The accept loop survives it: it closes the longest idle connection, backs off, and serves
/// again once descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding1_out_of_descriptors_the_gateway_sheds_idle_connections_and_serves_again() {
    let (upstream, upstream_addr, _) = mock_upstream(|_| Reply::status(202), |a| config_text(a, "")).await;
    let path = config_file("emfile", upstream_addr, "idle_timeout = \"1h\"\nmax_connections = 1000");
    let process = Process::serve(&path, Some(64));
    let serving = process.wait_for("gateway serving");
    let addr: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();

    let mut silent = connect_silently(addr, 100).await;
    let failed = process.wait_for("accept failed");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("Too many open files")), "{failed}");
    // The oldest idle connection is the one shed to free a descriptor.
    read_until_closed(&mut silent[0]).await;

    drop(silent);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while process.descriptors() > 32 {
        assert!(tokio::time::Instant::now() < deadline, "descriptors never freed: {}", process.descriptors());
        tokio::time::sleep(Duration::from_millis(100)).await; // polling an observable condition
    }
    let answer = Harness::client_for(addr).remove_users(r#"{"user_ids":["u1"]}"#).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn finding5_a_json_body_with_a_key_given_twice_is_refused_before_the_upstream() {
    let h = gateway("").await;
    let answer = h.remove_users(r#"{"user_ids":["a"],"user_ids":["b","c"]}"#).await;
    answer.assert_gateway_error(400, "RTCGW.4005");
    let message = answer.json()["error_msg"].as_str().unwrap().to_owned();
    assert!(message.contains("\"user_ids\" appears twice"), "{message}");
    let nested = h
        .call(
            "POST",
            &format!("/v2/apps/{APP}/rooms/room-456/batch-remove-users"),
            &[("content-type", "application/json")],
            r#"{"user_ids":["a"],"options":{"reason":"x","reason":"y"}}"#,
        )
        .await;
    nested.assert_gateway_error(400, "RTCGW.4005");
    assert!(h.upstream.seen().is_empty(), "an ambiguous body reached SparkRTC");
}

#[tokio::test]
async fn finding5_an_ambiguous_body_spends_no_rate_limit_budget() {
    // One call a minute for the app: a refused body must leave that call for a good one.
    let h =
        start_with(|_| Reply::status(202), |addr| config(addr, "", "[limits]\nper_app = { rate = \"1/m\" }\n")).await;
    for _ in 0..3 {
        h.remove_users(r#"{"user_ids":["a"],"user_ids":["b"]}"#).await.assert_gateway_error(400, "RTCGW.4005");
    }
    assert_eq!(h.remove_users(r#"{"user_ids":["a"]}"#).await.status, 202, "the budget is intact");
    h.remove_users(r#"{"user_ids":["b"]}"#).await.assert_gateway_error(429, "RTCGW.4290");
    assert_eq!(h.upstream.seen().len(), 1);
}

#[tokio::test]
async fn finding6_transfer_encoding_other_than_one_chunked_is_refused_and_the_connection_closed() {
    let h = gateway("").await;
    let body = r#"{"user_ids":["u1"]}"#;
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for te in [
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
    ] {
        let mut conn = TcpStream::connect(h.gateway).await.unwrap();
        let request = format!(
            "POST {REMOVE_USERS} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{te}\r\n\r\n{chunked}"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        // Read to EOF: the gateway must close the connection after its answer.
        let answer = read_until_closed(&mut conn).await.to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 400"), "{te}: {answer}");
        assert!(answer.contains("x-gateway-error: rtcgw.4007"), "{te}: {answer}");
        assert!(answer.contains("connection: close"), "{te}: {answer}");
        assert!(answer.contains("x-request-id: "), "{te}: {answer}");
    }
    assert!(h.upstream.seen().is_empty(), "a request with ambiguous framing reached SparkRTC");

    // One chunked coding is fine.
    let mut conn = TcpStream::connect(h.gateway).await.unwrap();
    let request = format!(
        "POST {REMOVE_USERS} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(h.upstream.seen().len(), 1);
}

/// hyper's own rule for the other ambiguity (RFC 9112 §6.3): with both `Transfer-Encoding` and
/// `Content-Length`, the length is ignored and the connection closed after the answer.
#[tokio::test]
async fn transfer_encoding_with_content_length_is_read_as_chunked_and_the_connection_closed() {
    let h = gateway("").await;
    let body = r#"{"user_ids":["u1"]}"#;
    let request = format!(
        "POST {REMOVE_USERS} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(h.gateway).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes());
}
