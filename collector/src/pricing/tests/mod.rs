//! Unit tests of the pricing module.

mod catalog_tests;
mod cost_tests;
mod import_tests;
mod matching_tests;
mod prop_tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Exact decimal from a literal; panics on a typo in a test.
pub(super) fn d(s: &str) -> Decimal {
    s.parse::<Decimal>()
        .unwrap_or_else(|e| panic!("bad decimal literal {s}: {e}"))
}

/// Instant from an RFC 3339 literal.
pub(super) fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad timestamp literal {s}: {e}"))
        .with_timezone(&Utc)
}
