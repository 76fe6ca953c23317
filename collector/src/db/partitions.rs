//! The ledger's monthly partitions (migration 0021): created ahead of time
//! and on demand, listed for the operator, and detached and dropped once a
//! month is archived.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use sqlx::PgPool;

/// First instant of the UTC month holding `at`.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let day = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or(at.date_naive());
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// Creates the partitions of the months of `times` that do not exist yet,
/// inside the caller's transaction (so a batch never meets a missing one).
/// Cheap when they exist: one catalog lookup per distinct month.
pub(super) async fn ensure_for(
    tx: &mut sqlx::PgConnection,
    times: &[DateTime<Utc>],
) -> Result<(), sqlx::Error> {
    let mut months: Vec<DateTime<Utc>> = times.iter().map(|t| month_start(*t)).collect();
    months.sort_unstable();
    months.dedup();
    sqlx::query("SELECT ledger_ensure_partition(m) FROM UNNEST($1::timestamptz[]) AS m")
        .bind(&months)
        .execute(tx)
        .await
        .map(|_| ())
}

/// Creates the partitions of the month holding `now` and the `ahead`
/// months after it, so ingest does not create them on its path.
pub async fn ensure_partitions_ahead(
    pool: &PgPool,
    now: DateTime<Utc>,
    ahead: u32,
) -> Result<(), sqlx::Error> {
    let first = month_start(now);
    let months: Vec<DateTime<Utc>> = (0..=ahead)
        .filter_map(|i| first.checked_add_months(Months::new(i)))
        .collect();
    let mut conn = pool.acquire().await?;
    ensure_for(&mut conn, &months).await
}

/// One monthly partition of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerPartition {
    pub name: String,
    /// First instant of its month (inclusive); it ends a month later.
    pub month: DateTime<Utc>,
}

/// The ledger's partitions, oldest first.
pub async fn ledger_partitions(pool: &PgPool) -> Result<Vec<LedgerPartition>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'ledger'::regclass ORDER BY c.relname",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name,)| {
            let month = partition_month(&name)?;
            Some(LedgerPartition { name, month })
        })
        .collect())
}

/// The month a partition name (`ledger_pYYYYMM`) stands for.
fn partition_month(name: &str) -> Option<DateTime<Utc>> {
    let digits = name.strip_prefix("ledger_p")?;
    if digits.len() != 6 {
        return None;
    }
    let year: i32 = digits.get(..4)?.parse().ok()?;
    let month: u32 = digits.get(4..)?.parse().ok()?;
    let day = NaiveDate::from_ymd_opt(year, month, 1)?;
    Some(Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        let at = DateTime::parse_from_rfc3339("2028-02-29T23:59:59.999+00:00")
            .unwrap()
            .to_utc();
        assert_eq!(month_start(at).to_rfc3339(), "2028-02-01T00:00:00+00:00");
        let berlin_new_year = DateTime::parse_from_rfc3339("2028-01-01T00:30:00+01:00")
            .unwrap()
            .to_utc();
        assert_eq!(
            month_start(berlin_new_year).to_rfc3339(),
            "2027-12-01T00:00:00+00:00"
        );
    }

    #[test]
    fn partition_names_parse_back_to_their_month() {
        assert_eq!(
            partition_month("ledger_p202610").map(|m| m.to_rfc3339()),
            Some("2026-10-01T00:00:00+00:00".to_string())
        );
        assert_eq!(partition_month("ledger_p2026"), None);
        assert_eq!(partition_month("ledger_p202613"), None);
        assert_eq!(partition_month("usage_daily"), None);
    }
}

/// A month whose ledger rows were archived out of PostgreSQL.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct ArchivedMonth {
    pub month: DateTime<Utc>,
    pub archived_at: DateTime<Utc>,
    pub rows: i64,
    pub format: String,
    pub file: String,
    pub file_sha256: String,
}

/// The archives of the months overlapping [start, end), oldest first.
pub async fn archived_months(
    pool: &PgPool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<ArchivedMonth>, sqlx::Error> {
    sqlx::query_as(
        "SELECT month, archived_at, rows, format, file, file_sha256 FROM ledger_archives
         WHERE month < $2 AND month + interval '1 month' > $1 ORDER BY month",
    )
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await
}

/// Row count and priced cost per currency of one month of the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthTotals {
    pub rows: i64,
    pub cost: std::collections::BTreeMap<String, rust_decimal::Decimal>,
}

/// What an archive records about its file.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    pub format: String,
    pub path: String,
    pub sha256: String,
}

/// Why a month could not be archived.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0} has no ledger partition (already archived, or never had rows)")]
    NoPartition(String),
    #[error(
        "{month}: the partition holds {found_rows} rows and {found_cost:?} now, the export \
         {exported_rows} rows and {exported_cost:?}; rows arrived after the export: export again"
    )]
    Changed {
        month: String,
        found_rows: i64,
        found_cost: std::collections::BTreeMap<String, rust_decimal::Decimal>,
        exported_rows: i64,
        exported_cost: std::collections::BTreeMap<String, rust_decimal::Decimal>,
    },
    #[error(
        "{0} is not folded into the daily rollups yet (they would be all that is left of it); \
         wait for the fold or check billing_rollup_folded_before_seconds"
    )]
    NotFolded(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Row count and priced cost per currency of the month starting at `month`.
pub async fn month_totals(
    db: impl sqlx::PgExecutor<'_>,
    month: DateTime<Utc>,
) -> Result<MonthTotals, sqlx::Error> {
    let end = month
        .checked_add_months(Months::new(1))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let rows: Vec<(Option<String>, i64, Option<rust_decimal::Decimal>)> = sqlx::query_as(
        "SELECT currency, count(*), sum(cost) FROM transactions
         WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY 1",
    )
    .bind(month)
    .bind(end)
    .fetch_all(db)
    .await?;
    let mut totals = MonthTotals::default();
    for (currency, count, cost) in rows {
        totals.rows += count;
        if let (Some(currency), Some(cost)) = (currency, cost) {
            totals.cost.insert(currency, cost.normalize());
        }
    }
    Ok(totals)
}

/// Detaches and drops the partition of `month` once it still holds exactly
/// what was exported (`exported`), and records the archive, in one
/// transaction: writes to the partition wait while it is checked, so a row
/// that arrives after the export makes the archive fail instead of being
/// dropped unexported. The daily rollups must already hold the whole month.
pub async fn archive_partition(
    pool: &PgPool,
    month: DateTime<Utc>,
    exported: &MonthTotals,
    file: &ArchiveFile,
    now: DateTime<Utc>,
) -> Result<(), ArchiveError> {
    let month = month_start(month);
    let label = month.format("%Y-%m").to_string();
    let name = format!("ledger_p{}", month.format("%Y%m"));
    let end = month
        .checked_add_months(Months::new(1))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut tx = pool.begin().await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(ArchiveError::NoPartition(label));
    }
    let folded = super::folded_before(&mut *tx).await?;
    if folded < end {
        return Err(ArchiveError::NotFolded(label));
    }
    sqlx::query(&format!("LOCK TABLE {name} IN SHARE MODE"))
        .execute(&mut *tx)
        .await?;
    let found = month_totals(&mut *tx, month).await?;
    let mut expected = exported.clone();
    expected.cost = expected
        .cost
        .into_iter()
        .map(|(c, v)| (c, v.normalize()))
        .collect();
    if found != expected {
        return Err(ArchiveError::Changed {
            month: label,
            found_rows: found.rows,
            found_cost: found.cost,
            exported_rows: expected.rows,
            exported_cost: expected.cost,
        });
    }
    sqlx::query(&format!("ALTER TABLE ledger DETACH PARTITION {name}"))
        .execute(&mut *tx)
        .await?;
    // The breakdowns of rows written before migration 0025 leave with them.
    sqlx::query("DELETE FROM ledger_legacy_costs WHERE occurred_at >= $1 AND occurred_at < $2")
        .bind(month)
        .bind(end)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP TABLE {name}"))
        .execute(&mut *tx)
        .await?;
    let cost: serde_json::Map<String, serde_json::Value> = found
        .cost
        .iter()
        .map(|(c, v)| (c.clone(), serde_json::Value::String(v.to_string())))
        .collect();
    sqlx::query(
        "INSERT INTO ledger_archives (month, archived_at, rows, cost, format, file, file_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(month)
    .bind(now)
    .bind(found.rows)
    .bind(serde_json::Value::Object(cost))
    .bind(&file.format)
    .bind(&file.path)
    .bind(&file.sha256)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
