//! Replicas in agreement. Each collector replica keeps in memory what it
//! reads on every request: the price book (catalog, tenant agreements,
//! model aliases) and verified tenant tokens. Whoever changes their tables
//! (this API on any replica, `collector prices import`, the price sync,
//! psql) bumps the topic's generation and notifies `billing_changes` from a
//! trigger (migration 0020), delivered on commit. Each replica:
//!
//! - listens on a connection of its own and reloads (or forgets its cached
//!   tokens) when a newer generation is announced, within milliseconds;
//! - after its listener (re)connects, compares generations once, since
//!   notifications sent while it was not listening are lost;
//! - polls the generations every few seconds as a fallback;
//! - never prices with rows older than a change committed before the
//!   request arrived, whether or not its notification has arrived yet:
//!   ingest's writer reads the pricing generation before each statement
//!   and hands back batches priced at an older one, to be priced again
//!   after a reload (`writer`); a reservation reads it under the tenant's
//!   lock (`reservations::reserve`); notices, quotes and the price sync
//!   read it through a [`Fence`] first ([`AppState::price_book_now`]).

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLockReadGuard;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use crate::db;
use crate::metrics::Metrics;
use crate::price_book::PriceBook;
use crate::AppState;

/// What a replica caches, as the triggers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Price catalog, tenant pricing agreements and model aliases.
    Pricing,
    /// Tenant read tokens.
    Tokens,
}

/// One notification: `topic` reached `generation` (its payload is
/// `topic:generation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub topic: Topic,
    pub generation: i64,
}

/// Reads a notification's payload; None for one this version does not know.
pub fn parse_notice(payload: &str) -> Option<Notice> {
    let (topic, generation) = payload.split_once(':')?;
    let topic = match topic {
        "pricing" => Topic::Pricing,
        "tokens" => Topic::Tokens,
        _ => return None,
    };
    Some(Notice {
        topic,
        generation: generation.parse().ok()?,
    })
}

/// Why a replica reloaded its price book (the `cause` of the
/// `billing_price_reloads_total` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// At start, or right after this replica changed pricing itself.
    Write,
    /// A notification announced a newer generation.
    Notification,
    /// The listener (re)connected and found the book behind.
    Reconnect,
    /// The fallback poll found the book behind.
    Poll,
    /// A request about to price found the book behind: the notification
    /// had not arrived (or been acted on) yet.
    Fence,
}

impl Cause {
    pub const ALL: [Cause; 5] = [
        Cause::Write,
        Cause::Notification,
        Cause::Reconnect,
        Cause::Poll,
        Cause::Fence,
    ];

    fn index(self) -> usize {
        match self {
            Cause::Write => 0,
            Cause::Notification => 1,
            Cause::Reconnect => 2,
            Cause::Poll => 3,
            Cause::Fence => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Write => "write",
            Cause::Notification => "notification",
            Cause::Reconnect => "reconnect",
            Cause::Poll => "poll",
            Cause::Fence => "fence",
        }
    }
}

/// Reads of a generation shared by concurrent callers: each caller gets the
/// value of a read that *started after it called*, so it sees every change
/// committed before it called; callers that arrive while a read is in
/// flight share the next one. Busy ingest thus costs one small query per
/// round of reads, not one per batch.
#[derive(Debug, Default)]
pub struct Fence {
    /// Reads started so far; a read's sequence number is its count.
    started: AtomicU64,
    /// The latest finished read: its sequence number and value. Held while
    /// a read runs, so reads run one at a time.
    last: Mutex<(u64, i64)>,
}

impl Fence {
    /// A value read after this call began: shared with concurrent callers
    /// when such a read has already finished, else read now by `read`.
    pub async fn read<F, Fut, E>(&self, read: F) -> Result<i64, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<i64, E>>,
    {
        let arrived = self.started.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if last.0 > arrived {
            // Started after this caller arrived: its value is fresh enough.
            return Ok(last.1);
        }
        let seq = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let value = read().await?;
        *last = (seq, value);
        Ok(value)
    }
}

/// A replica's side of the agreement, shared by its tasks and handlers.
#[derive(Debug)]
pub struct Replica {
    /// The generation of the price book in use (None: not loaded yet).
    pricing: watch::Sender<Option<i64>>,
    /// Whether the listener is subscribed and has caught up.
    listening: watch::Sender<bool>,
    /// One price book load at a time.
    reload: Mutex<()>,
    fence: Fence,
    /// The tokens generation the token cache was last emptied at.
    tokens: AtomicI64,
    /// `billing_price_reloads_total`, by [`Cause`] (in `Cause::ALL` order).
    reloads: [AtomicU64; 5],
    /// `billing_change_listener_reconnects_total`.
    reconnects: AtomicU64,
}

impl Default for Replica {
    fn default() -> Self {
        Self {
            pricing: watch::Sender::new(None),
            listening: watch::Sender::new(false),
            reload: Mutex::new(()),
            fence: Fence::default(),
            tokens: AtomicI64::new(0),
            reloads: Default::default(),
            reconnects: AtomicU64::new(0),
        }
    }
}

impl Replica {
    /// The generation of the price book in use, as it changes: wait on it
    /// for a reload (tests do, with a short timeout).
    pub fn pricing_generation(&self) -> watch::Receiver<Option<i64>> {
        self.pricing.subscribe()
    }

    /// Whether the change listener is subscribed and caught up.
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.listening.subscribe()
    }

    /// Price book reloads so far for `cause`.
    pub fn reloads(&self, cause: Cause) -> u64 {
        self.reloads[cause.index()].load(Ordering::Relaxed)
    }

    /// Times the listener connected again after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The Prometheus lines of this replica's agreement.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let generation = (*self.pricing.borrow()).unwrap_or(-1);
        let up = u8::from(*self.listening.borrow());
        let _ = writeln!(out, "# HELP billing_pricing_generation Pricing generation of the price book this replica prices with (-1: not loaded); every replica shows the same one within milliseconds of a change.\n# TYPE billing_pricing_generation gauge\nbilling_pricing_generation {generation}");
        let _ = writeln!(out, "# HELP billing_change_listener_up 1 while this replica listens for changes made on other replicas (else it relies on the fallback poll).\n# TYPE billing_change_listener_up gauge\nbilling_change_listener_up {up}");
        let _ = writeln!(out, "# HELP billing_change_listener_reconnects_total Times the change listener connected again after losing its connection.\n# TYPE billing_change_listener_reconnects_total counter\nbilling_change_listener_reconnects_total {}", self.reconnects());
        let _ = writeln!(out, "# HELP billing_price_reloads_total Price book reloads, by what caused them (fence: a request found the book behind before the notification was acted on).\n# TYPE billing_price_reloads_total counter");
        for cause in Cause::ALL {
            let _ = writeln!(
                out,
                "billing_price_reloads_total{{cause=\"{}\"}} {}",
                cause.as_str(),
                self.reloads(cause)
            );
        }
    }
}

impl AppState {
    /// Reloads the price book now (at start, and after this replica changed
    /// pricing itself).
    pub async fn reload_prices(&self) -> Result<(), sqlx::Error> {
        let _one = self.replica.reload.lock().await;
        self.load_price_book(Cause::Write).await
    }

    /// Reloads the price book unless it already holds `generation`.
    pub async fn reload_prices_to(&self, generation: i64, cause: Cause) -> Result<(), sqlx::Error> {
        let _one = self.replica.reload.lock().await;
        if self.price_book().generation() >= Some(generation) {
            return Ok(());
        }
        self.load_price_book(cause).await
    }

    /// The price book, holding every pricing change committed before this
    /// call (reloaded first if this replica has not caught up yet): what
    /// reservation notices, quotes and the price sync price with (ingest
    /// and reservations check in their own transactions instead). Costs one
    /// primary-key read, shared by concurrent callers.
    pub async fn price_book_now(&self) -> Result<RwLockReadGuard<'_, PriceBook>, sqlx::Error> {
        let generation = self
            .replica
            .fence
            .read(|| db::pricing_generation(&self.pool))
            .await?;
        if self.price_book().generation() < Some(generation) {
            self.reload_prices_to(generation, Cause::Fence).await?;
        }
        Ok(self.price_book())
    }

    /// Loads and installs a book; the caller holds the reload lock.
    async fn load_price_book(&self, cause: Cause) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let book = PriceBook::from_snapshot(db::load_pricing_snapshot(&self.pool).await?);
        let generation = book.generation();
        let previous = {
            let mut guard = self.prices.write().unwrap_or_else(|p| p.into_inner());
            let previous = guard.generation();
            // Never back to an older generation (a load can only be newer
            // under the lock, but keep the book monotonic regardless).
            if generation >= previous {
                *guard = book;
            }
            previous
        };
        self.replica.pricing.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
        Metrics::add(&self.replica.reloads[cause.index()], 1);
        tracing::info!(
            cause = cause.as_str(),
            ?previous,
            ?generation,
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "price book loaded"
        );
        Ok(())
    }

    /// Forgets cached tenant tokens when `generation` is newer than the
    /// one the cache was last emptied at (a token was revoked or changed).
    fn tokens_changed(&self, generation: i64) {
        let seen = self.replica.tokens.fetch_max(generation, Ordering::SeqCst);
        if generation > seen {
            self.token_cache.clear();
            tracing::debug!(generation, "tenant token cache emptied");
        }
    }

    /// Compares every generation with what this replica holds and catches up.
    async fn catch_up(&self, cause: Cause) -> Result<(), sqlx::Error> {
        let g = db::generations(&self.pool).await?;
        self.tokens_changed(g.tokens);
        if self.price_book().generation() < Some(g.pricing) {
            self.reload_prices_to(g.pricing, cause).await?;
        }
        Ok(())
    }

    async fn on_notice(&self, payload: &str) {
        match parse_notice(payload) {
            Some(Notice {
                topic: Topic::Pricing,
                generation,
            }) => {
                if self.price_book().generation() < Some(generation) {
                    if let Err(e) = self.reload_prices_to(generation, Cause::Notification).await {
                        tracing::warn!(error = %e, generation, "price book reload failed; the poll retries");
                    }
                }
            }
            Some(Notice {
                topic: Topic::Tokens,
                generation,
            }) => self.tokens_changed(generation),
            None => tracing::debug!(payload, "unknown change notification ignored"),
        }
    }
}

/// The first wait before the listener connects again; doubled up to
/// [`RETRY_MAX`] while connecting fails.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Keeps `state` in agreement with the other replicas until its pool is
/// closed: the listener, and the poll every `poll` as a fallback.
pub async fn run(state: AppState, poll: Duration) {
    let closed = state.pool.close_event();
    tokio::select! {
        () = listen(&state) => {}
        () = poll_generations(&state, poll) => {}
        () = closed => {}
    }
    state.replica.listening.send_replace(false);
}

/// Listens for notifications; on a lost connection, connects again and
/// catches up once (what was notified meanwhile is lost). Never returns.
async fn listen(state: &AppState) {
    let mut delay = RETRY_MIN;
    let mut connected_before = false;
    loop {
        match db::change_listener(&state.pool).await {
            Ok(mut listener) => {
                if connected_before {
                    Metrics::add(&state.replica.reconnects, 1);
                }
                connected_before = true;
                delay = RETRY_MIN;
                // Subscribed first, then compared: a change committed after
                // the comparison is notified, one before it is found.
                if let Err(e) = state.catch_up(Cause::Reconnect).await {
                    tracing::warn!(error = %e, "catching up after connecting the change listener failed; the poll retries");
                }
                state.replica.listening.send_replace(true);
                tracing::info!("listening for changes made on other replicas");
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => state.on_notice(n.payload()).await,
                        Ok(None) => {
                            tracing::warn!("change listener lost its connection; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change listener failed; reconnecting");
                            break;
                        }
                    }
                }
                state.replica.listening.send_replace(false);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot listen for changes made on other replicas; retrying in {delay:?} (the fallback poll still runs)"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// The fallback: compares generations every `every`. Never returns.
async fn poll_generations(state: &AppState, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the listener catches up when it connects.
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = state.catch_up(Cause::Poll).await {
            tracing::debug!(error = %e, "change poll failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn notices_are_read_from_their_payload() {
        assert_eq!(
            parse_notice("pricing:42"),
            Some(Notice {
                topic: Topic::Pricing,
                generation: 42
            })
        );
        assert_eq!(
            parse_notice("tokens:7"),
            Some(Notice {
                topic: Topic::Tokens,
                generation: 7
            })
        );
        for bad in ["", "pricing", "pricing:", "pricing:x", "budgets:3", ":3"] {
            assert_eq!(parse_notice(bad), None, "{bad:?}");
        }
    }

    /// Callers that arrive while a read is in flight do not take its value
    /// (it may predate them): they share the next read, one for them all.
    #[tokio::test]
    async fn a_fence_answers_with_a_read_started_after_the_call() {
        let fence = Arc::new(Fence::default());
        let reads = Arc::new(AtomicU64::new(0));
        let (release, gate) = watch::channel(false);
        // The first read waits for the gate; it returns generation 1.
        let first = {
            let (fence, reads, mut gate) = (fence.clone(), reads.clone(), gate.clone());
            tokio::spawn(async move {
                fence
                    .read(|| async move {
                        let n = reads.fetch_add(1, Ordering::SeqCst) as i64 + 1;
                        let _ = gate.wait_for(|open| *open).await;
                        Ok::<_, ()>(n)
                    })
                    .await
            })
        };
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Three callers arrive during the first read.
        let later: Vec<_> = (0..3)
            .map(|_| {
                let (fence, reads) = (fence.clone(), reads.clone());
                tokio::spawn(async move {
                    fence
                        .read(|| async move {
                            Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst) as i64 + 1)
                        })
                        .await
                })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release.send_replace(true);
        assert_eq!(first.await.unwrap(), Ok(1));
        for caller in later {
            assert_eq!(caller.await.unwrap(), Ok(2), "the second read, shared");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A caller after all that reads again.
        let n = fence
            .read(|| async { Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst) as i64 + 1) })
            .await;
        assert_eq!(n, Ok(3));
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared() {
        let fence = Fence::default();
        assert_eq!(
            fence.read(|| async { Err::<i64, _>("down") }).await,
            Err("down")
        );
        assert_eq!(fence.read(|| async { Ok::<_, &str>(5) }).await, Ok(5));
    }

    #[test]
    fn metrics_name_every_cause() {
        let replica = Replica::default();
        let mut out = String::new();
        replica.render(&mut out);
        for cause in Cause::ALL {
            assert!(
                out.contains(&format!(
                    "billing_price_reloads_total{{cause=\"{}\"}} 0",
                    cause.as_str()
                )),
                "{out}"
            );
        }
        assert!(out.contains("billing_pricing_generation -1"));
        assert!(out.contains("billing_change_listener_up 0"));
    }
}
