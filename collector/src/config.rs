//! Collector configuration from flags or environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "collector",
    version,
    about = "Prices LLM usage records and keeps the billing ledger in PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeConfig,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Manage the price catalog.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Read the ledger in bulk.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Write one closed UTC calendar month of the ledger to a file: our own
    /// Parquet schema (every column), or FOCUS 1.1 rows as CSV or Parquet
    /// (docs/export.md). A month that is not over yet is refused.
    Export {
        /// The month, `YYYY-MM` (UTC).
        #[arg(long)]
        period: String,
        #[arg(long, value_enum)]
        format: crate::export::ExportFormat,
        /// Where to write (default `ledger-YYYY-MM.parquet`,
        /// `.focus.csv` or `.focus.parquet` in the current directory).
        /// Written beside it first and renamed when complete and checked.
        #[arg(long)]
        output: Option<PathBuf>,
        /// FOCUS `InvoiceIssuerName`: who invoices the tenants.
        #[arg(long, default_value = crate::export::DEFAULT_INVOICE_ISSUER)]
        invoice_issuer: String,
    },
    /// Archive every month before `--before` out of PostgreSQL: export it
    /// (our Parquet schema, every row), check the file against the ledger,
    /// then detach and drop the month's partition. Summaries keep answering
    /// from the daily rollups (docs/operations.md).
    Archive {
        /// The first month to keep, `YYYY-MM` (UTC); at most the current one.
        #[arg(long)]
        before: String,
        /// Where the Parquet files go (created if missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum PricesCommand {
    /// Import prices from an OpenRouter `/api/v1/models` or LiteLLM
    /// `model_prices_and_context_window.json` file into the catalog.
    Import {
        file: PathBuf,
        #[arg(long, value_enum)]
        format: ImportFormat,
        /// When the imported prices take effect (RFC 3339); default now.
        #[arg(long)]
        effective_from: Option<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    Openrouter,
    Litellm,
}

#[derive(Args, Clone)]
pub struct ServeConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Address to listen on (loopback by default; put Envoy with TLS in front in production).
    #[arg(
        long,
        env = "COLLECTOR_ADDR",
        default_value = "127.0.0.1:8081",
        global = true
    )]
    pub addr: SocketAddr,
    /// Bearer token the filter uses for `POST /v1/usage`.
    #[arg(long, env = "INGEST_TOKEN", global = true)]
    pub ingest_token: Option<String>,
    /// Bearer token for the admin and query API.
    #[arg(long, env = "ADMIN_TOKEN", global = true)]
    pub admin_token: Option<String>,
    /// Price catalog JSON loaded at start (default: the bundled catalog).
    #[arg(long, env = "PRICE_CATALOG", global = true)]
    pub price_catalog: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 8 << 20, global = true)]
    pub max_body_bytes: usize,
    /// Maximum PostgreSQL connections.
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub database_max_connections: u32,
    /// Requests per minute each tenant read token may make on the query API
    /// (0: no limit). The admin token is not limited.
    #[arg(
        long,
        env = "QUERY_RATE_LIMIT_PER_MIN",
        default_value_t = crate::ratelimit::DEFAULT_PER_MIN,
        global = true
    )]
    pub query_rate_limit_per_min: u32,
    /// Requests a tenant read token may make at once before the per-minute rate applies.
    #[arg(
        long,
        env = "QUERY_RATE_BURST",
        default_value_t = crate::ratelimit::DEFAULT_BURST,
        global = true
    )]
    pub query_rate_burst: u32,
    /// URL of a price list to sync periodically (OpenRouter `/api/v1/models`
    /// or LiteLLM `model_prices_and_context_window.json`); unset: no sync.
    #[arg(long, env = "PRICE_SYNC_URL", global = true)]
    pub price_sync_url: Option<String>,
    /// Format of `PRICE_SYNC_URL`.
    #[arg(
        long,
        env = "PRICE_SYNC_FORMAT",
        value_enum,
        default_value = "openrouter",
        global = true
    )]
    pub price_sync_format: ImportFormat,
    /// Seconds between price syncs.
    #[arg(
        long,
        env = "PRICE_SYNC_INTERVAL_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub price_sync_interval_secs: u64,
    /// Secret that signs budget alert webhooks (`x-billing-signature`);
    /// unset: alerts are recorded but not sent.
    #[arg(long, env = "WEBHOOK_SECRET", global = true)]
    pub webhook_secret: Option<String>,
    /// Milliseconds between budget alert evaluations (and delivery rounds).
    #[arg(
        long,
        env = "ALERT_EVAL_INTERVAL_MS",
        default_value_t = 5000,
        global = true
    )]
    pub alert_eval_interval_ms: u64,
    /// IANA time zone in which budget days, weeks and months start, unless a
    /// budget has its own `time_zone` (default UTC).
    #[arg(long, env = "BUDGET_TIME_ZONE", global = true)]
    pub budget_time_zone: Option<String>,
    /// Older alternative to `BUDGET_TIME_ZONE`: a fixed offset in minutes
    /// east of UTC, without daylight saving. Set at most one of the two.
    #[arg(
        long,
        env = "BUDGET_UTC_OFFSET_MINUTES",
        global = true,
        allow_hyphen_values = true
    )]
    pub budget_utc_offset_minutes: Option<String>,
    /// A hard budget or prepaid account not yet blocked is on the deny
    /// list's watch list (its requests reserve their estimated cost first)
    /// once what remains is at most this fraction of its limit (0 to 1).
    #[arg(
        long,
        env = "BUDGET_WATCH_FRACTION",
        default_value = "0.5",
        global = true
    )]
    pub budget_watch_fraction: String,
    /// Seconds a budget reservation lives when the call names no `ttl_ms`
    /// (1 to 3600).
    #[arg(
        long,
        env = "RESERVATION_TTL_SECS",
        default_value_t = crate::reservations::DEFAULT_TTL_SECS,
        global = true
    )]
    pub reservation_ttl_secs: u64,
    /// Hours the hourly usage rollup keeps once they are folded into the
    /// daily ones (older hours of a range are read from the ledger). The
    /// hourly rollup is the largest per-transaction cost on disk after the
    /// ledger itself when usage is spread over many keys and models.
    #[arg(
        long,
        env = "HOURLY_ROLLUP_RETENTION_HOURS",
        default_value_t = 168,
        global = true
    )]
    pub hourly_rollup_retention_hours: u32,
    /// Seals pagination cursors (hex, at least 32 bytes). Unset: a key is
    /// generated at the first start and stored in the database, so every
    /// replica shares it.
    #[arg(long, env = "CURSOR_KEY", global = true)]
    pub cursor_key: Option<String>,
    /// Tenants with their own label value in the cost and token metrics;
    /// the rest are summed under `other`.
    #[arg(long, env = "METRICS_MAX_TENANTS", default_value_t = crate::usage_metrics::DEFAULT_MAX_TENANTS, global = true)]
    pub metrics_max_tenants: usize,
    /// Models with their own label value in the cost and token metrics.
    #[arg(long, env = "METRICS_MAX_MODELS", default_value_t = crate::usage_metrics::DEFAULT_MAX_MODELS, global = true)]
    pub metrics_max_models: usize,
}

impl std::fmt::Debug for ServeConfig {
    // Secrets and the database URL (which may hold a password) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("ServeConfig")
            .field("database_url", &redact(&self.database_url))
            .field("addr", &self.addr)
            .field("ingest_token", &redact(&self.ingest_token))
            .field("admin_token", &redact(&self.admin_token))
            .field("price_catalog", &self.price_catalog)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("database_max_connections", &self.database_max_connections)
            .field("query_rate_limit_per_min", &self.query_rate_limit_per_min)
            .field("query_rate_burst", &self.query_rate_burst)
            .field("price_sync_url", &self.price_sync_url)
            .field("price_sync_format", &self.price_sync_format)
            .field("price_sync_interval_secs", &self.price_sync_interval_secs)
            .field("webhook_secret", &redact(&self.webhook_secret))
            .field("alert_eval_interval_ms", &self.alert_eval_interval_ms)
            .field("budget_time_zone", &self.budget_time_zone)
            .field("budget_utc_offset_minutes", &self.budget_utc_offset_minutes)
            .field("budget_watch_fraction", &self.budget_watch_fraction)
            .field("reservation_ttl_secs", &self.reservation_ttl_secs)
            .field(
                "hourly_rollup_retention_hours",
                &self.hourly_rollup_retention_hours,
            )
            .field("cursor_key", &redact(&self.cursor_key))
            .field("metrics_max_tenants", &self.metrics_max_tenants)
            .field("metrics_max_models", &self.metrics_max_models)
            .finish()
    }
}
