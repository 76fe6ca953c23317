//! Ingest, dedup, pricing, queries: against the real PostgreSQL.

mod common;

use std::str::FromStr;

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

const T0: i64 = 1_763_978_400_000; // 2025-11-24T10:00:00Z

#[sqlx::test(migrations = "../migrations")]
async fn ingest_prices_and_deduplicates_across_batches(pool: PgPool) {
    let s = state(pool.clone()).await;
    let mut bad = record("r3", "acme", "gpt-4o-mini", T0);
    bad["cache_read_tokens"] = json!(5000);
    let first = ingest(
        &s,
        vec![
            record("r1", "acme", "gpt-4o-mini", T0),
            record("r2", "acme", "gpt-4o-mini", T0),
            bad,
        ],
    )
    .await;
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["duplicates"], 0);
    assert_eq!(first["rejected"], 1);
    assert_eq!(first["rejections"][0]["request_id"], "r3");
    assert!(first["rejections"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("exceed input_tokens"));

    let again = ingest(
        &s,
        vec![
            record("r1", "acme", "gpt-4o-mini", T0),
            record("r2", "acme", "gpt-4o-mini", T0),
        ],
    )
    .await;
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], 2);

    let (count, total): (i64, Decimal) =
        sqlx::query_as("SELECT count(*), sum(cost) FROM transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count, 2);
    // Two requests at $0.000345 each (see the skeleton e2e test for the arithmetic).
    assert_eq!(total, Decimal::from_str("0.00069").unwrap());
    let (requests, cost): (i64, Decimal) =
        sqlx::query_as("SELECT sum(requests)::int8, sum(cost) FROM usage_hourly")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((requests, cost), (2, Decimal::from_str("0.00069").unwrap()));
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_duplicate_batches_write_one_row_each(pool: PgPool) {
    let s = state(pool.clone()).await;
    let batch: Vec<Value> = (0..200)
        .map(|i| record(&format!("c{i}"), "acme", "gpt-4o-mini", T0 + i))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        let b = batch.clone();
        tasks.push(tokio::spawn(async move { ingest(&s, b).await }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for t in tasks {
        let r = t.await.unwrap();
        accepted += r["accepted"].as_u64().unwrap();
        duplicates += r["duplicates"].as_u64().unwrap();
    }
    assert_eq!(accepted, 200);
    assert_eq!(duplicates, 1000);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rolled: i64 = sqlx::query_scalar("SELECT sum(requests)::int8 FROM usage_hourly")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((rows, rolled), (200, 200));
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_model_is_kept_unpriced_then_repriced(pool: PgPool) {
    let s = state(pool.clone()).await;
    let r = ingest(
        &s,
        vec![
            record("u1", "acme", "acme-llm-1", T0),
            record("p1", "acme", "gpt-4o-mini", T0),
        ],
    )
    .await;
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["unpriced"], 1);

    let (_, summary) = call(
        &s,
        "GET",
        "/v1/summary?tenant_id=acme&start=2025-11-24T00:00:00Z&end=2025-11-25T00:00:00Z",
        Some(ADMIN),
        None,
    )
    .await;
    let g = &summary["groups"][0];
    assert_eq!(g["requests"], 2);
    assert_eq!(g["unpriced_requests"], 1);
    assert_eq!(dec(&g["cost"]), Decimal::from_str("0.000345").unwrap());

    let price = json!({"input": "1.00", "output": "2.00", "cache_read": "0.50",
                       "effective_from": "2025-01-01T00:00:00Z"});
    let (status, body) = call(&s, "PUT", "/v1/prices/acme-llm-1", Some(ADMIN), Some(price)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(&s, "POST", "/v1/reprice", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["priced"], 1);

    // 1000 × $1 + 200 × $0.50 + 300 × $2 per million = $0.0017
    let (status, cost): (String, Decimal) =
        sqlx::query_as("SELECT status, cost FROM transactions WHERE request_id = 'u1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), cost),
        ("priced", Decimal::from_str("0.0017").unwrap())
    );
    let (_, summary) = call(
        &s,
        "GET",
        "/v1/summary?tenant_id=acme&start=2025-11-24T00:00:00Z&end=2025-11-25T00:00:00Z",
        Some(ADMIN),
        None,
    )
    .await;
    let g = &summary["groups"][0];
    assert_eq!(g["requests"], 2);
    assert_eq!(g["unpriced_requests"], 0);
    assert_eq!(dec(&g["cost"]), Decimal::from_str("0.002045").unwrap());
}

#[sqlx::test(migrations = "../migrations")]
async fn transactions_paginate_newest_first_without_gaps(pool: PgPool) {
    let s = state(pool).await;
    let records: Vec<Value> = (0..120)
        .map(|i| record(&format!("p{i:03}"), "acme", "gpt-4o-mini", T0 + i * 1000))
        .collect();
    ingest(&s, records).await;
    ingest(&s, vec![record("other", "globex", "gpt-4o-mini", T0)]).await;
    let mut seen = Vec::new();
    let mut uri = "/v1/transactions?tenant_id=acme&limit=50".to_string();
    loop {
        let (status, page) = call(&s, "GET", &uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for t in page["transactions"].as_array().unwrap() {
            assert_eq!(t["tenant_id"], "acme");
            seen.push(t["request_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/transactions?tenant_id=acme&limit=50&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..120).rev().map(|i| format!("p{i:03}")).collect();
    assert_eq!(seen, expected);
}

#[sqlx::test(migrations = "../migrations")]
async fn summary_over_partial_hours_equals_the_raw_sum(pool: PgPool) {
    let s = state(pool.clone()).await;
    // Records every 7 minutes over 10 hours, two tenants, two models.
    let mut records = Vec::new();
    for i in 0..86i64 {
        let tenant = if i % 3 == 0 { "globex" } else { "acme" };
        let model = if i % 2 == 0 { "gpt-4o-mini" } else { "gpt-4o" };
        records.push(record(&format!("s{i}"), tenant, model, T0 + i * 7 * 60_000));
    }
    ingest(&s, records).await;
    let start = Utc.timestamp_millis_opt(T0 + 95 * 60_000).unwrap(); // 11:35
    let end = Utc
        .timestamp_millis_opt(T0 + 7 * 3_600_000 + 20 * 60_000)
        .unwrap(); // 17:20
    let uri = format!(
        "/v1/summary?group_by=model&start={}&end={}",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let (status, summary) = call(&s, "GET", &uri, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    let raw: Vec<(String, i64, i64, Decimal)> = sqlx::query_as(
        "SELECT model, count(*), sum(input_tokens)::int8, sum(cost) FROM transactions
         WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY model ORDER BY model",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut got: Vec<(String, i64, i64, Decimal)> = summary["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_string(),
                g["requests"].as_i64().unwrap(),
                g["input_tokens"].as_i64().unwrap(),
                dec(&g["cost"]),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, raw);
    assert!(
        raw.iter().map(|r| r.1).sum::<i64>() > 40,
        "the range must cover many rows"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn csv_export_has_header_and_rows(pool: PgPool) {
    let s = state(pool).await;
    ingest(&s, vec![record("x1", "acme", "gpt-4o-mini", T0)]).await;
    let (status, bytes) = call_raw(
        &s,
        "GET",
        "/v1/transactions?tenant_id=acme&format=csv",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("request_id,tenant_id,"));
    assert!(
        lines[1].starts_with("x1,acme,key-acme,openai,gpt-4o-mini,"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains(",priced,USD,0.000345"), "{}", lines[1]);
}

#[sqlx::test(migrations = "../migrations")]
async fn errors_are_json_and_clear(pool: PgPool) {
    let s = state(pool).await;
    let (status, body) = call(&s, "POST", "/v1/usage", None, Some(json!({"records": []}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = call(&s, "GET", "/v1/transactions", Some(INGEST), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the ingest token must not read the ledger"
    );
    let (status, body) = call_raw(
        &s,
        "POST",
        "/v1/usage",
        Some(INGEST),
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    let huge = vec![b' '; (1 << 20) + 10];
    let (status, body) = call_raw(&s, "POST", "/v1/usage", Some(INGEST), Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (status, body) = call(
        &s,
        "GET",
        "/v1/transactions?start=yesterday",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("RFC 3339"));
}

#[sqlx::test(migrations = "../migrations")]
async fn tenant_agreements_discount_and_contract_prices(pool: PgPool) {
    let s = state(pool.clone()).await;
    // acme: 10% off everything from 2025-01-01; globex: contract price for gpt-4o-mini input.
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tenants/acme/pricing",
        Some(ADMIN),
        Some(json!({"discount": {"percent": "10"}, "effective_from": "2025-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tenants/globex/pricing",
        Some(ADMIN),
        Some(json!({"model": "gpt-4o-mini", "custom_prices": {"input": "0.10"}, "effective_from": "2025-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Same key again: immutable.
    let (status, _) = call(
        &s,
        "POST",
        "/v1/tenants/globex/pricing",
        Some(ADMIN),
        Some(json!({"model": "gpt-4o-mini", "custom_prices": {"input": "0.20"}, "effective_from": "2025-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &s,
        "POST",
        "/v1/tenants/acme/pricing",
        Some(ADMIN),
        Some(json!({"discount": {"percent": "140"}})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a discount over 100% is refused"
    );

    ingest(
        &s,
        vec![
            record("a1", "acme", "gpt-4o-mini", T0),
            record("g1", "globex", "gpt-4o-mini", T0),
            record("i1", "initech", "gpt-4o-mini", T0),
        ],
    )
    .await;
    let costs: Vec<(String, Decimal, Decimal, String)> = sqlx::query_as(
        "SELECT tenant_id, cost, cost_discount, price_version FROM transactions ORDER BY tenant_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // List price 0.000345; acme 10% off = 0.0003105 (discount -0.0000345).
    assert_eq!(costs[0].0, "acme");
    assert_eq!(costs[0].1, Decimal::from_str("0.0003105").unwrap());
    assert_eq!(costs[0].2, Decimal::from_str("-0.0000345").unwrap());
    assert!(
        costs[0].3.contains("tenant:acme/*@2025-01-01T00:00:00Z"),
        "{}",
        costs[0].3
    );
    // globex: 1000 uncached × $0.10 + 200 cached × $0.075 (catalog) + 300 × $0.60 = 0.000295.
    assert_eq!(costs[1].0, "globex");
    assert_eq!(costs[1].1, Decimal::from_str("0.000295").unwrap());
    assert_eq!(costs[2].0, "initech");
    assert_eq!(costs[2].1, Decimal::from_str("0.000345").unwrap());

    let (status, body) = call(&s, "GET", "/v1/tenants/globex/pricing", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["agreements"][0]["model"], "gpt-4o-mini");
    assert_eq!(
        body["agreements"][0]["adjustment"]["custom_prices"]["input"],
        "0.10"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reused_request_id_is_a_new_request_but_a_resent_record_is_not(pool: PgPool) {
    let s = state(pool.clone()).await;
    let first = record("same-id", "acme", "gpt-4o-mini", T0);
    let mut second = record("same-id", "acme", "gpt-4o-mini", T0 + 2_000);
    second["output_tokens"] = json!(600);
    let r = ingest(&s, vec![first.clone(), second.clone()]).await;
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    // The filter's retry resends identical records: both are duplicates.
    let r = ingest(&s, vec![second, first]).await;
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    let (rows, total): (i64, Decimal) =
        sqlx::query_as("SELECT count(*), sum(cost) FROM transactions WHERE request_id = 'same-id'")
            .fetch_one(&pool)
            .await
            .unwrap();
    // 0.000345 + (1000 × 0.15 + 200 × 0.075 + 600 × 0.60) / 1e6 = 0.000345 + 0.000525
    assert_eq!((rows, total), (2, Decimal::from_str("0.00087").unwrap()));
}

#[sqlx::test(migrations = "../migrations")]
async fn all_tenant_pages_are_exact_across_time_windows(pool: PgPool) {
    let s = state(pool).await;
    // 90 rows: three 20-minute bursts, then one every 9 days back to ~2 years
    // before T0, so pages cross the 1-hour, 1-day, 31-day and 366-day windows.
    let mut at: Vec<i64> = (0..20).map(|i| T0 - i * 60_000).collect();
    at.extend((0..20).map(|i| T0 - 5 * 3_600_000 - i * 60_000));
    at.extend((0..20).map(|i| T0 - 3 * 86_400_000 - i * 60_000));
    at.extend((1..=30).map(|i| T0 - 9 * 86_400_000 * i * i / 4));
    let records: Vec<Value> = at
        .iter()
        .enumerate()
        .map(|(i, &ms)| {
            let tenant = ["acme", "globex", "initech"][i % 3];
            record(&format!("w{i:02}"), tenant, "gpt-4o-mini", ms)
        })
        .collect();
    ingest(&s, records).await;
    let mut expected: Vec<(i64, String)> = at
        .iter()
        .enumerate()
        .map(|(i, &ms)| (ms, format!("w{i:02}")))
        .collect();
    expected.sort_by(|a, b| b.cmp(a));
    let end = Utc
        .timestamp_millis_opt(T0 + 1)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for query in [
        format!("limit=7&end={end}"),
        "limit=13".to_string(),
        format!("limit=50&end={end}&model=gpt-4o-mini"),
    ] {
        let mut seen = Vec::new();
        let mut uri = format!("/v1/transactions?{query}");
        loop {
            let (status, page) = call(&s, "GET", &uri, Some(ADMIN), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for t in page["transactions"].as_array().unwrap() {
                seen.push(t["request_id"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => uri = format!("/v1/transactions?{query}&cursor={c}"),
                None => break,
            }
        }
        let want: Vec<String> = expected.iter().map(|e| e.1.clone()).collect();
        assert_eq!(seen, want, "{query}");
    }
}

/// Forty overlapping batches at once: the writer merges queued batches into
/// fewer statements, yet every record is accepted by exactly one batch and
/// each batch's answer counts its own records.
#[sqlx::test(migrations = "../migrations")]
async fn merged_concurrent_batches_account_for_every_record_once(pool: PgPool) {
    let s = state(pool.clone()).await;
    // Batch k holds records 25k .. 25k + 50: each overlaps the next by 25.
    let tasks: Vec<_> = (0..40)
        .map(|k| {
            let s = s.clone();
            let batch: Vec<Value> = (25 * k..25 * k + 50)
                .map(|i| record(&format!("m{i:04}"), "acme", "gpt-4o-mini", T0 + i))
                .collect();
            tokio::spawn(async move { ingest(&s, batch).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(
            r["accepted"].as_u64().unwrap() + r["duplicates"].as_u64().unwrap(),
            50,
            "{r}"
        );
        accepted += r["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, 40 * 25 + 25);
    let (rows, rolled): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM transactions),
                (SELECT sum(requests)::int8 FROM usage_hourly)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, rolled), (1025, 1025));
    let statements = s
        .metrics
        .ingest_statements
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        statements < 40,
        "{statements} statements for 40 concurrent batches: none merged"
    );
}

/// The time index is summarized by the collector, not by autovacuum work
/// items (which overflow and flood the server log under load): new block
/// ranges are summarized once, and a time window then skips the rest.
#[sqlx::test(migrations = "../migrations")]
async fn new_ledger_ranges_are_summarized_on_request(pool: PgPool) {
    let s = state(pool.clone()).await;
    let batch: Vec<Value> = (0..8000)
        .map(|i| record(&format!("b{i:05}"), "acme", "gpt-4o-mini", T0 + i * 1000))
        .collect();
    for chunk in batch.chunks(1000) {
        assert_eq!(ingest(&s, chunk.to_vec()).await["accepted"], 1000);
    }
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(reloptions) FROM pg_class WHERE relname = 'ledger_time_brin'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        options.contains(&"autosummarize=off".to_string()),
        "{options:?}"
    );
    let first = collector::db::summarize_time_index(&pool).await.unwrap();
    assert!(
        first >= 2,
        "8,000 rows (~130 bytes each) fill several 32-page ranges: {first}"
    );
    assert_eq!(collector::db::summarize_time_index(&pool).await.unwrap(), 0);
}

/// `name{labels} value` lines of one metric, as (labels, value).
fn metric_lines(text: &str, name: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| l.split_once("} "))
        .map(|(labels, v)| (labels.to_string(), v.to_string()))
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn cost_and_token_metrics_equal_the_ledger_and_a_resend_adds_nothing(pool: PgPool) {
    let s = state(pool.clone()).await;
    let t0 = 1_763_978_400_000;
    let batch: Vec<Value> = (0..12)
        .map(|i| {
            let tenant = ["acme", "globex", "initech"][i % 3];
            let model = ["gpt-4o-mini", "claude-sonnet-4-5", "no-such-model"][i % 4 % 3];
            record(&format!("m{i}"), tenant, model, t0 + i as i64 * 1000)
        })
        .collect();
    ingest(&s, batch.clone()).await;
    // The same batch again (a retry): duplicates, nothing added.
    let again = ingest(&s, batch).await;
    assert_eq!(again["duplicates"], 12, "{again}");
    let (_, text) = call_raw(&s, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(text).unwrap();

    let ledger: Vec<(String, String, String, Decimal)> = sqlx::query_as(
        "SELECT tenant_id, model, currency, sum(cost) FROM transactions
         WHERE status = 'priced' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut shown: Vec<(String, Decimal)> = metric_lines(&text, "billing_cost_total")
        .into_iter()
        .map(|(l, v)| (l, Decimal::from_str(&v).unwrap()))
        .collect();
    shown.sort();
    let mut expected: Vec<(String, Decimal)> = ledger
        .iter()
        .map(|(t, m, c, v)| (format!("tenant=\"{t}\",model=\"{m}\",currency=\"{c}\""), *v))
        .collect();
    expected.sort();
    assert_eq!(shown, expected, "{text}");
    assert!(!expected.is_empty());

    let tokens: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT tenant_id, model, sum(input_tokens)::int8, sum(cache_read_tokens)::int8
         FROM transactions GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let token_lines = metric_lines(&text, "billing_tokens_total");
    for (t, m, input, cached) in tokens {
        for (kind, n) in [("input", input), ("cache_read", cached)] {
            let want = format!("tenant=\"{t}\",model=\"{m}\",kind=\"{kind}\"");
            let got = token_lines.iter().find(|(l, _)| *l == want);
            assert_eq!(
                got.map(|(_, v)| v.clone()),
                Some(n.to_string()),
                "{want} in\n{text}"
            );
        }
    }
    let requests = metric_lines(&text, "billing_requests_total");
    let unpriced: i64 = requests
        .iter()
        .filter(|(l, _)| l.ends_with("status=\"unpriced\""))
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum();
    let total: i64 = requests
        .iter()
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum();
    let (rows, unpriced_rows): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'unpriced') FROM transactions",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((total, unpriced), (rows, unpriced_rows), "{text}");

    // Caps: one tenant and one model labelled, the rest summed as "other".
    let capped = state(pool.clone()).await;
    capped.metrics.usage.set_caps(1, 1);
    let more: Vec<Value> = ["acme", "globex", "initech"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            record(
                &format!("c{i}"),
                t,
                ["gpt-4o-mini", "claude-sonnet-4-5"][i % 2],
                t0 + 50_000,
            )
        })
        .collect();
    ingest(&capped, more).await;
    let (_, text) = call_raw(&capped, "GET", "/metrics", None, None).await;
    let text = String::from_utf8(text).unwrap();
    let costs = metric_lines(&text, "billing_cost_total");
    let labels: Vec<&str> = costs.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "tenant=\"acme\",model=\"gpt-4o-mini\",currency=\"USD\"",
            "tenant=\"other\",model=\"gpt-4o-mini\",currency=\"USD\"",
            "tenant=\"other\",model=\"other\",currency=\"USD\"",
        ],
        "{text}"
    );
    let sum: Decimal = costs
        .iter()
        .map(|(_, v)| Decimal::from_str(v).unwrap())
        .sum();
    let ledger: Decimal =
        sqlx::query_scalar("SELECT sum(cost) FROM transactions WHERE request_id LIKE 'c%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sum, ledger);
}
