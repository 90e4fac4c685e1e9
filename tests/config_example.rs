//! `config/gateway.example.toml` says it lists every key with its default: every key the reader
//! accepts (learned from the reader, `config::known_keys`) appears in it, set or commented out,
//! and it names no key the reader would refuse. `check` passing the example is in tests/config.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use std::collections::BTreeSet;

use sparkrtc_gateway::config::{known_keys, KnownKeys};

/// The example with its commented-out settings and tables switched on: a line `# key = value`
/// or `# [table]` (also behind a second `#`) is a documented key, prose is not.
fn example_uncommented() -> toml::Table {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.example.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let body = line.trim_start_matches(['#', ' ']);
        // A setting is a line that is TOML on its own; prose with an `=` in it is not.
        let setting = body.contains('=') && body.parse::<toml::Table>().is_ok();
        let header = body.starts_with('[') && body.trim_end().ends_with(']') && !body.contains(' ');
        if line.starts_with('#') && (setting || header) {
            out.push_str(body);
        } else if !line.starts_with('#') {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.parse().unwrap_or_else(|e| panic!("the uncommented example is not TOML: {e}\n{out}"))
}

/// A key of the example as the reader's pattern: names become `*`, list items `[]`.
fn pattern(parent: &str, key: &str, known: &KnownKeys) -> String {
    let join = |k: &str| if parent.is_empty() { k.to_owned() } else { format!("{parent}.{k}") };
    let literal = join(key);
    let is_known = |p: &str| known.keys.iter().any(|k| k == p || k.starts_with(&format!("{p}.")));
    if is_known(&literal) || !is_known(&join("*")) {
        literal
    } else {
        join("*")
    }
}

fn walk(table: &toml::Table, parent: &str, known: &KnownKeys, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = pattern(parent, key, known);
        out.insert(path.clone());
        let inner = known.shapes.get(&path).cloned().unwrap_or(path);
        match value {
            toml::Value::Table(t) => walk(t, &inner, known, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        walk(t, &format!("{inner}[]"), known, out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn the_example_lists_every_key_the_reader_accepts_and_no_other() {
    let known = known_keys();
    assert!(known.keys.contains("server.listen") && known.keys.contains("profiles.*.project_id"), "{known:#?}");
    let mut documented = BTreeSet::new();
    walk(&example_uncommented(), "", &known, &mut documented);
    let missing: Vec<_> = known.keys.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known.keys).collect();
    assert!(missing.is_empty(), "config/gateway.example.toml does not document {missing:#?}");
    assert!(unknown.is_empty(), "config/gateway.example.toml names keys the reader refuses: {unknown:#?}");
}
