//! PostgreSQL goes away while traffic flows through Envoy: clients are
//! unaffected, the collector answers 503, the filter keeps the records and
//! retries, and once the database is back every request has exactly one row.
//! The outage lasts `OUTAGE_SECS` (default 5; the 30 s scenario is
//! `OUTAGE_SECS=30 cargo test -p e2e --test db_outage`).

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::json;

/// Sends requests for `duration`, one every 20 ms; returns the running count.
async fn send_for(
    stack: &Stack,
    body: &serde_json::Value,
    duration: Duration,
    phase: &str,
    start: usize,
) -> usize {
    let deadline = Instant::now() + duration;
    let mut n = start;
    while Instant::now() < deadline {
        let r = stack
            .http
            .post(stack.envoy_url("/v1/chat/completions"))
            .header("x-tenant-id", "outage")
            .header("x-request-id", format!("{phase}-{n}"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "clients must not notice the outage");
        r.bytes().await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

#[tokio::test]
async fn database_outage_under_traffic_loses_and_doubles_nothing() {
    let outage = Duration::from_secs(
        std::env::var("OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    let mut stack = Stack::start(
        "db_outage",
        StackOptions {
            plugin_overrides: json!({"flush_interval_ms": 100, "max_backoff_ms": 1000, "max_batch_records": 50}),
            concurrency: 2,
        },
    )
    .await
    .unwrap();
    // Point the collector at a database this test may stop.
    let (cluster, _collector) = stack.collector_on_private_cluster().await.unwrap();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let mut sent = send_for(&stack, &body, Duration::from_secs(1), "before", 0).await;
    tokio::task::spawn_blocking({
        let c = cluster.clone_handle();
        move || c.stop("fast")
    })
    .await
    .unwrap()
    .unwrap();
    // While the database is away the collector answers 503 and says when to retry.
    let probe = stack
        .http
        .post(stack.collector_url("/v1/usage"))
        .bearer_auth(e2e::INGEST_TOKEN)
        .json(&json!({"records": [{
            "request_id": "probe-1", "tenant_id": "probe", "provider": "openai", "model": "gpt-4o-mini",
            "http_status": 200, "started_at_ms": 1_764_000_000_000i64, "input_tokens": 1, "output_tokens": 1
        }]}))
        .send()
        .await
        .unwrap();
    let probe_status = probe.status();
    sent = send_for(&stack, &body, outage, "during", sent).await;
    tokio::task::spawn_blocking({
        let c = cluster.clone_handle();
        move || c.start()
    })
    .await
    .unwrap()
    .unwrap();
    sent = send_for(&stack, &body, Duration::from_secs(1), "after", sent).await;

    let db = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (rows, distinct): (i64, i64) = loop {
        let counts: (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT request_id) FROM transactions WHERE tenant_id = 'outage'")
            .fetch_one(&db)
            .await
            .unwrap_or((0, 0));
        if counts.0 as usize >= sent || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let retried = stack
        .envoy_stat("llm_billing.records_retried")
        .await
        .unwrap();
    let dropped = stack
        .envoy_stat("llm_billing.records_dropped")
        .await
        .unwrap();
    eprintln!("outage {outage:?}: sent {sent}, rows {rows}, distinct {distinct}, retried {retried}, dropped {dropped}, probe {probe_status}");
    assert_eq!(
        probe_status, 503,
        "ingest during the outage must not be acknowledged"
    );
    assert_eq!(
        (rows as usize, distinct as usize),
        (sent, sent),
        "exactly one row per request"
    );
    assert!(
        retried > 0,
        "the filter must have retried during the outage"
    );
    assert_eq!(dropped, 0);
}
