//! Usage records as received from the filter: parsing and validation, pure.
//! A bad record is rejected alone with a reason; the rest of its batch goes on.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Token counts above this are treated as corrupt, not billed.
pub const MAX_TOKENS: u64 = 1_000_000_000;
/// Records stamped further than this in the future are rejected (clock skew allowance).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
const MAX_ID_LEN: usize = 256;

pub const KNOWN_PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "openrouter",
    "bedrock",
    "azure",
    "deepseek",
    "groq",
    "mistral",
    "xai",
    "cohere",
    "vertex_ai",
    "unknown",
];
pub const KNOWN_FLAGS: &[&str] = &[
    "incomplete",
    "upstream_error",
    "parse_error",
    "body_too_large",
    "compressed",
    "no_usage",
    "unknown_shape",
];

/// The wire record (see filter/src/record.rs for the token convention).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    pub request_id: String,
    pub tenant_id: String,
    #[serde(default)]
    pub api_key_id: Option<String>,
    pub provider: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    pub http_status: u16,
    #[serde(default)]
    pub streamed: bool,
    pub started_at_ms: i64,
    #[serde(default)]
    pub ttfb_ms: Option<u64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub cache_write_1h_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub reported_cost: Option<Decimal>,
    #[serde(default)]
    pub flags: Vec<String>,
}

impl UsageRecord {
    pub fn occurred_at(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.started_at_ms)
            .single()
            .unwrap_or_default()
    }
}

/// Checks one record against the rules a billable record must meet.
pub fn validate(record: &UsageRecord, now: DateTime<Utc>) -> Result<(), String> {
    check_id("request_id", &record.request_id)?;
    check_id("tenant_id", &record.tenant_id)?;
    if let Some(key) = &record.api_key_id {
        check_id("api_key_id", key)?;
    }
    if let Some(model) = &record.model {
        if model.len() > MAX_ID_LEN {
            return Err(format!("model is longer than {MAX_ID_LEN} bytes"));
        }
    }
    if let Some(route) = &record.route {
        if route.len() > MAX_ID_LEN {
            return Err(format!("route is longer than {MAX_ID_LEN} bytes"));
        }
    }
    if !KNOWN_PROVIDERS.contains(&record.provider.as_str()) {
        return Err(format!("unknown provider {:?}", record.provider));
    }
    if let Some(flag) = record
        .flags
        .iter()
        .find(|f| !KNOWN_FLAGS.contains(&f.as_str()))
    {
        return Err(format!("unknown flag {flag:?}"));
    }
    if !(100..=599).contains(&record.http_status) {
        return Err(format!(
            "http_status {} is not an HTTP status",
            record.http_status
        ));
    }
    if record.started_at_ms <= 0 {
        return Err("started_at_ms must be a positive epoch milliseconds value".into());
    }
    if record.started_at_ms > now.timestamp_millis() + MAX_FUTURE_SKEW_MS {
        return Err("started_at_ms is in the future".into());
    }
    for (name, value) in [
        ("input_tokens", record.input_tokens),
        ("output_tokens", record.output_tokens),
        ("cache_read_tokens", record.cache_read_tokens),
        ("cache_write_tokens", record.cache_write_tokens),
        ("cache_write_1h_tokens", record.cache_write_1h_tokens),
        ("reasoning_tokens", record.reasoning_tokens),
    ] {
        if value > MAX_TOKENS {
            return Err(format!("{name} {value} exceeds {MAX_TOKENS}"));
        }
    }
    if record
        .cache_read_tokens
        .saturating_add(record.cache_write_tokens)
        > record.input_tokens
    {
        return Err("cache_read_tokens + cache_write_tokens exceed input_tokens".into());
    }
    if record.cache_write_1h_tokens > record.cache_write_tokens {
        return Err("cache_write_1h_tokens exceed cache_write_tokens".into());
    }
    if record.reasoning_tokens > record.output_tokens {
        return Err("reasoning_tokens exceed output_tokens".into());
    }
    if let Some(cost) = record.reported_cost {
        if cost.is_sign_negative() && !cost.is_zero() {
            return Err("reported_cost is negative".into());
        }
    }
    Ok(())
}

/// An id (request, tenant, key): non-empty, at most 256 bytes, no control characters.
pub fn check_id(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{name} is empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!("{name} is longer than {MAX_ID_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{name} contains control characters"));
    }
    Ok(())
}

/// A rejected record: its position in the batch, its id if readable, and why.
#[derive(Debug, Serialize, PartialEq)]
pub struct Rejection {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub reason: String,
}

/// Splits a batch's raw records into valid ones and rejections.
pub fn parse_batch(
    raw: Vec<serde_json::Value>,
    now: DateTime<Utc>,
) -> (Vec<UsageRecord>, Vec<Rejection>) {
    let mut valid = Vec::with_capacity(raw.len());
    let mut rejected = Vec::new();
    for (index, value) in raw.into_iter().enumerate() {
        let request_id = value
            .get("request_id")
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(MAX_ID_LEN).collect());
        match serde_json::from_value::<UsageRecord>(value) {
            Ok(record) => match validate(&record, now) {
                Ok(()) => valid.push(record),
                Err(reason) => rejected.push(Rejection {
                    index,
                    request_id,
                    reason,
                }),
            },
            Err(e) => rejected.push(Rejection {
                index,
                request_id,
                reason: e.to_string(),
            }),
        }
    }
    (valid, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({
            "request_id": "r1", "tenant_id": "acme", "provider": "openai",
            "model": "gpt-4o-mini", "http_status": 200, "streamed": false,
            "started_at_ms": 1_764_000_000_000i64,
            "input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 40,
            "reasoning_tokens": 5
        })
    }

    fn now() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_764_000_100_000).unwrap()
    }

    fn reason_for(patch: serde_json::Value) -> String {
        let mut v = good();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        let (ok, bad) = parse_batch(vec![v], now());
        assert!(ok.is_empty(), "expected rejection for {patch}");
        bad[0].reason.clone()
    }

    #[test]
    fn good_record_passes() {
        let (ok, bad) = parse_batch(vec![good()], now());
        assert_eq!(bad, vec![]);
        assert_eq!(ok[0].input_tokens, 100);
        assert_eq!(ok[0].cache_read_tokens, 40);
    }

    #[test]
    fn each_rule_rejects_with_a_reason() {
        assert!(reason_for(json!({"input_tokens": -1})).contains("invalid value"));
        assert!(reason_for(json!({"input_tokens": "12"})).contains("invalid type"));
        assert!(reason_for(json!({"output_tokens": 2_000_000_000u64})).contains("exceeds"));
        assert!(reason_for(json!({"cache_read_tokens": 101})).contains("exceed input_tokens"));
        assert!(reason_for(json!({"reasoning_tokens": 21})).contains("exceed output_tokens"));
        assert!(reason_for(json!({"started_at_ms": 1_764_999_000_000i64})).contains("future"));
        assert!(reason_for(json!({"surprise": 1})).contains("unknown field"));
        assert!(reason_for(json!({"request_id": ""})).contains("empty"));
        assert!(reason_for(json!({"provider": "acme-ai"})).contains("unknown provider"));
        assert!(reason_for(json!({"flags": ["weird"]})).contains("unknown flag"));
        assert!(reason_for(json!({"http_status": 42})).contains("http_status"));
        assert!(reason_for(json!({"reported_cost": "-1"})).contains("negative"));
    }

    #[test]
    fn bad_record_does_not_sink_the_batch() {
        let mut bad = good();
        bad["request_id"] = json!("r2");
        bad["input_tokens"] = json!("lots");
        let (ok, rejected) = parse_batch(vec![good(), bad], now());
        assert_eq!(ok.len(), 1);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].index, 1);
        assert_eq!(rejected[0].request_id.as_deref(), Some("r2"));
    }

    #[test]
    fn reported_cost_is_exact_decimal() {
        let mut v = good();
        v["reported_cost"] = json!("0.000123456789");
        let (ok, _) = parse_batch(vec![v], now());
        assert_eq!(ok[0].reported_cost.unwrap().to_string(), "0.000123456789");
    }
}
