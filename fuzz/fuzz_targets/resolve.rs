//! Operation lookup on any request target: `Catalog::resolve` never panics, and a target it
//! accepts is forwarded in a form that resolves to the same route again, whose signed canonical
//! URI is the forwarded path itself.
//!
//! Input: one byte choosing the method and HTTP version, then the request target's bytes.

#![no_main]

use http::{Method, Uri, Version};
use libfuzzer_sys::fuzz_target;
use sparkrtc_gateway::catalog::Catalog;
use sparkrtc_gateway::signer::canonical_uri;

const METHODS: [Method; 8] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::HEAD,
];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, target)) = data.split_first() else { return };
    let method = &METHODS[usize::from(choice & 7)];
    let version = if choice & 8 == 0 { Version::HTTP_11 } else { Version::HTTP_2 };
    let Ok(uri) = Uri::try_from(target) else { return };
    let Ok(route) = Catalog.resolve(method, &uri, version) else { return };
    let query = route.query.to_string();
    let forwarded = if query.is_empty() { route.path.clone() } else { format!("{}?{query}", route.path) };
    let again_uri: Uri = match forwarded.parse() {
        Ok(u) => u,
        Err(e) => panic!("forwarded target {forwarded:?} does not parse: {e}"),
    };
    match Catalog.resolve(method, &again_uri, Version::HTTP_11) {
        Ok(again) => assert_eq!(again, route, "resolving {forwarded:?} changed the route"),
        Err(e) => panic!("forwarded target {forwarded:?} no longer resolves: {e}"),
    }
    assert_eq!(canonical_uri(&route.path), format!("{}/", route.path));
});
