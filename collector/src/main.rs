use std::time::Duration;

use clap::Parser;
use collector::config::{Cli, Command, ImportFormat, LedgerCommand, PricesCommand, ServeConfig};
use collector::pricing::{self, Catalog};
use collector::{db, price_book::PriceBook, AppState};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Prices {
            command:
                PricesCommand::Import {
                    file,
                    format,
                    effective_from,
                },
        }) => import(&cli.serve, &file, format, effective_from.as_deref()).await,
        Some(Command::Ledger {
            command:
                LedgerCommand::Export {
                    period,
                    format,
                    output,
                    invoice_issuer,
                },
        }) => export(&cli.serve, &period, format, output, &invoice_issuer).await,
        Some(Command::Ledger {
            command: LedgerCommand::Archive { before, dir },
        }) => archive(&cli.serve, &before, &dir).await,
        Some(Command::Serve) | None => serve(cli.serve).await,
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

fn pool(config: &ServeConfig) -> Result<sqlx::PgPool, BoxError> {
    let url = config
        .database_url
        .as_deref()
        .ok_or("DATABASE_URL is required (e.g. postgres://user@127.0.0.1:5432/billing)")?;
    Ok(db::connect_lazy(url, config.database_max_connections)?)
}

/// Runs migrations, waiting for the database if it is not up yet.
async fn migrate_when_ready(pool: &sqlx::PgPool) {
    let mut delay = Duration::from_millis(200);
    loop {
        match db::migrate(pool).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "database not ready for migrations; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn serve(config: ServeConfig) -> Result<(), BoxError> {
    tracing::info!(?config, "starting collector");
    // Refuse to start rather than shift every budget reset by a typo.
    let budget_zone = collector::budgets::default_zone(
        config.budget_time_zone.as_deref(),
        config.budget_utc_offset_minutes.as_deref(),
    )
    .map_err(|e| format!("invalid budget time zone configuration: {e}"))?;
    tracing::info!(zone = %budget_zone, "budget periods are calendar-aligned in this zone");
    let reservations = collector::reservations::Settings::parse(
        &config.budget_watch_fraction,
        config.reservation_ttl_secs,
    )
    .map_err(|e| format!("invalid budget reservation configuration: {e}"))?;
    if config.ingest_token.as_deref().unwrap_or("").is_empty() {
        tracing::warn!("INGEST_TOKEN is not set: every ingest request will be refused");
    }
    if config.admin_token.as_deref().unwrap_or("").is_empty() {
        tracing::warn!("ADMIN_TOKEN is not set: the admin and query API is closed");
    }
    let catalog = match &config.price_catalog {
        Some(path) => Catalog::from_json(&std::fs::read_to_string(path)?)
            .map_err(|e| format!("price catalog {}: {e}", path.display()))?,
        None => Catalog::bundled().map_err(|e| format!("bundled price catalog: {e}"))?,
    };
    let pool = pool(&config)?;
    let listener = TcpListener::bind(config.addr).await?;
    migrate_when_ready(&pool).await;
    let added = db::insert_prices(
        &pool,
        catalog.entries(),
        &format!("catalog:{}", catalog.version()),
    )
    .await?;
    tracing::info!(version = catalog.version(), added, "price catalog seeded");
    let cursor_key = match config
        .cursor_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
    {
        Some(hex_key) => collector::cursor::CursorKey::from_hex(hex_key)
            .map_err(|e| format!("invalid CURSOR_KEY: {e}"))?,
        None => db::stored_cursor_key(&pool).await?,
    };
    let state = AppState::new(
        pool.clone(),
        PriceBook::empty(),
        config.ingest_token.as_deref(),
        config.admin_token.as_deref(),
        config.max_body_bytes,
    )
    .with_query_rate_limit(config.query_rate_limit_per_min, config.query_rate_burst)
    .with_webhook_secret(config.webhook_secret.as_deref())
    .with_budget_zone(budget_zone)
    .with_reservations(reservations)
    .with_cursor_key(cursor_key);
    state
        .metrics
        .usage
        .set_caps(config.metrics_max_tenants, config.metrics_max_models);
    state.reload_prices().await?;
    tokio::spawn(collector::changes::run(state.clone(), CHANGE_POLL));
    tokio::spawn(ledger_maintenance(
        state.pool.clone(),
        state.metrics.clone(),
        state.clock.clone(),
        chrono::TimeDelta::hours(i64::from(config.hourly_rollup_retention_hours)),
    ));
    tokio::spawn(reservation_sweep(state.clone()));
    if let Some(url) = config.price_sync_url.clone() {
        let interval = Duration::from_secs(config.price_sync_interval_secs);
        tokio::spawn(collector::sync::run(
            state.clone(),
            url,
            config.price_sync_format,
            interval,
        ));
    }
    let alert_interval = Duration::from_millis(config.alert_eval_interval_ms);
    tokio::spawn(collector::alerts::run_evaluator(
        state.clone(),
        alert_interval,
    ));
    if state.webhook_secret.is_some() {
        tokio::spawn(collector::alerts::run_deliverer(
            state.clone(),
            alert_interval.min(Duration::from_secs(1)),
        ));
    } else {
        tracing::warn!("WEBHOOK_SECRET is not set: budget alerts are recorded but not sent");
    }
    tracing::info!(addr = %config.addr, "collector listening");
    axum::serve(listener, collector::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    pool.close().await;
    tracing::info!("collector stopped");
    Ok(())
}

/// How often a replica compares change generations with the database, as
/// a fallback to the notifications it listens for (collector::changes).
const CHANGE_POLL: Duration = Duration::from_secs(5);

/// How long an hour stays open for stragglers before its usage is folded
/// into the daily rollups (later rows are still added, just on a slower path).
const FOLD_GRACE: Duration = Duration::from_secs(300);

/// Monthly ledger partitions kept ready beyond the current month.
const PARTITIONS_AHEAD: u32 = 2;

/// Once a minute: folds closed hours into the daily rollups, prunes the hourly
/// one past its retention, creates the coming months' ledger partitions,
/// summarizes the ledger's new BRIN ranges, and reports the fold watermark
/// in /metrics.
async fn ledger_maintenance(
    pool: sqlx::PgPool,
    metrics: std::sync::Arc<collector::metrics::Metrics>,
    clock: collector::clock::Clock,
    hourly_retention: chrono::TimeDelta,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        // Each call folds at most a day; catch up in steps after an outage.
        loop {
            let before = clock.now() - FOLD_GRACE;
            match db::fold_rollups(&pool, before).await {
                Ok(Some(until)) => {
                    tracing::info!(%until, "hourly usage folded into the daily rollups")
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "rollup fold failed; retrying in a minute");
                    break;
                }
            }
        }
        loop {
            match db::prune_hourly(&pool, clock.now() - hourly_retention).await {
                Ok(Some(from)) => tracing::info!(%from, "hourly usage before this pruned"),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the hourly rollup failed; retrying in a minute");
                    break;
                }
            }
        }
        if let Err(e) = db::ensure_partitions_ahead(&pool, clock.now(), PARTITIONS_AHEAD).await {
            tracing::warn!(error = %e, "creating the ledger's next monthly partitions failed");
        }
        if let Err(e) = db::summarize_time_index(&pool).await {
            tracing::warn!(error = %e, "summarizing the ledger's time index failed");
        }
        if let Ok(at) = db::folded_before(&pool).await {
            let secs = u64::try_from(at.timestamp()).unwrap_or(0);
            metrics
                .rollup_folded_before
                .store(secs, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Every 30 s: deletes the budget reservations that expired without their
/// usage record (they stopped counting when they expired).
async fn reservation_sweep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        match collector::reservations::sweep(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired budget reservations swept"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired budget reservations failed"),
        }
    }
}

/// SIGTERM or Ctrl-C: stop accepting, finish in-flight requests, exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

async fn import(
    config: &ServeConfig,
    file: &std::path::Path,
    format: ImportFormat,
    effective_from: Option<&str>,
) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(file)?;
    let at = match effective_from {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)?.with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let imported = match format {
        ImportFormat::Openrouter => pricing::import_openrouter(&text, at)?,
        ImportFormat::Litellm => pricing::import_litellm(&text, at)?,
    };
    let pool = pool(config)?;
    db::migrate(&pool).await?;
    let source = match format {
        ImportFormat::Openrouter => "import:openrouter",
        ImportFormat::Litellm => "import:litellm",
    };
    let added = db::insert_prices(&pool, &imported.entries, source).await?;
    println!(
        "imported {} prices ({} new, {} skipped) from {}",
        imported.entries.len(),
        added,
        imported.skipped.len(),
        file.display()
    );
    Ok(())
}

/// `collector ledger export`: writes beside `output` and renames when the
/// export is complete and adds up to the ledger, so a failed or interrupted
/// export never leaves a file that looks whole.
async fn export(
    config: &ServeConfig,
    period: &str,
    format: collector::export::ExportFormat,
    output: Option<std::path::PathBuf>,
    invoice_issuer: &str,
) -> Result<(), BoxError> {
    let period = collector::export::Period::parse(period)?;
    let clock = collector::clock::Clock::system();
    // Refused before touching the database or the file system.
    period.ensure_closed(clock.now())?;
    let output = output.unwrap_or_else(|| format.default_file_name(period).into());
    let pool = pool(config)?;
    let job = collector::export::Job {
        invoice_issuer: invoice_issuer.to_owned(),
        ..collector::export::Job::new(period, format)
    };
    let report = collector::archive::export_to_file(&pool, &clock, &job, &output).await?;
    println!(
        "exported {period}: {} ledger rows, {} rows written to {}",
        report.ledger.rows,
        report.rows_written,
        output.display()
    );
    for (currency, cost) in report.ledger.cost_by_currency() {
        println!("  {currency} {cost}");
    }
    let unpriced = report.unpriced_rows_left_out();
    if unpriced > 0 {
        println!(
            "  {unpriced} unpriced rows are not in the FOCUS file (no price, no currency): \
             price them (POST /v1/reprice) and export again to include them"
        );
    }
    Ok(())
}

/// `collector ledger archive`: exports, checks and drops every month before
/// `before` still in the ledger (docs/operations.md).
async fn archive(
    config: &ServeConfig,
    before: &str,
    dir: &std::path::Path,
) -> Result<(), BoxError> {
    let before = collector::export::Period::parse(before)?;
    let clock = collector::clock::Clock::system();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pool = pool(config)?;
    db::migrate(&pool).await?;
    let archived = collector::archive::run(&pool, &clock, before, dir).await?;
    if archived.is_empty() {
        println!("nothing to archive before {before}: no ledger partition is older");
    }
    for a in archived {
        let cost: Vec<String> = a.cost.iter().map(|(c, v)| format!("{c} {v}")).collect();
        println!(
            "archived {}: {} rows ({}) to {} (sha256 {}); partition dropped",
            a.period,
            a.rows,
            if cost.is_empty() {
                "no priced cost".to_string()
            } else {
                cost.join(", ")
            },
            a.file.display(),
            a.sha256
        );
    }
    Ok(())
}
