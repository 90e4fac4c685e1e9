//! Pooled upstream connections. Those the far end closes (issue 15, finding 7): a load balancer
//! in front of SparkRTC drops an idle keep-alive connection just as the gateway sends the next
//! call on it. A GET is sent again on a fresh connection; a POST is not (SparkRTC may have acted
//! on it) and the caller gets 502. Those the gateway keeps (issue 10): the default pool holds as
//! many connections as the load used, and a call whose caller hung up still finishes, so its
//! connection is not lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{data, Harness, APP};

/// One request as the stand-in read it: method, which connection (from 1), and its place on
/// that connection (from 0).
type Arrival = (String, usize, usize);

/// A TLS SparkRTC stand-in that answers the first request on each connection, keeps the
/// connection open as keep-alive allows (no `Connection: close`), and closes it without a word
/// when the next request arrives on it: the far end closing a pooled connection as the next
/// call goes out, made deterministic.
async fn closing_upstream() -> (SocketAddr, Arc<Mutex<Vec<Arrival>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(
        sparkrtc_gateway::tls::server_config(&data("certs/server.pem"), &data("certs/server.key")).unwrap(),
    );
    let seen: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        for connection in 1.. {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (tls, log) = (tls.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tls.accept(tcp).await else { return };
                let mut buf = Vec::new();
                for index in 0.. {
                    let Some(method) = read_request(&mut stream, &mut buf).await else { return };
                    log.lock().unwrap().push((method, connection, index));
                    if index > 0 {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-request-id: up-1\r\n\r\n{}";
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.flush().await;
                }
            });
        }
    });
    (addr, seen)
}

/// Reads one request (head and `Content-Length` body) and returns its method.
async fn read_request(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + length);
    head.split(' ').next().map(str::to_owned)
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_far_end_resends_a_get_once_and_never_a_post() {
    let (upstream, seen) = closing_upstream().await;
    let config = support::parse_config(&support::config_text(upstream, ""));
    let gateway = sparkrtc_gateway::Gateway::new(config).unwrap();
    let h = Harness::client_for(support::start_gateway_instance(gateway.clone()).await);
    let show_app = format!("/v2/apps/{APP}");

    assert_eq!(h.call("GET", &show_app, &[], "").await.status, 200, "first call, fresh connection");
    let answer = h.call("GET", &show_app, &[], "").await;
    assert_eq!(answer.status, 200, "the GET met the closed connection and was sent again: {answer:?}");
    let arrivals = seen.lock().unwrap().clone();
    let get = |c, i| ("GET".to_owned(), c, i);
    assert_eq!(arrivals, [get(1, 0), get(1, 1), get(2, 0)], "once on the closed connection, once on a new one");
    assert!(
        gateway.render_metrics().contains("sparkrtc_gateway_upstream_resends_total 1\n"),
        "the second copy is counted, so SparkRTC's count can be reconciled with the gateway's"
    );

    let answer = h.remove_users(r#"{"user_ids":["u1"]}"#).await;
    answer.assert_gateway_error(502, "RTCGW.5020");
    let arrivals = seen.lock().unwrap().clone();
    let posts: Vec<_> = arrivals.iter().filter(|(m, ..)| m == "POST").collect();
    assert_eq!(posts, [&("POST".to_owned(), 2, 1)], "the POST went out once, on the pooled connection, and not again");
}

#[test]
fn pool_idle_timeout_defaults_below_common_load_balancer_idle_timeouts() {
    // AWS ALB and Huawei Cloud ELB close idle connections after 60 s by default: the gateway's
    // pool must let go of them first.
    let config = support::parse_config(&support::config_text("127.0.0.1:9".parse().unwrap(), ""));
    assert_eq!(config.upstream.pool_idle_timeout, Duration::from_secs(30));
}

/// A TLS SparkRTC stand-in that counts the connections it accepts and answers every request
/// `202` with an `X-request-Id`, once `hold` (run per request) completes.
async fn counting_upstream<F, Fut>(hold: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(
        sparkrtc_gateway::tls::server_config(&data("certs/server.pem"), &data("certs/server.key")).unwrap(),
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (tls, hold) = (tls.clone(), hold.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |_req| {
                    let hold = hold();
                    async move {
                        hold.await;
                        let rsp = http::Response::builder().status(202).header("x-request-id", "up-held");
                        rsp.body(Full::new(Bytes::new()))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn the_default_pool_keeps_a_connection_for_each_concurrent_call() {
    // More concurrent calls than the old default cap of 64 idle connections, all in flight at
    // once (the stand-in answers a round only when all of it has arrived), three times over.
    const CALLERS: usize = 100;
    const ROUNDS: usize = 3;
    let round = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let (upstream, accepted) = counting_upstream(move || {
        let round = round.clone();
        async move {
            round.wait().await;
        }
    })
    .await;
    let config = support::parse_config(&support::config_text(upstream, ""));
    let h = Arc::new(Harness::client_for(support::start_gateway(config).await));
    for r in 0..ROUNDS {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let h = h.clone();
            calls.spawn(async move { h.remove_users(r#"{"user_ids":["u1"]}"#).await.status });
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.unwrap(), 202, "round {r}");
        }
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        opened <= CALLERS,
        "{CALLERS} concurrent callers, {ROUNDS} rounds: {opened} upstream connections opened; each beyond {CALLERS} is a TLS handshake the pool threw away"
    );
}

#[tokio::test]
async fn a_call_whose_caller_hangs_up_finishes_and_keeps_its_connection() {
    // The first request is held at the stand-in until the caller has gone; later ones are
    // answered at once.
    let (arrived, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (held, go) = (arrived.clone(), release.clone());
    let (upstream, accepted) = counting_upstream(move || {
        let (held, go, first) = (held.clone(), go.clone(), first.swap(false, Ordering::SeqCst));
        async move {
            if first {
                held.notify_one();
                go.notified().await;
            }
        }
    })
    .await;
    let config = support::parse_config(&support::config_text(upstream, ""));
    let gateway = sparkrtc_gateway::Gateway::new(config).unwrap();
    let h = Harness::client_for(support::start_gateway_instance(gateway.clone()).await);

    let body = r#"{"user_ids":["u1"]}"#;
    let mut caller = tokio::net::TcpStream::connect(h.gateway).await.unwrap();
    let request = format!(
        "POST /v2/apps/{APP}/rooms/room-456/batch-remove-users HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    caller.write_all(request.as_bytes()).await.unwrap();
    arrived.notified().await;
    drop(caller);
    release.notify_one();

    // SparkRTC's answer is what the call is recorded with, not a 499.
    let answered = "sparkrtc_gateway_requests_total{app=\"app-123\",operation=\"RemoveUsers\",status=\"202\",origin=\"upstream\"} 1\n";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !gateway.render_metrics().contains(answered) {
        assert!(tokio::time::Instant::now() < deadline, "no 202 recorded: {}", gateway.render_metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!gateway.render_metrics().contains("status=\"499\""), "{}", gateway.render_metrics());

    assert_eq!(h.remove_users(body).await.status, 202);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the next call went out on the same pooled connection");
}
