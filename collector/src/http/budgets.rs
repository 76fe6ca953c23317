//! Budgets, prepaid credits and the filter's deny list.
//!
//! - `POST /v1/budgets`, `PATCH`/`DELETE /v1/budgets/{id}` (admin);
//!   `GET /v1/budgets?tenant_id=` (admin, or a tenant token for its own)
//!   with `spent`, `remaining`, `resets_at` of the current period.
//! - `POST /v1/credits` (admin; append-only, negative amounts are debits);
//!   `GET /v1/credits?tenant_id=` and `GET /v1/balance?tenant_id=` (admin
//!   or the tenant's own token).
//! - `PUT`/`DELETE /v1/tenants/{tenant_id}/balance-alert` (admin) and `GET`
//!   (admin or the tenant's own token): a prepaid tenant's low-balance alert.
//! - `GET /v1/alerts?tenant_id=` (admin, or a tenant token for its own):
//!   the alert delivery log, newest first (see `crate::alerts`).
//! - `GET /v1/deny` (ingest token): what the filter must block now: hard
//!   budgets whose current-period spend (plus active reservations) reached
//!   the limit, and prepaid tenants whose balance (less reservations) is at
//!   or below zero; and the `watch` list of scopes near their limit.

use std::str::FromStr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{parse_json, Body, Params};
use crate::auth::{Admin, Ingest, Reader};
use crate::budgets::{self, Period};
use crate::db::{self, Budget, BudgetFields, SpendScope};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/budgets", get(list).post(create))
        .route("/v1/budgets/{id}", patch(update).delete(remove))
        .route("/v1/credits", get(list_credits).post(add_credit))
        .route("/v1/balance", get(balance))
        .route("/v1/deny", get(deny_list))
        .route("/v1/alerts", get(list_alerts))
        .route(
            "/v1/tenants/{tenant_id}/balance-alert",
            get(get_balance_alert)
                .put(put_balance_alert)
                .delete(delete_balance_alert),
        )
}

const MAX_ID_LEN: usize = 256;
const MAX_REASON_LEN: usize = 1000;
const MAX_URL_LEN: usize = 2048;
/// Who wrote a credit entry: only the admin token can.
const CREDIT_AUTHOR: &str = "admin";

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

/// Money as a decimal string (`"25.00"`) or an integer; never a float.
fn money(field: &str, v: &Value) -> ApiResult<Decimal> {
    let parsed = match v {
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        Value::Number(n) if n.is_i64() => n.as_i64().map(Decimal::from),
        Value::Number(_) => {
            return Err(ApiError::BadRequest(format!(
                "{field} must be a decimal string such as \"25.00\", not a float"
            )))
        }
        _ => None,
    };
    let d = parsed.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field} must be a decimal string such as \"25.00\""
        ))
    })?;
    if d.scale() > 12 {
        return Err(ApiError::BadRequest(format!(
            "{field} has more than 12 decimal places"
        )));
    }
    Ok(d.normalize())
}

fn currency(v: &str) -> ApiResult<String> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(v.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "currency must be an ISO 4217 code such as \"USD\", not {v:?}"
        )))
    }
}

fn period(v: &str) -> ApiResult<Period> {
    Period::parse(v).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "period must be one of day, week, month, total, not {v:?}"
        ))
    })
}

fn thresholds(v: &[i64]) -> ApiResult<Vec<i32>> {
    if v.len() > 20 {
        return Err(ApiError::BadRequest(
            "at most 20 alert_thresholds".to_string(),
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for &t in v {
        match i32::try_from(t) {
            Ok(t) if (1..=1000).contains(&t) => out.push(t),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "alert_thresholds are percentages between 1 and 1000, not {t}"
                )))
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn webhook(v: Option<&str>) -> ApiResult<Option<String>> {
    let Some(url) = v else { return Ok(None) };
    check_text("webhook_url", url, MAX_URL_LEN)?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ApiError::BadRequest(
            "webhook_url must be an http(s) URL".to_string(),
        ));
    }
    Ok(Some(url.to_string()))
}

/// An IANA zone name, stored in its canonical spelling; None: the default.
fn time_zone(v: Option<&str>) -> ApiResult<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    match budgets::parse_zone("time_zone", v) {
        Ok(zone) => Ok(Some(zone.to_string())),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

/// Rules that hold for new and patched budgets alike.
fn check_budget(b: &BudgetFields) -> ApiResult<()> {
    if b.limit <= Decimal::ZERO {
        return Err(ApiError::BadRequest("limit must be positive".to_string()));
    }
    // The filter decides before the request body (and so the model) is read.
    if b.hard && b.model.is_some() {
        return Err(ApiError::BadRequest(
            "per-model budgets can only be soft (hard: false): the gateway blocks by tenant and key"
                .to_string(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBudget {
    tenant_id: String,
    api_key_id: Option<String>,
    model: Option<String>,
    limit: Value,
    currency: String,
    period: String,
    #[serde(default = "default_hard")]
    hard: bool,
    alert_thresholds: Option<Vec<i64>>,
    webhook_url: Option<String>,
    time_zone: Option<String>,
}

fn default_hard() -> bool {
    true
}

async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: NewBudget = parse_json(&body)?;
    check_text("tenant_id", &req.tenant_id, MAX_ID_LEN)?;
    if let Some(k) = &req.api_key_id {
        check_text("api_key_id", k, MAX_ID_LEN)?;
    }
    if let Some(m) = &req.model {
        check_text("model", m, MAX_ID_LEN)?;
    }
    let fields = BudgetFields {
        tenant_id: req.tenant_id,
        api_key_id: req.api_key_id,
        model: req.model,
        limit: money("limit", &req.limit)?,
        currency: currency(&req.currency)?,
        period: period(&req.period)?.as_str().to_string(),
        hard: req.hard,
        alert_thresholds: thresholds(&req.alert_thresholds.unwrap_or(vec![50, 80, 100]))?,
        webhook_url: webhook(req.webhook_url.as_deref())?,
        time_zone: time_zone(req.time_zone.as_deref())?,
    };
    check_budget(&fields)?;
    let budget = db::insert_budget(&state.pool, &fields).await?;
    tracing::info!(budget_id = budget.id, tenant_id = %budget.tenant_id, "budget created");
    let view = views(&state, vec![budget], state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(view.into_iter().next())).into_response())
}

/// A budget with where it stands in its current period.
/// Row ids are global sequences: their gaps would tell a tenant how many
/// budgets, credits or alerts other tenants have. A tenant token never sees
/// them (it cannot use them either: the calls that take one are admin only).
fn without_global_ids(reader: &Reader, mut items: Vec<Value>) -> Vec<Value> {
    if matches!(reader, Reader::Tenant { .. }) {
        for item in &mut items {
            if let Some(map) = item.as_object_mut() {
                map.remove("id");
                map.remove("budget_id");
            }
        }
    }
    items
}

async fn views(state: &AppState, list: Vec<Budget>, now: DateTime<Utc>) -> ApiResult<Vec<Value>> {
    let current = db::spent_in_current_period(&state.pool, &list, now, state.budget_zone).await?;
    let mut forecasts = Vec::with_capacity(list.len());
    for (b, (w, spent)) in list.iter().zip(&current) {
        forecasts.push(crate::forecasting::project_budget(&state.pool, b, *w, *spent, now).await?);
    }
    list.into_iter()
        .zip(current)
        .zip(forecasts)
        .map(|((b, (w, spent)), forecast)| {
            let zone = budgets::budget_zone(b.time_zone.as_deref(), state.budget_zone);
            let status = budgets::with_forecast(
                budgets::status(b.limit, spent, w, now),
                b.limit,
                forecast.as_ref().map(|f| f.projected),
            );
            let mut v = serde_json::to_value(&b).map_err(|e| ApiError::Internal(e.to_string()))?;
            let extra =
                serde_json::to_value(&status).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let (Some(map), Value::Object(extra)) = (v.as_object_mut(), extra) {
                map.extend(extra);
                map.insert("period_start".into(), json!(w.start));
                map.insert("resets_at".into(), json!(w.end));
                map.insert("period_time_zone".into(), json!(zone.to_string()));
                map.insert(
                    "forecast".into(),
                    forecast
                        .as_ref()
                        .map(crate::forecasting::to_json)
                        .unwrap_or(Value::Null),
                );
            }
            Ok(v)
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    tenant_id: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<TenantQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = reader.scope(q.tenant_id)?;
    let list = db::list_budgets(&state.pool, tenant.as_deref()).await?;
    let budgets = views(&state, list, state.clock.now()).await?;
    Ok(Json(
        json!({"budgets": without_global_ids(&reader, budgets)}),
    ))
}

fn budget_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("budget id must be an integer, not {id:?}")))
}

/// Partial update: only the fields present change; `webhook_url: null` clears it.
async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let id = budget_id(&id)?;
    let patch: Map<String, Value> = parse_json(&body)?;
    let current = db::get_budget(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no budget with id {id}")))?;
    let mut f = BudgetFields {
        tenant_id: current.tenant_id,
        api_key_id: current.api_key_id,
        model: current.model,
        limit: current.limit,
        currency: current.currency,
        period: current.period,
        hard: current.hard,
        alert_thresholds: current.alert_thresholds,
        webhook_url: current.webhook_url,
        time_zone: current.time_zone,
    };
    let text = |k: &str, v: &Value| -> ApiResult<String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::BadRequest(format!("{k} must be a string")))
    };
    for (k, v) in &patch {
        match k.as_str() {
            "limit" => f.limit = money("limit", v)?,
            "currency" => f.currency = currency(&text(k, v)?)?,
            "period" => f.period = period(&text(k, v)?)?.as_str().to_string(),
            "hard" => {
                f.hard = v
                    .as_bool()
                    .ok_or_else(|| ApiError::BadRequest("hard must be a boolean".into()))?
            }
            "alert_thresholds" => {
                let list: Vec<i64> = serde_json::from_value(v.clone()).map_err(|_| {
                    ApiError::BadRequest("alert_thresholds must be a list of integers".into())
                })?;
                f.alert_thresholds = thresholds(&list)?;
            }
            "webhook_url" => {
                f.webhook_url = match v {
                    Value::Null => None,
                    v => webhook(Some(&text(k, v)?))?,
                }
            }
            "time_zone" => {
                f.time_zone = match v {
                    Value::Null => None,
                    v => time_zone(Some(&text(k, v)?))?,
                }
            }
            "tenant_id" | "api_key_id" | "model" => {
                return Err(ApiError::BadRequest(format!(
                    "{k} cannot change; delete the budget and create another"
                )))
            }
            other => return Err(ApiError::BadRequest(format!("unknown field {other:?}"))),
        }
    }
    check_budget(&f)?;
    let updated = db::update_budget(&state.pool, id, &f)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no budget with id {id}")))?;
    tracing::info!(budget_id = id, "budget updated");
    let view = views(&state, vec![updated], state.clock.now()).await?;
    Ok(Json(view.into_iter().next().unwrap_or(Value::Null)))
}

async fn remove(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = budget_id(&id)?;
    if db::delete_budget(&state.pool, id).await? {
        tracing::info!(budget_id = id, "budget deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no budget with id {id}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredit {
    tenant_id: String,
    amount: Value,
    currency: String,
    reason: String,
}

async fn add_credit(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: NewCredit = parse_json(&body)?;
    check_text("tenant_id", &req.tenant_id, MAX_ID_LEN)?;
    check_text("reason", &req.reason, MAX_REASON_LEN)?;
    let amount = money("amount", &req.amount)?;
    if amount.is_zero() {
        return Err(ApiError::BadRequest("amount must not be zero".to_string()));
    }
    let currency = currency(&req.currency)?;
    let credit = db::insert_credit(
        &state.pool,
        &req.tenant_id,
        amount,
        &currency,
        &req.reason,
        CREDIT_AUTHOR,
        state.clock.now(),
    )
    .await?
    .ok_or_else(|| {
        ApiError::BadRequest(format!(
            "tenant {:?} already has a prepaid account in another currency",
            req.tenant_id
        ))
    })?;
    tracing::info!(credit_id = credit.id, tenant_id = %credit.tenant_id, amount = %credit.amount, "credit added");
    let balance = balance_of(&state, &credit.tenant_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"credit": credit, "balance": balance})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredTenant {
    tenant_id: Option<String>,
}

fn required_tenant(reader: &Reader, requested: Option<String>) -> ApiResult<String> {
    reader
        .scope(requested)?
        .ok_or_else(|| ApiError::BadRequest("tenant_id is required".to_string()))
}

async fn list_credits(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<RequiredTenant>,
) -> ApiResult<Json<Value>> {
    let tenant = required_tenant(&reader, q.tenant_id)?;
    let credits = db::list_credits(&state.pool, &tenant).await?;
    let credits = credits
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(
        json!({"tenant_id": tenant, "credits": without_global_ids(&reader, credits)}),
    ))
}

/// credits − priced spend since the first credit (in the account's
/// currency), with the low-balance threshold if one is set.
async fn balance_of(state: &AppState, tenant: &str) -> ApiResult<Value> {
    let Some(account) = db::accounts(&state.pool, Some(tenant)).await?.pop() else {
        return Ok(
            json!({"tenant_id": tenant, "prepaid": false, "currency": null,
            "credits": "0", "spent": "0", "balance": null, "opened_at": null,
            "low_balance_threshold": null, "low_balance": false}),
        );
    };
    let spent = db::spent(
        &state.pool,
        &[SpendScope {
            tenant_id: account.tenant_id.clone(),
            api_key_id: None,
            model: None,
            currency: account.currency.clone(),
            start: account.opened_at,
        }],
    )
    .await?
    .pop()
    .unwrap_or_default();
    let threshold = db::get_balance_alert(&state.pool, tenant)
        .await?
        .filter(|a| a.currency == account.currency)
        .map(|a| a.threshold.normalize());
    let credits = account.credits.normalize();
    let balance = (credits - spent).normalize();
    Ok(json!({
        "tenant_id": tenant,
        "prepaid": true,
        "currency": account.currency,
        "credits": credits.to_string(),
        "spent": spent.to_string(),
        "balance": balance.to_string(),
        "exhausted": balance <= Decimal::ZERO,
        "opened_at": account.opened_at,
        "low_balance_threshold": threshold.map(|t| t.to_string()),
        "low_balance": threshold.is_some_and(|t| balance < t),
    }))
}

async fn balance(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<RequiredTenant>,
) -> ApiResult<Json<Value>> {
    let tenant = required_tenant(&reader, q.tenant_id)?;
    Ok(Json(balance_of(&state, &tenant).await?))
}

/// The filter's deny list. One worker per Envoy polls it (default every
/// second) and shares it with the others, so it costs three queries per poll
/// whatever the traffic (see `reservations::deny_list`): `entries`, the
/// scopes to block, `watch`, those near their limit whose requests
/// reserve first (`POST /v1/reservations`), and `governed`, the other
/// scopes of hard budgets and prepaid accounts, whose admitted requests the
/// filter reports on its next tick (`POST /v1/reservations/notices`).
async fn deny_list(State(state): State<AppState>, _ingest: Ingest) -> ApiResult<Json<Value>> {
    let now = state.clock.now();
    let list = crate::reservations::deny_list(&state, now).await?;
    Ok(Json(json!({
        "generated_at": now,
        "generated_at_ms": now.timestamp_millis(),
        "entries": list.entries,
        "watch": list.watch,
        "governed": list.governed,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceAlertBody {
    threshold: Value,
    currency: String,
    webhook_url: Option<String>,
}

/// The setting with the balance it watches.
async fn balance_alert_view(state: &AppState, setting: db::BalanceAlert) -> ApiResult<Value> {
    let balance = balance_of(state, &setting.tenant_id).await?;
    let mut v = serde_json::to_value(&setting).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(map) = v.as_object_mut() {
        map.insert("balance".into(), balance["balance"].clone());
        map.insert("low_balance".into(), balance["low_balance"].clone());
    }
    Ok(v)
}

/// Creates or replaces a prepaid tenant's low-balance alert.
async fn put_balance_alert(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    check_text("tenant_id", &tenant_id, MAX_ID_LEN)?;
    let req: BalanceAlertBody = parse_json(&body)?;
    let threshold = money("threshold", &req.threshold)?;
    if threshold <= Decimal::ZERO {
        return Err(ApiError::BadRequest(
            "threshold must be positive".to_string(),
        ));
    }
    let currency = currency(&req.currency)?;
    let webhook_url = webhook(req.webhook_url.as_deref())?;
    let account = db::accounts(&state.pool, Some(&tenant_id))
        .await?
        .pop()
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "tenant {tenant_id:?} has no prepaid account; add a credit first (POST /v1/credits)"
            ))
        })?;
    if account.currency != currency {
        return Err(ApiError::BadRequest(format!(
            "currency must be the prepaid account's currency {:?}, not {currency:?}",
            account.currency
        )));
    }
    let setting = db::upsert_balance_alert(
        &state.pool,
        &tenant_id,
        threshold,
        &currency,
        webhook_url.as_deref(),
    )
    .await?;
    tracing::info!(tenant_id = %tenant_id, %threshold, "low-balance alert set");
    Ok(Json(balance_alert_view(&state, setting).await?))
}

async fn get_balance_alert(
    State(state): State<AppState>,
    reader: Reader,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = required_tenant(&reader, Some(tenant_id))?;
    let setting = db::get_balance_alert(&state.pool, &tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("tenant {tenant:?} has no low-balance alert")))?;
    Ok(Json(balance_alert_view(&state, setting).await?))
}

async fn delete_balance_alert(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant_id): Path<String>,
) -> ApiResult<StatusCode> {
    if db::delete_balance_alert(&state.pool, &tenant_id).await? {
        tracing::info!(tenant_id = %tenant_id, "low-balance alert deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "tenant {tenant_id:?} has no low-balance alert"
        )))
    }
}

/// Rows of the delivery log returned at most.
const MAX_ALERTS: i64 = 1000;

async fn list_alerts(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<TenantQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = reader.scope(q.tenant_id)?;
    let alerts = db::list_alerts(&state.pool, tenant.as_deref(), MAX_ALERTS).await?;
    let alerts: Vec<Value> = alerts
        .into_iter()
        .map(|a| {
            let status = if a.delivered_at.is_some() {
                "delivered"
            } else if a.attempts >= crate::alerts::MAX_ATTEMPTS {
                "failed"
            } else {
                "pending"
            };
            let balance_event = crate::alerts::is_balance_event(&a.event);
            // Balance alerts: the threshold is an amount and there is no limit.
            let (threshold, limit) = if balance_event {
                (json!(a.limit.normalize().to_string()), Value::Null)
            } else {
                (
                    json!((a.event != "projected_to_exceed").then_some(a.threshold)),
                    json!(a.limit.normalize().to_string()),
                )
            };
            json!({
                "id": a.id.to_string(),
                "event": a.event,
                "budget_id": a.budget_id,
                "tenant_id": a.tenant_id,
                "api_key_id": a.api_key_id,
                "threshold": threshold,
                "spent": a.spent.normalize().to_string(),
                "limit": limit,
                "balance": a.balance.map(|b| b.normalize().to_string()),
                "currency": a.currency,
                "period_start": a.period_start,
                "resets_at": a.resets_at,
                "created_at": a.created_at,
                "forecast": a.forecast,
                "webhook_url": a.webhook_url,
                "status": status,
                "attempts": a.attempts,
                "next_attempt_at": (a.delivered_at.is_none()).then_some(a.next_attempt_at),
                "last_status": a.last_status,
                "last_error": a.last_error,
                "delivered_at": a.delivered_at,
            })
        })
        .collect();
    Ok(Json(json!({"alerts": without_global_ids(&reader, alerts)})))
}
