//! Budgets, the prepaid credit ledger, and priced spend over a window.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Row};

/// A stored budget. `limit` is the `amount` column (LIMIT is an SQL keyword).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Budget {
    pub id: i64,
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    #[serde(rename = "limit", with = "rust_decimal::serde::str")]
    #[sqlx(rename = "amount")]
    pub limit: Decimal,
    pub currency: String,
    pub period: String,
    pub hard: bool,
    pub alert_thresholds: Vec<i32>,
    pub webhook_url: Option<String>,
    /// IANA zone of the periods; None: the collector default.
    pub time_zone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The settable fields of a budget (scope fields are only used on insert).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetFields {
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    pub limit: Decimal,
    pub currency: String,
    pub period: String,
    pub hard: bool,
    pub alert_thresholds: Vec<i32>,
    pub webhook_url: Option<String>,
    pub time_zone: Option<String>,
}

const BUDGET_COLUMNS: &str = "id, tenant_id, api_key_id, model, amount, currency, period, hard,
    alert_thresholds, webhook_url, time_zone, created_at, updated_at";

#[tracing::instrument(skip_all)]
pub async fn insert_budget(pool: &PgPool, b: &BudgetFields) -> Result<Budget, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO budgets (tenant_id, api_key_id, model, amount, currency, period, hard,
            alert_thresholds, webhook_url, time_zone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {BUDGET_COLUMNS}"
    ))
    .bind(&b.tenant_id)
    .bind(&b.api_key_id)
    .bind(&b.model)
    .bind(b.limit)
    .bind(&b.currency)
    .bind(&b.period)
    .bind(b.hard)
    .bind(&b.alert_thresholds)
    .bind(&b.webhook_url)
    .bind(&b.time_zone)
    .fetch_one(pool)
    .await
}

pub async fn get_budget(pool: &PgPool, id: i64) -> Result<Option<Budget>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Budgets, oldest first, optionally of one tenant.
pub async fn list_budgets(
    pool: &PgPool,
    tenant_id: Option<&str>,
) -> Result<Vec<Budget>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// Every hard budget: the candidates for the deny list.
pub async fn hard_budgets(pool: &PgPool) -> Result<Vec<Budget>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {BUDGET_COLUMNS} FROM budgets WHERE hard ORDER BY id"
    ))
    .fetch_all(pool)
    .await
}

/// Updates the mutable fields (limit, currency, period, hard, thresholds,
/// webhook, time zone); the scope (tenant, key, model) never changes.
pub async fn update_budget(
    pool: &PgPool,
    id: i64,
    b: &BudgetFields,
) -> Result<Option<Budget>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE budgets SET amount = $2, currency = $3, period = $4, hard = $5,
            alert_thresholds = $6, webhook_url = $7, time_zone = $8, updated_at = now()
         WHERE id = $1 RETURNING {BUDGET_COLUMNS}"
    ))
    .bind(id)
    .bind(b.limit)
    .bind(&b.currency)
    .bind(&b.period)
    .bind(b.hard)
    .bind(&b.alert_thresholds)
    .bind(&b.webhook_url)
    .bind(&b.time_zone)
    .fetch_optional(pool)
    .await
}

pub async fn delete_budget(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM budgets WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// What to sum: priced spend in `currency` of a tenant (optionally one key
/// and/or one model) from `start` on.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendScope {
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    pub currency: String,
    pub start: DateTime<Utc>,
}

/// Each budget's current period window (in its own time zone, else
/// `default_zone`) and what was spent in it.
pub async fn spent_in_current_period(
    pool: &PgPool,
    list: &[Budget],
    now: DateTime<Utc>,
    default_zone: crate::budgets::Zone,
) -> Result<Vec<(crate::budgets::Window, Decimal)>, sqlx::Error> {
    let windows: Vec<_> = list
        .iter()
        .map(|b| {
            crate::budgets::budget_window(&b.period, b.time_zone.as_deref(), now, default_zone)
        })
        .collect();
    let scopes: Vec<SpendScope> = list
        .iter()
        .zip(&windows)
        .map(|(b, w)| SpendScope {
            tenant_id: b.tenant_id.clone(),
            api_key_id: b.api_key_id.clone(),
            model: b.model.clone(),
            currency: b.currency.clone(),
            start: w.start,
        })
        .collect();
    let spent = spent(pool, &scopes).await?;
    Ok(windows.into_iter().zip(spent).collect())
}

/// The scopes of a spend query as CTE `h`, one row per scope: UNNEST of
/// $1 index, $2 tenant, $3 key, $4 model, $5 currency, $6 start, with `hs`
/// and `ds`, the first whole UTC hour and day at or after the start, and the
/// rollups' watermarks (`folded_before`, `hourly_from`) of this snapshot.
pub(super) const SCOPES_CTE: &str = "WITH b AS (
            SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::timestamptz[]) AS b(i, tenant_id, api_key_id, model, currency, s)
        ), h AS (
            SELECT b.*, CASE WHEN date_trunc('hour', s, 'UTC') = s THEN s
                ELSE date_trunc('hour', s, 'UTC') + interval '1 hour' END AS hs,
                CASE WHEN date_trunc('day', s, 'UTC') = s THEN s
                ELSE date_trunc('day', s, 'UTC') + interval '1 day' END AS ds,
                w.folded_before, w.hourly_from
            FROM b CROSS JOIN rollup_fold w
        )";

/// Priced spend of the scope `h` (see [`SCOPES_CTE`]) from its start on:
/// the whole UTC days from the daily rollup (which holds the hours before
/// `folded_before`), the hours it lacks from the hourly rollup (which holds
/// those from `hourly_from` on), and the rest (the partial first hour, and
/// first-day hours already pruned from the hourly rollup) from the ledger.
pub(super) const SPENT_EXPR: &str = "coalesce((SELECT sum(d.cost) FROM usage_daily d
                WHERE d.tenant_id = h.tenant_id AND d.day >= (h.ds AT TIME ZONE 'UTC')::date
                    AND d.status = 'priced' AND d.currency = h.currency
                    AND (h.api_key_id IS NULL OR d.api_key_id = h.api_key_id)
                    AND (h.model IS NULL OR d.model = h.model)), 0)
          + coalesce((SELECT sum(u.cost) FROM usage_hourly u
                WHERE u.tenant_id = h.tenant_id AND u.hour >= greatest(h.hs, h.hourly_from)
                    AND (u.hour < h.ds OR u.hour >= h.folded_before)
                    AND u.status = 'priced' AND u.currency = h.currency
                    AND (h.api_key_id IS NULL OR u.api_key_id = h.api_key_id)
                    AND (h.model IS NULL OR u.model = h.model)), 0)
          + coalesce((SELECT sum(t.cost) FROM transactions t
                WHERE t.tenant_id = h.tenant_id AND t.occurred_at >= h.s
                    AND t.occurred_at < least(h.ds, greatest(h.hs, h.hourly_from))
                    AND t.status = 'priced' AND t.currency = h.currency
                    AND (h.api_key_id IS NULL OR t.api_key_id = h.api_key_id)
                    AND (h.model IS NULL OR t.model = h.model)), 0)";

static SPENT_SQL: LazyLock<String> =
    LazyLock::new(|| format!("{SCOPES_CTE} SELECT h.i, {SPENT_EXPR} AS spent FROM h ORDER BY h.i"));

/// Priced spend of each scope, in order, in one query (see [`SPENT_EXPR`]);
/// every part is kept in the ledger's own transaction or moved under the
/// fold lock, so it is exact. Open-ended: usage stamped later than
/// now (clock skew) counts too.
#[tracing::instrument(skip_all, fields(scopes = scopes.len()))]
pub async fn spent(pool: &PgPool, scopes: &[SpendScope]) -> Result<Vec<Decimal>, sqlx::Error> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    let idx: Vec<i64> = (0..scopes.len() as i64).collect();
    let tenant: Vec<&str> = scopes.iter().map(|s| s.tenant_id.as_str()).collect();
    let key: Vec<Option<&str>> = scopes.iter().map(|s| s.api_key_id.as_deref()).collect();
    let model: Vec<Option<&str>> = scopes.iter().map(|s| s.model.as_deref()).collect();
    let currency: Vec<&str> = scopes.iter().map(|s| s.currency.as_str()).collect();
    let start: Vec<DateTime<Utc>> = scopes.iter().map(|s| s.start).collect();
    let rows = sqlx::query(&SPENT_SQL)
        .bind(&idx)
        .bind(&tenant)
        .bind(&key)
        .bind(&model)
        .bind(&currency)
        .bind(&start)
        .fetch_all(pool)
        .await?;
    let mut out = vec![Decimal::ZERO; scopes.len()];
    for row in rows {
        let i: i64 = row.try_get("i")?;
        let spent: Decimal = row.try_get("spent")?;
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            *slot = spent.normalize();
        }
    }
    Ok(out)
}

/// One entry of the prepaid credit ledger.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Credit {
    pub id: i64,
    pub tenant_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

const CREDIT_COLUMNS: &str = "id, tenant_id, amount, currency, reason, created_by, created_at";

/// Appends a credit (negative: a debit) dated `at` (the first credit opens
/// the account: spend counts from then). None when the tenant's account
/// already holds credits in another currency.
#[tracing::instrument(skip_all, fields(tenant_id))]
pub async fn insert_credit(
    pool: &PgPool,
    tenant_id: &str,
    amount: Decimal,
    currency: &str,
    reason: &str,
    created_by: &str,
    at: DateTime<Utc>,
) -> Result<Option<Credit>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO credits (tenant_id, amount, currency, reason, created_by, created_at)
         SELECT $1, $2, $3, $4, $5, $6
         WHERE NOT EXISTS (SELECT 1 FROM credits WHERE tenant_id = $1 AND currency <> $3)
         RETURNING {CREDIT_COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(amount)
    .bind(currency)
    .bind(reason)
    .bind(created_by)
    .bind(at)
    .fetch_optional(pool)
    .await
}

pub async fn list_credits(pool: &PgPool, tenant_id: &str) -> Result<Vec<Credit>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {CREDIT_COLUMNS} FROM credits WHERE tenant_id = $1 ORDER BY id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// A prepaid account: opened by the tenant's first credit.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Account {
    pub tenant_id: String,
    pub currency: String,
    pub credits: Decimal,
    pub opened_at: DateTime<Utc>,
}

/// Prepaid accounts, optionally of one tenant.
pub async fn accounts(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Option<&str>,
) -> Result<Vec<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, min(currency) AS currency, sum(amount) AS credits,
            min(created_at) AS opened_at
         FROM credits WHERE $1::text IS NULL OR tenant_id = $1
         GROUP BY tenant_id ORDER BY tenant_id",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}
