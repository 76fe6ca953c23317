//! One HTTP stream through the native filter: the same steps as the wasm
//! plugin's HTTP context (filter/src/host.rs), over the same pure core.
//! Header and body views point into Envoy's memory and are read in place;
//! the response body is never copied or buffered, only fed to the tracker.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use filter::enforce::{self, Decision};
use filter::record::Flag;
use filter::request::{
    header_value, pick_request_headers, prepare_request_body, stream_usage_injectable, HeaderNames,
};
use filter::reserve::{self, Answer, PendingNotice, ReservationRequest};
use filter::tracker::{Limits, RequestInfo, ResponseTracker};

use crate::abi;
use crate::delivery::Stat;
use crate::envoy::Stream;
use crate::BillingConfig;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_nanos() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Where a request of a governed scope far from its limit is in being
/// reported to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoticePhase {
    No,
    AwaitBody,
    Queued,
}

/// Where a request of a watched scope is on the reservation path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReservePhase {
    No,
    AwaitBody,
    /// Held until the collector answers callout `id`.
    Waiting(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Allow,
    Reserve,
    Notice,
    Answered,
}

pub struct BillingStream {
    config: Arc<BillingConfig>,
    tracker: Option<ResponseTracker>,
    buffer_request_body: bool,
    response_complete: bool,
    reserve: ReservePhase,
    notice: NoticePhase,
}

impl BillingStream {
    pub fn new(config: Arc<BillingConfig>) -> BillingStream {
        BillingStream {
            config,
            tracker: None,
            buffer_request_body: false,
            response_complete: false,
            reserve: ReservePhase::No,
            notice: NoticePhase::No,
        }
    }

    pub fn on_request_headers(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        let started_at_ms = now_ms();
        let headers = s.headers(abi::REQUEST_HEADER);
        let config = self.config.clone();
        let filter = &config.filter;
        let picked = pick_request_headers(
            &headers,
            HeaderNames {
                tenant: &filter.tenant_header,
                request_id: &filter.request_id_header,
                api_keys: &filter.api_key_headers,
            },
        );
        let tenant_id = picked.tenant_id.unwrap_or(&filter.default_tenant);
        let admission = if filter.enforce_budgets {
            self.enforce(s, tenant_id, picked.api_key_id.as_deref(), started_at_ms)
        } else {
            Admission::Allow
        };
        if admission == Admission::Answered {
            return abi::HEADERS_STOP_ITERATION;
        }
        let request_id = picked.request_id.map_or_else(
            || format!("noid-{started_at_ms}-{}", now_nanos()),
            str::to_owned,
        );
        let info = RequestInfo {
            path: picked.path.to_owned(),
            host: picked.authority.map(str::to_owned),
            request_id,
            tenant_id: tenant_id.to_owned(),
            api_key_id: picked.api_key_id,
            // The ABI has no route-name attribute in 1.40 (documented).
            route: None,
            started_at_ms,
            request_model: None,
            streamed_request: false,
        };
        let tracker = ResponseTracker::new(
            info,
            Limits {
                max_json_body_bytes: filter.max_json_body_bytes,
                max_sse_event_bytes: filter.max_sse_event_bytes,
            },
        );
        let accepts_compression = picked.accepts_compression;
        let readable = !end_of_stream
            && picked
                .content_length
                .is_some_and(|l| l <= filter.max_request_body_bytes);
        let injectable = filter.inject_stream_usage && stream_usage_injectable(picked.path);
        let read_body = readable && tracker.provider_known();
        drop(headers);
        self.tracker = Some(tracker);
        if filter.force_identity_encoding && accepts_compression {
            s.set_header(abi::REQUEST_HEADER, "accept-encoding", Some("identity"));
        }
        if admission == Admission::Reserve && !end_of_stream {
            if readable {
                self.reserve = ReservePhase::AwaitBody;
                self.buffer_request_body = true;
            } else if self.request_reservation(s, None) || self.tracker.is_none() {
                return abi::HEADERS_STOP_ITERATION;
            }
        }
        if admission == Admission::Notice {
            if read_body {
                self.notice = NoticePhase::AwaitBody;
            } else {
                self.queue_notice(None);
            }
        }
        if read_body {
            self.buffer_request_body = true;
            if injectable {
                // A rewritten body grows; Envoy recomputes the framing.
                s.set_header(abi::REQUEST_HEADER, "content-length", None);
            }
        }
        abi::HEADERS_CONTINUE
    }

    pub fn on_request_body(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        if !self.buffer_request_body {
            return abi::BODY_CONTINUE;
        }
        if !end_of_stream {
            return abi::BODY_STOP_ITERATION_AND_BUFFER;
        }
        self.buffer_request_body = false;
        // The whole body: what earlier calls buffered, then this chunk
        // (unless this chunk is that buffer, released by another filter).
        let mut body = Vec::new();
        let buffered = s.body_chunks(abi::BUFFERED_REQUEST_BODY);
        let received = if s.received_is_buffered_request() {
            Vec::new()
        } else {
            s.body_chunks(abi::RECEIVED_REQUEST_BODY)
        };
        for chunk in buffered.iter().chain(received.iter()) {
            body.extend_from_slice(chunk);
        }
        let path = self
            .tracker
            .as_ref()
            .map(|t| t.path().to_string())
            .unwrap_or_default();
        let info = prepare_request_body(&path, &body, self.config.filter.inject_stream_usage);
        if let Some(rewritten) = &info.rewritten {
            // Everything goes out as this chunk, in order.
            s.drain_body(
                abi::BUFFERED_REQUEST_BODY,
                s.body_size(abi::BUFFERED_REQUEST_BODY),
            );
            s.drain_body(
                abi::RECEIVED_REQUEST_BODY,
                s.body_size(abi::RECEIVED_REQUEST_BODY),
            );
            s.append_body(abi::RECEIVED_REQUEST_BODY, rewritten);
        }
        if let Some(tracker) = self.tracker.as_mut() {
            tracker.set_request_details(info.model, info.stream);
        }
        let body = info.rewritten.as_deref().unwrap_or(&body);
        if self.notice == NoticePhase::AwaitBody {
            self.queue_notice(Some(body));
        }
        if self.reserve == ReservePhase::AwaitBody
            && (self.request_reservation(s, Some(body)) || self.tracker.is_none())
        {
            return abi::BODY_STOP_ITERATION_AND_BUFFER;
        }
        abi::BODY_CONTINUE
    }

    pub fn on_response_headers(&mut self, s: Stream) -> u32 {
        let Some(tracker) = self.tracker.as_mut() else {
            return abi::HEADERS_CONTINUE;
        };
        let headers = s.headers(abi::RESPONSE_HEADER);
        let status = header_value(&headers, ":status")
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(0);
        tracker.on_response_headers(
            status,
            header_value(&headers, "content-type"),
            header_value(&headers, "content-encoding"),
            now_ms(),
        );
        tracker.on_bedrock_headers(|name| header_value(&headers, name));
        abi::HEADERS_CONTINUE
    }

    pub fn on_response_body(&mut self, s: Stream, end_of_stream: bool) -> u32 {
        if let Some(tracker) = self.tracker.as_mut() {
            for chunk in s.body_chunks(abi::RECEIVED_RESPONSE_BODY) {
                if chunk.is_empty() {
                    continue;
                }
                // Only the first chunk's time is used (time to first byte).
                let now = if tracker.awaiting_first_byte() {
                    now_ms()
                } else {
                    0
                };
                tracker.on_response_body(chunk, now);
            }
        }
        if end_of_stream {
            self.response_complete = true;
        }
        abi::BODY_CONTINUE
    }

    /// The stream is over: its record goes to the shared queue.
    pub fn on_stream_complete(&mut self, s: Stream) {
        let Some(tracker) = self.tracker.take() else {
            return;
        };
        let config = &self.config;
        if self.notice == NoticePhase::Queued {
            // Not reported yet: its record tells the collector instead.
            config
                .dest
                .lock()
                .notices
                .forget(&tracker.request().request_id);
        }
        let record = tracker.finish(self.response_complete, now_ms());
        let incomplete = record.flags.contains(&Flag::Incomplete);
        let parse_failure = record
            .flags
            .iter()
            .any(|f| matches!(f, Flag::ParseError | Flag::BodyTooLarge | Flag::Compressed));
        let json = match serde_json::to_string(&record) {
            Ok(json) => json,
            Err(err) => {
                log::error!("llm_billing: cannot serialize a usage record: {err}");
                return;
            }
        };
        {
            let mut shared = config.dest.lock();
            let dropped = shared.queue.push(json);
            shared.pending.incomplete += u64::from(incomplete);
            shared.pending.parse_failures += u64::from(parse_failure);
            shared.pending.dropped += dropped;
        }
        s.add(&config.stats, Stat::Captured, 1);
    }

    /// The collector answered this stream's reservation callout.
    pub fn on_callout_done(&mut self, s: Stream, id: u64, status: Option<u16>, body: &[u8]) {
        if self.reserve != ReservePhase::Waiting(id) {
            return;
        }
        if self.on_reservation(s, reserve::parse_answer(status, body)) {
            s.continue_decoding();
        }
    }

    fn enforce(&self, s: Stream, tenant: &str, key: Option<&str>, now: u64) -> Admission {
        let config = &self.config;
        let answer = {
            let shared = config.dest.lock();
            let (decision, stale) = shared.deny.decide(
                tenant,
                key,
                now,
                config.filter.deny_ttl_ms,
                config.filter.deny_fail_open,
            );
            if stale {
                s.add(&config.stats, Stat::DenyStale, 1);
            }
            match decision {
                Decision::Allow => return Admission::Allow,
                Decision::Reserve => return Admission::Reserve,
                Decision::Notice => return Admission::Notice,
                Decision::Deny(entry) => (
                    429,
                    enforce::retry_after_secs(entry, now),
                    "false",
                    enforce::blocked_body(entry),
                ),
                Decision::Unavailable => (
                    503,
                    enforce::UNAVAILABLE_RETRY_AFTER_SECS,
                    "true",
                    enforce::unavailable_body(),
                ),
            }
        };
        let (status, retry_after, should_retry, body) = answer;
        self.answer_locally(s, status, retry_after, should_retry, &body);
        Admission::Answered
    }

    fn answer_locally(
        &self,
        s: Stream,
        status: u32,
        retry_after: u64,
        should_retry: &str,
        body: &[u8],
    ) {
        let retry_after = retry_after.to_string();
        s.send_response(
            status,
            &[
                ("content-type", "application/json"),
                ("retry-after", retry_after.as_str()),
                ("x-should-retry", should_retry),
            ],
            body,
        );
        s.add(&self.config.stats, Stat::Blocked, 1);
    }

    /// Asks the collector to reserve this request's bound; true when the
    /// request waits for the answer.
    fn request_reservation(&mut self, s: Stream, body: Option<&[u8]>) -> bool {
        let Some(payload) = self.reservation_body(body) else {
            return false;
        };
        let filter = &self.config.filter;
        let auth = format!("Bearer {}", filter.ingest_token);
        let headers = [
            (":method", "POST"),
            (":path", filter.reserve_path.as_str()),
            ("host", filter.collector_authority.as_str()),
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        match s.callout(
            &filter.collector_cluster,
            &headers,
            &payload,
            filter.reserve_timeout_ms,
        ) {
            Ok(id) => {
                self.reserve = ReservePhase::Waiting(id);
                true
            }
            Err(why) => {
                log::warn!("llm_billing: cannot ask for a reservation ({why})");
                !self.on_reservation(s, Answer::Unusable)
            }
        }
    }

    fn reservation_body(&self, body: Option<&[u8]>) -> Option<Vec<u8>> {
        let tracker = self.tracker.as_ref()?;
        let info = tracker.request();
        let model = tracker.requested_model();
        let request = ReservationRequest {
            request_id: &info.request_id,
            tenant_id: &info.tenant_id,
            api_key_id: info.api_key_id.as_deref(),
            provider: tracker.provider().as_str(),
            model: model.as_deref(),
            estimate: reserve::estimate(body),
            ttl_ms: self.config.filter.reservation_ttl_ms,
        };
        Some(request.body())
    }

    fn queue_notice(&mut self, body: Option<&[u8]>) {
        let Some(tracker) = &self.tracker else {
            return;
        };
        let info = tracker.request();
        let notice = PendingNotice {
            tenant_id: info.tenant_id.clone(),
            api_key_id: info.api_key_id.clone(),
            provider: tracker.provider().as_str(),
            model: tracker.requested_model(),
            estimate: reserve::estimate(body),
            ttl_ms: self.config.filter.reservation_ttl_ms,
            started_at_ms: info.started_at_ms,
        };
        let request_id = info.request_id.clone();
        self.config.dest.lock().notices.push(request_id, notice);
        self.notice = NoticePhase::Queued;
    }

    /// Acts on a reservation answer; true when the request goes on.
    fn on_reservation(&mut self, s: Stream, answer: Answer) -> bool {
        self.reserve = ReservePhase::No;
        let stats = &self.config.stats;
        match answer {
            Answer::Admitted => {
                s.add(stats, Stat::ReserveAdmitted, 1);
                true
            }
            Answer::Refused(entry) => {
                s.add(stats, Stat::ReserveRefused, 1);
                // Refused before upstream: nothing spent, nothing recorded.
                self.tracker = None;
                let retry_after = enforce::retry_after_secs(&entry, now_ms());
                self.answer_locally(s, 429, retry_after, "false", &enforce::blocked_body(&entry));
                false
            }
            Answer::Unusable => {
                s.add(stats, Stat::ReserveUnavailable, 1);
                if self.config.filter.deny_fail_open {
                    return true;
                }
                self.tracker = None;
                self.answer_locally(
                    s,
                    503,
                    enforce::UNAVAILABLE_RETRY_AFTER_SECS,
                    "true",
                    &enforce::unavailable_body(),
                );
                false
            }
        }
    }
}
