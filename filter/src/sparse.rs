//! Sparse JSON parsing: builds a `serde_json::Value` that keeps only the
//! members usage extraction reads (model, usage, event type, finish reasons
//! and their containers) and skips everything else without allocating it.
//! Generated text, prompts and tool calls are the bulk of LLM bodies: the
//! scanner checks their structure and jumps over strings with a vectorized
//! search for the next quote or backslash, never copying them; kept scalars
//! and the small `WHOLE` members are handed to `serde_json` (so numbers keep
//! their exact text). It is a little laxer than `serde_json` inside skipped
//! strings and numbers (control characters, escape and number grammar are
//! not checked there); structure, literals and trailing bytes are.
//!
//! The filter reads bodies with [`crate::typed`], which shares this scanner
//! and member classes; `parse` is the reference its tests compare against.

use serde_json::{Map, Value};

/// Members kept whole (small and read field by field). [`class`] is what
/// the parsers use; tests hold it to this list and `KEEP`.
#[cfg(test)]
pub(crate) const WHOLE: &[&str] = &[
    "usage",
    "usageMetadata",
    "promptFeedback",
    "error",
    "stream_options",
    "cache_creation",
];

/// Members kept, with their own contents filtered the same way.
#[cfg(test)]
pub(crate) const KEEP: &[&str] = &[
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
    "x_groq",
];

/// How [`parse`] treats a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// In `WHOLE`.
    Whole,
    /// In `KEEP`.
    Keep,
    Skip,
}

/// The class of a member name: `WHOLE` and `KEEP` as one `match` (a
/// length switch, not a scan of both lists per member; a test keeps the
/// two in step).
pub(crate) fn class(key: &[u8]) -> Class {
    match key {
        b"usage" | b"usageMetadata" | b"promptFeedback" | b"error" | b"stream_options"
        | b"cache_creation" => Class::Whole,
        b"model" | b"modelVersion" | b"type" | b"object" | b"status" | b"response" | b"message"
        | b"choices" | b"candidates" | b"finish_reason" | b"finishReason" | b"blockReason"
        | b"stop_reason" | b"stream" | b"delta" | b"role" | b"x_groq" => Class::Keep,
        _ => Class::Skip,
    }
}

/// The bytes are not JSON (or nest deeper than [`MAX_DEPTH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid JSON")
    }
}

impl std::error::Error for Invalid {}

/// Nesting limit (serde_json's default recursion limit).
pub const MAX_DEPTH: usize = 128;

/// Parses `bytes` into a `Value` holding only the members above.
pub fn parse(bytes: &[u8]) -> Result<Value, Invalid> {
    let mut s = Scanner { b: bytes, i: 0 };
    s.ws();
    let v = s.kept(0)?;
    s.ws();
    if s.i == bytes.len() {
        Ok(v)
    } else {
        Err(Invalid)
    }
}

pub(crate) struct Scanner<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(crate) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    pub(crate) fn expect(&mut self, byte: u8) -> Result<(), Invalid> {
        self.ws();
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// A value, filtered: objects keep only the listed members.
    fn kept(&mut self, depth: usize) -> Result<Value, Invalid> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut out = Map::new();
                self.members(|s, key| {
                    let keep = match class(key) {
                        Class::Whole => Some(s.whole()?),
                        Class::Keep => Some(s.kept(depth + 1)?),
                        Class::Skip => {
                            s.skip(depth + 1)?;
                            None
                        }
                    };
                    if let Some(v) = keep {
                        let key = std::str::from_utf8(key).map_err(|_| Invalid)?;
                        out.insert(key.to_owned(), v);
                    }
                    Ok(())
                })?;
                Ok(Value::Object(out))
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.elements(|s| {
                    items.push(s.kept(depth + 1)?);
                    Ok(())
                })?;
                Ok(Value::Array(items))
            }
            _ => self.whole(),
        }
    }

    /// A value parsed in full by serde_json (scalars and small members).
    fn whole(&mut self) -> Result<Value, Invalid> {
        self.ws();
        let start = self.i;
        self.skip(0)?;
        let span = self.b.get(start..self.i).ok_or(Invalid)?;
        serde_json::from_slice(span).map_err(|_| Invalid)
    }

    /// Object members after `{`: calls `each` with the scanner on the
    /// value and the member name (unescaped, valid UTF-8), through the
    /// closing `}`.
    pub(crate) fn members(
        &mut self,
        mut each: impl FnMut(&mut Self, &[u8]) -> Result<(), Invalid>,
    ) -> Result<(), Invalid> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let start = self.i;
            self.string()?;
            let raw = self.b.get(start..self.i).ok_or(Invalid)?;
            self.expect(b':')?;
            let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
            if inner.contains(&b'\\') {
                let key: String = serde_json::from_slice(raw).map_err(|_| Invalid)?;
                each(self, key.as_bytes())?;
            } else if inner.is_ascii() || std::str::from_utf8(inner).is_ok() {
                // (ASCII, the usual case, without `from_utf8`'s set-up.)
                each(self, inner)?;
            } else {
                return Err(Invalid);
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Array elements after `[`, through the closing `]`.
    pub(crate) fn elements(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<(), Invalid>,
    ) -> Result<(), Invalid> {
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            each(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Skips one value, checking its structure.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.ws();
        match self.peek().ok_or(Invalid)? {
            b'{' => {
                self.i += 1;
                self.members(|s, _| s.skip(depth + 1))
            }
            b'[' => {
                self.i += 1;
                self.elements(|s| s.skip(depth + 1))
            }
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                self.i += 1;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                ) {
                    self.i += 1;
                }
                Ok(())
            }
            _ => Err(Invalid),
        }
    }

    pub(crate) fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// A string at the cursor (the opening quote), through its closing quote.
    pub(crate) fn string(&mut self) -> Result<(), Invalid> {
        if self.peek() != Some(b'"') {
            return Err(Invalid);
        }
        self.i += 1;
        loop {
            let rest = self.b.get(self.i..).ok_or(Invalid)?;
            let at = memchr::memchr2(b'"', b'\\', rest).ok_or(Invalid)?;
            self.i += at;
            if self.peek() == Some(b'"') {
                self.i += 1;
                return Ok(());
            }
            // A backslash escapes the next byte (`\uXXXX` digits are plain).
            self.i += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    mod oracle {
        use std::fmt;

        use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
        use serde_json::{Map, Number, Value};

        use super::super::{KEEP, WHOLE};

        /// The previous serde-visitor implementation: the oracle the scanner is
        /// checked against.
        pub fn reference_parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
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
    }

    use oracle::reference_parse;

    /// Arbitrary JSON with the member names extraction looks for.
    fn json_value() -> impl Strategy<Value = Value> {
        let names = prop::sample::select(vec![
            "model",
            "usage",
            "choices",
            "message",
            "content",
            "id",
            "type",
            "delta",
            "finish_reason",
            "usageMetadata",
            "candidates",
            "x\\y",
            "mod\"el",
            "é",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            "[a-z\\\\\"\\n\\u{e9}\\u{1F600} ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((names.clone(), inner), 0..6).prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_the_serde_reference(v in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            prop_assert_eq!(parse(text.as_bytes()).ok(), reference_parse(text.as_bytes()).ok());
        }

        #[test]
        fn accepts_whatever_the_reference_accepts(bytes in prop::collection::vec(prop::sample::select(b"{}[]:,\"\\ 0-1.e truefalsnul\"model\"usage".to_vec()), 0..48)) {
            if let Ok(expected) = reference_parse(&bytes) {
                prop_assert_eq!(parse(&bytes), Ok(expected));
            }
        }
    }

    #[test]
    fn class_matches_the_lists() {
        for k in WHOLE {
            assert_eq!(class(k.as_bytes()), Class::Whole, "{k}");
        }
        for k in KEEP {
            assert_eq!(class(k.as_bytes()), Class::Keep, "{k}");
        }
        // Arms of the match not in a list would be classified here.
        let src = include_str!("sparse.rs");
        let body = &src[src.find("pub(crate) fn class").unwrap()..];
        let body = &body[..body.find("_ => Class::Skip").unwrap()];
        let arms = body.matches("b\"").count();
        assert_eq!(arms, WHOLE.len() + KEEP.len());
        for k in ["", "id", "content", "Usage", "usage ", "models", "text"] {
            assert_eq!(class(k.as_bytes()), Class::Skip, "{k}");
        }
    }

    #[test]
    fn escapes_and_nesting_limits() {
        let v = parse(br#"{"mod\u0065l": "m\"x", "usage": {"a": "\\"}, "s": "\\\""}"#).unwrap();
        assert_eq!(v, json!({"model": "m\"x", "usage": {"a": "\\"}}));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert!(parse(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        for bad in [
            &b"{\"a\" 1}"[..],
            b"[1,]",
            b"{,}",
            b"tru",
            b"nul",
            b"\"abc",
            b"{\"a\":1,}",
            b"[1 2]",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

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
