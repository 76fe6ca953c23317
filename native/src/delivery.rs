//! What the module keeps between requests, and the main thread's periodic
//! work: shipping batches, polling the deny list, reporting notices.
//!
//! All workers of the process share one [`Destination`] per collector
//! (cluster, authority, ingest path): one delivery queue, one deny list,
//! one notice buffer, behind a mutex held only for a push or a lookup. The
//! main thread does every callout ([`Poller`], driven by a ticker thread
//! through Envoy's config scheduler), so records never depend on a
//! request's lifetime, and the deny list is polled once per process, not
//! once per worker. Envoy is behind [`MainHost`], so this is tested natively.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use filter::config::FilterConfig;
use filter::enforce::{self, DenySet, DenyState};
use filter::queue::{DeliveryQueue, Outcome};
use filter::reserve::Notices;

/// The module's counters and gauges, as `dynamicmodulescustom.llm_billing.<name>`;
/// the same names as the wasm plugin's `wasmcustom.llm_billing.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Captured,
    Flushed,
    Retried,
    Dropped,
    ParseFailures,
    Incomplete,
    Buffered,
    Blocked,
    DenyStale,
    DenyFailures,
    DenyEntries,
    ReserveAdmitted,
    ReserveRefused,
    ReserveUnavailable,
    NoticesSent,
    NoticesFailed,
    NoticesDropped,
}

impl Stat {
    pub const ALL: [Stat; 17] = [
        Stat::Captured,
        Stat::Flushed,
        Stat::Retried,
        Stat::Dropped,
        Stat::ParseFailures,
        Stat::Incomplete,
        Stat::Buffered,
        Stat::Blocked,
        Stat::DenyStale,
        Stat::DenyFailures,
        Stat::DenyEntries,
        Stat::ReserveAdmitted,
        Stat::ReserveRefused,
        Stat::ReserveUnavailable,
        Stat::NoticesSent,
        Stat::NoticesFailed,
        Stat::NoticesDropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stat::Captured => "llm_billing.records_captured",
            Stat::Flushed => "llm_billing.records_flushed",
            Stat::Retried => "llm_billing.records_retried",
            Stat::Dropped => "llm_billing.records_dropped",
            Stat::ParseFailures => "llm_billing.parse_failures",
            Stat::Incomplete => "llm_billing.incomplete_streams",
            Stat::Buffered => "llm_billing.records_buffered",
            Stat::Blocked => "llm_billing.requests_blocked",
            Stat::DenyStale => "llm_billing.deny_list_stale",
            Stat::DenyFailures => "llm_billing.deny_list_refresh_failures",
            Stat::DenyEntries => "llm_billing.deny_list_entries",
            Stat::ReserveAdmitted => "llm_billing.reservations_admitted",
            Stat::ReserveRefused => "llm_billing.requests_refused_by_reservation",
            Stat::ReserveUnavailable => "llm_billing.reservations_unavailable",
            Stat::NoticesSent => "llm_billing.reservation_notices_sent",
            Stat::NoticesFailed => "llm_billing.reservation_notices_failed",
            Stat::NoticesDropped => "llm_billing.reservation_notices_dropped",
        }
    }

    pub fn is_gauge(self) -> bool {
        matches!(self, Stat::Buffered | Stat::DenyEntries)
    }

    pub fn index(self) -> usize {
        Stat::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// Counts made on workers and handed to Envoy on the main thread's tick,
/// so a request costs at most one metric call (`records_captured`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PendingCounts {
    pub incomplete: u64,
    pub parse_failures: u64,
    pub dropped: u64,
}

/// One collector destination's state, shared by every worker.
#[derive(Debug)]
pub struct Shared {
    pub queue: DeliveryQueue,
    pub pending: PendingCounts,
    pub deny: DenyState,
    pub notices: Notices,
    /// The deny poll of this destination, whichever config makes it: when
    /// it was last sent, and since when one is in flight. Two configs (a
    /// reload's old and new) then poll as one.
    pub deny_polled_ms: u64,
    /// The poller whose deny poll is in flight, and since when.
    pub deny_in_flight: Option<(u64, u64)>,
}

#[derive(Debug)]
pub struct Destination {
    key: String,
    state: Mutex<Shared>,
}

impl Destination {
    /// The state; a worker that panicked while holding it (it cannot: no
    /// code here panics) must not stop billing for the others.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Destinations live for the process, so a reconfigured filter (a new
/// config, then the old one destroyed) takes over what is buffered.
static DESTINATIONS: Mutex<Vec<Arc<Destination>>> = Mutex::new(Vec::new());

/// The destination of `config`, created or reconfigured; the count of
/// records a smaller buffer dropped.
pub fn destination(config: &FilterConfig) -> (Arc<Destination>, u64) {
    let key = format!(
        "{}|{}|{}",
        config.collector_cluster, config.collector_authority, config.ingest_path
    );
    let mut all = DESTINATIONS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dest) = all.iter().find(|d| d.key == key) {
        let dropped = dest.lock().queue.reconfigure(
            config.max_buffered_records,
            config.max_batch_records,
            config.flush_interval_ms,
            config.max_backoff_ms,
        );
        return (dest.clone(), dropped);
    }
    let dest = Arc::new(Destination {
        key,
        state: Mutex::new(Shared {
            queue: DeliveryQueue::new(
                config.max_buffered_records,
                config.max_batch_records,
                config.flush_interval_ms,
                config.max_backoff_ms,
            ),
            pending: PendingCounts::default(),
            deny: DenyState::default(),
            notices: Notices::default(),
            deny_polled_ms: 0,
            deny_in_flight: None,
        }),
    });
    all.push(dest.clone());
    (dest, 0)
}

/// What the main thread needs from Envoy.
pub trait MainHost {
    /// Starts a callout to the collector cluster; its id, or why not.
    fn callout(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, String>;
    fn add(&self, stat: Stat, n: u64);
    fn set(&self, stat: Stat, value: u64);
}

/// A finished callout, as the main thread sees it.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// `None` when the call failed (reset, timeout, no host).
    pub status: Option<u16>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// A batch; the queue knows it by `token`.
    Ingest {
        token: u32,
    },
    Deny {
        sent_at: u64,
    },
    Notices {
        sent_at: u64,
        count: usize,
    },
}

/// One filter config's main-thread state: the jobs of a tick and the
/// callouts in flight.
/// Tells pollers apart (a reload's old and new config).
static NEXT_POLLER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub struct Poller {
    id: u64,
    config: Arc<FilterConfig>,
    dest: Arc<Destination>,
    tick_ms: u64,
    last_flush_ms: u64,
    deny_failing: bool,
    next_token: u32,
    calls: Vec<(u64, Call)>,
}

impl Poller {
    pub fn new(config: Arc<FilterConfig>, dest: Arc<Destination>, now_ms: u64) -> Poller {
        let mut tick_ms = config.flush_interval_ms;
        if config.enforce_budgets {
            tick_ms = tick_ms.min(config.deny_refresh_ms);
            dest.lock().deny.start(now_ms);
        }
        Poller {
            id: NEXT_POLLER.fetch_add(1, Ordering::Relaxed),
            config,
            dest,
            tick_ms: tick_ms.max(1),
            last_flush_ms: 0,
            deny_failing: false,
            next_token: 0,
            calls: Vec::new(),
        }
    }

    /// How often the ticker wakes the main thread.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// True when a job of period `interval` last run at `last` is due on
    /// this tick (half a tick of slack absorbs timer jitter).
    fn due(&self, now: u64, last: u64, interval: u64) -> bool {
        now.saturating_sub(last).saturating_add(self.tick_ms / 2) >= interval
    }

    pub fn tick(&mut self, host: &dyn MainHost, now: u64) {
        let stale_after = self.config.callout_timeout_ms.saturating_mul(2);
        {
            let mut shared = self.dest.lock();
            // A batch whose answer never came goes back for retry.
            if let Outcome::WillRetry(n) = shared.queue.expire_stale(now, stale_after) {
                host.add(Stat::Retried, n as u64);
            }
            let pending = std::mem::take(&mut shared.pending);
            if pending.dropped > 0 {
                log::warn!(
                    "llm_billing: buffer full ({} records), dropped the {} oldest; total dropped {}",
                    self.config.max_buffered_records,
                    pending.dropped,
                    shared.queue.dropped_total()
                );
            }
            host.add(Stat::Incomplete, pending.incomplete);
            host.add(Stat::ParseFailures, pending.parse_failures);
            host.add(Stat::Dropped, pending.dropped);
            host.set(Stat::Buffered, shared.queue.len() as u64);
        }
        // Calls whose answer never came (cancelled, lost) stop blocking.
        self.calls.retain(|(_, call)| match call {
            Call::Ingest { .. } => true,
            Call::Deny { sent_at } | Call::Notices { sent_at, .. } => {
                now.saturating_sub(*sent_at) <= stale_after
            }
        });
        if self.due(now, self.last_flush_ms, self.config.flush_interval_ms) {
            self.last_flush_ms = now;
            self.flush(host, now);
        }
        self.send_notices(host, now);
        self.refresh_deny(host, now);
    }

    /// Sends the next batch if one is ready.
    pub fn flush(&mut self, host: &dyn MainHost, now: u64) {
        let mut shared = self.dest.lock();
        let Some(batch) = shared.queue.take_batch(now) else {
            return;
        };
        match host.callout(
            "POST",
            &self.config.ingest_path,
            &batch.body,
            self.config.callout_timeout_ms,
        ) {
            Ok(id) => {
                self.next_token = self.next_token.wrapping_add(1);
                shared.queue.sent(self.next_token);
                self.calls.push((
                    id,
                    Call::Ingest {
                        token: self.next_token,
                    },
                ));
            }
            Err(why) => {
                log::warn!(
                    "llm_billing: cannot reach collector cluster {:?} ({why}); {} records kept for retry",
                    self.config.collector_cluster,
                    batch.records
                );
                if let Outcome::WillRetry(n) = shared.queue.send_failed(now) {
                    host.add(Stat::Retried, n as u64);
                }
            }
        }
    }

    fn send_notices(&mut self, host: &dyn MainHost, now: u64) {
        if self
            .calls
            .iter()
            .any(|(_, c)| matches!(c, Call::Notices { .. }))
        {
            return;
        }
        let body = {
            let mut shared = self.dest.lock();
            host.add(Stat::NoticesDropped, shared.notices.take_dropped());
            shared.notices.take_body()
        };
        let Some((body, count)) = body else {
            return;
        };
        let path = format!("{}/notices", self.config.reserve_path);
        match host.callout("POST", &path, &body, self.config.callout_timeout_ms) {
            Ok(id) => self.calls.push((
                id,
                Call::Notices {
                    sent_at: now,
                    count,
                },
            )),
            Err(_) => host.add(Stat::NoticesFailed, count as u64),
        }
    }

    fn refresh_deny(&mut self, host: &dyn MainHost, now: u64) {
        if !self.config.enforce_budgets {
            return;
        }
        {
            let mut shared = self.dest.lock();
            let stale_after = self.config.callout_timeout_ms.saturating_mul(2);
            // A poll whose answer never came (its config went away) stops
            // blocking the others.
            if shared
                .deny_in_flight
                .is_some_and(|(_, since)| now.saturating_sub(since) <= stale_after)
                || !self.due(now, shared.deny_polled_ms, self.config.deny_refresh_ms)
            {
                return;
            }
            shared.deny_polled_ms = now;
            shared.deny_in_flight = Some((self.id, now));
        }
        let timeout = self.config.callout_timeout_ms.min(self.config.deny_ttl_ms);
        match host.callout("GET", &self.config.deny_path, &[], timeout) {
            Ok(id) => self.calls.push((id, Call::Deny { sent_at: now })),
            Err(why) => {
                self.dest.lock().deny_in_flight = None;
                self.deny_failed(host, &format!("dispatch failed: {why}"));
            }
        }
    }

    fn deny_failed(&mut self, host: &dyn MainHost, why: &str) {
        host.add(Stat::DenyFailures, 1);
        // The first failure of a streak is logged, not every refresh.
        if !self.deny_failing {
            self.deny_failing = true;
            log::warn!("llm_billing: cannot refresh the deny list ({why}); keeping the last one");
        }
    }

    /// The config goes away: Envoy cancels its callouts without answers,
    /// so what they held is handed back at once instead of when it would
    /// time out: the deny poll to the next config, the batch to the queue
    /// (retried by whichever config flushes next).
    pub fn release(&mut self, now: u64) {
        let mut shared = self.dest.lock();
        if shared
            .deny_in_flight
            .is_some_and(|(owner, _)| owner == self.id)
        {
            shared.deny_in_flight = None;
        }
        if self
            .calls
            .iter()
            .any(|(_, c)| matches!(c, Call::Ingest { .. }))
        {
            let _ = shared.queue.expire_stale(now, 0);
        }
        self.calls.clear();
    }

    /// A callout of this poller finished; false when the id is not one.
    pub fn on_reply(&mut self, host: &dyn MainHost, id: u64, reply: Reply<'_>, now: u64) -> bool {
        let Some(at) = self.calls.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        let (_, call) = self.calls.swap_remove(at);
        let ok = reply.status.is_some_and(|s| (200..300).contains(&s));
        match call {
            Call::Ingest { token } => {
                let more = {
                    let mut shared = self.dest.lock();
                    let outcome = shared.queue.complete(token, ok, now);
                    match outcome {
                        Outcome::Acknowledged(n) => host.add(Stat::Flushed, n as u64),
                        Outcome::WillRetry(n) => {
                            host.add(Stat::Retried, n as u64);
                            log::warn!(
                                "llm_billing: collector answered {:?}; {n} records will be retried in {} ms",
                                reply.status,
                                shared.queue.backoff_ms()
                            );
                        }
                        Outcome::UnknownToken => {}
                    }
                    host.set(Stat::Buffered, shared.queue.len() as u64);
                    matches!(outcome, Outcome::Acknowledged(_)) && shared.queue.waiting() > 0
                };
                // A backlog drains without waiting for the next tick.
                if more {
                    self.flush(host, now);
                }
            }
            Call::Notices { count, .. } => host.add(
                if ok {
                    Stat::NoticesSent
                } else {
                    Stat::NoticesFailed
                },
                count as u64,
            ),
            Call::Deny { .. } => self.on_deny(host, reply, now),
        }
        true
    }

    fn on_deny(&mut self, host: &dyn MainHost, reply: Reply<'_>, now: u64) {
        self.dest.lock().deny_in_flight = None;
        if reply.status != Some(200) {
            self.deny_failed(host, &format!("collector answered {:?}", reply.status));
            return;
        }
        if reply.body.len() > enforce::MAX_DENY_BODY_BYTES {
            let why = format!("{} byte list is too large", reply.body.len());
            self.deny_failed(host, &why);
            return;
        }
        let set = match DenySet::parse(reply.body) {
            Ok(set) => set,
            Err(err) => {
                self.deny_failed(host, &err);
                return;
            }
        };
        if self.deny_failing {
            self.deny_failing = false;
            log::info!("llm_billing: deny list refreshed again");
        }
        let mut shared = self.dest.lock();
        if set.skipped > 0 && !shared.deny.same_list(&set) {
            log::warn!(
                "llm_billing: {} deny list entries not enforced (over the cap, malformed, or per model)",
                set.skipped
            );
        }
        let entries = set.len();
        shared.deny.update(set, now);
        host.set(Stat::DenyEntries, entries as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct FakeHost {
        calls: RefCell<Vec<(String, String, Vec<u8>)>>,
        stats: RefCell<Vec<(Stat, u64)>>,
        refuse: bool,
    }

    impl MainHost for FakeHost {
        fn callout(&self, method: &str, path: &str, body: &[u8], _t: u64) -> Result<u64, String> {
            if self.refuse {
                return Err("no cluster".into());
            }
            let mut calls = self.calls.borrow_mut();
            calls.push((method.into(), path.into(), body.to_vec()));
            Ok(calls.len() as u64 + 100)
        }
        fn add(&self, stat: Stat, n: u64) {
            if n > 0 {
                self.stats.borrow_mut().push((stat, n));
            }
        }
        fn set(&self, stat: Stat, value: u64) {
            self.stats.borrow_mut().push((stat, value));
        }
    }

    impl FakeHost {
        fn sum(&self, stat: Stat) -> u64 {
            self.stats
                .borrow()
                .iter()
                .filter(|(s, _)| *s == stat)
                .map(|(_, n)| n)
                .sum()
        }
    }

    /// A config for destination `cluster` with `extra` settings.
    fn config(cluster: &str, extra: &str) -> Arc<FilterConfig> {
        let json = format!(
            r#"{{"collector_cluster":"{cluster}","collector_authority":"collector","ingest_token":"x"{extra}}}"#
        );
        Arc::new(FilterConfig::parse(Some(json.as_bytes())).unwrap())
    }

    #[test]
    fn a_batch_is_acknowledged_once_and_a_failed_one_is_retried() {
        let cfg = config(
            "t1",
            r#","flush_interval_ms":100,"callout_timeout_ms":1000"#,
        );
        let (dest, _) = destination(&cfg);
        let mut poller = Poller::new(cfg, dest.clone(), 0);
        let host = FakeHost::default();
        dest.lock().queue.push("{\"request_id\":\"a\"}".into());
        dest.lock().queue.push("{\"request_id\":\"b\"}".into());
        poller.tick(&host, 1_000);
        let calls = host.calls.borrow().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1, "/v1/usage");
        let body = String::from_utf8(calls[0].2.clone()).unwrap();
        assert!(body.contains("\"a\"") && body.contains("\"b\""), "{body}");
        // The collector fails: both come back, nothing counted as flushed.
        let failed = Reply {
            status: Some(503),
            body: b"",
        };
        assert!(poller.on_reply(&host, 101, failed, 1_010));
        assert_eq!(host.sum(Stat::Retried), 2);
        assert_eq!(host.sum(Stat::Flushed), 0);
        assert_eq!(dest.lock().queue.len(), 2);
        // Retried after the backoff, then acknowledged.
        poller.tick(&host, 60_000);
        assert_eq!(host.calls.borrow().len(), 2);
        let ok = Reply {
            status: Some(200),
            body: b"{}",
        };
        assert!(poller.on_reply(&host, 102, ok, 60_010));
        assert_eq!(host.sum(Stat::Flushed), 2);
        assert!(dest.lock().queue.is_empty());
        // An unknown id is not this poller's.
        assert!(!poller.on_reply(&host, 7, ok, 60_020));
    }

    #[test]
    fn an_unreachable_cluster_keeps_the_records() {
        let cfg = config("t2", "");
        let (dest, _) = destination(&cfg);
        let mut poller = Poller::new(cfg, dest.clone(), 0);
        let host = FakeHost {
            refuse: true,
            ..FakeHost::default()
        };
        dest.lock().queue.push("{}".into());
        poller.tick(&host, 5_000);
        assert_eq!(dest.lock().queue.len(), 1);
        assert_eq!(host.sum(Stat::Retried), 1);
    }

    #[test]
    fn the_deny_list_is_polled_and_shared_by_every_worker() {
        let cfg = config("t3", r#","enforce_budgets":true,"deny_refresh_ms":500"#);
        let (dest, _) = destination(&cfg);
        let mut poller = Poller::new(cfg.clone(), dest.clone(), 0);
        assert_eq!(poller.tick_ms(), 500);
        let host = FakeHost::default();
        poller.tick(&host, 1_000);
        let (method, path, _) = host.calls.borrow()[0].clone();
        assert_eq!((method.as_str(), path.as_str()), ("GET", "/v1/deny"));
        let list =
            br#"{"entries":[{"tenant_id":"acme","reason":"budget_exceeded","budget_id":"b1"}]}"#;
        let reply = Reply {
            status: Some(200),
            body: list,
        };
        assert!(poller.on_reply(&host, 101, reply, 1_005));
        assert_eq!(host.sum(Stat::DenyEntries), 1);
        // A second config of the same destination (a worker's view) sees it.
        let (same, _) = destination(&cfg);
        let shared = same.lock();
        let (decision, stale) = shared.deny.decide("acme", None, 1_100, 30_000, true);
        assert!(
            matches!(decision, enforce::Decision::Deny(_)),
            "{decision:?}"
        );
        assert!(!stale);
        drop(shared);
        // A second config of the destination (a reload) polls with it, not
        // beside it.
        let mut second = Poller::new(cfg.clone(), dest.clone(), 1_100);
        second.tick(&host, 1_200);
        assert_eq!(host.calls.borrow().len(), 1);
        // A failing refresh keeps the last list and counts the failure.
        poller.tick(&host, 1_600);
        let bad = Reply {
            status: None,
            body: b"",
        };
        assert!(poller.on_reply(&host, 102, bad, 1_610));
        assert_eq!(host.sum(Stat::DenyFailures), 1);
        assert_eq!(dest.lock().deny.len(), 1);
    }

    #[test]
    fn a_destroyed_config_hands_its_deny_poll_and_batch_over_at_once() {
        let cfg = config(
            "t4",
            r#","enforce_budgets":true,"deny_refresh_ms":200,"flush_interval_ms":100"#,
        );
        let (dest, _) = destination(&cfg);
        let host = FakeHost::default();
        let mut old = Poller::new(cfg.clone(), dest.clone(), 0);
        dest.lock().queue.push("{}".into());
        old.tick(&host, 1_000);
        // A batch and a deny poll are in flight when the config goes.
        assert_eq!(host.calls.borrow().len(), 2);
        old.release(1_050);
        let mut new = Poller::new(cfg, dest.clone(), 1_050);
        new.tick(&host, 1_300);
        let calls = host.calls.borrow();
        let paths: Vec<&str> = calls[2..].iter().map(|c| c.1.as_str()).collect();
        assert!(paths.contains(&"/v1/deny"), "{paths:?}");
        assert!(paths.contains(&"/v1/usage"), "{paths:?}");
    }
}
