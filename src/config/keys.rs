//! Every key the config reader accepts, learned from the reader itself: it is run over a few
//! documents that between them take every branch (each profile kind, each exchange, TLS,
//! Redis, JWT, an app and the account), recording each key it reads or tests. A key added to
//! the reader is therefore listed here without anyone writing it down twice; a new branch
//! (a new profile kind) needs a probe below, and `tests/config_example.rs` notices when the
//! example misses its keys.

use std::path::Path;

use super::reader::{record, Recorded};

/// Documents that between them take every branch; tables and lists are present (even empty)
/// so that the keys inside them are asked for. Values need not be valid: only which keys the
/// reader asks for matters.
const PROBES: &[&str] = &[
    r#"
[server.tls]
[admin]
enabled = false
[profiles.keys]
algorithm = "V11-HMAC-SHA256"
[profiles.temporary]
credentials_file = "x"
[profiles.password]
kind = "token"
[profiles.agency]
kind = "token"
agency = "x"
[profiles.metadata]
kind = "metadata"
[profiles.pod]
kind = "pod-identity"
[profiles.iam]
kind = "oidc"
idp_id = "x"
[profiles.sts]
kind = "oidc"
provider_urn = "x"
[policy.jwt]
[callers.c]
limit = {}
[limits]
backend = "redis"
per_app = {}
[limits.redis]
[apps.a]
allow = [{}]
limit = {}
operation_limits = { RemoveUsers = {} }
[account]
allow = [{}]
operation_limits = { RemoveUsers = {} }
"#,
    "[admin]\nenabled = true\n",
];

/// The keys the reader accepts, as patterns: `server.listen`, `profiles.*.project_id`,
/// `apps.*.allow[].callers`, with the keys of a limit listed once as `<limit>.rate` and the
/// places that take a limit in `shapes`.
pub fn known_keys() -> Recorded {
    let mut all = Recorded::default();
    for probe in PROBES {
        let Ok(doc) = probe.parse::<toml::Table>() else { continue };
        let found = record(|| {
            let _ = super::validate::config(&doc, Path::new("/nonexistent"), &|_| None);
        });
        all.keys.extend(found.keys);
        all.shapes.extend(found.shapes);
    }
    all
}
