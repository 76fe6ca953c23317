use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::LedgerFilter;

/// How summary rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Total,
    Model,
    Provider,
    ApiKey,
    Tenant,
    Day,
    Hour,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "total" | "" => GroupBy::Total,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "api_key" => GroupBy::ApiKey,
            "tenant" => GroupBy::Tenant,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            _ => return None,
        })
    }

    fn key_sql(self) -> &'static str {
        match self {
            GroupBy::Total => "'total'",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::ApiKey => "api_key_id",
            GroupBy::Tenant => "tenant_id",
            GroupBy::Day => "to_char(date_trunc('day', t, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            GroupBy::Hour => {
                "to_char(date_trunc('hour', t, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')"
            }
        }
    }
}

/// One summary group. `cost` covers priced usage only; unpriced usage is
/// counted separately so it is never mistaken for free.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SummaryRow {
    pub key: String,
    pub requests: i64,
    pub error_requests: i64,
    pub incomplete_requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub reported_cost: Decimal,
    pub currency: Option<String>,
    pub unpriced_requests: i64,
    pub unpriced_input_tokens: i64,
    pub unpriced_output_tokens: i64,
}

/// Columns every source of a summary yields, in this order.
const SRC_COLUMNS: &str = "requests, error_requests, incomplete_requests, input_tokens,
    output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost";

/// Sums over [start, end), exact for any range: whole UTC days from a daily
/// rollup, the whole hours left at either edge from the hourly one, and the
/// partial hours at the very edges from the ledger itself. A 30-day query
/// reads ~30 rows per group plus at most two days of hours.
#[tracing::instrument(skip_all)]
pub async fn summary(
    pool: &PgPool,
    filter: &LedgerFilter,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    group_by: GroupBy,
) -> Result<Vec<SummaryRow>, sqlx::Error> {
    // Per-tenant day totals serve whatever needs neither the key, provider
    // nor model (the all-tenant report: ~1,000 rows a day).
    let coarse = matches!(group_by, GroupBy::Total | GroupBy::Tenant | GroupBy::Day)
        && filter.api_key_id.is_none()
        && filter.model.is_none()
        && filter.provider.is_none();
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new("WITH b AS (SELECT ");
    q.push_bind(start)
        .push("::timestamptz AS s, ")
        .push_bind(end)
        .push("::timestamptz AS e, ")
        // An hourly breakdown cannot come from days.
        .push_bind(group_by != GroupBy::Hour)
        .push(
            "::bool AS use_days), h AS (
                SELECT s, e, use_days,
                    CASE WHEN date_trunc('hour', s, 'UTC') = s THEN s
                         ELSE date_trunc('hour', s, 'UTC') + interval '1 hour' END AS hs,
                    date_trunc('hour', e, 'UTC') AS he,
                    CASE WHEN date_trunc('day', s, 'UTC') = s THEN s
                         ELSE date_trunc('day', s, 'UTC') + interval '1 day' END AS ds0,
                    date_trunc('day', e, 'UTC') AS de0
                FROM b
            ), r AS (
                -- Whole days [ds, de); with none, an empty range at he so that
                -- the hours are [hs, ds) + [de, he) either way.
                SELECT s, e, hs, he,
                    CASE WHEN use_days AND ds0 < de0 THEN ds0 ELSE he END AS ds,
                    CASE WHEN use_days AND ds0 < de0 THEN de0 ELSE he END AS de
                FROM h
            ), src AS (",
        );
    if coarse {
        q.push(
            "SELECT tenant_id, (day::timestamp AT TIME ZONE 'UTC') AS t, '' AS api_key_id,
                '' AS provider, '' AS model, status, currency, ",
        )
        .push(SRC_COLUMNS)
        .push(" FROM usage_tenant_daily, r");
    } else {
        q.push(
            "SELECT tenant_id, (day::timestamp AT TIME ZONE 'UTC') AS t, api_key_id, provider,
                model, status, currency, ",
        )
        .push(SRC_COLUMNS)
        .push(" FROM usage_daily, r");
    }
    q.push(
        " WHERE day >= (r.ds AT TIME ZONE 'UTC')::date AND day < (r.de AT TIME ZONE 'UTC')::date",
    );
    push_rollup_filters(&mut q, filter);
    q.push(
        " UNION ALL
                SELECT tenant_id, hour, api_key_id, provider, model, status, currency, ",
    )
    .push(SRC_COLUMNS)
    .push(
        " FROM usage_hourly, r
                WHERE ((hour >= r.hs AND hour < r.ds) OR (hour >= r.de AND hour < r.he))",
    );
    push_rollup_filters(&mut q, filter);
    q.push(
        " UNION ALL
                SELECT tenant_id, occurred_at, coalesce(api_key_id, ''), provider,
                    coalesce(model, ''), status, coalesce(currency, ''), 1,
                    (http_status >= 400)::int, ('incomplete' = ANY(flags))::int, input_tokens,
                    output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
                    coalesce(cost, 0), coalesce(reported_cost, 0)
                FROM transactions, r
                WHERE ((occurred_at >= r.s AND occurred_at < least(r.hs, r.e))
                    OR (occurred_at >= greatest(r.he, r.hs) AND occurred_at < r.e))",
    );
    push_rollup_filters(&mut q, filter);
    q.push(") SELECT ")
        .push(group_by.key_sql())
        .push(
            " AS key,
                sum(requests)::int8 AS requests,
                sum(error_requests)::int8 AS error_requests,
                sum(incomplete_requests)::int8 AS incomplete_requests,
                sum(input_tokens)::int8 AS input_tokens,
                sum(output_tokens)::int8 AS output_tokens,
                sum(cache_read_tokens)::int8 AS cache_read_tokens,
                sum(cache_write_tokens)::int8 AS cache_write_tokens,
                sum(reasoning_tokens)::int8 AS reasoning_tokens,
                sum(cost) AS cost,
                sum(reported_cost) AS reported_cost,
                max(nullif(currency, '')) AS currency,
                coalesce(sum(requests) FILTER (WHERE status = 'unpriced'), 0)::int8 AS unpriced_requests,
                coalesce(sum(input_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8 AS unpriced_input_tokens,
                coalesce(sum(output_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8 AS unpriced_output_tokens
            FROM src GROUP BY 1 ORDER BY sum(cost) DESC, 1",
        );
    q.build_query_as::<SummaryRow>().fetch_all(pool).await
}

fn push_rollup_filters(q: &mut QueryBuilder<'_, Postgres>, f: &LedgerFilter) {
    if let Some(v) = &f.tenant_id {
        q.push(" AND tenant_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.api_key_id {
        q.push(" AND coalesce(api_key_id, '') = ")
            .push_bind(v.clone());
    }
    if let Some(v) = &f.model {
        q.push(" AND coalesce(model, '') = ").push_bind(v.clone());
    }
    if let Some(v) = &f.provider {
        q.push(" AND provider = ").push_bind(v.clone());
    }
    if let Some(v) = &f.status {
        q.push(" AND status = ").push_bind(v.clone());
    }
}
