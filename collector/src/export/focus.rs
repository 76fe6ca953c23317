//! The FOCUS 1.1 view of the ledger (FinOps Open Cost and Usage
//! Specification, <https://focus.finops.org>); docs/export.md has the
//! column-by-column mapping and the reasons behind it.
//!
//! One FOCUS row per cost component of a priced ledger row (uncached input,
//! cache read, cache write, output, reasoning, request fee): each has one
//! SKU, one unit and one quantity, as the providers' own bills have
//! separate input and output meters. The tenant's discount is spread over
//! the component rows (FOCUS: discounts are applied to the rows they
//! concern, not negated in a row of their own), the last cent of rounding
//! on the largest row, so a request's BilledCost adds up to its ledger cost
//! exactly. Unpriced rows have no price, currency or SKU price and are left
//! out (the export reports how many).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::parquet::{Column, Kind};
use super::{Cell, ExportError, Period, DECIMAL_SCALE};
use crate::db::Transaction;

/// Prefix of our provider-defined keys in `Tags` (FOCUS: provider-defined
/// tag keys carry a provider prefix).
pub const TAG_PREFIX: &str = "billing/";

/// What a ledger row's cost is made of; one FOCUS row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Input,
    CacheRead,
    CacheWrite,
    Output,
    Reasoning,
    RequestFee,
}

impl Component {
    /// The `x_CostComponent` value and the SKU suffix.
    pub fn key(self) -> &'static str {
        match self {
            Component::Input => "input",
            Component::CacheRead => "cache_read",
            Component::CacheWrite => "cache_write",
            Component::Output => "output",
            Component::Reasoning => "reasoning",
            Component::RequestFee => "request_fee",
        }
    }

    /// `SkuMeter`.
    pub fn meter(self) -> &'static str {
        match self {
            Component::Input => "Input Tokens",
            Component::CacheRead => "Cache Read Tokens",
            Component::CacheWrite => "Cache Write Tokens",
            Component::Output => "Output Tokens",
            Component::Reasoning => "Reasoning Tokens",
            Component::RequestFee => "Requests",
        }
    }

    /// `PricingUnit` and `ConsumedUnit` (FOCUS Unit Format: plural count units).
    pub fn unit(self) -> &'static str {
        match self {
            Component::RequestFee => "Requests",
            _ => "Tokens",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Component::Input => "uncached input tokens",
            Component::CacheRead => "input tokens read from the prompt cache",
            Component::CacheWrite => "input tokens written to the prompt cache",
            Component::Output => "output tokens (excluding reasoning)",
            Component::Reasoning => "reasoning tokens",
            Component::RequestFee => "per-request fee",
        }
    }
}

/// One FOCUS row: a cost component of a priced ledger row.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub row: &'a Transaction,
    pub component: Component,
    /// Tokens (or 1 request) of this component.
    pub quantity: i64,
    /// The component's amount before the discount (ListCost).
    pub list_cost: Decimal,
    /// After its share of the discount (BilledCost, EffectiveCost,
    /// ContractedCost).
    pub billed_cost: Decimal,
    /// The request's first FOCUS row: carries `x_ReportedCost`, so that
    /// summing the column counts each request once.
    pub first_of_request: bool,
}

/// Spreads `discount` over `amounts` in proportion, rounded to
/// [`DECIMAL_SCALE`] places, the remainder on the largest amount: the shares
/// add up to `discount` exactly. None when there is nothing to spread it on.
pub fn spread_discount(discount: Decimal, amounts: &[Decimal]) -> Option<Vec<Decimal>> {
    let mut shares = vec![Decimal::ZERO; amounts.len()];
    if discount.is_zero() {
        return Some(shares);
    }
    let largest = (0..amounts.len()).reduce(|best, i| {
        if amounts[i].abs() > amounts[best].abs() {
            i
        } else {
            best
        }
    })?;
    let subtotal = amounts
        .iter()
        .try_fold(Decimal::ZERO, |acc, a| acc.checked_add(*a))?;
    if !subtotal.is_zero() {
        let ratio = discount.checked_div(subtotal)?;
        for (i, amount) in amounts.iter().enumerate() {
            if i != largest {
                shares[i] = amount
                    .checked_mul(ratio)?
                    .round_dp(DECIMAL_SCALE.unsigned_abs().into());
            }
        }
    }
    let others = shares
        .iter()
        .try_fold(Decimal::ZERO, |acc, s| acc.checked_add(*s))?;
    shares[largest] = discount.checked_sub(others)?;
    Some(shares)
}

/// The FOCUS rows of one ledger row; none for an unpriced row, nor for a
/// priced one that consumed and cost nothing.
pub fn charges(row: &Transaction) -> Result<Vec<Charge<'_>>, ExportError> {
    let (Some(cost), Some(_)) = (row.cost, row.currency.as_ref()) else {
        return Ok(Vec::new());
    };
    if row.status != "priced" {
        return Ok(Vec::new());
    }
    let inconsistent = |problem: String| ExportError::InconsistentRow {
        tenant_id: row.tenant_id.clone(),
        request_id: row.request_id.clone(),
        problem,
    };
    let uncached = row.input_tokens - row.cache_read_tokens - row.cache_write_tokens;
    let generated = row.output_tokens - row.reasoning_tokens;
    if uncached < 0 || generated < 0 {
        return Err(inconsistent(format!(
            "token subsets exceed their totals (input {}, cache read {}, cache write {}, \
             output {}, reasoning {})",
            row.input_tokens,
            row.cache_read_tokens,
            row.cache_write_tokens,
            row.output_tokens,
            row.reasoning_tokens
        )));
    }
    let fee = row.cost_request_fee.unwrap_or_default();
    let all = [
        (Component::Input, uncached, row.cost_input),
        (
            Component::CacheRead,
            row.cache_read_tokens,
            row.cost_cache_read,
        ),
        (
            Component::CacheWrite,
            row.cache_write_tokens,
            row.cost_cache_write,
        ),
        (Component::Output, generated, row.cost_output),
        (
            Component::Reasoning,
            row.reasoning_tokens,
            row.cost_reasoning,
        ),
        (Component::RequestFee, i64::from(!fee.is_zero()), Some(fee)),
    ];
    let discount = row.cost_discount.unwrap_or_default();
    let subtotal = all
        .iter()
        .try_fold(Decimal::ZERO, |acc, c| {
            acc.checked_add(c.2.unwrap_or_default())
        })
        .and_then(|s| s.checked_add(discount));
    if subtotal != Some(cost) {
        return Err(inconsistent(format!(
            "cost {cost} is not the sum of its components and discount ({subtotal:?})"
        )));
    }
    let kept: Vec<(Component, i64, Decimal)> = all
        .into_iter()
        .map(|(c, q, a)| (c, q, a.unwrap_or_default()))
        .filter(|(_, q, a)| *q > 0 || !a.is_zero())
        .collect();
    let amounts: Vec<Decimal> = kept.iter().map(|k| k.2).collect();
    let shares = spread_discount(discount, &amounts)
        .ok_or_else(|| inconsistent(format!("discount {discount} on nothing to discount")))?;
    Ok(kept
        .into_iter()
        .zip(shares)
        .enumerate()
        .map(|(i, ((component, quantity, list_cost), share))| Charge {
            row,
            component,
            quantity,
            list_cost,
            billed_cost: list_cost + share,
            first_of_request: i == 0,
        })
        .collect())
}

/// The FOCUS rows of a chunk of ledger rows.
pub fn rows_of(rows: &[Transaction]) -> Result<Vec<Charge<'_>>, ExportError> {
    let mut out = Vec::with_capacity(rows.len() * 3);
    for row in rows {
        out.extend(charges(row)?);
    }
    Ok(out)
}

/// What every row of one export shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub period: Period,
    pub invoice_issuer: String,
}

impl Context {
    pub fn new(period: Period, invoice_issuer: &str) -> Self {
        Self {
            period,
            invoice_issuer: invoice_issuer.to_owned(),
        }
    }
}

/// BilledCost per currency of what was written, to check against the ledger.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub rows: u64,
    pub billed_cost: BTreeMap<String, Decimal>,
}

impl Tally {
    pub fn add(&mut self, charges: &[Charge<'_>]) {
        for c in charges {
            self.rows += 1;
            if let Some(currency) = &c.row.currency {
                let sum = self.billed_cost.entry(currency.clone()).or_default();
                *sum = (*sum + c.billed_cost).normalize();
            }
        }
    }
}

/// `ProviderName` and `ServiceName` of our provider ids.
pub fn provider_and_service(provider: &str) -> (Cow<'_, str>, Cow<'_, str>) {
    let (p, s) = match provider {
        "openai" => ("OpenAI", "OpenAI API"),
        "azure" => ("Microsoft", "Azure OpenAI"),
        "anthropic" => ("Anthropic", "Anthropic API"),
        "gemini" => ("Google", "Gemini API"),
        "vertex_ai" => ("Google Cloud", "Vertex AI"),
        "bedrock" => ("AWS", "Amazon Bedrock"),
        "openrouter" => ("OpenRouter", "OpenRouter API"),
        "deepseek" => ("DeepSeek", "DeepSeek API"),
        "groq" => ("Groq", "GroqCloud"),
        "mistral" => ("Mistral AI", "Mistral AI API"),
        "xai" => ("xAI", "xAI API"),
        "cohere" => ("Cohere", "Cohere API"),
        other => return (Cow::Borrowed(other), Cow::Borrowed(other)),
    };
    (Cow::Borrowed(p), Cow::Borrowed(s))
}

/// `PublisherName`: who made the model, by its name (a provider often
/// serves others' models: Bedrock's Claude is Anthropic's); else the provider.
pub fn publisher<'a>(model: Option<&str>, provider_name: &'a str) -> Cow<'a, str> {
    let m = model.unwrap_or_default().to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    let name = if has(&["claude"]) {
        "Anthropic"
    } else if has(&[
        "gpt-",
        "gpt4",
        "chatgpt",
        "text-embedding-3",
        "text-embedding-ada",
    ]) || ["o1", "o3", "o4"].iter().any(|p| {
        m.rsplit('/')
            .next()
            .is_some_and(|base| base == *p || base.starts_with(&format!("{p}-")))
    }) {
        "OpenAI"
    } else if has(&[
        "gemini",
        "gemma",
        "text-embedding-00",
        "textembedding-gecko",
    ]) {
        "Google"
    } else if has(&["llama"]) {
        "Meta"
    } else if has(&[
        "mistral",
        "mixtral",
        "codestral",
        "ministral",
        "pixtral",
        "magistral",
    ]) {
        "Mistral AI"
    } else if has(&["deepseek"]) {
        "DeepSeek"
    } else if has(&["grok"]) {
        "xAI"
    } else if has(&["command-", "cohere"]) {
        "Cohere"
    } else if has(&["amazon.nova", "amazon.titan", "nova-", "titan-"]) {
        "Amazon"
    } else if has(&["qwen"]) {
        "Alibaba"
    } else {
        return Cow::Borrowed(provider_name);
    };
    Cow::Borrowed(name)
}

/// The columns, FOCUS's first (alphabetical, as the specification lists
/// them), then ours (`x_` prefix); [`cells`] yields values in this order.
/// Money and quantities are decimals (FOCUS: Decimal), Tags and
/// SkuPriceDetails JSON text.
pub const COLUMNS: [Column; 40] = [
    Column::new("BilledCost", Kind::Decimal, true),
    Column::new("BillingAccountId", Kind::Text, true),
    Column::new("BillingAccountName", Kind::Text, true),
    Column::new("BillingCurrency", Kind::Text, true),
    Column::new("BillingPeriodEnd", Kind::Time, true),
    Column::new("BillingPeriodStart", Kind::Time, true),
    Column::new("ChargeCategory", Kind::Text, true),
    Column::new("ChargeClass", Kind::Text, true),
    Column::new("ChargeDescription", Kind::Text, true),
    Column::new("ChargeFrequency", Kind::Text, true),
    Column::new("ChargePeriodEnd", Kind::Time, true),
    Column::new("ChargePeriodStart", Kind::Time, true),
    Column::new("ConsumedQuantity", Kind::Decimal, true),
    Column::new("ConsumedUnit", Kind::Text, true),
    Column::new("ContractedCost", Kind::Decimal, true),
    Column::new("EffectiveCost", Kind::Decimal, true),
    Column::new("InvoiceIssuerName", Kind::Text, true),
    Column::new("ListCost", Kind::Decimal, true),
    Column::new("PricingCategory", Kind::Text, true),
    Column::new("PricingQuantity", Kind::Decimal, true),
    Column::new("PricingUnit", Kind::Text, true),
    Column::new("ProviderName", Kind::Text, true),
    Column::new("PublisherName", Kind::Text, true),
    Column::new("ResourceId", Kind::Text, true),
    Column::new("ResourceName", Kind::Text, true),
    Column::new("ResourceType", Kind::Text, true),
    Column::new("ServiceCategory", Kind::Text, true),
    Column::new("ServiceName", Kind::Text, true),
    Column::new("ServiceSubcategory", Kind::Text, true),
    Column::new("SkuId", Kind::Text, true),
    Column::new("SkuMeter", Kind::Text, true),
    Column::new("SkuPriceDetails", Kind::Text, true),
    Column::new("SkuPriceId", Kind::Text, true),
    Column::new("SubAccountId", Kind::Text, true),
    Column::new("SubAccountName", Kind::Text, true),
    Column::new("Tags", Kind::Text, true),
    Column::new("x_CostComponent", Kind::Text, true),
    Column::new("x_OccurredAt", Kind::Time, true),
    Column::new("x_ReportedCost", Kind::Decimal, true),
    Column::new("x_RequestId", Kind::Text, true),
];

/// Column names, in file order.
pub fn column_names() -> Vec<&'static str> {
    COLUMNS.iter().map(|c| c.name).collect()
}

/// The hour the charge falls in: FOCUS charge periods of usage are hours,
/// and every UTC hour lies inside one billing month.
fn hour_of(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let secs = at.timestamp();
    let start = DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(at);
    (start, start + chrono::TimeDelta::hours(1))
}

/// The catalog model a price version names: `gpt-4o@2024-10-02T00:00:00Z
/// tenant:acme/*@…` is the price of `gpt-4o` (a model id may hold `@`
/// itself, as Vertex AI's `claude-sonnet-4-5@20250929` does).
pub fn catalog_model(price_version: &str) -> Option<&str> {
    let price = price_version.split(' ').next()?;
    price.rsplit_once('@').map(|(model, _)| model)
}

/// `Tags`: our provider-defined keys (prefixed), nulls left out.
fn tags(row: &Transaction) -> String {
    let mut map = serde_json::Map::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value {
            map.insert(format!("{TAG_PREFIX}{key}"), v.into());
        }
    };
    put("tenant_id", Some(&row.tenant_id));
    put("api_key_id", row.api_key_id.as_deref());
    put("route", row.route.as_deref());
    put("request_id", Some(&row.request_id));
    put("provider", Some(&row.provider));
    put("model", row.model.as_deref());
    serde_json::Value::Object(map).to_string()
}

/// The values of one FOCUS row, in [`COLUMNS`] order.
pub fn cells<'a>(charge: &Charge<'a>, context: &'a Context) -> [Cell<'a>; 40] {
    let row = charge.row;
    let text = Cell::text;
    let opt = Cell::opt_text;
    let (provider_name, service_name) = provider_and_service(&row.provider);
    let model = row.model.as_deref().unwrap_or("unknown");
    let version = row.price_version.as_deref().unwrap_or("unknown");
    let publisher_name = publisher(row.model.as_deref(), &provider_name).into_owned();
    let sku_id = format!(
        "{}/{}",
        catalog_model(version).unwrap_or(model),
        charge.component.key()
    );
    let description = format!(
        "{model}: {} ({service_name}; price version {version})",
        charge.component.describe()
    );
    let (hour_start, hour_end) = hour_of(row.occurred_at);
    let period = context.period;
    [
        Cell::Decimal(charge.billed_cost),
        text(&row.tenant_id),
        text(&row.tenant_id),
        opt(row.currency.as_deref()),
        Cell::Time(period.end()),
        Cell::Time(period.start()),
        text("Usage"),
        Cell::Null,
        Cell::Text(Cow::Owned(description)),
        text("Usage-Based"),
        Cell::Time(hour_end),
        Cell::Time(hour_start),
        Cell::Decimal(charge.quantity.into()),
        text(charge.component.unit()),
        Cell::Decimal(charge.billed_cost),
        Cell::Decimal(charge.billed_cost),
        text(&context.invoice_issuer),
        Cell::Decimal(charge.list_cost),
        text("Standard"),
        Cell::Decimal(charge.quantity.into()),
        text(charge.component.unit()),
        Cell::Text(Cow::Owned(provider_name.into_owned())),
        Cell::Text(Cow::Owned(publisher_name)),
        opt(row.api_key_id.as_deref()),
        Cell::Null,
        if row.api_key_id.is_some() {
            text("API Key")
        } else {
            Cell::Null
        },
        text("AI and Machine Learning"),
        Cell::Text(Cow::Owned(service_name.into_owned())),
        text("Generative AI"),
        Cell::Text(Cow::Owned(sku_id.clone())),
        text(charge.component.meter()),
        Cell::Null,
        Cell::Text(Cow::Owned(format!("{}:{version}", charge.component.key()))),
        text(&row.tenant_id),
        text(&row.tenant_id),
        Cell::Text(Cow::Owned(tags(row))),
        text(charge.component.key()),
        Cell::Time(row.occurred_at),
        match (charge.first_of_request, row.reported_cost) {
            (true, Some(v)) => Cell::Decimal(v),
            _ => Cell::Null,
        },
        text(&row.request_id),
    ]
}
