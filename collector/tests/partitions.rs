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
        "SELECT count(*) FROM ledger
         WHERE tableoid::regclass::text <> 'ledger_p' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYYMM')",
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
        "ledger_p202509",
        "ledger_p202510",
        "ledger_p202511",
        "ledger_p202512",
        "ledger_p202601",
    ] {
        assert!(
            names.contains(&month.to_string()),
            "{month} missing: {names:?}"
        );
    }
    let per_month: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*) FROM ledger GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_month.iter().map(|r| r.1).sum::<i64>(), 6000);
    assert_eq!(
        per_month.first().map(|r| r.0.as_str()),
        Some("ledger_p202509")
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
        "SELECT t.request_id, l.tableoid::regclass::text FROM ledger l
         JOIN transactions t ON t.tenant_key = l.tenant_id AND t.request_key = l.request_id
             AND t.occurred_at = l.occurred_at
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // A second before now: at the stroke of a month, the month before.
    let this_month = format!(
        "ledger_p{}",
        (now - chrono::Duration::seconds(1)).format("%Y%m")
    );
    assert_eq!(
        rows,
        vec![
            ("now-1".to_string(), this_month),
            ("old-1".to_string(), "ledger_p202402".to_string()),
            ("old-2".to_string(), "ledger_p202403".to_string()),
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

/// A month of usage (2025-11), its neighbours, and what a summary says of it.
async fn november(state: &collector::AppState) {
    let mut records = Vec::new();
    for i in 0..60i64 {
        // Every 11 hours from 2025-11-02T03:00Z, two tenants.
        let at = at("2025-11-02T03:00:00Z").timestamp_millis() + i * 11 * 3_600_000;
        let tenant = if i % 3 == 0 { "globex" } else { "acme" };
        records.push(record(&format!("nov-{i}"), tenant, "gpt-4o-mini", at));
    }
    records.push(record(
        "oct-last",
        "acme",
        "gpt-4o-mini",
        at("2025-10-31T23:59:59Z").timestamp_millis(),
    ));
    records.push(record(
        "dec-first",
        "acme",
        "gpt-4o-mini",
        at("2025-12-01T00:00:00Z").timestamp_millis(),
    ));
    ingest(state, records).await;
}

async fn summary(
    state: &collector::AppState,
    query: &str,
) -> (axum::http::StatusCode, serde_json::Value) {
    call(
        state,
        "GET",
        &format!("/v1/summary?{query}"),
        Some(ADMIN),
        None,
    )
    .await
}

#[sqlx::test(migrations = "../migrations")]
async fn an_archived_month_leaves_the_ledger_and_summaries_answer_from_the_rollups(pool: PgPool) {
    let state = state(pool.clone()).await;
    november(&state).await;
    let month = at("2025-11-01T00:00:00Z");
    let whole = "tenant_id=acme&group_by=day&start=2025-11-01T00:00:00Z&end=2025-12-01T00:00:00Z";
    let (_, before) = summary(&state, whole).await;
    let exported = collector::db::month_totals(&pool, month).await.unwrap();
    assert_eq!(exported.rows, 60);
    let file = collector::db::ArchiveFile {
        format: "parquet".into(),
        path: "/archive/ledger-2025-11.parquet".into(),
        sha256: "00".repeat(32),
    };
    collector::db::archive_partition(&pool, month, &exported, &file, state.clock.now())
        .await
        .unwrap();

    // The partition is gone with its 60 rows; the neighbours stay.
    let names: Vec<String> = collector::db::ledger_partitions(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(!names.contains(&"ledger_p202511".to_string()), "{names:?}");
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT request_id FROM transactions ORDER BY request_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![("dec-first".to_string(),), ("oct-last".to_string(),)]
    );

    // Whole days answer exactly as before, from the daily rollups, saying so.
    let (status, after) = summary(&state, whole).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{after}");
    assert_eq!(after["groups"], before["groups"]);
    assert_eq!(after["archived"]["months"], serde_json::json!(["2025-11"]));
    assert_eq!(after["archived"]["source"], "daily rollups");
    let requests: i64 = after["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(requests, 40);

    // Edges inside the month are widened to whole days, and said so.
    let (status, partial) = summary(
        &state,
        "tenant_id=acme&start=2025-11-02T05:00:00Z&end=2025-11-03T01:00:00Z",
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{partial}");
    assert_eq!(partial["start"], "2025-11-02T00:00:00Z");
    assert_eq!(partial["end"], "2025-11-04T00:00:00Z");
    assert_eq!(
        partial["archived"]["requested_start"],
        "2025-11-02T05:00:00Z"
    );
    // acme's rows on 2 and 3 November (03:00 and 14:00 on the 2nd is globex's
    // first, then every 11 h).
    let raw_acme_days: i64 = (0..60i64)
        .filter(|i| i % 3 != 0)
        .map(|i| at("2025-11-02T03:00:00Z") + chrono::Duration::hours(11 * i))
        .filter(|t| *t < at("2025-11-04T00:00:00Z"))
        .count() as i64;
    assert_eq!(
        partial["groups"][0]["requests"].as_i64(),
        Some(raw_acme_days)
    );

    // Hours of an archived month are not kept: refused with the reason.
    let (status, hourly) = summary(&state, &whole.replace("group_by=day", "group_by=hour")).await;
    assert_eq!(status, axum::http::StatusCode::BAD_REQUEST, "{hourly}");
    assert!(
        hourly.to_string().contains("archived months (2025-11)"),
        "{hourly}"
    );

    // The transaction listing no longer has them; a range after the month
    // is unaffected and says nothing of archives.
    let (_, december) = summary(
        &state,
        "tenant_id=acme&start=2025-12-01T00:00:00Z&end=2025-12-02T00:00:00Z",
    )
    .await;
    assert!(december.get("archived").is_none(), "{december}");
    assert_eq!(december["groups"][0]["requests"].as_i64(), Some(1));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_month_that_changed_since_its_export_is_not_archived(pool: PgPool) {
    let state = state(pool.clone()).await;
    november(&state).await;
    let month = at("2025-11-01T00:00:00Z");
    let exported = collector::db::month_totals(&pool, month).await.unwrap();
    // A late retry lands after the export.
    ingest(
        &state,
        vec![record(
            "nov-late",
            "acme",
            "gpt-4o-mini",
            at("2025-11-15T12:00:00Z").timestamp_millis(),
        )],
    )
    .await;
    let file = collector::db::ArchiveFile {
        format: "parquet".into(),
        path: "x".into(),
        sha256: "00".repeat(32),
    };
    let err = collector::db::archive_partition(&pool, month, &exported, &file, state.clock.now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("61 rows"), "{err}");
    assert!(err.to_string().contains("export again"), "{err}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_p202511")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 61, "nothing dropped");
    // Not folded yet: refused too, the rollups would be all that is left.
    sqlx::query("UPDATE rollup_fold SET folded_before = '2025-11-20T00:00:00Z'")
        .execute(&pool)
        .await
        .unwrap();
    let now = collector::db::month_totals(&pool, month).await.unwrap();
    let err = collector::db::archive_partition(&pool, month, &now, &file, state.clock.now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not folded"), "{err}");
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_archives")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(archived, 0);
}

/// Eight transactions at once (as from several replicas: the group commit
/// of one replica would merge them), all for a month nobody has written
/// yet: each waits for whichever creates the partition, none fails.
#[sqlx::test(migrations = "../migrations")]
async fn concurrent_batches_for_a_new_month_all_land(pool: PgPool) {
    let base = at("2023-07-15T12:00:00Z").timestamp_millis();
    let tasks: Vec<_> = (0..8i64)
        .map(|b| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let entries: Vec<collector::db::LedgerEntry> = (0..25)
                    .map(|i| collector::db::LedgerEntry {
                        record: serde_json::from_value(record(
                            &format!("b{b}-r{i}"),
                            "acme",
                            "gpt-4o-mini",
                            base + b * 1000 + i,
                        ))
                        .unwrap(),
                        price: None,
                    })
                    .collect();
                collector::db::insert_batch(&pool, &entries).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().len(), 25);
    }
    let (rows, partitions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT l.tableoid) FROM ledger l
         JOIN ledger_request_names n ON n.id = l.request_id WHERE n.name LIKE 'b%-r%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, partitions), (200, 1));
}
