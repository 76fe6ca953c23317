//! Tenant read tokens: only their SHA-256 digests are stored.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A token as the admin API lists it. It has no digest field on purpose:
/// nothing derived from the secret ever leaves the database.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    pub id: i64,
    pub tenant_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What an active token grants: reads of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActiveToken {
    pub id: i64,
    pub tenant_id: String,
}

#[tracing::instrument(skip_all, fields(tenant_id))]
pub async fn insert_token(
    pool: &PgPool,
    tenant_id: &str,
    name: &str,
    token_hash: &[u8; 32],
) -> Result<ApiToken, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO api_tokens (tenant_id, name, token_hash) VALUES ($1, $2, $3)
         RETURNING id, tenant_id, name, created_at, revoked_at",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(&token_hash[..])
    .fetch_one(pool)
    .await
}

/// Tokens, oldest first, optionally of one tenant; revoked ones included
/// (with `revoked_at`) so an audit sees them.
#[tracing::instrument(skip_all)]
pub async fn list_tokens(
    pool: &PgPool,
    tenant_id: Option<&str>,
) -> Result<Vec<ApiToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, name, created_at, revoked_at FROM api_tokens
         WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// Revokes a token (idempotent: a revoked token keeps its first
/// `revoked_at`). None when there is no such token.
#[tracing::instrument(skip_all, fields(id))]
pub async fn revoke_token(pool: &PgPool, id: i64) -> Result<Option<ApiToken>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING id, tenant_id, name, created_at, revoked_at",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The unrevoked token with this digest, if any.
#[tracing::instrument(skip_all)]
pub async fn find_active_token(
    pool: &PgPool,
    token_hash: &[u8; 32],
) -> Result<Option<ActiveToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(&token_hash[..])
    .fetch_optional(pool)
    .await
}

/// The cursor key shared by every replica: the stored one, or a fresh one
/// stored by whichever replica asks first (the others then read it).
pub async fn stored_cursor_key(pool: &PgPool) -> Result<crate::cursor::CursorKey, sqlx::Error> {
    let fresh = crate::cursor::CursorKey::generate();
    sqlx::query(
        "INSERT INTO collector_secrets (name, value) VALUES ('cursor_key', $1)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(fresh.to_hex())
    .execute(pool)
    .await?;
    let stored: String =
        sqlx::query_scalar("SELECT value FROM collector_secrets WHERE name = 'cursor_key'")
            .fetch_one(pool)
            .await?;
    crate::cursor::CursorKey::from_hex(&stored)
        .map_err(|e| sqlx::Error::Decode(format!("stored cursor_key: {e}").into()))
}
