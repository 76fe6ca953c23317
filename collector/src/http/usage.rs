//! `POST /v1/usage`: the filter's ingest endpoint.

use std::time::Instant;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{parse_json, Body};
use crate::auth::Ingest;
use crate::changes::Cause;
use crate::error::{ApiError, ApiResult};
use crate::ingest::{parse_batch, Rejection};
use crate::metrics::Metrics;
use crate::writer::Written;
use crate::AppState;

/// How many times a batch is priced again because pricing changed before
/// it was written; past that it answers 503 and the filter retries.
const MAX_REPRICES: u32 = 5;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", post(ingest))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    records: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct BatchResult {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    unpriced: usize,
    rejections: Vec<Rejection>,
}

/// Validates, prices and commits a batch; answers only after commit, so a
/// 200 means every accepted record is durable. A database failure answers
/// 503 and the filter retries the whole batch (dedup makes that safe).
async fn ingest(
    State(state): State<AppState>,
    _auth: Ingest,
    Body(body): Body,
) -> ApiResult<Json<BatchResult>> {
    let started = Instant::now();
    let batch: Batch = parse_json(&body)?;
    let (valid, rejections) = parse_batch(batch.records, state.clock.now());
    let mut records = valid;
    let mut bounced = 0;
    // Priced with the book this replica has; the writer hands the batch
    // back if a pricing change committed (on any replica) before it
    // arrived, and it is priced again after a reload.
    let (total, unpriced_keys, inserted) = loop {
        let (entries, priced_at) = {
            let book = state.price_book();
            (book.price_all(records), book.generation())
        };
        let total = entries.len();
        let unpriced_keys: Vec<crate::db::LedgerKey> = entries
            .iter()
            .filter(|e| e.price.is_none())
            .map(crate::db::LedgerEntry::key)
            .collect();
        let failure = match state.ledger_writer.insert(entries, priced_at).await {
            Ok(Written::Inserted(keys)) => break (total, unpriced_keys, keys),
            Ok(Written::Stale {
                generation,
                entries,
            }) if bounced < MAX_REPRICES => {
                bounced += 1;
                records = entries.into_iter().map(|e| e.record).collect();
                match state.reload_prices_to(generation, Cause::Fence).await {
                    Ok(()) => continue,
                    Err(e) => ApiError::from(e),
                }
            }
            Ok(Written::Stale { .. }) => ApiError::Unavailable(
                "pricing changed during every attempt to write this batch; retry".into(),
            ),
            Err(e) => e,
        };
        Metrics::add(&state.metrics.ingest_failures, 1);
        return Err(failure);
    };
    let m = &state.metrics;
    let accepted = inserted.len();
    // Count only newly inserted unpriced rows, so a resent batch adds nothing.
    let inserted: std::collections::HashSet<crate::db::LedgerKey> = inserted.into_iter().collect();
    let unpriced = unpriced_keys
        .iter()
        .filter(|k| inserted.contains(*k))
        .count();
    let duplicates = total - accepted;
    Metrics::add(&m.records_accepted, accepted as u64);
    Metrics::add(&m.records_duplicate, duplicates as u64);
    Metrics::add(&m.records_rejected, rejections.len() as u64);
    Metrics::add(&m.records_unpriced, unpriced as u64);
    m.observe_ingest(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    for r in &rejections {
        tracing::warn!(index = r.index, request_id = ?r.request_id, reason = %r.reason, "usage record rejected");
    }
    Ok(Json(BatchResult {
        accepted,
        duplicates,
        rejected: rejections.len(),
        unpriced,
        rejections,
    }))
}
