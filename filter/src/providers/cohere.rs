//! Cohere v2 Chat (`POST /v2/chat`).
//!
//! Billed: `usage.billed_units.{input_tokens, output_tokens}` (what Cohere
//! charges; `usage.tokens` also counts the tokens it adds itself, such as
//! its system preamble, and is not billed). Neither body nor stream names
//! the model: it comes from the request. Streaming: SSE events whose `type`
//! is `message-start`, `content-delta`, ..., and `message-end`, whose
//! `delta.usage` carries the same usage object; it ends the stream.

use super::{clamp, model_of, Extraction};
use crate::record::Usage;
use crate::typed::{Node, UsageBlock};

/// A Cohere `usage` object, `None` without `billed_units`.
pub fn usage(u: &UsageBlock) -> Option<Usage> {
    if !u.has(UsageBlock::HAS_BILLED_UNITS) {
        return None;
    }
    Some(clamp(Usage {
        input_tokens: u.billed_units.input_tokens.unwrap_or(0),
        output_tokens: u.billed_units.output_tokens.unwrap_or(0),
        ..Usage::default()
    }))
}

/// A non-streamed v2 chat body.
pub fn extract(v: &Node<'_>) -> Extraction {
    let mut ext = Extraction {
        model: model_of(&v.model),
        ..Default::default()
    };
    if let Some(u) = v.usage.as_ref().and_then(usage) {
        ext.usage = u;
        ext.usage_seen = true;
    }
    ext
}

/// Event types that start a Cohere v2 stream event (hyphenated, unlike
/// Anthropic's).
pub fn is_event_type(ty: &str) -> bool {
    [
        "message-",
        "content-",
        "tool-plan-",
        "tool-call-",
        "citation-",
    ]
    .iter()
    .any(|p| ty.starts_with(p))
}

/// v2 chat stream state.
#[derive(Debug, Default)]
pub struct ChatStream {
    pub ext: Extraction,
    /// `message-end` seen.
    pub finished: bool,
}

impl ChatStream {
    pub fn on_node(&mut self, event_name: Option<&str>, v: &Node<'_>) {
        let ty = v.ty.as_deref().or(event_name).unwrap_or("");
        if ty != "message-end" {
            return;
        }
        self.finished = true;
        if let Some(u) = v
            .delta
            .as_ref()
            .and_then(|d| d.usage.as_ref())
            .and_then(usage)
        {
            self.ext.usage = u;
            self.ext.usage_seen = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{extract_json, infer_shape_from_json, ApiShape};

    fn j(s: &str) -> crate::typed::Top<'_> {
        crate::typed::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn billed_units_are_billed_not_raw_tokens() {
        let body = include_str!("../../tests/fixtures/cohere_chat.json");
        let v = j(body);
        assert_eq!(infer_shape_from_json(&v), ApiShape::Cohere);
        let e = extract_json(ApiShape::Cohere, &v);
        assert!(e.usage_seen);
        assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (5, 418));
        assert_eq!(e.model, None);
        // Raw tokens only: not billable usage.
        let e = extract_json(
            ApiShape::Cohere,
            &j(r#"{"usage":{"tokens":{"input_tokens":71,"output_tokens":418}}}"#),
        );
        assert!(!e.usage_seen);
    }

    #[test]
    fn only_message_end_carries_the_usage() {
        let mut s = ChatStream::default();
        let start =
            j(r#"{"type":"message-start","id":"x","delta":{"message":{"role":"assistant"}}}"#);
        s.on_node(None, start.object());
        assert!(!s.finished);
        let end = j(
            r#"{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":3,"output_tokens":12},"tokens":{"input_tokens":200,"output_tokens":12}}}}"#,
        );
        s.on_node(Some("message-end"), end.object());
        assert!(s.finished);
        assert_eq!(
            (s.ext.usage.input_tokens, s.ext.usage.output_tokens),
            (3, 12)
        );
        assert!(is_event_type("content-delta"));
        assert!(!is_event_type("message_delta"));
    }
}
