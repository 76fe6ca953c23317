//! Bounded delivery queue for usage records, flushed by the root context.
//!
//! Records wait here as serialized JSON until a batch is acknowledged by the
//! collector. At most one batch is in flight per worker; a failed or timed
//! out batch goes back to the front and is retried with exponential backoff.
//! When full, the oldest record is dropped and counted, so traffic never
//! waits on billing. In-flight records count against the bound and are the
//! oldest ones (batches are taken from the front), so they go first: an
//! evicted in-flight record is freed at once and not retried if its batch
//! fails (it may still arrive if the batch succeeds; it counts as dropped,
//! not flushed, either way).

use std::collections::VecDeque;

#[derive(Debug)]
pub struct DeliveryQueue {
    waiting: VecDeque<String>,
    in_flight: Option<InFlight>,
    max_buffered: usize,
    max_batch: usize,
    base_backoff_ms: u64,
    max_backoff_ms: u64,
    consecutive_failures: u32,
    next_attempt_ms: u64,
    dropped: u64,
}

#[derive(Debug)]
struct InFlight {
    token: u32,
    /// The batch's records; the first `evicted` were dropped for room (and
    /// freed), the rest are retried if the batch fails.
    records: Vec<String>,
    evicted: usize,
    sent_at_ms: u64,
}

impl InFlight {
    fn live(&self) -> usize {
        self.records.len().saturating_sub(self.evicted)
    }
}

/// A batch ready to be sent: the request body and how many records it holds.
#[derive(Debug, PartialEq)]
pub struct Batch {
    pub body: Vec<u8>,
    pub records: usize,
}

/// What happened to a batch, as seen by the caller's stats.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Outcome {
    Acknowledged(usize),
    WillRetry(usize),
    UnknownToken,
}

impl DeliveryQueue {
    pub fn new(
        max_buffered: usize,
        max_batch: usize,
        base_backoff_ms: u64,
        max_backoff_ms: u64,
    ) -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: None,
            max_buffered: max_buffered.max(1),
            max_batch: max_batch.max(1),
            base_backoff_ms: base_backoff_ms.max(1),
            max_backoff_ms: max_backoff_ms.max(base_backoff_ms),
            consecutive_failures: 0,
            next_attempt_ms: 0,
            dropped: 0,
        }
    }

    /// Applies new limits from a plugin reconfiguration, keeping every
    /// buffered record that still fits; returns how many were dropped.
    pub fn reconfigure(
        &mut self,
        max_buffered: usize,
        max_batch: usize,
        base_backoff_ms: u64,
        max_backoff_ms: u64,
    ) -> u64 {
        self.max_buffered = max_buffered.max(1);
        self.max_batch = max_batch.max(1);
        self.base_backoff_ms = base_backoff_ms.max(1);
        self.max_backoff_ms = max_backoff_ms.max(self.base_backoff_ms);
        self.enforce_bound()
    }

    /// Queues one serialized record; returns how many old records were
    /// dropped to make room (0 or 1).
    pub fn push(&mut self, record_json: String) -> u64 {
        self.waiting.push_back(record_json);
        self.enforce_bound()
    }

    fn enforce_bound(&mut self) -> u64 {
        let mut dropped = 0;
        while self.len() > self.max_buffered {
            // The oldest records are the in-flight batch's, then the waiting line's.
            if let Some(batch) = self.in_flight.as_mut().filter(|b| b.live() > 0) {
                if let Some(record) = batch.records.get_mut(batch.evicted) {
                    *record = String::new();
                }
                batch.evicted += 1;
            } else if self.waiting.pop_front().is_none() {
                break;
            }
            dropped += 1;
        }
        self.dropped += dropped;
        dropped
    }

    /// Records held, waiting or in flight.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.as_ref().map_or(0, InFlight::live)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped
    }

    pub fn has_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// True when a batch may be sent now: nothing in flight, records
    /// waiting, and the backoff after the last failure has passed.
    pub fn ready(&self, now_ms: u64) -> bool {
        self.in_flight.is_none() && !self.waiting.is_empty() && now_ms >= self.next_attempt_ms
    }

    /// Takes the next batch out of the waiting line. The caller dispatches
    /// it and then calls [`Self::sent`] with the callout token, or
    /// [`Self::send_failed`] if the dispatch itself failed.
    pub fn take_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if !self.ready(now_ms) {
            return None;
        }
        let n = self.waiting.len().min(self.max_batch);
        let records: Vec<String> = self.waiting.drain(..n).collect();
        let body = batch_body(&records);
        self.in_flight = Some(InFlight {
            token: 0,
            records,
            evicted: 0,
            sent_at_ms: now_ms,
        });
        Some(Batch { body, records: n })
    }

    pub fn sent(&mut self, token: u32) {
        if let Some(batch) = self.in_flight.as_mut() {
            batch.token = token;
        }
    }

    /// Requeues an in-flight batch that got no answer within `stale_after_ms`.
    pub fn expire_stale(&mut self, now_ms: u64, stale_after_ms: u64) -> Outcome {
        match &self.in_flight {
            Some(b) if now_ms.saturating_sub(b.sent_at_ms) > stale_after_ms => self.requeue(now_ms),
            _ => Outcome::UnknownToken,
        }
    }

    /// The dispatch failed before anything was sent.
    pub fn send_failed(&mut self, now_ms: u64) -> Outcome {
        self.requeue(now_ms)
    }

    /// The collector answered (or the callout failed / timed out) for
    /// `token`; `acknowledged` is true only for a 2xx after commit.
    pub fn complete(&mut self, token: u32, acknowledged: bool, now_ms: u64) -> Outcome {
        match &self.in_flight {
            Some(batch) if batch.token == token => {}
            _ => return Outcome::UnknownToken,
        }
        if acknowledged {
            let n = self.in_flight.take().map_or(0, |b| b.live());
            self.consecutive_failures = 0;
            self.next_attempt_ms = 0;
            Outcome::Acknowledged(n)
        } else {
            self.requeue(now_ms)
        }
    }

    fn requeue(&mut self, now_ms: u64) -> Outcome {
        let Some(batch) = self.in_flight.take() else {
            return Outcome::UnknownToken;
        };
        let n = batch.live();
        for record in batch.records.into_iter().skip(batch.evicted).rev() {
            self.waiting.push_front(record);
        }
        self.enforce_bound();
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.next_attempt_ms = now_ms.saturating_add(self.backoff_ms());
        Outcome::WillRetry(n)
    }

    /// Exponential backoff: base × 2^(failures-1), capped.
    pub fn backoff_ms(&self) -> u64 {
        let exponent = self.consecutive_failures.saturating_sub(1).min(20);
        self.base_backoff_ms
            .saturating_mul(1u64 << exponent)
            .min(self.max_backoff_ms)
    }
}

fn batch_body(records: &[String]) -> Vec<u8> {
    let size = records.iter().map(|r| r.len() + 1).sum::<usize>() + 16;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> String {
        format!("{{\"request_id\":\"r{i}\"}}")
    }

    fn ids(batch: &Batch) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn batches_are_valid_json_in_order_and_capped() {
        let mut q = DeliveryQueue::new(100, 3, 1000, 8000);
        for i in 0..5 {
            q.push(rec(i));
        }
        let b = q.take_batch(0).unwrap();
        assert_eq!(ids(&b), ["r0", "r1", "r2"]);
        assert_eq!(b.records, 3);
        // Only one batch in flight at a time.
        assert!(q.take_batch(0).is_none());
        q.sent(7);
        assert_eq!(q.complete(7, true, 0), Outcome::Acknowledged(3));
        assert_eq!(ids(&q.take_batch(0).unwrap()), ["r3", "r4"]);
    }

    #[test]
    fn failed_batch_is_retried_first_after_backoff() {
        let mut q = DeliveryQueue::new(100, 2, 1000, 8000);
        for i in 0..3 {
            q.push(rec(i));
        }
        q.take_batch(0).unwrap();
        q.sent(1);
        assert_eq!(q.complete(1, false, 10_000), Outcome::WillRetry(2));
        assert!(q.take_batch(10_999).is_none(), "backoff must hold");
        let b = q.take_batch(11_000).unwrap();
        assert_eq!(ids(&b), ["r0", "r1"]);
        q.sent(2);
        assert_eq!(q.complete(2, false, 20_000), Outcome::WillRetry(2));
        assert!(
            q.take_batch(21_999).is_none(),
            "second failure doubles backoff"
        );
        assert!(q.take_batch(22_000).is_some());
    }

    #[test]
    fn backoff_is_capped() {
        let mut q = DeliveryQueue::new(10, 1, 1000, 5000);
        q.push(rec(0));
        for round in 0..10u32 {
            q.take_batch(u64::MAX / 2).unwrap();
            q.sent(round);
            q.complete(round, false, 0);
        }
        assert_eq!(q.backoff_ms(), 5000);
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let mut q = DeliveryQueue::new(3, 2, 1000, 8000);
        for i in 0..5 {
            q.push(rec(i));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped_total(), 2);
        assert_eq!(ids(&q.take_batch(0).unwrap()), ["r2", "r3"]);
    }

    #[test]
    fn in_flight_records_count_against_the_bound_and_the_oldest_go_first() {
        let mut q = DeliveryQueue::new(3, 2, 1000, 8000);
        q.push(rec(0));
        q.push(rec(1));
        q.take_batch(0).unwrap();
        q.sent(9);
        q.push(rec(2));
        // Over the bound: r0, the oldest (in flight), goes, not the new r3.
        assert_eq!(q.push(rec(3)), 1);
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped_total(), 1);
        assert_eq!(q.complete(9, false, 0), Outcome::WillRetry(1));
        assert_eq!(q.len(), 3);
        assert_eq!(ids(&q.take_batch(10_000).unwrap()), ["r1", "r2"]);
        q.sent(10);
        assert_eq!(q.complete(10, true, 10_000), Outcome::Acknowledged(2));
        assert_eq!(ids(&q.take_batch(10_000).unwrap()), ["r3"]);
    }

    #[test]
    fn a_full_in_flight_batch_makes_room_for_new_records() {
        // max_batch == max_buffered: the whole buffer can be in flight.
        let mut q = DeliveryQueue::new(3, 3, 1000, 8000);
        for i in 0..3 {
            q.push(rec(i));
        }
        q.take_batch(0).unwrap();
        q.sent(1);
        for i in 3..7 {
            assert_eq!(q.push(rec(i)), 1);
            assert_eq!(q.len(), 3);
        }
        assert_eq!(q.dropped_total(), 4);
        // r0..r2 evicted and r3 pushed out by r6: nothing left to retry.
        assert_eq!(q.complete(1, false, 0), Outcome::WillRetry(0));
        assert_eq!(ids(&q.take_batch(10_000).unwrap()), ["r4", "r5", "r6"]);
    }

    #[test]
    fn an_acknowledged_batch_counts_only_its_records_not_evicted() {
        let mut q = DeliveryQueue::new(2, 2, 1000, 8000);
        q.push(rec(0));
        q.push(rec(1));
        q.take_batch(0).unwrap();
        q.sent(3);
        q.push(rec(2)); // evicts r0 from the in-flight batch
        assert_eq!(q.complete(3, true, 0), Outcome::Acknowledged(1));
        assert_eq!(q.len(), 1);
        assert_eq!(ids(&q.take_batch(0).unwrap()), ["r2"]);
    }

    #[test]
    fn unanswered_batch_is_requeued_after_the_stale_limit() {
        let mut q = DeliveryQueue::new(10, 5, 100, 1000);
        q.push(rec(0));
        q.take_batch(1_000).unwrap();
        q.sent(3);
        assert_eq!(q.expire_stale(5_000, 10_000), Outcome::UnknownToken);
        assert_eq!(q.expire_stale(11_001, 10_000), Outcome::WillRetry(1));
        assert!(!q.has_in_flight());
        // A late answer for the expired token changes nothing.
        assert_eq!(q.complete(3, true, 11_002), Outcome::UnknownToken);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn stale_token_is_ignored() {
        let mut q = DeliveryQueue::new(3, 2, 1000, 8000);
        q.push(rec(0));
        q.take_batch(0).unwrap();
        q.sent(4);
        assert_eq!(q.complete(5, true, 0), Outcome::UnknownToken);
        assert_eq!(q.len(), 1);
    }
}
