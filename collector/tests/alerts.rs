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
