//! Pure pricing: catalog, model matching, cost.
//!
//! Everything in this module is free of I/O (the importers only parse text
//! they are handed) and uses exact decimal arithmetic ([`Decimal`]); no value
//! ever passes through `f64`.
//!
//! * [`catalog`]: [`PriceEntry`] / [`PriceTier`] (the JSON shape of
//!   `prices/catalog.json`, `GET /v1/prices` and `PUT /v1/prices/{model}`),
//!   [`Catalog`] with validation and [`Catalog::lookup`].
//! * [`matching`]: [`candidate_names`], the ordered list of names a requested
//!   model id is looked up under.
//! * [`cost`]: [`UsageCounts`], [`cost()`], [`TenantAdjustment`],
//!   [`CostBreakdown`] and [`reconcile`].
//! * [`import`]: importers for OpenRouter's `/api/v1/models` response and
//!   LiteLLM's `model_prices_and_context_window.json`.
//!
//! All prices in a [`PriceEntry`] are per **million** tokens, except
//! `per_request`, which is an absolute fee per request.

pub mod catalog;
pub mod cost;
pub mod import;
pub mod matching;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub use catalog::{Catalog, LookupMatch, MatchKind, PriceEntry, PriceTier, BUNDLED_CATALOG_JSON};
pub use cost::{
    cost, reconcile, AppliedRates, CostBreakdown, PriceOverride, Reconciliation, TenantAdjustment,
    UsageCounts,
};
pub use import::{import_litellm, import_openrouter, Imported, SkippedModel};
pub use matching::candidate_names;

/// Number of tokens the catalog prices are quoted for.
pub const TOKENS_PER_PRICE_UNIT: u64 = 1_000_000;

/// Everything that can go wrong in the pricing module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The text is not valid JSON or does not have the expected shape.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A single price entry violates a rule (negative price, unsorted tiers, ...).
    #[error("invalid price entry for model `{model}`: {reason}")]
    InvalidEntry { model: String, reason: String },
    /// Two entries share the same `(model, effective_from)`.
    #[error("duplicate price entry for model `{model}` effective from {effective_from}")]
    DuplicateEntry {
        model: String,
        effective_from: DateTime<Utc>,
    },
    /// An alias collides with a model id or with an alias of another model.
    #[error("alias `{alias}` is ambiguous: {reason}")]
    AliasConflict { alias: String, reason: String },
    /// A catalog-level field is invalid (empty version, bad currency, ...).
    #[error("invalid catalog: {0}")]
    InvalidCatalog(String),
    /// Usage counts violate the subset rules (e.g. more cache reads than input tokens).
    #[error("inconsistent usage counts: {0}")]
    InvalidUsage(String),
    /// A tenant adjustment is out of range (negative price, discount outside 0..=100).
    #[error("invalid tenant adjustment: {0}")]
    InvalidAdjustment(String),
    /// A decimal operation overflowed; nothing was charged.
    #[error("arithmetic overflow while computing {0}")]
    Overflow(&'static str),
    /// No catalog entry matches the model at that time.
    #[error("no price for provider `{provider}` model `{model}` at {at}")]
    NoPrice {
        provider: String,
        model: String,
        at: DateTime<Utc>,
    },
}

/// Looks the model up in `catalog` and prices `usage` with it.
///
/// Convenience wrapper around [`Catalog::lookup`] + [`cost()`]; returns
/// [`PricingError::NoPrice`] when no entry matches.
pub fn price_usage(
    catalog: &Catalog,
    provider: &str,
    model: &str,
    at: DateTime<Utc>,
    usage: &UsageCounts,
    adjustment: Option<&TenantAdjustment>,
) -> Result<CostBreakdown, PricingError> {
    let entry = catalog
        .lookup(provider, model, at)
        .ok_or_else(|| PricingError::NoPrice {
            provider: provider.to_owned(),
            model: model.to_owned(),
            at,
        })?;
    cost(usage, entry, adjustment)
}

/// Parses a decimal from its textual form, accepting plain (`"0.0000025"`)
/// and exponent (`"2.5e-06"`) notation. Exact: no binary floating point.
pub(crate) fn parse_decimal_text(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty number".to_owned());
    }
    let parsed = if t.contains(['e', 'E']) {
        Decimal::from_scientific(t)
    } else {
        t.parse::<Decimal>()
    };
    parsed
        .map(|d| d.normalize())
        .map_err(|e| format!("`{t}` is not an exact decimal: {e}"))
}
