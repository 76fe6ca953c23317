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
         WHERE i.inhparent = 'transactions'::regclass ORDER BY c.relname",
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

/// The month a partition name (`transactions_pYYYYMM`) stands for.
fn partition_month(name: &str) -> Option<DateTime<Utc>> {
    let digits = name.strip_prefix("transactions_p")?;
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
            partition_month("transactions_p202610").map(|m| m.to_rfc3339()),
            Some("2026-10-01T00:00:00+00:00".to_string())
        );
        assert_eq!(partition_month("transactions_p2026"), None);
        assert_eq!(partition_month("transactions_p202613"), None);
        assert_eq!(partition_month("usage_daily"), None);
    }
}
