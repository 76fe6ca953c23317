//! OpenAI Chat Completions (and OpenAI-compatible: OpenRouter, Azure) and
//! the OpenAI Responses API.
//!
//! Chat: `usage.prompt_tokens` already includes
//! `prompt_tokens_details.cached_tokens` (and OpenRouter's
//! `prompt_tokens_details.cache_write_tokens`); `completion_tokens` already
//! includes `completion_tokens_details.reasoning_tokens`. OpenRouter adds
//! `usage.cost` (credits, USD). OpenAI-compatible dialects: DeepSeek's
//! `prompt_tokens` is `prompt_cache_hit_tokens + prompt_cache_miss_tokens`,
//! the hits being its cache reads; Groq streams put the usage in
//! `x_groq.usage` of the last chunk.
//!
//! Responses: `usage.input_tokens` includes
//! `input_tokens_details.cached_tokens`; `output_tokens` includes
//! `output_tokens_details.reasoning_tokens`.

use super::{clamp, model_of, Extraction};
use crate::record::Usage;
use crate::typed::{Node, UsageBlock};

/// Normalize a Chat Completions `usage` object.
pub fn chat_usage(u: &UsageBlock) -> Usage {
    let (hit, miss) = (u.prompt_cache_hit_tokens, u.prompt_cache_miss_tokens);
    let hit_and_miss = (hit.is_some() || miss.is_some())
        .then(|| hit.unwrap_or(0).saturating_add(miss.unwrap_or(0)));
    clamp(Usage {
        input_tokens: u.prompt_tokens.or(hit_and_miss).unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
        cache_read_tokens: u.prompt_tokens_details.cached_tokens.or(hit).unwrap_or(0),
        cache_write_tokens: u.prompt_tokens_details.cache_write_tokens.unwrap_or(0),
        cache_write_1h_tokens: 0,
        reasoning_tokens: u.completion_tokens_details.reasoning_tokens.unwrap_or(0),
    })
}

/// Normalize a Responses API `usage` object.
pub fn responses_usage(u: &UsageBlock) -> Usage {
    clamp(Usage {
        input_tokens: u.input_tokens.unwrap_or(0),
        output_tokens: u.output_tokens.unwrap_or(0),
        cache_read_tokens: u.input_tokens_details.cached_tokens.unwrap_or(0),
        cache_write_tokens: u.input_tokens_details.cache_write_tokens.unwrap_or(0),
        cache_write_1h_tokens: 0,
        reasoning_tokens: u.output_tokens_details.reasoning_tokens.unwrap_or(0),
    })
}

/// The usage object of a chat body or chunk: `usage`, else Groq's
/// `x_groq.usage`.
fn chat_usage_block<'n>(v: &'n Node<'_>) -> Option<&'n UsageBlock> {
    v.usage
        .as_ref()
        .or_else(|| v.x_groq.as_ref().and_then(|x| x.usage.as_ref()))
}

/// A non-streamed Chat Completions body.
pub fn extract_chat(v: &Node<'_>) -> Extraction {
    let mut ext = Extraction {
        model: model_of(&v.model),
        ..Default::default()
    };
    if let Some(u) = chat_usage_block(v) {
        ext.usage = chat_usage(u);
        ext.reported_cost.clone_from(&u.cost);
        ext.usage_seen = true;
    }
    ext
}

/// A non-streamed Responses API body (the `response` object).
pub fn extract_responses(v: &Node<'_>) -> Extraction {
    let mut ext = Extraction {
        model: model_of(&v.model),
        ..Default::default()
    };
    if let Some(u) = &v.usage {
        ext.usage = responses_usage(u);
        ext.reported_cost.clone_from(&u.cost);
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
    pub fn on_node(&mut self, v: &Node<'_>) {
        if self.ext.model.is_none() {
            self.ext.model = model_of(&v.model);
        }
        if let Some(u) = chat_usage_block(v) {
            self.ext.usage = chat_usage(u);
            if let Some(c) = &u.cost {
                self.ext.reported_cost = Some(c.clone());
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
    pub fn on_node(&mut self, event_name: Option<&str>, v: &Node<'_>) {
        let ty = v.ty.as_deref().or(event_name).unwrap_or("");
        let Some(resp) = &v.response else {
            return;
        };
        if let Some(m) = model_of(&resp.model) {
            self.ext.model = Some(m);
        }
        if TERMINAL_EVENTS.contains(&ty) {
            self.terminal = true;
        }
        if let Some(u) = &resp.usage {
            self.ext.usage = responses_usage(u);
            if let Some(c) = &u.cost {
                self.ext.reported_cost = Some(c.clone());
            }
            self.ext.usage_seen = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{extract_json, extract_windows, ApiShape};
    use crate::typed::Top;

    fn j(s: &str) -> Top<'_> {
        crate::typed::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn chat_with_cache_and_reasoning() {
        let v = j(include_str!("../../tests/fixtures/openai_chat.json"));
        let e = extract_json(ApiShape::OpenaiChat, &v);
        assert!(e.usage_seen);
        assert_eq!(e.model.as_deref(), Some("o4-mini-2025-04-16"));
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 2006,
                output_tokens: 300,
                cache_read_tokens: 1920,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 192,
            }
        );
        assert_eq!(e.reported_cost, None);
        // Shape inference gives the same.
        assert_eq!(extract_json(ApiShape::Unknown, &v), e);
    }

    #[test]
    fn deepseek_cache_hits_are_cache_reads() {
        let chat = |body: &str| extract_json(ApiShape::OpenaiChat, &j(body)).usage;
        let u = chat(
            r#"{"usage":{"prompt_tokens":1600,"completion_tokens":9,"prompt_cache_hit_tokens":1536,"prompt_cache_miss_tokens":64}}"#,
        );
        assert_eq!((u.input_tokens, u.cache_read_tokens), (1600, 1536));
        // Without prompt_tokens, hits + misses are the prompt.
        let u = chat(
            r#"{"usage":{"completion_tokens":9,"prompt_cache_hit_tokens":100,"prompt_cache_miss_tokens":28}}"#,
        );
        assert_eq!((u.input_tokens, u.cache_read_tokens), (128, 100));
        // OpenAI's own detail wins where both are given.
        let u = chat(
            r#"{"usage":{"prompt_tokens":50,"prompt_tokens_details":{"cached_tokens":10},"prompt_cache_hit_tokens":40}}"#,
        );
        assert_eq!(u.cache_read_tokens, 10);
        // Groq's x_groq.usage, and a plain usage winning over it.
        let e = extract_json(
            ApiShape::OpenaiChat,
            &j(
                r#"{"choices":[],"x_groq":{"id":"r","usage":{"prompt_tokens":48,"completion_tokens":9}}}"#,
            ),
        );
        assert!(e.usage_seen);
        assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (48, 9));
        let e = extract_json(
            ApiShape::OpenaiChat,
            &j(r#"{"usage":{"prompt_tokens":1},"x_groq":{"usage":{"prompt_tokens":2}}}"#),
        );
        assert_eq!(e.usage.input_tokens, 1);
    }

    #[test]
    fn openrouter_cost_and_cache_writes() {
        let v = j(include_str!("../../tests/fixtures/openrouter_chat.json"));
        let e = extract_json(ApiShape::OpenaiChat, &v);
        assert_eq!(e.model.as_deref(), Some("anthropic/claude-sonnet-4"));
        assert_eq!(e.reported_cost.as_deref(), Some("0.0284094"));
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 5213,
                output_tokens: 412,
                cache_read_tokens: 3072,
                cache_write_tokens: 1800,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 0,
            }
        );
    }

    #[test]
    fn responses_json() {
        let v = j(include_str!("../../tests/fixtures/openai_responses.json"));
        let e = extract_json(ApiShape::OpenaiResponses, &v);
        assert_eq!(e.model.as_deref(), Some("o3-2025-04-16"));
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 3510,
                output_tokens: 1286,
                cache_read_tokens: 2432,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 1024,
            }
        );
        assert_eq!(extract_json(ApiShape::Unknown, &v), e);
    }

    #[test]
    fn chat_without_usage_or_details() {
        let e = extract_chat(j(r#"{"model":"m","usage":null}"#).object());
        assert!(!e.usage_seen);
        assert_eq!(e.model.as_deref(), Some("m"));
        let e = extract_chat(j(r#"{"usage":{"prompt_tokens":7,"completion_tokens":3}}"#).object());
        assert!(e.usage_seen);
        assert_eq!(e.usage.input_tokens, 7);
        assert_eq!(e.usage.output_tokens, 3);
        assert_eq!(e.usage.cache_read_tokens, 0);
    }

    #[test]
    fn embeddings_bill_their_prompt_tokens_past_the_vectors() {
        // OpenAI and Azure `/embeddings`: 2 × 1536 floats before the usage.
        let vector: Vec<String> = (0..1536)
            .map(|i| {
                format!(
                    "{}{}.{:07}e-3",
                    if i % 3 == 0 { "-" } else { "" },
                    i % 10,
                    i * 7919 % 10_000_000
                )
            })
            .collect();
        let item = |i: usize| {
            format!(
                r#"{{"object":"embedding","index":{i},"embedding":[{}]}}"#,
                vector.join(",")
            )
        };
        let body = format!(
            r#"{{"object":"list","data":[{},{}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":17,"total_tokens":17}}}}"#,
            item(0),
            item(1)
        );
        let e = extract_json(ApiShape::OpenaiChat, &j(&body));
        assert!(e.usage_seen);
        assert_eq!(e.model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 17,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn windows_find_usage_in_oversized_bodies() {
        let body = include_str!("../../tests/fixtures/openai_responses.json").as_bytes();
        let (head, tail) = body.split_at(400);
        let e = extract_windows(ApiShape::OpenaiResponses, head, tail);
        let full = extract_json(
            ApiShape::OpenaiResponses,
            &j(std::str::from_utf8(body).unwrap()),
        );
        assert_eq!(e, full);
        let e = extract_windows(ApiShape::Unknown, head, tail);
        assert_eq!(e, full);
    }
}
