//! HTTP API: one module per resource, assembled here.

mod budgets;
mod dashboard;
mod forecast;
mod invoices;
mod model_aliases;
mod openapi;
mod prices;
mod query;
mod reconciliation;
mod reservations;
mod tenant_pricing;
mod tokens;
mod usage;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(usage::router())
        .merge(budgets::router())
        .merge(forecast::router())
        .merge(reservations::router())
        .merge(invoices::router())
        .merge(dashboard::router())
        .merge(query::router())
        .merge(prices::router())
        .merge(reconciliation::router())
        .merge(tokens::router())
        .merge(tenant_pricing::router())
        .merge(model_aliases::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    crate::db::ping(&state.pool).await?;
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = state
        .metrics
        .render(state.pool.size(), state.pool.num_idle());
    state.replica.render(&mut body);
    crate::budget_metrics::render(&state, &mut body).await;
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        body,
    )
}

/// Parses a JSON body with a clear 4xx instead of axum's plain-text rejection.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Reads the body, mapping an over-limit body to 413 JSON.
pub(crate) struct Body(pub Bytes);

impl axum::extract::FromRequest<AppState> for Body {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(state.max_body_bytes))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Query string extractor whose rejection is the JSON error format.
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}
