//! What a profile's credentials are, as the config describes them: built by `config` when it
//! reads `[profiles.NAME]` (key files are read then, through [`super::keys`], so a missing file
//! is reported with every other problem), and turned into live credentials by
//! [`super::Credentials::build`]. This module is the boundary: `credentials` never reads the
//! config, the config fills these in.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{KeyFiles, LoadedKey};
use super::platform::PlatformSpec;
use crate::secret::Secret;
use crate::signer::SigningKey;

/// A set of Huawei Cloud credentials and the project they act in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub project_id: String,
    pub auth: Auth,
}

impl Profile {
    /// The AK/SK as read when the config was loaded. Calls are signed with the live key
    /// (`Credentials`), which follows the files.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        match &self.auth {
            Auth::Keys { key, .. } => Some(&key.key),
            Auth::Token(_) | Auth::Platform(_) => None,
        }
    }
}

/// How a profile authenticates its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// AK/SK signing. `files` names the files to re-read when they change.
    Keys { key: LoadedKey, files: KeyFiles },
    /// An IAM token in `X-Auth-Token`.
    Token(TokenSpec),
    /// Temporary AK/SK from the platform: metadata, pod identity or OIDC.
    Platform(PlatformSpec),
}

/// `kind = "token"`: where IAM is, how to ask it for a token, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// IAM's endpoint, scheme and host (`https://iam.cn-north-4.myhuaweicloud.com`).
    pub iam_endpoint: http::Uri,
    pub method: TokenMethod,
    /// Fetch a new token when less than this remains of the current one (at most half its
    /// lifetime; see `credentials::token`).
    pub refresh_before: Duration,
    /// The longest one IAM token request may take, connection and answer body included.
    pub iam_timeout: Duration,
    /// The longest a call with no valid token waits for a fetch before it gets a 503.
    pub token_wait: Duration,
}

/// How a token is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenMethod {
    /// An IAM user's password; a `password_file` is re-read at each fetch.
    Password { domain: String, user: String, password: Secret, password_file: Option<PathBuf> },
    /// Assume `agency` of account `domain`, the call signed with the keys of profile `via`.
    Agency { domain: String, agency: String, via: String },
}
