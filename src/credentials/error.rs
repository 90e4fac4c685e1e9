//! Why a credential could not be had: a key file unusable ([`FileError`]) or a fetch from IAM,
//! STS, the metadata service or the pod identity endpoint failed ([`FetchError`]). Each names
//! the file or the peer; the cause (the connect error, the I/O error) stays attached as
//! `source()`. None ever holds a secret: fields are named, values never shown.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cause::BoxError;
use crate::signer::SdkDate;
use crate::upstream;

/// A key, password or token file that cannot be used.
#[derive(Debug)]
pub(crate) enum FileError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Empty {
        path: PathBuf,
    },
    NotJson {
        path: PathBuf,
    },
    /// A temporary-credentials file without this field.
    Missing {
        path: PathBuf,
        field: &'static str,
    },
    /// `expires_at` is not a UTC RFC 3339 time (the value is not secret).
    BadExpiry {
        path: PathBuf,
        value: String,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Read { path, .. } => write!(f, "cannot read {}", path.display()),
            FileError::Empty { path } => write!(f, "{} is empty", path.display()),
            FileError::NotJson { path } => write!(f, "{} is not JSON", path.display()),
            FileError::Missing { path, field } => write!(f, "{} has no \"{field}\"", path.display()),
            FileError::BadExpiry { path, value } => {
                write!(f, "{}: expires_at {value:?} is not a UTC RFC 3339 time", path.display())
            }
        }
    }
}

impl FileError {
    /// What is wrong, without the file's name. For config messages about a `*_file` key, whose
    /// value may be a secret pasted where its path belongs: the key path names the setting.
    pub(crate) fn unnamed(&self) -> String {
        match self {
            FileError::Read { source, .. } => format!("the file it names cannot be read ({source})"),
            FileError::Empty { .. } => "the file it names is empty".to_owned(),
            FileError::NotJson { .. } => "the file it names is not JSON".to_owned(),
            FileError::Missing { field, .. } => format!("the file it names has no \"{field}\""),
            FileError::BadExpiry { value, .. } => {
                format!("the file it names has an expires_at ({value:?}) that is not a UTC RFC 3339 time")
            }
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Read { source, .. } => Some(source),
            FileError::Empty { .. }
            | FileError::NotJson { .. }
            | FileError::Missing { .. }
            | FileError::BadExpiry { .. } => None,
        }
    }
}

/// One failed fetch of a token or of temporary keys. `peer` names who was asked: "IAM", "STS",
/// "the metadata service", "the pod identity endpoint".
#[derive(Debug)]
pub(crate) enum FetchError {
    /// No answer: the connect error or the timeout is the cause.
    Unreachable { peer: &'static str, source: upstream::Error },
    /// The answer's body broke off or was too large.
    Unreadable { peer: &'static str, source: BoxError },
    /// The whole fetch took longer than its timeout.
    Timeout { peer: &'static str, after: Duration },
    /// An error status; `code` is the peer's error code (`-` when none), `during` the step.
    Refused { peer: &'static str, status: u16, code: String, during: Option<&'static str> },
    /// An answer without what the protocol promises (fields named, never values).
    Malformed { peer: &'static str, what: String },
    /// Something the operator must set up, in the peer's words and with the fix.
    Setup { peer: &'static str, what: &'static str },
    /// A credential that expires too soon to be used (or a clock that is off).
    Expiring { peer: &'static str, what: &'static str, at: SystemTime, min_life: Duration },
    /// SparkRTC refused a token just fetched: the token is fine, its rights are not.
    RefusedBySparkRtc,
    /// A file the fetch reads (password, id token).
    File(FileError),
    /// The request could not be built: an endpoint, or a value no header may carry.
    Request { what: String },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable { peer, .. } => write!(f, "{peer} could not be reached"),
            FetchError::Unreadable { peer, .. } => write!(f, "{peer}'s answer is unreadable"),
            FetchError::Timeout { peer, after } => write!(f, "{peer} did not answer within {} ms", after.as_millis()),
            FetchError::Refused { peer, status, code, during } => {
                write!(f, "{peer} answered {status}")?;
                if let Some(during) = during {
                    write!(f, " to {during}")?;
                }
                write!(f, " (error code {code})")
            }
            FetchError::Malformed { peer, what } => write!(f, "{peer}'s answer {what}"),
            FetchError::Setup { peer, what } => write!(f, "{peer} says {what}"),
            FetchError::Expiring { peer, what, at, min_life } => write!(
                f,
                "{peer} returned {what} at {}, less than {} s from now by this host's clock (check the clock if this repeats)",
                SdkDate::from_system_time(*at),
                min_life.as_secs()
            ),
            FetchError::RefusedBySparkRtc => f.write_str("SparkRTC refused a token just fetched"),
            FetchError::File(_) => f.write_str("a file the fetch needs is unusable"),
            FetchError::Request { what } => write!(f, "the request cannot be made: {what}"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Unreachable { source, .. } => Some(source),
            FetchError::Unreadable { source, .. } => Some(source.as_ref()),
            FetchError::File(e) => Some(e),
            FetchError::Timeout { .. }
            | FetchError::Refused { .. }
            | FetchError::Malformed { .. }
            | FetchError::Setup { .. }
            | FetchError::Expiring { .. }
            | FetchError::RefusedBySparkRtc
            | FetchError::Request { .. } => None,
        }
    }
}

impl From<FileError> for FetchError {
    fn from(e: FileError) -> Self {
        FetchError::File(e)
    }
}
