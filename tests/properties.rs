//! Properties of the parsers a caller or an operator can reach, checked on generated input in
//! every `cargo test`: path and query canonicalisation, operation lookup, header hygiene, body
//! validation and config parsing. None may panic; canonical forms must be fixed points, because
//! the gateway signs one spelling and forwards another only if they agree.
//!
//! The seed is fixed and failures are not persisted to files, so CI runs the same 256 cases each
//! time; `PROPTEST_CASES=100000 cargo test --test properties` tries more locally. The
//! coverage-guided counterparts of these properties are the targets under `fuzz/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use sparkrtc_gateway::catalog::{AppFrom, Catalog, Route};
use sparkrtc_gateway::config::Config;
use sparkrtc_gateway::signer::encoding::encode;
use sparkrtc_gateway::signer::{canonical_uri, CanonicalQuery};
use sparkrtc_gateway::{relay, validate};

fn config() -> ProptestConfig {
    // `ProptestConfig::default()` reads PROPTEST_CASES and PROPTEST_RNG_SEED; without them CI
    // gets 256 cases from one fixed seed.
    let given = |name| std::env::var_os(name).is_some();
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if given("PROPTEST_CASES") { base.cases } else { 256 },
        rng_seed: if given("PROPTEST_RNG_SEED") { base.rng_seed } else { RngSeed::Fixed(0x5eed_0015) },
        failure_persistence: None,
        ..base
    }
}

const METHODS: [Method; 7] =
    [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS, Method::CONNECT];

/// Every literal segment of every operation template (`v2`, `apps`, `rooms`, ...).
fn literals() -> Vec<String> {
    let mut all: Vec<String> = Catalog
        .operations()
        .iter()
        .flat_map(|op| op.template.split('/'))
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .map(str::to_owned)
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Path segments mixing template literals with the spellings that try to escape a template.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(literals()),
        2 => proptest::sample::select(vec![
            "", ".", "..", "%2e", "%2E%2e", "%2F", "%2f..%2F", "%5C", "\\", "%", "%4", "%zz", "%FF", "%C3%A9",
            "%c3%a9", "%00", "%0A", "%7F", "app-123", "%61pp-123", "a+b", "~", ";x=1", "*",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Z0-9._~%+-]{0,12}",
        1 => any::<String>().prop_map(|s| encode(&s)),
        1 => any::<String>(),
    ]
}

fn query_part() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "", "app", "app_id", "limit", "10", "a", "b", "%26", "%3D", "+", "%2B", "%", "%zz", "%FF", "=", "&",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9._~%+=&-]{0,10}",
        any::<String>().prop_map(|s| encode(&s)),
    ]
}

/// A request target: a path of generated segments, sometimes doubled or trailing slashes, and a
/// query of generated `key=value` pairs.
fn target() -> impl Strategy<Value = String> {
    let random = proptest::collection::vec(segment(), 0..8).prop_map(|s| format!("/{}", s.join("/")));
    // An operation's template with each `{name}` filled by a generated segment, so that many
    // targets get past the lookup and exercise the rebuilt path and the query.
    let templated = (0..Catalog.operations().len(), proptest::collection::vec(segment(), 5), any::<bool>()).prop_map(
        |(index, fill, doubled)| {
            let mut fill = fill.into_iter();
            let sep = if doubled { "//" } else { "/" };
            let mut path = String::new();
            for part in Catalog.operations()[index].template.split('/').skip(1) {
                path.push_str(sep);
                if part.starts_with('{') {
                    path.push_str(&fill.next().unwrap_or_default());
                } else {
                    path.push_str(part);
                }
            }
            path
        },
    );
    let path = prop_oneof![random, templated];
    let pair =
        (query_part(), any::<bool>(), query_part()).prop_map(|(k, eq, v)| if eq { format!("{k}={v}") } else { k });
    let query = proptest::collection::vec(pair, 0..5).prop_map(|p| p.join("&"));
    (path, proptest::option::of(query)).prop_map(|(p, q)| match q {
        Some(q) => format!("{p}?{q}"),
        None => p,
    })
}

/// The target the gateway forwards for a route: its rebuilt path and canonical query.
fn forwarded(route: &Route) -> String {
    let query = route.query.to_string();
    if query.is_empty() {
        route.path.clone()
    } else {
        format!("{}?{query}", route.path)
    }
}

fn check_route_is_canonical(method: &Method, route: &Route) -> Result<(), TestCaseError> {
    let target = forwarded(route);
    let uri: Uri = target.parse().map_err(|e| TestCaseError::fail(format!("{target:?} does not parse: {e}")))?;
    let again = Catalog
        .resolve(method, &uri, Version::HTTP_11)
        .map_err(|e| TestCaseError::fail(format!("forwarded {target:?} no longer resolves: {e}")))?;
    prop_assert_eq!(&again, route, "resolving the forwarded target changed the route");
    prop_assert_eq!(again.query.to_string(), route.query.to_string());
    // What is signed is what is forwarded: the signer's canonical URI of the forwarded path is
    // that path with the trailing slash the SDK adds, so SparkRTC decodes the same segments.
    prop_assert_eq!(canonical_uri(&route.path), format!("{}/", route.path));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the target, resolve answers; what it accepts it forwards in a form that resolves
    /// to the same route again.
    #[test]
    fn resolve_never_panics_and_forwarded_targets_are_fixed_points(
        target in target(),
        method in proptest::sample::select(METHODS.to_vec()),
        h2 in any::<bool>(),
    ) {
        let Ok(uri) = target.parse::<Uri>() else { return Ok(()) };
        let version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        if let Ok(route) = Catalog.resolve(&method, &uri, version) {
            prop_assert_eq!(&route.operation.method, &method);
            check_route_is_canonical(&method, &route)?;
        }
    }

    /// Raw bytes as a request target (what an HTTP/1 request line can carry).
    #[test]
    fn resolve_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(uri) = Uri::try_from(bytes.as_slice()) {
            for method in &METHODS {
                if let Ok(route) = Catalog.resolve(method, &uri, Version::HTTP_11) {
                    check_route_is_canonical(method, &route)?;
                }
            }
        }
    }

    /// The signer's canonical URI and query are fixed points on any text.
    #[test]
    fn signer_canonical_forms_are_fixed_points(text in any::<String>(), target in target()) {
        for s in [text.as_str(), target.as_str()] {
            let uri = canonical_uri(s);
            prop_assert_eq!(canonical_uri(&uri), uri.clone(), "canonical_uri({:?})", s);
            let query = CanonicalQuery::parse(s);
            let again = CanonicalQuery::parse(&query.to_string());
            prop_assert_eq!(again.to_string(), query.to_string(), "query of {:?}", s);
            prop_assert_eq!(again.pairs(), query.pairs());
        }
    }

    /// A path built from an operation's template with any values resolves to that operation and
    /// those values, however the caller spells the escapes.
    #[test]
    fn template_paths_resolve_back_to_their_operation_and_values(
        index in 0..Catalog.operations().len(),
        values in proptest::collection::vec(value(), 5),
        lower_hex in any::<bool>(),
        extra_slashes in any::<bool>(),
    ) {
        let op = &Catalog.operations()[index];
        let mut target = String::new();
        let mut expected = Vec::new();
        let mut canonical = String::new();
        let mut next = values.iter();
        for part in op.template.split('/').skip(1) {
            target.push_str(if extra_slashes { "//" } else { "/" });
            canonical.push('/');
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    let value = next.next().unwrap();
                    let encoded = encode(value);
                    target.push_str(&if lower_hex { lower_escapes(&encoded) } else { encoded.clone() });
                    canonical.push_str(&encoded);
                    expected.push((name, value.clone()));
                }
                None => {
                    target.push_str(part);
                    canonical.push_str(part);
                }
            }
        }
        if extra_slashes {
            target.push('/');
        }
        let uri: Uri = target.parse().unwrap();
        let route = Catalog.resolve(&op.method, &uri, Version::HTTP_11)
            .map_err(|e| TestCaseError::fail(format!("{target:?}: {e}")))?;
        prop_assert_eq!(route.operation.name, op.name);
        prop_assert_eq!(&route.params, &expected);
        prop_assert_eq!(&route.path, &canonical);
        if op.app == AppFrom::Path {
            prop_assert_eq!(route.app.as_deref(), route.param("app_id"));
        }
        check_route_is_canonical(&op.method, &route)?;
    }

    /// Only `Content-Type` leaves `base_headers`, whatever credentials or hop-by-hop headers the
    /// caller sent and however it spelled their names.
    #[test]
    fn base_headers_pass_only_content_type(
        index in 0..Catalog.operations().len(),
        sent in proptest::collection::vec((caller_header_name(), "[ -~]{0,24}"), 0..12),
        content_type in proptest::option::of("[ -~\t]{0,40}"),
    ) {
        let op = &Catalog.operations()[index];
        let mut caller = HeaderMap::new();
        for (name, value) in &sent {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
                continue;
            };
            caller.append(name, value);
        }
        if let Some(ct) = &content_type {
            if let Ok(v) = HeaderValue::from_str(ct) {
                caller.insert(http::header::CONTENT_TYPE, v);
            }
        }
        if let Ok(headers) = relay::base_headers(&caller, op) {
            let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
            prop_assert_eq!(names, vec!["Content-Type"]);
            let value = headers.exact("Content-Type").unwrap();
            for (_, sent_value) in sent.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("content-type")) {
                prop_assert!(
                    sent_value.len() < 8 || !value.contains(sent_value.as_str()),
                    "another header's value {:?} reached Content-Type {:?}", sent_value, value
                );
            }
        }
    }

    /// Any bytes as a body, for every operation: an answer, never a panic; what is accepted is
    /// an object holding every field the SDK's model requires, and for RemoveUsers names at
    /// least one user.
    #[test]
    fn body_validation_never_panics(index in 0..Catalog.operations().len(), body in body()) {
        let op = &Catalog.operations()[index];
        match validate::body(op, &body) {
            Ok(Some(json)) => {
                prop_assert!(op.has_body);
                let model = Catalog.body_schema(op.name).unwrap();
                for field in model.fields.iter().filter(|f| f.required) {
                    prop_assert!(json.get(field.key).is_some_and(|v| !v.is_null()), "{} accepted without {}", op.name, field.key);
                }
                if op.name == "RemoveUsers" {
                    let ids = json["user_ids"].as_array().unwrap();
                    prop_assert!(!ids.is_empty() && ids.iter().all(|i| i.as_str().is_some_and(|s| !s.is_empty())));
                }
            }
            Ok(None) => prop_assert!(!op.has_body && body.is_empty()),
            Err(e) => prop_assert!(!e.caller_message().is_empty()),
        }
    }

    /// Arbitrary text as a config file: an error or a config, never a panic.
    #[test]
    fn config_parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse(&text);
    }

    /// A valid config mutated line by line: whatever the error, no inline secret is in its text.
    #[test]
    fn config_errors_never_show_inline_secrets(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let mut lines: Vec<String> = BASE_CONFIG.lines().map(str::to_owned).collect();
        for m in &mutations {
            m.apply(&mut lines);
        }
        let text = lines.join("\n");
        if let Err(e) = parse(&text) {
            let shown = format!("{e}\n{e:?}");
            for secret in SECRETS {
                prop_assert!(!shown.contains(secret), "{} leaked in {:?} for\n{}", secret, shown, text);
            }
        }
    }
}

/// A path value: any text without control characters or separators, that is not `.`, `..` or
/// a literal segment of some template (which would make another operation's path).
fn value() -> impl Strategy<Value = String> {
    let literals = literals();
    "[^\\x00-\\x1f\\x7f-\\x9f/\\\\]{1,16}"
        .prop_filter("a dot segment or a template literal", move |v| v != "." && v != ".." && !literals.contains(v))
}

fn lower_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Header names a caller may send: credentials and hop-by-hop names in mixed case, and others.
fn caller_header_name() -> impl Strategy<Value = String> {
    let known = proptest::sample::select(vec![
        "Authorization",
        "X-Auth-Token",
        "X-Sdk-Date",
        "X-Security-Token",
        "X-Sdk-Content-Sha256",
        "X-Sdk-Content-Sm3",
        "X-Project-Id",
        "Host",
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "X-Gateway-Key",
        "X-Request-Id",
        "Cookie",
    ]);
    prop_oneof![
        3 => (known, any::<u64>()).prop_map(|(name, bits)| mixed_case(name, bits)),
        1 => "[a-zA-Z0-9-]{1,16}",
    ]
}

fn mixed_case(name: &str, bits: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| if bits >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

/// Bodies: raw bytes, near-JSON, and nesting bombs.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::sample::select(vec![
            r#"{"user_ids":["u1"]}"#,
            r#"{"user_ids":["u1"],"user_ids":[]}"#,
            r#"{"user_ids":[""]}"#,
            r#"{"user_ids":"u1"}"#,
            "[]",
            "{}",
            "null",
            r#"{"user_ids":[1e999]}"#,
            r#"{"user_ids":["\ud800"]}"#,
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        (1usize..100_000, any::<bool>()).prop_map(|(depth, arrays)| {
            let (open, close) = if arrays { ("[", "]") } else { (r#"{"a":"#, "}") };
            format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
        }),
    ]
}

fn parse(text: &str) -> Result<Config, sparkrtc_gateway::config::ConfigError> {
    Config::parse(text, "fuzz.toml", Path::new("."), &|name| (name == "TEST_SK").then(|| "env-secret".to_owned()))
}

const SECRETS: [&str; 4] =
    ["INLINE-SECRET-KEY-abc123xyz", "INLINE-ACCESS-KEY-qrs789", "INLINE-STS-TOKEN-lmn456", "INLINE-PASSWORD-uvw321"];

/// A config that parses, with every secret inline.
const BASE_CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"
max_body_bytes = 4096

[upstream]
endpoint = "https://127.0.0.1:9"
response_timeout = "500ms"

[profiles.main]
access_key = "INLINE-ACCESS-KEY-qrs789"
secret_key = "INLINE-SECRET-KEY-abc123xyz"
security_token = "INLINE-STS-TOKEN-lmn456"
project_id = "0123456789abcdef0123456789abcdef"

[profiles.tok]
kind = "token"
iam_endpoint = "https://127.0.0.1:10"
domain = "d"
user = "u"
password = "INLINE-PASSWORD-uvw321"
project_id = "fedcba9876543210fedcba9876543210"

[apps."app-123"]
profile = "main"
allow = [{ callers = ["*"], operations = ["*"] }]

[apps."app-456"]
profile = "tok"
allow = [{ callers = ["*"], operations = ["moderation"] }]
limit = { rate = "10/s", burst = 20 }
operation_limits = { RemoveUsers = { rate = "5/s" } }

[limits]
per_app = { rate = "100/s", burst = 200 }
"#;

/// One edit to the config's lines. Edits keep each secret the value of its own key (moving a
/// secret to a key that is not secret makes it an ordinary value, which messages may show).
#[derive(Debug, Clone)]
enum Mutation {
    DropLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Inserts text into a line; on a secret's line, only before the `=`'s value.
    Insert(usize, usize, String),
    /// Changes a secret's value into another TOML type that still holds the secret.
    WrapSecret(usize, u8),
    /// Replaces a value that is not a secret with another.
    Replace(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let line = 0usize..40;
    let junk = prop_oneof![
        proptest::sample::select(vec![
            "\"", "'", "[", "]", "{", "}", "=", "\n", "#", ".", "\\", "\"\"\"", "_env", "_file", "0", "-1", "x",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let value = prop_oneof![
        proptest::sample::select(vec![
            "\"\"",
            "0",
            "-1",
            "1e9",
            "true",
            "[]",
            "{}",
            "\"0s\"",
            "\"1/0s\"",
            "\"main\"",
            "\"tok\"",
            "\"nope\"",
            "\"http://x\"",
            "1979-05-27T07:32:00Z",
            "\"999999999999999999999h\"",
        ])
        .prop_map(str::to_owned),
        any::<String>().prop_map(|s| format!("{s:?}")),
    ];
    prop_oneof![
        line.clone().prop_map(Mutation::DropLine),
        line.clone().prop_map(Mutation::DuplicateLine),
        (line.clone(), line.clone()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (line.clone(), 0usize..40, junk).prop_map(|(l, at, s)| Mutation::Insert(l, at, s)),
        (line.clone(), any::<u8>()).prop_map(|(l, kind)| Mutation::WrapSecret(l, kind)),
        (line, value).prop_map(|(l, v)| Mutation::Replace(l, v)),
    ]
}

fn secret_line(line: &str) -> bool {
    SECRETS.iter().any(|s| line.contains(s))
}

impl Mutation {
    fn apply(&self, lines: &mut Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let n = lines.len();
        match self {
            Mutation::DropLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
            Mutation::Insert(i, at, text) => {
                let line = &mut lines[i % n];
                let limit = if secret_line(line) { line.find('=').unwrap_or(0) } else { line.len() };
                let mut at = (*at).min(limit);
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                // Including a secret written where an environment variable's name or a file's
                // path goes (`password_env = "<the password>"`): the message about that name or
                // path must not repeat it either.
                line.insert_str(at, text);
            }
            Mutation::WrapSecret(i, kind) => {
                let line = &mut lines[i % n];
                if let (true, Some((key, value))) = (secret_line(line), line.clone().split_once(" = ")) {
                    *line = match kind % 5 {
                        0 => format!("{key} = [{value}]"),
                        1 => format!("{key} = {{ v = {value} }}"),
                        2 => format!("{key} = {value}\n{key}_env = \"TEST_SK\""),
                        3 => format!("{key} = '{}'", value.trim_matches('"')),
                        _ => format!("{key} = \"\"\"{}\"\"\"", value.trim_matches('"')),
                    };
                }
            }
            Mutation::Replace(i, value) => {
                let line = &mut lines[i % n];
                if let (false, Some((key, _))) = (secret_line(line), line.clone().split_once(" = ")) {
                    *line = format!("{key} = {value}");
                }
            }
        }
    }
}

/// The generators above reach the interesting outcomes, so the properties are not vacuous.
#[test]
fn generated_inputs_reach_accepted_and_refused_outcomes() {
    assert!(parse(BASE_CONFIG).is_ok(), "{:?}", parse(BASE_CONFIG).err());
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut routed, mut refused) = (0, 0);
    for _ in 0..512 {
        let target = target().new_tree(&mut runner).unwrap().current();
        let Ok(uri) = target.parse::<Uri>() else { continue };
        for method in [Method::GET, Method::POST] {
            match Catalog.resolve(&method, &uri, Version::HTTP_11) {
                Ok(_) => routed += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(routed >= 50 && refused >= 100, "routed {routed}, refused {refused}");
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..256 {
        let mutations = proptest::collection::vec(mutation(), 1..6).new_tree(&mut runner).unwrap().current();
        let mut lines: Vec<String> = BASE_CONFIG.lines().map(str::to_owned).collect();
        for m in &mutations {
            m.apply(&mut lines);
        }
        match parse(&lines.join("\n")) {
            Ok(_) => valid += 1,
            Err(_) => invalid += 1,
        }
    }
    assert!(valid >= 5 && invalid >= 100, "valid {valid}, invalid {invalid}");
}
