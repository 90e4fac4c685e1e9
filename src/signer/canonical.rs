//! The canonical request: the text both sides hash, built exactly as the official SDK builds it.
//!
//! ```text
//! CanonicalRequest = METHOD "\n" CanonicalURI "\n" CanonicalQueryString "\n"
//!                    CanonicalHeaders "\n" SignedHeaders "\n" PayloadHash
//! ```

use std::fmt;

use super::encoding::{decode_lossy, encode_into};

/// `CanonicalURI`: the wire path percent-decoded, split on `/`, each segment re-encoded, with a
/// trailing `/` added. An encoded `%2F` therefore turns into a real `/` here while the wire keeps it.
pub fn canonical_uri(wire_path: &str) -> String {
    let decoded = decode_lossy(wire_path);
    let mut out = String::with_capacity(decoded.len() + 8);
    for (i, segment) in decoded.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_into(segment, &mut out);
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The query as the SDK signs it, and as the gateway forwards it.
///
/// Pairs are decoded (`+` is a literal plus), sorted by decoded key then decoded value in
/// code-point order, and re-encoded; repeated keys stay repeated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CanonicalQuery {
    pairs: Vec<(String, String)>,
}

impl CanonicalQuery {
    /// Splits a raw query on `&`, then on the first `=`; a key without `=` has the value `""`.
    /// Empty segments (`a=1&&b=2`, a trailing `&`) carry nothing and are skipped.
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|segment| !segment.is_empty())
            .map(|segment| {
                let (k, v) = segment.split_once('=').unwrap_or((segment, ""));
                (decode_lossy(k).into_owned(), decode_lossy(v).into_owned())
            })
            .collect();
        Self::from_pairs(pairs)
    }

    /// A query of decoded pairs, sorted as the SDK sorts them.
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        // `String`'s byte order is code-point order for UTF-8, which is Python's `str` order.
        pairs.sort();
        CanonicalQuery { pairs }
    }

    /// Decoded pairs in canonical order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Whether the query has no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl fmt::Display for CanonicalQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            encode_into(k, &mut out);
            out.push('=');
            encode_into(v, &mut out);
        }
        f.write_str(&out)
    }
}

/// Python's `str.strip()`: Unicode white space plus the four information separators
/// U+001C..U+001F, which Python counts as space and Rust does not.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Python's `a.lower() == b.lower()`, without allocating for the ASCII names HTTP carries.
fn same_name(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// Request headers with the semantics of the SDK's `header_params` dict: names keep their case,
/// setting an existing name (exact case) replaces its value in place, lookups may ignore case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList {
    entries: Vec<(String, String)>,
}

impl HeaderList {
    /// No headers.
    pub fn new() -> Self {
        HeaderList::default()
    }

    /// Sets `name` (exact case) to `value`, replacing a header of exactly that name.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name.to_owned(), value)),
        }
    }

    /// Value of the first header whose name matches `name` exactly.
    pub fn exact(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Value of the first header whose name matches `name` ignoring case (Python's `lower()`).
    pub(crate) fn ignore_case(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| same_name(n, name)).map(|(_, v)| v.as_str())
    }

    /// The headers in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub(super) fn entries_mut(&mut self) -> &mut [(String, String)] {
        &mut self.entries
    }

    /// The headers as sent: every value marked sensitive, which keeps signatures, tokens and
    /// security tokens out of hyper's debug output. `Err` names a header HTTP cannot carry.
    pub(crate) fn to_header_map(&self) -> Result<http::HeaderMap, UnsendableHeader> {
        let mut map = http::HeaderMap::with_capacity(self.entries.len());
        for (name, value) in &self.entries {
            let unsendable = || UnsendableHeader(name.clone());
            let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| unsendable())?;
            let mut value = http::HeaderValue::from_str(value).map_err(|_| unsendable())?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }
}

/// A header name or value HTTP cannot carry; holds the name only (the value may be secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsendableHeader(pub String);

impl std::fmt::Display for UnsendableHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "header {} cannot be sent", self.0)
    }
}

impl std::error::Error for UnsendableHeader {}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut list = HeaderList::new();
        for (n, v) in iter {
            list.set(&n.into(), v);
        }
        list
    }
}

/// `CanonicalHeaders` and `SignedHeaders` as the SDK derives them from its header dict.
///
/// Every name without `_` is signed, lower-cased and sorted; each value is trimmed with
/// [`py_strip`]. Names equal but for case collapse to the last value yet stay listed twice,
/// as in the SDK.
pub(super) fn canonical_headers(headers: &HeaderList) -> (Vec<(String, String)>, String) {
    // Python's `lower()`; the ASCII names HTTP carries take the cheaper path to the same result.
    let lower = |name: &str| if name.is_ascii() { name.to_ascii_lowercase() } else { name.to_lowercase() };
    let mut names: Vec<String> =
        headers.iter().filter(|(name, _)| !name.contains('_')).map(|(name, _)| lower(name)).collect();
    names.sort();
    let lines = names
        .iter()
        .map(|name| {
            let value = headers.iter().filter(|(n, _)| same_name(n, name)).last().map_or("", |(_, v)| py_strip(v));
            (name.clone(), value.to_owned())
        })
        .collect();
    (lines, names.join(";"))
}

/// The canonical request; its `Display` is the exact text that is hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub method: String,
    pub uri: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub signed_headers: String,
    pub payload_hash: String,
}

impl CanonicalRequest {
    /// The text that is hashed, built in one allocation (it is built for every call).
    pub fn text(&self) -> String {
        let header_bytes: usize = self.headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        let fixed = [&self.method, &self.uri, &self.query, &self.signed_headers, &self.payload_hash];
        let mut out = String::with_capacity(header_bytes + fixed.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
        for part in [&self.method, &self.uri, &self.query] {
            out.push_str(part);
            out.push('\n');
        }
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push(':');
            out.push_str(value);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.signed_headers);
        out.push('\n');
        out.push_str(&self.payload_hash);
        out
    }
}

impl fmt::Display for CanonicalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uri_decodes_splits_and_reencodes() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/v2/apps"), "/v2/apps/");
        assert_eq!(canonical_uri("/v2/apps/"), "/v2/apps/");
        assert_eq!(canonical_uri("/a%2Fb/c%20d/%7e"), "/a/b/c%20d/~/");
    }

    #[test]
    fn query_sorts_on_decoded_pairs_and_keeps_repeats() {
        let q = CanonicalQuery::parse("b=2&a=9&a=10&a=&flag&plus=1+2&&");
        assert_eq!(q.to_string(), "a=&a=10&a=9&b=2&flag=&plus=1%2B2");
        assert!(CanonicalQuery::parse("").is_empty());
    }

    #[test]
    fn strip_matches_python_whitespace() {
        assert_eq!(py_strip(" \t a  b\u{1f}\u{a0}\n"), "a  b");
        assert_eq!(py_strip("\u{200b}x"), "\u{200b}x");
    }

    #[test]
    fn header_list_replaces_exact_name_in_place() {
        let mut h: HeaderList = [("A", "1"), ("b", "2")].into_iter().collect();
        h.set("A", "3");
        h.set("a", "4");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("A", "3"), ("b", "2"), ("a", "4")]);
        assert_eq!(h.ignore_case("B"), Some("2"));
        assert_eq!(h.exact("B"), None);
    }
}
