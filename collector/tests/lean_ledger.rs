//! The lean ledger (migration 0025) on the real PostgreSQL: what a reader of
//! `transactions` sees is exactly what was ingested and charged, although
//! rows store dictionary ids, uuid request ids, a rate card instead of the
//! cost breakdown, and bits instead of flags.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use collector::pricing::{cost, Catalog, PriceOverride, TenantAdjustment, UsageCounts};
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Deterministic pseudo-random numbers (no dependency, same every run).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// request id, status, then the stored total and its derived parts.
type BreakdownRow = (
    String,
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
);

type Breakdown = (
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
);

#[sqlx::test(migrations = "../migrations")]
async fn the_derived_breakdown_equals_what_pricing_charged(pool: PgPool) {
    let s = state(pool.clone()).await;
    let discount = TenantAdjustment::Discount { percent: d("12.5") };
    let custom = TenantAdjustment::CustomPrices(PriceOverride {
        input: Some(d("2.5")),
        output: Some(d("11")),
        cache_write_1h: Some(d("5.125")),
        ..PriceOverride::default()
    });
    for (tenant, body) in [
        (
            "disc",
            json!({"discount": {"percent": "12.5"}, "effective_from": "2025-01-01T00:00:00Z"}),
        ),
        (
            "custom",
            json!({"model": "claude-sonnet-4-5", "custom_prices": {"input": "2.5", "output": "11",
                "cache_write_1h": "5.125"}, "effective_from": "2025-01-01T00:00:00Z"}),
        ),
    ] {
        let (status, body) = call(
            &s,
            "POST",
            &format!("/v1/tenants/{tenant}/pricing"),
            Some(ADMIN),
            Some(body),
        )
        .await;
        assert_eq!(status.as_u16(), 201, "{body}");
    }
    let catalog = Catalog::bundled().unwrap();
    let models = [
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-1"),
        ("openai", "gpt-4o-mini"),
    ];
    let tenants = ["plain", "disc", "custom"];
    let mut rng = Lcg(7);
    let mut records = Vec::new();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..150u64 {
        let (provider, model) = models[(i % 3) as usize];
        let tenant = tenants[((i / 3) % 3) as usize];
        // Above 200k input tokens in a fifth of the requests: the long
        // context tier of the Claude models.
        let input = if rng.below(5) == 0 {
            200_001 + rng.below(300_000)
        } else {
            1 + rng.below(20_000)
        };
        let cache_read = rng.below(input / 3 + 1);
        let cache_write = rng.below((input - cache_read) / 2 + 1);
        let cache_write_1h = rng.below(cache_write + 1);
        let output = rng.below(8_000);
        let reasoning = rng.below(output + 1);
        let status = if i % 17 == 0 { 500 } else { 200 };
        let at_ms = 1_763_978_400_000 + i as i64 * 1_000;
        let id = format!("r{i}");
        records.push(json!({
            "request_id": id, "tenant_id": tenant, "provider": provider, "model": model,
            "http_status": status, "streamed": i % 2 == 0, "started_at_ms": at_ms,
            "input_tokens": input, "output_tokens": output, "cache_read_tokens": cache_read,
            "cache_write_tokens": cache_write, "cache_write_1h_tokens": cache_write_1h,
            "reasoning_tokens": reasoning
        }));
        let usage = UsageCounts {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            cache_write_1h_tokens: cache_write_1h,
            reasoning_tokens: reasoning,
        };
        let at: DateTime<Utc> = Utc.timestamp_millis_opt(at_ms).unwrap();
        let entry = catalog.lookup(provider, model, at).unwrap();
        let adjustment = match tenant {
            "disc" => Some(&discount),
            "custom" if model == "claude-sonnet-4-5" => Some(&custom),
            _ => None,
        };
        let b = cost(&usage, entry, adjustment).unwrap();
        expected.insert(
            id,
            (
                b.total,
                b.input,
                b.cache_read,
                b.cache_write,
                b.output,
                b.reasoning,
                b.request_fee,
                b.discount,
            ),
        );
    }
    for chunk in records.chunks(50) {
        assert_eq!(ingest(&s, chunk.to_vec()).await["accepted"], 50);
    }
    let rows: Vec<BreakdownRow> = sqlx::query_as(
        "SELECT request_id, status, cost, cost_input, cost_cache_read, cost_cache_write,
                cost_output, cost_reasoning, cost_request_fee, cost_discount
             FROM transactions ORDER BY request_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 150);
    let mut discounted = 0;
    for (id, status, total, input, cache_read, cache_write, output, reasoning, fee, discount) in
        rows
    {
        assert_eq!(status, "priced", "{id}");
        let got: Breakdown = (
            total,
            input,
            cache_read,
            cache_write,
            output,
            reasoning,
            fee,
            discount,
        );
        assert_eq!(got, expected[&id], "{id}");
        assert_eq!(
            input + cache_read + cache_write + output + reasoning + fee + discount,
            total,
            "{id}: the parts add up to the stored total"
        );
        if !discount.is_zero() {
            discounted += 1;
        }
    }
    assert!(discounted >= 40, "{discounted}");
    // One card per distinct price charged, not per row.
    let cards: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_rates")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!((3..=15).contains(&cards), "{cards} rate cards");
}

#[sqlx::test(migrations = "../migrations")]
async fn every_field_reads_back_as_ingested(pool: PgPool) {
    let s = state(pool.clone()).await;
    let at = 1_763_978_400_000i64;
    let canonical = "0b6f2c1e-3d4a-4f5b-8c7d-9e0f1a2b3c4d";
    let ids = [
        canonical,
        "0B6F2C1E-3D4A-4F5B-8C7D-9E0F1A2B3C4E",
        "0b6f2c1e3d4a4f5b8c7d9e0f1a2b3c4f",
        "req-1",
        "x",
    ];
    let mut records: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "request_id": id, "tenant_id": "acme", "api_key_id": "key-1",
                "provider": "openai", "model": "gpt-4o-mini", "route": "chat",
                "http_status": 200, "streamed": true, "started_at_ms": at + i as i64,
                "ttfb_ms": 120, "duration_ms": 900, "input_tokens": 1000, "output_tokens": 10,
                "reported_cost": "0.00042", "flags": ["incomplete", "compressed"]
            })
        })
        .collect();
    // Nothing optional given, an unknown model: unpriced.
    records.push(json!({
        "request_id": "bare", "tenant_id": "acme", "provider": "openai",
        "http_status": 502, "started_at_ms": at + 10
    }));
    records.push(json!({
        "request_id": "odd", "tenant_id": "acme", "provider": "openai", "model": "no-such-model",
        "http_status": 200, "started_at_ms": at + 11, "input_tokens": 5
    }));
    assert_eq!(ingest(&s, records.clone()).await["accepted"], 7);
    // Resent as the filter retries: nothing new, whatever the id's form.
    assert_eq!(ingest(&s, records).await["duplicates"], 7);

    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
        Option<i64>,
        Option<i64>,
        Option<Decimal>,
        Vec<String>,
        String,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT request_id, api_key_id, model, route, streamed, ttfb_ms, duration_ms,
            reported_cost, flags, status, received_at
         FROM transactions ORDER BY occurred_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got_ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        got_ids,
        [ids.as_slice(), &["bare", "odd"]].concat(),
        "request ids come back exactly as sent"
    );
    for r in &rows[..5] {
        assert_eq!(r.1.as_deref(), Some("key-1"));
        assert_eq!(r.2.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(r.3.as_deref(), Some("chat"));
        assert!(r.4);
        assert_eq!((r.5, r.6), (Some(120), Some(900)));
        assert_eq!(r.7, Some(d("0.00042")));
        assert_eq!(r.8, ["incomplete", "compressed"]);
        assert_eq!(r.9, "priced");
    }
    let bare = &rows[5];
    assert_eq!(
        (&bare.1, &bare.2, &bare.3, bare.4, bare.5, bare.6, bare.7),
        (&None, &None, &None, false, None, None, None)
    );
    assert!(bare.8.is_empty());
    assert_eq!(bare.9, "unpriced");
    assert_eq!(rows[6].2.as_deref(), Some("no-such-model"));
    assert_eq!(rows[6].9, "unpriced");
    // received_at is when the collector stored the row (ms after occurred_at).
    assert!(rows
        .iter()
        .all(|r| r.10 > Utc.timestamp_millis_opt(at).unwrap()));

    // Only the ids not in canonical uuid form need their text kept.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM ledger_request_names ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        names,
        [
            "0B6F2C1E-3D4A-4F5B-8C7D-9E0F1A2B3C4E",
            "0b6f2c1e3d4a4f5b8c7d9e0f1a2b3c4f",
            "bare",
            "odd",
            "req-1",
            "x"
        ]
    );
    // The API reads the same.
    let (status, body) = call(
        &s,
        "GET",
        "/v1/transactions?tenant_id=acme&limit=10",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    let listed: Vec<&str> = body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["odd", "bare", "x", "req-1", ids[2], ids[1], canonical]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn dictionaries_grow_by_new_names_only(pool: PgPool) {
    let s = state(pool.clone()).await;
    for batch in 0..20i64 {
        let records: Vec<Value> = (0..10)
            .map(|i| {
                record(
                    &format!("b{batch}-{i}"),
                    &format!("tenant-{}", i % 3),
                    "gpt-4o-mini",
                    1_763_978_400_000 + batch * 100 + i,
                )
            })
            .collect();
        assert_eq!(ingest(&s, records).await["accepted"], 10);
    }
    // Identity values are not spent on names that already exist, so the
    // int4 ids last.
    for table in [
        "ledger_tenants",
        "ledger_api_keys",
        "ledger_models",
        "ledger_rates",
    ] {
        let (count, max): (i64, i32) =
            sqlx::query_as(&format!("SELECT count(*), max(id) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(i64::from(max), count, "{table}");
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_tenants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tenants, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_collector_and_the_database_store_a_request_id_as_the_same_uuid(pool: PgPool) {
    let long = "r".repeat(256);
    for id in [
        "0b6f2c1e-3d4a-4f5b-8c7d-9e0f1a2b3c4d",
        "0B6F2C1E-3D4A-4F5B-8C7D-9E0F1A2B3C4D",
        "0b6f2c1e3d4a4f5b8c7d9e0f1a2b3c4d",
        "{0b6f2c1e-3d4a-4f5b-8c7d-9e0f1a2b3c4d}",
        "00000000-0000-0000-0000-000000000000",
        "req-1",
        "x",
        "é-ü-日本",
        long.as_str(),
    ] {
        let in_sql: uuid::Uuid = sqlx::query_scalar("SELECT ledger_request_uuid($1)")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(collector::db::stored_request_uuid(id), in_sql, "{id}");
    }
}
