//! Configuration errors: every problem reported at once, with the key, the value and the fix;
//! `check` exits 64 on them; the example and demo configs are valid.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use std::path::Path;
use std::process::Command;

use sparkrtc_gateway::config::{Config, ConfigError};

const BIN: &str = env!("CARGO_BIN_EXE_sparkrtc-gateway");

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, "t.toml", Path::new("."), &|_| None) {
        Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn a_config_with_several_mistakes_reports_all_of_them() {
    let found = problems(
        r#"
[server]
listen = "localhost:eighty"
max_body_bytes = 20000000
lissen = "typo"

[upstream]
endpoint = "http://rtc.example"
connect_timeout = "three seconds"

[profiles.main]
access_key = "AK"
secret_key_env = "UNSET_VARIABLE_FOR_TEST"
project_id = ""

[apps."app-1"]
profile = "mian"
"#,
    );
    let expect = [
        "server.listen: \"localhost:eighty\" is not an address",
        "server.max_body_bytes: 20000000 must be a whole number from 1 to 12582912",
        "server.lissen: unknown key",
        "upstream.endpoint: \"http://rtc.example\" is plain http",
        "upstream.connect_timeout: \"three seconds\" is not a duration",
        "profiles.main.secret_key_env: names an environment variable that is not set or is empty",
        "profiles.main.project_id: set the Huawei Cloud project id",
        "apps.app-1.profile: \"mian\" is not a defined profile; defined: [\"main\"]",
        "apps.app-1.allow: is missing, so nothing would be allowed",
    ];
    for e in expect {
        assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn secret_values_never_appear_in_problems() {
    let found = problems("[profiles.p]\naccess_key = \"AK\"\nsecret_key = \"hunter2-secret\"\nsecret_key_file = \"x\"\nproject_id = \"p1\"\n");
    assert!(found.iter().any(|f| f.starts_with("profiles.p.secret_key: is given more than once")), "{found:#?}");
    assert!(!found.join("\n").contains("hunter2"));
}

#[test]
fn a_syntax_error_names_the_place_without_quoting_the_line() {
    match Config::parse("[profiles.p]\npassword = \"Sup3r\\Secret\"\n", "t.toml", Path::new("."), &|_| None) {
        Err(e @ ConfigError::Syntax { .. }) => {
            let text = e.to_string();
            assert!(text.contains("line 2"), "{text}");
            assert!(!text.contains("Sup3r"), "the line holding a secret was quoted: {text}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn secrets_come_from_files_trimmed() {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("sk"), "SK-from-file\n").unwrap_or_else(|e| panic!("{e}"));
    let text = "[profiles.p]\naccess_key = \"AK\"\nsecret_key_file = \"sk\"\nproject_id = \"p1\"\n";
    let config = Config::parse(text, "t.toml", &dir, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.profiles["p"].signing_key().unwrap().secret_key.expose(), "SK-from-file");
    assert!(!format!("{config:?}").contains("SK-from-file"), "Debug output shows the secret");
}

#[test]
fn check_exits_64_and_lists_every_problem() {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"nope\"\n[upstream]\nresponse_timeout = \"forever\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN).args(["check", "--config"]).arg(&file).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["server.listen", "upstream.response_timeout", "profiles: no credential profile"] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
}

#[test]
fn bundled_configs_pass_check() {
    for file in ["config/gateway.example.toml", "config/demo.toml"] {
        let out = Command::new(BIN)
            .args(["check", "--config", file])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SPARKRTC_AK", "AKEXAMPLE")
            .env("SPARKRTC_SK", "SKEXAMPLE")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn limiter_backend_mistakes_say_what_to_write_and_never_quote_a_password() {
    let base = "[profiles.main]\naccess_key = \"AK\"\nsecret_key = \"SK\"\nproject_id = \"p\"\n";
    let found = problems(&format!(
        "{base}[limits]\nbackend = \"redis\"\non_backend_error = \"maybe\"\nper_app = {{ rate = \"1/s\", on_backend_error = \"sometimes\" }}\n[limits.redis]\nurl = \"redis://:hunter2-secret@redis:6379/0\"\ntimeout = \"1m\"\n"
    ));
    let expect = [
        "limits.on_backend_error: \"maybe\" must be \"allow\"",
        "limits.per_app.on_backend_error: \"sometimes\" must be \"allow\"",
        "limits.redis.url: holds credentials; remove them from the URL and set username and password_env or password_file",
        "limits.redis.timeout: \"1m\" must be between 1ms and 10s",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "missing {e:?} in {found:#?}");
    }
    assert!(found.iter().all(|p| !p.contains("hunter2")), "the password was quoted: {found:#?}");

    let found = problems(&format!("{base}[limits]\nbackend = \"memcached\"\n"));
    assert!(found[0].starts_with("limits.backend: \"memcached\" is not a limiter backend"), "{found:?}");
    let found = problems(&format!("{base}[limits.redis]\nurl = \"redis://r:6379\"\n"));
    assert!(found[0].contains("set backend = \"redis\""), "{found:?}");
    let found =
        problems(&format!("{base}[limits]\nbackend = \"redis\"\n[limits.redis]\nurl = \"redis+sentinel://r:26379\"\n"));
    assert!(found[0].contains("Sentinel and Cluster URLs are not supported"), "{found:?}");
    let found = problems(&format!("{base}[limits]\nbackend = \"redis\"\n"));
    assert!(found[0].starts_with("limits.redis.url: is missing"), "{found:?}");
    let found = problems(&format!("{base}[admin]\nreadiness = \"most\"\n"));
    assert!(found[0].starts_with("admin.readiness: \"most\" must be \"any\""), "{found:?}");
}

#[test]
fn a_secret_written_where_its_variable_or_file_belongs_is_never_repeated() {
    // Keys look like variable names and paths: neither may be quoted back.
    for key in ["secret_key_env", "secret_key_file", "access_key_env", "access_key_file"] {
        let text = "[profiles.main]\naccess_key = \"AK\"\nsecret_key = \"SK\"\nproject_id = \"p\"\n"
            .replace(&format!("{} = ", key.trim_end_matches("_env").trim_end_matches("_file")), &format!("{key} = "))
            .replace("\"SK\"", "\"Q2hvb3NlQVNlY3JldEtleTQwQ2hhcnNMb25nMTIz\"")
            .replace("\"AK\"", "\"HPUAQ2HVB3NLQVNLY3JL\"");
        let found = problems(&text);
        assert!(!found.is_empty(), "{key}: {text}");
        for secret in ["Q2hvb3NlQVNlY3JldEtleTQwQ2hhcnNMb25nMTIz", "HPUAQ2HVB3NLQVNLY3JL"] {
            assert!(found.iter().all(|p| !p.contains(secret)), "{key}: {found:#?}");
        }
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let commit = text
        .trim()
        .strip_prefix(concat!("sparkrtc-gateway ", env!("CARGO_PKG_VERSION"), " (commit "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()) && commit.len() == 12, "{commit:?}");
}

#[test]
fn durations_take_combined_units_and_days_everywhere_and_check_accepts_them() {
    let text = r#"
[server]
grace_period = "1m30s"
drain_delay = "250ms"

[upstream]
response_timeout = "2m 30s"

[profiles.main]
kind = "oidc"
project_id = "p"
id_token_file = "token"
region = "cn-north-4"
idp_id = "idp"
duration = "11h 30m"
refresh_before = "1h30m"
"#;
    let config = Config::parse(text, "t.toml", Path::new("."), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.grace_period, std::time::Duration::from_secs(90));
    assert_eq!(config.drain_delay, std::time::Duration::from_millis(250));
    assert_eq!(config.upstream.response_timeout, std::time::Duration::from_secs(150));

    // Through the binary, with a day where a day fits, and the message for what is not a duration.
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-durations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let keys = "[profiles.main]\naccess_key = \"AK\"\nsecret_key = \"SK\"\nproject_id = \"p\"\n";
    std::fs::write(
        &file,
        format!("[server]\nidle_timeout = \"1m30s\"\n[upstream]\npool_idle_timeout = \"1h\"\n{keys}"),
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&file, format!("[server]\ngrace_period = \"1d\"\n[upstream]\nconnect_timeout = \"soon\"\n{keys}"))
        .unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.grace_period: \"1d\" must be between 0ms and 3600s"), "{stderr}");
    assert!(
        stderr.contains(
            "upstream.connect_timeout: \"soon\" is not a duration; write it like \"500ms\", \"3s\", \"1m30s\""
        ),
        "{stderr}"
    );
}
