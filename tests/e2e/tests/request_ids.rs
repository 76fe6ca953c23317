//! A client that reuses one `x-request-id` (retries, meshes passing ids on)
//! is billed for every request it made, while the filter's own resends of a
//! record are still deduplicated.

use std::str::FromStr;
use std::time::Duration;

use e2e::{Stack, StackOptions};
use rust_decimal::Decimal;
use serde_json::json;

#[tokio::test]
async fn every_request_under_a_reused_request_id_is_billed() {
    let stack = Stack::start("request_ids", StackOptions::default())
        .await
        .unwrap();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for status in [Some("500"), None, None] {
        let mut req = stack
            .http
            .post(stack.envoy_url("/v1/chat/completions"))
            .header("x-tenant-id", "reuse")
            .header("x-request-id", "client-chosen-id")
            .json(&body);
        if let Some(s) = status {
            req = req.header("x-demo-status", s);
        }
        let response = req.send().await.unwrap();
        response.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rows = stack
        .wait_rows("reuse", 3, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut statuses: Vec<i64> = rows
        .iter()
        .map(|r| r["http_status"].as_i64().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 500]);
    let total: Decimal = rows
        .iter()
        .map(|r| Decimal::from_str(r["cost"].as_str().unwrap()).unwrap())
        .sum();
    // Two completions at $0.000345, the failed one at $0.
    assert_eq!(total, Decimal::from_str("0.00069").unwrap());
    assert!(rows.iter().all(|r| r["request_id"] == "client-chosen-id"));
}
