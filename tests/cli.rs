//! The command line of the real binary: every subcommand answers `--help` with examples,
//! `--config FILE`, `--config=FILE` and `SPARKRTC_GATEWAY_CONFIG` name the config, unknown or
//! misplaced options are usage errors (exit 2); and `check` refuses what `serve` refuses, each
//! case run through both commands so the test proves they agree.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::process::Process;

const BIN: &str = env!("CARGO_BIN_EXE_sparkrtc-gateway");
/// A generous bound on a process that should exit at once, so a `serve` that starts after all
/// fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A valid config on free ports (no admin listener), with `extra` appended.
fn config(extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n[log]\nformat = \"json\"\n\n\
         [profiles.main]\naccess_key = \"AK\"\nsecret_key = \"SK\"\nproject_id = \"{}\"\n\n{extra}\n",
        support::PROJECT
    )
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], env: Option<&Path>) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("SPARKRTC_GATEWAY_CONFIG").env_remove("RUST_LOG");
    if let Some(path) = env {
        command.env("SPARKRTC_GATEWAY_CONFIG", path);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_subcommand_answers_help_with_examples_on_stdout() {
    for args in [&["--help"][..], &["serve", "--help"], &["check", "-h"], &["sandbox", "--help"], &["demo", "--help"]] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        assert!(help.contains("Usage: sparkrtc-gateway") && help.contains("Examples:"), "{args:?}: {help}");
    }
    let serve = text(&run(&["serve", "--help"], None).stdout);
    assert!(serve.contains("--config <FILE>") && serve.contains("SPARKRTC_GATEWAY_CONFIG"), "{serve}");
}

#[test]
fn the_config_is_named_by_option_equals_form_short_form_or_environment() {
    let path = write("valid.toml", &config(""));
    let shown = path.display().to_string();
    let equals = format!("--config={shown}");
    for (args, env) in [
        (vec!["check", "--config", &shown], None),
        (vec!["check", &equals], None),
        (vec!["check", "-c", &shown], None),
        (vec!["check"], Some(path.as_path())),
    ] {
        let out = run(&args, env);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(": OK."), "{args:?}");
    }
}

#[test]
fn unknown_misplaced_or_missing_options_are_usage_errors() {
    let path = write("usage.toml", &config(""));
    let shown = path.display().to_string();
    for args in [
        vec!["serve", "--config", &shown, "--bogus"],
        vec!["check", "--config", &shown, "--listen", "127.0.0.1:0"], // check binds nothing
        vec!["demo", "--config", &shown],                             // demo has its own config
        vec!["sandbox", "--config", &shown, "--tls-cert", "x.pem"],   // without --tls-key
        vec!["serve", "--config", &shown, "--listen", "nowhere"],
        vec!["check"], // no --config and no SPARKRTC_GATEWAY_CONFIG
        vec!["launch"],
    ] {
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?} should be a usage error: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("error:") && stderr.contains("--help"), "{args:?}: {stderr}");
    }
}

/// Runs `serve` on `path` and returns its exit code and stderr, or fails if it starts serving.
fn serve_refusal(path: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.code(), text(&out.stderr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve accepted {} and kept running", path.display());
        }
        std::thread::sleep(Duration::from_millis(50)); // polling an exit, not a synchronisation
    }
}

/// Each case: what `serve` refuses to start with, `check` refuses with the same exit code, and
/// both name the key and say what to give instead.
#[test]
fn check_refuses_every_file_serve_refuses_and_names_the_key() {
    let certs = support::data("certs");
    let cert = certs.join("server.pem").display().to_string();
    let key = certs.join("server.key").display().to_string();
    let other_key = certs.join("client.key").display().to_string();
    let cases = [
        ("no-cert", format!("[server.tls]\ncert_file = \"/etc/hosts\"\nkey_file = {key:?}\n"), "server.tls.cert_file"),
        ("no-key", format!("[server.tls]\ncert_file = {cert:?}\nkey_file = \"/etc/hosts\"\n"), "server.tls.key_file"),
        (
            "foreign-key",
            format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {other_key:?}\n"),
            "server.tls.cert_file",
        ),
        (
            "client-ca",
            format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = \"/etc/hosts\"\n"),
            "server.tls.client_ca_file",
        ),
        ("upstream-ca", "[upstream]\nca_file = \"/etc/hosts\"\n".to_owned(), "upstream.ca_file"),
        (
            "redis-ca",
            "[limits]\nbackend = \"redis\"\n[limits.redis]\nurl = \"rediss://127.0.0.1:1/0\"\nca_file = \"/etc/hosts\"\n"
                .to_owned(),
            "limits.redis.ca_file",
        ),
    ];
    for (name, extra, named_key) in cases {
        let path = write(&format!("{name}.toml"), &config(&extra));
        let out = run(&["check", "--config", &path.display().to_string()], None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: check accepted it: {}{stderr}", text(&out.stdout));
        assert!(stderr.contains(named_key) && stderr.contains("give a PEM file"), "{name}: {stderr}");
        let (code, serve_stderr) = serve_refusal(&path);
        assert_eq!(code, Some(1), "{name}: serve: {serve_stderr}");
        assert!(serve_stderr.contains(named_key), "{name}: serve: {serve_stderr}");
    }
}

#[test]
fn check_and_serve_agree_on_an_invalid_config() {
    let path = write("invalid.toml", &config("[upstream]\nconnect_timeout = \"soon\"\n"));
    let out = run(&["check", "--config", &path.display().to_string()], None);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("upstream.connect_timeout"), "{}", text(&out.stderr));
    let (code, stderr) = serve_refusal(&path);
    assert_eq!(code, Some(64), "{stderr}");
}

/// Expired temporary keys do not stop `serve` (calls get 503 until the file is rewritten), so
/// `check` passes too, but both say so, naming the key.
#[test]
fn expired_temporary_keys_are_a_warning_in_check_and_serve() {
    let keys = write(
        "expired.json",
        r#"{"credential":{"access":"AK","secret":"SK","securitytoken":"T","expires_at":"2020-01-02T03:04:05Z"}}"#,
    );
    let text_config = config("").replace(
        "access_key = \"AK\"\nsecret_key = \"SK\"\n",
        &format!("credentials_file = {:?}\n", keys.display().to_string()),
    );
    let path = write("expired.toml", &text_config);
    let out = run(&["check", "--config", &path.display().to_string()], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: profiles.main.credentials_file: the temporary keys expired at 2020-01-02T03:04:05Z"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("1 warning(s)"), "{}", text(&out.stdout));

    let serve = Process::serve(&path, None);
    let warning = serve.wait_for("profiles.main.credentials_file: the temporary keys expired");
    assert_eq!(warning["level"], "WARN");
    serve.wait_for("gateway serving");
}

/// `--version` names the commit, and the running binary's `/metrics` says the same in
/// `sparkrtc_gateway_build_info`, beside `process_*` series that describe that process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_metrics_name_the_same_build_and_describe_the_process() {
    let out = run(&["--version"], None);
    assert_eq!(out.status.code(), Some(0));
    let version = text(&out.stdout);
    let commit = version.split("(commit ").nth(1).and_then(|rest| rest.split(')').next()).unwrap_or("");
    assert!(version.contains(env!("CARGO_PKG_VERSION")) && !commit.is_empty(), "{version}");

    let with_admin = config("").replace("[admin]\nenabled = false\n", "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let path = write("metrics.toml", &with_admin);
    let serve = Process::serve(&path, None);
    let admin: std::net::SocketAddr = serve.wait_for("gateway serving")["admin"].as_str().unwrap().parse().unwrap();
    let metrics = support::Harness::client_for(admin).call("GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, 200);
    let scrape = &metrics.body;
    let build =
        format!("sparkrtc_gateway_build_info{{version=\"{}\",commit=\"{commit}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(scrape.contains(&build), "no {build} in:\n{scrape}");
    let value = |name: &str| -> f64 {
        let line = scrape.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("process_resident_memory_bytes") > 1_048_576.0, "a running gateway holds megabytes");
    let open = value("process_open_fds");
    assert!(open >= 4.0 && open <= value("process_max_fds"), "stdio and the listeners at least: {open}");
    // Counted in clock ticks: a process this young may not have used a whole one yet.
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now && started > now - 600.0, "the child started within this test: {started}, now {now}");
}
