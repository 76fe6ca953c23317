//! The walking skeleton: one OpenAI chat completion through real Envoy with
//! the built filter, priced by the real collector into real PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use e2e::{Stack, StackOptions, ADMIN_TOKEN};
use rust_decimal::Decimal;
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn chat_completion_is_billed_exactly_and_passes_through_unchanged() {
    let stack = Stack::start("skeleton", StackOptions::default())
        .await
        .unwrap();
    let request = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});

    let direct = stack
        .http
        .post(stack.upstream_url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let through = stack
        .http
        .post(stack.envoy_url("/v1/chat/completions"))
        .header("x-tenant-id", "acme")
        .header("authorization", "Bearer sk-test-123")
        .header("x-request-id", "skeleton-req-1")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 200);
    let through = through.bytes().await.unwrap();
    assert_eq!(
        through, direct,
        "the client must get the upstream's bytes unchanged"
    );

    let rows = stack
        .wait_rows("acme", 1, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["request_id"], "skeleton-req-1");
    assert_eq!(row["provider"], "openai");
    assert_eq!(row["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(row["http_status"], 200);
    assert_eq!(row["streamed"], false);
    assert_eq!(row["input_tokens"], 1200);
    assert_eq!(row["cache_read_tokens"], 200);
    assert_eq!(row["output_tokens"], 300);
    assert_eq!(row["reasoning_tokens"], 0);
    assert_eq!(row["status"], "priced");
    assert_eq!(row["currency"], "USD");
    assert_eq!(
        row["api_key_id"],
        hex::encode(Sha256::digest(b"sk-test-123"))
    );
    assert!(
        row["price_version"]
            .as_str()
            .unwrap()
            .starts_with("gpt-4o-mini@"),
        "{row}"
    );
    // gpt-4o-mini: $0.15 / $0.075 cached / $0.60 per million tokens.
    // 1000 uncached × 0.15 + 200 cached × 0.075 + 300 out × 0.60 = $0.000345
    let cost = Decimal::from_str(row["cost"].as_str().unwrap()).unwrap();
    assert_eq!(cost, Decimal::from_str("0.000345").unwrap());
    assert_eq!(
        Decimal::from_str(row["cost_input"].as_str().unwrap()).unwrap(),
        Decimal::from_str("0.00015").unwrap()
    );
    assert_eq!(
        Decimal::from_str(row["cost_cache_read"].as_str().unwrap()).unwrap(),
        Decimal::from_str("0.000015").unwrap()
    );
    assert_eq!(
        Decimal::from_str(row["cost_output"].as_str().unwrap()).unwrap(),
        Decimal::from_str("0.00018").unwrap()
    );

    // The same row straight from PostgreSQL, to the digit.
    let (db_cost, tokens): (Decimal, i64) = sqlx::query_as(
        "SELECT cost, input_tokens FROM transactions WHERE tenant_id = 'acme' AND request_id = 'skeleton-req-1'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(db_cost, Decimal::from_str("0.000345").unwrap());
    assert_eq!(tokens, 1200);

    // Without the admin token the ledger is closed.
    let denied = stack
        .http
        .get(stack.collector_url("/v1/transactions?tenant_id=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    // The collector's fold task reports where the daily rollups end: at a
    // whole hour of the last hour and five minutes (a fresh ledger starts
    // the watermark at the current hour).
    let mut folded_before = 0u64;
    for _ in 0..50 {
        let text = stack
            .http
            .get(stack.collector_url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        folded_before = text
            .lines()
            .find_map(|l| l.strip_prefix("billing_rollup_folded_before_seconds "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if folded_before > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(folded_before % 3600, 0, "{folded_before}");
    assert!(
        folded_before <= now && now - folded_before <= 3900,
        "watermark {folded_before}, now {now}"
    );
}
