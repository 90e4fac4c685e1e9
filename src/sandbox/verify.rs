//! Signature verification as SparkRTC's API gateway does it: from the bytes on the wire, with
//! the secret key looked up by the access key in `Authorization`.

use std::sync::Arc;

use http::header;
use http::request::Parts;

use crate::credentials::Profile;
use crate::secret::constant_time_eq;
use crate::signer::{self, Algorithm, CanonicalQuery, HeaderList, SdkDate, SignInput, SigningKey};

/// Huawei refuses signatures dated more than 15 minutes from its own clock.
pub const MAX_SKEW_SECS: u64 = 15 * 60;

/// Why a request failed authentication, with the code Huawei's API gateway answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    MissingAuthorization,
    MalformedAuthorization,
    UnknownAccessKey,
    BadDate,
    ClockSkew,
    SignatureMismatch,
    ProjectMismatch,
    SecurityTokenMismatch,
}

impl Rejection {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Rejection::ClockSkew => "APIGW.0303",
            _ => "APIGW.0301",
        }
    }

    pub(crate) fn message(&self) -> &'static str {
        match self {
            Rejection::MissingAuthorization => "Incorrect IAM authentication information: Authorization header missing",
            Rejection::MalformedAuthorization => {
                "Incorrect IAM authentication information: Authorization header malformed"
            }
            Rejection::UnknownAccessKey => "Incorrect IAM authentication information: unknown access key",
            Rejection::BadDate => "Incorrect IAM authentication information: X-Sdk-Date missing or malformed",
            Rejection::ClockSkew => {
                "Incorrect app authentication information: request time is more than 15 minutes off"
            }
            Rejection::SignatureMismatch => "Incorrect IAM authentication information: verify aksk signature fail",
            Rejection::ProjectMismatch => {
                "Incorrect IAM authentication information: X-Project-Id missing, unsigned or not the key's project"
            }
            Rejection::SecurityTokenMismatch => {
                "Incorrect IAM authentication information: security token missing or wrong"
            }
        }
    }
}

struct Authorization<'a> {
    algorithm: Algorithm,
    access_key: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let (scheme, rest) = value.split_once(' ')?;
    let mut fields = rest.split(", ");
    let credential = fields.next()?;
    let signed_headers = fields.next()?.strip_prefix("SignedHeaders=")?;
    let signature = fields.next()?.strip_prefix("Signature=")?;
    let (algorithm, access_key) = match scheme {
        "SDK-HMAC-SHA256" => (Algorithm::HmacSha256, credential.strip_prefix("Access=")?),
        "SDK-HMAC-SM3" => (Algorithm::HmacSm3, credential.strip_prefix("Access=")?),
        "V11-HMAC-SHA256" => {
            let mut scope = credential.strip_prefix("Credential=")?.split('/');
            let (ak, _day, region, service) = (scope.next()?, scope.next()?, scope.next()?, scope.next()?);
            (Algorithm::V11HmacSha256 { region: region.to_owned(), service: service.to_owned() }, ak)
        }
        _ => return None,
    };
    Some(Authorization { algorithm, access_key, signed_headers, signature })
}

/// Checks an AK/SK signature against the keys the profiles were loaded with; on success
/// returns the profile whose key signed.
pub fn verify<'p>(
    parts: &Parts,
    body: &[u8],
    profiles: &'p [Arc<Profile>],
    now: SdkDate,
) -> Result<&'p Arc<Profile>, Rejection> {
    let keys = profiles.iter().filter_map(|p| Some((p, p.signing_key()?.clone())));
    verify_with(parts, body, keys, now)
}

/// Checks an AK/SK signature against the keys given with each profile (the sandbox gives the
/// live ones, which follow their files).
pub(super) fn verify_with<'p>(
    parts: &Parts,
    body: &[u8],
    keys: impl IntoIterator<Item = (&'p Arc<Profile>, SigningKey)>,
    now: SdkDate,
) -> Result<&'p Arc<Profile>, Rejection> {
    let auth = parts.headers.get(header::AUTHORIZATION).ok_or(Rejection::MissingAuthorization)?;
    let auth = auth.to_str().ok().and_then(parse_authorization).ok_or(Rejection::MalformedAuthorization)?;
    let (profile, known) =
        keys.into_iter().find(|(_, k)| k.access_key.expose() == auth.access_key).ok_or(Rejection::UnknownAccessKey)?;
    let date = parts
        .headers
        .get(signer::HEADER_DATE)
        .and_then(|v| SdkDate::parse(v.to_str().ok()?))
        .ok_or(Rejection::BadDate)?;
    if date.unix().abs_diff(now.unix()) > MAX_SKEW_SECS {
        return Err(Rejection::ClockSkew);
    }

    // Rebuild exactly the headers the client says it signed, with the values as received.
    let mut headers = HeaderList::new();
    for name in auth.signed_headers.split(';') {
        let value = match parts.headers.get(name) {
            Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            None if name == "host" => {
                parts.uri.authority().map(|a| a.to_string()).ok_or(Rejection::SignatureMismatch)?
            }
            None => return Err(Rejection::SignatureMismatch),
        };
        headers.set(name, value);
    }
    let key = SigningKey {
        algorithm: auth.algorithm,
        access_key: known.access_key.clone(),
        secret_key: known.secret_key.clone(),
        security_token: None,
    };
    let query = CanonicalQuery::parse(parts.uri.query().unwrap_or(""));
    let input = SignInput { method: parts.method.as_str(), host: "", path: parts.uri.path(), query: &query, body };
    let expected = signer::sign(&input, &mut headers, &key, date).map_err(|_| Rejection::BadDate)?;
    if !constant_time_eq(expected.signature.as_bytes(), auth.signature.as_bytes()) {
        return Err(Rejection::SignatureMismatch);
    }
    if headers.exact("x-project-id") != Some(profile.project_id.as_str()) {
        return Err(Rejection::ProjectMismatch);
    }
    if let Some(token) = &known.security_token {
        if headers.exact("x-security-token") != Some(token.expose()) {
            return Err(Rejection::SecurityTokenMismatch);
        }
    }
    Ok(profile)
}
