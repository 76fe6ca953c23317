//! Gemini API and Vertex AI `generateContent` / `streamGenerateContent`.
//!
//! `usageMetadata.promptTokenCount` includes `cachedContentTokenCount`;
//! `toolUsePromptTokenCount` is billed input not in the prompt count;
//! `thoughtsTokenCount` is billed output not in `candidatesTokenCount` —
//! unless `prompt + candidates + toolUse == totalTokenCount`, which means
//! this version already folded thoughts into the candidates count. Streams
//! (`?alt=sse`, or a JSON array without it) repeat `usageMetadata` in every
//! chunk; the last one wins.
//!
//! Embeddings: the Gemini API's `embedContent` / `batchEmbedContents`
//! report no usage (such records are flagged `no_usage`, model from the
//! path); Vertex AI's `:predict` for embedding models reports each
//! instance's `embeddings.statistics.token_count`, summed as input.

use super::{clamp, Extraction};
use crate::capture::cap_model;
use crate::record::Usage;
use crate::typed::{GeminiMeta, Node, Top};

/// Normalize a `usageMetadata` object.
pub fn gemini_usage(m: &GeminiMeta) -> Usage {
    let prompt = m.prompt_token_count.unwrap_or(0);
    let candidates = m.candidates_token_count.unwrap_or(0);
    let cached = m.cached_content_token_count.unwrap_or(0);
    let thoughts = m.thoughts_token_count.unwrap_or(0);
    let tool = m.tool_use_prompt_token_count.unwrap_or(0);
    let folded = m.total_token_count.is_some_and(|total| {
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

/// Whether a path is a Vertex AI `:predict` call on a Google model (the
/// embedding models' endpoint).
pub fn is_vertex_predict(path: &str) -> bool {
    path.ends_with(":predict") && path.contains("/publishers/google/models/")
}

/// The input tokens of a Vertex AI embeddings `:predict` body: the sum of
/// `predictions[].embeddings.statistics.token_count`; `None` when it is
/// not JSON, `Some(None)` when no prediction reports a count.
pub fn predict_usage(body: &[u8]) -> Option<Option<Usage>> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        predictions: Vec<serde_json::Value>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let counts: Vec<u64> = body
        .predictions
        .iter()
        .filter_map(|p| p.pointer("/embeddings/statistics/token_count"))
        .filter_map(|n| n.as_number().and_then(super::number_u64))
        .collect();
    if counts.is_empty() {
        return Some(None);
    }
    Some(Some(Usage {
        input_tokens: counts.iter().fold(0u64, |a, n| a.saturating_add(*n)),
        ..Usage::default()
    }))
}

fn model_version(v: &Node<'_>) -> Option<String> {
    let m = v.model_version.as_ref()?.as_deref()?;
    cap_model(m.strip_prefix("models/").unwrap_or(m))
}

/// A non-streamed body: one response object, or the JSON array
/// `streamGenerateContent` returns without `alt=sse`.
pub fn extract(v: &Top<'_>) -> Extraction {
    let mut s = GeminiStream::default();
    s.on_top(v);
    s.ext
}

/// Gemini stream state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeminiStream {
    pub ext: Extraction,
    pub finished: bool,
}

impl GeminiStream {
    /// One response chunk (an array holds several, in order).
    pub fn on_top(&mut self, v: &Top<'_>) {
        match v {
            Top::Object(node) => self.on_node(node),
            Top::Array { gemini, .. } => self.then(gemini),
            Top::Scalar => {}
        }
    }

    /// One response object: the first model wins, the last usage wins; a
    /// finished candidate or a blocked prompt ends the response.
    pub fn on_node(&mut self, v: &Node<'_>) {
        if self.ext.model.is_none() {
            self.ext.model = model_version(v);
        }
        if let Some(m) = &v.usage_metadata {
            self.ext.usage = gemini_usage(m);
            self.ext.usage_seen = true;
        }
        if v.candidates_final || v.prompt_blocked {
            self.finished = true;
        }
    }

    /// Continue with what `later` folded from the following objects: the
    /// same as feeding them here one by one.
    fn then(&mut self, later: &GeminiStream) {
        if self.ext.model.is_none() {
            self.ext.model.clone_from(&later.ext.model);
        }
        if later.ext.usage_seen {
            self.ext.usage = later.ext.usage;
            self.ext.usage_seen = true;
        }
        self.finished |= later.finished;
    }
}

#[cfg(test)]
mod embedding_tests {
    use super::*;

    #[test]
    fn vertex_predict_sums_the_instances_token_counts() {
        let body = br#"{"predictions":[
            {"embeddings":{"statistics":{"truncated":false,"token_count":6},"values":[0.1,0.2]}},
            {"embeddings":{"statistics":{"truncated":false,"token_count":9.0},"values":[0.3]}}],
            "metadata":{"billableCharacterCount":40}}"#;
        assert_eq!(predict_usage(body).unwrap().unwrap().input_tokens, 15);
        assert_eq!(
            predict_usage(br#"{"predictions":[{"embeddings":{"values":[]}}]}"#),
            Some(None)
        );
        assert_eq!(predict_usage(b"{\"predictions\":"), None);
        assert!(is_vertex_predict(
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-embedding-001:predict"
        ));
        assert!(!is_vertex_predict("/v1/models/x:predict"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{extract_json, extract_windows, ApiShape};

    fn j(s: &str) -> Top<'_> {
        crate::typed::parse(s.as_bytes()).unwrap()
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
        s.on_top(&j(
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}"#,
        ));
        assert!(s.finished);
        assert_eq!(s.ext.usage.input_tokens, 8);
        assert_eq!(s.ext.usage.output_tokens, 0);
    }

    #[test]
    fn tool_use_equal_total_without_thoughts() {
        let v = j(
            r#"{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"toolUsePromptTokenCount":3,"totalTokenCount":18}}"#,
        );
        let u = gemini_usage(v.object().usage_metadata.as_ref().unwrap());
        assert_eq!(u.input_tokens, 13);
        assert_eq!(u.output_tokens, 5);
        assert_eq!(u.reasoning_tokens, 0);
    }
}
