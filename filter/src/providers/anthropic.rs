//! Anthropic Messages API (also served by Vertex AI `rawPredict`).
//!
//! `usage.input_tokens` EXCLUDES `cache_read_input_tokens` and
//! `cache_creation_input_tokens`; both are added into `input_tokens`.
//! `cache_creation.ephemeral_1h_input_tokens` is the 1 hour TTL part of the
//! cache writes. Streaming: `message_start` carries `message.usage` (input,
//! cache, initial output); `message_delta` carries `usage` with the
//! cumulative `output_tokens` and sometimes input/cache fields, merged field
//! by field (present replaces, absent keeps).

use super::{clamp, model_of, Extraction};
use crate::record::Usage;
use crate::typed::{Node, UsageBlock};

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

fn set(slot: &mut Option<u64>, v: Option<u64>) {
    if let Some(n) = v {
        *slot = Some(n);
    }
}

impl UsageFields {
    /// Merge a `usage` object: fields present in it replace earlier values.
    pub fn merge(&mut self, u: &UsageBlock) {
        set(&mut self.input, u.input_tokens);
        set(&mut self.cache_read, u.cache_read_input_tokens);
        set(&mut self.cache_creation, u.cache_creation_input_tokens);
        set(&mut self.output, u.output_tokens);
        // All `None` unless `cache_creation` is an object.
        set(
            &mut self.cache_5m,
            u.cache_creation.ephemeral_5m_input_tokens,
        );
        set(
            &mut self.cache_1h,
            u.cache_creation.ephemeral_1h_input_tokens,
        );
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

/// A non-streamed Messages API body.
pub fn extract(v: &Node<'_>) -> Extraction {
    let mut ext = Extraction {
        model: model_of(&v.model),
        ..Default::default()
    };
    if let Some(u) = &v.usage {
        let mut f = UsageFields::default();
        f.merge(u);
        ext.usage = f.usage();
        ext.reported_cost.clone_from(&u.cost);
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
    pub fn on_node(&mut self, event_name: Option<&str>, v: &Node<'_>) {
        let ty = v.ty.as_deref().or(event_name).unwrap_or("");
        match ty {
            "message_start" => {
                let Some(msg) = &v.message else {
                    return;
                };
                if let Some(m) = model_of(&msg.model) {
                    self.model = Some(m);
                }
                if let Some(u) = &msg.usage {
                    self.merge(u);
                }
            }
            "message_delta" => {
                self.delta_seen = true;
                if let Some(u) = &v.usage {
                    self.merge(u);
                }
            }
            "message_stop" => self.stop_seen = true,
            _ => {}
        }
    }

    fn merge(&mut self, u: &UsageBlock) {
        self.fields.merge(u);
        self.usage_seen = true;
        if let Some(c) = &u.cost {
            self.reported_cost = Some(c.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{extract_json, extract_windows, ApiShape};
    use crate::typed::Top;

    fn j(s: &str) -> Top<'_> {
        crate::typed::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn message_with_cache_read_creation_and_ttl_split() {
        let v = j(include_str!("../../tests/fixtures/anthropic_message.json"));
        let e = extract_json(ApiShape::Anthropic, &v);
        assert!(e.usage_seen);
        assert_eq!(e.model.as_deref(), Some("claude-sonnet-4-20250514"));
        // 12 uncached + 18000 read + 2100 written.
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 20112,
                output_tokens: 503,
                cache_read_tokens: 18000,
                cache_write_tokens: 2100,
                cache_write_1h_tokens: 1500,
                reasoning_tokens: 0,
            }
        );
        assert_eq!(extract_json(ApiShape::Unknown, &v), e);
        let body = include_str!("../../tests/fixtures/anthropic_message.json").as_bytes();
        let (head, tail) = body.split_at(200);
        assert_eq!(extract_windows(ApiShape::Anthropic, head, tail), e);
    }

    #[test]
    fn cache_creation_breakdown_without_total() {
        let e = extract(
            j(r#"{"usage":{"input_tokens":10,"cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":4},"output_tokens":1}}"#)
                .object(),
        );
        assert_eq!(e.usage.input_tokens, 17);
        assert_eq!(e.usage.cache_write_tokens, 7);
        assert_eq!(e.usage.cache_write_1h_tokens, 4);
    }

    #[test]
    fn stream_merge_present_replaces_absent_keeps() {
        let mut s = MessagesStream::default();
        s.on_node(
            None,
            j(r#"{"type":"message_start","message":{"model":"claude-3-5-haiku-20241022","usage":{"input_tokens":25,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":1}}}"#).object(),
        );
        let e = s.extraction();
        assert_eq!(e.usage.input_tokens, 125);
        assert_eq!(e.usage.output_tokens, 1);
        assert!(!s.delta_seen);
        s.on_node(
            Some("message_delta"),
            j(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15,"cache_read_input_tokens":null}}"#).object(),
        );
        let e = s.extraction();
        assert_eq!(e.model.as_deref(), Some("claude-3-5-haiku-20241022"));
        assert_eq!(
            e.usage,
            Usage {
                input_tokens: 125,
                output_tokens: 15,
                cache_read_tokens: 100,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                reasoning_tokens: 0,
            }
        );
        assert!(s.delta_seen);
    }
}
