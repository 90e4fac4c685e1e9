//! Request body validation, before any upstream call: a call SparkRTC would refuse for its body
//! is refused here, at no cost to the app's quota.

use serde_json::Value;

use crate::catalog::Operation;
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
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    if op.name == "RemoveUsers" {
        remove_users(&json)?;
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
    fn other_bodies_must_be_json_and_bodiless_operations_take_none() {
        assert_eq!(check("CreateApp", r#"{"app_name":"x"}"#), Ok(()));
        assert!(check("CreateApp", "app_name=x").is_err());
        assert!(check("CreateApp", "").is_err());
        assert_eq!(check("ShowApp", ""), Ok(()));
        assert!(check("ShowApp", "{}").is_err());
    }
}
