use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, DurationRound, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::cursor::Position;
use crate::ingest::{UsageRecord, KNOWN_FLAGS};
use crate::pricing::AppliedRates;

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
    /// The unit prices charged (per million tokens; `per_request` as
    /// charged) and the discount percent: the ledger stores these once per
    /// distinct card and derives the breakdown above from them.
    pub rates: AppliedRates,
    pub discount_percent: Decimal,
}

impl AppliedPrice {
    /// The rate card's lookup key: every stored column of the card.
    pub fn card(&self) -> String {
        let r = &self.rates;
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.price_id,
            self.version,
            self.currency,
            r.input.normalize(),
            r.output.normalize(),
            r.cache_read.normalize(),
            r.cache_write.normalize(),
            r.cache_write_1h.normalize(),
            r.reasoning.normalize(),
            r.per_request.normalize(),
            self.discount_percent.normalize()
        )
    }
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
/// changed (CTE `changed`: ledger columns plus the rate card's `currency`,
/// '' while unpriced), so duplicates never count twice. Dimensions are ids
/// (migration 0025) and never NULL, so they can be part of the key.
struct Rollup {
    table: &'static str,
    /// Filled by the fold (migration 0011): a statement touches it only for
    /// rows whose hour is already folded; the fold adds the rest later.
    folded: bool,
    /// Kept only from a watermark on (migration 0022): a statement touches
    /// it only for rows at or after `rollup_fold.hourly_from`.
    pruned: bool,
    /// Append-only (migration 0025): no unique key, so changes are added as
    /// signed delta rows and readers sum a group's rows.
    append_only: bool,
    /// Time bucket column and its expression over a ledger row.
    bucket: (&'static str, &'static str),
    /// Grouping columns besides tenant and bucket, with their expressions.
    dims: &'static [(&'static str, &'static str)],
}

const ALL_DIMS: &[(&str, &str)] = &[
    ("api_key_id", "api_key_id"),
    ("model_id", "model_id"),
    ("currency", "currency"),
];

const UTC_DAY: &str = "(occurred_at AT TIME ZONE 'UTC')::date";

/// Every rollup of the ledger: whatever moves one moves all.
const ROLLUPS: [Rollup; 3] = [
    Rollup {
        table: "rollup_hourly",
        folded: false,
        pruned: true,
        append_only: false,
        bucket: ("hour", "date_trunc('hour', occurred_at, 'UTC')"),
        dims: ALL_DIMS,
    },
    Rollup {
        table: "rollup_daily",
        folded: true,
        pruned: false,
        append_only: true,
        bucket: ("day", UTC_DAY),
        dims: ALL_DIMS,
    },
    Rollup {
        table: "rollup_tenant_daily",
        folded: true,
        pruned: false,
        append_only: false,
        bucket: ("day", UTC_DAY),
        dims: &[("currency", "currency")],
    },
];

/// The ledger columns the rollup aggregates read: the insert returns only
/// these, not the whole row.
const ROLLUP_INPUT: &str = "tenant_id, occurred_at, request_id, api_key_id, model_id, rate_id, \
    http_status, flags, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
    reasoning_tokens, cost, reported_cost";

/// Rollup columns and their aggregate over ledger rows.
const METRICS: &[(&str, &str)] = &[
    ("requests", "count(*)"),
    (
        "error_requests",
        "count(*) FILTER (WHERE http_status >= 400)",
    ),
    (
        "incomplete_requests",
        "count(*) FILTER (WHERE flags & 1 <> 0)",
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
            "rollup_hourly WHERE hour >= $1 AND hour < $2",
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
    /// them to the groups that exist (or as rows of their own when
    /// append-only).
    fn add(&self, select: &str) -> String {
        let key = self.key_columns().join(", ");
        let metrics = METRICS.iter().map(|m| m.0).collect::<Vec<_>>().join(", ");
        if self.append_only {
            return format!(
                "INSERT INTO {t} ({key}, {metrics}) {select}",
                t = self.table
            );
        }
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
        if self.append_only {
            let key = self.key_columns().join(", ");
            let metrics = METRICS.iter().map(|m| m.0).collect::<Vec<_>>().join(", ");
            let negated = METRICS
                .iter()
                .map(|(c, _)| format!("-{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            return format!(
                "INSERT INTO {t} ({key}, {metrics}) SELECT {key}, {negated} FROM ({agg}) d",
                t = self.table,
                agg = self.aggregate()
            );
        }
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
        let (t, b, e) = (self.table, self.bucket.0, self.bucket.1);
        if self.append_only {
            // A group is emptied when its rows net to no requests.
            let dims: Vec<&str> = self.dims.iter().map(|d| d.0).collect();
            let group = dims
                .iter()
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let on = dims
                .iter()
                .map(|c| format!(" AND u.{c} = z.{c}"))
                .collect::<String>();
            return format!(
                "DELETE FROM {t} u USING (
                    SELECT d.tenant_id, d.{b}, {group} FROM {t} d
                    JOIN (SELECT DISTINCT tenant_id, {e} AS b FROM keys) k
                      ON d.tenant_id = k.tenant_id AND d.{b} = k.b
                    WHERE d.currency = ''
                    GROUP BY d.tenant_id, d.{b}, {group} HAVING sum(d.requests) = 0
                 ) z
                 WHERE u.tenant_id = z.tenant_id AND u.{b} = z.{b}{on}"
            );
        }
        format!(
            "DELETE FROM {t} u USING (SELECT DISTINCT tenant_id, {e} AS b FROM keys) k
             WHERE u.tenant_id = k.tenant_id AND u.{b} = k.b AND u.currency = ''
               AND u.requests = 0"
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

/// Adds the names and rate cards a batch refers to that the dictionaries
/// do not hold yet (migration 0025). Run on its own before the batch's
/// transaction: an entry nothing refers to is harmless, and the batch then
/// holds no lock on a dictionary. Checking before inserting keeps the
/// identity sequences from burning a value per existing name. Every array
/// holds distinct values (see [`Names`]).
const DICTIONARY_SQL: &str = "WITH
    t AS (INSERT INTO ledger_tenants (name)
        SELECT DISTINCT n FROM UNNEST($1::text[]) n
        WHERE NOT EXISTS (SELECT 1 FROM ledger_tenants x WHERE x.name = n) ORDER BY 1
        ON CONFLICT DO NOTHING),
    k AS (INSERT INTO ledger_api_keys (name)
        SELECT DISTINCT n FROM UNNEST($2::text[]) n
        WHERE n IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_api_keys x WHERE x.name = n)
        ORDER BY 1 ON CONFLICT DO NOTHING),
    m AS (INSERT INTO ledger_models (provider, model)
        SELECT DISTINCT p, m FROM UNNEST($3::text[], $4::text[]) AS i(p, m)
        WHERE NOT EXISTS (SELECT 1 FROM ledger_models x WHERE x.provider = p AND x.model = m)
        ORDER BY 1, 2 ON CONFLICT DO NOTHING),
    r AS (INSERT INTO ledger_routes (name)
        SELECT DISTINCT n FROM UNNEST($5::text[]) n
        WHERE n IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_routes x WHERE x.name = n)
        ORDER BY 1 ON CONFLICT DO NOTHING),
    q AS (INSERT INTO ledger_request_names (id, name)
        SELECT * FROM UNNEST($6::uuid[], $19::text[]) ORDER BY 1
        ON CONFLICT DO NOTHING),
    c AS (INSERT INTO ledger_rates (card, price_id, version, currency, input, output,
            cache_read, cache_write, cache_write_1h, reasoning, per_request, discount_percent)
        SELECT DISTINCT ON (card) * FROM UNNEST($7::text[], $8::int8[], $9::text[], $10::text[],
            $11::numeric[], $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[],
            $16::numeric[], $17::numeric[], $18::numeric[])
            AS i(card, price_id, version, currency, input, output, cache_read, cache_write,
                cache_write_1h, reasoning, per_request, discount_percent)
        WHERE NOT EXISTS (SELECT 1 FROM ledger_rates x WHERE x.card = i.card) ORDER BY card
        ON CONFLICT DO NOTHING)
    SELECT 1";

/// The batch with every name already an id (see [`DictionaryIds`]): the
/// ledger rows that are new, and the rollups of exactly those.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
            SELECT * FROM UNNEST($1::int4[], $2::uuid[], $3::timestamptz[], $4::int4[], $5::int4[],
                $6::int4[], $7::int4[], $8::int2[], $9::int4[], $10::int4[], $11::int4[],
                $12::int4[], $13::int4[], $14::int4[], $15::int4[], $16::int4[],
                $17::numeric[], $18::numeric[], $19::int2[])
            AS t(tenant_id, request_id, occurred_at, api_key_id, model_id, route_id, rate_id,
                http_status, ttfb_ms, duration_ms, input_tokens, output_tokens, cache_read_tokens,
                cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, cost,
                reported_cost, flags)
        ), names AS (
            -- Request ids not in canonical uuid form ($20 their uuids, $21 them).
            INSERT INTO ledger_request_names (id, name)
            SELECT * FROM UNNEST($20::uuid[], $21::text[]) ORDER BY 1
            ON CONFLICT DO NOTHING
        ), inserted AS (
            INSERT INTO ledger (occurred_at, request_id, tenant_id, received_ms, api_key_id,
                model_id, route_id, rate_id, ttfb_ms, duration_ms, input_tokens, output_tokens,
                cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens,
                http_status, flags, cost, reported_cost)
            SELECT occurred_at, request_id, tenant_id,
                least(greatest(floor(extract(epoch FROM now() - occurred_at) * 1000),
                    -2147483648), 2147483647)::int4,
                api_key_id, model_id, route_id, rate_id, ttfb_ms, duration_ms, input_tokens,
                output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
                reasoning_tokens, http_status, flags, cost, reported_cost
            FROM input ORDER BY tenant_id, occurred_at, request_id
            ON CONFLICT (tenant_id, occurred_at, request_id) DO NOTHING
            RETURNING {ROLLUP_INPUT}
        ), changed AS (
            SELECT i.*, coalesce(c.currency, '') AS currency
            FROM inserted i LEFT JOIN ledger_rates c ON c.id = i.rate_id
        ){rollups}
        SELECT tenant_id, request_id, occurred_at FROM changed",
        rollups = rollup_ctes(Rollup::upsert)
    )
});

/// The ids of names and cards ($1 tenants, $2 keys, $3/$4 providers and
/// models, $5 routes, $6 cards) as (kind, name, model, id).
const DICTIONARY_IDS_SQL: &str = "
    SELECT 0::int2, name, ''::text, id FROM ledger_tenants WHERE name = ANY($1)
    UNION ALL SELECT 1::int2, name, '', id FROM ledger_api_keys WHERE name = ANY($2)
    UNION ALL SELECT 2::int2, m.provider, m.model, m.id FROM ledger_models m
        JOIN UNNEST($3::text[], $4::text[]) AS i(p, mo) ON m.provider = i.p AND m.model = i.mo
    UNION ALL SELECT 3::int2, name, '', id FROM ledger_routes WHERE name = ANY($5)
    UNION ALL SELECT 4::int2, card, '', id FROM ledger_rates WHERE card = ANY($6)";

/// Dictionary ids by name, for one database. The dictionaries are
/// append-only and an id never changes once given, so a cached id is always
/// right: a batch of known names goes to the ledger without a lookup.
#[derive(Default)]
struct DictionaryIds {
    tenants: HashMap<String, i32>,
    api_keys: HashMap<String, i32>,
    /// By provider, then model.
    models: HashMap<String, HashMap<String, i32>>,
    routes: HashMap<String, i32>,
    cards: HashMap<String, i32>,
}

/// Per database (host, port, name): one process may write to several.
static DICTIONARY_IDS: LazyLock<Mutex<HashMap<String, DictionaryIds>>> =
    LazyLock::new(Mutex::default);

fn database_of(pool: &PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or_default()
    )
}

impl DictionaryIds {
    /// What of `names` (but request names) and `cards` has no cached id.
    fn missing(&self, names: &Names, cards: &Cards) -> (Names, Cards) {
        let unknown = |all: &[String], known: &HashMap<String, i32>| -> Vec<String> {
            all.iter()
                .filter(|n| !known.contains_key(*n))
                .cloned()
                .collect()
        };
        let (mut providers, mut models) = (Vec::new(), Vec::new());
        for (p, m) in names.providers.iter().zip(&names.models) {
            if !self.models.get(p).is_some_and(|ms| ms.contains_key(m)) {
                providers.push(p.clone());
                models.push(m.clone());
            }
        }
        let missing = Names {
            tenants: unknown(&names.tenants, &self.tenants),
            api_keys: unknown(&names.api_keys, &self.api_keys),
            providers,
            models,
            routes: unknown(&names.routes, &self.routes),
            ..Names::default()
        };
        (missing, cards.without(|card| self.cards.contains_key(card)))
    }

    /// The id columns of `c`; None if a name has no id (a dictionary
    /// emptied under a running collector).
    fn ids_of(&self, c: &mut Columns) -> Option<()> {
        let n = c.tenant_id.len();
        c.tenant_key = Vec::with_capacity(n);
        for i in 0..n {
            c.tenant_key.push(*self.tenants.get(&c.tenant_id[i])?);
            c.api_key_key.push(match &c.api_key_id[i] {
                Some(k) => *self.api_keys.get(k)?,
                None => 0,
            });
            c.model_key
                .push(*self.models.get(&c.provider[i])?.get(&c.model[i])?);
            c.route_key.push(match &c.route[i] {
                Some(r) => *self.routes.get(r)?,
                None => 0,
            });
            c.rate_key.push(match &c.card[i] {
                Some(card) => *self.cards.get(card)?,
                None => 0,
            });
        }
        Some(())
    }
}

/// Gives every name and card of `c` an id, from the cache or the database.
/// Returns the batch's distinct names; its non-uuid request ids are added
/// to `ledger_request_names` by the insert itself.
async fn resolve_ids(pool: &PgPool, c: &mut Columns, cards: &Cards) -> Result<Names, sqlx::Error> {
    let database = database_of(pool);
    let names = Names::of(c);
    let (missing, new_cards) = {
        let cache = DICTIONARY_IDS.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&database) {
            Some(ids) => ids.missing(&names, cards),
            None => DictionaryIds::default().missing(&names, cards),
        }
    };
    if !missing.is_empty() || !new_cards.card.is_empty() {
        add_to_dictionaries(pool, &missing, &new_cards).await?;
        let found: Vec<(i16, String, String, i32)> = sqlx::query_as(DICTIONARY_IDS_SQL)
            .bind(&missing.tenants)
            .bind(&missing.api_keys)
            .bind(&missing.providers)
            .bind(&missing.models)
            .bind(&missing.routes)
            .bind(&new_cards.card)
            .fetch_all(pool)
            .await?;
        let mut cache = DICTIONARY_IDS.lock().unwrap_or_else(|e| e.into_inner());
        let ids = cache.entry(database.clone()).or_default();
        for (kind, name, model, id) in found {
            match kind {
                0 => ids.tenants.insert(name, id),
                1 => ids.api_keys.insert(name, id),
                2 => ids.models.entry(name).or_default().insert(model, id),
                3 => ids.routes.insert(name, id),
                _ => ids.cards.insert(name, id),
            };
        }
    }
    let mut cache = DICTIONARY_IDS.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(database)
        .or_default()
        .ids_of(c)
        .ok_or_else(|| sqlx::Error::Protocol("a ledger dictionary lost a name".into()))?;
    Ok(names)
}

/// Takes the rows of the keys ($1 tenant id, $2 request uuid, $3
/// occurred_at; still unpriced) out of their unpriced rollup groups.
static UNPRICED_OUT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH changed AS (
            SELECT t.*, ''::text AS currency FROM ledger t
            JOIN UNNEST($1::int4[], $2::uuid[], $3::timestamptz[]) AS k(tenant_id, request_id, occurred_at)
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
            SELECT * FROM UNNEST($1::int4[], $2::timestamptz[]) AS k(tenant_id, occurred_at)
         ){deletes}
         SELECT 1"
    )
});

/// Prices the keys' rows with their rate cards (added beforehand) and adds
/// them to their priced rollup groups.
static PRICE_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
            SELECT k.*, c.id AS rate_id FROM UNNEST($1::int4[], $2::uuid[], $3::timestamptz[],
                $4::text[], $5::numeric[]) AS k(tenant_id, request_id, occurred_at, card, cost)
            JOIN ledger_rates c ON c.card = k.card
         ), updated AS (
            UPDATE ledger t SET rate_id = k.rate_id, cost = k.cost
            FROM input k
            WHERE t.tenant_id = k.tenant_id AND t.request_id = k.request_id
              AND t.occurred_at = k.occurred_at AND t.rate_id = 0
            RETURNING t.*
         ), changed AS (
            SELECT u.*, c.currency FROM updated u JOIN ledger_rates c ON c.id = u.rate_id
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
            "SELECT hourly_from, (SELECT min(hour) FROM rollup_hourly), folded_before
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
    sqlx::query("DELETE FROM rollup_hourly WHERE hour < $1")
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
         FROM pg_inherits i WHERE i.inhparent = 'ledger_time_brin'::regclass",
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
    let mut c = Columns::default();
    let mut cards = Cards::default();
    // A batch is priced with a handful of cards: each is kept once.
    let mut seen_cards = std::collections::HashSet::new();
    for entry in sorted {
        let card = entry.price.as_ref().map(AppliedPrice::card);
        if let (Some(p), Some(card)) = (&entry.price, &card) {
            if seen_cards.insert(card.clone()) {
                cards.push(p);
            }
        }
        c.push(entry, card);
    }
    let names = resolve_ids(pool, &mut c, &cards).await?;
    let mut tx = pool.begin().await?;
    lock_for_write(&mut tx).await?;
    super::partitions::ensure_for(&mut tx, &c.occurred_at).await?;
    let rows = sqlx::query(&INSERT_SQL)
        .bind(&c.tenant_key)
        .bind(&c.request_uuid)
        .bind(&c.occurred_at)
        .bind(&c.api_key_key)
        .bind(&c.model_key)
        .bind(&c.route_key)
        .bind(&c.rate_key)
        .bind(&c.http_status)
        .bind(&c.ttfb_ms)
        .bind(&c.duration_ms)
        .bind(&c.input_tokens)
        .bind(&c.output_tokens)
        .bind(&c.cache_read_tokens)
        .bind(&c.cache_write_tokens)
        .bind(&c.cache_write_1h_tokens)
        .bind(&c.reasoning_tokens)
        .bind(&c.cost)
        .bind(&c.reported_cost)
        .bind(&c.flags)
        .bind(&names.request_uuids)
        .bind(&names.requests)
        .fetch_all(&mut *tx)
        .await?;
    let tenants: Vec<&str> = c.tenant_id.iter().map(String::as_str).collect();
    let requests: Vec<&str> = c.request_id.iter().map(String::as_str).collect();
    let released = super::reservations::release_reservations(&mut tx, &tenants, &requests).await?;
    tx.commit().await?;
    // The rows come back by their stored key: name them as the batch did.
    let mut names_of: HashMap<(i32, uuid::Uuid, DateTime<Utc>), usize> =
        HashMap::with_capacity(c.tenant_id.len());
    for i in 0..c.tenant_id.len() {
        names_of.insert((c.tenant_key[i], c.request_uuid[i], c.occurred_at[i]), i);
    }
    let mut inserted = Vec::with_capacity(rows.len());
    for r in &rows {
        let key = (
            r.try_get::<i32, _>("tenant_id")?,
            r.try_get::<uuid::Uuid, _>("request_id")?,
            r.try_get::<DateTime<Utc>, _>("occurred_at")?,
        );
        if let Some(&i) = names_of.get(&key) {
            inserted.push((c.tenant_id[i].clone(), c.request_id[i].clone(), key.2));
        }
    }
    Ok(InsertOutcome { inserted, released })
}

/// See [`DICTIONARY_SQL`].
async fn add_to_dictionaries(
    db: impl sqlx::PgExecutor<'_>,
    names: &Names,
    cards: &Cards,
) -> Result<(), sqlx::Error> {
    sqlx::query(DICTIONARY_SQL)
        .bind(&names.tenants)
        .bind(&names.api_keys)
        .bind(&names.providers)
        .bind(&names.models)
        .bind(&names.routes)
        .bind(&names.request_uuids)
        .bind(&cards.card)
        .bind(&cards.price_id)
        .bind(&cards.version)
        .bind(&cards.currency)
        .bind(&cards.input)
        .bind(&cards.output)
        .bind(&cards.cache_read)
        .bind(&cards.cache_write)
        .bind(&cards.cache_write_1h)
        .bind(&cards.reasoning)
        .bind(&cards.per_request)
        .bind(&cards.discount_percent)
        .bind(&names.requests)
        .execute(db)
        .await
        .map(|_| ())
}

/// The distinct names a batch refers to, for [`DICTIONARY_SQL`]: a batch of
/// 2,000 records names a few dozen tenants, keys and models.
#[derive(Default)]
struct Names {
    tenants: Vec<String>,
    api_keys: Vec<String>,
    providers: Vec<String>,
    models: Vec<String>,
    routes: Vec<String>,
    /// Request ids not in canonical uuid form, and the uuids stored for them.
    requests: Vec<String>,
    request_uuids: Vec<uuid::Uuid>,
}

impl Names {
    fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.api_keys.is_empty()
            && self.models.is_empty()
            && self.routes.is_empty()
            && self.requests.is_empty()
    }

    fn of(c: &Columns) -> Names {
        use std::collections::BTreeSet;
        let tenants: BTreeSet<&String> = c.tenant_id.iter().collect();
        let api_keys: BTreeSet<&String> = c.api_key_id.iter().flatten().collect();
        let models: BTreeSet<(&String, &String)> = c.provider.iter().zip(&c.model).collect();
        let routes: BTreeSet<&String> = c.route.iter().flatten().collect();
        let requests: BTreeSet<(uuid::Uuid, &String)> = c
            .request_id
            .iter()
            .zip(&c.request_uuid)
            .filter(|(id, _)| !is_canonical_uuid(id))
            .map(|(id, uuid)| (*uuid, id))
            .collect();
        Names {
            tenants: tenants.into_iter().cloned().collect(),
            api_keys: api_keys.into_iter().cloned().collect(),
            providers: models.iter().map(|m| m.0.clone()).collect(),
            models: models.iter().map(|m| m.1.clone()).collect(),
            routes: routes.into_iter().cloned().collect(),
            request_uuids: requests.iter().map(|r| r.0).collect(),
            requests: requests.into_iter().map(|r| r.1.clone()).collect(),
        }
    }
}

/// Lower-case hexadecimal in 8-4-4-4-12 groups, as Envoy writes
/// `x-request-id`: the only form stored as the uuid itself.
fn is_canonical_uuid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &ch)| match i {
            8 | 13 | 18 | 23 => ch == b'-',
            _ => ch.is_ascii_digit() || (b'a'..=b'f').contains(&ch),
        })
}

/// The uuid the ledger stores for a request id (SQL `ledger_request_uuid`,
/// migration 0025): the id itself in canonical form, else the md5 of its
/// text (whose text the ledger keeps in `ledger_request_names`).
pub fn stored_request_uuid(id: &str) -> uuid::Uuid {
    if is_canonical_uuid(id) {
        if let Ok(uuid) = uuid::Uuid::parse_str(id) {
            return uuid;
        }
    }
    use md5::Digest;
    uuid::Uuid::from_bytes(md5::Md5::digest(id.as_bytes()).into())
}

/// Bits of `ledger.flags` beyond the record's own flags (migration 0025).
const FLAG_STREAMED: i16 = 128;
const FLAG_REPORTED_COST: i16 = 256;
const FLAG_NO_MODEL: i16 = 512;

/// The record's flags as `ledger.flags` bits: bit i is `KNOWN_FLAGS[i]`.
pub fn flag_bits(record: &UsageRecord) -> i16 {
    let mut bits = 0i16;
    for (i, name) in KNOWN_FLAGS.iter().enumerate() {
        if record.flags.iter().any(|f| f == name) {
            bits |= 1 << i;
        }
    }
    if record.streamed {
        bits |= FLAG_STREAMED;
    }
    if record.reported_cost.is_some() {
        bits |= FLAG_REPORTED_COST;
    }
    if record.model.is_none() {
        bits |= FLAG_NO_MODEL;
    }
    bits
}

/// Column-wise arrays for UNNEST.
#[derive(Default)]
struct Columns {
    tenant_id: Vec<String>,
    request_id: Vec<String>,
    request_uuid: Vec<uuid::Uuid>,
    occurred_at: Vec<DateTime<Utc>>,
    api_key_id: Vec<Option<String>>,
    provider: Vec<String>,
    model: Vec<String>,
    route: Vec<Option<String>>,
    http_status: Vec<i16>,
    ttfb_ms: Vec<i32>,
    duration_ms: Vec<i32>,
    input_tokens: Vec<i32>,
    output_tokens: Vec<i32>,
    cache_read_tokens: Vec<i32>,
    cache_write_tokens: Vec<i32>,
    cache_write_1h_tokens: Vec<i32>,
    reasoning_tokens: Vec<i32>,
    card: Vec<Option<String>>,
    cost: Vec<Decimal>,
    reported_cost: Vec<Decimal>,
    flags: Vec<i16>,
    /// Dictionary ids of the names above (see [`resolve_ids`]).
    tenant_key: Vec<i32>,
    api_key_key: Vec<i32>,
    model_key: Vec<i32>,
    route_key: Vec<i32>,
    rate_key: Vec<i32>,
}

/// A count or duration as the ledger's int4 (validated records hold at most
/// `MAX_TOKENS`; durations past 24 days are capped).
fn to_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Columns {
    /// `card`: the entry's [`AppliedPrice::card`], if priced.
    fn push(&mut self, entry: &LedgerEntry, card: Option<String>) {
        let r = &entry.record;
        self.tenant_id.push(r.tenant_id.clone());
        self.request_id.push(r.request_id.clone());
        self.request_uuid.push(stored_request_uuid(&r.request_id));
        self.occurred_at.push(r.occurred_at());
        self.api_key_id.push(r.api_key_id.clone());
        self.provider.push(r.provider.clone());
        self.model.push(r.model.clone().unwrap_or_default());
        self.route.push(r.route.clone());
        self.http_status
            .push(i16::try_from(r.http_status).unwrap_or(i16::MAX));
        self.ttfb_ms.push(r.ttfb_ms.map_or(-1, to_i32));
        self.duration_ms.push(r.duration_ms.map_or(-1, to_i32));
        self.input_tokens.push(to_i32(r.input_tokens));
        self.output_tokens.push(to_i32(r.output_tokens));
        self.cache_read_tokens.push(to_i32(r.cache_read_tokens));
        self.cache_write_tokens.push(to_i32(r.cache_write_tokens));
        self.cache_write_1h_tokens
            .push(to_i32(r.cache_write_1h_tokens));
        self.reasoning_tokens.push(to_i32(r.reasoning_tokens));
        self.reported_cost
            .push(r.reported_cost.unwrap_or(Decimal::ZERO));
        self.flags.push(flag_bits(r));
        let p = entry.price.as_ref();
        self.card.push(card);
        self.cost.push(p.map_or(Decimal::ZERO, |p| p.total));
    }
}

/// Column-wise rate cards (`ledger_rates`) for UNNEST.
#[derive(Default)]
struct Cards {
    card: Vec<String>,
    price_id: Vec<i64>,
    version: Vec<String>,
    currency: Vec<String>,
    input: Vec<Decimal>,
    output: Vec<Decimal>,
    cache_read: Vec<Decimal>,
    cache_write: Vec<Decimal>,
    cache_write_1h: Vec<Decimal>,
    reasoning: Vec<Decimal>,
    per_request: Vec<Decimal>,
    discount_percent: Vec<Decimal>,
}

impl Cards {
    /// One of each card.
    fn distinct(&self) -> Cards {
        self.without(|_| false)
    }

    /// One of each card but those `known`.
    fn without(&self, known: impl Fn(&String) -> bool) -> Cards {
        let mut seen = std::collections::HashSet::new();
        let mut out = Cards::default();
        for i in 0..self.card.len() {
            if !known(&self.card[i]) && seen.insert(&self.card[i]) {
                out.card.push(self.card[i].clone());
                out.price_id.push(self.price_id[i]);
                out.version.push(self.version[i].clone());
                out.currency.push(self.currency[i].clone());
                out.input.push(self.input[i]);
                out.output.push(self.output[i]);
                out.cache_read.push(self.cache_read[i]);
                out.cache_write.push(self.cache_write[i]);
                out.cache_write_1h.push(self.cache_write_1h[i]);
                out.reasoning.push(self.reasoning[i]);
                out.per_request.push(self.per_request[i]);
                out.discount_percent.push(self.discount_percent[i]);
            }
        }
        out
    }

    fn push(&mut self, p: &AppliedPrice) {
        self.card.push(p.card());
        self.price_id.push(p.price_id);
        self.version.push(p.version.clone());
        self.currency.push(p.currency.clone());
        self.input.push(p.rates.input);
        self.output.push(p.rates.output);
        self.cache_read.push(p.rates.cache_read);
        self.cache_write.push(p.rates.cache_write);
        self.cache_write_1h.push(p.rates.cache_write_1h);
        self.reasoning.push(p.rates.reasoning);
        self.per_request.push(p.rates.per_request);
        self.discount_percent.push(p.discount_percent);
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

/// The filters over the stored ledger (alias `l`): names are looked up in
/// the dictionaries once (an unknown name matches nothing), so each filter
/// is a condition on the row's own columns and the key index can serve it.
fn push_filters(q: &mut QueryBuilder<'_, Postgres>, f: &LedgerFilter) {
    if let Some(v) = &f.tenant_id {
        q.push(" AND l.tenant_id = (SELECT id FROM ledger_tenants WHERE name = ")
            .push_bind(v.clone())
            .push(")");
    }
    if let Some(v) = &f.api_key_id {
        q.push(" AND l.api_key_id = (SELECT id FROM ledger_api_keys WHERE name = ")
            .push_bind(v.clone())
            .push(")");
    }
    if let Some(v) = &f.model {
        q.push(
            " AND l.flags & 512 = 0 AND l.model_id IN (SELECT id FROM ledger_models WHERE model = ",
        )
        .push_bind(v.clone())
        .push(")");
    }
    if let Some(v) = &f.provider {
        q.push(" AND l.model_id IN (SELECT id FROM ledger_models WHERE provider = ")
            .push_bind(v.clone())
            .push(")");
    }
    match f.status.as_deref() {
        None => {}
        Some("priced") => {
            q.push(" AND l.rate_id <> 0");
        }
        Some("unpriced") => {
            q.push(" AND l.rate_id = 0");
        }
        Some(_) => {
            q.push(" AND false");
        }
    }
    if let Some(v) = f.start {
        q.push(" AND l.occurred_at >= ").push_bind(v);
    }
    if let Some(v) = f.end {
        q.push(" AND l.occurred_at < ").push_bind(v);
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
    // The page's keys first, from the ledger's own index; then the names and
    // derived costs for those rows only.
    let mut q = QueryBuilder::new(
        "WITH page AS (SELECT l.tenant_id, l.occurred_at, l.request_id FROM ledger l WHERE true",
    );
    push_filters(&mut q, filter);
    if let Some(from) = from {
        q.push(" AND l.occurred_at >= ").push_bind(from);
    }
    // The position is the reader's own: (time, tenant, request id), the
    // ledger key's columns, never a global row id. With one tenant the
    // tenant column is constant and the key is walked backwards from it.
    // Rows are ordered by the stored key (tenant id, request uuid).
    if let Some(c) = after {
        q.push(" AND l.occurred_at <= ").push_bind(c.occurred_at);
        if filter.tenant_id.is_some() {
            q.push(" AND (l.occurred_at, l.request_id) < (")
                .push_bind(c.occurred_at)
                .push(", ledger_request_uuid(")
                .push_bind(c.request_id.clone())
                .push("))");
        } else {
            q.push(" AND (l.occurred_at, l.tenant_id, l.request_id) < (")
                .push_bind(c.occurred_at)
                .push(", coalesce((SELECT id FROM ledger_tenants WHERE name = ")
                .push_bind(c.tenant_id.clone())
                .push("), 0), ledger_request_uuid(")
                .push_bind(c.request_id.clone())
                .push("))");
        }
    }
    // The limit is part of the text, not a parameter: the generic plan
    // (below) must know the page is small to walk the key in order.
    q.push(" ORDER BY l.occurred_at DESC, l.tenant_id DESC, l.request_id DESC LIMIT ")
        .push(limit.max(0));
    q.push(
        ") SELECT t.request_id, t.tenant_id, t.api_key_id, t.provider, t.model, t.route,
            t.http_status, t.streamed, t.occurred_at, t.received_at, t.ttfb_ms, t.duration_ms,
            t.input_tokens, t.output_tokens, t.cache_read_tokens, t.cache_write_tokens,
            t.cache_write_1h_tokens, t.reasoning_tokens, t.status, t.currency, t.cost,
            t.cost_input, t.cost_cache_read, t.cost_cache_write, t.cost_output,
            t.cost_reasoning, t.cost_request_fee, t.cost_discount, t.price_version,
            t.reported_cost, t.flags
         FROM page p JOIN transactions t ON t.tenant_key = p.tenant_id
            AND t.occurred_at = p.occurred_at AND t.request_key = p.request_id
         ORDER BY t.occurred_at DESC, t.tenant_key DESC, t.request_key DESC",
    );
    super::fetch_with_generic_plan(pool, q).await
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
    /// The stored key (migration 0025).
    pub tenant_key: i32,
    pub request_key: uuid::Uuid,
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
    // Walked in stored key order (tenant id, request uuid, time); the
    // position is passed on as text and mapped back here.
    let rows: Vec<UnpricedRow> = sqlx::query_as(
        "SELECT tn.name AS tenant_id, coalesce(rn.name, l.request_id::text) AS request_id,
            m.provider, CASE WHEN l.flags & 512 = 0 THEN m.model END AS model, l.occurred_at,
            l.input_tokens::int8 AS input_tokens, l.output_tokens::int8 AS output_tokens,
            l.cache_read_tokens::int8 AS cache_read_tokens,
            l.cache_write_tokens::int8 AS cache_write_tokens,
            l.cache_write_1h_tokens::int8 AS cache_write_1h_tokens,
            l.reasoning_tokens::int8 AS reasoning_tokens,
            l.tenant_id AS tenant_key, l.request_id AS request_key
         FROM ledger l
         JOIN ledger_tenants tn ON tn.id = l.tenant_id
         JOIN ledger_models m ON m.id = l.model_id
         LEFT JOIN ledger_request_names rn ON rn.id = l.request_id
         WHERE l.rate_id = 0 AND (l.tenant_id, l.request_id, l.occurred_at) >
            (coalesce((SELECT id FROM ledger_tenants WHERE name = $2), 0),
             ledger_request_uuid($3), $4)
         ORDER BY l.tenant_id, l.request_id, l.occurred_at LIMIT $1
         FOR UPDATE OF l SKIP LOCKED",
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
    let mut cards = Cards::default();
    let mut keys: (Vec<i32>, Vec<uuid::Uuid>, Vec<DateTime<Utc>>) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut cost: Vec<Decimal> = Vec::new();
    for row in &rows {
        if let Some(price) = price_of(row) {
            keys.0.push(row.tenant_key);
            keys.1.push(row.request_key);
            keys.2.push(row.occurred_at);
            cost.push(price.total);
            cards.push(&price);
        }
    }
    let priced = keys.0.len();
    if priced > 0 {
        // In the transaction: it holds the rows' locks, and a second
        // connection from a small pool could wait on this one.
        add_to_dictionaries(&mut *tx, &Names::default(), &cards.distinct()).await?;
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
            .bind(&keys.2)
            .bind(&cards.card)
            .bind(&cost)
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
