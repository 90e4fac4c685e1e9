//! Request body validation, before any upstream call: a call SparkRTC would refuse for its body
//! is refused here, at no cost to the app's quota. So is a body two JSON parsers could read
//! differently: one with a key given twice in the same object. Every body must also have the
//! shape the official SDK's request model declares (required fields, JSON types; `shape`), with
//! unknown fields let through, since SparkRTC may add some before the SDK knows of them.

mod json;
mod shape;

use serde_json::Value;

use crate::catalog::{Catalog, Operation};
use crate::error::GatewayError;

/// Checks the body; returns it parsed when the operation takes one.
pub fn body(op: &Operation, body: &[u8]) -> Result<Option<Value>, GatewayError> {
    if !op.has_body {
        if body.is_empty() {
            return Ok(None);
        }
        return Err(GatewayError::InvalidBody(format!("{} takes no request body", op.name)));
    }
    if body.is_empty() {
        return Err(GatewayError::InvalidBody(format!("{} needs a JSON request body", op.name)));
    }
    let json = json::strict_json(body)?;
    // RemoveUsers first: its own messages and checks (at least one user, no empty id) go
    // beyond what the SDK model says, and callers already match on them.
    if op.name == "RemoveUsers" {
        remove_users(&json)?;
    }
    if let Some(model) = Catalog.body_schema(op.name) {
        shape::check(model, &json).map_err(GatewayError::InvalidBody)?;
    }
    Ok(Some(json))
}

/// `{"user_ids": [...]}`: a non-empty list of non-empty strings (SparkRTC's RemoveUsersReq).
fn remove_users(json: &Value) -> Result<(), GatewayError> {
    let invalid = |why: &str| Err(GatewayError::InvalidBody(why.to_owned()));
    let Some(object) = json.as_object() else {
        return invalid("the body must be a JSON object like {\"user_ids\": [\"user001\"]}");
    };
    let Some(user_ids) = object.get("user_ids") else {
        return invalid("user_ids is missing");
    };
    let Some(list) = user_ids.as_array() else {
        return invalid("user_ids must be a list of user ids");
    };
    if list.is_empty() {
        return invalid("user_ids must name at least one user");
    }
    if !list.iter().all(|id| id.as_str().is_some_and(|s| !s.is_empty())) {
        return invalid("every entry of user_ids must be a non-empty string");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::catalog::Catalog;

    fn check(op: &str, body: &str) -> Result<(), String> {
        let op = Catalog.by_name(op).ok_or("no such operation")?;
        super::body(op, body.as_bytes()).map(|_| ()).map_err(|e| e.caller_message())
    }

    #[test]
    fn remove_users_needs_a_non_empty_list_of_non_empty_strings() {
        assert_eq!(check("RemoveUsers", r#"{"user_ids":["user001","user002"]}"#), Ok(()));
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"user_ids":[]}"#,
            r#"{"user_ids":"u1"}"#,
            r#"{"user_ids":[""]}"#,
            r#"{"user_ids":["u",1]}"#,
            r#"{"user_ids":null}"#,
            "{not json",
        ] {
            assert!(check("RemoveUsers", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_key_given_twice_at_any_depth_is_refused_and_named() {
        let twice = check("RemoveUsers", r#"{"user_ids":["a"],"user_ids":["b","c"]}"#);
        assert!(twice.as_ref().is_err_and(|m| m.contains("\"user_ids\" appears twice")), "{twice:?}");
        let nested = check("CreateApp", r#"{"app_name":"x","record":{"mode":1,"mode":2}}"#);
        assert!(nested.as_ref().is_err_and(|m| m.contains("\"mode\" appears twice")), "{nested:?}");
        let in_list = check("CreateApp", r#"{"a":[{"k":1},{"k":2,"k":3}]}"#);
        assert!(in_list.is_err(), "{in_list:?}");
        // The same key in different objects is no ambiguity.
        assert_eq!(check("CreateApp", r#"{"app_name":"x","a":[{"k":1},{"k":2}],"k":{"k":null}}"#), Ok(()));
        assert_eq!(check("CreateApp", r#"{"app_name":"x","n":-1,"f":1.5,"t":true,"s":"x","z":[]}"#), Ok(()));
    }

    #[test]
    fn other_bodies_must_be_json_and_bodiless_operations_take_none() {
        assert_eq!(check("CreateApp", r#"{"app_name":"x"}"#), Ok(()));
        assert!(check("CreateApp", "app_name=x").is_err());
        assert!(check("CreateApp", "").is_err());
        assert_eq!(check("ShowApp", ""), Ok(()));
        assert!(check("ShowApp", "{}").is_err());
    }
}
