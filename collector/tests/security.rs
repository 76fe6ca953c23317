//! Tenant read tokens, tenant isolation, token kinds, revocation, rate
//! limits and secret hygiene, against the real PostgreSQL.

mod common;

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use collector::{app, AppState};
use common::*;
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tower::ServiceExt;

const T0: i64 = 1_763_978_400_000; // 2025-11-24T10:00:00Z

/// `tracing` caches per call site whether anyone listens; a call site first
/// reached on another test's thread while the log-capturing test installs
/// its subscriber can be cached as "never" and its events lost. The capture
/// test therefore runs alone (write), the others together (read).
static LOG_CAPTURE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
const DAY: &str = "start=2025-11-24T00:00:00Z&end=2025-11-25T00:00:00Z";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let response = app(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// GET expecting 200 JSON.
async fn get_ok(state: &AppState, uri: &str, token: &str) -> Value {
    let r = send(state, "GET", uri, Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "GET {uri}: {}", r.text);
    r.json()
}

/// Creates a tenant token with the admin API; returns (id, token).
async fn create_token(state: &AppState, tenant: &str, name: &str) -> (i64, String) {
    let r = send(
        state,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": tenant, "name": name})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let body = r.json();
    assert_eq!(body["tenant_id"], tenant);
    assert_eq!(body["name"], name);
    let token = body["token"].as_str().unwrap().to_string();
    (body["id"].as_i64().unwrap(), token)
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a decimal: {v}"))).unwrap()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn ids(body: &Value) -> Vec<String> {
    body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request_id"].as_str().unwrap().to_string())
        .collect()
}

/// acme: a1, a2, a3 (a3 with a reported cost); globex: g1, g2 (g2 with a
/// reported cost), interleaved in time. Every record costs $0.000345.
async fn seed(state: &AppState) {
    let mut a3 = record("a3", "acme", "gpt-4o-mini", T0 + 2000);
    a3["reported_cost"] = json!("0.0004");
    let mut g2 = record("g2", "globex", "gpt-4o-mini", T0 + 3000);
    g2["reported_cost"] = json!("0.0009");
    let r = ingest(
        state,
        vec![
            record("a1", "acme", "gpt-4o-mini", T0),
            record("g1", "globex", "gpt-4o-mini", T0 + 500),
            record("a2", "acme", "gpt-4o-mini", T0 + 1000),
            a3,
            g2,
        ],
    )
    .await;
    assert_eq!(r["accepted"], 5);
}

fn assert_forbidden(r: &Reply, what: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
    assert_eq!(r.json()["error"]["code"], "forbidden", "{what}");
    assert!(!r.text.contains("g1") && !r.text.contains("g2"), "{what}");
}

#[sqlx::test(migrations = "../migrations")]
async fn tenant_token_sees_only_its_own_tenant_every_way_it_asks(pool: PgPool) {
    let _shared = LOG_CAPTURE.read().await;
    let s = state(pool).await;
    seed(&s).await;
    let (_, acme) = create_token(&s, "acme", "finance").await;

    // No tenant parameter, or its own: its three rows, newest first.
    for uri in [
        "/v1/transactions".to_string(),
        "/v1/transactions?tenant_id=acme".to_string(),
        format!("/v1/transactions?{DAY}"),
    ] {
        let body = get_ok(&s, &uri, &acme).await;
        assert_eq!(ids(&body), ["a3", "a2", "a1"], "{uri}");
        assert_eq!(body["next_cursor"], Value::Null);
    }
    // The admin sees all five.
    let all = get_ok(&s, "/v1/transactions", ADMIN).await;
    assert_eq!(ids(&all), ["g2", "a3", "a2", "g1", "a1"]);

    // Another tenant by name: 403, whatever else is asked.
    for uri in [
        "/v1/transactions?tenant_id=globex",
        "/v1/transactions?tenant_id=globex&format=csv",
        "/v1/transactions?tenant_id=ACME",
        "/v1/transactions?tenant_id=",
        "/v1/summary?tenant_id=globex&group_by=tenant",
        "/v1/reconciliation?tenant_id=globex",
        "/v1/forecast?tenant_id=globex",
    ] {
        let r = send(&s, "GET", uri, Some(&acme), None).await;
        assert_forbidden(&r, uri);
    }

    // The other tenant's api key: nothing.
    let body = get_ok(&s, "/v1/transactions?api_key_id=key-globex", &acme).await;
    assert_eq!(ids(&body), Vec::<String>::new());
    let body = get_ok(
        &s,
        &format!("/v1/summary?api_key_id=key-globex&{DAY}"),
        &acme,
    )
    .await;
    assert_eq!(body["groups"], json!([]));
    // Its own key: its three rows.
    let body = get_ok(&s, "/v1/transactions?api_key_id=key-acme", &acme).await;
    assert_eq!(ids(&body), ["a3", "a2", "a1"]);

    // Paging with its own cursors: one row a page, three pages, then none.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..4 {
        let uri = match &cursor {
            Some(c) => format!("/v1/transactions?limit=1&cursor={c}"),
            None => "/v1/transactions?limit=1".into(),
        };
        let body = get_ok(&s, &uri, &acme).await;
        seen.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    // The third page is full (limit 1) so it carries a cursor; the fourth is empty.
    assert_eq!(seen, ["a3", "a2", "a1"]);

    // A cursor from globex's first page (the admin's listing of globex),
    // a crafted one and one of the old unsealed format: refused, 400.
    let globex_page = get_ok(&s, "/v1/transactions?tenant_id=globex&limit=1", ADMIN).await;
    assert_eq!(ids(&globex_page), ["g2"]);
    let foreign = globex_page["next_cursor"].as_str().unwrap();
    let crafted = URL_SAFE_NO_PAD.encode(format!("{}.{}", i64::MAX / 1000, i64::MAX));
    for (cursor, says) in [
        (foreign.to_string(), "does not belong to this listing"),
        (crafted, "earlier version"),
        (format!("{foreign}x"), "does not belong to this listing"),
    ] {
        let r = send(
            &s,
            "GET",
            &format!("/v1/transactions?cursor={cursor}"),
            Some(&acme),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.text.contains(says) && r.text.contains("restart the listing"),
            "{}",
            r.text
        );
        assert!(
            !r.text.contains("g1") && !r.text.contains("g2"),
            "{}",
            r.text
        );
    }

    // CSV: a header and its three rows, nothing of globex.
    let r = send(&s, "GET", "/v1/transactions?format=csv", Some(&acme), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.text);
    assert!(lines[1].starts_with("a3,acme,key-acme,"));
    assert!(lines[3].starts_with("a1,acme,key-acme,"));
    assert!(!r.text.contains("globex"));

    // Summary: total, by tenant, by api key: acme only.
    // 3 requests × $0.000345 = $0.001035 (the admin sees 5 × = $0.001725).
    let body = get_ok(&s, &format!("/v1/summary?{DAY}"), &acme).await;
    let groups = body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["requests"], 3);
    assert_eq!(groups[0]["input_tokens"], 3600);
    assert_eq!(dec(&groups[0]["cost"]), d("0.001035"));
    let body = get_ok(&s, &format!("/v1/summary?{DAY}"), ADMIN).await;
    assert_eq!(body["groups"][0]["requests"], 5);
    assert_eq!(dec(&body["groups"][0]["cost"]), d("0.001725"));
    for (group_by, key) in [("tenant", "acme"), ("api_key", "key-acme")] {
        let body = get_ok(&s, &format!("/v1/summary?group_by={group_by}&{DAY}"), &acme).await;
        let groups = body["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{group_by}: {body}");
        assert_eq!(groups[0]["key"], key);
        assert_eq!(groups[0]["requests"], 3);
        assert_eq!(dec(&groups[0]["cost"]), d("0.001035"));
    }
    let body = get_ok(&s, &format!("/v1/summary?group_by=tenant&{DAY}"), ADMIN).await;
    assert_eq!(body["groups"].as_array().unwrap().len(), 2);

    // Reconciliation: only a3 (ours 0.000345 against 0.0004 reported).
    let body = get_ok(&s, &format!("/v1/reconciliation?{DAY}"), &acme).await;
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(body["transactions"], 1);
    assert_eq!(dec(&body["ours"]), d("0.000345"));
    assert_eq!(dec(&body["reported"]), d("0.0004"));
    assert_eq!(dec(&body["difference"]), d("-0.000055"));
    assert_eq!(body["by_model"].as_array().unwrap().len(), 1);
    let outliers = body["largest_differences"].as_array().unwrap();
    assert_eq!(outliers.len(), 1);
    assert_eq!(outliers[0]["request_id"], "a3");
    assert!(!body.to_string().contains("globex"));
    let body = get_ok(&s, &format!("/v1/reconciliation?{DAY}"), ADMIN).await;
    assert_eq!(body["transactions"], 2);
    assert_eq!(dec(&body["reported"]), d("0.0013"));

    // A globex token sees globex's two rows, the mirror image.
    let (_, globex) = create_token(&s, "globex", "ops").await;
    let body = get_ok(&s, "/v1/transactions", &globex).await;
    assert_eq!(ids(&body), ["g2", "g1"]);
    let r = send(
        &s,
        "GET",
        "/v1/transactions?tenant_id=acme",
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = "../migrations")]
async fn each_token_kind_can_do_only_its_own_job(pool: PgPool) {
    let _shared = LOG_CAPTURE.read().await;
    let s = state(pool.clone()).await;
    seed(&s).await;
    let (id, acme) = create_token(&s, "acme", "finance").await;
    let batch = json!({"records": [record("x1", "acme", "gpt-4o-mini", T0)]});

    // A tenant token may not ingest (401: it is not the ingest token) nor
    // administer (403: known, but not allowed).
    let r = send(&s, "POST", "/v1/usage", Some(&acme), Some(batch.clone())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let price = json!({"input": "1", "output": "2", "effective_from": "2025-01-01T00:00:00Z"});
    for (method, uri, body) in [
        ("PUT", "/v1/prices/acme-llm-1", Some(price)),
        ("POST", "/v1/reprice", None),
        ("GET", "/v1/tokens", None),
        (
            "POST",
            "/v1/tokens",
            Some(json!({"tenant_id": "globex", "name": "stolen"})),
        ),
        ("DELETE", &format!("/v1/tokens/{id}") as &str, None),
    ] {
        let r = send(&s, method, uri, Some(&acme), body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            r.text
        );
        assert_eq!(r.json()["error"]["code"], "forbidden");
    }
    // It may read the catalog and quote (the catalog is not tenant data).
    let body = get_ok(&s, "/v1/prices?model=gpt-4o-mini", &acme).await;
    assert!(!body["prices"].as_array().unwrap().is_empty());
    let r = send(
        &s,
        "POST",
        "/v1/quote",
        Some(&acme),
        Some(json!({"model": "gpt-4o-mini", "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(dec(&r.json()["cost"]["total"]), d("0.000345"));

    // The ingest token may only ingest.
    for (method, uri) in [
        ("GET", "/v1/transactions"),
        ("GET", "/v1/summary"),
        ("GET", "/v1/forecast"),
        ("GET", "/v1/reconciliation"),
        ("GET", "/v1/prices"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/reprice"),
    ] {
        let r = send(&s, method, uri, Some(INGEST), None).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri}: {}",
            r.text
        );
        assert_eq!(r.json()["error"]["code"], "unauthorized");
    }
    // The admin token may not ingest: that takes INGEST_TOKEN only.
    let r = send(&s, "POST", "/v1/usage", Some(ADMIN), Some(batch.clone())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    // Unknown and malformed tokens, and no token at all.
    let (forged, _) = collector::auth::generate_tenant_token().unwrap();
    for token in [Some(forged.as_str()), Some("blt_"), Some("nonsense"), None] {
        let r = send(&s, "GET", "/v1/transactions", token, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    // None of the refused ingests wrote anything: still the five seeded rows.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 5);
    let r = send(&s, "POST", "/v1/usage", Some(INGEST), Some(batch)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["accepted"], 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn revocation_bites_at_once_here_and_within_seconds_on_another_replica(pool: PgPool) {
    let _shared = LOG_CAPTURE.read().await;
    // Two collector replicas on one database, each with its own token cache.
    let here = state(pool.clone()).await;
    let there = AppState::new(
        pool.clone(),
        collector::price_book::PriceBook::empty(),
        Some(INGEST),
        Some(ADMIN),
        1 << 20,
    )
    .with_clock(here.clock.clone());
    seed(&here).await;
    let (id, acme) = create_token(&here, "acme", "finance").await;
    let (_, other) = create_token(&here, "acme", "dashboard").await;
    assert_eq!(
        ids(&get_ok(&here, "/v1/transactions", &acme).await).len(),
        3
    );
    assert_eq!(
        ids(&get_ok(&there, "/v1/transactions", &acme).await).len(),
        3
    );

    let r = send(
        &here,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let revoked = r.json();
    assert_eq!(revoked["id"], id);
    assert!(revoked["revoked_at"].is_string());
    let revoked_at = std::time::Instant::now();

    // Here: refused at once.
    let r = send(&here, "GET", "/v1/transactions", Some(&acme), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    // There: within the cache lifetime (2 s).
    let deadline = revoked_at + Duration::from_secs(10);
    loop {
        let r = send(&there, "GET", "/v1/transactions", Some(&acme), None).await;
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(Instant::now() < deadline, "revoked token still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = revoked_at.elapsed();
    assert!(
        took <= collector::auth::DEFAULT_TOKEN_CACHE_TTL + Duration::from_millis(500),
        "revocation took {took:?} on the other replica"
    );
    // The tenant's other token is untouched.
    assert_eq!(
        ids(&get_ok(&there, "/v1/transactions", &other).await).len(),
        3
    );

    // Revoking again keeps the first time; unknown or malformed ids are errors.
    let again = send(
        &here,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["revoked_at"], revoked["revoked_at"]);
    let r = send(&here, "DELETE", "/v1/tokens/999999", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&here, "DELETE", "/v1/tokens/abc", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "bad_request");

    // The listing shows it revoked, the other one active.
    let list = get_ok(&here, "/v1/tokens?tenant_id=acme", ADMIN).await;
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["id"], id);
    assert_eq!(tokens[0]["revoked_at"], revoked["revoked_at"]);
    assert_eq!(tokens[1]["name"], "dashboard");
    assert_eq!(tokens[1]["revoked_at"], Value::Null);
}

#[sqlx::test(migrations = "../migrations")]
async fn rate_limit_answers_429_with_retry_after_once_the_bucket_is_empty(pool: PgPool) {
    let _shared = LOG_CAPTURE.read().await;
    // One request a second, bursts of three.
    let s = state(pool).await.with_query_rate_limit(60, 3);
    seed(&s).await;
    let (_, a) = create_token(&s, "acme", "finance").await;
    let (_, b) = create_token(&s, "acme", "dashboard").await;

    for i in 0..3 {
        let r = send(&s, "GET", "/v1/transactions", Some(&a), None).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text);
    }
    let limited_at = Instant::now();
    for uri in ["/v1/transactions", "/v1/summary", "/v1/reconciliation"] {
        let r = send(&s, "GET", uri, Some(&a), None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{uri}: {}", r.text);
        assert_eq!(r.headers["retry-after"], "1");
        assert_eq!(r.json()["error"]["code"], "rate_limited");
    }
    // Another token has its own bucket; the admin is not limited.
    let r = send(&s, "GET", "/v1/transactions", Some(&b), None).await;
    assert_eq!(r.status, StatusCode::OK);
    for _ in 0..20 {
        let r = send(&s, "GET", "/v1/summary", Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // A revoked or unknown token is 401 before any rate limit.
    let (forged, _) = collector::auth::generate_tenant_token().unwrap();
    let r = send(&s, "GET", "/v1/transactions", Some(&forged), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // After the advertised second the bucket has one request again.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(limited_at.elapsed())).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = send(&s, "GET", "/v1/transactions", Some(&a), None).await;
        if r.status == StatusCode::OK {
            assert_eq!(ids(&r.json()), ["a3", "a2", "a1"]);
            break;
        }
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "bucket never refilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = send(&s, "GET", "/v1/transactions", Some(&a), None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn tokens_are_stored_only_as_hashes_and_never_logged_or_returned(pool: PgPool) {
    let _exclusive = LOG_CAPTURE.write().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let s = state(pool.clone()).await;
    seed(&s).await;
    let (acme_id, acme) = create_token(&s, "acme", "finance").await;
    let (_, globex) = create_token(&s, "globex", "ops").await;
    let secrets = |token: &str| {
        let digest = Sha256::digest(token.as_bytes());
        vec![
            token.to_string(),
            token["blt_".len()..].to_string(),
            hex::encode(digest),
            URL_SAFE_NO_PAD.encode(digest),
        ]
    };
    let all_secrets: Vec<String> = secrets(&acme).into_iter().chain(secrets(&globex)).collect();
    assert!(acme.starts_with("blt_") && acme.len() == 47, "{acme}");

    // Use the tokens every way, including failures, to give them every chance to leak.
    let mut responses = Vec::new();
    for (token, uri) in [
        (&acme, "/v1/transactions"),
        (&acme, "/v1/transactions?format=csv"),
        (&acme, "/v1/summary?group_by=tenant"),
        (&acme, "/v1/reconciliation"),
        (&acme, "/v1/transactions?tenant_id=globex"),
        (&globex, "/v1/tokens"),
        (&acme, "/v1/transactions?status=bogus"),
    ] {
        responses.push(send(&s, "GET", uri, Some(token), None).await);
    }
    let list = send(&s, "GET", "/v1/tokens", Some(ADMIN), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let listed = list.json();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    let mut keys: Vec<&String> = tokens[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["created_at", "id", "name", "revoked_at", "tenant_id"]
    );
    assert_eq!(tokens[0]["id"], acme_id);
    let acme_only = get_ok(&s, "/v1/tokens?tenant_id=acme", ADMIN).await;
    assert_eq!(acme_only["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(acme_only["tokens"][0]["name"], "finance");
    responses.push(list);
    responses.push(
        send(
            &s,
            "DELETE",
            &format!("/v1/tokens/{acme_id}"),
            Some(ADMIN),
            None,
        )
        .await,
    );
    responses.push(send(&s, "GET", "/v1/transactions", Some(&acme), None).await);
    for r in &responses {
        for secret in &all_secrets {
            assert!(
                !r.text.contains(secret.as_str()),
                "a response holds a secret: {}",
                r.text
            );
            for (name, value) in &r.headers {
                assert!(
                    !value.to_str().unwrap_or("").contains(secret.as_str()),
                    "header {name} holds a secret"
                );
            }
        }
    }

    // The table holds each token's SHA-256 and nothing else derived from it.
    let rows: Vec<(String, Vec<u8>, String)> = sqlx::query_as(
        "SELECT tenant_id, token_hash, row_to_json(api_tokens)::text FROM api_tokens ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1, Sha256::digest(acme.as_bytes()).to_vec());
    assert_eq!(rows[1].1, Sha256::digest(globex.as_bytes()).to_vec());
    for (_, _, text) in &rows {
        assert!(!text.contains(&acme["blt_".len()..]) && !text.contains(&globex["blt_".len()..]));
    }

    // Bad requests to create one.
    for body in [
        json!({"tenant_id": "", "name": "x"}),
        json!({"tenant_id": "acme"}),
        json!({"tenant_id": "acme", "name": "x", "scopes": ["admin"]}),
        json!({"tenant_id": "a\u{7}b", "name": "x"}),
        json!({"tenant_id": "x".repeat(257), "name": "x"}),
    ] {
        let r = send(&s, "POST", "/v1/tokens", Some(ADMIN), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2);

    // The logs saw the tokens' lives (so capture works) but never a secret.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("api token created"), "{text}");
    assert!(text.contains("api token revoked"), "{text}");
    for secret in &all_secrets {
        assert!(!text.contains(secret.as_str()), "the logs hold a secret");
    }
}

/// Every cursor of acme's listing, one row a page, for `token`.
async fn cursors(s: &AppState, uri: &str, token: &str) -> (Vec<String>, Vec<String>) {
    let (mut rows, mut seen) = (Vec::new(), Vec::new());
    let mut next: Option<String> = None;
    loop {
        let page = match &next {
            Some(c) => format!("{uri}&cursor={c}"),
            None => uri.to_string(),
        };
        let body = get_ok(s, &page, token).await;
        rows.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(c) => {
                seen.push(c.to_string());
                next = Some(c.to_string());
            }
            None => return (rows, seen),
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn cursors_reveal_nothing_of_other_tenants_and_open_only_in_their_own_listing(pool: PgPool) {
    let _shared = LOG_CAPTURE.read().await;
    let s = state(pool).await;
    seed(&s).await;
    let (_, acme) = create_token(&s, "acme", "finance").await;
    let (_, acme_other) = create_token(&s, "acme", "ops").await;
    let (_, globex) = create_token(&s, "globex", "finance").await;
    let uri = "/v1/transactions?limit=1";
    let (rows, before) = cursors(&s, uri, &acme).await;
    assert_eq!(rows, ["a3", "a2", "a1"]);
    assert_eq!(before.len(), 3);

    // Globex spends a lot, at times between acme's rows and after them:
    // acme's cursors do not move by a byte.
    let busy: Vec<Value> = (0..200)
        .map(|i| {
            record(
                &format!("g-busy-{i}"),
                "globex",
                "gpt-4o-mini",
                T0 + 1 + i * 10,
            )
        })
        .collect();
    ingest(&s, busy).await;
    let (rows_after, after) = cursors(&s, uri, &acme).await;
    assert_eq!(rows_after, rows);
    assert_eq!(after, before, "acme's cursors vary with globex's traffic");
    // ... and they hold nothing but acme's own row positions.
    for c in &before {
        let raw = URL_SAFE_NO_PAD.decode(c).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            !text.contains("globex") && !text.contains("g-busy"),
            "{text}"
        );
    }

    // A cursor opens only in its own listing: not for another token of the
    // same tenant, another tenant, the admin, or other filters.
    let c = &before[0];
    let refused = [
        (format!("{uri}&cursor={c}"), acme_other.as_str()),
        (format!("{uri}&cursor={c}"), globex.as_str()),
        (format!("{uri}&cursor={c}&tenant_id=acme"), ADMIN),
        (format!("{uri}&cursor={c}&model=gpt-4o"), acme.as_str()),
        (format!("{uri}&cursor={c}&{DAY}"), acme.as_str()),
        (
            format!("{uri}&cursor={c}&api_key_id=key-acme"),
            acme.as_str(),
        ),
    ];
    for (page, token) in refused {
        let r = send(&s, "GET", &page, Some(token), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{page}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], "bad_request", "{page}");
        assert!(r.text.contains("restart the listing"), "{}", r.text);
    }
    // The same listing with another limit or as CSV keeps going.
    let body = get_ok(&s, &format!("/v1/transactions?limit=5&cursor={c}"), &acme).await;
    assert_eq!(ids(&body), ["a2", "a1"]);
    let r = send(
        &s,
        "GET",
        &format!("/v1/transactions?format=csv&limit=1&cursor={c}"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.lines().nth(1).unwrap().starts_with("a2,acme,"),
        "{}",
        r.text
    );

    // Two replicas each load the stored key (the first to ask stores it):
    // a cursor of one opens on the other.
    let one = s
        .clone()
        .with_cursor_key(collector::db::stored_cursor_key(&s.pool).await.unwrap());
    let other = s
        .clone()
        .with_cursor_key(collector::db::stored_cursor_key(&s.pool).await.unwrap());
    assert_eq!(one.cursor_key, other.cursor_key);
    let first = get_ok(&one, uri, &acme).await;
    let c = first["next_cursor"].as_str().unwrap();
    let body = get_ok(&other, &format!("{uri}&cursor={c}"), &acme).await;
    assert_eq!(ids(&body), ["a2"]);
    // The admin's listing across tenants pages in (time, tenant, request id)
    // order, the same whatever the page size.
    let (all, _) = cursors(&s, "/v1/transactions?limit=50", ADMIN).await;
    assert_eq!(all.len(), 205);
    let (paged, _) = cursors(&s, "/v1/transactions?limit=7", ADMIN).await;
    assert_eq!(paged, all);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tenant_sees_no_global_row_ids_and_the_same_answer_for_unknown_and_foreign_names(
    pool: PgPool,
) {
    let _shared = LOG_CAPTURE.read().await;
    let s = state(pool).await;
    seed(&s).await;
    let (_, acme) = create_token(&s, "acme", "finance").await;
    for tenant in ["globex", "acme", "globex"] {
        let r = send(
            &s,
            "POST",
            "/v1/budgets",
            Some(ADMIN),
            Some(json!({"tenant_id": tenant, "limit": "5", "currency": "USD", "period": "month"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = send(
            &s,
            "POST",
            "/v1/credits",
            Some(ADMIN),
            Some(json!({"tenant_id": tenant, "amount": "1", "currency": "USD", "reason": "x"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    // The admin sees the row ids (it uses them) ...
    let admin = get_ok(&s, "/v1/budgets?tenant_id=acme", ADMIN).await;
    assert_eq!(admin["budgets"][0]["id"], 2, "{admin}");
    // ... the tenant sees its rows without them: id 2 would say another
    // tenant created a budget first.
    for (uri, list) in [
        ("/v1/budgets", "budgets"),
        ("/v1/credits?tenant_id=acme", "credits"),
        ("/v1/alerts", "alerts"),
    ] {
        let body = get_ok(&s, uri, &acme).await;
        for item in body[list].as_array().unwrap() {
            assert!(
                item.get("id").is_none() && item.get("budget_id").is_none(),
                "{uri}: {item}"
            );
            assert_eq!(item["tenant_id"], "acme", "{uri}: {item}");
        }
    }
    assert_eq!(
        get_ok(&s, "/v1/budgets", &acme).await["budgets"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Another tenant's name and a name nobody uses: the same 403, byte for byte.
    for path in [
        "/v1/transactions",
        "/v1/summary",
        "/v1/invoices?period=2025-11",
        "/v1/balance",
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (foreign, unknown) = (
            send(
                &s,
                "GET",
                &format!("{path}{sep}tenant_id=globex"),
                Some(&acme),
                None,
            )
            .await,
            send(
                &s,
                "GET",
                &format!("{path}{sep}tenant_id=no-such-tenant"),
                Some(&acme),
                None,
            )
            .await,
        );
        assert_eq!(foreign.status, unknown.status, "{path}");
        assert_eq!(foreign.text, unknown.text, "{path}");
    }
    // Another tenant's request id or invoice number against one nobody
    // has: no endpoint takes them from a tenant, and the refusal is the
    // same either way (g1 is globex's request; globex's first invoice
    // number is computable, its series being a hash of its id).
    for (name, theirs, nobodys) in [
        ("request_id", "g1", "no-such-request"),
        (
            "number",
            "INV-2025-5BC1A08D28-000001",
            "INV-2025-000000000-000009",
        ),
    ] {
        for path in [
            "/v1/transactions",
            "/v1/invoices?period=2025-11",
            "/v1/summary",
        ] {
            let sep = if path.contains('?') { '&' } else { '?' };
            let a = send(
                &s,
                "GET",
                &format!("{path}{sep}{name}={theirs}"),
                Some(&acme),
                None,
            )
            .await;
            let b = send(
                &s,
                "GET",
                &format!("{path}{sep}{name}={nobodys}"),
                Some(&acme),
                None,
            )
            .await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{path} {name}: {}",
                a.text
            );
            assert_eq!(
                a.text.replace(theirs, "X"),
                b.text.replace(nobodys, "X"),
                "{path} {name}"
            );
            assert!(!a.text.contains("globex"), "{}", a.text);
        }
    }
}
