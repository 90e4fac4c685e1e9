//! deploy/sparkrtc-gateway.service, judged by systemd's own tools: `systemd-analyze security`
//! rates its sandbox (2.0 or below is "OK"), `systemd-analyze verify` parses every directive, and
//! the config beside it (deploy/sparkrtc-gateway.toml) passes `check` and reads its keys from
//! where `LoadCredential=` puts them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

#[path = "deploy_support/mod.rs"]
mod deploy_support;

use std::path::PathBuf;
use std::process::Command;

use deploy_support::*;

const UNIT: &str = "sparkrtc-gateway.service";

fn unit_text() -> String {
    read(&deploy(UNIT))
}

/// Values of a directive, in order.
fn directive<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

/// Installs systemd's tools from Debian's packages when this machine lacks them: the test needs
/// the real rating, so a missing binary is provisioned, not a reason to skip.
fn ensure_installed() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
            return;
        }
        eprintln!("systemd-analyze is missing: installing systemd from Debian's packages");
        let apt = |args: &[&str]| {
            Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status().unwrap_or_else(|e| {
                panic!("systemd-analyze is not installed and apt-get cannot run ({e}); install systemd")
            })
        };
        apt(&["update", "-qq"]);
        assert!(apt(&["install", "-y", "-qq", "--no-install-recommends", "systemd"]).success(), "install systemd");
    });
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    ensure_installed();
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze cannot run ({e}); install systemd (Debian's package) and rerun"))
}

/// The unit as installed, under its own name in a private directory (the offline analysis
/// takes the unit's name from the file name).
fn installed_copy(text: &str) -> PathBuf {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let copy = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-unit-{}-{copy}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(UNIT);
    std::fs::write(&path, text).unwrap();
    path
}

/// The "Overall exposure level" systemd-analyze security gives the unit.
fn exposure(text: &str) -> (f64, String) {
    let path = installed_copy(text);
    let out = systemd_analyze(&["security", "--offline=yes", path.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in: {report}{}", String::from_utf8_lossy(&out.stderr)));
    let score = line.split(": ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap();
    (score.parse().unwrap_or_else(|e| panic!("{line}: {e}")), report)
}

#[test]
fn unit_scores_ok_in_systemd_analyze_security() {
    let (score, report) = exposure(&unit_text());
    assert!(score <= 2.0, "exposure {score} above 2.0 (\"OK\"):\n{report}");
}

#[test]
fn the_security_rating_notices_a_weakened_sandbox() {
    // The rating this test relies on is real: without the sandbox the same unit is EXPOSED.
    let text = unit_text();
    let sandbox_start = text.find("DynamicUser=").unwrap();
    let sandbox_end = text.find("[Install]").unwrap();
    let weakened = format!("{}{}", &text[..sandbox_start], &text[sandbox_end..]);
    let (score, report) = exposure(&weakened);
    assert!(score > 5.0, "without the sandbox: {score}\n{report}");
}

#[test]
fn unit_verifies_with_the_built_binary_in_place() {
    // verify checks that every Exec*= names an executable: point them at the binary cargo built.
    let text = unit_text().replace("/usr/local/bin/sparkrtc-gateway", env!("CARGO_BIN_EXE_sparkrtc-gateway"));
    let path = installed_copy(&text);
    let out = systemd_analyze(&["verify", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown or misspelt directives are only warned about ("Unknown key ..., ignoring").
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warned:\n{stderr}");
}

#[test]
fn unit_checks_before_start_reloads_on_sighup_and_gives_the_socket_a_directory() {
    let text = unit_text();
    assert_eq!(directive(&text, "ExecStartPre"), ["/usr/local/bin/sparkrtc-gateway check"]);
    assert_eq!(directive(&text, "ExecStart"), ["/usr/local/bin/sparkrtc-gateway serve"]);
    assert_eq!(directive(&text, "ExecReload"), ["kill -HUP $MAINPID"], "the gateway reloads on SIGHUP");
    assert!(directive(&text, "EnvironmentFile").is_empty(), "secrets come as credentials, not environment");
    let nofile: u64 = directive(&text, "LimitNOFILE")[0].parse().unwrap();
    assert!(nofile >= 65536, "room for many connections: {nofile}");

    let config_path = directive(&text, "Environment")
        .iter()
        .find_map(|e| e.strip_prefix("SPARKRTC_GATEWAY_CONFIG="))
        .expect("the config path");
    assert_eq!(config_path, "/etc/sparkrtc-gateway/gateway.toml");
    let runtime_dir = directive(&text, "RuntimeDirectory")[0];
    let config = check_embedded("sparkrtc-gateway.toml", &read(&deploy("sparkrtc-gateway.toml")));
    let socket = config.unix_socket.expect("the example serves a Unix socket too");
    assert!(
        socket.starts_with(format!("/run/{runtime_dir}")),
        "{} must be in the RuntimeDirectory, the only writable place under /run",
        socket.display()
    );
}

#[test]
fn config_reads_each_key_from_the_credential_systemd_loads() {
    let text = unit_text();
    let credentials: Vec<&str> =
        directive(&text, "LoadCredential").iter().map(|c| c.split(':').next().unwrap()).collect();
    assert_eq!(credentials, ["access_key", "secret_key"]);
    let toml = read(&deploy("sparkrtc-gateway.toml"));
    let referenced: Vec<&str> = toml
        .lines()
        .filter_map(|l| l.split_once("_file = \"")?.1.strip_suffix('"'))
        .map(|path| {
            path.strip_prefix(&format!("/run/credentials/{UNIT}/"))
                .unwrap_or_else(|| panic!("{path} is not in this unit's credentials directory"))
        })
        .collect();
    assert_eq!(referenced, credentials, "every key file is a loaded credential");
}
