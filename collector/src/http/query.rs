//! Billing queries: `GET /v1/transactions` and `GET /v1/summary`, also
//! served as the seed gateway's `GET /internal/billing/transactions` and
//! `GET /internal/billing/summary` (same parameters, auth and answers).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use super::Params;
use crate::auth::Reader;
use crate::cursor::{self, Position};
use crate::db::{self, GroupBy, LedgerFilter, Transaction};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/transactions", get(transactions))
        .route("/v1/summary", get(summary))
        .route("/internal/billing/transactions", get(transactions))
        .route("/internal/billing/summary", get(summary))
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;
const MAX_CSV_ROWS: i64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionsQuery {
    tenant_id: Option<String>,
    api_key_id: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    status: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    format: Option<String>,
}

pub(crate) fn parse_time(name: &str, value: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "{name} must be an RFC 3339 time, e.g. 2026-11-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

fn check_status(status: &Option<String>) -> ApiResult<()> {
    match status.as_deref() {
        None | Some("priced") | Some("unpriced") => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "status must be priced or unpriced, not {other:?}"
        ))),
    }
}

/// The listing a cursor belongs to: who reads (the admin, or one tenant
/// token) and every filter. A cursor opens only in the listing it came from.
fn listing(reader: &Reader, f: &LedgerFilter) -> String {
    let who = match reader {
        Reader::Admin => "admin".to_string(),
        Reader::Tenant { token_id, .. } => format!("token:{token_id}"),
    };
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
    json!([
        who,
        f.tenant_id,
        f.api_key_id,
        f.model,
        f.provider,
        f.status,
        time(f.start),
        time(f.end)
    ])
    .to_string()
}

async fn transactions(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<TransactionsQuery>,
) -> ApiResult<Response> {
    check_status(&q.status)?;
    let filter = LedgerFilter {
        tenant_id: reader.scope(q.tenant_id)?,
        api_key_id: q.api_key_id,
        model: q.model,
        provider: q.provider,
        status: q.status,
        start: parse_time("start", q.start.as_deref())?,
        end: parse_time("end", q.end.as_deref())?,
    };
    let binding = listing(&reader, &filter);
    let after = q
        .cursor
        .as_deref()
        .map(|c| cursor::open(&state.cursor_key, c, &binding))
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be json or csv, not {other:?}"
            )))
        }
    };
    let max = if csv { MAX_CSV_ROWS } else { MAX_LIMIT };
    let limit = q
        .limit
        .unwrap_or(if csv { MAX_CSV_ROWS } else { DEFAULT_LIMIT });
    if !(1..=max).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        )));
    }
    let rows = db::list_transactions(
        &state.pool,
        &filter,
        after.as_ref(),
        limit,
        state.clock.now(),
    )
    .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last())
        .flatten()
        .map(|t| {
            let last = Position {
                occurred_at: t.occurred_at,
                tenant_id: t.tenant_id.clone(),
                request_id: t.request_id.clone(),
            };
            cursor::seal(&state.cursor_key, &last, &binding)
        });
    if csv {
        let mut response = to_csv(&rows).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            "text/csv; charset=utf-8"
                .parse()
                .map_err(|_| ApiError::Internal("header".into()))?,
        );
        headers.insert(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"transactions.csv\""
                .parse()
                .map_err(|_| ApiError::Internal("header".into()))?,
        );
        if let Some(c) = next_cursor {
            headers.insert(
                "x-next-cursor",
                c.parse().map_err(|_| ApiError::Internal("header".into()))?,
            );
        }
        return Ok(response);
    }
    Ok(Json(json!({"transactions": rows, "next_cursor": next_cursor})).into_response())
}

const CSV_COLUMNS: &str = "request_id,tenant_id,api_key_id,provider,model,route,http_status,streamed,occurred_at,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cache_write_1h_tokens,reasoning_tokens,status,currency,cost,price_version,reported_cost,flags";

fn csv_field(out: &mut String, value: &str) {
    // Quote when needed; prefix formula-looking cells so spreadsheets don't execute them.
    let risky = value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err();
    if risky || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if risky {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

pub(crate) fn to_csv(rows: &[Transaction]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 200);
    out.push_str(CSV_COLUMNS);
    out.push('\n');
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let dec = |v: &Option<rust_decimal::Decimal>| v.map(|d| d.to_string()).unwrap_or_default();
    for t in rows {
        let fields = [
            t.request_id.clone(),
            t.tenant_id.clone(),
            opt(&t.api_key_id),
            t.provider.clone(),
            opt(&t.model),
            opt(&t.route),
            t.http_status.to_string(),
            t.streamed.to_string(),
            t.occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            t.input_tokens.to_string(),
            t.output_tokens.to_string(),
            t.cache_read_tokens.to_string(),
            t.cache_write_tokens.to_string(),
            t.cache_write_1h_tokens.to_string(),
            t.reasoning_tokens.to_string(),
            t.status.clone(),
            opt(&t.currency),
            dec(&t.cost),
            opt(&t.price_version),
            dec(&t.reported_cost),
            t.flags.join(";"),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, f);
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    tenant_id: Option<String>,
    api_key_id: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    status: Option<String>,
    start: Option<String>,
    end: Option<String>,
    group_by: Option<String>,
}

async fn summary(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<SummaryQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    check_status(&q.status)?;
    let group_by = GroupBy::parse(q.group_by.as_deref().unwrap_or("total")).ok_or_else(|| {
        ApiError::BadRequest(
            "group_by must be one of total, model, provider, api_key, tenant, day, hour".into(),
        )
    })?;
    let end = parse_time("end", q.end.as_deref())?.unwrap_or_else(|| state.clock.now());
    let start = parse_time("start", q.start.as_deref())?.unwrap_or(end - Duration::days(30));
    if start > end {
        return Err(ApiError::BadRequest("start must not be after end".into()));
    }
    let filter = LedgerFilter {
        tenant_id: reader.scope(q.tenant_id)?,
        api_key_id: q.api_key_id,
        model: q.model,
        provider: q.provider,
        status: q.status,
        start: None,
        end: None,
    };
    // Archived months have left the ledger: only their daily rollups remain,
    // so their part of the range is read in whole UTC days, and said so.
    let archived = db::archived_months(&state.pool, start, end).await?;
    let mut months: Vec<DateTime<Utc>> = archived.iter().map(|a| a.month).collect();
    months.dedup();
    let requested = (start, end);
    let (start, end) = whole_days_where_archived(start, end, &months);
    if !months.is_empty() && group_by == GroupBy::Hour {
        return Err(ApiError::BadRequest(format!(
            "the range includes archived months ({}): their hours are no longer kept; \
             use group_by=day or a range after them",
            month_labels(&months).join(", ")
        )));
    }
    let rows = db::summary(&state.pool, &filter, start, end, group_by).await?;
    let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut body = json!({
        "start": secs(start),
        "end": secs(end),
        "group_by": q.group_by.unwrap_or_else(|| "total".into()),
        "groups": rows,
    });
    if !months.is_empty() {
        body["archived"] = json!({
            "months": month_labels(&months),
            "source": "daily rollups",
            "resolution": "whole UTC days",
            "requested_start": secs(requested.0),
            "requested_end": secs(requested.1),
        });
    }
    Ok(Json(body))
}

fn month_labels(months: &[DateTime<Utc>]) -> Vec<String> {
    months
        .iter()
        .map(|m| m.format("%Y-%m").to_string())
        .collect()
}

/// [start, end) widened to whole UTC days where an edge falls inside an
/// archived month (`months`: their first instants), whose rows are gone.
fn whole_days_where_archived(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    months: &[DateTime<Utc>],
) -> (DateTime<Utc>, DateTime<Utc>) {
    use chrono::DurationRound;
    let day = Duration::days(1);
    let archived = |t: DateTime<Utc>| months.contains(&db::month_start(t));
    let floor = |t: DateTime<Utc>| t.duration_trunc(day).unwrap_or(t);
    let start = if archived(start) { floor(start) } else { start };
    let end = if archived(end) && floor(end) != end {
        floor(end) + day
    } else {
        end
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn edges_in_archived_months_widen_to_whole_days() {
        let may = [at("2026-05-01T00:00:00Z")];
        // Both edges inside May: the days they fall in are read whole.
        assert_eq!(
            whole_days_where_archived(at("2026-05-03T10:00:00Z"), at("2026-05-20T05:00:00Z"), &may),
            (at("2026-05-03T00:00:00Z"), at("2026-05-21T00:00:00Z"))
        );
        // An edge after the archived month is kept to the second.
        assert_eq!(
            whole_days_where_archived(at("2026-05-31T23:00:00Z"), at("2026-06-02T05:00:00Z"), &may),
            (at("2026-05-31T00:00:00Z"), at("2026-06-02T05:00:00Z"))
        );
        // Midnight edges stay; no archived month, nothing moves.
        assert_eq!(
            whole_days_where_archived(at("2026-05-03T00:00:00Z"), at("2026-05-04T00:00:00Z"), &may),
            (at("2026-05-03T00:00:00Z"), at("2026-05-04T00:00:00Z"))
        );
        assert_eq!(
            whole_days_where_archived(at("2026-05-03T10:00:00Z"), at("2026-05-04T00:30:00Z"), &[]),
            (at("2026-05-03T10:00:00Z"), at("2026-05-04T00:30:00Z"))
        );
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut out = String::new();
        csv_field(&mut out, "a,b");
        out.push('|');
        csv_field(&mut out, "=HYPERLINK(\"x\")");
        out.push('|');
        csv_field(&mut out, "-12");
        assert_eq!(out, "\"a,b\"|\"'=HYPERLINK(\"\"x\"\")\"|-12");
    }
}
