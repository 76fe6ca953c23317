//! Invoices: the ledger sums a draft is built from, and finalized invoices
//! (stored once, never changed).

use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::invoices::{Aggregate, Line, Period, Totals};

/// Which ledger rows an invoice is built from.
#[derive(Debug, Clone, Copy)]
pub enum InvoiceSource<'a> {
    /// Priced rows of the tenant in `currency` not billed yet: those of the
    /// period, plus late ones of earlier periods that have a final invoice.
    Unbilled {
        tenant_id: &'a str,
        currency: &'a str,
        period: Period,
    },
    /// The rows a finalized invoice billed.
    Billed { invoice_id: i64, period: Period },
}

fn push_unbilled(
    q: &mut QueryBuilder<'_, Postgres>,
    tenant_id: &str,
    currency: &str,
    period: Period,
) {
    q.push(" t.tenant_id = ")
        .push_bind(tenant_id.to_string())
        .push(" AND t.status = 'priced' AND t.currency = ")
        .push_bind(currency.to_string())
        .push(" AND t.occurred_at < ")
        .push_bind(period.end())
        .push(
            " AND NOT EXISTS (SELECT 1 FROM invoice_items i
                WHERE i.tenant_id = t.tenant_id AND i.occurred_at = t.occurred_at
                    AND i.request_id = t.request_id)
              AND (t.occurred_at >= ",
        )
        .push_bind(period.start())
        .push(
            " OR EXISTS (SELECT 1 FROM invoices v WHERE v.tenant_id = t.tenant_id
                AND v.currency = t.currency AND v.period_start <= t.occurred_at
                AND t.occurred_at < v.period_end))",
        );
}

#[derive(sqlx::FromRow)]
struct AggregateRow {
    model: String,
    late_period: Option<String>,
    requests: i64,
    uncached_input_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    output_tokens: i64,
    cost_input: Decimal,
    cost_cache_read: Decimal,
    cost_cache_write: Decimal,
    cost_output: Decimal,
    fee_requests: i64,
    cost_request_fee: Decimal,
    discount_requests: i64,
    cost_discount: Decimal,
    cost: Decimal,
}

/// Sums per model (and per original period for late usage), in exact decimals.
pub async fn invoice_aggregates(
    conn: &mut PgConnection,
    source: InvoiceSource<'_>,
) -> Result<Vec<Aggregate>, sqlx::Error> {
    let period = match source {
        InvoiceSource::Unbilled { period, .. } | InvoiceSource::Billed { period, .. } => period,
    };
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new("WITH src AS (SELECT t.* FROM ");
    match source {
        InvoiceSource::Unbilled {
            tenant_id,
            currency,
            period,
        } => {
            q.push("transactions t WHERE");
            push_unbilled(&mut q, tenant_id, currency, period);
        }
        InvoiceSource::Billed { invoice_id, .. } => {
            q.push(
                "invoice_items i JOIN transactions t
                    ON t.tenant_id = i.tenant_id AND t.occurred_at = i.occurred_at
                        AND t.request_id = i.request_id
                 WHERE i.invoice_id = ",
            )
            .push_bind(invoice_id);
        }
    }
    q.push(") SELECT coalesce(model, '') AS model, CASE WHEN occurred_at < ")
        .push_bind(period.start())
        .push(
            " THEN to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') END AS late_period,
            count(*)::int8 AS requests,
            sum(input_tokens - cache_read_tokens - cache_write_tokens)::int8 AS uncached_input_tokens,
            sum(cache_read_tokens)::int8 AS cache_read_tokens,
            sum(cache_write_tokens)::int8 AS cache_write_tokens,
            sum(output_tokens)::int8 AS output_tokens,
            coalesce(sum(cost_input), 0) AS cost_input,
            coalesce(sum(cost_cache_read), 0) AS cost_cache_read,
            coalesce(sum(cost_cache_write), 0) AS cost_cache_write,
            coalesce(sum(cost_output), 0) + coalesce(sum(cost_reasoning), 0) AS cost_output,
            count(*) FILTER (WHERE cost_request_fee <> 0)::int8 AS fee_requests,
            coalesce(sum(cost_request_fee), 0) AS cost_request_fee,
            count(*) FILTER (WHERE cost_discount <> 0)::int8 AS discount_requests,
            coalesce(sum(cost_discount), 0) AS cost_discount,
            coalesce(sum(cost), 0) AS cost
         FROM src GROUP BY 1, 2 ORDER BY 2 NULLS FIRST, 1",
        );
    let rows: Vec<AggregateRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| Aggregate {
            model: r.model,
            late_period: r.late_period,
            requests: r.requests,
            uncached_input_tokens: r.uncached_input_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cache_write_tokens: r.cache_write_tokens,
            output_tokens: r.output_tokens,
            cost_input: r.cost_input,
            cost_cache_read: r.cost_cache_read,
            cost_cache_write: r.cost_cache_write,
            cost_output: r.cost_output,
            fee_requests: r.fee_requests,
            cost_request_fee: r.cost_request_fee,
            discount_requests: r.discount_requests,
            cost_discount: r.cost_discount,
            cost: r.cost,
        })
        .collect())
}

/// Currencies the tenant has something to invoice in for `period`: unbilled
/// priced usage (including late usage of earlier final periods) and final
/// invoices of the period.
pub async fn invoice_currencies(
    pool: &PgPool,
    tenant_id: &str,
    period: Period,
) -> Result<Vec<String>, sqlx::Error> {
    let mut q: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("SELECT DISTINCT t.currency FROM transactions t WHERE");
    // Any currency: the condition is the unbilled one without the currency.
    q.push(" t.tenant_id = ")
        .push_bind(tenant_id.to_string())
        .push(" AND t.status = 'priced' AND t.occurred_at < ")
        .push_bind(period.end())
        .push(
            " AND NOT EXISTS (SELECT 1 FROM invoice_items i
                WHERE i.tenant_id = t.tenant_id AND i.occurred_at = t.occurred_at
                    AND i.request_id = t.request_id)
              AND (t.occurred_at >= ",
        )
        .push_bind(period.start())
        .push(
            " OR EXISTS (SELECT 1 FROM invoices v WHERE v.tenant_id = t.tenant_id
                AND v.currency = t.currency AND v.period_start <= t.occurred_at
                AND t.occurred_at < v.period_end))
             UNION SELECT currency FROM invoices WHERE tenant_id = ",
        )
        .push_bind(tenant_id.to_string())
        .push(" AND period = ")
        .push_bind(period.to_string())
        .push(" ORDER BY 1");
    q.build_query_scalar().fetch_all(pool).await
}

/// Unpriced requests of the tenant in the period: not on the invoice, and
/// said so, so they are never mistaken for free.
pub async fn unpriced_requests(
    conn: &mut PgConnection,
    tenant_id: &str,
    period: Period,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM transactions WHERE tenant_id = $1 AND status = 'unpriced'
            AND occurred_at >= $2 AND occurred_at < $3",
    )
    .bind(tenant_id)
    .bind(period.start())
    .bind(period.end())
    .fetch_one(conn)
    .await
}

/// Prepaid credit not yet used by a final invoice: the tenant's credit
/// ledger (`credits`, append-only) in `currency`, minus the credits applied
/// on its final invoices in that currency.
pub async fn available_credit(
    conn: &mut PgConnection,
    tenant_id: &str,
    currency: &str,
) -> Result<Decimal, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT sum(amount) FROM credits WHERE tenant_id = $1 AND currency = $2), 0)
              - coalesce((SELECT sum(credits_applied_minor::numeric / (10::numeric ^ minor_digits))
                          FROM invoices WHERE tenant_id = $1 AND currency = $2), 0)",
    )
    .bind(tenant_id)
    .bind(currency)
    .fetch_one(conn)
    .await
}

/// A finalized invoice as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInvoice {
    pub id: i64,
    pub number: String,
    pub tenant_id: String,
    pub period: String,
    pub currency: String,
    pub minor_digits: u32,
    pub rounding: String,
    pub subtotal_precise: Decimal,
    pub totals: Totals,
    pub unpriced_requests: i64,
    pub finalized_at: DateTime<Utc>,
    pub lines: Vec<Line>,
}

#[derive(sqlx::FromRow)]
struct HeaderRow {
    id: i64,
    number: String,
    tenant_id: String,
    period: String,
    currency: String,
    minor_digits: i32,
    rounding: String,
    subtotal_precise: Decimal,
    subtotal_minor: i64,
    credits_applied_minor: i64,
    total_minor: i64,
    unpriced_requests: i64,
    finalized_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    model: String,
    token_class: String,
    description: String,
    quantity: i64,
    unit: String,
    unit_price: Option<Decimal>,
    amount: Decimal,
    amount_minor: i64,
    adjusts_period: Option<String>,
}

/// The final invoice of the tenant for the period and currency, if any.
pub async fn find_invoice(
    pool: &PgPool,
    tenant_id: &str,
    period: Period,
    currency: &str,
) -> Result<Option<StoredInvoice>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    find_in(&mut conn, tenant_id, period, currency).await
}

async fn find_in(
    conn: &mut PgConnection,
    tenant_id: &str,
    period: Period,
    currency: &str,
) -> Result<Option<StoredInvoice>, sqlx::Error> {
    let header: Option<HeaderRow> = sqlx::query_as(
        "SELECT id, number, tenant_id, period, currency, minor_digits, rounding,
            subtotal_precise, subtotal_minor, credits_applied_minor, total_minor,
            unpriced_requests, finalized_at
         FROM invoices WHERE tenant_id = $1 AND period = $2 AND currency = $3",
    )
    .bind(tenant_id)
    .bind(period.to_string())
    .bind(currency)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(h) = header else { return Ok(None) };
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT model, token_class, description, quantity, unit, unit_price, amount,
            amount_minor, adjusts_period
         FROM invoice_lines WHERE invoice_id = $1 ORDER BY position",
    )
    .bind(h.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(StoredInvoice {
        id: h.id,
        number: h.number,
        tenant_id: h.tenant_id,
        period: h.period,
        currency: h.currency,
        minor_digits: u32::try_from(h.minor_digits).unwrap_or(2),
        rounding: h.rounding,
        subtotal_precise: h.subtotal_precise.normalize(),
        totals: Totals {
            subtotal_minor: h.subtotal_minor,
            credits_applied_minor: h.credits_applied_minor,
            total_minor: h.total_minor,
        },
        unpriced_requests: h.unpriced_requests,
        finalized_at: h.finalized_at,
        lines: lines
            .into_iter()
            .map(|l| Line {
                model: l.model,
                token_class: l.token_class,
                description: l.description,
                quantity: l.quantity,
                unit: l.unit,
                unit_price: l.unit_price.map(|p| p.normalize()),
                amount: l.amount.normalize(),
                amount_minor: l.amount_minor,
                adjusts_period: l.adjusts_period,
            })
            .collect(),
    }))
}

/// What the caller computed from the sums: lines and totals.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub minor_digits: u32,
    pub rounding: String,
    pub subtotal_precise: Decimal,
    pub totals: Totals,
    pub unpriced_requests: i64,
    pub lines: Vec<Line>,
}

/// The figures an invoice is computed from, read inside the finalizing
/// transaction.
#[derive(Debug, Clone)]
pub struct InvoiceInputs {
    pub aggregates: Vec<Aggregate>,
    pub available_credit: Decimal,
    pub unpriced_requests: i64,
}

#[derive(Debug)]
pub enum Finalized {
    Created(StoredInvoice),
    /// It was final already (a retry, or a concurrent finalize): unchanged.
    Existing(StoredInvoice),
    /// Nothing to bill.
    Empty,
}

/// Finalizes the tenant's invoice for `period` and `currency` in one
/// transaction: claims the unbilled rows (recording each in
/// `invoice_items`), computes the invoice from exactly the claimed rows with
/// `build`, takes the next number of the year of `finalized_at` (the
/// invoice date, from the collector's clock) and stores it. Finalizations
/// of one tenant are serialized, so a row is never billed twice.
pub async fn finalize_invoice<E>(
    pool: &PgPool,
    tenant_id: &str,
    period: Period,
    currency: &str,
    finalized_at: DateTime<Utc>,
    build: impl FnOnce(InvoiceInputs) -> Result<NewInvoice, E>,
) -> Result<Result<Finalized, E>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('invoice:' || $1, 0))")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    if let Some(existing) = find_in(&mut tx, tenant_id, period, currency).await? {
        return Ok(Ok(Finalized::Existing(existing)));
    }
    let id: i64 = sqlx::query_scalar("SELECT nextval('invoices_id_seq')")
        .fetch_one(&mut *tx)
        .await?;
    let mut claim: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "INSERT INTO invoice_items (tenant_id, request_id, occurred_at, invoice_id)
         SELECT t.tenant_id, t.request_id, t.occurred_at, ",
    );
    claim.push_bind(id).push(" FROM transactions t WHERE");
    push_unbilled(&mut claim, tenant_id, currency, period);
    claim.build().execute(&mut *tx).await?;
    let aggregates = invoice_aggregates(
        &mut tx,
        InvoiceSource::Billed {
            invoice_id: id,
            period,
        },
    )
    .await?;
    if aggregates.is_empty() {
        tx.rollback().await?;
        return Ok(Ok(Finalized::Empty));
    }
    let inputs = InvoiceInputs {
        aggregates,
        available_credit: available_credit(&mut tx, tenant_id, currency).await?,
        unpriced_requests: unpriced_requests(&mut tx, tenant_id, period).await?,
    };
    let invoice = match build(inputs) {
        Ok(i) => i,
        Err(e) => {
            tx.rollback().await?;
            return Ok(Err(e));
        }
    };
    let (year, seq): (i32, i64) = sqlx::query_as(
        "INSERT INTO invoice_series_counters (tenant_id, year, last)
         VALUES ($1, $2, 1)
         ON CONFLICT (tenant_id, year) DO UPDATE SET last = invoice_series_counters.last + 1
         RETURNING year, last",
    )
    .bind(tenant_id)
    .bind(finalized_at.year())
    .fetch_one(&mut *tx)
    .await?;
    let number = crate::invoices::invoice_number(tenant_id, year, seq);
    sqlx::query(
        "INSERT INTO invoices (id, number, tenant_id, period, period_start, period_end, currency,
            minor_digits, rounding, subtotal_precise, subtotal_minor, credits_applied_minor,
            total_minor, unpriced_requests, finalized_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(id)
    .bind(&number)
    .bind(tenant_id)
    .bind(period.to_string())
    .bind(period.start())
    .bind(period.end())
    .bind(currency)
    .bind(i32::try_from(invoice.minor_digits).unwrap_or(2))
    .bind(&invoice.rounding)
    .bind(invoice.subtotal_precise)
    .bind(invoice.totals.subtotal_minor)
    .bind(invoice.totals.credits_applied_minor)
    .bind(invoice.totals.total_minor)
    .bind(invoice.unpriced_requests)
    .bind(finalized_at)
    .execute(&mut *tx)
    .await?;
    for (position, l) in invoice.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO invoice_lines (invoice_id, position, model, token_class, description,
                quantity, unit, unit_price, amount, amount_minor, adjusts_period)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id)
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .bind(&l.model)
        .bind(&l.token_class)
        .bind(&l.description)
        .bind(l.quantity)
        .bind(&l.unit)
        .bind(l.unit_price)
        .bind(l.amount)
        .bind(l.amount_minor)
        .bind(&l.adjusts_period)
        .execute(&mut *tx)
        .await?;
    }
    let stored = find_in(&mut tx, tenant_id, period, currency).await?;
    tx.commit().await?;
    Ok(Ok(stored.map_or(Finalized::Empty, Finalized::Created)))
}
