use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::pricing::TenantAdjustment;

/// One tenant pricing agreement row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TenantPricing {
    pub tenant_id: String,
    /// A catalog model id, or `*` for all models.
    pub model: String,
    pub effective_from: DateTime<Utc>,
    pub adjustment: TenantAdjustment,
}

#[tracing::instrument(skip_all)]
pub async fn load_tenant_pricing(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Option<&str>,
) -> Result<Vec<TenantPricing>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant_id, model, effective_from, adjustment FROM tenant_pricing
         WHERE $1::text IS NULL OR tenant_id = $1
         ORDER BY tenant_id, model, effective_from",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            let adjustment: serde_json::Value = row.try_get("adjustment")?;
            Ok(TenantPricing {
                tenant_id: row.try_get("tenant_id")?,
                model: row.try_get("model")?,
                effective_from: row.try_get("effective_from")?,
                adjustment: serde_json::from_value(adjustment)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            })
        })
        .collect()
}

/// Adds an agreement; returns false if one exists for the same key.
pub async fn insert_tenant_pricing(pool: &PgPool, p: &TenantPricing) -> Result<bool, sqlx::Error> {
    let adjustment =
        serde_json::to_value(&p.adjustment).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let result = sqlx::query(
        "INSERT INTO tenant_pricing (tenant_id, model, effective_from, adjustment)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&p.tenant_id)
    .bind(&p.model)
    .bind(p.effective_from)
    .bind(adjustment)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}
