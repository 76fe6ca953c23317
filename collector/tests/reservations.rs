//! Budget reservations (`POST /v1/reservations`) and the deny list's watch
//! list, against the real PostgreSQL. gpt-4o-mini costs $0.15 / $0.60 per
//! million input / output tokens, so a reservation of 1000 input and 1000
//! output tokens is estimated at exactly $0.00075, and the records of
//! `common::record` cost $0.000345 each.

mod common;

use std::collections::BTreeSet;
use std::str::FromStr;

use axum::http::StatusCode;
use chrono::Duration;
use collector::price_book::PriceBook;
use collector::{db, AppState};
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// What one bounded reservation of `body` is estimated at.
const ESTIMATE: &str = "0.00075";
/// What one `common::record` costs.
const RECORD: &str = "0.000345";

/// A reservation call: 1000 input tokens and `max_output` output tokens of
/// gpt-4o-mini (None: unbounded).
fn body(request_id: &str, tenant: &str, key: Option<&str>, max_output: Option<u64>) -> Value {
    json!({
        "request_id": request_id, "tenant_id": tenant, "api_key_id": key,
        "provider": "openai", "model": "gpt-4o-mini",
        "max_input_tokens": 1000, "max_output_tokens": max_output,
    })
}

async fn reserve(s: &AppState, body: Value) -> Value {
    let (status, answer) = call(s, "POST", "/v1/reservations", Some(INGEST), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn deny_list(s: &AppState) -> Value {
    let (status, body) = call(s, "GET", "/v1/deny", Some(INGEST), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn budget(s: &AppState, v: Value) -> i64 {
    let (status, created) = call(s, "POST", "/v1/budgets", Some(ADMIN), Some(v)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_i64().unwrap()
}

async fn credit(s: &AppState, tenant: &str, amount: &str) {
    let (status, body) = call(
        s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(
            json!({"tenant_id": tenant, "amount": amount, "currency": "USD", "reason": "prepaid"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A record of `tenant` with key `key`, now.
fn record_now(s: &AppState, request_id: &str, tenant: &str, key: &str) -> Value {
    let mut r = record(
        request_id,
        tenant,
        "gpt-4o-mini",
        s.clock.now().timestamp_millis(),
    );
    r["api_key_id"] = json!(key);
    r
}

/// Another collector replica: its own price book, writer and metrics over
/// the same database, on the same clock.
async fn replica(s: &AppState) -> AppState {
    let other = AppState::new(
        s.pool.clone(),
        PriceBook::empty(),
        Some(INGEST),
        Some(ADMIN),
        1 << 20,
    )
    .with_clock(s.clock.clone());
    other.reload_prices().await.unwrap();
    other
}

/// `n` reservations of `tenant`, all at once, alternating over `replicas`
/// and `keys`; returns the answers.
async fn race(replicas: &[AppState], tenant: &str, keys: &[&str], n: usize) -> Vec<Value> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = replicas[i % replicas.len()].clone();
            let b = body(
                &format!("req-{i}"),
                tenant,
                Some(keys[i % keys.len()]),
                Some(1000),
            );
            tokio::spawn(async move { reserve(&s, b).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

fn admitted(answers: &[Value]) -> Vec<&Value> {
    answers.iter().filter(|a| a["admitted"] == true).collect()
}

fn sum_reserved(answers: &[&Value]) -> Decimal {
    answers.iter().map(|a| dec(&a["reserved"])).sum()
}

/// The keys of one entry of `GET /v1/deny`.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn sixty_four_concurrent_reservations_never_overbook_a_hard_key_budget(pool: PgPool) {
    let s = state(pool).await;
    let id = budget(
        &s,
        json!({"tenant_id": "acme", "api_key_id": "key-a", "limit": "0.02",
            "currency": "USD", "period": "total"}),
    )
    .await;
    ingest(&s, vec![record_now(&s, "before", "acme", "key-a")]).await;
    let spent = d(RECORD);

    let answers = race(std::slice::from_ref(&s), "acme", &["key-a"], 64).await;
    let ok = admitted(&answers);
    // floor((0.02 - 0.000345) / 0.00075) = 26
    let expected = ((d("0.02") - spent) / d(ESTIMATE)).floor();
    assert_eq!(Decimal::from(ok.len()), expected, "{answers:?}");
    assert_eq!(ok.len(), 26);
    assert!(sum_reserved(&ok) <= d("0.02") - spent);
    for a in &ok {
        assert_eq!(a["reserved"], ESTIMATE, "{a}");
        assert_eq!(a["currency"], "USD");
        assert_eq!(a["rule"], "fits");
        assert_eq!(
            a["expires_at_ms"].as_i64().unwrap(),
            (s.clock.now() + Duration::seconds(600)).timestamp_millis(),
            "RESERVATION_TTL_SECS defaults to 600"
        );
    }
    let stored = db::active_reservations(&s.pool, "acme", s.clock.now())
        .await
        .unwrap();
    assert_eq!(stored.len(), 26);
    assert!(stored
        .iter()
        .all(|r| r.bounded && r.api_key_id.as_deref() == Some("key-a")));

    // Every refusal names the key budget, counting what is reserved.
    let refused: Vec<&Value> = answers.iter().filter(|a| a["admitted"] == false).collect();
    assert_eq!(refused.len(), 64 - 26);
    let counted = spent + d(ESTIMATE) * Decimal::from(26);
    for a in &refused {
        assert_eq!(a["estimate"], ESTIMATE, "{a}");
        let e = &a["entry"];
        assert_eq!(e["tenant_id"], "acme");
        assert_eq!(e["api_key_id"], "key-a");
        assert_eq!(e["reason"], "budget_exceeded");
        assert_eq!(e["budget_id"], id);
        assert_eq!(e["limit"], "0.02");
        assert_eq!(e["currency"], "USD");
        assert_eq!(e["resets_at"], Value::Null);
        assert_eq!(e["resets_at_ms"], Value::Null);
    }
    // Nothing is refused before all 26 are in (with 25, 0.000905 remains).
    assert!(refused.iter().all(|a| dec(&a["entry"]["spent"]) == counted));

    // Not blocked (0.019845 < 0.02) but watched, with the reservations counted.
    let list = deny_list(&s).await;
    assert_eq!(list["entries"], json!([]), "{list}");
    assert_eq!(
        list["watch"],
        json!([{"tenant_id": "acme", "api_key_id": "key-a"}])
    );
    // A record that lands past the limit: on the deny list, with the same
    // shape as a refusal's entry; reservations count in its spent.
    ingest(&s, vec![record_now(&s, "after", "acme", "key-a")]).await;
    let list = deny_list(&s).await;
    let entry = &list["entries"][0];
    assert_eq!(dec(&entry["spent"]), counted + d(RECORD), "{list}");
    assert_eq!(keys(entry), keys(&refused[0]["entry"]));
    assert_eq!(list["watch"], json!([]), "a blocked scope is not watched");
}

#[sqlx::test(migrations = "../migrations")]
async fn two_replicas_racing_share_one_tenant_budget(pool: PgPool) {
    let a = state(pool).await;
    let b = replica(&a).await;
    // Tenant-wide: both keys' reservations count against it.
    budget(
        &a,
        json!({"tenant_id": "acme", "limit": "0.02", "currency": "USD", "period": "total"}),
    )
    .await;
    ingest(&b, vec![record_now(&a, "before", "acme", "key-b")]).await;
    let spent = d(RECORD);

    let answers = race(&[a.clone(), b.clone()], "acme", &["key-a", "key-b"], 64).await;
    let ok = admitted(&answers);
    assert_eq!(ok.len(), 26, "{answers:?}");
    assert!(sum_reserved(&ok) <= d("0.02") - spent);
    // Both replicas admitted some.
    for (i, replica) in [&a, &b].iter().enumerate() {
        let got = replica
            .metrics
            .reservations_fits
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(got > 0, "replica {i} admitted none");
    }
    let refusal = answers.iter().find(|v| v["admitted"] == false).unwrap();
    assert!(
        refusal["entry"].get("api_key_id").is_none(),
        "a tenant-wide budget refuses: {refusal}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn only_one_unbounded_request_goes_over_at_a_time(pool: PgPool) {
    let s = state(pool).await;
    budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.002", "currency": "USD", "period": "total"}),
    )
    .await;
    ingest(&s, vec![record_now(&s, "before", "acme", "key-a")]).await;

    // 1000 in + 4096 out (the default for no output limit) = 0.0026076 >
    // 0.001655 remaining: admitted as the one request over.
    let first = reserve(&s, body("u1", "acme", Some("key-a"), None)).await;
    assert_eq!(first["admitted"], true, "{first}");
    assert_eq!(first["rule"], "one_over");
    assert_eq!(first["reserved"], "0.0026076");
    // A repeated call does not reserve twice.
    let again = reserve(&s, body("u1", "acme", Some("key-a"), None)).await;
    assert_eq!(again, first);
    let stored = db::stored_reservations(&s.pool, "acme").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].bounded);

    // Another unbounded one (another key, same tenant-wide budget) waits.
    let second = reserve(&s, body("u2", "acme", Some("key-b"), None)).await;
    assert_eq!(second["admitted"], false, "{second}");
    assert_eq!(second["estimate"], "0.0026076");
    assert_eq!(dec(&second["entry"]["spent"]), d("0.0029526"));
    // Nothing fits either.
    let small = reserve(&s, body("b1", "acme", Some("key-b"), Some(10))).await;
    assert_eq!(small["admitted"], false, "{small}");

    // u1's record lands: its reservation is gone, the next one goes.
    ingest(&s, vec![record_now(&s, "u1", "acme", "key-a")]).await;
    assert!(db::stored_reservations(&s.pool, "acme")
        .await
        .unwrap()
        .is_empty());
    let second = reserve(&s, body("u2", "acme", Some("key-b"), None)).await;
    assert_eq!(second["admitted"], true, "{second}");
    assert_eq!(second["rule"], "one_over");

    // Its record lands too: 0.001035 spent, 0.000965 left, room for a
    // bounded request of 0.00075.
    ingest(&s, vec![record_now(&s, "u2", "acme", "key-b")]).await;
    let fits = reserve(&s, body("b2", "acme", Some("key-b"), Some(1000))).await;
    assert_eq!(fits["rule"], "fits", "{fits}");

    // An unbounded request whose estimate fits is "fits", still one at a time.
    budget(
        &s,
        json!({"tenant_id": "roomy", "limit": "1", "currency": "USD", "period": "total"}),
    )
    .await;
    let u3 = reserve(&s, body("u3", "roomy", Some("k"), None)).await;
    assert_eq!(u3["rule"], "fits", "{u3}");
    let u4 = reserve(&s, body("u4", "roomy", Some("k"), None)).await;
    assert_eq!(u4["admitted"], false, "{u4}");
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_reservations_never_take_a_prepaid_balance_below_zero(pool: PgPool) {
    let s = state(pool).await;
    credit(&s, "pre", "0.01").await;
    s.clock.advance(Duration::seconds(1));
    ingest(&s, vec![record_now(&s, "before", "pre", "key-a")]).await;
    let balance = d("0.01") - d(RECORD);

    let b = replica(&s).await;
    let answers = race(&[s.clone(), b], "pre", &["key-a", "key-b", "key-c"], 64).await;
    let ok = admitted(&answers);
    // floor(0.009655 / 0.00075) = 12
    assert_eq!(ok.len(), 12, "{answers:?}");
    assert!(balance - sum_reserved(&ok) >= Decimal::ZERO);
    let refusal = answers.iter().find(|v| v["admitted"] == false).unwrap();
    let e = &refusal["entry"];
    assert_eq!(e["reason"], "balance_exhausted", "{refusal}");
    assert_eq!(e["tenant_id"], "pre");
    assert_eq!(e["limit"], "0.01");
    assert_eq!(e["resets_at"], Value::Null);
    assert!(e.get("budget_id").is_none() && e.get("api_key_id").is_none());
    assert!(dec(&e["spent"]) <= d("0.01"));

    // The account is watched as a whole tenant.
    let list = deny_list(&s).await;
    assert_eq!(list["entries"], json!([]), "{list}");
    assert_eq!(list["watch"], json!([{"tenant_id": "pre"}]));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reservation_is_released_exactly_once_by_its_record_or_expires(pool: PgPool) {
    let s = state(pool).await;
    let id = budget(
        &s,
        json!({"tenant_id": "acme", "api_key_id": "key-a", "limit": "0.01",
            "currency": "USD", "period": "total"}),
    )
    .await;
    let r1 = reserve(&s, body("r1", "acme", Some("key-a"), Some(1000))).await;
    assert_eq!(r1["admitted"], true, "{r1}");

    let rec = record_now(&s, "r1", "acme", "key-a");
    let first = ingest(&s, vec![rec.clone()]).await;
    assert_eq!(first["accepted"], 1);
    assert!(db::stored_reservations(&s.pool, "acme")
        .await
        .unwrap()
        .is_empty());
    // The duplicate finds nothing to release and is not counted again.
    let dup = ingest(&s, vec![rec]).await;
    assert_eq!(dup["duplicates"], 1);
    let (_, budgets) = call(&s, "GET", "/v1/budgets?tenant_id=acme", Some(ADMIN), None).await;
    assert_eq!(dec(&budgets["budgets"][0]["spent"]), d(RECORD));
    let released = |s: &AppState| {
        s.metrics
            .reservations_released
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(released(&s), 1);

    // A duplicate of a record whose reservation was made again (a retried
    // reservation call after the record landed) still releases it.
    reserve(&s, body("r1", "acme", Some("key-a"), Some(1000))).await;
    ingest(&s, vec![record_now(&s, "r1", "acme", "key-a")]).await;
    assert!(db::stored_reservations(&s.pool, "acme")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(released(&s), 2);

    // A short-lived one counts until it expires, then no more.
    let r2 = reserve(
        &s,
        json!({"request_id": "r2", "tenant_id": "acme", "api_key_id": "key-a",
            "provider": "openai", "model": "gpt-4o-mini", "max_input_tokens": 1000,
            "max_output_tokens": 1000, "ttl_ms": 5000}),
    )
    .await;
    assert_eq!(
        r2["expires_at_ms"].as_i64().unwrap(),
        s.clock.now().timestamp_millis() + 5000
    );
    let counted = |list: &Value| dec(&list["entries"][0]["spent"]);
    // Push the budget to its limit with the reservation counted.
    call(
        &s,
        "PATCH",
        &format!("/v1/budgets/{id}"),
        Some(ADMIN),
        Some(json!({"limit": "0.001095"})),
    )
    .await;
    let list = deny_list(&s).await;
    assert_eq!(counted(&list), d("0.001095"), "{list}");
    s.clock.advance(Duration::seconds(6));
    let list = deny_list(&s).await;
    assert_eq!(list["entries"], json!([]), "expired: no longer counted");
    assert!(db::active_reservations(&s.pool, "acme", s.clock.now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db::stored_reservations(&s.pool, "acme")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(collector::reservations::sweep(&s).await.unwrap(), 1);
    assert!(db::stored_reservations(&s.pool, "acme")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(collector::reservations::sweep(&s).await.unwrap(), 0);

    let (status, text) = call_raw(&s, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    for line in [
        "billing_reservations_admitted_total{rule=\"fits\"} 3",
        "billing_reservations_admitted_total{rule=\"one_over\"} 0",
        "billing_reservations_admitted_total{rule=\"not_governed\"} 0",
        "billing_reservations_refused_total 0",
        "billing_reservations_released_total 2",
        "billing_reservations_expired_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expired_reservation_is_replaced_by_a_new_call(pool: PgPool) {
    let s = state(pool).await;
    budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.001", "currency": "USD", "period": "total"}),
    )
    .await;
    let first = reserve(&s, body("r1", "acme", None, Some(1000))).await;
    assert_eq!(first["admitted"], true, "{first}");
    let other = reserve(&s, body("r2", "acme", None, Some(1000))).await;
    assert_eq!(other["admitted"], false, "0.0015 > 0.001: {other}");
    s.clock.advance(Duration::seconds(601));
    let again = reserve(&s, body("r1", "acme", None, Some(1000))).await;
    assert_eq!(again["admitted"], true);
    assert_ne!(again["expires_at_ms"], first["expires_at_ms"], "a new one");
    assert_eq!(
        db::stored_reservations(&s.pool, "acme")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_watch_list_holds_scopes_near_their_limit(pool: PgPool) {
    let s = state(pool).await;
    // One record each: 60 % of 0.000575, 10 % of 0.00345, over 0.0003.
    for (tenant, limit) in [
        ("sixty", "0.000575"),
        ("ten", "0.00345"),
        ("over", "0.0003"),
    ] {
        budget(
            &s,
            json!({"tenant_id": tenant, "limit": limit, "currency": "USD", "period": "total"}),
        )
        .await;
        ingest(&s, vec![record_now(&s, "r", tenant, "k")]).await;
    }
    // A key budget far from its limit, under a watched tenant budget of its own tenant.
    budget(
        &s,
        json!({"tenant_id": "sixty", "api_key_id": "k", "limit": "1", "currency": "USD",
            "period": "total"}),
    )
    .await;
    let list = deny_list(&s).await;
    assert_eq!(list["watch"], json!([{"tenant_id": "sixty"}]), "{list}");
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["tenant_id"], "over");

    // A reservation moves "ten" into the watch list: 0.00345 − 0.000345 −
    // 0.0026076 <= half of its limit.
    reserve(&s, body("u", "ten", Some("k"), None)).await;
    let list = deny_list(&s).await;
    assert_eq!(
        list["watch"],
        json!([{"tenant_id": "sixty"}, {"tenant_id": "ten"}]),
        "{list}"
    );

    // With BUDGET_WATCH_FRACTION=0 only the rate rule is left: "sixty" has
    // 0.00023 left, under 6 × the 0.000345 it spent in the last 10 s, so it
    // stays watched; 11 s later it is not. "ten" stays: its reservation is
    // still in flight (0.0004974 left <= 6 × 0.0026076).
    let strict = s
        .clone()
        .with_reservations(collector::reservations::Settings::parse("0", 600).unwrap());
    let list = deny_list(&strict).await;
    assert!(
        list["watch"]
            .as_array()
            .unwrap()
            .contains(&json!({"tenant_id": "sixty"})),
        "{list}"
    );
    strict.clock.advance(Duration::seconds(11));
    let list = deny_list(&strict).await;
    assert_eq!(list["watch"], json!([{"tenant_id": "ten"}]), "{list}");
}

#[sqlx::test(migrations = "../migrations")]
async fn noticed_requests_count_while_in_flight_and_are_released_by_their_records(pool: PgPool) {
    let s = state(pool).await;
    budget(
        &s,
        json!({"tenant_id": "acme", "api_key_id": "key-a", "limit": "0.01",
            "currency": "USD", "period": "total"}),
    )
    .await;
    budget(
        &s,
        json!({"tenant_id": "soft", "limit": "0.01", "currency": "USD", "period": "total",
            "hard": false}),
    )
    .await;
    // Far from its limit: governed, neither watched nor blocked; a soft
    // budget governs nothing.
    let list = deny_list(&s).await;
    assert_eq!(
        (&list["governed"], &list["watch"], &list["entries"]),
        (
            &json!([{"tenant_id": "acme", "api_key_id": "key-a"}]),
            &json!([]),
            &json!([])
        ),
        "{list}"
    );

    let now_ms = s.clock.now().timestamp_millis();
    let notice = |id: &str, started: i64| {
        let mut n = body(id, "acme", Some("key-a"), Some(1000));
        n["started_at_ms"] = json!(started);
        n
    };
    // r0's record landed before its notice: the notice is not stored.
    ingest(&s, vec![record_now(&s, "r0", "acme", "key-a")]).await;
    let notices: Vec<Value> = (0..3)
        .map(|i| notice(&format!("r{i}"), now_ms))
        .chain([
            json!({"request_id": "bad", "tenant_id": "acme"}),
            notice("no-start", now_ms)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.remove("started_at_ms");
                    Value::Object(o)
                })
                .unwrap(),
        ])
        .collect();
    let (status, answer) = call(
        &s,
        "POST",
        "/v1/reservations/notices",
        Some(INGEST),
        Some(json!({ "notices": notices })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"received": 5, "stored": 2, "rejected": 2}));
    let stored = db::stored_reservations(&s.pool, "acme").await.unwrap();
    assert_eq!(stored.len(), 2);
    for r in &stored {
        assert_eq!((r.rule.as_str(), r.bounded), ("noticed", true));
        assert_eq!(r.amount, d(ESTIMATE));
        assert_eq!(r.api_key_id.as_deref(), Some("key-a"));
    }
    // The same notices again (a retried call) store nothing twice.
    let (_, again) = call(
        &s,
        "POST",
        "/v1/reservations/notices",
        Some(INGEST),
        Some(json!({"notices": [notice("r1", now_ms), notice("r2", now_ms)]})),
    )
    .await;
    assert_eq!(again["stored"], 0, "{again}");

    // In flight they count: 0.01 − 0.000345 − 2 × 0.00075 = 0.008155 is
    // under 6 × (0.000345 + 0.0015), so the key is watched now, and a
    // reservation sees only what is left.
    let list = deny_list(&s).await;
    assert_eq!(
        list["watch"],
        json!([{"tenant_id": "acme", "api_key_id": "key-a"}]),
        "{list}"
    );
    assert_eq!(list["governed"], json!([]), "{list}");
    let (_, budgets) = call(&s, "GET", "/v1/budgets?tenant_id=acme", Some(ADMIN), None).await;
    assert_eq!(
        dec(&budgets["budgets"][0]["spent"]),
        d(RECORD),
        "budgets show spend only"
    );

    // Their records release them, exactly once.
    ingest(
        &s,
        vec![
            record_now(&s, "r1", "acme", "key-a"),
            record_now(&s, "r2", "acme", "key-a"),
        ],
    )
    .await;
    assert!(db::stored_reservations(&s.pool, "acme")
        .await
        .unwrap()
        .is_empty());
    s.clock.advance(Duration::seconds(11));
    let list = deny_list(&s).await;
    assert_eq!(
        list["governed"],
        json!([{"tenant_id": "acme", "api_key_id": "key-a"}]),
        "{list}"
    );

    // An unpriceable one is held at zero as unbounded: it stops a second
    // unbounded request from going over, and expires like any other.
    let mut unknown = notice("r9", s.clock.now().timestamp_millis());
    unknown["model"] = json!("no-such-model");
    unknown["ttl_ms"] = json!(5000);
    let (_, answer) = call(
        &s,
        "POST",
        "/v1/reservations/notices",
        Some(INGEST),
        Some(json!({"notices": [unknown]})),
    )
    .await;
    assert_eq!(answer["stored"], 1, "{answer}");
    let r = &db::stored_reservations(&s.pool, "acme").await.unwrap()[0];
    assert_eq!((r.amount, r.bounded), (Decimal::ZERO, false));
    s.clock.advance(Duration::seconds(6));
    assert_eq!(collector::reservations::sweep(&s).await.unwrap(), 1);

    let (status, text) = call_raw(&s, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "billing_reservations_admitted_total{rule=\"noticed\"} 3"),
        "{text}"
    );
    // Too many in one call, or not a list: a clear 400.
    let (status, _) = call(
        &s,
        "POST",
        "/v1/reservations/notices",
        Some(INGEST),
        Some(json!({"notices": vec![json!({}); 10_001]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &s,
        "POST",
        "/v1/reservations/notices",
        Some(INGEST),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &s,
        "POST",
        "/v1/reservations/notices",
        None,
        Some(json!({"notices": []})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn calls_are_validated_and_ungoverned_requests_reserve_nothing(pool: PgPool) {
    let s = state(pool).await;
    let free = reserve(&s, body("n1", "nobody", Some("k"), Some(100))).await;
    assert_eq!(
        free,
        json!({"admitted": true, "request_id": "n1", "reserved": "0", "currency": "USD",
            "expires_at_ms": (s.clock.now() + Duration::seconds(600)).timestamp_millis(),
            "rule": "not_governed"})
    );
    assert!(db::stored_reservations(&s.pool, "nobody")
        .await
        .unwrap()
        .is_empty());

    // A soft budget, a per-model budget or another key's budget governs nothing.
    for b in [
        json!({"tenant_id": "soft", "limit": "0.0001", "currency": "USD", "period": "total", "hard": false}),
        json!({"tenant_id": "soft", "model": "gpt-4o-mini", "limit": "0.0001", "currency": "USD", "period": "total", "hard": false}),
        json!({"tenant_id": "soft", "api_key_id": "other", "limit": "0.0001", "currency": "USD", "period": "total"}),
    ] {
        budget(&s, b).await;
    }
    let answer = reserve(&s, body("s1", "soft", Some("k"), Some(100))).await;
    assert_eq!(answer["rule"], "not_governed", "{answer}");
    // A budget in another currency never counts usage priced in USD.
    budget(
        &s,
        json!({"tenant_id": "eur", "limit": "0.0001", "currency": "EUR", "period": "total"}),
    )
    .await;
    let answer = reserve(&s, body("e1", "eur", None, Some(100))).await;
    assert_eq!(answer["rule"], "not_governed", "{answer}");

    // An unknown model: estimate 0, unbounded.
    budget(
        &s,
        json!({"tenant_id": "acme", "limit": "1", "currency": "USD", "period": "total"}),
    )
    .await;
    let mut unknown = body("x1", "acme", None, Some(100));
    unknown["model"] = json!("no-such-model");
    let answer = reserve(&s, unknown).await;
    assert_eq!(answer["rule"], "one_over", "{answer}");
    assert_eq!(answer["reserved"], "0");
    let mut no_model = body("x2", "acme", None, Some(100));
    no_model["model"] = Value::Null;
    let answer = reserve(&s, no_model).await;
    assert_eq!(
        answer["admitted"], false,
        "one unbounded at a time: {answer}"
    );
    assert_eq!(answer["estimate"], "0");

    // Tenant agreements price the estimate as they price the ledger.
    let (status, _) = call(
        &s,
        "POST",
        "/v1/tenants/acme/pricing",
        Some(ADMIN),
        Some(json!({"discount": {"percent": "10"}, "effective_from": "2025-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let answer = reserve(&s, body("x3", "acme", None, Some(1000))).await;
    assert_eq!(answer["reserved"], "0.000675", "{answer}");

    // Bad calls.
    for bad in [
        json!({"request_id": "", "tenant_id": "t", "provider": "openai", "max_input_tokens": 1}),
        json!({"request_id": "r", "tenant_id": "t", "provider": "nope", "max_input_tokens": 1}),
        json!({"request_id": "r", "tenant_id": "t", "provider": "openai"}),
        json!({"request_id": "r", "tenant_id": "t", "provider": "openai", "max_input_tokens": -1}),
        json!({"request_id": "r", "tenant_id": "t", "provider": "openai", "max_input_tokens": 1, "ttl_ms": 0}),
        json!({"request_id": "r", "tenant_id": "t", "provider": "openai", "max_input_tokens": 1, "extra": 1}),
        json!({"request_id": "r", "tenant_id": "t", "provider": "openai", "max_input_tokens": 2_000_000_000u64}),
    ] {
        let (status, answer) = call(
            &s,
            "POST",
            "/v1/reservations",
            Some(INGEST),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    // A long ttl is capped at an hour.
    let mut long = body("x4", "nobody", None, Some(1));
    long["ttl_ms"] = json!(86_400_000u64);
    let answer = reserve(&s, long).await;
    assert_eq!(
        answer["expires_at_ms"].as_i64().unwrap(),
        (s.clock.now() + Duration::seconds(3600)).timestamp_millis()
    );
    // The ingest token only.
    let (status, _) = call(
        &s,
        "POST",
        "/v1/reservations",
        Some(ADMIN),
        Some(body("y", "acme", None, Some(1))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn records_landing_while_others_reserve_are_counted_exactly_once(pool: PgPool) {
    let a = state(pool).await;
    let b = replica(&a).await;
    budget(
        &a,
        json!({"tenant_id": "acme", "limit": "0.02", "currency": "USD", "period": "total"}),
    )
    .await;
    // 16 clients over two replicas: reserve, and when admitted, ingest the
    // record (cheaper than its estimate) at once; until refused.
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let s = if c % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut landed = 0u32;
                for i in 0.. {
                    let id = format!("c{c}-{i}");
                    let answer = reserve(&s, body(&id, "acme", Some("k"), Some(1000))).await;
                    if answer["admitted"] != true {
                        break;
                    }
                    ingest(&s, vec![record_now(&s, &id, "acme", "k")]).await;
                    landed += 1;
                }
                landed
            })
        })
        .collect();
    let mut landed = 0;
    for c in clients {
        landed += c.await.unwrap();
    }
    // Nothing is left reserved; every admitted request was billed once.
    assert!(db::stored_reservations(&a.pool, "acme")
        .await
        .unwrap()
        .is_empty());
    let (_, budgets) = call(&a, "GET", "/v1/budgets?tenant_id=acme", Some(ADMIN), None).await;
    let spent = dec(&budgets["budgets"][0]["spent"]);
    assert_eq!(spent, d(RECORD) * Decimal::from(landed));
    assert!(spent <= d("0.02"), "{spent}");
    // The last refusals left less than one estimate: spend got within
    // 0.00075 of the limit, as bounded requests allow.
    assert!(d("0.02") - spent < d(ESTIMATE), "{spent} after {landed}");
}
