//! Runs the pure [`crate::forecast`] over what the database holds: the
//! daily rollups of the last [`LOOKBACK_DAYS`] and the spend of the period
//! so far, one currency at a time (money is never added across them).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use crate::budgets::Window;
use crate::db::{self, Budget, LedgerFilter};
use crate::forecast::{forecast, DailyTotal, Forecast, LOOKBACK_DAYS};

/// One currency's forecast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyForecast {
    pub currency: String,
    #[serde(flatten)]
    pub forecast: Forecast,
}

/// Daily priced spend of the scope, per currency, over the lookback before
/// `now`'s UTC day.
async fn history(
    pool: &PgPool,
    filter: &LedgerFilter,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, Vec<DailyTotal>>, sqlx::Error> {
    let today = now.date_naive();
    let rows = db::daily_spend(pool, filter, today - Duration::days(LOOKBACK_DAYS), today).await?;
    let mut out: BTreeMap<String, Vec<DailyTotal>> = BTreeMap::new();
    for r in rows {
        out.entry(r.currency).or_default().push(DailyTotal {
            day: r.day,
            amount: r.cost,
        });
    }
    Ok(out)
}

/// The forecast of `[start, end)` at `now` for every currency the scope
/// spent in, this period or in the lookback.
pub async fn project(
    pool: &PgPool,
    filter: &LedgerFilter,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<CurrencyForecast>, sqlx::Error> {
    let history = history(pool, filter, now).await?;
    let spent: BTreeMap<String, Decimal> = db::spend_by_currency(pool, filter, start, end)
        .await?
        .into_iter()
        .collect();
    let currencies: BTreeSet<&String> = history.keys().chain(spent.keys()).collect();
    Ok(currencies
        .into_iter()
        .map(|c| CurrencyForecast {
            currency: c.clone(),
            forecast: forecast(
                history.get(c).map(Vec::as_slice).unwrap_or_default(),
                spent.get(c).copied().unwrap_or_default(),
                start,
                now,
                end,
            ),
        })
        .collect())
}

/// The forecast of a budget's current period (None for `total`, which has
/// no end), from what it spent so far (as `GET /v1/budgets` reports it).
pub async fn project_budget(
    pool: &PgPool,
    budget: &Budget,
    window: Window,
    spent: Decimal,
    now: DateTime<Utc>,
) -> Result<Option<Forecast>, sqlx::Error> {
    let Some(end) = window.end else {
        return Ok(None);
    };
    let filter = LedgerFilter {
        tenant_id: Some(budget.tenant_id.clone()),
        api_key_id: budget.api_key_id.clone(),
        model: budget.model.clone(),
        ..LedgerFilter::default()
    };
    let history = history(pool, &filter, now).await?;
    let days = history
        .get(&budget.currency)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(Some(forecast(days, spent, window.start, now, end)))
}

/// A forecast as alerts store and send it.
pub fn to_json(f: &Forecast) -> serde_json::Value {
    serde_json::json!({
        "projected": f.projected.to_string(),
        "low": f.low.to_string(),
        "high": f.high.to_string(),
        "basis": f.basis,
    })
}
