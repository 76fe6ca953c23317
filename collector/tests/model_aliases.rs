//! Admin-managed model aliases (`/v1/model-aliases`) against the real
//! PostgreSQL: live pricing through an alias, repricing, precedence, delete,
//! validation, auth, and the generation replicas reload on.

mod common;

use std::str::FromStr;

use axum::http::StatusCode;
use chrono::Duration;
use collector::AppState;
use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a decimal: {v}"))).unwrap()
}

/// Record figures (see `common::record`): 1200 input of which 200 cached, 300
/// output. Bundled prices per million: gpt-4o 2.50 / 1.25 cached / 10.00,
/// gpt-4o-mini 0.15 / 0.075 / 0.60, gpt-4.1 2.00 / 0.50 / 8.00.
const GPT_4O: &str = "0.00575"; // 1000 × 2.50 + 200 × 1.25 + 300 × 10.00
const GPT_4O_MINI: &str = "0.000345"; // 1000 × 0.15 + 200 × 0.075 + 300 × 0.60
const GPT_41: &str = "0.0045"; // 1000 × 2.00 + 200 × 0.50 + 300 × 8.00
const USAGE: &str = r#"{"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 200}"#;

/// A record an hour before the state's clock, so no test depends on the date.
fn rec(s: &AppState, id: &str, tenant: &str, provider: &str, model: &str) -> Value {
    let at = (s.clock.now() - Duration::hours(1)).timestamp_millis();
    let mut r = record(id, tenant, model, at);
    r["provider"] = json!(provider);
    r
}

async fn put_alias(s: &AppState, body: Value) -> (StatusCode, Value) {
    call(s, "PUT", "/v1/model-aliases", Some(ADMIN), Some(body)).await
}

/// (status, model, cost, price_version) of a ledger row.
async fn tx(pool: &PgPool, id: &str) -> (String, String, Option<Decimal>, Option<String>) {
    sqlx::query_as(
        "SELECT status, model, cost, price_version FROM transactions WHERE request_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("{id}: {e}"))
}

async fn priced(pool: &PgPool, id: &str) -> (Decimal, String) {
    match tx(pool, id).await {
        (status, _, Some(cost), Some(version)) if status == "priced" => (cost, version),
        other => panic!("{id} is not priced: {other:?}"),
    }
}

async fn assert_unpriced(pool: &PgPool, id: &str) {
    let (status, _, cost, version) = tx(pool, id).await;
    assert_eq!(
        (status.as_str(), cost, version),
        ("unpriced", None, None),
        "{id}"
    );
}

async fn tenant_token(s: &AppState, tenant: &str) -> String {
    let (status, body) = call(
        s,
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(json!({"tenant_id": tenant, "name": "alias-test"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn alias_prices_an_azure_deployment_live_and_reprice_prices_the_old_rows(pool: PgPool) {
    let s = state(pool.clone()).await;
    // Azure reports the deployment name the user chose: no catalog entry.
    let r = ingest(&s, vec![rec(&s, "old", "acme", "openai", "prod-gpt4o-eu")]).await;
    assert_eq!(
        (r["accepted"].clone(), r["unpriced"].clone()),
        (json!(1), json!(1))
    );
    assert_unpriced(&pool, "old").await;

    let body = json!({"alias": "prod-gpt4o-eu", "model": "gpt-4o", "provider": "openai"});
    let (status, row) = put_alias(&s, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{row}");
    assert_eq!(
        (
            &row["tenant_id"],
            &row["provider"],
            &row["alias"],
            &row["model"]
        ),
        (
            &json!("*"),
            &json!("openai"),
            &json!("prod-gpt4o-eu"),
            &json!("gpt-4o")
        )
    );
    assert!(
        row["created_at"].is_string() && row["updated_at"].is_string(),
        "{row}"
    );
    // The same PUT again updates the row in place.
    let (status, again) = put_alias(&s, body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["created_at"], row["created_at"]);

    // Live, no restart: the next record is priced as gpt-4o and keeps its name.
    let r = ingest(&s, vec![rec(&s, "new", "acme", "openai", "prod-gpt4o-eu")]).await;
    assert_eq!(r["unpriced"], 0, "{r}");
    let (status, model, cost, version) = tx(&pool, "new").await;
    assert_eq!(status, "priced");
    assert_eq!(
        model, "prod-gpt4o-eu",
        "the transaction keeps the raw model"
    );
    assert_eq!(cost, Some(d(GPT_4O)));
    assert_eq!(
        version.as_deref(),
        Some("gpt-4o@2024-10-02T00:00:00Z alias:*/openai/prod-gpt4o-eu")
    );
    let (status, body) = call(
        &s,
        "GET",
        "/v1/transactions?tenant_id=acme&status=priced",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = &body["transactions"][0];
    assert_eq!(
        (&t["model"], dec(&t["cost"])),
        (&json!("prod-gpt4o-eu"), d(GPT_4O)),
        "{t}"
    );

    // The row stored unpriced before the alias existed is priced by reprice.
    let (status, body) = call(&s, "POST", "/v1/reprice", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"examined": 1, "priced": 1, "still_unpriced": 0})
    );
    let (cost, version) = priced(&pool, "old").await;
    assert_eq!(cost, d(GPT_4O));
    assert!(version.starts_with("gpt-4o@"), "{version}");
    assert_eq!(tx(&pool, "old").await.1, "prod-gpt4o-eu");

    // Quotes honour the global alias too.
    let usage: Value = serde_json::from_str(USAGE).unwrap();
    let (status, q) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "prod-gpt4o-eu", "provider": "openai", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(dec(&q["cost"]["total"]), d(GPT_4O));
    assert_eq!(q["model"], "prod-gpt4o-eu");
    assert_eq!(q["alias"]["model"], "gpt-4o", "{q}");
    let (status, q) = call(
        &s,
        "POST",
        "/internal/billing/quote",
        Some(ADMIN),
        Some(json!({"provider_model_id": "openai/prod-gpt4o-eu", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(dec(&q["cost"]["total"]), d(GPT_4O));
    // Provider `unknown` (the quote's default) does not match an openai alias.
    let (status, q) = call(
        &s,
        "POST",
        "/v1/quote",
        Some(ADMIN),
        Some(json!({"model": "prod-gpt4o-eu", "usage": usage})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{q}");

    let (status, list) = call(&s, "GET", "/v1/model-aliases", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["aliases"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["aliases"][0]["alias"], "prod-gpt4o-eu");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tenant_alias_wins_for_its_tenant_only_and_a_provider_alias_only_for_its_provider(
    pool: PgPool,
) {
    let s = state(pool.clone()).await;
    for body in [
        json!({"alias": "house-llm", "model": "gpt-4o-mini"}),
        json!({"alias": "house-llm", "model": "gpt-4o", "tenant_id": "acme"}),
        json!({"alias": "edge-llm", "model": "gpt-4.1", "provider": "azure"}),
    ] {
        let (status, row) = put_alias(&s, body).await;
        assert_eq!(status, StatusCode::CREATED, "{row}");
    }
    let r = ingest(
        &s,
        vec![
            rec(&s, "acme-house", "acme", "openai", "house-llm"),
            rec(&s, "globex-house", "globex", "openai", "house-llm"),
            rec(&s, "edge-azure", "acme", "azure", "edge-llm"),
            rec(&s, "edge-openai", "acme", "openai", "edge-llm"),
        ],
    )
    .await;
    assert_eq!(r["unpriced"], 1, "{r}");
    assert_eq!(
        priced(&pool, "acme-house").await,
        (
            d(GPT_4O),
            "gpt-4o@2024-10-02T00:00:00Z alias:acme/*/house-llm".into()
        )
    );
    assert_eq!(
        priced(&pool, "globex-house").await,
        (
            d(GPT_4O_MINI),
            "gpt-4o-mini@2024-07-18T00:00:00Z alias:*/*/house-llm".into()
        )
    );
    assert_eq!(
        priced(&pool, "edge-azure").await,
        (
            d(GPT_41),
            "gpt-4.1@2025-04-14T00:00:00Z alias:*/azure/edge-llm".into()
        )
    );
    assert_unpriced(&pool, "edge-openai").await;

    // Listing by tenant shows what applies to it: its own and the global ones.
    let names = |v: &Value| -> Vec<String> {
        v["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!("{}/{}/{}", a["tenant_id"], a["provider"], a["alias"]).replace('"', "")
            })
            .collect()
    };
    let (_, acme) = call(
        &s,
        "GET",
        "/v1/model-aliases?tenant_id=acme",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        names(&acme),
        ["*/*/house-llm", "*/azure/edge-llm", "acme/*/house-llm"]
    );
    let (_, globex) = call(
        &s,
        "GET",
        "/v1/model-aliases?tenant_id=globex",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(names(&globex), ["*/*/house-llm", "*/azure/edge-llm"]);

    // A tenant token reads its own view and quotes with its own aliases.
    let token = tenant_token(&s, "acme").await;
    let (status, own) = call(&s, "GET", "/v1/model-aliases", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(names(&own), names(&acme));
    let (status, body) = call(
        &s,
        "GET",
        "/v1/model-aliases?tenant_id=globex",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let usage: Value = serde_json::from_str(USAGE).unwrap();
    let quote = json!({"model": "house-llm", "provider": "openai", "usage": usage});
    let (_, q) = call(&s, "POST", "/v1/quote", Some(&token), Some(quote.clone())).await;
    assert_eq!(dec(&q["cost"]["total"]), d(GPT_4O), "{q}");
    let (_, q) = call(&s, "POST", "/v1/quote", Some(ADMIN), Some(quote)).await;
    assert_eq!(
        dec(&q["cost"]["total"]),
        d(GPT_4O_MINI),
        "the admin quotes globally: {q}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn deleting_an_alias_leaves_later_records_unpriced_again(pool: PgPool) {
    let s = state(pool.clone()).await;
    let (status, row) = put_alias(
        &s,
        json!({"alias": "prod-gpt4o-eu", "model": "gpt-4o", "provider": "openai"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{row}");
    ingest(
        &s,
        vec![rec(&s, "before", "acme", "openai", "prod-gpt4o-eu")],
    )
    .await;
    assert_eq!(priced(&pool, "before").await.0, d(GPT_4O));

    // The key is exact: the same alias under provider `*` is another row.
    let (status, body) = call(
        &s,
        "DELETE",
        "/v1/model-aliases?alias=prod-gpt4o-eu",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let uri = "/v1/model-aliases?alias=prod-gpt4o-eu&provider=openai&tenant_id=*";
    let (status, body) = call(&s, "DELETE", uri, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = call(&s, "DELETE", uri, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "gone");

    let r = ingest(
        &s,
        vec![rec(&s, "after", "acme", "openai", "prod-gpt4o-eu")],
    )
    .await;
    assert_eq!(r["unpriced"], 1, "{r}");
    assert_unpriced(&pool, "after").await;
    // What was priced through the alias keeps its price.
    assert_eq!(priced(&pool, "before").await.0, d(GPT_4O));
    let (_, list) = call(&s, "GET", "/v1/model-aliases", Some(ADMIN), None).await;
    assert_eq!(list, json!({"aliases": []}));
}

#[sqlx::test(migrations = "../migrations")]
async fn invalid_aliases_are_refused_with_a_clear_message(pool: PgPool) {
    let s = state(pool).await;
    for (body, message) in [
        (
            json!({"alias": "prod-gpt4o-eu", "model": "gpt-4o-2024-08-6"}),
            "model \"gpt-4o-2024-08-6\" is not a model id in the price catalog",
        ),
        (json!({"alias": "", "model": "gpt-4o"}), "alias is empty"),
        (json!({"alias": "dep", "model": ""}), "model is empty"),
        (
            json!({"alias": "prod gpt4o", "model": "gpt-4o"}),
            "contains whitespace",
        ),
        (
            json!({"alias": "dep", "model": " gpt-4o"}),
            "contains whitespace",
        ),
        (
            json!({"alias": "gpt-4o", "model": "gpt-4o"}),
            "is the model itself",
        ),
        (
            json!({"alias": "dep", "model": "gpt-4o", "provider": "opneai"}),
            "provider \"opneai\" must be `*` or one of",
        ),
        (json!({"alias": "dep"}), "missing field `model`"),
        (
            json!({"alias": "dep", "model": "gpt-4o", "tenant": "acme"}),
            "unknown field `tenant`",
        ),
    ] {
        let (status, err) = put_alias(&s, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["code"], "bad_request", "{err}");
        let text = err["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }
    let (_, list) = call(&s, "GET", "/v1/model-aliases", Some(ADMIN), None).await;
    assert_eq!(list, json!({"aliases": []}), "nothing was stored");
}

#[sqlx::test(migrations = "../migrations")]
async fn only_the_admin_may_change_aliases(pool: PgPool) {
    let s = state(pool).await;
    let token = tenant_token(&s, "acme").await;
    let body = json!({"alias": "prod-gpt4o-eu", "model": "gpt-4o"});
    let delete = "/v1/model-aliases?alias=prod-gpt4o-eu";
    for (who, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(INGEST), StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some(token.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (status, err) = call(&s, "PUT", "/v1/model-aliases", who, Some(body.clone())).await;
        assert_eq!(status, expected, "PUT {who:?}: {err}");
        let (status, err) = call(&s, "DELETE", delete, who, None).await;
        assert_eq!(status, expected, "DELETE {who:?}: {err}");
    }
    let (status, _) = call(&s, "GET", "/v1/model-aliases", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = call(&s, "GET", "/v1/model-aliases", Some(ADMIN), None).await;
    assert_eq!(list, json!({"aliases": []}), "nothing was stored");
}

/// Every alias change on one replica moves the pricing generation by one
/// (migration 0020), and the very next record another replica ingests is
/// priced with it, whether or not that replica has heard of it yet.
#[sqlx::test(migrations = "../migrations")]
async fn alias_changes_on_one_replica_move_the_generation_others_price_with(pool: PgPool) {
    let a = state(pool.clone()).await;
    let b = state(pool.clone()).await;
    let current = || async { collector::db::generations(&pool).await.unwrap().pricing };
    assert_eq!(Some(current().await), b.price_book().generation());

    let changes: [(&str, &str, Option<Value>); 3] = [
        (
            "PUT",
            "/v1/model-aliases",
            Some(json!({"alias": "dep", "model": "gpt-4o"})),
        ),
        // Repointing: an update of the same row.
        (
            "PUT",
            "/v1/model-aliases",
            Some(json!({"alias": "dep", "model": "gpt-4o-mini"})),
        ),
        ("DELETE", "/v1/model-aliases?alias=dep", None),
    ];
    let expected = [Some(GPT_4O), Some(GPT_4O_MINI), None];
    for (i, ((method, uri, body), cost)) in changes.into_iter().zip(expected).enumerate() {
        let before = current().await;
        let (status, resp) = call(&a, method, uri, Some(ADMIN), body).await;
        assert!(status.is_success(), "{method} {uri}: {resp}");
        let now = current().await;
        assert_eq!(
            now,
            before + 1,
            "{method} {uri}: one statement, one generation"
        );
        assert_eq!(
            a.price_book().generation(),
            Some(now),
            "the writer reloaded itself"
        );
        assert_eq!(b.price_book().generation(), Some(before), "b has not heard");
        let id = format!("r{i}");
        ingest(&b, vec![rec(&b, &id, "acme", "openai", "dep")]).await;
        assert_eq!(b.price_book().generation(), Some(now), "b caught up first");
        let (_, _, got, _) = tx(&pool, &id).await;
        assert_eq!(got, cost.map(d), "{method} {uri}");
    }
}
