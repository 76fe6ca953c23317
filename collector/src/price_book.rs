//! The catalog as loaded from the database, tied to the row ids that
//! transactions reference: the glue between pure pricing and the ledger.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::db::{AppliedPrice, LedgerEntry, ModelAlias, StoredPrice, TenantPricing};
use crate::ingest::UsageRecord;
use crate::pricing::{cost, Catalog, UsageCounts};

pub struct PriceBook {
    catalog: Option<Catalog>,
    ids: HashMap<(String, DateTime<Utc>), i64>,
    /// Pricing agreements by tenant, sorted by effective_from.
    tenants: HashMap<String, Vec<TenantPricing>>,
    aliases: ModelAliases,
    /// Highest catalog row id loaded.
    pub latest_id: Option<i64>,
    /// The pricing generation this book was loaded at (migration 0020);
    /// None for a book not loaded from the database.
    generation: Option<i64>,
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
            aliases: ModelAliases::default(),
            latest_id,
            generation: None,
        }
    }

    /// Adds the admin-managed model aliases.
    pub fn with_aliases(mut self, rows: Vec<ModelAlias>) -> Self {
        self.aliases = ModelAliases::new(rows);
        self
    }

    /// Records the pricing generation the rows were read at.
    pub fn at_generation(mut self, generation: i64) -> Self {
        self.generation = Some(generation);
        self
    }

    /// A book of the snapshot's rows, at its generation.
    pub fn from_snapshot(s: crate::db::PricingSnapshot) -> Self {
        let latest = s.prices.iter().map(|p| p.id).max();
        Self::with_tenants(s.prices, s.agreements, latest)
            .with_aliases(s.aliases)
            .at_generation(s.generation)
    }

    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    /// The pricing generation this book holds (None: never loaded). A
    /// replica whose generation is below the database's prices with stale
    /// rows and must reload first.
    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    /// The alias `model` is priced through for `tenant_id` and `provider`,
    /// if any (see [`ModelAliases::resolve`]).
    pub fn alias(&self, tenant_id: &str, provider: &str, model: &str) -> Option<&ModelAlias> {
        self.aliases.resolve(tenant_id, provider, model)
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
        let model = model?;
        // An alias replaces the raw name for the lookup only: the ledger row
        // keeps the model it was recorded with.
        let alias = self.aliases.resolve(tenant_id, provider, model);
        let name = alias.map_or(model, |a| a.model.as_str());
        let entry = self.catalog.as_ref()?.lookup(provider, name, at)?;
        let price_id = *self.ids.get(&(entry.model.clone(), entry.effective_from))?;
        let agreement = self.agreement(tenant_id, &entry.model, at);
        let breakdown = match cost(usage, entry, agreement.map(|a| &a.adjustment)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "usage could not be priced; stored unpriced");
                return None;
            }
        };
        // A failed request that produced no tokens is not charged a request
        // fee, nor discounted on one: it costs nothing.
        let failed_and_empty = http_status >= 400 && *usage == UsageCounts::default();
        let (fee, discount, total) = if failed_and_empty {
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO)
        } else {
            (breakdown.request_fee, breakdown.discount, breakdown.total)
        };
        let mut rates = breakdown.rates.clone();
        rates.per_request = fee;
        let discount_percent = match agreement.map(|a| &a.adjustment) {
            Some(crate::pricing::TenantAdjustment::Discount { percent }) if !failed_and_empty => {
                percent.normalize()
            }
            _ => Decimal::ZERO,
        };
        // Alias rows can change later; the version records which one applied.
        let mut version = breakdown.version.clone();
        if let Some(a) = alias {
            version.push_str(&format!(
                " alias:{}/{}/{}",
                a.tenant_id, a.provider, a.alias
            ));
        }
        // The agreement is part of the price charged: keep it auditable.
        if let Some(a) = agreement {
            version.push_str(&format!(
                " tenant:{}/{}@{}",
                a.tenant_id,
                a.model,
                a.effective_from
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ));
        }
        Some(AppliedPrice {
            price_id,
            version,
            currency: breakdown.currency.clone(),
            total,
            input: breakdown.input,
            cache_read: breakdown.cache_read,
            cache_write: breakdown.cache_write,
            output: breakdown.output,
            reasoning: breakdown.reasoning,
            request_fee: fee,
            discount,
            rates,
            discount_percent,
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

/// Admin-managed model aliases, by alias name (exact, case-sensitive).
#[derive(Debug, Default)]
pub struct ModelAliases {
    /// alias → its rows, any tenant and provider (a handful per name).
    by_alias: HashMap<String, Vec<ModelAlias>>,
}

impl ModelAliases {
    pub fn new(rows: Vec<ModelAlias>) -> Self {
        let mut by_alias: HashMap<String, Vec<ModelAlias>> = HashMap::new();
        for row in rows {
            by_alias.entry(row.alias.clone()).or_default().push(row);
        }
        Self { by_alias }
    }

    /// The alias row for `model` as recorded by `tenant_id` from `provider`,
    /// most specific first: (tenant, provider), (tenant, `*`), (`*`, provider),
    /// (`*`, `*`). A tenant's own alias thus wins over a global one even when
    /// the global one names the provider.
    pub fn resolve(&self, tenant_id: &str, provider: &str, model: &str) -> Option<&ModelAlias> {
        let rows = self.by_alias.get(model)?;
        [
            (tenant_id, provider),
            (tenant_id, "*"),
            ("*", provider),
            ("*", "*"),
        ]
        .into_iter()
        .find_map(|(t, p)| rows.iter().find(|r| r.tenant_id == t && r.provider == p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(tenant_id: &str, provider: &str, alias: &str, model: &str) -> ModelAlias {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        ModelAlias {
            tenant_id: tenant_id.into(),
            provider: provider.into(),
            alias: alias.into(),
            model: model.into(),
            created_at: at,
            updated_at: at,
        }
    }

    fn target<'a>(
        t: &'a ModelAliases,
        tenant: &str,
        provider: &str,
        model: &str,
    ) -> Option<&'a str> {
        t.resolve(tenant, provider, model).map(|a| a.model.as_str())
    }

    #[test]
    fn the_most_specific_alias_wins_in_order() {
        let all = vec![
            alias("*", "*", "dep", "any-any"),
            alias("*", "openai", "dep", "any-openai"),
            alias("acme", "*", "dep", "acme-any"),
            alias("acme", "openai", "dep", "acme-openai"),
        ];
        // Remove the most specific row one at a time: the next one in order answers.
        let expected = ["acme-openai", "acme-any", "any-openai", "any-any"];
        for skip in 0..4 {
            let t = ModelAliases::new(all[..4 - skip].to_vec());
            assert_eq!(
                target(&t, "acme", "openai", "dep"),
                Some(expected[skip]),
                "{skip}"
            );
        }
        let t = ModelAliases::new(all.clone());
        // Another tenant gets only the global rows; another provider skips
        // the provider-specific ones.
        assert_eq!(target(&t, "globex", "openai", "dep"), Some("any-openai"));
        assert_eq!(target(&t, "globex", "anthropic", "dep"), Some("any-any"));
        assert_eq!(target(&t, "acme", "anthropic", "dep"), Some("acme-any"));
        // The quote's tenant `*` sees the global rows only.
        assert_eq!(target(&t, "*", "openai", "dep"), Some("any-openai"));
    }

    #[test]
    fn a_tenant_alias_wins_over_a_global_provider_specific_one() {
        let t = ModelAliases::new(vec![
            alias("*", "openai", "dep", "global-openai"),
            alias("acme", "*", "dep", "acme-any"),
        ]);
        assert_eq!(target(&t, "acme", "openai", "dep"), Some("acme-any"));
    }

    #[test]
    fn no_match_leaves_the_name_alone() {
        let t = ModelAliases::new(vec![
            alias("acme", "openai", "dep", "x"),
            alias("*", "anthropic", "dep", "y"),
        ]);
        assert_eq!(target(&t, "globex", "openai", "dep"), None, "other tenant");
        assert_eq!(target(&t, "acme", "gemini", "dep"), None, "other provider");
        assert_eq!(target(&t, "acme", "openai", "Dep"), None, "exact name only");
        assert_eq!(target(&t, "acme", "openai", "other"), None);
        assert_eq!(
            target(&ModelAliases::default(), "acme", "openai", "dep"),
            None
        );
    }

    #[test]
    fn an_aliased_model_is_priced_as_its_target_and_the_alias_is_recorded() {
        let stored = Catalog::bundled()
            .unwrap()
            .into_entries()
            .into_iter()
            .enumerate()
            .map(|(i, entry)| StoredPrice {
                id: i as i64 + 1,
                entry,
                source: "test".into(),
                created_at: DateTime::<Utc>::UNIX_EPOCH,
            })
            .collect();
        let book = PriceBook::from_stored(stored, None).with_aliases(vec![alias(
            "*",
            "openai",
            "prod-gpt4o-eu",
            "gpt-4o",
        )]);
        let at = DateTime::parse_from_rfc3339("2025-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let usage = UsageCounts {
            input_tokens: 1200,
            cache_read_tokens: 200,
            output_tokens: 300,
            ..UsageCounts::default()
        };
        let price =
            |provider: &str| book.applied("acme", provider, Some("prod-gpt4o-eu"), at, &usage, 200);
        // gpt-4o: 1000 × 2.50 + 200 × 1.25 + 300 × 10.00 per million.
        let p = price("openai").expect("priced through the alias");
        assert_eq!(p.total, Decimal::new(575, 5));
        assert_eq!(
            p.version,
            "gpt-4o@2024-10-02T00:00:00Z alias:*/openai/prod-gpt4o-eu"
        );
        assert!(price("anthropic").is_none(), "provider-specific alias");
    }

    #[test]
    fn a_book_knows_the_generation_it_was_loaded_at() {
        assert_eq!(PriceBook::empty().generation(), None);
        let book = PriceBook::from_snapshot(crate::db::PricingSnapshot {
            generation: 7,
            prices: Vec::new(),
            agreements: Vec::new(),
            aliases: vec![alias("*", "*", "a", "m")],
        });
        assert_eq!(book.generation(), Some(7));
        assert!(book.alias("acme", "openai", "a").is_some());
        // Any loaded generation is newer than none at all.
        assert!(book.generation() > PriceBook::empty().generation());
    }
}
