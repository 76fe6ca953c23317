//! `GET /v1/reconciliation`: our computed costs against the provider-reported
//! ones (OpenRouter's `usage.cost`), per transaction, summed and by model.

use std::str::FromStr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration, SecondsFormat};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use super::query::parse_time;
use crate::auth::Reader;
use crate::db::{self, ReconciliationFilter};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/reconciliation", get(reconciliation))
}

/// One millionth of a currency unit, the same default as `POST /v1/quote`.
const DEFAULT_TOLERANCE: Decimal = Decimal::from_parts(1, 0, 0, false, 6);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconciliationQuery {
    tenant_id: Option<String>,
    currency: Option<String>,
    start: Option<String>,
    end: Option<String>,
    tolerance: Option<String>,
}

fn parse_tolerance(value: Option<&str>) -> ApiResult<Decimal> {
    let Some(v) = value else {
        return Ok(DEFAULT_TOLERANCE);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "tolerance must be a non-negative decimal such as 0.000001, not {v:?}"
        ))
    };
    let t = v.trim();
    let d = if t.contains(['e', 'E']) {
        Decimal::from_scientific(t)
    } else {
        Decimal::from_str(t)
    }
    .map_err(|_| bad())?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(bad());
    }
    Ok(d.normalize())
}

async fn reconciliation(
    State(state): State<AppState>,
    reader: Reader,
    query: Result<Query<ReconciliationQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    // A bad query string answers with the JSON error format, not axum's plain text.
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant_id = reader.scope(q.tenant_id)?;
    let tolerance = parse_tolerance(q.tolerance.as_deref())?;
    let end = parse_time("end", q.end.as_deref())?.unwrap_or_else(|| state.clock.now());
    let start = parse_time("start", q.start.as_deref())?.unwrap_or(end - Duration::days(30));
    if start > end {
        return Err(ApiError::BadRequest("start must not be after end".into()));
    }
    let mut filter = ReconciliationFilter {
        tenant_id: tenant_id.clone(),
        currency: q.currency.clone(),
        start,
        end,
        tolerance,
    };
    // Sums are never added across currencies: several need a choice.
    let currencies = db::reconciliation_currencies(&state.pool, &filter).await?;
    if filter.currency.is_none() {
        match currencies.as_slice() {
            [one] => filter.currency = Some(one.clone()),
            [] => {}
            many => {
                return Err(ApiError::BadRequest(format!(
                    "the reconciled usage is priced in several currencies ({}); add currency= to reconcile one",
                    many.join(", ")
                )))
            }
        }
    }
    let report = db::reconciliation(&state.pool, &filter).await?;
    let mut out =
        serde_json::to_value(&report.totals).map_err(|e| ApiError::Internal(e.to_string()))?;
    let extra = json!({
        "start": start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "end": end.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "tenant_id": tenant_id,
        "currency": filter.currency,
        "tolerance": tolerance.to_string(),
        "by_model": report.by_model,
        "largest_differences": report.largest_differences,
    });
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_parses_plain_and_exponent_and_rejects_negatives() {
        assert_eq!(parse_tolerance(None).unwrap().to_string(), "0.000001");
        assert_eq!(parse_tolerance(Some("0.01")).unwrap().to_string(), "0.01");
        assert_eq!(parse_tolerance(Some("1e-4")).unwrap().to_string(), "0.0001");
        assert_eq!(parse_tolerance(Some("0")).unwrap(), Decimal::ZERO);
        assert!(parse_tolerance(Some("-0.1")).is_err());
        assert!(parse_tolerance(Some("lots")).is_err());
    }
}
