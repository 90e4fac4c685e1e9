//! `sparkrtc-gateway demo`: the gateway's main job on an embedded default. It starts the sandbox
//! and the gateway on loopback with the bundled `config/demo.toml`, sends the seed page's example
//! (remove `user001` and `user002` from a room) without any credentials, prints what came back,
//! and keeps serving so a person can try `curl`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::{err, out, EXIT_RUNTIME};
use crate::config::Config;
use crate::sandbox::Sandbox;
use crate::{listener, telemetry, Gateway};

pub(crate) const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
pub(crate) const EXAMPLE_PATH: &str = "/v2/apps/demo-app/rooms/room-1/batch-remove-users";
pub(crate) const EXAMPLE_BODY: &str = r#"{"user_ids": ["user001", "user002"]}"#;

/// `demo`: starts a sandbox and a gateway in front of it, sends one RemoveUsers call and prints what came back.
pub async fn run(listen: Option<SocketAddr>) -> ExitCode {
    let mut config = match Config::parse(DEMO_CONFIG, "config/demo.toml (embedded)", Path::new("."), &|_| None) {
        Ok(c) => c,
        Err(e) => return crate::cli::report(&e),
    };
    let _log = telemetry::init(&config.log);
    match start(&mut config, listen).await {
        Ok(gateway_addr) => {
            out(&format!("\nThe gateway is serving on http://{gateway_addr}; try it (Ctrl-C stops):\n"));
            out(&format!(
                "  curl -i -X POST http://{gateway_addr}{EXAMPLE_PATH} \\\n       -H 'Content-Type: application/json' -d '{{\"user_ids\":[\"user001\"]}}'\n"
            ));
            crate::cli::stop_signal().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            err(&format!("demo failed: {}", crate::cause::ErrorChain(&*e)));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Starts both servers in the background and sends the example call; returns the gateway address.
async fn start(config: &mut Config, listen: Option<SocketAddr>) -> Result<SocketAddr, crate::BoxError> {
    let sandbox_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sandbox_addr = sandbox_listener.local_addr()?;
    let sandbox = Sandbox::new(config);
    tokio::spawn(listener::serve(
        sandbox_listener,
        None,
        sandbox,
        std::future::pending(),
        crate::config::DEFAULT_GRACE_PERIOD,
    ));
    config.upstream.authority = sandbox_addr.to_string().parse()?;
    out(&format!("sandbox: SparkRTC stand-in on http://{sandbox_addr}, verifying every signature"));

    let gateway = Gateway::new(config.clone())?;
    let running = crate::server::start(gateway, listen)
        .await
        .map_err(|e| format!("{e}; pass --listen 127.0.0.1:0 for any free port"))?;
    let gateway_addr = running.addr;
    out(&format!("gateway: http://{gateway_addr} -> sandbox, signing with profile \"demo\" (SDK-HMAC-SHA256)"));
    if let Some(admin) = running.admin_addr {
        out(&format!("admin:   http://{admin}/metrics, /readyz, /healthz"));
    }
    out("");
    // The demo serves until the process ends.
    std::mem::forget(running);

    out(&format!("POST {EXAMPLE_PATH}\n{EXAMPLE_BODY}   (no credentials sent)\n"));
    let rsp = send_example(gateway_addr).await?;
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await?.to_bytes();
    out(&format!("<- {} {}", parts.status.as_u16(), parts.status.canonical_reason().unwrap_or("")));
    for name in [crate::request_id::HEADER, crate::relay::HEADER_GATEWAY_REQUEST_ID] {
        if let Some(v) = parts.headers.get(name) {
            out(&format!("<- {name}: {}", v.to_str().unwrap_or("?")));
        }
    }
    if !body.is_empty() {
        out(&format!("<- {}", String::from_utf8_lossy(&body)));
    }
    Ok(gateway_addr)
}

async fn send_example(gateway: SocketAddr) -> Result<Response<hyper::body::Incoming>, crate::BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::post(format!("http://{gateway}{EXAMPLE_PATH}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(EXAMPLE_BODY.as_bytes())))?;
    Ok(client.request(req).await?)
}
