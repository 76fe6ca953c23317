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

/// Sums over [start, end): whole hours come from the rollup, the partial
/// hours at either edge from the ledger itself, so any range is exact.
#[tracing::instrument(skip_all)]
pub async fn summary(
    pool: &PgPool,
    filter: &LedgerFilter,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    group_by: GroupBy,
) -> Result<Vec<SummaryRow>, sqlx::Error> {
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new("WITH b AS (SELECT ");
    q.push_bind(start)
        .push("::timestamptz AS s, ")
        .push_bind(end)
        .push(
            "::timestamptz AS e), h AS (
                SELECT s, e,
                    CASE WHEN date_trunc('hour', s, 'UTC') = s THEN s
                         ELSE date_trunc('hour', s, 'UTC') + interval '1 hour' END AS hs,
                    date_trunc('hour', e, 'UTC') AS he
                FROM b
            ), src AS (
                SELECT tenant_id, hour AS t, api_key_id, provider, model, status, currency,
                    requests, error_requests, incomplete_requests, input_tokens, output_tokens,
                    cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, reported_cost
                FROM usage_hourly, h WHERE hour >= h.hs AND hour < h.he",
        );
    push_rollup_filters(&mut q, filter);
    q.push(
        " UNION ALL
                SELECT tenant_id, occurred_at, coalesce(api_key_id, ''), provider,
                    coalesce(model, ''), status, coalesce(currency, ''), 1,
                    (http_status >= 400)::int, ('incomplete' = ANY(flags))::int, input_tokens,
                    output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
                    coalesce(cost, 0), coalesce(reported_cost, 0)
                FROM transactions, h
                WHERE ((occurred_at >= h.s AND occurred_at < least(h.hs, h.e))
                    OR (occurred_at >= greatest(h.he, h.hs) AND occurred_at < h.e))",
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
