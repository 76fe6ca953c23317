use std::sync::LazyLock;

use chrono::{DateTime, DurationRound, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::cursor::Position;
use crate::ingest::UsageRecord;

/// The price a record was charged at, with its breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedPrice {
    pub price_id: i64,
    pub version: String,
    pub currency: String,
    pub total: Decimal,
    pub input: Decimal,
    pub cache_read: Decimal,
    pub cache_write: Decimal,
    pub output: Decimal,
    pub reasoning: Decimal,
    pub request_fee: Decimal,
    pub discount: Decimal,
}

/// A validated record and its price (None: stored as `unpriced`).
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub record: UsageRecord,
    pub price: Option<AppliedPrice>,
}

impl LedgerEntry {
    /// The ledger row this entry becomes.
    pub fn key(&self) -> LedgerKey {
        let r = &self.record;
        (r.tenant_id.clone(), r.request_id.clone(), r.occurred_at())
    }
}

/// A rollup table maintained from the ledger rows a statement actually
/// changed (CTE `changed`), so duplicates never count twice. Dimensions are
/// NOT NULL (NULL folded to '') so they can be part of the key.
struct Rollup {
    table: &'static str,
    /// Filled by the fold (migration 0011): a statement touches it only for
    /// rows whose hour is already folded; the fold adds the rest later.
    folded: bool,
    /// Kept only from a watermark on (migration 0022): a statement touches
    /// it only for rows at or after `rollup_fold.hourly_from`.
    pruned: bool,
    /// Time bucket column and its expression over a ledger row.
    bucket: (&'static str, &'static str),
    /// Grouping columns besides tenant and bucket, with their expressions.
    dims: &'static [(&'static str, &'static str)],
}

const ALL_DIMS: &[(&str, &str)] = &[
    ("api_key_id", "coalesce(api_key_id, '')"),
    ("provider", "provider"),
    ("model", "coalesce(model, '')"),
    ("status", "status"),
    ("currency", "coalesce(currency, '')"),
];

const UTC_DAY: &str = "(occurred_at AT TIME ZONE 'UTC')::date";

/// Every rollup of the ledger: whatever moves one moves all.
const ROLLUPS: [Rollup; 3] = [
    Rollup {
        table: "usage_hourly",
        folded: false,
        pruned: true,
        bucket: ("hour", "date_trunc('hour', occurred_at, 'UTC')"),
        dims: ALL_DIMS,
    },
    Rollup {
        table: "usage_daily",
        folded: true,
        pruned: false,
        bucket: ("day", UTC_DAY),
        dims: ALL_DIMS,
    },
    Rollup {
        table: "usage_tenant_daily",
        folded: true,
        pruned: false,
        bucket: ("day", UTC_DAY),
        dims: &[("status", "status"), ("currency", "coalesce(currency, '')")],
    },
];

/// The ledger columns the rollup aggregates read: the insert returns only
/// these into `changed`, not the whole row.
const ROLLUP_INPUT: &str = "tenant_id, occurred_at, api_key_id, provider, model, status, \
    currency, http_status, flags, input_tokens, output_tokens, cache_read_tokens, \
    cache_write_tokens, reasoning_tokens, cost, reported_cost";

/// Rollup columns and their aggregate over ledger rows.
const METRICS: &[(&str, &str)] = &[
    ("requests", "count(*)"),
    (
        "error_requests",
        "count(*) FILTER (WHERE http_status >= 400)",
    ),
    (
        "incomplete_requests",
        "count(*) FILTER (WHERE 'incomplete' = ANY(flags))",
    ),
    ("input_tokens", "sum(input_tokens)"),
    ("output_tokens", "sum(output_tokens)"),
    ("cache_read_tokens", "sum(cache_read_tokens)"),
    ("cache_write_tokens", "sum(cache_write_tokens)"),
    ("reasoning_tokens", "sum(reasoning_tokens)"),
    ("cost", "coalesce(sum(cost), 0)"),
    ("reported_cost", "coalesce(sum(reported_cost), 0)"),
];

impl Rollup {
    fn key_columns(&self) -> Vec<&'static str> {
        let mut k = vec!["tenant_id", self.bucket.0];
        k.extend(self.dims.iter().map(|d| d.0));
        k
    }

    /// `SELECT` of the rollup rows of `changed`, aliased by column name.
    fn aggregate(&self) -> String {
        // Hours at or after the watermark reach a folded table through the
        // fold only. Callers hold the shared fold lock (see `lock_for_write`),
        // so the watermark cannot move under the statement.
        let only = if self.folded {
            " WHERE occurred_at < (SELECT folded_before FROM rollup_fold)"
        } else if self.pruned {
            " WHERE occurred_at >= (SELECT hourly_from FROM rollup_fold)"
        } else {
            ""
        };
        self.grouped(
            &format!("changed{only}"),
            self.bucket.1,
            |(c, e)| format!("{e} AS {c}"),
            |(c, e)| format!("{e} AS {c}"),
            "",
        )
    }

    /// Adds the rows of `changed`. The ORDER BY keeps lock order stable
    /// across concurrent batches.
    fn upsert(&self) -> String {
        self.add(&self.aggregate())
    }

    /// Adds the hourly groups with $1 <= hour < $2 to a folded table.
    fn fold(&self) -> String {
        self.add(&self.grouped(
            "usage_hourly WHERE hour >= $1 AND hour < $2",
            "(hour AT TIME ZONE 'UTC')::date",
            |(c, _)| c.to_string(),
            |(c, _)| format!("sum({c}) AS {c}"),
            " HAVING sum(requests) <> 0",
        ))
    }

    /// `SELECT` of this rollup's key (tenant, `bucket`, dimensions) and
    /// metrics from `source`, grouped and ordered by the key.
    fn grouped(
        &self,
        source: &str,
        bucket: &str,
        dim: fn(&(&str, &str)) -> String,
        metric: fn(&(&str, &str)) -> String,
        having: &str,
    ) -> String {
        let mut cols = vec![
            "tenant_id".to_string(),
            format!("{bucket} AS {}", self.bucket.0),
        ];
        cols.extend(self.dims.iter().map(dim));
        let n = cols.len();
        cols.extend(METRICS.iter().map(metric));
        let by = (1..=n)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {} FROM {source} GROUP BY {by}{having} ORDER BY {by}",
            cols.join(", ")
        )
    }

    /// `INSERT` of the rows of `select` (key columns, then metrics), adding
    /// them to the groups that exist.
    fn add(&self, select: &str) -> String {
        let key = self.key_columns().join(", ");
        let metrics = METRICS.iter().map(|m| m.0).collect::<Vec<_>>().join(", ");
        let set = METRICS
            .iter()
            .map(|(c, _)| format!("{c} = {t}.{c} + EXCLUDED.{c}", t = self.table))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {t} ({key}, {metrics}) {select} ON CONFLICT ({key}) DO UPDATE SET {set}",
            t = self.table
        )
    }

    /// Subtracts the rows of `changed` from the groups they were counted in.
    fn subtract(&self) -> String {
        let set = METRICS
            .iter()
            .map(|(c, _)| format!("{c} = u.{c} - d.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let on = self
            .key_columns()
            .iter()
            .map(|c| format!("u.{c} = d.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "UPDATE {t} u SET {set} FROM ({agg}) d WHERE {on}",
            t = self.table,
            agg = self.aggregate()
        )
    }

    /// Deletes the emptied unpriced groups of the buckets of `keys`
    /// (tenant_id, occurred_at), through the key index rather than a scan.
    fn delete_empty_unpriced(&self) -> String {
        format!(
            "DELETE FROM {t} u USING (SELECT DISTINCT tenant_id, {e} AS b FROM keys) k
             WHERE u.tenant_id = k.tenant_id AND u.{b} = k.b AND u.status = 'unpriced'
               AND u.requests = 0",
            t = self.table,
            b = self.bucket.0,
            e = self.bucket.1
        )
    }
}

/// `, rollup_0 AS (...), rollup_1 AS (...)`: one data-modifying CTE per
/// rollup, each built by `f` over the CTE `changed`.
fn rollup_ctes(f: fn(&Rollup) -> String) -> String {
    ROLLUPS
        .iter()
        .enumerate()
        .map(|(i, r)| format!(", rollup_{i} AS ({})", f(r)))
        .collect()
}

static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                $6::text[], $7::text[], $8::int4[], $9::bool[], $10::int8[], $11::int8[],
                $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[],
                $18::text[], $19::text[], $20::numeric[], $21::numeric[], $22::numeric[],
                $23::numeric[], $24::numeric[], $25::numeric[], $26::numeric[], $27::numeric[],
                $28::int8[], $29::text[], $30::numeric[], $31::text[])
            AS t(tenant_id, request_id, occurred_at, api_key_id, provider, model, route,
                http_status, streamed, ttfb_ms, duration_ms, input_tokens, output_tokens,
                cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens,
                status, currency, cost, cost_input, cost_cache_read, cost_cache_write,
                cost_output, cost_reasoning, cost_request_fee, cost_discount, price_id,
                price_version, reported_cost, flags)
        ), changed AS (
            INSERT INTO transactions (tenant_id, request_id, occurred_at, api_key_id, provider,
                model, route, http_status, streamed, ttfb_ms, duration_ms, input_tokens,
                output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
                reasoning_tokens, status, currency, cost, cost_input, cost_cache_read,
                cost_cache_write, cost_output, cost_reasoning, cost_request_fee, cost_discount,
                price_id, price_version, reported_cost, flags)
            SELECT tenant_id, request_id, occurred_at, api_key_id, provider, model, route,
                http_status, streamed, ttfb_ms, duration_ms, input_tokens, output_tokens,
                cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens,
                status, currency, cost, cost_input, cost_cache_read, cost_cache_write,
                cost_output, cost_reasoning, cost_request_fee, cost_discount, price_id,
                price_version, reported_cost, string_to_array(flags, ',')
            FROM input
            ON CONFLICT (tenant_id, occurred_at, request_id) DO NOTHING
            RETURNING request_id, {ROLLUP_INPUT}
        ){rollups}
        SELECT tenant_id, request_id, occurred_at FROM changed",
        rollups = rollup_ctes(Rollup::upsert)
    )
});

/// Takes the rows of the keys ($1 tenant, $2 request id, $3 occurred_at;
/// still unpriced) out of their unpriced rollup groups.
static UNPRICED_OUT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH changed AS (
            SELECT t.* FROM transactions t
            JOIN UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS k(tenant_id, request_id, occurred_at)
              USING (tenant_id, request_id, occurred_at)
         ){rollups}
         SELECT 1",
        rollups = rollup_ctes(Rollup::subtract)
    )
});

/// Deletes the unpriced groups the previous statement emptied.
static UNPRICED_EMPTY_SQL: LazyLock<String> = LazyLock::new(|| {
    let deletes: String = ROLLUPS
        .iter()
        .enumerate()
        .map(|(i, r)| format!(", rollup_{i} AS ({})", r.delete_empty_unpriced()))
        .collect();
    format!(
        "WITH keys AS (
            SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) AS k(tenant_id, occurred_at)
         ){deletes}
         SELECT 1"
    )
});

/// Prices the keys' rows and adds them to their priced rollup groups.
static PRICE_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $14::timestamptz[], $3::int8[],
                $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::numeric[],
                $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[])
            AS k(tenant_id, request_id, occurred_at, price_id, price_version, currency, cost, cost_input,
                cost_cache_read, cost_cache_write, cost_output, cost_reasoning,
                cost_request_fee, cost_discount)
         ), changed AS (
            UPDATE transactions t SET status = 'priced', price_id = k.price_id,
                price_version = k.price_version, currency = k.currency, cost = k.cost,
                cost_input = k.cost_input, cost_cache_read = k.cost_cache_read,
                cost_cache_write = k.cost_cache_write, cost_output = k.cost_output,
                cost_reasoning = k.cost_reasoning, cost_request_fee = k.cost_request_fee,
                cost_discount = k.cost_discount
            FROM input k
            WHERE t.tenant_id = k.tenant_id AND t.request_id = k.request_id
              AND t.occurred_at = k.occurred_at AND t.status = 'unpriced'
            RETURNING t.*
         ){rollups}
         SELECT count(*) FROM changed",
        rollups = rollup_ctes(Rollup::upsert)
    )
});

/// Advisory lock key shared by rollup writers and the fold ("rollfold").
const ROLLUP_FOLD_LOCK: i64 = 0x726f_6c6c_666f_6c64;

/// Taken (shared) by every transaction that writes rollups, before its
/// first statement so that statement's snapshot sees the current watermark;
/// writers never wait for each other, only for a running fold.
async fn lock_for_write(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(ROLLUP_FOLD_LOCK)
        .execute(tx)
        .await
        .map(|_| ())
}

static FOLD_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    ROLLUPS
        .iter()
        .filter(|r| r.folded)
        .map(Rollup::fold)
        .collect()
});

/// At most this much is folded per call: writers wait while a fold runs, so
/// catching up after a long outage goes a day at a time.
const FOLD_STEP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Adds the closed hours before `before` (rounded down to the hour; at most
/// [`FOLD_STEP`] of them) that are not folded yet to the daily rollups and
/// moves the watermark past them. Returns the new watermark, or None when
/// there was nothing to fold. Replicas may all call it: the exclusive lock
/// serializes them and the later ones find nothing left.
#[tracing::instrument(skip_all)]
pub async fn fold_rollups(
    pool: &PgPool,
    before: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let before = before
        .duration_trunc(chrono::TimeDelta::hours(1))
        .unwrap_or(before);
    // Cheap check without the lock, which would briefly hold up ingest.
    if folded_before(pool).await? >= before {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLLUP_FOLD_LOCK)
        .execute(&mut *tx)
        .await?;
    let from = folded_before(&mut *tx).await?;
    if from >= before {
        return Ok(None);
    }
    let before = before.min(from + FOLD_STEP);
    for sql in FOLD_SQL.iter() {
        sqlx::query(sql)
            .bind(from)
            .bind(before)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE rollup_fold SET folded_before = $1")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(before))
}

/// Moves the hourly rollup's watermark (migration 0022) to `keep_from`
/// rounded down to the hour, never past the fold watermark (an hour leaves
/// the hourly rollup only once the daily ones hold it) and at most a day
/// per call, deleting the hours before it. Returns the new watermark, or
/// None when there was nothing to prune.
#[tracing::instrument(skip_all)]
pub async fn prune_hourly(
    pool: &PgPool,
    keep_from: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let keep_from = keep_from
        .duration_trunc(chrono::TimeDelta::hours(1))
        .unwrap_or(keep_from);
    let (hourly_from, folded): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT hourly_from, folded_before FROM rollup_fold")
            .fetch_one(pool)
            .await?;
    if hourly_from >= keep_from.min(folded) {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLLUP_FOLD_LOCK)
        .execute(&mut *tx)
        .await?;
    let (hourly_from, oldest, folded): (DateTime<Utc>, Option<DateTime<Utc>>, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT hourly_from, (SELECT min(hour) FROM usage_hourly), folded_before
             FROM rollup_fold",
        )
        .fetch_one(&mut *tx)
        .await?;
    let target = keep_from.min(folded);
    if hourly_from >= target {
        return Ok(None);
    }
    // A day of held hours per call; hours nobody holds are skipped at once.
    let to = match oldest {
        Some(oldest) if oldest < target => target.min(oldest.max(hourly_from) + FOLD_STEP),
        _ => target,
    };
    sqlx::query("DELETE FROM usage_hourly WHERE hour < $1")
        .bind(to)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE rollup_fold SET hourly_from = $1")
        .bind(to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(to))
}

/// Summarizes the ledger's time index over the block ranges filled since
/// the last call (a range not summarized yet matches every time window, so
/// an all-tenant page would read it whole), in every partition. Returns the
/// ranges summarized.
pub async fn summarize_time_index(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(brin_summarize_new_values(i.inhrelid)), 0)::int8
         FROM pg_inherits i WHERE i.inhparent = 'transactions_time_brin'::regclass",
    )
    .fetch_one(pool)
    .await
}

/// The daily rollups hold exactly the hours before this.
pub async fn folded_before(db: impl sqlx::PgExecutor<'_>) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT folded_before FROM rollup_fold")
        .fetch_one(db)
        .await
}

/// What a ledger insert did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertOutcome {
    /// The (tenant_id, request_id, occurred_at) keys actually inserted; the
    /// others were duplicates.
    pub inserted: Vec<LedgerKey>,
    /// Budget reservations of the batch's requests deleted with it.
    pub released: u64,
}

/// [`insert_batch_releasing`], keeping only the inserted keys.
pub async fn insert_batch<E: std::borrow::Borrow<LedgerEntry>>(
    pool: &PgPool,
    entries: &[E],
) -> Result<Vec<LedgerKey>, sqlx::Error> {
    insert_batch_releasing(pool, entries)
        .await
        .map(|o| o.inserted)
}

/// Inserts a batch in one statement: ledger rows that are new, plus the
/// rollup for exactly those rows. In the same transaction, deletes the
/// budget reservations (same tenant_id and request_id) of every record of
/// the batch, duplicates included: a reader of spend and reservations in one
/// snapshot sees each request either as its reservation or as its ledger
/// row, never both, never neither.
///
/// The key includes the start time: the filter resends a record unchanged,
/// so retries collide, while a client that reuses an `x-request-id` for a
/// new request still gets a row per request.
#[tracing::instrument(skip_all, fields(records = entries.len()))]
pub async fn insert_batch_releasing<E: std::borrow::Borrow<LedgerEntry>>(
    pool: &PgPool,
    entries: &[E],
) -> Result<InsertOutcome, sqlx::Error> {
    if entries.is_empty() {
        return Ok(InsertOutcome::default());
    }
    // A fixed row order keeps lock order stable across concurrent batches.
    let mut sorted: Vec<&LedgerEntry> = entries.iter().map(|e| e.borrow()).collect();
    sorted.sort_by(|a, b| {
        (
            &a.record.tenant_id,
            &a.record.request_id,
            a.record.started_at_ms,
        )
            .cmp(&(
                &b.record.tenant_id,
                &b.record.request_id,
                b.record.started_at_ms,
            ))
    });
    let n = sorted.len();
    let mut c = Columns::with_capacity(n);
    for entry in sorted {
        c.push(entry);
    }
    let mut tx = pool.begin().await?;
    lock_for_write(&mut tx).await?;
    super::partitions::ensure_for(&mut tx, &c.occurred_at).await?;
    let rows = sqlx::query(&INSERT_SQL)
        .bind(&c.tenant_id)
        .bind(&c.request_id)
        .bind(&c.occurred_at)
        .bind(&c.api_key_id)
        .bind(&c.provider)
        .bind(&c.model)
        .bind(&c.route)
        .bind(&c.http_status)
        .bind(&c.streamed)
        .bind(&c.ttfb_ms)
        .bind(&c.duration_ms)
        .bind(&c.input_tokens)
        .bind(&c.output_tokens)
        .bind(&c.cache_read_tokens)
        .bind(&c.cache_write_tokens)
        .bind(&c.cache_write_1h_tokens)
        .bind(&c.reasoning_tokens)
        .bind(&c.status)
        .bind(&c.currency)
        .bind(&c.cost)
        .bind(&c.cost_input)
        .bind(&c.cost_cache_read)
        .bind(&c.cost_cache_write)
        .bind(&c.cost_output)
        .bind(&c.cost_reasoning)
        .bind(&c.cost_request_fee)
        .bind(&c.cost_discount)
        .bind(&c.price_id)
        .bind(&c.price_version)
        .bind(&c.reported_cost)
        .bind(&c.flags)
        .fetch_all(&mut *tx)
        .await?;
    let tenants: Vec<&str> = c.tenant_id.iter().map(String::as_str).collect();
    let requests: Vec<&str> = c.request_id.iter().map(String::as_str).collect();
    let released = super::reservations::release_reservations(&mut tx, &tenants, &requests).await?;
    tx.commit().await?;
    let inserted = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("tenant_id")?,
                r.try_get("request_id")?,
                r.try_get("occurred_at")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(InsertOutcome { inserted, released })
}

/// Column-wise arrays for UNNEST.
#[derive(Default)]
struct Columns {
    tenant_id: Vec<String>,
    request_id: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    api_key_id: Vec<Option<String>>,
    provider: Vec<String>,
    model: Vec<Option<String>>,
    route: Vec<Option<String>>,
    http_status: Vec<i32>,
    streamed: Vec<bool>,
    ttfb_ms: Vec<Option<i64>>,
    duration_ms: Vec<Option<i64>>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    cache_read_tokens: Vec<i64>,
    cache_write_tokens: Vec<i64>,
    cache_write_1h_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    status: Vec<&'static str>,
    currency: Vec<Option<String>>,
    cost: Vec<Option<Decimal>>,
    cost_input: Vec<Option<Decimal>>,
    cost_cache_read: Vec<Option<Decimal>>,
    cost_cache_write: Vec<Option<Decimal>>,
    cost_output: Vec<Option<Decimal>>,
    cost_reasoning: Vec<Option<Decimal>>,
    cost_request_fee: Vec<Option<Decimal>>,
    cost_discount: Vec<Option<Decimal>>,
    price_id: Vec<Option<i64>>,
    price_version: Vec<Option<String>>,
    reported_cost: Vec<Option<Decimal>>,
    flags: Vec<String>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Columns {
    fn with_capacity(_n: usize) -> Self {
        Self::default()
    }

    fn push(&mut self, entry: &LedgerEntry) {
        let r = &entry.record;
        self.tenant_id.push(r.tenant_id.clone());
        self.request_id.push(r.request_id.clone());
        self.occurred_at.push(r.occurred_at());
        self.api_key_id.push(r.api_key_id.clone());
        self.provider.push(r.provider.clone());
        self.model.push(r.model.clone());
        self.route.push(r.route.clone());
        self.http_status.push(i32::from(r.http_status));
        self.streamed.push(r.streamed);
        self.ttfb_ms.push(r.ttfb_ms.map(to_i64));
        self.duration_ms.push(r.duration_ms.map(to_i64));
        self.input_tokens.push(to_i64(r.input_tokens));
        self.output_tokens.push(to_i64(r.output_tokens));
        self.cache_read_tokens.push(to_i64(r.cache_read_tokens));
        self.cache_write_tokens.push(to_i64(r.cache_write_tokens));
        self.cache_write_1h_tokens
            .push(to_i64(r.cache_write_1h_tokens));
        self.reasoning_tokens.push(to_i64(r.reasoning_tokens));
        self.reported_cost.push(r.reported_cost);
        self.flags.push(r.flags.join(","));
        let p = entry.price.as_ref();
        self.status
            .push(if p.is_some() { "priced" } else { "unpriced" });
        self.currency.push(p.map(|p| p.currency.clone()));
        self.cost.push(p.map(|p| p.total));
        self.cost_input.push(p.map(|p| p.input));
        self.cost_cache_read.push(p.map(|p| p.cache_read));
        self.cost_cache_write.push(p.map(|p| p.cache_write));
        self.cost_output.push(p.map(|p| p.output));
        self.cost_reasoning.push(p.map(|p| p.reasoning));
        self.cost_request_fee.push(p.map(|p| p.request_fee));
        self.cost_discount.push(p.map(|p| p.discount));
        self.price_id.push(p.map(|p| p.price_id));
        self.price_version.push(p.map(|p| p.version.clone()));
    }
}

/// One ledger row as the query API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Transaction {
    pub request_id: String,
    pub tenant_id: String,
    pub api_key_id: Option<String>,
    pub provider: String,
    pub model: Option<String>,
    pub route: Option<String>,
    pub http_status: i32,
    pub streamed: bool,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub ttfb_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub reasoning_tokens: i64,
    pub status: String,
    pub currency: Option<String>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_input: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_cache_read: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_cache_write: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_output: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_reasoning: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_request_fee: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cost_discount: Option<Decimal>,
    pub price_version: Option<String>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub reported_cost: Option<Decimal>,
    pub flags: Vec<String>,
}

/// Filters shared by the transaction and summary queries. `None` = any.
#[derive(Debug, Clone, Default)]
pub struct LedgerFilter {
    pub tenant_id: Option<String>,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

fn push_filters(q: &mut QueryBuilder<'_, Postgres>, f: &LedgerFilter) {
    if let Some(v) = &f.tenant_id {
        q.push(" AND tenant_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.api_key_id {
        q.push(" AND api_key_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.model {
        q.push(" AND model = ").push_bind(v.clone());
    }
    if let Some(v) = &f.provider {
        q.push(" AND provider = ").push_bind(v.clone());
    }
    if let Some(v) = &f.status {
        q.push(" AND status = ").push_bind(v.clone());
    }
    if let Some(v) = f.start {
        q.push(" AND occurred_at >= ").push_bind(v);
    }
    if let Some(v) = f.end {
        q.push(" AND occurred_at < ").push_bind(v);
    }
}

/// How far back from its newest possible row an all-tenant page looks
/// before widening: 1 hour, 1 day, 31 days, 366 days, then everything.
const PAGE_WINDOWS_HOURS: [i64; 4] = [1, 24, 31 * 24, 366 * 24];

/// Newest first, keyset paginated.
///
/// A tenant's page walks the ledger key (tenant, time, request id) backwards. Across tenants
/// the time index is BRIN, which finds a time range but does not order it,
/// so the page is read from growing windows [from, ...): a window that holds
/// `limit` rows holds the page, since every row before it sorts after.
#[tracing::instrument(skip_all)]
pub async fn list_transactions(
    pool: &PgPool,
    filter: &LedgerFilter,
    after: Option<&Position>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Transaction>, sqlx::Error> {
    if filter.tenant_id.is_none() {
        let newest = [after.map(|c| c.occurred_at), filter.end]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
        for hours in PAGE_WINDOWS_HOURS {
            let from = newest - chrono::Duration::hours(hours);
            if filter.start.is_some_and(|s| s >= from) {
                break;
            }
            let rows = list_page(pool, filter, after, limit, Some(from)).await?;
            if rows.len() as i64 >= limit {
                return Ok(rows);
            }
        }
    }
    list_page(pool, filter, after, limit, None).await
}

async fn list_page(
    pool: &PgPool,
    filter: &LedgerFilter,
    after: Option<&Position>,
    limit: i64,
    from: Option<DateTime<Utc>>,
) -> Result<Vec<Transaction>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT request_id, tenant_id, api_key_id, provider, model, route, http_status,
            streamed, occurred_at, received_at, ttfb_ms, duration_ms, input_tokens,
            output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
            reasoning_tokens, status, currency, cost, cost_input, cost_cache_read,
            cost_cache_write, cost_output, cost_reasoning, cost_request_fee, cost_discount,
            price_version, reported_cost, flags
         FROM transactions WHERE true",
    );
    push_filters(&mut q, filter);
    if let Some(from) = from {
        q.push(" AND occurred_at >= ").push_bind(from);
    }
    // The position is the reader's own: (time, tenant, request id), the
    // ledger key's columns, never a global row id. With one tenant the
    // tenant column is constant and the key is walked backwards from it.
    if let Some(c) = after {
        q.push(" AND occurred_at <= ").push_bind(c.occurred_at);
        if filter.tenant_id.is_some() {
            q.push(" AND (occurred_at, request_id) < (")
                .push_bind(c.occurred_at)
                .push(", ")
                .push_bind(c.request_id.clone())
                .push(")");
        } else {
            q.push(" AND (occurred_at, tenant_id, request_id) < (")
                .push_bind(c.occurred_at)
                .push(", ")
                .push_bind(c.tenant_id.clone())
                .push(", ")
                .push_bind(c.request_id.clone())
                .push(")");
        }
    }
    q.push(" ORDER BY occurred_at DESC, tenant_id DESC, request_id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as::<Transaction>().fetch_all(pool).await
}

/// A ledger row's identity: (tenant_id, request_id, occurred_at).
pub type LedgerKey = (String, String, DateTime<Utc>);

/// One repricing step: rows looked at, rows priced, and the
/// key to continue after (None when done).
#[derive(Debug)]
pub struct RepriceProgress {
    pub examined: usize,
    pub priced: usize,
    pub next: Option<LedgerKey>,
}

/// An unpriced row waiting for a price.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnpricedRow {
    pub tenant_id: String,
    pub request_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub reasoning_tokens: i64,
}

/// Prices up to `limit` unpriced rows with `price_of`, moving their usage
/// from the unpriced to the priced rollup in the same transaction. Returns
/// how far it got.
#[tracing::instrument(skip_all)]
pub async fn reprice_batch<F>(
    pool: &PgPool,
    after: &LedgerKey,
    limit: i64,
    price_of: F,
) -> Result<RepriceProgress, sqlx::Error>
where
    F: Fn(&UnpricedRow) -> Option<AppliedPrice>,
{
    let mut tx = pool.begin().await?;
    lock_for_write(&mut tx).await?;
    let rows: Vec<UnpricedRow> = sqlx::query_as(
        "SELECT tenant_id, request_id, provider, model, occurred_at, input_tokens, output_tokens,
            cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens
         FROM transactions
         WHERE status = 'unpriced' AND (tenant_id, request_id, occurred_at) > ($2, $3, $4)
         ORDER BY tenant_id, request_id, occurred_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .bind(&after.0)
    .bind(&after.1)
    .bind(after.2)
    .fetch_all(&mut *tx)
    .await?;
    let examined = rows.len();
    let next = rows
        .last()
        .map(|r| (r.tenant_id.clone(), r.request_id.clone(), r.occurred_at));
    let mut c = Columns::default();
    let mut keys: (Vec<String>, Vec<String>, Vec<DateTime<Utc>>) =
        (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        if let Some(price) = price_of(row) {
            keys.0.push(row.tenant_id.clone());
            keys.1.push(row.request_id.clone());
            keys.2.push(row.occurred_at);
            c.price_id.push(Some(price.price_id));
            c.price_version.push(Some(price.version.clone()));
            c.currency.push(Some(price.currency.clone()));
            c.cost.push(Some(price.total));
            c.cost_input.push(Some(price.input));
            c.cost_cache_read.push(Some(price.cache_read));
            c.cost_cache_write.push(Some(price.cache_write));
            c.cost_output.push(Some(price.output));
            c.cost_reasoning.push(Some(price.reasoning));
            c.cost_request_fee.push(Some(price.request_fee));
            c.cost_discount.push(Some(price.discount));
        }
    }
    let priced = keys.0.len();
    if priced > 0 {
        // Take the rows out of their unpriced rollup groups, drop the
        // groups that emptied, then price the rows into the priced groups.
        sqlx::query(&UNPRICED_OUT_SQL)
            .bind(&keys.0)
            .bind(&keys.1)
            .bind(&keys.2)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&UNPRICED_EMPTY_SQL)
            .bind(&keys.0)
            .bind(&keys.2)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&PRICE_ROWS_SQL)
            .bind(&keys.0)
            .bind(&keys.1)
            .bind(&c.price_id)
            .bind(&c.price_version)
            .bind(&c.currency)
            .bind(&c.cost)
            .bind(&c.cost_input)
            .bind(&c.cost_cache_read)
            .bind(&c.cost_cache_write)
            .bind(&c.cost_output)
            .bind(&c.cost_reasoning)
            .bind(&c.cost_request_fee)
            .bind(&c.cost_discount)
            .bind(&keys.2)
            .fetch_one(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(RepriceProgress {
        examined,
        priced,
        next,
    })
}
