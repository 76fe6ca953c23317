//! Hard budgets under concurrency, through the real Envoy: once a scope is
//! near its limit the collector lists it under `watch` on the deny feed,
//! and the filter holds each of its requests until the collector has
//! reserved an upper bound of the request's cost (`POST /v1/reservations`).
//!
//! Each gpt-4o-mini request of these tests costs exactly $0.000345 (1,200
//! input tokens of which 200 cached, 300 output) and is sent with a prompt
//! of over 1,200 bytes and `max_tokens: 300`, so the filter's bound (body
//! bytes, max tokens) really bounds it: $0.000195 of input bound at $0.15
//! per million plus $0.00018 of output, $0.000375 or more.

use std::str::FromStr;
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions, INGEST_TOKEN};
use futures_util::future::join_all;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const STAT: &str = "wasmcustom.llm_billing.";

/// The concurrency cases fail closed: a reservation call that times out on
/// a loaded machine then refuses (503) instead of admitting unreserved, so
/// the bound holds whatever the machine's speed.
fn options(fail_open: bool) -> StackOptions {
    StackOptions {
        plugin_overrides: json!({"enforce_budgets": true, "deny_refresh_ms": 200,
            "flush_interval_ms": 100, "deny_fail_open": fail_open, "reserve_timeout_ms": 5000}),
        ..StackOptions::default()
    }
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn key_id(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One chat completion through Envoy; `max_tokens` bounds it.
async fn chat(stack: &Stack, tenant: &str, key: &str, id: &str, max_tokens: Option<u32>) -> u16 {
    let mut body = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x".repeat(1300)}]});
    if let Some(m) = max_tokens {
        body["max_tokens"] = json!(m);
    }
    let r = stack
        .http
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", tenant)
        .header("x-request-id", id)
        .header("authorization", format!("Bearer {key}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    match status {
        200 => assert_eq!(body["usage"]["prompt_tokens"], 1200, "{body}"),
        429 => assert_eq!(body["error"]["type"], "budget_exceeded", "{body}"),
        _ => {}
    }
    status
}

async fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy_stat(&format!("{STAT}{name}")).await.unwrap()
}

/// Sequential bounded requests until the filter takes the reservation path
/// (the scope is on the deny feed's watch list); returns how many were sent.
async fn until_watched(stack: &Stack, tenant: &str, key: &str) -> usize {
    let started = Instant::now();
    let mut sent = 0;
    while stat(stack, "reservations_admitted").await == 0 {
        assert_eq!(
            chat(
                stack,
                tenant,
                key,
                &format!("{tenant}-warm-{sent}"),
                Some(300)
            )
            .await,
            200
        );
        sent += 1;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never watched after {sent} requests"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    sent
}

/// What 32 clients got, each sending requests back to back until refused.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    admitted: usize,
    /// 429: the estimate did not fit (or the deny list blocked).
    refused: usize,
    /// 503: no reservation answer in time, and the filter fails closed.
    unavailable: usize,
}

async fn stampede(stack: &Stack, tenant: &str, key: &str, max_tokens: Option<u32>) -> Outcome {
    let clients = (0..32).map(|c| async move {
        let mut o = Outcome::default();
        for i in 0..40 {
            let id = format!("{tenant}-c{c}-{i}");
            match chat(stack, tenant, key, &id, max_tokens).await {
                200 => o.admitted += 1,
                429 => {
                    o.refused += 1;
                    break;
                }
                503 => {
                    o.unavailable += 1;
                    break;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        o
    });
    join_all(clients)
        .await
        .into_iter()
        .fold(Outcome::default(), |a, o| Outcome {
            admitted: a.admitted + o.admitted,
            refused: a.refused + o.refused,
            unavailable: a.unavailable + o.unavailable,
        })
}

#[tokio::test]
async fn thirty_two_concurrent_clients_never_push_a_key_past_its_hard_budget() {
    let stack = Stack::start("reservations-race", options(false))
        .await
        .unwrap();
    let limit = d("0.02");
    let (status, body) = stack
        .admin_call(
            "POST",
            "/v1/budgets",
            json!({"tenant_id": "race", "api_key_id": key_id("sk-race"), "limit": "0.02",
            "currency": "USD", "period": "total", "hard": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let warm = until_watched(&stack, "race", "sk-race").await;
    let o = stampede(&stack, "race", "sk-race", Some(300)).await;
    stack.settled(Duration::from_secs(15)).await.unwrap();
    let (rows, total) = stack.ledger_spend("race").await.unwrap();
    let affordable = ((limit - total) / d("0.000345")).floor();
    println!(
        "MEASURED 32 concurrent clients, $0.02 hard key budget, max_tokens set: {warm} warm-up, \
         {} admitted, {} refused, {} without a reservation answer in time; spent {total} of \
         {limit} ({rows} rows); {affordable} more request(s) would have fit in hindsight",
        o.admitted, o.refused, o.unavailable
    );
    assert!(total <= limit, "spent {total} over the {limit} limit");
    assert!(o.refused + o.unavailable > 0 && o.admitted > 0, "{o:?}");
    assert_eq!(rows as usize, warm + o.admitted);
    assert_eq!(
        stat(&stack, "reservations_unavailable").await,
        o.unavailable as u64
    );
}

#[tokio::test]
async fn a_prepaid_tenant_under_32_concurrent_clients_ends_at_a_balance_of_zero_or_more() {
    let stack = Stack::start("reservations-prepaid", options(false))
        .await
        .unwrap();
    let (status, body) = stack
        .admin_call(
            "POST",
            "/v1/credits",
            json!({"tenant_id": "pre", "amount": "0.015", "currency": "USD", "reason": "trial"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    until_watched(&stack, "pre", "sk-pre").await;
    // Bounded requests: each reserves its cost bound, so the balance never
    // goes below zero (unbounded ones could take it below by at most one
    // request, the "one over" rule).
    let o = stampede(&stack, "pre", "sk-pre", Some(300)).await;
    stack.settled(Duration::from_secs(15)).await.unwrap();
    let (_, balance) = stack
        .admin_call("GET", "/v1/balance?tenant_id=pre", Value::Null)
        .await;
    let balance = d(balance["balance"].as_str().unwrap());
    println!(
        "MEASURED prepaid $0.015, 32 concurrent clients (max_tokens set): {} admitted, {} refused, \
         {} without a reservation answer in time; balance {balance}",
        o.admitted, o.refused, o.unavailable
    );
    assert!(balance >= Decimal::ZERO, "balance went negative: {balance}");
    assert!(o.refused + o.unavailable > 0, "{o:?}");
}

#[tokio::test]
async fn an_expired_reservation_is_released() {
    let stack = Stack::start("reservations-expiry", options(true))
        .await
        .unwrap();
    let (status, body) = stack
        .admin_call(
            "POST",
            "/v1/budgets",
            json!({"tenant_id": "exp", "api_key_id": key_id("sk-exp"), "limit": "0.01",
            "currency": "USD", "period": "total", "hard": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    until_watched(&stack, "exp", "sk-exp").await;
    // A gateway that reserved and then died: an unbounded reservation whose
    // record never lands, held for one second.
    let r = stack
        .http
        .post(stack.collector_url("/v1/reservations"))
        .bearer_auth(INGEST_TOKEN)
        .json(
            &json!({"request_id": "lost-1", "tenant_id": "exp", "api_key_id": key_id("sk-exp"),
            "provider": "openai", "model": "gpt-4o-mini", "max_input_tokens": 100,
            "max_output_tokens": null, "ttl_ms": 1000}),
        )
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["admitted"], true, "{answer}");
    // While it holds, another unbounded request is refused ...
    assert_eq!(chat(&stack, "exp", "sk-exp", "exp-held", None).await, 429);
    // ... and once it expired, admitted.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(chat(&stack, "exp", "sk-exp", "exp-after", None).await, 200);
}

/// The collector's per-tenant reservation lock (db/reservations.rs): held
/// here, it keeps a reservation call waiting inside the collector.
const RESERVATION_LOCK_NS: i32 = 0x7265_7376;

#[tokio::test]
async fn a_collector_killed_mid_reservation_leaves_the_decision_to_deny_fail_open() {
    for fail_open in [true, false] {
        let name = format!("reservations-killed-{fail_open}");
        let mut stack = Stack::start(&name, options(fail_open)).await.unwrap();
        let (status, body) = stack
            .admin_call(
                "POST",
                "/v1/budgets",
                json!({"tenant_id": "down", "api_key_id": key_id("sk-down"), "limit": "0.01",
                "currency": "USD", "period": "total", "hard": true}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        until_watched(&stack, "down", "sk-down").await;
        let before = stat(&stack, "reservations_unavailable").await;
        // Hold the tenant's lock so the next reservation waits in the
        // collector, then kill the collector while it waits.
        let mut lock = stack.db.acquire().await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1, hashtext('down'))")
            .bind(RESERVATION_LOCK_NS)
            .execute(&mut *lock)
            .await
            .unwrap();
        let mut collector = stack.collector.take();
        let request = chat(&stack, "down", "sk-down", "down-1", Some(300));
        let kill = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(c) = collector.as_mut() {
                c.kill();
            }
        };
        let (status, ()) = tokio::join!(request, kill);
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut *lock)
            .await
            .unwrap();
        assert_eq!(
            status,
            if fail_open { 200 } else { 503 },
            "fail_open {fail_open}"
        );
        assert_eq!(stat(&stack, "reservations_unavailable").await, before + 1);
        // The killed collector's transaction died with it: nothing held.
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM budget_reservations WHERE request_id = 'down-1'",
        )
        .fetch_one(&stack.db)
        .await
        .unwrap();
        assert_eq!(held, 0);
    }
}
