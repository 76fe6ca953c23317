//! The price catalog: versioned price entries per model and their lookup.
//!
//! File format (`prices/catalog.json`):
//!
//! ```json
//! {
//!   "version": "2026-11-25",
//!   "currency": "USD",
//!   "models": [
//!     {
//!       "model": "claude-sonnet-4-5",
//!       "provider": "anthropic",
//!       "effective_from": "2025-09-29T00:00:00Z",
//!       "input": "3", "output": "15",
//!       "cache_read": "0.30", "cache_write": "3.75", "cache_write_1h": "6",
//!       "tiers": [{"above_input_tokens": 200000, "input": "6", "output": "22.50"}],
//!       "aliases": ["claude-sonnet-4-5-thinking"]
//!     }
//!   ]
//! }
//! ```
//!
//! Prices are decimal **strings** per million tokens (JSON numbers are
//! rejected so no price ever passes through `f64`); `per_request` is an
//! absolute fee. An entry without `currency` inherits the catalog's
//! `currency`, which itself defaults to `USD`.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::matching::candidate_names;
use super::PricingError;

/// The catalog shipped with the collector (`prices/catalog.json`), embedded at
/// compile time. Parse it with [`Catalog::bundled`].
pub const BUNDLED_CATALOG_JSON: &str = include_str!("../../../prices/catalog.json");

const DEFAULT_CURRENCY: &str = "USD";

fn default_currency() -> String {
    DEFAULT_CURRENCY.to_owned()
}

/// Long-context pricing: when a request's total `input_tokens` is strictly
/// greater than `above_input_tokens`, the whole request is priced with this
/// tier's prices. Unset prices fall back to the entry's base prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub input: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub output: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub cache_read: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub cache_write: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub cache_write_1h: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub reasoning: Option<Decimal>,
}

impl PriceTier {
    fn prices(&self) -> [(&'static str, Option<Decimal>); 6] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
            ("cache_write_1h", self.cache_write_1h),
            ("reasoning", self.reasoning),
        ]
    }
}

/// The price of one model from one instant on (until the next entry of the
/// same model). Prices are per million tokens; `per_request` is absolute.
///
/// Fallbacks applied by [`crate::pricing::cost()`]: `cache_read`,
/// `cache_write` and `cache_write_1h` fall back to `input`; `reasoning` falls
/// back to `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Canonical model id (`gpt-4o`, `claude-sonnet-4-5`, `openai/gpt-4o`).
    pub model: String,
    /// Informational; lookups do not filter on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// RFC 3339 instant from which this entry applies.
    pub effective_from: DateTime<Utc>,
    /// ISO 4217 code, three uppercase letters.
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub input: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub output: Decimal,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub cache_read: Option<Decimal>,
    /// 5-minute cache writes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub cache_write: Option<Decimal>,
    /// 1-hour cache writes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub cache_write_1h: Option<Decimal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub reasoning: Option<Decimal>,
    /// Absolute fee per request (not per million).
    #[serde(default, with = "rust_decimal::serde::str")]
    pub per_request: Decimal,
    /// Strictly ascending by `above_input_tokens`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<PriceTier>,
    /// Other names this model is requested under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl PriceEntry {
    /// A minimal entry (no cache/reasoning prices, no fee, no tiers), in USD.
    pub fn new(
        model: impl Into<String>,
        effective_from: DateTime<Utc>,
        input: Decimal,
        output: Decimal,
    ) -> Self {
        PriceEntry {
            model: model.into(),
            provider: None,
            effective_from,
            currency: default_currency(),
            input,
            output,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
            reasoning: None,
            per_request: Decimal::ZERO,
            tiers: Vec::new(),
            aliases: Vec::new(),
        }
    }

    /// Stable identifier of this price, stored by the ledger:
    /// `"{model}@{effective_from}"`, e.g. `gpt-4o@2024-10-02T00:00:00Z`
    /// (fractional seconds only when non-zero).
    pub fn version(&self) -> String {
        format!(
            "{}@{}",
            self.model,
            self.effective_from
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )
    }

    /// The highest tier whose threshold `input_tokens` strictly exceeds.
    pub fn tier_for(&self, input_tokens: u64) -> Option<&PriceTier> {
        self.tiers
            .iter()
            .rev()
            .find(|t| input_tokens > t.above_input_tokens)
    }

    /// Checks the entry on its own: non-empty model id without whitespace,
    /// a three-letter uppercase currency, non-negative prices, tiers strictly
    /// ascending and each setting at least one price, sane aliases.
    pub fn validate(&self) -> Result<(), PricingError> {
        let err = |reason: String| PricingError::InvalidEntry {
            model: self.model.clone(),
            reason,
        };
        if self.model.trim().is_empty() {
            return Err(err("model id is empty".into()));
        }
        if self.model.chars().any(char::is_whitespace) {
            return Err(err("model id contains whitespace".into()));
        }
        if let Some(p) = &self.provider {
            if p.trim().is_empty() {
                return Err(err("provider is empty".into()));
            }
        }
        validate_currency(&self.currency).map_err(err)?;
        let base = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
            ("cache_write_1h", self.cache_write_1h),
            ("reasoning", self.reasoning),
            ("per_request", Some(self.per_request)),
        ];
        for (name, price) in base {
            if let Some(p) = price {
                if p.is_sign_negative() && !p.is_zero() {
                    return Err(err(format!("{name} price {p} is negative")));
                }
            }
        }
        let mut previous: Option<u64> = None;
        for tier in &self.tiers {
            if let Some(prev) = previous {
                if tier.above_input_tokens <= prev {
                    return Err(err(format!(
                        "tiers must be strictly ascending by above_input_tokens ({} after {prev})",
                        tier.above_input_tokens
                    )));
                }
            }
            previous = Some(tier.above_input_tokens);
            let prices = tier.prices();
            if prices.iter().all(|(_, p)| p.is_none()) {
                return Err(err(format!(
                    "tier above {} input tokens sets no price",
                    tier.above_input_tokens
                )));
            }
            for (name, price) in prices {
                if let Some(p) = price {
                    if p.is_sign_negative() && !p.is_zero() {
                        return Err(err(format!(
                            "tier above {} input tokens: {name} price {p} is negative",
                            tier.above_input_tokens
                        )));
                    }
                }
            }
        }
        for (i, alias) in self.aliases.iter().enumerate() {
            if alias.trim().is_empty() || alias.chars().any(char::is_whitespace) {
                return Err(err(format!(
                    "alias `{alias}` is empty or contains whitespace"
                )));
            }
            if *alias == self.model {
                return Err(err(format!("alias `{alias}` equals the model id")));
            }
            if self.aliases[..i].contains(alias) {
                return Err(err(format!("alias `{alias}` is listed twice")));
            }
        }
        Ok(())
    }
}

fn validate_currency(currency: &str) -> Result<(), String> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "currency `{currency}` is not a three-letter uppercase ISO 4217 code"
        ))
    }
}

/// How a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The candidate name is a catalog model id.
    Model,
    /// The candidate name is an alias of a catalog model.
    Alias,
}

/// Result of [`Catalog::resolve`]: the entry plus how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupMatch<'a> {
    pub entry: &'a PriceEntry,
    /// The candidate name (see [`candidate_names`]) that matched.
    pub matched_name: &'a str,
    pub kind: MatchKind,
}

/// A validated set of price entries with a version label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    version: String,
    currency: String,
    /// Sorted by (model, effective_from).
    entries: Vec<PriceEntry>,
    /// model id → indexes into `entries`, ascending by effective_from.
    by_model: HashMap<String, Vec<usize>>,
    /// alias → model id.
    aliases: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: String,
    #[serde(default)]
    currency: Option<String>,
    /// Free text (sources, notes); not interpreted.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<serde_json::Value>,
    models: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct CatalogFileOut<'a> {
    version: &'a str,
    currency: &'a str,
    models: &'a [PriceEntry],
}

impl Catalog {
    /// Parses and validates the catalog file format
    /// (`{"version", "currency"?, "description"?, "models": [PriceEntry...]}`).
    pub fn from_json(json: &str) -> Result<Catalog, PricingError> {
        let file: CatalogFile =
            serde_json::from_str(json).map_err(|e| PricingError::Json(e.to_string()))?;
        let currency = file.currency.unwrap_or_else(default_currency);
        validate_currency(&currency).map_err(PricingError::InvalidCatalog)?;
        let mut entries = Vec::with_capacity(file.models.len());
        for (index, mut value) in file.models.into_iter().enumerate() {
            if let serde_json::Value::Object(map) = &mut value {
                if !map.contains_key("currency") {
                    map.insert(
                        "currency".to_owned(),
                        serde_json::Value::String(currency.clone()),
                    );
                }
            }
            let label = value
                .get("model")
                .and_then(|m| m.as_str())
                .map(|m| format!("`{m}`"))
                .unwrap_or_else(|| "?".to_owned());
            let entry: PriceEntry = serde_json::from_value(value)
                .map_err(|e| PricingError::Json(format!("models[{index}] (model {label}): {e}")))?;
            entries.push(entry);
        }
        Catalog::with_currency(file.version, currency, entries)
    }

    /// The catalog embedded from `prices/catalog.json`.
    pub fn bundled() -> Result<Catalog, PricingError> {
        Catalog::from_json(BUNDLED_CATALOG_JSON)
    }

    /// Builds a catalog from entries (e.g. rows loaded from the database),
    /// validating each entry and the set as a whole. Catalog currency: USD.
    pub fn from_entries(
        version: impl Into<String>,
        entries: Vec<PriceEntry>,
    ) -> Result<Catalog, PricingError> {
        Catalog::with_currency(version.into(), default_currency(), entries)
    }

    fn with_currency(
        version: String,
        currency: String,
        mut entries: Vec<PriceEntry>,
    ) -> Result<Catalog, PricingError> {
        if version.trim().is_empty() {
            return Err(PricingError::InvalidCatalog("version is empty".into()));
        }
        validate_currency(&currency).map_err(PricingError::InvalidCatalog)?;
        for entry in &entries {
            entry.validate()?;
        }
        entries.sort_by(|a, b| {
            a.model
                .cmp(&b.model)
                .then(a.effective_from.cmp(&b.effective_from))
        });
        for pair in entries.windows(2) {
            if pair[0].model == pair[1].model && pair[0].effective_from == pair[1].effective_from {
                return Err(PricingError::DuplicateEntry {
                    model: pair[1].model.clone(),
                    effective_from: pair[1].effective_from,
                });
            }
        }
        let mut by_model: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            by_model.entry(entry.model.clone()).or_default().push(i);
        }
        let mut aliases: HashMap<String, String> = HashMap::new();
        for entry in &entries {
            for alias in &entry.aliases {
                if by_model.contains_key(alias) {
                    return Err(PricingError::AliasConflict {
                        alias: alias.clone(),
                        reason: format!("alias of `{}` is also a model id", entry.model),
                    });
                }
                match aliases.get(alias) {
                    Some(owner) if *owner != entry.model => {
                        return Err(PricingError::AliasConflict {
                            alias: alias.clone(),
                            reason: format!("claimed by both `{owner}` and `{}`", entry.model),
                        });
                    }
                    Some(_) => {}
                    None => {
                        aliases.insert(alias.clone(), entry.model.clone());
                    }
                }
            }
        }
        Ok(Catalog {
            version,
            currency,
            entries,
            by_model,
            aliases,
        })
    }

    /// The catalog's version label (e.g. `"2026-11-25"`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Default currency of the catalog file.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// All entries, sorted by model id then `effective_from`.
    pub fn entries(&self) -> &[PriceEntry] {
        &self.entries
    }

    /// Consumes the catalog, returning its entries (sorted as in [`Self::entries`]).
    pub fn into_entries(self) -> Vec<PriceEntry> {
        self.entries
    }

    /// All entries of one model id (exact id, no matching), oldest first.
    pub fn history(&self, model: &str) -> Vec<&PriceEntry> {
        self.by_model
            .get(model)
            .map(|idx| idx.iter().map(|&i| &self.entries[i]).collect())
            .unwrap_or_default()
    }

    /// Serializes back to the catalog file format (pretty-printed).
    pub fn to_json(&self) -> String {
        let out = CatalogFileOut {
            version: &self.version,
            currency: &self.currency,
            models: &self.entries,
        };
        serde_json::to_string_pretty(&out).expect("catalog serialization cannot fail")
    }

    /// The price in force for `model` (as requested from `provider`) at `at`.
    ///
    /// Walks [`candidate_names`]`(provider, model)` in order; for each name it
    /// tries a catalog model id, then an alias. The first name whose model has
    /// an entry with `effective_from <= at` wins, and of that model's entries
    /// the one with the greatest such `effective_from` is returned. A name
    /// whose model only has entries after `at` is skipped, so the next (less
    /// specific) candidate may still match.
    pub fn lookup(&self, provider: &str, model: &str, at: DateTime<Utc>) -> Option<&PriceEntry> {
        self.resolve(provider, model, at).map(|m| m.entry)
    }

    /// Like [`Self::lookup`], also telling which candidate name matched and how.
    pub fn resolve(
        &self,
        provider: &str,
        model: &str,
        at: DateTime<Utc>,
    ) -> Option<LookupMatch<'_>> {
        for name in candidate_names(provider, model) {
            if let Some((key, indexes)) = self.by_model.get_key_value(name.as_str()) {
                if let Some(entry) = self.effective(indexes, at) {
                    return Some(LookupMatch {
                        entry,
                        matched_name: key.as_str(),
                        kind: MatchKind::Model,
                    });
                }
            }
            if let Some((alias, target)) = self.aliases.get_key_value(name.as_str()) {
                if let Some(entry) = self
                    .by_model
                    .get(target)
                    .and_then(|ix| self.effective(ix, at))
                {
                    return Some(LookupMatch {
                        entry,
                        matched_name: alias.as_str(),
                        kind: MatchKind::Alias,
                    });
                }
            }
        }
        None
    }

    fn effective(&self, indexes: &[usize], at: DateTime<Utc>) -> Option<&PriceEntry> {
        indexes
            .iter()
            .rev()
            .map(|&i| &self.entries[i])
            .find(|e| e.effective_from <= at)
    }
}

impl fmt::Display for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "price catalog {} ({} entries, {} models)",
            self.version,
            self.entries.len(),
            self.by_model.len()
        )
    }
}
