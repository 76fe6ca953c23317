//! Per-token rate limit of the query API: a token bucket in memory, keyed by
//! the token's SHA-256 digest (never the token itself).
//!
//! Each bucket holds up to `burst` requests and refills at `per_min` per
//! minute. Counts are kept in thousandths of a request so the arithmetic is
//! exact integers. A bucket that is full again is equivalent to no bucket,
//! so full buckets are dropped when the map grows: memory is bounded by the
//! number of tokens active in the last `burst / rate` seconds.
//!
//! Limits are per collector process; with N replicas behind a load balancer
//! a token can make up to N times the rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::AppState;

pub const DEFAULT_PER_MIN: u32 = 600;
pub const DEFAULT_BURST: u32 = 100;

/// Prune full buckets once the map holds more than this many.
const PRUNE_ABOVE: usize = 10_000;
const MILLI: u128 = 1000;
const NANOS_PER_MIN: u128 = 60_000_000_000;

#[derive(Debug)]
struct Bucket {
    /// Thousandths of a request available.
    milli: u128,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_min: u32,
    burst: u32,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl RateLimiter {
    /// `per_min == 0` disables the limit. A burst of 0 is taken as 1.
    pub fn new(per_min: u32, burst: u32) -> Self {
        Self {
            per_min,
            burst: burst.max(1),
            buckets: Mutex::default(),
        }
    }

    pub fn per_min(&self) -> u32 {
        self.per_min
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn capacity(&self) -> u128 {
        u128::from(self.burst) * MILLI
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.last).as_nanos();
        let gained = elapsed * u128::from(self.per_min) * MILLI / NANOS_PER_MIN;
        if gained > 0 {
            bucket.milli = (bucket.milli + gained).min(self.capacity());
            bucket.last = now;
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is
    /// available.
    pub fn check(&self, key: &[u8; 32]) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &[u8; 32], now: Instant) -> Result<(), Duration> {
        if self.per_min == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                self.refill(b, now);
                b.milli < self.capacity()
            });
        }
        let bucket = buckets.entry(*key).or_insert(Bucket {
            milli: self.capacity(),
            last: now,
        });
        self.refill(bucket, now);
        if bucket.milli >= MILLI {
            bucket.milli -= MILLI;
            return Ok(());
        }
        let missing = MILLI - bucket.milli;
        let nanos = (missing * NANOS_PER_MIN).div_ceil(u128::from(self.per_min) * MILLI);
        Err(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_PER_MIN, DEFAULT_BURST)
    }
}

impl AppState {
    /// Sets the query API rate limit per token (`per_min == 0`: no limit).
    pub fn with_query_rate_limit(mut self, per_min: u32, burst: u32) -> Self {
        self.query_rate_limit = std::sync::Arc::new(RateLimiter::new(per_min, burst));
        self
    }
}

/// 429 in the API's error format, with `retry-after` in whole seconds (at
/// least 1).
pub fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"error": {
            "code": "rate_limited",
            "message": format!("too many requests for this token; retry in {secs} s"),
        }})),
    )
        .into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(secs));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(60, 3);
        let key = [1u8; 32];
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(&key, t0).is_ok());
        }
        // Empty: one request a second, so the next one is a full second away.
        assert_eq!(limiter.check_at(&key, t0), Err(Duration::from_secs(1)));
        assert_eq!(
            limiter.check_at(&key, t0 + Duration::from_millis(250)),
            Err(Duration::from_millis(750))
        );
        assert!(limiter.check_at(&key, t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.check_at(&key, t0 + Duration::from_secs(1)).is_err());
        // Another token has its own bucket.
        assert!(limiter.check_at(&[2u8; 32], t0).is_ok());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check_at(&key, later).is_ok());
        }
        assert!(limiter.check_at(&key, later).is_err());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0, 1);
        for _ in 0..10_000 {
            assert!(limiter.check(&[7u8; 32]).is_ok());
        }
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn full_buckets_are_pruned_so_memory_stays_bounded() {
        let limiter = RateLimiter::new(600, 2);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE as u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            assert!(limiter.check_at(&key, t0).is_ok());
        }
        assert_eq!(limiter.len(), PRUNE_ABOVE + 1);
        // A second later every bucket has refilled: all are dropped but the new one.
        assert!(limiter
            .check_at(&[0xff; 32], t0 + Duration::from_secs(1))
            .is_ok());
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        let r = too_many_requests(Duration::from_millis(10));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
        let r = too_many_requests(Duration::from_millis(2500));
        assert_eq!(r.headers()["retry-after"], "3");
    }
}
