//! Cost, token and request counters for Prometheus, by tenant and model.
//!
//! Counted from the ledger rows this process inserted, at the commit that
//! inserted them: a resent record is a duplicate, never inserted, so it
//! adds nothing, and the sum over replicas of each series is the ledger's.
//! Money is kept as an exact decimal and printed as one (Prometheus reads
//! it as a float; the exact figure is the ledger's).
//!
//! Cardinality is bounded: the first `max_tenants` tenants and
//! `max_models` models seen get their own label value, the rest are summed
//! under `other`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Mutex;

use rust_decimal::Decimal;

use crate::db::AppliedPrice;
use crate::ingest::UsageRecord;

/// Default caps (`METRICS_MAX_TENANTS`, `METRICS_MAX_MODELS`).
pub const DEFAULT_MAX_TENANTS: usize = 100;
pub const DEFAULT_MAX_MODELS: usize = 100;
/// The label value of everything beyond the caps.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
struct Series {
    labelled_tenants: HashSet<String>,
    labelled_models: HashSet<String>,
    cost: BTreeMap<(String, String, String), Decimal>,
    tokens: BTreeMap<(String, String, &'static str), u64>,
    requests: BTreeMap<(String, String, &'static str), u64>,
}

#[derive(Debug)]
pub struct UsageMetrics {
    caps: Mutex<(usize, usize)>,
    series: Mutex<Series>,
}

impl Default for UsageMetrics {
    fn default() -> Self {
        Self {
            caps: Mutex::new((DEFAULT_MAX_TENANTS, DEFAULT_MAX_MODELS)),
            series: Mutex::default(),
        }
    }
}

/// A label value within its cap, or [`OTHER`].
fn capped(seen: &mut HashSet<String>, cap: usize, value: &str) -> String {
    if seen.contains(value) {
        return value.to_string();
    }
    if seen.len() < cap && value != OTHER {
        seen.insert(value.to_string());
        return value.to_string();
    }
    OTHER.to_string()
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl UsageMetrics {
    /// Sets the caps (from configuration, at startup).
    pub fn set_caps(&self, max_tenants: usize, max_models: usize) {
        if let Ok(mut caps) = self.caps.lock() {
            *caps = (max_tenants, max_models);
        }
    }

    /// The cap of labelled tenants (budget gauges use it too).
    pub fn max_tenants(&self) -> usize {
        self.caps.lock().map(|c| c.0).unwrap_or(DEFAULT_MAX_TENANTS)
    }

    /// Counts one inserted ledger row.
    pub fn record(&self, r: &UsageRecord, price: Option<&AppliedPrice>) {
        let (max_tenants, max_models) = self.caps.lock().map(|c| *c).unwrap_or_default();
        let Ok(mut s) = self.series.lock() else {
            return;
        };
        let tenant = capped(&mut s.labelled_tenants, max_tenants, &r.tenant_id);
        let model = capped(
            &mut s.labelled_models,
            max_models,
            r.model.as_deref().unwrap_or(""),
        );
        let status = if price.is_some() {
            "priced"
        } else {
            "unpriced"
        };
        *s.requests
            .entry((tenant.clone(), r.provider.clone(), status))
            .or_default() += 1;
        for (kind, n) in [
            ("input", r.input_tokens),
            ("output", r.output_tokens),
            ("cache_read", r.cache_read_tokens),
            ("cache_write", r.cache_write_tokens),
            ("reasoning", r.reasoning_tokens),
        ] {
            *s.tokens
                .entry((tenant.clone(), model.clone(), kind))
                .or_default() += n;
        }
        if let Some(p) = price {
            *s.cost
                .entry((tenant, model, p.currency.clone()))
                .or_default() += p.total;
        }
    }

    /// Appends the series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let Ok(s) = self.series.lock() else {
            return;
        };
        let _ = writeln!(out, "# HELP billing_cost_total Priced cost of the ledger rows this collector inserted, by tenant, model and currency (beyond the label caps: \"other\").\n# TYPE billing_cost_total counter");
        for ((t, m, c), v) in &s.cost {
            let _ = writeln!(
                out,
                "billing_cost_total{{tenant=\"{}\",model=\"{}\",currency=\"{}\"}} {}",
                label(t),
                label(m),
                label(c),
                v.normalize()
            );
        }
        let _ = writeln!(out, "# HELP billing_tokens_total Tokens of the ledger rows this collector inserted, by tenant, model and kind (input includes cache reads and writes; output includes reasoning).\n# TYPE billing_tokens_total counter");
        for ((t, m, k), v) in &s.tokens {
            let _ = writeln!(
                out,
                "billing_tokens_total{{tenant=\"{}\",model=\"{}\",kind=\"{k}\"}} {v}",
                label(t),
                label(m)
            );
        }
        let _ = writeln!(out, "# HELP billing_requests_total Ledger rows this collector inserted, by tenant, provider and status (priced or unpriced at ingest).\n# TYPE billing_requests_total counter");
        for ((t, p, st), v) in &s.requests {
            let _ = writeln!(
                out,
                "billing_requests_total{{tenant=\"{}\",provider=\"{}\",status=\"{st}\"}} {v}",
                label(t),
                label(p)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_sum_the_rest_under_other_and_labels_are_escaped() {
        let mut seen = HashSet::new();
        assert_eq!(capped(&mut seen, 2, "a"), "a");
        assert_eq!(capped(&mut seen, 2, "b"), "b");
        assert_eq!(capped(&mut seen, 2, "c"), OTHER);
        assert_eq!(capped(&mut seen, 2, "a"), "a");
        assert_eq!(capped(&mut HashSet::new(), 0, "a"), OTHER);
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
