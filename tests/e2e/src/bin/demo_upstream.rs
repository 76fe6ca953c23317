//! A small offline stand-in for LLM provider APIs, so the local stack and the
//! end-to-end tests run without network. Responses follow the real shapes of
//! OpenAI (Chat Completions, Responses), OpenRouter, Anthropic Messages and
//! Gemini, in JSON and SSE, and AWS Bedrock Converse (JSON and the binary
//! event stream), with fixed usage figures (see `e2e::fixtures`).
//!
//! Test knobs (request headers): `x-demo-status` (answer with this status),
//! `x-demo-gzip: 1` (gzip the body even if not asked), `x-demo-stall-after`
//! (send N SSE events, then hang), `x-demo-event-delay-ms`,
//! `x-demo-pad-bytes` (make the answer text N bytes longer, see
//! `fixtures::response_padded`), `x-demo-model` (name this model instead
//! of the fixture's in OpenAI chat answers, to price them differently),
//! `x-demo-eventstream-fault` (send Bedrock's event stream damaged, see
//! `e2e::eventstream::damaged`).

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use e2e::fixtures::{self, Shape};
use flate2::write::GzEncoder;
use flate2::Compression;

#[tokio::main]
async fn main() {
    let mut addr = "127.0.0.1:8090".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--addr" {
            if let Some(a) = args.next() {
                addr = a;
            }
        }
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(handle);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-upstream: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("demo-upstream listening on {addr}");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("demo-upstream: {e}");
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(shape) = Shape::from_request(&path, &request) else {
        return plain(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from_static(b"{\"error\":\"unknown path\"}"),
        );
    };
    if let Some(status) = header(&headers, "x-demo-status").and_then(|s| s.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = fixtures::error_body(shape);
        return plain(status, "application/json", Bytes::from(body));
    }
    let gzip = header(&headers, "x-demo-gzip") == Some("1")
        || header(&headers, "accept-encoding").is_some_and(|v| v.contains("gzip"));
    // Echo what the gateway sent upstream, so tests can see request rewrites.
    let seen_encoding = header(&headers, "accept-encoding")
        .unwrap_or("")
        .to_string();
    let seen_include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let pad = header(&headers, "x-demo-pad-bytes")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let mut events = fixtures::response_padded(shape, &request, pad);
    if let Some(model) = header(&headers, "x-demo-model").filter(|m| {
        !m.is_empty()
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/:".contains(&b))
    }) {
        let quoted = format!("\"{}\"", fixtures::CHAT_MODEL);
        for e in &mut events {
            *e = e.replace(&quoted, &format!("\"{model}\""));
        }
    }
    let mut response = if shape == Shape::BedrockConverseStream {
        let stall_after =
            header(&headers, "x-demo-stall-after").and_then(|s| s.parse::<usize>().ok());
        eventstream(stall_after, header(&headers, "x-demo-eventstream-fault"))
    } else if shape.streams() {
        let stall_after =
            header(&headers, "x-demo-stall-after").and_then(|s| s.parse::<usize>().ok());
        let delay = header(&headers, "x-demo-event-delay-ms")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        sse(events, stall_after, delay, gzip)
    } else {
        let body = events.concat();
        if gzip {
            let mut r = plain(
                StatusCode::OK,
                "application/json",
                Bytes::from(gzip_bytes(body.as_bytes())),
            );
            r.headers_mut().insert(
                "content-encoding",
                axum::http::HeaderValue::from_static("gzip"),
            );
            r
        } else {
            plain(StatusCode::OK, "application/json", Bytes::from(body))
        }
    };
    if let Ok(v) = seen_encoding.parse() {
        response
            .headers_mut()
            .insert("x-demo-seen-accept-encoding", v);
    }
    response.headers_mut().insert(
        "x-demo-seen-include-usage",
        axum::http::HeaderValue::from_static(if seen_include_usage { "true" } else { "false" }),
    );
    response
}

fn plain(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert("content-type", v);
    }
    r
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn sse(events: Vec<String>, stall_after: Option<usize>, delay_ms: u64, gzip: bool) -> Response {
    if gzip {
        let mut r = plain(
            StatusCode::OK,
            "text/event-stream",
            Bytes::from(gzip_bytes(events.concat().as_bytes())),
        );
        r.headers_mut().insert(
            "content-encoding",
            axum::http::HeaderValue::from_static("gzip"),
        );
        return r;
    }
    let events = events.into_iter().map(Bytes::from).collect();
    let stream = async_stream(events, stall_after, delay_ms);
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// Bedrock's binary event stream, cut into 41-byte chunks so frames split
/// mid-way (the filter must reassemble them); `stall_after` counts chunks.
fn eventstream(stall_after: Option<usize>, fault: Option<&str>) -> Response {
    let frames: Vec<Vec<u8>> = fixtures::bedrock_stream_events()
        .iter()
        .map(|(event_type, payload)| e2e::eventstream::event(event_type, payload))
        .collect();
    let bytes = fault
        .and_then(|f| e2e::eventstream::damaged(&frames, f))
        .unwrap_or_else(|| frames.concat());
    let chunks: Vec<Bytes> = bytes.chunks(41).map(Bytes::copy_from_slice).collect();
    let mut r = Response::new(Body::from_stream(async_stream(chunks, stall_after, 2)));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    r
}

fn async_stream(
    events: Vec<Bytes>,
    stall_after: Option<usize>,
    delay_ms: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(
        (events.into_iter(), 0usize),
        move |(mut it, sent)| async move {
            if stall_after.is_some_and(|n| sent >= n) {
                // Hold the stream open until the client goes away.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return None;
            }
            let event = it.next()?;
            if delay_ms > 0 && sent > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Some((Ok(event), (it, sent + 1)))
        },
    )
}
