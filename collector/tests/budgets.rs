//! Budgets, prepaid credits and the deny list: against the real PostgreSQL.
//! gpt-4o-mini records from `common::record` cost exactly $0.000345 each.

mod common;

use std::str::FromStr;

use axum::http::StatusCode;
use chrono::{Duration, Utc};
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

const T0: i64 = 1_763_978_400_000; // 2025-11-24T10:00:00Z

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

async fn deny(s: &collector::AppState) -> Vec<Value> {
    let (status, body) = call(s, "GET", "/v1/deny", Some(INGEST), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["generated_at"].is_string(), "{body}");
    body["entries"].as_array().unwrap().clone()
}

async fn budgets_of(s: &collector::AppState, tenant: &str) -> Vec<Value> {
    let (status, body) = call(
        s,
        "GET",
        &format!("/v1/budgets?tenant_id={tenant}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["budgets"].as_array().unwrap().clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_hard_total_budget_enters_the_deny_list_when_spent_reaches_the_limit(pool: PgPool) {
    let s = state(pool).await;
    let (status, created) = call(
        &s,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "acme", "limit": "0.001", "currency": "USD",
            "period": "total", "hard": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["limit"], "0.001");
    assert_eq!(created["alert_thresholds"], json!([50, 80, 100]));
    assert_eq!(created["spent"], "0");
    assert_eq!(created["resets_at"], Value::Null);

    ingest(
        &s,
        vec![
            record("r1", "acme", "gpt-4o-mini", T0),
            record("r2", "acme", "gpt-4o-mini", T0),
            // Another tenant's spend never counts.
            record("o1", "other", "gpt-4o-mini", T0),
        ],
    )
    .await;
    let b = &budgets_of(&s, "acme").await[0];
    assert_eq!(dec(&b["spent"]), d("0.00069"));
    assert_eq!(dec(&b["remaining"]), d("0.00031"));
    assert_eq!(dec(&b["percent_used"]), d("69"));
    assert_eq!(b["exceeded"], false);
    assert!(deny(&s).await.is_empty());

    // The third request crosses: 0.001035 >= 0.001.
    ingest(&s, vec![record("r3", "acme", "gpt-4o-mini", T0)]).await;
    let entries = deny(&s).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["tenant_id"], "acme");
    assert_eq!(e["reason"], "budget_exceeded");
    assert_eq!(e["budget_id"], id);
    assert_eq!(e["limit"], "0.001");
    assert_eq!(e["spent"], "0.001035");
    assert_eq!(e["currency"], "USD");
    assert_eq!(e["resets_at"], Value::Null);
    assert!(e.get("api_key_id").is_none());
    let b = &budgets_of(&s, "acme").await[0];
    assert_eq!(b["remaining"], "0");
    assert_eq!(b["exceeded"], true);

    // Raising the limit lifts the block; a soft budget never blocks.
    let (status, patched) = call(
        &s,
        "PATCH",
        &format!("/v1/budgets/{id}"),
        Some(ADMIN),
        Some(json!({"limit": "0.01"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["limit"], "0.01");
    assert!(deny(&s).await.is_empty());
    call(
        &s,
        "PATCH",
        &format!("/v1/budgets/{id}"),
        Some(ADMIN),
        Some(json!({"limit": "0.001", "hard": false})),
    )
    .await;
    assert!(deny(&s).await.is_empty(), "a soft budget must not block");

    let (status, _) = call(
        &s,
        "DELETE",
        &format!("/v1/budgets/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(budgets_of(&s, "acme").await.is_empty());
    let (status, _) = call(
        &s,
        "DELETE",
        &format!("/v1/budgets/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_daily_key_budget_counts_only_its_key_and_today(pool: PgPool) {
    let s = state(pool).await;
    let (status, created) = call(
        &s,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "acme", "api_key_id": "key-acme", "limit": 1,
            "currency": "USD", "period": "day", "alert_thresholds": [80, 50, 80]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["hard"], true, "hard is the default");
    assert_eq!(created["alert_thresholds"], json!([50, 80]));
    let now = now_ms();
    let mut other_key = record("k2", "acme", "gpt-4o-mini", now);
    other_key["api_key_id"] = json!("key-other");
    ingest(
        &s,
        vec![
            record("today-1", "acme", "gpt-4o-mini", now),
            record("today-2", "acme", "gpt-4o-mini", now),
            other_key,
            record("two-days-ago", "acme", "gpt-4o-mini", now - 2 * 86_400_000),
        ],
    )
    .await;
    let b = &budgets_of(&s, "acme").await[0];
    assert_eq!(dec(&b["spent"]), d("0.00069"));
    assert_eq!(dec(&b["remaining"]), d("0.99931"));
    let today = Utc::now().date_naive();
    let midnight = today.and_hms_opt(0, 0, 0).unwrap().and_utc();
    assert_eq!(
        b["period_start"].as_str().unwrap(),
        json!(midnight).as_str().unwrap()
    );
    assert_eq!(
        b["resets_at"].as_str().unwrap(),
        json!(midnight + Duration::days(1)).as_str().unwrap()
    );

    // Over the limit: the entry names the key and when it resets.
    call(
        &s,
        "PATCH",
        &format!("/v1/budgets/{}", created["id"]),
        Some(ADMIN),
        Some(json!({"limit": "0.0005"})),
    )
    .await;
    let entries = deny(&s).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["api_key_id"], "key-acme");
    assert_eq!(entries[0]["spent"], "0.00069");
    assert_eq!(
        entries[0]["resets_at_ms"].as_i64().unwrap(),
        (midnight + Duration::days(1)).timestamp_millis()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_prepaid_tenant_is_denied_at_zero_and_a_top_up_lifts_it(pool: PgPool) {
    let s = state(pool.clone()).await;
    // Spend before the account opens is not charged against it.
    ingest(&s, vec![record("old", "pre", "gpt-4o-mini", T0)]).await;
    let (status, body) = call(&s, "GET", "/v1/balance?tenant_id=pre", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["prepaid"], false);
    assert_eq!(body["balance"], Value::Null);

    let (status, body) = call(
        &s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "pre", "amount": "0.0005", "currency": "USD",
            "reason": "trial"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["credit"]["amount"], "0.0005");
    assert_eq!(body["credit"]["created_by"], "admin");
    assert_eq!(body["balance"]["balance"], "0.0005");

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ingest(&s, vec![record("p1", "pre", "gpt-4o-mini", now_ms())]).await;
    let (_, body) = call(&s, "GET", "/v1/balance?tenant_id=pre", Some(ADMIN), None).await;
    assert_eq!(dec(&body["balance"]), d("0.000155"));
    assert_eq!(body["exhausted"], false);
    assert!(deny(&s).await.is_empty());

    ingest(&s, vec![record("p2", "pre", "gpt-4o-mini", now_ms())]).await;
    let (_, body) = call(&s, "GET", "/v1/balance?tenant_id=pre", Some(ADMIN), None).await;
    assert_eq!(dec(&body["balance"]), d("-0.00019"));
    assert_eq!(dec(&body["spent"]), d("0.00069"));
    let entries = deny(&s).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["tenant_id"], "pre");
    assert_eq!(entries[0]["reason"], "balance_exhausted");
    assert_eq!(entries[0]["limit"], "0.0005");
    assert_eq!(entries[0]["spent"], "0.00069");
    assert_eq!(entries[0]["resets_at"], Value::Null);

    // Top-up: balance 0.00081, unblocked. A debit takes it back to zero: blocked.
    let (status, body) = call(
        &s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "pre", "amount": "0.001", "currency": "USD",
            "reason": "top-up"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(dec(&body["balance"]["balance"]), d("0.00081"));
    assert!(deny(&s).await.is_empty());
    let (status, body) = call(
        &s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "pre", "amount": "-0.00081", "currency": "USD",
            "reason": "refund of unused trial"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(dec(&body["balance"]["balance"]), Decimal::ZERO);
    assert_eq!(deny(&s).await.len(), 1, "a zero balance is a hard stop");

    let (_, body) = call(&s, "GET", "/v1/credits?tenant_id=pre", Some(ADMIN), None).await;
    let amounts: Vec<&str> = body["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["0.0005", "0.001", "-0.00081"]);

    // Another currency on the same account is refused; the ledger is append-only.
    let (status, body) = call(
        &s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(json!({"tenant_id": "pre", "amount": "5", "currency": "EUR", "reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(sqlx::query("UPDATE credits SET amount = 100")
        .execute(&pool)
        .await
        .unwrap_err()
        .to_string()
        .contains("append-only"));
    assert!(sqlx::query("DELETE FROM credits")
        .execute(&pool)
        .await
        .is_err());
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_budgets_and_credits_are_refused(pool: PgPool) {
    let s = state(pool).await;
    for (body, needle) in [
        (
            json!({"tenant_id": "a", "limit": 25.5, "currency": "USD", "period": "day"}),
            "not a float",
        ),
        (
            json!({"tenant_id": "a", "limit": "0", "currency": "USD", "period": "day"}),
            "positive",
        ),
        (
            json!({"tenant_id": "a", "limit": "1", "currency": "usd", "period": "day"}),
            "currency",
        ),
        (
            json!({"tenant_id": "a", "limit": "1", "currency": "USD", "period": "year"}),
            "period",
        ),
        (
            json!({"tenant_id": "a", "model": "gpt-4o", "limit": "1", "currency": "USD",
                "period": "day", "hard": true}),
            "soft",
        ),
        (
            json!({"tenant_id": "a", "limit": "1", "currency": "USD", "period": "day",
                "alert_thresholds": [0]}),
            "alert_thresholds",
        ),
        (
            json!({"tenant_id": "a", "limit": "1", "currency": "USD", "period": "day",
                "webhook_url": "ftp://x"}),
            "webhook_url",
        ),
    ] {
        let (status, resp) = call(&s, "POST", "/v1/budgets", Some(ADMIN), Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert!(
            resp["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {resp}"
        );
    }
    let (status, resp) = call(
        &s,
        "POST",
        "/v1/credits",
        Some(ADMIN),
        Some(json!({"tenant_id": "a", "amount": "0", "currency": "USD", "reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    let (status, _) = call(
        &s,
        "PATCH",
        "/v1/budgets/999",
        Some(ADMIN),
        Some(json!({"limit": "1"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn only_the_right_tokens_reach_each_endpoint(pool: PgPool) {
    let s = state(pool).await;
    let new_budget = json!({"tenant_id": "acme", "limit": "1", "currency": "USD", "period": "day"});
    // The deny list is for the filter (ingest token) only.
    assert_eq!(
        call(&s, "GET", "/v1/deny", Some(ADMIN), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&s, "GET", "/v1/deny", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Budgets and credits are admin business.
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/budgets",
            Some(INGEST),
            Some(new_budget.clone())
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = call(
        &s,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(new_budget.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(
        &s,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": "acme", "name": "reader"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let tenant = body["token"].as_str().unwrap().to_string();
    // A tenant token reads its own budgets and balance, nobody else's, and writes nothing.
    let (status, body) = call(&s, "GET", "/v1/budgets", Some(&tenant), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["budgets"].as_array().unwrap().len(), 1);
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/budgets?tenant_id=globex",
            Some(&tenant),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&s, "GET", "/v1/balance?tenant_id=acme", Some(&tenant), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&s, "POST", "/v1/budgets", Some(&tenant), Some(new_budget))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/credits",
            Some(&tenant),
            Some(json!({"tenant_id": "acme", "amount": "1", "currency": "USD", "reason": "x"}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}
