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
    let now = s.clock.now().timestamp_millis();
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
    let today = s.clock.now().date_naive();
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

    // Usage a second after the account opened (records carry milliseconds).
    s.clock.advance(Duration::seconds(1));
    ingest(
        &s,
        vec![record(
            "p1",
            "pre",
            "gpt-4o-mini",
            s.clock.now().timestamp_millis(),
        )],
    )
    .await;
    let (_, body) = call(&s, "GET", "/v1/balance?tenant_id=pre", Some(ADMIN), None).await;
    assert_eq!(dec(&body["balance"]), d("0.000155"));
    assert_eq!(body["exhausted"], false);
    assert!(deny(&s).await.is_empty());

    ingest(
        &s,
        vec![record(
            "p2",
            "pre",
            "gpt-4o-mini",
            s.clock.now().timestamp_millis(),
        )],
    )
    .await;
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

/// Local midnight `days` after the day containing `now` in `tz` (the zones
/// used here never skip midnight).
fn local_midnight(
    now: chrono::DateTime<Utc>,
    tz: chrono_tz::Tz,
    days: i64,
) -> chrono::DateTime<Utc> {
    use chrono::TimeZone;
    let day = now.with_timezone(&tz).date_naive() + Duration::days(days);
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn at(v: &Value) -> chrono::DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_budget_in_its_own_time_zone_counts_only_its_local_period(pool: PgPool) {
    let s = state(pool).await;
    let now = s.clock.now();
    let tokyo = chrono_tz::Asia::Tokyo;
    let (status, local) = call(
        &s,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "acme", "limit": "0.0005", "currency": "USD",
            "period": "day", "time_zone": "Asia/Tokyo"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{local}");
    assert_eq!(local["time_zone"], "Asia/Tokyo");
    assert_eq!(local["period_time_zone"], "Asia/Tokyo");
    let start = local_midnight(now, tokyo, 0);
    assert_eq!(at(&local["period_start"]), start);
    assert_eq!(at(&local["resets_at"]), local_midnight(now, tokyo, 1));
    let (status, utc) = call(
        &s,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "acme", "limit": "1", "currency": "USD", "period": "day",
            "hard": false}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{utc}");
    assert_eq!(utc["time_zone"], Value::Null);
    assert_eq!(utc["period_time_zone"], "UTC");

    // A minute before Tokyo's midnight, a minute after, and now.
    let stamps = [
        start - Duration::minutes(1),
        start + Duration::minutes(1),
        now,
    ];
    ingest(
        &s,
        stamps
            .iter()
            .enumerate()
            .map(|(i, t)| {
                record(
                    &format!("tz-{i}"),
                    "acme",
                    "gpt-4o-mini",
                    t.timestamp_millis(),
                )
            })
            .collect(),
    )
    .await;
    let list = budgets_of(&s, "acme").await;
    assert_eq!(dec(&list[0]["spent"]), d("0.00069"), "{}", list[0]);
    assert_eq!(list[0]["exceeded"], true);
    let utc_midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let in_utc_day = stamps.iter().filter(|t| **t >= utc_midnight).count();
    assert_eq!(
        dec(&list[1]["spent"]),
        d("0.000345") * Decimal::from(in_utc_day),
        "{}",
        list[1]
    );
    // The gateway's block lifts at Tokyo's midnight.
    let entries = deny(&s).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["budget_id"], local["id"]);
    assert_eq!(
        entries[0]["resets_at_ms"].as_i64().unwrap(),
        local_midnight(now, tokyo, 1).timestamp_millis()
    );

    // PATCH moves a budget to another zone, and null back to the default.
    let uri = format!("/v1/budgets/{}", utc["id"]);
    let (status, b) = call(
        &s,
        "PATCH",
        &uri,
        Some(ADMIN),
        Some(json!({"time_zone": "America/New_York"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["time_zone"], "America/New_York");
    assert_eq!(
        at(&b["resets_at"]),
        local_midnight(s.clock.now(), chrono_tz::America::New_York, 1)
    );
    let (_, b) = call(
        &s,
        "PATCH",
        &uri,
        Some(ADMIN),
        Some(json!({"time_zone": null})),
    )
    .await;
    assert_eq!(b["time_zone"], Value::Null);
    assert_eq!(b["period_time_zone"], "UTC");

    // Unknown zones are refused, naming the field.
    let message = "time_zone must be an IANA time zone such as \"Europe/Berlin\" or \"UTC\", not \"Mars/Olympus\"";
    let (status, e) = call(
        &s,
        "PATCH",
        &uri,
        Some(ADMIN),
        Some(json!({"time_zone": "Mars/Olympus"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["message"], message);
    let (status, e) = call(
        &s,
        "POST",
        "/v1/budgets",
        Some(ADMIN),
        Some(
            json!({"tenant_id": "acme", "limit": "1", "currency": "USD", "period": "day",
            "time_zone": "Mars/Olympus"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["message"], message);

    // The collector-wide default applies to budgets without their own zone.
    let berlin = s
        .clone()
        .with_budget_zone(collector::budgets::default_zone(Some("Europe/Berlin"), None).unwrap());
    let list = budgets_of(&berlin, "acme").await;
    assert_eq!(list[0]["period_time_zone"], "Asia/Tokyo");
    assert_eq!(list[1]["period_time_zone"], "Europe/Berlin");
    assert_eq!(
        at(&list[1]["resets_at"]),
        local_midnight(s.clock.now(), chrono_tz::Europe::Berlin, 1)
    );
}

/// Runs the collector binary with `env`; it must exit (not serve) within
/// 10 s. Returns its exit status and output.
fn run_collector(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector"));
    cmd.env_remove("BUDGET_TIME_ZONE")
        .env_remove("BUDGET_UTC_OFFSET_MINUTES")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("COLLECTOR_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the collector started with {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

#[test]
fn a_bad_budget_time_zone_or_offset_refuses_to_start() {
    for (env, message) in [
        (
            vec![("BUDGET_TIME_ZONE", "Europe/Berln")],
            "invalid budget time zone configuration: BUDGET_TIME_ZONE must be an IANA time zone such as \"Europe/Berlin\" or \"UTC\", not \"Europe/Berln\"",
        ),
        (
            vec![("BUDGET_UTC_OFFSET_MINUTES", "2h")],
            "BUDGET_UTC_OFFSET_MINUTES must be an integer number of minutes, not \"2h\"",
        ),
        (
            vec![("BUDGET_UTC_OFFSET_MINUTES", "-1200")],
            "BUDGET_UTC_OFFSET_MINUTES must be between -1080 and 1080, not -1200",
        ),
        (
            vec![("BUDGET_TIME_ZONE", "UTC"), ("BUDGET_UTC_OFFSET_MINUTES", "60")],
            "set only one of BUDGET_TIME_ZONE and BUDGET_UTC_OFFSET_MINUTES",
        ),
    ] {
        let (status, out) = run_collector(&env);
        assert_eq!(status.code(), Some(1), "{env:?}: {out}");
        assert!(out.contains(message), "{env:?}: {out}");
    }
}
