//! AK/SK request signing (`SDK-HMAC-SHA256`, plus `SDK-HMAC-SM3` and the derived
//! `V11-HMAC-SHA256`) exactly as Huawei's official SDK core computes it.
//!
//! A pure function: the time is passed in, nothing is read from the clock or the environment.
//! The gateway's request path calls it in the "authorize" phase, after the body is final, so the
//! bytes hashed are the bytes forwarded.
//!
//! ```text
//! StringToSign  = Algorithm "\n" X-Sdk-Date "\n" hex(hash(CanonicalRequest))
//! Signature     = hex(HMAC(SK, StringToSign))
//! Authorization = Algorithm " Access=" AK ", SignedHeaders=" SignedHeaders ", Signature=" Signature
//! ```

mod canonical;
mod date;
pub mod encoding;

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sm3::Sm3;

pub use canonical::{canonical_uri, py_strip, CanonicalQuery, CanonicalRequest, HeaderList, UnsendableHeader};
pub use date::{parse_rfc3339, SdkDate};

use crate::secret::Secret;
use encoding::hex_lower;

pub(crate) const HEADER_DATE: &str = "X-Sdk-Date";
pub(crate) const HEADER_SECURITY_TOKEN: &str = "X-Security-Token";
pub(crate) const HEADER_AUTHORIZATION: &str = "Authorization";
pub(crate) const HEADER_HOST: &str = "Host";
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Huawei's documented limit for AK/SK-signed bodies.
pub(crate) const MAX_SIGNED_BODY_BYTES: u64 = 12 * 1024 * 1024;

/// The signing algorithm of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSm3,
    /// `V11-HMAC-SHA256`: HMAC-SHA256 under a key derived per day, region and service.
    V11HmacSha256 {
        region: String,
        service: String,
    },
}

impl Algorithm {
    /// The algorithm's name, as it opens `Authorization`.
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "SDK-HMAC-SHA256",
            Algorithm::HmacSm3 => "SDK-HMAC-SM3",
            Algorithm::V11HmacSha256 { .. } => "V11-HMAC-SHA256",
        }
    }

    /// The header that, when present, replaces the payload hash.
    fn content_header(&self) -> &'static str {
        match self {
            Algorithm::HmacSm3 => "X-Sdk-Content-Sm3",
            Algorithm::HmacSha256 | Algorithm::V11HmacSha256 { .. } => "X-Sdk-Content-Sha256",
        }
    }

    fn hash_hex(&self, data: &[u8]) -> String {
        match self {
            Algorithm::HmacSm3 => hex_lower(&Sm3::digest(data)),
            Algorithm::HmacSha256 | Algorithm::V11HmacSha256 { .. } => hex_lower(&Sha256::digest(data)),
        }
    }

    fn hmac_hex(&self, key: &[u8], data: &[u8]) -> String {
        match self {
            Algorithm::HmacSm3 => hmac_hex::<Hmac<Sm3>>(key, data),
            Algorithm::HmacSha256 | Algorithm::V11HmacSha256 { .. } => hmac_hex::<Hmac<Sha256>>(key, data),
        }
    }
}

fn hmac_hex<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail; an empty MAC would only
    // produce a signature the server refuses.
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            hex_lower(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Who signs: AK, SK, and the security token of temporary keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub algorithm: Algorithm,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub security_token: Option<Secret>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm.name())
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key)
            .field("temporary", &self.security_token.is_some())
            .finish()
    }
}

/// What the signature covers besides the headers.
#[derive(Clone, Copy, Debug)]
pub struct SignInput<'a> {
    pub method: &'a str,
    /// The upstream authority (`host` or `host:port`), signed as `Host` unless a header sets it.
    pub host: &'a str,
    /// The path exactly as it goes on the wire, still percent-encoded.
    pub path: &'a str,
    pub query: &'a CanonicalQuery,
    pub body: &'a [u8],
}

/// Every stage of a signature, so tests can pin each one and the sandbox can explain a mismatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: CanonicalRequest,
    pub string_to_sign: String,
    pub signature: String,
    pub authorization: String,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// An `X-Sdk-Date` header was already present and is not `YYYYMMDDTHHMMSSZ`.
    InvalidDate,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::InvalidDate => f.write_str("X-Sdk-Date is not in the form YYYYMMDDTHHMMSSZ"),
        }
    }
}

impl std::error::Error for SignError {}

/// Signs a request the way the official SDK's `Signer.sign` does, adding to `headers` what the
/// SDK adds (`X-Sdk-Content-Sha256` for non-JSON bodies, `X-Sdk-Date`, `Host`,
/// `X-Security-Token`, `Authorization`) and trimming every value as the SDK does on the wire.
pub fn sign(
    input: &SignInput<'_>,
    headers: &mut HeaderList,
    key: &SigningKey,
    now: SdkDate,
) -> Result<Signature, SignError> {
    let algorithm = &key.algorithm;
    if let Some(token) = &key.security_token {
        headers.set(HEADER_SECURITY_TOKEN, token.expose());
    }
    mark_unsigned_payload(headers, algorithm);
    let date = match headers.ignore_case(HEADER_DATE) {
        Some(given) => SdkDate::parse(given).ok_or(SignError::InvalidDate)?,
        None => {
            headers.set(HEADER_DATE, now.to_string());
            now
        }
    };
    if headers.ignore_case(HEADER_HOST).is_none() {
        headers.set(HEADER_HOST, input.host);
    }

    let (canonical_headers, signed_headers) = canonical::canonical_headers(headers);
    for (_, value) in headers.entries_mut() {
        let trimmed = py_strip(value);
        if trimmed.len() != value.len() {
            *value = trimmed.to_owned();
        }
    }
    let canonical_request = CanonicalRequest {
        method: input.method.to_ascii_uppercase(),
        uri: canonical_uri(input.path),
        query: input.query.to_string(),
        headers: canonical_headers,
        payload_hash: payload_hash(input.body, headers, algorithm),
        signed_headers,
    };

    let request_hash = algorithm.hash_hex(canonical_request.text().as_bytes());
    let (string_to_sign, signature, credential) = match algorithm {
        Algorithm::V11HmacSha256 { region, service } => {
            // info = YYYYMMDD/<region>/<service>; key = hex(HKDF-SHA256(salt=AK, ikm=SK, info)).
            let info = format!("{}/{region}/{service}", date.day());
            let derived = derive_v11_key(key, &info);
            let sts = format!("{}\n{date}\n{info}\n{request_hash}", algorithm.name());
            let sig = algorithm.hmac_hex(derived.expose().as_bytes(), sts.as_bytes());
            (sts, sig, format!("Credential={}/{info}", key.access_key.expose()))
        }
        Algorithm::HmacSha256 | Algorithm::HmacSm3 => {
            let sts = format!("{}\n{date}\n{request_hash}", algorithm.name());
            let sig = algorithm.hmac_hex(key.secret_key.expose().as_bytes(), sts.as_bytes());
            (sts, sig, format!("Access={}", key.access_key.expose()))
        }
    };
    let authorization = format!(
        "{} {credential}, SignedHeaders={}, Signature={signature}",
        algorithm.name(),
        canonical_request.signed_headers
    );
    headers.set(HEADER_AUTHORIZATION, authorization.as_str());
    Ok(Signature { canonical_request, string_to_sign, signature, authorization })
}

/// The SDK sends non-JSON bodies unsigned. It looks up `Content-Type` with exactly that case and
/// tests the raw value, so `" application/json"` (leading space) counts as non-JSON while a
/// `content-type` key is not seen at all; both quirks have vectors.
fn mark_unsigned_payload(headers: &mut HeaderList, algorithm: &Algorithm) {
    let non_json = headers
        .exact("Content-Type")
        .is_some_and(|ct| !ct.is_empty() && !ct.starts_with("application/json") && !ct.starts_with("application/bson"));
    if non_json {
        headers.set(algorithm.content_header(), UNSIGNED_PAYLOAD);
    }
}

fn payload_hash(body: &[u8], headers: &HeaderList, algorithm: &Algorithm) -> String {
    if body.is_empty() {
        return algorithm.hash_hex(b"");
    }
    match headers.ignore_case(algorithm.content_header()) {
        // The SDK re-stores trimmed values as Latin-1 text of their UTF-8 bytes before it reads
        // this one back, so a non-ASCII value is UTF-8 encoded twice in the canonical request.
        Some(value) if !value.is_empty() => value.bytes().map(char::from).collect(),
        _ => algorithm.hash_hex(body),
    }
}

/// HKDF-SHA256 (RFC 5869): extract with salt = AK and input key material = SK, expand to one
/// 32-byte block for `info`; the derived key is that block as lower-case hex.
fn derive_v11_key(key: &SigningKey, info: &str) -> Secret {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(key.access_key.expose().as_bytes()), key.secret_key.expose().as_bytes());
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    // 32 bytes is one SHA-256 block, far below HKDF's limit of 255 blocks: expand cannot fail.
    // An all-zero key would only produce signatures the server refuses.
    let _ = hkdf.expand(info.as_bytes(), okm.as_mut());
    Secret::new(hex_lower(okm.as_ref()))
}
