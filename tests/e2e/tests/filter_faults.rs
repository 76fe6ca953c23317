//! The filter's delivery path through the real Envoy when the collector is
//! away: traffic is never affected, buffered records arrive exactly once
//! when it is back, the buffer bound drops the oldest records and counts
//! them, and the filter's stats add up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const STAT: &str = "wasmcustom.llm_billing.";

async fn stat(stack: &Stack, name: &str) -> u64 {
    stack.envoy_stat(&format!("{STAT}{name}")).await.unwrap()
}

/// Polls the stat until `done(value)` or the deadline; returns the last value.
async fn wait_stat(stack: &Stack, name: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = stat(stack, name).await;
        if done(v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One OpenAI chat completion through Envoy; returns the HTTP status.
async fn chat(stack: &Stack, tenant: &str, request_id: &str) -> u16 {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = stack
        .http
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", tenant)
        .header("x-request-id", request_id)
        .header("authorization", "Bearer sk-faults")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 1200, "{body}");
    status
}

fn kill_collector(stack: &mut Stack) {
    let mut collector = stack.collector.take().expect("collector running");
    collector.kill();
}

/// (rows, distinct request ids) of a tenant, straight from PostgreSQL.
async fn ledger_ids(stack: &Stack, tenant: &str) -> (i64, BTreeSet<String>) {
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT request_id FROM transactions WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&stack.db)
            .await
            .unwrap();
    (
        ids.len() as i64,
        ids.into_iter().map(|(id,)| id).collect::<BTreeSet<_>>(),
    )
}

/// Waits for `n` rows, then gives late duplicates or extras time to show.
async fn settled_ids(stack: &Stack, tenant: &str, n: usize) -> (i64, BTreeSet<String>) {
    stack
        .wait_rows(tenant, n, Duration::from_secs(30))
        .await
        .unwrap();
    // Both stats say the buffer is drained: nothing more can arrive.
    let buffered = wait_stat(stack, "records_buffered", |v| v == 0).await;
    assert_eq!(buffered, 0);
    ledger_ids(stack, tenant).await
}

fn ids(prefix: &str, range: std::ops::RangeInclusive<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}-{i:02}")).collect()
}

#[tokio::test]
async fn records_buffered_while_the_collector_is_down_arrive_exactly_once() {
    let mut stack = Stack::start(
        "faults-collector-down",
        StackOptions {
            plugin_overrides: json!({"flush_interval_ms": 100, "max_backoff_ms": 1000}),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    kill_collector(&mut stack);

    const N: usize = 20;
    for i in 1..=N {
        let status = chat(&stack, "down", &format!("down-{i:02}")).await;
        assert_eq!(status, 200, "traffic must not depend on the collector");
    }
    // on_log may run just after the client has its response.
    let captured = wait_stat(&stack, "records_captured", |v| v == N as u64).await;
    assert_eq!(captured, N as u64);
    // The filter keeps trying and keeps every record.
    let retried = wait_stat(&stack, "records_retried", |v| v >= N as u64).await;
    assert!(retried >= N as u64, "records_retried = {retried}");
    assert_eq!(
        wait_stat(&stack, "records_buffered", |v| v == N as u64).await,
        N as u64
    );
    assert_eq!(stat(&stack, "records_flushed").await, 0);
    assert_eq!(stat(&stack, "records_dropped").await, 0);

    stack.restart_collector().await.unwrap();
    let (rows, got) = settled_ids(&stack, "down", N).await;
    assert_eq!(rows, N as i64, "no duplicate rows");
    assert_eq!(got, ids("down", 1..=N));
    assert_eq!(stat(&stack, "records_flushed").await, N as u64);
    assert_eq!(stat(&stack, "records_dropped").await, 0);
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_records_and_counts_them() {
    let mut stack = Stack::start(
        "faults-buffer-limit",
        StackOptions {
            plugin_overrides: json!({"flush_interval_ms": 100, "max_backoff_ms": 1000,
                                     "max_buffered_records": 5, "max_batch_records": 5}),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    kill_collector(&mut stack);

    for i in 1..=12 {
        let status = chat(&stack, "full", &format!("full-{i:02}")).await;
        assert_eq!(status, 200, "Envoy keeps serving with a full buffer");
    }
    assert_eq!(wait_stat(&stack, "records_captured", |v| v == 12).await, 12);
    // Drops and the buffer gauge are reported on the filter's tick.
    assert_eq!(wait_stat(&stack, "records_dropped", |v| v == 7).await, 7);
    assert_eq!(wait_stat(&stack, "records_buffered", |v| v == 5).await, 5);

    stack.restart_collector().await.unwrap();
    let (rows, got) = settled_ids(&stack, "full", 5).await;
    assert_eq!(rows, 5);
    assert_eq!(got, ids("full", 8..=12), "the 5 newest records survive");
    assert_eq!(stat(&stack, "records_flushed").await, 5);
    assert_eq!(stat(&stack, "records_dropped").await, 7);
}

/// A collector that accepts connections and never answers: the batch stays
/// in flight until the callout times out. Signals each accepted request.
async fn hanging_collector(
    port: u16,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        // Dropped (aborting every connection) when this task is aborted.
        let mut held = tokio::task::JoinSet::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            held.spawn(async move {
                let mut buf = [0u8; 4096];
                let mut signalled = false;
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !signalled {
                        signalled = true;
                        let _ = tx.send(()).await;
                    }
                }
            });
        }
    });
    (task, rx)
}

#[tokio::test]
async fn the_buffer_bound_drops_the_oldest_even_while_a_batch_is_in_flight() {
    let mut stack = Stack::start(
        "faults-in-flight",
        StackOptions {
            plugin_overrides: json!({"flush_interval_ms": 100, "max_backoff_ms": 1000,
                                     "callout_timeout_ms": 3000,
                                     "max_buffered_records": 5, "max_batch_records": 5}),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    kill_collector(&mut stack);
    let (hang, mut accepted) = hanging_collector(stack.collector_port).await;

    // The first record goes out and hangs in flight...
    assert_eq!(chat(&stack, "hang", "hang-01").await, 200);
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("the filter never called the collector")
        .unwrap();
    // ...while 11 more arrive: the bound of 5 holds, the oldest go.
    for i in 2..=12 {
        assert_eq!(chat(&stack, "hang", &format!("hang-{i:02}")).await, 200);
    }
    assert_eq!(wait_stat(&stack, "records_captured", |v| v == 12).await, 12);
    // Drops and the buffer gauge are reported on the filter's tick.
    assert_eq!(wait_stat(&stack, "records_dropped", |v| v == 7).await, 7);
    assert_eq!(wait_stat(&stack, "records_buffered", |v| v == 5).await, 5);

    hang.abort();
    let _ = hang.await;
    stack.restart_collector().await.unwrap();
    let (rows, got) = settled_ids(&stack, "hang", 5).await;
    assert_eq!(rows, 5);
    assert_eq!(got, ids("hang", 8..=12), "the 5 newest records survive");
    assert_eq!(stat(&stack, "records_dropped").await, 7);
}

#[tokio::test]
async fn captured_and_flushed_stats_match_the_ledger() {
    let stack = Stack::start("faults-stats", StackOptions::default())
        .await
        .unwrap();
    for i in 1..=4 {
        assert_eq!(chat(&stack, "stats", &format!("stats-{i:02}")).await, 200);
    }
    let (rows, got) = settled_ids(&stack, "stats", 4).await;
    assert_eq!(rows, 4);
    assert_eq!(got, ids("stats", 1..=4));
    let flushed = wait_stat(&stack, "records_flushed", |v| v == 4).await;
    assert_eq!(flushed, 4);
    assert_eq!(stat(&stack, "records_captured").await, 4);
    assert_eq!(stat(&stack, "records_dropped").await, 0);
    assert_eq!(stat(&stack, "records_retried").await, 0);
    assert_eq!(stat(&stack, "incomplete_streams").await, 0);
    assert_eq!(stat(&stack, "parse_failures").await, 0);
}
