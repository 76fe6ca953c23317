//! Budget arithmetic, free of I/O: period windows, spent against limit,
//! threshold crossings and the end-of-period projection.
//!
//! Periods are calendar-aligned in a time zone: the budget's own `time_zone`
//! or the collector-wide default (`BUDGET_TIME_ZONE`, an IANA name, or the
//! older fixed `BUDGET_UTC_OFFSET_MINUTES`; UTC when neither is set). A day
//! starts at local midnight, a week on local Monday 00:00, a month on the 1st
//! at 00:00, so across a daylight-saving change a day lasts 23 or 25 hours.
//! `total` never resets.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset,
    TimeZone, Utc,
};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;

/// Environment variable with the default IANA time zone.
pub const TIME_ZONE_ENV: &str = "BUDGET_TIME_ZONE";
/// Environment variable with a fixed offset in minutes east of UTC (older
/// alternative to [`TIME_ZONE_ENV`]).
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

/// Where periods are calendar-aligned: an IANA zone (with its DST rules) or
/// a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Named(Tz),
    Fixed(FixedOffset),
}

impl Default for Zone {
    fn default() -> Self {
        Zone::Named(Tz::UTC)
    }
}

impl fmt::Display for Zone {
    /// The IANA name, or `+05:30` for a fixed offset.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Named(tz) => f.write_str(tz.name()),
            Zone::Fixed(o) => write!(f, "{o}"),
        }
    }
}

/// Why a configured zone or offset is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error(
        "{field} must be an IANA time zone such as \"Europe/Berlin\" or \"UTC\", not {value:?}"
    )]
    UnknownZone { field: &'static str, value: String },
    #[error("{OFFSET_ENV} must be an integer number of minutes, not {0:?}")]
    BadOffset(String),
    #[error("{OFFSET_ENV} must be between -1080 and 1080, not {0}")]
    OffsetOutOfRange(i32),
    #[error("set only one of {TIME_ZONE_ENV} and {OFFSET_ENV}")]
    Both,
}

/// Parses an IANA name (exact spelling, e.g. `America/New_York`); `field`
/// names the setting in the error.
pub fn parse_zone(field: &'static str, v: &str) -> Result<Zone, ZoneError> {
    v.trim()
        .parse::<Tz>()
        .map(Zone::Named)
        .map_err(|_| ZoneError::UnknownZone {
            field,
            value: v.to_string(),
        })
}

/// The collector-wide default from `BUDGET_TIME_ZONE` or
/// `BUDGET_UTC_OFFSET_MINUTES` (UTC when neither is set). Checked at
/// startup so a typo refuses to start instead of shifting every reset.
pub fn default_zone(time_zone: Option<&str>, offset: Option<&str>) -> Result<Zone, ZoneError> {
    let time_zone = time_zone.filter(|v| !v.trim().is_empty());
    let offset = offset.filter(|v| !v.trim().is_empty());
    match (time_zone, offset) {
        (Some(_), Some(_)) => Err(ZoneError::Both),
        (Some(tz), None) => parse_zone(TIME_ZONE_ENV, tz),
        (None, Some(o)) => parse_offset(o).map(Zone::Fixed),
        (None, None) => Ok(Zone::default()),
    }
}

pub fn parse_offset(v: &str) -> Result<FixedOffset, ZoneError> {
    let minutes: i32 = v
        .trim()
        .parse()
        .map_err(|_| ZoneError::BadOffset(v.to_string()))?;
    if !(-18 * 60..=18 * 60).contains(&minutes) {
        return Err(ZoneError::OffsetOutOfRange(minutes));
    }
    FixedOffset::east_opt(minutes * 60).ok_or(ZoneError::OffsetOutOfRange(minutes))
}

pub fn utc() -> FixedOffset {
    Utc.fix()
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

/// The instant a local calendar day begins. Midnight can be ambiguous (a
/// fall-back at 00:00: the first one counts) or skipped (a spring-forward at
/// 00:00, e.g. America/Havana: the day begins when the clock jumps, the first
/// local minute that exists).
fn local_midnight<Z: TimeZone>(date: NaiveDate, zone: &Z) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    // Gaps are at most a few hours; search minute by minute for their end.
    for minute in 0..=24 * 60 {
        let naive: NaiveDateTime = midnight + Duration::minutes(minute);
        match zone.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return Some(t.with_timezone(&Utc))
            }
            LocalResult::None => continue,
        }
    }
    None
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

fn window_in<Z: TimeZone>(period: Period, now: DateTime<Utc>, zone: &Z) -> Window {
    let today = now.with_timezone(zone).date_naive();
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
        start.and_then(|d| local_midnight(d, zone)),
        end.and_then(|d| local_midnight(d, zone)),
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

/// The period containing `now`.
pub fn window(period: Period, now: DateTime<Utc>, zone: Zone) -> Window {
    match zone {
        Zone::Named(tz) => window_in(period, now, &tz),
        Zone::Fixed(offset) => window_in(period, now, &offset),
    }
}

/// The zone a budget's periods use: its own `time_zone` (validated when
/// stored) or the collector default.
pub fn budget_zone(time_zone: Option<&str>, default: Zone) -> Zone {
    time_zone
        .and_then(|tz| parse_zone("time_zone", tz).ok())
        .unwrap_or(default)
}

/// The current window of a stored budget.
pub fn budget_window(
    period: &str,
    time_zone: Option<&str>,
    now: DateTime<Utc>,
    default: Zone,
) -> Window {
    window(
        Period::parse(period).unwrap_or(Period::Total),
        now,
        budget_zone(time_zone, default),
    )
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
    /// Spend projected to the end of the period (None for `total`): the
    /// spend forecast's (`crate::forecast`) where the API reports it, else
    /// extrapolated linearly (None at the very start of a period).
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

/// Whether a projection over the limit is news: not yet exceeded, and
/// projected strictly above the limit.
pub fn projected_to_exceed(limit: Decimal, spent: Decimal, projected: Decimal) -> bool {
    spent < limit && projected > limit
}

/// `status` with the spend forecast's projection in place of the linear one
/// (kept when there is no forecast: `total` budgets).
pub fn with_forecast(mut s: Status, limit: Decimal, projected: Option<Decimal>) -> Status {
    if let Some(p) = projected {
        s.projected = Some(p);
        s.projected_to_exceed = projected_to_exceed(limit, s.spent, p);
    }
    s
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

    const UTC: Zone = Zone::Named(Tz::UTC);

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
        let w = window(Period::Day, now, UTC);
        assert_eq!(w.start, at("2025-11-26T00:00:00Z"));
        assert_eq!(w.end, Some(at("2025-11-27T00:00:00Z")));
        let w = window(Period::Week, now, UTC);
        assert_eq!(w.start, at("2025-11-24T00:00:00Z"));
        assert_eq!(w.end, Some(at("2025-12-01T00:00:00Z")));
        let w = window(Period::Month, now, UTC);
        assert_eq!(w.start, at("2025-11-01T00:00:00Z"));
        assert_eq!(w.end, Some(at("2025-12-01T00:00:00Z")));
        let w = window(Period::Total, now, UTC);
        assert_eq!(w.start, epoch());
        assert_eq!(w.end, None);
    }

    #[test]
    fn december_rolls_into_the_next_year_and_monday_starts_its_own_week() {
        let w = window(Period::Month, at("2025-12-31T23:59:59Z"), UTC);
        assert_eq!(w.start, at("2025-12-01T00:00:00Z"));
        assert_eq!(w.end, Some(at("2026-01-01T00:00:00Z")));
        let w = window(Period::Week, at("2025-11-24T00:00:00Z"), UTC);
        assert_eq!(w.start, at("2025-11-24T00:00:00Z"));
        // Sunday night still belongs to the week that started Monday.
        let w = window(Period::Week, at("2025-11-30T23:59:59Z"), UTC);
        assert_eq!(w.start, at("2025-11-24T00:00:00Z"));
        // February of a leap year.
        let w = window(Period::Month, at("2028-02-29T12:00:00Z"), UTC);
        assert_eq!(w.end, Some(at("2028-03-01T00:00:00Z")));
    }

    #[test]
    fn a_fixed_offset_moves_the_boundaries() {
        let plus2 = Zone::Fixed(parse_offset("120").unwrap());
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

        let minus5 = Zone::Fixed(parse_offset("-300").unwrap());
        let w = window(Period::Day, at("2025-11-26T03:00:00Z"), minus5);
        assert_eq!(w.start, at("2025-11-25T05:00:00Z"));
        assert_eq!(w.end, Some(at("2025-11-26T05:00:00Z")));
    }

    fn tz(name: &str) -> Zone {
        parse_zone("time_zone", name).unwrap()
    }

    fn hours(w: Window) -> i64 {
        (w.end.unwrap() - w.start).num_hours()
    }

    #[test]
    fn berlin_days_last_23_and_25_hours_across_dst() {
        let berlin = tz("Europe/Berlin");
        // Sunday 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let w = window(Period::Day, at("2026-03-29T12:00:00Z"), berlin);
        assert_eq!(w.start, at("2026-03-28T23:00:00Z"));
        assert_eq!(w.end, Some(at("2026-03-29T22:00:00Z")));
        assert_eq!(hours(w), 23);
        // 00:30 CEST on Monday is already the next day.
        let w = window(Period::Day, at("2026-03-29T22:30:00Z"), berlin);
        assert_eq!(w.start, at("2026-03-29T22:00:00Z"));
        assert_eq!(w.end, Some(at("2026-03-30T22:00:00Z")));
        // Sunday 2026-10-25: 03:00 CEST falls back to 02:00 CET.
        let w = window(Period::Day, at("2026-10-25T12:00:00Z"), berlin);
        assert_eq!(w.start, at("2026-10-24T22:00:00Z"));
        assert_eq!(w.end, Some(at("2026-10-25T23:00:00Z")));
        assert_eq!(hours(w), 25);
        // The week and the month around the spring change: one hour short.
        let w = window(Period::Week, at("2026-03-29T21:59:59Z"), berlin);
        assert_eq!(w.start, at("2026-03-22T23:00:00Z"));
        assert_eq!(w.end, Some(at("2026-03-29T22:00:00Z")));
        assert_eq!(hours(w), 7 * 24 - 1);
        let w = window(Period::Month, at("2026-03-15T00:00:00Z"), berlin);
        assert_eq!(w.start, at("2026-02-28T23:00:00Z"));
        assert_eq!(w.end, Some(at("2026-03-31T22:00:00Z")));
        // New Year's Eve 23:30 UTC is already January in Berlin.
        let w = window(Period::Month, at("2026-12-31T23:30:00Z"), berlin);
        assert_eq!(w.start, at("2026-12-31T23:00:00Z"));
        assert_eq!(w.end, Some(at("2027-01-31T23:00:00Z")));
    }

    #[test]
    fn new_york_periods_follow_its_dst_rules() {
        let ny = tz("America/New_York");
        // Sunday 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let w = window(Period::Day, at("2026-03-08T15:00:00Z"), ny);
        assert_eq!(w.start, at("2026-03-08T05:00:00Z"));
        assert_eq!(w.end, Some(at("2026-03-09T04:00:00Z")));
        assert_eq!(hours(w), 23);
        // Sunday 2026-11-01: 02:00 EDT falls back to 01:00 EST.
        let w = window(Period::Day, at("2026-11-01T15:00:00Z"), ny);
        assert_eq!(w.start, at("2026-11-01T04:00:00Z"));
        assert_eq!(w.end, Some(at("2026-11-02T05:00:00Z")));
        assert_eq!(hours(w), 25);
        // 23:30 EST on Nov 30th is 04:30 UTC on Dec 1st: still November.
        let w = window(Period::Month, at("2026-12-01T04:30:00Z"), ny);
        assert_eq!(w.start, at("2026-11-01T04:00:00Z"));
        assert_eq!(w.end, Some(at("2026-12-01T05:00:00Z")));
        // Weeks start on local Monday: Monday 2026-11-02 00:00 EST.
        let w = window(Period::Week, at("2026-11-02T05:00:00Z"), ny);
        assert_eq!(w.start, at("2026-11-02T05:00:00Z"));
        assert_eq!(w.end, Some(at("2026-11-09T05:00:00Z")));
        let w = window(Period::Week, at("2026-11-02T04:59:59Z"), ny);
        assert_eq!(w.start, at("2026-10-26T04:00:00Z"));
        assert_eq!(hours(w), 7 * 24 + 1);
    }

    #[test]
    fn a_skipped_or_repeated_midnight_starts_the_day_at_the_first_real_instant() {
        let havana = tz("America/Havana");
        // 2026-03-08: 00:00 CST jumps to 01:00 CDT, there is no midnight.
        let w = window(Period::Day, at("2026-03-08T12:00:00Z"), havana);
        assert_eq!(w.start, at("2026-03-08T05:00:00Z"));
        assert_eq!(w.end, Some(at("2026-03-09T04:00:00Z")));
        // 2026-11-01: 01:00 CDT falls back to 00:00 CST, midnight happens twice.
        let w = window(Period::Day, at("2026-11-01T12:00:00Z"), havana);
        assert_eq!(w.start, at("2026-11-01T04:00:00Z"));
        assert_eq!(w.end, Some(at("2026-11-02T05:00:00Z")));
        assert_eq!(hours(w), 25);
    }

    #[test]
    fn zones_and_the_default_are_validated() {
        assert_eq!(default_zone(None, None).unwrap(), UTC);
        assert_eq!(default_zone(Some(""), Some(" ")).unwrap(), UTC);
        assert_eq!(
            default_zone(Some("Europe/Berlin"), None)
                .unwrap()
                .to_string(),
            "Europe/Berlin"
        );
        assert_eq!(
            default_zone(None, Some("330")).unwrap().to_string(),
            "+05:30"
        );
        let e = default_zone(Some("Europe/Berln"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BUDGET_TIME_ZONE must be an IANA time zone such as \"Europe/Berlin\" or \"UTC\", not \"Europe/Berln\""
        );
        assert_eq!(
            default_zone(Some("UTC"), Some("60")).unwrap_err(),
            ZoneError::Both
        );
        assert!(default_zone(None, Some("90m")).is_err());
        let e = parse_zone("time_zone", "Mars/Olympus").unwrap_err();
        assert!(e.to_string().starts_with("time_zone must be"), "{e}");
        // A stored zone that no longer parses falls back to the default.
        assert_eq!(budget_zone(Some("Nowhere/Else"), UTC), UTC);
        assert_eq!(
            budget_zone(Some("Asia/Tokyo"), UTC).to_string(),
            "Asia/Tokyo"
        );
    }

    #[test]
    fn offsets_are_validated() {
        assert_eq!(parse_offset("0").unwrap(), utc());
        assert_eq!(parse_offset(" 330 ").unwrap().local_minus_utc(), 330 * 60);
        assert!(parse_offset("2h")
            .unwrap_err()
            .to_string()
            .contains(OFFSET_ENV));
        assert!(parse_offset("1200").is_err());
        assert!(parse_offset("-1081").is_err());
    }

    #[test]
    fn status_reports_remaining_percent_and_exceeded() {
        let w = window(Period::Total, at("2025-11-26T00:00:00Z"), UTC);
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
        let w = window(Period::Day, now, UTC);
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
        let w = window(Period::Month, now, UTC);
        assert_eq!(projected_spend(d("10"), w, now), Some(d("30")));
        // At the very start nothing can be projected.
        let now = at("2025-11-01T00:00:00Z");
        assert_eq!(
            projected_spend(d("1"), window(Period::Month, now, UTC), now),
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
