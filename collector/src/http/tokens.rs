//! Tenant read tokens (admin only): `POST /v1/tokens` creates one and shows
//! it once, `GET /v1/tokens` lists them (never a token or its digest),
//! `DELETE /v1/tokens/{id}` revokes one.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{parse_json, Body, Params};
use crate::auth::{generate_tenant_token, Admin};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{id}", delete(revoke))
}

const MAX_TENANT_LEN: usize = 256;
const MAX_NAME_LEN: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    tenant_id: String,
    name: String,
}

fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::BadRequest(format!("{field} is empty")));
    }
    if value.len() > max {
        return Err(ApiError::BadRequest(format!(
            "{field} is longer than {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// 201 with the token, which is not stored and cannot be shown again.
async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: NewToken = parse_json(&body)?;
    check_text("tenant_id", &req.tenant_id, MAX_TENANT_LEN)?;
    check_text("name", &req.name, MAX_NAME_LEN)?;
    let (token, digest) = generate_tenant_token()?;
    let stored = db::insert_token(&state.pool, &req.tenant_id, &req.name, &digest).await?;
    tracing::info!(token_id = stored.id, tenant_id = %stored.tenant_id, "api token created");
    let mut response = (
        StatusCode::CREATED,
        Json(json!({
            "id": stored.id,
            "tenant_id": stored.tenant_id,
            "name": stored.name,
            "created_at": stored.created_at,
            "token": token,
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant_id: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let tokens = db::list_tokens(&state.pool, q.tenant_id.as_deref()).await?;
    Ok(Json(json!({"tokens": tokens})))
}

/// Revokes at once on this replica; other replicas stop accepting the token
/// when the change is notified to them, within milliseconds (`changes`), or
/// within their cache lifetime while their listener is down (see
/// `auth::DEFAULT_TOKEN_CACHE_TTL`).
/// Revoking twice is harmless and keeps the first `revoked_at`.
async fn revoke(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<db::ApiToken>> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("token id must be an integer, not {id:?}")))?;
    let revoked = db::revoke_token(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token with id {id}")))?;
    state.token_cache.forget(id);
    tracing::info!(token_id = id, tenant_id = %revoked.tenant_id, "api token revoked");
    Ok(Json(revoked))
}
