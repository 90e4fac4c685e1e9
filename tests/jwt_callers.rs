//! Callers named by their own workload tokens: a bearer JWT verified against a JWKS (a file
//! re-read on change, or an https URL), its issuer, audience, expiry and not-before checked, and
//! its `sub` mapped to a configured caller. Each refusal has its 403 code, makes no upstream call,
//! and is never downgraded to the caller's address. Keys are made in the test (EC P-256, ring).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sparkrtc_gateway::body::Body;
use sparkrtc_gateway::gateway::Peer;
use sparkrtc_gateway::listener::{self, Handler};
use sparkrtc_gateway::Gateway;
use support::{config_with, data, mock_upstream, Harness, Reply, APP};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "sparkrtc-gateway";
const BILLING_SA: &str = "system:serviceaccount:billing:api";

/// An EC P-256 signing key made for this test run, and its JWK.
struct TestKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl TestKey {
    fn new(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        TestKey { kid: kid.to_owned(), pkcs8: pkcs8.as_ref().to_vec(), public: pair.public_key().as_ref().to_vec() }
    }

    fn jwk(&self) -> serde_json::Value {
        // Uncompressed point: 0x04, x (32 bytes), y (32 bytes).
        serde_json::json!({ "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]), "y": URL_SAFE_NO_PAD.encode(&self.public[33..65]) })
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str) -> serde_json::Value {
    let now = SystemTime::now();
    serde_json::json!({ "iss": ISSUER, "aud": [AUDIENCE], "sub": sub,
        "iat": unix(now), "nbf": unix(now), "exp": unix(now + Duration::from_secs(3_600)) })
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

/// The app lets only `billing` call; `local` (this test's own address) is a caller too, so a
/// refused token that fell back to the address would be served.
fn policy(jwks: &str) -> String {
    format!(
        r#"
[policy.jwt]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256", "RS256"]
{jwks}

[callers.billing]
jwt_subjects = ["{BILLING_SA}"]

[callers.local]
addresses = ["127.0.0.1"]
"#
    )
}

const APP_POLICY: &str = r#"allow = [{ callers = ["billing", "local"], operations = ["*"] }]"#;
const ACCOUNT_POLICY: &str = r#"allow = [{ callers = ["billing"], operations = ["*"] }]"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-jwt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start_with_jwks_file(name: &str, keys: &[&TestKey]) -> (Harness, PathBuf) {
    let file = temp_dir(name).join("jwks.json");
    std::fs::write(&file, jwks(keys)).unwrap();
    let extra = policy(&format!("jwks_file = \"{}\"", file.display()));
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| config_with(addr, APP_POLICY, ACCOUNT_POLICY, &extra)).await;
    let running = sparkrtc_gateway::start(Gateway::new(support::parse_config(&text)).unwrap(), None).await.unwrap();
    let h = Harness::around(&running, upstream);
    std::mem::forget(running);
    (h, file)
}

/// An account-level call (only `billing` may make it) with `token` as bearer.
async fn call(h: &Harness, token: &str) -> support::Answer {
    let bearer = format!("Bearer {token}");
    h.call("GET", "/v2/apps", &[("authorization", bearer.as_str())], "").await
}

#[tokio::test]
async fn a_valid_token_names_its_caller_and_is_not_forwarded() {
    let key = TestKey::new("k1");
    let (h, _) = start_with_jwks_file("valid", &[&key]).await;
    let token = key.sign(&claims(BILLING_SA));
    let answer = call(&h, &token).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    // Without a token, this address is `local`, which may not make account-level calls.
    h.call("GET", "/v2/apps", &[], "").await.assert_gateway_error(403, "RTCGW.4033");
    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 1);
    let forwarded = seen[0].headers.values().any(|v| String::from_utf8_lossy(v.as_bytes()).contains(&token));
    assert!(!forwarded, "the caller's token is stripped, never forwarded");
    assert!(
        seen[0].headers["authorization"].to_str().unwrap().starts_with("SDK-HMAC-SHA256"),
        "the gateway's own signature"
    );
    // A lower-case scheme is a bearer token too (RFC 9110 section 11.1).
    let lower = format!("bearer {token}");
    assert_eq!(h.call("GET", "/v2/apps", &[("authorization", lower.as_str())], "").await.status, 202);
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_code_and_never_downgraded_to_the_address() {
    let key = TestKey::new("k1");
    let stranger = TestKey::new("k-unknown");
    let (h, _) = start_with_jwks_file("refusals", &[&key]).await;
    let now = SystemTime::now();
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(BILLING_SA);
        change(&mut c);
        key.sign(&c)
    };
    let valid = key.sign(&claims(BILLING_SA));
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut forged_claims = claims(BILLING_SA);
    forged_claims["sub"] = "system:serviceaccount:billing:api ".into();
    let tampered = format!("{head}.{}.{signature}", b64(&forged_claims));
    let none = format!("{}.{}.", b64(&serde_json::json!({ "alg": "none", "typ": "JWT" })), b64(&claims(BILLING_SA)));
    // The public key used as an HMAC secret: the classic algorithm confusion.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".to_owned());
    let confused = jsonwebtoken::encode(&hs, &claims(BILLING_SA), &EncodingKey::from_secret(&key.public)).unwrap();
    let confused_jwk =
        jsonwebtoken::encode(&hs, &claims(BILLING_SA), &EncodingKey::from_secret(jwks(&[&key]).as_bytes())).unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong issuer", with(&|c| c["iss"] = "https://evil.example".into()), "another issuer"),
        ("wrong audience", with(&|c| c["aud"] = serde_json::json!(["vault"])), "audience"),
        ("expired", with(&|c| c["exp"] = unix(now - Duration::from_secs(2 * 3_600)).into()), "expired"),
        ("not yet valid", with(&|c| c["nbf"] = unix(now + Duration::from_secs(2 * 3_600)).into()), "not valid yet"),
        ("no exp", with(&|c| c.as_object_mut().unwrap().remove("exp").map(drop).unwrap_or(())), "expired"),
        ("alg none", none, "algorithm"),
        ("HMAC with the public key", confused, "algorithm"),
        ("HMAC with the JWKS", confused_jwk, "algorithm"),
        ("unknown kid", stranger.sign(&claims(BILLING_SA)), "key not in the JWKS"),
        ("tampered claims", tampered, "signature"),
        ("garbage", "not-a-jwt".to_owned(), "well-formed"),
    ];
    for (what, token, says) in cases {
        let answer = call(&h, &token).await;
        answer.assert_gateway_error(403, "RTCGW.4034");
        assert!(answer.json()["error_msg"].as_str().unwrap().contains(says), "{what}: {answer:?}");
    }
    // Valid, but names no configured caller: not recognised, and not served as `local`.
    call(&h, &key.sign(&claims("system:serviceaccount:other:sa"))).await.assert_gateway_error(403, "RTCGW.4032");
    let app = format!("/v2/apps/{APP}");
    let expired = with(&|c| c["exp"] = unix(now - Duration::from_secs(2 * 3_600)).into());
    let bearer = format!("Bearer {expired}");
    h.call("GET", &app, &[("authorization", bearer.as_str())], "").await.assert_gateway_error(403, "RTCGW.4034");
    assert_eq!(h.call("GET", &app, &[], "").await.status, 202, "the same address without a token is `local`");
    assert_eq!(h.upstream.seen().len(), 1, "no refused token caused an upstream call");
}

#[tokio::test]
async fn a_rotated_jwks_file_is_used_without_a_restart() {
    let old = TestKey::new("k1");
    let new = TestKey::new("k2");
    let (h, file) = start_with_jwks_file("rotation", &[&old]).await;
    assert_eq!(call(&h, &old.sign(&claims(BILLING_SA))).await.status, 202);
    call(&h, &new.sign(&claims(BILLING_SA))).await.assert_gateway_error(403, "RTCGW.4034");

    std::fs::write(&file, jwks(&[&old, &new])).unwrap();
    assert_eq!(call(&h, &new.sign(&claims(BILLING_SA))).await.status, 202, "a key added to the file is used");
    std::fs::write(&file, jwks(&[&new])).unwrap();
    call(&h, &old.sign(&claims(BILLING_SA))).await.assert_gateway_error(403, "RTCGW.4034");
    std::fs::write(&file, "{ broken").unwrap();
    assert_eq!(call(&h, &new.sign(&claims(BILLING_SA))).await.status, 202, "a broken file keeps the keys read before");
}

/// A JWKS served over TLS with the test CA; its document can be replaced.
#[derive(Clone)]
struct JwksServer(Arc<Mutex<String>>);

impl Handler for JwksServer {
    async fn call(&self, _req: Request<Incoming>, _peer: Peer) -> Response<Body> {
        Response::new(Body::full(Bytes::from(self.0.lock().unwrap().clone())))
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_refetched_when_a_new_key_id_appears() {
    let old = TestKey::new("k1");
    let new = TestKey::new("k2");
    let doc = Arc::new(Mutex::new(jwks(&[&old])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let tls = sparkrtc_gateway::tls::server_config(&data("certs/server.pem"), &data("certs/server.key")).unwrap();
    let server = JwksServer(doc.clone());
    tokio::spawn(listener::serve(listener, Some(tls), server, std::future::pending(), Duration::from_secs(1)));

    let extra = policy(&format!("jwks_url = \"https://127.0.0.1:{}/openid/v1/jwks\"", addr.port()));
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |a| config_with(a, APP_POLICY, ACCOUNT_POLICY, &extra)).await;
    let running = sparkrtc_gateway::start(Gateway::new(support::parse_config(&text)).unwrap(), None).await.unwrap();
    let h = Harness::around(&running, upstream);
    running.gateway.maintain_credentials().await;
    assert_eq!(call(&h, &old.sign(&claims(BILLING_SA))).await.status, 202, "verified with the fetched JWKS");

    *doc.lock().unwrap() = jwks(&[&old, &new]);
    let token = new.sign(&claims(BILLING_SA));
    call(&h, &token).await.assert_gateway_error(403, "RTCGW.4034");
    // The unknown key id asks for a refetch on the next maintenance pass, not in a year.
    running.gateway.maintain_credentials().await;
    assert_eq!(call(&h, &token).await.status, 202, "the rotated JWKS is used without a restart");
}

#[test]
fn check_refuses_hmac_none_and_missing_settings() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = r#"
[policy.jwt]
algorithms = ["HS256", "none", "ES256"]
jwks_url = "http://jwks.example/keys"

[callers.billing]
jwt_subjects = ["system:serviceaccount:billing:api"]
cert_names = ["spiffe://Bad Domain/x", "spiffe://example.org/ns/billing/sa/api"]
"#;
    let text = config_with(addr, APP_POLICY, ACCOUNT_POLICY, bad);
    let err = sparkrtc_gateway::config::Config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None)
        .err()
        .unwrap()
        .to_string();
    for expected in [
        "policy.jwt.issuer: is missing",
        "policy.jwt.audiences: is missing",
        "policy.jwt.algorithms: \"HS256\" is not accepted; list asymmetric algorithms only",
        "policy.jwt.algorithms: \"none\" is not accepted",
        "policy.jwt.jwks_url: \"http://jwks.example/keys\" must be an https:// URL",
        "callers.billing.cert_names: \"spiffe://Bad Domain/x\" is not a SPIFFE id",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("spiffe://example.org/ns/billing/sa/api"), "a good SPIFFE id is accepted:\n{err}");
    let orphan = config_with(addr, APP_POLICY, ACCOUNT_POLICY, "[callers.billing]\njwt_subjects = [\"x\"]\n");
    let err = sparkrtc_gateway::config::Config::parse(&orphan, "t.toml", std::path::Path::new("."), &|_| None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("callers.billing.jwt_subjects: can never match: add [policy.jwt]"), "{err}");
}

#[tokio::test]
async fn no_jwt_appears_in_trace_logs() {
    let logs = support::captured_logs();
    let key = TestKey::new("k1");
    let (h, _) = start_with_jwks_file("logs", &[&key]).await;
    let valid = key.sign(&claims(BILLING_SA));
    let mut expired = claims(BILLING_SA);
    expired["exp"] = unix(SystemTime::now() - Duration::from_secs(7_200)).into();
    let expired = key.sign(&expired);
    assert_eq!(call(&h, &valid).await.status, 202);
    call(&h, &expired).await.assert_gateway_error(403, "RTCGW.4034");
    let text = support::checked_log_text(&logs);
    assert!(text.contains("RTCGW.4034") || text.contains("InvalidCallerToken"), "the refusal was logged");
    for token in [&valid, &expired] {
        // Any of the three parts would do: the signature is what makes it a credential.
        for part in token.split('.') {
            assert!(!text.contains(part), "a JWT leaked into the logs");
        }
    }
}

/// A TLS client of the gateway presenting the test certificate `name` (`client`: DNS name only;
/// `spiffe-client`: SPIFFE id only); the status of one app call.
async fn status_with_cert(addr: SocketAddr, name: &str) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(data("certs/ca.pem")).unwrap()).unwrap();
    let chain = vec![CertificateDer::from_pem_file(data(&format!("certs/{name}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(data(&format!("certs/{name}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("/v2/apps/{APP}"))
        .header("host", "localhost")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_client_certificate_is_identified_by_its_spiffe_id() {
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nclient_auth = \"required\"\n",
        data("certs/server.pem").display(),
        data("certs/server.key").display(),
        data("certs/ca.pem").display()
    );
    let callers = "[callers.billing]\ncert_names = [\"spiffe://example.org/ns/billing/sa/api\"]\n";
    let only_billing = r#"allow = [{ callers = ["billing"], operations = ["*"] }]"#;
    let (upstream, _, text) = mock_upstream(
        |_| Reply::status(202),
        |a| config_with(a, only_billing, only_billing, callers).replace("[admin]", &format!("{tls}\n[admin]")),
    )
    .await;
    let running = sparkrtc_gateway::start(Gateway::new(support::parse_config(&text)).unwrap(), None).await.unwrap();
    assert_eq!(status_with_cert(running.addr, "spiffe-client").await, 202, "named billing by its SPIFFE id");
    assert_eq!(status_with_cert(running.addr, "client").await, 403, "a DNS-only certificate is someone else");
    assert_eq!(upstream.seen().len(), 1);
}
