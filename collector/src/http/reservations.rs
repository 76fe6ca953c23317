//! `POST /v1/reservations` (ingest token): the filter asks before sending a
//! request of a watched scope upstream (see `crate::reservations`). Always
//! 200 for a valid call: `admitted` says whether the request may go.
//!
//! `POST /v1/reservations/notices` (ingest token): the filter reports, on
//! its next tick, the requests of governed scopes it admitted from memory;
//! each is held as a `noticed` reservation until its record lands.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{Duration, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, Body};
use crate::auth::Ingest;
use crate::error::{ApiError, ApiResult};
use crate::ingest::{check_id, KNOWN_PROVIDERS, MAX_TOKENS};
use crate::reservations::{self, Notice, Outcome, Request, MAX_TTL_SECS};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reservations", post(reserve))
        .route("/v1/reservations/notices", post(notices))
}

const MAX_MODEL_LEN: usize = 256;
/// Most notices in one call (a filter sends at most its buffer's worth).
pub const MAX_NOTICES: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationBody {
    request_id: String,
    tenant_id: String,
    #[serde(default)]
    api_key_id: Option<String>,
    provider: String,
    #[serde(default)]
    model: Option<String>,
    max_input_tokens: u64,
    /// null or absent: the request set no output limit.
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    /// The request's start (its usage record's `started_at_ms`); required
    /// in a notice.
    #[serde(default)]
    started_at_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticesBody {
    notices: Vec<serde_json::Value>,
}

fn validate(b: ReservationBody) -> Result<Request, String> {
    check_id("request_id", &b.request_id)?;
    check_id("tenant_id", &b.tenant_id)?;
    if let Some(key) = &b.api_key_id {
        check_id("api_key_id", key)?;
    }
    if !KNOWN_PROVIDERS.contains(&b.provider.as_str()) {
        return Err(format!("unknown provider {:?}", b.provider));
    }
    if b.model.as_ref().is_some_and(|m| m.len() > MAX_MODEL_LEN) {
        return Err(format!("model is longer than {MAX_MODEL_LEN} bytes"));
    }
    if b.max_input_tokens > MAX_TOKENS {
        return Err(format!("max_input_tokens exceeds {MAX_TOKENS}"));
    }
    if b.max_output_tokens.is_some_and(|t| t > MAX_TOKENS) {
        return Err(format!("max_output_tokens exceeds {MAX_TOKENS}"));
    }
    let ttl = match b.ttl_ms {
        Some(0) => return Err("ttl_ms must be positive".into()),
        // Longer asks are capped.
        Some(ms) => Some(Duration::milliseconds(
            i64::try_from(ms.min(MAX_TTL_SECS * 1000)).unwrap_or(i64::MAX),
        )),
        None => None,
    };
    Ok(Request {
        tenant_id: b.tenant_id,
        request_id: b.request_id,
        api_key_id: b.api_key_id,
        provider: b.provider,
        model: b.model,
        max_input_tokens: b.max_input_tokens,
        max_output_tokens: b.max_output_tokens,
        ttl,
    })
}

async fn reserve(
    State(state): State<AppState>,
    _ingest: Ingest,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let body: ReservationBody = parse_json(&body)?;
    let req = validate(body).map_err(ApiError::BadRequest)?;
    let answer = match reservations::reserve(&state, &req).await? {
        Outcome::Admitted {
            reserved,
            currency,
            expires_at,
            rule,
        } => json!({
            "admitted": true,
            "request_id": req.request_id,
            "reserved": reserved.to_string(),
            "currency": currency,
            "expires_at_ms": expires_at.timestamp_millis(),
            "rule": rule.as_str(),
        }),
        Outcome::Refused { estimate, entry } => json!({
            "admitted": false,
            "request_id": req.request_id,
            "estimate": estimate.to_string(),
            "entry": entry,
        }),
    };
    Ok(Json(answer))
}

/// Stores the valid notices; an invalid one is skipped and counted, never
/// failing the rest (the requests are already admitted).
async fn notices(
    State(state): State<AppState>,
    _ingest: Ingest,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let body: NoticesBody = parse_json(&body)?;
    if body.notices.len() > MAX_NOTICES {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_NOTICES} notices in one call"
        )));
    }
    let received = body.notices.len();
    let mut valid = Vec::with_capacity(received);
    let mut rejected = 0usize;
    for raw in body.notices {
        let notice = serde_json::from_value::<ReservationBody>(raw)
            .map_err(|e| e.to_string())
            .and_then(|n| {
                let started_at = n
                    .started_at_ms
                    .and_then(|ms| i64::try_from(ms).ok())
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                    .ok_or_else(|| "started_at_ms is missing or out of range".to_string())?;
                Ok(Notice {
                    request: validate(n)?,
                    started_at,
                })
            });
        match notice {
            Ok(n) => valid.push(n),
            Err(why) => {
                rejected += 1;
                tracing::debug!(%why, "notice skipped");
            }
        }
    }
    let stored = reservations::notice(&state, &valid).await?;
    Ok(Json(json!({
        "received": received,
        "stored": stored,
        "rejected": rejected,
    })))
}
