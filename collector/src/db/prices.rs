use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::pricing::PriceEntry;

/// A catalog row: the immutable price a transaction can reference.
#[derive(Debug, Clone)]
pub struct StoredPrice {
    pub id: i64,
    pub entry: PriceEntry,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

#[tracing::instrument(skip_all)]
pub async fn load_prices(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<StoredPrice>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, entry, source, created_at FROM price_catalog ORDER BY model, effective_from",
    )
    .fetch_all(db)
    .await?;
    let mut prices = Vec::with_capacity(rows.len());
    for row in rows {
        let entry: serde_json::Value = row.try_get("entry")?;
        let entry: PriceEntry =
            serde_json::from_value(entry).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        prices.push(StoredPrice {
            id: row.try_get("id")?,
            entry,
            source: row.try_get("source")?,
            created_at: row.try_get("created_at")?,
        });
    }
    Ok(prices)
}

/// Highest catalog row id: a cheap change marker for replicas to reload on.
pub async fn latest_price_id(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(id) FROM price_catalog")
        .fetch_one(pool)
        .await
}

/// Whether `model` is a model id of the catalog (any version, exact id).
pub async fn price_model_exists(pool: &PgPool, model: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM price_catalog WHERE model = $1)")
        .bind(model)
        .fetch_one(pool)
        .await
}

/// Adds catalog entries; an existing (model, effective_from) is left as it
/// is, since transactions may already reference it. Returns rows added.
#[tracing::instrument(skip_all, fields(count = entries.len(), source))]
pub async fn insert_prices(
    db: impl sqlx::PgExecutor<'_>,
    entries: &[PriceEntry],
    source: &str,
) -> Result<u64, sqlx::Error> {
    let mut models = Vec::with_capacity(entries.len());
    let mut effective = Vec::with_capacity(entries.len());
    let mut json = Vec::with_capacity(entries.len());
    for entry in entries {
        models.push(entry.model.clone());
        effective.push(entry.effective_from);
        json.push(serde_json::to_value(entry).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
    }
    let result = sqlx::query(
        "INSERT INTO price_catalog (model, effective_from, entry, source)
         SELECT m, e, j, $4 FROM UNNEST($1::text[], $2::timestamptz[], $3::jsonb[]) AS t(m, e, j)
         ON CONFLICT (model, effective_from) DO NOTHING",
    )
    .bind(&models)
    .bind(&effective)
    .bind(&json)
    .bind(source)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Advisory lock key of the price sync ("pricsync").
const PRICE_SYNC_LOCK: i64 = 0x7072_6963_7379_6e63;

/// A transaction holding the price sync's lock until it ends: replicas
/// syncing the same list at once take turns, and each compares the list
/// with what the previous one committed (so a change is added once, not
/// once per replica).
pub async fn begin_price_sync(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PRICE_SYNC_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}
