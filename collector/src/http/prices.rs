//! Catalog admin and pricing tools: `GET /v1/prices`, `PUT /v1/prices/{model}`,
//! `POST /v1/reprice`, `POST /v1/quote` (and the seed gateway's
//! `POST /internal/billing/quote`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, Body, Params};
use crate::auth::{Admin, Reader};
use crate::error::{ApiError, ApiResult};
use crate::pricing::{self, PriceEntry, UsageCounts};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/prices", get(list_prices))
        .route("/v1/prices/{model}", put(put_price))
        .route("/v1/reprice", post(reprice))
        .route("/v1/quote", post(quote))
        .route("/internal/billing/quote", post(internal_quote))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesQuery {
    model: Option<String>,
}

async fn list_prices(
    State(state): State<AppState>,
    _reader: Reader,
    Params(q): Params<PricesQuery>,
) -> ApiResult<Json<Value>> {
    let prices = crate::db::load_prices(&state.pool).await?;
    let rows: Vec<Value> = prices
        .into_iter()
        .filter(|p| q.model.as_deref().is_none_or(|m| p.entry.model == m))
        .map(|p| {
            let version = p.entry.version();
            json!({"id": p.id, "version": version, "source": p.source,
                   "created_at": p.created_at, "price": p.entry})
        })
        .collect();
    Ok(Json(json!({"prices": rows})))
}

/// Adds a new version of a model's price. Existing versions are immutable
/// (transactions reference them); omit `effective_from` to mean "now".
async fn put_price(
    State(state): State<AppState>,
    _admin: Admin,
    Path(model): Path<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut value: Value = parse_json(&body)?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("body must be a JSON object".into()))?;
    match obj.get("model").and_then(Value::as_str) {
        Some(m) if m != model => {
            return Err(ApiError::BadRequest(format!(
                "body model {m:?} does not match the path {model:?}"
            )))
        }
        _ => {
            obj.insert("model".into(), Value::from(model.clone()));
        }
    }
    obj.entry("effective_from")
        .or_insert_with(|| Value::from(state.clock.now().to_rfc3339()));
    let entry: PriceEntry = serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("invalid price: {e}")))?;
    entry
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let added =
        crate::db::insert_prices(&state.pool, std::slice::from_ref(&entry), "admin").await?;
    if added == 0 {
        return Err(ApiError::BadRequest(format!(
            "a price for {model} effective from {} already exists; prices are immutable, use a new effective_from",
            entry.effective_from.to_rfc3339()
        )));
    }
    state.reload_prices().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"version": entry.version(), "price": entry})),
    ))
}

/// Prices rows stored as `unpriced` with the current catalog.
async fn reprice(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    state.reload_prices().await?;
    let (mut examined, mut priced) = (0usize, 0usize);
    let mut after = (
        String::new(),
        String::new(),
        chrono::DateTime::<Utc>::UNIX_EPOCH,
    );
    loop {
        let book = state.prices.clone();
        let progress = crate::db::reprice_batch(&state.pool, &after, 1000, |row| {
            let guard = book.read().unwrap_or_else(|p| p.into_inner());
            let usage = UsageCounts {
                input_tokens: row.input_tokens.max(0) as u64,
                output_tokens: row.output_tokens.max(0) as u64,
                cache_read_tokens: row.cache_read_tokens.max(0) as u64,
                cache_write_tokens: row.cache_write_tokens.max(0) as u64,
                cache_write_1h_tokens: row.cache_write_1h_tokens.max(0) as u64,
                reasoning_tokens: row.reasoning_tokens.max(0) as u64,
            };
            guard.applied(
                &row.tenant_id,
                &row.provider,
                row.model.as_deref(),
                row.occurred_at,
                &usage,
                200,
            )
        })
        .await?;
        examined += progress.examined;
        priced += progress.priced;
        match progress.next {
            Some(n) => after = n,
            None => break,
        }
    }
    Ok(Json(
        json!({"examined": examined, "priced": priced, "still_unpriced": examined - priced}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteRequest {
    model: String,
    #[serde(default)]
    provider: Option<String>,
    usage: UsageCounts,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    reported_cost: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    tolerance: Option<Decimal>,
}

/// The cost of `usage` under the current catalog; with `reported_cost`, a
/// reconciliation against it.
async fn quote(
    State(state): State<AppState>,
    reader: Reader,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let q: QuoteRequest = parse_json(&body)?;
    let provider = q.provider.as_deref().unwrap_or("unknown");
    priced_quote(
        &state,
        &reader,
        provider,
        &q.model,
        &q.usage,
        q.reported_cost,
        q.tolerance,
    )
    .await
    .map(Json)
}

/// The seed gateway's quote: the model named as `provider/model`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InternalQuoteRequest {
    provider_model_id: String,
    usage: UsageCounts,
}

/// `POST /internal/billing/quote`: `/v1/quote` for clients of the seed
/// gateway. A leading known provider (`openai/gpt-4o-mini`,
/// `openrouter/openai/gpt-4o`) picks the provider; otherwise the whole id
/// is the model, looked up as `/v1/quote` would.
async fn internal_quote(
    State(state): State<AppState>,
    reader: Reader,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let q: InternalQuoteRequest = parse_json(&body)?;
    let (provider, model) = split_provider_model_id(&q.provider_model_id);
    if model.is_empty() {
        return Err(ApiError::BadRequest(
            "provider_model_id must name a model, e.g. openai/gpt-4o-mini".into(),
        ));
    }
    let mut out = priced_quote(&state, &reader, provider, model, &q.usage, None, None).await?;
    out["provider"] = Value::from(provider);
    out["provider_model_id"] = Value::from(q.provider_model_id.as_str());
    Ok(Json(out))
}

/// `openai/gpt-4o-mini` → (`openai`, `gpt-4o-mini`); an id without a known
/// provider in front → (`unknown`, the id).
fn split_provider_model_id(id: &str) -> (&str, &str) {
    let id = id.trim();
    match id.split_once('/') {
        Some((provider, model))
            if crate::ingest::KNOWN_PROVIDERS.contains(&provider) && provider != "unknown" =>
        {
            (provider, model)
        }
        _ => ("unknown", id),
    }
}

/// Model aliases apply as for usage: the global ones for the admin, and a
/// tenant token's own ones too.
async fn priced_quote(
    state: &AppState,
    reader: &Reader,
    provider: &str,
    model: &str,
    usage: &UsageCounts,
    reported_cost: Option<Decimal>,
    tolerance: Option<Decimal>,
) -> ApiResult<Value> {
    let book = state.price_book_now().await?;
    let catalog = book
        .catalog()
        .ok_or_else(|| ApiError::Internal("price catalog unavailable".into()))?;
    let tenant = match reader {
        Reader::Tenant { tenant_id, .. } => tenant_id.as_str(),
        Reader::Admin => "*",
    };
    let alias = book.alias(tenant, provider, model);
    let name = alias.map_or(model, |a| a.model.as_str());
    let now = state.clock.now();
    let breakdown =
        pricing::price_usage(catalog, provider, name, now, usage, None).map_err(|e| match e {
            pricing::PricingError::NoPrice { .. } => ApiError::NotFound(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    let mut out = json!({"model": model, "cost": breakdown});
    if let Some(a) = alias {
        out["alias"] = json!(a);
    }
    if let Some(reported) = reported_cost {
        let tolerance = tolerance.unwrap_or_else(|| Decimal::new(1, 6));
        out["reconciliation"] =
            serde_json::to_value(pricing::reconcile(breakdown.total, reported, tolerance))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split_provider_model_id;

    #[test]
    fn a_known_provider_in_front_is_split_off() {
        assert_eq!(
            split_provider_model_id("openai/gpt-4o-mini"),
            ("openai", "gpt-4o-mini")
        );
        assert_eq!(
            split_provider_model_id("openrouter/openai/gpt-4o"),
            ("openrouter", "openai/gpt-4o")
        );
        assert_eq!(
            split_provider_model_id("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        assert_eq!(split_provider_model_id("gpt-4o"), ("unknown", "gpt-4o"));
        assert_eq!(
            split_provider_model_id("acme/gpt-4o"),
            ("unknown", "acme/gpt-4o")
        );
        assert_eq!(
            split_provider_model_id("unknown/x"),
            ("unknown", "unknown/x")
        );
    }
}
