//! The module map of ARCHITECTURE.md, enforced: every `crate::` path in `src/` names a module
//! at most as high in the map as the module it is written in, never one above it. Modules are
//! listed bottom-up; a module may import only the modules listed before it. So the import
//! graph has no cycle, and a new upward import fails here, naming the file and the line, until
//! the map (and ARCHITECTURE.md) says why it is right.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom-up, layer by layer, as ARCHITECTURE.md draws it.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundations", &["cause", "clock", "secret", "stream", "request_id", "log_writer"]),
    ("domain", &["signer", "catalog", "policy", "ratelimit", "readiness"]),
    ("transport", &["tls", "upstream", "body", "trace"]),
    ("request-path vocabulary", &["error", "validate", "relay", "metrics", "audit"]),
    ("components", &["credentials"]),
    ("configuration", &["config"]),
    ("serving", &["listener", "telemetry", "background", "gateway", "admin", "sandbox"]),
    ("process", &["server", "cli", "demo"]),
];

fn rank() -> BTreeMap<&'static str, usize> {
    LAYERS.iter().flat_map(|(_, modules)| modules.iter()).enumerate().map(|(i, m)| (*m, i)).collect()
}

fn layer_of(module: &str) -> &'static str {
    LAYERS.iter().find(|(_, modules)| modules.contains(&module)).map(|(layer, _)| *layer).unwrap_or("none")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/credentials/platform/oidc.rs` -> `credentials`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Names the crate root re-exports (`pub use gateway::Gateway;`), by the module they come from.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut names = BTreeMap::new();
    for line in lib.lines().map(str::trim).filter(|l| l.starts_with("pub use ")) {
        let path = line.trim_start_matches("pub use ").trim_end_matches(';');
        let Some((module, rest)) = path.split_once("::") else { continue };
        let items = rest.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let name = item.rsplit("::").next().unwrap().rsplit(" as ").next().unwrap();
            names.insert(name.to_owned(), module.to_owned());
        }
    }
    names
}

/// The first path segment of each `crate::` path on a line: `crate::a::B` -> `a`,
/// `crate::{a, b::C}` -> `a`, `b`. Line comments are ignored.
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident =
            rest[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            found.extend(inner.split(',').map(|i| ident(i.trim())).filter(|i| !i.is_empty()));
        } else {
            found.push(ident(rest));
        }
    }
    found
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// Every import of one top-level module by another: (from, to) -> where.
fn imports() -> BTreeMap<(String, String), Vec<String>> {
    let modules = rank();
    let reexports = root_reexports();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let from = module_of(&file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for first in crate_paths(line) {
                let to = if modules.contains_key(first.as_str()) {
                    first.clone()
                } else if let Some(module) = reexports.get(&first) {
                    module.clone()
                } else {
                    panic!("{}:{}: crate::{first} is neither a module nor a root re-export", file.display(), n + 1)
                };
                if to != from {
                    let at = format!("{}:{}", file.strip_prefix(src()).unwrap().display(), n + 1);
                    edges.entry((from.clone(), to)).or_default().push(at);
                }
            }
        }
    }
    edges
}

#[test]
fn every_module_of_the_crate_has_its_place_in_the_map() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_suffix(';'))
        .filter_map(|l| l.strip_prefix("pub mod ").or(l.strip_prefix("pub(crate) mod ")).or(l.strip_prefix("mod ")))
        .map(str::to_owned)
        .collect();
    let mapped: BTreeSet<String> = rank().keys().map(|m| (*m).to_owned()).collect();
    assert_eq!(declared, mapped, "lib.rs and the module map list different modules; place new ones in LAYERS");
}

#[test]
fn no_module_imports_one_above_it() {
    let rank = rank();
    let upward: Vec<String> = imports()
        .into_iter()
        .filter(|((from, to), _)| rank[from.as_str()] < rank[to.as_str()])
        .map(|((from, to), at)| {
            format!(
                "{from} ({}) imports {to} ({}) at {}",
                layer_of(from.as_str()),
                layer_of(to.as_str()),
                at.join(", ")
            )
        })
        .collect();
    assert!(upward.is_empty(), "imports against the module map (ARCHITECTURE.md):\n{}", upward.join("\n"));
}

#[test]
fn the_scan_sees_imports_in_every_form_the_code_uses() {
    assert_eq!(crate_paths("use crate::config::{Config, ConfigError};"), ["config"]);
    assert_eq!(crate_paths("use crate::{listener, telemetry, Gateway};"), ["listener", "telemetry", "Gateway"]);
    assert_eq!(crate_paths("    let x = crate::secret::constant_time_eq(a, b); // crate::gateway"), ["secret"]);
    assert_eq!(crate_paths("fn f() -> Result<(), crate::BoxError>"), ["BoxError"]);
    assert!(crate_paths("use sparkrtc_crate::x;").is_empty());
    assert_eq!(root_reexports().get("Gateway").map(String::as_str), Some("gateway"));
    // The known edges are seen: the scan is not vacuous.
    let edges = imports();
    assert!(edges.contains_key(&("config".to_owned(), "credentials".to_owned())));
    assert!(edges.contains_key(&("gateway".to_owned(), "upstream".to_owned())));
}
