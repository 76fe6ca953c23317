//! Prometheus counters, rendered by hand: a few atomics need no registry.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Metrics {
    pub batches: AtomicU64,
    pub records_accepted: AtomicU64,
    pub records_duplicate: AtomicU64,
    pub records_rejected: AtomicU64,
    pub records_unpriced: AtomicU64,
    pub ingest_failures: AtomicU64,
    /// Ledger statements ingest ran (fewer than batches when merged).
    pub ingest_statements: AtomicU64,
    /// The daily rollups' fold watermark (Unix seconds; 0 until read).
    pub rollup_folded_before: AtomicU64,
    /// Budget reservations admitted, by rule (`fits`, `one_over`,
    /// `not_governed`: nothing stored), refused, released by their usage
    /// record, and deleted expired.
    pub reservations_fits: AtomicU64,
    pub reservations_one_over: AtomicU64,
    pub reservations_not_governed: AtomicU64,
    /// Requests the gateway admitted from memory and reported after the
    /// fact, held as `noticed` reservations.
    pub reservations_noticed: AtomicU64,
    pub reservations_refused: AtomicU64,
    pub reservations_released: AtomicU64,
    pub reservations_expired: AtomicU64,
    pub ingest_latency_us_sum: AtomicU64,
    /// Cumulative histogram buckets of ingest latency (ms upper bounds).
    pub ingest_latency_buckets: [AtomicU64; 8],
    /// Cost, tokens and requests by tenant and model.
    pub usage: crate::usage_metrics::UsageMetrics,
}

pub const LATENCY_BUCKETS_MS: [u64; 8] = [5, 10, 25, 50, 100, 250, 1000, 5000];

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn observe_ingest(&self, micros: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ingest_latency_us_sum
            .fetch_add(micros, Ordering::Relaxed);
        for (bucket, bound) in self.ingest_latency_buckets.iter().zip(LATENCY_BUCKETS_MS) {
            if micros <= bound * 1000 {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn render(&self, pool_size: u32, pool_idle: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "billing_records_accepted_total",
            "Usage records committed to the ledger.",
            get(&self.records_accepted),
        );
        counter(
            "billing_records_duplicate_total",
            "Usage records already in the ledger.",
            get(&self.records_duplicate),
        );
        counter(
            "billing_records_rejected_total",
            "Usage records rejected by validation.",
            get(&self.records_rejected),
        );
        counter(
            "billing_records_unpriced_total",
            "Usage records stored without a price.",
            get(&self.records_unpriced),
        );
        counter(
            "billing_ingest_failures_total",
            "Ingest batches that failed to commit.",
            get(&self.ingest_failures),
        );
        counter(
            "billing_ingest_statements_total",
            "Ledger insert statements run for ingest (concurrent batches are merged).",
            get(&self.ingest_statements),
        );
        counter(
            "billing_reservations_refused_total",
            "Budget reservations refused: the estimate did not fit in a hard budget or prepaid balance.",
            get(&self.reservations_refused),
        );
        counter(
            "billing_reservations_released_total",
            "Budget reservations released by their usage record landing in the ledger.",
            get(&self.reservations_released),
        );
        counter(
            "billing_reservations_expired_total",
            "Budget reservations deleted after they expired without a usage record.",
            get(&self.reservations_expired),
        );
        let _ = writeln!(
            out,
            "# HELP billing_reservations_admitted_total Budget reservations admitted, by admission rule (not_governed: no hard budget or prepaid account applies, nothing reserved; noticed: admitted by the gateway from memory and reported on its next tick).\n# TYPE billing_reservations_admitted_total counter"
        );
        for (rule, c) in [
            ("fits", &self.reservations_fits),
            ("one_over", &self.reservations_one_over),
            ("not_governed", &self.reservations_not_governed),
            ("noticed", &self.reservations_noticed),
        ] {
            let _ = writeln!(
                out,
                "billing_reservations_admitted_total{{rule=\"{rule}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(out, "# HELP billing_ingest_seconds Ingest batch latency, HTTP in to commit.\n# TYPE billing_ingest_seconds histogram");
        for (bucket, bound) in self.ingest_latency_buckets.iter().zip(LATENCY_BUCKETS_MS) {
            let _ = writeln!(
                out,
                "billing_ingest_seconds_bucket{{le=\"{}\"}} {}",
                bound as f64 / 1000.0,
                get(bucket)
            );
        }
        let count = get(&self.batches);
        let _ = writeln!(out, "billing_ingest_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "billing_ingest_seconds_sum {}",
            get(&self.ingest_latency_us_sum) as f64 / 1e6
        );
        let _ = writeln!(out, "billing_ingest_seconds_count {count}");
        let _ = writeln!(out, "# HELP billing_rollup_folded_before_seconds Closed hours before this Unix time are folded into the daily rollups (alert when it falls more than ~2 h behind).\n# TYPE billing_rollup_folded_before_seconds gauge\nbilling_rollup_folded_before_seconds {}", get(&self.rollup_folded_before));
        let _ = writeln!(out, "# HELP billing_db_pool_connections Open database connections.\n# TYPE billing_db_pool_connections gauge\nbilling_db_pool_connections {pool_size}");
        let _ = writeln!(out, "# HELP billing_db_pool_idle Idle database connections.\n# TYPE billing_db_pool_idle gauge\nbilling_db_pool_idle {pool_idle}");
        self.usage.render(&mut out);
        out
    }
}
