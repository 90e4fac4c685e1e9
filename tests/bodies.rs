//! Every operation's body checked against the official SDK's request model, through the running
//! gateway: the smallest valid body and a full one are forwarded; a required field removed or
//! any known field of the wrong type is 400 RTCGW.4005 naming its JSON path, with no upstream
//! call and no rate-limit budget spent; unknown fields pass. The bodies are built from the
//! generated table itself, so a model added by the generator is covered without a new test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sparkrtc_gateway::catalog::schema::{Model, Type};
use sparkrtc_gateway::catalog::{Catalog, Operation};
use support::{config_text, start_with, Harness, Reply, APP, PROJECT};

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

fn with_body() -> impl Iterator<Item = (&'static Operation, &'static Model)> {
    Catalog.operations().iter().filter_map(|op| Some((op, Catalog.body_schema(op.name)?)))
}

fn target(op: &Operation) -> String {
    op.template
        .replace("{project_id}", PROJECT)
        .replace("{app_id}", APP)
        .replace("{room_id}", "room-1")
        .replace("{job_id}", "job-1")
        .replace("{rule_id}", "rule-1")
}

/// A valid value of `of`; `full` sets optional fields too. Lists hold two entries, so a path
/// into one shows its index (`[1]`).
fn valid(of: &Type, full: bool) -> Value {
    match of {
        Type::Str | Type::Any => json!("x"),
        Type::Int => json!(3),
        Type::Float => json!(0.5),
        Type::Bool => json!(true),
        Type::Model(model) => object(model, full),
        Type::List(item) => json!([valid(&item.as_type(), full), valid(&item.as_type(), full)]),
        Type::Map(item) => json!({ "k": valid(&item.as_type(), full) }),
    }
}

fn object(model: &Model, full: bool) -> Value {
    let fields = model.fields.iter().filter(|f| full || f.required);
    Value::Object(fields.map(|f| (f.key.to_owned(), valid(&f.of, full))).collect())
}

/// A value `of` refuses, as JSON text would carry it by mistake; `None` for `object` (anything goes).
fn wrong(of: &Type) -> Option<Value> {
    Some(match of {
        Type::Any => return None,
        Type::Str => json!(1),
        Type::Int => json!(1.5),
        Type::Float => json!("0.5"),
        Type::Bool => json!("true"),
        Type::Model(_) | Type::Map(_) => json!(["x"]),
        Type::List(_) => json!({ "x": 1 }),
    })
}

/// One way to break a full body: its description, the body, and the JSON path the answer names.
struct Broken {
    what: String,
    body: Value,
    path: String,
}

/// Every required field removed and every known field mistyped, at any depth, one at a time.
fn breakages(model: &'static Model) -> Vec<Broken> {
    let full = object(model, true);
    let mut out = Vec::new();
    walk(model, &full, &mut Vec::new(), &mut |pointer, path, field_type, required| {
        if required {
            let mut body = full.clone();
            remove(&mut body, pointer);
            out.push(Broken { what: format!("{path} removed"), body, path: path.to_owned() });
        }
        if let Some(bad) = wrong(field_type) {
            let mut body = full.clone();
            *body.pointer_mut(&pointer_text(pointer)).unwrap() = bad.clone();
            out.push(Broken { what: format!("{path} = {bad}"), body, path: path.to_owned() });
        }
    });
    out
}

#[derive(Clone)]
enum Step {
    Key(&'static str),
    Index(usize),
}

type Visit<'a> = dyn FnMut(&[Step], &str, &Type, bool) + 'a;

/// Calls `visit` for each field of `model` (found at `pointer` in `root`) and below, with its
/// JSON pointer steps, its dotted path, its type and whether it is required. In lists, the last
/// entry is visited.
fn walk(model: &'static Model, root: &Value, pointer: &mut Vec<Step>, visit: &mut Visit<'_>) {
    for field in model.fields {
        pointer.push(Step::Key(field.key));
        visit(pointer, &dotted(pointer), &field.of, field.required);
        match &field.of {
            Type::Model(inner) => walk(inner, root, pointer, visit),
            Type::List(item) => {
                let last = root.pointer(&pointer_text(pointer)).unwrap().as_array().unwrap().len() - 1;
                pointer.push(Step::Index(last));
                let of = item.as_type();
                visit(pointer, &dotted(pointer), &of, false);
                if let Type::Model(inner) = of {
                    walk(inner, root, pointer, visit);
                }
                pointer.pop();
            }
            _ => {}
        }
        pointer.pop();
    }
}

fn pointer_text(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Key(k) => format!("/{k}"),
            Step::Index(i) => format!("/{i}"),
        })
        .collect()
}

fn dotted(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => out.push_str(&format!(".{k}")),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn remove(body: &mut Value, steps: &[Step]) {
    let (last, parent) = steps.split_last().unwrap();
    let Step::Key(key) = last else { panic!("a required field is a key") };
    body.pointer_mut(&pointer_text(parent)).unwrap().as_object_mut().unwrap().remove(*key);
}

async fn send(h: &Harness, op: &Operation, body: &Value) -> support::Answer {
    h.call(op.method.as_str(), &target(op), &JSON, &body.to_string()).await
}

#[tokio::test]
async fn the_smallest_and_the_fullest_valid_body_of_every_operation_are_forwarded() {
    let h = start_with(|_| Reply::status(202), |addr| config_text(addr, "")).await;
    let mut sent = Vec::new();
    for (op, model) in with_body() {
        for body in [object(model, false), object(model, true)] {
            let answer = send(&h, op, &body).await;
            assert_eq!(answer.status, 202, "{} {body}: {answer:?}", op.name);
            sent.push(body.to_string());
        }
    }
    assert_eq!(sent.len(), 22, "11 operations take a body");
    let seen = h.upstream.seen();
    let forwarded: Vec<String> = seen.iter().map(|s| String::from_utf8(s.body.to_vec()).unwrap()).collect();
    assert_eq!(forwarded, sent, "each body reached SparkRTC as sent");
    assert!(seen.iter().all(|s| s.verified.is_ok()), "every call signed");
}

#[tokio::test]
async fn a_missing_required_field_or_a_mistyped_one_is_400_naming_its_path_and_spends_no_budget() {
    // One call a minute from this address: any refusal that spent it would make the last call 429.
    let limits = "[limits]\nper_caller = { rate = \"1/m\" }\n";
    let h = start_with(|_| Reply::status(202), |addr| config_text(addr, limits)).await;
    let mut checked = BTreeMap::new();
    for (op, model) in with_body() {
        let breakages = breakages(model);
        checked.insert(op.name, breakages.len());
        for broken in breakages {
            let answer = send(&h, op, &broken.body).await;
            answer.assert_gateway_error(400, "RTCGW.4005");
            let message = answer.json()["error_msg"].as_str().unwrap().to_owned();
            // RemoveUsers keeps the messages it had before the SDK models; they name user_ids.
            let named = if op.name == "RemoveUsers" { "user_ids" } else { broken.path.as_str() };
            assert!(message.contains(named), "{} {}: {message:?} names no {named}", op.name, broken.what);
            if op.name != "RemoveUsers" {
                let expected = if broken.what.ends_with(" removed") { "is required" } else { " must be " };
                assert!(message.contains(expected), "{} {}: {message:?}", op.name, broken.what);
            }
        }
    }
    assert!(checked.values().all(|n| *n > 0), "{checked:?}");
    assert!(checked["CreateMixJob"] > 20, "nested objects and lists of objects are walked: {checked:?}");
    assert!(h.upstream.seen().is_empty(), "a refused body reached SparkRTC");

    let (op, model) = with_body().next().unwrap();
    assert_eq!(send(&h, op, &object(model, false)).await.status, 202, "the budget is intact");
    send(&h, op, &object(model, false)).await.assert_gateway_error(429, "RTCGW.4290");
}

#[tokio::test]
async fn messages_name_the_exact_place_in_a_nested_body() {
    let h = start_with(|_| Reply::status(202), |addr| config_text(addr, "")).await;
    let op = Catalog.by_name("CreateMixJob").unwrap();
    let panes = json!([{}, {}, {"x": "left", "y": 0.1}]);
    let body = json!({"mix_param": {"room_id": "r", "encode_template": "t", "layout_panes": panes}});
    let answer = send(&h, op, &body).await;
    answer.assert_gateway_error(400, "RTCGW.4005");
    assert_eq!(
        answer.json()["error_msg"],
        "InvalidParameterValue: mix_param.layout_panes[2].x must be a number, not a string"
    );

    let answer = send(&h, op, &json!({"mix_param": {"room_id": "r", "max_idle_time": "60"}})).await;
    assert_eq!(answer.json()["error_msg"], "InvalidParameterValue: mix_param.encode_template is required");
    let answer = send(&h, op, &json!("mix_param")).await;
    assert_eq!(
        answer.json()["error_msg"],
        "InvalidParameterValue: the body must be a JSON object (MixJobReq), not a string"
    );
    assert!(h.upstream.seen().is_empty());
}

#[tokio::test]
async fn unknown_fields_pass_at_any_depth_and_reach_sparkrtc_unchanged() {
    let h = start_with(|_| Reply::status(202), |addr| config_text(addr, "")).await;
    let op = Catalog.by_name("CreateMixJob").unwrap();
    let mut body = object(Catalog.body_schema(op.name).unwrap(), true);
    body["future_top_level"] = json!({"anything": [1, "two", null]});
    body["mix_param"]["future_nested"] = json!(1.5);
    body["mix_param"]["layout_panes"][0]["future_in_list"] = json!("x");
    let answer = send(&h, op, &body).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let seen = h.upstream.seen();
    assert_eq!(serde_json::from_slice::<Value>(&seen[0].body).unwrap(), body);
}

/// The shared API definition, laid beside the checkout as CI does.
const OPERATIONS: &str = "../shared/spec/cloudrtc-operations.json";

#[test]
fn the_body_table_covers_exactly_the_operations_that_take_a_body() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(OPERATIONS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec: Vec<Map<String, Value>> = serde_json::from_str(&text).unwrap();
    assert_eq!(spec.len(), 42);
    for op in &spec {
        let name = op["operation"].as_str().unwrap();
        let model = Catalog.body_schema(name).map(|m| m.name);
        let declared = op["has_body"].as_bool().unwrap().then(|| op["body_type"].as_str().unwrap());
        assert_eq!(model, declared, "{name}: the generated table and cloudrtc-operations.json disagree");
    }
    let in_spec: Vec<&str> = spec.iter().map(|op| op["operation"].as_str().unwrap()).collect();
    for (op, _) in with_body() {
        assert!(in_spec.contains(&op.name), "{} has a body model but is not in the spec", op.name);
    }
}
