//! Budget enforcement through the real Envoy: the filter refreshes the
//! collector's deny list every 200 ms and answers 429 in the OpenAI error
//! shape, without reaching the upstream, to a tenant over a hard budget, a
//! key over its own budget, or a prepaid tenant at zero balance; a soft
//! budget never blocks; a top-up unblocks within the refresh interval.
//!
//! Blocked requests are not recorded in the ledger (nothing was spent):
//! they are counted in the filter stat `llm_billing.requests_blocked`.
//!
//! Each gpt-4o-mini JSON request costs exactly $0.000345 (see skeleton.rs).
//! The tests print the measured overshoot (spent beyond the limit) and the
//! time from the crossing request's ledger row to the first 429.

use std::str::FromStr;
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const STAT: &str = "wasmcustom.llm_billing.";
const UPSTREAM_REQUESTS: &str = "cluster.llm_upstream.upstream_rq_total";

fn options() -> StackOptions {
    StackOptions {
        plugin_overrides: json!({"enforce_budgets": true, "deny_refresh_ms": 200,
            "flush_interval_ms": 100}),
        ..StackOptions::default()
    }
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn per_request() -> Decimal {
    d("0.000345")
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// One OpenAI chat completion through Envoy.
async fn chat(stack: &Stack, tenant: &str, key: &str, request_id: &str) -> Reply {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = stack
        .http
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", tenant)
        .header("x-request-id", request_id)
        .header("authorization", format!("Bearer {key}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    if status == 200 {
        assert_eq!(body["usage"]["prompt_tokens"], 1200, "{body}");
    }
    Reply {
        status,
        headers,
        body,
    }
}

async fn admin(stack: &Stack, method: &str, path: &str, body: Value) -> (u16, Value) {
    stack.admin_call(method, path, body).await
}

async fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy_stat(name).await.unwrap()
}

/// Priced spend of a tenant, straight from PostgreSQL.
async fn spent(stack: &Stack, tenant: &str) -> (i64, Decimal) {
    stack.ledger_spend(tenant).await.unwrap()
}

/// Sends a request every 50 ms until one is refused; returns the refusal,
/// how many got through first, and how long it took.
async fn until_blocked(
    stack: &Stack,
    tenant: &str,
    key: &str,
    within: Duration,
) -> (Reply, usize, Duration) {
    let started = Instant::now();
    let mut through = 0;
    loop {
        let r = chat(stack, tenant, key, &format!("{tenant}-probe-{through}")).await;
        if r.status != 200 {
            return (r, through, started.elapsed());
        }
        through += 1;
        assert!(
            started.elapsed() < within,
            "{tenant} still not blocked after {through} requests in {within:?}\n{}",
            e2e::tail(&stack.envoy.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every record the filter captured was acknowledged, so the
/// ledger is complete.
async fn settled(stack: &Stack) -> u64 {
    stack.settled(Duration::from_secs(15)).await.unwrap()
}

fn assert_blocked_shape(r: &Reply, reason: &str, limit: &str, retry_after: &str) {
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-should-retry"], "false");
    assert_eq!(r.headers["retry-after"], retry_after);
    let e = &r.body["error"];
    assert_eq!(e["type"], "budget_exceeded", "{}", r.body);
    assert_eq!(e["code"], "budget_exceeded");
    assert_eq!(e["reason"], reason);
    assert_eq!(e["limit"], limit);
    assert_eq!(e["currency"], "USD");
    assert_eq!(e["resets_at"], Value::Null);
    assert!(e["message"].as_str().unwrap().contains("USD"), "{}", r.body);
}

#[tokio::test]
async fn a_hard_budget_blocks_at_the_gateway_and_a_soft_one_never_does() {
    let stack = Stack::start("budgets-hard", options()).await.unwrap();
    for budget in [
        json!({"tenant_id": "capped", "limit": "0.001", "currency": "USD", "period": "total",
            "hard": true}),
        json!({"tenant_id": "soft", "limit": "0.0001", "currency": "USD", "period": "total",
            "hard": false}),
        // A key budget: blocks that key, not the tenant's other keys.
        json!({"tenant_id": "keyed", "api_key_id": hex::encode(Sha256::digest(b"sk-a")),
            "limit": "0.0005", "currency": "USD", "period": "total", "hard": true}),
    ] {
        let (status, body) = admin(&stack, "POST", "/v1/budgets", budget).await;
        assert_eq!(status, 201, "{body}");
        assert!(body["id"].as_i64().is_some());
    }

    // The soft budget is overspent 7-fold before the hard one is crossed.
    for i in 0..2 {
        assert_eq!(
            chat(&stack, "soft", "sk-s", &format!("soft-{i}"))
                .await
                .status,
            200
        );
        assert_eq!(
            chat(&stack, "keyed", "sk-a", &format!("keyed-a-{i}"))
                .await
                .status,
            200
        );
    }
    stack
        .wait_rows("soft", 2, Duration::from_secs(15))
        .await
        .unwrap();
    stack
        .wait_rows("keyed", 2, Duration::from_secs(15))
        .await
        .unwrap();

    // Three requests cross $0.001: 3 × 0.000345 = 0.001035.
    for i in 0..3 {
        let r = chat(&stack, "capped", "sk-c", &format!("capped-{i}")).await;
        assert_eq!(r.status, 200, "request {i} is under the budget: {}", r.body);
    }
    stack
        .wait_rows("capped", 3, Duration::from_secs(15))
        .await
        .unwrap();
    let (blocked, through, took) =
        until_blocked(&stack, "capped", "sk-c", Duration::from_secs(3)).await;
    assert_blocked_shape(&blocked, "budget_exceeded", "0.001", "60");
    let listed_spent = d(blocked.body["error"]["spent"].as_str().unwrap());
    assert!(listed_spent >= d("0.001035"), "{}", blocked.body);

    // A blocked request does not reach the upstream and is not billed.
    let upstream_before = stat(&stack, UPSTREAM_REQUESTS).await;
    let blocked_before = stat(&stack, &format!("{STAT}requests_blocked")).await;
    let again = chat(&stack, "capped", "sk-c", "capped-blocked").await;
    assert_eq!(again.status, 429);
    assert_eq!(stat(&stack, UPSTREAM_REQUESTS).await, upstream_before);
    assert_eq!(
        stat(&stack, &format!("{STAT}requests_blocked")).await,
        blocked_before + 1
    );

    // The soft budget never blocks; the key budget blocks key a only.
    let soft = chat(&stack, "soft", "sk-s", "soft-after").await;
    assert_eq!(soft.status, 200, "{}", soft.body);
    let (keyed, keyed_through, _) =
        until_blocked(&stack, "keyed", "sk-a", Duration::from_secs(3)).await;
    assert_eq!(keyed_through, 0, "key a was over its budget before");
    assert_blocked_shape(&keyed, "budget_exceeded", "0.0005", "60");
    assert_eq!(chat(&stack, "keyed", "sk-b", "keyed-b").await.status, 200);
    assert_eq!(chat(&stack, "free", "sk-f", "free-1").await.status, 200);

    // Every captured record is in the ledger; no blocked request is.
    let captured = settled(&stack).await;
    let (rows, total) = spent(&stack, "capped").await;
    assert_eq!(rows, 3 + through as i64);
    assert_eq!(total, per_request() * Decimal::from(rows));
    // 2 soft + 2 keyed + capped + 1 soft-after + 1 keyed-b + 1 free
    assert_eq!(captured, 2 + 2 + rows as u64 + 1 + 1 + 1);
    let (blocked_rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM transactions WHERE request_id IN ('capped-blocked', 'keyed-probe-0')",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(blocked_rows, 0);
    let (_, soft_spent) = spent(&stack, "soft").await;
    assert_eq!(soft_spent, d("0.001035"));

    let overshoot = total - d("0.001");
    println!(
        "MEASURED hard budget $0.001: blocked {took:?} after the crossing row landed; \
         {through} request(s) got through meanwhile (one every 50 ms); \
         spent {total}, overshoot {overshoot} USD"
    );
    assert!(
        through <= 20,
        "the block took {through} requests / {took:?}: too slow"
    );
}

#[tokio::test]
async fn a_prepaid_tenant_stops_at_zero_and_a_top_up_unblocks_it() {
    let stack = Stack::start("budgets-prepaid", options()).await.unwrap();
    let (status, body) = admin(
        &stack,
        "POST",
        "/v1/credits",
        json!({"tenant_id": "pre", "amount": "0.0005", "currency": "USD", "reason": "trial"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // 1 request: balance 0.000155 > 0, still open. 2: -0.00019, exhausted.
    assert_eq!(chat(&stack, "pre", "sk-p", "pre-0").await.status, 200);
    stack
        .wait_rows("pre", 1, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(chat(&stack, "pre", "sk-p", "pre-1").await.status, 200);
    stack
        .wait_rows("pre", 2, Duration::from_secs(15))
        .await
        .unwrap();
    let (blocked, through, took) =
        until_blocked(&stack, "pre", "sk-p", Duration::from_secs(3)).await;
    assert_blocked_shape(&blocked, "balance_exhausted", "0.0005", "60");
    settled(&stack).await;
    let (rows, total) = spent(&stack, "pre").await;
    assert_eq!(rows, 2 + through as i64);
    let (_, balance) = admin(&stack, "GET", "/v1/balance?tenant_id=pre", Value::Null).await;
    assert_eq!(
        d(balance["balance"].as_str().unwrap()),
        d("0.0005") - total,
        "{balance}"
    );

    // Top-up: unblocked within the refresh interval (200 ms) plus a request.
    let (status, body) = admin(
        &stack,
        "POST",
        "/v1/credits",
        json!({"tenant_id": "pre", "amount": "0.01", "currency": "USD", "reason": "top-up"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let topped_up = Instant::now();
    let mut attempt = 0;
    let unblocked = loop {
        let r = chat(&stack, "pre", "sk-p", &format!("pre-after-{attempt}")).await;
        if r.status == 200 {
            break topped_up.elapsed();
        }
        assert_eq!(r.status, 429, "{}", r.body);
        attempt += 1;
        assert!(
            topped_up.elapsed() < Duration::from_secs(2),
            "still blocked 2 s after the top-up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "MEASURED prepaid $0.0005: blocked {took:?} after the second row landed; \
         {through} request(s) got through meanwhile; spent {total}, overshoot {} USD; \
         unblocked {unblocked:?} after the top-up",
        total - d("0.0005")
    );
}
