//! Shared helpers for the collector's integration tests (real PostgreSQL).
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use collector::clock::Clock;
use collector::price_book::PriceBook;
use collector::pricing::Catalog;
use collector::{app, db, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;

pub const INGEST: &str = "test-ingest";
pub const ADMIN: &str = "test-admin";

/// The instant a test runs at: `BILLING_TEST_NOW` (RFC 3339) when the
/// ageing pass of `./dev test` pins one, else the real time. Tests that
/// depend on "now" read it here (or from `state.clock`), never from the
/// system, so every awkward instant reaches them.
pub fn test_now() -> DateTime<Utc> {
    match std::env::var("BILLING_TEST_NOW") {
        Ok(at) if !at.is_empty() => DateTime::parse_from_rfc3339(&at)
            .unwrap_or_else(|e| panic!("BILLING_TEST_NOW={at:?} is not RFC 3339: {e}"))
            .with_timezone(&Utc),
        _ => Utc::now(),
    }
}

/// A clock standing at `test_now()`; tests move it with `set`/`advance`.
pub fn test_clock() -> Clock {
    Clock::manual(test_now())
}

/// App over `pool` with the bundled catalog seeded, as the binary does, and
/// a manual clock at `test_now()`.
pub async fn state(pool: PgPool) -> AppState {
    let catalog = Catalog::bundled().unwrap();
    db::insert_prices(&pool, catalog.entries(), "catalog:test")
        .await
        .unwrap();
    let state = AppState::new(pool, PriceBook::empty(), Some(INGEST), Some(ADMIN), 1 << 20)
        .with_clock(test_clock());
    state.reload_prices().await.unwrap();
    state
}

pub async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, bytes) = call_raw(
        state,
        method,
        uri,
        token,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

pub async fn call_raw(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let response = app(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

/// A valid record; `at_ms` is its start time.
pub fn record(request_id: &str, tenant: &str, model: &str, at_ms: i64) -> Value {
    json!({
        "request_id": request_id, "tenant_id": tenant, "api_key_id": format!("key-{tenant}"),
        "provider": "openai", "model": model, "http_status": 200, "streamed": false,
        "started_at_ms": at_ms, "input_tokens": 1200, "output_tokens": 300,
        "cache_read_tokens": 200, "reasoning_tokens": 0
    })
}

pub async fn ingest(state: &AppState, records: Vec<Value>) -> Value {
    let (status, body) = call(
        state,
        "POST",
        "/v1/usage",
        Some(INGEST),
        Some(json!({"records": records})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}
