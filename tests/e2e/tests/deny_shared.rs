//! The deny list is polled by one Envoy worker and shared with the others
//! (proxy-wasm shared data): with 4 workers, about one `GET /v1/deny` per
//! refresh interval reaches the collector, and a key over its hard budget
//! is refused on every worker soon after its crossing row lands; when the
//! collector is gone longer than the TTL every worker fails closed at once
//! (staleness runs from the shared fetch time) and recovers when it returns.
//!
//! Requests to the collector are counted by Envoy's own cluster stat: with
//! no traffic nothing is flushed, so every request it sends is a deny poll.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Stack, StackOptions, ADMIN_TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WORKERS: u32 = 4;
const REFRESH_MS: u64 = 200;
const COLLECTOR_REQUESTS: &str = "cluster.billing_collector.upstream_rq_total";
const STAT: &str = "wasmcustom.llm_billing.";

async fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy_stat(name).await.unwrap()
}

/// Connections each worker has accepted so far, by worker index.
async fn worker_connections(stack: &Stack) -> BTreeMap<String, u64> {
    let text = stack
        .http
        .get(format!(
            "http://127.0.0.1:{}/stats?filter=^listener\\.127\\.0\\.0\\.1_{}\\.worker_.*downstream_cx_total$",
            stack.admin_port, stack.envoy_port
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| {
            let worker = k.split('.').find(|p| p.starts_with("worker_"))?;
            Some((worker.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// One chat completion on a new connection (so requests spread over workers).
async fn chat(stack: &Stack, key: &str, id: &str) -> u16 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = client
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", "shared")
        .header("x-request-id", id)
        .header("authorization", format!("Bearer {key}"))
        .header("connection", "close")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status == 429 {
        assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    }
    status
}

#[tokio::test]
async fn one_worker_polls_for_all_and_every_worker_blocks() {
    let stack = Stack::start(
        "deny-shared",
        StackOptions {
            plugin_overrides: json!({"enforce_budgets": true, "deny_refresh_ms": REFRESH_MS,
                "flush_interval_ms": 100}),
            concurrency: WORKERS,
        },
    )
    .await
    .unwrap();

    // Polling has started (the first poll can wait for a tick).
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&stack, COLLECTOR_REQUESTS).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no deny poll reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An idle window: every request to the collector is a deny poll. One
    // poller gives window / refresh; one per worker would give 4 times that.
    let (t0, c0) = (Instant::now(), stat(&stack, COLLECTOR_REQUESTS).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (window, polls) = (t0.elapsed(), stat(&stack, COLLECTOR_REQUESTS).await - c0);
    let expected = window.as_millis() as u64 / REFRESH_MS;
    println!(
        "MEASURED {WORKERS} workers, deny_refresh_ms {REFRESH_MS}: {polls} polls in {window:?} \
         (one poller: ~{expected}; one per worker: ~{})",
        expected * u64::from(WORKERS)
    );
    // Loaded CI machines delay ticks (fewer polls); more than one poller
    // would show as a multiple.
    assert!(
        polls >= expected / 3 && polls <= expected + 3,
        "{polls} deny polls in {window:?}, expected about {expected}"
    );
    assert_eq!(
        stat(&stack, &format!("{STAT}deny_list_refresh_failures")).await,
        0
    );
    assert_eq!(stat(&stack, &format!("{STAT}deny_list_entries")).await, 0);

    // A key budget of $0.001: the third request at $0.000345 crosses it.
    let key_hash = hex::encode(Sha256::digest(b"sk-over"));
    let r = stack
        .http
        .post(stack.collector_url("/v1/budgets"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"tenant_id": "shared", "api_key_id": key_hash, "limit": "0.001",
            "currency": "USD", "period": "total", "hard": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    for i in 0..3 {
        assert_eq!(chat(&stack, "sk-over", &format!("cross-{i}")).await, 200);
    }
    stack
        .wait_rows("shared", 3, Duration::from_secs(15))
        .await
        .unwrap();
    let (crossed_at_ms,): (i64,) = sqlx::query_as(
        "SELECT (extract(epoch FROM max(received_at)) * 1000)::bigint FROM transactions \
         WHERE tenant_id = 'shared'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();

    // Rounds of 16 requests on new connections until one round is refused
    // entirely: then every worker has the block.
    let landed = Instant::now();
    let mut round = 0;
    let mut admitted = 0;
    let blocked_after = loop {
        let mut statuses = Vec::new();
        for i in 0..16 {
            statuses.push(chat(&stack, "sk-over", &format!("probe-{round}-{i}")).await);
        }
        admitted += statuses.iter().filter(|s| **s == 200).count();
        if statuses.iter().all(|s| *s == 429) {
            break landed.elapsed();
        }
        assert!(
            landed.elapsed() < Duration::from_millis(3 * REFRESH_MS + 2000),
            "not refused everywhere {:?} after the crossing row landed: {statuses:?}",
            landed.elapsed()
        );
        round += 1;
    };
    let since_commit = SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_millis(crossed_at_ms as u64))
        .unwrap_or_default();

    // From now on every request is refused, whichever worker takes it, and
    // the requests land on every worker.
    let before = worker_connections(&stack).await;
    assert_eq!(before.len(), WORKERS as usize, "{before:?}");
    let mut refused = 0;
    for i in 0..64 {
        assert_eq!(chat(&stack, "sk-over", &format!("after-{i}")).await, 429);
        refused += 1;
        let after = worker_connections(&stack).await;
        if i >= 15 && after.iter().all(|(w, n)| *n > before[w]) {
            break;
        }
    }
    let after = worker_connections(&stack).await;
    assert!(
        after.iter().all(|(w, n)| *n > before[w]),
        "some worker got none of {refused} connections: {before:?} -> {after:?}"
    );
    // Other keys of the tenant are not blocked.
    assert_eq!(chat(&stack, "sk-other", "other-0").await, 200);
    assert_eq!(stat(&stack, &format!("{STAT}deny_list_entries")).await, 1);
    println!(
        "MEASURED refused on all {WORKERS} workers {blocked_after:?} after the crossing row was \
         visible ({since_commit:?} after its commit); {admitted} request(s) admitted meanwhile; \
         then {refused} requests over new connections on every worker all got 429"
    );
}

/// Statuses of `n` requests from a tenant with no budget, each on a new
/// connection.
async fn round(stack: &Stack, n: usize, tag: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(chat(stack, "sk-free", &format!("{tag}-{i}")).await);
    }
    out
}

#[tokio::test]
async fn every_worker_fails_closed_on_the_shared_fetch_time_and_recovers() {
    const TTL_MS: u64 = 1000;
    let mut stack = Stack::start(
        "deny-shared-stale",
        StackOptions {
            plugin_overrides: json!({"enforce_budgets": true, "deny_refresh_ms": REFRESH_MS,
                "deny_ttl_ms": TTL_MS, "deny_fail_open": false, "flush_interval_ms": 100,
                "callout_timeout_ms": 500}),
            concurrency: WORKERS,
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&stack, COLLECTOR_REQUESTS).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no deny poll reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(round(&stack, 8, "up").await.iter().all(|s| *s == 200));

    // Collector gone: only the poller sees its polls fail, but every worker
    // goes stale TTL after the last shared fetch and refuses with 503.
    stack.collector.take().unwrap().kill();
    let killed = Instant::now();
    let failures0 = stat(&stack, &format!("{STAT}deny_list_refresh_failures")).await;
    let closed_after = loop {
        let statuses = round(&stack, 8, "down").await;
        if statuses.iter().all(|s| *s == 503) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_millis(TTL_MS + 3000),
            "not failing closed everywhere {:?} after the collector died: {statuses:?}",
            killed.elapsed()
        );
    };
    assert!(
        closed_after >= Duration::from_millis(TTL_MS - REFRESH_MS),
        "stale too early: {closed_after:?}"
    );
    // Every worker refuses now.
    let before = worker_connections(&stack).await;
    let mut n = 0;
    while n < 64 {
        assert!(round(&stack, 4, &format!("closed-{n}"))
            .await
            .iter()
            .all(|s| *s == 503));
        n += 4;
        let after = worker_connections(&stack).await;
        if after.iter().all(|(w, c)| *c > before[w]) {
            break;
        }
    }
    let after = worker_connections(&stack).await;
    assert!(
        after.iter().all(|(w, c)| *c > before[w]),
        "{before:?} -> {after:?}"
    );
    // Failed polls are counted once, by the poller, not once per worker.
    let outage = killed.elapsed();
    let failures = stat(&stack, &format!("{STAT}deny_list_refresh_failures")).await - failures0;
    let polls = outage.as_millis() as u64 / REFRESH_MS;
    assert!(
        failures >= 1 && failures <= polls + 3,
        "{failures} failed polls in {outage:?} (about {polls} expected)"
    );

    // The collector is back: every worker serves again within a poll or two.
    stack.restart_collector().await.unwrap();
    let back = Instant::now();
    let open_after = loop {
        let statuses = round(&stack, 8, "back").await;
        if statuses.iter().all(|s| *s == 200) {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still refusing {:?} after the collector came back: {statuses:?}",
            back.elapsed()
        );
    };
    println!(
        "MEASURED {WORKERS} workers, deny_ttl_ms {TTL_MS}: all refusing {closed_after:?} after \
         the collector died ({failures} failed polls in {outage:?}); serving again \
         {open_after:?} after it came back"
    );
}
