//! Running it for real: readiness during drain, calls in flight at stop, reload, inbound TLS
//! with client certificates, the Unix socket, and `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sparkrtc_gateway::config::{Config, ConfigError};
use sparkrtc_gateway::{Gateway, ReloadError, Running};
use support::{config_with, data, mock_upstream, Harness, Reply, ALLOW_ALL, APP};
use tokio::sync::Notify;

const USERS: &str = r#"{"user_ids": ["user001"]}"#;

fn remove_users() -> String {
    format!("/v2/apps/{APP}/rooms/r1/batch-remove-users")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(text: &str) -> Running {
    let config = support::parse_config(text);
    sparkrtc_gateway::start(Gateway::new(config).unwrap(), None).await.unwrap()
}

/// Waits until `addr` refuses connections; bounded, so a listener that never closes fails the test.
async fn until_refused(addr: SocketAddr) {
    for _ in 0..100_000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{addr} still accepts connections");
}

#[tokio::test]
async fn readyz_fails_at_once_while_the_proxy_keeps_accepting_during_the_drain_delay() {
    let (upstream, _, text) = mock_upstream(|_| Reply::status(202), |addr| support::config_text(addr, "")).await;
    let running = start(&text.replace("drain_delay = \"0s\"", "drain_delay = \"60s\"")).await;
    let h = Harness::around(&running, upstream);
    let admin = running.admin_addr.unwrap();

    assert_eq!(h.call_at(admin, "GET", "/readyz", &[], "").await.status, 200);
    running.shutdown();
    let readyz = h.call_at(admin, "GET", "/readyz", &[], "").await;
    assert_eq!((readyz.status, readyz.body.as_str()), (503, "not ready: draining\n"));
    assert_eq!(h.call_at(admin, "GET", "/healthz", &[], "").await.status, 200, "alive while draining");
    let during_delay = h.call("POST", &remove_users(), &[("content-type", "application/json")], USERS).await;
    assert_eq!(during_delay.status, 202, "new calls are still served during the drain delay");
}

#[tokio::test]
async fn a_call_in_flight_at_stop_completes_and_new_connections_are_refused_after() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let gate = (arrived.clone(), release.clone());
    let (upstream, _, text) = mock_upstream(
        move |_| Reply::Gate { arrived: gate.0.clone(), release: gate.1.clone() },
        |addr| support::config_text(addr, ""),
    )
    .await;
    let running = start(&text).await;
    let h = Arc::new(Harness::around(&running, upstream));
    let addr = running.addr;

    let in_flight = {
        let h = h.clone();
        tokio::spawn(
            async move { h.call("POST", &remove_users(), &[("content-type", "application/json")], USERS).await },
        )
    };
    arrived.notified().await;
    running.shutdown();
    until_refused(addr).await;
    release.notify_one();
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status, answer.header("x-request-id")),
        (202, Some("up-gated")),
        "the call in flight got its real answer"
    );
    running.wait().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A config file's text whose secret key is read from the file `sk` beside it.
fn policy_config(upstream: SocketAddr, operations: &str) -> String {
    config_with(upstream, &format!(r#"allow = [{{ callers = ["*"], operations = [{operations}] }}]"#), ALLOW_ALL, "")
        .replace("secret_key_env = \"TEST_SK\"", "secret_key_file = \"sk\"")
}

#[tokio::test]
async fn a_valid_reload_changes_the_next_call_and_an_invalid_one_changes_nothing() {
    let dir = temp_dir("reload");
    let path = dir.join("gateway.toml");
    let (upstream, addr, _) = mock_upstream(|_| Reply::status(202), |addr| support::config_text(addr, "")).await;
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    std::fs::write(&path, policy_config(addr, r#""ShowApp""#)).unwrap();
    let running = sparkrtc_gateway::start(Gateway::new(Config::load(&path).unwrap()).unwrap(), None).await.unwrap();
    let h = Harness::around(&running, upstream);
    let json = [("content-type", "application/json")];
    h.call("POST", &remove_users(), &json, USERS).await.assert_gateway_error(403, "RTCGW.4033");

    std::fs::write(&path, policy_config(addr, r#""ShowApp", "RemoveUsers""#)).unwrap();
    running.reload(&path).unwrap();
    assert_eq!(h.call("POST", &remove_users(), &json, USERS).await.status, 202);

    let broken = policy_config(addr, r#""RemoveUsers""#)
        .replace("drain_delay = \"0s\"", "drain_delay = \"soon\"")
        .replace("[upstream]", "[upstream]\nretries = 3");
    std::fs::write(&path, broken).unwrap();
    match running.reload(&path) {
        Err(ReloadError::Config(ConfigError::Invalid { problems, .. })) => {
            let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, ["server.drain_delay", "upstream.retries"], "{problems:?}");
        }
        other => panic!("expected the invalid config to be refused: {other:?}"),
    }
    assert_eq!(h.call("POST", &remove_users(), &json, USERS).await.status, 202, "the running config stayed");
    assert_eq!(running.gateway.counters().config_reload_failures(), 1);
}

#[tokio::test]
async fn a_reload_that_validates_but_cannot_be_built_names_its_stage_and_is_counted() {
    let dir = temp_dir("reload-build");
    let path = dir.join("gateway.toml");
    let (upstream, addr, _) = mock_upstream(|_| Reply::status(202), |addr| support::config_text(addr, "")).await;
    std::fs::write(dir.join("sk"), support::SK).unwrap();
    std::fs::write(&path, policy_config(addr, r#""RemoveUsers""#)).unwrap();
    let running = sparkrtc_gateway::start(Gateway::new(Config::load(&path).unwrap()).unwrap(), None).await.unwrap();
    let h = Harness::around(&running, upstream);
    let json = [("content-type", "application/json")];

    // A readable file passes validation; that it holds no certificate shows only when the
    // upstream's TLS configuration is built.
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let ca = data("certs/ca.pem").display().to_string();
    std::fs::write(&path, policy_config(addr, r#""RemoveUsers""#).replace(&ca, &not_pem.display().to_string()))
        .unwrap();
    let err = running.reload(&path).unwrap_err();
    assert_eq!(err.stage(), "build the upstream TLS configuration", "{err}");
    let chain = sparkrtc_gateway::cause::ErrorChain(&err).to_string();
    assert!(chain.contains(&format!("{}: no PEM certificate found", not_pem.display())), "{chain}");
    assert!(!chain.contains("not valid TOML"), "{chain}");
    assert_eq!(running.gateway.counters().config_reload_failures(), 1);
    assert_eq!(h.call("POST", &remove_users(), &json, USERS).await.status, 202, "the running config stayed");
}

/// A TLS client of the gateway, with or without the test client certificate.
async fn tls_status(addr: SocketAddr, with_cert: bool) -> Result<u16, sparkrtc_gateway::BoxError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(data("certs/ca.pem"))?)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = if with_cert {
        let chain = vec![CertificateDer::from_pem_file(data("certs/client.pem"))?];
        builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(data("certs/client.key"))?)?
    } else {
        builder.with_no_client_auth()
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost")?, tcp).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::get(format!("/v2/apps/{APP}")).header("host", "localhost").body(Full::new(Bytes::new()))?;
    Ok(sender.send_request(req).await?.status().as_u16())
}

fn tls_config(upstream: SocketAddr, client_auth: &str) -> String {
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nclient_auth = \"{client_auth}\"\n\n[callers.mesh-client]\ncert_names = [\"test-client.internal\"]\n",
        data("certs/server.pem").display(),
        data("certs/server.key").display(),
        data("certs/ca.pem").display()
    );
    // [server.tls] must follow [server]; the caller table may go anywhere.
    config_with(upstream, r#"allow = [{ callers = ["mesh-client"], operations = ["*"] }]"#, ALLOW_ALL, "")
        .replace("[admin]", &format!("{tls}\n[admin]"))
}

#[tokio::test]
async fn inbound_tls_identifies_callers_by_client_certificate() {
    let (_, addr, _) = mock_upstream(|_| Reply::status(202), |a| support::config_text(a, "")).await;
    let running = start(&tls_config(addr, "required")).await;
    assert_eq!(tls_status(running.addr, true).await.unwrap(), 202, "the certificate names the caller the rule allows");
    assert!(tls_status(running.addr, false).await.is_err(), "no client certificate: refused at the TLS layer");

    let optional = start(&tls_config(addr, "optional")).await;
    assert_eq!(tls_status(optional.addr, true).await.unwrap(), 202);
    assert_eq!(
        tls_status(optional.addr, false).await.unwrap(),
        403,
        "without a certificate the caller is unidentified"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn serves_on_a_unix_socket_for_sidecars() {
    let dir = temp_dir("uds");
    let socket = dir.join("gateway.sock");
    let (upstream, _, text) = mock_upstream(|_| Reply::status(202), |addr| support::config_text(addr, "")).await;
    let text = text.replace("drain_delay", &format!("unix_socket = \"{}\"\ndrain_delay", socket.display()));
    let running = start(&text).await;
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(remove_users())
        .header("host", "gateway")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(USERS)))
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 202);
    assert_eq!(upstream.seen().len(), 1);
    running.stop().await;
    assert!(!socket.exists(), "the socket file is removed at stop");
}

/// Checks the Prometheus text format line by line; returns sample name+labels -> value.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_after_requests() {
    let (upstream, _, text) = mock_upstream(|_| Reply::status(202), |addr| support::config_text(addr, "")).await;
    let running = start(&text).await;
    let h = Harness::around(&running, upstream);
    let admin = running.admin_addr.unwrap();
    let series = format!(
        "sparkrtc_gateway_requests_total{{app=\"{APP}\",operation=\"RemoveUsers\",status=\"202\",origin=\"upstream\"}}"
    );

    let before = parse_prometheus(&h.call_at(admin, "GET", "/metrics", &[], "").await.body);
    assert_eq!(before.get(&series), None);
    for _ in 0..3 {
        h.call("POST", &remove_users(), &[("content-type", "application/json")], USERS).await;
    }
    h.call("GET", "/v2/apps/not-served", &[], "").await;
    h.call("GET", "/v2/apps/aaa/../bbb", &[], "").await;
    let metrics = h.call_at(admin, "GET", "/metrics", &[], "").await;
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let after = parse_prometheus(&metrics.body);
    assert_eq!(after.get(&series), Some(&3.0));
    assert_eq!(after.get("sparkrtc_gateway_refusals_total{app=\"other\",reason=\"allowlist\"}"), Some(&1.0));
    assert_eq!(after.get("sparkrtc_gateway_upstream_duration_seconds_count{operation=\"RemoveUsers\"}"), Some(&3.0));
    assert_eq!(after.get("sparkrtc_gateway_ready"), Some(&1.0));
    assert!(!metrics.body.contains("not-served"), "unserved app ids never become labels");
    assert!(after.keys().any(|k| k.contains("app=\"other\"")));
}

#[tokio::test]
async fn large_upstream_bodies_are_relayed_whole() {
    let (upstream, _, text) = mock_upstream(
        |_| Reply::With {
            status: 200,
            headers: vec![("content-type", "application/json".to_owned())],
            body: "x".repeat(256 * 1024),
        },
        |addr| support::config_text(addr, ""),
    )
    .await;
    let running = start(&text).await;
    let h = Harness::around(&running, upstream);
    let answer = h.call("GET", &format!("/v2/apps/{APP}"), &[], "").await;
    assert_eq!((answer.status, answer.body.len()), (200, 256 * 1024));
    assert_eq!(answer.header("content-length"), Some("262144"), "a known length is passed on");
}
