//! Percent-encoding and -decoding exactly as the official SDK's core does it.
//!
//! The Python core (`huaweicloudsdkcore/signer/signer.py`) uses `urllib.parse.quote(s, safe='~')`
//! and `unquote(s)`; their behaviour on odd input (lower-case hex, invalid UTF-8, a stray `%`) is
//! part of the signature, so it is reproduced here byte for byte rather than borrowed from a crate
//! with slightly different rules.

use std::borrow::Cow;

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 unreserved characters: the only bytes `quote(s, safe='~')` leaves as they are.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Appends `s` with every byte outside the unreserved set written as `%XX` (upper-case hex).
pub(crate) fn encode_into(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(UPPER_HEX[usize::from(b >> 4)]));
            out.push(char::from(UPPER_HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, in upper-case hex, as the SDK does.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    encode_into(s, &mut out);
    out
}

/// Python's `unquote(s)` (UTF-8, `errors='replace'`). `+` stays a plus.
///
/// Python splits the text into runs of ASCII and non-ASCII characters and unquotes each ASCII run
/// on its own, decoding its bytes as UTF-8 with U+FFFD for invalid sequences (the same maximal
/// subpart rule as [`String::from_utf8_lossy`]).
pub(crate) fn decode_lossy(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let ascii_len = rest.bytes().take_while(u8::is_ascii).count();
        if ascii_len > 0 {
            out.push_str(&String::from_utf8_lossy(&unquote_to_bytes(&rest[..ascii_len])));
            rest = &rest[ascii_len..];
        } else {
            let other_len = rest.find(|c: char| c.is_ascii()).unwrap_or(rest.len());
            out.push_str(&rest[..other_len]);
            rest = &rest[other_len..];
        }
    }
    Cow::Owned(out)
}

/// Strict decoding for values the gateway routes and authorizes on: `None` when an escape is
/// malformed or the bytes are not UTF-8, where [`decode_lossy`] would guess.
pub(crate) fn decode_strict(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_pair(bytes.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `urllib.parse.unquote_to_bytes`: `%` followed by two hex digits (either case) is one byte,
/// any other `%` stays literal.
fn unquote_to_bytes(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = bytes.get(i + 1..i + 3).and_then(hex_pair) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    match pair {
        [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
        _ => None,
    }
}

/// Lower-case hex, as `hashlib`'s `hexdigest()`.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(LOWER_HEX[usize::from(b >> 4)]));
        out.push(char::from(LOWER_HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_everything_but_unreserved_in_upper_hex() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b/c+é*"), "a%20b%2Fc%2B%C3%A9%2A");
    }

    #[test]
    fn decodes_like_python_unquote() {
        assert_eq!(decode_lossy("a+b%20c"), "a+b c");
        assert_eq!(decode_lossy("%c3%a9%41"), "éA");
        assert_eq!(decode_lossy("%FF"), "\u{FFFD}");
        assert_eq!(decode_lossy("%%41%4"), "%A%4");
        assert_eq!(decode_lossy("%zz"), "%zz");
        // Each ASCII run is decoded on its own: a dangling lead byte before a non-ASCII
        // character does not combine with it.
        assert_eq!(decode_lossy("%C3é"), "\u{FFFD}é");
    }

    #[test]
    fn strict_decoding_refuses_what_lossy_guesses() {
        assert_eq!(decode_strict("app%201").as_deref(), Some("app 1"));
        assert_eq!(decode_strict("%FF"), None);
        assert_eq!(decode_strict("%4"), None);
        assert_eq!(decode_strict("%zz"), None);
    }
}
