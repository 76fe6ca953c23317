//! Reservations against hard budgets and prepaid balances, and the deny
//! list with its watch list.
//!
//! The deny list alone lets spend overshoot a limit by whatever is admitted
//! before the next poll. A request of a scope near its limit (a scope on the
//! deny list's `watch`) therefore asks first (`POST /v1/reservations`): it is
//! admitted only if an estimate of its cost fits in
//! `remaining = limit − spent − reserved` of every scope that governs it,
//! decided under a per-tenant advisory lock (so across replicas) on spend and
//! reservations read in one snapshot. Its reservation counts until its usage
//! record lands in the ledger (deleted in the same transaction) or it
//! expires.
//!
//! The arithmetic ([`decide`], [`watched`]) is pure; [`reserve`],
//! [`deny_list`] and [`sweep`] run it against the database.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::budgets::{self, Zone};
use crate::db::{self, Account, Budget, Reservation, ScopeUsage, SpendScope};
use crate::metrics::Metrics;
use crate::price_book::PriceBook;
use crate::pricing::UsageCounts;
use crate::AppState;

/// Output tokens assumed for a request that set no output limit, to price
/// its estimate (the request may still cost more: it is "unbounded").
pub const DEFAULT_OUTPUT_TOKENS: u64 = 4096;
/// Reservation lifetime when the call names none (`RESERVATION_TTL_SECS`).
pub const DEFAULT_TTL_SECS: u64 = 600;
/// Longest lifetime a reservation gets, whatever the call or setting says.
pub const MAX_TTL_SECS: u64 = 3600;
/// Default of `BUDGET_WATCH_FRACTION`.
pub const DEFAULT_WATCH_FRACTION: Decimal = Decimal::from_parts(5, 0, 0, false, 1);
/// The window of recent spend in the watch rule.
pub const RECENT_SECS: i64 = 10;
/// A scope whose remaining amount is at most this many windows of its
/// recent spend plus what it has in flight (reserved, noticed) could run
/// out before the gateways learn of it: it is watched.
pub const RECENT_HORIZON_WINDOWS: i64 = 6;
/// Expired reservations deleted per sweep statement.
const SWEEP_BATCH: i64 = 10_000;

/// Collector-wide reservation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A scope is watched when `remaining <= limit × watch_fraction`.
    pub watch_fraction: Decimal,
    /// Lifetime of a reservation whose call names no `ttl_ms`.
    pub default_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            watch_fraction: DEFAULT_WATCH_FRACTION,
            default_ttl: Duration::seconds(DEFAULT_TTL_SECS as i64),
        }
    }
}

/// Why a setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("BUDGET_WATCH_FRACTION must be a decimal between 0 and 1, such as \"0.5\", not {0:?}")]
    Fraction(String),
    #[error("RESERVATION_TTL_SECS must be between 1 and {MAX_TTL_SECS}, not {0}")]
    Ttl(u64),
}

impl Settings {
    /// From `BUDGET_WATCH_FRACTION` and `RESERVATION_TTL_SECS`, checked at
    /// startup.
    pub fn parse(watch_fraction: &str, ttl_secs: u64) -> Result<Self, SettingsError> {
        let fraction: Decimal = watch_fraction
            .trim()
            .parse()
            .map_err(|_| SettingsError::Fraction(watch_fraction.to_string()))?;
        if fraction < Decimal::ZERO || fraction > Decimal::ONE {
            return Err(SettingsError::Fraction(watch_fraction.to_string()));
        }
        if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
            return Err(SettingsError::Ttl(ttl_secs));
        }
        Ok(Self {
            watch_fraction: fraction.normalize(),
            default_ttl: Duration::seconds(ttl_secs as i64),
        })
    }
}

/// How a reservation was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The estimate fits in what remains of every governing scope.
    Fits,
    /// An unbounded request admitted while something remains: the one
    /// request of its scopes allowed to go over.
    OneOver,
    /// No hard budget or prepaid account governs it: nothing reserved.
    NotGoverned,
    /// Admitted by the gateway from memory (its scope was not watched yet)
    /// and reported on the filter's next tick: held as a reservation of
    /// its bound until its record lands, never refused.
    Noticed,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Fits => "fits",
            Rule::OneOver => "one_over",
            Rule::NotGoverned => "not_governed",
            Rule::Noticed => "noticed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "one_over" => Rule::OneOver,
            "noticed" => Rule::Noticed,
            _ => Rule::Fits,
        }
    }
}

/// Where one governing scope stands for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeState {
    /// limit − spent − reserved (may be negative).
    pub remaining: Decimal,
    /// Another unbounded reservation is active in the scope.
    pub unbounded_active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit(Rule),
    /// Refused by the scope at this index (the first that refuses).
    Refuse(usize),
}

/// The admission rule. `estimate` is None when the request could not be
/// priced; such a request is unbounded whatever `bounded` says.
///
/// - bounded: admitted iff `estimate <= remaining` in every scope (`fits`);
/// - unbounded: admitted iff `remaining > 0` in every scope and no other
///   unbounded reservation is active in any of them; `fits` when its
///   estimate also fits everywhere, else `one_over`.
pub fn decide(scopes: &[ScopeState], estimate: Option<Decimal>, bounded: bool) -> Decision {
    if scopes.is_empty() {
        return Decision::Admit(Rule::NotGoverned);
    }
    match estimate.filter(|_| bounded) {
        Some(e) => match scopes.iter().position(|s| e > s.remaining) {
            Some(i) => Decision::Refuse(i),
            None => Decision::Admit(Rule::Fits),
        },
        None => {
            if let Some(i) = scopes
                .iter()
                .position(|s| s.remaining <= Decimal::ZERO || s.unbounded_active)
            {
                return Decision::Refuse(i);
            }
            let fits = estimate.is_some_and(|e| scopes.iter().all(|s| e <= s.remaining));
            Decision::Admit(if fits { Rule::Fits } else { Rule::OneOver })
        }
    }
}

/// The watch rule for a scope that is not blocked: remaining = limit −
/// spent − reserved is at most `limit × fraction`, or at most
/// [`RECENT_HORIZON_WINDOWS`] × (what it spent in the last [`RECENT_SECS`]
/// + what it has in flight): at that pace it could run out within a
///   minute, far longer than the gateways take to learn of the watch.
pub fn watched(
    limit: Decimal,
    spent: Decimal,
    reserved: Decimal,
    recent: Decimal,
    fraction: Decimal,
) -> bool {
    let remaining = limit - spent - reserved;
    remaining <= limit * fraction
        || remaining <= Decimal::from(RECENT_HORIZON_WINDOWS) * (recent + reserved)
}

/// What a scope is.
#[derive(Debug, Clone, PartialEq)]
pub enum ScopeKind {
    /// A hard budget, with the end of its current period.
    Budget {
        id: i64,
        resets_at: Option<DateTime<Utc>>,
    },
    /// A prepaid account: the limit is the total of its credits.
    Account,
}

/// A hard budget without a model, or a prepaid account: something that
/// stops a tenant (or one key of it) at a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub kind: ScopeKind,
    pub limit: Decimal,
    pub currency: String,
    /// Spend counts from here (period start, or the account's opening).
    pub start: DateTime<Utc>,
}

impl Scope {
    pub fn of_budget(b: &Budget, now: DateTime<Utc>, zone: Zone) -> Self {
        let w = budgets::budget_window(&b.period, b.time_zone.as_deref(), now, zone);
        Self {
            tenant_id: b.tenant_id.clone(),
            api_key_id: b.api_key_id.clone(),
            kind: ScopeKind::Budget {
                id: b.id,
                resets_at: w.end,
            },
            limit: b.limit.normalize(),
            currency: b.currency.clone(),
            start: w.start,
        }
    }

    pub fn of_account(a: &Account) -> Self {
        Self {
            tenant_id: a.tenant_id.clone(),
            api_key_id: None,
            kind: ScopeKind::Account,
            limit: a.credits.normalize(),
            currency: a.currency.clone(),
            start: a.opened_at,
        }
    }

    /// Its spend from `start` on (at most `now − RECENT_SECS` back with
    /// `recent`).
    fn spend(&self, recent: Option<DateTime<Utc>>) -> SpendScope {
        SpendScope {
            tenant_id: self.tenant_id.clone(),
            api_key_id: self.api_key_id.clone(),
            model: None,
            currency: self.currency.clone(),
            start: recent.map_or(self.start, |r| r.max(self.start)),
        }
    }

    /// spent + reserved reached the limit.
    fn blocks(&self, u: &ScopeUsage) -> bool {
        u.spent + u.reserved >= self.limit
    }

    /// Its deny-list entry, with `counted` (spent + reserved) as `spent`.
    pub fn entry(&self, counted: Decimal) -> Value {
        let mut e = match &self.kind {
            ScopeKind::Budget { id, resets_at } => json!({
                "tenant_id": self.tenant_id,
                "reason": "budget_exceeded",
                "budget_id": id,
                "limit": self.limit.to_string(),
                "spent": counted.normalize().to_string(),
                "currency": self.currency,
                "resets_at": resets_at,
                "resets_at_ms": resets_at.map(|t| t.timestamp_millis()),
            }),
            ScopeKind::Account => json!({
                "tenant_id": self.tenant_id,
                "reason": "balance_exhausted",
                "limit": self.limit.to_string(),
                "spent": counted.normalize().to_string(),
                "currency": self.currency,
                "resets_at": null,
                "resets_at_ms": null,
            }),
        };
        if let Some(key) = &self.api_key_id {
            e["api_key_id"] = json!(key);
        }
        e
    }
}

/// The deny list's `entries` (blocked scopes), `watch` (scopes not
/// blocked but near their limit, whose requests take the reservation path)
/// and `governed` (the other scopes of hard budgets and prepaid accounts,
/// whose requests the gateway admits from memory and reports on its next
/// tick, see [`notice`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DenyList {
    pub entries: Vec<Value>,
    pub watch: Vec<Value>,
    pub governed: Vec<Value>,
}

/// Computes the deny list at `now` in three queries whatever the traffic:
/// the hard budgets, the prepaid accounts, then one statement with every
/// scope's spend, reservations and spend of the last minute.
pub async fn deny_list(state: &AppState, now: DateTime<Utc>) -> Result<DenyList, sqlx::Error> {
    let mut scopes: Vec<Scope> = db::hard_budgets(&state.pool)
        .await?
        .iter()
        .filter(|b| b.model.is_none())
        .map(|b| Scope::of_budget(b, now, state.budget_zone))
        .collect();
    scopes.extend(
        db::accounts(&state.pool, None)
            .await?
            .iter()
            .map(Scope::of_account),
    );
    let recent_start = now - Duration::seconds(RECENT_SECS);
    let spend: Vec<SpendScope> = scopes
        .iter()
        .map(|s| s.spend(None))
        .chain(scopes.iter().map(|s| s.spend(Some(recent_start))))
        .collect();
    let usage = db::scope_usage(&state.pool, &spend, now).await?;
    let (current, recent) = usage.split_at(scopes.len().min(usage.len()));
    let mut out = DenyList::default();
    let mut watch = BTreeSet::new();
    let mut governed = BTreeSet::new();
    for ((scope, u), r) in scopes.iter().zip(current).zip(recent) {
        let id = (scope.tenant_id.as_str(), scope.api_key_id.as_deref());
        if scope.blocks(u) {
            out.entries.push(scope.entry(u.spent + u.reserved));
        } else if watched(
            scope.limit,
            u.spent,
            u.reserved,
            r.spent,
            state.reservations.watch_fraction,
        ) {
            watch.insert(id);
        } else {
            governed.insert(id);
        }
    }
    let listed = |(tenant, key): (&str, Option<&str>)| match key {
        Some(key) => json!({"tenant_id": tenant, "api_key_id": key}),
        None => json!({"tenant_id": tenant}),
    };
    // A scope both watched (one budget) and governed (another) is watched.
    out.governed = governed.difference(&watch).copied().map(listed).collect();
    out.watch = watch.into_iter().map(listed).collect();
    Ok(out)
}

/// A reservation call, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub tenant_id: String,
    pub request_id: String,
    pub api_key_id: Option<String>,
    pub provider: String,
    pub model: Option<String>,
    pub max_input_tokens: u64,
    /// None: the request set no output limit (unbounded).
    pub max_output_tokens: Option<u64>,
    /// None: the collector default; at most [`MAX_TTL_SECS`].
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Admitted {
        reserved: Decimal,
        currency: String,
        expires_at: DateTime<Utc>,
        rule: Rule,
    },
    Refused {
        estimate: Decimal,
        /// The refusing scope's deny-list entry (spent = spent + reserved).
        entry: Value,
    },
}

fn admitted(r: &Reservation) -> Outcome {
    Outcome::Admitted {
        reserved: r.amount.normalize(),
        currency: r.currency.clone(),
        expires_at: r.expires_at,
        rule: Rule::parse(&r.rule),
    }
}

/// The price of a request's bound: its input bound, and its output limit
/// or [`DEFAULT_OUTPUT_TOKENS`]; None when it cannot be priced.
fn priced_bound(book: &PriceBook, req: &Request, now: DateTime<Utc>) -> Option<db::AppliedPrice> {
    let usage = UsageCounts {
        input_tokens: req.max_input_tokens,
        output_tokens: req.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS),
        ..UsageCounts::default()
    };
    book.applied(
        &req.tenant_id,
        &req.provider,
        req.model.as_deref(),
        now,
        &usage,
        200,
    )
}

/// A request admitted without a reservation, as the filter reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub request: Request,
    pub started_at: DateTime<Utc>,
}

/// Holds the bound of each noticed request as a `noticed` reservation
/// until its record lands or it expires, so the deny and watch decisions
/// count it while it is in flight. Nothing is decided: the requests are
/// already on their way. Unpriceable ones are held at zero (unbounded, so
/// they still stop a second unbounded request from going over). Returns
/// how many were stored (not already reserved, record not landed).
pub async fn notice(state: &AppState, notices: &[Notice]) -> Result<u64, sqlx::Error> {
    let now = state.clock.now();
    let rows: Vec<db::Noticed> = {
        let book = state.price_book_now().await?;
        notices
            .iter()
            .map(|n| {
                let req = &n.request;
                let ttl = req
                    .ttl
                    .unwrap_or(state.reservations.default_ttl)
                    .min(Duration::seconds(MAX_TTL_SECS as i64));
                let price = priced_bound(&book, req, now);
                db::Noticed {
                    reservation: Reservation {
                        tenant_id: req.tenant_id.clone(),
                        request_id: req.request_id.clone(),
                        api_key_id: req.api_key_id.clone(),
                        amount: price
                            .as_ref()
                            .map_or(Decimal::ZERO, |p| p.total.normalize()),
                        currency: price
                            .as_ref()
                            .map_or_else(|| "USD".to_string(), |p| p.currency.clone()),
                        bounded: req.max_output_tokens.is_some() && price.is_some(),
                        rule: Rule::Noticed.as_str().to_string(),
                        created_at: now,
                        expires_at: now + ttl,
                    },
                    occurred_at: n.started_at,
                }
            })
            .collect()
    };
    let stored = db::insert_noticed(&state.pool, &rows).await?;
    Metrics::add(&state.metrics.reservations_noticed, stored);
    Ok(stored)
}

/// Reloads of the price book one reservation waits for at most when
/// pricing keeps changing meanwhile (then it prices with the latest loaded).
const MAX_RELOADS: u32 = 3;

/// Decides and, if admitted and governed, stores the reservation of
/// `req`, in one transaction under the tenant's advisory lock. A repeated
/// call for the same (tenant, request id) answers the stored reservation.
#[tracing::instrument(skip_all, fields(tenant_id = %req.tenant_id, request_id = %req.request_id))]
pub async fn reserve(state: &AppState, req: &Request) -> Result<Outcome, sqlx::Error> {
    let now = state.clock.now();
    let ttl = req
        .ttl
        .unwrap_or(state.reservations.default_ttl)
        .min(Duration::seconds(MAX_TTL_SECS as i64));
    let expires_at = now + ttl;
    let m = &state.metrics;

    // Priced after the tenant's lock is taken, with a book holding every
    // pricing change committed before the generation is read there (on any
    // replica): behind, it lets go, reloads and starts again.
    let mut reloads = 0;
    let (mut tx, price) = loop {
        let mut tx = state.pool.begin().await?;
        db::lock_tenant_reservations(&mut tx, &req.tenant_id).await?;
        let generation = db::pricing_generation(&mut *tx).await?;
        if state.price_book().generation() >= Some(generation) || reloads == MAX_RELOADS {
            break (tx, priced_bound(&state.price_book(), req, now));
        }
        tx.rollback().await?;
        state
            .reload_prices_to(generation, crate::changes::Cause::Fence)
            .await?;
        reloads += 1;
    };
    let estimate = price.as_ref().map(|p| p.total.normalize());
    let bounded = req.max_output_tokens.is_some() && estimate.is_some();
    if let Some(existing) = db::get_reservation(&mut *tx, &req.tenant_id, &req.request_id).await? {
        if existing.expires_at > now {
            tx.commit().await?;
            return Ok(admitted(&existing));
        }
        db::delete_reservation(&mut *tx, &req.tenant_id, &req.request_id).await?;
        Metrics::add(&m.reservations_expired, 1);
    }
    let mut scopes: Vec<Scope> =
        db::governing_budgets(&mut *tx, &req.tenant_id, req.api_key_id.as_deref())
            .await?
            .iter()
            .map(|b| Scope::of_budget(b, now, state.budget_zone))
            .collect();
    if let Some(a) = db::accounts(&mut *tx, Some(&req.tenant_id)).await?.pop() {
        scopes.push(Scope::of_account(&a));
    }
    // Usage priced in another currency never counts against a scope.
    if let Some(p) = &price {
        scopes.retain(|s| s.currency == p.currency);
    }
    let currency = price
        .as_ref()
        .map(|p| p.currency.clone())
        .or_else(|| scopes.first().map(|s| s.currency.clone()))
        .unwrap_or_else(|| "USD".to_string());
    let spend: Vec<SpendScope> = scopes.iter().map(|s| s.spend(None)).collect();
    let usage = db::scope_usage(&mut *tx, &spend, now).await?;
    let states: Vec<ScopeState> = scopes
        .iter()
        .zip(&usage)
        .map(|(s, u)| ScopeState {
            remaining: s.limit - u.spent - u.reserved,
            unbounded_active: u.unbounded > 0,
        })
        .collect();
    match decide(&states, estimate, bounded) {
        Decision::Refuse(i) => {
            tx.rollback().await?;
            Metrics::add(&m.reservations_refused, 1);
            let u = usage[i];
            tracing::info!(estimate = ?estimate, "reservation refused");
            Ok(Outcome::Refused {
                estimate: estimate.unwrap_or_default(),
                entry: scopes[i].entry(u.spent + u.reserved),
            })
        }
        Decision::Admit(Rule::NotGoverned) => {
            tx.commit().await?;
            Metrics::add(&m.reservations_not_governed, 1);
            Ok(Outcome::Admitted {
                reserved: Decimal::ZERO,
                currency,
                expires_at,
                rule: Rule::NotGoverned,
            })
        }
        Decision::Admit(rule) => {
            let r = Reservation {
                tenant_id: req.tenant_id.clone(),
                request_id: req.request_id.clone(),
                api_key_id: req.api_key_id.clone(),
                amount: estimate.unwrap_or_default(),
                currency,
                bounded,
                rule: rule.as_str().to_string(),
                created_at: now,
                expires_at,
            };
            db::insert_reservation(&mut *tx, &r).await?;
            tx.commit().await?;
            Metrics::add(
                match rule {
                    Rule::OneOver => &m.reservations_one_over,
                    _ => &m.reservations_fits,
                },
                1,
            );
            Ok(admitted(&r))
        }
    }
}

/// Deletes the reservations expired at the clock's now; returns how many.
pub async fn sweep(state: &AppState) -> Result<u64, sqlx::Error> {
    let now = state.clock.now();
    let mut total = 0;
    loop {
        let n = db::sweep_expired_reservations(&state.pool, now, SWEEP_BATCH).await?;
        total += n;
        if n < SWEEP_BATCH as u64 {
            break;
        }
    }
    Metrics::add(&state.metrics.reservations_expired, total);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn st(remaining: &str, unbounded_active: bool) -> ScopeState {
        ScopeState {
            remaining: d(remaining),
            unbounded_active,
        }
    }

    #[test]
    fn nothing_governs_nothing_is_reserved() {
        assert_eq!(
            decide(&[], Some(d("5")), true),
            Decision::Admit(Rule::NotGoverned)
        );
        assert_eq!(decide(&[], None, false), Decision::Admit(Rule::NotGoverned));
    }

    #[test]
    fn a_bounded_request_must_fit_everywhere() {
        let scopes = [st("1", false), st("0.3", true)];
        assert_eq!(
            decide(&scopes, Some(d("0.3")), true),
            Decision::Admit(Rule::Fits),
            "reaching the remainder exactly fits; unbounded ones do not matter"
        );
        assert_eq!(decide(&scopes, Some(d("0.31")), true), Decision::Refuse(1));
        assert_eq!(
            decide(&[st("-0.1", false)], Some(d("0")), true),
            Decision::Refuse(0)
        );
        assert_eq!(
            decide(&[st("0", false)], Some(d("0")), true),
            Decision::Admit(Rule::Fits),
            "a free request fits in nothing"
        );
    }

    #[test]
    fn at_most_one_unbounded_request_goes_over() {
        assert_eq!(
            decide(&[st("0.01", false)], Some(d("0.05")), false),
            Decision::Admit(Rule::OneOver)
        );
        assert_eq!(
            decide(&[st("1", false)], Some(d("0.05")), false),
            Decision::Admit(Rule::Fits)
        );
        // Another unbounded one is active in some scope: refused even if it fits.
        assert_eq!(
            decide(&[st("1", false), st("1", true)], Some(d("0.05")), false),
            Decision::Refuse(1)
        );
        // Nothing left: refused.
        assert_eq!(
            decide(&[st("0", false)], Some(d("0")), false),
            Decision::Refuse(0)
        );
        // Unpriced: unbounded with an unknown estimate, never "fits".
        assert_eq!(
            decide(&[st("1", false)], None, true),
            Decision::Admit(Rule::OneOver)
        );
        assert_eq!(decide(&[st("1", true)], None, true), Decision::Refuse(0));
    }

    #[test]
    fn the_watch_rule() {
        let half = d("0.5");
        // 60 % spent: 0.4 remaining <= 0.5.
        assert!(watched(d("1"), d("0.6"), d("0"), d("0"), half));
        // 10 % spent, all of it in the last minute: 0.9 remaining > 0.5 and > 0.1.
        assert!(!watched(d("1"), d("0.1"), d("0"), d("0.1"), half));
        // Reservations count.
        assert!(watched(d("1"), d("0.1"), d("0.45"), d("0"), half));
        // Spending fast: could run out before the next poll.
        assert!(watched(d("1"), d("0.3"), d("0"), d("0.7"), half));
        // Fraction 0: only the rate rule.
        assert!(!watched(d("1"), d("0.9"), d("0"), d("0"), d("0")));
        // In flight counts six-fold: 0.8 remaining <= 6 × 0.2 ...
        assert!(watched(d("1"), d("0"), d("0.2"), d("0"), half));
        // ... 0.9 > 6 × 0.1 (and > 0.5) is not watched.
        assert!(!watched(d("1"), d("0"), d("0.1"), d("0"), half));
    }

    #[test]
    fn settings_are_checked() {
        let s = Settings::parse("0.5", 600).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(
            Settings::parse(" 0.25 ", 1).unwrap().watch_fraction,
            d("0.25")
        );
        assert!(matches!(
            Settings::parse("1.5", 600),
            Err(SettingsError::Fraction(_))
        ));
        assert!(matches!(
            Settings::parse("half", 600),
            Err(SettingsError::Fraction(_))
        ));
        assert_eq!(Settings::parse("0.5", 0), Err(SettingsError::Ttl(0)));
        assert_eq!(Settings::parse("0.5", 3601), Err(SettingsError::Ttl(3601)));
    }
}
