//! The hourly, daily and tenant-day rollups against the ledger they are kept
//! from (real PostgreSQL): equal to a brute-force GROUP BY after duplicates
//! and repricing, and summaries over ranges spanning UTC days equal to raw
//! sums.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::http::StatusCode;
use chrono::{SecondsFormat, TimeZone, Utc};
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};

const T0: i64 = 1_763_942_400_000; // 2025-11-24T00:00:00Z
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a decimal: {v}"))).unwrap()
}

/// 150 records, one every 41 minutes from 2025-11-24T00:07Z (~4.3 UTC days):
/// two tenants, two keys (and none), a priced model on two providers and an
/// unpriced one, errors, incomplete streams and reported costs.
fn records() -> Vec<Value> {
    (0..150i64)
        .map(|i| {
            let tenant = if i % 3 == 0 { "globex" } else { "acme" };
            let model = match i % 5 {
                0 | 3 => "gpt-4o-mini",
                1 => "gpt-4o",
                2 => "acme-llm-1",
                _ => "openai/gpt-4o-mini",
            };
            let mut r = record(
                &format!("r{i:03}"),
                tenant,
                model,
                T0 + 7 * MIN + i * 41 * MIN,
            );
            r["api_key_id"] = match i % 4 {
                0 => Value::Null,
                1 | 2 => json!("key-a"),
                _ => json!("key-b"),
            };
            r["input_tokens"] = json!(900 + 13 * i);
            r["output_tokens"] = json!(50 + 7 * i);
            r["cache_read_tokens"] = json!(10 * (i % 9));
            r["reasoning_tokens"] = json!(i % 6);
            if model == "openai/gpt-4o-mini" {
                r["provider"] = json!("openrouter");
                r["reported_cost"] = json!(format!("0.000{}", 200 + i));
            }
            if i % 11 == 0 {
                r["http_status"] = json!(502);
            }
            if i % 7 == 1 {
                r["streamed"] = json!(true);
                r["flags"] = json!(["incomplete"]);
            }
            r
        })
        .collect()
}

/// Group sums keyed by "tenant|bucket|dims...": eight counters, cost, reported cost.
type Groups = BTreeMap<String, ([i64; 8], Decimal, Decimal)>;

const SUMS: &str = "count(*)::int8, count(*) FILTER (WHERE http_status >= 400)::int8,
    count(*) FILTER (WHERE 'incomplete' = ANY(flags))::int8, sum(input_tokens)::int8,
    sum(output_tokens)::int8, sum(cache_read_tokens)::int8, sum(cache_write_tokens)::int8,
    sum(reasoning_tokens)::int8, coalesce(sum(cost), 0), coalesce(sum(reported_cost), 0)";

const ROLLED_SUMS: &str = "sum(requests)::int8, sum(error_requests)::int8,
    sum(incomplete_requests)::int8, sum(input_tokens)::int8, sum(output_tokens)::int8,
    sum(cache_read_tokens)::int8, sum(cache_write_tokens)::int8, sum(reasoning_tokens)::int8,
    sum(cost), sum(reported_cost)";

async fn groups(pool: &PgPool, sql: &str) -> Groups {
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .iter()
        .map(|r| {
            let ints: [i64; 8] = std::array::from_fn(|i| r.get(i + 1));
            let cost: Decimal = r.get(9);
            let reported: Decimal = r.get(10);
            (r.get(0), (ints, cost.normalize(), reported.normalize()))
        })
        .collect()
}

/// Moves the fold watermark by hand (tests start it where they need it).
async fn set_folded_before(pool: &PgPool, ms: i64) {
    sqlx::query("UPDATE rollup_fold SET folded_before = $1")
        .bind(Utc.timestamp_millis_opt(ms).unwrap())
        .execute(pool)
        .await
        .unwrap();
}

async fn fold(pool: &PgPool, ms: i64) -> Option<chrono::DateTime<Utc>> {
    collector::db::fold_rollups(pool, Utc.timestamp_millis_opt(ms).unwrap())
        .await
        .unwrap()
}

/// Folds everything before `ms`, a day per call.
async fn fold_all(pool: &PgPool, ms: i64) -> usize {
    let mut steps = 0;
    while fold(pool, ms).await.is_some() {
        steps += 1;
    }
    steps
}

/// Prunes the hourly rollup up to `ms` (never past the fold watermark), a
/// day per call.
async fn prune_all(pool: &PgPool, ms: i64) {
    let at = Utc.timestamp_millis_opt(ms).unwrap();
    while collector::db::prune_hourly(pool, at)
        .await
        .unwrap()
        .is_some()
    {}
}

/// Every rollup equals a GROUP BY over the ledger (the daily ones over the
/// rows before the fold watermark, nothing after it; the hourly one over the
/// rows from its own watermark on), and holds no empty group.
async fn assert_rollups_match_ledger(pool: &PgPool) -> usize {
    let all =
        "coalesce(api_key_id, ''), provider, coalesce(model, ''), status, coalesce(currency, '')";
    let cases = [
        (
            "usage_hourly",
            "hour::text, api_key_id, provider, model, status, currency",
            format!("date_trunc('hour', occurred_at, 'UTC')::text, {all}"),
        ),
        (
            "usage_daily",
            "day::text, api_key_id, provider, model, status, currency",
            format!("(occurred_at AT TIME ZONE 'UTC')::date::text, {all}"),
        ),
        (
            "usage_tenant_daily",
            "day::text, status, currency",
            "(occurred_at AT TIME ZONE 'UTC')::date::text, status, coalesce(currency, '')"
                .to_string(),
        ),
    ];
    let mut compared = 0;
    for (table, key, ledger_key) in cases {
        // usage_daily is append-only (migration 0025): a group may span
        // several rows, which readers sum.
        let rolled = groups(
            pool,
            &format!(
                "SELECT concat_ws('|', tenant_id, {key}), {ROLLED_SUMS} FROM {table} GROUP BY 1"
            ),
        )
        .await;
        let folded = if table == "usage_hourly" {
            "WHERE occurred_at >= (SELECT hourly_from FROM rollup_fold)"
        } else {
            "WHERE occurred_at < (SELECT folded_before FROM rollup_fold)"
        };
        let raw = groups(
            pool,
            &format!(
                "SELECT concat_ws('|', tenant_id, {ledger_key}), {SUMS} FROM transactions
                 {folded} GROUP BY 1"
            ),
        )
        .await;
        assert_eq!(rolled, raw, "{table}");
        let empty: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM (SELECT concat_ws('|', tenant_id, {key}) FROM {table}
                 GROUP BY 1 HAVING sum(requests) <= 0) g"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(empty, 0, "{table} keeps no empty group");
        compared += raw.len();
    }
    compared
}

#[sqlx::test(migrations = "../migrations")]
async fn rollups_equal_the_ledger_through_duplicates_and_repricing(pool: PgPool) {
    let s = state(pool.clone()).await;
    // Folded up to the middle of the data: rows before it are written to
    // the daily rollups at once (late rows), rows after it wait for a fold.
    set_folded_before(&pool, T0 + 2 * DAY + 7 * HOUR).await;
    let all = records();
    let first = ingest(&s, all[..100].to_vec()).await;
    assert_eq!(first["accepted"], 100);
    // Resends overlapping the first batch, three at once: only the 50 new rows count.
    let resend = all[60..].to_vec();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (s, b) = (s.clone(), resend.clone());
            tokio::spawn(async move { ingest(&s, b).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap()["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, 50);
    assert_eq!(ingest(&s, all.clone()).await["duplicates"], 150);

    let compared = assert_rollups_match_ledger(&pool).await;
    assert!(compared > 150, "compared {compared} groups");
    let daily: i64 = sqlx::query_scalar("SELECT sum(requests)::int8 FROM usage_tenant_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Records every 41 minutes from 00:07: 81 of them (i <= 80) before day 2, 07:00.
    assert_eq!(daily, 81);
    // Every fifth record is the unknown model: 30 unpriced requests over 5 days.
    let unpriced: Vec<(String, i64)> = sqlx::query_as(
        "SELECT (hour AT TIME ZONE 'UTC')::date::text, sum(requests)::int8 FROM usage_hourly
         WHERE status = 'unpriced' AND currency = '' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(unpriced.iter().map(|d| d.1).sum::<i64>(), 30);
    assert_eq!(unpriced.len(), 5, "{unpriced:?}");

    let price = json!({"input": "1.00", "output": "2.00", "cache_read": "0.50",
                       "effective_from": "2025-01-01T00:00:00Z"});
    let (status, body) = call(&s, "PUT", "/v1/prices/acme-llm-1", Some(ADMIN), Some(price)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(&s, "POST", "/v1/reprice", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["priced"], 30);

    assert_rollups_match_ledger(&pool).await;
    // Folding the rest (an hour at a time, then all) completes the daily rollups.
    let w = T0 + 2 * DAY + 8 * HOUR;
    assert_eq!(
        fold(&pool, w + 59 * MIN).await,
        Utc.timestamp_millis_opt(w).single()
    );
    assert_eq!(
        fold(&pool, w).await,
        None,
        "nothing left before the watermark"
    );
    assert_rollups_match_ledger(&pool).await;
    // From day 2, 08:00 to day 6: a day per call.
    assert_eq!(fold_all(&pool, T0 + 6 * DAY).await, 4);
    assert_rollups_match_ledger(&pool).await;
    let (unpriced_groups, priced, cost): (i64, i64, Decimal) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM usage_hourly WHERE status = 'unpriced')
              + (SELECT count(*) FROM usage_daily WHERE status = 'unpriced')
              + (SELECT count(*) FROM usage_tenant_daily WHERE status = 'unpriced'),
            (SELECT sum(requests)::int8 FROM usage_tenant_daily WHERE currency = 'USD'),
            (SELECT sum(cost) FROM usage_daily WHERE model = 'acme-llm-1')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((unpriced_groups, priced), (0, 150));
    // Record i = 5k + 2: input 900 + 13i, cached 10(i mod 9), output 50 + 7i at
    // $1 / $0.50 / $2 per million; reasoning is part of output.
    let expected: Decimal = (0..150i64)
        .filter(|i| i % 5 == 2)
        .map(|i| {
            let cached = 10 * (i % 9);
            Decimal::from(900 + 13 * i - cached)
                + Decimal::from(cached) / Decimal::from(2)
                + Decimal::from(2 * (50 + 7 * i))
        })
        .sum::<Decimal>()
        / Decimal::from(1_000_000);
    assert_eq!(cost.normalize(), expected.normalize());
}

/// requests, errors, incomplete, input, output, cache read, cache write,
/// reasoning, unpriced requests / input / output; cost; reported cost.
type Sums = ([i64; 11], Decimal, Decimal);

async fn brute_force(
    pool: &PgPool,
    key_sql: &str,
    start: i64,
    end: i64,
    filter: &str,
) -> BTreeMap<String, Sums> {
    let sql = format!(
        "SELECT {key_sql}, count(*)::int8, count(*) FILTER (WHERE http_status >= 400)::int8,
            count(*) FILTER (WHERE 'incomplete' = ANY(flags))::int8,
            sum(input_tokens)::int8, sum(output_tokens)::int8, sum(cache_read_tokens)::int8,
            sum(cache_write_tokens)::int8, sum(reasoning_tokens)::int8,
            count(*) FILTER (WHERE status = 'unpriced')::int8,
            coalesce(sum(input_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8,
            coalesce(sum(output_tokens) FILTER (WHERE status = 'unpriced'), 0)::int8,
            coalesce(sum(cost), 0), coalesce(sum(reported_cost), 0)
         FROM transactions WHERE occurred_at >= $1 AND occurred_at < $2 {filter} GROUP BY 1"
    );
    sqlx::query(&sql)
        .bind(Utc.timestamp_millis_opt(start).unwrap())
        .bind(Utc.timestamp_millis_opt(end).unwrap())
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let ints: [i64; 11] = std::array::from_fn(|i| r.get(i + 1));
            let cost: Decimal = r.get(12);
            let reported: Decimal = r.get(13);
            (r.get(0), (ints, cost.normalize(), reported.normalize()))
        })
        .collect()
}

fn from_api(body: &Value) -> BTreeMap<String, Sums> {
    let names = [
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
    ];
    body["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {body}"))
        .iter()
        .map(|g| {
            let ints = names.map(|k| g[k].as_i64().unwrap_or_else(|| panic!("{k} in {g}")));
            (
                g["key"].as_str().unwrap().to_string(),
                (
                    ints,
                    dec(&g["cost"]).normalize(),
                    dec(&g["reported_cost"]).normalize(),
                ),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn summaries_across_day_boundaries_equal_the_raw_sums(pool: PgPool) {
    let s = state(pool.clone()).await;
    let mut all = records();
    // A tenant seen only just inside the complements of long edges: it must
    // net to nothing, not show up as a zero group.
    all.push(record("lonely-1", "initech", "gpt-4o", T0 + HOUR + 5 * MIN));
    all.push(record(
        "lonely-2",
        "initech",
        "gpt-4o",
        T0 + 2 * DAY + 23 * HOUR,
    ));
    // Nothing folded at first: every day comes from the hourly rollup; then
    // the watermark in the middle of the ranges, then past all of them.
    set_folded_before(&pool, T0).await;
    ingest(&s, all).await;
    // Leave some usage unpriced on purpose: it must be counted, not costed.
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
    // Filters: none (tenant-day table), tenant or status only (tenant-day
    // table), and key/model/provider (daily table).
    let filters = [
        ("", ""),
        ("&tenant_id=acme", "AND tenant_id = 'acme'"),
        ("&status=unpriced", "AND status = 'unpriced'"),
        (
            "&tenant_id=globex&status=priced",
            "AND tenant_id = 'globex' AND status = 'priced'",
        ),
        ("&api_key_id=key-a", "AND api_key_id = 'key-a'"),
        (
            "&model=gpt-4o-mini&tenant_id=acme",
            "AND model = 'gpt-4o-mini' AND tenant_id = 'acme'",
        ),
        ("&provider=openrouter", "AND provider = 'openrouter'"),
    ];
    // Short sub-hour + whole-hour edges around 2 whole days; edges at midnight
    // exactly; whole hours around 1 day; 3 days and a millisecond; less than
    // a day across midnight; everything.
    let ranges = [
        (T0 + 5 * HOUR + 13 * MIN, T0 + 3 * DAY + 2 * HOUR + 41 * MIN),
        (T0 + DAY, T0 + 3 * DAY),
        (T0 + 20 * HOUR, T0 + 2 * DAY + 3 * HOUR),
        (T0 + DAY - 1, T0 + 4 * DAY),
        (
            T0 + DAY + 22 * HOUR + 30 * MIN,
            T0 + 2 * DAY + HOUR + 5 * MIN,
        ),
        (T0 - DAY, T0 + 6 * DAY),
        // Long partial days at both edges: whole days minus their complements.
        (
            T0 + 3 * HOUR + 20 * MIN,
            T0 + 2 * DAY + 21 * HOUR + 50 * MIN,
        ),
        (T0 + 11 * HOUR, T0 + 3 * DAY + 13 * HOUR + 1),
        (T0 + 2 * HOUR + 1, T0 + 4 * DAY + 5 * HOUR + 59 * MIN),
    ];
    let mut compared = 0;
    // (fold watermark, hours pruned before): nothing folded; half folded;
    // half folded and the hourly rollup pruned to the middle of a day (the
    // edges of several ranges fall before it); everything folded and pruned.
    for (watermark, pruned) in [
        (T0, None),
        (T0 + DAY + 13 * HOUR, None),
        (T0 + DAY + 13 * HOUR, Some(T0 + DAY + 5 * HOUR)),
        (T0 + 6 * DAY, Some(T0 + 6 * DAY)),
    ] {
        fold_all(&pool, watermark).await;
        let folded = collector::db::folded_before(&pool).await.unwrap();
        assert_eq!(folded.timestamp_millis(), watermark);
        if let Some(p) = pruned {
            prune_all(&pool, p).await;
            let hourly_from: chrono::DateTime<Utc> =
                sqlx::query_scalar("SELECT hourly_from FROM rollup_fold")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(hourly_from.timestamp_millis(), p);
            assert_rollups_match_ledger(&pool).await;
        }
        for (start, end) in ranges {
            for (group_by, key_sql) in keys {
                for (query, sql) in filters {
                    let uri = format!(
                        "/v1/summary?group_by={group_by}&start={}&end={}{query}",
                        rfc3339(start),
                        rfc3339(end)
                    );
                    let (status, body) = call(&s, "GET", &uri, Some(ADMIN), None).await;
                    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
                    let raw = brute_force(&pool, key_sql, start, end, sql).await;
                    assert_eq!(from_api(&body), raw, "{uri} folded before {watermark}");
                    compared += raw.len();
                }
            }
        }
    }
    assert!(compared > 3000, "compared {compared} groups");
    // The whole data set: 152 requests, 30 of them unpriced, over five UTC days.
    let body = get_ok_summary(&s, T0 - DAY, T0 + 6 * DAY, "day").await;
    let days = body["groups"].as_array().unwrap();
    assert_eq!(days.len(), 5);
    let total: i64 = days.iter().map(|d| d["requests"].as_i64().unwrap()).sum();
    let unpriced: i64 = days
        .iter()
        .map(|d| d["unpriced_requests"].as_i64().unwrap())
        .sum();
    assert_eq!((total, unpriced), (152, 30));
}

async fn get_ok_summary(s: &collector::AppState, start: i64, end: i64, group_by: &str) -> Value {
    let uri = format!(
        "/v1/summary?group_by={group_by}&start={}&end={}",
        rfc3339(start),
        rfc3339(end)
    );
    let (status, body) = call(s, "GET", &uri, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

/// Folds an hour at a time while four senders write batches whose rows fall
/// before, at and after the moving watermark (and resend some): the daily
/// rollups end up equal to the ledger, nothing folded twice or missed.
#[sqlx::test(migrations = "../migrations")]
async fn folding_while_batches_arrive_loses_and_doubles_nothing(pool: PgPool) {
    let s = state(pool.clone()).await;
    set_folded_before(&pool, T0).await;
    // 600 records, one every 12 minutes over five days, sent in a scattered
    // order (i * 7 mod 600) so each batch mixes old and new hours.
    let all: Vec<Value> = (0..600i64)
        .map(|i| {
            let j = (i * 7) % 600;
            let tenant = ["acme", "globex", "initech"][(j % 3) as usize];
            let model = if j % 4 == 0 { "gpt-4o" } else { "gpt-4o-mini" };
            record(
                &format!("c{j:03}"),
                tenant,
                model,
                T0 + 3 * MIN + j * 12 * MIN,
            )
        })
        .collect();
    let senders: Vec<_> = (0..4)
        .map(|k| {
            let (s, all) = (s.clone(), all.clone());
            tokio::spawn(async move {
                let mut accepted = 0;
                for batch in all.chunks(15).skip(k).step_by(4) {
                    accepted += ingest(&s, batch.to_vec()).await["accepted"]
                        .as_i64()
                        .unwrap();
                    // Every batch once more, as a filter retry would.
                    assert_eq!(ingest(&s, batch.to_vec()).await["accepted"], 0);
                }
                accepted
            })
        })
        .collect();
    let folder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut folds = 0;
            for hour in 1..=5 * 24 {
                folds += i32::from(fold(&pool, T0 + hour * HOUR).await.is_some());
                tokio::task::yield_now().await;
            }
            folds
        })
    };
    let mut accepted = 0;
    for t in senders {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 600);
    assert_eq!(folder.await.unwrap(), 120);
    assert_rollups_match_ledger(&pool).await;
    assert_eq!(fold_all(&pool, T0 + 6 * DAY).await, 1);
    assert_rollups_match_ledger(&pool).await;
    let (daily, hourly): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(requests)::int8 FROM usage_tenant_daily),
                (SELECT sum(requests)::int8 FROM usage_hourly)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((daily, hourly), (600, 600));
}

/// Budget spend (open-ended, from a period start) equals the ledger's sum
/// whatever the rollups hold: nothing folded, half folded, and folded with
/// the hourly rollup pruned past the start of the periods.
#[sqlx::test(migrations = "../migrations")]
async fn budget_spend_equals_the_ledger_whatever_the_rollups_hold(pool: PgPool) {
    let s = state(pool.clone()).await;
    set_folded_before(&pool, T0).await;
    ingest(&s, records()).await;
    let starts = [
        T0 - DAY,
        T0 + 5 * HOUR + 13 * MIN,
        T0 + DAY,
        T0 + DAY + 30 * MIN,
        T0 + 2 * DAY + 7 * HOUR,
        T0 + 3 * DAY + 23 * HOUR + 59 * MIN,
    ];
    let scopes = [
        ("acme", None, None),
        ("acme", Some("key-a"), None),
        ("globex", None, Some("gpt-4o-mini")),
        ("acme", Some("key-b"), Some("gpt-4o")),
    ];
    let mut nonzero = 0;
    for (watermark, pruned) in [
        (T0, None),
        (T0 + DAY + 13 * HOUR, None),
        (T0 + 2 * DAY + 3 * HOUR, Some(T0 + 2 * DAY)),
        (T0 + 6 * DAY, Some(T0 + 6 * DAY)),
    ] {
        fold_all(&pool, watermark).await;
        if let Some(p) = pruned {
            prune_all(&pool, p).await;
        }
        let mut list = Vec::new();
        for start in starts {
            for (tenant, key, model) in scopes {
                list.push(collector::db::SpendScope {
                    tenant_id: tenant.to_string(),
                    api_key_id: key.map(str::to_string),
                    model: model.map(str::to_string),
                    currency: "USD".to_string(),
                    start: Utc.timestamp_millis_opt(start).unwrap(),
                });
            }
        }
        let spent = collector::db::spent(&pool, &list).await.unwrap();
        for (scope, got) in list.iter().zip(spent) {
            let raw: Decimal = sqlx::query_scalar(
                "SELECT coalesce(sum(cost), 0) FROM transactions
                 WHERE tenant_id = $1 AND occurred_at >= $2 AND status = 'priced'
                   AND currency = 'USD' AND ($3::text IS NULL OR api_key_id = $3)
                   AND ($4::text IS NULL OR model = $4)",
            )
            .bind(&scope.tenant_id)
            .bind(scope.start)
            .bind(&scope.api_key_id)
            .bind(&scope.model)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(
                got.normalize(),
                raw.normalize(),
                "{scope:?} folded before {watermark}, pruned before {pruned:?}"
            );
            if !raw.is_zero() {
                nonzero += 1;
            }
        }
    }
    assert!(nonzero > 60, "only {nonzero} scopes had spend");
}
