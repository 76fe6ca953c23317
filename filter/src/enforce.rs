//! Budget enforcement, free of host calls: the deny list fetched from the
//! collector (`GET /v1/deny`), bounded in memory, looked up per request,
//! and the answers given to a blocked client.
//!
//! The list names tenants (and tenant + hashed API key pairs) that are over
//! a hard budget or out of prepaid balance. While the list is fresh it is
//! the truth. When no refresh has succeeded for longer than the TTL, the
//! last known entries are still honoured (until their reset time) and
//! everything else is let through (fail open) or refused with 503 (fail
//! closed), per configuration.
//!
//! The list also names the scopes near their limit (`watch`): requests of
//! those take the reservation path ([`crate::reserve`]); every other
//! request is decided here, from memory. Requests of the other scopes that
//! a hard budget or prepaid balance governs (`governed`) are admitted from
//! memory too, and reported to the collector on the next tick
//! ([`crate::reserve::Notices`]), so it counts them while they are in
//! flight.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::json;

/// Most entries kept from one list; the rest are dropped and counted.
pub const MAX_DENY_ENTRIES: usize = 100_000;
/// Largest list body accepted (about 300 bytes an entry at the cap).
pub const MAX_DENY_BODY_BYTES: usize = 32 << 20;
/// Longest id or money string kept; longer entries are skipped.
const MAX_FIELD_LEN: usize = 256;
/// `retry-after` when the block has no reset time (prepaid balance).
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 60;
/// `retry-after` of a fail-closed refusal.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BudgetExceeded,
    BalanceExhausted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BudgetExceeded => "budget_exceeded",
            Reason::BalanceExhausted => "balance_exhausted",
        }
    }
}

/// Why a tenant or key is blocked, as the collector reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyEntry {
    pub reason: Reason,
    /// Decimal strings, passed through untouched (no floats for money).
    pub limit: String,
    pub spent: String,
    pub currency: String,
    pub resets_at: Option<String>,
    pub resets_at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawEntry {
    tenant_id: String,
    #[serde(default)]
    api_key_id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    spent: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    resets_at: Option<String>,
    #[serde(default)]
    resets_at_ms: Option<u64>,
}

/// Entries of a list, keeping at most [`MAX_DENY_ENTRIES`] while parsing.
struct Capped {
    entries: Vec<RawEntry>,
    dropped: usize,
}

impl<'de> Deserialize<'de> for Capped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Capped;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of deny entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Capped, A::Error> {
                let mut entries = Vec::new();
                let mut dropped = 0;
                loop {
                    if entries.len() < MAX_DENY_ENTRIES {
                        match seq.next_element::<RawEntry>()? {
                            Some(e) => entries.push(e),
                            None => break,
                        }
                    } else {
                        match seq.next_element::<IgnoredAny>()? {
                            Some(_) => dropped += 1,
                            None => break,
                        }
                    }
                }
                Ok(Capped { entries, dropped })
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct RawList {
    entries: Capped,
    /// Scopes near their limit (absent from older collectors).
    #[serde(default)]
    watch: Vec<RawScope>,
    /// Scopes of hard budgets and prepaid accounts not near their limit.
    #[serde(default)]
    governed: Vec<RawScope>,
}

#[derive(Deserialize)]
struct RawScope {
    tenant_id: String,
    #[serde(default)]
    api_key_id: Option<String>,
}

/// An entry as the collector sends it (deny list or refused reservation),
/// or `None` when it cannot be enforced here (a model scope, ids too long).
fn entry_of(e: RawEntry) -> Option<(String, Option<String>, DenyEntry)> {
    if e.model.is_some()
        || e.tenant_id.is_empty()
        || e.tenant_id.len() > MAX_FIELD_LEN
        || e.api_key_id
            .as_ref()
            .is_some_and(|k| k.len() > MAX_FIELD_LEN)
    {
        return None;
    }
    let entry = DenyEntry {
        reason: match e.reason.as_deref() {
            Some("balance_exhausted") => Reason::BalanceExhausted,
            _ => Reason::BudgetExceeded,
        },
        limit: money(e.limit),
        spent: money(e.spent),
        currency: short(e.currency).unwrap_or_default(),
        resets_at: short(e.resets_at),
        resets_at_ms: e.resets_at_ms,
    };
    Some((e.tenant_id, e.api_key_id, entry))
}

/// One entry in the deny list's shape (a refused reservation's `entry`).
pub fn parse_entry(v: serde_json::Value) -> Option<DenyEntry> {
    let raw: RawEntry = serde_json::from_value(v).ok()?;
    entry_of(raw).map(|(_, _, e)| e)
}

/// The current deny set: by tenant, and by tenant + hashed API key.
/// Tenants (every key) and tenant + key pairs.
#[derive(Debug, Default, Clone, PartialEq)]
struct ScopeSet {
    tenants: HashSet<String>,
    keys: HashSet<String>,
}

impl ScopeSet {
    /// Adds a scope of the list; false when its ids are unusable.
    fn insert(&mut self, w: RawScope) -> bool {
        if w.tenant_id.is_empty()
            || w.tenant_id.len() > MAX_FIELD_LEN
            || w.api_key_id
                .as_ref()
                .is_some_and(|k| k.len() > MAX_FIELD_LEN)
        {
            return false;
        }
        match &w.api_key_id {
            Some(key) => self.keys.insert(key_of(&w.tenant_id, key)),
            None => self.tenants.insert(w.tenant_id),
        };
        true
    }

    fn contains(&self, tenant: &str, api_key: Option<&str>) -> bool {
        if self.tenants.is_empty() && self.keys.is_empty() {
            return false;
        }
        self.tenants.contains(tenant)
            || api_key
                .is_some_and(|k| !self.keys.is_empty() && self.keys.contains(&key_of(tenant, k)))
    }

    fn len(&self) -> usize {
        self.tenants.len() + self.keys.len()
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct DenySet {
    tenants: HashMap<String, DenyEntry>,
    keys: HashMap<String, DenyEntry>,
    /// Scopes near their limit: tenants (every key) and tenant + key pairs.
    watched: ScopeSet,
    /// Scopes far from their limit whose admitted requests are reported.
    governed: ScopeSet,
    /// Entries not kept: over the cap, malformed, or scoped to a model
    /// (the gateway decides before it knows the model).
    pub skipped: usize,
}

fn key_of(tenant: &str, api_key: &str) -> String {
    format!("{tenant}\n{api_key}")
}

fn short(s: Option<String>) -> Option<String> {
    s.filter(|v| v.len() <= MAX_FIELD_LEN)
}

fn money(s: Option<String>) -> String {
    short(s)
        .filter(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        })
        .unwrap_or_default()
}

/// Of two entries for the same scope, keep the one that blocks longest
/// (no reset time = until an operator acts).
fn longer(a: &DenyEntry, b: &DenyEntry) -> bool {
    match (a.resets_at_ms, b.resets_at_ms) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(x), Some(y)) => x >= y,
    }
}

impl DenySet {
    /// Parses a `GET /v1/deny` body.
    pub fn parse(body: &[u8]) -> Result<DenySet, String> {
        if body.len() > MAX_DENY_BODY_BYTES {
            return Err(format!(
                "deny list of {} bytes is over the {MAX_DENY_BODY_BYTES} byte limit",
                body.len()
            ));
        }
        let raw: RawList =
            serde_json::from_slice(body).map_err(|e| format!("deny list is not valid: {e}"))?;
        let mut set = DenySet {
            skipped: raw.entries.dropped,
            ..DenySet::default()
        };
        for e in raw.entries.entries {
            let Some((tenant_id, api_key_id, entry)) = entry_of(e) else {
                set.skipped += 1;
                continue;
            };
            let map = match &api_key_id {
                Some(_) => &mut set.keys,
                None => &mut set.tenants,
            };
            let k = match &api_key_id {
                Some(key) => key_of(&tenant_id, key),
                None => tenant_id,
            };
            match map.get(&k) {
                Some(old) if longer(old, &entry) => {}
                _ => {
                    map.insert(k, entry);
                }
            }
        }
        for w in raw.watch.into_iter().take(MAX_DENY_ENTRIES) {
            if !set.watched.insert(w) {
                set.skipped += 1;
            }
        }
        for g in raw.governed.into_iter().take(MAX_DENY_ENTRIES) {
            if !set.governed.insert(g) {
                set.skipped += 1;
            }
        }
        Ok(set)
    }

    /// Whether admitted requests of this tenant (or its key) are reported.
    pub fn governed(&self, tenant: &str, api_key: Option<&str>) -> bool {
        self.governed.contains(tenant, api_key)
    }

    /// Governed scopes far from their limit.
    pub fn governed_len(&self) -> usize {
        self.governed.len()
    }

    /// Whether requests of this tenant (or its key) must reserve first.
    pub fn watched(&self, tenant: &str, api_key: Option<&str>) -> bool {
        self.watched.contains(tenant, api_key)
    }

    /// Scopes near their limit.
    pub fn watched_len(&self) -> usize {
        self.watched.len()
    }

    pub fn len(&self) -> usize {
        self.tenants.len() + self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry blocking this tenant or its key now; an entry whose reset
    /// time has passed no longer blocks.
    pub fn lookup(&self, tenant: &str, api_key: Option<&str>, now_ms: u64) -> Option<&DenyEntry> {
        let live = |e: &&DenyEntry| e.resets_at_ms.is_none_or(|r| r > now_ms);
        if let Some(e) = self.tenants.get(tenant).filter(live) {
            return Some(e);
        }
        let key = api_key?;
        if self.keys.is_empty() {
            return None;
        }
        self.keys.get(&key_of(tenant, key)).filter(live)
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow,
    /// Near its limit: admit only against a reservation.
    Reserve,
    /// Governed but far from its limit: admit, and report it.
    Notice,
    Deny(&'a DenyEntry),
    /// The list is stale and the configuration fails closed.
    Unavailable,
}

/// The deny set and how fresh it is.
#[derive(Debug, Default)]
pub struct DenyState {
    set: DenySet,
    last_success_ms: Option<u64>,
    since_ms: Option<u64>,
}

impl DenyState {
    /// Enforcement starts: the TTL runs from now until a first list arrives.
    pub fn start(&mut self, now_ms: u64) {
        if self.since_ms.is_none() {
            self.since_ms = Some(now_ms);
        }
    }

    pub fn update(&mut self, set: DenySet, now_ms: u64) {
        self.set = set;
        self.last_success_ms = Some(now_ms);
    }

    /// Takes a list published by the poller; its freshness comes from
    /// [`DenyState::fetched`].
    pub fn adopt(&mut self, set: DenySet) {
        self.set = set;
    }

    /// The shared list was fetched at `fetched_at_ms` (by whichever worker
    /// polls); staleness runs from there.
    pub fn fetched(&mut self, fetched_at_ms: u64) {
        self.last_success_ms = Some(self.last_success_ms.unwrap_or(0).max(fetched_at_ms));
    }

    /// When the list in use was last fetched.
    pub fn fetched_at(&self) -> Option<u64> {
        self.last_success_ms
    }

    /// Whether `set` is the list in use (a poll that changed nothing).
    pub fn same_list(&self, set: &DenySet) -> bool {
        self.set == *set
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// No list (or no list since enforcement started) within `ttl_ms`.
    pub fn is_stale(&self, now_ms: u64, ttl_ms: u64) -> bool {
        match self.last_success_ms.or(self.since_ms) {
            Some(t) => now_ms.saturating_sub(t) > ttl_ms,
            None => false,
        }
    }

    /// The decision for a request, and whether it was made on a stale list.
    pub fn decide(
        &self,
        tenant: &str,
        api_key: Option<&str>,
        now_ms: u64,
        ttl_ms: u64,
        fail_open: bool,
    ) -> (Decision<'_>, bool) {
        let stale = self.is_stale(now_ms, ttl_ms);
        if let Some(entry) = self.set.lookup(tenant, api_key, now_ms) {
            return (Decision::Deny(entry), stale);
        }
        if stale && !fail_open {
            return (Decision::Unavailable, true);
        }
        if self.set.watched(tenant, api_key) {
            return (Decision::Reserve, stale);
        }
        if self.set.governed(tenant, api_key) {
            return (Decision::Notice, stale);
        }
        (Decision::Allow, stale)
    }
}

/// Seconds until the block lifts (rounded up, at least 1), or the default
/// when it has no reset time.
pub fn retry_after_secs(entry: &DenyEntry, now_ms: u64) -> u64 {
    match entry.resets_at_ms {
        Some(r) => r.saturating_sub(now_ms).div_ceil(1000).max(1),
        None => DEFAULT_RETRY_AFTER_SECS,
    }
}

/// The 429 body, in the OpenAI error shape.
pub fn blocked_body(entry: &DenyEntry) -> Vec<u8> {
    let message = match entry.reason {
        Reason::BudgetExceeded => format!(
            "Budget exceeded: {} {} spent of a {} {} limit{}.",
            entry.spent,
            entry.currency,
            entry.limit,
            entry.currency,
            entry
                .resets_at
                .as_deref()
                .map(|r| format!("; it resets at {r}"))
                .unwrap_or_default()
        ),
        Reason::BalanceExhausted => format!(
            "Prepaid balance exhausted: {} {} spent of {} {} in credits; add credits to continue.",
            entry.spent, entry.currency, entry.limit, entry.currency
        ),
    };
    let body = json!({"error": {
        "message": message,
        "type": "budget_exceeded",
        "code": "budget_exceeded",
        "param": null,
        "reason": entry.reason.as_str(),
        "limit": entry.limit,
        "spent": entry.spent,
        "currency": entry.currency,
        "resets_at": entry.resets_at,
    }});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The 503 body when the list is stale and enforcement fails closed.
pub fn unavailable_body() -> Vec<u8> {
    let body = json!({"error": {
        "message": "Spending limits cannot be verified right now; retry shortly.",
        "type": "billing_unavailable",
        "code": "budget_check_unavailable",
        "param": null,
    }});
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const LIST: &str = r#"{"generated_at": "2025-11-26T10:00:00Z", "generated_at_ms": 1764151200000,
        "entries": [
        {"tenant_id": "capped", "reason": "budget_exceeded", "budget_id": 1, "limit": "0.001",
         "spent": "0.001035", "currency": "USD", "resets_at": "2025-11-27T00:00:00Z",
         "resets_at_ms": 1764201600000},
        {"tenant_id": "acme", "api_key_id": "abc123", "reason": "budget_exceeded",
         "limit": "5", "spent": "5.2", "currency": "USD", "resets_at": null, "resets_at_ms": null},
        {"tenant_id": "pre", "reason": "balance_exhausted", "limit": "0.0005",
         "spent": "0.00069", "currency": "USD", "resets_at": null},
        {"tenant_id": "acme", "model": "gpt-4o", "limit": "1", "spent": "2", "currency": "USD"}
    ]}"#;
    const NOW: u64 = 1_764_151_200_000;

    #[test]
    fn watched_scopes_reserve_and_the_rest_is_decided_from_memory() {
        let list = br#"{"entries": [{"tenant_id": "capped", "limit": "1", "spent": "1", "currency": "USD"}],
            "watch": [{"tenant_id": "near"}, {"tenant_id": "acme", "api_key_id": "k1"},
                      {"tenant_id": ""}]}"#;
        let set = DenySet::parse(list).unwrap();
        assert_eq!((set.len(), set.watched_len(), set.skipped), (1, 2, 1));
        assert!(set.watched("near", None) && set.watched("near", Some("any")));
        assert!(set.watched("acme", Some("k1")));
        assert!(!set.watched("acme", Some("k2")) && !set.watched("acme", None));
        let mut state = DenyState::default();
        state.update(set, NOW);
        let decide = |t, k| state.decide(t, k, NOW, 30_000, true).0;
        assert_eq!(decide("acme", Some("k1")), Decision::Reserve);
        assert_eq!(decide("acme", Some("k2")), Decision::Allow);
        assert!(matches!(decide("capped", None), Decision::Deny(_)));
        // Governed scopes far from their limit are admitted and reported;
        // watched and blocked ones take precedence.
        let list = br#"{"entries": [{"tenant_id": "capped", "limit": "1", "spent": "1", "currency": "USD"}],
            "watch": [{"tenant_id": "acme", "api_key_id": "k1"}],
            "governed": [{"tenant_id": "acme"}, {"tenant_id": "capped"},
                         {"tenant_id": "other", "api_key_id": "k9"}, {"tenant_id": ""}]}"#;
        let set = DenySet::parse(list).unwrap();
        assert_eq!((set.governed_len(), set.skipped), (3, 1));
        let mut state = DenyState::default();
        state.update(set, NOW);
        let decide = |t, k| state.decide(t, k, NOW, 30_000, true).0;
        assert_eq!(decide("acme", Some("k1")), Decision::Reserve);
        assert_eq!(decide("acme", Some("k2")), Decision::Notice);
        assert_eq!(decide("acme", None), Decision::Notice);
        assert!(matches!(decide("capped", None), Decision::Deny(_)));
        assert_eq!(decide("other", Some("k9")), Decision::Notice);
        assert_eq!(decide("other", Some("k8")), Decision::Allow);
        assert_eq!(decide("other", None), Decision::Allow);
        // A list without `watch` (an older collector) reserves nothing.
        assert_eq!(DenySet::parse(LIST.as_bytes()).unwrap().watched_len(), 0);
        // A refused reservation's entry reads like a list entry.
        let e = parse_entry(serde_json::json!({"tenant_id": "acme", "api_key_id": "k1",
            "reason": "budget_exceeded", "limit": "1.00", "spent": "0.98", "currency": "USD",
            "resets_at": null, "resets_at_ms": null}))
        .unwrap();
        assert_eq!((e.limit.as_str(), e.spent.as_str()), ("1.00", "0.98"));
        assert_eq!(parse_entry(serde_json::json!({"reason": "x"})), None);
    }

    #[test]
    fn parses_and_looks_up_by_tenant_and_by_key() {
        let set = DenySet::parse(LIST.as_bytes()).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(
            set.skipped, 1,
            "the model-scoped entry is not enforced here"
        );
        let e = set.lookup("capped", None, NOW).unwrap();
        assert_eq!(e.reason, Reason::BudgetExceeded);
        assert_eq!(e.spent, "0.001035");
        // Any key of a blocked tenant is blocked.
        assert!(set.lookup("capped", Some("whatever"), NOW).is_some());
        // A key budget blocks that key only.
        assert!(set.lookup("acme", Some("abc123"), NOW).is_some());
        assert!(set.lookup("acme", Some("other"), NOW).is_none());
        assert!(set.lookup("acme", None, NOW).is_none());
        // The same key id under another tenant is another key.
        assert!(set.lookup("globex", Some("abc123"), NOW).is_none());
        assert_eq!(
            set.lookup("pre", None, NOW).unwrap().reason,
            Reason::BalanceExhausted
        );
    }

    #[test]
    fn an_entry_stops_blocking_at_its_reset_time() {
        let set = DenySet::parse(LIST.as_bytes()).unwrap();
        assert!(set.lookup("capped", None, 1_764_201_599_999).is_some());
        assert!(set.lookup("capped", None, 1_764_201_600_000).is_none());
        // No reset time: blocks until the collector says otherwise.
        assert!(set.lookup("pre", None, u64::MAX).is_some());
    }

    #[test]
    fn the_longest_block_wins_for_one_scope() {
        let list = r#"{"entries": [
            {"tenant_id": "t", "limit": "1", "spent": "1", "currency": "USD", "resets_at_ms": 10},
            {"tenant_id": "t", "reason": "balance_exhausted", "limit": "1", "spent": "2", "currency": "USD"},
            {"tenant_id": "t", "limit": "1", "spent": "1", "currency": "USD", "resets_at_ms": 20}
        ]}"#;
        let set = DenySet::parse(list.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.lookup("t", None, 0).unwrap().reason,
            Reason::BalanceExhausted
        );
    }

    #[test]
    fn bad_lists_are_refused_and_odd_entries_sanitized() {
        assert!(DenySet::parse(b"not json").is_err());
        assert!(DenySet::parse(b"{}").is_err());
        assert!(DenySet::parse(br#"{"entries": {}}"#).is_err());
        let list = format!(
            r#"{{"entries": [{{"tenant_id": ""}}, {{"tenant_id": "{}"}},
                {{"tenant_id": "x", "limit": "1e9; drop", "spent": "0.5", "currency": "USD"}}]}}"#,
            "t".repeat(300)
        );
        let set = DenySet::parse(list.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped, 2);
        assert_eq!(set.lookup("x", None, 0).unwrap().limit, "");
    }

    #[test]
    fn the_set_is_capped() {
        let n = MAX_DENY_ENTRIES + 5;
        let mut body = String::from(r#"{"entries":["#);
        for i in 0..n {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"{{"tenant_id":"t{i}"}}"#));
        }
        body.push_str("]}");
        let set = DenySet::parse(body.as_bytes()).unwrap();
        assert_eq!(set.len(), MAX_DENY_ENTRIES);
        assert_eq!(set.skipped, 5);
        assert!(set.lookup("t0", None, 0).is_some());
        assert!(set.lookup(&format!("t{}", n - 1), None, 0).is_none());
    }

    #[test]
    fn a_stale_list_fails_open_or_closed_but_keeps_known_blocks() {
        let mut state = DenyState::default();
        state.start(1_000);
        // Before the first list, within the TTL: allowed, not stale.
        assert_eq!(
            state.decide("capped", None, 2_000, 30_000, false),
            (Decision::Allow, false)
        );
        // Never reached the collector for longer than the TTL.
        assert_eq!(
            state.decide("capped", None, 31_001, 30_000, false),
            (Decision::Unavailable, true)
        );
        assert_eq!(
            state.decide("capped", None, 31_001, 30_000, true),
            (Decision::Allow, true)
        );
        state.update(DenySet::parse(LIST.as_bytes()).unwrap(), NOW);
        let (d, stale) = state.decide("capped", None, NOW + 500, 30_000, false);
        assert!(matches!(d, Decision::Deny(e) if e.spent == "0.001035"));
        assert!(!stale);
        assert_eq!(
            state.decide("free", None, NOW + 500, 30_000, false),
            (Decision::Allow, false)
        );
        // Stale: known blocks hold either way; others depend on the setting.
        let later = NOW + 30_001;
        assert!(matches!(
            state.decide("capped", None, later, 30_000, true),
            (Decision::Deny(_), true)
        ));
        assert_eq!(
            state.decide("free", None, later, 30_000, true),
            (Decision::Allow, true)
        );
        assert_eq!(
            state.decide("free", None, later, 30_000, false),
            (Decision::Unavailable, true)
        );
    }

    #[test]
    fn a_shared_list_is_fresh_from_its_fetch_time_not_from_when_it_was_taken() {
        let mut state = DenyState::default();
        state.start(NOW);
        let set = DenySet::parse(LIST.as_bytes()).unwrap();
        assert!(!state.same_list(&set));
        state.adopt(set.clone());
        assert!(state.same_list(&set));
        // Adopted 20 s after the poller fetched it: stale 10 s later.
        state.fetched(NOW - 20_000);
        assert_eq!(state.fetched_at(), Some(NOW - 20_000));
        assert!(!state.is_stale(NOW + 10_000, 30_000));
        assert!(state.is_stale(NOW + 10_001, 30_000));
        // Fetch times never go backwards (two pollers racing at a takeover).
        state.fetched(NOW);
        state.fetched(NOW - 5_000);
        assert_eq!(state.fetched_at(), Some(NOW));
        assert!(matches!(
            state.decide("capped", None, NOW + 1, 30_000, false),
            (Decision::Deny(_), false)
        ));
    }

    #[test]
    fn the_429_body_has_the_openai_error_shape() {
        let set = DenySet::parse(LIST.as_bytes()).unwrap();
        let e = set.lookup("capped", None, NOW).unwrap();
        let body: Value = serde_json::from_slice(&blocked_body(e)).unwrap();
        let err = &body["error"];
        assert_eq!(err["type"], "budget_exceeded");
        assert_eq!(err["code"], "budget_exceeded");
        assert_eq!(err["reason"], "budget_exceeded");
        assert_eq!(err["limit"], "0.001");
        assert_eq!(err["spent"], "0.001035");
        assert_eq!(err["currency"], "USD");
        assert_eq!(err["resets_at"], "2025-11-27T00:00:00Z");
        assert_eq!(
            err["message"],
            "Budget exceeded: 0.001035 USD spent of a 0.001 USD limit; it resets at 2025-11-27T00:00:00Z."
        );
        // 14 h until midnight UTC.
        assert_eq!(retry_after_secs(e, NOW), 50_400);
        assert_eq!(retry_after_secs(e, 1_764_201_599_001), 1);
        let p = set.lookup("pre", None, NOW).unwrap();
        let body: Value = serde_json::from_slice(&blocked_body(p)).unwrap();
        assert_eq!(body["error"]["reason"], "balance_exhausted");
        assert_eq!(body["error"]["resets_at"], Value::Null);
        assert_eq!(retry_after_secs(p, NOW), DEFAULT_RETRY_AFTER_SECS);
        let body: Value = serde_json::from_slice(&unavailable_body()).unwrap();
        assert_eq!(body["error"]["type"], "billing_unavailable");
    }
}
