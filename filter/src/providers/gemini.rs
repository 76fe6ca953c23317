//! Gemini API and Vertex AI `generateContent` / `streamGenerateContent`.
//!
//! `usageMetadata.promptTokenCount` includes `cachedContentTokenCount`;
//! `toolUsePromptTokenCount` is billed input not in the prompt count;
//! `thoughtsTokenCount` is billed output not in `candidatesTokenCount` —
//! unless `prompt + candidates + toolUse == totalTokenCount`, which means
//! this version already folded thoughts into the candidates count. Streams
//! (`?alt=sse`, or a JSON array without it) repeat `usageMetadata` in every
//! chunk; the last one wins.

use serde_json::Value;

use super::{clamp, get_u64, u64_or0, Extraction};
use crate::capture::cap_model;
use crate::record::Usage;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{extract_json, extract_windows, ApiShape};

    fn j(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn thoughts_tool_use_and_cache() {
        let v = j(include_str!("../../tests/fixtures/gemini.json"));
        let e = extract_json(ApiShape::Gemini, &v);
        assert_eq!(e.model.as_deref(), Some("gemini-2.5-pro"));
        // input 12050 prompt + 200 tool use; output 410 + 1728 thoughts.
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 12250,
                output_tokens: 2138,
                cache_read_tokens: 8192,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 1728,
            }
        );
        assert_eq!(extract_json(ApiShape::Unknown, &v), e);
        let body = include_str!("../../tests/fixtures/gemini.json").as_bytes();
        let (head, tail) = body.split_at(100);
        assert_eq!(extract_windows(ApiShape::Unknown, head, tail), e);
    }

    #[test]
    fn thoughts_already_in_candidates() {
        let v = j(include_str!("../../tests/fixtures/gemini_totals.json"));
        let e = extract_json(ApiShape::Gemini, &v);
        assert_eq!(e.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 100,
                output_tokens: 250,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 150,
            }
        );
    }

    #[test]
    fn json_array_stream_keeps_last_usage() {
        let v = j(r#"[
            {"candidates":[{"content":{"parts":[{"text":"a"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5},"modelVersion":"models/gemini-2.0-flash"},
            {"candidates":[{"content":{"parts":[{"text":"b"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":9,"totalTokenCount":14},"modelVersion":"models/gemini-2.0-flash"}
        ]"#);
        let e = extract_json(ApiShape::Gemini, &v);
        assert_eq!(e.model.as_deref(), Some("gemini-2.0-flash"));
        assert_eq!(e.usage.input_tokens, 5);
        assert_eq!(e.usage.output_tokens, 9);
        assert_eq!(extract_json(ApiShape::Unknown, &v), e);
    }

    #[test]
    fn blocked_prompt_is_final_without_candidates() {
        let mut s = GeminiStream::default();
        s.on_value(&j(
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}"#,
        ));
        assert!(s.finished);
        assert_eq!(s.ext.usage.input_tokens, 8);
        assert_eq!(s.ext.usage.output_tokens, 0);
    }

    #[test]
    fn tool_use_equal_total_without_thoughts() {
        let u = gemini_usage(&j(
            r#"{"promptTokenCount":10,"candidatesTokenCount":5,"toolUsePromptTokenCount":3,"totalTokenCount":18}"#,
        ));
        assert_eq!(u.input_tokens, 13);
        assert_eq!(u.output_tokens, 5);
        assert_eq!(u.reasoning_tokens, 0);
    }
}
