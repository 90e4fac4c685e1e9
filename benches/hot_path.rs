//! Microbenchmarks of the per-request work: signing a RemoveUsers call, recognising its
//! operation, and the policy + rate-limit decision. `cargo bench --bench hot_path`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // set-up failures abort the benchmark

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method, Uri, Version};
use sparkrtc_gateway::catalog::Catalog;
use sparkrtc_gateway::config::Config;
use sparkrtc_gateway::ratelimit::{Limits, Subject};
use sparkrtc_gateway::signer::{self, CanonicalQuery, HeaderList, SdkDate, SignInput};

const CONFIG: &str = r#"
[profiles.main]
access_key = "AKEXAMPLE1234567890"
secret_key = "SKEXAMPLEabcdefghijklmnopqrstuvwxyz0123"
project_id = "0123456789abcdef0123456789abcdef"

[callers.billing]
addresses = ["10.0.0.0/8"]

[callers.local]
addresses = ["127.0.0.1"]

[apps."app-123"]
profile = "main"
allow = [{ callers = ["billing"], operations = ["read-only"] }, { callers = ["local"], operations = ["moderation"] }]
limit = { rate = "1000000/s" }
operation_limits = { RemoveUsers = { rate = "1000000/s" } }
"#;

const PATH: &str = "/v2/apps/app-123/rooms/room-456/batch-remove-users";
const BODY: &[u8] = br#"{"user_ids": ["user001", "user002"]}"#;

fn config() -> Config {
    Config::parse(CONFIG, "bench.toml", Path::new("."), &|_| None).unwrap()
}

fn signing(c: &mut Criterion) {
    let config = config();
    let key = config.profiles["main"].signing_key().unwrap();
    let query = CanonicalQuery::default();
    let now = SdkDate::parse("20240102T030405Z").unwrap();
    c.bench_function("sign RemoveUsers (SDK-HMAC-SHA256)", |b| {
        b.iter(|| {
            let mut headers = HeaderList::new();
            headers.set("Content-Type", "application/json;charset=utf-8");
            headers.set("X-Project-Id", "0123456789abcdef0123456789abcdef");
            let input =
                SignInput { method: "POST", host: "rtc-api.myhuaweicloud.com", path: PATH, query: &query, body: BODY };
            black_box(signer::sign(&input, &mut headers, key, now).unwrap())
        })
    });
}

fn catalog(c: &mut Criterion) {
    let uri: Uri = PATH.parse().unwrap();
    c.bench_function("catalog resolve RemoveUsers", |b| {
        b.iter(|| black_box(Catalog.resolve(&Method::POST, black_box(&uri), Version::HTTP_11).unwrap()))
    });
}

fn policy_and_limits(c: &mut Criterion) {
    let config = config();
    let limits = Limits::new(config.limit_plan(), &config.limits.backend).unwrap();
    let app = config.app(Some("app-123")).unwrap();
    let op = Catalog.by_name("RemoveUsers").unwrap();
    let headers = HeaderMap::new();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function("identify + allowlist + rate limits", |b| {
        b.iter(|| {
            let who = config.callers.identify(black_box(peer), &headers, &[]).unwrap();
            let decision = app.access.decide(&who, op);
            let subject = Subject { caller: who.name.as_deref(), address: who.address };
            let checked = ready(limits.check(Some("app-123"), op.name, subject));
            black_box((decision, checked.verdict.is_ok()))
        })
    });
}

/// The local limiter's future is ready at once: poll it once, with no runtime in the timing.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the local limiter never waits"),
    }
}

criterion_group!(benches, signing, catalog, policy_and_limits);
criterion_main!(benches);
