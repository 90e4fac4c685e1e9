//! AK/SK key material that can change while the gateway runs: keys read from files (a
//! Kubernetes secret mount, a vault agent's output) are re-read, and the new key is used by the
//! next signed call. A file that becomes unreadable or invalid leaves the old key in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::error::FileError;
use crate::secret::Secret;
use crate::signer::{parse_rfc3339, SigningKey};

/// Where a profile's keys come from, for those given as files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyFiles {
    pub access_key: Option<PathBuf>,
    pub secret_key: Option<PathBuf>,
    pub security_token: Option<PathBuf>,
    /// Temporary keys as IAM returns them: `{"access", "secret", "securitytoken", "expires_at"}`,
    /// optionally inside `{"credential": ...}`.
    pub credentials: Option<PathBuf>,
}

impl KeyFiles {
    pub fn any(&self) -> bool {
        self.access_key.is_some()
            || self.secret_key.is_some()
            || self.security_token.is_some()
            || self.credentials.is_some()
    }
}

/// A signing key and, for temporary keys, when it stops working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedKey {
    pub key: SigningKey,
    pub expires_at: Option<SystemTime>,
}

fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })
}

/// Reads one secret file, trimmed. Errors name the file, never its content.
pub(crate) fn read_secret(path: &Path) -> Result<Secret, FileError> {
    let text = read(path)?;
    let value = text.trim();
    if value.is_empty() {
        return Err(FileError::Empty { path: path.to_owned() });
    }
    Ok(Secret::new(value))
}

/// Reads a temporary-credentials JSON file: access key, secret key, security token, expiry.
pub(crate) fn read_credentials(path: &Path) -> Result<(Secret, Secret, Secret, SystemTime), FileError> {
    let text = read(path)?;
    // The parser's message may quote the file: not kept.
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| FileError::NotJson { path: path.to_owned() })?;
    let c = json.get("credential").unwrap_or(&json);
    let field = |name: &'static str| {
        c.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FileError::Missing { path: path.to_owned(), field: name })
    };
    let expires = field("expires_at")?;
    let expires_at = parse_rfc3339(expires)
        .ok_or_else(|| FileError::BadExpiry { path: path.to_owned(), value: expires.to_owned() })?;
    Ok((Secret::new(field("access")?), Secret::new(field("secret")?), Secret::new(field("securitytoken")?), expires_at))
}

/// A profile's current AK/SK, swapped whole when its files change.
#[derive(Debug)]
pub(crate) struct KeySource {
    current: ArcSwap<LoadedKey>,
    files: KeyFiles,
}

impl KeySource {
    pub(crate) fn new(initial: LoadedKey, files: KeyFiles) -> Self {
        KeySource { current: ArcSwap::from_pointee(initial), files }
    }

    pub(crate) fn current(&self) -> Arc<LoadedKey> {
        self.current.load_full()
    }

    /// Re-reads the key files. `Ok(true)` when the key changed; an error keeps the old key.
    pub(crate) fn refresh(&self) -> Result<bool, FileError> {
        if !self.files.any() {
            return Ok(false);
        }
        let old = self.current.load_full();
        let mut next = LoadedKey::clone(&old);
        if let Some(path) = &self.files.credentials {
            let (ak, sk, token, expires_at) = read_credentials(path)?;
            next.key.access_key = ak;
            next.key.secret_key = sk;
            next.key.security_token = Some(token);
            next.expires_at = Some(expires_at);
        }
        if let Some(path) = &self.files.access_key {
            next.key.access_key = read_secret(path)?;
        }
        if let Some(path) = &self.files.secret_key {
            next.key.secret_key = read_secret(path)?;
        }
        if let Some(path) = &self.files.security_token {
            next.key.security_token = Some(read_secret(path)?);
        }
        if next == *old {
            return Ok(false);
        }
        self.current.store(Arc::new(next));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cause::ErrorChain;

    #[test]
    fn an_unreadable_key_file_names_the_file_and_keeps_the_os_error_as_its_cause() {
        let path = std::env::temp_dir().join(format!("sparkrtc-gw-no-such-key-{}", std::process::id()));
        let e = read_secret(&path).err().unwrap_or_else(|| panic!("{} exists", path.display()));
        assert!(matches!(&e, FileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
        let io = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
        assert_eq!(ErrorChain(&e).to_string(), format!("cannot read {}: {io}", path.display()));
    }

    #[test]
    fn a_malformed_credentials_file_names_the_field_never_a_value() {
        let path = std::env::temp_dir().join(format!("sparkrtc-gw-creds-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"credential":{"access":"AK","secret":"SECRET-VALUE","expires_at":"2030-01-02T03:04:05Z"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = read_credentials(&path).err().unwrap_or_else(|| panic!("accepted without a security token"));
        let _ = std::fs::remove_file(&path);
        assert!(matches!(e, FileError::Missing { field: "securitytoken", .. }), "{e}");
        assert!(!ErrorChain(&e).to_string().contains("SECRET-VALUE"));
    }
}
