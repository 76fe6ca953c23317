//! Typed extraction: reads the members usage extraction needs straight from
//! response bytes into small structs (counts as `u64`, strings borrowed when
//! unescaped), instead of materializing a `serde_json::Value` per response
//! or event, which was most of the filter's per-request cost.
//!
//! It accepts and rejects exactly what [`crate::sparse::parse`] does, and
//! each field holds what a lookup in that sparse `Value` would give: the
//! same scanner walks the same members (`WHOLE` ones and kept scalars go
//! through `serde_json` with visitors that make the `deserialize_any` calls
//! a `Value` makes, so they fail on the same inputs); a duplicated member's
//! last occurrence wins, and presence counts any value, `null` included.
//! The providers' extraction tests and the oracle tests in
//! `providers::oracle` hold the two implementations to the same results.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use crate::providers::gemini::GeminiStream;
use crate::providers::{cost_text, number_u64};
use crate::sparse::{Invalid, Scanner, KEEP, MAX_DEPTH, WHOLE};

/// Token counts of a detail object (`prompt_tokens_details`,
/// `cache_creation`, ...); every name any provider reads in one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Details {
    pub cached_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub ephemeral_5m_input_tokens: Option<u64>,
    pub ephemeral_1h_input_tokens: Option<u64>,
}

/// A `usage` object (OpenAI chat and Responses, Anthropic, OpenRouter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageBlock {
    /// Members present whatever their value (the `HAS_*` bits): shape
    /// inference looks at names only.
    pub present: u8,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub prompt_tokens_details: Details,
    pub completion_tokens_details: Details,
    pub input_tokens_details: Details,
    pub output_tokens_details: Details,
    pub cache_creation: Details,
    /// `cost` as a plain decimal string (see [`crate::providers::cost_string`]).
    pub cost: Option<String>,
}

impl UsageBlock {
    pub const HAS_PROMPT_TOKENS: u8 = 1;
    pub const HAS_COMPLETION_TOKENS: u8 = 1 << 1;
    pub const HAS_INPUT_TOKENS: u8 = 1 << 2;
    pub const HAS_CACHE_READ_INPUT_TOKENS: u8 = 1 << 3;
    pub const HAS_CACHE_CREATION_INPUT_TOKENS: u8 = 1 << 4;
    pub const HAS_INPUT_TOKENS_DETAILS: u8 = 1 << 5;
    pub const HAS_OUTPUT_TOKENS_DETAILS: u8 = 1 << 6;
    pub const HAS_TOTAL_TOKENS: u8 = 1 << 7;

    pub fn has(&self, bit: u8) -> bool {
        self.present & bit != 0
    }
}

/// A Gemini `usageMetadata` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeminiMeta {
    pub prompt_token_count: Option<u64>,
    pub candidates_token_count: Option<u64>,
    pub cached_content_token_count: Option<u64>,
    pub thoughts_token_count: Option<u64>,
    pub tool_use_prompt_token_count: Option<u64>,
    pub total_token_count: Option<u64>,
}

/// The `response` (Responses API) or `message` (Anthropic `message_start`)
/// member: only its model and usage are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sub<'a> {
    /// `model` when it is a string.
    pub model: Option<Cow<'a, str>>,
    /// `usage` when it is an object.
    pub usage: Option<UsageBlock>,
}

/// What extraction reads of one JSON object (a body, an event, or an
/// element of a top-level array).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node<'a> {
    /// `model` when it is a string.
    pub model: Option<Cow<'a, str>>,
    /// `modelVersion` present; inside, its value when it is a string.
    pub model_version: Option<Option<Cow<'a, str>>>,
    /// `type` when it is a string.
    pub ty: Option<Cow<'a, str>>,
    /// `object` when it is a string.
    pub object: Option<Cow<'a, str>>,
    pub has_choices: bool,
    pub has_candidates: bool,
    /// `candidates` is an array with an object whose `finishReason` is a
    /// non-empty string other than `FINISH_REASON_UNSPECIFIED`.
    pub candidates_final: bool,
    pub has_usage_metadata: bool,
    /// `usageMetadata` when it is an object.
    pub usage_metadata: Option<GeminiMeta>,
    /// `usage` when it is an object.
    pub usage: Option<UsageBlock>,
    /// `promptFeedback` is an object with a `blockReason` member.
    pub prompt_blocked: bool,
    /// `response` present (any value).
    pub response: Option<Box<Sub<'a>>>,
    /// `message` present (any value).
    pub message: Option<Box<Sub<'a>>>,
}

/// A parsed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Top<'a> {
    Object(Node<'a>),
    /// A top-level array (Gemini's `streamGenerateContent` without SSE).
    Array {
        /// The last element, when it is an object (shape inference).
        last: Option<Node<'a>>,
        /// Gemini extraction over the objects of the array, nested arrays
        /// flattened, in order (folded as they are parsed, so memory does
        /// not grow with the element count).
        gemini: GeminiStream,
    },
    Scalar,
}

impl Top<'_> {
    /// The top-level object, or an empty one (what lookups in an array or
    /// a scalar give).
    pub fn object(&self) -> &Node<'_> {
        static EMPTY: Node<'static> = Node {
            model: None,
            model_version: None,
            ty: None,
            object: None,
            has_choices: false,
            has_candidates: false,
            candidates_final: false,
            has_usage_metadata: false,
            usage_metadata: None,
            usage: None,
            prompt_blocked: false,
            response: None,
            message: None,
        };
        match self {
            Top::Object(n) => n,
            _ => &EMPTY,
        }
    }
}

/// Parses `bytes` (see the module documentation).
pub fn parse(bytes: &[u8]) -> Result<Top<'_>, Invalid> {
    let mut s = Scanner { b: bytes, i: 0 };
    s.ws();
    let top = top(&mut s)?;
    s.ws();
    if s.i == bytes.len() {
        Ok(top)
    } else {
        Err(Invalid)
    }
}

/// Whether `bytes` is one JSON value `serde_json` would parse into a
/// `Value` (same checks, nothing built).
pub fn is_valid_json(bytes: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Ignore.deserialize(&mut de).is_ok() && de.end().is_ok()
}

fn top<'a>(s: &mut Scanner<'a>) -> Result<Top<'a>, Invalid> {
    s.ws();
    match s.peek() {
        Some(b'{') => Ok(Top::Object(object(s, 0)?)),
        Some(b'[') => {
            s.i += 1;
            let mut gemini = GeminiStream::default();
            let mut last = None;
            s.elements(|s| {
                last = item(s, 1, &mut gemini)?;
                Ok(())
            })?;
            Ok(Top::Array { last, gemini })
        }
        _ => {
            whole_valid(s)?;
            Ok(Top::Scalar)
        }
    }
}

/// An element of a top-level array (or of an array nested in one): objects
/// are folded into `gemini` and returned, arrays are walked the same way.
fn item<'a>(
    s: &mut Scanner<'a>,
    depth: usize,
    gemini: &mut GeminiStream,
) -> Result<Option<Node<'a>>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    match s.peek() {
        Some(b'{') => {
            let node = object(s, depth)?;
            gemini.on_node(&node);
            Ok(Some(node))
        }
        Some(b'[') => {
            s.i += 1;
            s.elements(|s| item(s, depth + 1, gemini).map(drop))?;
            Ok(None)
        }
        _ => {
            whole_valid(s)?;
            Ok(None)
        }
    }
}

/// An object at `depth`, cursor on its `{`. Kept out of line so the array
/// recursion in [`item`] does not carry a `Node` in every frame.
#[inline(never)]
fn object<'a>(s: &mut Scanner<'a>, depth: usize) -> Result<Node<'a>, Invalid> {
    s.i += 1;
    let mut n = Node::default();
    members(s, |s, key| {
        match key {
            b"usage" => n.usage = whole(s, UsageSeed)?,
            b"usageMetadata" => {
                n.has_usage_metadata = true;
                n.usage_metadata = whole(s, GeminiSeed)?;
            }
            b"promptFeedback" => n.prompt_blocked = whole(s, FeedbackSeed)?,
            b"model" => n.model = kept_str(s, depth + 1)?,
            b"modelVersion" => n.model_version = Some(kept_str(s, depth + 1)?),
            b"type" => n.ty = kept_str(s, depth + 1)?,
            b"object" => n.object = kept_str(s, depth + 1)?,
            b"choices" => {
                n.has_choices = true;
                validate(s, depth + 1)?;
            }
            b"candidates" => {
                n.has_candidates = true;
                n.candidates_final = candidates(s, depth + 1)?;
            }
            b"response" => n.response = Some(Box::new(sub(s, depth + 1)?)),
            b"message" => n.message = Some(Box::new(sub(s, depth + 1)?)),
            other => member(s, depth, other)?,
        }
        Ok(())
    })?;
    Ok(n)
}

/// A member nothing is read from, of an object at `depth`: checked as the
/// sparse parser does (kept members strictly, others skipped).
fn member(s: &mut Scanner<'_>, depth: usize, key: &[u8]) -> Result<(), Invalid> {
    if WHOLE.iter().any(|w| w.as_bytes() == key) {
        whole_valid(s)
    } else if KEEP.iter().any(|k| k.as_bytes() == key) {
        validate(s, depth + 1)
    } else {
        s.skip(depth + 1)
    }
}

/// A kept value nothing is read from: the sparse parser's `kept` without
/// building anything.
fn validate(s: &mut Scanner<'_>, depth: usize) -> Result<(), Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    match s.peek() {
        Some(b'{') => {
            s.i += 1;
            members(s, |s, key| member(s, depth, key))
        }
        Some(b'[') => {
            s.i += 1;
            s.elements(|s| validate(s, depth + 1))
        }
        _ => whole_valid(s),
    }
}

/// A kept value read as a string (`None` when it is anything else).
fn kept_str<'a>(s: &mut Scanner<'a>, depth: usize) -> Result<Option<Cow<'a, str>>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    match s.peek() {
        Some(b'{' | b'[') => validate(s, depth).map(|()| None),
        _ => Ok(match whole_scalar(s)? {
            Scalar::Str(text) => Some(text),
            _ => None,
        }),
    }
}

/// `response` / `message`: model and usage.
fn sub<'a>(s: &mut Scanner<'a>, depth: usize) -> Result<Sub<'a>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    if s.peek() != Some(b'{') {
        return validate(s, depth).map(|()| Sub::default());
    }
    s.i += 1;
    let mut out = Sub::default();
    members(s, |s, key| {
        match key {
            b"model" => out.model = kept_str(s, depth + 1)?,
            b"usage" => out.usage = whole(s, UsageSeed)?,
            other => member(s, depth, other)?,
        }
        Ok(())
    })?;
    Ok(out)
}

/// Gemini `candidates`: whether one of them finished.
fn candidates(s: &mut Scanner<'_>, depth: usize) -> Result<bool, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    if s.peek() != Some(b'[') {
        return validate(s, depth).map(|()| false);
    }
    s.i += 1;
    let mut finished = false;
    s.elements(|s| {
        finished |= candidate(s, depth + 1)?;
        Ok(())
    })?;
    Ok(finished)
}

fn candidate(s: &mut Scanner<'_>, depth: usize) -> Result<bool, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    if s.peek() != Some(b'{') {
        return validate(s, depth).map(|()| false);
    }
    s.i += 1;
    let mut reason = None;
    members(s, |s, key| {
        if key == b"finishReason" {
            reason = kept_str(s, depth + 1)?;
            Ok(())
        } else {
            member(s, depth, key)
        }
    })?;
    Ok(reason.is_some_and(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED"))
}

/// Object members after `{`, through the closing `}`: `each` gets the
/// scanner on the value and the member name (unescaped), checked as the
/// sparse parser checks it (escaped names by `serde_json`, others for
/// UTF-8 only; ASCII, the usual case, without `from_utf8`).
fn members<'a>(
    s: &mut Scanner<'a>,
    mut each: impl FnMut(&mut Scanner<'a>, &[u8]) -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
        return Ok(());
    }
    loop {
        s.ws();
        let start = s.i;
        s.string()?;
        let raw = s.b.get(start..s.i).ok_or(Invalid)?;
        s.expect(b':')?;
        let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
        if inner.contains(&b'\\') {
            let key: String = serde_json::from_slice(raw).map_err(|_| Invalid)?;
            each(s, key.as_bytes())?;
        } else if inner.is_ascii() || std::str::from_utf8(inner).is_ok() {
            each(s, inner)?;
        } else {
            return Err(Invalid);
        }
        s.ws();
        match s.peek() {
            Some(b',') => s.i += 1,
            Some(b'}') => {
                s.i += 1;
                return Ok(());
            }
            _ => return Err(Invalid),
        }
    }
}

/// One value handed whole to `serde_json` through `seed`, as the sparse
/// parser's `whole` does (its span checked by the scanner first).
fn whole<'a, S: DeserializeSeed<'a>>(s: &mut Scanner<'a>, seed: S) -> Result<S::Value, Invalid> {
    s.ws();
    let start = s.i;
    s.skip(0)?;
    let span = s.b.get(start..s.i).ok_or(Invalid)?;
    from_span(span, seed)
}

fn from_span<'a, S: DeserializeSeed<'a>>(span: &'a [u8], seed: S) -> Result<S::Value, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(span);
    let v = seed.deserialize(&mut de).map_err(|_| Invalid)?;
    de.end().map_err(|_| Invalid)?;
    Ok(v)
}

/// The text of a scanned string span (quotes included) that `serde_json`
/// could only accept as is: printable ASCII without escapes.
fn plain_string(span: &[u8]) -> Option<&str> {
    let inner = span.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'\\')
    {
        std::str::from_utf8(inner).ok()
    } else {
        None
    }
}

/// [`whole`] with [`Ignore`]; plain strings and the literals (which the
/// scanner matched exactly) need no `serde_json`.
fn whole_valid(s: &mut Scanner<'_>) -> Result<(), Invalid> {
    s.ws();
    let start = s.i;
    s.skip(0)?;
    let span = s.b.get(start..s.i).ok_or(Invalid)?;
    match span.first() {
        Some(b't' | b'f' | b'n') => Ok(()),
        Some(b'"') if plain_string(span).is_some() => Ok(()),
        _ => from_span(span, Ignore),
    }
}

/// [`whole`] with [`ScalarSeed`], plain strings borrowed directly.
fn whole_scalar<'a>(s: &mut Scanner<'a>) -> Result<Scalar<'a>, Invalid> {
    s.ws();
    let start = s.i;
    s.skip(0)?;
    let span = s.b.get(start..s.i).ok_or(Invalid)?;
    match plain_string(span) {
        Some(text) => Ok(Scalar::Str(Cow::Borrowed(text))),
        None => from_span(span, ScalarSeed),
    }
}

// ------------------------------------------------------------ serde seeds
//
// Every seed deserializes with `deserialize_any` and walks nested arrays and
// objects to their end (map keys through `deserialize_str`), which is what
// deserializing a `serde_json::Value` does: the parser then performs the
// same checks (string escapes and UTF-8, number grammar and range, nesting
// limit) and fails exactly where it would.

/// Validates a value and keeps nothing.
#[derive(Clone, Copy)]
struct Ignore;

/// A member name, classified by the function.
struct Key<K>(fn(&str) -> K);

impl<'de, K> DeserializeSeed<'de> for Key<K> {
    type Value = K;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K, D::Error> {
        d.deserialize_str(self)
    }
}

impl<K> Visitor<'_> for Key<K> {
    type Value = K;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, v: &str) -> Result<K, E> {
        Ok((self.0)(v))
    }
}

/// Visitor methods for the values a seed has no use for: `$v` after
/// consuming them (arrays element by element). `visit_map` is the seed's.
macro_rules! others {
    ($v:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element_seed(Ignore)?.is_some() {}
            Ok($v)
        }
    };
}

/// Implements `DeserializeSeed` through `deserialize_any` for a visitor.
macro_rules! seed {
    ($t:ty) => {
        impl<'de> DeserializeSeed<'de> for $t {
            type Value = <$t as Visitor<'de>>::Value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

fn ignore_key(_: &str) {}

impl<'de> Visitor<'de> for Ignore {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    others!(());
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Key(ignore_key))?.is_some() {
            map.next_value_seed(Ignore)?;
        }
        Ok(())
    }
}
seed!(Ignore);

/// A scalar: what `Value::as_str` or a number lookup would see.
enum Scalar<'a> {
    Num(Number),
    Str(Cow<'a, str>),
    Other,
}

struct ScalarSeed;

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Num(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
        // A `Value` holds a non-finite float as `null`.
        Ok(Number::from_f64(v).map_or(Scalar::Other, Scalar::Num))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
        Ignore.visit_seq(seq).map(|()| Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
        Ignore.visit_map(map).map(|()| Scalar::Other)
    }
}
seed!(ScalarSeed);

/// A token count: `get_u64`'s reading of the value.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = Option<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        Ok(match ScalarSeed.deserialize(d)? {
            Scalar::Num(n) => number_u64(&n),
            _ => None,
        })
    }
}

/// A provider-reported cost: `cost_string`'s reading of the value.
struct Cost;

impl<'de> DeserializeSeed<'de> for Cost {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        Ok(match ScalarSeed.deserialize(d)? {
            Scalar::Num(n) => cost_text(&n.to_string()),
            Scalar::Str(s) => cost_text(s.trim()),
            Scalar::Other => None,
        })
    }
}

#[derive(Clone, Copy)]
enum UsageKey {
    PromptTokens,
    CompletionTokens,
    InputTokens,
    OutputTokens,
    CacheReadInputTokens,
    CacheCreationInputTokens,
    TotalTokens,
    PromptTokensDetails,
    CompletionTokensDetails,
    InputTokensDetails,
    OutputTokensDetails,
    CacheCreation,
    Cost,
    Other,
}

fn usage_key(k: &str) -> UsageKey {
    match k {
        "prompt_tokens" => UsageKey::PromptTokens,
        "completion_tokens" => UsageKey::CompletionTokens,
        "input_tokens" => UsageKey::InputTokens,
        "output_tokens" => UsageKey::OutputTokens,
        "cache_read_input_tokens" => UsageKey::CacheReadInputTokens,
        "cache_creation_input_tokens" => UsageKey::CacheCreationInputTokens,
        "total_tokens" => UsageKey::TotalTokens,
        "prompt_tokens_details" => UsageKey::PromptTokensDetails,
        "completion_tokens_details" => UsageKey::CompletionTokensDetails,
        "input_tokens_details" => UsageKey::InputTokensDetails,
        "output_tokens_details" => UsageKey::OutputTokensDetails,
        "cache_creation" => UsageKey::CacheCreation,
        "cost" => UsageKey::Cost,
        _ => UsageKey::Other,
    }
}

/// A `usage` member: `Some` when it is an object.
struct UsageSeed;

impl<'de> Visitor<'de> for UsageSeed {
    type Value = Option<UsageBlock>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    others!(None);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut u = UsageBlock::default();
        while let Some(key) = map.next_key_seed(Key(usage_key))? {
            use UsageKey as K;
            match key {
                K::PromptTokens => {
                    u.present |= UsageBlock::HAS_PROMPT_TOKENS;
                    u.prompt_tokens = map.next_value_seed(Count)?;
                }
                K::CompletionTokens => {
                    u.present |= UsageBlock::HAS_COMPLETION_TOKENS;
                    u.completion_tokens = map.next_value_seed(Count)?;
                }
                K::InputTokens => {
                    u.present |= UsageBlock::HAS_INPUT_TOKENS;
                    u.input_tokens = map.next_value_seed(Count)?;
                }
                K::OutputTokens => u.output_tokens = map.next_value_seed(Count)?,
                K::CacheReadInputTokens => {
                    u.present |= UsageBlock::HAS_CACHE_READ_INPUT_TOKENS;
                    u.cache_read_input_tokens = map.next_value_seed(Count)?;
                }
                K::CacheCreationInputTokens => {
                    u.present |= UsageBlock::HAS_CACHE_CREATION_INPUT_TOKENS;
                    u.cache_creation_input_tokens = map.next_value_seed(Count)?;
                }
                K::TotalTokens => {
                    u.present |= UsageBlock::HAS_TOTAL_TOKENS;
                    map.next_value_seed(Ignore)?;
                }
                K::PromptTokensDetails => {
                    u.prompt_tokens_details = map.next_value_seed(DetailsSeed)?;
                }
                K::CompletionTokensDetails => {
                    u.completion_tokens_details = map.next_value_seed(DetailsSeed)?;
                }
                K::InputTokensDetails => {
                    u.present |= UsageBlock::HAS_INPUT_TOKENS_DETAILS;
                    u.input_tokens_details = map.next_value_seed(DetailsSeed)?;
                }
                K::OutputTokensDetails => {
                    u.present |= UsageBlock::HAS_OUTPUT_TOKENS_DETAILS;
                    u.output_tokens_details = map.next_value_seed(DetailsSeed)?;
                }
                K::CacheCreation => u.cache_creation = map.next_value_seed(DetailsSeed)?,
                K::Cost => u.cost = map.next_value_seed(Cost)?,
                K::Other => map.next_value_seed(Ignore)?,
            }
        }
        Ok(Some(u))
    }
}
seed!(UsageSeed);

#[derive(Clone, Copy)]
enum DetailKey {
    Cached,
    CacheWrite,
    Reasoning,
    Ephemeral5m,
    Ephemeral1h,
    Other,
}

fn detail_key(k: &str) -> DetailKey {
    match k {
        "cached_tokens" => DetailKey::Cached,
        "cache_write_tokens" => DetailKey::CacheWrite,
        "reasoning_tokens" => DetailKey::Reasoning,
        "ephemeral_5m_input_tokens" => DetailKey::Ephemeral5m,
        "ephemeral_1h_input_tokens" => DetailKey::Ephemeral1h,
        _ => DetailKey::Other,
    }
}

/// A detail object; all `None` when it is not an object (a lookup in a
/// non-object finds nothing).
struct DetailsSeed;

impl<'de> Visitor<'de> for DetailsSeed {
    type Value = Details;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    others!(Details::default());
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
        let mut d = Details::default();
        while let Some(key) = map.next_key_seed(Key(detail_key))? {
            let slot = match key {
                DetailKey::Cached => &mut d.cached_tokens,
                DetailKey::CacheWrite => &mut d.cache_write_tokens,
                DetailKey::Reasoning => &mut d.reasoning_tokens,
                DetailKey::Ephemeral5m => &mut d.ephemeral_5m_input_tokens,
                DetailKey::Ephemeral1h => &mut d.ephemeral_1h_input_tokens,
                DetailKey::Other => {
                    map.next_value_seed(Ignore)?;
                    continue;
                }
            };
            *slot = map.next_value_seed(Count)?;
        }
        Ok(d)
    }
}
seed!(DetailsSeed);

#[derive(Clone, Copy)]
enum GeminiKey {
    Prompt,
    Candidates,
    Cached,
    Thoughts,
    ToolUse,
    Total,
    Other,
}

fn gemini_key(k: &str) -> GeminiKey {
    match k {
        "promptTokenCount" => GeminiKey::Prompt,
        "candidatesTokenCount" => GeminiKey::Candidates,
        "cachedContentTokenCount" => GeminiKey::Cached,
        "thoughtsTokenCount" => GeminiKey::Thoughts,
        "toolUsePromptTokenCount" => GeminiKey::ToolUse,
        "totalTokenCount" => GeminiKey::Total,
        _ => GeminiKey::Other,
    }
}

/// A `usageMetadata` member: `Some` when it is an object.
struct GeminiSeed;

impl<'de> Visitor<'de> for GeminiSeed {
    type Value = Option<GeminiMeta>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    others!(None);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = GeminiMeta::default();
        while let Some(key) = map.next_key_seed(Key(gemini_key))? {
            let slot = match key {
                GeminiKey::Prompt => &mut m.prompt_token_count,
                GeminiKey::Candidates => &mut m.candidates_token_count,
                GeminiKey::Cached => &mut m.cached_content_token_count,
                GeminiKey::Thoughts => &mut m.thoughts_token_count,
                GeminiKey::ToolUse => &mut m.tool_use_prompt_token_count,
                GeminiKey::Total => &mut m.total_token_count,
                GeminiKey::Other => {
                    map.next_value_seed(Ignore)?;
                    continue;
                }
            };
            *slot = map.next_value_seed(Count)?;
        }
        Ok(Some(m))
    }
}
seed!(GeminiSeed);

fn block_reason_key(k: &str) -> bool {
    k == "blockReason"
}

/// A `promptFeedback` member: whether it is an object with a `blockReason`.
struct FeedbackSeed;

impl<'de> Visitor<'de> for FeedbackSeed {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    others!(false);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut blocked = false;
        while let Some(is_reason) = map.next_key_seed(Key(block_reason_key))? {
            blocked |= is_reason;
            map.next_value_seed(Ignore)?;
        }
        Ok(blocked)
    }
}
seed!(FeedbackSeed);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_read_here_are_classified_as_the_sparse_parser_does() {
        for key in ["usage", "usageMetadata", "promptFeedback"] {
            assert!(WHOLE.contains(&key), "{key}");
        }
        for key in [
            "model",
            "modelVersion",
            "type",
            "object",
            "choices",
            "candidates",
            "response",
            "message",
            "finishReason",
        ] {
            assert!(KEEP.contains(&key), "{key}");
        }
    }

    #[test]
    fn reads_a_chat_body() {
        let body = br#"{"id":"x","model":"m","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":10,"completion_tokens":5.7,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"cost":1.5e-6}}"#;
        let top = parse(body).unwrap();
        let n = top.object();
        assert_eq!(n.model.as_deref(), Some("m"));
        assert_eq!(n.object.as_deref(), Some("chat.completion"));
        assert!(n.has_choices);
        let u = n.usage.as_ref().unwrap();
        assert_eq!(u.prompt_tokens, Some(10));
        assert_eq!(u.completion_tokens, Some(5));
        assert_eq!(u.prompt_tokens_details.cached_tokens, Some(4));
        assert_eq!(u.cost.as_deref(), Some("0.0000015"));
        assert!(u.has(UsageBlock::HAS_TOTAL_TOKENS));
        assert!(!u.has(UsageBlock::HAS_INPUT_TOKENS));
    }

    #[test]
    fn last_duplicate_wins_and_presence_counts_null() {
        let top = parse(br#"{"model":"a","model":{"x":1},"usage":{"prompt_tokens":1},"usage":null,"modelVersion":null}"#).unwrap();
        let n = top.object();
        assert_eq!(n.model, None);
        assert_eq!(n.usage, None);
        assert_eq!(n.model_version, Some(None));
    }

    #[test]
    fn rejects_what_serde_json_rejects_inside_kept_members() {
        // Control character and bad escape inside usage, number out of range.
        assert!(parse(b"{\"usage\":{\"a\":\"\x01\"}}").is_err());
        assert!(parse(br#"{"usage":{"a":"\q"}}"#).is_err());
        assert!(parse(br#"{"usage":{"a":1e999}}"#).is_err());
        assert!(parse(br#"{"model":01}"#).is_err());
        // The same inside a skipped member is accepted, as before.
        assert!(parse(br#"{"content":"\q","n":1e999}"#).is_ok());
    }

    #[test]
    fn deep_arrays_fold_without_large_frames() {
        let deep = format!(
            "{}{{\"usageMetadata\":{{\"promptTokenCount\":3}}}}{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        let Top::Array { last, gemini } = parse(deep.as_bytes()).unwrap() else {
            panic!("not an array");
        };
        assert!(last.is_none());
        assert_eq!(gemini.ext.usage.input_tokens, 3);
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert!(parse(deeper.as_bytes()).is_err());
    }
}
