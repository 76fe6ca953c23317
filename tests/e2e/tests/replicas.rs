//! Two collector replicas on one database behind one real Envoy, whose
//! `billing_collector` cluster round-robins the filter's calls over both,
//! with everything that runs in the background running on both: ingest,
//! a budget with webhook alerts (evaluated and delivered by both), the
//! price sync (both syncing one list from a server this test runs), and the
//! rollup fold (one replica restarted mid-traffic folds at start). Checked:
//! every request billed exactly once, no alert delivered twice, a synced
//! price change added once, summaries equal to the ledger across the fold,
//! and a price changed through one replica pricing the next record the
//! other one ingests.
//!
//! This is about the collector, not the filter: it runs in the wasm pass
//! only (skipped when `BILLING_ARTIFACT=native`).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use e2e::{Stack, StackOptions, ADMIN_TOKEN, INGEST_TOKEN};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const TENANT: &str = "replicated";
const FOLD_TENANT: &str = "folded";
const SYNCED_MODEL: &str = "e2e/synced-model";
const WEBHOOK_SECRET: &str = "e2e-replicas-webhook-secret";
/// Requests before the price change, and at least as many after it.
const BEFORE: usize = 24;
const AFTER: usize = 16;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// What the demo upstream reports for a gpt-4o-mini chat (1,000 uncached
/// input tokens, 200 cached, 300 output) at per-million prices.
fn chat_cost(input: &str, cache_read: &str, output: &str) -> Decimal {
    (d(input) * Decimal::from(1000)
        + d(cache_read) * Decimal::from(200)
        + d(output) * Decimal::from(300))
        / Decimal::from(1_000_000)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Serves `body` (changeable) as an OpenRouter model list; returns its URL.
async fn price_list(body: Arc<Mutex<String>>) -> String {
    let app = Router::new().route(
        "/api/v1/models",
        get(move || {
            let body = body.clone();
            async move { body.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/v1/models")
}

fn openrouter_list(prompt: &str) -> String {
    json!({"data": [{"id": SYNCED_MODEL,
        "pricing": {"prompt": prompt, "completion": "0.000002"}}]})
    .to_string()
}

/// One webhook delivery as received.
#[derive(Debug, Clone)]
struct Delivery {
    idempotency_key: String,
    signed: bool,
    body: Value,
}

/// Receives alert webhooks; returns the URL and what arrived.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                sink.lock().unwrap().push(Delivery {
                    idempotency_key: header("x-billing-idempotency-key"),
                    signed: header("x-billing-signature").starts_with("sha256="),
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// One chat completion through Envoy with its own request id.
async fn chat(stack: &Stack, id: &str) {
    let r = stack
        .http
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", TENANT)
        .header("x-request-id", id)
        .header("authorization", "Bearer sk-replicas")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{id}");
}

/// A Prometheus sample of replica `i` (the first line starting with `name`).
async fn metric(stack: &Stack, i: usize, name: &str) -> Option<f64> {
    let text = stack
        .http
        .get(stack.replica_url(i, "/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `check` holds, polling every 20 ms, for at most `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many times replica `i`'s log says it synced the price list.
fn syncs(stack: &Stack, i: usize) -> usize {
    let text = match i {
        0 => stack.collector.as_ref().map(|p| p.log_text()),
        _ => stack.replicas[i - 1].as_ref().map(|p| p.log_text()),
    };
    text.unwrap_or_default()
        .matches("price list synced")
        .count()
}

async fn pricing_generation(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT generation FROM change_generations WHERE topic = 'pricing'")
        .fetch_one(&stack.db)
        .await
        .unwrap()
}

async fn synced_versions(stack: &Stack) -> Vec<Decimal> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT entry->>'input' FROM price_catalog WHERE model = $1 ORDER BY effective_from",
    )
    .bind(SYNCED_MODEL)
    .fetch_all(&stack.db)
    .await
    .unwrap();
    rows.iter().map(|s| d(s)).collect()
}

#[tokio::test]
async fn two_replicas_behind_one_envoy_bill_once_alert_once_and_price_alike() {
    if std::env::var("BILLING_ARTIFACT").as_deref() == Ok("native") {
        eprintln!("replicas: a collector test, run in the wasm pass only");
        return;
    }
    let list = Arc::new(Mutex::new(openrouter_list("0.000001")));
    let list_url = price_list(list.clone()).await;
    let (hook_url, deliveries) = webhook_receiver().await;
    let env = vec![
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
        ("ALERT_EVAL_INTERVAL_MS", "200".to_string()),
        ("PRICE_SYNC_URL", list_url),
        ("PRICE_SYNC_FORMAT", "openrouter".to_string()),
        ("PRICE_SYNC_INTERVAL_SECS", "1".to_string()),
    ];
    let mut stack = Stack::start_replicas(
        "replicas",
        StackOptions {
            plugin_overrides: json!({"flush_interval_ms": 100, "max_backoff_ms": 1000}),
            concurrency: 2,
        },
        2,
        env,
    )
    .await
    .unwrap();
    for i in 0..2 {
        until(
            "replica listening for changes",
            Duration::from_secs(10),
            || async { metric(&stack, i, "billing_change_listener_up").await == Some(1.0) },
        )
        .await;
    }

    // The price sync on both replicas, one list: the model is added once.
    until("the synced model", Duration::from_secs(15), || async {
        !synced_versions(&stack).await.is_empty()
    })
    .await;
    let seen = (syncs(&stack, 0), syncs(&stack, 1));
    until(
        "two more syncs on each replica",
        Duration::from_secs(15),
        || async { syncs(&stack, 0) >= seen.0 + 2 && syncs(&stack, 1) >= seen.1 + 2 },
    )
    .await;
    assert_eq!(synced_versions(&stack).await, vec![d("1")], "added once");

    // Hours to fold: the fold watermark goes back 3 hours (the fresh
    // database has no usage yet), and usage 2 hours old lands in the hourly
    // rollups; the replica restarted below folds it at start.
    sqlx::query(
        "UPDATE rollup_fold SET folded_before = date_trunc('hour', now()) - interval '3 hours'",
    )
    .execute(&stack.db)
    .await
    .unwrap();
    let old: Vec<Value> = (0..5)
        .map(|i| {
            json!({"request_id": format!("old-{i}"), "tenant_id": FOLD_TENANT,
                "provider": "openai", "model": "gpt-4o-mini", "http_status": 200,
                "streamed": false, "started_at_ms": now_ms() - 2 * 3_600_000 + i,
                "input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200})
        })
        .collect();
    let r = stack
        .http
        .post(stack.replica_url(0, "/v1/usage"))
        .bearer_auth(INGEST_TOKEN)
        .json(&json!({"records": old}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // A soft budget alerting at 50 % and 100 %, evaluated and delivered by
    // both replicas every 200 ms.
    let old_cost = chat_cost("0.15", "0.075", "0.60");
    let limit = old_cost * Decimal::from(10);
    let (status, budget) = stack
        .admin_call(
            "POST",
            "/v1/budgets",
            json!({"tenant_id": TENANT, "limit": limit.to_string(), "currency": "USD",
                   "period": "total", "hard": false, "alert_thresholds": [50, 100],
                   "webhook_url": hook_url}),
        )
        .await;
    assert_eq!(status, 201, "{budget}");

    // Traffic, with replica 1 killed and started again in the middle (a
    // rolling restart): the filter retries what it could not deliver.
    let mut sent = Vec::new();
    for i in 0..BEFORE {
        let id = format!("before-{i}");
        chat(&stack, &id).await;
        sent.push(id);
        if i == BEFORE / 3 {
            stack.replicas[0].take().unwrap().kill();
        }
        if i == 2 * BEFORE / 3 {
            stack.restart_replica(1).await.unwrap();
        }
    }
    until(
        "replica 1 listening again",
        Duration::from_secs(10),
        || async { metric(&stack, 1, "billing_change_listener_up").await == Some(1.0) },
    )
    .await;
    // Its start folds the old hours (at once, in the background): then
    // summaries still equal the ledger.
    until(
        "the old usage's hour folded",
        Duration::from_secs(15),
        || async {
            sqlx::query_scalar::<_, bool>(
            "SELECT folded_before > (SELECT max(occurred_at) FROM transactions WHERE tenant_id = $1)
             FROM rollup_fold",
        )
        .bind(FOLD_TENANT)
        .fetch_one(&stack.db)
        .await
        .unwrap()
        },
    )
    .await;
    let summary = stack
        .admin_get(&format!("/v1/summary?tenant_id={FOLD_TENANT}"))
        .await
        .unwrap();
    let group = &summary["groups"][0];
    assert_eq!(group["requests"], 5, "{summary}");
    assert_eq!(
        d(group["cost"].as_str().unwrap()),
        old_cost * Decimal::from(5)
    );

    // A price change through replica 0; the very next record replica 1
    // ingests (posted straight to it, no wait) is priced with it.
    let before_change = pricing_generation(&stack).await;
    let accepted_before = metric(&stack, 1, "billing_records_accepted_total")
        .await
        .unwrap();
    let r = stack
        .http
        .put(stack.replica_url(0, "/v1/prices/gpt-4o-mini"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"input": "1.00", "cache_read": "0.50", "output": "2.00"}))
        .send()
        .await
        .unwrap();
    let answered = Instant::now();
    assert_eq!(r.status().as_u16(), 201);
    let new_version = r.json::<Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let direct = json!({"records": [{"request_id": "direct-after-change", "tenant_id": TENANT,
        "provider": "openai", "model": "gpt-4o-mini", "http_status": 200, "streamed": false,
        "started_at_ms": now_ms(), "input_tokens": 1200, "output_tokens": 300,
        "cache_read_tokens": 200}]});
    let r = stack
        .http
        .post(stack.replica_url(1, "/v1/usage"))
        .bearer_auth(INGEST_TOKEN)
        .json(&direct)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    sent.push("direct-after-change".to_string());
    let after_change = pricing_generation(&stack).await;
    assert_eq!(after_change, before_change + 1);
    until(
        "replica 1 on the new generation",
        Duration::from_secs(2),
        || async {
            metric(&stack, 1, "billing_pricing_generation").await == Some(after_change as f64)
        },
    )
    .await;
    let fenced = metric(&stack, 1, "billing_price_reloads_total{cause=\"fence\"}").await;
    let notified = metric(
        &stack,
        1,
        "billing_price_reloads_total{cause=\"notification\"}",
    )
    .await;
    println!(
        "MEASURED PUT /v1/prices answered by replica 0, then a record ingested by replica 1 and its /metrics read: {:.1} ms; replica 1 reloads by notification {notified:?}, by its fence {fenced:?}",
        answered.elapsed().as_secs_f64() * 1000.0
    );
    // Requests a flush tick apart, so their records go out in separate
    // calls that Envoy spreads over both replicas; more (up to 40) until
    // replica 1 has taken some from Envoy (each worker's round robin
    // starts anywhere).
    let mut after = 0;
    loop {
        let id = format!("after-{after}");
        chat(&stack, &id).await;
        sent.push(id);
        after += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
        if after >= AFTER {
            let taken = metric(&stack, 1, "billing_records_accepted_total").await;
            if taken.is_some_and(|n| n >= accepted_before + 2.0) || after >= AFTER + 40 {
                break;
            }
        }
    }
    // Exactly once: one row per request, whichever replica took it.
    let captured = stack.settled(Duration::from_secs(30)).await.unwrap();
    assert_eq!(captured as usize, BEFORE + after);
    let rows: Vec<(String, Decimal, String)> = sqlx::query_as(
        "SELECT request_id, cost, price_version FROM transactions WHERE tenant_id = $1",
    )
    .bind(TENANT)
    .fetch_all(&stack.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), sent.len(), "ledger rows = requests");
    let ids: BTreeSet<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        sent.iter().map(String::as_str).collect(),
        "each request id once"
    );
    let new_cost = chat_cost("1.00", "0.50", "2.00");
    for (id, cost, version) in &rows {
        if id.starts_with("before-") {
            assert_eq!(*cost, old_cost, "{id}: {version}");
            assert_ne!(*version, new_version, "{id}");
        } else {
            assert_eq!(
                (*cost, version.as_str()),
                (new_cost, new_version.as_str()),
                "{id}"
            );
        }
    }
    let took_after = metric(&stack, 1, "billing_records_accepted_total")
        .await
        .unwrap();
    assert!(
        took_after >= accepted_before + 2.0,
        "replica 1 ingested Envoy's records after the change too ({accepted_before} -> {took_after} after {after} requests)"
    );

    // Alerts: 50 % and 100 % crossed; each alert delivered once although
    // both replicas evaluate and deliver.
    until("both alerts delivered", Duration::from_secs(15), || async {
        deliveries.lock().unwrap().len() >= 2
    })
    .await;
    // Five more rounds of both replicas' evaluators and deliverers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = deliveries.lock().unwrap().clone();
    let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
    for delivery in &got {
        assert!(delivery.signed, "{delivery:?}");
        *by_key.entry(delivery.idempotency_key.as_str()).or_default() += 1;
    }
    let events: BTreeSet<(String, Option<i64>)> = got
        .iter()
        .map(|x| {
            let event = x.body["event"].as_str().unwrap_or("").to_string();
            (event, x.body["threshold"].as_i64())
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(by_key.values().all(|n| *n == 1), "{by_key:?}");
    assert_eq!(
        events,
        BTreeSet::from([
            ("threshold_crossed".to_string(), Some(50)),
            ("budget_exceeded".to_string(), Some(100)),
        ])
    );

    // The synced price changes: one new version, still not one per replica.
    *list.lock().unwrap() = openrouter_list("0.000003");
    until("the synced change", Duration::from_secs(15), || async {
        synced_versions(&stack).await.len() >= 2
    })
    .await;
    let seen = (syncs(&stack, 0), syncs(&stack, 1));
    until(
        "two more syncs on each replica",
        Duration::from_secs(15),
        || async { syncs(&stack, 0) >= seen.0 + 2 && syncs(&stack, 1) >= seen.1 + 2 },
    )
    .await;
    assert_eq!(synced_versions(&stack).await, vec![d("1"), d("3")]);

    // The delay between the processes: a price added through one replica
    // until the other's /metrics shows the new generation, ten times each
    // way (bounds: from the PUT's answer, from its sending; /metrics is
    // polled in a loop, each read taking the time printed).
    let mut delays = Vec::new();
    let mut poll = Vec::new();
    for i in 0..20 {
        let (from, to) = (i % 2, 1 - i % 2);
        let sent = Instant::now();
        let r = stack
            .http
            .put(stack.replica_url(from, &format!("/v1/prices/e2e%2Fmeasured-{i}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"input": "1", "output": "1"}))
            .send()
            .await
            .unwrap();
        let answered = Instant::now();
        assert_eq!(r.status().as_u16(), 201);
        let target = pricing_generation(&stack).await as f64;
        loop {
            let read = Instant::now();
            let g = metric(&stack, to, "billing_pricing_generation").await;
            poll.push(read.elapsed());
            if g >= Some(target) {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "replica {to} did not reload"
            );
        }
        delays.push((answered.elapsed(), sent.elapsed()));
    }
    delays.sort();
    poll.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (median, max) = (delays[10], delays[19]);
    println!(
        "MEASURED price added through one replica until the other reloaded, 20 changes: median {:.1}..{:.1} ms, max {:.1}..{:.1} ms (a /metrics read: median {:.1} ms)",
        ms(median.0),
        ms(median.1),
        ms(max.0),
        ms(max.1),
        ms(poll[poll.len() / 2])
    );
}
