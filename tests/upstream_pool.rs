//! Pooled upstream connections that the far end closes (issue 15, finding 7): a load balancer in
//! front of SparkRTC drops an idle keep-alive connection just as the gateway sends the next call
//! on it. A GET is sent again on a fresh connection; a POST is not (SparkRTC may have acted on
//! it) and the caller gets 502.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
