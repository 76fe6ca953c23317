//! proxy-wasm glue: moves bytes between Envoy and the pure modules. Every
//! host call's result is handled; nothing here may panic or block traffic.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

use crate::config::FilterConfig;
use crate::deny_share::{self, Follower, Keys, LeaseStep, Meta, Publisher};
use crate::enforce::{self, Decision, DenySet, DenyState};
use crate::queue::{DeliveryQueue, Outcome};
use crate::request::{
    header_value, pick_request_headers, prepare_request_body, stream_usage_injectable, HeaderNames,
};
use crate::reserve::{self, Answer, Notices, PendingNotice, ReservationRequest};
use crate::tracker::{Limits, RequestInfo, ResponseTracker};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BillingRoot::default()) });
}}

/// Filter-wide counters, exported by Envoy as `wasmcustom.llm_billing.*`.
#[derive(Default, Clone, Copy)]
struct Stats {
    captured: Option<u32>,
    flushed: Option<u32>,
    retried: Option<u32>,
    dropped: Option<u32>,
    parse_failures: Option<u32>,
    incomplete: Option<u32>,
    buffered: Option<u32>,
    /// Requests answered 429 (deny list) or 503 (stale list, fail closed).
    blocked: Option<u32>,
    /// Requests decided while the deny list was stale.
    deny_stale: Option<u32>,
    deny_failures: Option<u32>,
    deny_entries: Option<u32>,
    /// Watched requests admitted against a reservation.
    reserve_admitted: Option<u32>,
    /// Watched requests refused (429) because their estimate did not fit.
    reserve_refused: Option<u32>,
    /// Reservation calls without a usable answer (`deny_fail_open` decided).
    reserve_unavailable: Option<u32>,
    /// Requests of governed scopes admitted from memory and reported to
    /// the collector on the next tick; reported but not acknowledged; not
    /// reported (buffer full, or finished first and told by their record).
    notices_sent: Option<u32>,
    notices_failed: Option<u32>,
    notices_dropped: Option<u32>,
}

impl Stats {
    fn define() -> Self {
        let counter = |name: &str| {
            proxy_wasm::hostcalls::define_metric(
                MetricType::Counter,
                &format!("llm_billing.{name}"),
            )
            .ok()
        };
        Stats {
            captured: counter("records_captured"),
            flushed: counter("records_flushed"),
            retried: counter("records_retried"),
            dropped: counter("records_dropped"),
            parse_failures: counter("parse_failures"),
            incomplete: counter("incomplete_streams"),
            buffered: proxy_wasm::hostcalls::define_metric(
                MetricType::Gauge,
                "llm_billing.records_buffered",
            )
            .ok(),
            blocked: counter("requests_blocked"),
            deny_stale: counter("deny_list_stale"),
            deny_failures: counter("deny_list_refresh_failures"),
            deny_entries: proxy_wasm::hostcalls::define_metric(
                MetricType::Gauge,
                "llm_billing.deny_list_entries",
            )
            .ok(),
            reserve_admitted: counter("reservations_admitted"),
            reserve_refused: counter("requests_refused_by_reservation"),
            reserve_unavailable: counter("reservations_unavailable"),
            notices_sent: counter("reservation_notices_sent"),
            notices_failed: counter("reservation_notices_failed"),
            notices_dropped: counter("reservation_notices_dropped"),
        }
    }

    fn add(metric: Option<u32>, n: u64) {
        if let Some(id) = metric {
            if n > 0 {
                let _ = proxy_wasm::hostcalls::increment_metric(
                    id,
                    i64::try_from(n).unwrap_or(i64::MAX),
                );
            }
        }
    }

    /// Moves a gauge shared by every VM (each worker's, and the main
    /// thread's) by this VM's change, so it shows the sum over workers.
    fn report_buffered(stats: &Stats, reported: &mut usize, now_buffered: usize) {
        if let Some(id) = stats.buffered {
            let delta = i64::try_from(now_buffered).unwrap_or(i64::MAX)
                - i64::try_from(*reported).unwrap_or(i64::MAX);
            if delta != 0 && proxy_wasm::hostcalls::increment_metric(id, delta).is_ok() {
                *reported = now_buffered;
            }
        }
    }

    fn set(metric: Option<u32>, value: usize) {
        if let Some(id) = metric {
            let _ =
                proxy_wasm::hostcalls::record_metric(id, u64::try_from(value).unwrap_or(u64::MAX));
        }
    }
}

/// Per-request counts kept in the VM and handed to Envoy on the tick, so a
/// request costs at most one metric host call.
#[derive(Default)]
struct PendingCounts {
    incomplete: u64,
    parse_failures: u64,
    dropped: u64,
}

impl PendingCounts {
    fn flush(&mut self, stats: &Stats) {
        let counts = std::mem::take(self);
        Stats::add(stats.incomplete, counts.incomplete);
        Stats::add(stats.parse_failures, counts.parse_failures);
        Stats::add(stats.dropped, counts.dropped);
    }
}

/// State shared by a worker's root context and its HTTP contexts (one
/// thread per VM, so `Rc<RefCell>` is enough).
struct Shared {
    queue: DeliveryQueue,
    stats: Stats,
    pending: PendingCounts,
    /// This VM's share of the `records_buffered` gauge last reported.
    buffered_reported: usize,
    /// Live root contexts using this queue: a reloaded plugin's new root
    /// context takes over the old one's records.
    roots: usize,
    deny: DenyState,
    /// Which published deny list `deny` holds.
    deny_seen: Follower,
    /// Admitted requests of governed scopes to report on the next tick.
    notices: Notices,
}

thread_local! {
    /// Queues by collector destination, kept for the life of the VM so a
    /// plugin reconfiguration (new root context, same VM) loses nothing.
    /// The deny list lives beside each queue, per VM; one worker polls it
    /// and publishes it to the others through shared data (deny_share).
    static QUEUES: RefCell<Vec<(String, Rc<RefCell<Shared>>)>> = const { RefCell::new(Vec::new()) };
}

fn shared_queue(config: &FilterConfig) -> Rc<RefCell<Shared>> {
    let key = format!(
        "{}|{}|{}",
        config.collector_cluster, config.collector_authority, config.ingest_path
    );
    QUEUES.with(|queues| {
        let mut queues = queues.borrow_mut();
        if let Some((_, shared)) = queues.iter().find(|(k, _)| *k == key) {
            let mut guard = shared.borrow_mut();
            let dropped = guard.queue.reconfigure(
                config.max_buffered_records,
                config.max_batch_records,
                config.flush_interval_ms,
                config.max_backoff_ms,
            );
            if dropped > 0 {
                Stats::add(guard.stats.dropped, dropped);
                log::warn!("llm_billing: smaller buffer after reconfiguration dropped {dropped} oldest records");
            }
            drop(guard);
            return shared.clone();
        }
        let shared = Rc::new(RefCell::new(Shared {
            queue: DeliveryQueue::new(
                config.max_buffered_records,
                config.max_batch_records,
                config.flush_interval_ms,
                config.max_backoff_ms,
            ),
            stats: Stats::define(),
            pending: PendingCounts::default(),
            buffered_reported: 0,
            roots: 0,
            deny: DenyState::default(),
            deny_seen: Follower::default(),
            notices: Notices::default(),
        }));
        queues.push((key, shared.clone()));
        shared
    })
}

#[derive(Default)]
struct BillingRoot {
    config: Option<Rc<FilterConfig>>,
    shared: Option<Rc<RefCell<Shared>>>,
    draining: bool,
    released: bool,
    /// The tick period: the flush interval, or the deny refresh interval
    /// when that is shorter; each job runs when its own interval is due.
    tick_ms: u64,
    last_flush_tick_ms: u64,
    /// The deny list callout in flight (token, sent at); distinct from the
    /// ingest callout the queue tracks.
    deny_call: Option<(u32, u64)>,
    last_deny_ms: u64,
    deny_failing: bool,
    /// This root context's identity as a deny-list poller.
    deny_publisher: Option<Publisher>,
    deny_keys: Option<Keys>,
    /// Held the poller lease on the last tick (to log hand-overs).
    deny_polling: bool,
    /// The notices callout in flight (token, sent at, notices).
    notice_call: Option<(u32, u64, usize)>,
}

fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The headers of a POST to the collector, authorized by the ingest token.
fn collector_post<'a>(
    config: &'a FilterConfig,
    path: &'a str,
    auth: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "POST"),
        (":path", path),
        (":authority", config.collector_authority.as_str()),
        ("content-type", "application/json"),
        ("authorization", auth),
    ]
}

impl BillingRoot {
    /// Sends the next batch if one is ready; called on ticks and after acks.
    fn flush(&self) {
        let (Some(config), Some(shared)) = (&self.config, &self.shared) else {
            return;
        };
        let mut shared = shared.borrow_mut();
        let now = now_ms();
        let Some(batch) = shared.queue.take_batch(now) else {
            return;
        };
        let auth = format!("Bearer {}", config.ingest_token);
        let headers = collector_post(config, &config.ingest_path, &auth);
        match self.dispatch_http_call(
            &config.collector_cluster,
            headers,
            Some(&batch.body),
            vec![],
            Duration::from_millis(config.callout_timeout_ms),
        ) {
            Ok(token) => shared.queue.sent(token),
            Err(status) => {
                log::warn!(
                    "llm_billing: cannot reach collector cluster {:?} ({status:?}); {} records kept for retry",
                    config.collector_cluster,
                    batch.records
                );
                if let Outcome::WillRetry(n) = shared.queue.send_failed(now) {
                    Stats::add(shared.stats.retried, n as u64);
                }
            }
        }
    }
}

impl BillingRoot {
    /// Reports the requests of governed scopes admitted since the last
    /// tick, one callout at a time; a lost call is not retried (the
    /// records still tell the collector, only later).
    fn send_notices(&mut self, now: u64) {
        let (Some(config), Some(shared)) = (self.config.clone(), self.shared.clone()) else {
            return;
        };
        let mut shared = shared.borrow_mut();
        Stats::add(shared.stats.notices_dropped, shared.notices.take_dropped());
        if let Some((_, sent, n)) = self.notice_call {
            if now.saturating_sub(sent) <= config.callout_timeout_ms.saturating_mul(2) {
                return;
            }
            self.notice_call = None;
            Stats::add(shared.stats.notices_failed, n as u64);
        }
        let Some((body, n)) = shared.notices.take_body() else {
            return;
        };
        let auth = format!("Bearer {}", config.ingest_token);
        let path = format!("{}/notices", config.reserve_path);
        let headers = collector_post(&config, &path, &auth);
        match self.dispatch_http_call(
            &config.collector_cluster,
            headers,
            Some(&body),
            vec![],
            Duration::from_millis(config.callout_timeout_ms),
        ) {
            Ok(token) => self.notice_call = Some((token, now, n)),
            Err(_) => Stats::add(shared.stats.notices_failed, n as u64),
        }
    }

    /// True when a job of period `interval` last run at `last` is due on
    /// this tick (half a tick of slack absorbs timer jitter).
    fn due(&self, now: u64, last: u64, interval: u64) -> bool {
        now.saturating_sub(last).saturating_add(self.tick_ms / 2) >= interval
    }

    /// Takes up a deny list another worker published, then, if this root
    /// context holds the poller lease, asks the collector for the list when
    /// due and none is in flight.
    fn refresh_deny(&mut self, now: u64) {
        let Some(config) = self.config.clone() else {
            return;
        };
        if !config.enforce_budgets || self.draining || self.released {
            return;
        }
        self.sync_deny();
        let polling = self.hold_deny_lease(now, deny_share::lease_ms(config.deny_refresh_ms));
        if polling != self.deny_polling {
            self.deny_polling = polling;
            log::info!(
                "llm_billing: this worker {} the deny list for all workers",
                if polling {
                    "now polls"
                } else {
                    "no longer polls"
                }
            );
        }
        if !polling {
            return;
        }
        if let Some((_, sent)) = self.deny_call {
            // An answer that never came must not stop the refreshes.
            if now.saturating_sub(sent) <= config.callout_timeout_ms.saturating_mul(2) {
                return;
            }
            self.deny_call = None;
            self.deny_failed("no answer");
        }
        let fetched_at = self
            .shared
            .as_ref()
            .and_then(|s| s.borrow().deny.fetched_at());
        if !deny_share::poll_due(
            now,
            self.last_deny_ms,
            fetched_at,
            config.deny_refresh_ms,
            self.tick_ms / 2,
        ) {
            return;
        }
        self.last_deny_ms = now;
        let auth = format!("Bearer {}", config.ingest_token);
        let headers = vec![
            (":method", "GET"),
            (":path", config.deny_path.as_str()),
            (":authority", config.collector_authority.as_str()),
            ("accept", "application/json"),
            ("authorization", auth.as_str()),
        ];
        let timeout = config.callout_timeout_ms.min(config.deny_ttl_ms);
        match self.dispatch_http_call(
            &config.collector_cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(timeout),
        ) {
            Ok(token) => self.deny_call = Some((token, now)),
            Err(status) => self.deny_failed(&format!("dispatch failed: {status:?}")),
        }
    }

    /// Takes or renews the poller lease; true while this context holds it.
    fn hold_deny_lease(&mut self, now: u64, lease_ms: u64) -> bool {
        let (Some(keys), Some(publisher)) = (&self.deny_keys, &self.deny_publisher) else {
            return false;
        };
        let (current, cas) =
            proxy_wasm::hostcalls::get_shared_data(&keys.lease).unwrap_or_default();
        match deny_share::lease_step(current.as_deref(), publisher.owner(), now, lease_ms) {
            LeaseStep::Follow => false,
            LeaseStep::Take(lease) => {
                proxy_wasm::hostcalls::set_shared_data(&keys.lease, Some(&lease.encode()), cas)
                    .is_ok()
            }
        }
    }

    /// Gives the lease up at teardown so another worker polls at once.
    fn release_deny_lease(&self) {
        let (Some(keys), Some(publisher)) = (&self.deny_keys, &self.deny_publisher) else {
            return;
        };
        let (current, cas) =
            proxy_wasm::hostcalls::get_shared_data(&keys.lease).unwrap_or_default();
        if let Some(free) = deny_share::lease_release(current.as_deref(), publisher.owner()) {
            let _ = proxy_wasm::hostcalls::set_shared_data(&keys.lease, Some(&free.encode()), cas);
        }
    }

    /// Reads the shared meta (a few bytes) and, when it names a list not
    /// taken yet, copies and parses that list.
    fn sync_deny(&self) {
        let (Some(keys), Some(shared)) = (&self.deny_keys, &self.shared) else {
            return;
        };
        let Some(meta) = proxy_wasm::hostcalls::get_shared_data(&keys.meta)
            .ok()
            .and_then(|(v, _)| v)
            .and_then(|v| Meta::decode(&v))
        else {
            return;
        };
        let mut shared = shared.borrow_mut();
        if shared.deny_seen.needs_list(&meta) {
            let list = proxy_wasm::hostcalls::get_shared_data(&keys.list)
                .ok()
                .and_then(|(v, _)| v)
                .unwrap_or_default();
            match DenySet::parse(&list) {
                Ok(set) => {
                    let entries = set.len();
                    shared.deny.adopt(set);
                    Stats::set(shared.stats.deny_entries, entries);
                }
                // The poller published it only after parsing it; keep the
                // last good one rather than retrying every tick.
                Err(err) => log::warn!("llm_billing: shared deny list unreadable: {err}"),
            }
            shared.deny_seen.took(&meta);
        }
        shared.deny.fetched(meta.fetched_at_ms);
    }

    fn deny_failed(&mut self, why: &str) {
        if let Some(shared) = &self.shared {
            Stats::add(shared.borrow().stats.deny_failures, 1);
        }
        // Log the first failure of a streak, not every refresh.
        if !self.deny_failing {
            self.deny_failing = true;
            log::warn!("llm_billing: cannot refresh the deny list ({why}); keeping the last one");
        }
    }

    fn on_deny_response(&mut self, body_size: usize) {
        let status = self
            .get_http_call_response_header(":status")
            .and_then(|s| s.parse::<u16>().ok());
        if status != Some(200) {
            self.deny_failed(&format!("collector answered {status:?}"));
            return;
        }
        if body_size > enforce::MAX_DENY_BODY_BYTES {
            self.deny_failed(&format!("{body_size} byte list is too large"));
            return;
        }
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let set = match DenySet::parse(&body) {
            Ok(set) => set,
            Err(err) => {
                self.deny_failed(&err);
                return;
            }
        };
        if self.deny_failing {
            self.deny_failing = false;
            log::info!("llm_billing: deny list refreshed again");
        }
        let (Some(shared), Some(keys), Some(publisher)) =
            (&self.shared, &self.deny_keys, self.deny_publisher.as_mut())
        else {
            return;
        };
        let (meta, write_list) = {
            let shared = shared.borrow();
            let changed = !shared.deny.same_list(&set);
            publisher.publish(changed, shared.deny_seen.version(), now_ms())
        };
        if write_list {
            if set.skipped > 0 {
                log::warn!(
                    "llm_billing: {} deny list entries not enforced (over the cap, malformed, or per model)",
                    set.skipped
                );
            }
            let _ = proxy_wasm::hostcalls::set_shared_data(&keys.list, Some(&body), None);
        }
        let _ = proxy_wasm::hostcalls::set_shared_data(&keys.meta, Some(&meta.encode()), None);
        // Taken up like any worker would, so all hold what is published.
        self.sync_deny();
    }

    fn may_finish(&self) -> bool {
        self.released
            || self.shared.as_ref().is_none_or(|s| {
                let s = s.borrow();
                s.roots > 1 || s.queue.is_empty()
            })
    }

    fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        if let Some(shared) = &self.shared {
            let mut shared = shared.borrow_mut();
            shared.roots = shared.roots.saturating_sub(1);
        }
    }
}

impl Context for BillingRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.deny_call.is_some_and(|(t, _)| t == token) {
            self.deny_call = None;
            self.on_deny_response(body_size);
            return;
        }
        if let Some((_, _, n)) = self.notice_call.filter(|(t, _, _)| *t == token) {
            self.notice_call = None;
            let ok = self
                .get_http_call_response_header(":status")
                .is_some_and(|s| s.starts_with('2'));
            if let Some(shared) = &self.shared {
                let stats = shared.borrow().stats;
                Stats::add(
                    if ok {
                        stats.notices_sent
                    } else {
                        stats.notices_failed
                    },
                    n as u64,
                );
            }
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .and_then(|s| s.parse::<u16>().ok());
        let acknowledged = status.is_some_and(|s| (200..300).contains(&s));
        let more = if let Some(shared) = &self.shared {
            let mut shared = shared.borrow_mut();
            let outcome = shared.queue.complete(token, acknowledged, now_ms());
            match outcome {
                Outcome::Acknowledged(n) => Stats::add(shared.stats.flushed, n as u64),
                Outcome::WillRetry(n) => {
                    Stats::add(shared.stats.retried, n as u64);
                    log::warn!(
                        "llm_billing: collector answered {status:?}; {n} records will be retried in {} ms",
                        shared.queue.backoff_ms()
                    );
                }
                Outcome::UnknownToken => {}
            }
            let Shared {
                stats,
                queue,
                buffered_reported,
                ..
            } = &mut *shared;
            Stats::report_buffered(stats, buffered_reported, queue.len());
            matches!(outcome, Outcome::Acknowledged(_)) && shared.queue.waiting() > 0
        } else {
            false
        };
        // Keep draining a backlog without waiting for the next tick.
        if more {
            self.flush();
        }
        if self.draining && self.may_finish() {
            self.release();
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        // The plugin is being torn down (reload or shutdown). If another root
        // context shares the queue it carries on; otherwise try to deliver
        // what is buffered before letting go.
        if !self.draining {
            self.release_deny_lease();
        }
        self.draining = true;
        if self.may_finish() {
            self.release();
            return true;
        }
        self.flush();
        false
    }
}

impl RootContext for BillingRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration();
        match FilterConfig::parse(bytes.as_deref()) {
            Ok(config) => {
                log::info!(
                    "llm_billing: configured, shipping usage to cluster {:?} every {} ms",
                    config.collector_cluster,
                    config.flush_interval_ms
                );
                let shared = shared_queue(&config);
                if self.shared.is_none() {
                    shared.borrow_mut().roots += 1;
                    self.shared = Some(shared);
                }
                self.tick_ms = config.flush_interval_ms;
                if config.enforce_budgets {
                    self.tick_ms = self
                        .tick_ms
                        .min(deny_share::sync_period_ms(config.deny_refresh_ms));
                    if let Some(shared) = &self.shared {
                        shared.borrow_mut().deny.start(now_ms());
                    }
                    self.deny_keys = Some(Keys::new(&format!(
                        "{}|{}|{}",
                        config.collector_cluster, config.collector_authority, config.deny_path
                    )));
                    if self.deny_publisher.is_none() {
                        let salt =
                            u64::from(proxy_wasm::hostcalls::get_current_time().map_or(0, |t| {
                                t.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
                            }));
                        self.deny_publisher = Some(Publisher::new(deny_share::new_owner_id(salt)));
                    }
                    log::info!(
                        "llm_billing: enforcing budgets, deny list {:?} refreshed every {} ms by one worker",
                        config.deny_path,
                        config.deny_refresh_ms
                    );
                }
                self.set_tick_period(Duration::from_millis(self.tick_ms));
                self.config = Some(Rc::new(config));
                true
            }
            Err(err) => {
                log::error!("llm_billing: {err}; the plugin will not start");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        // A batch whose callout never answered (its context went away, or
        // Envoy dropped it) is put back for retry instead of blocking the queue.
        if let (Some(config), Some(shared)) = (&self.config, &self.shared) {
            let stale_after = config.callout_timeout_ms.saturating_mul(2);
            let mut shared = shared.borrow_mut();
            if let Outcome::WillRetry(n) = shared.queue.expire_stale(now_ms(), stale_after) {
                Stats::add(shared.stats.retried, n as u64);
            }
            let Shared {
                pending,
                stats,
                queue,
                buffered_reported,
                ..
            } = &mut *shared;
            if pending.dropped > 0 {
                // Once per tick, not once per dropped record.
                log::warn!(
                    "llm_billing: buffer full ({} records), dropped the {} oldest; total dropped {}",
                    config.max_buffered_records,
                    pending.dropped,
                    queue.dropped_total()
                );
            }
            pending.flush(stats);
            Stats::report_buffered(stats, buffered_reported, queue.len());
        }
        let now = now_ms();
        let flush_interval = self.config.as_ref().map_or(0, |c| c.flush_interval_ms);
        if !self.released && self.due(now, self.last_flush_tick_ms, flush_interval) {
            self.last_flush_tick_ms = now;
            self.flush();
        }
        if !self.released {
            self.send_notices(now);
        }
        self.refresh_deny(now);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        let shared = self.shared.clone()?;
        Some(Box::new(BillingHttp {
            config,
            shared,
            tracker: None,
            buffer_request_body: false,
            response_complete: false,
            reserve: ReservePhase::No,
            notice: NoticePhase::No,
        }))
    }
}

struct BillingHttp {
    config: Rc<FilterConfig>,
    shared: Rc<RefCell<Shared>>,
    tracker: Option<ResponseTracker>,
    buffer_request_body: bool,
    response_complete: bool,
    reserve: ReservePhase,
    notice: NoticePhase,
}

/// Where a request of a governed scope far from its limit is in being
/// reported to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoticePhase {
    No,
    /// Reported once the body (the bound's input) is read.
    AwaitBody,
    /// Waiting in the worker's notices for the next tick.
    Queued,
}

/// Where a request of a watched scope is on the reservation path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReservePhase {
    No,
    /// Reserve once the body (the estimate's input) is read.
    AwaitBody,
    /// Held until the collector answers.
    Waiting,
}

/// What the deny list says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Allow,
    Reserve,
    /// Allowed; reported on the next tick.
    Notice,
    /// Answered locally (429 or 503).
    Answered,
}

impl BillingHttp {
    fn route_name(&self) -> Option<String> {
        for path in [["xds", "route_name"], ["xds", "cluster_name"]] {
            if let Some(bytes) = self.get_property(path.to_vec()) {
                if let Ok(name) = String::from_utf8(bytes) {
                    if !name.is_empty() {
                        return Some(name);
                    }
                }
            }
        }
        None
    }
}

impl BillingHttp {
    /// Answers the request locally when the deny list says so.
    fn enforce(&self, tenant: &str, key: Option<&str>, now: u64) -> Admission {
        let answer = {
            let shared = self.shared.borrow();
            let (decision, stale) = shared.deny.decide(
                tenant,
                key,
                now,
                self.config.deny_ttl_ms,
                self.config.deny_fail_open,
            );
            if stale {
                Stats::add(shared.stats.deny_stale, 1);
            }
            match decision {
                Decision::Allow => return Admission::Allow,
                Decision::Reserve => return Admission::Reserve,
                Decision::Notice => return Admission::Notice,
                Decision::Deny(entry) => Some((
                    429,
                    enforce::retry_after_secs(entry, now),
                    "false",
                    enforce::blocked_body(entry),
                )),
                Decision::Unavailable => Some((
                    503,
                    enforce::UNAVAILABLE_RETRY_AFTER_SECS,
                    "true",
                    enforce::unavailable_body(),
                )),
            }
        };
        let Some((status, retry_after, should_retry, body)) = answer else {
            return Admission::Allow;
        };
        if self.answer_locally(status, retry_after, should_retry, &body) {
            Admission::Answered
        } else {
            Admission::Allow
        }
    }

    /// Sends a 429 / 503 of the deny list's shape; true if it was sent.
    fn answer_locally(
        &self,
        status: u32,
        retry_after: u64,
        should_retry: &str,
        body: &[u8],
    ) -> bool {
        let retry_after = retry_after.to_string();
        let sent = proxy_wasm::hostcalls::send_http_response(
            status,
            vec![
                ("content-type", "application/json"),
                ("retry-after", retry_after.as_str()),
                ("x-should-retry", should_retry),
            ],
            Some(body),
        )
        .is_ok();
        if sent {
            Stats::add(self.shared.borrow().stats.blocked, 1);
        }
        sent
    }

    /// Asks the collector to reserve this request's cost bound; true when
    /// the request must wait for the answer. A call that cannot be sent is
    /// decided by `deny_fail_open` at once.
    fn request_reservation(&mut self, body: Option<&[u8]>) -> bool {
        let Some(payload) = self.reservation_body(body) else {
            return false;
        };
        let auth = format!("Bearer {}", self.config.ingest_token);
        let headers = collector_post(&self.config, &self.config.reserve_path, &auth);
        match self.dispatch_http_call(
            &self.config.collector_cluster,
            headers,
            Some(&payload),
            vec![],
            Duration::from_millis(self.config.reserve_timeout_ms),
        ) {
            Ok(_) => {
                self.reserve = ReservePhase::Waiting;
                true
            }
            Err(status) => {
                log::warn!("llm_billing: cannot ask for a reservation ({status:?})");
                !self.on_reservation(Answer::Unusable)
            }
        }
    }

    /// The reservation call's body for this request's cost bound.
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
            ttl_ms: self.config.reservation_ttl_ms,
        };
        Some(request.body())
    }

    /// Queues this request's notice for the root context's next tick (no
    /// host call).
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
            ttl_ms: self.config.reservation_ttl_ms,
            started_at_ms: info.started_at_ms,
        };
        let request_id = info.request_id.clone();
        self.shared.borrow_mut().notices.push(request_id, notice);
        self.notice = NoticePhase::Queued;
    }

    /// Acts on a reservation answer; true when the request goes on.
    fn on_reservation(&mut self, answer: Answer) -> bool {
        self.reserve = ReservePhase::No;
        let stats = self.shared.borrow().stats;
        match answer {
            Answer::Admitted => {
                Stats::add(stats.reserve_admitted, 1);
                true
            }
            Answer::Refused(entry) => {
                Stats::add(stats.reserve_refused, 1);
                // Refused before upstream: nothing spent, nothing recorded.
                self.tracker = None;
                let retry_after = enforce::retry_after_secs(&entry, now_ms());
                !self.answer_locally(429, retry_after, "false", &enforce::blocked_body(&entry))
            }
            Answer::Unusable => {
                Stats::add(stats.reserve_unavailable, 1);
                if self.config.deny_fail_open {
                    return true;
                }
                self.tracker = None;
                !self.answer_locally(
                    503,
                    enforce::UNAVAILABLE_RETRY_AFTER_SECS,
                    "true",
                    &enforce::unavailable_body(),
                )
            }
        }
    }
}

impl Context for BillingHttp {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _t: usize) {
        if self.reserve != ReservePhase::Waiting {
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .and_then(|s| s.parse::<u16>().ok());
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        if self.on_reservation(reserve::parse_answer(status, &body)) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for BillingHttp {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let started_at_ms = now_ms();
        // One host call for the whole map; each header lookup would be one.
        let headers = self.get_http_request_headers();
        let config = self.config.clone();
        let picked = pick_request_headers(
            &headers,
            HeaderNames {
                tenant: &config.tenant_header,
                request_id: &config.request_id_header,
                api_keys: &config.api_key_headers,
            },
        );
        let tenant_id = picked.tenant_id.unwrap_or(&config.default_tenant);
        // Blocked requests never reach upstream and are not recorded in the
        // ledger (nothing was spent); they are counted in requests_blocked.
        let admission = if config.enforce_budgets {
            self.enforce(tenant_id, picked.api_key_id.as_deref(), started_at_ms)
        } else {
            Admission::Allow
        };
        if admission == Admission::Answered {
            return Action::Pause;
        }
        let request_id = picked.request_id.map_or_else(
            || {
                format!(
                    "noid-{started_at_ms}-{}",
                    proxy_wasm::hostcalls::get_current_time().map_or(0, |t| t
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos()))
                )
            },
            str::to_owned,
        );
        let info = RequestInfo {
            path: picked.path.to_owned(),
            host: picked.authority.map(str::to_owned),
            request_id,
            tenant_id: tenant_id.to_owned(),
            api_key_id: picked.api_key_id,
            route: self.route_name(),
            started_at_ms,
            request_model: None,
            streamed_request: false,
        };
        let tracker = ResponseTracker::new(
            info,
            Limits {
                max_json_body_bytes: config.max_json_body_bytes,
                max_sse_event_bytes: config.max_sse_event_bytes,
            },
        );
        // Skipped only when the client already asks for identity alone.
        if config.force_identity_encoding && picked.accepts_compression {
            self.set_http_request_header("accept-encoding", Some("identity"));
        }
        // Read small JSON request bodies (model, stream flag, include_usage
        // injection). Only with a known, bounded length: pausing on a body
        // beyond Envoy's buffer limit would fail the request.
        let readable = !end_of_stream
            && picked
                .content_length
                .is_some_and(|l| l <= config.max_request_body_bytes);
        let read_body = readable && tracker.provider_known();
        self.tracker = Some(tracker);
        // A watched scope reserves the request's bound before upstream sees
        // it: from its body when it can be read, else unbounded. A request
        // without a body carries no prompt and generates nothing to bill.
        if admission == Admission::Reserve && !end_of_stream {
            if readable {
                self.reserve = ReservePhase::AwaitBody;
                self.buffer_request_body = true;
            } else if self.request_reservation(None) {
                return Action::Pause;
            } else if self.tracker.is_none() {
                // Answered locally (refused, or fail closed).
                return Action::Pause;
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
            // A body that may be rewritten grows; Envoy recomputes framing.
            // (Holding the headers until the body is read would keep the
            // length, but Envoy's wasm host then stops body callbacks too.)
            if config.inject_stream_usage && stream_usage_injectable(picked.path) {
                self.set_http_request_header("content-length", None);
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.buffer_request_body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.buffer_request_body = false;
        let Some(body) = self.get_http_request_body(0, body_size) else {
            if self.notice == NoticePhase::AwaitBody {
                self.queue_notice(None);
            }
            if self.reserve == ReservePhase::AwaitBody && self.request_reservation(None) {
                return Action::Pause;
            }
            return Action::Continue;
        };
        let path = self
            .tracker
            .as_ref()
            .map(|t| t.path().to_string())
            .unwrap_or_default();
        let info = prepare_request_body(&path, &body, self.config.inject_stream_usage);
        if let Some(rewritten) = &info.rewritten {
            self.set_http_request_body(0, body_size, rewritten);
        }
        if let Some(tracker) = self.tracker.as_mut() {
            tracker.set_request_details(info.model, info.stream);
        }
        if self.notice == NoticePhase::AwaitBody {
            self.queue_notice(Some(info.rewritten.as_deref().unwrap_or(&body)));
        }
        if self.reserve == ReservePhase::AwaitBody {
            let body = info.rewritten.as_deref().unwrap_or(&body);
            if self.request_reservation(Some(body)) || self.tracker.is_none() {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.tracker.is_none() {
            return Action::Continue;
        }
        let headers = self.get_http_response_headers();
        let status = header_value(&headers, ":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let now = now_ms();
        if let Some(tracker) = self.tracker.as_mut() {
            tracker.on_response_headers(
                status,
                header_value(&headers, "content-type"),
                header_value(&headers, "content-encoding"),
                now,
            );
            tracker.on_bedrock_headers(|name| header_value(&headers, name));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if body_size > 0 && self.tracker.is_some() {
            if let Some(chunk) = self.get_http_response_body(0, body_size) {
                if let Some(tracker) = self.tracker.as_mut() {
                    // Only the first chunk's time is used (time to first byte).
                    let now = if tracker.awaiting_first_byte() {
                        now_ms()
                    } else {
                        0
                    };
                    tracker.on_response_body(&chunk, now);
                }
            }
        }
        if end_of_stream {
            self.response_complete = true;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(tracker) = self.tracker.take() else {
            return;
        };
        if self.notice == NoticePhase::Queued {
            // Not reported yet: its record will tell the collector instead.
            self.shared
                .borrow_mut()
                .notices
                .forget(&tracker.request().request_id);
        }
        let record = tracker.finish(self.response_complete, now_ms());
        let incomplete = record.flags.contains(&crate::record::Flag::Incomplete);
        let parse_failure = record.flags.iter().any(|f| {
            matches!(
                f,
                crate::record::Flag::ParseError
                    | crate::record::Flag::BodyTooLarge
                    | crate::record::Flag::Compressed
            )
        });
        let json = match serde_json::to_string(&record) {
            Ok(json) => json,
            Err(err) => {
                log::error!("llm_billing: cannot serialize a usage record: {err}");
                return;
            }
        };
        let mut shared = self.shared.borrow_mut();
        let dropped = shared.queue.push(json);
        // Captured is reported at once, so captured == flushed means nothing
        // is left to deliver; the rest waits for the root context's tick.
        Stats::add(shared.stats.captured, 1);
        let pending = &mut shared.pending;
        pending.incomplete += u64::from(incomplete);
        pending.parse_failures += u64::from(parse_failure);
        pending.dropped += dropped;
    }
}
