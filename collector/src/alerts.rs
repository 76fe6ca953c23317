//! Budget and balance alerts delivered as signed webhooks.
//!
//! The evaluator ([`evaluate_once`], every `ALERT_EVAL_INTERVAL_MS`) works
//! out where each budget with a `webhook_url` stands in its current period
//! and inserts an alert for every threshold reached so far; the table's
//! unique key (budget, period start, event, threshold) makes each fire once
//! per period, even with several collector replicas. Thresholds below 100 %
//! fire `threshold_crossed`, 100 % and above `budget_exceeded`; a spend
//! forecast ([`crate::forecast`]: weekday factors and a trend over the
//! daily rollups) over the limit fires `projected_to_exceed` once per
//! period, with the forecast and its basis in the payload.
//!
//! Prepaid tenants with a low-balance setting (`balance_alerts`) fire
//! `low_balance` when their balance falls below the threshold and
//! `balance_exhausted` when it reaches zero, once per fall: each event is
//! re-armed only when the balance is back at/above the threshold (above
//! zero), so a later fall fires again.
//!
//! The deliverer ([`deliver_once`]) POSTs due alerts to the webhook with
//! `x-billing-signature: sha256=<hex HMAC-SHA256 of the body with
//! WEBHOOK_SECRET>` and `x-billing-idempotency-key: <alert id>` (also the
//! payload's `id`: a retry sends the same id and the same bytes). Failures are
//! retried with exponential backoff (1 s, 2 s, 4 s … capped at 1 h, at most
//! [`MAX_ATTEMPTS`] attempts). Both run in their own tasks, never on the
//! ingest path.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::budgets;
use crate::db::{self, Alert, BalanceEvent, NewAlert, SpendScope};
use crate::forecasting;
use crate::AppState;

pub const SIGNATURE_HEADER: &str = "x-billing-signature";
pub const IDEMPOTENCY_HEADER: &str = "x-billing-idempotency-key";
/// Attempts before an alert is left undelivered in the log.
pub const MAX_ATTEMPTS: i32 = 12;
/// Alerts claimed per delivery round.
pub const BATCH: i64 = 50;
/// Per-request timeout of a webhook call.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed alert is hidden from other deliverers (> TIMEOUT).
const LEASE_SECS: i64 = 60;
const MAX_ERROR_LEN: usize = 500;

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || m)), 64-byte blocks;
/// keys longer than a block are hashed first.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The `x-billing-signature` value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

/// Checks a received `x-billing-signature` in constant time (for receivers).
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    use subtle::ConstantTimeEq;
    signature(secret, body)
        .as_bytes()
        .ct_eq(header.as_bytes())
        .into()
}

/// The event a percentage threshold fires.
pub fn threshold_event(threshold: u32) -> &'static str {
    if threshold >= 100 {
        "budget_exceeded"
    } else {
        "threshold_crossed"
    }
}

/// The webhook body of a budget alert, fields in a fixed order.
#[derive(Serialize)]
struct Payload<'a> {
    id: String,
    event: &'a str,
    budget_id: Option<i64>,
    tenant_id: &'a str,
    api_key_id: Option<&'a str>,
    /// Percent of the limit; null for `projected_to_exceed`.
    threshold: Option<i32>,
    spent: String,
    limit: String,
    currency: &'a str,
    period_start: DateTime<Utc>,
    resets_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    /// `projected_to_exceed` only: projected, low, high and basis.
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast: Option<&'a serde_json::Value>,
}

/// The webhook body of a balance alert.
#[derive(Serialize)]
struct BalancePayload<'a> {
    id: String,
    event: &'a str,
    tenant_id: &'a str,
    balance: String,
    /// The low-balance threshold, an amount in `currency`.
    threshold: String,
    credits: String,
    spent: String,
    currency: &'a str,
    created_at: DateTime<Utc>,
}

/// Whether an event is about a prepaid balance (no budget).
pub fn is_balance_event(event: &str) -> bool {
    event == BalanceEvent::Low.as_str() || event == BalanceEvent::Exhausted.as_str()
}

/// The exact bytes POSTed for an alert; built from the stored row only, so
/// every retry sends the same body (and signature).
pub fn payload(a: &Alert) -> Vec<u8> {
    if is_balance_event(&a.event) {
        let balance = a.balance.unwrap_or_default();
        let p = BalancePayload {
            id: a.id.to_string(),
            event: &a.event,
            tenant_id: &a.tenant_id,
            balance: balance.normalize().to_string(),
            threshold: a.limit.normalize().to_string(),
            credits: (balance + a.spent).normalize().to_string(),
            spent: a.spent.normalize().to_string(),
            currency: &a.currency,
            created_at: a.created_at,
        };
        return serde_json::to_vec(&p).unwrap_or_default();
    }
    let p = Payload {
        id: a.id.to_string(),
        event: &a.event,
        budget_id: a.budget_id,
        tenant_id: &a.tenant_id,
        api_key_id: a.api_key_id.as_deref(),
        threshold: (a.event != "projected_to_exceed").then_some(a.threshold),
        spent: a.spent.normalize().to_string(),
        limit: a.limit.normalize().to_string(),
        currency: &a.currency,
        period_start: a.period_start,
        resets_at: a.resets_at,
        created_at: a.created_at,
        forecast: a.forecast.as_ref(),
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Delay before the next attempt after `attempts` failures: 1 s doubling,
/// capped at one hour.
pub fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(12);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(3600))
}

/// One evaluation at `now` (budgets, then balances); returns how many
/// alerts are new.
pub async fn evaluate_at(state: &AppState, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let budgets = evaluate_budgets(state, now).await?;
    Ok(budgets + evaluate_balances(state).await?)
}

async fn evaluate_budgets(state: &AppState, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let list: Vec<_> = db::list_budgets(&state.pool, None)
        .await?
        .into_iter()
        .filter(|b| b.webhook_url.is_some())
        .collect();
    let current = db::spent_in_current_period(&state.pool, &list, now, state.budget_zone).await?;
    // Forecasts only where one could still fire: not exceeded, a period
    // with an end, not fired yet this period.
    let candidates: Vec<(i64, DateTime<Utc>)> = list
        .iter()
        .zip(&current)
        .filter(|(b, (w, spent))| w.end.is_some() && *spent < b.limit)
        .map(|(b, (w, _))| (b.id, w.start))
        .collect();
    let fired = db::projections_fired(&state.pool, &candidates).await?;
    let mut fire = Vec::new();
    for (b, (w, spent)) in list.iter().zip(current) {
        let Some(url) = &b.webhook_url else { continue };
        let alert = |event: &str, threshold: i32, forecast: Option<serde_json::Value>| NewAlert {
            budget_id: b.id,
            tenant_id: b.tenant_id.clone(),
            api_key_id: b.api_key_id.clone(),
            event: event.to_string(),
            threshold,
            spent,
            limit: b.limit,
            currency: b.currency.clone(),
            period_start: w.start,
            resets_at: w.end,
            webhook_url: url.clone(),
            forecast,
        };
        let thresholds: Vec<u32> = b
            .alert_thresholds
            .iter()
            .filter_map(|&t| u32::try_from(t).ok())
            .collect();
        // Everything reached so far this period; the unique key drops the
        // ones already fired.
        for t in
            budgets::crossed_thresholds(rust_decimal::Decimal::ZERO, spent, b.limit, &thresholds)
        {
            fire.push(alert(threshold_event(t), t as i32, None));
        }
        if w.end.is_none() || spent >= b.limit || fired.contains(&b.id) {
            continue;
        }
        if let Some(f) = forecasting::project_budget(&state.pool, b, w, spent, now).await? {
            if budgets::projected_to_exceed(b.limit, spent, f.projected) {
                fire.push(alert(
                    "projected_to_exceed",
                    0,
                    Some(forecasting::to_json(&f)),
                ));
            }
        }
    }
    let added = db::insert_alerts(&state.pool, &fire).await?;
    if added > 0 {
        tracing::info!(added, "budget alerts fired");
    }
    Ok(added)
}

/// Which balance events hold for `balance`: (below the threshold, at or
/// below zero). Zero is exhausted, as on the deny list.
pub fn balance_conditions(
    balance: rust_decimal::Decimal,
    threshold: rust_decimal::Decimal,
) -> (bool, bool) {
    (balance < threshold, balance <= rust_decimal::Decimal::ZERO)
}

/// Balance alerts: only state changes write (a fall fires and disarms, a
/// recovery re-arms), so a steady balance costs two reads per round.
async fn evaluate_balances(state: &AppState) -> Result<u64, sqlx::Error> {
    let watches = db::balance_watches(&state.pool).await?;
    let scopes: Vec<SpendScope> = watches
        .iter()
        .map(|w| SpendScope {
            tenant_id: w.tenant_id.clone(),
            api_key_id: None,
            model: None,
            currency: w.currency.clone(),
            start: w.opened_at,
        })
        .collect();
    let spent = db::spent(&state.pool, &scopes).await?;
    let mut added = 0;
    for (w, spent) in watches.iter().zip(spent) {
        let balance = (w.credits - spent).normalize();
        let (low, exhausted) = balance_conditions(balance, w.threshold);
        for (event, holds, fired) in [
            (BalanceEvent::Low, low, w.low_fired_at),
            (BalanceEvent::Exhausted, exhausted, w.exhausted_fired_at),
        ] {
            if holds && fired.is_none() {
                if db::fire_balance_alert(&state.pool, w, event, balance, spent).await? {
                    tracing::info!(tenant_id = %w.tenant_id, event = event.as_str(), %balance,
                        "balance alert fired");
                    added += 1;
                }
            } else if !holds && fired.is_some() {
                db::rearm_balance_alert(&state.pool, w, event).await?;
            }
        }
    }
    Ok(added)
}

/// One evaluation now.
pub async fn evaluate_once(state: &AppState) -> Result<u64, sqlx::Error> {
    evaluate_at(state, state.clock.now()).await
}

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub delivered: usize,
    pub failed: usize,
}

/// Delivers the alerts that are due, concurrently; failures are rescheduled.
/// Without a `WEBHOOK_SECRET` nothing is sent (alerts wait in the log).
pub async fn deliver_once(
    state: &AppState,
    client: &reqwest::Client,
) -> Result<Delivered, sqlx::Error> {
    let Some(secret) = state.webhook_secret.clone() else {
        return Ok(Delivered::default());
    };
    let due = db::claim_due_alerts(&state.pool, BATCH, MAX_ATTEMPTS, LEASE_SECS).await?;
    let mut set = tokio::task::JoinSet::new();
    for alert in due {
        let client = client.clone();
        let secret = secret.clone();
        set.spawn(async move {
            let outcome = post(&client, &secret, &alert).await;
            (alert, outcome)
        });
    }
    let mut out = Delivered::default();
    while let Some(joined) = set.join_next().await {
        let Ok((alert, outcome)) = joined else {
            continue;
        };
        match outcome {
            Ok(status) => {
                db::mark_delivered(&state.pool, alert.id, status).await?;
                tracing::info!(alert_id = alert.id, event = %alert.event, status, "alert delivered");
                out.delivered += 1;
            }
            Err((status, error)) => {
                let delay = backoff(alert.attempts + 1);
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                db::mark_failed(&state.pool, alert.id, status, &error, delay_ms).await?;
                tracing::warn!(alert_id = alert.id, ?status, %error, attempts = alert.attempts + 1,
                    "alert delivery failed; retrying in {delay:?}");
                out.failed += 1;
            }
        }
    }
    Ok(out)
}

async fn post(
    client: &reqwest::Client,
    secret: &str,
    alert: &Alert,
) -> Result<i32, (Option<i32>, String)> {
    let body = payload(alert);
    let req = client
        .post(&alert.webhook_url)
        .timeout(TIMEOUT)
        .header("content-type", "application/json")
        .header(IDEMPOTENCY_HEADER, alert.id.to_string())
        .header(SIGNATURE_HEADER, signature(secret.as_bytes(), &body));
    match req.body(body).send().await {
        Ok(resp) => {
            let status = i32::from(resp.status().as_u16());
            if resp.status().is_success() {
                Ok(status)
            } else {
                Err((Some(status), format!("webhook answered {}", resp.status())))
            }
        }
        Err(e) => {
            let mut msg = e.to_string();
            msg.truncate(MAX_ERROR_LEN);
            Err((None, msg))
        }
    }
}

/// A webhook client: bounded time, no redirects (a signed body goes only
/// where the budget says).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Runs [`evaluate_once`] every `interval`; never exits.
pub async fn run_evaluator(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = evaluate_once(&state).await {
            tracing::warn!(error = %e, "alert evaluation failed");
        }
    }
}

/// Runs [`deliver_once`] every `interval`; never exits.
pub async fn run_deliverer(state: AppState, interval: Duration) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert delivery disabled: cannot build an HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = deliver_once(&state, &client).await {
            tracing::warn!(error = %e, "alert delivery failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // Test case 1: a 20-byte key.
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let sig = signature(b"s3cret", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify_signature(b"s3cret", b"{\"a\":1}", &sig));
        assert!(!verify_signature(b"other", b"{\"a\":1}", &sig));
        assert!(!verify_signature(b"s3cret", b"{\"a\":2}", &sig));
    }

    #[test]
    fn events_and_backoff() {
        assert_eq!(threshold_event(50), "threshold_crossed");
        assert_eq!(threshold_event(100), "budget_exceeded");
        assert_eq!(threshold_event(150), "budget_exceeded");
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(3600));
    }

    #[test]
    fn payload_is_stable_and_complete() {
        let at = DateTime::parse_from_rfc3339("2025-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = Alert {
            id: 7,
            budget_id: Some(3),
            tenant_id: "acme".into(),
            api_key_id: None,
            event: "threshold_crossed".into(),
            threshold: 50,
            spent: Decimal::from_str("0.000690").unwrap(),
            limit: Decimal::from_str("0.0012").unwrap(),
            currency: "USD".into(),
            period_start: budgets::epoch(),
            resets_at: None,
            webhook_url: "http://127.0.0.1/hook".into(),
            balance: None,
            attempts: 0,
            next_attempt_at: at,
            last_status: None,
            last_error: None,
            delivered_at: None,
            created_at: at,
            forecast: None,
        };
        let body = String::from_utf8(payload(&a)).unwrap();
        assert_eq!(
            body,
            "{\"id\":\"7\",\"event\":\"threshold_crossed\",\"budget_id\":3,\"tenant_id\":\"acme\",\
             \"api_key_id\":null,\"threshold\":50,\"spent\":\"0.00069\",\"limit\":\"0.0012\",\
             \"currency\":\"USD\",\"period_start\":\"1970-01-01T00:00:00Z\",\"resets_at\":null,\
             \"created_at\":\"2025-11-24T10:00:00Z\"}"
        );
        let projected = Alert {
            event: "projected_to_exceed".into(),
            threshold: 0,
            ..a
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&projected)).unwrap();
        assert_eq!(v["threshold"], serde_json::Value::Null);
        assert!(v.get("forecast").is_none(), "{v}");
        let with_basis = Alert {
            forecast: Some(
                serde_json::json!({"projected": "0.002", "basis": {"method": "linear"}}),
            ),
            ..projected.clone()
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&with_basis)).unwrap();
        assert_eq!(v["forecast"]["basis"]["method"], "linear");
        assert_eq!(v["forecast"]["projected"], "0.002");
        let low = Alert {
            event: "low_balance".into(),
            budget_id: None,
            threshold: 0,
            limit: Decimal::from_str("10.00").unwrap(),
            spent: Decimal::from_str("40.50").unwrap(),
            balance: Some(Decimal::from_str("9.50").unwrap()),
            ..projected
        };
        assert_eq!(
            String::from_utf8(payload(&low)).unwrap(),
            "{\"id\":\"7\",\"event\":\"low_balance\",\"tenant_id\":\"acme\",\"balance\":\"9.5\",\
             \"threshold\":\"10\",\"credits\":\"50\",\"spent\":\"40.5\",\"currency\":\"USD\",\
             \"created_at\":\"2025-11-24T10:00:00Z\"}"
        );
    }

    #[test]
    fn balance_conditions_are_strictly_below_the_threshold_and_at_most_zero() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(balance_conditions(d("10"), d("10")), (false, false));
        assert_eq!(balance_conditions(d("9.999"), d("10")), (true, false));
        assert_eq!(balance_conditions(d("0"), d("10")), (true, true));
        assert_eq!(balance_conditions(d("-0.01"), d("10")), (true, true));
    }
}
