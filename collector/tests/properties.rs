//! Randomized properties of the ledger on the real PostgreSQL: whatever the
//! duplicates, the ordering and the batching, the ledger holds each request
//! once and the summaries equal sums computed independently in memory.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{TimeZone, Utc};
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const T0: i64 = 1_763_942_400_000; // 2025-11-24T00:00:00Z
const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "no-such-model",
];
const TENANTS: &[&str] = &["acme", "globex", "initech"];

#[derive(Default, Debug, PartialEq)]
struct Sums {
    requests: i64,
    input: i64,
    output: i64,
    unpriced: i64,
}

#[sqlx::test(migrations = "../migrations")]
async fn summaries_equal_independent_sums_under_duplicates_and_reordering(pool: PgPool) {
    let s = state(pool.clone()).await;
    let mut rng = Rng(0x00C0_FFEE);
    // 400 distinct requests over three days.
    let mut unique: Vec<Value> = Vec::new();
    for i in 0..400 {
        let model = MODELS[rng.below(MODELS.len() as u64) as usize];
        let tenant = TENANTS[rng.below(TENANTS.len() as u64) as usize];
        let at = T0 + rng.below(3 * 86_400_000) as i64;
        let input = 1 + rng.below(50_000);
        let cache_read = rng.below(input + 1) / 2;
        let output = rng.below(4_000);
        let reasoning = rng.below(output + 1) / 3;
        unique.push(json!({
            "request_id": format!("req-{i}"), "tenant_id": tenant, "api_key_id": format!("k{}", rng.below(4)),
            "provider": if model.starts_with("claude") { "anthropic" } else if model.starts_with("gemini") { "gemini" } else { "openai" },
            "model": model, "http_status": 200, "streamed": rng.below(2) == 1, "started_at_ms": at,
            "input_tokens": input, "cache_read_tokens": cache_read, "output_tokens": output,
            "reasoning_tokens": reasoning
        }));
    }
    // Every record sent 1-3 times, shuffled, in random batch sizes, some concurrently.
    let mut deliveries: Vec<Value> = Vec::new();
    for r in &unique {
        for _ in 0..=rng.below(3) {
            deliveries.push(r.clone());
        }
    }
    for i in (1..deliveries.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        deliveries.swap(i, j);
    }
    let mut batches = Vec::new();
    let mut rest = deliveries.as_slice();
    while !rest.is_empty() {
        let n = (1 + rng.below(120) as usize).min(rest.len());
        batches.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    let mut accepted = 0;
    for pair in batches.chunks(3) {
        let tasks: Vec<_> = pair
            .iter()
            .map(|b| {
                let s = s.clone();
                let b = b.clone();
                tokio::spawn(async move { ingest(&s, b).await })
            })
            .collect();
        for t in tasks {
            accepted += t.await.unwrap()["accepted"].as_u64().unwrap();
        }
    }
    assert_eq!(accepted, 400, "each request accepted exactly once");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 400);

    // Random windows, not aligned to hours, grouped by model and by tenant.
    for round in 0..6 {
        let a = T0 + rng.below(3 * 86_400_000) as i64;
        let b = T0 + rng.below(3 * 86_400_000) as i64;
        let (start, end) = (a.min(b), a.max(b) + 1);
        let group = if round % 2 == 0 { "model" } else { "tenant" };
        let mut expected: BTreeMap<String, Sums> = BTreeMap::new();
        for r in &unique {
            let at = r["started_at_ms"].as_i64().unwrap();
            if at < start || at >= end {
                continue;
            }
            let key = r[if group == "model" {
                "model"
            } else {
                "tenant_id"
            }]
            .as_str()
            .unwrap()
            .to_string();
            let e = expected.entry(key).or_default();
            e.requests += 1;
            e.input += r["input_tokens"].as_i64().unwrap();
            e.output += r["output_tokens"].as_i64().unwrap();
            e.unpriced += i64::from(r["model"] == "no-such-model");
        }
        let fmt = |ms: i64| {
            Utc.timestamp_millis_opt(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let uri = format!(
            "/v1/summary?group_by={group}&start={}&end={}",
            fmt(start),
            fmt(end)
        );
        let (status, body) = call(&s, "GET", &uri, Some(ADMIN), None).await;
        assert!(status.is_success(), "{body}");
        let got: BTreeMap<String, Sums> = body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["key"].as_str().unwrap().to_string(),
                    Sums {
                        requests: g["requests"].as_i64().unwrap(),
                        input: g["input_tokens"].as_i64().unwrap(),
                        output: g["output_tokens"].as_i64().unwrap(),
                        unpriced: g["unpriced_requests"].as_i64().unwrap(),
                    },
                )
            })
            .collect();
        assert_eq!(got, expected, "round {round} {uri}");
        // Cost: the rollup path equals the raw ledger's exact sum.
        let raw: Vec<(String, Decimal)> = sqlx::query_as(&format!(
            "SELECT {}, coalesce(sum(cost), 0) FROM transactions
             WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY 1",
            if group == "model" {
                "model"
            } else {
                "tenant_id"
            }
        ))
        .bind(Utc.timestamp_millis_opt(start).unwrap())
        .bind(Utc.timestamp_millis_opt(end).unwrap())
        .fetch_all(&pool)
        .await
        .unwrap();
        let raw: HashMap<String, Decimal> = raw.into_iter().collect();
        for g in body["groups"].as_array().unwrap() {
            let key = g["key"].as_str().unwrap();
            assert_eq!(
                Decimal::from_str(g["cost"].as_str().unwrap()).unwrap(),
                raw[key],
                "round {round} {key}"
            );
        }
    }
}
