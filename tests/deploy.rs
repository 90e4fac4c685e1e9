//! The files in deploy/ are checked as far as this machine allows (no container engine here):
//! the Kubernetes YAML parses, each gateway.toml it embeds passes `check`'s validation, probes
//! target the admin port, the Dockerfile is multi-stage and non-root, and systemd runs `check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use std::path::{Path, PathBuf};

use sparkrtc_gateway::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)
}

fn manifests() -> Vec<(String, Vec<Yaml>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(deploy("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.display().to_string(), docs));
        }
    }
    assert!(out.len() >= 2, "expected the sidecar and central manifests");
    out
}

/// Validates an embedded config, with its secret files stood in for by files in a temp dir.
fn check_embedded(origin: &str, toml: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["access_key", "secret_key", "password", "ca.pem"] {
        std::fs::write(dir.join(name), "placeholder").unwrap();
    }
    let toml = toml
        .replace("/var/run/secrets/sparkrtc/", &format!("{}/", dir.display()))
        .replace("/var/run/secrets/redis/", &format!("{}/", dir.display()));
    Config::parse(&toml, origin, &dir, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn kubernetes_manifests_parse_and_embed_valid_configs_with_probes_on_the_admin_port() {
    for (file, docs) in manifests() {
        let mut admin_port = None;
        let mut deployments = 0;
        for doc in &docs {
            assert!(
                doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                "{file}: a document without apiVersion/kind"
            );
            match doc["kind"].as_str() {
                Some("ConfigMap") => {
                    let toml = doc["data"]["gateway.toml"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{file}: ConfigMap without gateway.toml"));
                    let config = check_embedded(&file, toml);
                    admin_port = config.admin_listen.map(|a| a.port());
                    if file.ends_with("central.yaml") {
                        assert!(
                            matches!(config.limits.backend, sparkrtc_gateway::ratelimit::Backend::Redis(_)),
                            "{file}: replicas must share their limits"
                        );
                    }
                }
                Some("Deployment") => {
                    deployments += 1;
                    let containers = doc["spec"]["template"]["spec"]["containers"].as_vec().unwrap();
                    let gateway = containers
                        .iter()
                        .find(|c| c["name"].as_str() == Some("sparkrtc-gateway"))
                        .unwrap_or_else(|| panic!("{file}: no gateway container"));
                    let admin = gateway["ports"]
                        .as_vec()
                        .unwrap()
                        .iter()
                        .find(|p| p["name"].as_str() == Some("admin"))
                        .unwrap();
                    assert_eq!(
                        admin["containerPort"].as_i64().map(|p| p as u16),
                        admin_port,
                        "{file}: admin port differs from the config's"
                    );
                    assert_eq!(gateway["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{file}");
                    assert_eq!(gateway["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{file}");
                    assert_eq!(gateway["readinessProbe"]["httpGet"]["port"].as_str(), Some("admin"), "{file}");
                    let mounts = gateway["volumeMounts"].as_vec().unwrap();
                    assert!(
                        mounts.iter().all(|m| m["readOnly"].as_bool() == Some(true)),
                        "{file}: config and secrets mount read-only"
                    );
                    assert_eq!(gateway["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{file}");
                }
                _ => {}
            }
        }
        assert!(admin_port.is_some() && deployments == 1, "{file}: expected one ConfigMap and one Deployment");
    }
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "a build stage and a small final stage");
    let user = text.lines().rev().find_map(|l| l.strip_prefix("USER ")).unwrap();
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as {user}");
    assert!(text.contains("COPY --from=build"), "only the binary goes to the final image");
}

#[test]
fn systemd_unit_checks_the_config_before_starting() {
    let text = std::fs::read_to_string(deploy("sparkrtc-gateway.service")).unwrap();
    let pre = text.lines().find_map(|l| l.strip_prefix("ExecStartPre=")).unwrap();
    assert!(pre.ends_with("sparkrtc-gateway check"), "{pre}");
    assert!(text.lines().any(|l| l.starts_with("ExecStart=") && l.ends_with("sparkrtc-gateway serve")));
}
