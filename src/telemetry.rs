//! Logging set-up: text or JSON lines on stderr, filtered by the config's level or `RUST_LOG`.
//! Nothing secret reaches a log line: secrets are [`crate::secret::Secret`]s, which print as
//! `[redacted]`, and signed headers are never logged.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber; a second call (tests, the demo) keeps the first.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
