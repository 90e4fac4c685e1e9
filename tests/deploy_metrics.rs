//! The alert rules (deploy/kubernetes/base/prometheusrule.yaml) and the Grafana dashboard
//! (deploy/grafana/sparkrtc-gateway.json) against a real scrape: a gateway in front of the mock
//! SparkRTC, limits in a real Redis, one profile whose IAM cannot be reached, a few calls (a
//! 202, a SparkRTC 500, a 429, a 404). Every series a query selects must be in that scrape,
//! with the label values it matches on, so no alert or panel silently watches nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

#[path = "deploy_support/mod.rs"]
mod deploy_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deploy_support::*;
use support::redis::RedisServer;
use support::{config_text, mock_upstream, parse_config, Harness, Reply, APP};

/// One scraped sample's series: name and labels.
type Series = (String, BTreeMap<String, String>);

/// Labels Prometheus adds from the target (ServiceMonitor/PodMonitor discovery), not the gateway.
const TARGET_LABELS: [&str; 7] = ["namespace", "pod", "job", "instance", "service", "container", "endpoint"];

fn parse_scrape(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, _value) = line.rsplit_once(' ').unwrap();
            let Some((name, labels)) = series.split_once('{') else { return (series.to_owned(), BTreeMap::new()) };
            let labels = matchers(labels.trim_end_matches('}')).into_iter().map(|(k, _, v)| (k, v)).collect();
            (name.to_owned(), labels)
        })
        .collect()
}

/// One label matcher: label, operator (`=`, `!=`, `=~`, `!~`), value.
type Matcher = (String, String, String);

/// `a="x",b=~"y"` as matchers.
fn matchers(text: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).unwrap_or_else(|| panic!("no operator in {rest:?}"));
        let label = rest[..op_at].trim().to_owned();
        let quote = rest.find('"').unwrap();
        let op = rest[op_at..quote].trim().to_owned();
        let end = quote + 1 + rest[quote + 1..].find('"').unwrap();
        out.push((label, op, rest[quote + 1..end].to_owned()));
        rest = rest[end + 1..].trim_start_matches([',', ' ']);
    }
    out
}

/// What a PromQL expression selects: each metric name with its label matchers, and the labels
/// it groups by. Strings, ranges (`[5m]`) and numbers are skipped; an identifier followed by
/// `(` is a function or aggregation.
#[derive(Debug, Default)]
struct Query {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: Vec<String>,
}

fn parse_promql(expr: &str) -> Query {
    // Operators, and aggregations (which may be followed by `by (...)` before their parenthesis).
    const KEYWORDS: [&str; 20] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "count",
        "count_values",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
    ];
    let mut q = Query::default();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let until = |from: usize, close: char| from + chars[from..].iter().position(|c| *c == close).unwrap();
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next] == ' ' {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) && called {
                let close = until(next, ')');
                let labels: String = chars[next + 1..close].iter().collect();
                q.grouping.extend(labels.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
                i = close + 1;
            } else if called || KEYWORDS.contains(&word.as_str()) {
                // A function, an aggregation or an operator.
            } else if chars.get(i) == Some(&'{') {
                let close = until(i, '}');
                q.selectors.push((word, matchers(&chars[i + 1..close].iter().collect::<String>())));
                i = close + 1;
            } else {
                q.selectors.push((word, Vec::new()));
            }
        } else if c == '[' {
            i = until(i, ']') + 1;
        } else if c == '"' {
            i = until(i + 1, '"') + 1;
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            assert!(c != '{', "{expr}: a selector without a metric name");
            i += 1;
        }
    }
    q
}

/// A label matcher's regex, for the few constructs the rules use: literals, `.`, `.*`, `|`.
fn regex_matches(pattern: &str, value: &str) -> bool {
    fn at(p: &[char], v: &[char]) -> bool {
        match p {
            [] => v.is_empty(),
            ['.', '*', rest @ ..] => (0..=v.len()).any(|n| at(rest, &v[n..])),
            ['.', rest @ ..] => !v.is_empty() && at(rest, &v[1..]),
            [c, rest @ ..] => {
                assert!(!"()[]+?{}\\^$".contains(*c), "extend regex_matches for {c:?}");
                v.first() == Some(c) && at(rest, &v[1..])
            }
        }
    }
    let v: Vec<char> = value.chars().collect();
    pattern.split('|').any(|alt| at(&alt.chars().collect::<Vec<_>>(), &v))
}

/// Why `expr` would select nothing from `scrape` (empty: it selects series).
fn unmatched(expr: &str, scrape: &[Series]) -> Vec<String> {
    let q = parse_promql(expr);
    let mut out = Vec::new();
    assert!(!q.selectors.is_empty(), "{expr}: selects no metric");
    let mut labels_seen: BTreeSet<&str> = BTreeSet::from(["le"]);
    for (name, matchers) in &q.selectors {
        let series: Vec<_> = scrape.iter().filter(|(n, _)| n == name).collect();
        if series.is_empty() {
            out.push(format!("{name}: not exported"));
            continue;
        }
        series.iter().for_each(|(_, l)| labels_seen.extend(l.keys().map(String::as_str)));
        for (label, op, value) in matchers.iter().filter(|(l, _, _)| !TARGET_LABELS.contains(&l.as_str())) {
            let hit = series.iter().any(|(_, l)| match (op.as_str(), l.get(label)) {
                ("=", Some(v)) => v == value,
                ("=~", Some(v)) => regex_matches(value, v),
                ("!=" | "!~", Some(_)) => true,
                _ => false,
            });
            if !hit {
                out.push(format!("{name}{{{label}{op}\"{value}\"}}: no such series"));
            }
        }
    }
    for label in &q.grouping {
        if !labels_seen.contains(label.as_str()) && !TARGET_LABELS.contains(&label.as_str()) {
            out.push(format!("by ({label}): no selected series has it"));
        }
    }
    out
}

#[test]
fn the_query_reader_finds_names_matchers_and_grouping() {
    let q = parse_promql(
        r#"histogram_quantile(0.99, sum by (le, app) (rate(a_b_bucket{x="1",y=~"5.."}[5m]))) / on (app) c > bool 0.5"#,
    );
    let names: Vec<_> = q.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a_b_bucket", "c"]);
    assert_eq!(q.selectors[0].1[1], ("y".to_owned(), "=~".to_owned(), "5..".to_owned()));
    assert_eq!(q.grouping, ["le", "app", "app"]);
    assert!(regex_matches("5..", "503") && !regex_matches("5..", "429") && regex_matches("a|b.*", "bcd"));
    let scrape = parse_scrape("a_b_bucket{x=\"1\",y=\"500\",le=\"+Inf\"} 3\nc{app=\"z\"} 1\n");
    assert!(unmatched(r#"sum by (app) (a_b_bucket{x="1",y=~"5.."}) + c"#, &scrape).is_empty());
    assert_eq!(unmatched(r#"a_b{x="2"}"#, &scrape), ["a_b: not exported"]);
    assert_eq!(unmatched(r#"a_b_bucket{x="2"}"#, &scrape), ["a_b_bucket{x=\"2\"}: no such series"]);
}

/// The scrape of a gateway that has seen a little of everything.
async fn scrape_a_busy_gateway() -> Vec<Series> {
    let redis = RedisServer::start();
    // An IAM that cannot be reached: the token profile stays unusable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!(
        r#"
[profiles.tok]
kind = "token"
iam_endpoint = "https://127.0.0.1:{closed}"
domain = "my-account"
user = "gateway-user"
password = "not-a-real-password"
project_id = "fedcba9876543210fedcba9876543210"

[apps."token-app"]
profile = "tok"
allow = [{{ callers = ["*"], operations = ["*"] }}]

[limits]
backend = "redis"
[limits.redis]
url = "{}"
timeout = "10s"
"#,
        redis.url()
    );
    let show_app = format!("/v2/apps/{APP}");
    let failing = show_app.clone();
    let (upstream, _, text) = mock_upstream(
        move |seen| Reply::status(if seen.path_and_query == failing { 500 } else { 202 }),
        |addr| {
            config_text(addr, &extra).replacen(
                &format!("[apps.\"{APP}\"]\nprofile = \"main\"\n"),
                &format!("[apps.\"{APP}\"]\nprofile = \"main\"\nlimit = {{ rate = \"1/m\", burst = 3 }}\n"),
                1,
            )
        },
    )
    .await;
    let gateway = sparkrtc_gateway::Gateway::new(parse_config(&text)).unwrap();
    let running = sparkrtc_gateway::start(gateway, None).await.unwrap();
    let h = Harness::around(&running, upstream);
    let admin = running.admin_addr.unwrap();

    assert_eq!(h.call("GET", &show_app, &[], "").await.status, 500, "SparkRTC's 500, relayed");
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(h.remove_users(&format!("{{\"user_ids\":[\"u{i}\"]}}")).await.status);
    }
    assert!(statuses.contains(&202) && statuses.contains(&429), "{statuses:?}");
    assert_eq!(h.call("GET", "/v2/secrets", &[], "").await.status, 404);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = h.call_at(admin, "GET", "/metrics", &[], "").await.body;
        if text.contains("sparkrtc_gateway_profile_usable{profile=\"tok\"} 0") {
            drop(redis);
            return parse_scrape(&text);
        }
        assert!(Instant::now() < deadline, "the profile with no reachable IAM never turned unusable:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each alert's expression, by alert name, from the base's PrometheusRule.
fn alert_rules() -> Vec<(String, String)> {
    let docs = parse_yaml(&deploy("kubernetes/base/prometheusrule.yaml"));
    let groups = docs[0]["spec"]["groups"].as_vec().unwrap();
    let rules = groups.iter().flat_map(|g| g["rules"].as_vec().unwrap());
    rules.map(|r| (r["alert"].as_str().unwrap().to_owned(), r["expr"].as_str().unwrap().to_owned())).collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&deploy("grafana/sparkrtc-gateway.json"))).expect("the dashboard is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_panels_select_series_the_gateway_exports() {
    let scrape = scrape_a_busy_gateway().await;

    let rules = alert_rules();
    let wanted = ["profile_usable", "status=\"429\"", "status=~\"5..\"", "clock_skew", "backend_up", "backend_errors"];
    for needle in wanted {
        assert!(rules.iter().any(|(_, e)| e.contains(needle)), "no alert on {needle}");
    }
    let mut problems = Vec::new();
    for (alert, expr) in &rules {
        problems.extend(unmatched(expr, &scrape).into_iter().map(|p| format!("alert {alert}: {p}")));
    }

    let dash = dashboard();
    let panels = dash["panels"].as_array().unwrap();
    let mut queried = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().filter(|t| !t.is_empty()).expect("every panel has a title");
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().filter(|u| !u.is_empty());
        assert!(unit.is_some(), "panel {title:?} has no unit");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("panel {title:?} has no query")) {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            parse_promql(expr).selectors.into_iter().for_each(|(n, _)| {
                queried.insert(n);
            });
            problems.extend(unmatched(expr, &scrape).into_iter().map(|p| format!("panel {title:?}: {p}")));
        }
    }
    assert!(problems.is_empty(), "queries that select nothing:\n{}", problems.join("\n"));

    // The dashboard covers what the issue asks for.
    for metric in [
        "sparkrtc_gateway_requests_total",
        "sparkrtc_gateway_request_duration_seconds_bucket",
        "sparkrtc_gateway_upstream_duration_seconds_bucket",
        "sparkrtc_gateway_refusals_total",
        "sparkrtc_gateway_profile_usable",
        "sparkrtc_gateway_upstream_errors_total",
        "sparkrtc_gateway_ratelimit_backend_up",
        "sparkrtc_gateway_ratelimit_backend_duration_seconds_bucket",
        "sparkrtc_gateway_ratelimit_backend_errors_total",
        "sparkrtc_gateway_ratelimit_backend_failed_open_total",
    ] {
        assert!(queried.contains(metric), "no panel shows {metric}");
    }
}

#[test]
fn dashboard_panels_have_unique_ids_and_fit_the_grid() {
    let dash = dashboard();
    let panels = dash["panels"].as_array().unwrap();
    let ids: BTreeSet<_> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{}: wider than the grid", p["title"]);
    }
    let variables: Vec<_> = dash["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].clone()).collect();
    assert!(variables.contains(&"datasource".into()), "the data source is chosen on import");
}
