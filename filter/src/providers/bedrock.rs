//! AWS Bedrock Runtime: Converse, ConverseStream, InvokeModel and
//! InvokeModelWithResponseStream.
//!
//! The model is the `{modelId}` of `/model/{modelId}/{operation}`,
//! percent-decoded (a foundation model id, a cross-region inference profile
//! such as `us.anthropic.claude-…-v1:0`, or an ARN): responses do not name
//! it. Bedrock's own counts keep cache reads and writes out of the input
//! count (`inputTokens` beside `cacheReadInputTokens` and
//! `cacheWriteInputTokens`), so they are added in, as for Anthropic.
//!
//! * Converse: `usage` of the JSON body.
//! * ConverseStream: the event stream's `metadata` event carries `usage`;
//!   it is the last event, so the stream is complete once it is seen.
//! * InvokeModel: the model's native body, and the counts AWS bills in the
//!   `x-amzn-bedrock-*-token-count` response headers (the headers win; the
//!   native Anthropic body adds the 1 hour cache-write split). Embedding
//!   models are billed through the same headers.
//! * InvokeModelWithResponseStream: `chunk` events whose payload is
//!   `{"bytes": base64(native event)}`; the last one carries
//!   `amazon-bedrock-invocationMetrics`. Native Anthropic events are
//!   followed as an Anthropic stream; the metrics win where present.

use base64::Engine;
use serde::de::{Deserialize, Deserializer};
use serde_json::Value;

use super::anthropic::MessagesStream;
use super::{clamp, number_u64, Extraction};
use crate::capture::{cap_model, contains, find_last_object_span};
use crate::eventstream::Message;
use crate::record::Usage;

/// A Bedrock Runtime operation, from the last path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Converse,
    ConverseStream,
    Invoke,
    InvokeStream,
}

const OPERATIONS: [(&str, Operation); 4] = [
    ("/converse-stream", Operation::ConverseStream),
    ("/converse", Operation::Converse),
    ("/invoke-with-response-stream", Operation::InvokeStream),
    ("/invoke", Operation::Invoke),
];

/// The operation and raw (still encoded) model id of a Bedrock Runtime
/// path (`…/model/{modelId}/{operation}`, query string already removed).
/// The id runs to the operation suffix, so an unencoded ARN (with `/`)
/// still comes out whole.
pub fn parse_path(path: &str) -> Option<(Operation, &str)> {
    let (op, rest) = OPERATIONS
        .iter()
        .find_map(|(suffix, op)| path.strip_suffix(suffix).map(|rest| (*op, rest)))?;
    let at = rest.find("/model/")?;
    let id = rest.get(at + "/model/".len()..)?;
    (!id.is_empty()).then_some((op, id))
}

/// The model id of a Bedrock path, percent-decoded and capped.
pub fn model_from_path(path: &str) -> Option<String> {
    parse_path(path).and_then(|(_, id)| cap_model(&percent_decode(id)))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` sequences decoded; anything else (and a broken `%`) kept as is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let pair = (b.get(i + 1).copied().and_then(hex_digit))
            .zip(b.get(i + 2).copied().and_then(hex_digit));
        match (c, pair) {
            (b'%', Some((hi, lo))) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bedrock's counts: `input` excludes the cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Counts {
    /// The record's convention (input includes the cache counts).
    pub fn usage(self, cache_write_1h: u64) -> Usage {
        clamp(Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write),
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            cache_write_1h_tokens: cache_write_1h,
            reasoning_tokens: 0,
        })
    }
}

/// A count member: a non-negative number, anything else absent (one odd
/// value must not lose the rest of the object).
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => number_u64(&n),
        _ => None,
    })
}

/// An object member read leniently: anything but the expected object is
/// absent (arrays too, which serde would read into a struct by position).
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        v @ Value::Object(_) => serde_json::from_value(v).ok(),
        _ => None,
    })
}

/// Every name Bedrock (Converse, Nova's native body, invocation metrics)
/// gives its counts.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
struct CountsJson {
    #[serde(default, deserialize_with = "count", alias = "inputTokenCount")]
    #[serde(rename = "inputTokens")]
    input: Option<u64>,
    #[serde(default, deserialize_with = "count", alias = "outputTokenCount")]
    #[serde(rename = "outputTokens")]
    output: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        alias = "cacheReadInputTokenCount"
    )]
    #[serde(rename = "cacheReadInputTokens")]
    cache_read: Option<u64>,
    #[serde(
        default,
        deserialize_with = "count",
        alias = "cacheWriteInputTokenCount"
    )]
    #[serde(rename = "cacheWriteInputTokens")]
    cache_write: Option<u64>,
}

impl CountsJson {
    fn counts(self) -> Option<Counts> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        Some(Counts {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_write: self.cache_write.unwrap_or(0),
        })
    }
}

/// The members read of a Bedrock JSON document (a Converse body, a
/// ConverseStream `metadata` event, a native body or event).
#[derive(Debug, Default, serde::Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<CountsJson>,
    #[serde(default, deserialize_with = "lenient")]
    #[serde(rename = "amazon-bedrock-invocationMetrics")]
    invocation_metrics: Option<CountsJson>,
    /// Titan embeddings.
    #[serde(default, deserialize_with = "count", rename = "inputTextTokenCount")]
    input_text_token_count: Option<u64>,
    /// Meta Llama native bodies.
    #[serde(default, deserialize_with = "count", rename = "prompt_token_count")]
    prompt_token_count: Option<u64>,
    #[serde(default, deserialize_with = "count", rename = "generation_token_count")]
    generation_token_count: Option<u64>,
}

impl Envelope {
    fn parse(bytes: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(bytes).ok()
    }

    /// The counts a native body gives, in the order of how much they say.
    fn native_counts(&self) -> Option<Counts> {
        if let Some(c) = self.usage.and_then(CountsJson::counts) {
            return Some(c);
        }
        if self.prompt_token_count.is_some() || self.generation_token_count.is_some() {
            return Some(Counts {
                input: self.prompt_token_count.unwrap_or(0),
                output: self.generation_token_count.unwrap_or(0),
                ..Counts::default()
            });
        }
        self.input_text_token_count.map(|input| Counts {
            input,
            ..Counts::default()
        })
    }
}

/// A Converse body, `None` when it is not JSON. A body too large to keep
/// whole is read through its `usage` object in the head or tail window.
pub fn extract_converse(whole: Option<&[u8]>, head: &[u8], tail: &[u8]) -> Option<Extraction> {
    let counts = match whole {
        Some(body) => Envelope::parse(body)?.usage.and_then(CountsJson::counts),
        None => find_last_object_span(tail, "usage")
            .or_else(|| find_last_object_span(head, "usage"))
            .and_then(|span| serde_json::from_slice::<Value>(span).ok())
            .filter(Value::is_object)
            .and_then(|v| serde_json::from_value::<CountsJson>(v).ok())
            .and_then(CountsJson::counts),
    };
    Some(from_counts(counts, 0))
}

fn from_counts(counts: Option<Counts>, cache_write_1h: u64) -> Extraction {
    Extraction {
        usage: counts.map(|c| c.usage(cache_write_1h)).unwrap_or_default(),
        usage_seen: counts.is_some(),
        ..Extraction::default()
    }
}

/// The token counts of InvokeModel's `x-amzn-bedrock-*` response headers.
pub fn counts_from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Counts> {
    let n = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
    let input = n("x-amzn-bedrock-input-token-count");
    let output = n("x-amzn-bedrock-output-token-count");
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Counts {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        cache_read: n("x-amzn-bedrock-cache-read-input-token-count").unwrap_or(0),
        cache_write: n("x-amzn-bedrock-cache-write-input-token-count").unwrap_or(0),
    })
}

/// An InvokeModel body (`None` when it is not JSON) with the header counts.
pub fn extract_invoke(body: Option<&[u8]>, headers: Option<Counts>) -> Option<Extraction> {
    let native = match body {
        Some(b) => Some(native_body(b)?),
        None => None,
    };
    let mut ext = match (headers, native) {
        (Some(c), native) => {
            let cache_1h = native.as_ref().map_or(0, |n| n.usage.cache_write_1h_tokens);
            from_counts(Some(c), cache_1h)
        }
        (None, Some(native)) => native,
        (None, None) => Extraction::default(),
    };
    // The path names the model; a native body's own name is not kept.
    ext.model = None;
    Some(ext)
}

/// A native body: Anthropic Messages for Claude, else the Bedrock names.
fn native_body(body: &[u8]) -> Option<Extraction> {
    let top = crate::typed::parse(body).ok()?;
    let node = top.object();
    if node.ty.as_deref() == Some("message") && node.usage.is_some() {
        return Some(super::anthropic::extract(node));
    }
    let counts = Envelope::parse(body).and_then(|e| e.native_counts());
    Some(from_counts(counts, 0))
}

/// Longest base64 `bytes` payload decoded (a native event is far smaller;
/// the decoder's buffer bounds it anyway).
const MAX_CHUNK_BASE64: usize = 1 << 20;

/// ConverseStream and InvokeModelWithResponseStream state, fed whole
/// event-stream messages.
#[derive(Debug, Default)]
pub struct BedrockStream {
    /// ConverseStream `metadata` usage, or the invocation metrics.
    counts: Option<Counts>,
    /// Native Anthropic events inside `chunk`s.
    anthropic: MessagesStream,
    /// `metadata` (ConverseStream) or the invocation metrics seen.
    finished: bool,
    /// A `chunk` payload that was not `{"bytes": base64}` of JSON.
    bad_chunks: u32,
    /// An `exception` or `error` message (throttling, model errors).
    exception: bool,
    /// A message that may have carried usage was too large to read.
    skipped_usage: bool,
    messages: u64,
}

impl BedrockStream {
    pub fn on_message(&mut self, m: &Message<'_>) {
        self.messages = self.messages.saturating_add(1);
        if matches!(m.message_type, Some("exception" | "error")) {
            self.exception = true;
            return;
        }
        let event = m.event_type.unwrap_or("");
        if m.skipped {
            self.skipped_usage |= matches!(event, "metadata" | "chunk");
            return;
        }
        match event {
            "metadata" => {
                self.finished = true;
                if let Some(c) = Envelope::parse(m.payload)
                    .and_then(|e| e.usage)
                    .and_then(CountsJson::counts)
                {
                    self.counts = Some(c);
                }
            }
            "chunk" => self.on_chunk(m.payload),
            _ => {}
        }
    }

    fn on_chunk(&mut self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Chunk<'a> {
            #[serde(borrow)]
            bytes: Option<&'a str>,
        }
        let native = serde_json::from_slice::<Chunk<'_>>(payload)
            .ok()
            .and_then(|c| c.bytes)
            .filter(|b| b.len() <= MAX_CHUNK_BASE64)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        let Some(native) = native else {
            self.bad_chunks = self.bad_chunks.saturating_add(1);
            return;
        };
        let Ok(top) = crate::typed::parse(&native) else {
            self.bad_chunks = self.bad_chunks.saturating_add(1);
            return;
        };
        self.anthropic.on_node(None, top.object());
        if contains(&native, b"\"amazon-bedrock-invocationMetrics\"") {
            if let Some(c) = Envelope::parse(&native)
                .and_then(|e| e.invocation_metrics)
                .and_then(CountsJson::counts)
            {
                self.counts = Some(c);
                self.finished = true;
            }
        }
    }

    /// Whether the stream's final usage was seen.
    pub fn is_complete(&self) -> bool {
        self.finished || self.anthropic.stop_seen
    }

    pub fn had_exception(&self) -> bool {
        self.exception
    }

    /// Chunks that could not be read.
    pub fn bad_chunks(&self) -> u32 {
        self.bad_chunks
    }

    /// A message that may have carried the usage was dropped unread.
    pub fn skipped_usage(&self) -> bool {
        self.skipped_usage
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    pub fn extraction(&self) -> Extraction {
        let native = self.anthropic.extraction();
        match self.counts {
            Some(c) => from_counts(Some(c), native.usage.cache_write_1h_tokens),
            None if native.usage_seen => Extraction {
                model: None,
                ..native
            },
            None => Extraction::default(),
        }
    }

    /// Heap bytes held (the native stream's model and cost strings).
    pub fn retained_bytes(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::capacity);
        s(&self.anthropic.model) + s(&self.anthropic.reported_cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::frame;
    use crate::eventstream::EventStreamDecoder;

    #[test]
    fn paths_name_the_operation_and_the_decoded_model() {
        let p = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream";
        assert_eq!(
            parse_path(p),
            Some((
                Operation::ConverseStream,
                "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
            ))
        );
        assert_eq!(
            model_from_path(p).as_deref(),
            Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        assert_eq!(
            model_from_path("/model/anthropic.claude-3-haiku-20240307-v1:0/invoke").as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-3-70b-instruct-v1:0";
        let encoded = arn.replace(':', "%3A").replace('/', "%2F");
        assert_eq!(
            model_from_path(&format!("/model/{encoded}/converse")).as_deref(),
            Some(arn)
        );
        // An unencoded ARN runs to the operation.
        assert_eq!(
            model_from_path(&format!("/model/{arn}/invoke-with-response-stream")).as_deref(),
            Some(arn)
        );
        assert_eq!(
            parse_path("/bedrock/model/amazon.nova-pro-v1:0/invoke").map(|p| p.0),
            Some(Operation::Invoke)
        );
        assert_eq!(parse_path("/model//converse"), None);
        assert_eq!(parse_path("/v1/chat/completions"), None);
        assert_eq!(parse_path("/model/x/other"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz%41"), "a%zzA");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
    }

    fn usage(input: u64, output: u64, cr: u64, cw: u64, cw1h: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cr,
            cache_write_tokens: cw,
            cache_write_1h_tokens: cw1h,
            reasoning_tokens: 0,
        }
    }

    const CONVERSE: &[u8] = include_bytes!("../../tests/fixtures/bedrock_converse.json");

    #[test]
    fn converse_adds_the_cache_counts_to_the_input() {
        let ext = extract_converse(Some(CONVERSE), &[], &[]).unwrap();
        assert!(ext.usage_seen);
        // 1000 uncached + 200 cache reads + 100 cache writes.
        assert_eq!(ext.usage, usage(1300, 300, 200, 100, 0));
        let ext = extract_converse(
            Some(br#"{"usage":{"inputTokens":12,"outputTokens":5,"totalTokens":17}}"#),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(ext.usage, usage(12, 5, 0, 0, 0));
        // No usage, odd usage, odd counts.
        assert!(!extract_converse(Some(b"{}"), &[], &[]).unwrap().usage_seen);
        assert!(
            !extract_converse(Some(br#"{"usage":[1]}"#), &[], &[])
                .unwrap()
                .usage_seen
        );
        let odd = br#"{"usage":{"inputTokens":"12","outputTokens":5.7,"cacheReadInputTokens":-1}}"#;
        assert_eq!(
            extract_converse(Some(odd), &[], &[]).unwrap().usage,
            usage(0, 5, 0, 0, 0)
        );
        assert_eq!(extract_converse(Some(b"{\"usage\":"), &[], &[]), None);
        // Too large to keep: the tail window's usage.
        let tail = br#"..."}]}},"usage":{"inputTokens":7,"outputTokens":9},"metrics":{}}"#;
        let ext = extract_converse(None, b"{\"output\":", tail).unwrap();
        assert_eq!(ext.usage, usage(7, 9, 0, 0, 0));
    }

    #[test]
    fn invoke_bills_the_header_counts_and_falls_back_to_the_native_body() {
        let headers = |list: &'static [(&'static str, &'static str)]| {
            counts_from_headers(move |name| list.iter().find(|h| h.0 == name).map(|h| h.1))
        };
        let claude = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],
            "usage":{"input_tokens":40,"cache_read_input_tokens":500,"cache_creation_input_tokens":60,
                     "cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":40},"output_tokens":25}}"#;
        let h = headers(&[
            ("x-amzn-bedrock-input-token-count", "40"),
            ("x-amzn-bedrock-output-token-count", "25"),
            ("x-amzn-bedrock-cache-read-input-token-count", "500"),
            ("x-amzn-bedrock-cache-write-input-token-count", "60"),
        ]);
        let ext = extract_invoke(Some(claude), h).unwrap();
        assert_eq!(ext.usage, usage(600, 25, 500, 60, 40));
        assert_eq!(ext.model, None, "the path names the model");
        // Without headers, the native Anthropic body.
        assert_eq!(
            extract_invoke(Some(claude), None).unwrap().usage,
            usage(600, 25, 500, 60, 40)
        );
        // Nova, Llama and Titan embeddings native bodies.
        let nova = br#"{"output":{},"usage":{"inputTokens":10,"outputTokens":3,"totalTokens":13,"cacheReadInputTokenCount":4,"cacheWriteInputTokenCount":0}}"#;
        assert_eq!(
            extract_invoke(Some(nova), None).unwrap().usage,
            usage(14, 3, 4, 0, 0)
        );
        let llama = br#"{"generation":"hi","prompt_token_count":11,"generation_token_count":2,"stop_reason":"stop"}"#;
        assert_eq!(
            extract_invoke(Some(llama), None).unwrap().usage,
            usage(11, 2, 0, 0, 0)
        );
        let titan = br#"{"embedding":[0.1,0.2],"inputTextTokenCount":7}"#;
        assert_eq!(
            extract_invoke(Some(titan), None).unwrap().usage,
            usage(7, 0, 0, 0, 0)
        );
        // Cohere embeddings say nothing in the body: the headers do.
        let cohere =
            br#"{"embeddings":[[0.1]],"id":"x","response_type":"embeddings_floats","texts":["a"]}"#;
        let h = headers(&[("x-amzn-bedrock-input-token-count", "3")]);
        let ext = extract_invoke(Some(cohere), h).unwrap();
        assert!(ext.usage_seen);
        assert_eq!(ext.usage, usage(3, 0, 0, 0, 0));
        assert!(!extract_invoke(Some(cohere), None).unwrap().usage_seen);
        // Not JSON, but headers: still billed.
        assert_eq!(extract_invoke(Some(b"not json"), h), None);
        assert!(extract_invoke(None, h).unwrap().usage_seen);
        assert_eq!(
            headers(&[("x-amzn-bedrock-input-token-count", "x")]),
            None,
            "a count that is not a number is absent"
        );
    }

    fn converse_stream() -> Vec<u8> {
        let mut out = Vec::new();
        for (event, payload) in [
            ("messageStart", r#"{"role":"assistant"}"#),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abc"}"#,
            ),
            ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            ("messageStop", r#"{"stopReason":"end_turn"}"#),
            (
                "metadata",
                r#"{"usage":{"inputTokens":1000,"outputTokens":300,"totalTokens":1600,"cacheReadInputTokens":200,"cacheWriteInputTokens":100},"metrics":{"latencyMs":412}}"#,
            ),
        ] {
            out.extend(frame::event(event, payload.as_bytes()));
        }
        out
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn invoke_stream(metrics: bool) -> Vec<u8> {
        let mut events = vec![
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":40,"cache_read_input_tokens":500,"cache_creation_input_tokens":60,"output_tokens":1}}}"#.to_string(),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#.to_string(),
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":25}}"#.to_string(),
        ];
        events.push(if metrics {
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":40,"outputTokenCount":25,"invocationLatency":800,"firstByteLatency":300,"cacheReadInputTokenCount":500,"cacheWriteInputTokenCount":60}}"#.to_string()
        } else {
            r#"{"type":"message_stop"}"#.to_string()
        });
        let mut out = Vec::new();
        for e in events {
            let payload = format!(r#"{{"bytes":"{}","p":"abcdefgh"}}"#, b64(&e));
            out.extend(frame::event("chunk", payload.as_bytes()));
        }
        out
    }

    fn run(bytes: &[u8], cut: usize) -> (BedrockStream, EventStreamDecoder) {
        let mut d = EventStreamDecoder::new(8 * 1024);
        let mut s = BedrockStream::default();
        let (a, b) = bytes.split_at(cut);
        d.feed(a, |m| s.on_message(m));
        d.feed(b, |m| s.on_message(m));
        (s, d)
    }

    #[test]
    fn converse_stream_usage_at_every_split_position() {
        let bytes = converse_stream();
        for cut in 0..=bytes.len() {
            let (s, d) = run(&bytes, cut);
            assert_eq!(d.error(), None, "cut {cut}");
            assert!(s.is_complete(), "cut {cut}");
            let ext = s.extraction();
            assert!(ext.usage_seen, "cut {cut}");
            assert_eq!(ext.usage, usage(1300, 300, 200, 100, 0), "cut {cut}");
            assert_eq!(s.messages(), 5);
        }
        // Without its last event the stream is not complete.
        let mut d = EventStreamDecoder::new(8 * 1024);
        let mut s = BedrockStream::default();
        let cut = bytes.len() - 20;
        d.feed(bytes.get(..cut).unwrap(), |m| s.on_message(m));
        assert!(!s.is_complete());
        assert!(!s.extraction().usage_seen);
    }

    #[test]
    fn invoke_stream_reads_the_native_events_and_the_metrics_at_every_split() {
        for metrics in [true, false] {
            let bytes = invoke_stream(metrics);
            for cut in 0..=bytes.len() {
                let (s, d) = run(&bytes, cut);
                assert_eq!(d.error(), None);
                assert!(s.is_complete(), "cut {cut}");
                assert_eq!(s.bad_chunks(), 0);
                let ext = s.extraction();
                assert_eq!(ext.usage, usage(600, 25, 500, 60, 0), "cut {cut}");
                assert_eq!(ext.model, None);
            }
        }
    }

    #[test]
    fn exceptions_and_unreadable_chunks_are_reported() {
        let mut bytes = converse_stream();
        bytes.truncate(bytes.len() / 2);
        let mut d = EventStreamDecoder::new(8 * 1024);
        let mut s = BedrockStream::default();
        d.feed(&bytes, |m| s.on_message(m));
        let exc = frame::exception("throttlingException", br#"{"message":"slow down"}"#);
        let mut d = EventStreamDecoder::new(8 * 1024);
        d.feed(&exc, |m| s.on_message(m));
        assert!(s.had_exception());
        assert!(!s.is_complete());
        let mut s = BedrockStream::default();
        for payload in [
            &b"{}"[..],
            br#"{"bytes":"!!!"}"#,
            br#"{"bytes":"bm90IGpzb24="}"#,
        ] {
            s.on_message(&Message {
                event_type: Some("chunk"),
                message_type: Some("event"),
                content_type: Some("application/json"),
                exception_type: None,
                error_code: None,
                payload,
                payload_len: payload.len(),
                skipped: false,
            });
        }
        assert_eq!(s.bad_chunks(), 3);
        s.on_message(&Message {
            event_type: Some("metadata"),
            message_type: Some("event"),
            content_type: None,
            exception_type: None,
            error_code: None,
            payload: &[],
            payload_len: 1 << 20,
            skipped: true,
        });
        assert!(s.skipped_usage());
        assert!(!s.extraction().usage_seen);
    }
}
