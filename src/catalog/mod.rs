//! Operation catalog: the first phase of the request path. It turns a caller's method and
//! request target into one known SparkRTC operation, its app and the exact path and query the
//! gateway will sign and forward. Anything it cannot recognise never leaves the gateway.
//!
//! The forwarded path is rebuilt from the operation's template and the decoded path values, so
//! whatever spelling the caller used (`%61pp`, `//`, a trailing `/`) the upstream sees one
//! canonical form, and a value cannot smuggle in a `/` or `..` to reach another app's resource.

mod operations;

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use http::{Method, Uri, Version};

use crate::signer::encoding::{decode_strict, encode_into};
use crate::signer::CanonicalQuery;

/// Where an operation names its SparkRTC app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppFrom {
    /// The `{app_id}` path segment (v2).
    Path,
    /// A query parameter (v1 operations use `app` or `app_id`); absent means account-wide.
    Query(&'static str),
    /// Account-level operations such as `ListApps` and `CreateApp`.
    Account,
}

/// One SparkRTC operation: its name, method, path template and what it may carry.
#[derive(Debug, PartialEq, Eq)]
pub struct Operation {
    pub name: &'static str,
    pub method: Method,
    pub template: &'static str,
    pub app: AppFrom,
    /// Whether the operation takes a JSON body.
    pub has_body: bool,
    /// The `Content-Type` the SDK sends with this operation, body or not.
    pub content_type: &'static str,
}

impl Operation {
    /// Operations that change state: everything but reads.
    pub fn is_mutating(&self) -> bool {
        self.method != Method::GET
    }
}

/// A request recognised as one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub operation: &'static Operation,
    /// The SparkRTC app the call acts on; `None` for account-level calls.
    pub app: Option<String>,
    /// `{project_id}` from a v1 path, checked against the app's credential profile.
    pub project_id: Option<String>,
    /// Decoded path values by template name (`room_id`, `job_id`, ...).
    pub params: Vec<(&'static str, String)>,
    /// The path to forward: the template with each value re-encoded as the SDK encodes it.
    pub path: String,
    pub query: CanonicalQuery,
}

impl Route {
    /// The decoded path value named `name` in the template (`room_id`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request target was refused before any matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Absolute-form, authority-form (CONNECT) or asterisk-form targets: a fixed-upstream proxy
    /// must never let the caller pick the destination.
    NotOriginForm,
    /// `.` or `..` segments, raw or encoded.
    DotSegment,
    /// An encoded `/` or `\` inside a segment, or a raw `\`.
    EncodedSeparator,
    /// A malformed `%` escape, bytes that are not UTF-8, or control characters.
    BadEncoding,
    /// The app parameter is given more than once with different values, so the gateway and the
    /// upstream could disagree on which app is meant.
    AmbiguousApp(&'static str),
    /// No operation has this method and path.
    NoOperation { allowed: Vec<&'static str> },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NotOriginForm => f.write_str(
                "the request target must be a path such as /v2/apps; absolute URLs, CONNECT and * are refused",
            ),
            RouteError::DotSegment => f.write_str("the path contains a '.' or '..' segment"),
            RouteError::EncodedSeparator => f.write_str("the path contains an encoded '/' or a '\\' inside a segment"),
            RouteError::BadEncoding => {
                f.write_str("the path has a malformed percent-escape, non-UTF-8 bytes or control characters")
            }
            RouteError::AmbiguousApp(param) => {
                write!(f, "the query parameter '{param}' is given more than once with different values")
            }
            RouteError::NoOperation { allowed } if allowed.is_empty() => {
                f.write_str("no SparkRTC operation has this path")
            }
            RouteError::NoOperation { allowed } => {
                write!(f, "no SparkRTC operation has this method on this path; it accepts {}", allowed.join(", "))
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// All operations, looked up by method and path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Catalog;

impl Catalog {
    /// Every operation the gateway knows, in the catalog's order.
    pub fn operations(&self) -> &'static [Operation] {
        &operations::OPERATIONS
    }

    /// The operation of this name (`RemoveUsers`), as the config and the limits name them.
    pub fn by_name(&self, name: &str) -> Option<&'static Operation> {
        operations::OPERATIONS.iter().find(|op| op.name == name)
    }

    /// Recognises the operation of `method uri`. HTTP/2 requests always carry a scheme and an
    /// authority (naming the gateway); in HTTP/1 those mean an absolute-form target.
    pub fn resolve(&self, method: &Method, uri: &Uri, version: Version) -> Result<Route, RouteError> {
        let absolute = version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some());
        if absolute || *method == Method::CONNECT || !uri.path().starts_with('/') {
            return Err(RouteError::NotOriginForm);
        }
        let segments = decode_segments(uri.path())?;
        let mut allowed = Vec::new();
        let mut best: Option<(&'static Operation, usize)> = None;
        for (op, parts) in templates() {
            let Some(literals) = match_template(parts, &segments) else {
                continue;
            };
            if op.method != *method {
                allowed.push(op.method.as_str());
            } else if best.is_none_or(|(_, n)| literals > n) {
                // Prefer the template with more literal segments, should two ever overlap.
                best = Some((op, literals));
            }
        }
        let Some((operation, _)) = best else {
            allowed.sort_unstable();
            allowed.dedup();
            return Err(RouteError::NoOperation { allowed });
        };
        let query = CanonicalQuery::parse(uri.query().unwrap_or(""));
        build_route(operation, &segments, query)
    }
}

fn build_route(
    operation: &'static Operation,
    segments: &[Cow<'_, str>],
    query: CanonicalQuery,
) -> Result<Route, RouteError> {
    let mut params = Vec::new();
    let mut path = String::with_capacity(64);
    for (template, value) in operation.template.split('/').skip(1).zip(segments) {
        path.push('/');
        match template.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Some(name) => {
                encode_into(value, &mut path);
                params.push((name, value.clone().into_owned()));
            }
            None => path.push_str(template),
        }
    }
    let param = |name: &str| params.iter().find(|(n, _)| *n == name).map(|(_, v): &(_, String)| v.clone());
    let app = match operation.app {
        AppFrom::Path => param("app_id"),
        AppFrom::Account => None,
        AppFrom::Query(key) => {
            let mut values = query.pairs().iter().filter(|(k, _)| k == key).map(|(_, v)| v);
            let first = values.next().cloned();
            if values.any(|v| Some(v) != first.as_ref()) {
                return Err(RouteError::AmbiguousApp(key));
            }
            first
        }
    };
    let project_id = param("project_id");
    Ok(Route { operation, app, project_id, params, path, query })
}

/// Splits a path into decoded segments, dropping empty ones (`//`, a trailing `/`).
fn decode_segments(path: &str) -> Result<Vec<Cow<'_, str>>, RouteError> {
    let mut out = Vec::with_capacity(8);
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        if raw.contains('\\') {
            return Err(RouteError::EncodedSeparator);
        }
        let decoded = decode_strict(raw).ok_or(RouteError::BadEncoding)?;
        if decoded.contains(['/', '\\']) {
            return Err(RouteError::EncodedSeparator);
        }
        if decoded == "." || decoded == ".." {
            return Err(RouteError::DotSegment);
        }
        if decoded.chars().any(char::is_control) {
            return Err(RouteError::BadEncoding);
        }
        out.push(decoded);
    }
    Ok(out)
}

/// Every operation with its template split into segments once, so matching allocates nothing.
fn templates() -> &'static [(&'static Operation, Vec<&'static str>)] {
    static TEMPLATES: LazyLock<Vec<(&'static Operation, Vec<&'static str>)>> = LazyLock::new(|| {
        operations::OPERATIONS.iter().map(|op| (op, op.template.split('/').skip(1).collect())).collect()
    });
    &TEMPLATES
}

/// The number of literal segments when `segments` fit `template`, `None` otherwise.
fn match_template(parts: &[&str], segments: &[Cow<'_, str>]) -> Option<usize> {
    if parts.len() != segments.len() {
        return None;
    }
    let mut literals = 0;
    for (part, segment) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            continue;
        }
        if *part != segment {
            return None;
        }
        literals += 1;
    }
    Some(literals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(method: Method, target: &str) -> Result<Route, RouteError> {
        let uri: Uri = target.parse().map_err(|_| RouteError::BadEncoding)?;
        Catalog.resolve(&method, &uri, Version::HTTP_11)
    }

    #[test]
    fn catalog_has_all_42_operations_with_unique_names_and_routes() {
        let ops = Catalog.operations();
        assert_eq!(ops.len(), 42);
        for (i, a) in ops.iter().enumerate() {
            for b in &ops[i + 1..] {
                assert_ne!(a.name, b.name);
                assert!(!(a.method == b.method && a.template == b.template), "{} and {} collide", a.name, b.name);
            }
        }
    }

    #[test]
    fn every_operation_resolves_from_its_own_template() {
        for op in Catalog.operations() {
            let target = op
                .template
                .replace("{project_id}", "p1")
                .replace("{app_id}", "app-1")
                .replace("{room_id}", "r1")
                .replace("{job_id}", "j1")
                .replace("{rule_id}", "u1");
            let route = resolve(op.method.clone(), &target).unwrap_or_else(|e| panic!("{}: {e}", op.name));
            assert_eq!(route.operation.name, op.name);
            assert_eq!(route.path, target);
        }
    }

    #[test]
    fn remove_users_names_app_and_room() {
        let route = resolve(Method::POST, "/v2/apps/app-123/rooms/room%20456/batch-remove-users/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(route.operation.name, "RemoveUsers");
        assert_eq!(route.app.as_deref(), Some("app-123"));
        assert_eq!(route.param("room_id"), Some("room 456"));
        assert_eq!(route.path, "/v2/apps/app-123/rooms/room%20456/batch-remove-users");
    }

    #[test]
    fn v1_takes_app_and_project_from_query_and_path() {
        let route = resolve(Method::GET, "/v1/p1/rtc/rooms?limit=10&app=a1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (route.operation.name, route.app.as_deref(), route.project_id.as_deref()),
            ("ListRtcRoomList", Some("a1"), Some("p1"))
        );
        assert_eq!(route.query.to_string(), "app=a1&limit=10");
        let route = resolve(Method::GET, "/v1/p1/rtc/client/event?app_id=a2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(route.app.as_deref(), Some("a2"));
        let route = resolve(Method::GET, "/v1/rtc/data/abnormal-event/dimension").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((route.operation.name, route.app), ("ListRtcAbnormalEventDimension", None));
    }

    #[test]
    fn account_operations_have_no_app() {
        let route = resolve(Method::GET, "/v2/apps?state=ENABLE").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((route.operation.name, route.app), ("ListApps", None));
        let route = resolve(Method::POST, "/v2/apps").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(route.operation.name, "CreateApp");
    }

    #[test]
    fn refuses_what_could_escape_a_template() {
        assert_eq!(resolve(Method::GET, "/v2/apps/a/../b"), Err(RouteError::DotSegment));
        assert_eq!(resolve(Method::GET, "/v2/apps/%2e%2E"), Err(RouteError::DotSegment));
        assert_eq!(resolve(Method::GET, "/v2/apps/a%2F..%2Fb"), Err(RouteError::EncodedSeparator));
        assert_eq!(resolve(Method::GET, "/v2/apps/a%5cb"), Err(RouteError::EncodedSeparator));
        assert_eq!(resolve(Method::GET, "/v2/apps/%FF"), Err(RouteError::BadEncoding));
        assert_eq!(resolve(Method::GET, "/v2/apps/a%00"), Err(RouteError::BadEncoding));
        assert_eq!(resolve(Method::GET, "http://evil.example/v2/apps"), Err(RouteError::NotOriginForm));
        assert_eq!(resolve(Method::CONNECT, "evil.example:443"), Err(RouteError::NotOriginForm));
        assert_eq!(resolve(Method::OPTIONS, "*"), Err(RouteError::NotOriginForm));
        assert_eq!(resolve(Method::GET, "/v1/p/rtc/rooms?app=a&app=b"), Err(RouteError::AmbiguousApp("app")));
    }

    #[test]
    fn unknown_paths_and_methods_are_not_operations() {
        assert_eq!(resolve(Method::GET, "/v2/secrets"), Err(RouteError::NoOperation { allowed: vec![] }));
        assert_eq!(
            resolve(Method::GET, "/v2/apps/a/rooms/r/batch-remove-users"),
            Err(RouteError::NoOperation { allowed: vec!["POST"] })
        );
    }

    #[test]
    fn normalises_spelling_of_the_same_path() {
        let a = resolve(Method::GET, "//v2//apps/%61pp-1/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.operation.name, a.path.as_str()), ("ShowApp", "/v2/apps/app-1"));
    }
}
