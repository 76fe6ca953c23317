//! `GET /v1/forecast?tenant_id=&period=month`: projected end-of-period
//! spend per currency with a range and its basis (`crate::forecast`), and
//! the period's cache savings. Admin: any tenant, or all without
//! `tenant_id`; a tenant token: its own.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Params;
use crate::auth::Reader;
use crate::budgets::{self, Period};
use crate::db::{self, LedgerFilter};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/forecast", get(forecast))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForecastQuery {
    tenant_id: Option<String>,
    period: Option<String>,
}

async fn forecast(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<ForecastQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = reader.scope(q.tenant_id)?;
    let period = match q.period.as_deref().unwrap_or("month") {
        "total" => None,
        p => Period::parse(p),
    }
    .ok_or_else(|| ApiError::BadRequest("period must be one of day, week, month".into()))?;
    let now = state.clock.now();
    let w = budgets::window(period, now, state.budget_zone);
    let end = w
        .end
        .ok_or_else(|| ApiError::BadRequest("this period has no end to forecast".into()))?;
    let filter = LedgerFilter {
        tenant_id: tenant.clone(),
        ..LedgerFilter::default()
    };
    let forecasts = crate::forecasting::project(&state.pool, &filter, w.start, end, now).await?;
    let savings = db::cache_savings(&state.pool, tenant.as_deref(), w.start, end).await?;
    Ok(Json(json!({
        "tenant_id": tenant,
        "period": period.as_str(),
        "time_zone": state.budget_zone.to_string(),
        "period_start": w.start,
        "period_end": end,
        "now": now,
        "forecasts": forecasts,
        "cache_savings": savings,
    })))
}
