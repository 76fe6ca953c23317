//! Sparse JSON parsing: builds a `serde_json::Value` that keeps only the
//! members usage extraction reads (model, usage, event type, finish reasons
//! and their containers) and skips everything else without allocating it.
//! Generated text, prompts and tool calls are the bulk of LLM bodies; the
//! parser still validates them, but never copies them.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Members kept whole (small and read field by field).
const WHOLE: &[&str] = &[
    "usage",
    "usageMetadata",
    "promptFeedback",
    "error",
    "stream_options",
    "cache_creation",
];

/// Members kept, with their own contents filtered the same way.
const KEEP: &[&str] = &[
    "model",
    "modelVersion",
    "type",
    "object",
    "status",
    "response",
    "message",
    "choices",
    "candidates",
    "finish_reason",
    "finishReason",
    "blockReason",
    "stop_reason",
    "stream",
    "delta",
    "role",
];

/// Parses `bytes` into a `Value` holding only the members above.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Sparse.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct Sparse;

impl<'de> DeserializeSeed<'de> for Sparse {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(SparseVisitor)
    }
}

struct SparseVisitor;

enum Key {
    Whole(String),
    Keep(String),
    Skip,
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
        Ok(if WHOLE.contains(&k) {
            Key::Whole(k.to_owned())
        } else if KEEP.contains(&k) {
            Key::Keep(k.to_owned())
        } else {
            Key::Skip
        })
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for SparseVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Sparse)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Whole(k) => {
                    out.insert(k, map.next_value::<Value>()?);
                }
                Key::Keep(k) => {
                    out.insert(k, map.next_value_seed(Sparse)?);
                }
                Key::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_what_extraction_reads_and_drops_the_rest() {
        let body = json!({
            "id": "x", "model": "m", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "long text"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "cost": 0.000178, "prompt_tokens_details": {"cached_tokens": 0}}
        });
        let v = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "object": "chat.completion",
                   "choices": [{"message": {"role": "assistant"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 1, "cost": 0.000178, "prompt_tokens_details": {"cached_tokens": 0}}})
        );
    }

    #[test]
    fn invalid_json_is_still_an_error() {
        assert!(parse(br#"{"model": "m", "content": "unterminated}"#).is_err());
        assert!(parse(br#"{"model": "m"} trailing"#).is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn numbers_inside_usage_keep_their_text() {
        let v = parse(br#"{"usage": {"cost": 1.5e-6, "prompt_tokens": 18446744073709551615}}"#)
            .unwrap();
        assert_eq!(v["usage"]["cost"].to_string(), "1.5e-6");
        assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn top_level_arrays_and_nesting_are_filtered() {
        let v = parse(br#"[{"candidates": [{"content": {"parts": [{"text": "t"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3}}]"#).unwrap();
        assert_eq!(
            v,
            json!([{"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3}}])
        );
    }
}
