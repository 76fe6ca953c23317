//! Invoice arithmetic, free of I/O: billing periods, line items, rounding.
//!
//! An invoice covers one tenant, one calendar month (UTC) and one currency.
//! Each line is one model and one token class:
//!
//! | `token_class`  | quantity                                  | amount                            |
//! |----------------|-------------------------------------------|-----------------------------------|
//! | `input`        | uncached input tokens                     | `cost_input`                      |
//! | `cached_input` | cache-read tokens                         | `cost_cache_read`                 |
//! | `cache_write`  | cache-write tokens (5 min and 1 h)        | `cost_cache_write`                |
//! | `output`       | output tokens, reasoning included         | `cost_output + cost_reasoning`    |
//! | `request_fee`  | requests charged a per-request fee        | `cost_request_fee`                |
//! | `discount`     | requests that got an agreement discount   | `cost_discount` (negative)        |
//! | `adjustment`   | late requests of an earlier final period  | `cost` (everything of the request)|
//!
//! The amount of a line is the exact sum of the full-precision
//! per-transaction amounts. It is rounded **once** to the currency's minor
//! unit (default half-even, [`Rounding`]); the subtotal is the sum of the
//! rounded lines, so the printed lines always add up to the printed total.
//! Prepaid credits reduce the subtotal to the total, never below zero.
//!
//! Unit prices are informative: `amount / quantity × 1 000 000` per million
//! tokens (per request for request lines), rounded to 8 decimal places. When
//! every request of the line was charged the same rate this is exactly the
//! catalog rate.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// Environment variable choosing the rounding of line amounts.
pub const ROUNDING_ENV: &str = "INVOICE_ROUNDING";

/// How a line's precise amount is rounded to the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Ties to the even neighbour (banker's rounding). The default.
    #[default]
    HalfEven,
    /// Ties away from zero (commercial rounding).
    HalfUp,
    /// Ties toward zero.
    HalfDown,
    /// Always away from zero.
    Up,
    /// Always toward zero (truncation).
    Down,
}

impl Rounding {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "half_even" => Rounding::HalfEven,
            "half_up" => Rounding::HalfUp,
            "half_down" => Rounding::HalfDown,
            "up" => Rounding::Up,
            "down" => Rounding::Down,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rounding::HalfEven => "half_even",
            Rounding::HalfUp => "half_up",
            Rounding::HalfDown => "half_down",
            Rounding::Up => "up",
            Rounding::Down => "down",
        }
    }

    pub fn strategy(self) -> RoundingStrategy {
        match self {
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfDown => RoundingStrategy::MidpointTowardZero,
            Rounding::Up => RoundingStrategy::AwayFromZero,
            Rounding::Down => RoundingStrategy::ToZero,
        }
    }

    /// From `INVOICE_ROUNDING`; half-even when unset. A bad value is an
    /// error rather than a silent fallback.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(ROUNDING_ENV) {
            Err(_) => Ok(Rounding::default()),
            Ok(v) => Rounding::parse(v.trim()).ok_or_else(|| {
                format!("{ROUNDING_ENV} must be one of half_even, half_up, half_down, up, down, not {v:?}")
            }),
        }
    }
}

/// Decimal digits of the currency's minor unit (ISO 4217). Two unless listed.
/// A tenant's invoice series: 10 hex digits of SHA-256 of its id. Each
/// tenant numbers its invoices gaplessly in its own series
/// (`INV-<year>-<series>-<6 digits>`), so a number says nothing of how many
/// invoices other tenants got (a shared counter would).
pub fn invoice_series(tenant_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(tenant_id.as_bytes());
    hex::encode_upper(&digest[..5])
}

/// The invoice number of a tenant's `seq`-th invoice finalized in `year`.
pub fn invoice_number(tenant_id: &str, year: i32, seq: i64) -> String {
    format!("INV-{year:04}-{}-{seq:06}", invoice_series(tenant_id))
}

pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// A calendar month in UTC, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let p = Period {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        ((1..=12).contains(&p.month) && p.year >= 1970).then_some(p)
    }

    pub fn of(t: DateTime<Utc>) -> Self {
        Period {
            year: t.year(),
            month: t.month(),
        }
    }

    /// First instant of the month.
    pub fn start(self) -> DateTime<Utc> {
        let day = NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default();
        Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// First instant after the month (exclusive end).
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Sums over the transactions of one model, as the database returns them.
/// `late_period` is None for usage of the invoiced period itself, or the
/// earlier (finalized) period whose late usage this is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub model: String,
    pub late_period: Option<String>,
    pub requests: i64,
    pub uncached_input_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// Output tokens, reasoning included.
    pub output_tokens: i64,
    pub cost_input: Decimal,
    pub cost_cache_read: Decimal,
    pub cost_cache_write: Decimal,
    /// `cost_output + cost_reasoning`.
    pub cost_output: Decimal,
    pub fee_requests: i64,
    pub cost_request_fee: Decimal,
    pub discount_requests: i64,
    pub cost_discount: Decimal,
    /// Sum of `cost`: the other amounts added up.
    pub cost: Decimal,
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub model: String,
    pub token_class: String,
    pub description: String,
    pub quantity: i64,
    /// `tokens` (unit price per million) or `requests` (per request).
    pub unit: String,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub unit_price: Option<Decimal>,
    /// The exact sum of the per-transaction amounts.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// `amount` rounded once, in minor units (cents for USD).
    pub amount_minor: i64,
    /// For `adjustment` lines: the finalized period the late usage belongs to.
    pub adjusts_period: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("the amount {0} does not fit in minor units")]
    Overflow(Decimal),
}

/// Rounds once to the minor unit and returns the integer count of minor units.
pub fn round_minor(amount: Decimal, digits: u32, rounding: Rounding) -> Result<i64, InvoiceError> {
    let rounded = amount.round_dp_with_strategy(digits, rounding.strategy());
    rounded
        .checked_mul(Decimal::from(10i64.pow(digits)))
        .and_then(|m| m.to_i64())
        .ok_or(InvoiceError::Overflow(amount))
}

/// Minor units back to a decimal amount with exactly `digits` places.
pub fn from_minor(minor: i64, digits: u32) -> Decimal {
    Decimal::new(minor, digits)
}

const UNIT_PRICE_DP: u32 = 8;

fn unit_price(amount: Decimal, quantity: i64, per: i64) -> Option<Decimal> {
    if quantity <= 0 {
        return None;
    }
    amount
        .checked_mul(Decimal::from(per))?
        .checked_div(Decimal::from(quantity))
        .map(|p| {
            p.round_dp_with_strategy(UNIT_PRICE_DP, RoundingStrategy::MidpointNearestEven)
                .normalize()
        })
}

const PER_MILLION: i64 = 1_000_000;

/// Builds the lines: usage of the period first (by model, then class),
/// then adjustments for late usage of earlier periods (by period, model).
/// Lines with neither quantity nor amount are left out.
pub fn build_lines(
    aggregates: &[Aggregate],
    digits: u32,
    rounding: Rounding,
) -> Result<Vec<Line>, InvoiceError> {
    let mut current: Vec<&Aggregate> = aggregates
        .iter()
        .filter(|a| a.late_period.is_none())
        .collect();
    current.sort_by(|a, b| a.model.cmp(&b.model));
    let mut late: Vec<&Aggregate> = aggregates
        .iter()
        .filter(|a| a.late_period.is_some())
        .collect();
    late.sort_by(|a, b| (&a.late_period, &a.model).cmp(&(&b.late_period, &b.model)));

    let mut lines = Vec::new();
    let mut push = |model: &str,
                    class: &str,
                    description: String,
                    quantity: i64,
                    unit: &str,
                    price: Option<Decimal>,
                    amount: Decimal,
                    adjusts: Option<&String>|
     -> Result<(), InvoiceError> {
        if quantity == 0 && amount.is_zero() {
            return Ok(());
        }
        lines.push(Line {
            model: model.to_string(),
            token_class: class.to_string(),
            description,
            quantity,
            unit: unit.to_string(),
            unit_price: price,
            amount: amount.normalize(),
            amount_minor: round_minor(amount, digits, rounding)?,
            adjusts_period: adjusts.cloned(),
        });
        Ok(())
    };
    for a in current {
        let m = a.model.as_str();
        for (class, what, quantity, amount) in [
            (
                "input",
                "input tokens",
                a.uncached_input_tokens,
                a.cost_input,
            ),
            (
                "cached_input",
                "cached input tokens",
                a.cache_read_tokens,
                a.cost_cache_read,
            ),
            (
                "cache_write",
                "cache write tokens",
                a.cache_write_tokens,
                a.cost_cache_write,
            ),
            ("output", "output tokens", a.output_tokens, a.cost_output),
        ] {
            let price = unit_price(amount, quantity, PER_MILLION);
            push(
                m,
                class,
                format!("{m}: {what}"),
                quantity,
                "tokens",
                price,
                amount,
                None,
            )?;
        }
        if !a.cost_request_fee.is_zero() {
            let price = unit_price(a.cost_request_fee, a.fee_requests, 1);
            push(
                m,
                "request_fee",
                format!("{m}: per-request fee"),
                a.fee_requests,
                "requests",
                price,
                a.cost_request_fee,
                None,
            )?;
        }
        if !a.cost_discount.is_zero() {
            push(
                m,
                "discount",
                format!("{m}: agreed discount"),
                a.discount_requests,
                "requests",
                None,
                a.cost_discount,
                None,
            )?;
        }
    }
    for a in late {
        let m = a.model.as_str();
        let period = a.late_period.as_ref();
        let price = unit_price(a.cost, a.requests, 1);
        push(
            m,
            "adjustment",
            format!(
                "{m}: late usage of {} (after that invoice was finalized)",
                period.map(String::as_str).unwrap_or_default()
            ),
            a.requests,
            "requests",
            price,
            a.cost,
            period,
        )?;
    }
    Ok(lines)
}

/// Subtotal, credits and total, all in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub subtotal_minor: i64,
    pub credits_applied_minor: i64,
    pub total_minor: i64,
}

/// The subtotal is the sum of the rounded lines. Prepaid credit (`available`,
/// in the invoice currency) is applied up to the subtotal, in whole minor
/// units rounded down so no more is used than the tenant holds.
pub fn totals(lines: &[Line], available_credit: Decimal, digits: u32) -> Totals {
    let subtotal_minor: i64 = lines
        .iter()
        .fold(0i64, |acc, l| acc.saturating_add(l.amount_minor));
    let credit_minor = available_credit
        .round_dp_with_strategy(digits, RoundingStrategy::ToZero)
        .checked_mul(Decimal::from(10i64.pow(digits)))
        .and_then(|m| m.to_i64())
        .unwrap_or(0)
        .max(0);
    let credits_applied_minor = credit_minor.min(subtotal_minor.max(0));
    Totals {
        subtotal_minor,
        credits_applied_minor,
        total_minor: subtotal_minor - credits_applied_minor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn half_even_rounds_ties_to_the_even_cent() {
        let r = Rounding::HalfEven;
        assert_eq!(round_minor(d("0.125"), 2, r).unwrap(), 12);
        assert_eq!(round_minor(d("0.135"), 2, r).unwrap(), 14);
        assert_eq!(round_minor(d("0.1250001"), 2, r).unwrap(), 13);
        assert_eq!(round_minor(d("-0.125"), 2, r).unwrap(), -12);
        assert_eq!(round_minor(d("2.5"), 0, r).unwrap(), 2);
        assert_eq!(round_minor(d("3.5"), 0, r).unwrap(), 4);
        assert_eq!(round_minor(d("1.0005"), 3, r).unwrap(), 1000);
    }

    #[test]
    fn other_roundings_differ_only_where_they_should() {
        let cases = [
            (Rounding::HalfUp, [13, 14, -13, 12]),
            (Rounding::HalfDown, [12, 13, -12, 12]),
            (Rounding::Up, [13, 14, -13, 13]),
            (Rounding::Down, [12, 13, -12, 12]),
            (Rounding::HalfEven, [12, 14, -12, 12]),
        ];
        for (r, want) in cases {
            let got =
                ["0.125", "0.135", "-0.125", "0.1201"].map(|a| round_minor(d(a), 2, r).unwrap());
            assert_eq!(got, want, "{r:?}");
            assert_eq!(Rounding::parse(r.as_str()), Some(r));
        }
        assert_eq!(Rounding::parse("bankers"), None);
    }

    #[test]
    fn periods_are_utc_months() {
        let p = Period::parse("2026-11").unwrap();
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(p.start().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(p.end().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(
            Period::parse("2026-12").unwrap().next().to_string(),
            "2027-01"
        );
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-11", "2026/11", "+026-11", "",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
        assert_eq!(Period::of(p.end() - chrono::Duration::microseconds(1)), p);
    }

    #[test]
    fn currencies_have_their_minor_unit() {
        assert_eq!(minor_digits("USD"), 2);
        assert_eq!(minor_digits("JPY"), 0);
        assert_eq!(minor_digits("KWD"), 3);
    }

    fn gpt() -> Aggregate {
        // 3 requests: 2 400 uncached input at $0.15/M, 600 cached at $0.075/M,
        // 900 output at $0.60/M.
        Aggregate {
            model: "gpt-4o-mini".into(),
            requests: 3,
            uncached_input_tokens: 2400,
            cache_read_tokens: 600,
            output_tokens: 900,
            cost_input: d("0.00036"),
            cost_cache_read: d("0.000045"),
            cost_output: d("0.00054"),
            cost: d("0.000945"),
            ..Default::default()
        }
    }

    #[test]
    fn lines_round_once_and_total_is_the_sum_of_rounded_lines() {
        let mut big = Aggregate {
            model: "claude".into(),
            requests: 2,
            uncached_input_tokens: 1_000_000,
            output_tokens: 125_000,
            cache_write_tokens: 10_000,
            cost_input: d("3"),
            cost_output: d("1.875"), // 125k × $15/M: tie 187.5¢ → 188 (even)
            cost_cache_write: d("0.035"), // 10k × $3.50/M: tie 3.5¢ → 4 (even)
            fee_requests: 2,
            cost_request_fee: d("0.005"), // 2 × $0.0025: tie 0.5¢ → 0 (even)
            discount_requests: 2,
            cost_discount: d("-0.4915"), // 10 % of 4.915: -49.15¢ → -49
            ..Default::default()
        };
        big.cost = big.cost_input
            + big.cost_output
            + big.cost_cache_write
            + big.cost_request_fee
            + big.cost_discount;
        let lines = build_lines(&[gpt(), big], 2, Rounding::HalfEven).unwrap();
        let got: Vec<(&str, &str, i64, String, String, i64)> = lines
            .iter()
            .map(|l| {
                (
                    l.model.as_str(),
                    l.token_class.as_str(),
                    l.quantity,
                    l.unit_price.map(|p| p.to_string()).unwrap_or_default(),
                    l.amount.to_string(),
                    l.amount_minor,
                )
            })
            .collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            got,
            vec![
                ("claude", "input", 1_000_000, s("3"), s("3"), 300),
                ("claude", "cache_write", 10_000, s("3.5"), s("0.035"), 4),
                ("claude", "output", 125_000, s("15"), s("1.875"), 188),
                ("claude", "request_fee", 2, s("0.0025"), s("0.005"), 0),
                ("claude", "discount", 2, s(""), s("-0.4915"), -49),
                ("gpt-4o-mini", "input", 2400, s("0.15"), s("0.00036"), 0),
                (
                    "gpt-4o-mini",
                    "cached_input",
                    600,
                    s("0.075"),
                    s("0.000045"),
                    0
                ),
                ("gpt-4o-mini", "output", 900, s("0.6"), s("0.00054"), 0),
            ]
        );
        // 300 + 4 + 188 + 0 - 49 + 0 + 0 + 0 = 443¢, while the precise sum
        // 4.424445 would round to 442¢: the total is the sum of the rounded
        // lines. The credit 1.009 is applied as 1.00 (rounded down).
        let t = totals(&lines, d("1.009"), 2);
        assert_eq!(
            t,
            Totals {
                subtotal_minor: 443,
                credits_applied_minor: 100,
                total_minor: 343
            }
        );
        // Credit never exceeds the subtotal.
        assert_eq!(totals(&lines, d("1000"), 2).total_minor, 0);
        assert_eq!(totals(&lines, d("-5"), 2).credits_applied_minor, 0);
    }

    #[test]
    fn rounded_lines_can_differ_from_the_rounded_precise_sum() {
        // Three lines of 0.005 each: half-even gives 0 + 0 + 0 = 0 cents,
        // while their precise sum 0.015 would be 2 cents. The invoice shows
        // the lines, so its subtotal is 0.
        let a = Aggregate {
            model: "m".into(),
            requests: 1,
            uncached_input_tokens: 1,
            cache_read_tokens: 1,
            output_tokens: 1,
            cost_input: d("0.005"),
            cost_cache_read: d("0.005"),
            cost_output: d("0.005"),
            cost: d("0.015"),
            ..Default::default()
        };
        let lines = build_lines(std::slice::from_ref(&a), 2, Rounding::HalfEven).unwrap();
        assert_eq!(totals(&lines, Decimal::ZERO, 2).subtotal_minor, 0);
        let lines = build_lines(&[a], 2, Rounding::HalfUp).unwrap();
        assert_eq!(totals(&lines, Decimal::ZERO, 2).subtotal_minor, 3);
    }

    #[test]
    fn late_usage_becomes_one_adjustment_line_per_period_and_model() {
        let late = Aggregate {
            late_period: Some("2026-10".into()),
            ..gpt()
        };
        let lines = build_lines(&[late], 2, Rounding::HalfEven).unwrap();
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l.token_class, "adjustment");
        assert_eq!(l.adjusts_period.as_deref(), Some("2026-10"));
        assert_eq!((l.quantity, l.unit.as_str()), (3, "requests"));
        assert_eq!(l.amount, d("0.000945"));
        assert_eq!(l.unit_price, Some(d("0.000315")));
        assert!(l.description.contains("2026-10"), "{}", l.description);
    }

    #[test]
    fn empty_lines_are_left_out_and_overflow_is_an_error() {
        let lines = build_lines(&[Aggregate::default()], 2, Rounding::HalfEven).unwrap();
        assert!(lines.is_empty());
        assert!(round_minor(Decimal::MAX, 2, Rounding::HalfEven).is_err());
    }
}
