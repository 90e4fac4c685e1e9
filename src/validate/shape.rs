//! A parsed body checked against its SDK model (`catalog::schema`): every required field present,
//! every known field of its declared JSON type, nested objects and lists of objects included.
//! Unknown fields pass. The first problem found is the answer, named by its JSON path
//! (`mix_param.layout_panes[2].x`) so a caller can find it in a large body.

use std::fmt::Write;

use serde_json::{Map, Number, Value};

use crate::catalog::schema::{Model, Type};

/// Longest map key quoted back in a path.
const MAX_QUOTED_KEY: usize = 64;

/// `Ok` when `body` fits `model`; otherwise what is wrong and where.
pub(super) fn check(model: &Model, body: &Value) -> Result<(), String> {
    let Some(object) = body.as_object() else {
        return Err(format!("the body must be a JSON object ({}), not {}", model.name, kind(body)));
    };
    fields(model, object, &mut String::new())
}

fn fields(model: &Model, object: &Map<String, Value>, path: &mut String) -> Result<(), String> {
    for field in model.fields {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field.key);
        match object.get(field.key) {
            // The SDK never sends a null: it leaves an unset field out. So null counts as absent.
            None | Some(Value::Null) if field.required => return Err(format!("{path} is required")),
            None | Some(Value::Null) => {}
            Some(value) => check_value(&field.of, value, path)?,
        }
        path.truncate(len);
    }
    Ok(())
}

fn check_value(of: &Type, value: &Value, path: &mut String) -> Result<(), String> {
    let fits = match (of, value) {
        (Type::Any, _) | (Type::Str, Value::String(_)) | (Type::Bool, Value::Bool(_)) => true,
        (Type::Float, Value::Number(_)) => true,
        // Python's `int`: 3 but not 3.0, 1.5 or "3".
        (Type::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Type::Model(model), Value::Object(object)) => return fields(model, object, path),
        (Type::List(item), Value::Array(items)) => {
            let of = item.as_type();
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                check_value(&of, item, path)?;
                path.truncate(len);
            }
            return Ok(());
        }
        (Type::Map(item), Value::Object(object)) => {
            let of = item.as_type();
            for (key, item) in object {
                let len = path.len();
                let shown: String = key.chars().take(MAX_QUOTED_KEY).collect();
                let _ = write!(path, "[{shown:?}]");
                check_value(&of, item, path)?;
                path.truncate(len);
            }
            return Ok(());
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("{path} must be {}, not {}", of.described(), kind(value)))
    }
}

/// What a value is, as a message names it; numbers are shown, strings are not (they could be long).
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a JSON object".to_owned(),
    }
}

fn number(n: &Number) -> String {
    if n.is_f64() {
        format!("the fraction {n}")
    } else {
        format!("the number {n}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::catalog::Catalog;

    fn check(op: &str, body: serde_json::Value) -> Result<(), String> {
        let model = Catalog.body_schema(op).ok_or("no body model")?;
        super::check(model, &body)
    }

    #[test]
    fn required_fields_are_named_by_their_json_path() {
        assert_eq!(
            check("CreateMixJob", json!({"mix_param": {"room_id": "r"}})),
            Err("mix_param.encode_template is required".into())
        );
        assert_eq!(check("CreateMixJob", json!({})), Err("mix_param is required".into()));
        assert_eq!(check("CreateMixJob", json!({"mix_param": null})), Err("mix_param is required".into()));
        let panes = json!({"mix_param": {"room_id": "r", "encode_template": "t",
            "user_background_images": [{"user_id": "u", "image_uri": "i"}, {"user_id": "u"}]}});
        assert_eq!(
            check("CreateMixJob", panes),
            Err("mix_param.user_background_images[1].image_uri is required".into())
        );
    }

    #[test]
    fn types_follow_python_not_javascript() {
        let pane = |x: serde_json::Value, id: serde_json::Value| json!({"mix_param": {"room_id": "r", "encode_template": "t", "layout_panes": [{}, {}, {"x": x, "id": id}]}});
        assert_eq!(check("CreateMixJob", pane(json!(0.5), json!(3))), Ok(()));
        assert_eq!(check("CreateMixJob", pane(json!(1), json!(3))), Ok(()), "a float field takes an integer");
        assert_eq!(
            check("CreateMixJob", pane(json!("0.5"), json!(3))),
            Err("mix_param.layout_panes[2].x must be a number, not a string".into())
        );
        assert_eq!(
            check("CreateMixJob", pane(json!(0.5), json!(1.5))),
            Err("mix_param.layout_panes[2].id must be an integer, not the fraction 1.5".into())
        );
        assert!(check("CreateMixJob", pane(json!(0.5), json!(3.0))).is_err(), "3.0 is a Python float");
        assert!(check("CreateMixJob", pane(json!(0.5), json!("3"))).is_err());
        assert!(check("CreateMixJob", pane(json!(0.5), json!(true))).is_err());
    }

    #[test]
    fn containers_must_be_what_the_model_says() {
        let rule = |formats: serde_json::Value| json!({"obs_addr": {"location": "l", "project_id": "p", "bucket": "b"}, "record_formats": formats});
        assert_eq!(check("CreateRecordRule", rule(json!(["HLS", "MP4"]))), Ok(()));
        assert_eq!(
            check("CreateRecordRule", rule(json!("HLS"))),
            Err("record_formats must be a list, not a string".into())
        );
        assert_eq!(
            check("CreateRecordRule", rule(json!(["HLS", 4]))),
            Err("record_formats[1] must be a string, not the number 4".into())
        );
        assert_eq!(
            check("CreateRecordRule", json!({"obs_addr": [], "record_formats": []})),
            Err("obs_addr must be a JSON object, not a list".into())
        );
        assert_eq!(
            check("CreateApp", json!(["app_name"])),
            Err("the body must be a JSON object (AppReq), not a list".into())
        );
    }

    #[test]
    fn unknown_fields_and_absent_optional_ones_pass() {
        assert_eq!(check("CreateApp", json!({"app_name": "a", "new_field": {"x": [1]}})), Ok(()));
        assert_eq!(check("UpdateIndividualStreamJob", json!({})), Ok(()));
        assert_eq!(check("UpdateIndividualStreamJob", json!({"record_param": null})), Ok(()));
    }
}
