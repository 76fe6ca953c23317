//! Group commit for ingest. Concurrent `POST /v1/usage` batches queue here
//! and a few writer tasks insert whatever has queued as one ledger
//! statement: every batch of a busy gateway touches the same hot hourly
//! rollup rows (its tenants' current hour), so fewer, larger statements
//! mean fewer row-lock waits and less per-statement work. An idle queue
//! adds no delay: a lone batch is written at once. Each batch still gets
//! its answer only after the commit that holds its rows.
//!
//! Before each statement the writer reads the pricing generation (one
//! primary-key read per statement, however many batches it merges): a
//! batch priced at an older one, because a pricing change committed on
//! some replica before it arrived and this replica has not reloaded yet,
//! is not written but handed back to be priced again (see `changes`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::db::{self, LedgerEntry, LedgerKey};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Statements in flight at once: two keep both cores of a small box busy;
/// more only queue on the same rollup rows.
const WRITERS: usize = 2;
/// Records merged into one statement at most.
const MAX_ROWS: usize = 5_000;

type Reply = oneshot::Sender<Result<Written, ApiError>>;

struct Job {
    entries: Vec<LedgerEntry>,
    /// The pricing generation the entries were priced at (None: no price
    /// book was loaded).
    priced_at: Option<i64>,
    reply: Reply,
}

/// What became of a batch.
#[derive(Debug)]
pub enum Written {
    /// Committed: the keys of the entries that were new (the others were
    /// already in the ledger, or earlier in a merged batch).
    Inserted(Vec<LedgerKey>),
    /// Not written: pricing is at `generation` now, newer than the batch
    /// was priced at. Reload, price the records again and resend them.
    Stale {
        generation: i64,
        entries: Vec<LedgerEntry>,
    },
}

/// The queue in front of the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct LedgerWriter {
    jobs: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Starts the writer tasks; they stop when the last handle is dropped.
    pub fn start(pool: sqlx::PgPool, metrics: Arc<Metrics>) -> Self {
        let (jobs, queue) = mpsc::channel(1024);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), queue.clone(), metrics.clone()));
        }
        Self { jobs }
    }

    /// Inserts `entries`, priced at pricing generation `priced_at`, unless
    /// pricing has moved on since (see [`Written`]).
    pub async fn insert(
        &self,
        entries: Vec<LedgerEntry>,
        priced_at: Option<i64>,
    ) -> Result<Written, ApiError> {
        if entries.is_empty() {
            return Ok(Written::Inserted(Vec::new()));
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                entries,
                priced_at,
                reply,
            })
            .await
            .map_err(|_| ApiError::Internal("ledger writer stopped".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("ledger writer dropped a batch".into()))?
    }
}

async fn run(pool: sqlx::PgPool, queue: Arc<Mutex<mpsc::Receiver<Job>>>, metrics: Arc<Metrics>) {
    loop {
        let jobs = {
            // One writer collects at a time; the others are writing.
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut rows = first.entries.len();
            let mut jobs = vec![first];
            while rows < MAX_ROWS {
                let Ok(job) = queue.try_recv() else { break };
                rows += job.entries.len();
                jobs.push(job);
            }
            jobs
        };
        write(&pool, jobs, &metrics).await;
    }
}

/// One statement for all `jobs`. A record in several of them (a batch
/// resent while its first copy still queues) belongs to the first, so it is
/// accepted exactly once and a duplicate for the others.
/// Budget reservations of the records are released in the same
/// transaction (see `db::insert_batch_releasing`).
async fn write(pool: &sqlx::PgPool, jobs: Vec<Job>, metrics: &Metrics) {
    // Read after every one of these batches arrived: it counts every
    // pricing change committed before any of them.
    let generation = match db::pricing_generation(pool).await {
        Ok(g) => g,
        Err(e) => {
            let err = ApiError::from(e);
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
            return;
        }
    };
    let (jobs, stale): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|job| job.priced_at >= Some(generation));
    for job in stale {
        let _ = job.reply.send(Ok(Written::Stale {
            generation,
            entries: job.entries,
        }));
    }
    if jobs.is_empty() {
        return;
    }
    Metrics::add(&metrics.ingest_statements, 1);
    let mut owner: HashMap<LedgerKey, usize> = HashMap::new();
    let mut merged: Vec<&LedgerEntry> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        for e in &job.entries {
            if let std::collections::hash_map::Entry::Vacant(v) = owner.entry(e.key()) {
                v.insert(i);
                merged.push(e);
            }
        }
    }
    if jobs.len() > 1 {
        tracing::debug!(
            batches = jobs.len(),
            records = merged.len(),
            "merged ingest batches"
        );
    }
    match db::insert_batch_releasing(pool, &merged).await {
        Ok(db::InsertOutcome { inserted, released }) => {
            Metrics::add(&metrics.reservations_released, released);
            // Only rows this statement inserted: a duplicate counts nothing.
            let new: std::collections::HashSet<&LedgerKey> = inserted.iter().collect();
            for e in &merged {
                if new.contains(&e.key()) {
                    metrics.usage.record(&e.record, e.price.as_ref());
                }
            }
            let mut per_job: Vec<Vec<LedgerKey>> = vec![Vec::new(); jobs.len()];
            for key in inserted {
                if let Some(&i) = owner.get(&key) {
                    per_job[i].push(key);
                }
            }
            for (job, keys) in jobs.into_iter().zip(per_job) {
                let _ = job.reply.send(Ok(Written::Inserted(keys)));
            }
        }
        Err(e) => {
            let err = ApiError::from(e);
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}
