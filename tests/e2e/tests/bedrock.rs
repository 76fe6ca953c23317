//! AWS Bedrock through the real Envoy with the built filter: Converse (JSON)
//! and ConverseStream (the binary event stream, cut mid-frame by the demo
//! upstream). The client gets the upstream's bytes unchanged, and the row
//! carries Bedrock's usage normalized (its `inputTokens` excludes the cache
//! counts) and priced from the bundled catalog through the model id in the
//! URL-encoded path.

use std::time::Duration;

use e2e::fixtures::BEDROCK_MODEL;
use e2e::{Stack, StackOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ROW_TIMEOUT: Duration = Duration::from_secs(20);

fn path(op: &str) -> String {
    format!("/model/{}/{op}", BEDROCK_MODEL.replace(':', "%3A"))
}

async fn send(stack: &Stack, url: String, request_id: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = stack
        .http
        .post(url)
        .header("authorization", "Bearer ABSK-demo-bedrock-key")
        .json(
            &json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                      "inferenceConfig": {"maxTokens": 512}}),
        );
    if let Some(id) = request_id {
        req = req
            .header("x-tenant-id", "bedrock")
            .header("x-request-id", id);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, content_type, r.bytes().await.unwrap().to_vec())
}

fn row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {rows:#?}"))
}

#[tokio::test]
async fn converse_and_converse_stream_are_billed_to_the_token_and_pass_through_unchanged() {
    let stack = Stack::start("bedrock", StackOptions::default())
        .await
        .unwrap();
    for (op, id, content_type) in [
        ("converse", "bedrock-json", "application/json"),
        (
            "converse-stream",
            "bedrock-stream",
            "application/vnd.amazon.eventstream",
        ),
    ] {
        let direct = send(&stack, stack.upstream_url(&path(op)), None).await;
        let through = send(&stack, stack.envoy_url(&path(op)), Some(id)).await;
        assert_eq!(through.0, 200, "{op}");
        assert_eq!(through.1, content_type, "{op}");
        assert_eq!(
            through.2, direct.2,
            "{op}: the client gets the upstream's bytes"
        );
    }
    let rows = stack.wait_rows("bedrock", 2, ROW_TIMEOUT).await.unwrap();
    let key = hex::encode(Sha256::digest(b"ABSK-demo-bedrock-key"));
    for (id, streamed) in [("bedrock-json", false), ("bedrock-stream", true)] {
        let r = row(&rows, id);
        let ctx = format!("{r:#}");
        assert_eq!(r["provider"], "bedrock", "{ctx}");
        assert_eq!(r["model"], BEDROCK_MODEL, "{ctx}");
        assert_eq!(r["streamed"], streamed, "{ctx}");
        assert_eq!(r["api_key_id"], key, "{ctx}");
        assert_eq!(r["input_tokens"], 1300, "{ctx}");
        assert_eq!(r["cache_read_tokens"], 200, "{ctx}");
        assert_eq!(r["cache_write_tokens"], 100, "{ctx}");
        assert_eq!(r["output_tokens"], 300, "{ctx}");
        assert_eq!(r["flags"], json!([]), "{ctx}");
        assert_eq!(r["status"], "priced", "{ctx}");
        // claude-sonnet-4-5 per million: 1000 × $3 + 200 × $0.30 cache read
        // + 100 × $3.75 cache write + 300 × $15 output = $0.007935.
        assert_eq!(r["cost"], "0.007935", "{ctx}");
        assert!(
            r["price_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("claude-sonnet-4-5@")),
            "{ctx}"
        );
    }
}

#[tokio::test]
async fn a_converse_stream_cut_mid_frame_is_recorded_flagged_and_the_client_gets_what_was_sent() {
    let stack = Stack::start("bedrock-cut", StackOptions::default())
        .await
        .unwrap();
    // 10 chunks of 41 bytes: the stream stalls inside a frame before the
    // usage; the client gives up and the filter must still write the row.
    let r = stack
        .http
        .post(stack.envoy_url(&path("converse-stream")))
        .header("x-tenant-id", "bedrock-cut")
        .header("x-request-id", "bedrock-cut-1")
        .header("x-demo-stall-after", "10")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut received = 0;
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = body.next().await {
            received += chunk.len();
        }
    })
    .await;
    assert!(read.is_err(), "the stalled stream must still be open");
    drop(body);
    assert_eq!(received, 410, "every byte sent before the stall arrives");
    let rows = stack
        .wait_rows("bedrock-cut", 1, ROW_TIMEOUT)
        .await
        .unwrap();
    let row = &rows[0];
    assert_eq!(row["request_id"], "bedrock-cut-1", "{row:#}");
    assert_eq!(row["provider"], "bedrock", "{row:#}");
    assert_eq!(row["streamed"], true, "{row:#}");
    assert_eq!(row["output_tokens"], 0, "{row:#}");
    assert!(
        row["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "incomplete")),
        "{row:#}"
    );
}

#[tokio::test]
async fn hostile_event_streams_reach_the_client_unchanged_and_write_flagged_rows() {
    let stack = Stack::start("bedrock-hostile", StackOptions::default())
        .await
        .unwrap();
    let faults = ["crc", "prelude-crc", "huge", "lying-headers"];
    for fault in faults {
        let mut bytes = Vec::new();
        for (url, id) in [
            (stack.upstream_url(&path("converse-stream")), None),
            (
                stack.envoy_url(&path("converse-stream")),
                Some(format!("hostile-{fault}")),
            ),
        ] {
            let mut req = stack
                .http
                .post(url)
                .header("x-demo-eventstream-fault", fault)
                .json(&json!({"messages": []}));
            if let Some(id) = &id {
                req = req
                    .header("x-tenant-id", "bedrock-hostile")
                    .header("x-request-id", id);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{fault}");
            bytes.push(r.bytes().await.unwrap().to_vec());
        }
        assert!(bytes[0].len() > 100, "{fault}: the upstream sent a stream");
        assert_eq!(
            bytes[1], bytes[0],
            "{fault}: the client gets every byte as sent"
        );
    }
    let rows = stack
        .wait_rows("bedrock-hostile", faults.len(), ROW_TIMEOUT)
        .await
        .unwrap();
    for fault in faults {
        let r = row(&rows, &format!("hostile-{fault}"));
        let ctx = format!("{fault}: {r:#}");
        assert_eq!(r["provider"], "bedrock", "{ctx}");
        assert_eq!(r["model"], BEDROCK_MODEL, "{ctx}");
        assert_eq!(r["streamed"], true, "{ctx}");
        assert_eq!(r["flags"], json!(["incomplete", "parse_error"]), "{ctx}");
        // Nothing is invented from a stream that cannot be trusted.
        assert_eq!(r["input_tokens"], 0, "{ctx}");
        assert_eq!(r["output_tokens"], 0, "{ctx}");
    }
}

/// Prices in LiteLLM's file format (`tests/e2e/fixtures/litellm_gateway_prices.json`,
/// an excerpt with Bedrock's US-profile, Vertex AI's regional and Azure's
/// own prices, which differ from the vendors'), imported with `collector
/// prices import`: that traffic is charged those, to the token.
#[tokio::test]
async fn bedrock_azure_and_vertex_are_charged_their_own_prices_from_an_imported_litellm_catalog() {
    let stack = Stack::start("gateway-litellm", StackOptions::default())
        .await
        .unwrap();
    let bin = std::env::var("COLLECTOR_BIN").unwrap_or_else(|_| "target/debug/collector".into());
    let file = e2e::repo_root().join("tests/e2e/fixtures/litellm_gateway_prices.json");
    let out = std::process::Command::new(e2e::repo_root().join(bin))
        .args(["prices", "import", "--format", "litellm"])
        .arg(&file)
        .env("DATABASE_URL", &stack.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running collector picks the new prices up (reprice reloads at once).
    let r = stack
        .http
        .post(stack.collector_url("/v1/reprice"))
        .bearer_auth(e2e::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let through = send(
        &stack,
        stack.envoy_url(&path("converse-stream")),
        Some("litellm-bedrock"),
    )
    .await;
    assert_eq!(through.0, 200);
    let azure = stack
        .http
        .post(
            stack
                .envoy_url("/openai/deployments/prod-mini/chat/completions?api-version=2024-10-21"),
        )
        .header("api-key", "azure-litellm-key")
        .header("x-tenant-id", "bedrock")
        .header("x-request-id", "litellm-azure")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(azure.status(), 200);
    let vertex = stack
        .http
        .post(stack.envoy_url(
            "/v1/projects/demo/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict",
        ))
        .bearer_auth("ya29.vertex-litellm-token")
        .header("x-tenant-id", "bedrock")
        .header("x-request-id", "litellm-vertex")
        .json(&json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 1024, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(vertex.status(), 200);
    let _ = vertex.bytes().await.unwrap();
    let rows = stack.wait_rows("bedrock", 3, ROW_TIMEOUT).await.unwrap();
    let r = row(&rows, "litellm-vertex");
    assert_eq!(r["provider"], "vertex_ai", "{r:#}");
    assert_eq!(r["streamed"], true, "{r:#}");
    assert!(
        r["price_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("vertex_ai/claude-sonnet-4-5@20250929@")),
        "{r:#}"
    );
    assert_eq!(r["model"], "claude-sonnet-4-5@20250929", "{r:#}");
    // 50 uncached × $3.30 + 1000 cache reads × $0.33 + 200 cache writes
    // × $4.125 + 120 output × $16.50, per million = $0.0033 (Anthropic's
    // own prices would give $0.003).
    assert_eq!(r["cost"], "0.0033", "{r:#}");
    let r = row(&rows, "litellm-bedrock");
    // 1000 × $3.30 + 200 × $0.33 cache read + 100 × $4.125 cache write
    // + 300 × $16.50 output, per million = $0.0087285.
    assert_eq!(r["cost"], "0.0087285", "{r:#}");
    assert_eq!(r["status"], "priced", "{r:#}");
    assert!(
        r["price_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("us.anthropic.claude-sonnet-4-5-20250929-v1:0@")),
        "{r:#}"
    );
    let r = row(&rows, "litellm-azure");
    assert_eq!(r["provider"], "azure", "{r:#}");
    assert_eq!(r["model"], "gpt-4o-mini-2024-07-18", "{r:#}");
    // 1000 × $0.165 + 200 × $0.083 cache read + 300 × $0.66, per million.
    assert_eq!(r["cost"], "0.0003796", "{r:#}");
    assert!(
        r["price_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("azure/gpt-4o-mini-2024-07-18@")),
        "{r:#}"
    );
}
