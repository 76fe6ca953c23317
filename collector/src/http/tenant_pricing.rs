//! Per-tenant pricing agreements: `GET|POST /v1/tenants/{tenant_id}/pricing`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, Body};
use crate::auth::Admin;
use crate::db::{self, TenantPricing};
use crate::error::{ApiError, ApiResult};
use crate::pricing::TenantAdjustment;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/tenants/{tenant_id}/pricing", get(list).post(create))
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let rows = db::load_tenant_pricing(&state.pool, Some(&tenant_id)).await?;
    Ok(Json(json!({"tenant_id": tenant_id, "agreements": rows})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgreement {
    /// Catalog model id; omitted = every model.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    effective_from: Option<DateTime<Utc>>,
    #[serde(flatten)]
    adjustment: TenantAdjustment,
}

/// Adds a versioned agreement: `{"discount": {"percent": "10"}}` or
/// `{"custom_prices": {"input": "2.00", ...}}`, optionally with `model`
/// and `effective_from` (default now). Past transactions keep their price.
async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewAgreement = parse_json(&body)?;
    new.adjustment
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let agreement = TenantPricing {
        tenant_id,
        model: new.model.unwrap_or_else(|| "*".to_string()),
        effective_from: new.effective_from.unwrap_or_else(|| state.clock.now()),
        adjustment: new.adjustment,
    };
    if !db::insert_tenant_pricing(&state.pool, &agreement).await? {
        return Err(ApiError::BadRequest(
            "an agreement for this tenant, model and effective_from exists; agreements are immutable".into(),
        ));
    }
    state.reload_prices().await?;
    Ok((StatusCode::CREATED, Json(json!(agreement))))
}
