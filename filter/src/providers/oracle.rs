//! The Value-based extraction this crate used before [`crate::typed`]
//! (kept verbatim from it, test-only): an oracle the typed extraction must
//! agree with on every input, valid or not.

#![allow(dead_code)]

use serde_json::Value;

use super::{clamp, cost_string, infer_shape_from_bytes, ApiShape, Extraction};
use crate::capture::{cap_model, contains, find_last_object, find_string_field};
use crate::record::Usage;
use crate::sse::SseEvent;

/// A non-negative integer field (floats are truncated, negatives ignored).
pub(crate) fn get_u64(v: &Value, key: &str) -> Option<u64> {
    let n = v.get(key)?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => Some(f as u64),
        _ => None,
    }
}

pub(crate) fn u64_or0(v: &Value, key: &str) -> u64 {
    get_u64(v, key).unwrap_or(0)
}

pub(crate) fn model_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).and_then(cap_model)
}

/// Guess the shape of a parsed, non-streamed body.
pub fn infer_shape_from_json(v: &Value) -> ApiShape {
    let v = match v {
        Value::Array(items) => match items.last() {
            Some(last) => last,
            None => return ApiShape::Unknown,
        },
        other => other,
    };
    let Some(obj) = v.as_object() else {
        return ApiShape::Unknown;
    };
    if obj.contains_key("usageMetadata")
        || obj.contains_key("candidates")
        || obj.contains_key("modelVersion")
    {
        return ApiShape::Gemini;
    }
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
    let object = obj.get("object").and_then(Value::as_str).unwrap_or("");
    if ty == "message" {
        return ApiShape::Anthropic;
    }
    if object == "response" {
        return ApiShape::OpenaiResponses;
    }
    if object.starts_with("chat.completion")
        || object == "text_completion"
        || obj.contains_key("choices")
    {
        return ApiShape::OpenaiChat;
    }
    match obj.get("usage") {
        Some(u) if u.is_object() => infer_shape_from_usage(u),
        _ => ApiShape::Unknown,
    }
}

fn infer_shape_from_usage(u: &Value) -> ApiShape {
    if u.get("billed_units").is_some() {
        ApiShape::Cohere
    } else if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
        ApiShape::OpenaiChat
    } else if u.get("cache_creation_input_tokens").is_some()
        || u.get("cache_read_input_tokens").is_some()
    {
        ApiShape::Anthropic
    } else if u.get("input_tokens_details").is_some()
        || u.get("output_tokens_details").is_some()
        || u.get("total_tokens").is_some()
    {
        ApiShape::OpenaiResponses
    } else if u.get("input_tokens").is_some() {
        ApiShape::Anthropic
    } else {
        ApiShape::Unknown
    }
}

/// Guess the shape from one streamed event.
pub fn infer_shape_from_event(ev: &SseEvent<'_>, v: Option<&Value>) -> ApiShape {
    if ev.data.trim() == "[DONE]" {
        return ApiShape::OpenaiChat;
    }
    let ty = v
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str)
        .or(ev.event)
        .unwrap_or("");
    if ty.starts_with("message_") || ty.starts_with("content_block_") || ty == "ping" {
        return ApiShape::Anthropic;
    }
    if ty.starts_with("response.") {
        return ApiShape::OpenaiResponses;
    }
    if [
        "message-",
        "content-",
        "tool-plan-",
        "tool-call-",
        "citation-",
    ]
    .iter()
    .any(|p| ty.starts_with(p))
    {
        return ApiShape::Cohere;
    }
    let Some(v) = v else {
        return ApiShape::Unknown;
    };
    if v.get("usageMetadata").is_some() || v.get("candidates").is_some() {
        return ApiShape::Gemini;
    }
    let object = v.get("object").and_then(Value::as_str).unwrap_or("");
    if object.starts_with("chat.completion") || v.get("choices").is_some() {
        return ApiShape::OpenaiChat;
    }
    ApiShape::Unknown
}

/// Extract usage from a parsed, non-streamed body (`Unknown` infers the
/// shape first).
pub fn extract_json(shape: ApiShape, v: &Value) -> Extraction {
    let shape = if shape == ApiShape::Unknown {
        infer_shape_from_json(v)
    } else {
        shape
    };
    match shape {
        ApiShape::OpenaiChat => openai::extract_chat(v),
        ApiShape::OpenaiResponses => openai::extract_responses(v),
        ApiShape::Anthropic => anthropic::extract(v),
        ApiShape::Gemini => gemini::extract(v),
        ApiShape::Cohere => cohere::extract(v),
        ApiShape::Bedrock | ApiShape::Unknown => Extraction::default(),
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
    let usage = find_last_object(tail, usage_key).or_else(|| find_last_object(head, usage_key));
    let model = find_string_field(head, model_key, true)
        .or_else(|| find_string_field(tail, model_key, false));
    let mut synth = serde_json::Map::new();
    if let Some(u) = usage {
        synth.insert(usage_key.to_owned(), u);
    }
    if let Some(m) = model {
        synth.insert(model_key.to_owned(), Value::String(m));
    }
    let synth = Value::Object(synth);
    match shape {
        ApiShape::OpenaiChat => openai::extract_chat(&synth),
        ApiShape::OpenaiResponses => openai::extract_responses(&synth),
        ApiShape::Anthropic => anthropic::extract(&synth),
        ApiShape::Gemini => gemini::extract(&synth),
        ApiShape::Cohere => cohere::extract(&synth),
        ApiShape::Bedrock | ApiShape::Unknown => Extraction::default(),
    }
}

pub mod openai {
    use super::*;

    fn detail(u: &Value, obj: &str, key: &str) -> u64 {
        u.get(obj).map_or(0, |d| u64_or0(d, key))
    }

    /// Normalize a Chat Completions `usage` object.
    pub fn chat_usage(u: &Value) -> Usage {
        let hit = get_u64(u, "prompt_cache_hit_tokens");
        let miss = get_u64(u, "prompt_cache_miss_tokens");
        let hit_and_miss = (hit.is_some() || miss.is_some())
            .then(|| hit.unwrap_or(0).saturating_add(miss.unwrap_or(0)));
        let cached = u
            .get("prompt_tokens_details")
            .and_then(|d| get_u64(d, "cached_tokens"));
        clamp(Usage {
            input_tokens: get_u64(u, "prompt_tokens").or(hit_and_miss).unwrap_or(0),
            output_tokens: u64_or0(u, "completion_tokens"),
            cache_read_tokens: cached.or(hit).unwrap_or(0),
            cache_write_tokens: detail(u, "prompt_tokens_details", "cache_write_tokens"),
            cache_write_1h_tokens: 0,
            reasoning_tokens: detail(u, "completion_tokens_details", "reasoning_tokens"),
        })
    }

    /// Normalize a Responses API `usage` object.
    pub fn responses_usage(u: &Value) -> Usage {
        clamp(Usage {
            input_tokens: u64_or0(u, "input_tokens"),
            output_tokens: u64_or0(u, "output_tokens"),
            cache_read_tokens: detail(u, "input_tokens_details", "cached_tokens"),
            cache_write_tokens: detail(u, "input_tokens_details", "cache_write_tokens"),
            cache_write_1h_tokens: 0,
            reasoning_tokens: detail(u, "output_tokens_details", "reasoning_tokens"),
        })
    }

    fn usage_obj(v: &Value) -> Option<&Value> {
        v.get("usage").filter(|u| u.is_object())
    }

    /// A non-streamed Chat Completions body.
    /// `usage`, else Groq's `x_groq.usage`.
    fn chat_usage_obj(v: &Value) -> Option<&Value> {
        usage_obj(v).or_else(|| v.get("x_groq").and_then(usage_obj))
    }

    pub fn extract_chat(v: &Value) -> Extraction {
        let mut ext = Extraction {
            model: model_of(v, "model"),
            ..Default::default()
        };
        if let Some(u) = chat_usage_obj(v) {
            ext.usage = chat_usage(u);
            ext.reported_cost = u.get("cost").and_then(cost_string);
            ext.usage_seen = true;
        }
        ext
    }

    /// A non-streamed Responses API body (the `response` object).
    pub fn extract_responses(v: &Value) -> Extraction {
        let mut ext = Extraction {
            model: model_of(v, "model"),
            ..Default::default()
        };
        if let Some(u) = usage_obj(v) {
            ext.usage = responses_usage(u);
            ext.reported_cost = u.get("cost").and_then(cost_string);
            ext.usage_seen = true;
        }
        ext
    }

    /// Chat Completions stream: usage arrives on the last chunk (with
    /// `choices: []` when requested through `stream_options.include_usage`,
    /// or on a chunk that still has choices for some compatible providers);
    /// the stream ends with `data: [DONE]`. The last usage seen wins.
    #[derive(Debug, Default)]
    pub struct ChatStream {
        pub ext: Extraction,
        pub done: bool,
    }

    impl ChatStream {
        pub fn on_value(&mut self, v: &Value) {
            if self.ext.model.is_none() {
                self.ext.model = model_of(v, "model");
            }
            if let Some(u) = chat_usage_obj(v) {
                self.ext.usage = chat_usage(u);
                if let Some(c) = u.get("cost").and_then(cost_string) {
                    self.ext.reported_cost = Some(c);
                }
                self.ext.usage_seen = true;
            }
        }
    }

    /// Responses API stream: `response.created` names the model; the terminal
    /// `response.completed` / `response.incomplete` / `response.failed` event
    /// carries `response.usage`.
    #[derive(Debug, Default)]
    pub struct ResponsesStream {
        pub ext: Extraction,
        pub terminal: bool,
    }

    /// Responses API events that end a response.
    pub const TERMINAL_EVENTS: [&str; 3] = [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ];

    impl ResponsesStream {
        pub fn on_value(&mut self, event_name: Option<&str>, v: &Value) {
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .or(event_name)
                .unwrap_or("");
            let Some(resp) = v.get("response") else {
                return;
            };
            if let Some(m) = model_of(resp, "model") {
                self.ext.model = Some(m);
            }
            if TERMINAL_EVENTS.contains(&ty) {
                self.terminal = true;
            }
            if let Some(u) = usage_obj(resp) {
                self.ext.usage = responses_usage(u);
                if let Some(c) = u.get("cost").and_then(cost_string) {
                    self.ext.reported_cost = Some(c);
                }
                self.ext.usage_seen = true;
            }
        }
    }
}

pub mod anthropic {
    use super::*;

    /// Raw Anthropic usage fields, `None` until seen.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct UsageFields {
        pub input: Option<u64>,
        pub cache_read: Option<u64>,
        pub cache_creation: Option<u64>,
        pub cache_5m: Option<u64>,
        pub cache_1h: Option<u64>,
        pub output: Option<u64>,
    }

    fn set(slot: &mut Option<u64>, v: &Value, key: &str) {
        if let Some(n) = get_u64(v, key) {
            *slot = Some(n);
        }
    }

    impl UsageFields {
        /// Merge a `usage` object: fields present in it replace earlier values.
        pub fn merge(&mut self, u: &Value) {
            set(&mut self.input, u, "input_tokens");
            set(&mut self.cache_read, u, "cache_read_input_tokens");
            set(&mut self.cache_creation, u, "cache_creation_input_tokens");
            set(&mut self.output, u, "output_tokens");
            if let Some(cc) = u.get("cache_creation").filter(|c| c.is_object()) {
                set(&mut self.cache_5m, cc, "ephemeral_5m_input_tokens");
                set(&mut self.cache_1h, cc, "ephemeral_1h_input_tokens");
            }
        }

        /// Normalize to the record's convention.
        pub fn usage(&self) -> Usage {
            let cache_read = self.cache_read.unwrap_or(0);
            let cache_1h = self.cache_1h.unwrap_or(0);
            let cache_write = self
                .cache_creation
                .unwrap_or_else(|| self.cache_5m.unwrap_or(0).saturating_add(cache_1h));
            clamp(Usage {
                input_tokens: self
                    .input
                    .unwrap_or(0)
                    .saturating_add(cache_read)
                    .saturating_add(cache_write),
                output_tokens: self.output.unwrap_or(0),
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
                cache_write_1h_tokens: cache_1h,
                reasoning_tokens: 0,
            })
        }
    }

    fn usage_obj(v: &Value) -> Option<&Value> {
        v.get("usage").filter(|u| u.is_object())
    }

    /// A non-streamed Messages API body.
    pub fn extract(v: &Value) -> Extraction {
        let mut ext = Extraction {
            model: model_of(v, "model"),
            ..Default::default()
        };
        if let Some(u) = usage_obj(v) {
            let mut f = UsageFields::default();
            f.merge(u);
            ext.usage = f.usage();
            ext.reported_cost = u.get("cost").and_then(cost_string);
            ext.usage_seen = true;
        }
        ext
    }

    /// Messages API stream state.
    #[derive(Debug, Default)]
    pub struct MessagesStream {
        pub fields: UsageFields,
        pub usage_seen: bool,
        pub model: Option<String>,
        pub reported_cost: Option<String>,
        /// `message_delta` (final cumulative usage) seen.
        pub delta_seen: bool,
        pub stop_seen: bool,
    }

    impl MessagesStream {
        pub fn on_value(&mut self, event_name: Option<&str>, v: &Value) {
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .or(event_name)
                .unwrap_or("");
            match ty {
                "message_start" => {
                    let Some(msg) = v.get("message") else {
                        return;
                    };
                    if let Some(m) = model_of(msg, "model") {
                        self.model = Some(m);
                    }
                    if let Some(u) = usage_obj(msg) {
                        self.merge(u);
                    }
                }
                "message_delta" => {
                    self.delta_seen = true;
                    if let Some(u) = usage_obj(v) {
                        self.merge(u);
                    }
                }
                "message_stop" => self.stop_seen = true,
                _ => {}
            }
        }

        fn merge(&mut self, u: &Value) {
            self.fields.merge(u);
            self.usage_seen = true;
            if let Some(c) = u.get("cost").and_then(cost_string) {
                self.reported_cost = Some(c);
            }
        }

        pub fn extraction(&self) -> Extraction {
            Extraction {
                usage: self.fields.usage(),
                model: self.model.clone(),
                reported_cost: self.reported_cost.clone(),
                usage_seen: self.usage_seen,
            }
        }
    }
}

pub mod gemini {
    use super::*;

    /// Normalize a `usageMetadata` object.
    pub fn gemini_usage(m: &Value) -> Usage {
        let prompt = u64_or0(m, "promptTokenCount");
        let candidates = u64_or0(m, "candidatesTokenCount");
        let cached = u64_or0(m, "cachedContentTokenCount");
        let thoughts = u64_or0(m, "thoughtsTokenCount");
        let tool = u64_or0(m, "toolUsePromptTokenCount");
        let folded = get_u64(m, "totalTokenCount").is_some_and(|total| {
            thoughts > 0 && prompt.saturating_add(candidates).saturating_add(tool) == total
        });
        let output = if folded {
            candidates
        } else {
            candidates.saturating_add(thoughts)
        };
        clamp(Usage {
            input_tokens: prompt.saturating_add(tool),
            output_tokens: output,
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: thoughts,
        })
    }

    fn model_version(v: &Value) -> Option<String> {
        let m = v.get("modelVersion")?.as_str()?;
        cap_model(m.strip_prefix("models/").unwrap_or(m))
    }

    /// Whether a response chunk ends the response (a candidate finished, or
    /// the prompt was blocked).
    fn is_final(v: &Value) -> bool {
        let finished = v
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|cands| {
                cands.iter().any(|c| {
                    c.get("finishReason")
                        .and_then(Value::as_str)
                        .is_some_and(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED")
                })
            });
        finished
            || v.get("promptFeedback")
                .and_then(|p| p.get("blockReason"))
                .is_some()
    }

    /// A non-streamed body: one response object, or the JSON array
    /// `streamGenerateContent` returns without `alt=sse`.
    pub fn extract(v: &Value) -> Extraction {
        let mut s = GeminiStream::default();
        match v {
            Value::Array(items) => items.iter().for_each(|i| s.on_value(i)),
            other => s.on_value(other),
        }
        s.ext
    }

    /// Gemini stream state.
    #[derive(Debug, Default)]
    pub struct GeminiStream {
        pub ext: Extraction,
        pub finished: bool,
    }

    impl GeminiStream {
        pub fn on_value(&mut self, v: &Value) {
            if let Value::Array(items) = v {
                items.iter().for_each(|i| self.on_value(i));
                return;
            }
            if self.ext.model.is_none() {
                self.ext.model = model_version(v);
            }
            if let Some(m) = v.get("usageMetadata").filter(|m| m.is_object()) {
                self.ext.usage = gemini_usage(m);
                self.ext.usage_seen = true;
            }
            if is_final(v) {
                self.finished = true;
            }
        }
    }
}

pub mod cohere {
    use super::*;

    /// `billed_units` of a usage object (present, whatever its value).
    fn usage(u: &Value) -> Option<Usage> {
        let billed = u.get("billed_units")?;
        Some(clamp(Usage {
            input_tokens: u64_or0(billed, "input_tokens"),
            output_tokens: u64_or0(billed, "output_tokens"),
            ..Usage::default()
        }))
    }

    fn usage_of(v: &Value) -> Option<Usage> {
        v.get("usage").filter(|u| u.is_object()).and_then(usage)
    }

    pub fn extract(v: &Value) -> Extraction {
        let mut ext = Extraction {
            model: model_of(v, "model"),
            ..Default::default()
        };
        if let Some(u) = usage_of(v) {
            ext.usage = u;
            ext.usage_seen = true;
        }
        ext
    }

    #[derive(Debug, Default)]
    pub struct ChatStream {
        pub ext: Extraction,
        pub finished: bool,
    }

    impl ChatStream {
        pub fn on_value(&mut self, event_name: Option<&str>, v: &Value) {
            let ty = v
                .get("type")
                .and_then(Value::as_str)
                .or(event_name)
                .unwrap_or("");
            if ty != "message-end" {
                return;
            }
            self.finished = true;
            if let Some(u) = v.get("delta").and_then(usage_of) {
                self.ext.usage = u;
                self.ext.usage_seen = true;
            }
        }
    }
}

/// Incremental usage accumulation over an SSE stream.
#[derive(Debug, Default)]
pub struct OldAccumulator {
    shape: ApiShape,
    chat: openai::ChatStream,
    responses: openai::ResponsesStream,
    anthropic: anthropic::MessagesStream,
    gemini: gemini::GeminiStream,
    cohere: cohere::ChatStream,
    parse_errors: u32,
    events: u64,
}

impl OldAccumulator {
    /// `Unknown` infers the shape from the first recognizable event.
    pub fn new(shape: ApiShape) -> Self {
        OldAccumulator {
            shape,
            ..Default::default()
        }
    }

    pub fn shape(&self) -> ApiShape {
        self.shape
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
        if self.shape == ApiShape::Unknown {
            let v = if ev.truncated {
                None
            } else {
                crate::sparse::parse(ev.data.as_bytes()).ok()
            };
            let shape = infer_shape_from_event(ev, v.as_ref());
            if shape == ApiShape::Unknown {
                if v.is_none() && !ev.truncated && ev.terminated && !ev.data.trim().is_empty() {
                    self.parse_errors = self.parse_errors.saturating_add(1);
                }
                return;
            }
            self.shape = shape;
        }
        if !self.wants(ev) {
            return;
        }
        let v = if ev.truncated {
            self.synthesize(ev)
        } else {
            match crate::sparse::parse(ev.data.as_bytes()) {
                Ok(v) => v,
                Err(_) => {
                    if ev.terminated {
                        self.parse_errors = self.parse_errors.saturating_add(1);
                    }
                    return;
                }
            }
        };
        match self.shape {
            ApiShape::OpenaiChat => self.chat.on_value(&v),
            ApiShape::OpenaiResponses => self.responses.on_value(ev.event, &v),
            ApiShape::Anthropic => self.anthropic.on_value(ev.event, &v),
            ApiShape::Gemini => self.gemini.on_value(&v),
            ApiShape::Cohere => self.cohere.on_value(ev.event, &v),
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

    /// A stand-in JSON value for an event too large to keep whole.
    fn synthesize(&self, ev: &SseEvent<'_>) -> Value {
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
        let usage = find_last_object(tail, usage_key).or_else(|| find_last_object(head, usage_key));
        let model = find_string_field(head, model_key, true)
            .or_else(|| find_string_field(tail, model_key, false));
        let mut inner = serde_json::Map::new();
        if let Some(u) = usage {
            inner.insert(usage_key.to_owned(), u);
        }
        if let Some(m) = model {
            inner.insert(model_key.to_owned(), Value::String(m));
        }
        let mut outer = serde_json::Map::new();
        match self.shape {
            ApiShape::OpenaiResponses => {
                outer.insert("response".to_owned(), Value::Object(inner));
            }
            ApiShape::Anthropic if ty.as_deref() == Some("message_start") => {
                outer.insert("message".to_owned(), Value::Object(inner));
            }
            ApiShape::Cohere => {
                outer.insert("delta".to_owned(), Value::Object(inner));
            }
            ApiShape::Gemini => {
                if let Some(reason) = find_string_field(tail, "finishReason", false) {
                    let cand = serde_json::json!([{ "finishReason": reason }]);
                    inner.insert("candidates".to_owned(), cand);
                }
                outer = inner;
            }
            _ => outer = inner,
        }
        if let Some(t) = ty {
            outer.insert("type".to_owned(), Value::String(t));
        }
        Value::Object(outer)
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
}

/// The typed extraction against this oracle: fixtures and corpus, their
/// mutations, and generated documents with duplicated, escaped, mistyped
/// and out-of-range usage members, as bodies, windows and SSE streams.
mod agreement {
    use std::path::Path;

    use proptest::prelude::*;

    use serde_json::Value;

    use super::OldAccumulator;
    use crate::providers::{self, ApiShape, StreamAccumulator};
    use crate::sse::SseFramer;

    const SHAPES: [ApiShape; 6] = [
        ApiShape::OpenaiChat,
        ApiShape::OpenaiResponses,
        ApiShape::Anthropic,
        ApiShape::Gemini,
        ApiShape::Cohere,
        ApiShape::Unknown,
    ];

    fn check_json(bytes: &[u8]) {
        assert_eq!(
            crate::typed::is_valid_json(bytes),
            serde_json::from_slice::<Value>(bytes).is_ok(),
            "validity of {:?}",
            String::from_utf8_lossy(bytes)
        );
        let old = crate::sparse::parse(bytes).ok().map(|v| {
            let shapes = SHAPES.map(|s| super::extract_json(s, &v));
            (super::infer_shape_from_json(&v), shapes)
        });
        let new = crate::typed::parse(bytes).ok().map(|v| {
            let shapes = SHAPES.map(|s| providers::extract_json(s, &v));
            (providers::infer_shape_from_json(&v), shapes)
        });
        assert_eq!(new, old, "body {:?}", String::from_utf8_lossy(bytes));
        // Oversized bodies: head and tail windows.
        for cut in [
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len().saturating_sub(64),
        ] {
            let (head, tail) = bytes.split_at(cut.min(bytes.len()));
            for s in SHAPES {
                assert_eq!(
                    providers::extract_windows(s, head, tail),
                    super::extract_windows(s, head, tail),
                    "windows {s:?} at {cut} of {:?}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }

    fn check_sse(bytes: &[u8]) {
        // A small budget truncates events, so stand-ins are compared too.
        for budget in [16 * 1024, 300] {
            for shape in SHAPES {
                let mut framer = SseFramer::new(budget);
                let mut new = StreamAccumulator::new(shape);
                let mut old = OldAccumulator::new(shape);
                let mut compare = |ev: &crate::sse::SseEvent<'_>| {
                    new.on_event(ev);
                    old.on_event(ev);
                    assert_eq!(new.extraction(), old.extraction(), "{shape:?} {ev:?}");
                    assert_eq!(new.is_complete(), old.is_complete(), "{shape:?} {ev:?}");
                    assert_eq!(new.shape(), old.shape(), "{shape:?} {ev:?}");
                    assert_eq!(new.parse_errors(), old.parse_errors(), "{shape:?} {ev:?}");
                };
                framer.push(bytes, &mut compare);
                framer.finish(&mut compare);
            }
        }
    }

    fn check(bytes: &[u8]) {
        check_json(bytes);
        check_sse(bytes);
    }

    fn inputs() -> Vec<Vec<u8>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut inputs = Vec::new();
        for dir in ["fixtures", "corpus"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            paths.sort();
            for path in paths {
                inputs.push(std::fs::read(&path).unwrap());
            }
        }
        inputs
    }

    /// The fuzz test's mutations (xorshift64*, deterministic).
    fn mutate(seed: &mut u64, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let mut next = |n: usize| {
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            let r = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if n == 0 {
                0
            } else {
                (r % n as u64) as usize
            }
        };
        let mut out = input.to_vec();
        for _ in 0..=next(8) {
            match next(6) {
                0 if !out.is_empty() => {
                    let i = next(out.len());
                    out[i] ^= 1 << next(8);
                }
                1 => {
                    let i = next(out.len() + 1);
                    let bytes = b"{}[]\":,\n\r \\0123456789-.eE";
                    out.insert(i, bytes[next(bytes.len())]);
                }
                2 if !out.is_empty() => {
                    let i = next(out.len());
                    let n = next(16).min(out.len() - i);
                    out.drain(i..i + n);
                }
                3 => {
                    let other = &others[next(others.len())];
                    let (i, j) = (next(out.len() + 1), next(other.len() + 1));
                    out.truncate(i);
                    out.extend_from_slice(&other[j..]);
                }
                4 => {
                    let keep = next(out.len() + 1);
                    out.truncate(keep);
                }
                _ if !out.is_empty() => {
                    let i = next(out.len());
                    let n = next(256).min(out.len() - i);
                    let slice = out[i..i + n].to_vec();
                    out.splice(i..i, slice);
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn nesting_limit_is_serde_json_limit() {
        for levels in 120..=132 {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let mut text = open.repeat(levels);
                text.push('1');
                for _ in 0..levels {
                    text.push_str(close);
                }
                assert_eq!(
                    crate::typed::is_valid_json(text.as_bytes()),
                    serde_json::from_slice::<Value>(text.as_bytes()).is_ok(),
                    "{levels} levels of {open}"
                );
                // Inside a usage member, where it decides the whole body.
                let body = format!("{{\"usage\":{{\"prompt_tokens\":{text}}}}}");
                check_json(body.as_bytes());
            }
        }
    }

    #[test]
    fn corpus_agrees() {
        for input in inputs() {
            check(&input);
            // Each line alone too (SSE data lines are JSON documents).
            for line in input.split(|&b| b == b'\n') {
                check_json(line.strip_prefix(b"data: ").unwrap_or(line));
            }
        }
    }

    #[test]
    fn mutated_corpus_agrees() {
        let iterations: usize = std::env::var("FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        let inputs = inputs();
        let mut seed = 0x0A11_CE5E_ED00_0001_u64;
        for _ in 0..iterations {
            let base = &inputs[(seed % inputs.len() as u64) as usize];
            let body = mutate(&mut seed, base, &inputs);
            check(&body);
        }
    }

    /// A JSON document as text: objects may repeat a member, names may be
    /// escaped, whitespace varies.
    #[derive(Debug, Clone)]
    enum Doc {
        Leaf(&'static str),
        Array(Vec<Doc>),
        Object(Vec<(&'static str, bool, Doc)>),
    }

    impl Doc {
        fn write(&self, out: &mut String, pretty: bool) {
            let ws = if pretty { " \n" } else { "" };
            match self {
                Doc::Leaf(text) => out.push_str(text),
                Doc::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(ws);
                        item.write(out, pretty);
                    }
                    out.push(']');
                }
                Doc::Object(members) => {
                    out.push('{');
                    for (i, (name, escape, value)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(ws);
                        out.push('"');
                        match name.split_at_checked(1) {
                            // `\u0075sage` is `usage`.
                            Some((first, rest)) if *escape => {
                                out.push_str(&format!("\\u{:04x}", first.as_bytes()[0]));
                                out.push_str(rest);
                            }
                            _ => out.push_str(name),
                        }
                        out.push_str("\":");
                        out.push_str(ws);
                        value.write(out, pretty);
                    }
                    out.push('}');
                }
            }
        }
    }

    const NAMES: &[&str] = &[
        "usage",
        "usageMetadata",
        "model",
        "modelVersion",
        "type",
        "object",
        "choices",
        "candidates",
        "finishReason",
        "promptFeedback",
        "blockReason",
        "response",
        "message",
        "delta",
        "content",
        "id",
        "error",
        "cost",
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "prompt_cache_hit_tokens",
        "prompt_cache_miss_tokens",
        "x_groq",
        "billed_units",
        "tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens_details",
        "output_tokens_details",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cache_creation",
        "ephemeral_5m_input_tokens",
        "ephemeral_1h_input_tokens",
        "promptTokenCount",
        "candidatesTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
        "toolUsePromptTokenCount",
        "totalTokenCount",
    ];

    const LEAVES: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "1",
        "7",
        "1000",
        "18446744073709551615",
        "18446744073709551616",
        "-3",
        "-0",
        "5.9",
        "2.5e3",
        "1e-7",
        "1.5E-6",
        "0.0284094",
        "1e400",
        "-1e400",
        "\"\"",
        "\"m\"",
        "\"message\"",
        "\"message_start\"",
        "\"message_delta\"",
        "\"message_stop\"",
        "\"response\"",
        "\"response.completed\"",
        "\"chat.completion\"",
        "\"chat.completion.chunk\"",
        "\"text_completion\"",
        "\"STOP\"",
        "\"FINISH_REASON_UNSPECIFIED\"",
        "\"models/gemini-2.5-pro\"",
        "\" 0.5 \"",
        "\"1e-3\"",
        "\"abc\"",
        "\"tab\\there\"",
        "\"\\u00e9t\\u00e9\"",
        "\"\u{e9}\"",
    ];

    /// Invalid inside kept members (escape, control character, range,
    /// grammar), accepted by the scanner inside skipped ones.
    const BAD_LEAVES: &[&str] = &["\"bad\\q\"", "\"ctl\u{1}\"", "1e400", "01", "1.", "-"];

    fn doc() -> impl Strategy<Value = Doc> {
        let leaf = prop_oneof![
            30 => prop::sample::select(LEAVES).prop_map(Doc::Leaf),
            1 => prop::sample::select(BAD_LEAVES).prop_map(Doc::Leaf),
        ];
        let any = leaf.prop_recursive(5, 80, 6, |inner| {
            prop_oneof![
                1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
                3 => prop::collection::vec(
                    (prop::sample::select(NAMES), prop::bool::weighted(0.05), inner),
                    0..7
                )
                .prop_map(Doc::Object),
            ]
        });
        prop_oneof![
            4 => prop::collection::vec(
                (prop::sample::select(NAMES), prop::bool::weighted(0.05), any.clone()),
                0..8
            )
            .prop_map(Doc::Object),
            1 => any,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn generated_bodies_agree(d in doc(), pretty in any::<bool>()) {
            let mut text = String::new();
            d.write(&mut text, pretty);
            check_json(text.as_bytes());
        }

        #[test]
        fn generated_streams_agree(
            events in prop::collection::vec(
                (prop::option::of(prop::sample::select(&[
                    "message_start", "message_delta", "message_stop", "response.created",
                    "response.completed", "error", "ping",
                ][..])), doc()),
                1..6,
            ),
        ) {
            let mut text = String::new();
            for (name, d) in &events {
                if let Some(name) = name {
                    text.push_str("event: ");
                    text.push_str(name);
                    text.push('\n');
                }
                text.push_str("data: ");
                d.write(&mut text, false);
                text.push_str("\n\n");
            }
            check_sse(text.as_bytes());
        }

        #[test]
        fn validity_is_serde_json_validity(
            bytes in prop::collection::vec(prop::sample::select(
                b"{}[]:,\"\\ 0-1.e9E+truefalsnu\x01\t\xc3\xa9\xff".to_vec()), 0..40),
        ) {
            prop_assert_eq!(
                crate::typed::is_valid_json(&bytes),
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
            );
        }
    }
}
