//! Budget utilisation gauges for Prometheus, read at scrape time with the
//! same query and clock as `GET /v1/budgets`, so they equal what it reports:
//!
//! - `billing_budget_limit`, `billing_budget_spent`: exact decimals in the
//!   budget's currency, for its current period;
//! - `billing_budget_spent_ratio`: spent / limit (1 = at the limit).
//!
//! Labels: `tenant`, `budget` (its id), `api_key`, `model` (empty when the
//! budget covers all), `period`, `currency`, `hard`. Cardinality is bounded
//! like the cost metrics: only the budgets of the first
//! `METRICS_MAX_TENANTS` tenants (by name) get series;
//! `billing_budgets_unexported` counts the rest.

use std::collections::BTreeSet;
use std::fmt::Write;

use rust_decimal::Decimal;

use crate::db;
use crate::AppState;

/// How long a scrape waits for the budgets before leaving them out.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// spent / limit, exact to Decimal precision (0 for a zero limit).
pub fn ratio(spent: Decimal, limit: Decimal) -> Decimal {
    if limit.is_zero() {
        return Decimal::ZERO;
    }
    spent
        .checked_div(limit)
        .map(|r| r.normalize())
        .unwrap_or_default()
}

/// Appends the budget gauges; a database error or no answer within
/// [`READ_TIMEOUT`] leaves them out (and says so in
/// `billing_budget_metrics_up`), the other metrics still render.
pub async fn render(state: &AppState, out: &mut String) {
    let now = state.clock.now();
    let read = async {
        let list = db::list_budgets(&state.pool, None).await?;
        let current =
            db::spent_in_current_period(&state.pool, &list, now, state.budget_zone).await?;
        Ok::<_, sqlx::Error>((list, current))
    };
    // A scrape never waits long on an unreachable database.
    let read = async {
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {READ_TIMEOUT:?}")),
        }
    };
    let (list, current) = match read.await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "budget metrics unavailable");
            let _ = writeln!(out, "# HELP billing_budget_metrics_up Whether the budget gauges could be read (1) or the database failed (0).\n# TYPE billing_budget_metrics_up gauge\nbilling_budget_metrics_up 0");
            return;
        }
    };
    let cap = state.metrics.usage.max_tenants();
    let tenants: BTreeSet<&str> = list.iter().map(|b| b.tenant_id.as_str()).collect();
    let labelled: BTreeSet<&str> = tenants.into_iter().take(cap).collect();
    let mut rows = Vec::new();
    let mut unexported = 0u64;
    for (b, (_, spent)) in list.iter().zip(current) {
        if !labelled.contains(b.tenant_id.as_str()) {
            unexported += 1;
            continue;
        }
        let labels = format!(
            "tenant=\"{}\",budget=\"{}\",api_key=\"{}\",model=\"{}\",period=\"{}\",currency=\"{}\",hard=\"{}\"",
            label(&b.tenant_id),
            b.id,
            label(b.api_key_id.as_deref().unwrap_or("")),
            label(b.model.as_deref().unwrap_or("")),
            label(&b.period),
            label(&b.currency),
            b.hard
        );
        rows.push((labels, b.limit.normalize(), spent.normalize()));
    }
    let _ = writeln!(out, "# HELP billing_budget_metrics_up Whether the budget gauges could be read (1) or the database failed (0).\n# TYPE billing_budget_metrics_up gauge\nbilling_budget_metrics_up 1");
    let _ = writeln!(out, "# HELP billing_budget_limit A budget's limit in its currency.\n# TYPE billing_budget_limit gauge");
    for (l, limit, _) in &rows {
        let _ = writeln!(out, "billing_budget_limit{{{l}}} {limit}");
    }
    let _ = writeln!(out, "# HELP billing_budget_spent Priced spend in a budget's current period, as GET /v1/budgets reports it.\n# TYPE billing_budget_spent gauge");
    for (l, _, spent) in &rows {
        let _ = writeln!(out, "billing_budget_spent{{{l}}} {spent}");
    }
    let _ = writeln!(out, "# HELP billing_budget_spent_ratio Spent / limit of a budget's current period (1 = at the limit).\n# TYPE billing_budget_spent_ratio gauge");
    for (l, limit, spent) in &rows {
        let _ = writeln!(
            out,
            "billing_budget_spent_ratio{{{l}}} {}",
            ratio(*spent, *limit)
        );
    }
    let _ = writeln!(out, "# HELP billing_budgets_unexported Budgets of tenants beyond METRICS_MAX_TENANTS, without gauges of their own.\n# TYPE billing_budgets_unexported gauge\nbilling_budgets_unexported {unexported}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn the_ratio_is_exact_and_a_zero_limit_is_zero() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(ratio(d("0.00069"), d("0.0012")), d("0.575"));
        assert_eq!(ratio(d("30"), d("25.00")), d("1.2"));
        assert_eq!(ratio(d("1"), d("0")), d("0"));
    }
}
