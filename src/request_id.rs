//! Request ids: the caller's `X-Request-Id` when it sent a sensible one (so its own logs and
//! ours line up), otherwise a fresh 128-bit id. Upstream answers keep SparkRTC's own id.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderMap;

/// `X-request-Id`, SparkRTC's spelling; header names match case-insensitively.
pub(crate) const HEADER: &str = "x-request-id";

const MAX_CALLER_ID_LEN: usize = 128;

/// Unique per process without a random-number crate: a counter hashed under the process's
/// randomly keyed SipHash state, twice for 128 bits.
pub(crate) fn generate() -> String {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = STATE.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&state.hash_one(n).to_be_bytes());
    bytes[8..].copy_from_slice(&state.hash_one(!n).to_be_bytes());
    hex::encode(bytes)
}

/// The caller's id if it is short, visible ASCII; a generated one otherwise.
pub(crate) fn from_caller(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_CALLER_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(generate, str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_differ_and_are_32_hex() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn keeps_a_sane_caller_id_only() {
        let mut h = HeaderMap::new();
        h.insert("X-Request-ID", http::HeaderValue::from_static("abc-123"));
        assert_eq!(from_caller(&h), "abc-123");
        h.insert("x-request-id", http::HeaderValue::from_static("has space"));
        assert_ne!(from_caller(&h), "has space");
    }
}
