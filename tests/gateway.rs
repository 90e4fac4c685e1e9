//! The gateway end to end: in-process on 127.0.0.1:0, forwarding over real TLS to a mock
//! SparkRTC that re-verifies each signature from the bytes it received.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use support::{start, Reply, Seen, AK, APP, PROJECT};

const USERS: &str = r#"{"user_ids": ["user001", "user002"]}"#;

fn accept_verified(seen: &Seen) -> Reply {
    match &seen.verified {
        Ok(_) => Reply::status(202),
        Err(_) => Reply::status(401),
    }
}

#[tokio::test]
async fn remove_users_is_signed_forwarded_over_tls_and_its_202_relayed() {
    let h = start(accept_verified).await;
    let answer = h.remove_users(USERS).await;

    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.header("x-request-id"), Some("up-req-1"));
    assert_eq!(answer.header("x-gateway-error"), None);
    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.verified, Ok("main".to_owned()), "the upstream could not verify the signature");
    assert_eq!(up.method, "POST");
    assert_eq!(up.path_and_query, format!("/v2/apps/{APP}/rooms/room-456/batch-remove-users"));
    assert_eq!(up.body, USERS.as_bytes(), "the body must be forwarded byte for byte");
    assert_eq!(up.headers["x-project-id"], PROJECT);
    let auth = up.headers["authorization"].to_str().unwrap_or_default();
    assert!(
        auth.starts_with(&format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature="
        )),
        "{auth}"
    );
}

#[tokio::test]
async fn upstream_errors_are_relayed_with_their_body_and_request_id() {
    let h = start(|seen| {
        let status = if seen.body.as_ref() == br#"{"user_ids": ["boom"]}"# { 500 } else { 400 };
        let body = match status {
            500 => r#"{"error_code":"RTC.00002001","error_msg":"InternalError"}"#,
            _ => r#"{"error_code":"RTC.00001003","error_msg":"InvalidParameterValue"}"#,
        };
        Reply::With {
            status,
            headers: vec![("X-Request-Id", format!("up-{status}")), ("content-type", "application/json".into())],
            body: body.to_owned(),
        }
    })
    .await;

    let bad = h.remove_users(r#"{"user_ids": ["nobody"]}"#).await;
    assert_eq!((bad.status, bad.header("x-request-id")), (400, Some("up-400")));
    assert_eq!(bad.json()["error_code"], "RTC.00001003");
    assert_eq!(bad.header("x-gateway-error"), None, "an upstream answer must not carry the gateway marker");

    let failed = h.remove_users(r#"{"user_ids": ["boom"]}"#).await;
    assert_eq!((failed.status, failed.header("x-request-id")), (500, Some("up-500")));
    assert_eq!(failed.json()["error_msg"], "InternalError");
    assert_eq!(failed.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn caller_credentials_and_hop_by_hop_headers_never_reach_the_upstream() {
    let h = start(accept_verified).await;
    let answer = h
        .call(
            "POST",
            &format!("/v2/apps/{APP}/rooms/r1/batch-remove-users"),
            &[
                ("content-type", "application/json"),
                ("authorization", "SDK-HMAC-SHA256 Access=PLACEHOLDER, SignedHeaders=host, Signature=00"),
                ("x-auth-token", "caller-token"),
                ("x-sdk-date", "20200101T000000Z"),
                ("x-security-token", "caller-sts"),
                ("x-sdk-content-sha256", "UNSIGNED-PAYLOAD"),
                ("x-project-id", "ffffffffffffffffffffffffffffffff"),
                ("connection", "keep-alive, x-custom-hop"),
                ("x-custom-hop", "1"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ],
            USERS,
        )
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let up = &h.upstream.seen()[0];
    assert_eq!(up.verified, Ok("main".to_owned()));
    for gone in ["x-auth-token", "x-security-token", "x-sdk-content-sha256", "x-custom-hop", "proxy-authorization"] {
        assert!(!up.headers.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(up.headers["x-project-id"], PROJECT);
    assert_ne!(up.headers["x-sdk-date"], "20200101T000000Z");
    assert!(!up.headers["authorization"].to_str().unwrap_or_default().contains("PLACEHOLDER"));
    assert_eq!(up.headers["host"], format!("127.0.0.1:{}", h.upstream_addr.port()));
}

#[tokio::test]
async fn query_is_forwarded_in_the_canonical_form_it_was_signed_in() {
    let h = start(|_| Reply::status(200)).await;
    let answer = h.call("GET", "/v2/apps?state=ENABLE&offset=0&limit=10", &[], "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let up = &h.upstream.seen()[0];
    assert_eq!(up.path_and_query, "/v2/apps?limit=10&offset=0&state=ENABLE");
    assert_eq!(up.verified, Ok("main".to_owned()));
}

#[tokio::test]
async fn unknown_operations_get_404_wrong_methods_405_and_neither_leaves_the_gateway() {
    let h = start(accept_verified).await;
    h.call("GET", "/v2/secrets", &[], "").await.assert_gateway_error(404, "RTCGW.4040");
    h.call("GET", "/", &[], "").await.assert_gateway_error(404, "RTCGW.4040");
    // A known path with another method: 405 and the methods it does take (RFC 9110 §15.5.6).
    let wrong = h.call("GET", &format!("/v2/apps/{APP}/rooms/r/batch-remove-users"), &[], "").await;
    wrong.assert_gateway_error(405, "RTCGW.4050");
    assert_eq!(wrong.header("allow"), Some("POST"));
    let app = h.call("PATCH", &format!("/v2/apps/{APP}"), &[], "").await;
    app.assert_gateway_error(405, "RTCGW.4050");
    assert!(app.header("allow").is_some_and(|a| a.contains("GET")), "{app:?}");
    assert!(h.upstream.seen().is_empty());
}

#[tokio::test]
async fn traversal_and_foreign_targets_are_refused_before_forwarding() {
    let h = start(accept_verified).await;
    let cases = [
        ("GET /v2/apps/app-123/../other HTTP/1.1\r\nHost: x\r\n\r\n", "RTCGW.4001"),
        ("GET /v2/apps/%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n", "RTCGW.4001"),
        ("GET /v2/apps/app-123%2F..%2Fother HTTP/1.1\r\nHost: x\r\n\r\n", "RTCGW.4001"),
        ("GET http://evil.example/v2/apps HTTP/1.1\r\nHost: evil.example\r\n\r\n", "RTCGW.4002"),
        ("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", "RTCGW.4002"),
    ];
    for (request, code) in cases {
        let raw = h.raw(request).await;
        assert!(raw.contains(&format!("x-gateway-error: {code}")), "{request:?} got {raw}");
    }
    assert!(h.upstream.seen().is_empty(), "a refused target reached the upstream");
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let h = start(accept_verified).await;
    let big = format!(r#"{{"user_ids": ["{}"]}}"#, "u".repeat(5000));
    h.remove_users(&big).await.assert_gateway_error(413, "RTCGW.4130");
    let chunked = format!(
        "POST /v2/apps/{APP}/rooms/r/batch-remove-users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    assert!(h.raw(&chunked).await.contains("x-gateway-error: RTCGW.4130"));
    assert!(h.upstream.seen().is_empty());
}

#[tokio::test]
async fn invalid_remove_users_bodies_get_400_without_an_upstream_call() {
    let h = start(accept_verified).await;
    for body in [
        "",
        "not json",
        "[]",
        "{}",
        r#"{"user_ids": []}"#,
        r#"{"user_ids": [""]}"#,
        r#"{"user_ids": "user001"}"#,
        r#"{"user_ids": [1]}"#,
    ] {
        h.remove_users(body).await.assert_gateway_error(400, "RTCGW.4005");
    }
    h.call("POST", "/v2/apps", &[("content-type", "application/json")], "{not json")
        .await
        .assert_gateway_error(400, "RTCGW.4005");
    assert!(h.upstream.seen().is_empty());
}

#[tokio::test]
async fn apps_and_projects_outside_the_config_are_refused() {
    let h = start(accept_verified).await;
    h.call("GET", "/v2/apps/someone-elses-app", &[], "").await.assert_gateway_error(403, "RTCGW.4030");
    h.call("GET", "/v1/ffffffffffffffffffffffffffffffff/rtc/rooms?app=app-123", &[], "")
        .await
        .assert_gateway_error(403, "RTCGW.4031");
    h.call("GET", "/v1/p/rtc/rooms?app=app-123&app=other", &[], "").await.assert_gateway_error(400, "RTCGW.4003");
    assert!(h.upstream.seen().is_empty());

    let ok = h.call("GET", &format!("/v1/{PROJECT}/rtc/rooms?app=app-123"), &[], "").await;
    assert_eq!(ok.status, 202, "{ok:?}");
    assert_eq!(h.upstream.seen()[0].verified, Ok("main".to_owned()));
}

#[tokio::test]
async fn upstream_down_is_502() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = closed.local_addr().unwrap_or_else(|e| panic!("{e}"));
    drop(closed);
    let config = support::parse_config(&support::config_text(addr, ""));
    let gateway = support::start_gateway(config).await;
    let h = support::Harness::client_for(gateway);
    h.remove_users(USERS).await.assert_gateway_error(502, "RTCGW.5020");
}

#[tokio::test]
async fn stalled_upstream_is_504_within_the_response_timeout() {
    // The upstream never answers, so any timeout fires: 1 s keeps the test quick.
    let h = support::start_with(
        |_| Reply::Stall,
        |addr| support::with_response_timeout(&support::config_text(addr, ""), "1s"),
    )
    .await;
    let answer = h.remove_users(USERS).await;
    answer.assert_gateway_error(504, "RTCGW.5040");
    assert!(answer.json()["error_msg"].as_str().unwrap_or_default().contains("1000 ms"), "{answer:?}");
    assert_eq!(h.upstream.seen().len(), 1);
}

#[tokio::test]
async fn gateway_errors_keep_a_sane_caller_request_id() {
    let h = start(accept_verified).await;
    let answer = h.call("GET", "/nope", &[("x-request-id", "caller-trace-42")], "").await;
    answer.assert_gateway_error(404, "RTCGW.4040");
    assert_eq!(answer.header("x-request-id"), Some("caller-trace-42"));
    let generated = h.call("GET", "/nope", &[], "").await;
    assert_eq!(generated.header("x-request-id").map(str::len), Some(32));
}
