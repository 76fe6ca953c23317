//! Budget reservations (`POST /v1/reservations`): the rows, the per-tenant
//! lock they are decided under, spend and reservations of a scope read in
//! one snapshot, and the sweep of expired rows. Their release on ingest is
//! part of the ledger insert (`ledger::insert_batch_releasing`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Row};

use super::budgets::{SCOPES_CTE, SPENT_EXPR};
use super::{Budget, SpendScope};

/// Namespace (first key of the two-key advisory lock) of the per-tenant
/// reservation locks ("resv"); the second key is `hashtext(tenant_id)`.
/// Two-key advisory locks never collide with the one-key ones (the rollup
/// fold's).
const RESERVATION_LOCK_NS: i32 = 0x7265_7376;

/// A stored reservation.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Reservation {
    pub tenant_id: String,
    pub request_id: String,
    pub api_key_id: Option<String>,
    pub amount: Decimal,
    pub currency: String,
    pub bounded: bool,
    /// `fits` or `one_over`.
    pub rule: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

const RESERVATION_COLUMNS: &str =
    "tenant_id, request_id, api_key_id, amount, currency, bounded, rule, created_at, expires_at";

/// Serializes every reservation decision of `tenant_id`, across replicas,
/// until the transaction ends. Take it before reading what a decision rests
/// on: under READ COMMITTED each later statement's snapshot then includes
/// every reservation the previous holder committed.
pub async fn lock_tenant_reservations(
    tx: &mut PgConnection,
    tenant_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(RESERVATION_LOCK_NS)
        .bind(tenant_id)
        .execute(tx)
        .await
        .map(|_| ())
}

/// The reservation of (tenant, request id), active or expired.
pub async fn get_reservation(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: &str,
    request_id: &str,
) -> Result<Option<Reservation>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM budget_reservations
         WHERE tenant_id = $1 AND request_id = $2"
    ))
    .bind(tenant_id)
    .bind(request_id)
    .fetch_optional(db)
    .await
}

/// Deletes one reservation; true if it existed.
pub async fn delete_reservation(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: &str,
    request_id: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM budget_reservations WHERE tenant_id = $1 AND request_id = $2")
            .bind(tenant_id)
            .bind(request_id)
            .execute(db)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Stores an admitted reservation.
pub async fn insert_reservation(
    db: impl sqlx::PgExecutor<'_>,
    r: &Reservation,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO budget_reservations ({RESERVATION_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&r.tenant_id)
    .bind(&r.request_id)
    .bind(&r.api_key_id)
    .bind(r.amount)
    .bind(&r.currency)
    .bind(r.bounded)
    .bind(&r.rule)
    .bind(r.created_at)
    .bind(r.expires_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// A request admitted without a reservation, reported after the fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Noticed {
    pub reservation: Reservation,
    /// The request's start: its ledger row's `occurred_at`.
    pub occurred_at: DateTime<Utc>,
}

/// Stores noticed requests as reservations (rule `noticed`) in one
/// statement, skipping those already reserved and those whose record has
/// already landed (looked up by the ledger key). Returns how many were
/// stored.
pub async fn insert_noticed(
    db: impl sqlx::PgExecutor<'_>,
    noticed: &[Noticed],
) -> Result<u64, sqlx::Error> {
    if noticed.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&Reservation) -> String| -> Vec<String> {
        noticed.iter().map(|n| f(&n.reservation)).collect()
    };
    let tenant = col(|r| r.tenant_id.clone());
    let request = col(|r| r.request_id.clone());
    let currency = col(|r| r.currency.clone());
    let rule = col(|r| r.rule.clone());
    let key: Vec<Option<&str>> = noticed
        .iter()
        .map(|n| n.reservation.api_key_id.as_deref())
        .collect();
    let amount: Vec<Decimal> = noticed.iter().map(|n| n.reservation.amount).collect();
    let bounded: Vec<bool> = noticed.iter().map(|n| n.reservation.bounded).collect();
    let created: Vec<DateTime<Utc>> = noticed.iter().map(|n| n.reservation.created_at).collect();
    let expires: Vec<DateTime<Utc>> = noticed.iter().map(|n| n.reservation.expires_at).collect();
    let occurred: Vec<DateTime<Utc>> = noticed.iter().map(|n| n.occurred_at).collect();
    let done = sqlx::query(&format!(
        "INSERT INTO budget_reservations ({RESERVATION_COLUMNS})
         SELECT n.tenant_id, n.request_id, n.api_key_id, n.amount, n.currency, n.bounded,
                n.rule, n.created_at, n.expires_at
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[],
                     $6::bool[], $7::text[], $8::timestamptz[], $9::timestamptz[],
                     $10::timestamptz[])
              AS n(tenant_id, request_id, api_key_id, amount, currency, bounded, rule,
                   created_at, expires_at, occurred_at)
         WHERE NOT EXISTS (
             SELECT 1 FROM transactions t
             WHERE t.tenant_id = n.tenant_id AND t.occurred_at = n.occurred_at
               AND t.request_id = n.request_id)
         ON CONFLICT (tenant_id, request_id) DO NOTHING"
    ))
    .bind(&tenant)
    .bind(&request)
    .bind(&key)
    .bind(&amount)
    .bind(&currency)
    .bind(&bounded)
    .bind(&rule)
    .bind(&created)
    .bind(&expires)
    .bind(&occurred)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The hard budgets without a model that govern requests of `tenant_id`
/// with key `api_key_id`: the tenant-wide ones and the one of that key.
pub async fn governing_budgets(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: &str,
    api_key_id: Option<&str>,
) -> Result<Vec<Budget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, api_key_id, model, amount, currency, period, hard,
            alert_thresholds, webhook_url, time_zone, created_at, updated_at
         FROM budgets
         WHERE tenant_id = $1 AND hard AND model IS NULL
           AND (api_key_id IS NULL OR api_key_id = $2)
         ORDER BY id",
    )
    .bind(tenant_id)
    .bind(api_key_id)
    .fetch_all(db)
    .await
}

/// Where a scope stands: priced spend, active reservations in its currency,
/// and how many unbounded reservations are active in it (any currency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeUsage {
    pub spent: Decimal,
    pub reserved: Decimal,
    pub unbounded: i64,
}

/// Spend as `budgets::spent` computes it, and the scope's reservations
/// still active at $7 (a scope without a key counts every reservation of
/// the tenant, a key scope only that key's).
static SCOPE_USAGE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{SCOPES_CTE}
        SELECT h.i, {SPENT_EXPR} AS spent, r.reserved, r.unbounded
        FROM h CROSS JOIN LATERAL (
            SELECT coalesce(sum(r.amount) FILTER (WHERE r.currency = h.currency), 0) AS reserved,
                count(*) FILTER (WHERE NOT r.bounded) AS unbounded
            FROM budget_reservations r
            WHERE r.tenant_id = h.tenant_id AND r.expires_at > $7
              AND (h.api_key_id IS NULL OR r.api_key_id = h.api_key_id)
        ) r
        ORDER BY h.i"
    )
});

/// Each scope's spend and reservations, in order, in ONE statement: one
/// snapshot, so a usage record committing meanwhile (its ledger row and the
/// deletion of its reservation are one transaction) is counted exactly
/// once, as spend or as its reservation. `model` of the scopes is ignored.
#[tracing::instrument(skip_all, fields(scopes = scopes.len()))]
pub async fn scope_usage(
    db: impl sqlx::PgExecutor<'_>,
    scopes: &[SpendScope],
    now: DateTime<Utc>,
) -> Result<Vec<ScopeUsage>, sqlx::Error> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    let idx: Vec<i64> = (0..scopes.len() as i64).collect();
    let tenant: Vec<&str> = scopes.iter().map(|s| s.tenant_id.as_str()).collect();
    let key: Vec<Option<&str>> = scopes.iter().map(|s| s.api_key_id.as_deref()).collect();
    let model: Vec<Option<&str>> = vec![None; scopes.len()];
    let currency: Vec<&str> = scopes.iter().map(|s| s.currency.as_str()).collect();
    let start: Vec<DateTime<Utc>> = scopes.iter().map(|s| s.start).collect();
    let rows = sqlx::query(&SCOPE_USAGE_SQL)
        .bind(&idx)
        .bind(&tenant)
        .bind(&key)
        .bind(&model)
        .bind(&currency)
        .bind(&start)
        .bind(now)
        .fetch_all(db)
        .await?;
    let mut out = vec![ScopeUsage::default(); scopes.len()];
    for row in rows {
        let i: i64 = row.try_get("i")?;
        let usage = ScopeUsage {
            spent: row.try_get::<Decimal, _>("spent")?.normalize(),
            reserved: row.try_get::<Decimal, _>("reserved")?.normalize(),
            unbounded: row.try_get("unbounded")?,
        };
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            *slot = usage;
        }
    }
    Ok(out)
}

/// Deletes the reservations of these (tenant, request id) pairs: called in
/// the ledger insert's transaction. Rows are locked in key order first, so
/// two batches releasing the same reservations never deadlock. Returns how
/// many were deleted.
pub(super) async fn release_reservations(
    tx: &mut PgConnection,
    tenant_id: &[&str],
    request_id: &[&str],
) -> Result<u64, sqlx::Error> {
    if tenant_id.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "WITH k AS (
            SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[]) AS k(tenant_id, request_id)
         ), locked AS (
            SELECT r.tenant_id, r.request_id FROM budget_reservations r
            JOIN k USING (tenant_id, request_id)
            ORDER BY r.tenant_id, r.request_id
            FOR UPDATE OF r
         )
         DELETE FROM budget_reservations r USING locked l
         WHERE r.tenant_id = l.tenant_id AND r.request_id = l.request_id",
    )
    .bind(tenant_id)
    .bind(request_id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` reservations expired at `now` (rows another
/// transaction holds are skipped, so the sweep never waits on ingest).
/// Returns how many were deleted.
pub async fn sweep_expired_reservations(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM budget_reservations r USING (
            SELECT tenant_id, request_id FROM budget_reservations
            WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED
         ) e
         WHERE r.tenant_id = e.tenant_id AND r.request_id = e.request_id",
    )
    .bind(now)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Active reservations of a tenant (tests and diagnostics), by request id.
pub async fn active_reservations(
    pool: &PgPool,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Reservation>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM budget_reservations
         WHERE tenant_id = $1 AND expires_at > $2 ORDER BY request_id"
    ))
    .bind(tenant_id)
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Every stored reservation of a tenant, expired or not (tests).
pub async fn stored_reservations(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<Vec<Reservation>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM budget_reservations
         WHERE tenant_id = $1 ORDER BY request_id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}
