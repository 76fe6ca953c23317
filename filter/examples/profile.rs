//! Native stand-in for one request through the filter's pure core, to find
//! where instructions go (`valgrind --tool=callgrind`); the wasm build's
//! counts differ, its proportions mostly do not.
//!
//!     cargo run --release -p filter --example profile -- BODY_FILE json|sse [N] [CHUNK]

use filter::request::prepare_request_body;
use filter::tracker::{Limits, RequestInfo, ResponseTracker};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(kind)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: profile BODY_FILE json|sse [N] [CHUNK]");
        return;
    };
    let n: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let chunk: usize = args
        .get(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or(usize::MAX);
    let Ok(body) = std::fs::read(file) else {
        eprintln!("cannot read {file}");
        return;
    };
    let sse = kind == "sse";
    let request: &[u8] = if sse {
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Summarize the billing rules in one line."}]}"#
    } else {
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Summarize the billing rules in one line."}]}"#
    };
    let mut out = 0usize;
    for i in 0..n {
        let info = RequestInfo {
            path: "/v1/chat/completions".into(),
            host: Some("127.0.0.1:18003".into()),
            request_id: format!("req-{i}"),
            tenant_id: "bench".into(),
            started_at_ms: 1,
            ..RequestInfo::default()
        };
        let mut tracker = ResponseTracker::new(info, Limits::default());
        let req = prepare_request_body("/v1/chat/completions", request, true);
        tracker.set_request_details(req.model, req.stream);
        let ct = if sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        tracker.on_response_headers(200, Some(ct), None, 2);
        for c in body.chunks(chunk.max(1)) {
            tracker.on_response_body(c, 3);
        }
        let record = tracker.finish(true, 4);
        out += serde_json::to_string(&record).map_or(0, |s| s.len());
    }
    println!("{out}");
}
