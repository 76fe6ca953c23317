//! Provider detection and usage extraction (pure; no host calls).
//!
//! Each API family normalizes its usage block to [`Usage`] following the
//! token convention of [`crate::record`]: `input_tokens` includes cache
//! reads and writes, `output_tokens` includes reasoning.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod openai;
#[cfg(test)]
mod oracle;

use std::borrow::Cow;

use serde_json::{Number, Value};

use crate::capture::{cap_model, contains, find_last_object_span, find_string_field};
use crate::record::{Provider, Usage};
use crate::sse::SseEvent;
use crate::typed::{Node, Top, UsageBlock};

/// The response shape (API family) of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiShape {
    /// OpenAI Chat Completions (also legacy completions, embeddings and
    /// OpenAI-compatible providers such as OpenRouter).
    OpenaiChat,
    /// OpenAI Responses API.
    OpenaiResponses,
    /// Anthropic Messages API.
    Anthropic,
    /// Gemini / Vertex AI `generateContent`.
    Gemini,
    /// AWS Bedrock Runtime (`/model/{id}/converse`, `converse-stream`,
    /// `invoke`, `invoke-with-response-stream`): read by
    /// [`bedrock`], not by the JSON and SSE paths here.
    Bedrock,
    /// Cohere v2 chat (`/v2/chat`).
    Cohere,
    #[default]
    Unknown,
}

impl ApiShape {
    /// The provider to report when only the shape is known.
    pub fn default_provider(self) -> Provider {
        match self {
            ApiShape::OpenaiChat | ApiShape::OpenaiResponses => Provider::Openai,
            ApiShape::Anthropic => Provider::Anthropic,
            ApiShape::Gemini => Provider::Gemini,
            ApiShape::Bedrock => Provider::Bedrock,
            ApiShape::Cohere => Provider::Cohere,
            ApiShape::Unknown => Provider::Unknown,
        }
    }
}

/// Usage extracted from one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extraction {
    pub usage: Usage,
    pub model: Option<String>,
    /// Provider-reported cost as a plain decimal string (OpenRouter).
    pub reported_cost: Option<String>,
    /// A usage block was found (its counts may still be zero).
    pub usage_seen: bool,
}

/// The path without its query string or fragment.
pub fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The API shape of a request path.
pub fn detect_shape(path: &str) -> ApiShape {
    let p = strip_query(path).trim_end_matches('/');
    // Cheap tests first: each substring search sets up a searcher, and this
    // runs a few times per request.
    if p.contains(':')
        && (p.contains(":generateContent")
            || p.contains(":streamGenerateContent")
            || p.ends_with(":embedContent")
            || p.ends_with(":batchEmbedContents")
            || gemini::is_vertex_predict(p))
    {
        return ApiShape::Gemini;
    }
    if (p.ends_with(":rawPredict") || p.ends_with(":streamRawPredict"))
        && p.contains("/publishers/anthropic/")
    {
        return ApiShape::Anthropic;
    }
    if p.ends_with("/chat/completions") || p.ends_with("/completions") || p.ends_with("/embeddings")
    {
        return ApiShape::OpenaiChat;
    }
    if bedrock::parse_path(p).is_some() {
        return ApiShape::Bedrock;
    }
    if p.ends_with("/responses") {
        return ApiShape::OpenaiResponses;
    }
    if p.ends_with("/messages") {
        return ApiShape::Anthropic;
    }
    if p.ends_with("/v2/chat") {
        return ApiShape::Cohere;
    }
    ApiShape::Unknown
}

/// The provider of a request, from its path and `:authority`/`Host`.
///
/// OpenRouter (host containing `openrouter`, or its `/api/v1/` prefix) wins;
/// then Azure OpenAI's deployment paths and hosts; an OpenAI-shaped path
/// is credited to the OpenAI-compatible vendor its host names (DeepSeek,
/// Groq, Mistral, xAI, Cohere), else to OpenAI; other paths' API family
/// decides, and the host only breaks ties for unknown paths. A wrong guess
/// only changes the reported provider: usage is read by the response's
/// shape either way.
pub fn detect_provider(path: &str, host: Option<&str>) -> Provider {
    let host = host.unwrap_or("").to_ascii_lowercase();
    let p = strip_query(path);
    if host.contains("openrouter") || p.starts_with("/api/v1/") {
        return Provider::Openrouter;
    }
    if p.starts_with("/openai/deployments/")
        || host.ends_with(".openai.azure.com")
        || host.ends_with(".cognitiveservices.azure.com")
        || host.ends_with(".services.ai.azure.com")
    {
        return Provider::Azure;
    }
    let shape = detect_shape(path);
    if shape == ApiShape::Anthropic && p.contains("/publishers/anthropic/") {
        return Provider::VertexAi;
    }
    if matches!(shape, ApiShape::OpenaiChat | ApiShape::OpenaiResponses) {
        if let Some(vendor) = compatible_vendor(&host) {
            return vendor;
        }
    }
    if shape != ApiShape::Unknown {
        return shape.default_provider();
    }
    if let Some(vendor) = compatible_vendor(&host) {
        vendor
    } else if host.contains("bedrock") {
        Provider::Bedrock
    } else if host.contains("anthropic") {
        Provider::Anthropic
    } else if host.contains("openai") {
        Provider::Openai
    } else if host.contains("googleapis") || host.contains("gemini") {
        Provider::Gemini
    } else {
        Provider::Unknown
    }
}

/// An OpenAI-compatible vendor named by an API host (lowercase).
fn compatible_vendor(host: &str) -> Option<Provider> {
    let name = host.split(':').next().unwrap_or(host);
    let is = |domain: &str| {
        name.strip_suffix(domain)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    };
    if is("deepseek.com") {
        Some(Provider::Deepseek)
    } else if is("groq.com") {
        Some(Provider::Groq)
    } else if is("mistral.ai") {
        Some(Provider::Mistral)
    } else if is("x.ai") {
        Some(Provider::Xai)
    } else if is("cohere.com") || is("cohere.ai") {
        Some(Provider::Cohere)
    } else {
        None
    }
}

/// The model named in a path: `.../models/<model>:method` (Gemini, Vertex),
/// Azure's `.../deployments/<name>/...` or Bedrock's `/model/<id>/<op>`.
pub fn model_from_path(path: &str) -> Option<String> {
    let p = strip_query(path);
    if let Some(m) = bedrock::model_from_path(p.trim_end_matches('/')) {
        return Some(m);
    }
    for marker in ["/models/", "/deployments/"] {
        if let Some(pos) = p.rfind(marker) {
            let rest = p.get(pos + marker.len()..).unwrap_or("");
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            if let Some(m) = rest.get(..end).and_then(cap_model) {
                return Some(m);
            }
        }
    }
    None
}

/// Guess the shape of a parsed, non-streamed body (an array by its last
/// element).
pub fn infer_shape_from_json(v: &Top<'_>) -> ApiShape {
    match v {
        Top::Object(node)
        | Top::Array {
            last: Some(node), ..
        } => infer_shape_from_node(node),
        Top::Array { last: None, .. } | Top::Scalar => ApiShape::Unknown,
    }
}

fn infer_shape_from_node(obj: &Node<'_>) -> ApiShape {
    if obj.has_usage_metadata || obj.has_candidates || obj.model_version.is_some() {
        return ApiShape::Gemini;
    }
    let ty = obj.ty.as_deref().unwrap_or("");
    let object = obj.object.as_deref().unwrap_or("");
    if ty == "message" {
        return ApiShape::Anthropic;
    }
    if object == "response" {
        return ApiShape::OpenaiResponses;
    }
    if object.starts_with("chat.completion") || object == "text_completion" || obj.has_choices {
        return ApiShape::OpenaiChat;
    }
    match &obj.usage {
        Some(u) => infer_shape_from_usage(u),
        None => ApiShape::Unknown,
    }
}

fn infer_shape_from_usage(u: &UsageBlock) -> ApiShape {
    if u.has(UsageBlock::HAS_BILLED_UNITS) {
        ApiShape::Cohere
    } else if u.has(UsageBlock::HAS_PROMPT_TOKENS) || u.has(UsageBlock::HAS_COMPLETION_TOKENS) {
        ApiShape::OpenaiChat
    } else if u.has(UsageBlock::HAS_CACHE_CREATION_INPUT_TOKENS)
        || u.has(UsageBlock::HAS_CACHE_READ_INPUT_TOKENS)
    {
        ApiShape::Anthropic
    } else if u.has(UsageBlock::HAS_INPUT_TOKENS_DETAILS)
        || u.has(UsageBlock::HAS_OUTPUT_TOKENS_DETAILS)
        || u.has(UsageBlock::HAS_TOTAL_TOKENS)
    {
        ApiShape::OpenaiResponses
    } else if u.has(UsageBlock::HAS_INPUT_TOKENS) {
        ApiShape::Anthropic
    } else {
        ApiShape::Unknown
    }
}

/// Guess the shape from raw bytes (head/tail windows of an oversized body).
pub fn infer_shape_from_bytes(head: &[u8], tail: &[u8]) -> ApiShape {
    let has = |n: &[u8]| contains(head, n) || contains(tail, n);
    let object = find_string_field(head, "object", true).unwrap_or_default();
    let ty = find_string_field(head, "type", true).unwrap_or_default();
    if has(b"\"usageMetadata\"") || has(b"\"candidates\"") || has(b"\"modelVersion\"") {
        ApiShape::Gemini
    } else if object == "response" || has(b"\"input_tokens_details\"") {
        ApiShape::OpenaiResponses
    } else if object.starts_with("chat.completion")
        || object == "text_completion"
        || has(b"\"prompt_tokens\"")
    {
        ApiShape::OpenaiChat
    } else if ty == "message" || has(b"\"cache_creation_input_tokens\"") {
        ApiShape::Anthropic
    } else if has(b"\"billed_units\"") {
        ApiShape::Cohere
    } else {
        ApiShape::Unknown
    }
}

/// Guess the shape from one streamed event.
pub fn infer_shape_from_event(ev: &SseEvent<'_>, v: Option<&Top<'_>>) -> ApiShape {
    if ev.data.trim() == "[DONE]" {
        return ApiShape::OpenaiChat;
    }
    let v = v.map(Top::object);
    let ty = v.and_then(|v| v.ty.as_deref()).or(ev.event).unwrap_or("");
    if ty.starts_with("message_") || ty.starts_with("content_block_") || ty == "ping" {
        return ApiShape::Anthropic;
    }
    if ty.starts_with("response.") {
        return ApiShape::OpenaiResponses;
    }
    if cohere::is_event_type(ty) {
        return ApiShape::Cohere;
    }
    let Some(v) = v else {
        return ApiShape::Unknown;
    };
    if v.has_usage_metadata || v.has_candidates {
        return ApiShape::Gemini;
    }
    let object = v.object.as_deref().unwrap_or("");
    if object.starts_with("chat.completion") || v.has_choices {
        return ApiShape::OpenaiChat;
    }
    ApiShape::Unknown
}

/// Extract usage from a parsed, non-streamed body (`Unknown` infers the
/// shape first).
pub fn extract_json(shape: ApiShape, v: &Top<'_>) -> Extraction {
    let shape = if shape == ApiShape::Unknown {
        infer_shape_from_json(v)
    } else {
        shape
    };
    match shape {
        ApiShape::OpenaiChat => openai::extract_chat(v.object()),
        ApiShape::OpenaiResponses => openai::extract_responses(v.object()),
        ApiShape::Anthropic => anthropic::extract(v.object()),
        ApiShape::Gemini => gemini::extract(v),
        ApiShape::Cohere => cohere::extract(v.object()),
        ApiShape::Bedrock | ApiShape::Unknown => Extraction::default(),
    }
}

/// JSON text of a stand-in object built from found pieces (raw values
/// already checked to be valid JSON, and strings), parsed like a body.
#[derive(Default)]
struct Synth(Vec<u8>);

impl Synth {
    fn raw(&mut self, key: &str, value: &[u8]) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        self.0.extend_from_slice(value);
    }

    fn string(&mut self, key: &str, value: &str) {
        let quoted = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        self.raw(key, &quoted);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.0.is_empty() {
            self.0.push(b'{');
        }
        self.0.push(b'}');
        self.0
    }
}

/// Extract usage from the head and tail windows of a body too large to
/// keep: the last usage object of the tail (then head) and the first model
/// string of the head (then the last of the tail).
pub fn extract_windows(shape: ApiShape, head: &[u8], tail: &[u8]) -> Extraction {
    let shape = if shape == ApiShape::Unknown {
        infer_shape_from_bytes(head, tail)
    } else {
        shape
    };
    let (usage_key, model_key) = match shape {
        ApiShape::Gemini => ("usageMetadata", "modelVersion"),
        ApiShape::Bedrock | ApiShape::Unknown => return Extraction::default(),
        _ => ("usage", "model"),
    };
    let usage =
        find_last_object_span(tail, usage_key).or_else(|| find_last_object_span(head, usage_key));
    let model = find_string_field(head, model_key, true)
        .or_else(|| find_string_field(tail, model_key, false));
    let mut synth = Synth::default();
    if let Some(u) = usage {
        synth.raw(usage_key, u);
    }
    if let Some(m) = model {
        synth.string(model_key, &m);
    }
    let synth = synth.finish();
    match crate::typed::parse(&synth) {
        Ok(v) => extract_json(shape, &v),
        Err(_) => Extraction::default(),
    }
}

/// A token count: a non-negative integer (floats are truncated, negatives
/// ignored).
pub(crate) fn number_u64(n: &Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => Some(f as u64),
        _ => None,
    }
}

/// [`number_u64`] of a member, `None` unless it is a number.
#[cfg(test)]
pub(crate) fn get_u64(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => number_u64(n),
        _ => None,
    }
}

/// A model string, capped.
pub(crate) fn model_of(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().and_then(cap_model)
}

/// Clamp subsets to their supersets so `input - cache_read - cache_write`
/// and `output - reasoning` never go negative downstream.
pub(crate) fn clamp(mut u: Usage) -> Usage {
    u.cache_read_tokens = u.cache_read_tokens.min(u.input_tokens);
    u.cache_write_tokens = u
        .cache_write_tokens
        .min(u.input_tokens.saturating_sub(u.cache_read_tokens));
    u.cache_write_1h_tokens = u.cache_write_1h_tokens.min(u.cache_write_tokens);
    u.reasoning_tokens = u.reasoning_tokens.min(u.output_tokens);
    u
}

/// Longest cost text accepted (longer is not a real price).
const MAX_COST_TEXT: usize = 64;

/// A provider-reported cost as a plain decimal string, without going
/// through a float: the number's own text (scientific notation expanded).
pub fn cost_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => cost_text(&n.to_string()),
        Value::String(s) => cost_text(s.trim()),
        _ => None,
    }
}

/// [`cost_string`] of a number's text or a trimmed string.
pub(crate) fn cost_text(text: &str) -> Option<String> {
    if text.len() > MAX_COST_TEXT {
        return None;
    }
    plain_decimal(text)
}

/// Expand `text` (`-?digits[.digits][e[+-]digits]`) into plain decimal
/// notation; `None` if it is not such a number or its exponent is absurd.
pub fn plain_decimal(text: &str) -> Option<String> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(pos) => {
            let e: i64 = text.get(pos + 1..)?.parse().ok()?;
            (text.get(..pos)?, e)
        }
        None => (text, 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let has_exp = mantissa.len() + usize::from(neg) != text.len();
    if !has_exp && !int_part.is_empty() && (!frac_part.is_empty() || !mantissa.contains('.')) {
        return Some(text.to_owned());
    }
    if exp.unsigned_abs() > 64 {
        return None;
    }
    let digits: String = format!("{int_part}{frac_part}");
    // Position of the decimal point within `digits` after shifting.
    let point = int_part.len() as i64 + exp;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        let (a, b) = digits.split_at(point as usize);
        out.push_str(a);
        out.push('.');
        out.push_str(b);
    }
    // Trim redundant leading zeros of the integer part.
    let (sign, body) = out.split_at(usize::from(neg));
    let trimmed = body.trim_start_matches('0');
    let body = if trimmed.is_empty() || trimmed.starts_with('.') {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    };
    Some(format!("{sign}{body}"))
}

/// Incremental usage accumulation over an SSE stream.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    shape: ApiShape,
    chat: openai::ChatStream,
    responses: openai::ResponsesStream,
    anthropic: anthropic::MessagesStream,
    gemini: gemini::GeminiStream,
    cohere: cohere::ChatStream,
    parse_errors: u32,
    events: u64,
}

impl StreamAccumulator {
    /// `Unknown` infers the shape from the first recognizable event.
    pub fn new(shape: ApiShape) -> Self {
        StreamAccumulator {
            shape,
            ..Default::default()
        }
    }

    pub fn shape(&self) -> ApiShape {
        self.shape
    }

    /// Whether runs of events may now be dropped unread (OpenAI chat once
    /// the model is known: only a usage object and `[DONE]` still matter,
    /// exactly what [`wants`](Self::wants) lets through and uses).
    pub fn skips_events(&self) -> bool {
        self.shape == ApiShape::OpenaiChat && self.chat.ext.model.is_some()
    }

    /// With [`skips_events`](Self::skips_events): the offset in `bytes` of
    /// the first byte that may belong to a wanted event: the first `"usage"`
    /// member whose value is not `null` (OpenAI sends `"usage":null` in every
    /// chunk of a stream that asked for usage), else the start of the last
    /// whole event. `[DONE]` ends a stream, so it is the last event of its
    /// chunk and always read this way, without a search for it.
    pub fn first_wanted(bytes: &[u8]) -> Option<usize> {
        static USAGE: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
            std::sync::OnceLock::new();
        let usage = USAGE.get_or_init(|| memchr::memmem::Finder::new(b"\"usage\""));
        let last_event = memchr::memmem::rfind(bytes, b"\n\n").map(|end| {
            let before = bytes.get(..end).unwrap_or_default();
            memchr::memmem::rfind(before, b"\n\n").map_or(0, |at| at + 2)
        });
        let searched = bytes
            .get(..last_event.unwrap_or(bytes.len()))
            .unwrap_or_default();
        let usage_object = usage.find_iter(searched).find(|&at| {
            let after = bytes.get(at + 7..).unwrap_or_default();
            let mut rest = after.iter().skip_while(|b| b.is_ascii_whitespace());
            if rest.next() != Some(&b':') {
                // Not a member name (or cut by the chunk end): keep it.
                return true;
            }
            // Unseen value (chunk end) counts as wanted.
            rest.find(|b| !b.is_ascii_whitespace()) != Some(&b'n')
        });
        usage_object.or(last_event)
    }

    /// Whether [`skips_events`](Self::skips_events) may still turn on (an
    /// OpenAI chat stream, or one not yet recognized, before its model).
    pub fn may_skip_later(&self) -> bool {
        matches!(self.shape, ApiShape::OpenaiChat | ApiShape::Unknown)
            && self.chat.ext.model.is_none()
    }

    /// Events seen (skipped runs not included).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events whose data should have been JSON but did not parse (events
    /// cut by the end of the stream excluded).
    pub fn parse_errors(&self) -> u32 {
        self.parse_errors
    }

    pub fn on_event(&mut self, ev: &SseEvent<'_>) {
        self.events = self.events.saturating_add(1);
        if !ev.truncated && ev.data.trim().is_empty() {
            // Keep-alive or empty `data:` line; nothing to parse.
            return;
        }
        // The parse made to recognize the stream, reused below.
        let mut parsed = None;
        if self.shape == ApiShape::Unknown {
            let v = if ev.truncated {
                None
            } else {
                Some(crate::typed::parse(ev.data.as_bytes()))
            };
            let ok = v.as_ref().and_then(|r| r.as_ref().ok());
            let shape = infer_shape_from_event(ev, ok);
            if shape == ApiShape::Unknown {
                if ok.is_none() && !ev.truncated && ev.terminated && !ev.data.trim().is_empty() {
                    self.parse_errors = self.parse_errors.saturating_add(1);
                }
                return;
            }
            self.shape = shape;
            parsed = v;
        }
        if !self.wants(ev) {
            return;
        }
        let synth;
        let parsed = if ev.truncated {
            synth = self.synthesize(ev);
            crate::typed::parse(&synth)
        } else {
            parsed.unwrap_or_else(|| crate::typed::parse(ev.data.as_bytes()))
        };
        let v = match parsed {
            Ok(v) => v,
            Err(_) => {
                // (A stand-in is built from checked pieces and parses.)
                if ev.terminated && !ev.truncated {
                    self.parse_errors = self.parse_errors.saturating_add(1);
                }
                return;
            }
        };
        match self.shape {
            ApiShape::OpenaiChat => self.chat.on_node(v.object()),
            ApiShape::OpenaiResponses => self.responses.on_node(ev.event, v.object()),
            ApiShape::Anthropic => self.anthropic.on_node(ev.event, v.object()),
            ApiShape::Gemini => self.gemini.on_top(&v),
            ApiShape::Cohere => self.cohere.on_node(ev.event, v.object()),
            ApiShape::Bedrock | ApiShape::Unknown => {}
        }
    }

    /// Cheap pre-filter: skip parsing events that cannot carry usage,
    /// model or end-of-stream information.
    fn wants(&mut self, ev: &SseEvent<'_>) -> bool {
        let data = ev.data.as_bytes();
        match self.shape {
            ApiShape::OpenaiChat => {
                if ev.data.trim() == "[DONE]" {
                    self.chat.done = true;
                    return false;
                }
                ev.truncated || self.chat.ext.model.is_none() || contains(data, b"\"usage\"")
            }
            ApiShape::OpenaiResponses => match ev.event {
                Some(name) => {
                    !name.starts_with("response.")
                        || matches!(
                            name,
                            "response.created"
                                | "response.in_progress"
                                | "response.completed"
                                | "response.incomplete"
                                | "response.failed"
                        )
                }
                None => true,
            },
            ApiShape::Anthropic => match ev.event {
                Some(name) => matches!(
                    name,
                    "message_start" | "message_delta" | "message_stop" | "error"
                ),
                None => true,
            },
            ApiShape::Cohere => match ev.event {
                Some(name) => name == "message-end",
                None => true,
            },
            ApiShape::Gemini | ApiShape::Bedrock | ApiShape::Unknown => true,
        }
    }

    /// A stand-in JSON object for an event too large to keep whole.
    fn synthesize(&self, ev: &SseEvent<'_>) -> Vec<u8> {
        let head = ev.data.as_bytes();
        let tail = ev.tail.as_bytes();
        let ty = ev
            .event
            .map(str::to_owned)
            .or_else(|| find_string_field(head, "type", true))
            .or_else(|| find_string_field(tail, "type", false));
        let (usage_key, model_key) = match self.shape {
            ApiShape::Gemini => ("usageMetadata", "modelVersion"),
            _ => ("usage", "model"),
        };
        let usage = find_last_object_span(tail, usage_key)
            .or_else(|| find_last_object_span(head, usage_key));
        let model = find_string_field(head, model_key, true)
            .or_else(|| find_string_field(tail, model_key, false));
        let mut inner = Synth::default();
        if let Some(u) = usage {
            inner.raw(usage_key, u);
        }
        if let Some(m) = &model {
            inner.string(model_key, m);
        }
        let mut outer = match self.shape {
            ApiShape::OpenaiResponses => {
                let mut outer = Synth::default();
                outer.raw("response", &inner.finish());
                outer
            }
            ApiShape::Anthropic if ty.as_deref() == Some("message_start") => {
                let mut outer = Synth::default();
                outer.raw("message", &inner.finish());
                outer
            }
            ApiShape::Cohere => {
                let mut outer = Synth::default();
                outer.raw("delta", &inner.finish());
                outer
            }
            ApiShape::Gemini => {
                if let Some(reason) = find_string_field(tail, "finishReason", false) {
                    let mut cand = Synth::default();
                    cand.string("finishReason", &reason);
                    let mut list = vec![b'['];
                    list.extend_from_slice(&cand.finish());
                    list.push(b']');
                    inner.raw("candidates", &list);
                }
                inner
            }
            _ => inner,
        };
        if let Some(t) = &ty {
            outer.string("type", t);
        }
        outer.finish()
    }

    /// Whether the provider's end-of-response usage was seen: the chat
    /// `[DONE]` sentinel or usage chunk, the Responses terminal event,
    /// Anthropic's `message_delta`, Gemini's `finishReason`.
    pub fn is_complete(&self) -> bool {
        match self.shape {
            ApiShape::OpenaiChat => self.chat.done || self.chat.ext.usage_seen,
            ApiShape::OpenaiResponses => self.responses.terminal,
            ApiShape::Anthropic => self.anthropic.delta_seen || self.anthropic.stop_seen,
            ApiShape::Gemini => self.gemini.finished,
            ApiShape::Cohere => self.cohere.finished,
            ApiShape::Bedrock | ApiShape::Unknown => false,
        }
    }

    /// What has been accumulated so far.
    pub fn extraction(&self) -> Extraction {
        match self.shape {
            ApiShape::OpenaiChat => self.chat.ext.clone(),
            ApiShape::OpenaiResponses => self.responses.ext.clone(),
            ApiShape::Anthropic => self.anthropic.extraction(),
            ApiShape::Gemini => self.gemini.ext.clone(),
            ApiShape::Cohere => self.cohere.ext.clone(),
            ApiShape::Bedrock | ApiShape::Unknown => Extraction::default(),
        }
    }

    /// Heap bytes held (model and cost strings, each capped).
    pub fn retained_bytes(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::capacity);
        s(&self.chat.ext.model)
            + s(&self.chat.ext.reported_cost)
            + s(&self.responses.ext.model)
            + s(&self.responses.ext.reported_cost)
            + s(&self.anthropic.model)
            + s(&self.anthropic.reported_cost)
            + s(&self.gemini.ext.model)
            + s(&self.cohere.ext.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_wanted_finds_usage_objects_and_done_only() {
        let first = StreamAccumulator::first_wanted;
        assert_eq!(first(br#"data: {"a":1,"usage":null}"#), None);
        assert_eq!(first(br#"{"usage" :  null}{"usage": {"x":1}}"#), Some(18));
        // The value is cut by the chunk end: kept.
        assert_eq!(first(br#"{"usage": "#), Some(1));
        assert_eq!(first(br#"{"usage""#), Some(1));
        // A mention inside generated text is escaped, so never matches.
        assert_eq!(first(br#"{"c":"the \"usage\" word"}"#), None);
        assert_eq!(first(b"no usage here"), None);
        // Else the last whole event ([DONE] ends the stream, so it is one).
        assert_eq!(first(b"data: a\n\ndata: [DONE]\n\n"), Some(9));
        assert_eq!(first(b"data: a\n\ndata: b\n\ndata: par"), Some(9));
        assert_eq!(first(b"data: [DONE]\n\n"), Some(0));
        let usage_before_last = b"data: {\"usage\":{}}\n\ndata: [DONE]\n\n";
        assert_eq!(first(usage_before_last), Some(7));
    }

    #[test]
    fn shapes_from_paths() {
        assert_eq!(detect_shape("/v1/chat/completions"), ApiShape::OpenaiChat);
        assert_eq!(
            detect_shape("/api/v1/chat/completions?x=1"),
            ApiShape::OpenaiChat
        );
        assert_eq!(
            detect_shape("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"),
            ApiShape::OpenaiChat
        );
        assert_eq!(detect_shape("/v1/responses"), ApiShape::OpenaiResponses);
        assert_eq!(detect_shape("/v1/messages"), ApiShape::Anthropic);
        assert_eq!(
            detect_shape("/v1beta/models/gemini-2.5-pro:generateContent"),
            ApiShape::Gemini
        );
        assert_eq!(
            detect_shape("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
            ApiShape::Gemini
        );
        assert_eq!(
            detect_shape(
                "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
            ),
            ApiShape::Anthropic
        );
        assert_eq!(detect_shape("/v1/models"), ApiShape::Unknown);
        assert_eq!(detect_shape("/healthz"), ApiShape::Unknown);
    }

    #[test]
    fn providers_from_path_and_host() {
        assert_eq!(
            detect_provider("/v1/chat/completions", None),
            Provider::Openai
        );
        assert_eq!(
            detect_provider("/api/v1/chat/completions", None),
            Provider::Openrouter
        );
        assert_eq!(
            detect_provider("/v1/chat/completions", Some("OpenRouter.ai")),
            Provider::Openrouter
        );
        assert_eq!(
            detect_provider("/v1/messages", Some("gw.local")),
            Provider::Anthropic
        );
        assert_eq!(
            detect_provider(
                "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
                None
            ),
            Provider::Gemini
        );
        assert_eq!(
            detect_provider("/x", Some("api.anthropic.com")),
            Provider::Anthropic
        );
        assert_eq!(
            detect_provider("/x", Some("api.openai.com")),
            Provider::Openai
        );
        assert_eq!(
            detect_provider("/x", Some("generativelanguage.googleapis.com")),
            Provider::Gemini
        );
        assert_eq!(detect_provider("/x", None), Provider::Unknown);
        assert_eq!(
            detect_provider(
                "/openai/deployments/prod/chat/completions?api-version=1",
                None
            ),
            Provider::Azure
        );
        assert_eq!(
            detect_provider("/openai/v1/responses", Some("acme.openai.azure.com")),
            Provider::Azure
        );
        for (host, vendor) in [
            ("api.deepseek.com", Provider::Deepseek),
            ("api.groq.com:443", Provider::Groq),
            ("api.mistral.ai", Provider::Mistral),
            ("api.x.ai", Provider::Xai),
            ("api.cohere.com", Provider::Cohere),
        ] {
            assert_eq!(
                detect_provider("/v1/chat/completions", Some(host)),
                vendor,
                "{host}"
            );
        }
        // A look-alike host is not the vendor.
        assert_eq!(
            detect_provider("/v1/chat/completions", Some("notdeepseek.com")),
            Provider::Openai
        );
        assert_eq!(
            detect_provider("/x", Some("bedrock-runtime.us-east-1.amazonaws.com")),
            Provider::Bedrock
        );
        assert_eq!(
            detect_provider(
                "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict",
                Some("us-east5-aiplatform.googleapis.com")
            ),
            Provider::VertexAi
        );
    }

    #[test]
    fn models_from_paths() {
        assert_eq!(
            model_from_path("/v1beta/models/gemini-2.5-pro:generateContent").as_deref(),
            Some("gemini-2.5-pro")
        );
        assert_eq!(
            model_from_path(
                "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            )
            .as_deref(),
            Some("gemini-2.5-flash")
        );
        assert_eq!(
            model_from_path("/openai/deployments/my-gpt4o/chat/completions").as_deref(),
            Some("my-gpt4o")
        );
        assert_eq!(model_from_path("/v1/chat/completions"), None);
        assert_eq!(model_from_path("/v1beta/models/"), None);
        assert_eq!(model_from_path("/v1beta/models/:x"), None);
    }

    #[test]
    fn plain_decimals() {
        assert_eq!(plain_decimal("0.00123").as_deref(), Some("0.00123"));
        assert_eq!(plain_decimal("1e-7").as_deref(), Some("0.0000001"));
        assert_eq!(plain_decimal("1.25E-3").as_deref(), Some("0.00125"));
        assert_eq!(plain_decimal("1.5e3").as_deref(), Some("1500"));
        assert_eq!(plain_decimal("1.5e+1").as_deref(), Some("15"));
        assert_eq!(plain_decimal("-2.5e-2").as_deref(), Some("-0.025"));
        assert_eq!(plain_decimal("12e0").as_deref(), Some("12"));
        assert_eq!(plain_decimal(".5").as_deref(), Some("0.5"));
        assert_eq!(plain_decimal("007").as_deref(), Some("007"));
        assert_eq!(plain_decimal("0").as_deref(), Some("0"));
        assert_eq!(plain_decimal("abc"), None);
        assert_eq!(plain_decimal("1e999999"), None);
        assert_eq!(plain_decimal(""), None);
        assert_eq!(plain_decimal("."), None);
        assert_eq!(
            cost_string(&serde_json::json!(0.000_012_3)).as_deref(),
            Some("0.0000123")
        );
        assert_eq!(cost_string(&serde_json::json!(3)).as_deref(), Some("3"));
        assert_eq!(
            cost_string(&serde_json::json!("0.5")).as_deref(),
            Some("0.5")
        );
        assert_eq!(cost_string(&serde_json::json!(null)), None);
    }

    #[test]
    fn infers_shapes_from_json() {
        let j = |s: &'static str| crate::typed::parse(s.as_bytes()).unwrap();
        assert_eq!(
            infer_shape_from_json(&j(r#"{"usageMetadata":{}}"#)),
            ApiShape::Gemini
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"[{"candidates":[]}]"#)),
            ApiShape::Gemini
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"type":"message"}"#)),
            ApiShape::Anthropic
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"object":"response"}"#)),
            ApiShape::OpenaiResponses
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"object":"chat.completion"}"#)),
            ApiShape::OpenaiChat
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"usage":{"prompt_tokens":1}}"#)),
            ApiShape::OpenaiChat
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"usage":{"input_tokens":1,"output_tokens":1}}"#)),
            ApiShape::Anthropic
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"usage":{"input_tokens":1,"total_tokens":2}}"#)),
            ApiShape::OpenaiResponses
        );
        assert_eq!(
            infer_shape_from_json(&j(r#"{"hello":1}"#)),
            ApiShape::Unknown
        );
        assert_eq!(infer_shape_from_json(&j("[]")), ApiShape::Unknown);
        assert_eq!(infer_shape_from_json(&j("3")), ApiShape::Unknown);
    }

    #[test]
    fn clamps_inconsistent_subsets() {
        let u = clamp(Usage {
            input_tokens: 10,
            cache_read_tokens: 8,
            cache_write_tokens: 5,
            cache_write_1h_tokens: 9,
            output_tokens: 3,
            reasoning_tokens: 4,
        });
        assert_eq!(u.cache_read_tokens, 8);
        assert_eq!(u.cache_write_tokens, 2);
        assert_eq!(u.cache_write_1h_tokens, 2);
        assert_eq!(u.reasoning_tokens, 3);
    }

    #[test]
    fn get_u64_variants() {
        let v = serde_json::json!({"a": 5, "b": 5.9, "c": -1, "d": "7", "e": null});
        assert_eq!(get_u64(&v, "a"), Some(5));
        assert_eq!(get_u64(&v, "b"), Some(5));
        assert_eq!(get_u64(&v, "c"), None);
        assert_eq!(get_u64(&v, "d"), None);
        assert_eq!(get_u64(&v, "e"), None);
        assert_eq!(get_u64(&v, "z"), None);
    }
}
