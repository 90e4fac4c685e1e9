//! A SparkRTC stand-in for benchmarks: an HTTPS (HTTP/1.1 keep-alive) server that answers every
//! request `202 Accepted` with an `X-request-Id` header and no body, as SparkRTC answers
//! RemoveUsers. It checks nothing, so that it is never the bottleneck: `benches/run.sh` measures
//! its ceiling by loading it directly.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 127.0.0.1:9443 [--threads N] [--cert PEM --key PEM]
//! ```
//!
//! The certificate defaults to the test one (`tests/data/certs/server.pem`, SAN 127.0.0.1 and
//! localhost, signed by `tests/data/certs/ca.pem`). With `--threads 1` (the default) it runs on a
//! single-threaded runtime. `GET /__bench/stats` answers, as JSON, how many connections and
//! requests it has served, and how many requests carried an `Authorization` header (so the harness
//! can tell the gateway's calls were signed, and how many upstream connections a proxy opened).
//! The bound address is printed on standard output, so `127.0.0.1:0` works. `--delay-ms 20`
//! makes every answer wait 20 ms, as SparkRTC across a WAN would; `GET /__bench/delay?ms=N`
//! changes that while it runs.
//!
//! `--faults drop=0.01,stall=0.01,error=0.02` injects faults for the soak (`benches/soak.sh`):
//! that share of requests is dropped (the connection closed without an answer), stalled for
//! `--stall-secs` (default 5) before an answer nobody waits for, or answered `503` with
//! `Retry-After`. Which requests is decided by a hash of their number, so a run is repeatable.
//! `/__bench/stats` then also counts the calls forwarded to it (every request but the stats
//! ones) and each kind of fault.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    signed: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
    errors: AtomicU64,
    /// Every answer waits this long first: SparkRTC across a WAN.
    delay_ms: AtomicU64,
}

/// Faults to inject, in requests per million.
#[derive(Clone, Copy, Default)]
struct Faults {
    drop: u64,
    stall: u64,
    error: u64,
    stall_for: std::time::Duration,
}

#[derive(Debug)]
enum Fault {
    Drop,
    Stall,
    Error,
}

impl Faults {
    fn parse(spec: &str) -> Result<Faults, BoxError> {
        let mut faults = Faults { stall_for: std::time::Duration::from_secs(5), ..Faults::default() };
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (kind, share) = part.split_once('=').ok_or_else(|| format!("{part:?}: write KIND=SHARE"))?;
            let per_million = (share.parse::<f64>()? * 1e6).round() as u64;
            match kind {
                "drop" => faults.drop = per_million,
                "stall" => faults.stall = per_million,
                "error" => faults.error = per_million,
                other => return Err(format!("unknown fault {other:?}; use drop, stall or error").into()),
            }
        }
        Ok(faults)
    }

    /// The fault for request number `n`, from a hash of `n` (Fibonacci hashing).
    fn pick(&self, n: u64) -> Option<Fault> {
        let x = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 1_000_000;
        if x < self.drop {
            Some(Fault::Drop)
        } else if x < self.drop + self.stall {
            Some(Fault::Stall)
        } else if x < self.drop + self.stall + self.error {
            Some(Fault::Error)
        } else {
            None
        }
    }
}

struct Args {
    listen: SocketAddr,
    threads: usize,
    cert: PathBuf,
    key: PathBuf,
    faults: Faults,
    delay_ms: u64,
}

fn parse_args() -> Result<Args, BoxError> {
    let certs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/certs");
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
        threads: 1,
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        faults: Faults::default(),
        delay_ms: 0,
    };
    let mut stall_secs = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => args.threads = value()?.parse()?,
            "--cert" => args.cert = value()?.into(),
            "--key" => args.key = value()?.into(),
            "--listen" => args.listen = value()?.parse()?,
            "--faults" => args.faults = Faults::parse(&value()?)?,
            "--stall-secs" => stall_secs = Some(value()?.parse::<u64>()?),
            "--delay-ms" => args.delay_ms = value()?.parse()?,
            "-h" | "--help" => {
                return Err("usage: bench_upstream [ADDR] [--threads N] [--cert PEM --key PEM] [--faults drop=F,stall=F,error=F] [--stall-secs N] [--delay-ms N]".into());
            }
            other => args.listen = other.parse().map_err(|e| format!("{other:?} is not an address: {e}"))?,
        }
    }
    if let Some(secs) = stall_secs {
        args.faults.stall_for = std::time::Duration::from_secs(secs);
    }
    Ok(args)
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<rustls::ServerConfig>, BoxError> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/1.1 only: a client offering h2 must not be led to speak it to this server.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// 32 lower-case hex digits, like SparkRTC's request ids: a per-process prefix and a counter.
fn request_id(prefix: u64, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        *byte = HEX[((word >> (60 - 4 * (i % 16))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<Stats>,
    prefix: u64,
    faults: Faults,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.headers().contains_key(http::header::AUTHORIZATION) {
        stats.signed.fetch_add(1, Ordering::Relaxed);
    }
    if req.uri().path() == "/__bench/delay" {
        // `?ms=N`: the delay of every later answer, so one run can switch to a remote upstream.
        let ms = req.uri().query().and_then(|q| q.strip_prefix("ms=")).and_then(|v| v.parse().ok()).unwrap_or(0);
        stats.delay_ms.store(ms, Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    if req.uri().path() == "/__bench/stats" {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let text = format!(
            r#"{{"connections":{},"requests":{},"signed":{},"forwarded":{},"dropped":{},"stalled":{},"errors":{}}}"#,
            count(&stats.connections),
            n,
            count(&stats.signed),
            count(&stats.forwarded),
            count(&stats.dropped),
            count(&stats.stalled),
            count(&stats.errors),
        );
        let mut resp = Response::new(Full::new(Bytes::from(text)));
        resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(resp);
    }
    let forwarded = stats.forwarded.fetch_add(1, Ordering::Relaxed);
    // Read the body so the connection stays reusable.
    req.into_body().collect().await?;
    let delay = stats.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    match faults.pick(forwarded) {
        None => {}
        Some(Fault::Drop) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            // An error from the service makes hyper close the connection without answering.
            return Err("injected fault: connection dropped".into());
        }
        Some(Fault::Stall) => {
            stats.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(faults.stall_for).await;
        }
        Some(Fault::Error) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            *resp.body_mut() =
                Full::new(Bytes::from_static(br#"{"error_code":"RTC.00002001","error_msg":"injected"}"#));
        }
    }
    resp.headers_mut().insert("x-request-id", request_id(prefix, n));
    Ok(resp)
}

async fn serve(args: Args) -> Result<(), BoxError> {
    let acceptor = TlsAcceptor::from(tls_config(&args.cert, &args.key)?);
    let listener = TcpListener::bind(args.listen).await?;
    writeln!(std::io::stdout(), "bench_upstream listening on https://{}", listener.local_addr()?)?;
    std::io::stdout().flush()?;
    let stats = Arc::new(Stats { delay_ms: AtomicU64::new(args.delay_ms), ..Stats::default() });
    let prefix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                let _ = writeln!(std::io::stderr(), "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (acceptor, stats, http, faults) = (acceptor.clone(), stats.clone(), http.clone(), args.faults);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = service_fn(move |req| handle(req, stats.clone(), prefix, faults));
            let _ = http.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let result = parse_args().and_then(|args| {
        let runtime = if args.threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
        };
        runtime.block_on(serve(args))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "bench_upstream: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
