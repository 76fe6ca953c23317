//! Billing collector: validates and prices usage records, keeps the ledger,
//! answers billing queries. `app(state)` builds the whole HTTP API so tests
//! can drive it without a socket.

pub mod alerts;
pub mod archive;
pub mod auth;
pub mod budget_metrics;
pub mod budgets;
pub mod changes;
pub mod clock;
pub mod config;
pub mod cursor;
pub mod db;
pub mod error;
pub mod export;
pub mod forecast;
pub mod forecasting;
pub mod http;
pub mod ingest;
pub mod invoice_pdf;
pub mod invoices;
pub mod metrics;
pub mod price_book;
pub mod pricing;
pub mod ratelimit;
pub mod reservations;
pub mod sync;
pub mod usage_metrics;
pub mod writer;

use std::sync::{Arc, RwLock};

use sqlx::PgPool;

pub use http::app;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub prices: Arc<RwLock<price_book::PriceBook>>,
    pub ingest_token: Option<auth::TokenDigest>,
    pub admin_token: Option<auth::TokenDigest>,
    pub metrics: Arc<metrics::Metrics>,
    pub max_body_bytes: usize,
    /// Verified tenant read tokens, briefly cached.
    pub token_cache: Arc<auth::TokenCache>,
    /// Per-token rate limit of tenant read tokens on the query API.
    pub query_rate_limit: Arc<ratelimit::RateLimiter>,
    /// `WEBHOOK_SECRET`: signs budget alert webhooks (none are sent while unset).
    pub webhook_secret: Option<Arc<str>>,
    /// Where budget periods are calendar-aligned unless a budget has its own
    /// `time_zone` (`BUDGET_TIME_ZONE` / `BUDGET_UTC_OFFSET_MINUTES`).
    pub budget_zone: budgets::Zone,
    /// Ingest's group commit in front of the ledger.
    pub ledger_writer: writer::LedgerWriter,
    /// The one source of "now" for every calendar decision (see `clock`).
    pub clock: clock::Clock,
    /// Budget reservations: the watch fraction and the default lifetime
    /// (`BUDGET_WATCH_FRACTION`, `RESERVATION_TTL_SECS`).
    pub reservations: reservations::Settings,
    /// Seals pagination cursors (`CURSOR_KEY`, or the stored one).
    pub cursor_key: cursor::CursorKey,
    /// Agreement with the other replicas: the generation of the price book
    /// in use, the pricing fence, the change listener's state (`changes`).
    pub replica: Arc<changes::Replica>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        prices: price_book::PriceBook,
        ingest_token: Option<&str>,
        admin_token: Option<&str>,
        max_body_bytes: usize,
    ) -> Self {
        let metrics: Arc<metrics::Metrics> = Arc::default();
        Self {
            ledger_writer: writer::LedgerWriter::start(pool.clone(), metrics.clone()),
            pool,
            prices: Arc::new(RwLock::new(prices)),
            ingest_token: ingest_token
                .filter(|t| !t.is_empty())
                .map(auth::TokenDigest::new),
            admin_token: admin_token
                .filter(|t| !t.is_empty())
                .map(auth::TokenDigest::new),
            metrics,
            max_body_bytes,
            token_cache: Arc::default(),
            query_rate_limit: Arc::default(),
            webhook_secret: None,
            budget_zone: budgets::Zone::default(),
            clock: clock::Clock::system(),
            reservations: reservations::Settings::default(),
            // A process of its own until `with_cursor_key` (the server sets
            // the configured or stored key, shared by every replica).
            cursor_key: cursor::CursorKey::generate(),
            replica: Arc::default(),
        }
    }

    /// Sets the key pagination cursors are sealed under.
    pub fn with_cursor_key(mut self, key: cursor::CursorKey) -> Self {
        self.cursor_key = key;
        self
    }

    /// Sets the secret that signs alert webhooks (empty: none are sent).
    pub fn with_webhook_secret(mut self, secret: Option<&str>) -> Self {
        self.webhook_secret = secret.filter(|s| !s.is_empty()).map(Arc::from);
        self
    }

    /// Sets the default time zone of budget periods.
    pub fn with_budget_zone(mut self, zone: budgets::Zone) -> Self {
        self.budget_zone = zone;
        self
    }

    /// Sets the clock every calendar decision reads (tests pin instants).
    pub fn with_clock(mut self, clock: clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the budget reservation settings.
    pub fn with_reservations(mut self, settings: reservations::Settings) -> Self {
        self.reservations = settings;
        self
    }

    /// The price book in use, as loaded last. Whatever prices first makes
    /// sure it holds every change committed before the request arrived
    /// (ingest's writer, reservations, [`AppState::price_book_now`]; see
    /// `changes`).
    pub fn price_book(&self) -> std::sync::RwLockReadGuard<'_, price_book::PriceBook> {
        self.prices.read().unwrap_or_else(|p| p.into_inner())
    }
}
