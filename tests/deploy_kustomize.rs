//! What a team applies is what the other tests checked: each overlay under
//! deploy/kubernetes/overlays is built here (the few kustomize features the layout uses:
//! resources, strategic-merge and JSON 6902 patches, images, namespace) and must equal the
//! committed rendering in deploy/kubernetes/rendered, which deploy.rs and deploy_metrics.rs
//! examine. Where kubectl is installed, its own `kubectl kustomize` must agree too.
//!
//! After changing base/ or an overlay, re-render (deploy/README.md, "Kustomize layout").

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

#[path = "deploy_support/mod.rs"]
mod deploy_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use deploy_support::*;
use yaml_rust2::{Yaml, YamlLoader};

/// kustomize's build of one kustomization directory, for the features the layout uses.
fn build(dir: &Path) -> Vec<Yaml> {
    let k = &parse_yaml(&dir.join("kustomization.yaml"))[0];
    for (key, _) in k.as_hash().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            ["apiVersion", "kind", "resources", "patches", "images", "namespace"].contains(&key),
            "{}: `{key}` is not built by this test; extend it before using the feature",
            dir.display()
        );
    }
    let mut docs = Vec::new();
    for resource in list(&k["resources"]) {
        let path = dir.join(resource.as_str().unwrap());
        if path.is_dir() {
            docs.extend(build(&path));
        } else {
            docs.extend(parse_yaml(&path));
        }
    }
    for patch in list(&k["patches"]) {
        for body in parse_yaml(&dir.join(patch["path"].as_str().unwrap())) {
            if let Some(ops) = body.as_vec() {
                let (kind, name) =
                    (patch["target"]["kind"].as_str().unwrap(), patch["target"]["name"].as_str().unwrap());
                let renames = patch["options"]["allowNameChange"].as_bool() == Some(true);
                let doc = resource_mut(&mut docs, kind, name);
                json_patch(doc, ops);
                assert!(renames || doc["metadata"]["name"].as_str() == Some(name), "a rename needs allowNameChange");
            } else {
                let (kind, name) = (body["kind"].as_str().unwrap(), body["metadata"]["name"].as_str().unwrap());
                merge(resource_mut(&mut docs, kind, name), &body, "");
            }
        }
    }
    for image in list(&k["images"]) {
        for doc in &mut docs {
            set_image(doc, image);
        }
    }
    if let Some(namespace) = k["namespace"].as_str() {
        for doc in &mut docs {
            set(&mut doc["metadata"], "namespace", Yaml::from_str(namespace));
        }
    }
    docs
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

fn resource_mut<'a>(docs: &'a mut [Yaml], kind: &str, name: &str) -> &'a mut Yaml {
    docs.iter_mut()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} to patch"))
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_owned())
}

fn set(map: &mut Yaml, k: &str, value: Yaml) {
    let Yaml::Hash(h) = map else { panic!("{k}: not in a map") };
    h.insert(key(k), value);
}

/// The key two list entries are matched by in a strategic merge (the Kubernetes API's
/// `patchMergeKey` of the fields the layout patches); other lists are replaced whole.
fn merge_key(field: &str, items: &[Yaml]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "volumes" | "env" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" if items.iter().all(|p| !p["containerPort"].is_badvalue()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Strategic merge of `patch` into `base` (`field`: the key `base` sits under). Entries the
/// patch adds to a keyed list come first, then the base's own, as kustomize orders them.
fn merge(base: &mut Yaml, patch: &Yaml, field: &str) {
    match (base, patch) {
        (Yaml::Hash(b), Yaml::Hash(p)) => {
            for (k, v) in p {
                match (v, b.get_mut(k)) {
                    (Yaml::Null, _) => {
                        b.remove(k);
                    }
                    (_, Some(existing)) => merge(existing, v, k.as_str().unwrap()),
                    (_, None) => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Yaml::Array(b), Yaml::Array(p)) if merge_key(field, p).is_some() => {
            let id = merge_key(field, p).unwrap();
            let mut merged: Vec<Yaml> = p.iter().filter(|e| !b.iter().any(|o| o[id] == e[id])).cloned().collect();
            for mut own in b.drain(..) {
                if let Some(change) = p.iter().find(|e| e[id] == own[id]) {
                    merge(&mut own, change, "");
                }
                merged.push(own);
            }
            *b = merged;
        }
        (b, p) => *b = p.clone(),
    }
}

/// RFC 6902 operations on one resource: add, replace, remove and move (all the layout uses).
fn json_patch(doc: &mut Yaml, ops: &[Yaml]) {
    for op in ops {
        let path = op["path"].as_str().unwrap();
        match op["op"].as_str().unwrap() {
            "add" | "replace" => put(doc, path, op["value"].clone()),
            "remove" => {
                take(doc, path);
            }
            "move" => {
                let value = take(doc, op["from"].as_str().unwrap());
                put(doc, path, value);
            }
            other => panic!("JSON patch op {other} is not built by this test"),
        }
    }
}

/// The parent of a JSON pointer's target, and the last segment.
fn parent<'a>(doc: &'a mut Yaml, pointer: &'a str) -> (&'a mut Yaml, &'a str) {
    let (dirs, last) = pointer.rsplit_once('/').unwrap();
    let mut at = doc;
    for segment in dirs.split('/').skip(1) {
        at = match at {
            Yaml::Hash(h) => h.get_mut(&key(segment)).unwrap_or_else(|| panic!("{pointer}: no {segment}")),
            Yaml::Array(a) => &mut a[segment.parse::<usize>().unwrap()],
            _ => panic!("{pointer}: {segment} is a scalar"),
        };
    }
    (at, last)
}

fn put(doc: &mut Yaml, pointer: &str, value: Yaml) {
    match parent(doc, pointer) {
        (Yaml::Hash(h), last) => {
            h.insert(key(last), value);
        }
        (Yaml::Array(a), "-") => a.push(value),
        (Yaml::Array(a), last) => a.insert(last.parse().unwrap(), value),
        _ => panic!("{pointer}: cannot add here"),
    }
}

fn take(doc: &mut Yaml, pointer: &str) -> Yaml {
    match parent(doc, pointer) {
        (Yaml::Hash(h), last) => h.remove(&key(last)).unwrap_or_else(|| panic!("{pointer}: nothing to remove")),
        (Yaml::Array(a), last) => a.remove(last.parse().unwrap()),
        _ => panic!("{pointer}: nothing to remove"),
    }
}

/// kustomize's `images`: every `image:` naming `name` (any tag or digest) gets the new name
/// and the tag or digest.
fn set_image(node: &mut Yaml, rule: &Yaml) {
    match node {
        Yaml::Hash(h) => {
            for (k, v) in h.iter_mut() {
                let current = v.as_str().filter(|_| k.as_str() == Some("image")).map(image_name);
                if current.as_deref() == rule["name"].as_str() {
                    let name = rule["newName"].as_str().or(rule["name"].as_str()).unwrap();
                    *v = Yaml::String(match (rule["digest"].as_str(), rule["newTag"].as_str()) {
                        (Some(digest), _) => format!("{name}@{digest}"),
                        (None, Some(tag)) => format!("{name}:{tag}"),
                        (None, None) => name.to_owned(),
                    });
                } else {
                    set_image(v, rule);
                }
            }
        }
        Yaml::Array(a) => a.iter_mut().for_each(|v| set_image(v, rule)),
        _ => {}
    }
}

/// An image reference without its tag or digest.
fn image_name(image: &str) -> String {
    let image = image.split('@').next().unwrap();
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name.to_owned(),
        _ => image.to_owned(),
    }
}

/// Documents by kind, namespace and name: equality ignores the order documents come in.
fn canonical(docs: &[Yaml]) -> BTreeMap<String, Yaml> {
    docs.iter()
        .map(|d| {
            let m = &d["metadata"];
            let namespace = m["namespace"].as_str().unwrap_or("");
            (format!("{} {namespace}/{}", d["kind"].as_str().unwrap(), m["name"].as_str().unwrap()), d.clone())
        })
        .collect()
}

/// Map keys sorted, so equality ignores the order kustomize writes keys in.
fn canon(y: &Yaml) -> String {
    match y {
        Yaml::Hash(h) => {
            let sorted: BTreeMap<String, String> = h.iter().map(|(k, v)| (canon(k), canon(v))).collect();
            let entries: Vec<String> = sorted.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", entries.join(", "))
        }
        Yaml::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}"),
    }
}

/// The innermost paths where `a` and `b` differ (map key order aside).
fn diff(a: &Yaml, b: &Yaml, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Yaml::Hash(x), Yaml::Hash(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (l, r) = (x.get(k).unwrap_or(&Yaml::BadValue), y.get(k).unwrap_or(&Yaml::BadValue));
                diff(l, r, &format!("{path}.{}", k.as_str().unwrap_or("?")), out);
            }
        }
        (Yaml::Array(x), Yaml::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().for_each(|(i, (l, r))| diff(l, r, &format!("{path}[{i}]"), out));
        }
        _ if canon(a) == canon(b) => {}
        _ => out.push(format!("  {path}: built {} / rendered {}", canon(a), canon(b))),
    }
}

/// Where two renderings differ, by document and path.
fn differences(built: &BTreeMap<String, Yaml>, committed: &BTreeMap<String, Yaml>) -> Vec<String> {
    let mut out = Vec::new();
    for id in built.keys().chain(committed.keys().filter(|id| !built.contains_key(*id))) {
        match (built.get(id), committed.get(id)) {
            (Some(l), Some(r)) => {
                let mut paths = Vec::new();
                diff(l, r, "", &mut paths);
                if !paths.is_empty() {
                    out.push(format!("{id}:\n{}", paths.join("\n")));
                }
            }
            (l, _) => out.push(format!("{id}: only in the {}", if l.is_some() { "build" } else { "rendering" })),
        }
    }
    out
}

fn overlay_dir(overlay: &str) -> std::path::PathBuf {
    deploy(&format!("kubernetes/overlays/{overlay}"))
}

#[test]
fn each_overlay_builds_to_its_committed_rendering() {
    for overlay in OVERLAYS {
        let built = canonical(&build(&overlay_dir(overlay)));
        let committed = canonical(&rendered(overlay));
        let diff = differences(&built, &committed);
        assert!(
            diff.is_empty(),
            "{overlay}: re-render deploy/kubernetes/rendered/{overlay}.yaml:\n{}",
            diff.join("\n")
        );
    }
}

#[test]
fn the_overlays_share_the_base_container_instead_of_copying_it() {
    // One place to patch: the gateway container is written once, in base/.
    for file in yaml_files(&deploy("kubernetes/overlays")) {
        let text = read(&file);
        for shared in ["livenessProbe", "readinessProbe", "image: sparkrtc-gateway", "--config"] {
            assert!(!text.contains(shared), "{}: repeats the base's {shared}", file.display());
        }
    }
    let base = build(&deploy("kubernetes/base"));
    let sidecar = build(&overlay_dir("sidecar"));
    let central = build(&overlay_dir("central"));
    let gateway = |docs: &[Yaml]| {
        let pod = pod_spec(docs.iter().find(|d| d["kind"].as_str() == Some("Deployment")).unwrap()).clone();
        all_containers(&pod).into_iter().find(|c| c["name"].as_str() == Some("sparkrtc-gateway")).unwrap().clone()
    };
    for docs in [&sidecar, &central] {
        let g = gateway(docs);
        for field in ["image", "args", "livenessProbe", "readinessProbe", "securityContext"] {
            assert_eq!(g[field], gateway(&base)[field], "{field} comes from the base");
        }
    }
}

#[test]
fn the_builder_applies_what_it_claims() {
    // A check of the checker: a strategic merge, a JSON move and an image rule on a tiny input.
    let mut doc = YamlLoader::load_from_str(
        "kind: D\nmetadata: {name: a}\nspec:\n  containers:\n    - {name: g, image: gw:1, ports: [{containerPort: 1}]}\n",
    )
    .unwrap()
    .remove(0);
    let patch = YamlLoader::load_from_str(
        "spec:\n  containers:\n    - {name: g, ports: [{containerPort: 2}]}\n    - {name: app}\n",
    )
    .unwrap()
    .remove(0);
    merge(&mut doc, &patch, "");
    assert_eq!(
        canon(&doc["spec"]["containers"]),
        canon(
            &YamlLoader::load_from_str(
                "[{name: app}, {name: g, image: gw:1, ports: [{containerPort: 2}, {containerPort: 1}]}]"
            )
            .unwrap()[0]
        )
    );
    let ops = YamlLoader::load_from_str("- {op: move, from: /spec/containers, path: /spec/initContainers}").unwrap();
    json_patch(&mut doc, ops[0].as_vec().unwrap());
    assert!(doc["spec"]["containers"].is_badvalue() && doc["spec"]["initContainers"].as_vec().unwrap().len() == 2);
    let rule = YamlLoader::load_from_str("{name: gw, newName: r.example/gw, digest: 'sha256:ab'}").unwrap().remove(0);
    set_image(&mut doc, &rule);
    assert_eq!(doc["spec"]["initContainers"][1]["image"].as_str(), Some("r.example/gw@sha256:ab"));
}

#[test]
fn kubectl_kustomize_agrees_with_the_committed_rendering_where_kubectl_is_installed() {
    // Debian packages kubectl 1.20 (kubernetes-client), whose kustomize predates the `patches`
    // field; so kubectl is not installed by this test, and the build above is the check that
    // always runs. Where a current kubectl is present, the real tool must agree as well.
    let Ok(version) = Command::new("kubectl").args(["version", "--client"]).output() else {
        eprintln!("kubectl is not installed: the committed renderings are checked by this test's own build only");
        return;
    };
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    for overlay in OVERLAYS {
        let out = Command::new("kubectl").arg("kustomize").arg(overlay_dir(overlay)).output().unwrap();
        assert!(out.status.success(), "{overlay}: {}", String::from_utf8_lossy(&out.stderr));
        let built = YamlLoader::load_from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let diff = differences(&canonical(&built), &canonical(&rendered(overlay)));
        assert!(diff.is_empty(), "{overlay}: kubectl kustomize differs:\n{}", diff.join("\n"));
    }
}
