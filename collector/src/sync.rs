//! Periodic price sync from a published price list (OpenRouter or LiteLLM
//! format). A model's price is added as a new version only when it differs
//! from the one in force, so an unchanged list adds nothing.

use std::time::Duration;

use crate::config::ImportFormat;
use crate::pricing::{self, PriceEntry};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("fetching the price list failed: {0}")]
    Fetch(#[from] reqwest::Error),
    #[error("the price list answered HTTP {0}")]
    Status(u16),
    #[error("the price list could not be imported: {0}")]
    Import(#[from] pricing::PricingError),
    #[error("the catalog could not be updated: {0}")]
    Database(#[from] sqlx::Error),
}

/// What one sync did.
#[derive(Debug, PartialEq, Eq)]
pub struct SyncReport {
    pub listed: usize,
    pub added: u64,
    pub unchanged: usize,
}

/// True when `new` charges the same as `current` (ignoring when it starts).
fn same_price(current: &PriceEntry, new: &PriceEntry) -> bool {
    let mut aligned = new.clone();
    aligned.effective_from = current.effective_from;
    aligned.provider.clone_from(&current.provider);
    aligned.aliases.clone_from(&current.aliases);
    &aligned == current
}

/// Fetches the list once and adds changed prices, effective now.
pub async fn sync_once(
    state: &AppState,
    client: &reqwest::Client,
    url: &str,
    format: ImportFormat,
) -> Result<SyncReport, SyncError> {
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(SyncError::Status(response.status().as_u16()));
    }
    let text = response.text().await?;
    // Replicas take turns from here to the commit; "now" and the catalog
    // are read after the turn comes, so what another replica just added is
    // the price in force and an unchanged price is not added again.
    let mut tx = crate::db::begin_price_sync(&state.pool).await?;
    let now = state.clock.now();
    let imported = match format {
        ImportFormat::Openrouter => pricing::import_openrouter(&text, now)?,
        ImportFormat::Litellm => pricing::import_litellm(&text, now)?,
    };
    let listed = imported.entries.len();
    let changed: Vec<PriceEntry> = {
        let book = state.price_book_now().await?;
        imported
            .entries
            .into_iter()
            .filter(|e| {
                let current = book.catalog().and_then(|c| {
                    c.history(&e.model)
                        .into_iter()
                        .rfind(|p| p.effective_from <= now)
                });
                current.is_none_or(|c| !same_price(c, e))
            })
            .collect()
    };
    let unchanged = listed - changed.len();
    let source = match format {
        ImportFormat::Openrouter => "sync:openrouter",
        ImportFormat::Litellm => "sync:litellm",
    };
    let added = crate::db::insert_prices(&mut *tx, &changed, source).await?;
    tx.commit().await?;
    if added > 0 {
        state.reload_prices().await?;
    }
    Ok(SyncReport {
        listed,
        added,
        unchanged,
    })
}

/// Runs [`sync_once`] every `interval`, logging the outcome; never exits.
pub async fn run(state: AppState, url: String, format: ImportFormat, interval: Duration) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "price sync disabled: cannot build an HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        match sync_once(&state, &client, &url, format).await {
            Ok(r) => tracing::info!(
                listed = r.listed,
                added = r.added,
                unchanged = r.unchanged,
                "price list synced"
            ),
            Err(e) => tracing::warn!(error = %e, "price sync failed; the catalog is unchanged"),
        }
    }
}
