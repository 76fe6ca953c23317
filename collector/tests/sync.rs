//! Periodic price sync against a real HTTP server serving an OpenRouter list.

mod common;

use std::str::FromStr;

use axum::routing::get;
use axum::Router;
use collector::config::ImportFormat;
use common::*;
use rust_decimal::Decimal;
use sqlx::PgPool;

async fn serve(body: String) -> String {
    let app = Router::new().route("/api/v1/models", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/v1/models")
}

#[sqlx::test(migrations = "../migrations")]
async fn sync_adds_changed_prices_only(pool: PgPool) {
    let s = state(pool.clone()).await;
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pricing/openrouter_models.json"
    ))
    .unwrap();
    let url = serve(fixture.clone()).await;
    let client = reqwest::Client::new();
    let first = collector::sync::sync_once(&s, &client, &url, ImportFormat::Openrouter)
        .await
        .unwrap();
    assert!(first.listed > 0);
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM price_catalog WHERE source = 'sync:openrouter'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(before as u64, first.added);
    // Same list again: nothing new.
    let second = collector::sync::sync_once(&s, &client, &url, ImportFormat::Openrouter)
        .await
        .unwrap();
    assert_eq!((second.added, second.unchanged), (0, second.listed));

    // A price change on the server becomes a new version, effective now.
    let v: serde_json::Value = serde_json::from_str(&fixture).unwrap();
    let model = v["data"][0]["id"].as_str().unwrap().to_string();
    let mut changed = v.clone();
    changed["data"][0]["pricing"]["prompt"] = serde_json::json!("0.000123");
    let url = serve(changed.to_string()).await;
    let third = collector::sync::sync_once(&s, &client, &url, ImportFormat::Openrouter)
        .await
        .unwrap();
    assert_eq!(third.added, 1);
    let input = {
        let book = s.price_book();
        let catalog = book.catalog().unwrap();
        catalog
            .lookup("openrouter", &model, s.clock.now())
            .unwrap()
            .input
    };
    // $0.000123 per token = $123 per million.
    assert_eq!(input, Decimal::from_str("123").unwrap());

    // A server error leaves the catalog as it is.
    let bad = collector::sync::sync_once(
        &s,
        &client,
        &format!("{url}/missing"),
        ImportFormat::Openrouter,
    )
    .await;
    assert!(bad.is_err());
}
