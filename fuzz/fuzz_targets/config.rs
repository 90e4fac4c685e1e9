//! Config parsing on any text: `Config::parse` never panics, and no error shows a value given
//! inline for a secret key of the seed configs (`secret_key`, `access_key`, `security_token`,
//! `password`, all spelled `FUZZ-SECRET-...` in the corpus) unless that value was moved out of a
//! secret key by the mutation.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sparkrtc_gateway::config::Config;

const SECRET_KEYS: [&str; 4] = ["secret_key", "access_key", "security_token", "password"];

/// Whether every line mentioning a `FUZZ-SECRET-` value is `<secret key> = "<value>"` and that
/// value appears nowhere else: only then must no message show it.
fn secrets_only_in_secret_keys(text: &str) -> bool {
    text.lines().filter(|l| l.contains("FUZZ-SECRET-")).all(|line| {
        let Some((key, value)) = line.split_once('=') else { return false };
        let value = value.trim();
        SECRET_KEYS.contains(&key.trim())
            && value.starts_with('"')
            && value.ends_with('"')
            && value.len() > 1
            && !value[1..value.len() - 1].contains(['"', '\\'])
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| (name == "FUZZ_ENV").then(|| "from-env".to_owned());
    let Err(e) = Config::parse(text, "fuzz.toml", Path::new("/nonexistent"), &env) else { return };
    let shown = format!("{e}\n{e:?}");
    if secrets_only_in_secret_keys(text) {
        for line in text.lines().filter(|l| l.contains("FUZZ-SECRET-")) {
            let value = line.split_once('=').map(|(_, v)| v.trim().trim_matches('"')).unwrap_or_default();
            assert!(!shown.contains(value), "the secret {value:?} is shown in: {shown}");
        }
    }
});
