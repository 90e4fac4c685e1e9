//! sparkrtc-gateway: an authenticating reverse proxy for Huawei Cloud SparkRTC.
//!
//! Callers send plain SparkRTC REST calls without credentials; the gateway recognises the
//! operation ([`catalog`]), signs the call with the app's AK/SK ([`signer`]) and relays it to
//! SparkRTC over TLS (`upstream`, [`relay`]). [`gateway`] holds the request path.
//!
//! Modules are layered and import only downwards (ARCHITECTURE.md, enforced by
//! `tests/architecture.rs`); everything is `pub(crate)` but what the binary, the tests, the
//! benches and the fuzz targets use.

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod background;
pub mod body;
pub mod catalog;
pub mod cause;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod credentials;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod listener;
pub(crate) mod log_writer;
pub(crate) mod metrics;
pub(crate) mod policy;
pub mod ratelimit;
pub(crate) mod readiness;
pub mod relay;
pub(crate) mod request_id;
pub mod sandbox;
pub mod secret;
pub(crate) mod server;
pub mod signer;
mod stream;
pub(crate) mod telemetry;
pub mod tls;
pub(crate) mod trace;
pub(crate) mod upstream;
pub mod validate;

pub use cause::BoxError;
pub use config::Config;
pub use gateway::Gateway;
pub use server::{start, ReloadError, Running};

use http::{Request, Response};
use hyper::body::Incoming;

impl listener::Handler for Gateway {
    async fn call(&self, req: Request<Incoming>, peer: listener::Peer) -> Response<body::Body> {
        self.handle(req, &peer).await
    }
}
