//! Typed extraction: reads the members usage extraction needs straight from
//! response bytes into small structs (counts as `u64`, strings borrowed when
//! unescaped), instead of materializing a `serde_json::Value` per response
//! or event, which was most of the filter's per-request cost.
//!
//! It accepts and rejects exactly what [`crate::sparse::parse`] does, and
//! each field holds what a lookup in that sparse `Value` would give: the
//! same scanner walks the same members; `WHOLE` members and kept scalars,
//! which the sparse parser hands to `serde_json`, are walked strictly as
//! `serde_json` parses them (see "strict walk" below); a duplicated
//! member's last occurrence wins, and presence counts any value, `null`
//! included. The tests in `providers::oracle` hold the two implementations
//! to the same results.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use crate::providers::gemini::GeminiStream;
use crate::providers::{cost_text, number_u64};
use crate::sparse::{class, Class, Invalid, Scanner, MAX_DEPTH};

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

/// Cohere's `billed_units` (kept apart from [`Details`], which every usage
/// object carries six of: each field there is copied on every parse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BilledUnits {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// A `usage` object (OpenAI chat and Responses, Anthropic, OpenRouter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageBlock {
    /// Members present whatever their value (the `HAS_*` bits): shape
    /// inference looks at names only.
    pub present: u16,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub prompt_tokens_details: Details,
    /// Cohere: the tokens it bills (`usage.billed_units`).
    pub billed_units: BilledUnits,
    pub completion_tokens_details: Details,
    pub input_tokens_details: Details,
    pub output_tokens_details: Details,
    pub cache_creation: Details,
    /// DeepSeek: the prompt tokens served from (`hit`) and missing (`miss`)
    /// its context cache.
    pub prompt_cache_hit_tokens: Option<u64>,
    pub prompt_cache_miss_tokens: Option<u64>,
    /// `cost` as a plain decimal string (see [`crate::providers::cost_string`]).
    pub cost: Option<String>,
}

impl UsageBlock {
    pub const HAS_PROMPT_TOKENS: u16 = 1;
    pub const HAS_COMPLETION_TOKENS: u16 = 1 << 1;
    pub const HAS_INPUT_TOKENS: u16 = 1 << 2;
    pub const HAS_CACHE_READ_INPUT_TOKENS: u16 = 1 << 3;
    pub const HAS_CACHE_CREATION_INPUT_TOKENS: u16 = 1 << 4;
    pub const HAS_INPUT_TOKENS_DETAILS: u16 = 1 << 5;
    pub const HAS_OUTPUT_TOKENS_DETAILS: u16 = 1 << 6;
    pub const HAS_TOTAL_TOKENS: u16 = 1 << 7;
    pub const HAS_BILLED_UNITS: u16 = 1 << 8;

    pub fn has(&self, bit: u16) -> bool {
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
    /// Groq's `x_groq` present (any value): its streams' usage is inside.
    pub x_groq: Option<Box<Sub<'a>>>,
    /// `delta` present (any value): Cohere's `message-end` usage is inside.
    pub delta: Option<Box<Sub<'a>>>,
    /// `stream` when it is a boolean (request bodies).
    pub stream: Option<bool>,
    /// `stream_options` present; inside, whether it is an object whose
    /// `include_usage` is `true` (request bodies).
    pub stream_options: Option<bool>,
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
            x_groq: None,
            delta: None,
            stream: None,
            stream_options: None,
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
    let mut s = Scanner { b: bytes, i: 0 };
    let valid = strict_skip(&mut s, 0).is_ok();
    s.ws();
    valid && s.i == bytes.len()
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
            strict_skip(s, 0)?;
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
            strict_skip(s, 0)?;
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
    s.members(|s, key| {
        match key {
            b"usage" => n.usage = usage_block(s)?,
            b"usageMetadata" => {
                n.has_usage_metadata = true;
                n.usage_metadata = gemini_meta(s)?;
            }
            b"promptFeedback" => n.prompt_blocked = feedback(s)?,
            b"stream_options" => n.stream_options = Some(include_usage(s)?),
            b"stream" => n.stream = kept_bool(s, depth + 1)?,
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
            b"x_groq" => n.x_groq = Some(Box::new(sub(s, depth + 1)?)),
            b"delta" => n.delta = Some(Box::new(sub(s, depth + 1)?)),
            other => member(s, depth, other)?,
        }
        Ok(())
    })?;
    Ok(n)
}

/// A member nothing is read from, of an object at `depth`: checked as the
/// sparse parser does (kept members strictly, others skipped).
fn member(s: &mut Scanner<'_>, depth: usize, key: &[u8]) -> Result<(), Invalid> {
    match class(key) {
        Class::Whole => strict_skip(s, 0),
        Class::Keep => validate(s, depth + 1),
        Class::Skip => s.skip(depth + 1),
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
            s.members(|s, key| member(s, depth, key))
        }
        Some(b'[') => {
            s.i += 1;
            s.elements(|s| validate(s, depth + 1))
        }
        _ => strict_skip(s, 0),
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
        _ => Ok(match strict_scalar(s)? {
            Scalar::Str(text) => Some(text),
            _ => None,
        }),
    }
}

/// A kept value read as a boolean (`None` when it is anything else).
fn kept_bool(s: &mut Scanner<'_>, depth: usize) -> Result<Option<bool>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    s.ws();
    match s.peek() {
        Some(b'{' | b'[') => validate(s, depth).map(|()| None),
        _ => Ok(match strict_scalar(s)? {
            Scalar::Bool(b) => Some(b),
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
    s.members(|s, key| {
        match key {
            b"model" => out.model = kept_str(s, depth + 1)?,
            b"usage" => out.usage = usage_block(s)?,
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
    s.members(|s, key| {
        if key == b"finishReason" {
            reason = kept_str(s, depth + 1)?;
            Ok(())
        } else {
            member(s, depth, key)
        }
    })?;
    Ok(reason.is_some_and(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED"))
}

fn from_span<'a, S: DeserializeSeed<'a>>(span: &'a [u8], seed: S) -> Result<S::Value, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(span);
    let v = seed.deserialize(&mut de).map_err(|_| Invalid)?;
    de.end().map_err(|_| Invalid)?;
    Ok(v)
}

// ------------------------------------------------------------ strict walk
//
// `WHOLE` members and kept scalars were handed to `serde_json` (after the
// scanner found their span). They are now walked once, as `serde_json`
// would parse them: the same grammar and the same nesting limit, with the
// tokens only it can judge (strings with escapes, control characters or
// non-ASCII bytes; numbers other than short unsigned integers) handed to it
// one by one. Whatever either would have rejected is rejected; tests hold
// [`is_valid_json`] to `serde_json`'s verdict.

/// `serde_json`'s nesting limit: the 128th container inside one value
/// handed to it fails.
const SERDE_LEVELS: usize = 128;

/// Opening a container inside `level` open ones.
fn enter(s: &mut Scanner<'_>, level: usize) -> Result<usize, Invalid> {
    if level + 1 >= SERDE_LEVELS {
        return Err(Invalid);
    }
    s.i += 1;
    Ok(level + 1)
}

/// The bytes between the quotes of a scanned string span that `serde_json`
/// could only accept as they are: printable ASCII without escapes.
fn plain_bytes(span: &[u8]) -> Option<&[u8]> {
    let inner = span.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    inner
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'\\')
        .then_some(inner)
}

/// [`plain_bytes`] as text.
fn plain_string(span: &[u8]) -> Option<&str> {
    plain_bytes(span).and_then(|b| std::str::from_utf8(b).ok())
}

/// A scalar, strictly.
fn strict_scalar<'a>(s: &mut Scanner<'a>) -> Result<Scalar<'a>, Invalid> {
    s.ws();
    let start = s.i;
    match s.peek().ok_or(Invalid)? {
        b'"' => {
            s.string()?;
            let span = s.b.get(start..s.i).ok_or(Invalid)?;
            match plain_string(span) {
                Some(text) => Ok(Scalar::Str(Cow::Borrowed(text))),
                None => from_span(span, ScalarSeed),
            }
        }
        b't' => s.literal(b"true").map(|()| Scalar::Bool(true)),
        b'f' => s.literal(b"false").map(|()| Scalar::Bool(false)),
        b'n' => s.literal(b"null").map(|()| Scalar::Other),
        b'-' | b'0'..=b'9' => {
            // The scanner's number span; `serde_json` rejects it unless it
            // is exactly one number.
            s.i += 1;
            while matches!(
                s.peek(),
                Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            ) {
                s.i += 1;
            }
            let span = s.b.get(start..s.i).ok_or(Invalid)?;
            let short_unsigned = span.len() <= 19
                && span.iter().all(u8::is_ascii_digit)
                && (span.len() == 1 || span.first() != Some(&b'0'));
            if short_unsigned {
                let n = span.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                Ok(Scalar::Num(n.into()))
            } else {
                from_span(span, ScalarSeed)
            }
        }
        _ => Err(Invalid),
    }
}

/// Any value inside `level` open containers, strictly, keeping nothing.
fn strict_skip(s: &mut Scanner<'_>, level: usize) -> Result<(), Invalid> {
    s.ws();
    match s.peek() {
        Some(b'{') => {
            let level = enter(s, level)?;
            strict_members(s, |s, _| strict_skip(s, level))
        }
        Some(b'[') => {
            let level = enter(s, level)?;
            s.elements(|s| strict_skip(s, level))
        }
        Some(b'"') => {
            // As `strict_scalar`, without making text of it.
            let start = s.i;
            s.string()?;
            let span = s.b.get(start..s.i).ok_or(Invalid)?;
            match plain_bytes(span) {
                Some(_) => Ok(()),
                None => from_span(span, Ignore),
            }
        }
        _ => strict_scalar(s).map(drop),
    }
}

/// Members of an object entered with [`enter`], strictly: names are
/// strings, passed unescaped.
fn strict_members<'a>(
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
        match plain_bytes(raw) {
            Some(key) => each(s, key)?,
            None => match from_span(raw, ScalarSeed)? {
                Scalar::Str(key) => each(s, key.as_bytes())?,
                _ => return Err(Invalid),
            },
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

/// A value read as an object: `each` per member when it is one (inside
/// `level + 1` containers), else checked and `false`.
fn strict_object<'a>(
    s: &mut Scanner<'a>,
    level: usize,
    each: impl FnMut(&mut Scanner<'a>, &[u8]) -> Result<(), Invalid>,
) -> Result<bool, Invalid> {
    s.ws();
    if s.peek() == Some(b'{') {
        enter(s, level)?;
        strict_members(s, each)?;
        Ok(true)
    } else {
        strict_skip(s, level).map(|()| false)
    }
}

/// A value read as a scalar (containers checked, `Other`).
fn strict_leaf<'a>(s: &mut Scanner<'a>, level: usize) -> Result<Scalar<'a>, Invalid> {
    s.ws();
    if matches!(s.peek(), Some(b'{' | b'[')) {
        strict_skip(s, level).map(|()| Scalar::Other)
    } else {
        strict_scalar(s)
    }
}

/// A token count: `get_u64`'s reading of the value.
fn count(s: &mut Scanner<'_>, level: usize) -> Result<Option<u64>, Invalid> {
    Ok(match strict_leaf(s, level)? {
        Scalar::Num(n) => number_u64(&n),
        _ => None,
    })
}

/// A provider-reported cost: `cost_string`'s reading of the value.
fn cost(s: &mut Scanner<'_>, level: usize) -> Result<Option<String>, Invalid> {
    Ok(match strict_leaf(s, level)? {
        Scalar::Num(n) => cost_text(&n.to_string()),
        Scalar::Str(text) => cost_text(text.trim()),
        Scalar::Bool(_) | Scalar::Other => None,
    })
}

/// A `usage` member: `Some` when it is an object.
fn usage_block(s: &mut Scanner<'_>) -> Result<Option<UsageBlock>, Invalid> {
    let mut u = UsageBlock::default();
    let is_object = strict_object(s, 0, |s, key| {
        let (bit, slot) = match key {
            b"prompt_tokens" => (UsageBlock::HAS_PROMPT_TOKENS, &mut u.prompt_tokens),
            b"completion_tokens" => (UsageBlock::HAS_COMPLETION_TOKENS, &mut u.completion_tokens),
            b"input_tokens" => (UsageBlock::HAS_INPUT_TOKENS, &mut u.input_tokens),
            b"output_tokens" => (0, &mut u.output_tokens),
            b"cache_read_input_tokens" => (
                UsageBlock::HAS_CACHE_READ_INPUT_TOKENS,
                &mut u.cache_read_input_tokens,
            ),
            b"cache_creation_input_tokens" => (
                UsageBlock::HAS_CACHE_CREATION_INPUT_TOKENS,
                &mut u.cache_creation_input_tokens,
            ),
            b"prompt_cache_hit_tokens" => (0, &mut u.prompt_cache_hit_tokens),
            b"prompt_cache_miss_tokens" => (0, &mut u.prompt_cache_miss_tokens),
            _ => {
                let (bit, details) = match key {
                    b"prompt_tokens_details" => (0, &mut u.prompt_tokens_details),
                    b"completion_tokens_details" => (0, &mut u.completion_tokens_details),
                    b"input_tokens_details" => (
                        UsageBlock::HAS_INPUT_TOKENS_DETAILS,
                        &mut u.input_tokens_details,
                    ),
                    b"output_tokens_details" => (
                        UsageBlock::HAS_OUTPUT_TOKENS_DETAILS,
                        &mut u.output_tokens_details,
                    ),
                    b"cache_creation" => (0, &mut u.cache_creation),
                    b"billed_units" => {
                        u.present |= UsageBlock::HAS_BILLED_UNITS;
                        let units = &mut u.billed_units;
                        *units = BilledUnits::default();
                        strict_object(s, 1, |s, key| {
                            let slot = match key {
                                b"input_tokens" => &mut units.input_tokens,
                                b"output_tokens" => &mut units.output_tokens,
                                _ => return strict_skip(s, 2),
                            };
                            *slot = count(s, 2)?;
                            Ok(())
                        })?;
                        return Ok(());
                    }
                    b"cost" => {
                        u.cost = cost(s, 1)?;
                        return Ok(());
                    }
                    b"total_tokens" => {
                        u.present |= UsageBlock::HAS_TOTAL_TOKENS;
                        return strict_skip(s, 1);
                    }
                    _ => return strict_skip(s, 1),
                };
                u.present |= bit;
                // The last occurrence replaces the whole object.
                *details = Details::default();
                strict_object(s, 1, |s, key| {
                    let slot = match key {
                        b"cached_tokens" => &mut details.cached_tokens,
                        b"cache_write_tokens" => &mut details.cache_write_tokens,
                        b"reasoning_tokens" => &mut details.reasoning_tokens,
                        b"ephemeral_5m_input_tokens" => &mut details.ephemeral_5m_input_tokens,
                        b"ephemeral_1h_input_tokens" => &mut details.ephemeral_1h_input_tokens,
                        _ => return strict_skip(s, 2),
                    };
                    *slot = count(s, 2)?;
                    Ok(())
                })?;
                return Ok(());
            }
        };
        u.present |= bit;
        *slot = count(s, 1)?;
        Ok(())
    })?;
    Ok(is_object.then_some(u))
}

/// A `usageMetadata` member: `Some` when it is an object.
fn gemini_meta(s: &mut Scanner<'_>) -> Result<Option<GeminiMeta>, Invalid> {
    let mut m = GeminiMeta::default();
    let is_object = strict_object(s, 0, |s, key| {
        let slot = match key {
            b"promptTokenCount" => &mut m.prompt_token_count,
            b"candidatesTokenCount" => &mut m.candidates_token_count,
            b"cachedContentTokenCount" => &mut m.cached_content_token_count,
            b"thoughtsTokenCount" => &mut m.thoughts_token_count,
            b"toolUsePromptTokenCount" => &mut m.tool_use_prompt_token_count,
            b"totalTokenCount" => &mut m.total_token_count,
            _ => return strict_skip(s, 1),
        };
        *slot = count(s, 1)?;
        Ok(())
    })?;
    Ok(is_object.then_some(m))
}

/// A `stream_options` member: whether it is an object whose (last)
/// `include_usage` is `true`.
fn include_usage(s: &mut Scanner<'_>) -> Result<bool, Invalid> {
    let mut include = false;
    strict_object(s, 0, |s, key| {
        if key == b"include_usage" {
            include = matches!(strict_leaf(s, 1)?, Scalar::Bool(true));
            Ok(())
        } else {
            strict_skip(s, 1)
        }
    })?;
    Ok(include)
}

/// A `promptFeedback` member: whether it is an object with a `blockReason`.
fn feedback(s: &mut Scanner<'_>) -> Result<bool, Invalid> {
    let mut blocked = false;
    strict_object(s, 0, |s, key| {
        blocked |= key == b"blockReason";
        strict_skip(s, 1)
    })?;
    Ok(blocked)
}

// ------------------------------------------------------------ serde seeds
//
// For the tokens handed to `serde_json`. Both deserialize with
// `deserialize_any` and walk nested values to their end (map keys through
// `deserialize_str`), which is what deserializing a `serde_json::Value`
// does: the parser makes the same checks and fails where it would.

/// Validates a value and keeps nothing.
#[derive(Clone, Copy)]
struct Ignore;

/// A member name, ignored.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> Visitor<'de> for Ignore {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Ignore)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Key)?.is_some() {
            map.next_value_seed(Ignore)?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Ignore {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A scalar: what `Value::as_str` or a number lookup would see.
enum Scalar<'a> {
    Num(Number),
    Str(Cow<'a, str>),
    Bool(bool),
    /// `null`, or a container.
    Other,
}

struct ScalarSeed;

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
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

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sparse::{KEEP, WHOLE};

    #[test]
    fn members_read_here_are_classified_as_the_sparse_parser_does() {
        for key in ["usage", "usageMetadata", "promptFeedback", "stream_options"] {
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
            "stream",
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
