//! The ledger export: one closed UTC month of ledger rows, as our own
//! Parquet schema (every column of [`Transaction`]) or as FOCUS
//! (`focus.rs`), in Parquet or CSV.
//!
//! Pure but for [`run`], the glue that pages through the ledger (db/export.rs)
//! and feeds a [`Sink`]: rows are read in keyset-ordered chunks and each
//! chunk becomes one Parquet row group (or its CSV lines) before the next is
//! read, so memory stays bounded by a chunk whatever the month's size.
//!
//! Money is exact: Parquet decimals are DECIMAL(38, 20) ([`DECIMAL_SCALE`]),
//! a value that does not fit fails the export instead of being rounded, and
//! CSV carries the exact decimal string.

pub mod csv;
pub mod focus;
pub mod parquet;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use ::parquet::errors::ParquetError;
use ::parquet::file::metadata::KeyValue;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;

use self::parquet::{Column, Kind, ParquetTable};

use crate::clock::Clock;
use crate::db::{self, ExportCursor, Transaction};

/// Digits of every Parquet decimal column (the most Decimal128 holds).
pub const DECIMAL_PRECISION: u8 = 38;
/// Fractional digits of every Parquet decimal column: costs are unrounded
/// (tokens × price per million / 10^6, times a discount), 20 places hold
/// every amount the pricing produces and leave 18 integer digits.
pub const DECIMAL_SCALE: i8 = 20;
/// Ledger rows read (and written as one row group) at a time.
pub const CHUNK_ROWS: i64 = 50_000;
/// Ledger rows per FOCUS Parquet row group (about three FOCUS rows each).
const FOCUS_GROUP_ROWS: usize = 10_000;
/// Who issues the invoices, unless `--invoice-issuer` says otherwise.
pub const DEFAULT_INVOICE_ISSUER: &str = "llm-billing";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("period {0:?} is not a month: expected YYYY-MM, e.g. 2026-10")]
    InvalidPeriod(String),
    #[error(
        "period {period} is not over yet: it ends at {} and it is now {}; \
         only a closed month can be exported",
        .end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        .now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    PeriodNotOver {
        period: Period,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error(
        "{column} = {value} (tenant {tenant_id}, request {request_id}) does not fit \
         DECIMAL({DECIMAL_PRECISION}, {DECIMAL_SCALE}); the export never rounds money"
    )]
    DecimalOutOfRange {
        column: &'static str,
        value: Decimal,
        tenant_id: String,
        request_id: String,
    },
    #[error(
        "ledger row of tenant {tenant_id}, request {request_id}: {problem}; \
         the export cannot split its cost exactly"
    )]
    InconsistentRow {
        tenant_id: String,
        request_id: String,
        problem: String,
    },
    #[error("the export does not add up to the ledger: {0}")]
    Mismatch(String),
    #[error("reading the ledger: {0}")]
    Db(#[from] sqlx::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("writing CSV: {0}")]
    Io(#[from] std::io::Error),
}

/// What `collector ledger export --format` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Our own schema: every ledger column.
    Parquet,
    /// FOCUS 1.1 cost and usage rows, CSV.
    FocusCsv,
    /// FOCUS 1.1 cost and usage rows, Parquet.
    FocusParquet,
}

impl ExportFormat {
    /// The file name `--output` defaults to.
    pub fn default_file_name(self, period: Period) -> String {
        match self {
            ExportFormat::Parquet => format!("ledger-{period}.parquet"),
            ExportFormat::FocusCsv => format!("ledger-{period}.focus.csv"),
            ExportFormat::FocusParquet => format!("ledger-{period}.focus.parquet"),
        }
    }
}

/// One UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    start: NaiveDate,
}

impl Period {
    /// `YYYY-MM`, nothing else.
    pub fn parse(text: &str) -> Result<Self, ExportError> {
        let bad = || ExportError::InvalidPeriod(text.to_owned());
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(year) || !digits(month) {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        let start = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        Ok(Self { start })
    }

    /// The month containing `at` (UTC).
    pub fn containing(at: DateTime<Utc>) -> Self {
        let d = at.date_naive();
        Self {
            start: d.with_day(1).unwrap_or(d),
        }
    }

    /// Inclusive start: the 1st, 00:00 UTC.
    pub fn start(&self) -> DateTime<Utc> {
        self.start.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// Exclusive end: the 1st of the next month, 00:00 UTC.
    pub fn end(&self) -> DateTime<Utc> {
        let next = self
            .start
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(NaiveDate::MAX);
        next.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// Refuses a month that is not over at `now`: rows may still arrive.
    pub fn ensure_closed(&self, now: DateTime<Utc>) -> Result<(), ExportError> {
        if now < self.end() {
            return Err(ExportError::PeriodNotOver {
                period: *self,
                end: self.end(),
                now,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.start.year(), self.start.month())
    }
}

/// Sums of one currency's rows (or of the unpriced rows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub rows: i64,
    pub cost: Decimal,
    pub reported_cost: Decimal,
    pub input_tokens: Decimal,
    pub output_tokens: Decimal,
    pub cache_read_tokens: Decimal,
    pub cache_write_tokens: Decimal,
    pub cache_write_1h_tokens: Decimal,
    pub reasoning_tokens: Decimal,
}

/// What a period of the ledger adds up to: the row count and the sums per
/// currency (key `None`: the unpriced rows). Sums are normalized, so two
/// totals compare equal exactly when their values are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    pub rows: i64,
    pub currencies: BTreeMap<Option<String>, CurrencyTotals>,
}

impl PeriodTotals {
    /// Adds one ledger row.
    pub fn add(&mut self, row: &Transaction) {
        self.rows += 1;
        let t = self.currencies.entry(row.currency.clone()).or_default();
        t.rows += 1;
        let sum = |a: &mut Decimal, b: Decimal| *a = (*a + b).normalize();
        sum(&mut t.cost, row.cost.unwrap_or_default());
        sum(&mut t.reported_cost, row.reported_cost.unwrap_or_default());
        sum(&mut t.input_tokens, row.input_tokens.into());
        sum(&mut t.output_tokens, row.output_tokens.into());
        sum(&mut t.cache_read_tokens, row.cache_read_tokens.into());
        sum(&mut t.cache_write_tokens, row.cache_write_tokens.into());
        sum(
            &mut t.cache_write_1h_tokens,
            row.cache_write_1h_tokens.into(),
        );
        sum(&mut t.reasoning_tokens, row.reasoning_tokens.into());
    }

    /// The priced rows' cost per currency.
    pub fn cost_by_currency(&self) -> BTreeMap<String, Decimal> {
        self.currencies
            .iter()
            .filter_map(|(c, t)| c.clone().map(|c| (c, t.cost)))
            .collect()
    }

    /// Rows without a price.
    pub fn unpriced_rows(&self) -> i64 {
        self.currencies.get(&None).map_or(0, |t| t.rows)
    }

    /// What the archive checks a month's partition against before it drops
    /// it (`db::archive_partition`): row count and priced cost per currency.
    pub fn month_totals(&self) -> db::MonthTotals {
        db::MonthTotals {
            rows: self.rows,
            cost: self.cost_by_currency(),
        }
    }
}

/// `value` as a Decimal128 of [`DECIMAL_SCALE`], or None when it would need
/// rounding or more than [`DECIMAL_PRECISION`] digits.
pub fn decimal_to_i128(value: Decimal) -> Option<i128> {
    let v = value.normalize();
    let scale = i8::try_from(v.scale()).ok()?;
    if scale > DECIMAL_SCALE {
        return None;
    }
    let factor = 10i128.checked_pow(u32::try_from(DECIMAL_SCALE - scale).ok()?)?;
    let scaled = v.mantissa().checked_mul(factor)?;
    (scaled.unsigned_abs() < 10u128.pow(u32::from(DECIMAL_PRECISION))).then_some(scaled)
}

/// One value of an exported row, for either writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Text(Cow<'a, str>),
    Int64(i64),
    Int32(i32),
    Bool(bool),
    Decimal(Decimal),
    Time(DateTime<Utc>),
    List(&'a [String]),
    Null,
}

impl<'a> Cell<'a> {
    pub fn text(s: &'a str) -> Self {
        Cell::Text(Cow::Borrowed(s))
    }

    pub fn opt_text(s: Option<&'a str>) -> Self {
        s.map_or(Cell::Null, Cell::text)
    }

    pub fn opt_decimal(d: Option<Decimal>) -> Self {
        d.map_or(Cell::Null, Cell::Decimal)
    }
}

/// Our own schema: every field of [`Transaction`], same names, same order.
pub const LEDGER_COLUMNS: [Column; 31] = [
    Column::new("request_id", Kind::Text, false),
    Column::new("tenant_id", Kind::Text, false),
    Column::new("api_key_id", Kind::Text, true),
    Column::new("provider", Kind::Text, false),
    Column::new("model", Kind::Text, true),
    Column::new("route", Kind::Text, true),
    Column::new("http_status", Kind::Int32, false),
    Column::new("streamed", Kind::Bool, false),
    Column::new("occurred_at", Kind::Time, false),
    Column::new("received_at", Kind::Time, false),
    Column::new("ttfb_ms", Kind::Int64, true),
    Column::new("duration_ms", Kind::Int64, true),
    Column::new("input_tokens", Kind::Int64, false),
    Column::new("output_tokens", Kind::Int64, false),
    Column::new("cache_read_tokens", Kind::Int64, false),
    Column::new("cache_write_tokens", Kind::Int64, false),
    Column::new("cache_write_1h_tokens", Kind::Int64, false),
    Column::new("reasoning_tokens", Kind::Int64, false),
    Column::new("status", Kind::Text, false),
    Column::new("currency", Kind::Text, true),
    Column::new("cost", Kind::Decimal, true),
    Column::new("cost_input", Kind::Decimal, true),
    Column::new("cost_cache_read", Kind::Decimal, true),
    Column::new("cost_cache_write", Kind::Decimal, true),
    Column::new("cost_output", Kind::Decimal, true),
    Column::new("cost_reasoning", Kind::Decimal, true),
    Column::new("cost_request_fee", Kind::Decimal, true),
    Column::new("cost_discount", Kind::Decimal, true),
    Column::new("price_version", Kind::Text, true),
    Column::new("reported_cost", Kind::Decimal, true),
    Column::new("flags", Kind::TextList, false),
];

/// A ledger row's values in [`LEDGER_COLUMNS`] order.
pub fn ledger_cells(r: &Transaction) -> [Cell<'_>; 31] {
    [
        Cell::text(&r.request_id),
        Cell::text(&r.tenant_id),
        Cell::opt_text(r.api_key_id.as_deref()),
        Cell::text(&r.provider),
        Cell::opt_text(r.model.as_deref()),
        Cell::opt_text(r.route.as_deref()),
        Cell::Int32(r.http_status),
        Cell::Bool(r.streamed),
        Cell::Time(r.occurred_at),
        Cell::Time(r.received_at),
        r.ttfb_ms.map_or(Cell::Null, Cell::Int64),
        r.duration_ms.map_or(Cell::Null, Cell::Int64),
        Cell::Int64(r.input_tokens),
        Cell::Int64(r.output_tokens),
        Cell::Int64(r.cache_read_tokens),
        Cell::Int64(r.cache_write_tokens),
        Cell::Int64(r.cache_write_1h_tokens),
        Cell::Int64(r.reasoning_tokens),
        Cell::text(&r.status),
        Cell::opt_text(r.currency.as_deref()),
        Cell::opt_decimal(r.cost),
        Cell::opt_decimal(r.cost_input),
        Cell::opt_decimal(r.cost_cache_read),
        Cell::opt_decimal(r.cost_cache_write),
        Cell::opt_decimal(r.cost_output),
        Cell::opt_decimal(r.cost_reasoning),
        Cell::opt_decimal(r.cost_request_fee),
        Cell::opt_decimal(r.cost_discount),
        Cell::opt_text(r.price_version.as_deref()),
        Cell::opt_decimal(r.reported_cost),
        Cell::List(&r.flags),
    ]
}

/// Where the rows of an export go.
pub enum Sink<W: Write + Send> {
    Ledger(ParquetTable<W>),
    FocusParquet(ParquetTable<W>, focus::Context, focus::Tally),
    FocusCsv(csv::CsvWriter<W>, focus::Context, focus::Tally),
}

impl<W: Write + Send> Sink<W> {
    pub fn new(
        format: ExportFormat,
        out: W,
        period: Period,
        invoice_issuer: &str,
    ) -> Result<Self, ExportError> {
        let meta = |schema: &str| {
            vec![
                KeyValue::new("llm_billing.period".into(), period.to_string()),
                KeyValue::new("llm_billing.schema".into(), schema.to_owned()),
            ]
        };
        let context = focus::Context::new(period, invoice_issuer);
        Ok(match format {
            ExportFormat::Parquet => Sink::Ledger(ParquetTable::new(
                out,
                "ledger",
                &LEDGER_COLUMNS,
                meta("ledger-v1"),
            )?),
            ExportFormat::FocusParquet => Sink::FocusParquet(
                ParquetTable::new(out, "focus", &focus::COLUMNS, meta("focus-1.1"))?,
                context,
                focus::Tally::default(),
            ),
            ExportFormat::FocusCsv => Sink::FocusCsv(
                csv::CsvWriter::new(out, focus::column_names())?,
                context,
                focus::Tally::default(),
            ),
        })
    }

    /// Writes one chunk of ledger rows (one Parquet row group); returns the
    /// rows written.
    pub fn write(&mut self, rows: &[Transaction]) -> Result<u64, ExportError> {
        match self {
            Sink::Ledger(w) => {
                let cells: Vec<_> = rows.iter().map(ledger_cells).collect();
                let keys: Vec<_> = rows.iter().map(key_of).collect();
                w.write(&cells, &keys)?;
                Ok(rows.len() as u64)
            }
            Sink::FocusParquet(w, context, tally) => {
                // A ledger row makes up to six FOCUS rows of 40 cells: row
                // groups of fewer ledger rows keep the cells in memory small.
                let mut written = 0;
                for part in rows.chunks(FOCUS_GROUP_ROWS) {
                    let charges = focus::rows_of(part)?;
                    tally.add(&charges);
                    if !charges.is_empty() {
                        let cells: Vec<_> =
                            charges.iter().map(|c| focus::cells(c, context)).collect();
                        let keys: Vec<_> = charges.iter().map(|c| key_of(c.row)).collect();
                        w.write(&cells, &keys)?;
                    }
                    written += charges.len() as u64;
                }
                Ok(written)
            }
            Sink::FocusCsv(w, context, tally) => {
                let focus_rows = focus::rows_of(rows)?;
                tally.add(&focus_rows);
                for row in &focus_rows {
                    w.write_record(&focus::cells(row, context))?;
                }
                Ok(focus_rows.len() as u64)
            }
        }
    }

    /// Checks what was written against the ledger's totals of the period:
    /// FOCUS BilledCost must add up to the priced cost of each currency.
    pub fn check(&self, ledger: &PeriodTotals) -> Result<(), ExportError> {
        match self {
            Sink::Ledger(_) => Ok(()),
            Sink::FocusParquet(_, _, tally) | Sink::FocusCsv(_, _, tally) => {
                let expected = ledger.cost_by_currency();
                if tally.billed_cost != expected {
                    return Err(ExportError::Mismatch(format!(
                        "FOCUS BilledCost per currency {:?}, ledger cost {:?}",
                        tally.billed_cost, expected
                    )));
                }
                Ok(())
            }
        }
    }

    /// Completes the file (Parquet footer, CSV flush) and hands the output back.
    pub fn finish(self) -> Result<W, ExportError> {
        match self {
            Sink::Ledger(w) | Sink::FocusParquet(w, _, _) => w.finish(),
            Sink::FocusCsv(w, _, _) => Ok(w.into_inner()?),
        }
    }
}

fn key_of(row: &Transaction) -> parquet::RowKey<'_> {
    (&row.tenant_id, &row.request_id)
}

/// What an export wrote, and what the ledger holds for the period.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub period: Period,
    pub format: ExportFormat,
    /// Rows in the file (FOCUS: one per charged cost component).
    pub rows_written: u64,
    /// The ledger's totals of the period, in the snapshot the export read.
    pub ledger: PeriodTotals,
}

impl ExportReport {
    /// Ledger rows that a FOCUS export leaves out (no price, no charge).
    pub fn unpriced_rows_left_out(&self) -> i64 {
        match self.format {
            ExportFormat::Parquet => 0,
            ExportFormat::FocusCsv | ExportFormat::FocusParquet => self.ledger.unpriced_rows(),
        }
    }
}

/// One export: what, in which format, read how many rows at a time.
#[derive(Debug, Clone)]
pub struct Job {
    pub period: Period,
    pub format: ExportFormat,
    pub invoice_issuer: String,
    /// Ledger rows per read and per row group ([`CHUNK_ROWS`]).
    pub chunk_rows: i64,
}

impl Job {
    pub fn new(period: Period, format: ExportFormat) -> Self {
        Self {
            period,
            format,
            invoice_issuer: DEFAULT_INVOICE_ISSUER.to_owned(),
            chunk_rows: CHUNK_ROWS,
        }
    }
}

/// Runs `job` into `out`: refuses a month that is not over by `clock`,
/// reads it chunk by chunk in one snapshot, and checks the rows it read
/// (and FOCUS's BilledCost) against the snapshot's totals of the period.
pub async fn run<W: Write + Send>(
    pool: &sqlx::PgPool,
    clock: &Clock,
    job: &Job,
    out: W,
) -> Result<(ExportReport, W), ExportError> {
    let period = job.period;
    period.ensure_closed(clock.now())?;
    let (start, end) = (period.start(), period.end());
    let chunk = job.chunk_rows.max(1);
    let mut sink = Sink::new(job.format, out, period, &job.invoice_issuer)?;
    let mut snapshot = db::begin_export_snapshot(pool).await?;
    let mut read = PeriodTotals::default();
    let mut rows_written = 0;
    let mut after: Option<ExportCursor> = None;
    loop {
        let rows = db::export_page(&mut snapshot, start, end, after.as_ref(), chunk).await?;
        for row in &rows {
            read.add(row);
        }
        if !rows.is_empty() {
            rows_written += sink.write(&rows)?;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 >= chunk => after = Some(ExportCursor::after(last)),
            _ => break,
        }
    }
    let ledger = db::period_totals(&mut snapshot, start, end).await?;
    snapshot.rollback().await?;
    if read != ledger {
        return Err(ExportError::Mismatch(format!(
            "read {read:?} but the period holds {ledger:?}"
        )));
    }
    sink.check(&ledger)?;
    let out = sink.finish()?;
    Ok((
        ExportReport {
            period,
            format: job.format,
            rows_written,
            ledger,
        },
        out,
    ))
}

#[cfg(test)]
pub(crate) mod tests;
