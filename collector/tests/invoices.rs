//! Invoices against the real PostgreSQL: hand-computed lines and rounding of
//! a seeded month, finalization (numbered, immutable, idempotent), late usage
//! billed as an adjustment on the next invoice, CSV and HTML.

mod common;

use axum::http::StatusCode;
use chrono::{Datelike, Months, TimeZone, Utc};
use common::*;
use serde_json::{json, Value};
use sqlx::PgPool;

fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .unwrap()
        .timestamp_millis()
}

/// The scenario's "now": mid-November 2026, so October is closed and
/// November open whatever the real date (the fixtures are dated around it).
async fn as_of_november(pool: PgPool) -> collector::AppState {
    let s = state(pool).await;
    s.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0).unwrap());
    s
}

#[allow(clippy::too_many_arguments)]
fn rec(
    id: &str,
    tenant: &str,
    provider: &str,
    model: &str,
    at_ms: i64,
    input: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
    output: u64,
    reasoning: u64,
) -> Value {
    json!({
        "request_id": id, "tenant_id": tenant, "api_key_id": format!("key-{tenant}"),
        "provider": provider, "model": model, "http_status": 200, "streamed": false,
        "started_at_ms": at_ms, "input_tokens": input, "output_tokens": output,
        "cache_read_tokens": cache_read, "cache_write_tokens": cache_write,
        "cache_write_1h_tokens": cache_write_1h, "reasoning_tokens": reasoning
    })
}

/// The acme October 2026 month. Bundled list prices (USD per million):
/// gpt-4o-mini 0.15 in / 0.075 cached / 0.60 out (reasoning at the output
/// price); claude-sonnet-4-5 3.00 in / 0.30 cached / 3.75 5-min write /
/// 6.00 1-hour write / 15.00 out.
fn acme_october() -> Vec<Value> {
    vec![
        // 400 000 uncached + 600 000 cached in, 50 000 out.
        rec(
            "a1",
            "acme",
            "openai",
            "gpt-4o-mini",
            ms(2026, 10, 3, 9),
            1_000_000,
            600_000,
            0,
            0,
            50_000,
            0,
        ),
        // 300 000 uncached in, 25 000 out, all of it reasoning.
        rec(
            "a2",
            "acme",
            "openai",
            "gpt-4o-mini",
            ms(2026, 10, 20, 14),
            300_000,
            0,
            0,
            0,
            25_000,
            25_000,
        ),
        // 30 000 uncached + 100 000 cached + 20 000 5-min writes, 10 100 out.
        rec(
            "a3",
            "acme",
            "anthropic",
            "claude-sonnet-4-5",
            ms(2026, 10, 11, 8),
            150_000,
            100_000,
            20_000,
            0,
            10_100,
            0,
        ),
        // 10 000 1-hour cache writes only.
        rec(
            "a4",
            "acme",
            "anthropic",
            "claude-sonnet-4-5",
            ms(2026, 10, 31, 23),
            10_000,
            0,
            10_000,
            10_000,
            0,
            0,
        ),
    ]
}

fn line<'a>(inv: &'a Value, model: &str, class: &str) -> &'a Value {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == model && l["token_class"] == class)
        .unwrap_or_else(|| panic!("no {model}/{class} line in {inv:#}"))
}

/// (quantity, unit_price, amount, amount_minor) of every line, in order.
fn lines(inv: &Value) -> Vec<(String, String, i64, String, String, i64)> {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["model"].as_str().unwrap().to_string(),
                l["token_class"].as_str().unwrap().to_string(),
                l["quantity"].as_i64().unwrap(),
                l["unit_price"].as_str().unwrap_or("").to_string(),
                l["amount"].as_str().unwrap().to_string(),
                l["amount_minor"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn row(
    model: &str,
    class: &str,
    q: i64,
    price: &str,
    amount: &str,
    minor: i64,
) -> (String, String, i64, String, String, i64) {
    (
        model.into(),
        class.into(),
        q,
        price.into(),
        amount.into(),
        minor,
    )
}

async fn get(s: &collector::AppState, uri: &str, token: &str) -> (StatusCode, Value) {
    call(s, "GET", uri, Some(token), None).await
}

async fn finalize(s: &collector::AppState, tenant: &str, period: &str) -> (StatusCode, Value) {
    call(
        s,
        "POST",
        "/v1/invoices/finalize",
        Some(ADMIN),
        Some(json!({"tenant_id": tenant, "period": period})),
    )
    .await
}

#[sqlx::test(migrations = "../migrations")]
async fn seeded_month_has_hand_computed_lines_rounded_once(pool: PgPool) {
    let s = as_of_november(pool.clone()).await;
    ingest(&s, acme_october()).await;
    // November usage and another tenant must not leak into acme's October.
    ingest(
        &s,
        vec![
            rec(
                "n1",
                "acme",
                "openai",
                "gpt-4o-mini",
                ms(2026, 11, 2, 9),
                5,
                0,
                0,
                0,
                5,
                0,
            ),
            rec(
                "g1",
                "globex",
                "openai",
                "gpt-4o-mini",
                ms(2026, 10, 5, 9),
                77,
                0,
                0,
                0,
                7,
                0,
            ),
        ],
    )
    .await;

    let (status, inv) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-10", ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{inv}");
    assert_eq!(inv["status"], "draft");
    assert_eq!(inv["number"], Value::Null);
    assert_eq!(inv["currency"], "USD");
    assert_eq!(inv["rounding"], "half_even");
    assert_eq!(inv["period_start"], "2026-10-01T00:00:00Z");
    assert_eq!(inv["period_end"], "2026-11-01T00:00:00Z");
    // Line by line (half-even to the cent; the ties are marked):
    // claude input   30 000 × 3.00/M  = 0.09    →  9¢
    // claude cached 100 000 × 0.30/M  = 0.03    →  3¢
    // claude writes 20 000 × 3.75/M + 10 000 × 6.00/M = 0.075 + 0.06
    //               = 0.135 (avg 4.50/M)          → 13.5¢ tie → 14¢ (even)
    // claude output  10 100 × 15/M    = 0.1515  → 15¢
    // gpt input     700 000 × 0.15/M  = 0.105   → 10.5¢ tie → 10¢ (even)
    // gpt cached    600 000 × 0.075/M = 0.045   → 4.5¢ tie  → 4¢ (even)
    // gpt output     75 000 × 0.60/M  = 0.045   → 4.5¢ tie  → 4¢ (even)
    assert_eq!(
        lines(&inv),
        vec![
            row("claude-sonnet-4-5", "input", 30_000, "3", "0.09", 9),
            row(
                "claude-sonnet-4-5",
                "cached_input",
                100_000,
                "0.3",
                "0.03",
                3
            ),
            row(
                "claude-sonnet-4-5",
                "cache_write",
                30_000,
                "4.5",
                "0.135",
                14
            ),
            row("claude-sonnet-4-5", "output", 10_100, "15", "0.1515", 15),
            row("gpt-4o-mini", "input", 700_000, "0.15", "0.105", 10),
            row("gpt-4o-mini", "cached_input", 600_000, "0.075", "0.045", 4),
            row("gpt-4o-mini", "output", 75_000, "0.6", "0.045", 4),
        ]
    );
    // The subtotal is the sum of the rounded lines: 59¢, although the exact
    // sum 0.6015 would round to 60¢.
    assert_eq!(inv["subtotal_precise"], "0.6015");
    assert_eq!(inv["subtotal"], "0.59");
    assert_eq!(inv["subtotal_minor"], 59);
    assert_eq!(inv["credits_applied"], "0.00");
    assert_eq!(inv["total"], "0.59");
    assert_eq!(inv["total_minor"], 59);
    // The precise amounts add up to the ledger's own costs.
    let ledger: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT sum(cost) FROM transactions WHERE tenant_id = 'acme' AND occurred_at < '2026-11-01'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ledger.normalize().to_string(), "0.6015");

    // Prepaid credit (the credit ledger of the budgets feature) is applied
    // up to the subtotal, in whole cents rounded down: 0.257 → 0.25.
    sqlx::query("INSERT INTO credits (tenant_id, amount, currency, reason, created_by) VALUES ('acme', 0.257, 'USD', 'prepaid', 'test')")
        .execute(&pool)
        .await
        .unwrap();
    let (_, inv) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-10", ADMIN).await;
    assert_eq!(
        (
            &inv["credits_applied"],
            &inv["credits_applied_minor"],
            &inv["total"],
            &inv["total_minor"]
        ),
        (&json!("0.25"), &json!(25), &json!("0.34"), &json!(34))
    );

    // A discount agreement shows as its own negative line: 1 000 000 input
    // tokens at 0.15/M = 0.15, 10 % off = -0.015 → -1.5¢ tie → -2¢ (even).
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tenants/initech/pricing",
        Some(ADMIN),
        Some(json!({"discount": {"percent": "10"}, "effective_from": "2026-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.reload_prices().await.unwrap();
    ingest(
        &s,
        vec![rec(
            "i1",
            "initech",
            "openai",
            "gpt-4o-mini",
            ms(2026, 10, 9, 9),
            1_000_000,
            0,
            0,
            0,
            0,
            0,
        )],
    )
    .await;
    let (_, inv) = get(&s, "/v1/invoices?tenant_id=initech&period=2026-10", ADMIN).await;
    assert_eq!(
        lines(&inv),
        vec![
            row("gpt-4o-mini", "input", 1_000_000, "0.15", "0.15", 15),
            row("gpt-4o-mini", "discount", 1, "", "-0.015", -2),
        ]
    );
    assert_eq!(
        (&inv["subtotal"], &inv["total"]),
        (&json!("0.13"), &json!("0.13"))
    );

    // Bad requests.
    for (uri, want) in [
        ("/v1/invoices?period=2026-10", "tenant_id is required"),
        ("/v1/invoices?tenant_id=acme&period=2026-13", "YYYY-MM"),
        ("/v1/invoices?tenant_id=acme", "period is required"),
        (
            "/v1/invoices?tenant_id=acme&period=2026-10&format=xml",
            "format",
        ),
        (
            "/v1/invoices?tenant_id=acme&period=2026-10&currency=usd",
            "ISO 4217",
        ),
    ] {
        let (status, body) = get(&s, uri, ADMIN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(want),
            "{uri}: {body}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn finalized_invoice_is_numbered_immutable_and_late_usage_moves_on(pool: PgPool) {
    let s = as_of_november(pool.clone()).await;
    ingest(&s, acme_october()).await;
    let (_, draft) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-10", ADMIN).await;

    // The open month cannot be finalized; nor can a tenant token finalize.
    let (status, body) = finalize(&s, "acme", "2026-11").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("still open"));
    let (status, body) = finalize(&s, "nobody", "2026-09").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, fin) = finalize(&s, "acme", "2026-10").await;
    assert_eq!(status, StatusCode::CREATED, "{fin}");
    assert_eq!(fin["status"], "final");
    assert_eq!(fin["number"], "INV-2026-822B33AD87-000001");
    assert!(fin["finalized_at"].is_string());
    // Same figures as the draft.
    assert_eq!(fin["lines"], draft["lines"]);
    assert_eq!(fin["total_minor"], 59);

    // Finalizing again is a no-op answering the same invoice.
    let (status, again) = finalize(&s, "acme", "2026-10").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, fin);

    // The stored rows cannot be changed, even by SQL.
    let err = sqlx::query("UPDATE invoice_lines SET amount_minor = 0")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    assert!(sqlx::query("DELETE FROM invoices")
        .execute(&pool)
        .await
        .is_err());

    // Late usage of October (it happened on Oct 31, arrives now), plus
    // regular November usage.
    ingest(
        &s,
        vec![
            // 1 000 000 input at 0.15/M = 0.15.
            rec(
                "late1",
                "acme",
                "openai",
                "gpt-4o-mini",
                ms(2026, 10, 31, 22),
                1_000_000,
                0,
                0,
                0,
                0,
                0,
            ),
            // 100 000 output at 0.60/M = 0.06.
            rec(
                "late2",
                "acme",
                "openai",
                "gpt-4o-mini",
                ms(2026, 10, 15, 1),
                0,
                0,
                0,
                0,
                100_000,
                0,
            ),
            rec(
                "late3",
                "acme",
                "anthropic",
                "claude-sonnet-4-5",
                ms(2026, 10, 15, 2),
                0,
                0,
                0,
                0,
                1_000,
                0,
            ),
            // 100 000 input at 0.15/M = 0.015 → 1.5¢ tie → 2¢.
            rec(
                "nov1",
                "acme",
                "openai",
                "gpt-4o-mini",
                ms(2026, 11, 2, 9),
                100_000,
                0,
                0,
                0,
                0,
                0,
            ),
        ],
    )
    .await;
    let (status, after) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-10", ADMIN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, fin, "a final invoice never changes");
    let (_, csv_before) = call_raw(
        &s,
        "GET",
        "/v1/invoices?tenant_id=acme&period=2026-10&format=csv",
        Some(ADMIN),
        None,
    )
    .await;

    // November's draft carries October's late usage as adjustment lines:
    // gpt-4o-mini 0.15 + 0.06 = 0.21 over 2 requests; claude 1 000 × 15/M = 0.015 → 2¢.
    let (_, nov) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-11", ADMIN).await;
    assert_eq!(nov["status"], "draft");
    assert_eq!(
        lines(&nov),
        vec![
            row("gpt-4o-mini", "input", 100_000, "0.15", "0.015", 2),
            row("claude-sonnet-4-5", "adjustment", 1, "0.015", "0.015", 2),
            row("gpt-4o-mini", "adjustment", 2, "0.105", "0.21", 21),
        ]
    );
    let adj = line(&nov, "gpt-4o-mini", "adjustment");
    assert_eq!(adj["adjusts_period"], "2026-10");
    assert_eq!(adj["unit"], "requests");
    assert!(adj["description"].as_str().unwrap().contains("2026-10"));
    assert_eq!(nov["total_minor"], 25);

    // The CSV of the final invoice did not move either.
    let (_, csv_after) = call_raw(
        &s,
        "GET",
        "/v1/invoices?tenant_id=acme&period=2026-10&format=csv",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(csv_before, csv_after);

    // A second tenant's invoice takes the next number.
    ingest(
        &s,
        vec![rec(
            "g1",
            "globex",
            "openai",
            "gpt-4o-mini",
            ms(2026, 10, 5, 9),
            100_000,
            0,
            0,
            0,
            0,
            0,
        )],
    )
    .await;
    let (status, g) = finalize(&s, "globex", "2026-10").await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    // Globex's first invoice is the first of its own series: its number
    // says nothing of acme's.
    assert_eq!(g["number"], "INV-2026-5BC1A08D28-000001");
}

#[sqlx::test(migrations = "../migrations")]
async fn late_usage_is_billed_once_on_the_next_finalized_invoice(pool: PgPool) {
    let s = as_of_november(pool.clone()).await;
    ingest(
        &s,
        vec![
            rec(
                "s1",
                "acme",
                "openai",
                "gpt-4o-mini",
                ms(2026, 9, 10, 9),
                1_000_000,
                0,
                0,
                0,
                0,
                0,
            ),
            rec(
                "o1",
                "acme",
                "openai",
                "gpt-4o-mini",
                ms(2026, 10, 10, 9),
                0,
                0,
                0,
                0,
                1_000_000,
                0,
            ),
        ],
    )
    .await;
    let (status, sep) = finalize(&s, "acme", "2026-09").await;
    assert_eq!(status, StatusCode::CREATED, "{sep}");
    assert_eq!(sep["total"], "0.15");
    // Late September usage arrives before October is finalized.
    ingest(
        &s,
        vec![rec(
            "s2",
            "acme",
            "openai",
            "gpt-4o-mini",
            ms(2026, 9, 30, 23),
            2_000_000,
            0,
            0,
            0,
            0,
            0,
        )],
    )
    .await;
    let (status, oct) = finalize(&s, "acme", "2026-10").await;
    assert_eq!(status, StatusCode::CREATED, "{oct}");
    assert_eq!(
        lines(&oct),
        vec![
            row("gpt-4o-mini", "output", 1_000_000, "0.6", "0.6", 60),
            row("gpt-4o-mini", "adjustment", 1, "0.3", "0.3", 30),
        ]
    );
    assert_eq!(oct["total"], "0.90");
    // Billed once: November's draft has nothing of September any more,
    // and the September invoice is unchanged.
    let (_, nov) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-11", ADMIN).await;
    assert_eq!(nov["lines"], json!([]));
    assert_eq!(nov["total_minor"], 0);
    let (_, sep_again) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-09", ADMIN).await;
    assert_eq!(sep_again, sep);
    let billed: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_items")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(billed, 3);
}

/// Acme's October finalized in November, and a read token of acme's.
async fn acme_october_final_with_token(pool: PgPool) -> (collector::AppState, Value, String) {
    let s = as_of_november(pool).await;
    ingest(&s, acme_october()).await;
    let (status, fin) = finalize(&s, "acme", "2026-10").await;
    assert_eq!(status, StatusCode::CREATED, "{fin}");
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": "acme", "name": "billing"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let acme = body["token"].as_str().unwrap().to_string();
    (s, fin, acme)
}

#[sqlx::test(migrations = "../migrations")]
async fn tenant_tokens_read_their_own_invoices_and_formats_show_the_figures(pool: PgPool) {
    let (s, fin, acme) = acme_october_final_with_token(pool).await;

    let (status, own) = get(&s, "/v1/invoices?period=2026-10", &acme).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own, fin);
    let (status, _) = get(&s, "/v1/invoices?tenant_id=globex&period=2026-10", &acme).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &s,
        "POST",
        "/v1/invoices/finalize",
        Some(&acme),
        Some(json!({"tenant_id": "acme", "period": "2026-09"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-10", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, csv) = call_raw(
        &s,
        "GET",
        "/v1/invoices?period=2026-10&format=csv",
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 7 + 3, "{csv}");
    assert!(rows[0].starts_with("kind,invoice,status,tenant_id,period,currency,model,token_class"));
    assert!(
        rows.contains(&"line,INV-2026-822B33AD87-000001,final,acme,2026-10,USD,claude-sonnet-4-5,cache_write,claude-sonnet-4-5: cache write tokens,,30000,tokens,4.5,0.135,14"),
        "{csv}"
    );
    assert!(
        rows.contains(
            &"subtotal,INV-2026-822B33AD87-000001,final,acme,2026-10,USD,,,,,,,,0.6015,59"
        ),
        "{csv}"
    );
    assert!(
        rows.contains(
            &"credits_applied,INV-2026-822B33AD87-000001,final,acme,2026-10,USD,,,,,,,,0.00,0"
        ),
        "{csv}"
    );
    assert!(
        rows.contains(&"total,INV-2026-822B33AD87-000001,final,acme,2026-10,USD,,,,,,,,0.59,59"),
        "{csv}"
    );

    let (status, html) = call_raw(
        &s,
        "GET",
        "/v1/invoices?period=2026-10&format=html",
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(html).unwrap();
    for want in [
        "Invoice INV-2026-822B33AD87-000001",
        "<td class=\"n\" id=\"invoice-subtotal\">0.59 USD</td>",
        "<td class=\"n\" id=\"invoice-total\">0.59 USD</td>",
        "<td class=\"n\" id=\"invoice-credits\">0.00 USD</td>",
        "0.14 USD<div class=\"precise\">0.135</div>",
        "30000 tokens",
        "4.5 / 1M tokens",
    ] {
        assert!(html.contains(want), "{want} not in {html}");
    }
    assert!(!html.contains("<script"), "printable page, no scripts");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    std::fs::create_dir_all("../tests/output/invoices").unwrap();
    std::fs::write("../tests/output/invoices/acme-2026-10.html", &html).unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_finalizations_create_one_invoice_and_bill_each_row_once(pool: PgPool) {
    let s = as_of_november(pool.clone()).await;
    ingest(&s, acme_october()).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            finalize(&s, "acme", "2026-10").await
        }));
    }
    let mut created = 0;
    let mut numbers = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert!(status.is_success(), "{status} {body}");
        created += usize::from(status == StatusCode::CREATED);
        numbers.insert(body["number"].as_str().unwrap().to_string());
        assert_eq!(body["total_minor"], 59);
    }
    assert_eq!(created, 1);
    assert_eq!(
        numbers.into_iter().collect::<Vec<_>>(),
        ["INV-2026-822B33AD87-000001"]
    );
    let (invoices, items, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM invoices), (SELECT count(*) FROM invoice_items),
            (SELECT last FROM invoice_series_counters WHERE tenant_id = 'acme')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((invoices, items, last), (1, 4, 1), "numbers stay gapless");
}

/// A client that reuses one `x-request-id` gets a ledger row per request
/// (the key includes the start time), so the invoice bills both; a reused
/// id arriving after finalization is late usage, not already billed.
#[sqlx::test(migrations = "../migrations")]
async fn a_reused_request_id_is_billed_once_per_request(pool: PgPool) {
    let s = as_of_november(pool.clone()).await;
    let reused = |at| {
        rec(
            "dup",
            "acme",
            "openai",
            "gpt-4o-mini",
            at,
            1_000_000,
            0,
            0,
            0,
            0,
            0,
        )
    };
    ingest(
        &s,
        vec![reused(ms(2026, 9, 10, 9)), reused(ms(2026, 9, 11, 9))],
    )
    .await;
    let (status, sep) = finalize(&s, "acme", "2026-09").await;
    assert_eq!(status, StatusCode::CREATED, "{sep}");
    // 2 × 1M input tokens at $0.15 per million.
    assert_eq!(sep["total"], "0.30");
    ingest(&s, vec![reused(ms(2026, 9, 12, 9))]).await;
    let (status, oct) = finalize(&s, "acme", "2026-10").await;
    assert_eq!(status, StatusCode::CREATED, "{oct}");
    assert_eq!(
        lines(&oct),
        vec![row("gpt-4o-mini", "adjustment", 1, "0.15", "0.15", 15)]
    );
    let (_, sep_again) = get(&s, "/v1/invoices?tenant_id=acme&period=2026-09", ADMIN).await;
    assert_eq!(sep_again, sep);
    let billed: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_items")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(billed, 3);
}

/// Runs at `test_now()`, which the ageing pass of `./dev test` pins to
/// awkward instants (a month's last minute, New Year, 29 February): the
/// month of "now" stays open to its last instant and closes at its end, and
/// the invoice is numbered in the year it is finalized.
#[sqlx::test(migrations = "../migrations")]
async fn the_current_month_closes_at_its_end_on_the_collectors_clock(pool: PgPool) {
    let s = state(pool.clone()).await;
    let now = s.clock.now();
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    let end = start + Months::new(1);
    let period = start.format("%Y-%m").to_string();
    ingest(
        &s,
        vec![
            record("first", "acme", "gpt-4o-mini", start.timestamp_millis()),
            record("latest", "acme", "gpt-4o-mini", now.timestamp_millis()),
        ],
    )
    .await;
    let (_, draft) = get(
        &s,
        &format!("/v1/invoices?tenant_id=acme&period={period}"),
        ADMIN,
    )
    .await;
    assert_eq!(draft["status"], "draft", "{draft}");
    assert_eq!(
        draft["period_end"],
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    for at in [now, end - chrono::Duration::milliseconds(1)] {
        s.clock.set(at);
        let (status, body) = finalize(&s, "acme", &period).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "at {at}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("still open"), "{message}");
        assert!(
            message.contains(&end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "{message}"
        );
    }

    s.clock.set(end);
    let (status, fin) = finalize(&s, "acme", &period).await;
    assert_eq!(status, StatusCode::CREATED, "{fin}");
    assert_eq!(
        fin["number"],
        format!("INV-{:04}-822B33AD87-000001", end.year())
    );
    assert_eq!(
        fin["finalized_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        end
    );
    // The month that began at `end` is the open one now.
    let next = end.format("%Y-%m").to_string();
    let (status, body) = finalize(&s, "acme", &next).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// `pdftotext -layout` and `pdfinfo` (Debian's poppler-utils, installed by
/// `./dev setup`) on a PDF: its text and page count.
fn poppler(pdf: &[u8]) -> (String, u32) {
    let dir = std::env::temp_dir().join(format!("invoice-pdf-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invoice.pdf");
    std::fs::write(&file, pdf).unwrap();
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} (poppler-utils) must be installed: {e}"));
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let path = file.to_str().unwrap();
    let text = run("pdftotext", &["-layout", path, "-"]);
    let info = run("pdfinfo", &[path]);
    let fonts = run("pdffonts", &[path]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        fonts.lines().skip(2).all(|l| l.contains(" yes ")),
        "every font embedded:\n{fonts}"
    );
    assert!(
        fonts.contains("TrueType") && fonts.lines().count() > 2,
        "{fonts}"
    );
    let pages = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .map(|p| p.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no page count in\n{info}"));
    (text, pages)
}

#[sqlx::test(migrations = "../migrations")]
async fn pdf_invoices_hold_every_line_and_the_total_on_the_right_number_of_pages(pool: PgPool) {
    let (s, fin, acme) = acme_october_final_with_token(pool).await;
    let uri = "/v1/invoices?period=2026-10&format=pdf";
    let (status, pdf) = call_raw(&s, "GET", uri, Some(&acme), None).await;
    assert_eq!(status, StatusCode::OK);
    let (text, pages) = poppler(&pdf);
    assert_eq!(pages, 1, "{text}");
    // The same figures as JSON: the number, every line's description,
    // quantity and rounded amount, the subtotal, credits and total.
    assert!(
        text.contains("Invoice INV-2026-822B33AD87-000001"),
        "{text}"
    );
    assert!(
        text.contains("acme") && text.contains("2026-10-01 – 2026-11-01"),
        "{text}"
    );
    let digits = 2;
    let money = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);
    for line in fin["lines"].as_array().unwrap() {
        let desc = line["description"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.contains(desc))
            .unwrap_or_else(|| panic!("{desc} not in\n{text}"));
        let minor = line["amount_minor"].as_i64().unwrap();
        assert!(row.contains(&format!("{} USD", money(minor))), "{row}");
        assert!(
            row.contains(&format!("{} tokens", line["quantity"])),
            "{row}"
        );
    }
    assert_eq!(digits, fin["minor_digits"].as_i64().unwrap_or(2));
    for (label, minor) in [
        ("Subtotal", fin["subtotal_minor"].as_i64().unwrap()),
        ("Total due", fin["total_minor"].as_i64().unwrap()),
    ] {
        let row = text.lines().find(|l| l.contains(label)).unwrap();
        assert!(
            row.contains(&format!("{} USD", money(minor))),
            "{label}: {row}"
        );
    }
    // Another tenant's invoice: 403 as for every format.
    let (status, _) = call_raw(
        &s,
        "GET",
        "/v1/invoices?tenant_id=globex&period=2026-10&format=pdf",
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A long invoice: 40 models priced by the admin, two lines each.
    for i in 0..40 {
        let (status, body) = call(
            &s,
            "PUT",
            &format!("/v1/prices/house-model-{i:02}"),
            Some(ADMIN),
            Some(json!({"input": "1.00", "output": "2.00", "effective_from": "2026-01-01T00:00:00Z"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    s.reload_prices().await.unwrap();
    let october = Utc
        .with_ymd_and_hms(2026, 10, 10, 12, 0, 0)
        .unwrap()
        .timestamp_millis();
    let records: Vec<Value> = (0..40)
        .map(|i| {
            rec(
                &format!("big-{i}"),
                "big",
                "openai",
                &format!("house-model-{i:02}"),
                october + i,
                1_000_000,
                0,
                0,
                0,
                500_000,
                0,
            )
        })
        .collect();
    ingest(&s, records).await;
    let (status, big) = finalize(&s, "big", "2026-10").await;
    assert_eq!(status, StatusCode::CREATED, "{big}");
    let lines = big["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 80, "{big}");
    let (status, pdf) = call_raw(
        &s,
        "GET",
        "/v1/invoices?tenant_id=big&period=2026-10&format=pdf",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (text, pages) = poppler(&pdf);
    assert_eq!(
        pages as usize,
        collector::invoice_pdf::page_count(80),
        "{text}"
    );
    assert_eq!(pages, 3);
    for l in lines {
        assert!(
            text.contains(l["description"].as_str().unwrap()),
            "{l} not in the PDF"
        );
    }
    assert!(text.contains("Page 3 of 3"), "{text}");
    // 40 × (1 M × $1 + 0.5 M × $2) = $80.00.
    let total = text.lines().find(|l| l.contains("Total due")).unwrap();
    assert!(total.contains("80.00 USD"), "{total}");
}
