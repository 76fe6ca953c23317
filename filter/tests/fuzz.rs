//! A short mutation-fuzz pass over the filter's pure core, run by the test
//! command: every file of `tests/fixtures` and `tests/corpus` is mutated
//! (bit flips, byte inserts/deletes, splices with other inputs, truncation)
//! and fed through the response tracker as JSON and as SSE, for every
//! provider path, in random chunkings. It asserts what the filter promises:
//! no panic, bounded memory, and records that keep the token convention.
//! `FUZZ_ITERATIONS` (default 5000) and `FUZZ_SEED` make longer or other runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use filter::record::UsageRecord;
use filter::tracker::{Limits, RequestInfo, ResponseTracker};

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/api/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    "/unknown",
];

/// xorshift64*: deterministic, dependency-free randomness for reproducible runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn load_inputs() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut inputs = Vec::new();
    for dir in ["fixtures", "corpus"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            inputs.push(std::fs::read(&path).unwrap());
        }
    }
    assert!(
        inputs.len() >= 15,
        "corpus went missing: {} inputs",
        inputs.len()
    );
    inputs
}

fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(8) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(out.len() + 1);
                let byte = *b"{}[]\":,\n\r \\0123456789-.eE"
                    .get(rng.below(27))
                    .unwrap_or(&b'x');
                out.insert(i, byte);
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                let n = rng.below(16).min(out.len() - i);
                out.drain(i..i + n);
            }
            3 => {
                let other = &others[rng.below(others.len())];
                let (i, j) = (rng.below(out.len() + 1), rng.below(other.len() + 1));
                out.truncate(i);
                out.extend_from_slice(&other[j..]);
            }
            4 => {
                let keep = rng.below(out.len() + 1);
                out.truncate(keep);
            }
            _ => {
                // Duplicate a slice: repeated events, repeated usage blocks.
                if !out.is_empty() {
                    let i = rng.below(out.len());
                    let n = rng.below(256).min(out.len() - i);
                    let slice = out[i..i + n].to_vec();
                    out.splice(i..i, slice);
                }
            }
        }
    }
    out
}

fn run(rng: &mut Rng, body: &[u8], path: &str, sse: bool, limits: Limits) -> (UsageRecord, usize) {
    let info = RequestInfo {
        path: path.to_string(),
        request_id: "fuzz".into(),
        tenant_id: "t".into(),
        started_at_ms: 1,
        ..RequestInfo::default()
    };
    let mut tracker = ResponseTracker::new(info, limits);
    let status = [200u16, 200, 200, 500, 429][rng.below(5)];
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    tracker.on_response_headers(status, Some(content_type), None, 2);
    let mut peak = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(4096));
        let (chunk, tail) = rest.split_at(n);
        tracker.on_response_body(chunk, 3);
        peak = peak.max(tracker.retained_bytes());
        rest = tail;
    }
    (tracker.finish(rng.below(4) != 0, 4), peak)
}

#[test]
fn mutated_inputs_never_panic_and_stay_bounded() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_B111);
    let inputs = load_inputs();
    let mut rng = Rng(seed | 1);
    let limits = Limits {
        max_json_body_bytes: 64 * 1024,
        max_sse_event_bytes: 16 * 1024,
    };
    for i in 0..iterations {
        let base = &inputs[rng.below(inputs.len())];
        let body = mutate(&mut rng, base, &inputs);
        let path = PATHS[rng.below(PATHS.len())];
        let sse = rng.below(2) == 0;
        let (record, peak) = run(&mut rng, &body, path, sse, limits);
        let bound = if sse {
            limits.max_sse_event_bytes
        } else {
            limits.max_json_body_bytes
        };
        assert!(
            peak <= bound,
            "iteration {i} (seed {seed}): retained {peak} > {bound} bytes"
        );
        let u = record.usage;
        assert!(
            u.cache_read_tokens.saturating_add(u.cache_write_tokens) <= u.input_tokens,
            "iteration {i} (seed {seed}): cache subsets exceed input: {u:?}"
        );
        assert!(
            u.cache_write_1h_tokens <= u.cache_write_tokens,
            "iteration {i}: {u:?}"
        );
        assert!(
            u.reasoning_tokens <= u.output_tokens,
            "iteration {i}: {u:?}"
        );
        assert!(
            record.model.as_ref().is_none_or(|m| m.len() <= 256),
            "iteration {i}: model too long"
        );
        // The record must always serialize for the collector.
        serde_json::to_string(&record).unwrap();
    }
}

/// A tracker that has seen 200 response headers of the given kind.
fn started(path: &str, sse: bool, limits: Limits) -> ResponseTracker {
    let info = RequestInfo {
        path: path.to_string(),
        request_id: "c".into(),
        ..RequestInfo::default()
    };
    let mut tracker = ResponseTracker::new(info, limits);
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    tracker.on_response_headers(200, Some(content_type), None, 0);
    tracker
}

#[test]
fn corpus_inputs_in_every_chunking_give_the_same_record() {
    let inputs = load_inputs();
    let mut rng = Rng(42);
    let limits = Limits::default();
    for (n, input) in inputs.iter().enumerate() {
        for path in PATHS {
            for sse in [false, true] {
                let mut whole = started(path, sse, limits);
                whole.on_response_body(input, 0);
                let expected = whole.finish(true, 0);
                for _ in 0..4 {
                    let mut t = started(path, sse, limits);
                    let mut rest = &input[..];
                    while !rest.is_empty() {
                        let k = 1 + rng.below(rest.len().min(97));
                        t.on_response_body(&rest[..k], 0);
                        rest = &rest[k..];
                    }
                    let got = t.finish(true, 0);
                    assert_eq!(got.usage, expected.usage, "input #{n} {path} sse={sse}");
                    assert_eq!(got.model, expected.model, "input #{n} {path} sse={sse}");
                    assert_eq!(got.flags, expected.flags, "input #{n} {path} sse={sse}");
                }
            }
        }
    }
}
