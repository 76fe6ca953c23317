//! Importers turning public price lists into [`PriceEntry`]s.
//!
//! Both convert per-token prices to per-million prices exactly (decimal
//! multiplication by 1 000 000, never `f64` arithmetic) and validate every
//! produced entry. Entries that cannot be imported are reported in
//! [`Imported::skipped`] with a reason instead of failing the whole import;
//! only a malformed document is an error.
//!
//! Number exactness: OpenRouter sends prices as JSON strings, parsed
//! textually. LiteLLM sends JSON numbers (`2.5e-06`); `serde_json` (without
//! its `arbitrary_precision` feature) holds them as `f64`, and we parse the
//! shortest round-trip text of that `f64` (`Number::to_string()`, e.g.
//! `"2.5e-6"`) with `Decimal::from_scientific`. That text equals the number
//! written in the file whenever it has at most 15 significant digits, which
//! holds for every price in LiteLLM's file.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::catalog::{PriceEntry, PriceTier};
use super::{parse_decimal_text, PricingError, TOKENS_PER_PRICE_UNIT};

/// Result of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Valid entries, in document order.
    pub entries: Vec<PriceEntry>,
    /// Models that were not imported, with the reason.
    pub skipped: Vec<SkippedModel>,
}

impl Imported {
    /// Number of models not imported.
    pub fn skipped_count(&self) -> usize {
        self.skipped.len()
    }
}

/// A model left out of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedModel {
    pub model: String,
    pub reason: String,
}

fn skipped(model: &str, reason: impl Into<String>) -> SkippedModel {
    SkippedModel {
        model: model.to_owned(),
        reason: reason.into(),
    }
}

/// Exact decimal from a JSON string or number.
fn json_decimal(value: &Value) -> Result<Option<Decimal>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => parse_decimal_text(s).map(Some),
        Value::Number(n) => parse_decimal_text(&n.to_string()).map(Some),
        other => Err(format!("expected a number, found {other}")),
    }
}

fn per_token_to_per_million(d: Decimal) -> Result<Decimal, String> {
    d.checked_mul(Decimal::from(TOKENS_PER_PRICE_UNIT))
        .map(|v| v.normalize())
        .ok_or_else(|| format!("per-million price of {d} overflows"))
}

// ---------------------------------------------------------------- OpenRouter

#[derive(Deserialize)]
struct OpenRouterModels {
    data: Vec<OpenRouterModel>,
}

#[derive(Deserialize)]
struct OpenRouterModel {
    id: String,
    #[serde(default)]
    pricing: Option<Map<String, Value>>,
}

/// Imports OpenRouter's `GET /api/v1/models` response.
///
/// Per-token string prices are converted to per million: `prompt` → `input`,
/// `completion` → `output`, `input_cache_read` → `cache_read`,
/// `input_cache_write` → `cache_write`, `internal_reasoning` → `reasoning`;
/// `request` is already per request → `per_request`. Other keys (`image`,
/// `web_search`, audio, ...) are ignored.
///
/// A `"0"` for the optional kinds (cache read/write, reasoning) means "not
/// priced separately" in OpenRouter's listing and is imported as unset, so
/// the usual fallbacks apply (reasoning at the output price). Models without
/// `prompt`/`completion`, or with negative prices (the `-1` of routers such as
/// `openrouter/auto`, whose price depends on the routed model) are skipped, as
/// are repeated ids. Every entry gets `provider: "openrouter"`.
pub fn import_openrouter(
    json: &str,
    effective_from: DateTime<Utc>,
) -> Result<Imported, PricingError> {
    let doc: OpenRouterModels =
        serde_json::from_str(json).map_err(|e| PricingError::Json(e.to_string()))?;
    let mut out = Imported::default();
    let mut seen = HashSet::new();
    for m in doc.data {
        if !seen.insert(m.id.clone()) {
            out.skipped.push(skipped(&m.id, "duplicate id in response"));
            continue;
        }
        match openrouter_entry(&m, effective_from) {
            Ok(entry) => out.entries.push(entry),
            Err(reason) => out.skipped.push(skipped(&m.id, reason)),
        }
    }
    Ok(out)
}

fn openrouter_entry(
    m: &OpenRouterModel,
    effective_from: DateTime<Utc>,
) -> Result<PriceEntry, String> {
    let pricing = m.pricing.as_ref().ok_or("no pricing")?;
    let get = |key: &str| -> Result<Option<Decimal>, String> {
        match pricing.get(key) {
            None => Ok(None),
            Some(v) => json_decimal(v).map_err(|e| format!("{key}: {e}")),
        }
    };
    let prompt = get("prompt")?.ok_or("no prompt price")?;
    let completion = get("completion")?.ok_or("no completion price")?;
    if prompt.is_sign_negative() && !prompt.is_zero()
        || completion.is_sign_negative() && !completion.is_zero()
    {
        return Err("variable pricing (negative sentinel price)".into());
    }
    let optional = |key: &str| -> Result<Option<Decimal>, String> {
        match get(key)? {
            Some(d) if d.is_zero() => Ok(None),
            Some(d) => per_token_to_per_million(d).map(Some),
            None => Ok(None),
        }
    };
    let mut entry = PriceEntry::new(
        m.id.clone(),
        effective_from,
        per_token_to_per_million(prompt)?,
        per_token_to_per_million(completion)?,
    );
    entry.provider = Some("openrouter".to_owned());
    entry.cache_read = optional("input_cache_read")?;
    entry.cache_write = optional("input_cache_write")?;
    entry.reasoning = optional("internal_reasoning")?;
    entry.per_request = get("request")?.unwrap_or(Decimal::ZERO).normalize();
    entry.validate().map_err(|e| e.to_string())?;
    Ok(entry)
}

// ------------------------------------------------------------------- LiteLLM

const LITELLM_MODES: [&str; 3] = ["chat", "responses", "completion"];

/// Imports LiteLLM's `model_prices_and_context_window.json`.
///
/// Keys are model names (`sample_spec`, the schema description, is skipped
/// silently: it is not a model). Only modes `chat`, `responses`,
/// `completion` or no mode are imported; entries without both
/// `input_cost_per_token` and `output_cost_per_token` are skipped.
/// Field mapping (per token → per million): `input_cost_per_token` → `input`,
/// `output_cost_per_token` → `output`, `cache_read_input_token_cost` →
/// `cache_read`, `cache_creation_input_token_cost` → `cache_write`,
/// `cache_creation_input_token_cost_above_1hr` → `cache_write_1h`,
/// `output_cost_per_reasoning_token` → `reasoning`, and every
/// `<field>_above_<N>k_tokens` of those fields → a tier with
/// `above_input_tokens = N × 1000`. `litellm_provider` → `provider`.
/// Explicit zero prices are kept as zero.
pub fn import_litellm(json: &str, effective_from: DateTime<Utc>) -> Result<Imported, PricingError> {
    let doc: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| PricingError::Json(e.to_string()))?;
    let mut out = Imported::default();
    for (name, value) in &doc {
        if name == "sample_spec" {
            continue;
        }
        let Value::Object(fields) = value else {
            out.skipped.push(skipped(name, "not an object"));
            continue;
        };
        match litellm_entry(name, fields, effective_from) {
            Ok(entry) => out.entries.push(entry),
            Err(reason) => out.skipped.push(skipped(name, reason)),
        }
    }
    Ok(out)
}

/// Which [`PriceTier`]/[`PriceEntry`] field a LiteLLM per-token field feeds.
#[derive(Clone, Copy)]
enum Kind {
    Input,
    Output,
    CacheRead,
    CacheWrite,
    CacheWrite1h,
    Reasoning,
}

fn litellm_kind(field: &str) -> Option<Kind> {
    Some(match field {
        "input_cost_per_token" => Kind::Input,
        "output_cost_per_token" => Kind::Output,
        "cache_read_input_token_cost" => Kind::CacheRead,
        "cache_creation_input_token_cost" => Kind::CacheWrite,
        "cache_creation_input_token_cost_above_1hr" => Kind::CacheWrite1h,
        "output_cost_per_reasoning_token" => Kind::Reasoning,
        _ => return None,
    })
}

/// `input_cost_per_token_above_200k_tokens` → (`input_cost_per_token`, 200000).
fn split_tier_key(key: &str) -> Option<(&str, u64)> {
    let (field, rest) = key.rsplit_once("_above_")?;
    let thousands = rest.strip_suffix("k_tokens")?;
    if thousands.is_empty() || !thousands.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = thousands.parse().ok()?;
    Some((field, n.checked_mul(1000)?))
}

fn set_kind(tier: &mut PriceTier, kind: Kind, price: Decimal) {
    let slot = match kind {
        Kind::Input => &mut tier.input,
        Kind::Output => &mut tier.output,
        Kind::CacheRead => &mut tier.cache_read,
        Kind::CacheWrite => &mut tier.cache_write,
        Kind::CacheWrite1h => &mut tier.cache_write_1h,
        Kind::Reasoning => &mut tier.reasoning,
    };
    *slot = Some(price);
}

fn litellm_entry(
    name: &str,
    fields: &Map<String, Value>,
    effective_from: DateTime<Utc>,
) -> Result<PriceEntry, String> {
    if let Some(mode) = fields.get("mode") {
        let mode = mode.as_str().ok_or("mode is not a string")?;
        if !LITELLM_MODES.contains(&mode) {
            return Err(format!("mode `{mode}` is not priced per token"));
        }
    }
    let price = |key: &str| -> Result<Option<Decimal>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(v) => json_decimal(v)
                .map_err(|e| format!("{key}: {e}"))?
                .map(per_token_to_per_million)
                .transpose(),
        }
    };
    let input = price("input_cost_per_token")?.ok_or("no input_cost_per_token")?;
    let output = price("output_cost_per_token")?.ok_or("no output_cost_per_token")?;
    let mut entry = PriceEntry::new(name, effective_from, input, output);
    entry.provider = fields
        .get("litellm_provider")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
        .map(str::to_owned);
    entry.cache_read = price("cache_read_input_token_cost")?;
    entry.cache_write = price("cache_creation_input_token_cost")?;
    entry.cache_write_1h = price("cache_creation_input_token_cost_above_1hr")?;
    entry.reasoning = price("output_cost_per_reasoning_token")?;

    let mut tiers: BTreeMap<u64, PriceTier> = BTreeMap::new();
    for (key, value) in fields {
        let Some((field, threshold)) = split_tier_key(key) else {
            continue;
        };
        let Some(kind) = litellm_kind(field) else {
            continue;
        };
        let Some(p) = json_decimal(value).map_err(|e| format!("{key}: {e}"))? else {
            continue;
        };
        let p = per_token_to_per_million(p)?;
        let tier = tiers.entry(threshold).or_insert_with(|| PriceTier {
            above_input_tokens: threshold,
            input: None,
            output: None,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
            reasoning: None,
        });
        set_kind(tier, kind, p);
    }
    entry.tiers = tiers.into_values().collect();
    entry.validate().map_err(|e| e.to_string())?;
    Ok(entry)
}
