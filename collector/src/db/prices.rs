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
pub async fn load_prices(pool: &PgPool) -> Result<Vec<StoredPrice>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, entry, source, created_at FROM price_catalog ORDER BY model, effective_from",
    )
    .fetch_all(pool)
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

/// What a replica compares with what it loaded to notice a change made on
/// another one: the newest catalog row, and the number and latest change of
/// the model aliases (a delete lowers the count, an update moves the latest
/// change, an insert does both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PricingVersion {
    pub latest_price_id: Option<i64>,
    pub aliases: i64,
    pub aliases_changed_at: Option<DateTime<Utc>>,
}

/// The current [`PricingVersion`], in one cheap query (an index probe and a
/// scan of the small alias table).
pub async fn pricing_version(pool: &PgPool) -> Result<PricingVersion, sqlx::Error> {
    let (latest_price_id, aliases, aliases_changed_at) = sqlx::query_as(
        "SELECT (SELECT max(id) FROM price_catalog), count(*), max(updated_at) FROM model_aliases",
    )
    .fetch_one(pool)
    .await?;
    Ok(PricingVersion {
        latest_price_id,
        aliases,
        aliases_changed_at,
    })
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
    pool: &PgPool,
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
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
