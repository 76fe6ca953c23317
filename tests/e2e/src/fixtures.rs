//! Provider responses served by the demo upstream, with fixed usage figures
//! that the end-to-end tests assert on after normalization.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    ChatJson,
    ChatStream,
    OpenRouterJson,
    OpenRouterStream,
    ResponsesJson,
    ResponsesStream,
    AnthropicJson,
    AnthropicStream,
    GeminiJson,
    GeminiStream,
    /// Bedrock `/model/{id}/converse`.
    BedrockConverse,
    /// Bedrock `/model/{id}/converse-stream` (binary event stream).
    BedrockConverseStream,
}

impl Shape {
    pub fn from_request(path: &str, request: &Value) -> Option<Shape> {
        let stream = request
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let p = path.split('?').next().unwrap_or(path);
        Some(match p {
            "/v1/chat/completions" if stream => Shape::ChatStream,
            "/v1/chat/completions" => Shape::ChatJson,
            "/api/v1/chat/completions" if stream => Shape::OpenRouterStream,
            "/api/v1/chat/completions" => Shape::OpenRouterJson,
            "/v1/responses" if stream => Shape::ResponsesStream,
            "/v1/responses" => Shape::ResponsesJson,
            "/v1/messages" if stream => Shape::AnthropicStream,
            "/v1/messages" => Shape::AnthropicJson,
            // Azure OpenAI: a deployment instead of a model in the path.
            _ if p.starts_with("/openai/deployments/") && p.ends_with("/chat/completions") => {
                if stream {
                    Shape::ChatStream
                } else {
                    Shape::ChatJson
                }
            }
            // Vertex AI's Anthropic models: Messages shapes, model in the path.
            _ if p.ends_with(":streamRawPredict") => Shape::AnthropicStream,
            _ if p.ends_with(":rawPredict") && stream => Shape::AnthropicStream,
            _ if p.ends_with(":rawPredict") => Shape::AnthropicJson,
            _ if p.starts_with("/model/") && p.ends_with("/converse-stream") => {
                Shape::BedrockConverseStream
            }
            _ if p.starts_with("/model/") && p.ends_with("/converse") => Shape::BedrockConverse,
            _ if p.ends_with(":streamGenerateContent") => Shape::GeminiStream,
            _ if p.ends_with(":generateContent") => Shape::GeminiJson,
            _ => return None,
        })
    }

    pub fn streams(self) -> bool {
        matches!(
            self,
            Shape::ChatStream
                | Shape::OpenRouterStream
                | Shape::ResponsesStream
                | Shape::AnthropicStream
                | Shape::GeminiStream
                | Shape::BedrockConverseStream
        )
    }
}

/// Bedrock's usage: `inputTokens` excludes the cache reads and writes, so the
/// record's input is 1000 + 200 + 100 = 1300.
pub fn bedrock_usage() -> Value {
    json!({"inputTokens": 1000, "outputTokens": 300, "totalTokens": 1600,
           "cacheReadInputTokens": 200, "cacheWriteInputTokens": 100})
}

/// The model id Bedrock tests put in the path (URL-encoded there).
pub const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// ConverseStream's events in order: (`:event-type`, payload).
pub fn bedrock_stream_events() -> Vec<(&'static str, Value)> {
    let mut out = vec![("messageStart", json!({"role": "assistant"}))];
    for w in ["Billing", " is", " exact", "."] {
        out.push((
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": w}}),
        ));
    }
    out.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    out.push(("messageStop", json!({"stopReason": "end_turn"})));
    out.push((
        "metadata",
        json!({"usage": bedrock_usage(), "metrics": {"latencyMs": 412}}),
    ));
    out
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn named(event: &str, v: &Value) -> String {
    format!("event: {event}\ndata: {v}\n\n")
}

pub const CHAT_MODEL: &str = "gpt-4o-mini-2024-07-18";

fn chat_usage() -> Value {
    json!({"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
           "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

fn openrouter_usage() -> Value {
    json!({"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
           "cost": 0.000178, "is_byok": false,
           "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0}})
}

/// The body (JSON) or the SSE events of a response, in order.
pub fn response(shape: Shape, request: &Value) -> Vec<String> {
    response_padded(shape, request, 0)
}

/// The complete answer text: "Billing is exact." followed by `pad` more
/// bytes of words, to make bodies and whole-response events large.
pub fn answer_text(pad: usize) -> String {
    let mut text = String::from("Billing is exact.");
    let target = text.len() + pad;
    while text.len() < target {
        let word = " exact";
        text.push_str(&word[..word.len().min(target - text.len())]);
    }
    text
}

/// Like [`response`], with the complete answer text padded by `pad` bytes
/// (knob `x-demo-pad-bytes`) wherever a body or event carries the whole
/// answer: non-streamed bodies and the Responses API's final events.
/// Usage figures are unchanged.
pub fn response_padded(shape: Shape, request: &Value, pad: usize) -> Vec<String> {
    let answer = answer_text(pad);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let words = ["Billing", " is", " exact", "."];
    match shape {
        Shape::BedrockConverse => vec![json!({
            "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
            "stopReason": "end_turn", "usage": bedrock_usage(), "metrics": {"latencyMs": 412}
        })
        .to_string()],
        Shape::BedrockConverseStream => bedrock_stream_events()
            .into_iter()
            .map(|(_, payload)| payload.to_string())
            .collect(),
        Shape::ChatJson => vec![json!({
            "id": "chatcmpl-demo1", "object": "chat.completion", "created": 1764000000,
            "model": CHAT_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop", "logprobs": null}],
            "usage": chat_usage(), "service_tier": "default", "system_fingerprint": "fp_demo"
        }).to_string()],
        Shape::ChatStream | Shape::OpenRouterStream => {
            let (model, usage) = if shape == Shape::ChatStream {
                (CHAT_MODEL, chat_usage())
            } else {
                ("openai/gpt-4o-mini", openrouter_usage())
            };
            let mut out = vec![data(&json!({"id": "chatcmpl-demo2", "object": "chat.completion.chunk",
                "created": 1764000000, "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}))];
            for w in words {
                out.push(data(&json!({"id": "chatcmpl-demo2", "object": "chat.completion.chunk",
                    "created": 1764000000, "model": model,
                    "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]})));
            }
            out.push(data(&json!({"id": "chatcmpl-demo2", "object": "chat.completion.chunk",
                "created": 1764000000, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
            // OpenRouter always reports usage; OpenAI only when asked.
            if include_usage || shape == Shape::OpenRouterStream {
                out.push(data(&json!({"id": "chatcmpl-demo2", "object": "chat.completion.chunk",
                    "created": 1764000000, "model": model, "choices": [], "usage": usage})));
            }
            out.push("data: [DONE]\n\n".to_string());
            out
        }
        Shape::OpenRouterJson => vec![json!({
            "id": "gen-demo3", "provider": "OpenAI", "model": "openai/gpt-4o-mini",
            "object": "chat.completion", "created": 1764000000,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop", "native_finish_reason": "stop"}],
            "usage": openrouter_usage()
        }).to_string()],
        Shape::ResponsesJson => vec![responses_object("completed", &answer).to_string()],
        Shape::ResponsesStream => {
            let mut created = responses_object("in_progress", "");
            created["usage"] = Value::Null;
            let mut out = vec![
                named("response.created", &json!({"type": "response.created", "sequence_number": 0, "response": created})),
            ];
            for (i, w) in words.iter().enumerate() {
                out.push(named("response.output_text.delta", &json!({"type": "response.output_text.delta",
                    "sequence_number": i + 1, "item_id": "msg_demo", "output_index": 0, "content_index": 0, "delta": w})));
            }
            out.push(named("response.completed", &json!({"type": "response.completed",
                "sequence_number": 9, "response": responses_object("completed", &answer)})));
            out
        }
        Shape::AnthropicJson => vec![json!({
            "id": "msg_demo", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 50, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000,
                      "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0},
                      "output_tokens": 120, "service_tier": "standard"}
        }).to_string()],
        Shape::AnthropicStream => {
            let mut out = vec![named("message_start", &json!({"type": "message_start", "message": {
                "id": "msg_demo", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 50, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000,
                          "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0},
                          "output_tokens": 1}}}))];
            out.push(named("content_block_start", &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})));
            out.push(named("ping", &json!({"type": "ping"})));
            for w in words {
                out.push(named("content_block_delta", &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w}})));
            }
            out.push(named("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
            out.push(named("message_delta", &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 120}})));
            out.push(named("message_stop", &json!({"type": "message_stop"})));
            out
        }
        Shape::GeminiJson => vec![gemini_chunk(&answer, 150, true).to_string()],
        Shape::GeminiStream => words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let last = i + 1 == words.len();
                data(&gemini_chunk(w, if last { 150 } else { 10 * (i as u64 + 1) }, last))
            })
            .collect(),
    }
}

fn responses_object(status: &str, text: &str) -> Value {
    json!({
        "id": "resp_demo", "object": "response", "created_at": 1764000000, "status": status,
        "model": "o4-mini-2025-04-16",
        "output": [{"type": "reasoning", "id": "rs_demo", "summary": []},
                   {"type": "message", "id": "msg_demo", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 500, "input_tokens_details": {"cached_tokens": 100},
                  "output_tokens": 400, "output_tokens_details": {"reasoning_tokens": 256},
                  "total_tokens": 900},
        "user": null, "metadata": {}
    })
}

fn gemini_chunk(text: &str, candidates: u64, last: bool) -> Value {
    let mut usage = json!({"promptTokenCount": 800, "candidatesTokenCount": candidates,
        "totalTokenCount": 800 + candidates,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 800}]});
    if last {
        usage["thoughtsTokenCount"] = json!(60);
        usage["totalTokenCount"] = json!(800 + candidates + 60);
    }
    let mut candidate =
        json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if last {
        candidate["finishReason"] = json!("STOP");
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash",
           "responseId": "demo-gemini"})
}

pub fn error_body(shape: Shape) -> String {
    match shape {
        Shape::AnthropicJson | Shape::AnthropicStream => json!({"type": "error",
            "error": {"type": "api_error", "message": "Internal server error"}})
        .to_string(),
        Shape::BedrockConverse | Shape::BedrockConverseStream => {
            json!({"message": "The service encountered an internal error."}).to_string()
        }
        Shape::GeminiJson | Shape::GeminiStream => json!({"error": {"code": 500,
            "message": "Internal error encountered.", "status": "INTERNAL"}})
        .to_string(),
        _ => json!({"error": {"message": "The server had an error while processing your request.",
            "type": "server_error", "param": null, "code": null}})
        .to_string(),
    }
}
