//! sparkrtc-gateway: an authenticating reverse proxy for Huawei Cloud SparkRTC.
//!
//! Callers send plain SparkRTC REST calls without credentials; the gateway recognises the
//! operation ([`catalog`]), signs the call with the app's AK/SK ([`signer`]) and relays it to
//! SparkRTC over TLS ([`upstream`], [`relay`]). [`gateway`] holds the request path.

pub mod body;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod listener;
pub mod metrics;
pub mod relay;
pub mod request_id;
pub mod sandbox;
pub mod secret;
pub mod signer;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::BoxError;
pub use gateway::Gateway;

impl listener::Handler for Gateway {
    async fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<body::Body> {
        self.handle(req, &gateway::Peer::tcp(peer)).await
    }
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then drains.
pub async fn run(gateway: Gateway, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    listener::serve(listener, None, gateway, shutdown, listener::DEFAULT_GRACE).await;
}

/// A gateway serving in the background, as tests and the demo start it.
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets calls in flight finish, and waits for that.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds `config.listen` (port 0 picks a free port) and serves in the background.
pub async fn spawn(gateway: Gateway, listen: SocketAddr) -> std::io::Result<Running> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run(gateway, listener, async {
        let _ = stopped.await;
    }));
    Ok(Running { addr, stop, task })
}
pub mod cli;
pub mod demo;
pub mod policy;
pub mod ratelimit;
