//! The month-partitioned ledger (migration 0021) on the real PostgreSQL:
//! migrating a populated ledger loses and doubles nothing, records of any
//! month find (or create) their partition, and the coming months are
//! created ahead of time.

mod common;

use chrono::{DateTime, Months, Utc};
use common::*;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

/// The first migration of the partitioned ledger.
const PARTITIONING: i64 = 21;

/// Every column of every ledger row, in key order, as one digest: equal
/// digests mean the same rows with the same values, none lost or doubled.
const LEDGER_DIGEST: &str = "SELECT count(*), md5(coalesce(string_agg(row(tenant_id, request_id,
        occurred_at, received_at, api_key_id, provider, model, route, http_status, streamed,
        ttfb_ms, duration_ms, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
        cache_write_1h_tokens, reasoning_tokens, status, currency, cost, cost_input,
        cost_cache_read, cost_cache_write, cost_output, cost_reasoning, cost_request_fee,
        cost_discount, price_id, price_version, reported_cost, flags)::text, '|'
        ORDER BY tenant_id, occurred_at, request_id), ''))
    FROM transactions";

async fn migrate_before_partitioning(pool: &PgPool) {
    let mut before: Migrator = sqlx::migrate!("../migrations");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < PARTITIONING)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(pool).await.unwrap();
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

#[sqlx::test(migrations = false)]
async fn migrating_a_populated_ledger_loses_and_doubles_nothing(pool: PgPool) {
    migrate_before_partitioning(&pool).await;
    let price_id: i64 = sqlx::query_scalar(
        "INSERT INTO price_catalog (model, effective_from, entry, source)
         VALUES ('gpt-4o-mini', '2025-01-01T00:00:00Z', '{}', 'test') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // 6,000 rows over four months (2025-10 to 2026-01), across month ends,
    // priced and unpriced, with NULLs, flags, a reported cost, and one
    // request id reused at two instants (two rows by design).
    sqlx::query(
        "INSERT INTO transactions (tenant_id, request_id, occurred_at, received_at, api_key_id,
            provider, model, route, http_status, streamed, ttfb_ms, duration_ms, input_tokens,
            output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
            reasoning_tokens, status, currency, cost, cost_input, cost_cache_read,
            cost_cache_write, cost_output, cost_reasoning, cost_request_fee, cost_discount,
            price_id, price_version, reported_cost, flags)
         SELECT 'tenant-' || (i % 7), CASE WHEN i IN (10, 4010) THEN 'reused' ELSE 'req-' || i END,
            timestamptz '2025-10-01T00:00:00Z' + (i * interval '29 minutes') - interval '3 hours',
            timestamptz '2025-10-01T00:00:01Z' + (i * interval '29 minutes') - interval '3 hours',
            CASE WHEN i % 5 = 0 THEN NULL ELSE 'key-' || (i % 3) END, 'openai',
            CASE WHEN i % 11 = 0 THEN NULL ELSE 'gpt-4o-mini' END,
            CASE WHEN i % 2 = 0 THEN 'llm' END, CASE WHEN i % 13 = 0 THEN 500 ELSE 200 END,
            i % 2 = 0, CASE WHEN i % 2 = 0 THEN i % 900 END, i % 5000, 1000 + i, 300 + i % 17,
            i % 200, i % 3, i % 2, i % 5,
            CASE WHEN i % 11 = 0 THEN 'unpriced' ELSE 'priced' END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE 'USD' END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE (1000 + i) * 0.00000015 END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE (1000 + i) * 0.00000015 END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE 0 END, CASE WHEN i % 11 = 0 THEN NULL ELSE 0 END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE 0 END, CASE WHEN i % 11 = 0 THEN NULL ELSE 0 END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE 0 END, CASE WHEN i % 11 = 0 THEN NULL ELSE 0 END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE $1 END,
            CASE WHEN i % 11 = 0 THEN NULL ELSE 'gpt-4o-mini@2025-01-01T00:00:00Z' END,
            CASE WHEN i % 17 = 0 THEN 0.0123 END,
            CASE WHEN i % 19 = 0 THEN '{incomplete}'::text[] ELSE '{}'::text[] END
         FROM generate_series(0, 5999) AS i",
    )
    .bind(price_id)
    .execute(&pool)
    .await
    .unwrap();
    let before: (i64, String) = sqlx::query_as(LEDGER_DIGEST)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(before.0, 6000);

    collector::db::migrate(&pool).await.unwrap();

    let after: (i64, String) = sqlx::query_as(LEDGER_DIGEST)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        after, before,
        "the migrated ledger differs from the original"
    );
    // Each row sits in the partition of its own UTC month.
    let misplaced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transactions
         WHERE tableoid::regclass::text <> 'transactions_p' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYYMM')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(misplaced, 0);
    let names: Vec<String> = collector::db::ledger_partitions(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    for month in [
        "transactions_p202509",
        "transactions_p202510",
        "transactions_p202511",
        "transactions_p202512",
        "transactions_p202601",
    ] {
        assert!(
            names.contains(&month.to_string()),
            "{month} missing: {names:?}"
        );
    }
    let per_month: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*) FROM transactions GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_month.iter().map(|r| r.1).sum::<i64>(), 6000);
    assert_eq!(
        per_month.first().map(|r| r.0.as_str()),
        Some("transactions_p202509")
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn records_of_any_month_land_in_their_partition_exactly_once(pool: PgPool) {
    let state = state(pool.clone()).await;
    let now = state.clock.now();
    // A month long past (no partition yet), the first and last millisecond
    // of a month, and this month.
    let old = at("2024-02-29T23:59:59.999Z").timestamp_millis();
    let first_ms = at("2024-03-01T00:00:00Z").timestamp_millis();
    let records = vec![
        record("old-1", "acme", "gpt-4o-mini", old),
        record("old-2", "acme", "gpt-4o-mini", first_ms),
        record(
            "now-1",
            "acme",
            "gpt-4o-mini",
            now.timestamp_millis() - 1000,
        ),
    ];
    ingest(&state, records.clone()).await;
    // The filter resends: nothing doubles.
    ingest(&state, records).await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT request_id, tableoid::regclass::text FROM transactions ORDER BY request_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let this_month = format!("transactions_p{}", now.format("%Y%m"));
    assert_eq!(
        rows,
        vec![
            ("now-1".to_string(), this_month),
            ("old-1".to_string(), "transactions_p202402".to_string()),
            ("old-2".to_string(), "transactions_p202403".to_string()),
        ]
    );
    let (status, body) = call(
        &state,
        "GET",
        "/v1/transactions?tenant_id=acme",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert_eq!(body["transactions"].as_array().map(Vec::len), Some(3));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_coming_months_are_created_ahead(pool: PgPool) {
    let now = test_now();
    collector::db::ensure_partitions_ahead(&pool, now, 2)
        .await
        .unwrap();
    // Twice is harmless.
    collector::db::ensure_partitions_ahead(&pool, now, 2)
        .await
        .unwrap();
    let months: Vec<DateTime<Utc>> = collector::db::ledger_partitions(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.month)
        .collect();
    let this = collector::db::month_start(now);
    for i in 0..=2 {
        let m = this.checked_add_months(Months::new(i)).unwrap();
        assert!(months.contains(&m), "{m} missing from {months:?}");
    }
}
