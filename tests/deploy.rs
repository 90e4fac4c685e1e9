//! The Kubernetes manifests and the Dockerfile, checked as far as a machine without a cluster or
//! a container registry allows: every YAML parses, the configs they embed pass `check`, the pods
//! meet the "restricted" Pod Security Standard, the sidecar is a native sidecar, the central
//! shape serves TLS with shared limits, and base images are pinned by digest.
//! (deploy_kustomize.rs: overlays vs rendered output; deploy_metrics.rs: alerts and dashboard vs
//! a scraped gateway; deploy_systemd.rs: the unit.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

#[path = "deploy_support/mod.rs"]
mod deploy_support;

use std::net::IpAddr;

use deploy_support::*;
use sparkrtc_gateway::config::{Config, Readiness};
use sparkrtc_gateway::ratelimit::Backend;
use yaml_rust2::Yaml;

#[test]
fn every_kubernetes_yaml_file_parses_into_typed_documents() {
    let files = yaml_files(&deploy("kubernetes"));
    assert!(files.len() >= 10, "base, two overlays and their renderings: {files:?}");
    for file in files {
        for doc in parse_yaml(&file) {
            // A JSON 6902 patch is a list of operations; everything else is a typed object.
            if let Some(ops) = doc.as_vec() {
                assert!(
                    ops.iter().all(|op| op["op"].as_str().is_some()),
                    "{}: a list that is not a patch",
                    file.display()
                );
                continue;
            }
            assert!(
                doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                "{}: a document without apiVersion/kind",
                file.display()
            );
        }
    }
}

/// The overlay's one ConfigMap, validated as `check` would, and its one workload.
fn gateway_of(overlay: &str) -> (Vec<Yaml>, Config) {
    let docs = rendered(overlay);
    let maps = find(&docs, "ConfigMap");
    assert_eq!(maps.len(), 1, "{overlay}: one ConfigMap");
    let toml = maps[0]["data"]["gateway.toml"].as_str().unwrap_or_else(|| panic!("{overlay}: no gateway.toml"));
    let config = check_embedded(overlay, toml);
    assert_eq!(find(&docs, "Deployment").len(), 1, "{overlay}: one Deployment");
    (docs, config)
}

fn gateway_container(deployment: &Yaml) -> &Yaml {
    all_containers(pod_spec(deployment))
        .into_iter()
        .find(|c| c["name"].as_str() == Some("sparkrtc-gateway"))
        .expect("a sparkrtc-gateway container")
}

fn port_named(container: &Yaml, name: &str) -> Option<u16> {
    container["ports"].as_vec()?.iter().find(|p| p["name"].as_str() == Some(name))?["containerPort"]
        .as_i64()
        .map(|p| p as u16)
}

#[test]
fn each_overlay_embeds_a_valid_watched_config_with_probes_on_its_admin_port() {
    for overlay in OVERLAYS {
        let (docs, config) = gateway_of(overlay);
        let gateway = gateway_container(find(&docs, "Deployment")[0]);
        assert_eq!(port_named(gateway, "admin"), config.admin_listen.map(|a| a.port()), "{overlay}");
        assert_eq!(gateway["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{overlay}");
        assert_eq!(gateway["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{overlay}");
        assert_eq!(gateway["readinessProbe"]["httpGet"]["port"].as_str(), Some("admin"), "{overlay}");
        assert!(gateway["resources"]["requests"]["cpu"].as_str().is_some(), "{overlay}: requests");
        assert!(gateway["resources"]["limits"]["memory"].as_str().is_some(), "{overlay}: a memory limit");
        // A ConfigMap edit must reach the process: watched, and mounted whole (a subPath mount
        // is never updated by kubelet).
        assert!(config.watch_config, "{overlay}: watch_config");
        for mount in gateway["volumeMounts"].as_vec().unwrap() {
            assert_eq!(mount["readOnly"].as_bool(), Some(true), "{overlay}: {mount:?}");
            assert!(mount["subPath"].is_badvalue(), "{overlay}: {mount:?} would never see updates");
        }
        let mounted =
            |dir: &str| gateway["volumeMounts"].as_vec().unwrap().iter().any(|m| m["mountPath"].as_str() == Some(dir));
        assert!(mounted("/etc/sparkrtc-gateway") && mounted("/var/run/secrets/sparkrtc"), "{overlay}");
        assert_eq!(
            gateway["args"].as_vec().unwrap().last().and_then(Yaml::as_str),
            Some("/etc/sparkrtc-gateway/gateway.toml"),
            "{overlay}"
        );
    }
}

#[test]
fn the_sidecar_starts_before_the_app_and_stops_after_it() {
    let (docs, config) = gateway_of("sidecar");
    let pod = pod_spec(find(&docs, "Deployment")[0]);
    let sidecar = pod["initContainers"].as_vec().expect("the gateway is an init container");
    assert_eq!(sidecar[0]["name"].as_str(), Some("sparkrtc-gateway"));
    assert_eq!(sidecar[0]["restartPolicy"].as_str(), Some("Always"), "a native sidecar");
    let main: Vec<_> = pod["containers"].as_vec().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(main, ["app"], "only the app is a main container");
    assert!(config.listen.ip().is_loopback(), "pod-local only: {}", config.listen);
    assert_eq!(config.readiness, Readiness::All, "one app: ready only while it can be served");
    assert!(matches!(config.limits.backend, Backend::Local), "one pod needs no shared state");
    let monitor = find(&docs, "PodMonitor");
    let labels = &pod_template_labels(find(&docs, "Deployment")[0]);
    assert!(selects(&monitor[0]["spec"]["selector"], labels), "the PodMonitor scrapes the sidecar's pods");
}

fn pod_template_labels(deployment: &Yaml) -> Yaml {
    deployment["spec"]["template"]["metadata"]["labels"].clone()
}

/// A label selector's matchLabels all present in `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    within(&selector["matchLabels"], labels)
}

/// Every label of `wanted` (a non-empty map) present in `labels`.
fn within(wanted: &Yaml, labels: &Yaml) -> bool {
    let wanted = wanted.as_hash().expect("a label map");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k.as_str().unwrap()] == v)
}

#[test]
fn central_serves_tls_shares_limits_and_trusts_ingress_pods_not_the_service_range() {
    let (docs, config) = gateway_of("central");
    let deployment = find(&docs, "Deployment")[0];
    let labels = pod_template_labels(deployment);
    let gateway = gateway_container(deployment);
    let pod = pod_spec(deployment);

    assert!(matches!(config.limits.backend, Backend::Redis(_)), "replicas must share their limits");
    let tls = config.tls.as_ref().expect("caller keys must not cross the pod network in clear");
    assert!(tls.cert_file.ends_with("tls.crt") && tls.key_file.ends_with("tls.key"), "cert-manager's file names");
    // Ingress controllers connect from pod addresses; the Service range never matches.
    let service_ip: IpAddr = "10.96.0.1".parse().unwrap();
    assert!(!config.callers.trusted_proxies.is_empty(), "an example of trusted proxies");
    assert!(
        config.callers.trusted_proxies.iter().all(|c| !c.contains(service_ip)),
        "trusted_proxies covers the default Service range"
    );

    assert_eq!(port_named(gateway, "proxy"), Some(config.listen.port()), "the proxy port is the config's");
    let certificate = find(&docs, "Certificate")[0];
    let tls_secret = certificate["spec"]["secretName"].as_str().unwrap();
    let volumes = pod["volumes"].as_vec().unwrap();
    let tls_volume = volumes.iter().find(|v| v["secret"]["secretName"].as_str() == Some(tls_secret));
    let tls_volume = tls_volume.expect("the Certificate's Secret is mounted");
    let tls_mount = gateway["volumeMounts"].as_vec().unwrap().iter().find(|m| m["name"] == tls_volume["name"]);
    let dir = tls_mount.unwrap()["mountPath"].as_str().unwrap();
    let toml = find(&docs, "ConfigMap")[0]["data"]["gateway.toml"].as_str().unwrap();
    for file in ["cert_file = \"DIR/tls.crt\"", "key_file = \"DIR/tls.key\""] {
        assert!(toml.contains(&file.replace("DIR", dir)), "the config reads the mounted pair: {file}");
    }

    let service =
        find(&docs, "Service").into_iter().find(|s| s["metadata"]["name"].as_str() == Some("sparkrtc-gateway"));
    let service = service.expect("the callers' Service");
    assert!(within(&service["spec"]["selector"], &labels), "the Service selects the pods");
    assert_eq!(service["spec"]["ports"][0]["targetPort"].as_str(), Some("proxy"));
    let namespace = service["metadata"]["namespace"].as_str().unwrap();
    let dns_names: Vec<_> = certificate["spec"]["dnsNames"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert!(dns_names.contains(&format!("sparkrtc-gateway.{namespace}.svc").as_str()), "{dns_names:?}");

    let pdb = find(&docs, "PodDisruptionBudget")[0];
    assert!(selects(&pdb["spec"]["selector"], &labels), "the PDB guards the gateway's pods");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() > 1, "a PDB needs more than one replica");

    let monitor = find(&docs, "ServiceMonitor")[0];
    let admin_service =
        find(&docs, "Service").into_iter().find(|s| selects(&monitor["spec"]["selector"], &s["metadata"]["labels"]));
    let admin_service = admin_service.expect("the ServiceMonitor selects a Service");
    let scraped = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(admin_service["spec"]["ports"].as_vec().unwrap().iter().any(|p| p["name"].as_str() == Some(scraped)));
}

#[test]
fn central_network_policy_admits_callers_and_lets_out_only_dns_redis_and_https() {
    let (docs, config) = gateway_of("central");
    let labels = pod_template_labels(find(&docs, "Deployment")[0]);
    let policy = find(&docs, "NetworkPolicy")[0];
    assert!(selects(&policy["spec"]["podSelector"], &labels));
    let types: Vec<_> = policy["spec"]["policyTypes"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert_eq!(types, ["Ingress", "Egress"]);
    let ports = |rules: &Yaml| -> Vec<String> {
        rules.as_vec().unwrap().iter().flat_map(|r| r["ports"].as_vec().unwrap()).map(port_text).collect()
    };
    assert_eq!(ports(&policy["spec"]["ingress"]), ["proxy", "admin"], "callers to the proxy, Prometheus to admin");
    let Backend::Redis(redis) = &config.limits.backend else { panic!("central uses Redis") };
    let redis_port = redis.url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    let egress = ports(&policy["spec"]["egress"]);
    assert_eq!(egress, ["53", "53", redis_port.as_str(), "443"], "DNS, Redis, SparkRTC and IAM");
}

fn port_text(p: &Yaml) -> String {
    p["port"].as_str().map(str::to_owned).or_else(|| p["port"].as_i64().map(|n| n.to_string())).unwrap()
}

/// The "restricted" Pod Security Standard (Kubernetes docs, "Pod Security Standards"), as the
/// rules apply to one pod spec: what `pod-security.kubernetes.io/enforce: restricted` refuses.
fn restricted_violations(pod: &Yaml) -> Vec<String> {
    let mut out = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host].as_bool() == Some(true) {
            out.push(format!("{host}: true"));
        }
    }
    const VOLUME_TYPES: [&str; 8] =
        ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    for volume in pod["volumes"].as_vec().into_iter().flatten() {
        for (key, _) in volume.as_hash().unwrap() {
            let key = key.as_str().unwrap();
            if key != "name" && !VOLUME_TYPES.contains(&key) {
                out.push(format!("volume type {key}"));
            }
        }
    }
    let pod_sc = &pod["securityContext"];
    for c in all_containers(pod) {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["privileged"].as_bool() == Some(true) {
            out.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
            out.push(format!("{name}: allowPrivilegeEscalation must be false"));
        }
        let dropped = sc["capabilities"]["drop"].as_vec().is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL")));
        if !dropped {
            out.push(format!("{name}: capabilities must drop ALL"));
        }
        for added in sc["capabilities"]["add"].as_vec().into_iter().flatten() {
            if added.as_str() != Some("NET_BIND_SERVICE") {
                out.push(format!("{name}: adds capability {added:?}"));
            }
        }
        let non_root = sc["runAsNonRoot"].as_bool().or(pod_sc["runAsNonRoot"].as_bool());
        if non_root != Some(true) {
            out.push(format!("{name}: runAsNonRoot must be true"));
        }
        if sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64()) == Some(0) {
            out.push(format!("{name}: runAsUser 0"));
        }
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_sc["seccompProfile"]["type"].as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{name}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp:?}"));
        }
        for port in c["ports"].as_vec().into_iter().flatten() {
            if !port["hostPort"].is_badvalue() {
                out.push(format!("{name}: hostPort"));
            }
        }
    }
    out
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    let mut pods = 0;
    for overlay in OVERLAYS {
        for deployment in find(&rendered(overlay), "Deployment") {
            pods += 1;
            let violations = restricted_violations(pod_spec(deployment));
            assert!(violations.is_empty(), "{overlay}: {violations:?}");
            assert_eq!(pod_spec(deployment)["automountServiceAccountToken"].as_bool(), Some(false), "{overlay}");
        }
    }
    assert_eq!(pods, 2);
}

#[test]
fn the_restricted_check_refuses_what_the_previous_manifests_did() {
    // The manifests before this check set no seccomp profile: "restricted" refuses such a pod.
    let docs = rendered("central");
    let mut pod = pod_spec(find(&docs, "Deployment")[0]).clone();
    if let Yaml::Hash(h) = &mut pod {
        h.remove(&Yaml::from_str("securityContext"));
        h.insert(Yaml::from_str("hostNetwork"), Yaml::Boolean(true));
    }
    let violations = restricted_violations(&pod);
    assert!(violations.iter().any(|v| v.contains("seccompProfile")), "{violations:?}");
    assert!(violations.iter().any(|v| v.contains("runAsNonRoot")), "{violations:?}");
    assert!(violations.contains(&"hostNetwork: true".to_owned()), "{violations:?}");
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_pins_every_base_image_by_digest() {
    let text = read(&deploy("Dockerfile"));
    let lines: Vec<&str> = text.lines().collect();
    let froms: Vec<(usize, &str)> =
        lines.iter().enumerate().filter_map(|(i, l)| Some((i, l.strip_prefix("FROM ")?))).collect();
    assert!(froms.len() >= 2, "a build stage and a small final stage");
    for (i, from) in froms {
        let image = from.split_whitespace().next().unwrap();
        let (name, digest) = image.split_once("@sha256:").unwrap_or_else(|| panic!("{image} is not pinned by digest"));
        assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{image}");
        // The tag the digest came from, on the comment line above, so a refresh knows what to ask.
        assert!(name.contains(':'), "{image}: keep the tag beside the digest (Docker uses the digest)");
        assert_eq!(lines[i - 1], format!("# {name}"), "the tag the digest was taken from, above its FROM");
    }
    let user = text.lines().rev().find_map(|l| l.strip_prefix("USER ")).unwrap();
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as {user}");
    assert!(text.contains("COPY --from=build"), "only the binary goes to the final image");
}

/// Issue 13: no long-lived secret on either side in the examples.
#[test]
fn the_gateway_exchanges_its_projected_token_and_central_callers_send_theirs() {
    for overlay in ["sidecar", "central"] {
        let (docs, config) = gateway_of(overlay);
        let profile = &config.profiles["main"];
        assert!(
            matches!(profile.auth, sparkrtc_gateway::config::Auth::Platform(_)),
            "{overlay}: the gateway's own credentials come from its service account token"
        );
        let pod = pod_spec(find(&docs, "Deployment")[0]);
        assert_eq!(pod["serviceAccountName"].as_str(), Some("sparkrtc-gateway"), "{overlay}");
        let volumes = pod["volumes"].as_vec().unwrap();
        let credentials = volumes.iter().find(|v| v["name"].as_str() == Some("credentials")).unwrap();
        let token = &credentials["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"].as_str(), Some("sparkrtc-huawei-iam"), "{overlay}: a token for IAM only");
        assert_eq!(token["path"].as_str(), Some("token"), "{overlay}");
        assert!(find(&docs, "Secret").is_empty(), "{overlay}: no key in the manifests");
    }
    let (_, central) = gateway_of("central");
    assert!(central.callers.jwt.is_some(), "central callers are verified by their service account tokens");
    let moderation = central.callers.named.iter().find(|c| &*c.name == "moderation").unwrap();
    assert_eq!(moderation.jwt_subjects, ["system:serviceaccount:moderation:api"]);
    assert!(moderation.key_sha256.is_none(), "no shared key for an in-cluster caller");
}
