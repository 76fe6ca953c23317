//! Budget arithmetic, free of I/O: period windows, spent against limit,
//! threshold crossings and the end-of-period projection.
//!
//! Periods are calendar-aligned in one fixed UTC offset for the whole
//! collector (`BUDGET_UTC_OFFSET_MINUTES`, default 0 = UTC): a day starts at
//! local midnight, a week on local Monday 00:00, a month on the 1st at 00:00.
//! A fixed offset has no daylight-saving changes; named time zones would need
//! a tz database the collector does not ship. `total` never resets.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Offset, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

/// Environment variable with the offset, in minutes east of UTC.
pub const OFFSET_ENV: &str = "BUDGET_UTC_OFFSET_MINUTES";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
    Total,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            "total" => Period::Total,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }
}

/// The current period: spend in `[start, end)` counts. `end` (the reset
/// time) is None for `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// Start of a `total` window: before any usage the ledger can hold.
pub fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// The offset from `BUDGET_UTC_OFFSET_MINUTES`; UTC when unset. An invalid
/// value is an error so a typo cannot silently shift every reset.
pub fn offset_from_env() -> Result<FixedOffset, String> {
    match std::env::var(OFFSET_ENV) {
        Err(_) => Ok(utc()),
        Ok(v) => parse_offset(&v),
    }
}

pub fn parse_offset(v: &str) -> Result<FixedOffset, String> {
    let minutes: i32 = v
        .trim()
        .parse()
        .map_err(|_| format!("{OFFSET_ENV} must be an integer number of minutes, not {v:?}"))?;
    if !(-18 * 60..=18 * 60).contains(&minutes) {
        return Err(format!(
            "{OFFSET_ENV} must be between -1080 and 1080, not {minutes}"
        ));
    }
    FixedOffset::east_opt(minutes * 60).ok_or_else(|| format!("bad {OFFSET_ENV} {minutes}"))
}

pub fn utc() -> FixedOffset {
    Utc.fix()
}

fn local_midnight(date: NaiveDate, offset: FixedOffset) -> Option<DateTime<Utc>> {
    let naive = date.and_hms_opt(0, 0, 0)?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|d| d.with_timezone(&Utc))
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

/// The period containing `now`.
pub fn window(period: Period, now: DateTime<Utc>, offset: FixedOffset) -> Window {
    let today = now.with_timezone(&offset).date_naive();
    let (start, end) = match period {
        Period::Total => {
            return Window {
                start: epoch(),
                end: None,
            }
        }
        Period::Day => (Some(today), today.succ_opt()),
        Period::Week => {
            let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            (Some(monday), Some(monday + Duration::days(7)))
        }
        Period::Month => {
            let first = today.with_day(1);
            (first, first.and_then(first_of_next_month))
        }
    };
    match (
        start.and_then(|d| local_midnight(d, offset)),
        end.and_then(|d| local_midnight(d, offset)),
    ) {
        (Some(start), Some(end)) => Window {
            start,
            end: Some(end),
        },
        // Only at the edges of chrono's calendar: count everything, never reset.
        _ => Window {
            start: epoch(),
            end: None,
        },
    }
}

/// Where a budget stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    #[serde(with = "rust_decimal::serde::str")]
    pub spent: Decimal,
    /// Never negative: an overspent budget has 0 remaining.
    #[serde(with = "rust_decimal::serde::str")]
    pub remaining: Decimal,
    /// spent / limit × 100, two decimals.
    #[serde(with = "rust_decimal::serde::str")]
    pub percent_used: Decimal,
    /// spent >= limit: a hard budget blocks.
    pub exceeded: bool,
    /// Spend extrapolated linearly to the end of the period (None for
    /// `total`, or at the very start of a period).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub projected: Option<Decimal>,
    /// projected > limit while not yet exceeded.
    pub projected_to_exceed: bool,
}

/// spent / elapsed × period length, at millisecond resolution.
pub fn projected_spend(spent: Decimal, window: Window, now: DateTime<Utc>) -> Option<Decimal> {
    let end = window.end?;
    let elapsed = (now - window.start).num_milliseconds();
    let length = (end - window.start).num_milliseconds();
    if elapsed <= 0 || length <= 0 {
        return None;
    }
    let rate = spent.checked_div(Decimal::from(elapsed))?;
    rate.checked_mul(Decimal::from(length))
        .map(|d| d.round_dp(12).normalize())
}

pub fn status(limit: Decimal, spent: Decimal, window: Window, now: DateTime<Utc>) -> Status {
    let remaining = (limit - spent).max(Decimal::ZERO);
    let percent_used = if limit > Decimal::ZERO {
        (spent * Decimal::ONE_HUNDRED / limit).round_dp(2)
    } else {
        Decimal::ZERO
    };
    let exceeded = spent >= limit;
    let projected = projected_spend(spent, window, now);
    Status {
        spent,
        remaining,
        percent_used,
        exceeded,
        projected,
        projected_to_exceed: !exceeded && projected.is_some_and(|p| p > limit),
    }
}

/// The thresholds (percent of the limit) that spend crossed going from
/// `before` to `after`: `before < limit × t/100 <= after`. Each fires once
/// per period as long as the caller remembers `before` per period.
pub fn crossed_thresholds(
    before: Decimal,
    after: Decimal,
    limit: Decimal,
    thresholds: &[u32],
) -> Vec<u32> {
    let mut crossed: Vec<u32> = thresholds
        .iter()
        .copied()
        .filter(|&t| {
            let mark = limit * Decimal::from(t) / Decimal::ONE_HUNDRED;
            before < mark && mark <= after
        })
        .collect();
    crossed.sort_unstable();
    crossed.dedup();
    crossed
}

/// Seconds from `now` to `resets_at`, at least 1.
pub fn seconds_until(resets_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (resets_at - now).num_seconds().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn utc_windows_are_calendar_aligned() {
        // 2025-11-26 is a Wednesday.
        let now = at("2025-11-26T15:30:00Z");
        let w = window(Period::Day, now, utc());
        assert_eq!(w.start, at("2025-11-26T00:00:00Z"));
        assert_eq!(w.end, Some(at("2025-11-27T00:00:00Z")));
        let w = window(Period::Week, now, utc());
        assert_eq!(w.start, at("2025-11-24T00:00:00Z"));
        assert_eq!(w.end, Some(at("2025-12-01T00:00:00Z")));
        let w = window(Period::Month, now, utc());
        assert_eq!(w.start, at("2025-11-01T00:00:00Z"));
        assert_eq!(w.end, Some(at("2025-12-01T00:00:00Z")));
        let w = window(Period::Total, now, utc());
        assert_eq!(w.start, epoch());
        assert_eq!(w.end, None);
    }

    #[test]
    fn december_rolls_into_the_next_year_and_monday_starts_its_own_week() {
        let w = window(Period::Month, at("2025-12-31T23:59:59Z"), utc());
        assert_eq!(w.start, at("2025-12-01T00:00:00Z"));
        assert_eq!(w.end, Some(at("2026-01-01T00:00:00Z")));
        let w = window(Period::Week, at("2025-11-24T00:00:00Z"), utc());
        assert_eq!(w.start, at("2025-11-24T00:00:00Z"));
        // Sunday night still belongs to the week that started Monday.
        let w = window(Period::Week, at("2025-11-30T23:59:59Z"), utc());
        assert_eq!(w.start, at("2025-11-24T00:00:00Z"));
        // February of a leap year.
        let w = window(Period::Month, at("2028-02-29T12:00:00Z"), utc());
        assert_eq!(w.end, Some(at("2028-03-01T00:00:00Z")));
    }

    #[test]
    fn a_fixed_offset_moves_the_boundaries() {
        let plus2 = parse_offset("120").unwrap();
        // 23:30 UTC on the 30th is 01:30 on Dec 1st at +02:00.
        let now = at("2025-11-30T23:30:00Z");
        let w = window(Period::Day, now, plus2);
        assert_eq!(w.start, at("2025-11-30T22:00:00Z"));
        assert_eq!(w.end, Some(at("2025-12-01T22:00:00Z")));
        let w = window(Period::Month, now, plus2);
        assert_eq!(w.start, at("2025-11-30T22:00:00Z"));
        assert_eq!(w.end, Some(at("2025-12-31T22:00:00Z")));
        // Dec 1st 2025 is a Monday at +02:00 already.
        assert_eq!(window(Period::Week, now, plus2).start, w.start);

        let minus5 = parse_offset("-300").unwrap();
        let w = window(Period::Day, at("2025-11-26T03:00:00Z"), minus5);
        assert_eq!(w.start, at("2025-11-25T05:00:00Z"));
        assert_eq!(w.end, Some(at("2025-11-26T05:00:00Z")));
    }

    #[test]
    fn offsets_are_validated() {
        assert_eq!(parse_offset("0").unwrap(), utc());
        assert_eq!(parse_offset(" 330 ").unwrap().local_minus_utc(), 330 * 60);
        assert!(parse_offset("2h").unwrap_err().contains(OFFSET_ENV));
        assert!(parse_offset("1200").is_err());
        assert!(parse_offset("-1081").is_err());
    }

    #[test]
    fn status_reports_remaining_percent_and_exceeded() {
        let w = window(Period::Total, at("2025-11-26T00:00:00Z"), utc());
        let now = at("2025-11-26T00:00:00Z");
        let s = status(d("0.001"), d("0.00069"), w, now);
        assert_eq!(s.remaining, d("0.00031"));
        assert_eq!(s.percent_used, d("69"));
        assert!(!s.exceeded);
        assert_eq!(s.projected, None);
        assert!(!s.projected_to_exceed);
        // 3 × 0.000345 = 0.001035 >= 0.001
        let s = status(d("0.001"), d("0.001035"), w, now);
        assert!(s.exceeded);
        assert_eq!(s.remaining, Decimal::ZERO);
        assert_eq!(s.percent_used, d("103.50"));
        // Exactly at the limit is exceeded (the next request would overspend).
        assert!(status(d("25.00"), d("25"), w, now).exceeded);
    }

    #[test]
    fn projection_extrapolates_linearly_to_the_period_end() {
        // Day window, 6 h elapsed of 24: $7 so far projects to $28.
        let now = at("2025-11-26T06:00:00Z");
        let w = window(Period::Day, now, utc());
        assert_eq!(projected_spend(d("7"), w, now), Some(d("28")));
        let s = status(d("25.00"), d("7"), w, now);
        assert!(s.projected_to_exceed);
        assert!(!s.exceeded);
        // $6 in 6 h projects to exactly $24: not over $25.
        let s = status(d("25.00"), d("6"), w, now);
        assert_eq!(s.projected, Some(d("24")));
        assert!(!s.projected_to_exceed);
        // Month of 30 days, 10 days in, $10 spent: $30 projected.
        let now = at("2025-11-11T00:00:00Z");
        let w = window(Period::Month, now, utc());
        assert_eq!(projected_spend(d("10"), w, now), Some(d("30")));
        // At the very start nothing can be projected.
        let now = at("2025-11-01T00:00:00Z");
        assert_eq!(
            projected_spend(d("1"), window(Period::Month, now, utc()), now),
            None
        );
    }

    #[test]
    fn thresholds_fire_once_when_crossed() {
        let t = [50, 80, 100];
        assert_eq!(
            crossed_thresholds(d("0"), d("12.50"), d("25"), &t),
            vec![50]
        );
        assert!(crossed_thresholds(d("12.50"), d("19.99"), d("25"), &t).is_empty());
        assert_eq!(
            crossed_thresholds(d("19.99"), d("30"), d("25"), &t),
            vec![80, 100]
        );
        // Already past everything: nothing new.
        assert!(crossed_thresholds(d("30"), d("31"), d("25"), &t).is_empty());
    }

    #[test]
    fn seconds_until_is_at_least_one() {
        let now = at("2025-11-26T23:59:00Z");
        assert_eq!(seconds_until(at("2025-11-27T00:00:00Z"), now), 60);
        assert_eq!(seconds_until(now, now), 1);
    }
}
