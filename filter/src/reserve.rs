//! Reservations for budgets near their limit (pure; the host glue sends
//! and receives the bytes).
//!
//! A request of a scope the deny list watches is held until the collector
//! (`POST /v1/reservations`) has reserved an upper bound of its cost
//! against the budget, atomically across replicas, or refused it. The
//! bound is built here from the request:
//! * input: the request body's length in bytes. Every tokenizer the
//!   providers use (byte-level BPE, SentencePiece with byte fallback) makes
//!   a token of at least one byte of text, and the JSON around the text
//!   only adds bytes, so a body of N bytes holds at most N prompt tokens.
//!   A body that could not be read (no length, or over
//!   `max_request_body_bytes`) bounds nothing: its request is sent
//!   unbounded.
//! * output: the largest of `max_tokens`, `max_completion_tokens`,
//!   `max_output_tokens`, `generationConfig.maxOutputTokens` (Gemini) and
//!   `inferenceConfig.maxTokens` (Bedrock Converse) present; none means
//!   unbounded, and the collector applies its "at most one unbounded
//!   request over the limit" rule.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::enforce::{parse_entry, DenyEntry};

/// Upper bounds of a request's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub max_input_tokens: u64,
    /// `None`: the request sets no output limit.
    pub max_output_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Limits {
    #[serde(default, deserialize_with = "count")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    max_completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    max_output_tokens: Option<u64>,
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<Nested>,
    #[serde(default, rename = "inferenceConfig")]
    inference_config: Option<Nested>,
}

#[derive(Deserialize, Default)]
struct Nested {
    #[serde(default, deserialize_with = "count", rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count", rename = "maxTokens")]
    max_tokens: Option<u64>,
}

/// A positive integer count; anything else is absent.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().filter(|n| *n > 0),
        _ => None,
    })
}

/// The bounds of a request whose body is `body` (`None`: not read).
pub fn estimate(body: Option<&[u8]>) -> Estimate {
    let Some(body) = body else {
        return Estimate {
            max_input_tokens: 0,
            max_output_tokens: None,
        };
    };
    let limits: Limits = serde_json::from_slice(body).unwrap_or_default();
    let nested = |n: &Option<Nested>| {
        n.as_ref()
            .map(|n| [n.max_output_tokens, n.max_tokens])
            .unwrap_or_default()
    };
    let max_output_tokens = [
        limits.max_tokens,
        limits.max_completion_tokens,
        limits.max_output_tokens,
    ]
    .into_iter()
    .chain(nested(&limits.generation_config))
    .chain(nested(&limits.inference_config))
    .flatten()
    .max();
    Estimate {
        max_input_tokens: body.len() as u64,
        max_output_tokens,
    }
}

/// What the filter tells the collector about the request.
pub struct ReservationRequest<'a> {
    pub request_id: &'a str,
    pub tenant_id: &'a str,
    pub api_key_id: Option<&'a str>,
    pub provider: &'a str,
    pub model: Option<&'a str>,
    pub estimate: Estimate,
    pub ttl_ms: u64,
}

impl ReservationRequest<'_> {
    fn value(&self) -> Value {
        json!({
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "api_key_id": self.api_key_id,
            "provider": self.provider,
            "model": self.model,
            "max_input_tokens": self.estimate.max_input_tokens,
            "max_output_tokens": self.estimate.max_output_tokens,
            "ttl_ms": self.ttl_ms,
        })
    }

    /// The `POST /v1/reservations` body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.value()).unwrap_or_default()
    }

    /// The request as one notice of `POST /v1/reservations/notices`.
    pub fn notice(&self, started_at_ms: u64) -> Vec<u8> {
        let mut v = self.value();
        v["started_at_ms"] = json!(started_at_ms);
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// Most notices a worker holds between two ticks; more are dropped and
/// counted (the collector then learns of those requests from their records
/// only, as it would without notices).
pub const MAX_PENDING_NOTICES: usize = 4096;

/// A request admitted from memory, as its notice will tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotice {
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub provider: &'static str,
    pub model: Option<String>,
    pub estimate: Estimate,
    pub ttl_ms: u64,
    pub started_at_ms: u64,
}

/// Requests of governed scopes admitted from memory, waiting for the root
/// context's next tick to be reported (`POST /v1/reservations/notices`).
/// A request that finishes first is forgotten: its record tells instead.
/// Only those still pending at the tick are serialized.
#[derive(Debug, Default)]
pub struct Notices {
    pending: HashMap<String, PendingNotice>,
    dropped: u64,
}

impl Notices {
    /// Holds the notice of `request_id`; false when full (dropped).
    pub fn push(&mut self, request_id: String, notice: PendingNotice) -> bool {
        if self.pending.len() >= MAX_PENDING_NOTICES && !self.pending.contains_key(&request_id) {
            self.dropped += 1;
            return false;
        }
        self.pending.insert(request_id, notice);
        true
    }

    /// The request finished before its notice went out.
    pub fn forget(&mut self, request_id: &str) {
        self.pending.remove(request_id);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Notices dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Takes every pending notice as one call body and its count.
    pub fn take_body(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len();
        let mut body = b"{\"notices\":[".to_vec();
        for (i, (request_id, p)) in self.pending.drain().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let notice = ReservationRequest {
                request_id: &request_id,
                tenant_id: &p.tenant_id,
                api_key_id: p.api_key_id.as_deref(),
                provider: p.provider,
                model: p.model.as_deref(),
                estimate: p.estimate,
                ttl_ms: p.ttl_ms,
            }
            .notice(p.started_at_ms);
            body.extend_from_slice(&notice);
        }
        body.extend_from_slice(b"]}");
        Some((body, n))
    }
}

/// The collector's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Admitted,
    /// Refused: answer 429 with this entry, as the deny list would.
    Refused(DenyEntry),
    /// No usable answer (down, timed out, an error status, a body that
    /// says nothing): `deny_fail_open` decides.
    Unusable,
}

/// Reads an answer: `status` is `None` when the call failed or timed out.
pub fn parse_answer(status: Option<u16>, body: &[u8]) -> Answer {
    #[derive(Deserialize)]
    struct Raw {
        admitted: bool,
        #[serde(default)]
        entry: Option<Value>,
    }
    if status != Some(200) {
        return Answer::Unusable;
    }
    match serde_json::from_slice::<Raw>(body) {
        Ok(Raw { admitted: true, .. }) => Answer::Admitted,
        Ok(Raw {
            admitted: false,
            entry: Some(entry),
        }) => parse_entry(entry).map_or(Answer::Unusable, Answer::Refused),
        _ => Answer::Unusable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::Reason;

    #[test]
    fn output_bounds_come_from_every_api_s_limit_field() {
        let e = |body: &str| estimate(Some(body.as_bytes()));
        let chat = r#"{"model":"gpt-4o-mini","max_tokens":256,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            e(chat),
            Estimate {
                max_input_tokens: chat.len() as u64,
                max_output_tokens: Some(256)
            }
        );
        assert_eq!(
            e(r#"{"max_completion_tokens":900,"max_tokens":100}"#).max_output_tokens,
            Some(900)
        );
        assert_eq!(
            e(r#"{"max_output_tokens":64,"input":"x"}"#).max_output_tokens,
            Some(64)
        );
        assert_eq!(
            e(r#"{"contents":[],"generationConfig":{"maxOutputTokens":2048}}"#).max_output_tokens,
            Some(2048)
        );
        assert_eq!(
            e(r#"{"messages":[],"inferenceConfig":{"maxTokens":512}}"#).max_output_tokens,
            Some(512)
        );
        // No limit, a limit that is not a positive integer, not JSON.
        assert_eq!(e(r#"{"messages":[]}"#).max_output_tokens, None);
        assert_eq!(e(r#"{"max_tokens":"100"}"#).max_output_tokens, None);
        assert_eq!(e(r#"{"max_tokens":0}"#).max_output_tokens, None);
        assert_eq!(e(r#"{"max_tokens":1.5}"#).max_output_tokens, None);
        assert_eq!(e("not json").max_output_tokens, None);
        assert_eq!(e("not json").max_input_tokens, 8);
        assert_eq!(
            estimate(None),
            Estimate {
                max_input_tokens: 0,
                max_output_tokens: None
            }
        );
    }

    #[test]
    fn the_request_and_the_answers() {
        let body = ReservationRequest {
            request_id: "r1",
            tenant_id: "t",
            api_key_id: None,
            provider: "openai",
            model: Some("gpt-4o-mini"),
            estimate: Estimate {
                max_input_tokens: 10,
                max_output_tokens: None,
            },
            ttl_ms: 600_000,
        }
        .body();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["max_output_tokens"], Value::Null);
        assert_eq!(v["max_input_tokens"], 10);
        assert_eq!(v["api_key_id"], Value::Null);

        assert_eq!(
            parse_answer(Some(200), br#"{"admitted":true,"reserved":"0.01"}"#),
            Answer::Admitted
        );
        let refused = br#"{"admitted":false,"estimate":"0.05","entry":{"tenant_id":"t",
            "reason":"balance_exhausted","limit":"1","spent":"0.99","currency":"USD",
            "resets_at":null,"resets_at_ms":null}}"#;
        match parse_answer(Some(200), refused) {
            Answer::Refused(e) => {
                assert_eq!(e.reason, Reason::BalanceExhausted);
                assert_eq!(e.spent, "0.99");
            }
            other => panic!("{other:?}"),
        }
        for (status, body) in [
            (None, &b""[..]),
            (Some(503), br#"{"admitted":true}"#),
            (Some(200), b"{}"),
            (Some(200), br#"{"admitted":false}"#),
            (Some(200), b"<html>"),
        ] {
            assert_eq!(parse_answer(status, body), Answer::Unusable, "{status:?}");
        }
    }

    #[test]
    fn notices_wait_for_the_tick_and_finished_requests_are_forgotten() {
        let pending = |started_at_ms: u64| PendingNotice {
            tenant_id: "t".into(),
            api_key_id: Some("k".into()),
            provider: "openai",
            model: Some("gpt-4o".into()),
            estimate: Estimate {
                max_input_tokens: 100,
                max_output_tokens: Some(50),
            },
            ttl_ms: 600_000,
            started_at_ms,
        };
        let mut notices = Notices::default();
        assert_eq!(notices.take_body(), None);
        assert!(notices.push("r1".into(), pending(1_000)));
        assert!(notices.push("r2".into(), pending(2_000)));
        assert!(notices.push("r3".into(), pending(3_000)));
        notices.forget("r2");
        let (body, n) = notices.take_body().unwrap();
        assert_eq!(n, 2);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let mut ids: Vec<(String, u64)> = v["notices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                assert_eq!(n["max_output_tokens"], 50);
                assert_eq!(n["max_input_tokens"], 100);
                assert_eq!(
                    (&n["api_key_id"], &n["provider"]),
                    (&json!("k"), &json!("openai"))
                );
                (
                    n["request_id"].as_str().unwrap().to_string(),
                    n["started_at_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        ids.sort();
        assert_eq!(ids, [("r1".to_string(), 1_000), ("r3".to_string(), 3_000)]);
        assert!(notices.is_empty() && notices.take_body().is_none());

        // Bounded: the overflow is dropped and counted, a repeat replaces.
        for i in 0..MAX_PENDING_NOTICES {
            assert!(notices.push(i.to_string(), pending(0)));
        }
        assert!(!notices.push("one more".into(), pending(0)));
        assert!(notices.push("0".into(), pending(5)));
        assert_eq!(
            (notices.len(), notices.take_dropped()),
            (MAX_PENDING_NOTICES, 1)
        );
        assert_eq!(notices.take_dropped(), 0);
    }
}
