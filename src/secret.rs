//! A secret string (secret key, password, token, security token): zeroed when dropped and never
//! shown by `Debug` or `Display`, so a stray `{:?}` in a log line cannot leak it.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string, redacted in `Debug` and `Display`, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself. Call sites are few and greppable: signing, token requests, sandbox checks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Whether two byte strings are equal, in time that depends on their lengths only, not on
/// where they first differ: for comparing a presented secret (a caller key's digest, a
/// signature) with the expected one without telling an attacker how much of it was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("SKEXAMPLE-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    Secret([redacted]),\n)");
        assert_eq!(s.expose(), "SKEXAMPLE-very-secret");
    }
}
