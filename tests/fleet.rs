//! A fleet, not a process: several gateways sharing one real Redis for their limits, Redis dying
//! and coming back under them, and readiness per credential profile.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sparkrtc_gateway::clock::ManualClock;
use sparkrtc_gateway::{Gateway, Running};
use support::redis::RedisServer;
use support::{config_text, mock_upstream, parse_config, Answer, Harness, MockUpstream, Reply, APP};

/// `[limits]` on Redis, with a generous decision timeout: on a busy test machine a 50 ms budget
/// could expire, and these tests are about what Redis decides.
fn limits(redis: &RedisServer, on_error: &str, extra: &str) -> String {
    format!(
        "[limits]\nbackend = \"redis\"\non_backend_error = \"{on_error}\"\n[limits.redis]\nurl = \"{}\"\ntimeout = \"10s\"\n{extra}\n",
        redis.url()
    )
}

/// `config_text` with the app's limit set (the app table is the last one before `extra`).
fn limited_app(upstream: std::net::SocketAddr, rate: &str, burst: u32, extra: &str) -> String {
    let text = config_text(upstream, extra);
    text.replacen(
        &format!("[apps.\"{APP}\"]\nprofile = \"main\"\n"),
        &format!("[apps.\"{APP}\"]\nprofile = \"main\"\nlimit = {{ rate = \"{rate}\", burst = {burst} }}\n"),
        1,
    )
}

async fn replica(text: &str, skew: Duration, ahead: bool) -> (Running, Arc<ManualClock>) {
    let now = SystemTime::now();
    let clock = Arc::new(ManualClock::new(if ahead { now + skew } else { now - skew }));
    let gateway = Gateway::with_clock(parse_config(text), clock.clone()).unwrap();
    (sparkrtc_gateway::start(gateway, None).await.unwrap(), clock)
}

fn remove(user: &str) -> String {
    format!("{{\"user_ids\":[\"{user}\"]}}")
}

async fn remove_users(h: &Harness, user: &str) -> Answer {
    h.remove_users(&remove(user)).await
}

/// Users whose removal reached the upstream.
fn forwarded_users(upstream: &MockUpstream) -> Vec<String> {
    upstream
        .seen()
        .iter()
        .map(|s| {
            serde_json::from_slice::<serde_json::Value>(&s.body).unwrap()["user_ids"][0].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget_and_admit_no_call_twice() {
    let redis = RedisServer::start();
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "6/m", 4, &limits(&redis, "deny", ""))).await;
    // Skewed clocks (within the 15 minutes signatures allow): the limit runs on Redis's clock.
    let replicas = [
        replica(&text, Duration::from_secs(600), false).await,
        replica(&text, Duration::ZERO, true).await,
        replica(&text, Duration::from_secs(600), true).await,
    ];
    let harnesses: Vec<Arc<Harness>> =
        replicas.iter().map(|(r, _)| Arc::new(Harness::around(r, upstream.clone()))).collect();

    let started = Instant::now();
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let h = harnesses[i % 3].clone();
            tokio::spawn(async move { (format!("u-{i}"), remove_users(&h, &format!("u-{i}")).await) })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let elapsed = started.elapsed();

    let admitted: HashSet<&str> = answers.iter().filter(|(_, a)| a.status == 202).map(|(u, _)| u.as_str()).collect();
    let forwarded = forwarded_users(&upstream);
    let unique: HashSet<&str> = forwarded.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), forwarded.len(), "a call reached SparkRTC twice: {forwarded:?}");
    assert_eq!(unique, admitted, "exactly the admitted calls reached SparkRTC");
    // GCRA: at most the burst plus one call per emission interval (10 s) of the run.
    let bound = 4 + elapsed.as_secs().div_ceil(10) as usize;
    assert!((4..=bound).contains(&admitted.len()), "{} admitted in {elapsed:?}; bound {bound}", admitted.len());
    for (_, answer) in answers.iter().filter(|(_, a)| a.status != 202) {
        answer.assert_gateway_error(429, "RTCGW.4290");
        let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "{answer:?}");
        assert_eq!(answer.header("ratelimit-policy"), Some("\"app\";q=4;w=40"));
        assert_eq!(answer.header("ratelimit"), Some(format!("\"app\";r=0;t={retry}").as_str()));
    }
    // One namespaced key, expiring once replenished.
    let keys = redis.cli(&["--scan", "--pattern", "sparkrtc-gateway:*"]);
    assert_eq!(keys.trim(), format!("sparkrtc-gateway:app:{APP}:6/60s~4"));
    let ttl: i64 = redis.cli(&["PTTL", keys.trim()]).trim().parse().unwrap();
    assert!((1..=60_000).contains(&ttl), "key TTL {ttl} ms");
}

/// Polls the limiter's probe until Redis answers again (each probe waits up to a second).
async fn until_backend_up(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.gateway.readiness().text.contains("limiter: redis reachable") {
        assert!(Instant::now() < deadline, "the gateway never reconnected to Redis");
        running.gateway.probe_limiter().await;
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn redis_killed_with_deny_refuses_with_5031_and_a_restart_restores_shared_limits() {
    let mut redis = RedisServer::start();
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "1/m", 2, &limits(&redis, "deny", ""))).await;
    let (running, _) = replica(&text, Duration::ZERO, true).await;
    let h = Harness::around(&running, upstream.clone());
    let admin = running.admin_addr.unwrap();
    // Within the budget, so the local pre-check has no refusal to remember: what follows is
    // Redis's absence alone.
    assert_eq!(remove_users(&h, "a").await.status, 202);
    assert_eq!(remove_users(&h, "b").await.status, 202);

    redis.kill();
    for user in ["d", "e", "f"] {
        let answer = remove_users(&h, user).await;
        answer.assert_gateway_error(503, "RTCGW.5031");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    assert_eq!(forwarded_users(&upstream), ["a", "b"], "no call went out while Redis could not decide");
    let readyz = h.call_at(admin, "GET", "/readyz", &[], "").await;
    assert_eq!(readyz.status, 200, "account-level calls have no limit and still serve: {}", readyz.body);
    assert!(readyz.body.contains("app \"app-123\": cannot be served"), "{}", readyz.body);
    assert!(readyz.body.contains("limiter: redis unreachable"), "{}", readyz.body);
    let metrics = h.call_at(admin, "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("sparkrtc_gateway_ratelimit_backend_up 0"), "{metrics}");
    assert!(
        metrics.contains("sparkrtc_gateway_refusals_total{app=\"app-123\",reason=\"limiter_unavailable\"} 3"),
        "{metrics}"
    );

    redis.restart();
    until_backend_up(&running).await;
    assert_eq!(h.call_at(admin, "GET", "/readyz", &[], "").await.status, 200);
    // The restarted Redis is empty: a fresh budget of 2, shared again.
    assert_eq!(remove_users(&h, "g").await.status, 202);
    assert_eq!(remove_users(&h, "h").await.status, 202);
    remove_users(&h, "i").await.assert_gateway_error(429, "RTCGW.4290");
    assert_eq!(forwarded_users(&upstream), ["a", "b", "g", "h"]);
}

#[tokio::test]
async fn redis_killed_with_allow_forwards_counts_and_stays_ready() {
    let mut redis = RedisServer::start();
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "1/m", 1, &limits(&redis, "allow", ""))).await;
    let (running, _) = replica(&text, Duration::ZERO, true).await;
    let h = Harness::around(&running, upstream.clone());
    let admin = running.admin_addr.unwrap();
    assert_eq!(remove_users(&h, "a").await.status, 202);

    redis.kill();
    for user in ["c", "d"] {
        assert_eq!(remove_users(&h, user).await.status, 202, "allow: forwarded while Redis is down");
    }
    assert_eq!(forwarded_users(&upstream), ["a", "c", "d"]);
    let readyz = h.call_at(admin, "GET", "/readyz", &[], "").await;
    assert_eq!(readyz.status, 200, "allow needs no backend to serve: {}", readyz.body);
    assert!(readyz.body.contains("limiter: redis unreachable"), "{}", readyz.body);
    let metrics = h.call_at(admin, "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("sparkrtc_gateway_ratelimit_backend_failed_open_total 2"), "{metrics}");

    redis.restart();
    until_backend_up(&running).await;
    assert_eq!(remove_users(&h, "e").await.status, 202);
    remove_users(&h, "f").await.assert_gateway_error(429, "RTCGW.4290");
}

#[tokio::test]
async fn a_flushed_script_is_sent_again_and_decisions_go_on() {
    let redis = RedisServer::start();
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "1/m", 2, &limits(&redis, "deny", ""))).await;
    let (running, _) = replica(&text, Duration::ZERO, true).await;
    let h = Harness::around(&running, upstream);
    assert_eq!(remove_users(&h, "a").await.status, 202);
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    assert_eq!(remove_users(&h, "b").await.status, 202, "NOSCRIPT is answered with EVAL, not an error");
    remove_users(&h, "c").await.assert_gateway_error(429, "RTCGW.4290");
    assert_eq!(redis.calls("eval"), 2, "EVAL on the first call and after the flush only");
    assert_eq!(redis.calls("evalsha"), 3, "every call tries EVALSHA first");
}

#[tokio::test]
async fn the_local_precheck_refuses_without_a_round_trip_until_redis_would_admit() {
    let redis = RedisServer::start();
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "1/h", 1, &limits(&redis, "deny", ""))).await;
    let (running, _) = replica(&text, Duration::ZERO, true).await;
    let h = Harness::around(&running, upstream);
    assert_eq!(remove_users(&h, "a").await.status, 202);
    let from_redis = remove_users(&h, "b").await;
    from_redis.assert_gateway_error(429, "RTCGW.4290");
    let script_runs = redis.calls("evalsha") + redis.calls("eval");
    for user in ["c", "d", "e"] {
        let local = remove_users(&h, user).await;
        local.assert_gateway_error(429, "RTCGW.4290");
        let retry: u64 = local.header("retry-after").unwrap().parse().unwrap();
        assert!((3_590..=3_600).contains(&retry), "counts down to Redis's instant: {retry}");
    }
    assert_eq!(redis.calls("evalsha") + redis.calls("eval"), script_runs, "refused locally, no round trip");
    let metrics = h.call_at(running.admin_addr.unwrap(), "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("sparkrtc_gateway_ratelimit_local_refusals_total 3"), "{metrics}");
    assert!(metrics.contains("sparkrtc_gateway_ratelimit_backend_duration_seconds_count 2"), "{metrics}");
}

#[tokio::test]
async fn tls_and_a_password_from_a_file_reach_redis_and_a_wrong_password_denies() {
    let logs = support::captured_logs();
    let redis = RedisServer::start_tls();
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = support::data("certs/ca.pem");
    let tls = format!("ca_file = \"{}\"", ca.display());
    let (upstream, _, text) =
        mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "1/m", 1, &limits(&redis, "deny", &tls))).await;
    let (running, _) = replica(&text, Duration::ZERO, true).await;
    let h = Harness::around(&running, upstream.clone());
    assert_eq!(remove_users(&h, "a").await.status, 202);
    remove_users(&h, "b").await.assert_gateway_error(429, "RTCGW.4290");

    let locked = RedisServer::start_with_password("redis-pass-do-not-log");
    std::fs::write(dir.join("redis-password"), "redis-pass-do-not-log\n").unwrap();
    let with_password = format!("password_file = \"{}\"", dir.join("redis-password").display());
    for (auth, expected) in [(with_password, 202), ("password = \"not-the-password\"".to_owned(), 503)] {
        let (upstream, _, text) =
            mock_upstream(|_| Reply::status(202), |addr| limited_app(addr, "1/m", 1, &limits(&locked, "deny", &auth)))
                .await;
        let (other, _) = replica(&text, Duration::ZERO, true).await;
        let answer = remove_users(&Harness::around(&other, upstream), "c").await;
        assert_eq!(answer.status, expected, "{answer:?}");
    }
    let logs = support::checked_log_text(&logs);
    assert!(logs.contains("rate-limit backend"), "the refusal was logged at all");
    for secret in ["redis-pass-do-not-log", "not-the-password"] {
        assert!(!logs.contains(secret), "a Redis password reached the logs");
    }
}

#[tokio::test]
async fn one_profile_down_leaves_the_replica_ready_unless_readiness_is_all() {
    // IAM's port is closed: the token profile can never fetch a token.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let token_app = format!(
        "[profiles.iam]\nkind = \"token\"\niam_endpoint = \"https://{closed}\"\ndomain = \"d\"\nuser = \"u\"\npassword = \"p\"\nproject_id = \"fedcba9876543210fedcba9876543210\"\n[apps.\"token-app\"]\nprofile = \"iam\"\n{}\n",
        support::ALLOW_ALL
    );
    for (readiness, ready) in [("any", 200), ("all", 503)] {
        let extra = token_app.clone();
        let (upstream, _, text) = mock_upstream(
            |_| Reply::status(202),
            |addr| config_text(addr, &extra).replace("[admin]\n", &format!("[admin]\nreadiness = \"{readiness}\"\n")),
        )
        .await;
        let (running, _) = replica(&text, Duration::ZERO, true).await;
        let h = Harness::around(&running, upstream);
        h.call("GET", "/v2/apps/token-app", &[], "").await.assert_gateway_error(503, "RTCGW.5030");
        assert_eq!(h.call("GET", &format!("/v2/apps/{APP}"), &[], "").await.status, 202, "the healthy app serves");
        let admin = running.admin_addr.unwrap();
        let readyz = h.call_at(admin, "GET", "/readyz", &[], "").await;
        assert_eq!(readyz.status, ready, "readiness = {readiness}: {}", readyz.body);
        assert!(readyz.body.contains("profile \"iam\": unusable: no valid IAM token"), "{}", readyz.body);
        assert!(readyz.body.contains("profile \"main\": usable"), "{}", readyz.body);
        assert!(readyz.body.contains("app \"token-app\": cannot be served"), "{}", readyz.body);
        let metrics = h.call_at(admin, "GET", "/metrics", &[], "").await.body;
        assert!(metrics.contains("sparkrtc_gateway_profile_usable{profile=\"iam\"} 0"), "{metrics}");
        assert!(metrics.contains("sparkrtc_gateway_profile_usable{profile=\"main\"} 1"), "{metrics}");
    }
}

#[tokio::test]
async fn a_stalled_redis_costs_a_call_its_timeout_then_on_backend_error_decides() {
    let redis = RedisServer::start();
    let (upstream, _, text) = mock_upstream(
        |_| Reply::status(202),
        |addr| {
            limited_app(addr, "1/m", 5, &limits(&redis, "deny", "")).replace("timeout = \"10s\"", "timeout = \"200ms\"")
        },
    )
    .await;
    let (running, _) = replica(&text, Duration::ZERO, true).await;
    let h = Harness::around(&running, upstream.clone());
    assert_eq!(remove_users(&h, "a").await.status, 202);
    // Redis holds every command for 10 s: a stall, not an outage.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "10000", "ALL"]).trim(), "OK");
    let answer = remove_users(&h, "b").await;
    answer.assert_gateway_error(503, "RTCGW.5031");
    assert_eq!(forwarded_users(&upstream), ["a"]);
    let metrics = h.call_at(running.admin_addr.unwrap(), "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("sparkrtc_gateway_ratelimit_backend_errors_total{kind=\"timeout\"} 1"), "{metrics}");
    assert!(metrics.contains("sparkrtc_gateway_ratelimit_backend_up 1"), "a slow answer is not an outage: {metrics}");
}
