//! The body parsed as JSON, refusing any the gateway and SparkRTC could read differently.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Parses JSON, refusing a key repeated within one object at any depth. RFC 8259 §4 leaves
/// duplicate names to the implementation: serde_json keeps the last, others keep the first, so
/// the audit record could name users other than those SparkRTC acts on.
pub(super) fn strict_json(body: &[u8]) -> Result<Value, GatewayError> {
    match serde_json::from_slice::<Unambiguous>(body) {
        Ok(Unambiguous(json)) => Ok(json),
        Err(e) if e.is_data() => Err(GatewayError::InvalidBody(format!("the body is ambiguous: {e}"))),
        Err(e) => Err(GatewayError::InvalidBody(format!("the body is not valid JSON: {e}"))),
    }
}

/// A JSON value whose objects have no repeated key.
struct Unambiguous(Value);

impl<'de> Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnambiguousVisitor).map(Unambiguous)
    }
}

struct UnambiguousVisitor;

/// Longest key quoted back in the error message.
const MAX_QUOTED_KEY: usize = 64;

impl<'de> Visitor<'de> for UnambiguousVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unambiguous(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(MAX_QUOTED_KEY).collect();
                return Err(de::Error::custom(format_args!(
                    "the key {shown:?} appears twice in one object; send it once"
                )));
            }
            let Unambiguous(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
