//! Helpers shared by the tests of deploy/: where its files are, the rendered manifests, and the
//! validation an embedded gateway config must pass.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
// a failed expectation is the test failing
// Shared by several test crates: `pub` is how each reaches these helpers, not a library surface.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};

use sparkrtc_gateway::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

pub fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn parse_yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.yaml` file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The overlays a team applies; each has its rendered output in `kubernetes/rendered/NAME.yaml`.
pub const OVERLAYS: [&str; 2] = ["sidecar", "central"];

/// The committed rendering of one overlay: what `kubectl apply -k` would send.
pub fn rendered(overlay: &str) -> Vec<Yaml> {
    parse_yaml(&deploy(&format!("kubernetes/rendered/{overlay}.yaml")))
}

pub fn find<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

/// The pod template's spec of a workload.
pub fn pod_spec(doc: &Yaml) -> &Yaml {
    &doc["spec"]["template"]["spec"]
}

/// Containers and init containers (native sidecars among them).
pub fn all_containers(pod: &Yaml) -> Vec<&Yaml> {
    let list = |key: &str| pod[key].as_vec().map(|v| v.iter().collect::<Vec<_>>()).unwrap_or_default();
    let mut out = list("initContainers");
    out.extend(list("containers"));
    out
}

/// The directories deploy/ files mount secrets and certificates from, stood in for by a temp dir.
const SECRET_DIRS: [&str; 5] = [
    "/var/run/secrets/sparkrtc/",
    "/var/run/secrets/jwks/",
    "/var/run/secrets/redis/",
    "/var/run/secrets/tls/",
    "/run/credentials/sparkrtc-gateway.service/",
];

/// Validates an embedded config as `sparkrtc-gateway check` does, with its secret and
/// certificate files stood in for by placeholder files in a temp dir.
pub fn check_embedded(origin: &str, toml: &str) -> Config {
    // A directory per call: tests run in parallel, and rewriting a file another test is
    // reading would let it see the file empty.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sparkrtc-gw-deploy-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["access_key", "secret_key", "password", "ca.pem", "tls.crt", "tls.key", "token"] {
        std::fs::write(dir.join(name), "placeholder").unwrap();
    }
    // A JWKS is parsed at check time: a real (test-only) public key stands in for the cluster's.
    let jwks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/deploy-jwks.json");
    std::fs::copy(jwks, dir.join("jwks.json")).unwrap();
    let toml = SECRET_DIRS.iter().fold(toml.to_owned(), |t, d| t.replace(d, &format!("{}/", dir.display())));
    Config::parse(&toml, origin, &dir, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}
