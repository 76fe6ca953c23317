use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
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

/// How a range [s, e) splits: whole UTC days [ds, de), whole hours
/// [hs, ds) and [de, he), and the partial hours [s, min(hs, e)) and
/// [max(he, hs), e). Any part may be empty.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Split {
    s: DateTime<Utc>,
    hs: DateTime<Utc>,
    ds: DateTime<Utc>,
    de: DateTime<Utc>,
    he: DateTime<Utc>,
    e: DateTime<Utc>,
}

fn floor_to(t: DateTime<Utc>, unit: TimeDelta) -> DateTime<Utc> {
    // Truncation counts from the Unix epoch, a UTC midnight.
    t.duration_trunc(unit).unwrap_or(t)
}

fn ceil_to(t: DateTime<Utc>, unit: TimeDelta) -> DateTime<Utc> {
    let f = floor_to(t, unit);
    if f == t {
        t
    } else {
        f + unit
    }
}

impl Split {
    fn new(s: DateTime<Utc>, e: DateTime<Utc>, days: bool) -> Self {
        let (hour, day) = (TimeDelta::hours(1), TimeDelta::days(1));
        let (hs, he) = (ceil_to(s, hour), floor_to(e, hour));
        let (ds0, de0) = (ceil_to(s, day), floor_to(e, day));
        // Without whole days, an empty day range at he keeps the hours [hs, he).
        let (ds, de) = if days && ds0 < de0 {
            (ds0, de0)
        } else {
            (he, he)
        };
        Split {
            s,
            hs,
            ds,
            de,
            he,
            e,
        }
    }

    /// Non-empty [from, to) ranges read from the ledger.
    fn ledger(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        [
            (self.s, self.hs.min(self.e)),
            (self.he.max(self.hs), self.e),
        ]
        .into_iter()
        .filter(|(a, b)| a < b)
        .collect()
    }

    /// Non-empty [from, to) ranges read from the hourly rollup.
    fn hours(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        [(self.hs, self.ds), (self.de, self.he)]
            .into_iter()
            .filter(|(a, b)| a < b)
            .collect()
    }

    /// The whole days, if any, as [from, to) dates.
    fn days(&self) -> Option<(NaiveDate, NaiveDate)> {
        (self.ds < self.de).then(|| (self.ds.date_naive(), self.de.date_naive()))
    }
}

/// Sums over [start, end), exact for any range: whole UTC days from a daily
/// rollup, the whole hours left at either edge from the hourly one, and the
/// partial hours at the very edges from the ledger itself. A 30-day query
/// reads ~30 rows per group plus at most two days of hours. Each part is its
/// own branch with constant bounds, so each can use its table's
/// tenant-first key.
#[tracing::instrument(skip_all)]
pub async fn summary(
    pool: &PgPool,
    filter: &LedgerFilter,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    group_by: GroupBy,
) -> Result<Vec<SummaryRow>, sqlx::Error> {
    // An hourly breakdown cannot come from days.
    let split = Split::new(start, end, group_by != GroupBy::Hour);
    // Per-tenant day totals serve whatever needs neither the key, provider
    // nor model (the all-tenant report: ~1,000 rows a day).
    let coarse = matches!(group_by, GroupBy::Total | GroupBy::Tenant | GroupBy::Day)
        && filter.api_key_id.is_none()
        && filter.model.is_none()
        && filter.provider.is_none();
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new("WITH src AS (");
    // An empty first branch fixes the column types for the UNION.
    q.push(
        "SELECT ''::text AS tenant_id, NULL::timestamptz AS t, ''::text AS api_key_id,
            ''::text AS provider, ''::text AS model, ''::text AS status, ''::text AS currency,
            0::int8 AS requests, 0::int8 AS error_requests, 0::int8 AS incomplete_requests,
            0::int8 AS input_tokens, 0::int8 AS output_tokens, 0::int8 AS cache_read_tokens,
            0::int8 AS cache_write_tokens, 0::int8 AS reasoning_tokens, 0::numeric AS cost,
            0::numeric AS reported_cost
         WHERE false",
    );
    if let Some((from, to)) = split.days() {
        q.push(" UNION ALL SELECT tenant_id, (day::timestamp AT TIME ZONE 'UTC'), ");
        if coarse {
            q.push("'', '', '', status, currency, ")
                .push(SRC_COLUMNS)
                .push(" FROM usage_tenant_daily");
        } else {
            q.push("api_key_id, provider, model, status, currency, ")
                .push(SRC_COLUMNS)
                .push(" FROM usage_daily");
        }
        q.push(" WHERE day >= ")
            .push_bind(from)
            .push(" AND day < ")
            .push_bind(to);
        push_rollup_filters(&mut q, filter);
    }
    for (from, to) in split.hours() {
        q.push(
            " UNION ALL SELECT tenant_id, hour, api_key_id, provider, model, status, currency, ",
        )
        .push(SRC_COLUMNS)
        .push(" FROM usage_hourly WHERE hour >= ")
        .push_bind(from)
        .push(" AND hour < ")
        .push_bind(to);
        push_rollup_filters(&mut q, filter);
    }
    for (from, to) in split.ledger() {
        q.push(
            " UNION ALL SELECT tenant_id, occurred_at, coalesce(api_key_id, ''), provider,
                coalesce(model, ''), status, coalesce(currency, ''), 1,
                (http_status >= 400)::int, ('incomplete' = ANY(flags))::int, input_tokens,
                output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
                coalesce(cost, 0), coalesce(reported_cost, 0)
             FROM transactions WHERE occurred_at >= ",
        )
        .push_bind(from)
        .push(" AND occurred_at < ")
        .push_bind(to);
        push_rollup_filters(&mut q, filter);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_range_splits_into_days_hours_and_ledger_edges() {
        let sp = Split::new(t("2025-11-24T05:13:00Z"), t("2025-11-27T02:41:00Z"), true);
        assert_eq!(
            sp.days(),
            Some((
                NaiveDate::from_ymd_opt(2025, 11, 25).unwrap(),
                NaiveDate::from_ymd_opt(2025, 11, 27).unwrap()
            ))
        );
        assert_eq!(
            sp.hours(),
            vec![
                (t("2025-11-24T06:00:00Z"), t("2025-11-25T00:00:00Z")),
                (t("2025-11-27T00:00:00Z"), t("2025-11-27T02:00:00Z")),
            ]
        );
        assert_eq!(
            sp.ledger(),
            vec![
                (t("2025-11-24T05:13:00Z"), t("2025-11-24T06:00:00Z")),
                (t("2025-11-27T02:00:00Z"), t("2025-11-27T02:41:00Z")),
            ]
        );
        // By hour: no days; the hours run straight through.
        let sp = Split::new(t("2025-11-24T05:13:00Z"), t("2025-11-27T02:41:00Z"), false);
        assert_eq!(sp.days(), None);
        assert_eq!(
            sp.hours(),
            vec![(t("2025-11-24T06:00:00Z"), t("2025-11-27T02:00:00Z"))]
        );
    }

    #[test]
    fn aligned_and_tiny_ranges_have_no_empty_parts() {
        let sp = Split::new(t("2025-11-24T00:00:00Z"), t("2025-11-26T00:00:00Z"), true);
        assert_eq!(sp.hours(), vec![]);
        assert_eq!(sp.ledger(), vec![]);
        assert!(sp.days().is_some());
        // Inside one hour: the ledger only, once.
        let sp = Split::new(t("2025-11-24T10:05:00Z"), t("2025-11-24T10:55:00Z"), true);
        assert_eq!((sp.days(), sp.hours()), (None, vec![]));
        assert_eq!(
            sp.ledger(),
            vec![(t("2025-11-24T10:05:00Z"), t("2025-11-24T10:55:00Z"))]
        );
        // Across midnight, less than a day: hours on both sides, no day.
        let sp = Split::new(t("2025-11-24T22:30:00Z"), t("2025-11-25T01:05:00Z"), true);
        assert_eq!(sp.days(), None);
        assert_eq!(
            sp.hours(),
            vec![(t("2025-11-24T23:00:00Z"), t("2025-11-25T01:00:00Z"))]
        );
        let empty = Split::new(t("2025-11-24T10:05:00Z"), t("2025-11-24T10:05:00Z"), true);
        assert_eq!(
            (empty.days(), empty.hours(), empty.ledger()),
            (None, vec![], vec![])
        );
    }
}
