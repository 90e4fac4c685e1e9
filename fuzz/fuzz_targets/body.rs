//! Body validation on any bytes, for every operation: `validate::body` never panics (deep
//! nesting included), what it accepts holds every field the SDK's model requires, and for
//! RemoveUsers names at least one non-empty user id.
//!
//! Input: one byte choosing the operation, then the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkrtc_gateway::catalog::Catalog;
use sparkrtc_gateway::validate;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else { return };
    let ops = Catalog.operations();
    // RemoveUsers, whose ids are checked beyond its SDK model, gets half of the inputs.
    let op = match (choice & 1, Catalog.by_name("RemoveUsers")) {
        (0, Some(remove)) => remove,
        _ => &ops[usize::from(choice >> 1) % ops.len()],
    };
    if let Ok(Some(json)) = validate::body(op, body) {
        assert!(op.has_body);
        if let Some(model) = Catalog.body_schema(op.name) {
            assert!(model.fields.iter().filter(|f| f.required).all(|f| json.get(f.key).is_some_and(|v| !v.is_null())));
        }
        if op.name == "RemoveUsers" {
            let ids = json["user_ids"].as_array().map(Vec::as_slice).unwrap_or_default();
            assert!(!ids.is_empty() && ids.iter().all(|id| id.as_str().is_some_and(|s| !s.is_empty())));
        }
    }
});
