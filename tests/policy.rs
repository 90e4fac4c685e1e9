//! Allowlist, caller identification, rate limits, shadow mode and the audit trail, through the
//! running gateway. Every refusal must cost no upstream call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::sync::Arc;

use support::{config_with, start_with, Reply, ALLOW_ALL, APP};

const USERS: &str = r#"{"user_ids": ["user001", "user002"]}"#;
const BILLING_KEY: &str = "billing-secret-key";

fn billing_key_sha256() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(BILLING_KEY.as_bytes()))
}

/// Callers: `local` by address (127.0.0.1), `billing` by key, `ops` by 10.1.0.0/16.
fn callers(trusted_proxies: &str) -> String {
    format!(
        r#"
[policy]
trusted_proxies = [{trusted_proxies}]

[callers.local]
addresses = ["127.0.0.1"]

[callers.billing]
key_sha256 = "{}"

[callers.ops]
addresses = ["10.1.0.0/16"]
"#,
        billing_key_sha256()
    )
}

async fn harness(app_policy: &str, extra: &str) -> support::Harness {
    let app_policy = app_policy.to_owned();
    let extra = extra.to_owned();
    start_with(|_| Reply::status(202), move |addr| config_with(addr, &app_policy, ALLOW_ALL, &extra)).await
}

fn remove_users_path() -> String {
    format!("/v2/apps/{APP}/rooms/room-9/batch-remove-users")
}

#[tokio::test]
async fn allowed_caller_gets_202_and_every_refusal_is_403_without_an_upstream_call() {
    let h = harness(
        r#"allow = [{ callers = ["local"], operations = ["moderation"] }, { callers = ["billing"], operations = ["read-only"] }]"#,
        &callers(""),
    )
    .await;
    let json = [("content-type", "application/json")];

    let ok = h.call("POST", &remove_users_path(), &json, USERS).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    assert_eq!(h.upstream.seen().len(), 1);

    // Operation not allowed for this caller (local may only moderate).
    let op = h.call("GET", &format!("/v2/apps/{APP}"), &[], "").await;
    op.assert_gateway_error(403, "RTCGW.4033");
    assert!(op.json()["error_msg"]
        .as_str()
        .unwrap()
        .contains("apps.app-123.allow: no rule lets caller \"local\" run ShowApp"));
    // Unknown app.
    h.call("GET", "/v2/apps/not-ours", &[], "").await.assert_gateway_error(403, "RTCGW.4030");
    // Caller by key: billing may read but not moderate; a wrong key is refused outright.
    let read = h.call("GET", &format!("/v2/apps/{APP}"), &[("x-gateway-key", BILLING_KEY)], "").await;
    assert_eq!(read.status, 202, "{read:?}");
    let keyed = [("content-type", "application/json"), ("x-gateway-key", BILLING_KEY)];
    let moderate = h.call("POST", &remove_users_path(), &keyed, USERS).await;
    moderate.assert_gateway_error(403, "RTCGW.4033");
    assert!(!moderate.body.contains(BILLING_KEY), "the key must never be echoed");
    let wrong = h.call("GET", &format!("/v2/apps/{APP}"), &[("x-gateway-key", "guess")], "").await;
    wrong.assert_gateway_error(403, "RTCGW.4032");

    assert_eq!(h.upstream.seen().len(), 2, "only the two allowed calls reached the upstream");
    let gw = h.instance.as_ref().unwrap();
    assert_eq!(gw.counters().refusals("allowlist"), 4);
    assert!(
        h.upstream.seen().iter().all(|s| !s.headers.contains_key("x-gateway-key")),
        "caller keys are never forwarded"
    );
}

#[tokio::test]
async fn callers_by_address_and_forwarded_for_only_from_trusted_proxies() {
    let policy = r#"allow = [{ callers = ["ops"], operations = ["*"] }]"#;
    let xff = [("x-forwarded-for", "10.1.2.3")];

    // 127.0.0.1 is not a trusted proxy here: its X-Forwarded-For is a spoof and is ignored.
    let untrusted = harness(policy, &callers("")).await;
    let spoofed = untrusted.call("GET", &format!("/v2/apps/{APP}"), &xff, "").await;
    spoofed.assert_gateway_error(403, "RTCGW.4033");
    assert!(
        spoofed.json()["error_msg"].as_str().unwrap().contains("no rule lets caller \"local\" run ShowApp"),
        "the spoofed header must not make it ops"
    );
    assert!(untrusted.upstream.seen().is_empty());

    // Behind a trusted proxy, the forwarded address names the caller.
    let trusted = harness(policy, &callers(r#""127.0.0.1""#)).await;
    let via_proxy = trusted.call("GET", &format!("/v2/apps/{APP}"), &xff, "").await;
    assert_eq!(via_proxy.status, 202, "{via_proxy:?}");
    let outside = trusted.call("GET", &format!("/v2/apps/{APP}"), &[("x-forwarded-for", "192.0.2.7")], "").await;
    outside.assert_gateway_error(403, "RTCGW.4033");
    assert_eq!(trusted.upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_concurrent_burst_admits_exactly_the_quota_and_answers_the_rest_429() {
    let h = Arc::new(
        harness(
            r#"allow = [{ callers = ["*"], operations = ["*"] }]
limit = { rate = "5/m" }"#,
            "",
        )
        .await,
    );
    let calls = (0..20).map(|_| {
        let h = h.clone();
        tokio::spawn(async move { h.call("GET", &format!("/v2/apps/{APP}"), &[], "").await })
    });
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let admitted = answers.iter().filter(|a| a.status == 202).count();
    assert_eq!(admitted, 5, "exactly the quota passes");
    assert_eq!(h.upstream.seen().len(), 5, "limited calls cost no upstream call");
    for limited in answers.iter().filter(|a| a.status != 202) {
        limited.assert_gateway_error(429, "RTCGW.4290");
        let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert_eq!(limited.header("ratelimit-policy"), Some("\"app\";q=5;w=60"));
        assert_eq!(limited.header("ratelimit"), Some(format!("\"app\";r=0;t={retry}").as_str()));
    }
}

#[tokio::test]
async fn refused_calls_spend_no_app_budget() {
    let h = harness(
        r#"allow = [{ callers = ["local"], operations = ["ShowApp"] }]
limit = { rate = "1/m" }"#,
        &callers(""),
    )
    .await;
    for _ in 0..3 {
        let refused = h.call("POST", &remove_users_path(), &[("content-type", "application/json")], USERS).await;
        refused.assert_gateway_error(403, "RTCGW.4033");
    }
    let allowed = h.call("GET", &format!("/v2/apps/{APP}"), &[], "").await;
    assert_eq!(allowed.status, 202, "the 403s must not have used the one call per minute");
}

#[tokio::test]
async fn shadow_mode_forwards_and_counts() {
    let h = harness(
        r#"allow = [{ callers = ["billing"], operations = ["read-only"] }]
shadow = true
limit = { rate = "1/m", shadow = true }"#,
        &callers(""),
    )
    .await;
    for _ in 0..3 {
        let answer = h.call("POST", &remove_users_path(), &[("content-type", "application/json")], USERS).await;
        assert_eq!(answer.status, 202, "{answer:?}");
    }
    assert_eq!(h.upstream.seen().len(), 3);
    let counters = h.instance.as_ref().unwrap().counters();
    assert_eq!(counters.shadow_allowlist(), 3, "every call would have been refused by the rules");
    assert_eq!(counters.shadow_rate_limit(), 2, "all but the first would have been limited");
    assert_eq!(counters.refusals("allowlist"), 0);
}

#[tokio::test]
async fn mutating_calls_leave_one_audit_record_each_allowed_or_refused() {
    let logs = support::captured_logs();
    let h = harness(r#"allow = [{ callers = ["local"], operations = ["RemoveUsers"] }]"#, &callers("")).await;
    let json = [("content-type", "application/json"), ("x-request-id", "audit-allowed-1")];
    assert_eq!(h.call("POST", &remove_users_path(), &json, USERS).await.status, 202);
    let dismiss = [("x-request-id", "audit-refused-1")];
    h.call("POST", &format!("/v2/apps/{APP}/rooms/room-9/dismiss"), &dismiss, "")
        .await
        .assert_gateway_error(403, "RTCGW.4033");
    h.call("GET", &format!("/v2/apps/{APP}"), &[("x-request-id", "audit-read-1")], "").await;

    let text = support::checked_log_text(&logs);
    let audit: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let find = |id: &str| audit.iter().filter(|v| v["request_id"] == id).cloned().collect::<Vec<_>>();

    let allowed = find("audit-allowed-1");
    assert_eq!(allowed.len(), 1, "{audit:#?}");
    let a = &allowed[0];
    assert_eq!(
        (a["caller"].as_str(), a["app"].as_str(), a["operation"].as_str()),
        (Some("local"), Some(APP), Some("RemoveUsers"))
    );
    assert_eq!((a["room"].as_str(), a["user_ids"].as_str()), (Some("room-9"), Some("user001,user002")));
    assert_eq!(
        (a["decision"].as_str(), a["status"].as_u64(), a["upstream_request_id"].as_str()),
        (Some("allowed"), Some(202), Some("up-req-1"))
    );

    let refused = find("audit-refused-1");
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0]["operation"].as_str(), refused[0]["decision"].as_str()),
        (Some("RemoveRoom"), Some("refused:RTCGW.4033"))
    );
    assert!(find("audit-read-1").is_empty(), "reads are not audited");
}

#[tokio::test]
async fn a_caller_that_disconnects_mid_call_still_leaves_an_audit_record() {
    use tokio::io::AsyncWriteExt;
    let logs = support::captured_logs();
    let (arrived, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let gate = (arrived.clone(), release.clone());
    let h = start_with(
        move |_| Reply::Gate { arrived: gate.0.clone(), release: gate.1.clone() },
        |addr| config_with(addr, ALLOW_ALL, ALLOW_ALL, ""),
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(h.gateway).await.unwrap();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: audit-abandoned-1\r\nContent-Length: {}\r\n\r\n{USERS}",
        remove_users_path(),
        USERS.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    arrived.notified().await;
    drop(client); // the caller gives up while SparkRTC is acting on the call
    release.notify_one(); // and SparkRTC answers after it left

    let mut record = None;
    for _ in 0..1_000_000 {
        let text = support::checked_log_text(&logs);
        record = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "audit" && v["request_id"] == "audit-abandoned-1");
        if record.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let record = record.expect("no audit record for the abandoned call");
    // The call was finished in the background: the record says what SparkRTC did (issue 10).
    assert_eq!(
        (record["decision"].as_str(), record["status"].as_u64(), record["upstream_request_id"].as_str()),
        (Some("allowed"), Some(202), Some("up-gated"))
    );
    assert_eq!(record["user_ids"].as_str(), Some("user001,user002"));
}
