//! Reads for the ledger export (`collector ledger export`) and for checking
//! an export (or an archive) against the ledger.
//!
//! This is the export's only contact with the ledger's storage: it returns
//! the API row type [`Transaction`] and the period totals, so a change of
//! the `transactions` table's layout is adapted here and nowhere else.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Postgres};

use super::Transaction;
use crate::export::{CurrencyTotals, PeriodTotals};

/// The columns of a [`Transaction`], as `list_page` in db/ledger.rs selects them.
const COLUMNS: &str = "request_id, tenant_id, api_key_id, provider, model, route, http_status,
    streamed, occurred_at, received_at, ttfb_ms, duration_ms, input_tokens,
    output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
    reasoning_tokens, status, currency, cost, cost_input, cost_cache_read,
    cost_cache_write, cost_output, cost_reasoning, cost_request_fee, cost_discount,
    price_version, reported_cost, flags";

/// Where an export page ends: the ledger key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCursor {
    pub tenant_id: String,
    pub occurred_at: DateTime<Utc>,
    pub request_id: String,
}

impl ExportCursor {
    pub fn after(row: &Transaction) -> Self {
        Self {
            tenant_id: row.tenant_id.clone(),
            occurred_at: row.occurred_at,
            request_id: row.request_id.clone(),
        }
    }
}

/// A read-only transaction on one snapshot: every page of an export and
/// the totals it is checked against see the same ledger, whatever is
/// written or repriced meanwhile. (Held open for the whole export, it keeps
/// VACUUM from removing row versions newer than its start until it ends.)
pub async fn begin_export_snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Up to `limit` rows with `start <= occurred_at < end` after `after`, in
/// ledger key order (tenant, occurred_at, request_id); fewer only when the
/// period has no more.
///
/// Walks the key tenant by tenant: each tenant's rows of the period are one
/// range of the key index, and the next tenant one probe of it, so a chunk
/// never rescans what earlier chunks read (a period spanning several
/// monthly partitions costs a probe of each per tenant).
pub async fn export_page(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    after: Option<&ExportCursor>,
    limit: i64,
) -> Result<Vec<Transaction>, sqlx::Error> {
    let mut rows = Vec::new();
    let (mut tenant, mut position) = match after {
        Some(c) => (
            c.tenant_id.clone(),
            Some((c.occurred_at, c.request_id.clone())),
        ),
        None => match next_tenant(conn, start, end, None).await? {
            Some(t) => (t, None),
            None => return Ok(rows),
        },
    };
    loop {
        let want = limit - rows.len() as i64;
        let page = tenant_page(conn, &tenant, start, end, position.as_ref(), want).await?;
        let full = page.len() as i64 >= want;
        rows.extend(page);
        if full {
            return Ok(rows);
        }
        match next_tenant(conn, start, end, Some(&tenant)).await? {
            Some(t) => {
                tenant = t;
                position = None;
            }
            None => return Ok(rows),
        }
    }
}

/// The first tenant after `after` (or the first of all) with a row in
/// [start, end). Walks the tenant dictionary in name order, probing the ledger key
/// of the period's partition for each (migration 0025).
async fn next_tenant(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    after: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    match after {
        Some(t) => {
            sqlx::query_scalar(
                "SELECT min(tn.name) FROM ledger_tenants tn WHERE tn.name > $3 AND EXISTS (
                    SELECT 1 FROM ledger l WHERE l.tenant_id = tn.id
                      AND l.occurred_at >= $1 AND l.occurred_at < $2)",
            )
            .bind(start)
            .bind(end)
            .bind(t)
            .fetch_one(conn)
            .await
        }
        None => {
            sqlx::query_scalar(
                "SELECT min(tn.name) FROM ledger_tenants tn WHERE EXISTS (
                SELECT 1 FROM ledger l WHERE l.tenant_id = tn.id
                  AND l.occurred_at >= $1 AND l.occurred_at < $2)",
            )
            .bind(start)
            .bind(end)
            .fetch_one(conn)
            .await
        }
    }
}

/// One tenant's rows of [start, end), after `position` (time, request id).
/// Two statements rather than one with an optional bound, so the position
/// is always an index condition and never a filter.
async fn tenant_page(
    conn: &mut PgConnection,
    tenant: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    position: Option<&(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<Transaction>, sqlx::Error> {
    match position {
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM transactions
                 WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
                 ORDER BY occurred_at, request_id LIMIT $4"
            );
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(start)
                .bind(end)
                .bind(limit)
                .fetch_all(conn)
                .await
        }
        Some((at, request_id)) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM transactions
                 WHERE tenant_id = $1 AND occurred_at >= greatest($2, $4) AND occurred_at < $3
                   AND (tenant_id, occurred_at, request_id) > ($1, $4, $5)
                 ORDER BY occurred_at, request_id LIMIT $6"
            );
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(start)
                .bind(end)
                .bind(at)
                .bind(request_id)
                .bind(limit)
                .fetch_all(conn)
                .await
        }
    }
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    currency: Option<String>,
    rows: i64,
    cost: Option<Decimal>,
    reported_cost: Option<Decimal>,
    input_tokens: Decimal,
    output_tokens: Decimal,
    cache_read_tokens: Decimal,
    cache_write_tokens: Decimal,
    cache_write_1h_tokens: Decimal,
    reasoning_tokens: Decimal,
}

/// Row count and, per currency (`None`: unpriced rows), the sums of cost,
/// reported cost and token counts of [start, end): what an export or an
/// archive of the period must add up to.
pub async fn period_totals(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<PeriodTotals, sqlx::Error> {
    let groups: Vec<TotalsRow> = sqlx::query_as(
        "SELECT currency, count(*) AS rows, sum(cost) AS cost, sum(reported_cost) AS reported_cost,
            sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
            sum(cache_read_tokens) AS cache_read_tokens,
            sum(cache_write_tokens) AS cache_write_tokens,
            sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
            sum(reasoning_tokens) AS reasoning_tokens
         FROM transactions WHERE occurred_at >= $1 AND occurred_at < $2
         GROUP BY currency",
    )
    .bind(start)
    .bind(end)
    .fetch_all(conn)
    .await?;
    let mut totals = PeriodTotals::default();
    let mut currencies = BTreeMap::new();
    for g in groups {
        totals.rows += g.rows;
        currencies.insert(
            g.currency,
            CurrencyTotals {
                rows: g.rows,
                cost: g.cost.unwrap_or_default().normalize(),
                reported_cost: g.reported_cost.unwrap_or_default().normalize(),
                input_tokens: g.input_tokens.normalize(),
                output_tokens: g.output_tokens.normalize(),
                cache_read_tokens: g.cache_read_tokens.normalize(),
                cache_write_tokens: g.cache_write_tokens.normalize(),
                cache_write_1h_tokens: g.cache_write_1h_tokens.normalize(),
                reasoning_tokens: g.reasoning_tokens.normalize(),
            },
        );
    }
    totals.currencies = currencies;
    Ok(totals)
}
