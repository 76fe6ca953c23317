//! Every SQL statement of the collector lives in this module.

mod alerts;
mod balance_alerts;
mod budgets;
mod changes;
mod export;
mod forecast;
mod invoices;
mod ledger;
mod model_aliases;
mod partitions;
mod prices;
mod reconciliation;
mod reservations;
mod summary;
mod tenant_pricing;
mod tokens;

pub use alerts::*;
pub use balance_alerts::*;
pub use budgets::*;
pub use changes::*;
pub use export::*;
pub use forecast::*;
pub use invoices::*;
pub use ledger::*;
pub use model_aliases::*;
pub use partitions::{
    archive_partition, archived_months, ensure_partitions_ahead, ledger_partitions, month_start,
    month_totals, ArchiveError, ArchiveFile, ArchivedMonth, LedgerPartition, MonthTotals,
};
pub use prices::*;
pub use reconciliation::*;
pub use reservations::*;
pub use summary::*;
pub use tenant_pricing::*;
pub use tokens::*;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Opens a lazy pool: the collector starts (and answers 503) even while the
/// database is down, and reconnects by itself when it comes back.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([("timezone", "UTC")]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
