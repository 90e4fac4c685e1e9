//! Gateway credentials from the platform, against local stand-ins: the node's metadata service
//! and the pod identity endpoint (plain http, as on a node), IAM's id-token and securitytokens
//! endpoints and STS assume-with-oidc (TLS with the test CA). For each kind: the first fetch, the
//! temporary keys and security token signing calls the mock SparkRTC re-verifies, refresh ahead
//! of expiry, token file rotation, an outage with a valid key (keeps serving) and without (503 +
//! Retry-After, `/readyz` lists the profile while AK/SK apps keep it 200), malformed answers; and
//! no secret of any of them in a trace-level log line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sparkrtc_gateway::body::Body;
use sparkrtc_gateway::clock::{Clock, ManualClock};
use sparkrtc_gateway::gateway::Peer;
use sparkrtc_gateway::listener::{self, Handler};
use sparkrtc_gateway::signer::SdkDate;
use sparkrtc_gateway::{Gateway, Running};
use support::{config_with, data, mock_upstream, Harness, Reply, ALLOW_ALL, APP, PROJECT};

const WID_APP: &str = "wid-app";
/// Temporary keys live 8 minutes; refreshed 3 minutes ahead, so 5 minutes after each fetch.
const TTL: Duration = Duration::from_secs(8 * 60);
const REFRESH_AFTER: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Metadata,
    PodIdentity,
    OidcIam,
    OidcSts,
}

/// A request as a stand-in received it.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
}

/// Every platform endpoint in one stand-in: it hands out keys `TMPAK<n>` / `tmp-secret-<n>` /
/// `sectok-<n>`, accepts only the current workload token, and can go down or answer garbage.
struct Stand {
    got: Mutex<Vec<Got>>,
    issued: AtomicUsize,
    sessions: AtomicUsize,
    down: AtomicBool,
    malformed: AtomicBool,
    /// The workload token (pod identity token, id token) accepted now.
    accepted: Mutex<String>,
    /// The metadata session token accepted now; empty: none issued yet.
    session: Mutex<String>,
    ttl_secs: AtomicI64,
    clock: Arc<ManualClock>,
}

#[derive(Clone)]
struct StandHandler(Arc<Stand>);

fn rfc3339(t: SystemTime) -> String {
    let d = SdkDate::from_system_time(t).to_string();
    format!("{}-{}-{}T{}:{}:{}.000000Z", &d[0..4], &d[4..6], &d[6..8], &d[9..11], &d[11..13], &d[13..15])
}

fn answer(status: u16, headers: &[(&str, String)], body: String) -> Response<Body> {
    let mut rsp = Response::new(Body::full(Bytes::from(body)));
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in headers {
        rsp.headers_mut().insert(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
    }
    rsp
}

impl Stand {
    fn credential(&self) -> serde_json::Value {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let expires = self.clock.now() + Duration::from_secs(self.ttl_secs.load(Ordering::SeqCst) as u64);
        if self.malformed.load(Ordering::SeqCst) {
            let json = serde_json::json!({ "access": format!("TMPAK{n}"), "expires_at": rfc3339(expires) });
            return serde_json::json!({ "credential": json });
        }
        serde_json::json!({ "credential": {
            "access": format!("TMPAK{n}"), "secret": format!("tmp-secret-{n}"),
            "securitytoken": format!("sectok-{n}"), "expires_at": rfc3339(expires) } })
    }

    fn accepts(&self, token: Option<&str>) -> bool {
        token == Some(self.accepted.lock().unwrap().as_str())
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Handler for StandHandler {
    async fn call(&self, req: Request<Incoming>, _peer: Peer) -> Response<Body> {
        let s = &self.0;
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let got = Got {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers.clone(),
            body: serde_json::from_slice(&body).unwrap_or_default(),
        };
        s.got.lock().unwrap().push(got.clone());
        if s.down.load(Ordering::SeqCst) {
            return answer(503, &[], String::new());
        }
        let header = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
        match (got.method.as_str(), got.path.as_str()) {
            ("PUT", "/meta-data/latest/api/token") => {
                let n = s.sessions.fetch_add(1, Ordering::SeqCst) + 1;
                *s.session.lock().unwrap() = format!("session-{n}");
                answer(200, &[], format!("session-{n}"))
            }
            ("GET", "/openstack/latest/securitykey") => {
                if header("x-metadata-token") != Some(s.session.lock().unwrap().as_str()) {
                    return answer(401, &[], r#"{"error":"token expired"}"#.to_owned());
                }
                answer(200, &[], s.credential().to_string())
            }
            ("POST", "/pod-credentials") => {
                if !s.accepts(header("authorization")) || got.body != serde_json::json!({}) {
                    return answer(401, &[], String::new());
                }
                answer(200, &[], s.credential()["credential"].to_string())
            }
            ("POST", "/v3.0/OS-AUTH/id-token/tokens") => {
                if !s.accepts(got.body["auth"]["id_token"]["id"].as_str()) || header("x-idp-id") != Some("k8s-idp") {
                    return answer(401, &[], r#"{"error":{"code":"IAM.0001"}}"#.to_owned());
                }
                answer(201, &[("x-subject-token", "unscoped-iam-token".to_owned())], "{}".to_owned())
            }
            ("POST", "/v3.0/OS-CREDENTIAL/securitytokens") => {
                if got.body["auth"]["identity"]["token"]["id"] != "unscoped-iam-token" {
                    return answer(401, &[], String::new());
                }
                answer(201, &[], s.credential().to_string())
            }
            ("POST", "/v5/agencies/assume-with-oidc") => {
                if !s.accepts(got.body["id_token"].as_str()) {
                    return answer(403, &[], r#"{"error_code":"STS.0104"}"#.to_owned());
                }
                answer(200, &[], serde_json::json!({ "credentials": s.credential()["credential"] }).to_string())
            }
            _ => answer(404, &[], String::new()),
        }
    }
}

async fn start_stand(clock: Arc<ManualClock>, tls: bool) -> (Arc<Stand>, SocketAddr) {
    let stand = Arc::new(Stand {
        got: Mutex::default(),
        issued: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
        down: AtomicBool::new(false),
        malformed: AtomicBool::new(false),
        accepted: Mutex::new("workload-token-1".to_owned()),
        session: Mutex::default(),
        ttl_secs: AtomicI64::new(TTL.as_secs() as i64),
        clock,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tls
        .then(|| sparkrtc_gateway::tls::server_config(&data("certs/server.pem"), &data("certs/server.key")).unwrap());
    let handler = StandHandler(stand.clone());
    tokio::spawn(listener::serve(listener, tls, handler, std::future::pending(), Duration::from_secs(1)));
    (stand, addr)
}

fn temp_dir(name: &str) -> PathBuf {
    // One directory per setup: tests running at once with the same kind (the lifecycle and the
    // trace-log test) must not rotate each other's token file.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-wid-{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `wid` profile of `kind` pointed at the stand-in, and an app on it.
fn profile(kind: Kind, stand: SocketAddr, token_file: &std::path::Path) -> String {
    let file = token_file.display();
    let port = stand.port();
    let source = match kind {
        Kind::Metadata => format!("kind = \"metadata\"\nendpoint = \"http://127.0.0.1:{port}\""),
        Kind::PodIdentity => format!(
            "kind = \"pod-identity\"\ncredentials_uri = \"http://127.0.0.1:{port}/pod-credentials\"\ntoken_file = \"{file}\""
        ),
        Kind::OidcIam => format!(
            "kind = \"oidc\"\nid_token_file = \"{file}\"\nidp_id = \"k8s-idp\"\niam_endpoint = \"https://127.0.0.1:{port}\""
        ),
        Kind::OidcSts => format!(
            "kind = \"oidc\"\nid_token_file = \"{file}\"\nprovider_urn = \"iam::0123:identity-provider:k8s\"\nagency_urn = \"iam::0123:agency:sparkrtc\"\nsts_endpoint = \"https://127.0.0.1:{port}\""
        ),
    };
    format!(
        r#"
[profiles.wid]
{source}
project_id = "{PROJECT}"
refresh_before = "3m"
token_wait = "10s"
fetch_timeout = "15s"

[apps."{WID_APP}"]
profile = "wid"
{ALLOW_ALL}
"#
    )
}

/// AK/SK profiles `k1`..`k6` holding the keys the stand-in issues, for the mock SparkRTC.
fn issued_keys() -> String {
    (1..=6)
        .map(|n| {
            format!("[profiles.k{n}]\naccess_key = \"TMPAK{n}\"\nsecret_key = \"tmp-secret-{n}\"\nsecurity_token = \"sectok-{n}\"\nproject_id = \"{PROJECT}\"\n")
        })
        .collect()
}

struct Setup {
    stand: Arc<Stand>,
    clock: Arc<ManualClock>,
    h: Harness,
    running: Running,
    token_file: PathBuf,
}

impl Setup {
    async fn call(&self, app: &str) -> support::Answer {
        self.h.call("GET", &format!("/v2/apps/{app}"), &[], "").await
    }

    async fn readyz(&self) -> support::Answer {
        self.h.call_at(self.running.admin_addr.unwrap(), "GET", "/readyz", &[], "").await
    }

    /// Who signed the last call the mock SparkRTC got: the `kN` profile whose keys verify it.
    fn last_signer(&self) -> Result<String, String> {
        let seen = self.h.upstream.seen();
        seen.last().map(|r| r.verified.clone().map_err(|e| format!("{e:?}"))).unwrap_or(Err("no call".into()))
    }
}

async fn setup(kind: Kind, name: &str) -> Setup {
    // Started 6 minutes in the past so that every signed call in a test, up to 14 minutes of
    // manual time, stays within SparkRTC's 15-minute skew of the mock's real clock.
    let clock = Arc::new(ManualClock::new(SystemTime::now() - Duration::from_secs(6 * 60)));
    let tls = matches!(kind, Kind::OidcIam | Kind::OidcSts);
    let (stand, stand_addr) = start_stand(clock.clone(), tls).await;
    let dir = temp_dir(name);
    let token_file = dir.join("token");
    std::fs::write(&token_file, "workload-token-1\n").unwrap();
    let file = token_file.clone();
    let (upstream, upstream_addr, text) = mock_upstream(
        |seen| if seen.verified.is_ok() { Reply::status(202) } else { Reply::status(401) },
        move |addr| config_with(addr, ALLOW_ALL, ALLOW_ALL, &profile(kind, stand_addr, &file)),
    )
    .await;
    let verifying = support::parse_config(&config_with(upstream_addr, ALLOW_ALL, ALLOW_ALL, &issued_keys()));
    upstream.verify_with(verifying.profiles.values().cloned().collect());
    let gateway = Gateway::with_clock(support::parse_config(&text), clock.clone()).unwrap();
    let running = sparkrtc_gateway::start(gateway, None).await.unwrap();
    let h = Harness::around(&running, upstream);
    Setup { stand, clock, h, running, token_file }
}

/// The first fetch, what it sent, and the keys signing a call SparkRTC verifies.
async fn first_fetch_signs_verified_calls(kind: Kind) -> Setup {
    let s = setup(kind, &format!("{kind:?}-first")).await;
    let answer = s.call(WID_APP).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(s.last_signer(), Ok("k1".to_owned()), "signed with the first temporary keys");
    let seen = s.h.upstream.seen();
    let call = seen.last().unwrap();
    assert_eq!(call.headers["x-security-token"], "sectok-1");
    assert!(call.headers["authorization"].to_str().unwrap().contains("x-security-token"), "the token is signed");
    assert_eq!(s.stand.issued.load(Ordering::SeqCst), 1, "one fetch");
    let got = s.stand.got();
    match kind {
        Kind::Metadata => {
            assert_eq!(got[0].method, "PUT");
            assert_eq!(got[0].headers["x-metadata-token-ttl-seconds"], "21600");
            assert_eq!(got[1].headers["x-metadata-token"], "session-1");
        }
        Kind::PodIdentity => assert_eq!(got[0].headers["authorization"], "workload-token-1"),
        Kind::OidcIam => {
            assert_eq!(got[0].headers["x-idp-id"], "k8s-idp");
            assert_eq!(got[1].body["auth"]["identity"]["methods"], serde_json::json!(["token"]));
            assert_eq!(got[1].body["auth"]["identity"]["token"]["duration_seconds"], 21600);
        }
        Kind::OidcSts => {
            assert_eq!(got[0].body["agency_urn"], "iam::0123:agency:sparkrtc");
            assert_eq!(got[0].body["agency_session_name"], "oidc-sts-session");
            assert_eq!(got[0].body["duration_seconds"], 3600);
        }
    }
    s
}

/// Refresh ahead of expiry (with the token file rotated where there is one), then an outage:
/// the valid key keeps serving, then none is valid (503 + Retry-After, `/readyz` says which
/// profile while the AK/SK app keeps it 200), then malformed answers, then recovery.
async fn lifecycle(kind: Kind) {
    let s = first_fetch_signs_verified_calls(kind).await;
    match kind {
        // The session token expired: the service refuses it and a new one is asked for.
        Kind::Metadata => *s.stand.session.lock().unwrap() = "expired".to_owned(),
        // Kubernetes rotated the projected token; the old one is refused from now on.
        _ => {
            std::fs::write(&s.token_file, "workload-token-2\n").unwrap();
            *s.stand.accepted.lock().unwrap() = "workload-token-2".to_owned();
        }
    }
    s.clock.advance(REFRESH_AFTER - Duration::from_secs(10));
    s.running.gateway.maintain_credentials().await;
    assert_eq!(s.stand.issued.load(Ordering::SeqCst), 1, "not refreshed before it is due");
    s.clock.advance(Duration::from_secs(10));
    s.running.gateway.maintain_credentials().await;
    assert_eq!(s.stand.issued.load(Ordering::SeqCst), 2, "refreshed ahead of expiry");
    assert_eq!(s.call(WID_APP).await.status, 202);
    assert_eq!(s.last_signer(), Ok("k2".to_owned()), "the next call signs with the refreshed keys");
    if kind == Kind::Metadata {
        assert_eq!(s.stand.sessions.load(Ordering::SeqCst), 2, "one new session token after the refusal");
    }

    // Outage with a valid key: the refresh fails, calls keep being signed with k2.
    s.stand.down.store(true, Ordering::SeqCst);
    s.clock.advance(REFRESH_AFTER);
    s.running.gateway.maintain_credentials().await;
    assert_eq!(s.call(WID_APP).await.status, 202, "a still-valid key serves through the outage");
    assert_eq!(s.last_signer(), Ok("k2".to_owned()));
    let readyz = s.readyz().await;
    assert_eq!(readyz.status, 200, "{}", readyz.body);
    assert!(!readyz.body.contains("profile \"wid\": unusable"), "{}", readyz.body);

    // No valid key left: a local 503, never a doomed upstream call.
    s.clock.advance(TTL - REFRESH_AFTER);
    let before = s.h.upstream.seen().len();
    let answer = s.call(WID_APP).await;
    answer.assert_gateway_error(503, "RTCGW.5030");
    assert!(answer.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(s.h.upstream.seen().len(), before, "nothing was sent without valid keys");
    let readyz = s.readyz().await;
    assert_eq!(readyz.status, 200, "the AK/SK app is still served: {}", readyz.body);
    assert!(readyz.body.contains("profile \"wid\": unusable: no valid temporary keys"), "{}", readyz.body);
    assert!(readyz.body.contains("answered 503"), "{}", readyz.body);
    assert_eq!(s.call(APP).await.status, 202, "AK/SK apps are unaffected");

    // Back, but answering garbage: still a failed fetch, never half-read keys.
    s.stand.malformed.store(true, Ordering::SeqCst);
    s.stand.down.store(false, Ordering::SeqCst);
    s.clock.advance(Duration::from_secs(61));
    s.call(WID_APP).await.assert_gateway_error(503, "RTCGW.5030");
    let readyz = s.readyz().await;
    assert!(readyz.body.contains("answer has no \"secret\""), "{}", readyz.body);
    assert_eq!(s.h.upstream.seen().len(), before + 1, "only the AK/SK call went out");

    s.stand.malformed.store(false, Ordering::SeqCst);
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(s.call(WID_APP).await.status, 202, "recovered without a restart");
    let signer = s.last_signer().unwrap();
    assert!(signer.starts_with('k') && signer != "k1" && signer != "k2", "{signer}");
    assert_eq!(s.readyz().await.status, 200);
}

#[tokio::test]
async fn metadata_keys_refresh_ride_out_outages_and_refuse_garbage() {
    lifecycle(Kind::Metadata).await;
}

#[tokio::test]
async fn pod_identity_keys_follow_the_rotated_token_file() {
    lifecycle(Kind::PodIdentity).await;
}

#[tokio::test]
async fn oidc_through_iam_exchanges_the_rotated_id_token() {
    lifecycle(Kind::OidcIam).await;
}

#[tokio::test]
async fn oidc_through_sts_exchanges_the_rotated_id_token() {
    lifecycle(Kind::OidcSts).await;
}

#[tokio::test]
async fn concurrent_first_calls_cause_one_platform_fetch() {
    let s = setup(Kind::PodIdentity, "single-flight").await;
    let h = Arc::new(s.h);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.call("GET", &format!("/v2/apps/{WID_APP}"), &[], "").await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 202);
    }
    assert_eq!(s.stand.issued.load(Ordering::SeqCst), 1, "one fetch for twenty concurrent calls");
}

#[tokio::test]
async fn a_node_without_an_agency_is_unusable_and_says_why() {
    // A node with no session token service and no agency.
    let (no_agency, addr) = no_agency_metadata().await;
    let (upstream, _, text) = mock_upstream(
        |_| Reply::status(202),
        |up| config_with(up, ALLOW_ALL, ALLOW_ALL, &profile(Kind::Metadata, addr, std::path::Path::new("unused"))),
    )
    .await;
    // A stopped clock: the backoff never ends, so the count below is exact.
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let gateway = Gateway::with_clock(support::parse_config(&text), clock).unwrap();
    let running = sparkrtc_gateway::start(gateway, None).await.unwrap();
    let h = Harness::around(&running, upstream);
    h.call("GET", &format!("/v2/apps/{WID_APP}"), &[], "").await.assert_gateway_error(503, "RTCGW.5030");
    let readyz = h.call_at(running.admin_addr.unwrap(), "GET", "/readyz", &[], "").await;
    assert!(readyz.body.contains("this node has no cloud service agency"), "{}", readyz.body);
    assert_eq!(no_agency.load(Ordering::SeqCst), 2, "no session token (404), then the key request");
    assert!(h.upstream.seen().is_empty());
}

/// A metadata service with no session token service that answers 401 "no agency".
async fn no_agency_metadata() -> (Arc<AtomicUsize>, SocketAddr) {
    #[derive(Clone)]
    struct NoAgency(Arc<AtomicUsize>);
    impl Handler for NoAgency {
        async fn call(&self, req: Request<Incoming>, _peer: Peer) -> Response<Body> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match req.uri().path() {
                "/openstack/latest/securitykey" if !req.headers().contains_key("x-metadata-token") => {
                    answer(401, &[], "Please configure Cloud Service Agency first".to_owned())
                }
                _ => answer(404, &[], String::new()),
            }
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = NoAgency(count.clone());
    tokio::spawn(listener::serve(listener, None, handler, std::future::pending(), Duration::from_secs(1)));
    (count, addr)
}

#[test]
fn check_reports_every_platform_setting_mistake_with_its_fix() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = r#"
[profiles.meta]
kind = "metadata"
endpoint = "ftp://169.254.169.254/x"
project_id = "0123456789abcdef0123456789abcdef"

[profiles.pod]
kind = "pod-identity"
project_id = "0123456789abcdef0123456789abcdef"

[profiles.iam]
kind = "oidc"
idp_id = "k8s"
iam_endpoint = "http://iam.example"
project_id = "0123456789abcdef0123456789abcdef"

[profiles.sts]
kind = "oidc"
id_token_file = "/var/run/token"
provider_urn = "k8s"
refresh_before = "1s"
project_id = "0123456789abcdef0123456789abcdef"
"#;
    let text = config_with(addr, ALLOW_ALL, ALLOW_ALL, bad);
    let err = sparkrtc_gateway::config::Config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None)
        .err()
        .unwrap()
        .to_string();
    for expected in [
        "profiles.meta.endpoint: \"ftp://169.254.169.254/x\" must be a scheme and host only",
        "profiles.pod.credentials_uri: is missing and HC_CONTAINER_CREDENTIALS_FULL_URI is not set",
        "profiles.iam.id_token_file: is missing",
        "profiles.iam.iam_endpoint: \"http://iam.example\" must be a scheme and host only, like \"https://iam.cn-north-4.myhuaweicloud.com\" (http:// needs upstream.allow_http)",
        "profiles.sts.provider_urn: \"k8s\" is not an IAM URN",
        "profiles.sts.agency_urn: is missing",
        "profiles.sts.sts_endpoint: is missing; set sts_endpoint",
        "profiles.sts.refresh_before: \"1s\" must be between",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    // Pod identity from the environment, as CCE sets it; the metadata default endpoint.
    let good = r#"
[profiles.pod]
kind = "pod-identity"
project_id = "0123456789abcdef0123456789abcdef"

[profiles.meta]
kind = "metadata"
project_id = "0123456789abcdef0123456789abcdef"
"#;
    let env = |name: &str| match name {
        "HC_CONTAINER_CREDENTIALS_FULL_URI" => Some("http://169.254.170.2/v1/credentials".to_owned()),
        "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE" => Some("/var/run/secrets/pod-identity/token".to_owned()),
        "TEST_SK" => Some(support::SK.to_owned()),
        _ => None,
    };
    let config = sparkrtc_gateway::config::Config::parse(
        &config_with(addr, ALLOW_ALL, ALLOW_ALL, good),
        "t.toml",
        std::path::Path::new("."),
        &env,
    )
    .unwrap();
    let debug = format!("{:?}", config.profiles["pod"].auth);
    assert!(debug.contains("169.254.170.2") && debug.contains("/var/run/secrets/pod-identity/token"), "{debug}");
    assert!(format!("{:?}", config.profiles["meta"].auth).contains("169.254.169.254"));
}

#[tokio::test]
async fn no_key_token_or_id_token_appears_in_trace_logs() {
    let logs = support::captured_logs();
    let mut secrets = Vec::new();
    for kind in [Kind::Metadata, Kind::PodIdentity, Kind::OidcIam, Kind::OidcSts] {
        let s = first_fetch_signs_verified_calls(kind).await;
        s.stand.down.store(true, Ordering::SeqCst);
        s.clock.advance(TTL);
        s.call(WID_APP).await.assert_gateway_error(503, "RTCGW.5030");
        let _ = format!("{:?}", s.running.gateway.config());
        for seen in s.h.upstream.seen() {
            let auth = seen.headers["authorization"].to_str().unwrap();
            secrets.push(auth.rsplit("Signature=").next().unwrap().to_owned());
        }
    }
    let text = support::checked_log_text(&logs);
    assert!(
        text.contains("temporary keys fetched") && text.contains("temporary keys fetch failed"),
        "the scenarios logged"
    );
    secrets
        .extend(["tmp-secret-1", "sectok-1", "workload-token-1", "session-1", "unscoped-iam-token"].map(str::to_owned));
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret or token leaked into the logs: {secret}");
    }
}
