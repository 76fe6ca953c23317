//! Invoices.
//!
//! - `GET /v1/invoices?tenant_id=&period=2026-11[&currency=USD][&format=json|csv|html]`
//!   (admin, or a tenant token for its own tenant): the stored invoice once
//!   final, otherwise a draft computed from the ledger now.
//! - `POST /v1/invoices/finalize {"tenant_id", "period"[, "currency"]}`
//!   (admin): stores the invoice immutably with the next number
//!   (`INV-<year>-<series>-<6 digits>`, a series per tenant); 201 the first time, 200 with the same
//!   invoice when it was final already. Only closed periods can be finalized.
//!
//! See [`crate::invoices`] for the lines and the rounding.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, Body, Params};
use crate::auth::{Admin, Reader};
use crate::db::{self, Finalized, InvoiceInputs, InvoiceSource, NewInvoice, StoredInvoice};
use crate::error::{ApiError, ApiResult};
use crate::invoices::{self, from_minor, minor_digits, Line, Period, Rounding, Totals};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/invoices", get(get_invoice))
        .route("/v1/invoices/finalize", post(finalize))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoiceQuery {
    tenant_id: Option<String>,
    period: Option<String>,
    currency: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FinalizeBody {
    tenant_id: String,
    period: String,
    currency: Option<String>,
}

/// An invoice as shown: final (stored) or draft (computed now).
struct View {
    tenant_id: String,
    period: Period,
    currency: String,
    number: Option<String>,
    finalized_at: Option<DateTime<Utc>>,
    invoice: NewInvoice,
}

fn parse_period(v: Option<&str>) -> ApiResult<Period> {
    let v = v.ok_or_else(|| ApiError::BadRequest("period is required, e.g. 2026-11".into()))?;
    Period::parse(v).ok_or_else(|| {
        ApiError::BadRequest(format!("period must be a month written YYYY-MM, not {v:?}"))
    })
}

fn check_currency(v: &str) -> ApiResult<String> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(v.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "currency must be an ISO 4217 code such as \"USD\", not {v:?}"
        )))
    }
}

fn rounding() -> ApiResult<Rounding> {
    Rounding::from_env().map_err(ApiError::Internal)
}

/// The invoice currency: the one asked for, or the only one the tenant has
/// something in for the period (USD when there is nothing at all).
async fn pick_currency(
    state: &AppState,
    tenant: &str,
    period: Period,
    asked: Option<String>,
) -> ApiResult<String> {
    if let Some(c) = asked {
        return check_currency(&c);
    }
    let mut found = db::invoice_currencies(&state.pool, tenant, period).await?;
    match found.len() {
        0 => Ok("USD".to_string()),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::BadRequest(format!(
            "tenant {tenant} has usage in several currencies in {period} ({}); pass currency=",
            found.join(", ")
        ))),
    }
}

/// Lines and totals from the ledger sums (pure arithmetic in crate::invoices).
fn compute(inputs: InvoiceInputs, currency: &str, rounding: Rounding) -> ApiResult<NewInvoice> {
    let digits = minor_digits(currency);
    let lines = invoices::build_lines(&inputs.aggregates, digits, rounding)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let totals = invoices::totals(&lines, inputs.available_credit, digits);
    let subtotal_precise = lines
        .iter()
        .fold(Decimal::ZERO, |acc, l| acc.saturating_add(l.amount))
        .normalize();
    Ok(NewInvoice {
        minor_digits: digits,
        rounding: rounding.as_str().to_string(),
        subtotal_precise,
        totals,
        unpriced_requests: inputs.unpriced_requests,
        lines,
    })
}

fn from_stored(s: StoredInvoice, period: Period) -> View {
    View {
        tenant_id: s.tenant_id,
        period,
        currency: s.currency,
        number: Some(s.number),
        finalized_at: Some(s.finalized_at),
        invoice: NewInvoice {
            minor_digits: s.minor_digits,
            rounding: s.rounding,
            subtotal_precise: s.subtotal_precise,
            totals: s.totals,
            unpriced_requests: s.unpriced_requests,
            lines: s.lines,
        },
    }
}

async fn load(state: &AppState, tenant: &str, period: Period, currency: &str) -> ApiResult<View> {
    if let Some(stored) = db::find_invoice(&state.pool, tenant, period, currency).await? {
        return Ok(from_stored(stored, period));
    }
    let mut conn = state.pool.acquire().await?;
    let aggregates = db::invoice_aggregates(
        &mut conn,
        InvoiceSource::Unbilled {
            tenant_id: tenant,
            currency,
            period,
        },
    )
    .await?;
    let inputs = InvoiceInputs {
        aggregates,
        available_credit: db::available_credit(&mut conn, tenant, currency).await?,
        unpriced_requests: db::unpriced_requests(&mut conn, tenant, period).await?,
    };
    Ok(View {
        tenant_id: tenant.to_string(),
        period,
        currency: currency.to_string(),
        number: None,
        finalized_at: None,
        invoice: compute(inputs, currency, rounding()?)?,
    })
}

async fn get_invoice(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<InvoiceQuery>,
) -> ApiResult<Response> {
    let tenant = reader.scope(q.tenant_id)?.ok_or_else(|| {
        ApiError::BadRequest("tenant_id is required: an invoice is per tenant".into())
    })?;
    let period = parse_period(q.period.as_deref())?;
    let currency = pick_currency(&state, &tenant, period, q.currency).await?;
    let view = load(&state, &tenant, period, &currency).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(to_json(&view)).into_response()),
        Some("csv") => Ok(with_type(
            to_csv(&view),
            "text/csv; charset=utf-8",
            Some(format!(
                "attachment; filename=\"invoice-{}-{}.csv\"",
                file_safe(&view.tenant_id),
                view.period
            )),
        )),
        Some("html") => Ok(with_type(to_html(&view), "text/html; charset=utf-8", None)),
        Some("pdf") => {
            let pdf = crate::invoice_pdf::render(&to_pdf(&view))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut response = pdf.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/pdf"),
            );
            let disposition = format!(
                "attachment; filename=\"invoice-{}-{}.pdf\"",
                file_safe(&view.tenant_id),
                view.period
            );
            if let Ok(d) = header::HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, d);
            }
            Ok(response)
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "format must be json, csv, html or pdf, not {other:?}"
        ))),
    }
}

async fn finalize(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body,
) -> ApiResult<Response> {
    let b: FinalizeBody = parse_json(&body)?;
    if b.tenant_id.is_empty() || b.tenant_id.len() > 256 {
        return Err(ApiError::BadRequest(
            "tenant_id must be 1 to 256 bytes".into(),
        ));
    }
    let period = parse_period(Some(&b.period))?;
    let now = state.clock.now();
    if period.end() > now {
        return Err(ApiError::BadRequest(format!(
            "period {period} is still open until {}; only closed periods can be finalized",
            period
                .end()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    let currency = pick_currency(&state, &b.tenant_id, period, b.currency).await?;
    let rounding = rounding()?;
    let outcome = db::finalize_invoice(
        &state.pool,
        &b.tenant_id,
        period,
        &currency,
        now,
        |inputs| compute(inputs, &currency, rounding),
    )
    .await??;
    match outcome {
        Finalized::Created(s) => {
            Ok((StatusCode::CREATED, Json(to_json(&from_stored(s, period)))).into_response())
        }
        Finalized::Existing(s) => Ok(Json(to_json(&from_stored(s, period))).into_response()),
        Finalized::Empty => Err(ApiError::BadRequest(format!(
            "tenant {} has no billable {currency} usage for {period}",
            b.tenant_id
        ))),
    }
}

fn with_type(body: String, content_type: &'static str, disposition: Option<String>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    // The HTML page loads nothing: inline style only.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    if let Some(d) = disposition.and_then(|d| header::HeaderValue::from_str(&d).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, d);
    }
    response
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn money(minor: i64, digits: u32) -> String {
    from_minor(minor, digits).to_string()
}

fn line_json(l: &Line) -> Value {
    json!({
        "model": l.model,
        "token_class": l.token_class,
        "description": l.description,
        "quantity": l.quantity,
        "unit": l.unit,
        "unit_price": l.unit_price.map(|p| p.to_string()),
        "amount": l.amount.to_string(),
        "amount_minor": l.amount_minor,
        "adjusts_period": l.adjusts_period,
    })
}

fn to_json(v: &View) -> Value {
    let d = v.invoice.minor_digits;
    let Totals {
        subtotal_minor,
        credits_applied_minor,
        total_minor,
    } = v.invoice.totals;
    json!({
        "tenant_id": v.tenant_id,
        "period": v.period.to_string(),
        "period_start": v.period.start().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "period_end": v.period.end().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "currency": v.currency,
        "status": if v.number.is_some() { "final" } else { "draft" },
        "number": v.number,
        "finalized_at": v.finalized_at,
        "rounding": v.invoice.rounding,
        "minor_unit_digits": d,
        "lines": v.invoice.lines.iter().map(line_json).collect::<Vec<_>>(),
        "subtotal_precise": v.invoice.subtotal_precise.to_string(),
        "subtotal": money(subtotal_minor, d),
        "subtotal_minor": subtotal_minor,
        "credits_applied": money(credits_applied_minor, d),
        "credits_applied_minor": credits_applied_minor,
        "total": money(total_minor, d),
        "total_minor": total_minor,
        "unpriced_requests": v.invoice.unpriced_requests,
    })
}

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

fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

/// One row per line, then the subtotal, credits and total rows (`kind`).
fn to_csv(v: &View) -> String {
    let d = v.invoice.minor_digits;
    let number = v.number.clone().unwrap_or_default();
    let status = if v.number.is_some() { "final" } else { "draft" };
    let period = v.period.to_string();
    let mut out = String::new();
    out.push_str("kind,invoice,status,tenant_id,period,currency,model,token_class,description,adjusts_period,quantity,unit,unit_price,amount,amount_minor\n");
    for l in &v.invoice.lines {
        csv_row(
            &mut out,
            &[
                "line",
                &number,
                status,
                &v.tenant_id,
                &period,
                &v.currency,
                &l.model,
                &l.token_class,
                &l.description,
                l.adjusts_period.as_deref().unwrap_or(""),
                &l.quantity.to_string(),
                &l.unit,
                &l.unit_price.map(|p| p.to_string()).unwrap_or_default(),
                &l.amount.to_string(),
                &l.amount_minor.to_string(),
            ],
        );
    }
    let t = v.invoice.totals;
    for (kind, minor, precise) in [
        (
            "subtotal",
            t.subtotal_minor,
            v.invoice.subtotal_precise.to_string(),
        ),
        (
            "credits_applied",
            -t.credits_applied_minor,
            money(-t.credits_applied_minor, d),
        ),
        ("total", t.total_minor, money(t.total_minor, d)),
    ] {
        csv_row(
            &mut out,
            &[
                kind,
                &number,
                status,
                &v.tenant_id,
                &period,
                &v.currency,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                &precise,
                &minor.to_string(),
            ],
        );
    }
    out
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const INVOICE_CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;margin:2.5em auto;max-width:60em;padding:0 1.5em}
h1{font-size:1.6em;margin:0}
.meta{display:flex;justify-content:space-between;gap:2em;margin:1em 0 2em}
.meta dl{display:grid;grid-template-columns:auto auto;gap:.2em 1em;margin:0}
.meta dt{color:#57606a}
.badge{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.8em;vertical-align:middle;margin-left:.5em}
.draft{background:#fff3cd;color:#7a5b00}.final{background:#dafbe1;color:#116329}
table{border-collapse:collapse;width:100%}
th,td{padding:.45em .6em;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tfoot td{border:0}
tfoot tr.total td{font-weight:700;font-size:1.1em;border-top:2px solid #1b1f24}
.precise{color:#57606a;font-size:.85em}
.notes{color:#57606a;font-size:.9em;margin-top:2em}
@media print{body{margin:0;max-width:none}.badge{border:1px solid #999}}
";

/// The invoice's figures as the PDF shows them: the same as JSON, CSV and
/// HTML (amounts rounded once to minor units, unit prices as stored).
fn to_pdf(v: &View) -> crate::invoice_pdf::PdfInvoice {
    let d = v.invoice.minor_digits;
    let t = v.invoice.totals;
    let cur = &v.currency;
    let mut notes = vec![format!(
        "Each line is the exact sum of per-request charges, rounded once to the currency's minor unit ({}); \
         the subtotal is the sum of the rounded lines (exact sum {} {cur}). Adjustment lines bill usage of an \
         earlier, already finalized period that reached the ledger after that invoice was finalized.",
        v.invoice.rounding.replace('_', "-"),
        v.invoice.subtotal_precise,
    )];
    if v.invoice.unpriced_requests > 0 {
        notes.push(format!(
            "{} request(s) of this period had no price and are not billed here until priced.",
            v.invoice.unpriced_requests
        ));
    }
    crate::invoice_pdf::PdfInvoice {
        title: match &v.number {
            Some(n) => format!("Invoice {n}"),
            None => "Draft invoice".to_string(),
        },
        number: v.number.clone(),
        tenant_id: v.tenant_id.clone(),
        period: v.period.to_string(),
        period_range: format!(
            "{} – {} (UTC, end exclusive)",
            v.period.start().format("%Y-%m-%d"),
            v.period.end().format("%Y-%m-%d")
        ),
        currency: cur.clone(),
        issued: v
            .finalized_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "not yet (draft)".to_string()),
        lines: v
            .invoice
            .lines
            .iter()
            .map(|l| crate::invoice_pdf::PdfLine {
                description: l.description.clone(),
                quantity: format!("{} {}", l.quantity, l.unit),
                unit_price: l.unit_price.map_or_else(
                    || "—".to_string(),
                    |p| {
                        format!(
                            "{p} {}",
                            if l.unit == "tokens" {
                                "/ 1M tokens"
                            } else {
                                "/ request"
                            }
                        )
                    },
                ),
                amount: format!("{} {cur}", money(l.amount_minor, d)),
            })
            .collect(),
        subtotal: format!("{} {cur}", money(t.subtotal_minor, d)),
        credits: format!("{} {cur}", money(-t.credits_applied_minor, d)),
        total: format!("{} {cur}", money(t.total_minor, d)),
        notes,
    }
}

fn to_html(v: &View) -> String {
    let d = v.invoice.minor_digits;
    let t = v.invoice.totals;
    let cur = esc(&v.currency);
    let (badge, title) = match &v.number {
        Some(n) => (
            "<span class=\"badge final\">final</span>".to_string(),
            format!("Invoice {}", esc(n)),
        ),
        None => (
            "<span class=\"badge draft\">draft</span>".to_string(),
            "Draft invoice".to_string(),
        ),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · {tenant} · {period}</title><style>{INVOICE_CSS}</style></head><body>",
        tenant = esc(&v.tenant_id),
        period = v.period,
    );
    let _ = write!(
        h,
        "<header class=\"meta\"><div><h1 id=\"invoice-title\">{title}{badge}</h1><p>Usage of LLM APIs, {period}</p></div><dl>\
         <dt>Tenant</dt><dd id=\"invoice-tenant\">{tenant}</dd>\
         <dt>Period</dt><dd>{start} – {end} (UTC, end exclusive)</dd>\
         <dt>Currency</dt><dd>{cur}</dd>\
         <dt>Issued</dt><dd>{issued}</dd></dl></header>",
        period = v.period,
        tenant = esc(&v.tenant_id),
        start = v.period.start().format("%Y-%m-%d"),
        end = v.period.end().format("%Y-%m-%d"),
        issued = v
            .finalized_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "not yet (draft)".to_string()),
    );
    h.push_str("<table id=\"invoice-lines\"><thead><tr><th>Description</th><th>Class</th><th class=\"n\">Quantity</th><th class=\"n\">Unit price</th><th class=\"n\">Amount</th></tr></thead><tbody>");
    for l in &v.invoice.lines {
        let per = if l.unit == "tokens" {
            "/ 1M tokens"
        } else {
            "/ request"
        };
        let _ = write!(
            h,
            "<tr data-class=\"{class}\"><td>{desc}</td><td>{class}</td><td class=\"n\">{qty} {unit}</td><td class=\"n\">{price}</td><td class=\"n\">{amount} {cur}<div class=\"precise\">{precise}</div></td></tr>",
            class = esc(&l.token_class),
            desc = esc(&l.description),
            qty = l.quantity,
            unit = esc(&l.unit),
            price = l
                .unit_price
                .map(|p| format!("{p} {per}"))
                .unwrap_or_else(|| "—".to_string()),
            amount = money(l.amount_minor, d),
            precise = esc(&l.amount.to_string()),
        );
    }
    if v.invoice.lines.is_empty() {
        h.push_str("<tr><td colspan=\"5\">No billable usage.</td></tr>");
    }
    let _ = write!(
        h,
        "</tbody><tfoot>\
         <tr><td colspan=\"4\" class=\"n\">Subtotal</td><td class=\"n\" id=\"invoice-subtotal\">{sub} {cur}</td></tr>\
         <tr><td colspan=\"4\" class=\"n\">Prepaid credits applied</td><td class=\"n\" id=\"invoice-credits\">{cred} {cur}</td></tr>\
         <tr class=\"total\"><td colspan=\"4\" class=\"n\">Total due</td><td class=\"n\" id=\"invoice-total\">{total} {cur}</td></tr>\
         </tfoot></table>",
        sub = money(t.subtotal_minor, d),
        cred = money(-t.credits_applied_minor, d),
        total = money(t.total_minor, d),
    );
    let _ = write!(
        h,
        "<p class=\"notes\">Each line is the exact sum of per-request charges (small grey figure), rounded once to the currency's minor unit ({rounding}); the subtotal is the sum of the rounded lines (exact sum {precise} {cur}). Adjustment lines bill usage of an earlier, already finalized period that reached the ledger after that invoice was finalized.{unpriced}</p></body></html>",
        rounding = esc(&v.invoice.rounding).replace('_', "-"),
        precise = esc(&v.invoice.subtotal_precise.to_string()),
        unpriced = if v.invoice.unpriced_requests > 0 {
            format!(
                " {} request(s) of this period had no price and are not billed here until priced.",
                v.invoice.unpriced_requests
            )
        } else {
            String::new()
        },
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_and_file_names_are_safe() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(file_safe("acme/../x y"), "acme____x_y");
        assert_eq!(money(443, 2), "4.43");
        assert_eq!(money(-5, 2), "-0.05");
        assert_eq!(money(443, 0), "443");
    }
}
