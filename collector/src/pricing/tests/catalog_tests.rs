use super::{d, ts};
use crate::pricing::{Catalog, PriceEntry, PriceTier, PricingError, BUNDLED_CATALOG_JSON};

fn entry_json(body: &str) -> String {
    format!(r#"{{"version": "v1", "models": [{body}]}}"#)
}

fn base() -> PriceEntry {
    PriceEntry::new("m", ts("2025-01-01T00:00:00Z"), d("3"), d("15"))
}

fn tier(above: u64, input: &str) -> PriceTier {
    PriceTier {
        above_input_tokens: above,
        input: Some(d(input)),
        output: None,
        cache_read: None,
        cache_write: None,
        cache_write_1h: None,
        reasoning: None,
    }
}

fn invalid_reason(entry: PriceEntry) -> String {
    match Catalog::from_entries("v", vec![entry]) {
        Err(PricingError::InvalidEntry { reason, .. }) => reason,
        other => panic!("expected InvalidEntry, got {other:?}"),
    }
}

// ------------------------------------------------------------ bundled catalog

#[test]
fn bundled_catalog_parses() {
    let cat = Catalog::bundled().unwrap();
    assert_eq!(cat.version(), "2026-12-03");
    assert_eq!(cat.currency(), "USD");
    assert!(cat.entries().len() >= 30, "{}", cat.entries().len());
    assert!(cat.entries().iter().all(|e| e.currency == "USD"));
}

#[test]
fn bundled_catalog_covers_required_models() {
    let cat = Catalog::bundled().unwrap();
    let at = ts("2026-11-25T00:00:00Z");
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
        "claude-3-7-sonnet",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4.5",
        "google/gemini-2.5-flash",
    ] {
        let e = cat
            .lookup("any", model, at)
            .unwrap_or_else(|| panic!("{model} missing"));
        assert_eq!(e.model, model);
    }
}

#[test]
fn bundled_gpt_4o_mini_price_is_pinned() {
    // Other tests in the workspace depend on these exact values.
    let cat = Catalog::bundled().unwrap();
    let e = cat
        .lookup("openai", "gpt-4o-mini", ts("2026-01-01T00:00:00Z"))
        .unwrap();
    assert_eq!(e.input, d("0.15"));
    assert_eq!(e.cache_read, Some(d("0.075")));
    assert_eq!(e.output, d("0.60"));
    assert_eq!(e.reasoning, None);
    assert_eq!(e.per_request, d("0"));
}

#[test]
fn bundled_long_context_tiers() {
    let cat = Catalog::bundled().unwrap();
    let at = ts("2026-01-01T00:00:00Z");
    let sonnet = cat.lookup("anthropic", "claude-sonnet-4-5", at).unwrap();
    assert_eq!(sonnet.tiers.len(), 1);
    assert_eq!(sonnet.tiers[0].above_input_tokens, 200_000);
    assert_eq!(sonnet.tiers[0].input, Some(d("6")));
    assert_eq!(sonnet.tiers[0].output, Some(d("22.5")));
    assert_eq!(sonnet.cache_write_1h, Some(d("6")));
    let pro = cat.lookup("google", "gemini-2.5-pro", at).unwrap();
    assert_eq!(pro.tiers[0].above_input_tokens, 200_000);
    assert_eq!(pro.tiers[0].input, Some(d("2.5")));
    assert_eq!(pro.tiers[0].output, Some(d("15")));
}

#[test]
fn bundled_constant_is_the_prices_file() {
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../prices/catalog.json"
    ))
    .unwrap();
    assert_eq!(on_disk, BUNDLED_CATALOG_JSON);
}

#[test]
fn catalog_json_round_trips() {
    let cat = Catalog::bundled().unwrap();
    let again = Catalog::from_json(&cat.to_json()).unwrap();
    assert_eq!(cat, again);
}

#[test]
fn history_is_oldest_first() {
    let cat = Catalog::bundled().unwrap();
    let h: Vec<_> = cat.history("o3").iter().map(|e| e.input).collect();
    assert_eq!(h, vec![d("10"), d("2")]);
    assert!(cat.history("nope").is_empty());
}

// ------------------------------------------------------------ entry format

#[test]
fn entry_defaults() {
    let cat = Catalog::from_json(&entry_json(
        r#"{"model": "m", "effective_from": "2025-01-01T00:00:00Z", "input": "1", "output": "2"}"#,
    ))
    .unwrap();
    let e = &cat.entries()[0];
    assert_eq!(e.currency, "USD");
    assert_eq!(e.per_request, d("0"));
    assert_eq!(e.provider, None);
    assert!(e.tiers.is_empty() && e.aliases.is_empty());
    assert_eq!(
        (e.cache_read, e.cache_write, e.cache_write_1h, e.reasoning),
        (None, None, None, None)
    );
}

#[test]
fn entry_inherits_catalog_currency_unless_set() {
    let cat = Catalog::from_json(
        r#"{"version": "v", "currency": "EUR", "models": [
            {"model": "a", "effective_from": "2025-01-01T00:00:00Z", "input": "1", "output": "2"},
            {"model": "b", "effective_from": "2025-01-01T00:00:00Z", "input": "1", "output": "2", "currency": "USD"}
        ]}"#,
    )
    .unwrap();
    assert_eq!(cat.currency(), "EUR");
    assert_eq!(cat.history("a")[0].currency, "EUR");
    assert_eq!(cat.history("b")[0].currency, "USD");
}

#[test]
fn effective_from_accepts_offsets() {
    let cat = Catalog::from_json(&entry_json(
        r#"{"model": "m", "effective_from": "2025-01-01T02:00:00+02:00", "input": "1", "output": "2"}"#,
    ))
    .unwrap();
    assert_eq!(cat.entries()[0].effective_from, ts("2025-01-01T00:00:00Z"));
}

#[test]
fn price_entry_json_shape() {
    let mut e = base();
    e.provider = Some("anthropic".into());
    e.cache_read = Some(d("0.30"));
    e.cache_write = Some(d("3.75"));
    e.tiers = vec![tier(200_000, "6")];
    e.aliases = vec!["m-latest-alias".into()];
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "model": "m",
            "provider": "anthropic",
            "effective_from": "2025-01-01T00:00:00Z",
            "currency": "USD",
            "input": "3",
            "output": "15",
            "cache_read": "0.30",
            "cache_write": "3.75",
            "per_request": "0",
            "tiers": [{"above_input_tokens": 200000, "input": "6"}],
            "aliases": ["m-latest-alias"]
        })
    );
    let back: PriceEntry = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}

#[test]
fn version_is_model_at_effective_from() {
    assert_eq!(base().version(), "m@2025-01-01T00:00:00Z");
    let e = PriceEntry::new("gpt-4o", ts("2025-01-01T00:00:00.250Z"), d("1"), d("1"));
    assert_eq!(e.version(), "gpt-4o@2025-01-01T00:00:00.250Z");
}

#[test]
fn numbers_instead_of_strings_are_rejected() {
    let err = Catalog::from_json(&entry_json(
        r#"{"model": "m", "effective_from": "2025-01-01T00:00:00Z", "input": 0.15, "output": "2"}"#,
    ))
    .unwrap_err();
    assert!(
        matches!(err, PricingError::Json(ref m) if m.contains("models[0]") && m.contains("`m`")),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    // A typo must not silently drop a price.
    let err = Catalog::from_json(&entry_json(
        r#"{"model": "m", "effective_from": "2025-01-01T00:00:00Z", "input": "1", "output": "2", "cached_input": "0.5"}"#,
    ))
    .unwrap_err();
    assert!(
        matches!(err, PricingError::Json(ref m) if m.contains("cached_input")),
        "{err}"
    );
    let err = Catalog::from_json(r#"{"version": "v", "modles": []}"#).unwrap_err();
    assert!(matches!(err, PricingError::Json(_)), "{err}");
}

#[test]
fn missing_required_fields_are_rejected() {
    for body in [
        r#"{"effective_from": "2025-01-01T00:00:00Z", "input": "1", "output": "2"}"#,
        r#"{"model": "m", "input": "1", "output": "2"}"#,
        r#"{"model": "m", "effective_from": "2025-01-01T00:00:00Z", "output": "2"}"#,
        r#"{"model": "m", "effective_from": "2025-01-01T00:00:00Z", "input": "1"}"#,
        r#"{"model": "m", "effective_from": "2025-01-01", "input": "1", "output": "2"}"#,
        r#"{"model": "m", "effective_from": "2025-01-01T00:00:00Z", "input": "one", "output": "2"}"#,
    ] {
        assert!(
            matches!(
                Catalog::from_json(&entry_json(body)),
                Err(PricingError::Json(_))
            ),
            "{body}"
        );
    }
    assert!(matches!(
        Catalog::from_json("not json"),
        Err(PricingError::Json(_))
    ));
}

// ------------------------------------------------------------ validation

#[test]
fn negative_prices_are_rejected() {
    let mut e = base();
    e.input = d("-0.01");
    assert!(invalid_reason(e).contains("input price -0.01 is negative"));
    let mut e = base();
    e.cache_write_1h = Some(d("-1"));
    assert!(invalid_reason(e).contains("cache_write_1h"));
    let mut e = base();
    e.per_request = d("-0.001");
    assert!(invalid_reason(e).contains("per_request"));
    let mut e = base();
    e.tiers = vec![tier(100, "-6")];
    assert!(invalid_reason(e).contains("tier above 100 input tokens: input price -6 is negative"));
}

#[test]
fn zero_prices_are_allowed() {
    let mut e = base();
    e.input = d("0");
    e.output = d("0.000");
    e.cache_read = Some(d("0"));
    assert!(Catalog::from_entries("v", vec![e]).is_ok());
}

#[test]
fn tiers_must_be_strictly_ascending() {
    let mut e = base();
    e.tiers = vec![tier(200_000, "6"), tier(100_000, "5")];
    assert!(invalid_reason(e).contains("strictly ascending"));
    let mut e = base();
    e.tiers = vec![tier(100_000, "6"), tier(100_000, "5")];
    assert!(invalid_reason(e).contains("strictly ascending"));
    let mut e = base();
    e.tiers = vec![tier(100_000, "5"), tier(200_000, "6")];
    assert!(Catalog::from_entries("v", vec![e]).is_ok());
}

#[test]
fn empty_tier_is_rejected() {
    let mut e = base();
    let mut t = tier(100, "1");
    t.input = None;
    e.tiers = vec![t];
    assert!(invalid_reason(e).contains("sets no price"));
}

#[test]
fn bad_model_ids_and_currencies_are_rejected() {
    let mut e = base();
    e.model = " ".into();
    assert!(invalid_reason(e).contains("empty"));
    let mut e = base();
    e.model = "gpt 4o".into();
    assert!(invalid_reason(e).contains("whitespace"));
    for cur in ["usd", "US", "USDT", ""] {
        let mut e = base();
        e.currency = cur.into();
        assert!(invalid_reason(e).contains("ISO 4217"), "{cur}");
    }
    let err =
        Catalog::from_json(r#"{"version": "v", "currency": "dollars", "models": []}"#).unwrap_err();
    assert!(matches!(err, PricingError::InvalidCatalog(_)), "{err}");
}

#[test]
fn bad_aliases_are_rejected() {
    let mut e = base();
    e.aliases = vec!["m".into()];
    assert!(invalid_reason(e).contains("equals the model id"));
    let mut e = base();
    e.aliases = vec!["a".into(), "a".into()];
    assert!(invalid_reason(e).contains("listed twice"));
    let mut e = base();
    e.aliases = vec!["".into()];
    assert!(invalid_reason(e).contains("empty"));
}

#[test]
fn duplicate_model_and_effective_from_is_rejected() {
    let err = Catalog::from_entries("v", vec![base(), base()]).unwrap_err();
    assert_eq!(
        err,
        PricingError::DuplicateEntry {
            model: "m".into(),
            effective_from: ts("2025-01-01T00:00:00Z")
        }
    );
    // Same instant written with another offset is still a duplicate.
    let err = Catalog::from_json(
        r#"{"version": "v", "models": [
            {"model": "m", "effective_from": "2025-01-01T00:00:00Z", "input": "1", "output": "2"},
            {"model": "m", "effective_from": "2025-01-01T01:00:00+01:00", "input": "1", "output": "3"}
        ]}"#,
    )
    .unwrap_err();
    assert!(matches!(err, PricingError::DuplicateEntry { .. }), "{err}");
    // Same model at different instants is fine.
    let mut later = base();
    later.effective_from = ts("2025-02-01T00:00:00Z");
    assert!(Catalog::from_entries("v", vec![base(), later]).is_ok());
}

#[test]
fn alias_conflicts_are_rejected() {
    let mut a = base();
    a.aliases = vec!["other".into()];
    let other = PriceEntry::new("other", ts("2025-01-01T00:00:00Z"), d("1"), d("1"));
    let err = Catalog::from_entries("v", vec![a, other]).unwrap_err();
    assert!(
        matches!(err, PricingError::AliasConflict { ref alias, .. } if alias == "other"),
        "{err}"
    );

    let mut a = base();
    a.aliases = vec!["shared".into()];
    let mut b = PriceEntry::new("b", ts("2025-01-01T00:00:00Z"), d("1"), d("1"));
    b.aliases = vec!["shared".into()];
    let err = Catalog::from_entries("v", vec![a, b]).unwrap_err();
    assert!(
        matches!(err, PricingError::AliasConflict { ref alias, .. } if alias == "shared"),
        "{err}"
    );

    // Two versions of the same model may both list the alias.
    let mut v1 = base();
    v1.aliases = vec!["shared".into()];
    let mut v2 = v1.clone();
    v2.effective_from = ts("2025-06-01T00:00:00Z");
    assert!(Catalog::from_entries("v", vec![v1, v2]).is_ok());
}

#[test]
fn empty_version_is_rejected() {
    assert!(matches!(
        Catalog::from_entries(" ", vec![]),
        Err(PricingError::InvalidCatalog(_))
    ));
}

#[test]
fn entries_are_sorted_by_model_then_time() {
    let mut late = base();
    late.effective_from = ts("2025-05-01T00:00:00Z");
    let a = PriceEntry::new("a", ts("2025-09-01T00:00:00Z"), d("1"), d("1"));
    let cat = Catalog::from_entries("v", vec![late.clone(), base(), a]).unwrap();
    let order: Vec<_> = cat.entries().iter().map(|e| e.version()).collect();
    assert_eq!(
        order,
        vec![
            "a@2025-09-01T00:00:00Z",
            "m@2025-01-01T00:00:00Z",
            "m@2025-05-01T00:00:00Z"
        ]
    );
    assert_eq!(cat.into_entries().len(), 3);
}

#[test]
fn tier_for_picks_highest_exceeded_threshold() {
    let mut e = base();
    e.tiers = vec![tier(100, "4"), tier(200, "5")];
    assert_eq!(e.tier_for(0), None);
    assert_eq!(e.tier_for(100), None);
    assert_eq!(e.tier_for(101).map(|t| t.above_input_tokens), Some(100));
    assert_eq!(e.tier_for(200).map(|t| t.above_input_tokens), Some(100));
    assert_eq!(e.tier_for(201).map(|t| t.above_input_tokens), Some(200));
    assert_eq!(
        e.tier_for(u64::MAX).map(|t| t.above_input_tokens),
        Some(200)
    );
}

#[test]
fn bundled_catalog_prices_embeddings_and_bedrock_models() {
    let cat = Catalog::bundled().unwrap();
    let at = ts("2026-12-03T00:00:00Z");
    for (provider, requested, entry, input) in [
        (
            "openai",
            "text-embedding-3-small",
            "text-embedding-3-small",
            "0.02",
        ),
        (
            "openai",
            "text-embedding-3-large",
            "text-embedding-3-large",
            "0.13",
        ),
        (
            "gemini",
            "models/gemini-embedding-001",
            "gemini-embedding-001",
            "0.15",
        ),
        ("bedrock", "us.amazon.nova-pro-v1:0", "nova-pro", "0.80"),
        ("bedrock", "amazon.nova-micro-v1:0", "nova-micro", "0.035"),
        (
            "bedrock",
            "amazon.titan-embed-text-v2:0",
            "amazon.titan-embed-text-v2:0",
            "0.02",
        ),
    ] {
        let e = cat
            .lookup(provider, requested, at)
            .unwrap_or_else(|| panic!("{requested} missing"));
        assert_eq!(e.model, entry, "{requested}");
        assert_eq!(e.input.to_string(), input, "{requested}");
        if entry.contains("embed") {
            assert!(e.output.is_zero(), "{requested}");
        }
    }
    // Titan v1 costs more than v2: no price rather than v2's.
    assert!(cat
        .lookup("bedrock", "amazon.titan-embed-text-v1", at)
        .is_none());
}
