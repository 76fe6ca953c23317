//! What the spend forecast reads: daily priced spend of a scope (from the
//! daily rollups, through `summary`) and the cache savings of a range.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::{summary, GroupBy, LedgerFilter};

/// Priced spend of one UTC day in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySpend {
    pub day: NaiveDate,
    pub currency: String,
    pub cost: Decimal,
}

/// Priced spend per UTC day and currency of `filter`'s scope over the whole
/// days `[from, to)`: the daily rollups' figures, exact.
pub async fn daily_spend(
    pool: &PgPool,
    filter: &LedgerFilter,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DaySpend>, sqlx::Error> {
    let priced = LedgerFilter {
        status: Some("priced".into()),
        ..filter.clone()
    };
    let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
    let rows = summary(pool, &priced, midnight(from), midnight(to), GroupBy::Day).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(DaySpend {
                day: NaiveDate::parse_from_str(&r.key, "%Y-%m-%d").ok()?,
                currency: r.currency?,
                cost: r.cost.normalize(),
            })
        })
        .collect())
}

/// Priced spend per currency of `filter`'s scope over `[start, end)`.
pub async fn spend_by_currency(
    pool: &PgPool,
    filter: &LedgerFilter,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<(String, Decimal)>, sqlx::Error> {
    let priced = LedgerFilter {
        status: Some("priced".into()),
        ..filter.clone()
    };
    let rows = summary(pool, &priced, start, end, GroupBy::Total).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.currency?, r.cost.normalize())))
        .collect())
}

/// What cached-read tokens saved in one currency: what they would have
/// cost at the input price minus what they cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CacheSavings {
    pub currency: String,
    pub cache_read_tokens: i64,
    /// What they cost (after the tenant's discount, if any).
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    /// What they would have cost at the input price.
    #[serde(with = "rust_decimal::serde::str")]
    pub at_input_price: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub savings: Decimal,
}

/// Cache savings of priced ledger rows in `[start, end)`, per currency, row
/// by row and exact: a row's input rate is the one it was charged (its
/// `cost_input` over its uncached input tokens: the tier and contract price
/// it got), or for a row without uncached input its price version's base
/// input price; a tenant discount scales both sides as it scaled the row.
pub async fn cache_savings(
    pool: &PgPool,
    tenant_id: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<CacheSavings>, sqlx::Error> {
    let rows: Vec<CacheSavings> = sqlx::query_as(
        "WITH r AS (
            SELECT t.currency, t.cache_read_tokens,
                coalesce(t.cost_cache_read, 0) AS cached_cost,
                CASE WHEN t.input_tokens - t.cache_read_tokens - t.cache_write_tokens > 0
                    THEN coalesce(t.cost_input, 0) * t.cache_read_tokens
                        / (t.input_tokens - t.cache_read_tokens - t.cache_write_tokens)
                    ELSE t.cache_read_tokens * coalesce((p.entry->>'input')::numeric, 0)
                        / 1000000
                END AS at_input,
                CASE WHEN coalesce(t.cost_discount, 0) <> 0 AND t.cost - t.cost_discount <> 0
                    THEN t.cost / (t.cost - t.cost_discount) ELSE 1 END AS scale
            FROM transactions t LEFT JOIN price_catalog p ON p.id = t.price_id
            WHERE t.status = 'priced' AND t.cache_read_tokens > 0
                AND t.occurred_at >= $2 AND t.occurred_at < $3
                AND ($1::text IS NULL OR t.tenant_id = $1)
        )
        SELECT currency, sum(cache_read_tokens)::int8 AS cache_read_tokens,
            sum(cached_cost * scale) AS cost, sum(at_input * scale) AS at_input_price,
            sum((at_input - cached_cost) * scale) AS savings
        FROM r GROUP BY currency ORDER BY currency",
    )
    .bind(tenant_id)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| CacheSavings {
            cost: r.cost.normalize(),
            at_input_price: r.at_input_price.normalize(),
            savings: r.savings.normalize(),
            ..r
        })
        .collect())
}
