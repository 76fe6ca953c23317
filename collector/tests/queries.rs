//! Query, pricing-tool, reconciliation, metrics and OpenAPI endpoints,
//! against the real PostgreSQL, with hand-computed figures.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use common::*;
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::{PgPool, Row as _};
use tower::ServiceExt;

const T0: i64 = 1_763_978_400_000; // 2025-11-24T10:00:00Z
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An OpenRouter-style record: `model` is OpenRouter's id, `reported` is usage.cost.
fn openrouter(
    id: &str,
    tenant: &str,
    model: &str,
    at_ms: i64,
    tokens: (u64, u64, u64),
    reported: Option<&str>,
) -> Value {
    let mut r = record(id, tenant, model, at_ms);
    r["provider"] = json!("openrouter");
    r["input_tokens"] = json!(tokens.0);
    r["output_tokens"] = json!(tokens.1);
    r["cache_read_tokens"] = json!(tokens.2);
    if let Some(cost) = reported {
        r["reported_cost"] = json!(cost);
    }
    r
}

async fn get_ok(s: &collector::AppState, uri: &str) -> Value {
    let (status, body) = call(s, "GET", uri, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an API error: {body}"))
}

// ---------------------------------------------------------------------------
// GET /v1/reconciliation
// ---------------------------------------------------------------------------

/// Prices (bundled catalog, per million): openai/gpt-4o-mini input 0.15,
/// cache_read 0.075, output 0.60; openai/gpt-4o input 2.50, output 10.00.
///
/// | id | tenant | model       | in/out/cached  | ours      | reported  | difference |
/// | o1 | acme   | 4o-mini     | 1200/300/200   | 0.000345  | 0.000345  |  0         |
/// | o2 | acme   | 4o-mini     | 1000/500/0     | 0.00045   | 0.00046   | -0.00001   |
/// | o3 | acme   | 4o-mini     | 2000/0/0       | 0.0003    | 0.0003005 | -0.0000005 |
/// | g1 | acme   | 4o          | 1000/100/0     | 0.0035    | 0.0034    |  0.0001    |
/// | x1 | globex | 4o-mini     | 1000/500/0     | 0.00045   | 0.0005    | -0.00005   |
///
/// Not reconciled: n1 (no reported cost), u1 (unpriced), early (before the window).
async fn reconciliation_fixture(s: &collector::AppState) {
    let mini = "openai/gpt-4o-mini";
    let r = ingest(
        s,
        vec![
            openrouter("o1", "acme", mini, T0, (1200, 300, 200), Some("0.000345")),
            openrouter(
                "o2",
                "acme",
                mini,
                T0 + 10 * MIN,
                (1000, 500, 0),
                Some("0.00046"),
            ),
            openrouter(
                "o3",
                "acme",
                mini,
                T0 + 20 * MIN,
                (2000, 0, 0),
                Some("0.0003005"),
            ),
            openrouter(
                "g1",
                "acme",
                "openai/gpt-4o",
                T0 + 30 * MIN,
                (1000, 100, 0),
                Some("0.0034"),
            ),
            openrouter(
                "x1",
                "globex",
                mini,
                T0 + 40 * MIN,
                (1000, 500, 0),
                Some("0.0005"),
            ),
            openrouter("n1", "acme", mini, T0 + 50 * MIN, (1000, 500, 0), None),
            openrouter(
                "u1",
                "acme",
                "acme/unknown-llm",
                T0 + 55 * MIN,
                (1000, 500, 0),
                Some("0.01"),
            ),
            openrouter(
                "early",
                "acme",
                mini,
                T0 - 2 * HOUR,
                (1000, 500, 0),
                Some("0.9"),
            ),
        ],
    )
    .await;
    assert_eq!(r["accepted"], 8, "{r}");
    assert_eq!(r["unpriced"], 1, "{r}");
}

const WINDOW: &str = "start=2025-11-24T09:00:00Z&end=2025-11-25T00:00:00Z";

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_totals_match_hand_computed_figures(pool: PgPool) {
    let s = state(pool).await;
    reconciliation_fixture(&s).await;
    let body = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}")).await;

    assert_eq!(body["start"], "2025-11-24T09:00:00Z");
    assert_eq!(body["end"], "2025-11-25T00:00:00Z");
    assert_eq!(body["tolerance"], "0.000001");
    assert_eq!(body["tenant_id"], Value::Null);
    assert_eq!(body["transactions"], 5);
    assert_eq!(dec(&body["ours"]), d("0.005045"));
    assert_eq!(dec(&body["reported"]), d("0.0050055"));
    assert_eq!(dec(&body["difference"]), d("0.0000395"));
    assert_eq!(body["within_tolerance"], 2, "o1 (0) and o3 (-0.0000005)");
    assert_eq!(body["outside_tolerance"], 3);
    // Decimals are strings, never JSON numbers.
    for k in ["ours", "reported", "difference", "tolerance"] {
        assert!(body[k].is_string(), "{k} must be a string: {body}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_breaks_down_by_model_largest_difference_first(pool: PgPool) {
    let s = state(pool).await;
    reconciliation_fixture(&s).await;
    let body = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}")).await;
    let models = body["by_model"].as_array().unwrap();
    assert_eq!(
        models.len(),
        2,
        "the unpriced model is not reconciled: {body}"
    );

    let m = &models[0];
    assert_eq!(m["model"], "openai/gpt-4o");
    assert_eq!(m["currency"], "USD");
    assert_eq!(m["transactions"], 1);
    assert_eq!(dec(&m["ours"]), d("0.0035"));
    assert_eq!(dec(&m["reported"]), d("0.0034"));
    assert_eq!(dec(&m["difference"]), d("0.0001"));
    assert_eq!(
        (
            m["within_tolerance"].as_i64(),
            m["outside_tolerance"].as_i64()
        ),
        (Some(0), Some(1))
    );

    let m = &models[1];
    assert_eq!(m["model"], "openai/gpt-4o-mini");
    assert_eq!(m["transactions"], 4);
    assert_eq!(dec(&m["ours"]), d("0.001545"));
    assert_eq!(dec(&m["reported"]), d("0.0016055"));
    assert_eq!(dec(&m["difference"]), d("-0.0000605"));
    assert_eq!(
        (
            m["within_tolerance"].as_i64(),
            m["outside_tolerance"].as_i64()
        ),
        (Some(2), Some(2))
    );

    // The models add up to the totals.
    let sum = |k: &str| models.iter().map(|m| dec(&m[k])).sum::<Decimal>();
    assert_eq!(sum("ours"), dec(&body["ours"]));
    assert_eq!(sum("reported"), dec(&body["reported"]));
    assert_eq!(sum("difference"), dec(&body["difference"]));
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_lists_the_largest_differences(pool: PgPool) {
    let s = state(pool).await;
    reconciliation_fixture(&s).await;
    let body = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}")).await;
    let rows = body["largest_differences"].as_array().unwrap();
    let got: Vec<(&str, Decimal)> = rows
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), dec(&r["difference"])))
        .collect();
    assert_eq!(
        got,
        vec![
            ("g1", d("0.0001")),
            ("x1", d("-0.00005")),
            ("o2", d("-0.00001")),
            ("o3", d("-0.0000005")),
            ("o1", d("0")),
        ]
    );
    let g1 = &rows[0];
    assert_eq!(g1["tenant_id"], "acme");
    assert_eq!(g1["model"], "openai/gpt-4o");
    assert_eq!(dec(&g1["ours"]), d("0.0035"));
    assert_eq!(dec(&g1["reported"]), d("0.0034"));
    assert_eq!(rows[1]["tenant_id"], "globex");
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_filters_by_tenant_and_applies_the_tolerance(pool: PgPool) {
    let s = state(pool).await;
    reconciliation_fixture(&s).await;

    let acme = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}&tenant_id=acme")).await;
    assert_eq!(acme["tenant_id"], "acme");
    assert_eq!(acme["transactions"], 4);
    assert_eq!(dec(&acme["ours"]), d("0.004595"));
    assert_eq!(dec(&acme["reported"]), d("0.0045055"));
    assert_eq!(dec(&acme["difference"]), d("0.0000895"));
    assert_eq!(
        (
            acme["within_tolerance"].as_i64(),
            acme["outside_tolerance"].as_i64()
        ),
        (Some(2), Some(2))
    );
    assert!(acme["largest_differences"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["tenant_id"] == "acme"));

    // |difference| <= tolerance is inclusive: x1 is exactly -0.00005.
    let loose = get_ok(
        &s,
        &format!("/v1/reconciliation?{WINDOW}&tolerance=0.00005"),
    )
    .await;
    assert_eq!(loose["tolerance"], "0.00005");
    assert_eq!(
        (
            loose["within_tolerance"].as_i64(),
            loose["outside_tolerance"].as_i64()
        ),
        (Some(4), Some(1))
    );
    let exp = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}&tolerance=5e-5")).await;
    assert_eq!(exp["within_tolerance"], 4);

    let exact = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}&tolerance=0")).await;
    assert_eq!(
        (
            exact["within_tolerance"].as_i64(),
            exact["outside_tolerance"].as_i64()
        ),
        (Some(1), Some(4))
    );
    let mini = exact["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "openai/gpt-4o-mini")
        .unwrap()
        .clone();
    assert_eq!(
        (
            mini["within_tolerance"].as_i64(),
            mini["outside_tolerance"].as_i64()
        ),
        (Some(1), Some(3))
    );

    // The window's start is inclusive and its end exclusive.
    let from_o2 = rfc3339(T0 + 10 * MIN);
    let to_g1 = rfc3339(T0 + 30 * MIN);
    let part = get_ok(
        &s,
        &format!("/v1/reconciliation?start={from_o2}&end={to_g1}"),
    )
    .await;
    assert_eq!(part["transactions"], 2, "o2 and o3: {part}");
    assert_eq!(dec(&part["difference"]), d("-0.0000105"));

    // The early record is reconciled once the window covers it.
    let all = get_ok(
        &s,
        "/v1/reconciliation?start=2025-11-24T00:00:00Z&end=2025-11-25T00:00:00Z",
    )
    .await;
    assert_eq!(all["transactions"], 6);
    assert_eq!(all["largest_differences"][0]["request_id"], "early");
    assert_eq!(
        dec(&all["largest_differences"][0]["difference"]),
        d("-0.89955")
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_caps_the_list_at_twenty_and_defaults_to_the_last_30_days(pool: PgPool) {
    let s = state(pool).await;
    let now = s.clock.now().timestamp_millis();
    // 25 transactions of 0.00045 each, reported 0.00045 + i/10^6: difference -i/10^6.
    let mut records: Vec<Value> = (0..25)
        .map(|i| {
            let reported = d("0.00045") + Decimal::new(i, 6);
            openrouter(
                &format!("t{i:02}"),
                "acme",
                "openai/gpt-4o-mini",
                now - HOUR - i * MIN,
                (1000, 500, 0),
                Some(&reported.to_string()),
            )
        })
        .collect();
    records.push(openrouter(
        "old",
        "acme",
        "openai/gpt-4o-mini",
        now - 40 * 24 * HOUR,
        (1000, 500, 0),
        Some("1"),
    ));
    ingest(&s, records).await;

    let body = get_ok(&s, "/v1/reconciliation").await;
    assert_eq!(
        body["transactions"], 25,
        "the 40-day-old record is outside the default window"
    );
    let end = DateTime::parse_from_rfc3339(body["end"].as_str().unwrap()).unwrap();
    let start = DateTime::parse_from_rfc3339(body["start"].as_str().unwrap()).unwrap();
    assert_eq!(end - start, Duration::days(30));
    // 0 + 1 + ... + 24 millionths.
    assert_eq!(dec(&body["difference"]), d("-0.0003"));
    assert_eq!(
        (
            body["within_tolerance"].as_i64(),
            body["outside_tolerance"].as_i64()
        ),
        (Some(2), Some(23))
    );
    let rows = body["largest_differences"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (5..25).rev().map(|i| format!("t{i:02}")).collect();
    assert_eq!(ids, expected);
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_of_nothing_is_zero(pool: PgPool) {
    let s = state(pool).await;
    ingest(&s, vec![record("plain", "acme", "gpt-4o-mini", T0)]).await; // no reported cost
    let body = get_ok(&s, &format!("/v1/reconciliation?{WINDOW}")).await;
    assert_eq!(body["transactions"], 0);
    assert_eq!(body["ours"], "0");
    assert_eq!(body["reported"], "0");
    assert_eq!(body["difference"], "0");
    assert_eq!(
        (
            body["within_tolerance"].as_i64(),
            body["outside_tolerance"].as_i64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(body["by_model"], json!([]));
    assert_eq!(body["largest_differences"], json!([]));
}

#[sqlx::test(migrations = "../migrations")]
async fn reconciliation_rejects_bad_parameters_with_json_errors(pool: PgPool) {
    let s = state(pool).await;
    for (uri, needle) in [
        ("/v1/reconciliation?tolerance=-0.1", "tolerance"),
        ("/v1/reconciliation?tolerance=lots", "tolerance"),
        ("/v1/reconciliation?start=yesterday", "RFC 3339"),
        ("/v1/reconciliation?end=2025-13-01", "RFC 3339"),
        (
            "/v1/reconciliation?start=2025-11-25T00:00:00Z&end=2025-11-24T00:00:00Z",
            "start must not be after end",
        ),
        ("/v1/reconciliation?model=gpt-4o", "unknown field"),
    ] {
        let (status, body) = call(&s, "GET", uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(error_code(&body), "bad_request", "{uri}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{uri}: {body}"
        );
    }
    let (status, body) = call(&s, "GET", "/v1/reconciliation", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _) = call(&s, "GET", "/v1/reconciliation", Some(INGEST), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the ingest token must not read the ledger"
    );
}

// ---------------------------------------------------------------------------
// POST /v1/quote
// ---------------------------------------------------------------------------

#[sqlx::test(migrations = "../migrations")]
async fn quote_prices_usage_exactly(pool: PgPool) {
    let s = state(pool).await;
    let usage = json!({"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200});
    let (status, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "gpt-4o-mini", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "gpt-4o-mini");
    let cost = &body["cost"];
    // 1000 uncached × 0.15 + 200 cached × 0.075 + 300 × 0.60, per million.
    assert_eq!(
        cost["total"], "0.000345",
        "exact, no float rounding: {cost}"
    );
    assert_eq!(dec(&cost["input"]), d("0.00015"));
    assert_eq!(dec(&cost["cache_read"]), d("0.000015"));
    assert_eq!(dec(&cost["output"]), d("0.00018"));
    assert_eq!(cost["currency"], "USD");
    assert_eq!(cost["version"], "gpt-4o-mini@2024-07-18T00:00:00Z");
    assert!(
        body.get("reconciliation").is_none(),
        "no reported_cost, no reconciliation: {body}"
    );

    // The OpenRouter id under the openrouter provider prices the same.
    let (status, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "openai/gpt-4o-mini", "provider": "openrouter", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(dec(&body["cost"]["total"]), d("0.000345"));
    assert_eq!(
        body["cost"]["version"],
        "openai/gpt-4o-mini@2024-07-18T00:00:00Z"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn quote_reconciles_against_a_reported_cost(pool: PgPool) {
    let s = state(pool).await;
    let usage = json!({"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200});
    let quote = |reported: &str, tolerance: Option<&str>| {
        let mut q = json!({"model": "gpt-4o-mini", "usage": usage, "reported_cost": reported});
        if let Some(t) = tolerance {
            q["tolerance"] = json!(t);
        }
        q
    };
    let (status, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(quote("0.0003", None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["reconciliation"];
    assert_eq!(dec(&r["ours"]), d("0.000345"));
    assert_eq!(dec(&r["reported"]), d("0.0003"));
    assert_eq!(dec(&r["difference"]), d("0.000045"));
    assert_eq!(r["within_tolerance"], false);

    let (_, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(quote("0.00035", None)),
    )
    .await;
    assert_eq!(dec(&body["reconciliation"]["difference"]), d("-0.000005"));
    assert_eq!(body["reconciliation"]["within_tolerance"], false);

    let (_, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(quote("0.0003", Some("0.000045"))),
    )
    .await;
    assert_eq!(
        body["reconciliation"]["within_tolerance"], true,
        "the tolerance is inclusive"
    );

    let (_, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(quote("0.0003451", None)),
    )
    .await;
    assert_eq!(dec(&body["reconciliation"]["difference"]), d("-0.0000001"));
    assert_eq!(
        body["reconciliation"]["within_tolerance"], true,
        "default tolerance 0.000001"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn quote_errors(pool: PgPool) {
    let s = state(pool).await;
    let (status, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "acme-llm-9", "usage": {"input_tokens": 10}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );
    let (status, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(
            json!({"model": "gpt-4o-mini", "usage": {"input_tokens": 10, "cache_read_tokens": 20}}),
        ),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (status, body) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "gpt-4o-mini", "usage": {}, "surprise": 1})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (status, _) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(INGEST),
        Some(json!({"model": "gpt-4o-mini", "usage": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------
// GET /metrics
// ---------------------------------------------------------------------------

async fn metrics(s: &collector::AppState) -> BTreeMap<String, f64> {
    let (status, bytes) = call_raw(s, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_count_accepted_duplicate_rejected_and_unpriced_records(pool: PgPool) {
    let s = state(pool).await;
    let m = metrics(&s).await;
    assert_eq!(m["billing_records_accepted_total"], 0.0);
    assert_eq!(m["billing_ingest_seconds_count"], 0.0);

    let mut bad = record("bad", "acme", "gpt-4o-mini", T0);
    bad["reasoning_tokens"] = json!(301); // more than output_tokens
    let first = ingest(
        &s,
        vec![
            record("a", "acme", "gpt-4o-mini", T0),
            record("b", "acme", "gpt-4o-mini", T0),
            record("c", "acme", "acme-llm-1", T0),
            bad,
        ],
    )
    .await;
    assert_eq!(
        (
            first["accepted"].as_u64(),
            first["rejected"].as_u64(),
            first["unpriced"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    let second = ingest(
        &s,
        vec![
            record("a", "acme", "gpt-4o-mini", T0),
            record("b", "acme", "gpt-4o-mini", T0),
            record("d", "acme", "gpt-4o-mini", T0),
        ],
    )
    .await;
    assert_eq!(
        (second["accepted"].as_u64(), second["duplicates"].as_u64()),
        (Some(1), Some(2))
    );

    let m = metrics(&s).await;
    assert_eq!(m["billing_records_accepted_total"], 4.0);
    assert_eq!(m["billing_records_duplicate_total"], 2.0);
    assert_eq!(m["billing_records_rejected_total"], 1.0);
    assert_eq!(m["billing_records_unpriced_total"], 1.0);
    assert_eq!(m["billing_ingest_failures_total"], 0.0);
    assert_eq!(m["billing_ingest_seconds_count"], 2.0);
    assert_eq!(m["billing_ingest_seconds_bucket{le=\"+Inf\"}"], 2.0);
    // Two batches one after the other: nothing to merge.
    assert_eq!(m["billing_ingest_statements_total"], 2.0);
    // Reported by the collector's fold task, which this test does not run.
    assert_eq!(m["billing_rollup_folded_before_seconds"], 0.0);

    // A request refused before validation (bad JSON) counts nothing.
    let (status, _) = call_raw(
        &s,
        "POST",
        "/v1/usage",
        Some(INGEST),
        Some(b"{oops".to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(metrics(&s).await["billing_records_rejected_total"], 1.0);

    let (status, _) = call_raw(&s, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK, "metrics need no token");
}

// ---------------------------------------------------------------------------
// GET /v1/prices, PUT /v1/prices/{model}
// ---------------------------------------------------------------------------

#[sqlx::test(migrations = "../migrations")]
async fn prices_list_the_catalog_and_filter_by_model(pool: PgPool) {
    let s = state(pool).await;
    let all = get_ok(&s, "/v1/prices").await;
    let all = all["prices"].as_array().unwrap();
    let bundled = collector::pricing::Catalog::bundled().unwrap();
    assert_eq!(all.len(), bundled.entries().len());

    let one = get_ok(&s, "/v1/prices?model=gpt-4o-mini").await;
    let rows = one["prices"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{one}");
    let p = &rows[0];
    assert_eq!(p["version"], "gpt-4o-mini@2024-07-18T00:00:00Z");
    assert_eq!(p["source"], "catalog:test");
    assert!(p["id"].is_i64());
    assert_eq!(p["price"]["model"], "gpt-4o-mini");
    assert_eq!(dec(&p["price"]["input"]), d("0.15"));
    assert_eq!(dec(&p["price"]["cache_read"]), d("0.075"));
    assert_eq!(dec(&p["price"]["output"]), d("0.60"));
    assert_eq!(p["price"]["currency"], "USD");

    // Two versions of gpt-4o, oldest first.
    let versions = get_ok(&s, "/v1/prices?model=gpt-4o").await;
    let v: Vec<&str> = versions["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        v,
        ["gpt-4o@2024-05-13T00:00:00Z", "gpt-4o@2024-10-02T00:00:00Z"]
    );

    assert_eq!(
        get_ok(&s, "/v1/prices?model=nope").await["prices"],
        json!([])
    );
    let (status, _) = call(&s, "GET", "/v1/prices", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn put_price_adds_immutable_versions_that_price_by_time(pool: PgPool) {
    let s = state(pool.clone()).await;
    let price = json!({"input": "1.00", "output": "2.00", "cache_read": "0.50", "effective_from": "2025-06-01T00:00:00Z"});
    let (status, body) = call(
        &s,
        "PUT",
        "/v1/prices/gpt-4o-mini",
        Some(ADMIN),
        Some(price.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], "gpt-4o-mini@2025-06-01T00:00:00Z");
    assert_eq!(body["price"]["model"], "gpt-4o-mini");
    assert_eq!(body["price"]["currency"], "USD");

    // Same (model, effective_from) again: refused, even with other prices.
    let mut changed = price.clone();
    changed["input"] = json!("9.00");
    for body in [price.clone(), changed] {
        let (status, err) =
            call(&s, "PUT", "/v1/prices/gpt-4o-mini", Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(error_code(&err), "bad_request");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("immutable"),
            "{err}"
        );
    }
    let listed = get_ok(&s, "/v1/prices?model=gpt-4o-mini").await;
    let rows = listed["prices"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["source"], "admin");
    assert_eq!(
        dec(&rows[1]["price"]["input"]),
        d("1.00"),
        "the first version stands"
    );
    assert_eq!(
        dec(&rows[0]["price"]["input"]),
        d("0.15"),
        "the catalog version is untouched"
    );

    // Usage is priced by the version in effect when it occurred.
    let before = Utc
        .with_ymd_and_hms(2025, 5, 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    ingest(
        &s,
        vec![
            record("before", "acme", "gpt-4o-mini", before),
            record("after", "acme", "gpt-4o-mini", T0),
        ],
    )
    .await;
    let rows: Vec<(String, Decimal, String)> = sqlx::query_as(
        "SELECT request_id, cost, price_version FROM transactions ORDER BY request_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            // 1000 × 1 + 200 × 0.5 + 300 × 2 per million
            (
                "after".into(),
                d("0.0017"),
                "gpt-4o-mini@2025-06-01T00:00:00Z".into()
            ),
            (
                "before".into(),
                d("0.000345"),
                "gpt-4o-mini@2024-07-18T00:00:00Z".into()
            ),
        ]
    );

    // A model id with a slash, URL-encoded.
    let (status, body) = call(
        &s,
        "PUT",
        "/v1/prices/acme%2Fllm-2",
        Some(ADMIN),
        Some(json!({"input": "1", "output": "2"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["price"]["model"], "acme/llm-2");
}

#[sqlx::test(migrations = "../migrations")]
async fn put_price_validates_its_body(pool: PgPool) {
    let s = state(pool).await;
    for (body, needle) in [
        (
            json!({"model": "other", "input": "1", "output": "2"}),
            "does not match",
        ),
        (json!({"input": "-1", "output": "2"}), "negative"),
        (json!({"input": "1"}), "invalid price"),
        (
            json!({"input": "1", "output": "2", "surprise": true}),
            "invalid price",
        ),
        (
            json!({"input": "1", "output": "2", "currency": "usd"}),
            "currency",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ] {
        let (status, err) = call(
            &s,
            "PUT",
            "/v1/prices/acme-llm-1",
            Some(ADMIN),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }
    let (status, _) = call(
        &s,
        "PUT",
        "/v1/prices/acme-llm-1",
        Some(INGEST),
        Some(json!({"input": "1", "output": "2"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_ok(&s, "/v1/prices?model=acme-llm-1").await["prices"],
        json!([])
    );
}

// ---------------------------------------------------------------------------
// GET /v1/transactions filters
// ---------------------------------------------------------------------------

struct Row {
    id: String,
    tenant: &'static str,
    key: Option<&'static str>,
    provider: &'static str,
    model: &'static str,
    at: i64,
    priced: bool,
}

/// 24 records over 12 hours, varying tenant, key, provider, model, pricing.
fn mixed_rows() -> Vec<Row> {
    (0..24i64)
        .map(|i| {
            let (provider, model, priced) = match i % 4 {
                0 => ("openai", "gpt-4o-mini", true),
                1 => ("openai", "gpt-4o", true),
                2 => ("openrouter", "openai/gpt-4o-mini", true),
                _ => ("openai", "acme-llm-1", false),
            };
            Row {
                id: format!("m{i:02}"),
                tenant: if i % 3 == 0 { "globex" } else { "acme" },
                key: match i % 5 {
                    0 => None,
                    1 | 2 => Some("key-a"),
                    _ => Some("key-b"),
                },
                provider,
                model,
                at: T0 + i * 31 * MIN,
                priced,
            }
        })
        .collect()
}

fn to_record(r: &Row, i: usize) -> Value {
    let mut v = record(&r.id, r.tenant, r.model, r.at);
    v["provider"] = json!(r.provider);
    v["api_key_id"] = r.key.map_or(Value::Null, |k| json!(k));
    // Vary the counts so sums are not all multiples of one record.
    v["input_tokens"] = json!(1000 + 37 * i);
    v["output_tokens"] = json!(100 + 11 * i);
    v["cache_read_tokens"] = json!(10 * (i % 7));
    v["cache_write_tokens"] = json!(if r.provider == "openrouter" {
        0
    } else {
        5 * (i % 3)
    });
    v["reasoning_tokens"] = json!(i % 4);
    if i.is_multiple_of(5) {
        v["http_status"] = json!(500);
        v["flags"] = json!(["upstream_error"]);
    }
    if i % 6 == 1 {
        v["flags"] = json!(["incomplete"]);
    }
    if r.provider == "openrouter" {
        v["reported_cost"] = json!(format!("0.000{}", 300 + i));
    }
    v
}

async fn listed_ids(s: &collector::AppState, query: &str) -> Vec<String> {
    let body = get_ok(s, &format!("/v1/transactions?limit=1000&{query}")).await;
    assert_eq!(body["next_cursor"], Value::Null, "{query}");
    body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn transactions_filter_by_each_field(pool: PgPool) {
    let s = state(pool).await;
    let rows = mixed_rows();
    ingest(
        &s,
        rows.iter()
            .enumerate()
            .map(|(i, r)| to_record(r, i))
            .collect(),
    )
    .await;

    // Newest first, so the expectation is the reversed input order.
    let expect = |keep: &dyn Fn(&Row) -> bool| -> Vec<String> {
        rows.iter()
            .rev()
            .filter(|r| keep(r))
            .map(|r| r.id.clone())
            .collect()
    };
    let start = T0 + 3 * HOUR;
    let end = T0 + 8 * HOUR;
    let cases: Vec<(String, Vec<String>)> = vec![
        (String::new(), expect(&|_| true)),
        (
            "model=gpt-4o-mini".into(),
            expect(&|r| r.model == "gpt-4o-mini"),
        ),
        (
            "model=openai/gpt-4o-mini".into(),
            expect(&|r| r.model == "openai/gpt-4o-mini"),
        ),
        (
            "provider=openrouter".into(),
            expect(&|r| r.provider == "openrouter"),
        ),
        (
            "provider=openai".into(),
            expect(&|r| r.provider == "openai"),
        ),
        ("status=unpriced".into(), expect(&|r| !r.priced)),
        ("status=priced".into(), expect(&|r| r.priced)),
        (
            "api_key_id=key-a".into(),
            expect(&|r| r.key == Some("key-a")),
        ),
        ("tenant_id=globex".into(), expect(&|r| r.tenant == "globex")),
        (
            format!("start={}", rfc3339(start)),
            expect(&|r| r.at >= start),
        ),
        (format!("end={}", rfc3339(end)), expect(&|r| r.at < end)),
        (
            format!("start={}&end={}", rfc3339(start), rfc3339(end)),
            expect(&|r| r.at >= start && r.at < end),
        ),
        (
            format!(
                "tenant_id=acme&provider=openai&status=priced&api_key_id=key-b&start={}",
                rfc3339(T0 + HOUR)
            ),
            expect(&|r| {
                r.tenant == "acme"
                    && r.provider == "openai"
                    && r.priced
                    && r.key == Some("key-b")
                    && r.at >= T0 + HOUR
            }),
        ),
        ("model=nothing-like-it".into(), vec![]),
    ];
    for (query, expected) in cases {
        assert_eq!(listed_ids(&s, &query).await, expected, "{query}");
    }
    // The boundaries are exact to the millisecond: start inclusive, end exclusive.
    let at = rows[5].at;
    assert_eq!(
        listed_ids(
            &s,
            &format!("start={}&end={}", rfc3339(at), rfc3339(at + 1000))
        )
        .await,
        vec![rows[5].id.clone()]
    );
    assert_eq!(
        listed_ids(
            &s,
            &format!("start={}&end={}", rfc3339(at - 1000), rfc3339(at))
        )
        .await,
        Vec::<String>::new()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn transactions_reject_bad_filters(pool: PgPool) {
    let s = state(pool).await;
    for uri in [
        "/v1/transactions?status=free",
        "/v1/transactions?format=xml",
        "/v1/transactions?limit=0",
        "/v1/transactions?limit=1001",
        "/v1/transactions?cursor=bogus",
        "/v1/transactions?end=tomorrow",
    ] {
        let (status, body) = call(&s, "GET", uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(error_code(&body), "bad_request", "{uri}");
    }
}

// ---------------------------------------------------------------------------
// GET /v1/summary against a brute-force SUM over the ledger
// ---------------------------------------------------------------------------

/// requests, error_requests, incomplete_requests, input, output, cache_read,
/// cache_write, reasoning, unpriced_requests, unpriced_input, unpriced_output;
/// cost; reported_cost.
#[derive(Debug, PartialEq)]
struct Sums([i64; 11], Decimal, Decimal);

async fn brute_force(
    pool: &PgPool,
    key_sql: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    tenant: Option<&str>,
) -> BTreeMap<String, Sums> {
    // Integer sums first, in the order of `Sums`, then cost and reported cost.
    let sql = format!(
        "SELECT {key_sql} AS key, count(*)::int8, count(*) FILTER (WHERE http_status >= 400)::int8,
            count(*) FILTER (WHERE 'incomplete' = ANY(flags))::int8,
            sum(input_tokens)::int8, sum(output_tokens)::int8, sum(cache_read_tokens)::int8,
            sum(cache_write_tokens)::int8, sum(reasoning_tokens)::int8,
            count(*) FILTER (WHERE status = 'unpriced')::int8,
            coalesce(sum(input_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8,
            coalesce(sum(output_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8,
            coalesce(sum(cost), 0), coalesce(sum(reported_cost), 0)
         FROM transactions
         WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::text IS NULL OR tenant_id = $3)
         GROUP BY 1"
    );
    let rows = sqlx::query(&sql)
        .bind(start)
        .bind(end)
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let ints: [i64; 11] = std::array::from_fn(|i| r.get(i + 1));
            (r.get(0), Sums(ints, r.get(12), r.get(13)))
        })
        .collect()
}

fn from_api(summary: &Value) -> BTreeMap<String, Sums> {
    let n = |g: &Value, k: &str| {
        g[k].as_i64()
            .unwrap_or_else(|| panic!("{k} missing in {g}"))
    };
    summary["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                Sums(
                    [
                        "requests",
                        "error_requests",
                        "incomplete_requests",
                        "input_tokens",
                        "output_tokens",
                        "cache_read_tokens",
                        "cache_write_tokens",
                        "reasoning_tokens",
                        "unpriced_requests",
                        "unpriced_input_tokens",
                        "unpriced_output_tokens",
                    ]
                    .map(|k| n(g, k)),
                    dec(&g["cost"]),
                    dec(&g["reported_cost"]),
                ),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn summary_group_by_each_key_equals_the_raw_sum(pool: PgPool) {
    let s = state(pool.clone()).await;
    // 60 records every 47 minutes from 2025-11-23T22:00Z: ~46 hours over three UTC days.
    let base = mixed_rows();
    let records: Vec<Value> = (0..60usize)
        .map(|i| {
            let r = &base[i % base.len()];
            let row = Row {
                id: format!("s{i:02}"),
                at: T0 - 12 * HOUR + i as i64 * 47 * MIN,
                ..*r
            };
            to_record(&row, i)
        })
        .collect();
    ingest(&s, records).await;

    let keys = [
        ("total", "'total'"),
        ("model", "coalesce(model, '')"),
        ("provider", "provider"),
        ("api_key", "coalesce(api_key_id, '')"),
        ("tenant", "tenant_id"),
        (
            "day",
            "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        ),
        (
            "hour",
            "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00:00Z\"')",
        ),
    ];
    // Partial hours at both edges, whole hours only, and a range inside one hour.
    let ranges = [
        (T0 - 8 * HOUR + 13 * MIN, T0 + 30 * HOUR + 41 * MIN),
        (T0 - 9 * HOUR, T0 + 40 * HOUR),
        (T0 + 2 * HOUR + 5 * MIN, T0 + 2 * HOUR + 55 * MIN),
    ];
    let mut compared = 0;
    for (start_ms, end_ms) in ranges {
        let start = Utc.timestamp_millis_opt(start_ms).unwrap();
        let end = Utc.timestamp_millis_opt(end_ms).unwrap();
        for (group_by, key_sql) in keys {
            for tenant in [None, Some("acme")] {
                let mut uri = format!(
                    "/v1/summary?group_by={group_by}&start={}&end={}",
                    rfc3339(start_ms),
                    rfc3339(end_ms)
                );
                if let Some(t) = tenant {
                    uri.push_str(&format!("&tenant_id={t}"));
                }
                let api = from_api(&get_ok(&s, &uri).await);
                let raw = brute_force(&pool, key_sql, start, end, tenant).await;
                assert_eq!(api, raw, "{uri}");
                compared += raw.len();
            }
        }
    }
    assert!(
        compared > 100,
        "the ranges must cover many groups, compared {compared}"
    );
    let days: BTreeSet<String> = brute_force(
        &pool,
        keys[5].1,
        Utc.timestamp_millis_opt(0).unwrap(),
        s.clock.now(),
        None,
    )
    .await
    .into_keys()
    .collect();
    assert_eq!(days.len(), 3, "{days:?}");
}

// ---------------------------------------------------------------------------
// GET /openapi.json
// ---------------------------------------------------------------------------

/// Every route the app registers, with its methods. Keep in sync with
/// collector/src/http/*.rs: the test below fails if a listed route is not
/// served, or if the document and this list disagree.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/v1/usage", &["post"]),
    ("/v1/transactions", &["get"]),
    ("/v1/summary", &["get"]),
    ("/v1/forecast", &["get"]),
    ("/v1/prices", &["get"]),
    ("/v1/prices/{model}", &["put"]),
    ("/v1/reprice", &["post"]),
    ("/v1/quote", &["post"]),
    ("/v1/model-aliases", &["get", "put", "delete"]),
    ("/v1/reconciliation", &["get"]),
    ("/v1/tokens", &["get", "post"]),
    ("/v1/tokens/{id}", &["delete"]),
    ("/v1/tenants/{tenant_id}/pricing", &["get", "post"]),
    (
        "/v1/tenants/{tenant_id}/balance-alert",
        &["get", "put", "delete"],
    ),
    ("/v1/budgets", &["get", "post"]),
    ("/v1/budgets/{id}", &["patch", "delete"]),
    ("/v1/credits", &["get", "post"]),
    ("/v1/balance", &["get"]),
    ("/v1/alerts", &["get"]),
    ("/v1/deny", &["get"]),
    ("/v1/reservations", &["post"]),
    ("/v1/reservations/notices", &["post"]),
    ("/v1/invoices", &["get"]),
    ("/v1/invoices/finalize", &["post"]),
    ("/internal/billing/quote", &["post"]),
    ("/internal/billing/transactions", &["get"]),
    ("/internal/billing/summary", &["get"]),
    // `/dashboard/` is registered too, but only as a 308 redirect to
    // `/dashboard`: it has no 2xx response to document, so it is left out.
    ("/dashboard", &["get"]),
    ("/dashboard/app.js", &["get"]),
    ("/dashboard/app.css", &["get"]),
    ("/dashboard/vendor/uPlot.iife.min.js", &["get"]),
    ("/dashboard/vendor/uPlot.min.css", &["get"]),
    ("/dashboard/vendor/uPlot.LICENSE", &["get"]),
];

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("external $ref {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                resolve(doc, r);
            }
            m.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn openapi_document_is_served_valid_and_covers_every_route(pool: PgPool) {
    let s = state(pool).await;
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let response = collector::app(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "no token needed");
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let doc: Value = serde_json::from_slice(&bytes).expect("openapi.json must be valid JSON");
    assert_eq!(
        bytes,
        include_str!("../openapi.json").as_bytes(),
        "served as stored"
    );

    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    check_refs(&doc, &doc);
    let schemes = &doc["components"]["securitySchemes"];
    for scheme in ["ingestToken", "adminToken", "tenantToken"] {
        assert_eq!(schemes[scheme]["type"], "http", "{scheme}");
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["error"]));
    assert!(error["properties"]["error"]["properties"]["code"].is_object());

    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let listed: BTreeSet<&str> = ROUTES.iter().map(|r| r.0).collect();
    assert_eq!(
        documented, listed,
        "the document and the route list disagree"
    );

    for (path, methods) in ROUTES {
        let item = paths[*path].as_object().unwrap();
        let ops: BTreeSet<&str> = item
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "parameters")
            .collect();
        assert_eq!(
            ops,
            methods.iter().copied().collect::<BTreeSet<&str>>(),
            "{path}"
        );
        for method in *methods {
            let op = &item[*method];
            assert!(op["operationId"].is_string(), "{method} {path}");
            assert!(op["summary"].is_string(), "{method} {path}");
            // Security matches the extractor the handler uses.
            let security = op.get("security").unwrap_or(&doc["security"]);
            let expected = match (*path, *method) {
                ("/healthz" | "/readyz" | "/metrics" | "/openapi.json", _) => json!([]),
                (
                    "/dashboard"
                    | "/dashboard/app.js"
                    | "/dashboard/app.css"
                    | "/dashboard/vendor/uPlot.iife.min.js"
                    | "/dashboard/vendor/uPlot.min.css"
                    | "/dashboard/vendor/uPlot.LICENSE",
                    "get",
                ) => json!([]),
                ("/v1/usage" | "/v1/deny" | "/v1/reservations" | "/v1/reservations/notices", _) => {
                    json!([{"ingestToken": []}])
                }
                (
                    "/v1/transactions" | "/v1/summary" | "/v1/forecast" | "/v1/reconciliation"
                    | "/v1/prices" | "/v1/budgets" | "/v1/credits" | "/v1/balance" | "/v1/alerts"
                    | "/v1/invoices",
                    "get",
                )
                | ("/internal/billing/transactions" | "/internal/billing/summary", "get")
                | ("/v1/quote" | "/internal/billing/quote", "post")
                | ("/v1/tenants/{tenant_id}/balance-alert" | "/v1/model-aliases", "get") => {
                    json!([{"adminToken": []}, {"tenantToken": []}])
                }
                // Includes ("/v1/invoices/finalize", "post"): the Admin extractor.
                _ => json!([{"adminToken": []}]),
            };
            assert_eq!(security, &expected, "{method} {path}");
            // An example for the request body and for every success response.
            if let Some(body) = op.get("requestBody") {
                let body = body["content"].as_object().unwrap();
                assert!(
                    body.values().all(|c| c.get("example").is_some()),
                    "{method} {path} request example"
                );
            }
            let responses = op["responses"].as_object().unwrap();
            let (code, ok) = responses
                .iter()
                .find(|(code, _)| code.starts_with('2'))
                .unwrap_or_else(|| panic!("{method} {path}: no 2xx"));
            if code == "204" {
                assert!(
                    ok.get("content").is_none(),
                    "{method} {path}: 204 has no body"
                );
            } else {
                let content = ok["content"].as_object().unwrap();
                assert!(
                    content.values().all(|c| c.get("example").is_some()),
                    "{method} {path} response example"
                );
            }
            // Authenticated routes document the error format for 401.
            if expected != json!([]) {
                let unauthorized = responses
                    .get("401")
                    .unwrap_or_else(|| panic!("{method} {path}: no 401"));
                let unauthorized = match unauthorized.get("$ref") {
                    Some(Value::String(r)) => resolve(&doc, r),
                    _ => unauthorized,
                };
                assert_eq!(
                    unauthorized["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error"
                );
            }
            for p in op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let p = match p.get("$ref") {
                    Some(Value::String(r)) => resolve(&doc, r),
                    _ => p,
                };
                assert!(
                    p["name"].is_string() && p["in"].is_string() && p["schema"].is_object(),
                    "{method} {path}: {p}"
                );
            }
        }
        // The route really is served: an anonymous call never reaches the 404 fallback.
        let uri = path.replace("{model}", "gpt-4o-mini");
        let method = methods[0].to_uppercase();
        let body = (method != "GET").then(|| json!({}));
        let (status, resp) = call(&s, &method, &uri, None, body).await;
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {uri} is not served: {resp}"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
    }

    // The path parameter of PUT /v1/prices/{model} is declared.
    let put = &paths["/v1/prices/{model}"]["put"];
    assert!(put["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "model" && p["in"] == "path" && p["required"] == true));
    // The budget id is a declared path parameter of both its methods.
    for method in ["patch", "delete"] {
        assert!(
            paths["/v1/budgets/{id}"][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "id" && p["in"] == "path" && p["required"] == true),
            "{method} /v1/budgets/{{id}}"
        );
    }
    // The reconciliation parameters are all declared.
    let declared: BTreeSet<String> = paths["/v1/reconciliation"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match p.get("$ref") {
            Some(Value::String(r)) => resolve(&doc, r)["name"].as_str().unwrap().to_string(),
            _ => p["name"].as_str().unwrap().to_string(),
        })
        .collect();
    let expected: BTreeSet<String> = ["currency", "end", "start", "tenant_id", "tolerance"]
        .map(String::from)
        .into();
    assert_eq!(declared, expected);

    // An unknown path is the JSON 404 the document describes.
    let (status, body) = call(&s, "GET", "/v1/nothing-here", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

// ---------------------------------------------------------------------------
// The seed gateway's /internal/billing/* API
// ---------------------------------------------------------------------------

#[sqlx::test(migrations = "../migrations")]
async fn the_seed_gateways_internal_billing_api_answers_as_v1_does(pool: PgPool) {
    let s = state(pool).await;
    ingest(
        &s,
        vec![
            record("a1", "acme", "gpt-4o-mini", T0),
            record("a2", "acme", "gpt-4o-mini", T0 + MIN),
            record("g1", "globex", "gpt-4o", T0 + 2 * MIN),
        ],
    )
    .await;

    // Transactions by tenant or by key, with /v1's filters and figures.
    for (internal, v1) in [
        (
            "/internal/billing/transactions?tenant_id=acme&limit=1",
            "/v1/transactions?tenant_id=acme&limit=1",
        ),
        (
            "/internal/billing/transactions?api_key_id=key-globex",
            "/v1/transactions?api_key_id=key-globex",
        ),
        (
            &format!("/internal/billing/summary?tenant_id=acme&{WINDOW}"),
            &format!("/v1/summary?tenant_id=acme&{WINDOW}"),
        ),
    ] {
        let (status, got) = call(&s, "GET", internal, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK, "{internal}: {got}");
        let (_, want) = call(&s, "GET", v1, Some(ADMIN), None).await;
        assert_eq!(got, want, "{internal}");
    }
    let (_, page) = call(
        &s,
        "GET",
        "/internal/billing/transactions?api_key_id=key-globex",
        Some(ADMIN),
        None,
    )
    .await;
    let rows = page["transactions"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{page}");
    assert_eq!(rows[0]["request_id"], "g1");
    let (_, summary) = call(
        &s,
        "GET",
        &format!("/internal/billing/summary?tenant_id=acme&{WINDOW}"),
        Some(ADMIN),
        None,
    )
    .await;
    // 2 × (1000 uncached × 0.15 + 200 cached × 0.075 + 300 × 0.60) / 1M.
    assert_eq!(summary["groups"][0]["requests"], 2, "{summary}");
    assert_eq!(
        dec(&summary["groups"][0]["cost"]),
        d("0.00069"),
        "{summary}"
    );

    // Quote by provider/model id.
    let usage = json!({"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200});
    for (id, provider) in [
        ("openai/gpt-4o-mini", "openai"),
        ("gpt-4o-mini", "unknown"),
        ("openrouter/openai/gpt-4o-mini", "openrouter"),
    ] {
        let (status, q) = call(
            &s,
            "POST",
            "/internal/billing/quote",
            Some(ADMIN),
            Some(json!({"provider_model_id": id, "usage": usage})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{id}: {q}");
        assert_eq!(q["cost"]["total"], "0.000345", "{id}: {q}");
        assert_eq!(q["provider"], provider);
        assert_eq!(q["provider_model_id"], id);
    }

    // Same auth and errors as /v1.
    let body = json!({"provider_model_id": "openai/gpt-4o-mini", "usage": usage});
    let (status, _) = call(&s, "POST", "/internal/billing/quote", None, Some(body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, e) = call(
        &s,
        "POST",
        "/internal/billing/quote",
        Some(ADMIN),
        Some(json!({"provider_model_id": "acme/no-such-model", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let (status, e) = call(
        &s,
        "POST",
        "/internal/billing/quote",
        Some(ADMIN),
        Some(json!({"provider_model_id": "openai/", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let (status, _) = call(&s, "GET", "/internal/billing/transactions", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn summaries_never_add_two_currencies(pool: PgPool) {
    let s = state(pool.clone()).await;
    // A model priced in EUR beside the catalog's USD ones.
    let (status, body) = call(
        &s,
        "PUT",
        "/v1/prices/eu-llm",
        Some(ADMIN),
        Some(
            json!({"input": "1.00", "output": "2.00", "cache_read": "0.50", "currency": "EUR",
            "effective_from": "2025-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.reload_prices().await.unwrap();
    let t0 = 1_763_978_400_000; // 2025-11-24T10:00:00Z
    let mut u1 = record("u1", "two", "gpt-4o-mini", t0);
    u1["reported_cost"] = json!("0.0004");
    let mut e1 = record("e1", "two", "eu-llm", t0 + 2000);
    e1["reported_cost"] = json!("0.0017");
    let answer = ingest(
        &s,
        vec![
            u1,
            record("u2", "two", "gpt-4o-mini", t0 + 1000),
            e1,
            record("x1", "two", "no-such-model", t0 + 3000),
            record("o1", "one", "gpt-4o-mini", t0),
            record("o2", "one", "no-such-model", t0 + 1000),
        ],
    )
    .await;
    assert_eq!(answer["accepted"], 6, "{answer}");
    let day = "start=2025-11-24T00:00:00Z&end=2025-11-25T00:00:00Z";
    let groups = |body: &Value| -> Vec<(String, Option<String>, i64, Decimal)> {
        body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["key"].as_str().unwrap_or_default().to_string(),
                    g["currency"].as_str().map(str::to_string),
                    g["requests"].as_i64().unwrap(),
                    if g["cost"].is_null() {
                        Decimal::ZERO
                    } else {
                        dec(&g["cost"])
                    },
                )
            })
            .collect()
    };
    // Two currencies: two totals (1000 × 1 + 200 × 0.5 + 300 × 2 per million
    // = EUR 0.0017; 2 × USD 0.000345), and the unpriced request on its own.
    let body = get_ok(&s, &format!("/v1/summary?tenant_id=two&{day}")).await;
    let mut got = groups(&body);
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got.iter()
            .map(|g| (g.1.clone(), g.2, g.3))
            .collect::<Vec<_>>(),
        [
            (None, 1, Decimal::ZERO),
            (Some("EUR".into()), 1, d("0.0017")),
            (Some("USD".into()), 2, d("0.00069")),
        ],
        "{body}"
    );
    // By tenant: "one" has one currency, its unpriced request stays in it.
    let body = get_ok(&s, &format!("/v1/summary?group_by=tenant&{day}")).await;
    let one: Vec<_> = groups(&body).into_iter().filter(|g| g.0 == "one").collect();
    assert_eq!(
        one,
        [("one".to_string(), Some("USD".into()), 2, d("0.000345"))],
        "{body}"
    );
    let two: Vec<_> = groups(&body).into_iter().filter(|g| g.0 == "two").collect();
    assert_eq!(two.len(), 3, "{body}");
    // By model every group has one currency.
    let body = get_ok(
        &s,
        &format!("/v1/summary?tenant_id=two&group_by=model&{day}"),
    )
    .await;
    let by_model = groups(&body);
    assert_eq!(by_model.len(), 3, "{body}");
    assert!(by_model.contains(&("eu-llm".into(), Some("EUR".into()), 1, d("0.0017"))));

    // Reconciliation: refuses to add the two, reconciles each on its own.
    let (status, err) = call(
        &s,
        "GET",
        &format!("/v1/reconciliation?tenant_id=two&{day}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("several currencies (EUR, USD)"),
        "{err}"
    );
    for (currency, ours, reported) in [("EUR", "0.0017", "0.0017"), ("USD", "0.000345", "0.0004")] {
        let body = get_ok(
            &s,
            &format!("/v1/reconciliation?tenant_id=two&currency={currency}&{day}"),
        )
        .await;
        assert_eq!(body["currency"], currency, "{body}");
        assert_eq!(body["transactions"], 1, "{body}");
        assert_eq!(
            (dec(&body["ours"]), dec(&body["reported"])),
            (d(ours), d(reported)),
            "{body}"
        );
    }
    // One currency needs no choice.
    let body = get_ok(&s, &format!("/v1/reconciliation?tenant_id=one&{day}")).await;
    assert_eq!(body["transactions"], 0, "{body}");
}
