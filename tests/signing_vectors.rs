//! The signer against vectors produced by Huawei's official SDK signer (`huaweicloudsdkcore`
//! 3.1.219): the 19 shared vectors (`tests/data/signing-vectors.json`, a copy of
//! `../shared/spec/signing-vectors.json`) one test per vector and stage, and every vector of every
//! vector file in one sweep, including `tests/data/sdk-vectors-extra.json`
//! (made by `tests/data/gen-sdk-vectors.py` with the same SDK).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use std::path::{Path, PathBuf};

use serde_json::Value;
use sparkrtc_gateway::secret::Secret;
use sparkrtc_gateway::signer::{self, Algorithm, CanonicalQuery, HeaderList, SdkDate, SignInput, SigningKey};

const COMMITTED: &str = "tests/data/signing-vectors.json";
const EXTRA: &str = "tests/data/sdk-vectors-extra.json";
const SHARED: &str = "../shared/spec/signing-vectors.json";

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn load(rel: &str) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path(rel)).ok()?;
    match serde_json::from_str(&text) {
        Ok(Value::Array(v)) => Some(v),
        other => panic!("{rel} is not a JSON list of vectors: {other:?}"),
    }
}

fn committed() -> Vec<Value> {
    load(COMMITTED).unwrap_or_else(|| panic!("{COMMITTED} is missing"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// What the official signer produced, as it appears in the vector file.
struct Outcome {
    canonical_request: String,
    string_to_sign: String,
    signature: String,
    signed_headers: String,
    authorization: String,
    canonical_uri: String,
    canonical_query: String,
    request_uri: String,
    headers_after_signing: Vec<(String, String)>,
}

fn run(vector: &Value) -> Outcome {
    let input = &vector["input"];
    let url = str_of(input, "url").expect("vector input has a url");
    let rest = url.split_once("://").expect("absolute url").1;
    let (host, path_and_query) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (wire_path, raw_query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));

    let mut pairs = CanonicalQuery::parse(raw_query).pairs().to_vec();
    for p in input.get("query_params").and_then(Value::as_array).into_iter().flatten() {
        let value = match &p[1] {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        };
        pairs.push((p[0].as_str().expect("query key").to_owned(), value));
    }
    let query = CanonicalQuery::from_pairs(pairs);

    let mut headers: HeaderList = input["headers"]
        .as_object()
        .expect("headers object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_owned()))
        .collect();
    let algorithm = match str_of(input, "algorithm") {
        None | Some("SDK-HMAC-SHA256") => Algorithm::HmacSha256,
        Some("SDK-HMAC-SM3") => Algorithm::HmacSm3,
        Some("V11-HMAC-SHA256") => Algorithm::V11HmacSha256 {
            region: str_of(input, "region_id").expect("region_id").to_owned(),
            service: str_of(input, "service_name").expect("service_name").to_owned(),
        },
        Some(other) => panic!("unknown algorithm {other}"),
    };
    let key = SigningKey {
        algorithm,
        access_key: Secret::new(str_of(input, "ak").expect("ak")),
        secret_key: Secret::new(str_of(input, "sk").expect("sk")),
        security_token: str_of(input, "security_token").map(Secret::new),
    };
    let now = SdkDate::parse(str_of(input, "sdk_date").expect("sdk_date")).expect("valid sdk_date");
    let body = str_of(input, "body").unwrap_or("");
    let sign_input = SignInput {
        method: str_of(input, "method").expect("method"),
        host,
        path: wire_path,
        query: &query,
        body: body.as_bytes(),
    };
    let sig = signer::sign(&sign_input, &mut headers, &key, now).expect("signs");

    let canonical_query = query.to_string();
    let request_uri = if query.is_empty() { wire_path.to_owned() } else { format!("{wire_path}?{canonical_query}") };
    Outcome {
        canonical_uri: sig.canonical_request.uri.clone(),
        signed_headers: sig.canonical_request.signed_headers.clone(),
        canonical_request: sig.canonical_request.to_string(),
        string_to_sign: sig.string_to_sign,
        signature: sig.signature,
        authorization: sig.authorization,
        canonical_query,
        request_uri,
        headers_after_signing: headers.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect(),
    }
}

/// The SDK stores trimmed header values as Latin-1 text of their UTF-8 bytes; the vector files
/// print that text. Undo it to compare with the value that goes on the wire.
fn wire_text(recorded: &str) -> String {
    if recorded.chars().all(|c| u32::from(c) <= 0xff) {
        let bytes: Vec<u8> = recorded.chars().map(|c| u32::from(c) as u8).collect();
        if let Ok(s) = String::from_utf8(bytes) {
            return s;
        }
    }
    recorded.to_owned()
}

/// Every mismatch between our signer and the recorded output, one line each.
fn mismatches(vector: &Value) -> Vec<String> {
    let name = str_of(vector, "name").unwrap_or("?");
    let out = &vector["output"];
    let got = run(vector);
    let mut problems = Vec::new();
    let mut expect = |field: &str, ours: &str| {
        let want = str_of(out, field).unwrap_or_else(|| panic!("{name}: output.{field} missing"));
        if want != ours {
            problems.push(format!("{name}: {field}\n   sdk: {want:?}\n  ours: {ours:?}"));
        }
    };
    expect("canonical_request", &got.canonical_request);
    expect("string_to_sign", &got.string_to_sign);
    expect("signature", &got.signature);
    expect("signed_headers", &got.signed_headers);
    expect("authorization", &got.authorization);
    expect("canonical_uri", &got.canonical_uri);
    expect("canonical_query", &got.canonical_query);
    expect("request_uri", &got.request_uri);
    let mut want: Vec<(String, String)> = out["headers_after_signing"]
        .as_object()
        .expect("headers_after_signing")
        .iter()
        .map(|(k, v)| (k.clone(), wire_text(v.as_str().unwrap_or_default())))
        .collect();
    let mut ours = got.headers_after_signing;
    want.sort();
    ours.sort();
    if want != ours {
        problems.push(format!("{name}: headers_after_signing\n   sdk: {want:?}\n  ours: {ours:?}"));
    }
    problems
}

enum Stage {
    CanonicalRequest,
    StringToSign,
    Authorization,
}

fn check(stage: Stage, name: &str) {
    let vectors = committed();
    let vector = vectors
        .iter()
        .find(|v| str_of(v, "name") == Some(name))
        .unwrap_or_else(|| panic!("vector {name:?} is not in {COMMITTED}"));
    let got = run(vector);
    let (field, ours) = match stage {
        Stage::CanonicalRequest => ("canonical_request", got.canonical_request),
        Stage::StringToSign => ("string_to_sign", got.string_to_sign),
        Stage::Authorization => ("authorization", got.authorization),
    };
    assert_eq!(ours, str_of(&vector["output"], field).unwrap_or_default(), "{name}: {field}");
}

macro_rules! vector_tests {
    ($($module:ident => $name:literal,)*) => {
        /// The vectors that have tests of their own below.
        const WIRED: &[&str] = &[$($name),*];
        $(
            mod $module {
                use super::{check, Stage};
                #[test]
                fn canonical_request() { check(Stage::CanonicalRequest, $name) }
                #[test]
                fn string_to_sign() { check(Stage::StringToSign, $name) }
                #[test]
                fn authorization() { check(Stage::Authorization, $name) }
            }
        )*
    };
}

vector_tests! {
    remove_users_basic => "remove_users_basic",
    remove_users_like_python_sdk => "remove_users_like_python_sdk (User-Agent is signed too)",
    list_apps_query_sorted => "list_apps_query_sorted",
    query_repeated_empty_flag_plus => "query_repeated_empty_flag_plus",
    query_sort_on_decoded_not_encoded => "query_sort_on_decoded_not_encoded",
    query_params_tuples_bool_and_int => "query_params_tuples_bool_and_int",
    path_special_chars_and_encoded_slash => "path_special_chars_and_encoded_slash",
    path_trailing_slash_and_root => "path_trailing_slash_and_root",
    path_root => "path_root",
    path_lowercase_hex_and_invalid_utf8 => "path_lowercase_hex_and_invalid_utf8",
    header_trim_case_underscore_nonascii => "header_trim_case_underscore_nonascii",
    quirk_content_type_leading_space_triggers_unsigned => "quirk_content_type_leading_space_triggers_unsigned",
    quirk_lowercase_content_type_key_no_auto_unsigned => "quirk_lowercase_content_type_key_no_auto_unsigned",
    non_json_content_type_auto_unsigned_payload => "non_json_content_type_auto_unsigned_payload",
    explicit_unsigned_payload_with_json => "explicit_unsigned_payload_with_json",
    security_token_temporary_aksk => "security_token_temporary_aksk",
    http_host_with_port => "http_host_with_port",
    derived_v11_hmac_sha256 => "derived_v11_hmac_sha256",
    sm3 => "sm3",
}

#[test]
fn every_committed_vector_has_its_own_tests() {
    let missing: Vec<String> = committed()
        .iter()
        .filter_map(|v| str_of(v, "name"))
        .filter(|name| !WIRED.contains(name))
        .map(str::to_owned)
        .collect();
    assert!(missing.is_empty(), "vectors without per-stage tests (add them to vector_tests!): {missing:?}");
    assert_eq!(committed().len(), WIRED.len(), "vector_tests! names a vector that is not in {COMMITTED}");
}

#[test]
fn committed_copy_holds_every_shared_vector() {
    // CI lays ../shared beside the clone; a developer checkout has it too. When it is there, a
    // vector added to it must also be added here, or this fails.
    let Some(shared) = load(SHARED) else { return };
    let ours = committed();
    let missing: Vec<&str> = shared.iter().filter(|v| !ours.contains(v)).filter_map(|v| str_of(v, "name")).collect();
    assert!(missing.is_empty(), "copy {SHARED} to {COMMITTED}; missing or changed: {missing:?}");
}

#[test]
fn every_vector_in_every_file_matches_the_sdk() {
    let mut sources = vec![(COMMITTED, committed())];
    sources.extend(load(SHARED).map(|v| (SHARED, v)));
    sources.extend(load(EXTRA).map(|v| (EXTRA, v)));
    let mut problems = Vec::new();
    let mut count = 0;
    for (file, vectors) in &sources {
        for v in vectors {
            count += 1;
            problems.extend(mismatches(v).into_iter().map(|p| format!("[{file}] {p}")));
        }
    }
    assert!(count >= 19, "only {count} vectors found");
    assert!(problems.is_empty(), "{} mismatches in {count} vectors:\n{}", problems.len(), problems.join("\n"));
}
