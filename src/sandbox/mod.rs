//! The sandbox: a local SparkRTC stand-in. It verifies every request the way SparkRTC would,
//! recomputing the signature from the bytes it received, and answers like SparkRTC: 202 with
//! `X-request-Id` for a valid RemoveUsers, 400 `RTC.00001003` for bad input, 401 for a bad
//! signature. Teams develop against it without cloud access; the demo and the tests use it.

mod verify;

pub use verify::{verify, Rejection, MAX_SKEW_SECS};

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::Body;
use crate::catalog::Catalog;
use crate::cause::ErrorChain;
use crate::config::Config;
use crate::credentials::keys::KeySource;
use crate::credentials::{Auth, Profile};
use crate::signer::SdkDate;

/// The SparkRTC stand-in, as a listener handler.
#[derive(Clone)]
pub struct Sandbox {
    /// Each AK/SK profile with its live key, which follows the key files as the gateway's does.
    keys: Arc<[(Arc<Profile>, KeySource)]>,
}

impl Sandbox {
    /// Accepts the keys of every AK/SK profile in `config`, as SparkRTC accepts the account's
    /// keys, and keeps accepting them when their files change.
    pub fn new(config: &Config) -> Self {
        let keys = config.profiles.values().filter_map(|p| match &p.auth {
            Auth::Keys { key, files } => Some((p.clone(), KeySource::new(key.clone(), files.clone()))),
            Auth::Token(_) | Auth::Platform(_) => None,
        });
        Sandbox { keys: keys.collect() }
    }

    /// The current key of each profile, re-read from its files: a dev tool can afford the
    /// reads, and a rotated key is accepted from the first call signed with it.
    fn live_keys(&self) -> impl Iterator<Item = (&Arc<Profile>, crate::signer::SigningKey)> {
        self.keys.iter().map(|(profile, source)| {
            if let Err(e) = source.refresh() {
                tracing::warn!(target: "sandbox", profile = %profile.name, error = %ErrorChain(&e), "key files unusable; verifying with the previous key");
            }
            (profile, source.current().key.clone())
        })
    }

    pub(crate) async fn answer<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
    {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return reply(StatusCode::BAD_REQUEST, Some(("RTC.00001003", "InvalidParameterValue")));
        };
        let now = SdkDate::from_system_time(std::time::SystemTime::now());
        if let Err(rejection) = verify::verify_with(&parts, &body, self.live_keys(), now) {
            tracing::info!(target: "sandbox", method = %parts.method, path = %parts.uri.path(), code = rejection.code(), reason = rejection.message(), "refused");
            return reply(StatusCode::UNAUTHORIZED, Some((rejection.code(), rejection.message())));
        }
        let Ok(route) = Catalog.resolve(&parts.method, &parts.uri, parts.version) else {
            return reply(
                StatusCode::NOT_FOUND,
                Some(("APIGW.0101", "The API does not exist or has not been published in the environment")),
            );
        };
        if crate::validate::body(route.operation, &body).is_err() {
            return reply(StatusCode::BAD_REQUEST, Some(("RTC.00001003", "InvalidParameterValue")));
        }
        tracing::info!(target: "sandbox", operation = route.operation.name, app = route.app.as_deref().unwrap_or("-"), "accepted");
        match route.operation.name {
            "RemoveUsers" | "RemoveRoom" => reply(StatusCode::ACCEPTED, None),
            _ => reply(StatusCode::OK, None),
        }
    }
}

impl crate::listener::Handler for Sandbox {
    async fn call(&self, req: Request<Incoming>, _peer: crate::listener::Peer) -> Response<Body> {
        self.answer(req).await
    }
}

fn reply(status: StatusCode, error: Option<(&str, &str)>) -> Response<Body> {
    let body = match error {
        Some((code, msg)) => {
            Body::full(Bytes::from(serde_json::json!({ "error_code": code, "error_msg": msg }).to_string()))
        }
        None if status == StatusCode::ACCEPTED => Body::empty(),
        None => Body::full(Bytes::from_static(b"{}")),
    };
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    let id = crate::request_id::generate();
    if let Ok(id) = HeaderValue::from_str(&id) {
        rsp.headers_mut().insert(crate::request_id::HEADER, id);
    }
    if status != StatusCode::ACCEPTED {
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    rsp
}
