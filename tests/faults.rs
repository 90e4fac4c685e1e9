//! Bad input and failing neighbours, as tables: each row is one case sent through the running
//! gateway, with the exact status and `error_code` the caller must get and what must have reached
//! SparkRTC (nothing, or exactly one copy). A new case is a new row.
//!
//! Requests are written as raw bytes on a TCP socket so that malformed ones reach the gateway as
//! sent; upstream and IAM faults are played by small servers that misbehave on the wire. Nothing
//! waits on a timer to synchronise: every answer is read to the end (or to the connection's end)
//! within a 20 s deadline, and the few rows that need a timeout to fire use a 1 s one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sparkrtc_gateway::signer::SdkDate;
use support::{config_text, config_with, data, parse_config, start_with, Reply, Seen, ALLOW_ALL, APP};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const REMOVE: &str = "/v2/apps/app-123/rooms/room-456/batch-remove-users";
const USERS: &str = r#"{"user_ids":["user001","user002"]}"#;
/// The body cap of the bad-input table: big enough for bombs that fit under it.
const CAP: usize = 64 * 1024;

/// What the caller got, read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ended as its framing said (all of Content-Length, or the last chunk).
    complete: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        json["error_code"].as_str().map(str::to_owned)
    }
}

/// How a request is put on the wire.
enum Request {
    /// All at once.
    Whole(String),
    /// All at once, bytes that need not be text.
    Bytes(Vec<u8>),
    /// Piece by piece, with a pause between pieces: a slow client.
    Trickle(Vec<String>),
    /// All at once, then the client closes its sending side.
    ThenHalfClose(String),
}

/// Writes the request and reads the answer until the connection ends (every request says
/// `Connection: close`), a reset, or 20 s.
async fn exchange(addr: SocketAddr, send: &Request) -> Answer {
    exchange_with(addr, send, || {}).await
}

/// Like [`exchange`], calling `on_head` once the answer's head has arrived.
async fn exchange_with(addr: SocketAddr, send: &Request, on_head: impl FnOnce()) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A write can fail when the gateway answers and closes before reading everything (413):
    // the answer is still there to read.
    match send {
        Request::Whole(text) => {
            let _ = stream.write_all(text.as_bytes()).await;
        }
        Request::Bytes(bytes) => {
            let _ = stream.write_all(bytes).await;
        }
        Request::Trickle(pieces) => {
            for piece in pieces {
                let _ = stream.write_all(piece.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Request::ThenHalfClose(text) => {
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
    let mut bytes = Vec::new();
    let mut on_head = Some(on_head);
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            if find(&bytes, b"\r\n\r\n").is_some() {
                if let Some(f) = on_head.take() {
                    f();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.unwrap_or_else(|_| panic!("the gateway hung"));
    parse_answer(&bytes).unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&bytes)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let end = find(bytes, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &bytes[end + 4..];
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let (body, complete) = if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        dechunk(raw)
    } else if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        (raw[..raw.len().min(len)].to_vec(), raw.len() >= len)
    } else {
        (raw.to_vec(), true)
    };
    Some(Answer { status, headers, body, complete })
}

/// A chunked body and whether its last (empty) chunk arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else { return (body, false) };
        let size = std::str::from_utf8(&raw[..line_end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { return (body, false) };
        raw = &raw[line_end + 2..];
        if size == 0 {
            return (body, true);
        }
        if raw.len() < size + 2 {
            body.extend_from_slice(&raw[..raw.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn post(path: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{extra_headers}\r\n")
}

/// One row: what is sent, what the caller must get, how many copies SparkRTC must see.
struct Case {
    name: &'static str,
    send: Request,
    status: u16,
    /// The gateway's `error_code`; `None` for answers the gateway did not make itself
    /// (SparkRTC's, relayed, or the HTTP layer's refusal of what is not HTTP).
    code: Option<&'static str>,
    /// Copies that must reach SparkRTC: 0 or 1.
    reached: usize,
    /// The body SparkRTC must receive, byte for byte, when one copy reaches it.
    body: Option<String>,
    /// The path and query it must be sent to.
    path: &'static str,
}

fn case(name: &'static str, send: Request, status: u16, code: Option<&'static str>, reached: usize) -> Case {
    Case { name, send, status, code, reached, body: None, path: REMOVE }
}

fn forwarded(name: &'static str, body: &str) -> Case {
    forwarded_to(name, REMOVE, body)
}

fn forwarded_to(name: &'static str, target: &str, body: &str) -> Case {
    Case {
        name,
        send: Request::Whole(post(target, "", body)),
        status: 202,
        code: None,
        reached: 1,
        body: Some(body.into()),
        path: REMOVE,
    }
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

fn bad_input_cases() -> Vec<Case> {
    let r = |s: &str| Request::Whole(s.to_owned());
    let many_headers: String = (0..101).map(|i| format!("X-Caller-{i}: {i}\r\n")).collect();
    let big_header = format!("X-Caller-Big: {}\r\n", "b".repeat(512 * 1024));
    let fat_header = format!("X-Caller-Fat: {}\r\n", "f".repeat(32 * 1024));
    let users = |n: usize| format!(r#"{{"user_ids":[{}]}}"#, vec![r#""u""#; n].join(","));
    let long_id = format!(r#"{{"user_ids":["{}"]}}"#, "u".repeat(CAP - 20));
    let over_cap = format!(r#"{{"user_ids":["{}"]}}"#, "u".repeat(CAP));
    let half = &USERS[..10];
    vec![
        // Malformed request lines: refused by the HTTP layer, before the gateway sees a request.
        case("not HTTP at all", r("HELLO THERE\r\n\r\n"), 400, None, 0),
        case("request line without a version", r("GET /v2/apps\r\nHost: gw\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("unknown HTTP version", r("GET /v2/apps HTTP/9.9\r\nHost: gw\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("space inside the target", r("GET /v2/ap ps HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("NUL in the request line", r("GET /v2/apps\0 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("a raw byte that is not UTF-8 in the target", Request::Bytes(b"GET /v2/apps/\xff HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".to_vec()), 400, None, 0),
        // Raw UTF-8 is read as its percent-escape and forwarded in that canonical form.
        Case {
            path: "/v2/apps/app-123/rooms/r%C3%B6/batch-remove-users",
            ..forwarded_to("raw UTF-8 in the target", "/v2/apps/app-123/rooms/rö/batch-remove-users", USERS)
        },
        case("header line without a colon", r("GET /v2/apps HTTP/1.1\r\nHost gw\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("white space before a header colon", r("GET /v2/apps HTTP/1.1\r\nHost : gw\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("obsolete folded header line", r("GET /v2/apps HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n  2\r\nConnection: close\r\n\r\n"), 400, None, 0),
        case("Content-Length not a number", r(&post(REMOVE, "Content-Length: abc\r\n", USERS)), 400, None, 0),
        // Methods are case-sensitive: `get` is an extension method no operation has.
        case("lower-case method", r("get /v2/apps HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"), 405, Some("RTCGW.4050"), 0),
        case("unknown method", r(&get("/v2/apps", "").replacen("GET", "BREW", 1)), 405, Some("RTCGW.4050"), 0),
        case("encoded NUL in the path", r(&get("/v2/apps/app%00", "")), 400, Some("RTCGW.4001"), 0),
        case("encoded traversal", r(&get("/v2/apps/%2e%2e/app-123", "")), 400, Some("RTCGW.4001"), 0),
        // Oversized headers.
        case("101 header fields", r(&format!("GET /v2/apps HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{many_headers}\r\n")), 431, None, 0),
        case("one 512 KiB header field", r(&format!("GET /v2/apps HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{big_header}\r\n")), 431, None, 0),
        Case {
            name: "a 32 KiB header is dropped, the call goes through once",
            send: r(&post(REMOVE, &fat_header, USERS)),
            status: 202,
            code: None,
            reached: 1,
            body: Some(USERS.into()),
            path: REMOVE,
        },
        // The caller never picks the destination.
        case("absolute-form elsewhere", r(&get("http://evil.example/v2/apps", "")), 400, Some("RTCGW.4002"), 0),
        case("absolute-form https", r(&get("https://evil.example:443/v2/apps/app-123", "")), 400, Some("RTCGW.4002"), 0),
        case("CONNECT", r("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n"), 400, Some("RTCGW.4002"), 0),
        case("asterisk-form", r("OPTIONS * HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"), 400, Some("RTCGW.4002"), 0),
        Case {
            name: "Host naming another server changes nothing",
            send: r(&post(REMOVE, "", USERS).replace("Host: gw", "Host: evil.example")),
            status: 202,
            code: None,
            reached: 1,
            body: Some(USERS.into()),
            path: REMOVE,
        },
        Case {
            name: "forwarding headers naming another server change nothing",
            send: r(&post(REMOVE, "X-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\nX-Original-URL: /v2/apps/other\r\n", USERS)),
            status: 202,
            code: None,
            reached: 1,
            body: Some(USERS.into()),
            path: REMOVE,
        },
        // JSON bombs within the cap: refused at parse depth, not by running out of stack.
        case("30000 nested arrays", r(&post(REMOVE, "", &nested(30_000, "[", "]"))), 400, Some("RTCGW.4005"), 0),
        case("10000 nested objects", r(&post("/v2/apps", "", &nested(10_000, r#"{"a":"#, "}"))), 400, Some("RTCGW.4005"), 0),
        case(
            "nesting inside user_ids",
            r(&post(REMOVE, "", &format!(r#"{{"user_ids":{}}}"#, nested(20_000, "[", "]")))),
            400,
            Some("RTCGW.4005"),
            0,
        ),
        case("a number out of range", r(&post(REMOVE, "", r#"{"user_ids":[1e999]}"#)), 400, Some("RTCGW.4005"), 0),
        case("a lone surrogate escape", r(&post(REMOVE, "", r#"{"user_ids":["\ud800"]}"#)), 400, Some("RTCGW.4005"), 0),
        forwarded("a 64 KiB user id within the cap", &long_id),
        forwarded("10000 user ids within the cap", &users(10_000)),
        // Slow and short bodies.
        Case {
            name: "a body trickled in four pieces",
            send: Request::Trickle(
                [head_of(&post(REMOVE, "", USERS)), USERS[..5].into(), USERS[5..15].into(), USERS[15..].into()].into(),
            ),
            status: 202,
            code: None,
            reached: 1,
            body: Some(USERS.into()),
            path: REMOVE,
        },
        case(
            "a body that ends before its Content-Length",
            Request::ThenHalfClose(post(REMOVE, "", half).replace(&format!("Content-Length: {}", half.len()), "Content-Length: 100")),
            400,
            Some("RTCGW.4006"),
            0,
        ),
        case(
            "a chunked body that ends before its last chunk",
            Request::ThenHalfClose(format!("POST {REMOVE} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{half}\r\n", half.len())),
            400,
            Some("RTCGW.4006"),
            0,
        ),
        // Over the cap.
        case(
            "Content-Length over the cap, refused before the body",
            r(&post(REMOVE, "", "").replace("Content-Length: 0", &format!("Content-Length: {}", CAP + 1))),
            413,
            Some("RTCGW.4130"),
            0,
        ),
        case("a streamed body over the cap", r(&chunked(REMOVE, &over_cap)), 413, Some("RTCGW.4130"), 0),
        // Ambiguity: what a proxy in front and SparkRTC behind could read differently.
        case("HTTP/1.1 without Host (RFC 9112 section 3.2)", r(&get(&format!("/v2/apps/{APP}"), "").replace("Host: gw\r\n", "")), 400, Some("RTCGW.4004"), 0),
        case("two Host headers", r(&post(REMOVE, "Host: evil.example\r\n", USERS)), 400, Some("RTCGW.4004"), 0),
        case(
            "a JSON key given twice (issue 15, finding 5)",
            r(&post(REMOVE, "", r#"{"user_ids":["a"],"user_ids":["b","c"]}"#)),
            400,
            Some("RTCGW.4005"),
            0,
        ),
        case(
            "Transfer-Encoding: chunked, chunked (finding 6)",
            r(&chunked(REMOVE, USERS).replace("Transfer-Encoding: chunked", "Transfer-Encoding: chunked, chunked")),
            400,
            Some("RTCGW.4007"),
            0,
        ),
        case(
            "Transfer-Encoding: gzip, chunked",
            r(&chunked(REMOVE, USERS).replace("Transfer-Encoding: chunked", "Transfer-Encoding: gzip, chunked")),
            400,
            Some("RTCGW.4007"),
            0,
        ),
    ]
}

/// The request's head alone, Content-Length and all.
fn head_of(request: &str) -> String {
    request.split_inclusive("\r\n\r\n").next().unwrap_or_default().to_owned()
}

fn chunked(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

/// Config edit: a body cap for the bombs (the harness's response timeout, 10 s, is one no busy
/// machine misses).
fn roomy(text: String) -> String {
    text.replace("max_body_bytes = 4096", &format!("max_body_bytes = {CAP}"))
}

fn check_refusal(name: &str, answer: &Answer, status: u16, code: Option<&str>) {
    assert_eq!(answer.status, status, "{name}: {answer:?}");
    assert!(answer.complete, "{name}: the answer was cut short: {answer:?}");
    match code {
        Some(code) => {
            assert_eq!(answer.header("x-gateway-error"), Some(code), "{name}: {answer:?}");
            assert_eq!(answer.error_code().as_deref(), Some(code), "{name}: {answer:?}");
            assert!(answer.header("x-request-id").is_some_and(|id| !id.is_empty()), "{name}: {answer:?}");
        }
        None => assert_eq!(answer.header("x-gateway-error"), None, "{name}: {answer:?}"),
    }
}

#[tokio::test]
async fn bad_input_table() {
    let h = start_with(|_| Reply::status(202), |addr| roomy(config_text(addr, ""))).await;
    let upstream_host = format!("127.0.0.1:{}", h.upstream_addr.port());
    let cases = bad_input_cases();
    for c in &cases {
        let before = h.upstream.seen().len();
        eprintln!("row: {}", c.name);
        let answer = exchange(h.gateway, &c.send).await;
        check_refusal(c.name, &answer, c.status, c.code);
        let seen = h.upstream.seen();
        let copies: &[Seen] = &seen[before..];
        assert_eq!(copies.len(), c.reached, "{}: copies that reached SparkRTC", c.name);
        for copy in copies {
            assert_eq!(copy.verified, Ok("main".to_owned()), "{}: signature", c.name);
            assert_eq!(copy.headers["host"], upstream_host.as_str(), "{}: Host", c.name);
            assert!(copy.headers.keys().all(|n| !n.as_str().starts_with("x-caller-")), "{}", c.name);
            assert!(
                ["x-forwarded-host", "forwarded", "x-original-url"].iter().all(|n| !copy.headers.contains_key(*n)),
                "{}",
                c.name
            );
            assert_eq!(copy.path_and_query, c.path, "{}", c.name);
            if let Some(body) = &c.body {
                assert_eq!(copy.body, body.as_bytes(), "{}: body", c.name);
            }
        }
    }
    assert!(cases.len() >= 30);
}

/// How a stand-in for SparkRTC or IAM misbehaves on the wire, after the TLS handshake.
#[derive(Clone)]
enum Wire {
    /// Reads the request, waits `delay`, writes `bytes` and closes.
    Answer { delay: Duration, bytes: Vec<u8> },
    /// Reads the request, then resets the connection without a word.
    Reset,
    /// Reads the request, then closes the connection cleanly without a word.
    Close,
    /// Reads the request, writes `bytes`, then resets once `release` is notified (when the
    /// caller has the answer's head, so the reset cannot overtake the bytes).
    ThenReset(Vec<u8>, Arc<Notify>),
    /// Reads the request, writes `bytes`, then says nothing more.
    ThenStall(Vec<u8>),
}

/// A TLS server (the test certificate, or `cert` if given) playing `wire` on every connection;
/// the counter is the number of complete requests it read.
async fn wire_server(wire: Wire) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(
        sparkrtc_gateway::tls::server_config(&data("certs/server.pem"), &data("certs/server.key")).unwrap(),
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (tls, wire, counter) = (tls.clone(), wire.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tls.accept(tcp).await else { return };
                if !read_request(&mut stream).await {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let reset = |stream: &tokio_rustls::server::TlsStream<TcpStream>| {
                    let _ = stream.get_ref().0.set_zero_linger();
                };
                match wire {
                    Wire::Answer { delay, bytes } => {
                        tokio::time::sleep(delay).await;
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.shutdown().await;
                    }
                    Wire::Reset => reset(&stream),
                    Wire::Close => {
                        let _ = stream.shutdown().await;
                    }
                    Wire::ThenReset(bytes, release) => {
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.flush().await;
                        release.notified().await;
                        reset(&stream);
                    }
                    Wire::ThenStall(bytes) => {
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.flush().await;
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    (addr, requests)
}

/// Reads one request head and its `Content-Length` body; false if the connection ended first.
async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// Where SparkRTC's stand-in comes from in an upstream row.
enum Upstream {
    /// Nothing listens: connection refused.
    Refused,
    /// A plain-TCP server that answers HTTP where TLS was expected.
    PlainText,
    /// The harness's mock SparkRTC, with its certificate trusted or not.
    Mock {
        reply: fn(&Seen) -> Reply,
        trust_ca: bool,
    },
    /// The mock serving a certificate the CA signed for another name and purpose.
    WrongName,
    Wire(Wire),
}

struct UpstreamCase {
    name: &'static str,
    upstream: Upstream,
    /// `response_timeout`, short only where a stall must end in it.
    timeout: &'static str,
    status: u16,
    code: Option<&'static str>,
    reached: usize,
    /// Whether the caller's body must end as framed; false where the upstream cut it.
    complete: bool,
    /// Headers the caller must get exactly, relayed from SparkRTC.
    relayed: &'static [(&'static str, &'static str)],
    /// Notified when the caller has the head of the answer.
    on_head: Option<Arc<Notify>>,
}

fn upstream_row(
    name: &'static str,
    upstream: Upstream,
    status: u16,
    code: Option<&'static str>,
    reached: usize,
) -> UpstreamCase {
    UpstreamCase { name, upstream, timeout: "10s", status, code, reached, complete: true, relayed: &[], on_head: None }
}

fn sparkrtc_error(status: u16) -> Reply {
    Reply::With {
        status,
        headers: vec![
            ("X-Request-Id", format!("up-{status}")),
            ("Retry-After", "7".to_owned()),
            ("Content-Type", "application/json".to_owned()),
        ],
        body: format!(r#"{{"error_code":"RTC.{status}","error_msg":"from SparkRTC"}}"#),
    }
}

fn upstream_cases() -> Vec<UpstreamCase> {
    let partial = response("200 OK", "X-Request-Id: up-partial\r\n", &"x".repeat(100));
    let partial = partial[..partial.len() - 60].to_vec();
    let release = Arc::new(Notify::new());
    let errors = |status: u16| Upstream::Mock {
        reply: match status {
            429 => |_| sparkrtc_error(429),
            500 => |_| sparkrtc_error(500),
            502 => |_| sparkrtc_error(502),
            _ => |_| sparkrtc_error(503),
        },
        trust_ca: true,
    };
    let relayed = |status| UpstreamCase {
        name: match status {
            429 => "429 from SparkRTC is relayed unchanged, once",
            500 => "500 from SparkRTC is relayed unchanged, once",
            502 => "502 from SparkRTC is relayed unchanged, once",
            _ => "503 from SparkRTC is relayed unchanged, once",
        },
        upstream: errors(status),
        timeout: "10s",
        status,
        code: None,
        reached: 1,
        complete: true,
        on_head: None,
        relayed: match status {
            429 => &[("x-request-id", "up-429"), ("retry-after", "7"), ("content-type", "application/json")],
            500 => &[("x-request-id", "up-500"), ("retry-after", "7"), ("content-type", "application/json")],
            502 => &[("x-request-id", "up-502"), ("retry-after", "7"), ("content-type", "application/json")],
            _ => &[("x-request-id", "up-503"), ("retry-after", "7"), ("content-type", "application/json")],
        },
    };
    vec![
        upstream_row("connection refused", Upstream::Refused, 502, Some("RTCGW.5020"), 0),
        upstream_row("plain HTTP where TLS was expected", Upstream::PlainText, 502, Some("RTCGW.5020"), 0),
        upstream_row(
            "certificate not signed by a trusted CA",
            Upstream::Mock { reply: |_| Reply::status(202), trust_ca: false },
            502,
            Some("RTCGW.5020"),
            0,
        ),
        upstream_row("certificate for another name", Upstream::WrongName, 502, Some("RTCGW.5020"), 0),
        upstream_row("reset before answering", Upstream::Wire(Wire::Reset), 502, Some("RTCGW.5020"), 1),
        upstream_row("closed before answering", Upstream::Wire(Wire::Close), 502, Some("RTCGW.5020"), 1),
        upstream_row(
            "answers something that is not HTTP",
            Upstream::Wire(Wire::Answer { delay: Duration::ZERO, bytes: b"SSH-2.0-OpenSSH_9.6\r\n".to_vec() }),
            502,
            Some("RTCGW.5020"),
            1,
        ),
        UpstreamCase {
            timeout: "1s",
            ..upstream_row(
                "stalls before answering",
                Upstream::Mock { reply: |_| Reply::Stall, trust_ca: true },
                504,
                Some("RTCGW.5040"),
                1,
            )
        },
        UpstreamCase {
            complete: false,
            relayed: &[("x-request-id", "up-partial")],
            on_head: Some(release.clone()),
            ..upstream_row(
                "reset in the middle of the body",
                Upstream::Wire(Wire::ThenReset(partial.clone(), release)),
                200,
                None,
                1,
            )
        },
        UpstreamCase {
            complete: false,
            relayed: &[("x-request-id", "up-partial")],
            ..upstream_row(
                "closed in the middle of the body",
                Upstream::Wire(Wire::Answer { delay: Duration::ZERO, bytes: partial.clone() }),
                200,
                None,
                1,
            )
        },
        UpstreamCase {
            timeout: "1s",
            complete: false,
            relayed: &[("x-request-id", "up-partial")],
            ..upstream_row("stalls in the middle of the body", Upstream::Wire(Wire::ThenStall(partial)), 200, None, 1)
        },
        UpstreamCase {
            relayed: &[("x-request-id", "up-302")],
            ..upstream_row(
                "a redirect is relayed, never followed",
                Upstream::Wire(Wire::Answer {
                    delay: Duration::ZERO,
                    bytes: response("302 Found", "Location: https://evil.example/\r\nX-Request-Id: up-302\r\n", ""),
                }),
                302,
                None,
                1,
            )
        },
        relayed(429),
        relayed(500),
        relayed(502),
        relayed(503),
    ]
}

/// Starts SparkRTC's stand-in for a row; returns its address and a count of the requests it got.
async fn start_upstream(upstream: &Upstream) -> (SocketAddr, Box<dyn Fn() -> usize + Send + Sync>, bool) {
    match upstream {
        Upstream::Refused => {
            let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = closed.local_addr().unwrap();
            drop(closed);
            (addr, Box::new(|| 0), true)
        }
        Upstream::PlainText => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = listener.accept().await {
                    let _ = tcp.write_all(&response("200 OK", "", "plain")).await;
                }
            });
            (addr, Box::new(|| 0), true)
        }
        Upstream::Mock { reply, trust_ca } => {
            let (mock, addr, _) = support::mock_upstream(*reply, |a| config_text(a, "")).await;
            (addr, Box::new(move || mock.seen().len()), *trust_ca)
        }
        Upstream::WrongName => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tls =
                sparkrtc_gateway::tls::server_config(&data("certs/client.pem"), &data("certs/client.key")).unwrap();
            let mock = support::Harness::client_for(addr).upstream;
            tokio::spawn(sparkrtc_gateway::listener::serve(
                listener,
                Some(tls),
                mock.clone(),
                std::future::pending(),
                Duration::from_secs(1),
            ));
            (addr, Box::new(move || mock.seen().len()), true)
        }
        Upstream::Wire(wire) => {
            let (addr, count) = wire_server(wire.clone()).await;
            (addr, Box::new(move || count.load(Ordering::SeqCst)), true)
        }
    }
}

#[tokio::test]
async fn upstream_fault_table() {
    let cases = upstream_cases();
    for c in &cases {
        let (addr, reached, trust_ca) = start_upstream(&c.upstream).await;
        let mut text = support::with_response_timeout(&config_text(addr, ""), c.timeout);
        if !trust_ca {
            text = text.lines().filter(|l| !l.starts_with("ca_file")).collect::<Vec<_>>().join("\n");
        }
        let gateway = support::start_gateway(parse_config(&text)).await;
        let on_head = c.on_head.clone();
        let answer = exchange_with(gateway, &Request::Whole(post(REMOVE, "", USERS)), move || {
            if let Some(release) = on_head {
                release.notify_one();
            }
        })
        .await;
        assert_eq!(answer.status, c.status, "{}: {answer:?}", c.name);
        assert_eq!(answer.complete, c.complete, "{}: body framing: {answer:?}", c.name);
        match c.code {
            Some(code) => check_refusal(c.name, &answer, c.status, Some(code)),
            None => assert_eq!(answer.header("x-gateway-error"), None, "{}: {answer:?}", c.name),
        }
        for (name, value) in c.relayed {
            assert_eq!(answer.header(name), Some(*value), "{}: {name}: {answer:?}", c.name);
        }
        if c.code.is_none() && c.complete && c.status != 302 {
            let expected = format!(r#"{{"error_code":"RTC.{}","error_msg":"from SparkRTC"}}"#, c.status);
            assert_eq!(String::from_utf8_lossy(&answer.body), expected, "{}: body relayed unchanged", c.name);
        }
        assert_eq!(answer.header("location"), None, "{}: a redirect target is not relayed", c.name);
        assert_eq!(reached(), c.reached, "{}: copies that reached SparkRTC", c.name);
    }
}

fn rfc3339(t: SystemTime) -> String {
    let d = SdkDate::from_system_time(t).to_string();
    format!("{}-{}-{}T{}:{}:{}.000000Z", &d[0..4], &d[4..6], &d[6..8], &d[9..11], &d[11..13], &d[13..15])
}

fn iam_answer(status: &str, token: Option<&str>, body: &str) -> Wire {
    let headers = token.map(|t| format!("X-Subject-Token: {t}\r\n")).unwrap_or_default();
    Wire::Answer {
        delay: Duration::ZERO,
        bytes: response(status, &format!("{headers}Content-Type: application/json\r\n"), body),
    }
}

/// An IAM row: name, IAM's behaviour (`None`: nothing listens), status, code, copies that reach
/// SparkRTC.
type IamCase = (&'static str, Option<Wire>, u16, Option<&'static str>, usize);

/// IAM faults: each row is a fresh gateway whose app uses a token profile.
fn iam_cases() -> Vec<IamCase> {
    let tomorrow = rfc3339(SystemTime::now() + Duration::from_secs(24 * 3_600));
    let good_body = format!(r#"{{"token":{{"expires_at":"{tomorrow}"}}}}"#);
    let yesterday = rfc3339(SystemTime::now() - Duration::from_secs(24 * 3_600));
    vec![
        ("IAM refuses connections", None, 503, Some("RTCGW.5030"), 0),
        ("IAM answers 503", Some(iam_answer("503 Service Unavailable", None, "")), 503, Some("RTCGW.5030"), 0),
        (
            "IAM refuses the password",
            Some(iam_answer("401 Unauthorized", None, r#"{"error":{"code":"IAM.0001"}}"#)),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM answers 200 instead of 201",
            Some(iam_answer("200 OK", Some("t-1"), &good_body)),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM's 201 has no X-Subject-Token",
            Some(iam_answer("201 Created", None, &good_body)),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM's 201 body is not JSON",
            Some(iam_answer("201 Created", Some("t-1"), "<html>")),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM's expires_at is not a time",
            Some(iam_answer("201 Created", Some("t-1"), r#"{"token":{"expires_at":"tomorrow"}}"#)),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM answers 2 MiB",
            Some(iam_answer("201 Created", Some("t-1"), &format!(r#"{{"pad":"{}"}}"#, "p".repeat(2 << 20)))),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM answers what is not HTTP",
            Some(Wire::Answer { delay: Duration::ZERO, bytes: b"\x00\x01garbage\r\n\r\n".to_vec() }),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        ("IAM resets the connection", Some(Wire::Reset), 503, Some("RTCGW.5030"), 0),
        (
            "IAM stalls mid-answer",
            Some(Wire::ThenStall(response("201 Created", "X-Subject-Token: t-1\r\n", &good_body)[..60].to_vec())),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        // Issue 15, finding 2: a caller waits `token_wait` (3 s by default), not IAM's timeout.
        ("IAM accepts and never answers", Some(Wire::ThenStall(Vec::new())), 503, Some("RTCGW.5030"), 0),
        // Finding 3: a token already expired is a failed fetch, never sent.
        (
            "IAM returns a token that has already expired",
            Some(iam_answer("201 Created", Some("t-old"), &format!(r#"{{"token":{{"expires_at":"{yesterday}"}}}}"#))),
            503,
            Some("RTCGW.5030"),
            0,
        ),
        (
            "IAM answers slowly, within the timeout",
            Some(Wire::Answer {
                delay: Duration::from_millis(300),
                bytes: response("201 Created", "X-Subject-Token: t-slow\r\n", &good_body),
            }),
            202,
            None,
            1,
        ),
    ]
}

#[tokio::test]
async fn iam_fault_table() {
    for (name, iam, status, code, reached) in iam_cases() {
        let iam_addr = match iam {
            Some(wire) => wire_server(wire).await.0,
            None => {
                let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
                closed.local_addr().unwrap()
            }
        };
        let profile = format!(
            "[profiles.tok]\nkind = \"token\"\niam_endpoint = \"https://127.0.0.1:{}\"\ndomain = \"d\"\nuser = \"u\"\npassword = \"pw\"\nproject_id = \"fedcba9876543210fedcba9876543210\"\n\n[apps.\"token-app\"]\nprofile = \"tok\"\n{ALLOW_ALL}\n",
            iam_addr.port()
        );
        // The stalling rows end in the caller's token_wait (3 s by default); IAM's own timeout
        // goes on in the background.
        let (mock, _, text) =
            support::mock_upstream(|_| Reply::status(202), |addr| config_with(addr, ALLOW_ALL, ALLOW_ALL, &profile))
                .await;
        let gateway = support::start_gateway(parse_config(&text)).await;
        let answer = exchange(gateway, &Request::Whole(get("/v2/apps/token-app", ""))).await;
        assert_eq!(answer.status, status, "{name}: {answer:?}");
        check_refusal(name, &answer, status, code);
        if code.is_some() {
            let retry: u64 =
                answer.header("retry-after").unwrap_or_else(|| panic!("{name}: no Retry-After")).parse().unwrap();
            assert!(retry >= 1, "{name}");
        }
        let seen = mock.seen();
        assert_eq!(seen.len(), reached, "{name}: copies that reached SparkRTC");
        if let Some(copy) = seen.first() {
            assert_eq!(copy.headers["x-auth-token"], "t-slow", "{name}");
        }
        // Nothing IAM did made the gateway stop serving its AK/SK app.
        let aksk = exchange(gateway, &Request::Whole(get(&format!("/v2/apps/{APP}"), ""))).await;
        assert_eq!(aksk.status, 202, "{name}: the AK/SK app after the IAM fault: {aksk:?}");
    }
}
