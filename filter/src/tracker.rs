//! Per-request response state machine (pure; the host glue feeds it).
//!
//! The glue calls [`ResponseTracker::on_response_headers`], then
//! [`ResponseTracker::on_response_body`] for every body chunk, then
//! [`ResponseTracker::finish`] once (end of stream, or the stream being torn
//! down) to get the [`UsageRecord`].
//!
//! Memory bound (documented contract, asserted by tests): the body-derived
//! state reported by [`ResponseTracker::retained_bytes`] never exceeds
//! * `max_sse_event_bytes` for `text/event-stream` responses, whatever the
//!   stream length: the SSE framer gets that budget minus
//!   [`STREAM_RESERVE_BYTES`], which covers the boxed stream state itself
//!   (under 1 KiB) and the accumulator's strings (model ≤ 256 bytes, cost ≤
//!   ~130 bytes); with a floor of 256 + 2048 bytes for tiny budgets;
//! * `max_json_body_bytes` for other responses (whole body up to it, then
//!   head + tail windows);
//! * 0 for compressed responses (not buffered).
//!
//! The request metadata in [`RequestInfo`] is fixed-size per request
//! (bounded by Envoy's header limits) and not counted.

use crate::capture::{cap_model, BoundedBuf};
use crate::eventstream::{End, EventStreamDecoder};
use crate::providers::bedrock::{self, BedrockStream, Counts, Operation};
use crate::providers::{
    detect_provider, detect_shape, extract_json, extract_windows, infer_shape_from_bytes,
    infer_shape_from_json, model_from_path, ApiShape, Extraction, StreamAccumulator,
};
use crate::record::{Flag, Provider, UsageRecord};
use crate::sse::SseFramer;

/// Part of `max_sse_event_bytes` kept for the stream accumulator.
pub const STREAM_RESERVE_BYTES: usize = 2048;

/// Events fed one by one per chunk while waiting to learn whether the
/// stream's irrelevant events can be skipped (the model is in the first).
const MAX_EVENTS_BEFORE_SKIPPING: usize = 4;

/// Feeds one chunk of a stream, dropping unread the runs of whole events the
/// accumulator has no use for. Feeding everything is always correct; a run
/// is only dropped where the framer itself says it is between events.
fn feed_stream(framer: &mut SseFramer, acc: &mut StreamAccumulator, chunk: &[u8]) {
    let mut rest = chunk;
    let mut one_by_one = 0;
    let mut finished_split_event = false;
    loop {
        if acc.skips_events() {
            let skip = framer.skippable_prefix(rest, StreamAccumulator::first_wanted);
            rest = rest.get(skip..).unwrap_or_default();
            // The previous chunk ended inside an event: finish it, then skip.
            if skip == 0 && !finished_split_event && !framer.between_events() {
                finished_split_event = true;
                if let Some(end) = memchr::memmem::find(rest, b"\n\n") {
                    let (event, after) = rest.split_at(end + 2);
                    framer.push(event, |ev| acc.on_event(ev));
                    rest = after;
                    continue;
                }
            }
        } else if acc.may_skip_later() && one_by_one < MAX_EVENTS_BEFORE_SKIPPING {
            // Feed one event and look again: its model may allow skipping.
            if let Some(end) = memchr::memmem::find(rest, b"\n\n") {
                one_by_one += 1;
                let (event, after) = rest.split_at(end + 2);
                framer.push(event, |ev| acc.on_event(ev));
                rest = after;
                continue;
            }
        }
        framer.push(rest, |ev| acc.on_event(ev));
        return;
    }
}

/// Default [`Limits`]: 1 MiB of JSON body, 16 KiB of SSE state.
pub const DEFAULT_MAX_JSON_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_SSE_EVENT_BYTES: usize = 16 * 1024;

/// What the glue knows about the request when the response starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `:path`, query string included.
    pub path: String,
    /// `:authority` / `Host`.
    pub host: Option<String>,
    pub request_id: String,
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub route: Option<String>,
    pub started_at_ms: u64,
    /// The model named in the request body, if any.
    pub request_model: Option<String>,
    /// The request asked for a streamed response.
    pub streamed_request: bool,
}

/// Memory limits for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Non-streamed bodies are kept whole up to this size, then only head
    /// and tail windows of it.
    pub max_json_body_bytes: usize,
    /// Total body-derived state of a streamed response.
    pub max_sse_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_body_bytes: DEFAULT_MAX_JSON_BODY_BYTES,
            max_sse_event_bytes: DEFAULT_MAX_SSE_EVENT_BYTES,
        }
    }
}

#[derive(Debug)]
struct SseState {
    framer: SseFramer,
    acc: StreamAccumulator,
}

#[derive(Debug)]
struct EventStreamState {
    decoder: EventStreamDecoder,
    acc: BedrockStream,
}

#[derive(Debug)]
enum Body {
    /// No response headers yet.
    Pending,
    Json(BoundedBuf),
    Sse(Box<SseState>),
    /// AWS event stream (Bedrock's streaming operations).
    EventStream(Box<EventStreamState>),
    /// Compressed: bytes are counted, not kept.
    Skip,
    /// `finish` already ran.
    Done,
}

/// Per-request response tracker.
#[derive(Debug)]
pub struct ResponseTracker {
    info: RequestInfo,
    limits: Limits,
    provider: Provider,
    shape: ApiShape,
    status: Option<u16>,
    streamed: bool,
    compressed: bool,
    headers_at_ms: Option<u64>,
    first_byte_at_ms: Option<u64>,
    body_bytes: u64,
    body: Body,
    /// Bedrock InvokeModel's `x-amzn-bedrock-*-token-count` headers.
    bedrock_header_counts: Option<Counts>,
}

/// How a response body is framed, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Json,
    Sse,
    AwsEventStream,
}

fn framing_of(content_type: &str) -> Option<Framing> {
    let t = content_type.split(';').next().unwrap_or("").trim();
    if t.eq_ignore_ascii_case("text/event-stream") {
        Some(Framing::Sse)
    } else if t.eq_ignore_ascii_case("application/vnd.amazon.eventstream") {
        Some(Framing::AwsEventStream)
    } else {
        None
    }
}

fn is_compressed(content_encoding: Option<&str>) -> bool {
    content_encoding.is_some_and(|e| {
        e.split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
    })
}

impl ResponseTracker {
    pub fn new(info: RequestInfo, limits: Limits) -> Self {
        let provider = detect_provider(&info.path, info.host.as_deref());
        let shape = detect_shape(&info.path);
        ResponseTracker {
            info,
            limits,
            provider,
            shape,
            status: None,
            streamed: false,
            compressed: false,
            headers_at_ms: None,
            first_byte_at_ms: None,
            body_bytes: 0,
            body: Body::Pending,
            bedrock_header_counts: None,
        }
    }

    /// Bedrock InvokeModel's token-count response headers (the counts AWS
    /// bills); `header` looks one up by its lowercase name.
    pub fn on_bedrock_headers<'a>(&mut self, header: impl Fn(&str) -> Option<&'a str>) {
        if self.provider == Provider::Bedrock {
            self.bedrock_header_counts = bedrock::counts_from_headers(header);
        }
    }

    /// The provider detected from the request (refined by the body at
    /// [`finish`](Self::finish)).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Whether the request path or host identified a provider or API
    /// shape (the glue only inspects request bodies of those).
    pub fn provider_known(&self) -> bool {
        self.provider != Provider::Unknown || self.shape != ApiShape::Unknown
    }

    /// The request `:path` the tracker was created with.
    pub fn path(&self) -> &str {
        &self.info.path
    }

    /// What identifies the request to a budget: its id, tenant and key.
    pub fn request(&self) -> &RequestInfo {
        &self.info
    }

    /// The model the request names (its body, else its path), before any
    /// response.
    pub fn requested_model(&self) -> Option<String> {
        self.info
            .request_model
            .clone()
            .or_else(|| model_from_path(&self.info.path))
    }

    /// What the request body said: its model (kept when `None`) and whether
    /// it asked for a stream. Call before the response headers.
    pub fn set_request_details(&mut self, model: Option<String>, stream: bool) {
        if let Some(m) = model.as_deref().and_then(cap_model) {
            self.info.request_model = Some(m);
        }
        self.info.streamed_request = stream;
    }

    /// Whether the response is being read as an SSE stream.
    pub fn is_streaming(&self) -> bool {
        self.streamed
    }

    fn start_body(&mut self, framing: Framing) {
        let streaming = framing != Framing::Json;
        self.streamed = streaming && !self.compressed;
        self.body = if self.compressed {
            Body::Skip
        } else if framing == Framing::AwsEventStream {
            // The event stream is AWS's own framing: Bedrock, whatever the
            // path said.
            self.provider = Provider::Bedrock;
            self.shape = ApiShape::Bedrock;
            Body::EventStream(Box::new(EventStreamState {
                decoder: EventStreamDecoder::new(
                    self.limits
                        .max_sse_event_bytes
                        .saturating_sub(STREAM_RESERVE_BYTES),
                ),
                acc: BedrockStream::default(),
            }))
        } else if streaming {
            Body::Sse(Box::new(SseState {
                framer: SseFramer::new(
                    self.limits
                        .max_sse_event_bytes
                        .saturating_sub(STREAM_RESERVE_BYTES),
                ),
                acc: StreamAccumulator::new(self.shape),
            }))
        } else {
            Body::Json(BoundedBuf::new(self.limits.max_json_body_bytes))
        };
    }

    /// Response headers. Streaming is `content-type: text/event-stream`
    /// (without a content type, the request's `stream` flag decides); any
    /// content-encoding but `identity` disables parsing.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        now_ms: u64,
    ) {
        if !matches!(self.body, Body::Pending) {
            return;
        }
        self.status = Some(status);
        self.headers_at_ms = Some(now_ms);
        self.compressed = is_compressed(content_encoding);
        let framing = match content_type.filter(|ct| !ct.trim().is_empty()) {
            Some(ct) => framing_of(ct).unwrap_or(Framing::Json),
            None => self.request_framing(),
        };
        self.start_body(framing);
    }

    /// True until the first non-empty body chunk: only that chunk's arrival
    /// time is used, so the glue can skip reading the clock for the rest.
    pub fn awaiting_first_byte(&self) -> bool {
        self.first_byte_at_ms.is_none()
    }

    /// One response body chunk; the first non-empty one sets the time to
    /// first byte.
    pub fn on_response_body(&mut self, chunk: &[u8], now_ms: u64) {
        if chunk.is_empty() {
            return;
        }
        if self.first_byte_at_ms.is_none() {
            self.first_byte_at_ms = Some(now_ms);
        }
        self.body_bytes = self.body_bytes.saturating_add(chunk.len() as u64);
        if matches!(self.body, Body::Pending) {
            self.start_body(self.request_framing());
        }
        match &mut self.body {
            Body::Json(buf) => buf.push(chunk),
            Body::Sse(st) => {
                let SseState { framer, acc } = &mut **st;
                feed_stream(framer, acc, chunk);
            }
            Body::EventStream(st) => {
                let EventStreamState { decoder, acc } = &mut **st;
                decoder.feed(chunk, |m| acc.on_message(m));
            }
            Body::Pending | Body::Skip | Body::Done => {}
        }
    }

    /// The framing a response without a content type is read with.
    fn request_framing(&self) -> Framing {
        let bedrock_stream = matches!(
            bedrock::parse_path(crate::providers::strip_query(&self.info.path)),
            Some((Operation::ConverseStream | Operation::InvokeStream, _))
        );
        if bedrock_stream {
            Framing::AwsEventStream
        } else if self.info.streamed_request {
            Framing::Sse
        } else {
            Framing::Json
        }
    }

    /// Heap bytes held for the body (see the module docs for the bound).
    pub fn retained_bytes(&self) -> usize {
        match &self.body {
            Body::Json(buf) => buf.retained_bytes(),
            Body::EventStream(st) => {
                std::mem::size_of::<EventStreamState>()
                    + st.decoder.retained_bytes()
                    + st.acc.retained_bytes()
            }
            Body::Sse(st) => {
                std::mem::size_of::<SseState>()
                    + st.framer.retained_bytes()
                    + st.acc.retained_bytes()
            }
            Body::Pending | Body::Skip | Body::Done => 0,
        }
    }

    /// Build the record. `end_of_stream_seen` is false when the stream was
    /// torn down before the upstream finished the body.
    pub fn finish(mut self, end_of_stream_seen: bool, now_ms: u64) -> UsageRecord {
        let status = self.status.unwrap_or(0);
        let ok = (200..300).contains(&status);
        let mut flags: Vec<Flag> = Vec::new();
        let mut flag = |f: Flag| {
            if !flags.contains(&f) {
                flags.push(f);
            }
        };
        if !ok {
            flag(Flag::UpstreamError);
        }
        if !end_of_stream_seen || self.status.is_none() {
            flag(Flag::Incomplete);
        }
        let mut provider = self.provider;
        let mut shape = self.shape;
        let mut ext = Extraction::default();
        match std::mem::replace(&mut self.body, Body::Done) {
            Body::Pending | Body::Done => {}
            Body::Skip => flag(Flag::Compressed),
            Body::Sse(st) => {
                let SseState {
                    mut framer,
                    mut acc,
                } = *st;
                framer.finish(|ev| acc.on_event(ev));
                ext = acc.extraction();
                shape = acc.shape();
                if ok {
                    if shape == ApiShape::Unknown {
                        flag(Flag::UnknownShape);
                    } else if !acc.is_complete() {
                        flag(Flag::Incomplete);
                    } else if !ext.usage_seen {
                        flag(Flag::NoUsage);
                    }
                    if acc.parse_errors() > 0 {
                        flag(Flag::ParseError);
                    }
                }
            }
            Body::EventStream(st) => {
                let EventStreamState { decoder, acc } = *st;
                ext = acc.extraction();
                let end = decoder.finish();
                if acc.had_exception() {
                    flag(Flag::UpstreamError);
                }
                if ok {
                    if !acc.is_complete() {
                        flag(Flag::Incomplete);
                    } else if !ext.usage_seen {
                        flag(Flag::NoUsage);
                    }
                    if matches!(end, End::Failed(_)) || acc.bad_chunks() > 0 {
                        flag(Flag::ParseError);
                    }
                    if matches!(end, End::Truncated) {
                        flag(Flag::Incomplete);
                    }
                    if acc.skipped_usage() && !ext.usage_seen {
                        flag(Flag::BodyTooLarge);
                    }
                }
            }
            Body::Json(buf) if shape == ApiShape::Bedrock => {
                let op = bedrock::parse_path(crate::providers::strip_query(&self.info.path))
                    .map(|(op, _)| op);
                let whole = buf.whole();
                let read = match op {
                    _ if buf.is_empty() => {
                        Some(bedrock::extract_invoke(None, self.bedrock_header_counts)).flatten()
                    }
                    Some(Operation::Invoke) => {
                        bedrock::extract_invoke(whole, self.bedrock_header_counts)
                    }
                    _ => bedrock::extract_converse(whole, buf.head(), &buf.tail()),
                };
                match read {
                    Some(e) => {
                        ext = e;
                        if ok && !ext.usage_seen {
                            flag(if whole.is_none() {
                                Flag::BodyTooLarge
                            } else {
                                Flag::NoUsage
                            });
                        }
                    }
                    None => {
                        // Not JSON: the header counts still bill it.
                        if let Some(c) = self.bedrock_header_counts {
                            ext.usage = c.usage(0);
                            ext.usage_seen = true;
                        }
                        if ok && end_of_stream_seen {
                            flag(Flag::ParseError);
                        }
                    }
                }
            }
            Body::Json(buf)
                if crate::providers::gemini::is_vertex_predict(crate::providers::strip_query(
                    &self.info.path,
                )) =>
            {
                match buf.whole().map(crate::providers::gemini::predict_usage) {
                    Some(Some(Some(usage))) => {
                        ext.usage = usage;
                        ext.usage_seen = true;
                    }
                    Some(Some(None)) if ok => flag(Flag::NoUsage),
                    Some(None) if ok && end_of_stream_seen => flag(Flag::ParseError),
                    None if ok => flag(Flag::BodyTooLarge),
                    _ => {}
                }
            }
            Body::Json(buf) => {
                if buf.is_empty() {
                    if ok && end_of_stream_seen {
                        flag(Flag::NoUsage);
                    }
                } else if let Some(whole) = buf.whole() {
                    match crate::typed::parse(whole) {
                        Ok(v) => {
                            if shape == ApiShape::Unknown {
                                shape = infer_shape_from_json(&v);
                            }
                            ext = extract_json(shape, &v);
                            if ok && shape == ApiShape::Unknown {
                                flag(Flag::UnknownShape);
                            } else if ok && !ext.usage_seen {
                                flag(Flag::NoUsage);
                            }
                        }
                        Err(_) => {
                            if shape == ApiShape::Unknown {
                                shape = infer_shape_from_bytes(whole, &[]);
                            }
                            ext = extract_windows(shape, whole, &[]);
                            if ok && end_of_stream_seen {
                                flag(Flag::ParseError);
                            }
                        }
                    }
                } else {
                    let tail = buf.tail();
                    if shape == ApiShape::Unknown {
                        shape = infer_shape_from_bytes(buf.head(), &tail);
                    }
                    ext = extract_windows(shape, buf.head(), &tail);
                    if ok && !ext.usage_seen {
                        flag(Flag::BodyTooLarge);
                        if shape == ApiShape::Unknown {
                            flag(Flag::UnknownShape);
                        }
                    }
                }
            }
        }
        if provider == Provider::Unknown {
            provider = shape.default_provider();
        }
        // Bedrock responses do not name the model, and Vertex AI bills the
        // partner model its path names: the path is exact for both.
        let path_model = if matches!(provider, Provider::Bedrock | Provider::VertexAi) {
            model_from_path(&self.info.path)
        } else {
            None
        };
        let model = path_model
            .or(ext.model)
            .or_else(|| self.info.request_model.as_deref().and_then(cap_model))
            .or_else(|| model_from_path(&self.info.path));
        let ttfb_at = self.first_byte_at_ms.or(self.headers_at_ms);
        UsageRecord {
            request_id: self.info.request_id.clone(),
            tenant_id: self.info.tenant_id.clone(),
            api_key_id: self.info.api_key_id.clone(),
            provider,
            model,
            route: self.info.route.clone(),
            http_status: status,
            streamed: self.streamed,
            started_at_ms: self.info.started_at_ms,
            ttfb_ms: ttfb_at.map(|t| t.saturating_sub(self.info.started_at_ms)),
            duration_ms: Some(now_ms.saturating_sub(self.info.started_at_ms)),
            usage: ext.usage,
            reported_cost: ext.reported_cost,
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Usage;
    use proptest::prelude::*;

    const T0: u64 = 1_750_000_000_000;

    fn info(path: &str) -> RequestInfo {
        RequestInfo {
            path: path.to_owned(),
            host: None,
            request_id: "req-1".into(),
            tenant_id: "tenant-a".into(),
            api_key_id: Some("ab12".into()),
            route: Some("llm".into()),
            started_at_ms: T0,
            request_model: None,
            streamed_request: false,
        }
    }

    fn run_chunks(
        info: RequestInfo,
        limits: Limits,
        status: u16,
        ct: &str,
        ce: Option<&str>,
        chunks: &[&[u8]],
        eos: bool,
    ) -> UsageRecord {
        let mut t = ResponseTracker::new(info, limits);
        t.on_response_headers(status, Some(ct), ce, T0 + 100);
        for (i, c) in chunks.iter().enumerate() {
            t.on_response_body(c, T0 + 200 + i as u64);
        }
        t.finish(eos, T0 + 5_000)
    }

    #[test]
    fn openai_chat_streams_skip_events_without_usage_in_any_chunking() {
        // 2,000 content chunks with `"usage":null` (as OpenAI sends them once
        // usage was asked for), then the usage chunk and [DONE].
        let mut stream = String::from(
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}],\"usage\":null}\n\n",
        );
        for i in 0..2000 {
            stream.push_str(&format!(
                "data: {{\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"delta\":{{\"content\":\"w{i} \"}}}}],\"usage\":null}}\n\n"
            ));
        }
        stream.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2000,\"total_tokens\":2012}}\n\ndata: [DONE]\n\n");
        for chunk_size in [16 * 1024, 4096, 1000, 333] {
            let mut t = ResponseTracker::new(info("/v1/chat/completions"), Limits::default());
            t.on_response_headers(200, Some("text/event-stream"), None, T0 + 1);
            for c in stream.as_bytes().chunks(chunk_size) {
                t.on_response_body(c, T0 + 2);
            }
            let events = match &t.body {
                Body::Sse(st) => st.acc.events(),
                _ => u64::MAX,
            };
            // Per chunk: the event a chunk boundary split, and the last one.
            let chunks = stream.len().div_ceil(chunk_size) as u64;
            assert!(
                events <= 2 * chunks + 8,
                "{chunk_size}: read {events} of 2003 events"
            );
            let r = t.finish(true, T0 + 3);
            assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
            assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (12, 2000));
            assert!(r.flags.is_empty(), "{:?}", r.flags);
        }
    }

    #[test]
    fn skipping_still_sees_done_at_the_end_of_a_stream_without_usage() {
        let mut stream = String::new();
        for i in 0..300 {
            stream.push_str(&format!(
                "data: {{\"model\":\"gpt-4o-mini\",\"choices\":[{{\"delta\":{{\"content\":\"w{i}\"}}}}]}}\n\n"
            ));
        }
        stream.push_str("data: [DONE]\n\n");
        for chunk_size in [stream.len(), 4096, 700, 97, 13] {
            let mut t = ResponseTracker::new(info("/v1/chat/completions"), Limits::default());
            t.on_response_headers(200, Some("text/event-stream"), None, T0 + 1);
            for c in stream.as_bytes().chunks(chunk_size) {
                t.on_response_body(c, T0 + 2);
            }
            let r = t.finish(true, T0 + 3);
            assert!(
                !r.flags.contains(&Flag::Incomplete),
                "{chunk_size}: {:?}",
                r.flags
            );
            assert!(
                r.flags.contains(&Flag::NoUsage),
                "{chunk_size}: {:?}",
                r.flags
            );
        }
        // Cut before [DONE]: incomplete, however it was chunked.
        let cut = stream.trim_end_matches("data: [DONE]\n\n");
        let mut t = ResponseTracker::new(info("/v1/chat/completions"), Limits::default());
        t.on_response_headers(200, Some("text/event-stream"), None, T0 + 1);
        for c in cut.as_bytes().chunks(4096) {
            t.on_response_body(c, T0 + 2);
        }
        assert!(t.finish(false, T0 + 3).flags.contains(&Flag::Incomplete));
    }

    fn json(path: &str, body: &[u8]) -> UsageRecord {
        run_chunks(
            info(path),
            Limits::default(),
            200,
            "application/json",
            None,
            &[body],
            true,
        )
    }

    fn sse(path: &str, body: &[u8]) -> UsageRecord {
        run_chunks(
            info(path),
            Limits::default(),
            200,
            "text/event-stream; charset=utf-8",
            None,
            &[body],
            true,
        )
    }

    fn u(input: u64, output: u64, cr: u64, cw: u64, cw1h: u64, reasoning: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cr,
            cache_write_tokens: cw,
            cache_write_1h_tokens: cw1h,
            reasoning_tokens: reasoning,
        }
    }

    const OPENAI_CHAT: &[u8] = include_bytes!("../tests/fixtures/openai_chat.json");
    const OPENROUTER_CHAT: &[u8] = include_bytes!("../tests/fixtures/openrouter_chat.json");
    const RESPONSES: &[u8] = include_bytes!("../tests/fixtures/openai_responses.json");
    const ANTHROPIC: &[u8] = include_bytes!("../tests/fixtures/anthropic_message.json");
    const GEMINI: &[u8] = include_bytes!("../tests/fixtures/gemini.json");
    const GEMINI_TOTALS: &[u8] = include_bytes!("../tests/fixtures/gemini_totals.json");
    const CHAT_SSE: &[u8] = include_bytes!("../tests/fixtures/openai_chat_stream.sse");
    const OPENROUTER_SSE: &[u8] = include_bytes!("../tests/fixtures/openrouter_chat_stream.sse");
    const RESPONSES_SSE: &[u8] = include_bytes!("../tests/fixtures/openai_responses_stream.sse");
    const RESPONSES_INCOMPLETE_SSE: &[u8] =
        include_bytes!("../tests/fixtures/openai_responses_incomplete.sse");
    const ANTHROPIC_SSE: &[u8] = include_bytes!("../tests/fixtures/anthropic_stream.sse");
    const GEMINI_SSE: &[u8] = include_bytes!("../tests/fixtures/gemini_stream.sse");
    const DEEPSEEK: &[u8] = include_bytes!("../tests/fixtures/deepseek_chat.json");
    const DEEPSEEK_SSE: &[u8] = include_bytes!("../tests/fixtures/deepseek_reasoner_stream.sse");
    const GROQ_SSE: &[u8] = include_bytes!("../tests/fixtures/groq_stream.sse");
    const COHERE: &[u8] = include_bytes!("../tests/fixtures/cohere_chat.json");
    const COHERE_SSE: &[u8] = include_bytes!("../tests/fixtures/cohere_chat_stream.sse");

    const GEMINI_PRO_PATH: &str = "/v1beta/models/gemini-2.5-pro:generateContent";
    const GEMINI_STREAM_PATH: &str = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

    /// (name, path, body, expected usage, model, cost, flags)
    type Case = (
        &'static str,
        &'static str,
        &'static [u8],
        Usage,
        &'static str,
        Option<&'static str>,
        Vec<Flag>,
    );

    fn sse_cases() -> Vec<Case> {
        vec![
            (
                "openai chat stream",
                "/v1/chat/completions",
                CHAT_SSE,
                u(1117, 46, 1024, 0, 0, 0),
                "gpt-4o-2024-08-06",
                None,
                vec![],
            ),
            (
                "openrouter stream",
                "/api/v1/chat/completions",
                OPENROUTER_SSE,
                u(14, 421, 0, 0, 0, 384),
                "google/gemini-2.5-flash",
                Some("0.0000015"),
                vec![],
            ),
            (
                "responses stream",
                "/v1/responses",
                RESPONSES_SSE,
                u(1832, 57, 1536, 0, 0, 0),
                "gpt-4.1-2025-04-14",
                None,
                vec![],
            ),
            (
                "responses incomplete",
                "/v1/responses",
                RESPONSES_INCOMPLETE_SSE,
                u(41, 16, 0, 0, 0, 0),
                "gpt-4.1-2025-04-14",
                None,
                vec![],
            ),
            (
                // message_delta replaces cache_read 9000 -> 9500:
                // 472 + 1200 + 9500 input; output cumulative 87.
                "anthropic stream",
                "/v1/messages",
                ANTHROPIC_SSE,
                u(11172, 87, 9500, 1200, 1200, 0),
                "claude-sonnet-4-20250514",
                None,
                vec![],
            ),
            (
                // Both cache figures: the details' cached_tokens (0) wins.
                "deepseek reasoner stream",
                "/v1/chat/completions",
                DEEPSEEK_SSE,
                u(20, 250, 0, 0, 0, 240),
                "deepseek-reasoner",
                None,
                vec![],
            ),
            (
                // The usage rides in x_groq of the last chunk.
                "groq stream",
                "/openai/v1/chat/completions",
                GROQ_SSE,
                u(48, 9, 0, 0, 0, 0),
                "llama-3.3-70b-versatile",
                None,
                vec![],
            ),
            (
                // 61 candidates + 812 thoughts (total 882 = 9 + 61 + 812).
                "gemini stream",
                GEMINI_STREAM_PATH,
                GEMINI_SSE,
                u(9, 873, 0, 0, 0, 812),
                "gemini-2.5-flash",
                None,
                vec![],
            ),
        ]
    }

    fn check(name: &str, r: &UsageRecord, c: &Case) {
        assert_eq!(r.usage, c.3, "{name}: usage");
        assert_eq!(r.model.as_deref(), Some(c.4), "{name}: model");
        assert_eq!(r.reported_cost.as_deref(), c.5, "{name}: cost");
        assert_eq!(r.flags, c.6, "{name}: flags");
    }

    #[test]
    fn json_fixtures_exact() {
        let cases: Vec<Case> = vec![
            (
                "openai chat",
                "/v1/chat/completions",
                OPENAI_CHAT,
                u(2006, 300, 1920, 0, 0, 192),
                "o4-mini-2025-04-16",
                None,
                vec![],
            ),
            (
                "openrouter",
                "/api/v1/chat/completions",
                OPENROUTER_CHAT,
                u(5213, 412, 3072, 1800, 0, 0),
                "anthropic/claude-sonnet-4",
                Some("0.0284094"),
                vec![],
            ),
            (
                "responses",
                "/v1/responses",
                RESPONSES,
                u(3510, 1286, 2432, 0, 0, 1024),
                "o3-2025-04-16",
                None,
                vec![],
            ),
            (
                "anthropic",
                "/v1/messages",
                ANTHROPIC,
                u(20112, 503, 18000, 2100, 1500, 0),
                "claude-sonnet-4-20250514",
                None,
                vec![],
            ),
            (
                "gemini",
                GEMINI_PRO_PATH,
                GEMINI,
                u(12250, 2138, 8192, 0, 0, 1728),
                "gemini-2.5-pro",
                None,
                vec![],
            ),
            (
                // prompt_tokens = 1536 cache hits + 64 misses.
                "deepseek",
                "/chat/completions",
                DEEPSEEK,
                u(1600, 90, 1536, 0, 0, 0),
                "deepseek-chat",
                None,
                vec![],
            ),
            (
                "gemini totals",
                "/v1beta/models/gemini-2.5-flash:generateContent",
                GEMINI_TOTALS,
                u(100, 250, 0, 0, 0, 150),
                "gemini-2.5-flash",
                None,
                vec![],
            ),
        ];
        for c in &cases {
            let r = json(c.1, c.2);
            check(c.0, &r, c);
            assert!(!r.streamed);
            assert_eq!(r.http_status, 200);
            // Whole-body chunking does not matter for JSON either.
            let chunks: Vec<&[u8]> = c.2.chunks(7).collect();
            let r2 = run_chunks(
                info(c.1),
                Limits::default(),
                200,
                "application/json",
                None,
                &chunks,
                true,
            );
            assert_eq!(r, r2, "{}", c.0);
        }
        assert_eq!(
            json("/api/v1/chat/completions", OPENROUTER_CHAT).provider,
            Provider::Openrouter
        );
        assert_eq!(json(GEMINI_PRO_PATH, GEMINI).provider, Provider::Gemini);
    }

    #[test]
    fn sse_fixtures_exact_and_record_fields() {
        for c in &sse_cases() {
            let r = sse(c.1, c.2);
            check(c.0, &r, c);
            assert!(r.streamed, "{}", c.0);
        }
        let r = sse("/v1/messages", ANTHROPIC_SSE);
        assert_eq!(r.provider, Provider::Anthropic);
        assert_eq!(r.request_id, "req-1");
        assert_eq!(r.tenant_id, "tenant-a");
        assert_eq!(r.api_key_id.as_deref(), Some("ab12"));
        assert_eq!(r.route.as_deref(), Some("llm"));
        assert_eq!(r.started_at_ms, T0);
        assert_eq!(r.ttfb_ms, Some(200));
        assert_eq!(r.duration_ms, Some(5_000));
        assert_eq!(
            sse("/api/v1/chat/completions", OPENROUTER_SSE).provider,
            Provider::Openrouter
        );
        assert_eq!(
            sse(GEMINI_STREAM_PATH, GEMINI_SSE).provider,
            Provider::Gemini
        );
    }

    #[test]
    fn sse_fixtures_split_at_every_byte_and_one_byte_chunks() {
        for c in &sse_cases() {
            let whole = sse(c.1, c.2);
            for cut in 0..=c.2.len() {
                let (a, b) = c.2.split_at(cut);
                let r = run_chunks(
                    info(c.1),
                    Limits::default(),
                    200,
                    "text/event-stream",
                    None,
                    &[a, b],
                    true,
                );
                assert_eq!(r.usage, whole.usage, "{} cut {cut}", c.0);
                assert_eq!(r.model, whole.model, "{} cut {cut}", c.0);
                assert_eq!(r.flags, whole.flags, "{} cut {cut}", c.0);
                assert_eq!(r.reported_cost, whole.reported_cost, "{} cut {cut}", c.0);
            }
            let ones: Vec<&[u8]> = c.2.chunks(1).collect();
            let r = run_chunks(
                info(c.1),
                Limits::default(),
                200,
                "text/event-stream",
                None,
                &ones,
                true,
            );
            assert_eq!(r.usage, whole.usage, "{} 1-byte", c.0);
            assert_eq!(r.model, whole.model, "{} 1-byte", c.0);
            assert_eq!(r.flags, whole.flags, "{} 1-byte", c.0);
            assert_eq!(r.reported_cost, whole.reported_cost, "{} 1-byte", c.0);
        }
    }

    #[test]
    fn sse_shape_inferred_on_unknown_path() {
        for c in &sse_cases() {
            let r = sse("/gateway/llm", c.2);
            assert_eq!(r.usage, c.3, "{}", c.0);
            assert_eq!(r.model.as_deref(), Some(c.4), "{}", c.0);
            assert_eq!(r.flags, c.6, "{}", c.0);
            assert_ne!(r.provider, Provider::Unknown, "{}", c.0);
        }
    }

    #[test]
    fn json_shape_inferred_on_unknown_path() {
        let r = json("/proxy", GEMINI);
        assert_eq!(r.provider, Provider::Gemini);
        assert_eq!(r.usage.output_tokens, 2138);
        let r = json("/proxy", ANTHROPIC);
        assert_eq!(r.provider, Provider::Anthropic);
        assert_eq!(r.usage.input_tokens, 20112);
        let r = json("/proxy", br#"{"hello":"world"}"#);
        assert_eq!(r.provider, Provider::Unknown);
        assert_eq!(r.flags, vec![Flag::UnknownShape]);
        let r = sse("/proxy", b"data: {\"hello\":1}\n\ndata: nope\n\n");
        assert_eq!(r.flags, vec![Flag::UnknownShape, Flag::ParseError]);
    }

    #[test]
    fn anthropic_stream_cut_after_message_start_is_incomplete_with_input() {
        let cut = ANTHROPIC_SSE
            .windows(b"event: content_block_start".len())
            .position(|w| w == b"event: content_block_start")
            .unwrap();
        // Stream torn down.
        let r = run_chunks(
            info("/v1/messages"),
            Limits::default(),
            200,
            "text/event-stream",
            None,
            &[&ANTHROPIC_SSE[..cut]],
            false,
        );
        assert_eq!(r.flags, vec![Flag::Incomplete]);
        assert_eq!(r.usage, u(472 + 1200 + 9000, 2, 9000, 1200, 1200, 0));
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-20250514"));
        // Upstream ended cleanly but without message_delta.
        let r = run_chunks(
            info("/v1/messages"),
            Limits::default(),
            200,
            "text/event-stream",
            None,
            &[&ANTHROPIC_SSE[..cut]],
            true,
        );
        assert_eq!(r.flags, vec![Flag::Incomplete]);
        assert_eq!(r.usage.input_tokens, 10672);
    }

    #[test]
    fn truncated_streams_at_every_byte_never_claim_completeness_wrongly() {
        for c in &sse_cases() {
            let full = sse(c.1, c.2);
            for cut in (0..c.2.len()).step_by(3) {
                let r = run_chunks(
                    info(c.1),
                    Limits::default(),
                    200,
                    "text/event-stream",
                    None,
                    &[&c.2[..cut]],
                    false,
                );
                assert!(r.flags.contains(&Flag::Incomplete), "{} cut {cut}", c.0);
                assert!(!r.flags.contains(&Flag::ParseError), "{} cut {cut}", c.0);
                assert!(r.usage.input_tokens <= full.usage.input_tokens.max(10672));
            }
        }
    }

    #[test]
    fn clean_end_at_every_cut_is_flagged_unless_counts_are_final() {
        // Upstream closes the stream cleanly at an arbitrary byte: either
        // the record says Incomplete, or its counts are the final ones.
        for c in &sse_cases() {
            let full = sse(c.1, c.2);
            for cut in 0..c.2.len() {
                let r = run_chunks(
                    info(c.1),
                    Limits::default(),
                    200,
                    "text/event-stream",
                    None,
                    &[&c.2[..cut]],
                    true,
                );
                assert!(!r.flags.contains(&Flag::ParseError), "{} cut {cut}", c.0);
                if !r.flags.contains(&Flag::Incomplete) {
                    assert_eq!(r.usage, full.usage, "{} cut {cut}", c.0);
                    assert_eq!(r.flags, full.flags, "{} cut {cut}", c.0);
                }
            }
        }
    }

    #[test]
    fn keepalive_and_empty_data_lines_are_not_parse_errors() {
        let mut body = b": ping

data:

data: 

"
        .to_vec();
        body.extend_from_slice(CHAT_SSE);
        let r = sse("/v1/chat/completions", &body);
        assert_eq!(r.flags, vec![]);
        assert_eq!(r.usage.input_tokens, 1117);
    }

    #[test]
    fn chat_stream_without_usage_chunk() {
        // Client did not ask for usage: [DONE] arrives, no usage -> NoUsage.
        let body = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let r = sse("/v1/chat/completions", body);
        assert_eq!(r.flags, vec![Flag::NoUsage]);
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
        // Cut before [DONE] -> Incomplete.
        let cut = body.len() - b"data: [DONE]\n\n".len();
        let r = sse("/v1/chat/completions", &body[..cut]);
        assert_eq!(r.flags, vec![Flag::Incomplete]);
    }

    #[test]
    fn oversized_responses_completed_event_uses_tail_window() {
        let text = "lorem ipsum dolor sit amet ".repeat(8_000); // ~216 KB
        let completed = serde_json::json!({
            "type": "response.completed",
            "sequence_number": 9,
            "response": {
                "id": "resp_1", "object": "response", "status": "completed",
                "model": "gpt-4.1-mini-2025-04-14",
                "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 64},
                    "output_tokens": 54000, "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 54120},
                "user": null, "metadata": {}
            }
        });
        let mut body = Vec::new();
        body.extend_from_slice(b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1-mini-2025-04-14\",\"output\":[],\"usage\":null}}\n\n");
        body.extend_from_slice(b"event: response.completed\ndata: ");
        body.extend_from_slice(completed.to_string().as_bytes());
        body.extend_from_slice(b"\n\n");
        let mut t = ResponseTracker::new(info("/v1/responses"), Limits::default());
        t.on_response_headers(200, Some("text/event-stream"), None, T0);
        for c in body.chunks(1500) {
            t.on_response_body(c, T0 + 1);
            assert!(t.retained_bytes() <= DEFAULT_MAX_SSE_EVENT_BYTES);
        }
        let r = t.finish(true, T0 + 2);
        assert_eq!(r.flags, vec![]);
        assert_eq!(r.usage, u(120, 54000, 64, 0, 0, 0));
        assert_eq!(r.model.as_deref(), Some("gpt-4.1-mini-2025-04-14"));
        // Without the SSE event name, the type is found in the head window.
        let body2 = String::from_utf8(body)
            .unwrap()
            .replace("event: response.completed\n", "");
        let r = sse("/v1/responses", body2.as_bytes());
        assert_eq!(r.flags, vec![]);
        assert_eq!(r.usage.output_tokens, 54000);
    }

    #[test]
    fn oversized_json_bodies() {
        let limits = Limits {
            max_json_body_bytes: 4096,
            max_sse_event_bytes: DEFAULT_MAX_SSE_EVENT_BYTES,
        };
        let text = "x".repeat(100_000);
        let body = serde_json::json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-1-20250805",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 3, "cache_read_input_tokens": 7, "output_tokens": 25000}
        })
        .to_string();
        let chunks: Vec<&[u8]> = body.as_bytes().chunks(999).collect();
        let mut t = ResponseTracker::new(info("/v1/messages"), limits);
        t.on_response_headers(200, Some("application/json"), None, T0);
        for c in &chunks {
            t.on_response_body(c, T0);
            assert!(t.retained_bytes() <= 4096);
        }
        let r = t.finish(true, T0);
        assert_eq!(r.flags, vec![]);
        assert_eq!(r.usage, u(10, 25000, 7, 0, 0, 0));
        assert_eq!(r.model.as_deref(), Some("claude-opus-4-1-20250805"));

        // Usage in neither window -> BodyTooLarge.
        let body = format!(
            r#"{{"model":"m","content":[{{"type":"text","text":"{text}"}}],"usage":{{"input_tokens":1,"output_tokens":2}},"trailer":"{text}"}}"#
        );
        let r = run_chunks(
            info("/v1/messages"),
            limits,
            200,
            "application/json",
            None,
            &[body.as_bytes()],
            true,
        );
        assert_eq!(r.flags, vec![Flag::BodyTooLarge]);
    }

    #[test]
    fn compressed_responses_are_flagged_not_parsed() {
        let mut i = info("/v1/chat/completions");
        i.request_model = Some("gpt-4o".into());
        let r = run_chunks(
            i,
            Limits::default(),
            200,
            "application/json",
            Some("gzip"),
            &[b"\x1f\x8b\x08\x00garbage"],
            true,
        );
        assert_eq!(r.flags, vec![Flag::Compressed]);
        assert_eq!(r.usage, Usage::default());
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        let r = run_chunks(
            info("/v1/chat/completions"),
            Limits::default(),
            200,
            "application/json",
            Some("identity"),
            &[OPENAI_CHAT],
            true,
        );
        assert_eq!(r.flags, vec![]);
    }

    #[test]
    fn upstream_errors() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let r = run_chunks(
            info("/v1/messages"),
            Limits::default(),
            529,
            "application/json",
            None,
            &[body],
            true,
        );
        assert_eq!(r.flags, vec![Flag::UpstreamError]);
        assert_eq!(r.http_status, 529);
        assert_eq!(r.usage, Usage::default());
        let r = run_chunks(
            info("/v1/chat/completions"),
            Limits::default(),
            502,
            "text/html",
            None,
            &[b"<html>Bad Gateway</html>"],
            true,
        );
        assert_eq!(r.flags, vec![Flag::UpstreamError]);
        // No response at all.
        let t = ResponseTracker::new(info("/v1/messages"), Limits::default());
        assert!(t.provider_known());
        assert_eq!(t.path(), "/v1/messages");
        let r = t.finish(false, T0 + 10);
        assert_eq!(r.http_status, 0);
        assert_eq!(r.flags, vec![Flag::UpstreamError, Flag::Incomplete]);
        assert_eq!(r.ttfb_ms, None);
    }

    #[test]
    fn malformed_and_usage_less_json() {
        let r = json("/v1/chat/completions", b"{\"id\": \"x\", \"usage\": {");
        assert_eq!(r.flags, vec![Flag::ParseError]);
        let r = json(
            "/v1/chat/completions",
            br#"{"id":"x","model":"gpt-4o","choices":[]}"#,
        );
        assert_eq!(r.flags, vec![Flag::NoUsage]);
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        let r = json("/v1/chat/completions", b"");
        assert_eq!(r.flags, vec![Flag::NoUsage]);
        // Truncated JSON body (client went away) -> Incomplete, not ParseError.
        let r = run_chunks(
            info("/v1/chat/completions"),
            Limits::default(),
            200,
            "application/json",
            None,
            &[&OPENAI_CHAT[..300]],
            false,
        );
        assert_eq!(r.flags, vec![Flag::Incomplete]);
        assert_eq!(r.model.as_deref(), Some("o4-mini-2025-04-16"));
    }

    #[test]
    fn model_fallbacks() {
        let mut i = info("/v1/chat/completions");
        i.request_model = Some("gpt-4o-mini".into());
        let r = run_chunks(
            i,
            Limits::default(),
            500,
            "application/json",
            None,
            &[b"{}"],
            true,
        );
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
        let r = run_chunks(
            info(GEMINI_PRO_PATH),
            Limits::default(),
            429,
            "application/json",
            None,
            &[br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#],
            true,
        );
        assert_eq!(r.model.as_deref(), Some("gemini-2.5-pro"));
        let mut t = ResponseTracker::new(info("/v1/messages"), Limits::default());
        t.set_request_details(Some("claude-3-7-sonnet-latest".into()), true);
        t.set_request_details(None, true);
        t.on_response_headers(500, None, None, T0);
        assert!(t.is_streaming());
        let r = t.finish(true, T0);
        assert_eq!(r.model.as_deref(), Some("claude-3-7-sonnet-latest"));
    }

    #[test]
    fn streaming_decided_by_request_when_no_content_type() {
        let mut i = info("/v1/messages");
        i.streamed_request = true;
        let mut t = ResponseTracker::new(i, Limits::default());
        t.on_response_headers(200, None, None, T0);
        assert!(t.is_streaming());
        t.on_response_body(ANTHROPIC_SSE, T0 + 1);
        let r = t.finish(true, T0 + 2);
        assert!(r.streamed);
        assert_eq!(r.usage.output_tokens, 87);
        // Body before headers (never expected from Envoy) still works.
        let mut t = ResponseTracker::new(info("/v1/messages"), Limits::default());
        t.on_response_body(ANTHROPIC, T0 + 1);
        let r = t.finish(true, T0 + 2);
        assert_eq!(r.usage.input_tokens, 20112);
        assert!(r.flags.contains(&Flag::Incomplete));
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn ten_megabyte_stream_stays_within_16_kib() {
        // An OpenAI chat stream of ~10 MB (tens of thousands of chunks and
        // a few 100 KB single events), fed in random chunk sizes.
        let mut body = Vec::with_capacity(11 << 20);
        let small = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token \\u00e9\xc3\xa9\"},\"finish_reason\":null}],\"usage\":null}\n\n";
        let big_text = "y".repeat(100_000);
        let mut i = 0u64;
        while body.len() < 10 << 20 {
            if i % 20_000 == 7 {
                body.extend_from_slice(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
                body.extend_from_slice(big_text.as_bytes());
                body.extend_from_slice(b"\"}}],\"usage\":null}\r\n\r\n");
            } else {
                body.extend_from_slice(small);
            }
            i += 1;
        }
        body.extend_from_slice(b"data: {\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":70000,\"total_tokens\":70010}}\n\ndata: [DONE]\n\n");
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut t = ResponseTracker::new(info("/v1/chat/completions"), Limits::default());
        t.on_response_headers(200, Some("text/event-stream"), None, T0);
        let mut pos = 0;
        let mut max_retained = 0;
        while pos < body.len() {
            let n = (rng.next() % 70_000) as usize + 1;
            let end = (pos + n).min(body.len());
            t.on_response_body(&body[pos..end], T0 + 1);
            max_retained = max_retained.max(t.retained_bytes());
            pos = end;
        }
        assert!(max_retained <= 16 * 1024, "retained {max_retained}");
        let r = t.finish(true, T0 + 2);
        assert_eq!(r.flags, vec![]);
        assert_eq!(r.usage, u(10, 70000, 0, 0, 0, 0));
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn cohere_v2_chat_bills_billed_units_with_the_request_model() {
        let with_model = || {
            let mut i = info("/v2/chat");
            i.request_model = Some("command-a-03-2025".into());
            i
        };
        let r = run_chunks(
            with_model(),
            Limits::default(),
            200,
            "application/json",
            None,
            &[COHERE],
            true,
        );
        assert_eq!(r.provider, Provider::Cohere);
        assert_eq!(r.model.as_deref(), Some("command-a-03-2025"));
        assert_eq!(r.usage, u(5, 418, 0, 0, 0, 0));
        assert_eq!(r.flags, vec![]);
        let whole = run_chunks(
            with_model(),
            Limits::default(),
            200,
            "text/event-stream",
            None,
            &[COHERE_SSE],
            true,
        );
        assert_eq!(whole.usage, u(3, 12, 0, 0, 0, 0));
        assert_eq!(whole.flags, vec![]);
        assert!(whole.streamed);
        for cut in 0..=COHERE_SSE.len() {
            let (a, b) = COHERE_SSE.split_at(cut);
            let r = run_chunks(
                with_model(),
                Limits::default(),
                200,
                "text/event-stream",
                None,
                &[a, b],
                true,
            );
            assert_eq!(
                (r.usage, &r.flags),
                (whole.usage, &whole.flags),
                "cut {cut}"
            );
        }
        // Recognised by its events on any path; cut before message-end it is
        // incomplete.
        let r = sse("/llm", COHERE_SSE);
        assert_eq!(
            (r.provider, r.usage),
            (Provider::Cohere, u(3, 12, 0, 0, 0, 0))
        );
        let cut = &COHERE_SSE[..COHERE_SSE.len() - 250];
        assert_eq!(sse("/v2/chat", cut).flags, vec![Flag::Incomplete]);
        // And by its usage object in a JSON body.
        assert_eq!(json("/proxy", COHERE).provider, Provider::Cohere);
    }

    #[test]
    fn gemini_and_vertex_embeddings() {
        let predict = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-embedding-001:predict";
        let body = br#"{"predictions":[{"embeddings":{"statistics":{"truncated":false,"token_count":7},"values":[0.5]}}]}"#;
        let r = json(predict, body);
        assert_eq!(r.provider, Provider::Gemini);
        assert_eq!(r.model.as_deref(), Some("gemini-embedding-001"));
        assert_eq!(r.usage, u(7, 0, 0, 0, 0, 0));
        assert_eq!(r.flags, vec![]);
        // The Gemini API reports no usage for embeddings: counted, flagged.
        let r = json(
            "/v1beta/models/gemini-embedding-001:embedContent",
            br#"{"embedding":{"values":[0.1,0.2]}}"#,
        );
        assert_eq!(r.model.as_deref(), Some("gemini-embedding-001"));
        assert_eq!(r.flags, vec![Flag::NoUsage]);
        assert_eq!(json(predict, b"[").flags, vec![Flag::ParseError]);
    }

    const BEDROCK_PATH: &str =
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream";
    const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
    const BEDROCK_CONVERSE: &[u8] = include_bytes!("../tests/fixtures/bedrock_converse.json");
    const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";

    /// A ConverseStream response as Bedrock frames it; `pad` bytes of text
    /// in one delta.
    fn converse_stream(pad: usize) -> Vec<u8> {
        use crate::eventstream::frame;
        let text = "x".repeat(pad);
        let delta = format!(
            r#"{{"contentBlockIndex":0,"delta":{{"text":"Billing {text}"}},"p":"abcdefghij"}}"#
        );
        let mut out = Vec::new();
        for (event, payload) in [
            ("messageStart", r#"{"role":"assistant","p":"abc"}"#),
            ("contentBlockDelta", delta.as_str()),
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

    fn eventstream(path: &str, chunks: &[&[u8]], eos: bool) -> UsageRecord {
        run_chunks(
            info(path),
            Limits::default(),
            200,
            EVENTSTREAM,
            None,
            chunks,
            eos,
        )
    }

    #[test]
    fn bedrock_converse_json_is_billed_with_the_model_of_the_path() {
        let path = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse";
        for size in [BEDROCK_CONVERSE.len(), 7, 1] {
            let chunks: Vec<&[u8]> = BEDROCK_CONVERSE.chunks(size).collect();
            let r = run_chunks(
                info(path),
                Limits::default(),
                200,
                "application/json",
                None,
                &chunks,
                true,
            );
            assert_eq!(r.provider, Provider::Bedrock);
            assert_eq!(r.model.as_deref(), Some(BEDROCK_MODEL));
            assert_eq!(r.usage, u(1300, 300, 200, 100, 0, 0));
            assert!(!r.streamed);
            assert_eq!(r.flags, vec![]);
        }
        // Not JSON: flagged, nothing invented.
        let r = json(path, b"{\"usage\":{");
        assert_eq!(r.flags, vec![Flag::ParseError]);
        assert_eq!(r.usage, Usage::default());
        // An error answer is recorded as one.
        let r = run_chunks(
            info(path),
            Limits::default(),
            429,
            "application/json",
            None,
            &[br#"{"message":"Too many requests"}"#],
            true,
        );
        assert_eq!(r.flags, vec![Flag::UpstreamError]);
    }

    #[test]
    fn bedrock_invoke_bills_the_token_count_headers() {
        let path = "/model/cohere.embed-english-v3/invoke";
        let mut t = ResponseTracker::new(info(path), Limits::default());
        t.on_response_headers(200, Some("application/json"), None, T0);
        let headers = [
            ("x-amzn-bedrock-input-token-count", "42"),
            ("x-amzn-bedrock-output-token-count", "0"),
        ];
        t.on_bedrock_headers(|n| headers.iter().find(|h| h.0 == n).map(|h| h.1));
        t.on_response_body(
            br#"{"embeddings":[[0.1,0.2]],"id":"e1","texts":["hi"]}"#,
            T0,
        );
        let r = t.finish(true, T0);
        assert_eq!(r.provider, Provider::Bedrock);
        assert_eq!(r.model.as_deref(), Some("cohere.embed-english-v3"));
        assert_eq!(r.usage, u(42, 0, 0, 0, 0, 0));
        assert_eq!(r.flags, vec![]);
        // Headers are only read for Bedrock requests.
        let mut t = ResponseTracker::new(info("/v1/embeddings"), Limits::default());
        t.on_response_headers(200, Some("application/json"), None, T0);
        t.on_bedrock_headers(|n| headers.iter().find(|h| h.0 == n).map(|h| h.1));
        t.on_response_body(br#"{"object":"list","data":[]}"#, T0);
        assert_eq!(t.finish(true, T0).usage, Usage::default());
    }

    #[test]
    fn bedrock_converse_stream_at_every_split_and_byte_by_byte() {
        let bytes = converse_stream(0);
        let check = |r: &UsageRecord, what: &str| {
            assert_eq!(r.provider, Provider::Bedrock, "{what}");
            assert_eq!(r.model.as_deref(), Some(BEDROCK_MODEL), "{what}");
            assert_eq!(r.usage, u(1300, 300, 200, 100, 0, 0), "{what}");
            assert!(r.streamed, "{what}");
            assert_eq!(r.flags, vec![], "{what}");
        };
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            check(
                &eventstream(BEDROCK_PATH, &[a, b], true),
                &format!("cut {cut}"),
            );
        }
        let ones: Vec<&[u8]> = bytes.chunks(1).collect();
        check(&eventstream(BEDROCK_PATH, &ones, true), "1-byte");
        // The content type alone says Bedrock; the path may say nothing.
        let r = eventstream("/gateway/llm", &[&bytes], true);
        assert_eq!(r.provider, Provider::Bedrock);
        assert_eq!(r.usage, u(1300, 300, 200, 100, 0, 0));
        // No content type: the streaming operation's path says event stream.
        let r = run_chunks(
            info(BEDROCK_PATH),
            Limits::default(),
            200,
            "",
            None,
            &[&bytes],
            true,
        );
        assert_eq!(r.usage, u(1300, 300, 200, 100, 0, 0), "{:?}", r.flags);
    }

    #[test]
    fn hostile_event_streams_are_flagged_and_never_invent_usage() {
        use crate::eventstream::frame;
        let good = converse_stream(0);
        let first = frame::event("messageStart", br#"{"role":"assistant","p":"abc"}"#);
        let cases: Vec<(&str, Vec<u8>, Vec<Flag>)> = vec![
            (
                "cut mid-frame",
                good.get(..good.len() - 30).unwrap().to_vec(),
                vec![Flag::Incomplete],
            ),
            (
                "cut at a boundary before the usage",
                first.clone(),
                vec![Flag::Incomplete],
            ),
            (
                "payload CRC error",
                {
                    let mut b = good.clone();
                    *b.get_mut(first.len() + 40).unwrap() ^= 0x20;
                    b
                },
                vec![Flag::Incomplete, Flag::ParseError],
            ),
            (
                "prelude CRC error",
                {
                    let mut b = good.clone();
                    *b.get_mut(1).unwrap() ^= 1;
                    b
                },
                vec![Flag::Incomplete, Flag::ParseError],
            ),
            (
                "a declared 2 GiB message",
                {
                    let mut b = first.clone();
                    let mut prelude = Vec::from(0x8000_0000u32.to_be_bytes());
                    prelude.extend(0u32.to_be_bytes());
                    let crc = crate::eventstream::crc32(&prelude);
                    prelude.extend(crc.to_be_bytes());
                    b.extend(prelude);
                    b.extend(vec![0u8; 5000]);
                    b.extend(&good);
                    b
                },
                vec![Flag::Incomplete, Flag::ParseError],
            ),
            (
                "headers length beyond the message",
                {
                    let mut prelude = Vec::from(64u32.to_be_bytes());
                    prelude.extend(60u32.to_be_bytes());
                    let crc = crate::eventstream::crc32(&prelude);
                    prelude.extend(crc.to_be_bytes());
                    prelude.extend(vec![0u8; 52]);
                    prelude.extend(&good);
                    prelude
                },
                vec![Flag::Incomplete, Flag::ParseError],
            ),
            (
                "SSE instead of an event stream",
                CHAT_SSE.to_vec(),
                vec![Flag::Incomplete, Flag::ParseError],
            ),
            ("empty", Vec::new(), vec![Flag::Incomplete]),
        ];
        for (name, bytes, flags) in &cases {
            for size in [bytes.len().max(1), 41, 1] {
                let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
                let r = eventstream(BEDROCK_PATH, &chunks, true);
                assert_eq!(&r.flags, flags, "{name} in {size}-byte chunks");
                assert_eq!(r.usage, Usage::default(), "{name}");
                assert_eq!(r.provider, Provider::Bedrock, "{name}");
            }
        }
        // An exception mid-stream: recorded as an upstream error.
        let mut b = first;
        b.extend(frame::exception(
            "throttlingException",
            br#"{"message":"Rate exceeded"}"#,
        ));
        let r = eventstream(BEDROCK_PATH, &[&b], true);
        assert_eq!(r.flags, vec![Flag::UpstreamError, Flag::Incomplete]);
        // The client hung up after the usage: the usage stands, flagged.
        let r = eventstream(BEDROCK_PATH, &[&good], false);
        assert_eq!(r.usage, u(1300, 300, 200, 100, 0, 0));
        assert_eq!(r.flags, vec![Flag::Incomplete]);
    }

    #[test]
    fn event_streams_with_large_messages_stay_within_16_kib() {
        // A 100 KB delta (over the buffer: CRC-checked and dropped) among
        // 2,000 small ones, in random chunk sizes.
        use crate::eventstream::frame;
        let mut body = Vec::new();
        for i in 0..2000 {
            let text = if i == 700 {
                "y".repeat(100_000)
            } else {
                format!("w{i}")
            };
            let payload = format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"{text}"}}}}"#);
            body.extend(frame::event("contentBlockDelta", payload.as_bytes()));
        }
        body.extend(converse_stream(0));
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut t = ResponseTracker::new(info(BEDROCK_PATH), Limits::default());
        t.on_response_headers(200, Some(EVENTSTREAM), None, T0);
        let (mut pos, mut max_retained) = (0, 0);
        while pos < body.len() {
            let end = (pos + (rng.next() % 70_000) as usize + 1).min(body.len());
            t.on_response_body(&body[pos..end], T0 + 1);
            max_retained = max_retained.max(t.retained_bytes());
            pos = end;
        }
        assert!(
            max_retained <= DEFAULT_MAX_SSE_EVENT_BYTES,
            "retained {max_retained}"
        );
        let r = t.finish(true, T0 + 2);
        assert_eq!(r.flags, vec![]);
        assert_eq!(r.usage, u(1300, 300, 200, 100, 0, 0));
    }

    fn arb_chunks() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
        let fixture = prop_oneof![
            Just(CHAT_SSE),
            Just(RESPONSES_SSE),
            Just(ANTHROPIC_SSE),
            Just(GEMINI_SSE),
            Just(OPENROUTER_SSE),
            Just(GROQ_SSE),
            Just(DEEPSEEK_SSE),
            Just(COHERE_SSE),
        ];
        (
            fixture,
            proptest::collection::vec(any::<u8>(), 0..2048),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..16),
            proptest::collection::vec(1usize..600, 1..20),
        )
            .prop_map(|(fx, noise, edits, cuts)| {
                // Mutate a fixture: random byte edits plus appended noise.
                let mut b = fx.to_vec();
                for (at, byte) in edits {
                    let at = at % b.len();
                    b[at] = byte;
                }
                b.extend_from_slice(&noise);
                (b, cuts)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_streams_never_panic_and_stay_bounded(
            (body, cuts) in arb_chunks(),
            path in prop_oneof![
                Just("/v1/chat/completions"), Just("/v1/responses"), Just("/v1/messages"),
                Just(GEMINI_STREAM_PATH), Just("/unknown")
            ],
            streaming in any::<bool>(),
            max_sse in 0usize..4096,
            max_json in 0usize..4096,
            eos in any::<bool>(),
        ) {
            let limits = Limits { max_json_body_bytes: max_json, max_sse_event_bytes: max_sse };
            let mut t = ResponseTracker::new(info(path), limits);
            t.on_response_headers(200, Some(if streaming { "text/event-stream" } else { "application/json" }), None, T0);
            let bound = if streaming { max_sse.max(256 + STREAM_RESERVE_BYTES) } else { max_json.max(16) };
            let mut pos = 0;
            let mut k = 0;
            while pos < body.len() {
                let n = cuts[k % cuts.len()];
                k += 1;
                let end = (pos + n).min(body.len());
                t.on_response_body(&body[pos..end], T0);
                prop_assert!(t.retained_bytes() <= bound, "{} > {}", t.retained_bytes(), bound);
                pos = end;
            }
            let r = t.finish(eos, T0);
            prop_assert!(r.usage.cache_read_tokens <= r.usage.input_tokens);
            prop_assert!(r.usage.reasoning_tokens <= r.usage.output_tokens);
        }

        #[test]
        fn mutated_event_streams_never_panic_and_stay_bounded(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cuts in proptest::collection::vec(1usize..300, 1..10),
            max_sse in 0usize..4096,
            eos in any::<bool>(),
        ) {
            let mut body = converse_stream(3000);
            for (at, byte) in edits {
                let at = at % body.len();
                body[at] = byte;
            }
            let limits = Limits { max_json_body_bytes: 1024, max_sse_event_bytes: max_sse };
            let mut t = ResponseTracker::new(info(BEDROCK_PATH), limits);
            t.on_response_headers(200, Some(EVENTSTREAM), None, T0);
            let bound = max_sse.max(256 + STREAM_RESERVE_BYTES);
            let (mut pos, mut k) = (0, 0);
            while pos < body.len() {
                let end = (pos + cuts[k % cuts.len()]).min(body.len());
                k += 1;
                t.on_response_body(&body[pos..end], T0);
                prop_assert!(t.retained_bytes() <= bound, "{} > {}", t.retained_bytes(), bound);
                pos = end;
            }
            let r = t.finish(eos, T0);
            prop_assert!(r.usage.cache_read_tokens <= r.usage.input_tokens);
            // Usage is the genuine figures or nothing.
            prop_assert!(r.usage == Usage::default() || r.usage.output_tokens <= 300 * 256);
        }

        #[test]
        fn arbitrary_bytes_any_shape(body in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..100) {
            for path in ["/v1/chat/completions", "/v1/responses", "/v1/messages", GEMINI_STREAM_PATH, "/x"] {
                for ct in ["text/event-stream", "application/json"] {
                    let mut t = ResponseTracker::new(info(path), Limits { max_json_body_bytes: 1024, max_sse_event_bytes: 2048 });
                    t.on_response_headers(200, Some(ct), None, T0);
                    for c in body.chunks(chunk) {
                        t.on_response_body(c, T0);
                    }
                    prop_assert!(t.retained_bytes() <= 2048);
                    let _ = t.finish(true, T0);
                }
            }
        }
    }
}
