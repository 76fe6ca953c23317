//! Change notifications between replicas (migration 0020): the generation
//! of each cached topic, the listener on `billing_changes`, and the price
//! book's data read in one snapshot with its generation.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;

use super::{ModelAlias, StoredPrice, TenantPricing};

/// The channel the triggers of migration 0020 notify, with `topic:generation`.
pub const CHANGE_CHANNEL: &str = "billing_changes";

/// The generation of every topic (0 before the first change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generations {
    /// Price catalog, tenant pricing agreements and model aliases.
    pub pricing: i64,
    /// Tenant read tokens.
    pub tokens: i64,
}

/// Every topic's generation, in one read of a two-row table.
pub async fn generations(pool: &PgPool) -> Result<Generations, sqlx::Error> {
    let (pricing, tokens): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT max(generation) FILTER (WHERE topic = 'pricing'),
                max(generation) FILTER (WHERE topic = 'tokens')
         FROM change_generations",
    )
    .fetch_one(pool)
    .await?;
    Ok(Generations {
        pricing: pricing.unwrap_or(0),
        tokens: tokens.unwrap_or(0),
    })
}

/// The pricing generation alone: a primary-key probe, what is read before
/// pricing (ingest's writer, reservations, `changes::Fence`).
pub async fn pricing_generation(db: impl sqlx::PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    let g: Option<i64> =
        sqlx::query_scalar("SELECT generation FROM change_generations WHERE topic = 'pricing'")
            .fetch_optional(db)
            .await?;
    Ok(g.unwrap_or(0))
}

/// What a price book is built from, as one snapshot.
#[derive(Debug)]
pub struct PricingSnapshot {
    /// The pricing generation these rows are: exactly, since they are read
    /// in the same repeatable-read transaction.
    pub generation: i64,
    pub prices: Vec<StoredPrice>,
    pub agreements: Vec<TenantPricing>,
    pub aliases: Vec<ModelAlias>,
}

/// Reads the catalog, the tenant agreements, the model aliases and their
/// generation in one read-only snapshot, so a change committed meanwhile is
/// either wholly in it (and counted in its generation) or not at all.
#[tracing::instrument(skip_all)]
pub async fn load_pricing_snapshot(pool: &PgPool) -> Result<PricingSnapshot, sqlx::Error> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let generation: Option<i64> =
        sqlx::query_scalar("SELECT generation FROM change_generations WHERE topic = 'pricing'")
            .fetch_optional(&mut *tx)
            .await?;
    let prices = super::load_prices(&mut *tx).await?;
    let agreements = super::load_tenant_pricing(&mut *tx, None).await?;
    let aliases = super::load_model_aliases(&mut *tx, None).await?;
    tx.commit().await?;
    Ok(PricingSnapshot {
        generation: generation.unwrap_or(0),
        prices,
        agreements,
        aliases,
    })
}

/// A listener on [`CHANGE_CHANNEL`] over a connection of its own (a pool of
/// one, with `pool`'s connection options), so it never takes one of the
/// pool's connections and never waits for one. Connects at once.
pub async fn change_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    // A lost connection ends `try_recv` with None and is not re-established
    // behind the caller's back: it reconnects itself and then catches up.
    listener.eager_reconnect(false);
    listener.listen(CHANGE_CHANNEL).await?;
    Ok(listener)
}
