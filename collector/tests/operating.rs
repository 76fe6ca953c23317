//! What an operator runs on: budget gauges on `/metrics` equal to
//! `GET /v1/budgets`, the Grafana dashboard's queries against what
//! `/metrics` exports, `GET /v1/forecast` against the forecast method over
//! the ledger's own figures, cache savings, and `projected_to_exceed`
//! alerts carrying the forecast's basis. Real PostgreSQL, the app's clock
//! at `test_now()` (any instant of the ageing pass).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use collector::budgets::{self, Period, Zone};
use collector::forecast::{forecast, DailyTotal, LOOKBACK_DAYS};
use collector::AppState;
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn dec(v: &Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}")))
}

/// One `record()`: 1,000 uncached × 0.15 + 200 cached × 0.075 + 300 out ×
/// 0.60 per million (gpt-4o-mini).
const COST: &str = "0.000345";

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// `/metrics` series: (name, labels, value).
fn series(text: &str) -> Vec<(String, BTreeMap<String, String>, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.to_string())
        })
        .collect()
}

async fn metrics_text(s: &AppState) -> String {
    let (status, bytes) = call_raw(s, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(bytes).unwrap()
}

async fn create_budget(s: &AppState, body: Value) -> Value {
    let (status, v) = call(s, "POST", "/v1/budgets", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

async fn budgets(s: &AppState) -> Vec<Value> {
    let (status, v) = call(s, "GET", "/v1/budgets", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["budgets"].as_array().unwrap().clone()
}

async fn tenant_token(s: &AppState, tenant: &str) -> String {
    let (status, v) = call(
        s,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": tenant, "name": "ops"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// Records of `tenant` a minute or two before now (at least one is inside
/// every period that contains now, unless now is the very start of it).
fn recent(tenant: &str, n: usize, now: DateTime<Utc>) -> Vec<Value> {
    (0..n)
        .map(|i| {
            record(
                &format!("{tenant}-recent-{i}"),
                tenant,
                "gpt-4o-mini",
                (now - Duration::seconds(20 + i as i64)).timestamp_millis(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn budget_gauges_equal_the_budgets_api_and_are_capped_by_tenant(pool: PgPool) {
    let s = state(pool).await;
    s.metrics.usage.set_caps(1, 100);
    let now = s.clock.now();
    create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "0.0012", "currency": "USD", "period": "month"}),
    )
    .await;
    create_budget(
        &s,
        json!({"tenant_id": "acme", "api_key_id": "key-acme", "limit": "0.0007",
            "currency": "USD", "period": "total"}),
    )
    .await;
    create_budget(
        &s,
        json!({"tenant_id": "zeta", "limit": "1", "currency": "USD", "period": "day"}),
    )
    .await;
    ingest(&s, recent("acme", 2, now)).await;
    ingest(&s, recent("zeta", 1, now)).await;

    let listed = budgets(&s).await;
    let text = metrics_text(&s).await;
    let all = series(&text);
    let gauge = |name: &str, id: &Value| -> Option<Decimal> {
        all.iter()
            .find(|(n, l, _)| n == name && l["budget"].parse::<i64>().ok() == id.as_i64())
            .map(|(_, _, v)| d(v))
    };
    let mut checked = 0;
    for b in &listed {
        let (limit, spent) = (dec(&b["limit"]), dec(&b["spent"]));
        if b["tenant_id"] == "zeta" {
            // Beyond METRICS_MAX_TENANTS = 1: no series of its own.
            assert_eq!(gauge("billing_budget_limit", &b["id"]), None, "{text}");
            continue;
        }
        assert_eq!(gauge("billing_budget_limit", &b["id"]), Some(limit));
        assert_eq!(gauge("billing_budget_spent", &b["id"]), Some(spent));
        let ratio = gauge("billing_budget_spent_ratio", &b["id"]).unwrap();
        assert_eq!(ratio, (spent / limit).normalize());
        assert_eq!(
            (ratio * Decimal::ONE_HUNDRED).round_dp(2),
            dec(&b["percent_used"])
        );
        let (_, labels, _) = all
            .iter()
            .find(|(n, l, _)| {
                n == "billing_budget_spent" && l["budget"].parse::<i64>().ok() == b["id"].as_i64()
            })
            .unwrap();
        assert_eq!(labels["tenant"], "acme");
        assert_eq!(labels["period"], b["period"].as_str().unwrap());
        assert_eq!(labels["currency"], "USD");
        assert_eq!(labels["api_key"], b["api_key_id"].as_str().unwrap_or(""));
        assert_eq!(labels["hard"], "true");
        checked += 1;
    }
    assert_eq!(checked, 2);
    // The key's `total` budget holds both records whatever the instant.
    let key_budget = listed
        .iter()
        .find(|b| b["api_key_id"] == "key-acme")
        .unwrap();
    assert_eq!(dec(&key_budget["spent"]), d(COST) * Decimal::TWO);
    assert_eq!(
        gauge("billing_budget_spent_ratio", &key_budget["id"]),
        Some(d("0.00069") / d("0.0007"))
    );
    let one = |name: &str| {
        all.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.clone())
    };
    assert_eq!(one("billing_budgets_unexported").as_deref(), Some("1"));
    assert_eq!(one("billing_budget_metrics_up").as_deref(), Some("1"));
    assert!(!text.contains("tenant=\"zeta\",budget"), "{text}");
}

/// Metric names an expression reads: identifiers that are not functions,
/// keywords, label names (inside `{}` and `by (...)`), durations or
/// Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' | '[' | '"' => {
                let close = match c {
                    '{' => '}',
                    '[' => ']',
                    _ => '"',
                };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_group => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_group = false;
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                // A call, or an aggregation followed by its `by (...)`.
                let rest: String = chars[j..].iter().collect();
                let call = rest.starts_with('(')
                    || rest.starts_with("by ")
                    || rest.starts_with("by(")
                    || rest.starts_with("without");
                match word.as_str() {
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                        skip_group = true
                    }
                    "bool" | "and" | "or" | "unless" | "offset" => {}
                    _ if call => {}
                    _ => {
                        out.insert(word);
                    }
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn exprs(v: &Value, out: &mut Vec<(String, String)>, title: &str) {
    match v {
        Value::Object(m) => {
            let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
            if let Some(Value::String(e)) = m.get("expr") {
                out.push((title.to_string(), e.clone()));
            }
            for x in m.values() {
                exprs(x, out, title);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out, title)),
        _ => {}
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(billing_ingest_seconds_bucket{tenant=~\"$tenant\"}[$__rate_interval]))) / on (x) foo_total * 3600 + time() - max(bar)",
    );
    assert_eq!(
        names,
        ["bar", "billing_ingest_seconds_bucket", "foo_total"]
            .map(String::from)
            .into()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn every_metric_the_grafana_dashboard_reads_is_exported(pool: PgPool) {
    let s = state(pool).await;
    let now = s.clock.now();
    create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "5", "currency": "USD", "period": "month"}),
    )
    .await;
    let mut records = recent("acme", 3, now);
    records.push(record(
        "unpriced-1",
        "acme",
        "no-such-model",
        now.timestamp_millis() - 5_000,
    ));
    ingest(&s, records).await;
    let text = metrics_text(&s).await;
    let exported: BTreeSet<String> = series(&text).into_iter().map(|(n, _, _)| n).collect();

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/llm-billing-dashboard.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found = Vec::new();
    exprs(&dash["panels"], &mut found, "");
    // Every panel but the rows has at least one query.
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "panel {} has no query",
                p["title"]
            );
        }
    }
    // Template variables read metrics too: label_values(metric, label).
    for v in dash["templating"]["list"].as_array().unwrap() {
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.split_once(','))
            .unwrap()
            .0;
        found.push((format!("variable {}", v["name"]), inner.to_string()));
    }
    let mut used = BTreeSet::new();
    for (title, expr) in &found {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no metric in {expr}");
        for n in names {
            assert!(
                exported.contains(&n),
                "panel {title:?} reads {n}, which /metrics does not export:\n{text}"
            );
            used.insert(n);
        }
    }
    for needed in [
        "billing_cost_total",
        "billing_tokens_total",
        "billing_requests_total",
        "billing_budget_spent_ratio",
        "billing_records_accepted_total",
        "billing_ingest_seconds_bucket",
        "billing_rollup_folded_before_seconds",
    ] {
        assert!(used.contains(needed), "the dashboard does not use {needed}");
    }
}

/// The spend of `count` records, each `COST`.
fn spend(count: i64) -> Decimal {
    d(COST) * Decimal::from(count)
}

#[sqlx::test(migrations = "../migrations")]
async fn the_forecast_api_projects_each_currency_from_the_rollups(pool: PgPool) {
    let s = state(pool).await;
    let now = s.clock.now();
    let today = now.date_naive();
    let month = budgets::window(Period::Month, now, Zone::default());
    let (start, end) = (month.start, month.end.unwrap());
    // A EUR-priced model: its money stays apart.
    let (status, v) = call(
        &s,
        "PUT",
        "/v1/prices/eu-llm",
        Some(ADMIN),
        Some(json!({"input": "1.00", "output": "2.00", "currency": "EUR",
            "effective_from": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert!(status.is_success(), "{v}");

    // Four weeks of history: 4 requests on weekdays, 1 at weekends, at
    // 01:00 + i minutes; another tenant spends too.
    let mut records = Vec::new();
    let mut history = Vec::new();
    let mut in_month = 0i64;
    for k in 1..=LOOKBACK_DAYS {
        let day = today - Duration::days(k);
        let n = if day.weekday().num_days_from_monday() >= 5 {
            1
        } else {
            4
        };
        for i in 0..n {
            let at = midnight(day) + Duration::hours(1) + Duration::minutes(i);
            records.push(record(
                &format!("h-{k}-{i}"),
                "acme",
                "gpt-4o-mini",
                at.timestamp_millis(),
            ));
            if at >= start {
                in_month += 1;
            }
        }
        history.push(DailyTotal {
            day,
            amount: spend(n),
        });
        records.push(record(
            &format!("o-{k}"),
            "other",
            "gpt-4o-mini",
            (midnight(day) + Duration::hours(2)).timestamp_millis(),
        ));
    }
    // Today so far (when today has begun).
    let today_n = if now - midnight(today) > Duration::minutes(5) {
        2
    } else {
        0
    };
    for i in 0..today_n {
        records.push(record(
            &format!("t-{i}"),
            "acme",
            "gpt-4o-mini",
            (midnight(today) + Duration::minutes(i + 1)).timestamp_millis(),
        ));
    }
    if midnight(today) >= start {
        in_month += today_n;
    }
    // One EUR request three days ago: 1,200 in (200 cached) at 1.00, 300 out at 2.00.
    let eur_day = today - Duration::days(3);
    let eur_at = midnight(eur_day) + Duration::hours(3);
    let mut eur = record("eur-1", "acme", "eu-llm", eur_at.timestamp_millis());
    eur["provider"] = json!("openai");
    records.push(eur);
    for chunk in records.chunks(200) {
        ingest(&s, chunk.to_vec()).await;
    }

    let (status, f) = call(&s, "GET", "/v1/forecast?tenant_id=acme", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{f}");
    assert_eq!(f["period"], "month");
    assert_eq!(f["time_zone"], "UTC");
    assert_eq!(f["tenant_id"], "acme");
    assert_eq!(
        f["period_start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        start
    );
    let by_currency: BTreeMap<String, Value> = f["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["currency"].as_str().unwrap().to_string(), x.clone()))
        .collect();
    assert_eq!(
        by_currency.keys().cloned().collect::<Vec<_>>(),
        ["EUR", "USD"],
        "{f}"
    );

    // USD: the method over the same daily totals and month-to-date spend.
    let usd = &by_currency["USD"];
    let want = forecast(&history, spend(in_month), start, now, end);
    assert_eq!(dec(&usd["spent"]), spend(in_month).normalize());
    assert_eq!(
        usd["basis"],
        serde_json::to_value(&want.basis).unwrap(),
        "{usd}"
    );
    assert_eq!(dec(&usd["projected"]), want.projected, "{usd} vs {want:?}");
    assert_eq!(dec(&usd["low"]), want.low);
    assert_eq!(dec(&usd["high"]), want.high);
    assert_eq!(usd["basis"], serde_json::to_value(&want.basis).unwrap());
    assert_eq!(usd["basis"]["method"], "weekday_seasonal_trend");
    assert_eq!(usd["basis"]["history_days"], 28);
    assert_eq!(
        usd["basis"]["history_to"],
        json!((today - Duration::days(1)).to_string())
    );
    let factors = &usd["basis"]["weekday_factors"];
    // 4 vs 1 a day: weekdays 4 / (22 / 7) ≈ 1.27, weekends ≈ 0.32.
    assert_eq!(dec(&factors["mon"]), d("1.2727"), "{factors}");
    assert_eq!(dec(&factors["sun"]), d("0.3182"), "{factors}");
    assert!(dec(&usd["low"]) <= dec(&usd["projected"]));
    assert!(dec(&usd["projected"]) <= dec(&usd["high"]));
    assert!(dec(&usd["low"]) >= dec(&usd["spent"]));
    // The spent figure is the summary's for the month.
    let (_, sum) = call(
        &s,
        "GET",
        &format!(
            "/v1/summary?tenant_id=acme&start={}&end={}",
            start.to_rfc3339(),
            end.to_rfc3339()
        )
        .replace('+', "%2B"),
        Some(ADMIN),
        None,
    )
    .await;
    let usd_sum = sum["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["currency"] == "USD")
        .map(|g| dec(&g["cost"]))
        .unwrap_or_default();
    assert_eq!(usd_sum, dec(&usd["spent"]));

    // EUR: one day of history (three days of it, from the first spend):
    // less than a week, so linear.
    let eur = &by_currency["EUR"];
    let eur_cost = d("0.0018"); // 1,200 × 1.00 + 300 × 2.00 per million
    let eur_spent = if eur_at >= start {
        eur_cost
    } else {
        Decimal::ZERO
    };
    let want_eur = forecast(
        &[DailyTotal {
            day: eur_day,
            amount: eur_cost,
        }],
        eur_spent,
        start,
        now,
        end,
    );
    assert_eq!(eur["basis"]["method"], "linear");
    assert_eq!(eur["basis"]["history_days"], 3);
    assert_eq!(dec(&eur["projected"]), want_eur.projected);
    assert_eq!(dec(&eur["spent"]), eur_spent.normalize());

    // Cache savings of the month: each gpt-4o-mini request's 200 cached
    // tokens cost 0.075 instead of 0.15 per million; eu-llm has no cache
    // price (cached = input price), so it saves nothing.
    let savings: BTreeMap<String, Value> = f["cache_savings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["currency"].as_str().unwrap().to_string(), x.clone()))
        .collect();
    if in_month > 0 {
        let u = &savings["USD"];
        let n = Decimal::from(in_month);
        assert_eq!(u["cache_read_tokens"], json!(200 * in_month));
        assert_eq!(dec(&u["cost"]), (d("0.000015") * n).normalize());
        assert_eq!(dec(&u["at_input_price"]), (d("0.00003") * n).normalize());
        assert_eq!(dec(&u["savings"]), (d("0.000015") * n).normalize());
    } else {
        assert!(!savings.contains_key("USD"), "{f}");
    }
    if eur_spent > Decimal::ZERO {
        assert_eq!(dec(&savings["EUR"]["savings"]), Decimal::ZERO);
        assert_eq!(dec(&savings["EUR"]["cost"]), d("0.0002"));
    }

    // A tenant token gets its own tenant; another one is refused.
    let token = tenant_token(&s, "acme").await;
    let (status, own) = call(&s, "GET", "/v1/forecast", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["forecasts"], f["forecasts"]);
    assert_eq!(own["cache_savings"], f["cache_savings"]);
    let (status, _) = call(
        &s,
        "GET",
        "/v1/forecast?tenant_id=other",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The admin without a tenant: everyone's spend, still per currency.
    let (_, everyone) = call(&s, "GET", "/v1/forecast", Some(ADMIN), None).await;
    let all_usd = everyone["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["currency"] == "USD")
        .unwrap()
        .clone();
    let other_in_month = (1..=LOOKBACK_DAYS)
        .filter(|k| midnight(today - Duration::days(*k)) + Duration::hours(2) >= start)
        .count() as i64;
    assert_eq!(dec(&all_usd["spent"]), spend(in_month + other_in_month));
    // Bad periods.
    for q in ["period=total", "period=year", "bogus=1"] {
        let (status, body) = call(&s, "GET", &format!("/v1/forecast?{q}"), Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
    }
    let (status, _) = call(&s, "GET", "/v1/forecast", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn projected_to_exceed_fires_on_the_forecast_with_its_basis_in_the_payload(pool: PgPool) {
    let s = state(pool).await;
    let now = s.clock.now();
    let today = now.date_naive();
    // Two weeks of 3 requests a day.
    let mut records = Vec::new();
    for k in 1..=14 {
        for i in 0..3 {
            let at =
                midnight(today - Duration::days(k)) + Duration::hours(5) + Duration::minutes(i);
            records.push(record(
                &format!("p-{k}-{i}"),
                "acme",
                "gpt-4o-mini",
                at.timestamp_millis(),
            ));
        }
    }
    ingest(&s, records).await;
    let created = create_budget(
        &s,
        json!({"tenant_id": "acme", "limit": "1000", "currency": "USD", "period": "month",
            "alert_thresholds": [100], "hard": false,
            "webhook_url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    let b = budgets(&s).await.into_iter().next().unwrap();
    let (spent, projected) = (dec(&b["spent"]), dec(&b["forecast"]["projected"]));
    assert_eq!(dec(&b["projected"]), projected);
    assert_eq!(b["forecast"]["basis"]["method"], "weekday_seasonal_trend");
    assert_eq!(b["forecast"]["basis"]["history_days"], 14);
    assert!(projected > spent, "{b}");
    assert_eq!(b["projected_to_exceed"], false);
    // A limit between what is spent and what the forecast expects.
    let limit = ((spent + projected) / Decimal::TWO)
        .round_dp(12)
        .normalize();
    assert!(
        spent < limit && limit < projected,
        "{spent} {limit} {projected}"
    );
    let (status, patched) = call(
        &s,
        "PATCH",
        &format!("/v1/budgets/{id}"),
        Some(ADMIN),
        Some(json!({"limit": limit.to_string()})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["projected_to_exceed"], true, "{patched}");
    assert_eq!(patched["forecast"], b["forecast"]);

    assert_eq!(collector::alerts::evaluate_at(&s, now).await.unwrap(), 1);
    // Once per period.
    assert_eq!(collector::alerts::evaluate_at(&s, now).await.unwrap(), 0);
    let stored = collector::db::list_alerts(&s.pool, Some("acme"), 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let a = &stored[0];
    assert_eq!(a.event, "projected_to_exceed");
    assert_eq!(a.limit, limit);
    assert_eq!(a.spent, spent);
    // The webhook body (what the deliverer POSTs, signed) carries the basis.
    let body: Value = serde_json::from_slice(&collector::alerts::payload(a)).unwrap();
    assert_eq!(body["event"], "projected_to_exceed");
    assert_eq!(body["threshold"], Value::Null);
    assert_eq!(body["forecast"], b["forecast"]);
    assert_eq!(dec(&body["forecast"]["projected"]), projected);
    let basis = &body["forecast"]["basis"];
    assert_eq!(basis["history_days"], 14);
    assert_eq!(
        basis["history_from"],
        json!((today - Duration::days(14)).to_string())
    );
    // Flat history: every weekday factor is 1.
    assert_eq!(dec(&basis["weekday_factors"]["wed"]), Decimal::ONE);
    assert_eq!(dec(&basis["level_per_day"]), spend(3));
    // The alert log shows it too.
    let (_, log) = call(&s, "GET", "/v1/alerts?tenant_id=acme", Some(ADMIN), None).await;
    assert_eq!(log["alerts"][0]["forecast"], b["forecast"]);
}

#[tokio::test]
async fn without_a_database_metrics_still_render_and_say_the_budget_gauges_are_down() {
    let pool = collector::db::connect_lazy("postgres://postgres@127.0.0.1:1/none", 1).unwrap();
    let s = AppState::new(
        pool,
        collector::price_book::PriceBook::empty(),
        Some(INGEST),
        Some(ADMIN),
        1 << 20,
    );
    let started = std::time::Instant::now();
    let text = metrics_text(&s).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let all = series(&text);
    let one = |name: &str| all.iter().find(|(n, _, _)| n == name).map(|x| x.2.clone());
    assert_eq!(
        one("billing_budget_metrics_up").as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(one("billing_records_accepted_total").as_deref(), Some("0"));
    assert_eq!(one("billing_budget_limit"), None);
}
