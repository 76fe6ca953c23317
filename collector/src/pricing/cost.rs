//! Pure cost computation in exact decimals.
//!
//! Conventions for [`UsageCounts`]: `input_tokens` includes cache reads and
//! cache writes; `cache_write_1h_tokens` is a subset of `cache_write_tokens`;
//! `output_tokens` includes `reasoning_tokens`.
//!
//! Price resolution for one token kind (first that is set wins):
//! tenant [`PriceOverride`] → the applied [`PriceTier`] → the entry's base
//! price → fallback (`cache_read`, `cache_write`, `cache_write_1h` fall back to
//! the *resolved* input price, `reasoning` to the *resolved* output price).
//! So a custom input price also moves cache prices that the catalog leaves
//! unset, and a tier's input price also moves them.
//!
//! Discount: `TenantAdjustment::Discount { percent }` applies to the whole
//! subtotal, i.e. every token component **and** the per-request fee.
//! `discount = -(subtotal × percent / 100)`, `total = subtotal + discount`.
//!
//! No rounding happens here; amounts keep full decimal precision (up to the
//! 28 significant digits `Decimal` holds) and are normalized (no trailing
//! zeros). Rounding to the currency's minor unit belongs to invoicing.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::catalog::{PriceEntry, PriceTier};
use super::{PricingError, TOKENS_PER_PRICE_UNIT};

/// Token counts of one request. See the module docs for the subset rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageCounts {
    /// All prompt tokens, including cache reads and cache writes.
    pub input_tokens: u64,
    /// All completion tokens, including reasoning tokens.
    pub output_tokens: u64,
    /// Input tokens served from the prompt cache (⊆ input).
    pub cache_read_tokens: u64,
    /// Input tokens written to the cache, 5-minute and 1-hour (⊆ input).
    pub cache_write_tokens: u64,
    /// The 1-hour part of `cache_write_tokens`.
    pub cache_write_1h_tokens: u64,
    /// Reasoning/thinking tokens (⊆ output).
    pub reasoning_tokens: u64,
}

impl UsageCounts {
    /// Checks the subset rules: `cache_read + cache_write <= input`,
    /// `cache_write_1h <= cache_write`, `reasoning <= output`.
    pub fn validate(&self) -> Result<(), PricingError> {
        let cached = self
            .cache_read_tokens
            .checked_add(self.cache_write_tokens)
            .ok_or(PricingError::Overflow("cached input tokens"))?;
        if cached > self.input_tokens {
            return Err(PricingError::InvalidUsage(format!(
                "cache_read_tokens ({}) + cache_write_tokens ({}) exceed input_tokens ({})",
                self.cache_read_tokens, self.cache_write_tokens, self.input_tokens
            )));
        }
        if self.cache_write_1h_tokens > self.cache_write_tokens {
            return Err(PricingError::InvalidUsage(format!(
                "cache_write_1h_tokens ({}) exceed cache_write_tokens ({})",
                self.cache_write_1h_tokens, self.cache_write_tokens
            )));
        }
        if self.reasoning_tokens > self.output_tokens {
            return Err(PricingError::InvalidUsage(format!(
                "reasoning_tokens ({}) exceed output_tokens ({})",
                self.reasoning_tokens, self.output_tokens
            )));
        }
        Ok(())
    }

    /// Input tokens that were neither read from nor written to the cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}

/// Per-tenant price overrides; every field is optional and replaces the
/// resolved catalog price (after tier selection) for that token kind.
/// Prices per million tokens, `per_request` absolute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub per_request: Option<Decimal>,
}

/// A tenant's pricing agreement applied on top of the catalog price.
///
/// JSON (externally tagged): `{"discount": {"percent": "10"}}` or
/// `{"custom_prices": {"input": "2", "output": "8"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantAdjustment {
    /// Percentage (0..=100) off the subtotal of all token components and the
    /// per-request fee.
    Discount {
        #[serde(with = "rust_decimal::serde::str")]
        percent: Decimal,
    },
    /// Contract prices replacing catalog prices per token kind.
    CustomPrices(PriceOverride),
}

impl TenantAdjustment {
    /// Discount within 0..=100, override prices non-negative.
    pub fn validate(&self) -> Result<(), PricingError> {
        match self {
            TenantAdjustment::Discount { percent } => {
                if *percent < Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                    return Err(PricingError::InvalidAdjustment(format!(
                        "discount percent {percent} is outside 0..=100"
                    )));
                }
            }
            TenantAdjustment::CustomPrices(o) => {
                let all = [
                    ("input", o.input),
                    ("output", o.output),
                    ("cache_read", o.cache_read),
                    ("cache_write", o.cache_write),
                    ("cache_write_1h", o.cache_write_1h),
                    ("reasoning", o.reasoning),
                    ("per_request", o.per_request),
                ];
                for (name, price) in all {
                    if let Some(p) = price {
                        if p < Decimal::ZERO {
                            return Err(PricingError::InvalidAdjustment(format!(
                                "custom {name} price {p} is negative"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The unit prices actually applied (after tier, override and fallbacks);
/// per million tokens except `per_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRates {
    #[serde(with = "rust_decimal::serde::str")]
    pub input: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub output: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub cache_read: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub cache_write: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub cache_write_1h: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub reasoning: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub per_request: Decimal,
}

impl AppliedRates {
    /// Resolves every rate for a request: override → tier → base → fallback.
    pub fn resolve(
        price: &PriceEntry,
        tier: Option<&PriceTier>,
        custom: Option<&PriceOverride>,
    ) -> AppliedRates {
        let pick = |o: Option<Decimal>, t: Option<Decimal>, b: Option<Decimal>| o.or(t).or(b);
        let input = pick(
            custom.and_then(|c| c.input),
            tier.and_then(|t| t.input),
            Some(price.input),
        )
        .unwrap_or(price.input);
        let output = pick(
            custom.and_then(|c| c.output),
            tier.and_then(|t| t.output),
            Some(price.output),
        )
        .unwrap_or(price.output);
        let cache_read = pick(
            custom.and_then(|c| c.cache_read),
            tier.and_then(|t| t.cache_read),
            price.cache_read,
        )
        .unwrap_or(input);
        let cache_write = pick(
            custom.and_then(|c| c.cache_write),
            tier.and_then(|t| t.cache_write),
            price.cache_write,
        )
        .unwrap_or(input);
        let cache_write_1h = pick(
            custom.and_then(|c| c.cache_write_1h),
            tier.and_then(|t| t.cache_write_1h),
            price.cache_write_1h,
        )
        .unwrap_or(input);
        let reasoning = pick(
            custom.and_then(|c| c.reasoning),
            tier.and_then(|t| t.reasoning),
            price.reasoning,
        )
        .unwrap_or(output);
        let per_request = custom
            .and_then(|c| c.per_request)
            .unwrap_or(price.per_request);
        AppliedRates {
            input: input.normalize(),
            output: output.normalize(),
            cache_read: cache_read.normalize(),
            cache_write: cache_write.normalize(),
            cache_write_1h: cache_write_1h.normalize(),
            reasoning: reasoning.normalize(),
            per_request: per_request.normalize(),
        }
    }
}

/// The priced request, stored by the ledger as JSON. All amounts are in
/// `currency`, unrounded; `total` is the sum of every other amount field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostBreakdown {
    /// Uncached input tokens (`input - cache_read - cache_write`) at the input price.
    #[serde(with = "rust_decimal::serde::str")]
    pub input: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub cache_read: Decimal,
    /// 5-minute writes at `cache_write`, plus 1-hour writes at `cache_write_1h`.
    #[serde(with = "rust_decimal::serde::str")]
    pub cache_write: Decimal,
    /// Non-reasoning output tokens (`output - reasoning`) at the output price.
    #[serde(with = "rust_decimal::serde::str")]
    pub output: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub reasoning: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub request_fee: Decimal,
    /// Zero or negative.
    #[serde(with = "rust_decimal::serde::str")]
    pub discount: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    pub currency: String,
    /// `above_input_tokens` of the tier applied, if any.
    pub tier: Option<u64>,
    /// [`PriceEntry::version`] of the price charged.
    pub version: String,
    /// Unit prices that produced the amounts above.
    pub rates: AppliedRates,
    /// The tenant adjustment applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<TenantAdjustment>,
}

/// `tokens × price_per_million / 1_000_000`, checked.
fn per_million(tokens: u64, price: Decimal, what: &'static str) -> Result<Decimal, PricingError> {
    if tokens == 0 || price.is_zero() {
        return Ok(Decimal::ZERO);
    }
    Decimal::from(tokens)
        .checked_mul(price)
        .and_then(|v| v.checked_div(Decimal::from(TOKENS_PER_PRICE_UNIT)))
        .map(|v| v.normalize())
        .ok_or(PricingError::Overflow(what))
}

fn add(a: Decimal, b: Decimal, what: &'static str) -> Result<Decimal, PricingError> {
    a.checked_add(b).ok_or(PricingError::Overflow(what))
}

/// Prices `usage` with `price` and an optional tenant adjustment.
///
/// Errors: [`PricingError::InvalidUsage`] when the usage subset rules are
/// violated, [`PricingError::InvalidAdjustment`] for an out-of-range
/// adjustment, [`PricingError::Overflow`] if a decimal operation overflows.
/// Never panics.
pub fn cost(
    usage: &UsageCounts,
    price: &PriceEntry,
    adjustment: Option<&TenantAdjustment>,
) -> Result<CostBreakdown, PricingError> {
    usage.validate()?;
    if let Some(adj) = adjustment {
        adj.validate()?;
    }
    let tier = price.tier_for(usage.input_tokens);
    let custom = match adjustment {
        Some(TenantAdjustment::CustomPrices(o)) => Some(o),
        _ => None,
    };
    let rates = AppliedRates::resolve(price, tier, custom);

    let uncached = usage.uncached_input_tokens();
    let writes_1h = usage.cache_write_1h_tokens;
    let writes_5m = usage.cache_write_tokens - writes_1h; // validated: 1h ⊆ writes
    let visible_output = usage.output_tokens - usage.reasoning_tokens; // validated

    let input = per_million(uncached, rates.input, "input cost")?;
    let cache_read = per_million(usage.cache_read_tokens, rates.cache_read, "cache read cost")?;
    let cache_write = add(
        per_million(writes_5m, rates.cache_write, "cache write cost")?,
        per_million(writes_1h, rates.cache_write_1h, "1h cache write cost")?,
        "cache write cost",
    )?
    .normalize();
    let output = per_million(visible_output, rates.output, "output cost")?;
    let reasoning = per_million(usage.reasoning_tokens, rates.reasoning, "reasoning cost")?;
    let request_fee = rates.per_request;

    let mut subtotal = Decimal::ZERO;
    for part in [
        input,
        cache_read,
        cache_write,
        output,
        reasoning,
        request_fee,
    ] {
        subtotal = add(subtotal, part, "subtotal")?;
    }

    let discount = match adjustment {
        Some(TenantAdjustment::Discount { percent }) if !percent.is_zero() => {
            let off = subtotal
                .checked_mul(*percent)
                .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
                .ok_or(PricingError::Overflow("discount"))?;
            if off.is_zero() {
                Decimal::ZERO
            } else {
                (-off).normalize()
            }
        }
        _ => Decimal::ZERO,
    };
    let total = add(subtotal, discount, "total")?.normalize();

    Ok(CostBreakdown {
        input,
        cache_read,
        cache_write,
        output,
        reasoning,
        request_fee,
        discount,
        total,
        currency: price.currency.clone(),
        tier: tier.map(|t| t.above_input_tokens),
        version: price.version(),
        rates,
        adjustment: adjustment.cloned(),
    })
}

/// Our computed cost next to a cost reported elsewhere (provider invoice,
/// OpenRouter `usage.cost`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    #[serde(with = "rust_decimal::serde::str")]
    pub ours: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub reported: Decimal,
    /// `ours - reported` (positive: we charge more than reported).
    #[serde(with = "rust_decimal::serde::str")]
    pub difference: Decimal,
    /// `|difference| <= |tolerance|`.
    pub within_tolerance: bool,
}

/// Compares two amounts with an absolute tolerance (its sign is ignored).
/// Saturates instead of overflowing.
pub fn reconcile(ours: Decimal, reported: Decimal, tolerance: Decimal) -> Reconciliation {
    let difference = ours.saturating_sub(reported).normalize();
    Reconciliation {
        ours,
        reported,
        difference,
        within_tolerance: difference.abs() <= tolerance.abs(),
    }
}
