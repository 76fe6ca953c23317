//! Low-balance alert settings of prepaid tenants and their armed/fired state.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

/// A tenant's low-balance alert setting.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct BalanceAlert {
    pub tenant_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub threshold: Decimal,
    pub currency: String,
    pub webhook_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "tenant_id, threshold, currency, webhook_url, created_at, updated_at";

/// Creates or replaces the setting. The armed/fired state is kept, so an
/// idempotent re-PUT never re-sends an alert.
#[tracing::instrument(skip_all, fields(tenant_id))]
pub async fn upsert_balance_alert(
    pool: &PgPool,
    tenant_id: &str,
    threshold: Decimal,
    currency: &str,
    webhook_url: Option<&str>,
) -> Result<BalanceAlert, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO balance_alerts (tenant_id, threshold, currency, webhook_url)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE SET threshold = EXCLUDED.threshold,
            currency = EXCLUDED.currency, webhook_url = EXCLUDED.webhook_url, updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(threshold)
    .bind(currency)
    .bind(webhook_url)
    .fetch_one(pool)
    .await
}

pub async fn get_balance_alert(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Option<BalanceAlert>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM balance_alerts WHERE tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

pub async fn delete_balance_alert(pool: &PgPool, tenant_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM balance_alerts WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A prepaid tenant with a low-balance webhook, as the evaluator sees it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BalanceWatch {
    pub tenant_id: String,
    pub threshold: Decimal,
    pub currency: String,
    pub webhook_url: String,
    /// Sum of the tenant's credits.
    pub credits: Decimal,
    pub opened_at: DateTime<Utc>,
    pub low_fired_at: Option<DateTime<Utc>>,
    pub exhausted_fired_at: Option<DateTime<Utc>>,
    /// Database time before anything of this round was read: transitions
    /// are only applied if no other replica changed the state since.
    pub read_at: DateTime<Utc>,
}

/// Every tenant with a webhook for low-balance alerts and an account in the
/// setting's currency.
#[tracing::instrument(skip_all)]
pub async fn balance_watches(pool: &PgPool) -> Result<Vec<BalanceWatch>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.tenant_id, b.threshold, b.currency, b.webhook_url, a.credits, a.opened_at,
            b.low_fired_at, b.exhausted_fired_at, clock_timestamp() AS read_at
         FROM balance_alerts b
         JOIN (SELECT tenant_id, min(currency) AS currency, sum(amount) AS credits,
                min(created_at) AS opened_at
               FROM credits GROUP BY tenant_id) a
           ON a.tenant_id = b.tenant_id AND a.currency = b.currency
         WHERE b.webhook_url IS NOT NULL
         ORDER BY b.tenant_id",
    )
    .fetch_all(pool)
    .await
}

/// The two balance events, each armed and fired on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceEvent {
    /// The balance fell below the threshold.
    Low,
    /// The balance reached zero: the gateway blocks the tenant.
    Exhausted,
}

impl BalanceEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceEvent::Low => "low_balance",
            BalanceEvent::Exhausted => "balance_exhausted",
        }
    }

    /// (fired_at, armed_at) columns; static names, never user input.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            BalanceEvent::Low => ("low_fired_at", "low_armed_at"),
            BalanceEvent::Exhausted => ("exhausted_fired_at", "exhausted_armed_at"),
        }
    }
}

/// Fires `event` for `w` if it is still armed, was not re-armed after
/// `w.read_at`, and the threshold is still the one evaluated: disarms it and
/// queues the alert in one statement. Returns whether an alert was queued.
pub async fn fire_balance_alert(
    pool: &PgPool,
    w: &BalanceWatch,
    event: BalanceEvent,
    balance: Decimal,
    spent: Decimal,
) -> Result<bool, sqlx::Error> {
    let (fired, armed) = event.columns();
    let done = sqlx::query(&format!(
        "WITH fired AS (
            UPDATE balance_alerts SET {fired} = clock_timestamp()
            WHERE tenant_id = $1 AND {fired} IS NULL AND {armed} <= $2 AND threshold = $3
                AND webhook_url IS NOT NULL
            RETURNING tenant_id, {fired} AS at, threshold, currency, webhook_url
         )
         INSERT INTO alerts (budget_id, tenant_id, event, threshold, spent, amount, currency,
            period_start, webhook_url, balance)
         SELECT NULL, tenant_id, $4, 0, $5, threshold, currency, at, webhook_url, $6 FROM fired
         ON CONFLICT (tenant_id, event, period_start) WHERE budget_id IS NULL DO NOTHING"
    ))
    .bind(&w.tenant_id)
    .bind(w.read_at)
    .bind(w.threshold)
    .bind(event.as_str())
    .bind(spent)
    .bind(balance)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Re-arms `event` for `w` after the balance recovered, unless it fired
/// after `w.read_at` (then the recovery reading is older than the fall).
pub async fn rearm_balance_alert(
    pool: &PgPool,
    w: &BalanceWatch,
    event: BalanceEvent,
) -> Result<bool, sqlx::Error> {
    let (fired, armed) = event.columns();
    let done = sqlx::query(&format!(
        "UPDATE balance_alerts SET {fired} = NULL, {armed} = clock_timestamp()
         WHERE tenant_id = $1 AND {fired} IS NOT NULL AND {fired} <= $2"
    ))
    .bind(&w.tenant_id)
    .bind(w.read_at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}
