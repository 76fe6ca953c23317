//! Collector faults with real processes: the same batch delivered to two
//! replicas at once, SIGTERM (and SIGKILL) with a big batch in flight, and a
//! PostgreSQL outage and recovery on a throwaway cluster of the test's own.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::pg::Cluster;
use e2e::{
    free_port, fresh_database, repo_root, start_collector, BoxError, ADMIN_TOKEN, INGEST_TOKEN,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

fn log_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("tests/output").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `n` valid gpt-4o-mini records ($0.000345 each) stamped in the last hour.
fn records(prefix: &str, tenant: &str, n: usize) -> Vec<Value> {
    let base = now_ms() - 3_600_000;
    (0..n)
        .map(|i| {
            json!({
                "request_id": format!("{prefix}-{i:05}"), "tenant_id": tenant,
                "api_key_id": format!("key-{tenant}"), "provider": "openai",
                "model": "gpt-4o-mini", "http_status": 200, "streamed": false,
                "started_at_ms": base + i as i64, "input_tokens": 1200, "output_tokens": 300,
                "cache_read_tokens": 200, "reasoning_tokens": 0
            })
        })
        .collect()
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn post_usage(http: &reqwest::Client, port: u16, batch: &Value) -> Result<Answer, BoxError> {
    let r = http
        .post(format!("http://127.0.0.1:{port}/v1/usage"))
        .bearer_auth(INGEST_TOKEN)
        .json(batch)
        .send()
        .await?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.json().await?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

async fn get_json(
    http: &reqwest::Client,
    port: u16,
    path: &str,
    token: &str,
) -> Result<(u16, Value), BoxError> {
    let r = http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

/// (rows, distinct request ids, rollup requests, ledger cost, rollup cost) of a tenant.
async fn ledger_totals(db: &PgPool, tenant: &str) -> (i64, i64, i64, Decimal, Decimal) {
    let (rows, distinct, cost): (i64, i64, Option<Decimal>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT request_id), sum(cost) FROM transactions WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(db)
    .await
    .unwrap();
    let (requests, rolled_cost): (Option<i64>, Option<Decimal>) = sqlx::query_as(
        "SELECT sum(requests)::int8, sum(cost) FROM usage_hourly WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(db)
    .await
    .unwrap();
    (
        rows,
        distinct,
        requests.unwrap_or(0),
        cost.unwrap_or_default(),
        rolled_cost.unwrap_or_default(),
    )
}

/// The start of the collector's batch insert as `pg_stat_activity` shows it
/// (it keeps only the first 1 kB of a statement).
const INSERT_BATCH_SQL: &str = "%UNNEST($1::text[], $2::text[], $3::timestamptz[]%";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

#[tokio::test]
async fn same_batch_to_two_replicas_at_once_is_billed_exactly_once() {
    let dir = log_dir("faults-two-replicas");
    let url = fresh_database("faults").await.unwrap();
    let (p1, p2) = (free_port(), free_port());
    // Both start together: concurrent migrations and catalog seeding too.
    let (c1, c2) = tokio::join!(
        start_collector(&url, p1, &dir, "collector-1"),
        start_collector(&url, p2, &dir, "collector-2"),
    );
    let (c1, c2) = (c1.unwrap(), c2.unwrap());
    let db = connect(&url).await;
    let http = client();
    let batch = json!({"records": records("dup", "dup", 300)});

    let (a1, a2) = tokio::join!(post_usage(&http, p1, &batch), post_usage(&http, p2, &batch));
    let (a1, a2) = (a1.unwrap(), a2.unwrap());
    assert_eq!(
        (a1.status, a2.status),
        (200, 200),
        "{} {}",
        a1.body,
        a2.body
    );
    let accepted = a1.body["accepted"].as_u64().unwrap() + a2.body["accepted"].as_u64().unwrap();
    let duplicates =
        a1.body["duplicates"].as_u64().unwrap() + a2.body["duplicates"].as_u64().unwrap();
    assert_eq!(accepted, 300, "{} {}", a1.body, a2.body);
    assert_eq!(duplicates, 300);
    assert_eq!(a1.body["rejected"], 0);
    eprintln!(
        "accepted by replica 1: {}, by replica 2: {}",
        a1.body["accepted"], a2.body["accepted"]
    );

    // Again to both: nothing new.
    let (b1, b2) = tokio::join!(post_usage(&http, p1, &batch), post_usage(&http, p2, &batch));
    let (b1, b2) = (b1.unwrap(), b2.unwrap());
    assert_eq!(
        (b1.body["accepted"].as_u64(), b2.body["accepted"].as_u64()),
        (Some(0), Some(0))
    );

    // 300 rows, 300 in the rollup, 300 × $0.000345 = $0.1035 in both.
    let totals = ledger_totals(&db, "dup").await;
    assert_eq!(totals, (300, 300, 300, dec("0.1035"), dec("0.1035")));
    let (status, summary) = get_json(&http, p2, "/v1/summary", ADMIN_TOKEN)
        .await
        .unwrap();
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["groups"][0]["requests"], 300);
    assert_eq!(
        dec(summary["groups"][0]["cost"].as_str().unwrap()),
        dec("0.1035")
    );

    // A tenant token made on one replica reads on the other (its own tenant only).
    let created: Value = http
        .post(format!("http://127.0.0.1:{p1}/v1/tokens"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tenant_id": "dup", "name": "e2e"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let (status, mine) = get_json(&http, p2, "/v1/summary?group_by=tenant", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["groups"].as_array().unwrap().len(), 1);
    assert_eq!(mine["groups"][0]["key"], "dup");
    assert_eq!(mine["groups"][0]["requests"], 300);
    let (status, _) = get_json(&http, p2, "/v1/transactions?tenant_id=acme", &token)
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Neither replica logged it.
    for c in [&c1, &c2] {
        assert!(!c.log_text().contains(&token), "{} logged a token", c.name);
    }
}

/// Streams `first`, then waits for `rest` on the channel: a request the
/// collector has started reading but cannot finish yet.
fn held_body(
    first: Bytes,
) -> (
    reqwest::Body,
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(f) = first {
            return Some((Ok(f), (None, rx)));
        }
        rx.recv().await.map(|item| (item, (None, rx)))
    });
    (reqwest::Body::wrap_stream(stream), tx)
}

async fn wait_for_log(log: &Path, needle: &str, timeout: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{needle:?} not logged within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_with_a_big_batch_in_flight_drains_it_then_exits_cleanly() {
    let dir = log_dir("faults-sigterm");
    let url = fresh_database("faults").await.unwrap();
    let db = connect(&url).await;
    let http = client();

    // 1. SIGTERM while the collector is still reading a 5000-record body.
    let port = free_port();
    let mut collector = start_collector(&url, port, &dir, "collector-upload")
        .await
        .unwrap();
    let body = json!({"records": records("up", "drain", 5000)}).to_string();
    let half = body.len() / 2;
    let (stream, tx) = held_body(Bytes::copy_from_slice(&body.as_bytes()[..half]));
    let request = tokio::spawn(
        http.post(format!("http://127.0.0.1:{port}/v1/usage"))
            .bearer_auth(INGEST_TOKEN)
            .header("content-type", "application/json")
            .body(stream)
            .send(),
    );
    // Give the collector time to accept the connection and read the head.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = collector.log.clone();
    let signalled = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let status = collector.terminate(Duration::from_secs(15));
        (status, signalled.elapsed())
    });
    wait_for_log(&log, "shutdown requested", Duration::from_secs(5))
        .await
        .unwrap();
    // Draining: new connections are refused, the held request is not.
    let fresh = client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(fresh.is_err(), "a new connection was served while draining");
    tx.send(Ok(Bytes::copy_from_slice(&body.as_bytes()[half..])))
        .await
        .unwrap();
    drop(tx);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 5000, "{answer}");
    let (status, took) = exit.await.unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    // All 5000 committed: 5000 × $0.000345 = $1.725.
    let totals = ledger_totals(&db, "drain").await;
    assert_eq!(totals, (5000, 5000, 5000, dec("1.725"), dec("1.725")));

    // 2. SIGTERM while the batch is being written (seen in pg_stat_activity,
    // or already done): it completes and is committed whole, or fails and
    // leaves nothing; either way the process exits 0.
    let port = free_port();
    let mut collector = start_collector(&url, port, &dir, "collector-insert")
        .await
        .unwrap();
    let batch = json!({"records": records("ins", "drain2", 5000)});
    let request = {
        let http = http.clone();
        tokio::spawn(async move { post_usage(&http, port, &batch).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_active = false;
    while !request.is_finished() && Instant::now() < deadline {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active'
               AND query LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(INSERT_BATCH_SQL)
        .fetch_one(&db)
        .await
        .unwrap();
        if active > 0 {
            seen_active = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let signalled = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let status = collector.terminate(Duration::from_secs(15));
        (status, signalled.elapsed())
    });
    let outcome = request.await.unwrap();
    let (status, took) = exit.await.unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    let totals = ledger_totals(&db, "drain2").await;
    match outcome {
        Ok(a) if a.status == 200 => {
            assert_eq!(a.body["accepted"], 5000, "{}", a.body);
            assert_eq!(totals, (5000, 5000, 5000, dec("1.725"), dec("1.725")));
        }
        other => {
            assert_eq!(totals.0, 0, "a failed request left rows: {:?}", other.err());
            assert_eq!(totals.2, 0);
        }
    }
    eprintln!(
        "insert seen in flight at SIGTERM: {seen_active}; rows committed: {}",
        totals.0
    );
}

#[tokio::test]
async fn sigkill_mid_batch_never_leaves_a_partial_batch() {
    let dir = log_dir("faults-sigkill");
    let url = fresh_database("faults").await.unwrap();
    let db = connect(&url).await;
    let http = client();
    let port = free_port();
    let mut collector = start_collector(&url, port, &dir, "collector")
        .await
        .unwrap();
    let batch = json!({"records": records("kill", "crash", 5000)});
    let request = {
        let (http, batch) = (http.clone(), batch.clone());
        tokio::spawn(async move { post_usage(&http, port, &batch).await })
    };
    // Kill as soon as the insert runs (or when the request is done, if it was faster).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !request.is_finished() && Instant::now() < deadline {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active'
               AND query LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(INSERT_BATCH_SQL)
        .fetch_one(&db)
        .await
        .unwrap();
        if active > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    collector.kill();
    let outcome = request.await.unwrap();
    // The server side of a killed client's statement may still be finishing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE $1
               AND state <> 'idle' AND pid <> pg_backend_pid()",
        )
        .bind(INSERT_BATCH_SQL)
        .fetch_one(&db)
        .await
        .unwrap();
        if busy == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rows, _, rolled, _, _) = ledger_totals(&db, "crash").await;
    assert!(
        (rows, rolled) == (0, 0) || (rows, rolled) == (5000, 5000),
        "partial batch: {rows} rows, {rolled} in the rollup"
    );
    eprintln!(
        "SIGKILL mid-batch: rows {rows}, request {}",
        match &outcome {
            Ok(a) => a.status.to_string(),
            Err(e) => e.to_string(),
        }
    );
    if let Ok(a) = &outcome {
        // Answered before the kill: then it was all committed.
        assert_eq!(a.status, 200);
        assert_eq!(rows, 5000);
    }

    // The filter resends after a failure: exactly 5000 afterwards.
    let _collector = start_collector(&url, port, &dir, "collector-2")
        .await
        .unwrap();
    let again = post_usage(&http, port, &batch).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    let accepted = again.body["accepted"].as_i64().unwrap();
    assert_eq!(accepted + rows, 5000);
    assert_eq!(
        ledger_totals(&db, "crash").await,
        (5000, 5000, 5000, dec("1.725"), dec("1.725"))
    );
}

/// A PostgreSQL cluster of this test's own, stopped and deleted on drop.
#[tokio::test]
async fn database_outage_answers_503_then_recovers_without_a_restart_losing_nothing() {
    let dir = log_dir("faults-db-outage");
    let cluster = tokio::task::spawn_blocking(Cluster::init)
        .await
        .unwrap()
        .unwrap();
    let port = free_port();
    let mut collector = start_collector(&cluster.url(), port, &dir, "collector")
        .await
        .unwrap();
    let http = client();
    let before = json!({"records": records("before", "outage", 100)});
    let during = json!({"records": records("during", "outage", 100)});

    let a = post_usage(&http, port, &before).await.unwrap();
    assert_eq!(
        (a.status, a.body["accepted"].as_u64()),
        (200, Some(100)),
        "{}",
        a.body
    );

    // The outage: a fast shutdown, as a failover or restart would do. It is
    // kept to a few seconds here; the collector's behaviour does not depend
    // on its length (each request fails after the 3 s pool acquire timeout).
    let cluster = tokio::task::spawn_blocking(move || cluster.stop("fast").map(|()| cluster))
        .await
        .unwrap()
        .unwrap();
    let down_at = Instant::now();
    // Ingest, readiness and a query, together (each waits out the pool's
    // 3 s acquire timeout).
    let readyz = http.get(format!("http://127.0.0.1:{port}/readyz")).send();
    let (refused, ready, query) = tokio::join!(
        post_usage(&http, port, &during),
        readyz,
        get_json(&http, port, "/v1/summary", ADMIN_TOKEN)
    );
    let refused = refused.unwrap();
    let answered_in = down_at.elapsed();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "unavailable");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("retry"));
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(
        answered_in < Duration::from_secs(10),
        "503 took {answered_in:?}"
    );
    assert_eq!(ready.unwrap().status(), 503);
    let (status, q) = query.unwrap();
    assert_eq!((status, &q["error"]["code"]), (503, &json!("unavailable")));

    let cluster = tokio::task::spawn_blocking(move || cluster.start().map(|()| cluster))
        .await
        .unwrap()
        .unwrap();
    let outage = down_at.elapsed();

    // The filter's behaviour: resend the same batch, honouring retry-after,
    // until it is accepted. Same collector process throughout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut accepted = 0;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = post_usage(&http, port, &during).await.unwrap();
        if r.status == 200 {
            accepted += r.body["accepted"].as_u64().unwrap();
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        let wait: u64 = r.retry_after.and_then(|v| v.parse().ok()).unwrap_or(1);
        tokio::time::sleep(Duration::from_millis(200).min(Duration::from_secs(wait))).await;
    }
    let recovered_in = down_at.elapsed() - outage;
    assert!(
        recovered_in < Duration::from_secs(10),
        "took {recovered_in:?} to recover"
    );
    assert_eq!(accepted, 100);
    // Resent once more: all duplicates.
    let again = post_usage(&http, port, &during).await.unwrap();
    assert_eq!(
        (
            again.body["accepted"].as_u64(),
            again.body["duplicates"].as_u64()
        ),
        (Some(0), Some(100))
    );

    // Nothing lost, nothing twice: 200 rows, 100 of them from the outage batch.
    let db = connect(&cluster.url()).await;
    assert_eq!(
        ledger_totals(&db, "outage").await,
        (200, 200, 200, dec("0.069"), dec("0.069"))
    );
    let during_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transactions WHERE request_id LIKE 'during-%'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(during_rows, 100);
    db.close().await;
    // Never restarted: one start in its log; and it still stops cleanly.
    assert_eq!(
        collector.log_text().matches("collector listening").count(),
        1
    );
    let status = collector.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    eprintln!(
        "outage {outage:?} (first 503 after {answered_in:?}), recovered {recovered_in:?} after restart, {attempts} attempt(s)"
    );
    drop(cluster);
}
