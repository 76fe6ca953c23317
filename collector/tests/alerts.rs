//! Budget alert webhooks: evaluated and delivered against the real
//! PostgreSQL and a real HTTP receiver on 127.0.0.1.
//! gpt-4o-mini records from `common::record` cost exactly $0.000345 each.

mod common;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use collector::alerts::{self, deliver_once, evaluate_at, evaluate_once};
use collector::AppState;
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

const SECRET: &str = "whsec-test-3f9a";

/// One webhook call as the receiver saw it.
#[derive(Clone, Debug)]
struct Call {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Answer 500 to this many calls (recorded too) before answering 200.
    fail_next: Arc<Mutex<u32>>,
}

impl Receiver {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    r.calls.lock().unwrap().push(Call {
        headers,
        body: body.to_vec(),
    });
    let mut fail = r.fail_next.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Starts the receiver; returns it and its URL.
async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, format!("http://{addr}/hook"))
}

async fn setup(pool: PgPool) -> (AppState, reqwest::Client) {
    let s = state(pool).await.with_webhook_secret(Some(SECRET));
    (s, alerts::client().unwrap())
}

async fn create_budget(s: &AppState, body: Value) -> i64 {
    let (status, created) = call(s, "POST", "/v1/budgets", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_i64().unwrap()
}

/// evaluate + deliver once; returns (new alerts, delivered, failed).
async fn round(s: &AppState, client: &reqwest::Client) -> (u64, usize, usize) {
    let added = evaluate_once(s).await.unwrap();
    let d = deliver_once(s, client).await.unwrap();
    (added, d.delivered, d.failed)
}

/// Checks the signature and idempotency headers of a call against its body.
fn check_signed(c: &Call) -> Value {
    let sig = &c.headers["x-billing-signature"];
    let expected = format!(
        "sha256={}",
        hex::encode(alerts::hmac_sha256(SECRET.as_bytes(), &c.body))
    );
    assert_eq!(sig, &expected);
    assert!(alerts::verify_signature(SECRET.as_bytes(), &c.body, sig));
    assert!(!alerts::verify_signature(b"wrong", &c.body, sig));
    assert_eq!(c.headers["content-type"], "application/json");
    let v = c.json();
    assert_eq!(
        c.headers["x-billing-idempotency-key"],
        v["id"].as_str().unwrap()
    );
    v
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn dec(v: &Value) -> Decimal {
    d(v.as_str().unwrap_or_else(|| panic!("not a decimal: {v}")))
}

const T0: i64 = 1_763_978_400_000; // 2025-11-24T10:00:00Z

#[sqlx::test(migrations = "../migrations")]
async fn each_threshold_fires_one_signed_webhook_per_period(pool: PgPool) {
    let (s, client) = setup(pool).await;
    let (rx, url) = receiver().await;
    // Marks at 0.0006 (50 %), 0.00096 (80 %), 0.0012 (100 %).
    let id = create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.0012", "currency": "USD", "period": "total",
            "hard": false, "alert_thresholds": [50, 80, 100], "webhook_url": url}),
    )
    .await;
    // A budget without a webhook never alerts.
    create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.0001", "currency": "USD", "period": "total"}),
    )
    .await;

    // 0.000345 = 28.75 %: nothing yet.
    ingest(&s, vec![record("r1", "acme", "gpt-4o-mini", T0)]).await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    assert!(rx.calls().is_empty());

    // 0.00069 = 57.5 %: exactly one call, for 50.
    ingest(&s, vec![record("r2", "acme", "gpt-4o-mini", T0)]).await;
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    let calls = rx.calls();
    assert_eq!(calls.len(), 1);
    let v = check_signed(&calls[0]);
    let body = v.as_object().unwrap();
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "api_key_id",
            "budget_id",
            "created_at",
            "currency",
            "event",
            "id",
            "limit",
            "period_start",
            "resets_at",
            "spent",
            "tenant_id",
            "threshold"
        ]
    );
    assert_eq!(v["event"], "threshold_crossed");
    assert_eq!(v["threshold"], 50);
    assert_eq!(v["budget_id"], id);
    assert_eq!(v["tenant_id"], "acme");
    assert_eq!(v["api_key_id"], Value::Null);
    assert_eq!(dec(&v["spent"]), d("0.00069"));
    assert_eq!(v["limit"], "0.0012");
    assert_eq!(v["currency"], "USD");
    assert_eq!(v["period_start"], "1970-01-01T00:00:00Z");
    assert_eq!(v["resets_at"], Value::Null);
    assert!(v["created_at"]
        .as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .is_ok());

    // Again with no new spend: nothing.
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    assert_eq!(rx.calls().len(), 1);

    // 0.001035 = 86.25 %: one call for 80.
    ingest(&s, vec![record("r3", "acme", "gpt-4o-mini", T0)]).await;
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    let v = check_signed(&rx.calls()[1]);
    assert_eq!(
        (v["event"].as_str(), v["threshold"].as_i64()),
        (Some("threshold_crossed"), Some(80))
    );
    assert_eq!(dec(&v["spent"]), d("0.001035"));

    // 0.00138 = 115 %: one call for 100, as budget_exceeded.
    ingest(&s, vec![record("r4", "acme", "gpt-4o-mini", T0)]).await;
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    let v = check_signed(&rx.calls()[2]);
    assert_eq!(
        (v["event"].as_str(), v["threshold"].as_i64()),
        (Some("budget_exceeded"), Some(100))
    );
    assert_eq!(dec(&v["spent"]), d("0.00138"));

    // More spend and more rounds (as several replicas would run): no new calls.
    ingest(&s, vec![record("r5", "acme", "gpt-4o-mini", T0)]).await;
    for _ in 0..3 {
        assert_eq!(round(&s, &client).await, (0, 0, 0));
    }
    let calls = rx.calls();
    assert_eq!(calls.len(), 3);
    let ids: Vec<String> = calls
        .iter()
        .map(|c| c.json()["id"].as_str().unwrap().to_string())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");

    // The delivery log, newest first.
    let (status, log) = call(&s, "GET", "/v1/alerts?tenant_id=acme", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let log = log["alerts"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    let thresholds: Vec<i64> = log
        .iter()
        .map(|a| a["threshold"].as_i64().unwrap())
        .collect();
    assert_eq!(thresholds, [100, 80, 50]);
    for (a, id) in log.iter().zip(ids.iter().rev()) {
        assert_eq!(&a["id"], id);
        assert_eq!(a["status"], "delivered");
        assert_eq!(a["attempts"], 1);
        assert_eq!(a["last_status"], 200);
        assert_eq!(a["webhook_url"], url);
        assert!(a["delivered_at"].is_string(), "{a}");
    }
    let (_, other) = call(&s, "GET", "/v1/alerts?tenant_id=other", Some(ADMIN), None).await;
    assert_eq!(other["alerts"], json!([]));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_delivery_is_retried_with_backoff_and_the_same_id(pool: PgPool) {
    let (s, client) = setup(pool).await;
    let (rx, url) = receiver().await;
    *rx.fail_next.lock().unwrap() = 1;
    create_budget(
        &s,
        json!({"tenant_id": "acme", "api_key_id": "key-acme", "limit": "0.0012",
            "currency": "USD", "period": "total", "alert_thresholds": [50],
            "webhook_url": url}),
    )
    .await;
    ingest(
        &s,
        vec![
            record("r1", "acme", "gpt-4o-mini", T0),
            record("r2", "acme", "gpt-4o-mini", T0),
        ],
    )
    .await;
    assert_eq!(round(&s, &client).await, (1, 0, 1));
    let (_, log) = call(&s, "GET", "/v1/alerts?tenant_id=acme", Some(ADMIN), None).await;
    let a = &log["alerts"][0];
    assert_eq!(a["status"], "pending");
    assert_eq!(a["attempts"], 1);
    assert_eq!(a["last_status"], 500);
    assert_eq!(
        a["last_error"],
        "webhook answered 500 Internal Server Error"
    );
    assert_eq!(a["delivered_at"], Value::Null);
    let next: DateTime<Utc> = a["next_attempt_at"].as_str().unwrap().parse().unwrap();
    let created: DateTime<Utc> = a["created_at"].as_str().unwrap().parse().unwrap();
    assert!(next > created, "{a}");

    // Within the 1 s backoff nothing is sent again.
    assert_eq!(deliver_once(&s, &client).await.unwrap(), Default::default());
    assert_eq!(rx.calls().len(), 1);

    // After it, the retry is delivered: same id, same bytes, same signature.
    let started = Instant::now();
    loop {
        let d = deliver_once(&s, &client).await.unwrap();
        if d.delivered == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = rx.calls();
    assert_eq!(calls.len(), 2);
    let first = check_signed(&calls[0]);
    let second = check_signed(&calls[1]);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(calls[0].body, calls[1].body);
    assert_eq!(
        calls[0].headers["x-billing-signature"],
        calls[1].headers["x-billing-signature"]
    );
    assert_eq!(second["api_key_id"], "key-acme");
    assert_eq!(second["threshold"], 50);

    let (_, log) = call(&s, "GET", "/v1/alerts?tenant_id=acme", Some(ADMIN), None).await;
    let a = &log["alerts"][0];
    assert_eq!(a["id"], second["id"]);
    assert_eq!(a["status"], "delivered");
    assert_eq!(a["attempts"], 2);
    assert_eq!(a["last_status"], 200);
    assert_eq!(a["last_error"], Value::Null);
    assert_eq!(a["next_attempt_at"], Value::Null);
    // Delivered alerts are never sent again.
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    assert_eq!(rx.calls().len(), 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn projection_fires_once_per_period_and_a_new_period_fires_again(pool: PgPool) {
    let (s, client) = setup(pool).await;
    let (rx, url) = receiver().await;
    create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.0012", "currency": "USD", "period": "month",
            "alert_thresholds": [50, 100], "webhook_url": url}),
    )
    .await;
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let ms = |s: &str| at(s).timestamp_millis();
    // 10 days into November (of 30): spend projects to 3×.
    let nov = at("2025-11-11T00:00:00Z");
    ingest(
        &s,
        vec![record(
            "n1",
            "acme",
            "gpt-4o-mini",
            ms("2025-11-05T12:00:00Z"),
        )],
    )
    .await;
    // 0.000345 projects to 0.001035 < 0.0012: nothing.
    assert_eq!(evaluate_at(&s, nov).await.unwrap(), 0);
    ingest(
        &s,
        vec![record(
            "n2",
            "acme",
            "gpt-4o-mini",
            ms("2025-11-06T12:00:00Z"),
        )],
    )
    .await;
    // 0.00069 (57.5 %) projects to 0.00207: the 50 % threshold and the projection.
    assert_eq!(evaluate_at(&s, nov).await.unwrap(), 2);
    assert_eq!(
        evaluate_at(&s, at("2025-11-20T00:00:00Z")).await.unwrap(),
        0
    );
    let d = deliver_once(&s, &client).await.unwrap();
    assert_eq!((d.delivered, d.failed), (2, 0));
    let mut events: Vec<(String, Value, String)> = rx
        .calls()
        .iter()
        .map(|c| {
            let v = check_signed(c);
            (
                v["event"].as_str().unwrap().to_string(),
                v["threshold"].clone(),
                v["period_start"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        events,
        [
            (
                "projected_to_exceed".to_string(),
                Value::Null,
                "2025-11-01T00:00:00Z".to_string()
            ),
            (
                "threshold_crossed".to_string(),
                json!(50),
                "2025-11-01T00:00:00Z".to_string()
            ),
        ]
    );
    let resets: Vec<String> = rx
        .calls()
        .iter()
        .map(|c| c.json()["resets_at"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(resets, ["2025-12-01T00:00:00Z", "2025-12-01T00:00:00Z"]);

    // December is a new period: the 50 % threshold fires again, once.
    ingest(
        &s,
        vec![
            record("d1", "acme", "gpt-4o-mini", ms("2025-12-02T12:00:00Z")),
            record("d2", "acme", "gpt-4o-mini", ms("2025-12-03T12:00:00Z")),
        ],
    )
    .await;
    let dec1 = at("2025-12-31T00:00:00Z");
    // 0.00069 by Dec 31st projects to 0.000713: only the threshold.
    assert_eq!(evaluate_at(&s, dec1).await.unwrap(), 1);
    assert_eq!(evaluate_at(&s, dec1).await.unwrap(), 0);
    assert_eq!(deliver_once(&s, &client).await.unwrap().delivered, 1);
    let v = check_signed(&rx.calls()[2]);
    assert_eq!(v["event"], "threshold_crossed");
    assert_eq!(v["threshold"], 50);
    assert_eq!(v["period_start"], "2025-12-01T00:00:00Z");
    assert_eq!(v["resets_at"], "2026-01-01T00:00:00Z");
    assert_eq!(rx.calls().len(), 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn tenants_read_only_their_own_alert_log(pool: PgPool) {
    let (s, client) = setup(pool).await;
    let (_rx, url) = receiver().await;
    for tenant in ["acme", "other"] {
        create_budget(
            &s,
            json!({"tenant_id": tenant, "limit": "0.0006", "currency": "USD", "period": "total",
                "alert_thresholds": [50], "webhook_url": url}),
        )
        .await;
        ingest(
            &s,
            vec![record(&format!("{tenant}-1"), tenant, "gpt-4o-mini", T0)],
        )
        .await;
    }
    assert_eq!(round(&s, &client).await, (2, 2, 0));
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": "acme", "name": "reader"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();

    let (status, all) = call(&s, "GET", "/v1/alerts", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["alerts"].as_array().unwrap().len(), 2);
    let (status, own) = call(&s, "GET", "/v1/alerts", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let own = own["alerts"].as_array().unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["tenant_id"], "acme");
    let (status, _) = call(&s, "GET", "/v1/alerts?tenant_id=other", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&s, "GET", "/v1/alerts", Some(INGEST), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&s, "GET", "/v1/alerts", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn without_a_secret_alerts_are_recorded_but_not_sent(pool: PgPool) {
    let s = state(pool).await;
    let client = alerts::client().unwrap();
    let (rx, url) = receiver().await;
    create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.0006", "currency": "USD", "period": "total",
            "alert_thresholds": [50], "webhook_url": url}),
    )
    .await;
    ingest(&s, vec![record("r1", "acme", "gpt-4o-mini", T0)]).await;
    assert_eq!(round(&s, &client).await, (1, 0, 0));
    assert!(rx.calls().is_empty());
    // Once the secret is configured the waiting alert goes out.
    let s = s.with_webhook_secret(Some(SECRET));
    assert_eq!(deliver_once(&s, &client).await.unwrap().delivered, 1);
    assert_eq!(check_signed(&rx.calls()[0])["threshold"], 50);
}

// ---------------------------------------------------------------------------
// Low-balance alerts of prepaid tenants
// ---------------------------------------------------------------------------

/// Adds a credit; returns when the account opened (in ms), so usage can be
/// stamped inside it.
async fn credit(s: &AppState, tenant: &str, amount: &str) -> i64 {
    let (status, body) = call(
        s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(json!({"tenant_id": tenant, "amount": amount, "currency": "USD", "reason": "top-up"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["balance"]["opened_at"]
        .as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_millis()
}

/// Ingests `n` records (0.000345 each) for `tenant` stamped `at_ms`.
async fn spend(s: &AppState, tenant: &str, n: usize, at_ms: i64) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let records = (0..n)
        .map(|_| {
            let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            record(&format!("{tenant}-spend-{i}"), tenant, "gpt-4o-mini", at_ms)
        })
        .collect();
    ingest(s, records).await;
}

async fn put_balance_alert(s: &AppState, tenant: &str, body: Value) -> (StatusCode, Value) {
    call(
        s,
        "PUT",
        &format!("/v1/tenants/{tenant}/balance-alert"),
        Some(ADMIN),
        Some(body),
    )
    .await
}

async fn balance(s: &AppState, tenant: &str) -> Value {
    let (status, body) = call(
        s,
        "GET",
        &format!("/v1/balance?tenant_id={tenant}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[sqlx::test(migrations = "../migrations")]
async fn low_balance_fires_once_per_fall_and_rearms_after_a_top_up(pool: PgPool) {
    let (s, client) = setup(pool).await;
    // A second replica on the same database.
    let replica = s.clone();
    let (rx, url) = receiver().await;
    let opened = credit(&s, "acme", "0.002").await + 1;
    let (status, body) = put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "0.0010", "currency": "USD", "webhook_url": url}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(body["threshold"], "0.001");
    assert_eq!(body["currency"], "USD");
    assert_eq!(body["webhook_url"], url);
    assert_eq!(body["balance"], "0.002");
    assert_eq!(body["low_balance"], false);

    // 0.002 - 0.00069 = 0.00131: above the threshold, nothing.
    spend(&s, "acme", 2, opened).await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));

    // 0.002 - 0.001035 = 0.000965 < 0.001: one signed call, whichever
    // replica evaluates and however often.
    spend(&s, "acme", 1, opened).await;
    let (a, b) = tokio::join!(evaluate_once(&s), evaluate_once(&replica));
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(round(&s, &client).await, (0, 1, 0));
    for _ in 0..3 {
        assert_eq!(round(&s, &client).await, (0, 0, 0));
    }
    let calls = rx.calls();
    assert_eq!(calls.len(), 1);
    let v = check_signed(&calls[0]);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "balance",
            "created_at",
            "credits",
            "currency",
            "event",
            "id",
            "spent",
            "tenant_id",
            "threshold"
        ]
    );
    assert_eq!(v["event"], "low_balance");
    assert_eq!(v["tenant_id"], "acme");
    assert_eq!(v["balance"], "0.000965");
    assert_eq!(v["threshold"], "0.001");
    assert_eq!(v["credits"], "0.002");
    assert_eq!(v["spent"], "0.001035");
    assert_eq!(v["currency"], "USD");
    let b = balance(&s, "acme").await;
    assert_eq!(b["low_balance_threshold"], "0.001");
    assert_eq!(b["low_balance"], true);

    // Lower still, more rounds: no second call for the same fall.
    spend(&s, "acme", 1, opened).await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    assert_eq!(rx.calls().len(), 1);

    // A top-up to 0.00162 (at/above the threshold) re-arms it ...
    credit(&s, "acme", "0.001").await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    let b = balance(&s, "acme").await;
    assert_eq!(b["balance"], "0.00162");
    assert_eq!(b["low_balance"], false);
    // ... and the next fall (0.00093) fires again, with a new id.
    spend(&s, "acme", 2, opened).await;
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    let calls = rx.calls();
    assert_eq!(calls.len(), 2);
    let second = check_signed(&calls[1]);
    assert_eq!(second["event"], "low_balance");
    assert_eq!(second["balance"], "0.00093");
    assert_ne!(second["id"], v["id"]);

    // Spending past zero fires balance_exhausted once (the gateway blocks).
    spend(&s, "acme", 3, opened).await;
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    let third = check_signed(&rx.calls()[2]);
    assert_eq!(third["event"], "balance_exhausted");
    assert_eq!(third["balance"], "-0.000105");
    assert_eq!(third["credits"], "0.003");

    // The delivery log, newest first.
    let (status, log) = call(&s, "GET", "/v1/alerts?tenant_id=acme", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let log = log["alerts"].as_array().unwrap();
    let events: Vec<(&str, &str)> = log
        .iter()
        .map(|a| (a["event"].as_str().unwrap(), a["balance"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("balance_exhausted", "-0.000105"),
            ("low_balance", "0.00093"),
            ("low_balance", "0.000965")
        ]
    );
    for a in log {
        assert_eq!(a["budget_id"], Value::Null);
        assert_eq!(a["threshold"], "0.001");
        assert_eq!(a["limit"], Value::Null);
        assert_eq!(a["status"], "delivered");
        assert_eq!(a["webhook_url"], url);
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn balance_alerts_are_per_tenant(pool: PgPool) {
    let (s, client) = setup(pool).await;
    let (rx, url) = receiver().await;
    let mut opened = 0;
    for tenant in ["acme", "globex"] {
        opened = credit(&s, tenant, "0.001").await + 1;
        let (status, body) = put_balance_alert(
            &s,
            tenant,
            json!({"threshold": "0.0005", "currency": "USD", "webhook_url": url}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Only globex falls below 0.0005 (0.00031 left); acme spends nothing.
    spend(&s, "globex", 2, opened).await;
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    let calls = rx.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(check_signed(&calls[0])["tenant_id"], "globex");
    assert_eq!(balance(&s, "acme").await["low_balance"], false);
    assert_eq!(balance(&s, "globex").await["low_balance"], true);

    // A tenant token reads its own setting, balance and alerts only.
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": "acme", "name": "reader"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (status, own) = call(
        &s,
        "GET",
        "/v1/tenants/acme/balance-alert",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["threshold"], "0.0005");
    assert_eq!(own["balance"], "0.001");
    assert_eq!(own["low_balance"], false);
    let (status, _) = call(
        &s,
        "GET",
        "/v1/tenants/globex/balance-alert",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, own_log) = call(&s, "GET", "/v1/alerts", Some(&token), None).await;
    assert_eq!(own_log["alerts"], json!([]));
    // Writing is admin business.
    for method in ["PUT", "DELETE"] {
        let (status, _) = call(
            &s,
            method,
            "/v1/tenants/acme/balance-alert",
            Some(&token),
            Some(json!({"threshold": "1", "currency": "USD"})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
        let (status, _) = call(
            &s,
            method,
            "/v1/tenants/acme/balance-alert",
            Some(INGEST),
            Some(json!({"threshold": "1", "currency": "USD"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn balance_alert_settings_are_validated(pool: PgPool) {
    let (s, client) = setup(pool).await;
    let (rx, url) = receiver().await;
    let error = |body: &Value| body["error"]["message"].as_str().unwrap().to_string();

    // No prepaid account yet.
    let (status, body) =
        put_balance_alert(&s, "acme", json!({"threshold": "10", "currency": "USD"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    assert_eq!(
        error(&body),
        "tenant \"acme\" has no prepaid account; add a credit first (POST /v1/credits)"
    );
    let opened = credit(&s, "acme", "0.001").await + 1;

    for (payload, message) in [
        (
            json!({"threshold": "-5.00", "currency": "USD"}),
            "threshold must be positive",
        ),
        (
            json!({"threshold": "0", "currency": "USD"}),
            "threshold must be positive",
        ),
        (
            json!({"threshold": 2.5, "currency": "USD"}),
            "threshold must be a decimal string such as \"25.00\", not a float",
        ),
        (
            json!({"threshold": "10", "currency": "EUR"}),
            "currency must be the prepaid account's currency \"USD\", not \"EUR\"",
        ),
        (
            json!({"threshold": "10", "currency": "usd"}),
            "currency must be an ISO 4217 code such as \"USD\", not \"usd\"",
        ),
        (
            json!({"threshold": "10", "currency": "USD", "webhook_url": "ftp://x"}),
            "webhook_url must be an http(s) URL",
        ),
    ] {
        let (status, body) = put_balance_alert(&s, "acme", payload.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{payload}: {body}");
        assert_eq!(error(&body), message, "{payload}");
    }
    let (status, body) = put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "10", "currency": "USD", "limit": "1"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("limit"), "{body}");
    let (status, body) = put_balance_alert(&s, "acme", json!({"threshold": "10"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("currency"), "{body}");

    // Nothing was stored by the refusals.
    let (status, body) = call(
        &s,
        "GET",
        "/v1/tenants/acme/balance-alert",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error(&body), "tenant \"acme\" has no low-balance alert");

    // Without a webhook the setting only shows on the balance; nothing fires.
    let (status, body) = put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "0.0008", "currency": "USD"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["webhook_url"], Value::Null);
    spend(&s, "acme", 1, opened).await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    let b = balance(&s, "acme").await;
    assert_eq!(b["low_balance_threshold"], "0.0008");
    assert_eq!(b["low_balance"], true);
    assert_eq!(b["balance"], "0.000655");
    // Adding the webhook later alerts for the fall in progress, once.
    let (status, _) = put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "0.0008", "currency": "USD", "webhook_url": url}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    // Re-sending the same setting (an idempotent PUT) sends nothing again.
    put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "0.0008", "currency": "USD", "webhook_url": url}),
    )
    .await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    assert_eq!(rx.calls().len(), 1);

    // DELETE: 204, then 404; the balance no longer shows a threshold.
    let uri = "/v1/tenants/acme/balance-alert";
    assert_eq!(
        call(&s, "DELETE", uri, Some(ADMIN), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&s, "DELETE", uri, Some(ADMIN), None).await.0,
        StatusCode::NOT_FOUND
    );
    let b = balance(&s, "acme").await;
    assert_eq!(b["low_balance_threshold"], Value::Null);
    assert_eq!(b["low_balance"], false);
}

#[sqlx::test(migrations = "../migrations")]
async fn stale_readings_of_another_replica_neither_rearm_nor_fire_again(pool: PgPool) {
    use collector::db::{self, BalanceEvent};
    let (s, client) = setup(pool).await;
    let (rx, url) = receiver().await;
    let opened = credit(&s, "acme", "0.001").await + 1;
    put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "0.0008", "currency": "USD", "webhook_url": url}),
    )
    .await;
    spend(&s, "acme", 1, opened).await;
    // A slow replica reads the state (armed) before the fall fires ...
    let stale = db::balance_watches(&s.pool).await.unwrap().pop().unwrap();
    assert_eq!(stale.low_fired_at, None);
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    // ... so its reading can't re-arm the fired alert ...
    assert!(!db::rearm_balance_alert(&s.pool, &stale, BalanceEvent::Low)
        .await
        .unwrap());
    // ... and after a top-up re-armed it, its old low reading can't fire.
    credit(&s, "acme", "0.001").await;
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    let fresh = db::balance_watches(&s.pool).await.unwrap().pop().unwrap();
    assert_eq!(fresh.low_fired_at, None, "re-armed");
    assert!(!db::fire_balance_alert(
        &s.pool,
        &stale,
        BalanceEvent::Low,
        d("0.000655"),
        d("0.000345")
    )
    .await
    .unwrap());
    assert_eq!(round(&s, &client).await, (0, 0, 0));
    assert_eq!(rx.calls().len(), 1);
    // A changed threshold is not fired with the old one either.
    put_balance_alert(
        &s,
        "acme",
        json!({"threshold": "0.5", "currency": "USD", "webhook_url": url}),
    )
    .await;
    assert!(!db::fire_balance_alert(
        &s.pool,
        &fresh,
        BalanceEvent::Low,
        d("0.001655"),
        d("0.000345")
    )
    .await
    .unwrap());
    // The evaluator itself fires for the new threshold: 0.001655 < 0.5.
    assert_eq!(round(&s, &client).await, (1, 1, 0));
    let v = check_signed(&rx.calls()[1]);
    assert_eq!(
        (v["threshold"].as_str(), v["balance"].as_str()),
        (Some("0.5"), Some("0.001655"))
    );
}
