use rust_decimal::Decimal;

use super::{d, ts};
use crate::pricing::{
    cost, price_usage, reconcile, Catalog, CostBreakdown, PriceEntry, PriceOverride, PriceTier,
    PricingError, TenantAdjustment, UsageCounts,
};

/// Claude-Sonnet-4.5-like prices with a 200k tier.
fn sonnet() -> PriceEntry {
    let mut e = PriceEntry::new("test-model", ts("2025-01-01T00:00:00Z"), d("3"), d("15"));
    e.cache_read = Some(d("0.30"));
    e.cache_write = Some(d("3.75"));
    e.cache_write_1h = Some(d("6"));
    e.tiers = vec![PriceTier {
        above_input_tokens: 200_000,
        input: Some(d("6")),
        output: Some(d("22.50")),
        cache_read: Some(d("0.60")),
        cache_write: Some(d("7.50")),
        cache_write_1h: Some(d("12")),
        reasoning: None,
    }];
    e.validate().unwrap();
    e
}

/// Only input/output set: every optional price falls back.
fn plain(input: &str, output: &str) -> PriceEntry {
    PriceEntry::new("plain", ts("2025-01-01T00:00:00Z"), d(input), d(output))
}

fn usage(
    input: u64,
    cache_read: u64,
    cache_write: u64,
    write_1h: u64,
    output: u64,
    reasoning: u64,
) -> UsageCounts {
    UsageCounts {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        cache_write_1h_tokens: write_1h,
        reasoning_tokens: reasoning,
    }
}

fn total_is_sum(b: &CostBreakdown) {
    let sum = b.input
        + b.cache_read
        + b.cache_write
        + b.output
        + b.reasoning
        + b.request_fee
        + b.discount;
    assert_eq!(b.total, sum, "{b:?}");
}

// ---------------------------------------------------------------- components

#[test]
fn every_token_kind_is_priced() {
    // 70k uncached, 20k cache reads, 6k 5m writes + 4k 1h writes, 3k output, 2k reasoning.
    let u = usage(100_000, 20_000, 10_000, 4_000, 5_000, 2_000);
    let b = cost(&u, &sonnet(), None).unwrap();
    assert_eq!(b.input, d("0.21")); // 70_000 × 3 / 1e6
    assert_eq!(b.cache_read, d("0.006")); // 20_000 × 0.30 / 1e6
    assert_eq!(b.cache_write, d("0.0465")); // 6_000 × 3.75 / 1e6 + 4_000 × 6 / 1e6
    assert_eq!(b.output, d("0.045")); // 3_000 × 15 / 1e6
    assert_eq!(b.reasoning, d("0.03")); // 2_000 × 15 / 1e6 (defaults to output price)
    assert_eq!(b.request_fee, d("0"));
    assert_eq!(b.discount, d("0"));
    assert_eq!(b.total, d("0.3375"));
    assert_eq!(b.tier, None);
    assert_eq!(b.currency, "USD");
    assert_eq!(b.version, "test-model@2025-01-01T00:00:00Z");
    total_is_sum(&b);
}

#[test]
fn gpt_4o_mini_from_the_bundled_catalog() {
    let cat = Catalog::bundled().unwrap();
    let u = usage(1_000, 200, 0, 0, 500, 0);
    let b = price_usage(
        &cat,
        "openai",
        "gpt-4o-mini-2024-07-18",
        ts("2026-01-01T00:00:00Z"),
        &u,
        None,
    )
    .unwrap();
    assert_eq!(b.input, d("0.00012")); // 800 × 0.15 / 1e6
    assert_eq!(b.cache_read, d("0.000015")); // 200 × 0.075 / 1e6
    assert_eq!(b.output, d("0.0003")); // 500 × 0.60 / 1e6
    assert_eq!(b.total, d("0.000435"));
    assert_eq!(b.version, "gpt-4o-mini@2024-07-18T00:00:00Z");
}

#[test]
fn price_usage_reports_unknown_models() {
    let cat = Catalog::bundled().unwrap();
    let err = price_usage(
        &cat,
        "openai",
        "gpt-17",
        ts("2026-01-01T00:00:00Z"),
        &UsageCounts::default(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, PricingError::NoPrice { ref model, .. } if model == "gpt-17"),
        "{err}"
    );
}

#[test]
fn results_are_normalized_and_serialize_as_strings() {
    let b = cost(
        &usage(1_000, 0, 0, 0, 1_000, 0),
        &plain("0.150", "0.600"),
        None,
    )
    .unwrap();
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["input"], "0.00015");
    assert_eq!(json["output"], "0.0006");
    assert_eq!(json["total"], "0.00075");
    assert_eq!(json["discount"], "0");
    assert_eq!(json["tier"], serde_json::Value::Null);
    assert_eq!(json["rates"]["input"], "0.15");
    assert_eq!(json["rates"]["cache_read"], "0.15");
    assert!(json.get("adjustment").is_none());
    let back: CostBreakdown = serde_json::from_value(json).unwrap();
    assert_eq!(back, b);
}

// ---------------------------------------------------------------- tiers

#[test]
fn tier_boundary_exactly_at_threshold_uses_base_prices() {
    let b = cost(&usage(200_000, 0, 0, 0, 1_000, 0), &sonnet(), None).unwrap();
    assert_eq!(b.tier, None);
    assert_eq!(b.input, d("0.6")); // 200_000 × 3 / 1e6
    assert_eq!(b.output, d("0.015")); // 1_000 × 15 / 1e6
    assert_eq!(b.total, d("0.615"));
}

#[test]
fn tier_boundary_one_above_threshold_prices_whole_request_at_tier() {
    let b = cost(&usage(200_001, 0, 0, 0, 1_000, 0), &sonnet(), None).unwrap();
    assert_eq!(b.tier, Some(200_000));
    assert_eq!(b.input, d("1.200006")); // 200_001 × 6 / 1e6
    assert_eq!(b.output, d("0.0225")); // 1_000 × 22.50 / 1e6
    assert_eq!(b.total, d("1.222506"));
    assert_eq!(b.rates.input, d("6"));
}

#[test]
fn tier_threshold_counts_cached_input_too() {
    // 150k uncached + 60k cache reads = 210k input > 200k → tier for everything.
    let b = cost(
        &usage(250_000, 100_000, 50_000, 10_000, 2_000, 500),
        &sonnet(),
        None,
    )
    .unwrap();
    assert_eq!(b.tier, Some(200_000));
    assert_eq!(b.input, d("0.6")); // 100_000 × 6 / 1e6
    assert_eq!(b.cache_read, d("0.06")); // 100_000 × 0.60 / 1e6
    assert_eq!(b.cache_write, d("0.42")); // 40_000 × 7.50 / 1e6 + 10_000 × 12 / 1e6
    assert_eq!(b.output, d("0.03375")); // 1_500 × 22.50 / 1e6
    assert_eq!(b.reasoning, d("0.01125")); // 500 × 22.50 / 1e6 (tier output price)
    assert_eq!(b.total, d("1.125"));
    total_is_sum(&b);
}

#[test]
fn highest_matching_tier_wins() {
    let mut e = plain("1", "2");
    e.tiers = vec![
        PriceTier {
            above_input_tokens: 100_000,
            input: Some(d("1.5")),
            output: None,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
            reasoning: None,
        },
        PriceTier {
            above_input_tokens: 200_000,
            input: Some(d("2")),
            output: Some(d("4")),
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
            reasoning: None,
        },
    ];
    let b = cost(&usage(150_000, 0, 0, 0, 1_000, 0), &e, None).unwrap();
    assert_eq!(b.tier, Some(100_000));
    assert_eq!(b.input, d("0.225")); // 150_000 × 1.5 / 1e6
    assert_eq!(b.output, d("0.002")); // tier 1 sets no output → base 2
    let b = cost(&usage(250_000, 0, 0, 0, 1_000, 0), &e, None).unwrap();
    assert_eq!(b.tier, Some(200_000));
    assert_eq!(b.input, d("0.5")); // 250_000 × 2 / 1e6
    assert_eq!(b.output, d("0.004")); // 1_000 × 4 / 1e6
}

#[test]
fn tier_unset_prices_fall_back_to_base_then_to_tier_input() {
    // Base has cache_read, no cache_write; tier only sets input.
    let mut e = plain("1", "2");
    e.cache_read = Some(d("0.1"));
    e.tiers = vec![PriceTier {
        above_input_tokens: 10,
        input: Some(d("3")),
        output: None,
        cache_read: None,
        cache_write: None,
        cache_write_1h: None,
        reasoning: None,
    }];
    let b = cost(
        &usage(1_000_000, 100_000, 100_000, 0, 1_000_000, 0),
        &e,
        None,
    )
    .unwrap();
    assert_eq!(b.input, d("2.4")); // 800_000 × 3 (tier)
    assert_eq!(b.cache_read, d("0.01")); // 100_000 × 0.1 (base)
    assert_eq!(b.cache_write, d("0.3")); // 100_000 × 3 (unset → resolved input = tier input)
    assert_eq!(b.output, d("2")); // base output
}

// ---------------------------------------------------------------- cache writes

#[test]
fn five_minute_and_one_hour_writes_use_their_own_prices() {
    let e = sonnet();
    let five = cost(&usage(10_000, 0, 10_000, 0, 0, 0), &e, None).unwrap();
    assert_eq!(five.cache_write, d("0.0375")); // 10_000 × 3.75 / 1e6
    assert_eq!(five.input, d("0"));
    let hour = cost(&usage(10_000, 0, 10_000, 10_000, 0, 0), &e, None).unwrap();
    assert_eq!(hour.cache_write, d("0.06")); // 10_000 × 6 / 1e6
    let mixed = cost(&usage(10_000, 0, 10_000, 2_500, 0, 0), &e, None).unwrap();
    assert_eq!(mixed.cache_write, d("0.043125")); // (7_500 × 3.75 + 2_500 × 6) / 1e6
}

#[test]
fn unset_cache_prices_fall_back_to_input_price() {
    let e = plain("2", "8");
    let b = cost(&usage(40_000, 10_000, 10_000, 5_000, 0, 0), &e, None).unwrap();
    assert_eq!(b.input, d("0.04")); // 20_000 × 2
    assert_eq!(b.cache_read, d("0.02")); // 10_000 × 2
    assert_eq!(b.cache_write, d("0.02")); // 5_000 × 2 + 5_000 × 2
    assert_eq!(b.rates.cache_write_1h, d("2"));
    // 1h falls back to the input price, not to the 5m write price.
    let mut e = plain("2", "8");
    e.cache_write = Some(d("2.5"));
    let b = cost(&usage(10_000, 0, 10_000, 4_000, 0, 0), &e, None).unwrap();
    assert_eq!(b.cache_write, d("0.023")); // 6_000 × 2.5 + 4_000 × 2, / 1e6
}

// ---------------------------------------------------------------- reasoning

#[test]
fn reasoning_defaults_to_output_price() {
    let b = cost(&usage(0, 0, 0, 0, 1_000, 400), &plain("0.15", "0.60"), None).unwrap();
    assert_eq!(b.output, d("0.00036")); // 600 × 0.60 / 1e6
    assert_eq!(b.reasoning, d("0.00024")); // 400 × 0.60 / 1e6
    assert_eq!(b.rates.reasoning, d("0.6"));
    assert_eq!(b.total, d("0.0006"));
}

#[test]
fn reasoning_with_its_own_price() {
    let mut e = plain("0.15", "0.60");
    e.reasoning = Some(d("3.50"));
    let b = cost(&usage(0, 0, 0, 0, 1_000, 400), &e, None).unwrap();
    assert_eq!(b.output, d("0.00036")); // 600 × 0.60 / 1e6
    assert_eq!(b.reasoning, d("0.0014")); // 400 × 3.50 / 1e6
    assert_eq!(b.total, d("0.00176"));
}

#[test]
fn all_output_can_be_reasoning() {
    let b = cost(&usage(0, 0, 0, 0, 1_000, 1_000), &plain("1", "10"), None).unwrap();
    assert_eq!(b.output, d("0"));
    assert_eq!(b.reasoning, d("0.01"));
}

// ---------------------------------------------------------------- fee

#[test]
fn per_request_fee_is_added_once() {
    let mut e = plain("1", "1");
    e.per_request = d("0.005");
    let b = cost(&usage(1_000, 0, 0, 0, 1_000, 0), &e, None).unwrap();
    assert_eq!(b.request_fee, d("0.005"));
    assert_eq!(b.total, d("0.007")); // 0.001 + 0.001 + 0.005
                                     // Charged even when no tokens were used.
    let b = cost(&UsageCounts::default(), &e, None).unwrap();
    assert_eq!(b.total, d("0.005"));
}

// ---------------------------------------------------------------- adjustments

#[test]
fn discount_applies_to_tokens_and_fee() {
    let mut e = sonnet();
    e.per_request = d("0.005");
    let adj = TenantAdjustment::Discount { percent: d("10") };
    let b = cost(
        &usage(100_000, 20_000, 10_000, 4_000, 5_000, 2_000),
        &e,
        Some(&adj),
    )
    .unwrap();
    // subtotal 0.3375 + 0.005 = 0.3425; 10 % = 0.03425
    assert_eq!(b.discount, d("-0.03425"));
    assert_eq!(b.total, d("0.30825"));
    assert_eq!(b.input, d("0.21"), "components stay undiscounted");
    assert_eq!(b.adjustment, Some(adj));
    total_is_sum(&b);
}

#[test]
fn fractional_discount_keeps_full_precision() {
    let adj = TenantAdjustment::Discount { percent: d("12.5") };
    let b = cost(&usage(1, 0, 0, 0, 0, 0), &plain("1", "1"), Some(&adj)).unwrap();
    // 1 token × $1/M = 0.000001; 12.5 % off = 0.000000125
    assert_eq!(b.discount, d("-0.000000125"));
    assert_eq!(b.total, d("0.000000875"));
}

#[test]
fn zero_and_full_discount() {
    let u = usage(1_000, 0, 0, 0, 1_000, 0);
    let b = cost(
        &u,
        &plain("1", "2"),
        Some(&TenantAdjustment::Discount { percent: d("0") }),
    )
    .unwrap();
    assert_eq!(b.discount, d("0"));
    assert!(!b.discount.is_sign_negative());
    assert_eq!(b.total, d("0.003"));
    let b = cost(
        &u,
        &plain("1", "2"),
        Some(&TenantAdjustment::Discount { percent: d("100") }),
    )
    .unwrap();
    assert_eq!(b.discount, d("-0.003"));
    assert_eq!(b.total, d("0"));
    // A discount on a zero subtotal is zero, not negative zero.
    let b = cost(
        &UsageCounts::default(),
        &plain("1", "2"),
        Some(&TenantAdjustment::Discount { percent: d("50") }),
    )
    .unwrap();
    assert_eq!(serde_json::to_value(&b).unwrap()["discount"], "0");
}

#[test]
fn invalid_discounts_are_rejected() {
    for p in ["-1", "100.01", "250"] {
        let err = cost(
            &UsageCounts::default(),
            &plain("1", "1"),
            Some(&TenantAdjustment::Discount { percent: d(p) }),
        )
        .unwrap_err();
        assert!(
            matches!(err, PricingError::InvalidAdjustment(_)),
            "{p}: {err}"
        );
    }
}

#[test]
fn custom_prices_override_per_kind() {
    let adj = TenantAdjustment::CustomPrices(PriceOverride {
        input: Some(d("2")),
        output: Some(d("10")),
        ..PriceOverride::default()
    });
    let b = cost(
        &usage(100_000, 20_000, 10_000, 4_000, 5_000, 2_000),
        &sonnet(),
        Some(&adj),
    )
    .unwrap();
    assert_eq!(b.input, d("0.14")); // 70_000 × 2 (override)
    assert_eq!(b.cache_read, d("0.006")); // 20_000 × 0.30 (catalog, not overridden)
    assert_eq!(b.cache_write, d("0.0465")); // catalog 3.75 / 6
    assert_eq!(b.output, d("0.03")); // 3_000 × 10 (override)
    assert_eq!(b.reasoning, d("0.02")); // 2_000 × 10 (falls back to overridden output)
    assert_eq!(b.discount, d("0"));
    assert_eq!(b.total, d("0.2425"));
    total_is_sum(&b);
}

#[test]
fn custom_prices_move_unset_fallbacks_and_fee() {
    let adj = TenantAdjustment::CustomPrices(PriceOverride {
        input: Some(d("0.5")),
        per_request: Some(d("0.01")),
        ..PriceOverride::default()
    });
    let mut e = plain("1", "4");
    e.per_request = d("0.02");
    let b = cost(&usage(30_000, 10_000, 10_000, 0, 0, 0), &e, Some(&adj)).unwrap();
    assert_eq!(b.input, d("0.005")); // 10_000 × 0.5
    assert_eq!(b.cache_read, d("0.005")); // unset in catalog → overridden input
    assert_eq!(b.cache_write, d("0.005"));
    assert_eq!(b.request_fee, d("0.01"));
    assert_eq!(b.total, d("0.025"));
}

#[test]
fn custom_prices_beat_tier_prices() {
    let adj = TenantAdjustment::CustomPrices(PriceOverride {
        input: Some(d("2")),
        ..PriceOverride::default()
    });
    let b = cost(&usage(300_000, 0, 0, 0, 1_000, 0), &sonnet(), Some(&adj)).unwrap();
    assert_eq!(b.tier, Some(200_000));
    assert_eq!(b.input, d("0.6")); // 300_000 × 2 (override, not tier 6)
    assert_eq!(b.output, d("0.0225")); // tier output 22.50
}

#[test]
fn negative_custom_prices_are_rejected() {
    let adj = TenantAdjustment::CustomPrices(PriceOverride {
        cache_read: Some(d("-0.1")),
        ..PriceOverride::default()
    });
    assert!(matches!(
        cost(&UsageCounts::default(), &plain("1", "1"), Some(&adj)),
        Err(PricingError::InvalidAdjustment(_))
    ));
}

#[test]
fn adjustment_json_shape() {
    let adj: TenantAdjustment =
        serde_json::from_str(r#"{"discount": {"percent": "7.5"}}"#).unwrap();
    assert_eq!(adj, TenantAdjustment::Discount { percent: d("7.5") });
    let adj: TenantAdjustment =
        serde_json::from_str(r#"{"custom_prices": {"input": "1", "per_request": "0.01"}}"#)
            .unwrap();
    assert_eq!(
        adj,
        TenantAdjustment::CustomPrices(PriceOverride {
            input: Some(d("1")),
            per_request: Some(d("0.01")),
            ..PriceOverride::default()
        })
    );
    assert_eq!(
        serde_json::to_string(&adj).unwrap(),
        r#"{"custom_prices":{"input":"1","per_request":"0.01"}}"#
    );
    assert!(
        serde_json::from_str::<TenantAdjustment>(r#"{"custom_prices": {"inptu": "1"}}"#).is_err()
    );
    assert!(serde_json::from_str::<TenantAdjustment>(r#"{"discount": {"percent": 7.5}}"#).is_err());
}

// ---------------------------------------------------------------- extremes

#[test]
fn zero_usage_costs_nothing() {
    let b = cost(&UsageCounts::default(), &sonnet(), None).unwrap();
    for part in [
        b.input,
        b.cache_read,
        b.cache_write,
        b.output,
        b.reasoning,
        b.request_fee,
        b.discount,
        b.total,
    ] {
        assert_eq!(part, Decimal::ZERO);
    }
    assert_eq!(b.tier, None);
}

#[test]
fn billion_token_requests_are_exact() {
    let e = sonnet();
    // 10^9 input (all uncached) in the tier, 10^9 output of which half reasoning.
    let b = cost(
        &usage(1_000_000_000, 0, 0, 0, 1_000_000_000, 500_000_000),
        &e,
        None,
    )
    .unwrap();
    assert_eq!(b.tier, Some(200_000));
    assert_eq!(b.input, d("6000")); // 10^9 × 6 / 1e6
    assert_eq!(b.output, d("11250")); // 5·10^8 × 22.50 / 1e6
    assert_eq!(b.reasoning, d("11250"));
    assert_eq!(b.total, d("28500"));
    // Every kind at 10^9 with odd prices.
    let mut e = plain("0.123456789", "9.87654321");
    e.cache_read = Some(d("0.0123456789"));
    e.cache_write = Some(d("1.5432098765"));
    e.cache_write_1h = Some(d("2.4691357531"));
    e.reasoning = Some(d("19.75308642"));
    let u = usage(
        4_000_000_000,
        1_000_000_000,
        2_000_000_000,
        1_000_000_000,
        2_000_000_000,
        1_000_000_000,
    );
    let b = cost(&u, &e, None).unwrap();
    assert_eq!(b.input, d("123.456789"));
    assert_eq!(b.cache_read, d("12.3456789"));
    assert_eq!(b.cache_write, d("4012.3456296")); // 1543.2098765 + 2469.1357531
    assert_eq!(b.output, d("9876.54321"));
    assert_eq!(b.reasoning, d("19753.08642"));
    assert_eq!(b.total, d("33777.7777275"));
    total_is_sum(&b);
}

#[test]
fn max_u64_counts_do_not_panic() {
    let u = usage(u64::MAX, 0, 0, 0, u64::MAX, 0);
    let b = cost(&u, &plain("75", "75"), None).unwrap();
    assert_eq!(b.input, Decimal::from(u64::MAX) * d("75") / d("1000000"));
    // Overflowing sums are errors, not panics.
    let u = usage(u64::MAX, u64::MAX, u64::MAX, 0, 0, 0);
    assert_eq!(
        u.validate(),
        Err(PricingError::Overflow("cached input tokens"))
    );
}

#[test]
fn decimal_overflow_is_an_error() {
    let huge = PriceEntry::new(
        "huge",
        ts("2025-01-01T00:00:00Z"),
        Decimal::MAX,
        Decimal::MAX,
    );
    let err = cost(&usage(u64::MAX, 0, 0, 0, 0, 0), &huge, None).unwrap_err();
    assert!(matches!(err, PricingError::Overflow(_)), "{err}");
    // Each component fits, their sum does not.
    let mut big = PriceEntry::new("big", ts("2025-01-01T00:00:00Z"), d("1"), d("1"));
    big.per_request = Decimal::MAX;
    let err = cost(&usage(1_000_000, 0, 0, 0, 0, 0), &big, None).unwrap_err();
    assert_eq!(err, PricingError::Overflow("subtotal"));
}

// ---------------------------------------------------------------- usage rules

#[test]
fn inconsistent_usage_is_rejected() {
    let e = plain("1", "1");
    for (u, needle) in [
        (usage(10, 6, 5, 0, 0, 0), "exceed input_tokens"),
        (usage(10, 11, 0, 0, 0, 0), "exceed input_tokens"),
        (usage(10, 0, 5, 6, 0, 0), "cache_write_1h_tokens"),
        (usage(0, 0, 0, 0, 5, 6), "reasoning_tokens"),
    ] {
        match cost(&u, &e, None) {
            Err(PricingError::InvalidUsage(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("{u:?}: {other:?}"),
        }
    }
    // Exactly at the limits is fine.
    assert!(cost(&usage(10, 5, 5, 5, 5, 5), &e, None).is_ok());
}

#[test]
fn usage_json_defaults_missing_counts_to_zero() {
    let u: UsageCounts =
        serde_json::from_str(r#"{"input_tokens": 10, "output_tokens": 3}"#).unwrap();
    assert_eq!(u, usage(10, 0, 0, 0, 3, 0));
    assert!(serde_json::from_str::<UsageCounts>(r#"{"input_tokens": -1}"#).is_err());
    assert!(serde_json::from_str::<UsageCounts>(r#"{"inputs": 1}"#).is_err());
    assert_eq!(usage(100, 20, 30, 0, 0, 0).uncached_input_tokens(), 50);
}

// ---------------------------------------------------------------- reconcile

#[test]
fn reconcile_within_and_outside_tolerance() {
    let r = reconcile(d("0.000435"), d("0.000435"), d("0"));
    assert_eq!(r.difference, d("0"));
    assert!(r.within_tolerance);

    let r = reconcile(d("1.0005"), d("1"), d("0.001"));
    assert_eq!(r.difference, d("0.0005"));
    assert!(r.within_tolerance);

    let r = reconcile(d("1"), d("1.002"), d("0.001"));
    assert_eq!(r.difference, d("-0.002"));
    assert!(!r.within_tolerance);

    // Exactly at the tolerance counts as within; the tolerance's sign is ignored.
    let r = reconcile(d("1"), d("1.001"), d("-0.001"));
    assert!(r.within_tolerance);
    assert_eq!((r.ours, r.reported), (d("1"), d("1.001")));
}

#[test]
fn reconcile_saturates() {
    let r = reconcile(Decimal::MAX, Decimal::MIN, d("1"));
    assert_eq!(r.difference, Decimal::MAX);
    assert!(!r.within_tolerance);
}

#[test]
fn reconcile_serializes_amounts_as_strings() {
    let json = serde_json::to_value(reconcile(d("0.30"), d("0.3"), d("0"))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"ours": "0.30", "reported": "0.3", "difference": "0", "within_tolerance": true})
    );
}
