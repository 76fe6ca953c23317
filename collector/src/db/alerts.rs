//! Alerts: budget alerts inserted once per (budget, period, event,
//! threshold), balance alerts once per fall (see `balance_alerts`); claimed
//! and delivered by the webhook deliverer.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

/// A stored alert with its delivery state. `limit` is the `amount` column:
/// the budget's limit, or the low-balance threshold of a balance alert.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Alert {
    pub id: i64,
    /// None for balance alerts.
    pub budget_id: Option<i64>,
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub event: String,
    pub threshold: i32,
    pub spent: Decimal,
    #[sqlx(rename = "amount")]
    pub limit: Decimal,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub resets_at: Option<DateTime<Utc>>,
    pub webhook_url: String,
    /// What was left, for balance alerts.
    pub balance: Option<Decimal>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// `projected_to_exceed`: the forecast it fired on (projected, low,
    /// high, basis), as the webhook sends it.
    pub forecast: Option<serde_json::Value>,
}

const ALERT_COLUMNS: &str = "id, budget_id, tenant_id, api_key_id, event, threshold, spent,
    amount, currency, period_start, resets_at, webhook_url, balance, attempts, next_attempt_at,
    last_status, last_error, delivered_at, created_at, forecast";

/// An alert the evaluator wants to fire.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub budget_id: i64,
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub event: String,
    pub threshold: i32,
    pub spent: Decimal,
    pub limit: Decimal,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub resets_at: Option<DateTime<Utc>>,
    pub webhook_url: String,
    /// The forecast behind a `projected_to_exceed` alert.
    pub forecast: Option<serde_json::Value>,
}

/// Inserts the alerts not fired yet in their period (one statement;
/// duplicates of the unique key are skipped). Returns how many are new.
#[tracing::instrument(skip_all, fields(candidates = alerts.len()))]
pub async fn insert_alerts(pool: &PgPool, alerts: &[NewAlert]) -> Result<u64, sqlx::Error> {
    if alerts.is_empty() {
        return Ok(0);
    }
    let budget: Vec<i64> = alerts.iter().map(|a| a.budget_id).collect();
    let tenant: Vec<&str> = alerts.iter().map(|a| a.tenant_id.as_str()).collect();
    let key: Vec<Option<&str>> = alerts.iter().map(|a| a.api_key_id.as_deref()).collect();
    let event: Vec<&str> = alerts.iter().map(|a| a.event.as_str()).collect();
    let threshold: Vec<i32> = alerts.iter().map(|a| a.threshold).collect();
    let spent: Vec<Decimal> = alerts.iter().map(|a| a.spent).collect();
    let limit: Vec<Decimal> = alerts.iter().map(|a| a.limit).collect();
    let currency: Vec<&str> = alerts.iter().map(|a| a.currency.as_str()).collect();
    let start: Vec<DateTime<Utc>> = alerts.iter().map(|a| a.period_start).collect();
    let resets: Vec<Option<DateTime<Utc>>> = alerts.iter().map(|a| a.resets_at).collect();
    let url: Vec<&str> = alerts.iter().map(|a| a.webhook_url.as_str()).collect();
    let forecast: Vec<Option<String>> = alerts
        .iter()
        .map(|a| a.forecast.as_ref().map(|f| f.to_string()))
        .collect();
    let done = sqlx::query(
        "INSERT INTO alerts (budget_id, tenant_id, api_key_id, event, threshold, spent, amount,
            currency, period_start, resets_at, webhook_url, forecast)
         SELECT b, t, k, e, th, sp, am, c, ps, r, u, f::jsonb
         FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int4[],
            $6::numeric[], $7::numeric[], $8::text[], $9::timestamptz[], $10::timestamptz[],
            $11::text[], $12::text[]) AS x(b, t, k, e, th, sp, am, c, ps, r, u, f)
         ON CONFLICT (budget_id, period_start, event, threshold) DO NOTHING",
    )
    .bind(&budget)
    .bind(&tenant)
    .bind(&key)
    .bind(&event)
    .bind(&threshold)
    .bind(&spent)
    .bind(&limit)
    .bind(&currency)
    .bind(&start)
    .bind(&resets)
    .bind(&url)
    .bind(&forecast)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Claims up to `limit` alerts due for delivery, oldest first, and leases
/// them for `lease_secs` (another replica skips them meanwhile; a crashed
/// deliverer's lease simply runs out). Alerts that used `max_attempts` stay
/// in the log undelivered.
#[tracing::instrument(skip_all)]
pub async fn claim_due_alerts(
    pool: &PgPool,
    limit: i64,
    max_attempts: i32,
    lease_secs: i64,
) -> Result<Vec<Alert>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE alerts SET next_attempt_at = now() + make_interval(secs => $3)
         WHERE id IN (
            SELECT id FROM alerts
            WHERE delivered_at IS NULL AND attempts < $2 AND next_attempt_at <= now()
            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(limit)
    .bind(max_attempts)
    .bind(lease_secs as f64)
    .fetch_all(pool)
    .await
    .map(|mut v: Vec<Alert>| {
        v.sort_by_key(|a| a.id);
        v
    })
}

/// Records a successful delivery.
pub async fn mark_delivered(pool: &PgPool, id: i64, status: i32) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET attempts = attempts + 1, last_status = $2, last_error = NULL,
            delivered_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Records a failed attempt; the next one is due after `retry_in_ms`.
pub async fn mark_failed(
    pool: &PgPool,
    id: i64,
    status: Option<i32>,
    error: &str,
    retry_in_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET attempts = attempts + 1, last_status = $2, last_error = $3,
            next_attempt_at = now() + make_interval(secs => $4)
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(retry_in_ms as f64 / 1000.0)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The budgets (of those given) whose `projected_to_exceed` already fired
/// in the period starting at the paired instant.
pub async fn projections_fired(
    pool: &PgPool,
    periods: &[(i64, DateTime<Utc>)],
) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
    if periods.is_empty() {
        return Ok(Default::default());
    }
    let ids: Vec<i64> = periods.iter().map(|p| p.0).collect();
    let starts: Vec<DateTime<Utc>> = periods.iter().map(|p| p.1).collect();
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT a.budget_id FROM alerts a
         JOIN UNNEST($1::int8[], $2::timestamptz[]) AS p(id, s)
            ON a.budget_id = p.id AND a.period_start = p.s
         WHERE a.event = 'projected_to_exceed'",
    )
    .bind(&ids)
    .bind(&starts)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The delivery log, newest first, optionally of one tenant.
pub async fn list_alerts(
    pool: &PgPool,
    tenant_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Alert>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE $1::text IS NULL OR tenant_id = $1
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
