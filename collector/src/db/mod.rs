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
    // The `transactions` view joins eight relations: a query that joins it
    // to one more must still be planned as one join problem (default limit
    // 8), or the planner cannot drive the view's ledger scan from the other
    // side's keys. The collector's statements are short: JIT compilation
    // costs more than it saves (measured: ~200 ms of a 300 ms report).
    let options = options.options([
        ("timezone", "UTC"),
        ("join_collapse_limit", "12"),
        ("from_collapse_limit", "12"),
        ("jit", "off"),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

/// Runs a read whose plan costs more than its execution (the ledger views
/// join up to eight relations: ~10 ms to plan, ~1 ms to run a page) with one
/// generic plan per connection and statement text, reused for every tenant
/// and position. Only for statements whose best plan does not depend on the
/// values bound (a page of a known size, by key).
pub(crate) async fn fetch_with_generic_plan<T>(
    pool: &PgPool,
    mut q: sqlx::QueryBuilder<'_, sqlx::Postgres>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *tx)
        .await?;
    let rows = q.build_query_as::<T>().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
