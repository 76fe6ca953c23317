//! The catalog as loaded from the database, tied to the row ids that
//! transactions reference: the glue between pure pricing and the ledger.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::db::{AppliedPrice, LedgerEntry, StoredPrice, TenantPricing};
use crate::ingest::UsageRecord;
use crate::pricing::{cost, Catalog, UsageCounts};

pub struct PriceBook {
    catalog: Option<Catalog>,
    ids: HashMap<(String, DateTime<Utc>), i64>,
    /// Pricing agreements by tenant, sorted by effective_from.
    tenants: HashMap<String, Vec<TenantPricing>>,
    /// Highest catalog row id loaded: replicas reload when it changes.
    pub latest_id: Option<i64>,
}

impl PriceBook {
    pub fn empty() -> Self {
        Self::from_stored(Vec::new(), None)
    }

    pub fn from_stored(rows: Vec<StoredPrice>, latest_id: Option<i64>) -> Self {
        Self::with_tenants(rows, Vec::new(), latest_id)
    }

    pub fn with_tenants(
        rows: Vec<StoredPrice>,
        agreements: Vec<TenantPricing>,
        latest_id: Option<i64>,
    ) -> Self {
        let mut tenants: HashMap<String, Vec<TenantPricing>> = HashMap::new();
        for a in agreements {
            tenants.entry(a.tenant_id.clone()).or_default().push(a);
        }
        for list in tenants.values_mut() {
            list.sort_by_key(|a| a.effective_from);
        }
        let ids = rows
            .iter()
            .map(|r| ((r.entry.model.clone(), r.entry.effective_from), r.id))
            .collect();
        let entries: Vec<_> = rows.into_iter().map(|r| r.entry).collect();
        let catalog = match Catalog::from_entries("database", entries) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "price catalog in the database is inconsistent; pricing nothing until fixed");
                None
            }
        };
        Self {
            catalog,
            ids,
            tenants,
            latest_id,
        }
    }

    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    /// The tenant's agreement in force at `at` for the catalog model `model`:
    /// a model-specific one wins over the tenant-wide (`*`) one.
    pub fn agreement(
        &self,
        tenant_id: &str,
        model: &str,
        at: DateTime<Utc>,
    ) -> Option<&TenantPricing> {
        let list = self.tenants.get(tenant_id)?;
        let latest = |m: &str| {
            list.iter()
                .rfind(|a| a.model == m && a.effective_from <= at)
        };
        latest(model).or_else(|| latest("*"))
    }

    /// Prices usage of `model` at `at` for `tenant_id`; None when the model has no price.
    pub fn applied(
        &self,
        tenant_id: &str,
        provider: &str,
        model: Option<&str>,
        at: DateTime<Utc>,
        usage: &UsageCounts,
        http_status: u16,
    ) -> Option<AppliedPrice> {
        let entry = self.catalog.as_ref()?.lookup(provider, model?, at)?;
        let price_id = *self.ids.get(&(entry.model.clone(), entry.effective_from))?;
        let agreement = self.agreement(tenant_id, &entry.model, at);
        let breakdown = match cost(usage, entry, agreement.map(|a| &a.adjustment)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "usage could not be priced; stored unpriced");
                return None;
            }
        };
        // A failed request that produced no tokens is not charged a request fee.
        let failed_and_empty = http_status >= 400 && *usage == UsageCounts::default();
        let fee = if failed_and_empty {
            Decimal::ZERO
        } else {
            breakdown.request_fee
        };
        Some(AppliedPrice {
            price_id,
            version: match agreement {
                // The agreement is part of the price charged: keep it auditable.
                Some(a) => format!(
                    "{} tenant:{}/{}@{}",
                    breakdown.version,
                    a.tenant_id,
                    a.model,
                    a.effective_from
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ),
                None => breakdown.version.clone(),
            },
            currency: breakdown.currency.clone(),
            total: breakdown.total - breakdown.request_fee + fee,
            input: breakdown.input,
            cache_read: breakdown.cache_read,
            cache_write: breakdown.cache_write,
            output: breakdown.output,
            reasoning: breakdown.reasoning,
            request_fee: fee,
            discount: breakdown.discount,
        })
    }

    pub fn price_all(&self, records: Vec<UsageRecord>) -> Vec<LedgerEntry> {
        records
            .into_iter()
            .map(|record| {
                let price = self.applied(
                    &record.tenant_id,
                    &record.provider,
                    record.model.as_deref(),
                    record.occurred_at(),
                    &usage_of(&record),
                    record.http_status,
                );
                LedgerEntry { record, price }
            })
            .collect()
    }
}

pub fn usage_of(r: &UsageRecord) -> UsageCounts {
    UsageCounts {
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cache_read_tokens: r.cache_read_tokens,
        cache_write_tokens: r.cache_write_tokens,
        cache_write_1h_tokens: r.cache_write_1h_tokens,
        reasoning_tokens: r.reasoning_tokens,
    }
}
