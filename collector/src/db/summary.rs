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
/// The sums a summary source yields, from a rollup row and from a ledger row.
const ROLLUP_SUMS: [&str; 10] = [
    "requests",
    "error_requests",
    "incomplete_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost",
    "reported_cost",
];
const LEDGER_SUMS: [&str; 10] = [
    "1",
    "(http_status >= 400)::int",
    "('incomplete' = ANY(flags))::int",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "coalesce(cost, 0)",
    "coalesce(reported_cost, 0)",
];

fn sums(exprs: &[&str], sign: i8) -> String {
    exprs
        .iter()
        .map(|e| {
            if sign < 0 {
                format!("-({e})")
            } else {
                e.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One piece of a summary range: whole UTC days [from, to), whole hours, or
/// ledger rows, each added (+1) or subtracted (-1).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Days(NaiveDate, NaiveDate, i8),
    Hours(DateTime<Utc>, DateTime<Utc>, i8),
    Ledger(DateTime<Utc>, DateTime<Utc>, i8),
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
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

/// [from, to) without days: whole hours from the hourly rollup, the partial
/// hours at either end from the ledger. Empty parts are left out.
fn fine(from: DateTime<Utc>, to: DateTime<Utc>, sign: i8) -> Vec<Part> {
    let (hs, he) = (
        ceil_to(from, TimeDelta::hours(1)),
        floor_to(to, TimeDelta::hours(1)),
    );
    let parts = if hs > he {
        vec![Part::Ledger(from, to, sign)]
    } else {
        vec![
            Part::Ledger(from, hs, sign),
            Part::Hours(hs, he, sign),
            Part::Ledger(he, to, sign),
        ]
    };
    parts
        .into_iter()
        .filter(|p| match *p {
            Part::Hours(a, b, _) | Part::Ledger(a, b, _) => a < b,
            Part::Days(a, b, _) => a < b,
        })
        .collect()
}

/// How [s, e) is read, exactly: the whole UTC days inside it from a daily
/// rollup, and each partial day at an edge either directly (hours, then
/// ledger) or, when that is shorter, as the whole day minus its complement.
/// A "last 30 days up to now" range thus reads today as today's total minus
/// the hours still to come, which are empty.
fn parts(s: DateTime<Utc>, e: DateTime<Utc>, days: bool) -> Vec<Part> {
    let day = TimeDelta::days(1);
    let (ds, de) = (ceil_to(s, day), floor_to(e, day));
    if !days || ds >= de {
        return fine(s, e, 1);
    }
    let (mut first, mut last) = (ds, de);
    let mut out = Vec::new();
    if s < ds {
        let d0 = ds - day;
        if s - d0 < ds - s {
            first = d0;
            out.extend(fine(d0, s, -1));
        } else {
            out.extend(fine(s, ds, 1));
        }
    }
    if de < e {
        let d1 = de + day;
        if d1 - e < e - de {
            last = d1;
            out.extend(fine(e, d1, -1));
        } else {
            out.extend(fine(de, e, 1));
        }
    }
    out.insert(0, Part::Days(first.date_naive(), last.date_naive(), 1));
    out
}

/// Sums over [start, end), exact for any range: whole UTC days from a daily
/// rollup (plus the hours since its fold watermark, usually under an hour,
/// from the hourly one), whole hours from the hourly one and partial hours
/// from the ledger, some of them subtracted (see [`parts`]). A 30-day query
/// reads ~30 rows per group plus at most a day of hours. Each part is its
/// own branch with constant bounds, so each can use its table's tenant-first
/// key.
#[tracing::instrument(skip_all)]
pub async fn summary(
    pool: &PgPool,
    filter: &LedgerFilter,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    group_by: GroupBy,
) -> Result<Vec<SummaryRow>, sqlx::Error> {
    // An hourly breakdown cannot come from days.
    let parts = parts(start, end, group_by != GroupBy::Hour);
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
    for part in parts {
        match part {
            Part::Days(from, to, sign) => {
                q.push(" UNION ALL SELECT tenant_id, (day::timestamp AT TIME ZONE 'UTC'), ");
                if coarse {
                    q.push("'', '', '', status, currency, ")
                        .push(sums(&ROLLUP_SUMS, sign))
                        .push(" FROM usage_tenant_daily");
                } else {
                    q.push("api_key_id, provider, model, status, currency, ")
                        .push(sums(&ROLLUP_SUMS, sign))
                        .push(" FROM usage_daily");
                }
                q.push(" WHERE day >= ")
                    .push_bind(from)
                    .push(" AND day < ")
                    .push_bind(to);
                push_rollup_filters(&mut q, filter);
                // The daily tables end at the fold watermark; the hours of
                // these days since then are still only hourly. Read in the
                // same statement, so both sides see one watermark.
                push_hours(&mut q, sign, Since::Fold(midnight(from)), midnight(to));
            }
            Part::Hours(from, to, sign) => {
                // Hours older than the hourly rollup's watermark are no
                // longer in it (migration 0022): the ledger has them.
                push_ledger(&mut q, sign, from);
                q.push(" AND occurred_at < least(")
                    .push_bind(to)
                    .push(", (SELECT hourly_from FROM rollup_fold))");
                push_rollup_filters(&mut q, filter);
                push_hours(&mut q, sign, Since::At(from), to);
            }
            Part::Ledger(from, to, sign) => {
                push_ledger(&mut q, sign, from);
                q.push(" AND occurred_at < ").push_bind(to);
            }
        }
        push_rollup_filters(&mut q, filter);
    }
    // Net per (group, status, currency) first: a subgroup whose rows all
    // lie outside the range nets to zero requests and is dropped, so it
    // neither shows up nor lends its currency.
    q.push("), g AS (SELECT ")
        .push(group_by.key_sql())
        .push(
            " AS key, status, currency, sum(requests) AS requests,
                sum(error_requests) AS error_requests,
                sum(incomplete_requests) AS incomplete_requests,
                sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                sum(cache_read_tokens) AS cache_read_tokens,
                sum(cache_write_tokens) AS cache_write_tokens,
                sum(reasoning_tokens) AS reasoning_tokens, sum(cost) AS cost,
                sum(reported_cost) AS reported_cost
            FROM src GROUP BY 1, 2, 3 HAVING sum(requests) <> 0
        ), c AS (
            SELECT key, count(DISTINCT nullif(currency, '')) AS currencies,
                max(nullif(currency, '')) AS only_currency
            FROM g GROUP BY key
        ) SELECT key,
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
                cur AS currency,
                coalesce(sum(requests) FILTER (WHERE status = 'unpriced'), 0)::int8 AS unpriced_requests,
                coalesce(sum(input_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8 AS unpriced_input_tokens,
                coalesce(sum(output_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8 AS unpriced_output_tokens
            FROM (
                -- Money is never added across currencies: a group with spend
                -- in several is one row per currency. Its unpriced rows (no
                -- currency) join its only currency, or else a row of their own.
                SELECT g.*, coalesce(nullif(g.currency, ''),
                    CASE WHEN c.currencies = 1 THEN c.only_currency END) AS cur
                FROM g JOIN c USING (key)
            ) gc
            GROUP BY key, cur ORDER BY sum(cost) DESC, key, cur",
        );
    q.build_query_as::<SummaryRow>().fetch_all(pool).await
}

/// Where an hourly branch starts: at a time, or at the later of a time and
/// the fold watermark (read in the statement itself).
enum Since {
    At(DateTime<Utc>),
    Fold(DateTime<Utc>),
}

/// ` UNION ALL` branch over the ledger from `from` on (the caller bounds it).
fn push_ledger(q: &mut QueryBuilder<'_, Postgres>, sign: i8, from: DateTime<Utc>) {
    q.push(
        " UNION ALL SELECT tenant_id, occurred_at, coalesce(api_key_id, ''), provider,
            coalesce(model, ''), status, coalesce(currency, ''), ",
    )
    .push(sums(&LEDGER_SUMS, sign))
    .push(" FROM transactions WHERE occurred_at >= ")
    .push_bind(from);
}

/// ` UNION ALL` branch over `usage_hourly` for hours in [since, to), from
/// the hourly rollup's watermark on.
fn push_hours(q: &mut QueryBuilder<'_, Postgres>, sign: i8, since: Since, to: DateTime<Utc>) {
    q.push(" UNION ALL SELECT tenant_id, hour, api_key_id, provider, model, status, currency, ")
        .push(sums(&ROLLUP_SUMS, sign))
        .push(" FROM usage_hourly WHERE hour >= ");
    match since {
        Since::At(t) => q
            .push("greatest(")
            .push_bind(t)
            .push(", (SELECT hourly_from FROM rollup_fold))"),
        Since::Fold(t) => q
            .push("greatest(")
            .push_bind(t)
            .push(", (SELECT folded_before FROM rollup_fold))"),
    };
    q.push(" AND hour < ").push_bind(to);
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

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn short_edges_are_read_directly() {
        // 17:13 to 02:41: both partial days are shorter than their complements.
        assert_eq!(
            parts(t("2025-11-24T17:13:00Z"), t("2025-11-27T02:41:00Z"), true),
            vec![
                Part::Days(d("2025-11-25"), d("2025-11-27"), 1),
                Part::Ledger(t("2025-11-24T17:13:00Z"), t("2025-11-24T18:00:00Z"), 1),
                Part::Hours(t("2025-11-24T18:00:00Z"), t("2025-11-25T00:00:00Z"), 1),
                Part::Hours(t("2025-11-27T00:00:00Z"), t("2025-11-27T02:00:00Z"), 1),
                Part::Ledger(t("2025-11-27T02:00:00Z"), t("2025-11-27T02:41:00Z"), 1),
            ]
        );
    }

    #[test]
    fn long_edges_are_whole_days_minus_their_complement() {
        // 05:13 to 21:20: read 24th and 27th whole, minus 00:00-05:13 and 21:20-24:00.
        assert_eq!(
            parts(t("2025-11-24T05:13:00Z"), t("2025-11-27T21:20:00Z"), true),
            vec![
                Part::Days(d("2025-11-24"), d("2025-11-28"), 1),
                Part::Hours(t("2025-11-24T00:00:00Z"), t("2025-11-24T05:00:00Z"), -1),
                Part::Ledger(t("2025-11-24T05:00:00Z"), t("2025-11-24T05:13:00Z"), -1),
                Part::Ledger(t("2025-11-27T21:20:00Z"), t("2025-11-27T22:00:00Z"), -1),
                Part::Hours(t("2025-11-27T22:00:00Z"), t("2025-11-28T00:00:00Z"), -1),
            ]
        );
    }

    #[test]
    fn hourly_aligned_and_tiny_ranges() {
        // By hour: no days; the hours run straight through.
        assert_eq!(
            parts(t("2025-11-24T05:13:00Z"), t("2025-11-27T02:41:00Z"), false),
            vec![
                Part::Ledger(t("2025-11-24T05:13:00Z"), t("2025-11-24T06:00:00Z"), 1),
                Part::Hours(t("2025-11-24T06:00:00Z"), t("2025-11-27T02:00:00Z"), 1),
                Part::Ledger(t("2025-11-27T02:00:00Z"), t("2025-11-27T02:41:00Z"), 1),
            ]
        );
        assert_eq!(
            parts(t("2025-11-24T00:00:00Z"), t("2025-11-26T00:00:00Z"), true),
            vec![Part::Days(d("2025-11-24"), d("2025-11-26"), 1)]
        );
        // Inside one hour: the ledger only, once.
        assert_eq!(
            parts(t("2025-11-24T10:05:00Z"), t("2025-11-24T10:55:00Z"), true),
            vec![Part::Ledger(
                t("2025-11-24T10:05:00Z"),
                t("2025-11-24T10:55:00Z"),
                1
            )]
        );
        // Across midnight, less than a day: hours on both sides, no day.
        assert_eq!(
            parts(t("2025-11-24T22:30:00Z"), t("2025-11-25T01:05:00Z"), true),
            vec![
                Part::Ledger(t("2025-11-24T22:30:00Z"), t("2025-11-24T23:00:00Z"), 1),
                Part::Hours(t("2025-11-24T23:00:00Z"), t("2025-11-25T01:00:00Z"), 1),
                Part::Ledger(t("2025-11-25T01:00:00Z"), t("2025-11-25T01:05:00Z"), 1),
            ]
        );
        assert_eq!(
            parts(t("2025-11-24T10:05:00Z"), t("2025-11-24T10:05:00Z"), true),
            vec![]
        );
    }
}
