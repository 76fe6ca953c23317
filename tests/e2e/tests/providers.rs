//! Every provider shape, JSON and streamed, through the real Envoy with the
//! built filter: the client's bytes are the upstream's bytes, and the ledger
//! row carries the exact normalized tokens and the cost hand-computed from
//! prices/catalog.json. Also the response-side faults: compression, upstream
//! errors and a client that hangs up mid-stream.

use std::str::FromStr;
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ROW_TIMEOUT: Duration = Duration::from_secs(20);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn key_id(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

/// The credential header each provider's clients send.
#[derive(Clone, Copy)]
enum Cred {
    Bearer(&'static str),
    XApiKey(&'static str),
    GoogApiKey(&'static str),
    /// Azure OpenAI's `api-key` header.
    AzureApiKey(&'static str),
}

impl Cred {
    fn secret(self) -> &'static str {
        match self {
            Cred::Bearer(s) | Cred::XApiKey(s) | Cred::GoogApiKey(s) | Cred::AzureApiKey(s) => s,
        }
    }
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// POSTs `body` to `url` with extra headers; returns the raw reply (the
/// client has no decompression, so bytes are what went over the wire).
async fn post(stack: &Stack, url: String, body: &Value, headers: &[(&str, String)]) -> Reply {
    let mut req = stack.http.post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap().to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Identity headers of a request through Envoy.
fn through_headers(tenant: &str, request_id: &str, cred: Cred) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-tenant-id", tenant.to_string()),
        ("x-request-id", request_id.to_string()),
    ];
    match cred {
        Cred::Bearer(s) => h.push(("authorization", format!("Bearer {s}"))),
        Cred::XApiKey(s) => h.push(("x-api-key", s.to_string())),
        Cred::GoogApiKey(s) => h.push(("x-goog-api-key", s.to_string())),
        Cred::AzureApiKey(s) => h.push(("api-key", s.to_string())),
    }
    h
}

/// The ledger row expected for one request.
struct Expect {
    provider: &'static str,
    model: &'static str,
    /// Catalog model id the price came from (`price_version` prefix).
    price_model: Option<&'static str>,
    http_status: u16,
    streamed: bool,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
    cache_write_1h: i64,
    reasoning: i64,
    cost: &'static str,
    reported_cost: Option<&'static str>,
    flags: &'static [&'static str],
    status: &'static str,
}

fn check_row(row: &Value, request_id: &str, cred: Cred, e: &Expect) {
    let ctx = format!("{request_id}: {row:#}");
    assert_eq!(row["request_id"], request_id, "{ctx}");
    assert_eq!(row["provider"], e.provider, "{ctx}");
    assert_eq!(row["model"], e.model, "{ctx}");
    assert_eq!(row["http_status"], e.http_status, "{ctx}");
    assert_eq!(row["streamed"], e.streamed, "{ctx}");
    assert_eq!(row["input_tokens"], e.input, "{ctx}");
    assert_eq!(row["output_tokens"], e.output, "{ctx}");
    assert_eq!(row["cache_read_tokens"], e.cache_read, "{ctx}");
    assert_eq!(row["cache_write_tokens"], e.cache_write, "{ctx}");
    assert_eq!(row["cache_write_1h_tokens"], e.cache_write_1h, "{ctx}");
    assert_eq!(row["reasoning_tokens"], e.reasoning, "{ctx}");
    assert_eq!(row["status"], e.status, "{ctx}");
    assert_eq!(row["api_key_id"], key_id(cred.secret()), "{ctx}");
    let flags: Vec<&str> = row["flags"]
        .as_array()
        .unwrap_or_else(|| panic!("flags missing: {ctx}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = e.flags.to_vec();
    let mut got = flags.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "flags of {ctx}");
    let cost = row["cost"]
        .as_str()
        .unwrap_or_else(|| panic!("no cost: {ctx}"));
    assert_eq!(dec(cost), dec(e.cost), "cost of {ctx}");
    assert_eq!(row["currency"], "USD", "{ctx}");
    match e.reported_cost {
        // Stored exactly: the text itself, not a float round trip.
        Some(rc) => assert_eq!(row["reported_cost"], rc, "{ctx}"),
        None => assert!(row["reported_cost"].is_null(), "{ctx}"),
    }
    if let Some(m) = e.price_model {
        let version = row["price_version"].as_str().unwrap_or_default();
        assert!(version.starts_with(&format!("{m}@")), "{ctx}");
    }
}

/// Waits for the single row of `tenant` and checks it.
async fn expect_one_row(stack: &Stack, tenant: &str, request_id: &str, cred: Cred, e: &Expect) {
    let rows = stack.wait_rows(tenant, 1, ROW_TIMEOUT).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    check_row(&rows[0], request_id, cred, e);
}

/// Sends `body` straight to the upstream and through Envoy; asserts the
/// client got the upstream's status and bytes unchanged and that Envoy asked
/// upstream for an identity encoding.
async fn same_bytes_as_direct(
    stack: &Stack,
    path: &str,
    body: &Value,
    tenant: &str,
    request_id: &str,
    cred: Cred,
) -> Reply {
    let direct = post(stack, stack.upstream_url(path), body, &[]).await;
    assert_eq!(direct.status, 200);
    let through = post(
        stack,
        stack.envoy_url(path),
        body,
        &through_headers(tenant, request_id, cred),
    )
    .await;
    assert_eq!(
        through.status,
        200,
        "{}",
        String::from_utf8_lossy(&through.body)
    );
    assert_eq!(
        String::from_utf8_lossy(&through.body),
        String::from_utf8_lossy(&direct.body),
        "{request_id}: the client must get the upstream's bytes unchanged"
    );
    assert_eq!(through.body, direct.body);
    assert_eq!(
        through.headers["x-demo-seen-accept-encoding"], "identity",
        "{request_id}"
    );
    through
}

fn sse_events(body: &[u8]) -> usize {
    String::from_utf8_lossy(body).matches("\n\n").count()
}

// gpt-4o-mini (2024-07-18): $0.15 input, $0.075 cached input, $0.60 output
// per million. Fixture: 1200 prompt (200 cached), 300 completion.
// 1000 × 0.15 + 200 × 0.075 + 300 × 0.60 = 150 + 15 + 180 = 345 µ$.
const CHAT: Expect = Expect {
    provider: "openai",
    model: "gpt-4o-mini-2024-07-18",
    price_model: Some("gpt-4o-mini"),
    http_status: 200,
    streamed: false,
    input: 1200,
    output: 300,
    cache_read: 200,
    cache_write: 0,
    cache_write_1h: 0,
    reasoning: 0,
    cost: "0.000345",
    reported_cost: None,
    flags: &[],
    status: "priced",
};

#[tokio::test]
async fn openai_chat_json_and_streams_are_billed_exactly() {
    let stack = Stack::start("providers-openai-chat", StackOptions::default())
        .await
        .unwrap();
    let cred = Cred::Bearer("sk-chat-e2e-1");
    let path = "/v1/chat/completions";
    let messages = json!([{"role": "user", "content": "hi"}]);

    // JSON.
    let body = json!({"model": "gpt-4o-mini", "messages": messages});
    same_bytes_as_direct(&stack, path, &body, "chat-json", "chat-json-1", cred).await;

    // Stream where the client already asks for usage: nothing is rewritten.
    let with_usage = json!({"model": "gpt-4o-mini", "messages": messages, "stream": true,
                            "stream_options": {"include_usage": true}});
    let r = same_bytes_as_direct(
        &stack,
        path,
        &with_usage,
        "chat-stream-usage",
        "chat-stream-usage-1",
        cred,
    )
    .await;
    assert_eq!(r.headers["x-demo-seen-include-usage"], "true");
    assert_eq!(r.headers["content-type"], "text/event-stream");

    // Stream without include_usage: the filter injects it, so the client
    // gets exactly what a client asking for usage gets: one extra chunk.
    let without = json!({"model": "gpt-4o-mini", "messages": messages, "stream": true});
    let plain = post(&stack, stack.upstream_url(path), &without, &[]).await;
    let expected = post(&stack, stack.upstream_url(path), &with_usage, &[]).await;
    assert!(!String::from_utf8_lossy(&plain.body).contains("\"usage\""));
    assert_eq!(sse_events(&expected.body), sse_events(&plain.body) + 1);
    let through = post(
        &stack,
        stack.envoy_url(path),
        &without,
        &through_headers("chat-stream-plain", "chat-stream-plain-1", cred),
    )
    .await;
    assert_eq!(through.status, 200);
    assert_eq!(through.headers["x-demo-seen-include-usage"], "true");
    assert_eq!(
        String::from_utf8_lossy(&through.body),
        String::from_utf8_lossy(&expected.body)
    );
    assert_ne!(through.body, plain.body);

    // A client that asks for gzip is still billed: upstream was asked for
    // identity, so the body arrives readable (and is what upstream sends
    // for identity).
    let through = post(
        &stack,
        stack.envoy_url(path),
        &body,
        &[
            through_headers("chat-gzip-client", "chat-gzip-client-1", cred),
            vec![("accept-encoding", "gzip".to_string())],
        ]
        .concat(),
    )
    .await;
    assert_eq!(through.status, 200);
    assert_eq!(through.headers["x-demo-seen-accept-encoding"], "identity");
    assert!(through.headers.get("content-encoding").is_none());
    let direct = post(&stack, stack.upstream_url(path), &body, &[]).await;
    assert_eq!(through.body, direct.body);

    expect_one_row(&stack, "chat-json", "chat-json-1", cred, &CHAT).await;
    let streamed = Expect {
        streamed: true,
        ..CHAT
    };
    expect_one_row(
        &stack,
        "chat-stream-usage",
        "chat-stream-usage-1",
        cred,
        &streamed,
    )
    .await;
    expect_one_row(
        &stack,
        "chat-stream-plain",
        "chat-stream-plain-1",
        cred,
        &streamed,
    )
    .await;
    expect_one_row(
        &stack,
        "chat-gzip-client",
        "chat-gzip-client-1",
        cred,
        &CHAT,
    )
    .await;
}

#[tokio::test]
async fn openrouter_and_responses_are_billed_exactly() {
    let stack = Stack::start("providers-openrouter-responses", StackOptions::default())
        .await
        .unwrap();
    let cred = Cred::Bearer("sk-or-v1-e2e");
    let messages = json!([{"role": "user", "content": "hi"}]);
    let path = "/api/v1/chat/completions";
    let body = json!({"model": "openai/gpt-4o-mini", "messages": messages});
    same_bytes_as_direct(&stack, path, &body, "or-json", "or-json-1", cred).await;
    let stream = json!({"model": "openai/gpt-4o-mini", "messages": messages, "stream": true});
    same_bytes_as_direct(&stack, path, &stream, "or-stream", "or-stream-1", cred).await;

    // openai/gpt-4o-mini on OpenRouter: $0.15 / $0.075 cached / $0.60.
    // 1000 prompt (100 cached), 50 completion:
    // 900 × 0.15 + 100 × 0.075 + 50 × 0.60 = 135 + 7.5 + 30 = 172.5 µ$;
    // OpenRouter's own figure, 0.000178, is kept to the digit.
    let or = Expect {
        provider: "openrouter",
        model: "openai/gpt-4o-mini",
        price_model: Some("openai/gpt-4o-mini"),
        http_status: 200,
        streamed: false,
        input: 1000,
        output: 50,
        cache_read: 100,
        cache_write: 0,
        cache_write_1h: 0,
        reasoning: 0,
        cost: "0.0001725",
        reported_cost: Some("0.000178"),
        flags: &[],
        status: "priced",
    };
    expect_one_row(&stack, "or-json", "or-json-1", cred, &or).await;
    expect_one_row(
        &stack,
        "or-stream",
        "or-stream-1",
        cred,
        &Expect {
            streamed: true,
            ..or
        },
    )
    .await;

    let cred = Cred::Bearer("sk-resp-e2e");
    let path = "/v1/responses";
    let body = json!({"model": "o4-mini", "input": "hi"});
    same_bytes_as_direct(&stack, path, &body, "resp-json", "resp-json-1", cred).await;
    let stream = json!({"model": "o4-mini", "input": "hi", "stream": true});
    let r = same_bytes_as_direct(&stack, path, &stream, "resp-stream", "resp-stream-1", cred).await;
    // The Responses API has no include_usage: nothing is injected.
    assert_eq!(r.headers["x-demo-seen-include-usage"], "false");

    // o4-mini: $1.10 input, $0.275 cached, $4.40 output (reasoning billed
    // as output). 500 input (100 cached), 400 output (256 reasoning):
    // 400 × 1.10 + 100 × 0.275 + 400 × 4.40 = 440 + 27.5 + 1760 = 2227.5 µ$.
    let resp = Expect {
        provider: "openai",
        model: "o4-mini-2025-04-16",
        price_model: Some("o4-mini"),
        http_status: 200,
        streamed: false,
        input: 500,
        output: 400,
        cache_read: 100,
        cache_write: 0,
        cache_write_1h: 0,
        reasoning: 256,
        cost: "0.0022275",
        reported_cost: None,
        flags: &[],
        status: "priced",
    };
    expect_one_row(&stack, "resp-json", "resp-json-1", cred, &resp).await;
    expect_one_row(
        &stack,
        "resp-stream",
        "resp-stream-1",
        cred,
        &Expect {
            streamed: true,
            ..resp
        },
    )
    .await;
}

// claude-sonnet-4-5: $3.00 input, $0.30 cache read, $3.75 5-minute cache
// write, $15.00 output. Fixture: input 50 + cache read 1000 + cache write
// 200 (5m) = 1250 normalized input; output 120 (the cumulative figure of
// message_delta when streamed).
// 50 × 3 + 1000 × 0.30 + 200 × 3.75 + 120 × 15 = 150 + 300 + 750 + 1800 = 3000 µ$.
const ANTHROPIC: Expect = Expect {
    provider: "anthropic",
    model: "claude-sonnet-4-5-20250929",
    price_model: Some("claude-sonnet-4-5"),
    http_status: 200,
    streamed: false,
    input: 1250,
    output: 120,
    cache_read: 1000,
    cache_write: 200,
    cache_write_1h: 0,
    reasoning: 0,
    cost: "0.003",
    reported_cost: None,
    flags: &[],
    status: "priced",
};

#[tokio::test]
async fn anthropic_and_gemini_are_billed_exactly() {
    let stack = Stack::start("providers-anthropic-gemini", StackOptions::default())
        .await
        .unwrap();
    let cred = Cred::XApiKey("sk-ant-e2e");
    let path = "/v1/messages";
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                      "messages": [{"role": "user", "content": "hi"}]});
    same_bytes_as_direct(&stack, path, &body, "ant-json", "ant-json-1", cred).await;
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = same_bytes_as_direct(&stack, path, &stream, "ant-stream", "ant-stream-1", cred).await;
    assert_eq!(r.headers["x-demo-seen-include-usage"], "false");
    expect_one_row(&stack, "ant-json", "ant-json-1", cred, &ANTHROPIC).await;
    expect_one_row(
        &stack,
        "ant-stream",
        "ant-stream-1",
        cred,
        &Expect {
            streamed: true,
            ..ANTHROPIC
        },
    )
    .await;

    let cred = Cred::GoogApiKey("AIza-e2e-gemini");
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    same_bytes_as_direct(
        &stack,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &body,
        "gem-json",
        "gem-json-1",
        cred,
    )
    .await;
    same_bytes_as_direct(
        &stack,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &body,
        "gem-stream",
        "gem-stream-1",
        cred,
    )
    .await;
    // gemini-2.5-flash: $0.30 input, $2.50 output (thinking billed as
    // output). 800 prompt; output 150 candidates + 60 thoughts = 210:
    // 800 × 0.30 + 210 × 2.50 = 240 + 525 = 765 µ$.
    let gem = Expect {
        provider: "gemini",
        model: "gemini-2.5-flash",
        price_model: Some("gemini-2.5-flash"),
        http_status: 200,
        streamed: false,
        input: 800,
        output: 210,
        cache_read: 0,
        cache_write: 0,
        cache_write_1h: 0,
        reasoning: 60,
        cost: "0.000765",
        reported_cost: None,
        flags: &[],
        status: "priced",
    };
    expect_one_row(&stack, "gem-json", "gem-json-1", cred, &gem).await;
    expect_one_row(
        &stack,
        "gem-stream",
        "gem-stream-1",
        cred,
        &Expect {
            streamed: true,
            ..gem
        },
    )
    .await;
}

#[tokio::test]
async fn compressed_failed_and_abandoned_responses_are_recorded_honestly() {
    let stack = Stack::start("providers-faults", StackOptions::default())
        .await
        .unwrap();
    let cred = Cred::Bearer("sk-faults-e2e");
    let path = "/v1/chat/completions";
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});

    // An upstream that gzips although asked for identity: the client gets
    // the gzip bytes untouched; the row says why it has no tokens.
    let gz = [("x-demo-gzip", "1".to_string())];
    let direct = post(&stack, stack.upstream_url(path), &body, &gz).await;
    assert_eq!(direct.headers["content-encoding"], "gzip");
    assert_eq!(&direct.body[..2], &[0x1f, 0x8b]);
    let through = post(
        &stack,
        stack.envoy_url(path),
        &body,
        &[
            through_headers("gzip-upstream", "gzip-upstream-1", cred),
            gz.to_vec(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(through.status, 200);
    assert_eq!(through.headers["content-encoding"], "gzip");
    assert_eq!(through.headers["x-demo-seen-accept-encoding"], "identity");
    assert_eq!(through.body, direct.body, "gzip bytes must pass unchanged");
    // No usage could be read: zero tokens and zero cost, but flagged.
    let compressed = Expect {
        model: "gpt-4o-mini",
        input: 0,
        output: 0,
        cache_read: 0,
        cost: "0",
        flags: &["compressed"],
        ..CHAT
    };
    expect_one_row(
        &stack,
        "gzip-upstream",
        "gzip-upstream-1",
        cred,
        &compressed,
    )
    .await;

    // Upstream 500: the client gets the error untouched; the row records
    // the status, no tokens, no cost.
    let err = [("x-demo-status", "500".to_string())];
    let direct = post(&stack, stack.upstream_url(path), &body, &err).await;
    assert_eq!(direct.status, 500);
    let through = post(
        &stack,
        stack.envoy_url(path),
        &body,
        &[
            through_headers("upstream-500", "upstream-500-1", cred),
            err.to_vec(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(through.status, 500);
    assert_eq!(through.body, direct.body);
    let failed = Expect {
        http_status: 500,
        flags: &["upstream_error"],
        ..compressed
    };
    expect_one_row(&stack, "upstream-500", "upstream-500-1", cred, &failed).await;

    // A client that hangs up mid-stream: the upstream sends message_start,
    // content_block_start and ping, then stalls; the client reads those
    // three events and drops the connection.
    let acred = Cred::XApiKey("sk-ant-abandon");
    let stream = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
                        "messages": [{"role": "user", "content": "hi"}]});
    let mut req = stack
        .http
        .post(stack.envoy_url("/v1/messages"))
        .json(&stream)
        .header("x-demo-stall-after", "3");
    for (k, v) in through_headers("abandoned", "abandoned-1", acred) {
        req = req.header(k, v);
    }
    let response = req.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut chunks = response.bytes_stream();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sse_events(&seen) < 3 {
        assert!(Instant::now() < deadline, "three events did not arrive");
        let chunk = tokio::time::timeout(Duration::from_secs(10), chunks.next())
            .await
            .expect("events stalled too early")
            .expect("stream ended early")
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: ping\n"), "{text}");
    drop(chunks); // hang up
                  // Only message_start's usage was seen: 50 + 1000 cache read + 200
                  // cache write = 1250 input, output 1 (message_start's initial figure).
                  // 50 × 3 + 1000 × 0.30 + 200 × 3.75 + 1 × 15 = 150 + 300 + 750 + 15 = 1215 µ$.
    let abandoned = Expect {
        streamed: true,
        output: 1,
        cost: "0.001215",
        flags: &["incomplete"],
        ..ANTHROPIC
    };
    expect_one_row(&stack, "abandoned", "abandoned-1", acred, &abandoned).await;
    // The filter counted it as an incomplete stream (reported on its tick).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let incomplete = stack
            .envoy_stat("wasmcustom.llm_billing.incomplete_streams")
            .await
            .unwrap();
        if incomplete >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "incomplete_streams stayed {incomplete}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn large_requests_and_responses_pass_unchanged_and_are_billed_exactly() {
    let stack = Stack::start("providers-large", StackOptions::default())
        .await
        .unwrap();
    let cred = Cred::Bearer("sk-large-e2e");

    // Request bodies over Envoy's 1 MiB buffer limit are never held back by
    // the filter (Envoy would answer 413): they pass unread, and the row is
    // still exact because usage and model come from the response.
    let big_prompt = "y".repeat(2_000_000);
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big_prompt}]});
    same_bytes_as_direct(
        &stack,
        "/v1/chat/completions",
        &body,
        "big-request",
        "big-request-1",
        cred,
    )
    .await;
    // Just under the limit: read, and include_usage is still injected.
    let base = json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": ""}]})
    .to_string()
    .len();
    let body = json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "y".repeat(960 * 1024 - base)}]});
    assert_eq!(body.to_string().len(), 960 * 1024);
    let r = post(
        &stack,
        stack.envoy_url("/v1/chat/completions"),
        &body,
        &through_headers("big-stream-request", "big-stream-request-1", cred),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-demo-seen-include-usage"], "true");

    // Responses larger than the filter's windows: a 2 MB JSON body (over
    // max_json_body_bytes) and a Responses stream whose final
    // response.completed event repeats a 100 KB answer (over
    // max_sse_event_bytes). The client gets every byte; the usage is found.
    let pad = |n: usize| vec![("x-demo-pad-bytes", n.to_string())];
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let direct = post(
        &stack,
        stack.upstream_url("/v1/chat/completions"),
        &chat,
        &pad(2_000_000),
    )
    .await;
    assert!(direct.body.len() > 2_000_000);
    let through = post(
        &stack,
        stack.envoy_url("/v1/chat/completions"),
        &chat,
        &[
            through_headers("big-json", "big-json-1", cred),
            pad(2_000_000),
        ]
        .concat(),
    )
    .await;
    assert_eq!(through.status, 200);
    assert_eq!(through.body, direct.body);

    let resp = json!({"model": "o4-mini", "input": "hi", "stream": true});
    let direct = post(
        &stack,
        stack.upstream_url("/v1/responses"),
        &resp,
        &pad(100_000),
    )
    .await;
    let completed = String::from_utf8_lossy(&direct.body)
        .split("\n\n")
        .find(|e| e.starts_with("event: response.completed"))
        .map(str::len)
        .unwrap();
    assert!(completed > 100_000, "the final event is {completed} bytes");
    let through = post(
        &stack,
        stack.envoy_url("/v1/responses"),
        &resp,
        &[through_headers("big-sse", "big-sse-1", cred), pad(100_000)].concat(),
    )
    .await;
    assert_eq!(through.status, 200);
    assert_eq!(through.body, direct.body);

    expect_one_row(&stack, "big-request", "big-request-1", cred, &CHAT).await;
    expect_one_row(
        &stack,
        "big-stream-request",
        "big-stream-request-1",
        cred,
        &Expect {
            streamed: true,
            ..CHAT
        },
    )
    .await;
    expect_one_row(&stack, "big-json", "big-json-1", cred, &CHAT).await;
    // o4-mini, as in openrouter_and_responses_are_billed_exactly: 2227.5 µ$.
    expect_one_row(
        &stack,
        "big-sse",
        "big-sse-1",
        cred,
        &Expect {
            provider: "openai",
            model: "o4-mini-2025-04-16",
            price_model: Some("o4-mini"),
            http_status: 200,
            streamed: true,
            input: 500,
            output: 400,
            cache_read: 100,
            cache_write: 0,
            cache_write_1h: 0,
            reasoning: 256,
            cost: "0.0022275",
            reported_cost: None,
            flags: &[],
            status: "priced",
        },
    )
    .await;
}

/// Azure OpenAI (a deployment in the path, no model in the body, the
/// `api-key` credential) and Vertex AI's Anthropic models (Messages shapes
/// behind `:rawPredict` / `:streamRawPredict`) are billed like their vendors.
#[tokio::test]
async fn azure_openai_and_vertex_anthropic_are_billed_exactly() {
    let stack = Stack::start("providers-azure-vertex", StackOptions::default())
        .await
        .unwrap();
    let cred = Cred::AzureApiKey("azure-e2e-key");
    let path = "/openai/deployments/prod-mini/chat/completions?api-version=2024-10-21";
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    same_bytes_as_direct(&stack, path, &body, "azure-json", "azure-json-1", cred).await;
    let stream = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
                        "stream_options": {"include_usage": true}});
    same_bytes_as_direct(
        &stack,
        path,
        &stream,
        "azure-stream",
        "azure-stream-1",
        cred,
    )
    .await;
    let azure = Expect {
        provider: "azure",
        ..CHAT
    };
    expect_one_row(&stack, "azure-json", "azure-json-1", cred, &azure).await;
    let streamed = Expect {
        streamed: true,
        ..azure
    };
    expect_one_row(&stack, "azure-stream", "azure-stream-1", cred, &streamed).await;

    let cred = Cred::Bearer("ya29.vertex-e2e-token");
    let base = "/v1/projects/demo/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929";
    let body = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 1024,
                      "messages": [{"role": "user", "content": "hi"}]});
    same_bytes_as_direct(
        &stack,
        &format!("{base}:rawPredict"),
        &body,
        "vertex-json",
        "vertex-json-1",
        cred,
    )
    .await;
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    same_bytes_as_direct(
        &stack,
        &format!("{base}:streamRawPredict"),
        &stream,
        "vertex-stream",
        "vertex-stream-1",
        cred,
    )
    .await;
    // Google bills Vertex AI's Claude: provider `vertex_ai`, the model as
    // the path names it, priced like Anthropic's unless a Vertex price list
    // says otherwise.
    let vertex = Expect {
        provider: "vertex_ai",
        model: "claude-sonnet-4-5@20250929",
        ..ANTHROPIC
    };
    expect_one_row(&stack, "vertex-json", "vertex-json-1", cred, &vertex).await;
    let streamed = Expect {
        streamed: true,
        ..vertex
    };
    expect_one_row(&stack, "vertex-stream", "vertex-stream-1", cred, &streamed).await;
}
