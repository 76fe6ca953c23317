//! Admin-managed model aliases: a custom name (an Azure deployment, a
//! provider's own spelling) priced as a catalog model.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// One `model_aliases` row. `tenant_id` and `provider` may be `*` (any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ModelAlias {
    pub tenant_id: String,
    pub provider: String,
    pub alias: String,
    /// The catalog model id the alias is priced as.
    pub model: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every alias, or (with `tenant_id`) those that apply to that tenant: its
/// own and the global (`*`) ones.
#[tracing::instrument(skip_all)]
pub async fn load_model_aliases(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Option<&str>,
) -> Result<Vec<ModelAlias>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, provider, alias, model, created_at, updated_at FROM model_aliases
         WHERE $1::text IS NULL OR tenant_id = $1 OR tenant_id = '*'
         ORDER BY tenant_id, provider, alias",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// Creates the alias or points it at a new model; true when it was created.
#[tracing::instrument(skip_all, fields(tenant_id, provider, alias))]
pub async fn upsert_model_alias(
    pool: &PgPool,
    tenant_id: &str,
    provider: &str,
    alias: &str,
    model: &str,
) -> Result<(ModelAlias, bool), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Upserted {
        #[sqlx(flatten)]
        row: ModelAlias,
        created: bool,
    }
    // `xmax = 0` holds only for a freshly inserted row, not an updated one.
    // clock_timestamp(), not now(): when the row was repointed, as shown by
    // the API. Replicas notice the change by its generation (migration 0020).
    let up: Upserted = sqlx::query_as(
        "INSERT INTO model_aliases (tenant_id, provider, alias, model) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, provider, alias)
         DO UPDATE SET model = EXCLUDED.model, updated_at = clock_timestamp()
         RETURNING tenant_id, provider, alias, model, created_at, updated_at,
                   (xmax = 0) AS created",
    )
    .bind(tenant_id)
    .bind(provider)
    .bind(alias)
    .bind(model)
    .fetch_one(pool)
    .await?;
    Ok((up.row, up.created))
}

/// Deletes the alias; false when there was none.
#[tracing::instrument(skip_all, fields(tenant_id, provider, alias))]
pub async fn delete_model_alias(
    pool: &PgPool,
    tenant_id: &str,
    provider: &str,
    alias: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM model_aliases WHERE tenant_id = $1 AND provider = $2 AND alias = $3",
    )
    .bind(tenant_id)
    .bind(provider)
    .bind(alias)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}
