//! One deny-list poller for all Envoy workers, free of host calls.
//!
//! Worker VMs with the same `vm_id` share proxy-wasm "shared data" (a
//! process-wide key/value store with compare-and-swap). Per collector
//! destination, three keys:
//! - lease `<owner> <expires_ms>`: the one root context that polls the
//!   collector. The holder renews it on every tick; if it stops (a stalled
//!   worker, a plugin torn down) another takes over once it expires.
//! - list: the raw `GET /v1/deny` body, rewritten only when it changed.
//! - meta `<version> <fetched_at_ms>`: rewritten after every successful poll
//!   (after the list, so a new version always finds its list).
//!
//! Every worker reads meta on its tick (a few bytes) and copies and parses
//! the list only when the version moved; per-request lookups stay local.
//! Staleness runs from the shared `fetched_at_ms`, so a worker that never
//! polls itself still fails open/closed on time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Shared-data keys of one collector destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub lease: String,
    pub meta: String,
    pub list: String,
}

impl Keys {
    pub fn new(destination: &str) -> Keys {
        let k = |what: &str| format!("llm_billing.deny.{what}|{destination}");
        Keys {
            lease: k("lease"),
            meta: k("meta"),
            list: k("list"),
        }
    }
}

/// A random, non-zero id for one root context (`RandomState` draws its
/// keys from WASI `random_get`, so every VM gets different ones).
pub fn new_owner_id(salt: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish().max(1)
}

/// How long a lease lasts without renewal: a few refresh intervals, so a
/// busy tick does not hand polling over, and a dead poller is replaced fast.
pub fn lease_ms(refresh_ms: u64) -> u64 {
    refresh_ms.saturating_mul(3).max(1000)
}

/// How often workers look for a new list: a fraction of the refresh
/// interval, so a block reaches every worker soon after the poller has it.
pub fn sync_period_ms(refresh_ms: u64) -> u64 {
    (refresh_ms / 4).clamp(25, 1000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub owner: u64,
    pub expires_ms: u64,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("{:x} {}", self.owner, self.expires_ms).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (owner, expires) = text.split_once(' ')?;
        Some(Lease {
            owner: u64::from_str_radix(owner, 16).ok()?,
            expires_ms: expires.parse().ok()?,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// Write this lease (CAS against the value read); if it sticks, poll.
    Take(Lease),
    /// Another live root context polls.
    Follow,
}

/// Take (or renew) the lease when it is free, expired, unreadable or ours.
/// Two workers that find no lease at all both write one; the loser sees the
/// winner on its next tick, so at worst one extra poll at start-up.
pub fn lease_step(current: Option<&[u8]>, me: u64, now_ms: u64, lease_ms: u64) -> LeaseStep {
    match current.and_then(Lease::decode) {
        Some(l) if l.owner != me && l.expires_ms > now_ms => LeaseStep::Follow,
        _ => LeaseStep::Take(Lease {
            owner: me,
            expires_ms: now_ms.saturating_add(lease_ms),
        }),
    }
}

/// The value giving the lease up (plugin teardown), if `me` holds it.
pub fn lease_release(current: Option<&[u8]>, me: u64) -> Option<Lease> {
    current
        .and_then(Lease::decode)
        .filter(|l| l.owner == me && l.expires_ms > 0)
        .map(|l| Lease {
            owner: l.owner,
            expires_ms: 0,
        })
}

/// Identifies one published list: who published it, and its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub owner: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub version: Version,
    pub fetched_at_ms: u64,
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{:x}.{} {}",
            self.version.owner, self.version.seq, self.fetched_at_ms
        )
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Meta> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (version, fetched) = text.split_once(' ')?;
        let (owner, seq) = version.split_once('.')?;
        Some(Meta {
            version: Version {
                owner: u64::from_str_radix(owner, 16).ok()?,
                seq: seq.parse().ok()?,
            },
            fetched_at_ms: fetched.parse().ok()?,
        })
    }
}

/// Which published list a worker holds.
#[derive(Debug, Default)]
pub struct Follower {
    seen: Option<Version>,
}

impl Follower {
    /// The list must be (re)read: meta names a version not taken yet.
    pub fn needs_list(&self, meta: &Meta) -> bool {
        self.seen != Some(meta.version)
    }

    /// The list read under `meta` is in use. Keyed on meta's version, not
    /// the list's content: a list read is at least as new as its meta.
    pub fn took(&mut self, meta: &Meta) {
        self.seen = Some(meta.version);
    }

    pub fn version(&self) -> Option<Version> {
        self.seen
    }
}

/// The poller's side: what to write after a successful poll.
#[derive(Debug)]
pub struct Publisher {
    owner: u64,
    seq: u64,
}

impl Publisher {
    pub fn new(owner: u64) -> Publisher {
        Publisher { owner, seq: 0 }
    }

    pub fn owner(&self) -> u64 {
        self.owner
    }

    /// The meta to write, and whether the list must be written first: only
    /// when it differs from the one in use (or none is), else just the
    /// fetch time moves.
    pub fn publish(&mut self, changed: bool, in_use: Option<Version>, now_ms: u64) -> (Meta, bool) {
        match in_use {
            Some(version) if !changed => (
                Meta {
                    version,
                    fetched_at_ms: now_ms,
                },
                false,
            ),
            _ => {
                self.seq += 1;
                (
                    Meta {
                        version: Version {
                            owner: self.owner,
                            seq: self.seq,
                        },
                        fetched_at_ms: now_ms,
                    },
                    true,
                )
            }
        }
    }
}

/// The poller polls when `refresh_ms` has passed since its own last attempt
/// and since the shared list's fetch time (so a takeover does not poll
/// twice). `slack_ms` absorbs timer jitter.
pub fn poll_due(
    now_ms: u64,
    last_attempt_ms: u64,
    fetched_at_ms: Option<u64>,
    refresh_ms: u64,
    slack_ms: u64,
) -> bool {
    let last = last_attempt_ms.max(fetched_at_ms.unwrap_or(0));
    now_ms.saturating_sub(last).saturating_add(slack_ms) >= refresh_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_poller_at_a_time_and_a_takeover_when_it_stops() {
        let (a, b) = (new_owner_id(1), new_owner_id(2));
        assert_ne!(a, b);
        assert_ne!(a, 0);
        let ttl = lease_ms(1000);
        assert_eq!(ttl, 3000);
        assert_eq!(lease_ms(100), 1000);
        // Nobody holds it: a takes it.
        let LeaseStep::Take(la) = lease_step(None, a, 10_000, ttl) else {
            panic!("a free lease is taken")
        };
        assert_eq!(
            la,
            Lease {
                owner: a,
                expires_ms: 13_000
            }
        );
        let stored = la.encode();
        assert_eq!(Lease::decode(&stored), Some(la));
        // b follows while a's lease runs; a renews its own.
        assert_eq!(lease_step(Some(&stored), b, 12_999, ttl), LeaseStep::Follow);
        assert!(matches!(
            lease_step(Some(&stored), a, 12_000, ttl),
            LeaseStep::Take(Lease { owner, expires_ms: 15_000 }) if owner == a
        ));
        // a stopped renewing: b takes over at expiry.
        assert!(matches!(
            lease_step(Some(&stored), b, 13_000, ttl),
            LeaseStep::Take(Lease { owner, .. }) if owner == b
        ));
        // Garbage in the store does not block polling forever.
        assert!(matches!(
            lease_step(Some(b"junk"), b, 0, ttl),
            LeaseStep::Take(_)
        ));
    }

    #[test]
    fn a_torn_down_poller_gives_the_lease_up() {
        let (a, b) = (7, 9);
        let held = Lease {
            owner: a,
            expires_ms: 5_000,
        }
        .encode();
        assert_eq!(lease_release(Some(&held), b), None);
        let free = lease_release(Some(&held), a).unwrap();
        assert_eq!(free.expires_ms, 0);
        assert!(matches!(
            lease_step(Some(&free.encode()), b, 1, 1000),
            LeaseStep::Take(_)
        ));
        assert_eq!(lease_release(Some(&free.encode()), a), None);
    }

    #[test]
    fn the_list_is_written_and_read_once_per_change() {
        let mut poller = Publisher::new(0xab);
        let mut worker = Follower::default();
        // First poll: nothing in use yet, so the list is published.
        let (m1, write) = poller.publish(false, None, 1_000);
        assert!(write);
        assert_eq!(Meta::decode(&m1.encode()), Some(m1));
        assert!(worker.needs_list(&m1));
        worker.took(&m1);
        assert!(!worker.needs_list(&m1));
        // Same list polled again: only the fetch time moves, no re-read.
        let (m2, write) = poller.publish(false, worker.version(), 2_000);
        assert!(!write);
        assert_eq!(m2.version, m1.version);
        assert_eq!(m2.fetched_at_ms, 2_000);
        assert!(!worker.needs_list(&m2));
        // A changed list gets a new version, which every worker reads.
        let (m3, write) = poller.publish(true, worker.version(), 3_000);
        assert!(write);
        assert_ne!(m3.version, m1.version);
        assert!(worker.needs_list(&m3));
        // Another poller's versions never collide with this one's.
        let (m4, _) = Publisher::new(0xcd).publish(true, None, 3_000);
        assert_ne!(m4.version, m3.version);
        assert_eq!(Meta::decode(b"zz.1 5"), None);
        assert_eq!(Meta::decode(b"ab.1"), None);
    }

    #[test]
    fn polls_are_spaced_by_the_refresh_interval_across_pollers() {
        // Own last attempt at 1000, shared fetch at 1000: due at 2000 (with
        // half a 250 ms tick of slack, from 1875).
        assert!(!poll_due(1_800, 1_000, Some(1_000), 1_000, 125));
        assert!(poll_due(1_875, 1_000, Some(1_000), 1_000, 125));
        // A new poller (no attempt of its own) waits for the shared fetch time.
        assert!(!poll_due(1_500, 0, Some(1_000), 1_000, 0));
        assert!(poll_due(1_500, 0, None, 1_000, 0));
        assert_eq!(sync_period_ms(1_000), 250);
        assert_eq!(sync_period_ms(50), 25);
        assert_eq!(sync_period_ms(600_000), 1_000);
        let k = Keys::new("c|a|/v1/deny");
        assert_ne!(k.lease, k.meta);
        assert!(k.list.ends_with("|c|a|/v1/deny"));
    }
}
