//! The collector's one source of "now".
//!
//! Everything that decides by the calendar (open and closed invoice months,
//! budget periods in their time zones, the rollup fold's cut-off, alert
//! windows, the start of a prepaid account, deny-list resets, ingest's skew
//! check, default query ranges, budget reservations' expiry and the deny
//! list's last-minute spend) asks `AppState::clock`, never the system
//! directly, so a test can pin any instant: the last second of a month, a
//! DST change, 29 February.
//!
//! What stays on the database's clock, on purpose: leases and
//! compare-and-set tokens that replicas coordinate through (alert delivery
//! leases and retries, the balance alerts' fired/armed ordering) and audit
//! stamps (`created_at`, `updated_at`, `revoked_at`). Those compare the
//! database's time with itself, so one clock for every replica is what
//! keeps them correct.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A cheap, cloneable handle on the current time.
#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    /// Stands still until moved: tests set and advance it.
    Manual(Mutex<DateTime<Utc>>),
}

impl Clock {
    /// The system clock (the binary's).
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that reads `at` until it is set or advanced.
    pub fn manual(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Source::Manual(Mutex::new(at))))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Source::System => Utc::now(),
            Source::Manual(at) => *at.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a manual clock to `at` (a system clock ignores it).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Source::Manual(current) = &*self.0 {
            *current.lock().unwrap_or_else(|p| p.into_inner()) = at;
        }
    }

    /// Moves a manual clock forward by `by` (a system clock ignores it).
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(current) = &*self.0 {
            let mut at = current.lock().unwrap_or_else(|p| p.into_inner());
            *at += by;
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(_) => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let at: DateTime<Utc> = "2028-02-29T23:59:59Z".parse().unwrap();
        let clock = Clock::manual(at);
        let shared = clock.clone();
        assert_eq!(clock.now(), at);
        shared.advance(Duration::seconds(1));
        assert_eq!(clock.now().to_rfc3339(), "2028-03-01T00:00:00+00:00");
        shared.set(at);
        assert_eq!(clock.now(), at);
    }

    #[test]
    fn the_system_clock_ignores_set_and_moves_on_its_own() {
        let clock = Clock::system();
        let before = Utc::now();
        clock.set(DateTime::UNIX_EPOCH);
        assert!(clock.now() >= before);
    }
}
