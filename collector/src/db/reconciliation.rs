//! Reconciliation of our computed costs against the costs the provider
//! reported (OpenRouter's `usage.cost`), over the ledger itself.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

/// How many of the largest per-transaction differences a report lists.
pub const RECONCILIATION_TOP: i64 = 20;

/// Which transactions to reconcile: those in [start, end) that have both a
/// computed `cost` and a `reported_cost`.
#[derive(Debug, Clone)]
pub struct ReconciliationFilter {
    pub tenant_id: Option<String>,
    /// Only rows priced in this currency (None: any).
    pub currency: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Absolute, per transaction; its sign is ignored.
    pub tolerance: Decimal,
}

/// Sums over a set of reconciled transactions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconciliationTotals {
    pub transactions: i64,
    /// Sum of our computed cost.
    #[serde(with = "rust_decimal::serde::str")]
    pub ours: Decimal,
    /// Sum of the provider-reported cost.
    #[serde(with = "rust_decimal::serde::str")]
    pub reported: Decimal,
    /// `ours - reported`.
    #[serde(with = "rust_decimal::serde::str")]
    pub difference: Decimal,
    /// Transactions with `|cost - reported_cost| <= tolerance`.
    pub within_tolerance: i64,
    pub outside_tolerance: i64,
}

/// The totals of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReconciliation {
    pub model: String,
    pub currency: Option<String>,
    #[serde(flatten)]
    pub totals: ReconciliationTotals,
}

/// One transaction whose cost differs from the reported one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconciliationOutlier {
    pub request_id: String,
    pub tenant_id: String,
    pub model: String,
    pub occurred_at: DateTime<Utc>,
    pub price_version: Option<String>,
    #[serde(with = "rust_decimal::serde::str")]
    pub ours: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub reported: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub difference: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReconciliationReport {
    pub totals: ReconciliationTotals,
    /// Largest absolute difference first.
    pub by_model: Vec<ModelReconciliation>,
    /// At most [`RECONCILIATION_TOP`], largest absolute difference first.
    pub largest_differences: Vec<ReconciliationOutlier>,
}

fn push_where(q: &mut QueryBuilder<'_, Postgres>, f: &ReconciliationFilter) {
    q.push(" WHERE cost IS NOT NULL AND reported_cost IS NOT NULL AND occurred_at >= ")
        .push_bind(f.start)
        .push(" AND occurred_at < ")
        .push_bind(f.end);
    if let Some(t) = &f.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t.clone());
    }
    if let Some(c) = &f.currency {
        q.push(" AND currency = ").push_bind(c.clone());
    }
}

/// The currencies of the rows a reconciliation would cover, in order.
pub async fn reconciliation_currencies(
    pool: &PgPool,
    filter: &ReconciliationFilter,
) -> Result<Vec<String>, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT DISTINCT currency FROM transactions");
    push_where(&mut q, filter);
    q.push(" ORDER BY 1");
    q.build_query_scalar::<String>().fetch_all(pool).await
}

fn totals(row: &sqlx::postgres::PgRow) -> Result<ReconciliationTotals, sqlx::Error> {
    Ok(ReconciliationTotals {
        transactions: row.try_get("transactions")?,
        ours: row.try_get::<Decimal, _>("ours")?.normalize(),
        reported: row.try_get::<Decimal, _>("reported")?.normalize(),
        difference: row.try_get::<Decimal, _>("difference")?.normalize(),
        within_tolerance: row.try_get("within_tolerance")?,
        outside_tolerance: row.try_get("outside_tolerance")?,
    })
}

/// Totals, per-model totals and the largest differences, read from one
/// snapshot so the three parts always agree.
#[tracing::instrument(skip_all)]
pub async fn reconciliation(
    pool: &PgPool,
    filter: &ReconciliationFilter,
) -> Result<ReconciliationReport, sqlx::Error> {
    let tolerance = filter.tolerance.abs();
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;

    // The empty grouping set always yields the grand total row, even over
    // no rows at all; the (model) set yields one row per model.
    let mut q = QueryBuilder::new(
        "WITH r AS (
            SELECT coalesce(model, '') AS model, currency, cost, reported_cost,
                cost - reported_cost AS diff
            FROM transactions",
    );
    push_where(&mut q, filter);
    q.push(
        ")
        SELECT grouping(model) = 1 AS is_total, model, max(currency) AS currency,
            count(*)::int8 AS transactions,
            coalesce(sum(cost), 0) AS ours,
            coalesce(sum(reported_cost), 0) AS reported,
            coalesce(sum(diff), 0) AS difference,
            count(*) FILTER (WHERE abs(diff) <= ",
    )
    .push_bind(tolerance)
    .push(")::int8 AS within_tolerance, count(*) FILTER (WHERE abs(diff) > ")
    .push_bind(tolerance)
    .push(
        ")::int8 AS outside_tolerance
        FROM r
        GROUP BY GROUPING SETS ((), (model))
        ORDER BY grouping(model) DESC, abs(coalesce(sum(diff), 0)) DESC, model",
    );
    let rows = q.build().fetch_all(&mut *tx).await?;
    let mut overall = None;
    let mut by_model = Vec::with_capacity(rows.len().saturating_sub(1));
    for row in &rows {
        if row.try_get::<bool, _>("is_total")? {
            overall = Some(totals(row)?);
        } else {
            by_model.push(ModelReconciliation {
                model: row.try_get("model")?,
                currency: row.try_get("currency")?,
                totals: totals(row)?,
            });
        }
    }
    let totals = overall.ok_or_else(|| sqlx::Error::RowNotFound)?;

    let mut q = QueryBuilder::new(
        "SELECT request_id, tenant_id, coalesce(model, '') AS model, occurred_at, price_version,
            cost AS ours, reported_cost AS reported, cost - reported_cost AS difference
         FROM transactions",
    );
    push_where(&mut q, filter);
    q.push(
        " ORDER BY abs(cost - reported_cost) DESC, occurred_at DESC, tenant_id, request_id LIMIT ",
    )
    .push_bind(RECONCILIATION_TOP);
    let rows = q.build().fetch_all(&mut *tx).await?;
    let largest_differences = rows
        .iter()
        .map(|row| {
            Ok(ReconciliationOutlier {
                request_id: row.try_get("request_id")?,
                tenant_id: row.try_get("tenant_id")?,
                model: row.try_get("model")?,
                occurred_at: row.try_get("occurred_at")?,
                price_version: row.try_get("price_version")?,
                ours: row.try_get::<Decimal, _>("ours")?.normalize(),
                reported: row.try_get::<Decimal, _>("reported")?.normalize(),
                difference: row.try_get::<Decimal, _>("difference")?.normalize(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    tx.commit().await?;
    Ok(ReconciliationReport {
        totals,
        by_model,
        largest_differences,
    })
}
