//! Property test: `cost().total` equals an independent integer computation.
//!
//! The reference works on scaled `i128` integers (no `Decimal` arithmetic):
//! a price is `mantissa / 10^scale` per million tokens, so `tokens × price`
//! is `tokens × mantissa / 10^(scale + 6)`. All amounts are brought to the
//! common scale 12 (prices have at most 6 decimals), the discount to scale 16.

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::ts;
use crate::pricing::{cost, PriceEntry, PriceOverride, PriceTier, TenantAdjustment, UsageCounts};

const MAX_TOKENS: u64 = 2_000_000_000;

/// A price: mantissa up to 10^7, 0..=6 decimals.
fn price() -> impl Strategy<Value = Decimal> {
    (0i64..=10_000_000, 0u32..=6).prop_map(|(m, s)| Decimal::new(m, s))
}

fn opt_price() -> impl Strategy<Value = Option<Decimal>> {
    prop::option::of(price())
}

fn usage() -> impl Strategy<Value = UsageCounts> {
    (0..=MAX_TOKENS, 0..=MAX_TOKENS)
        .prop_flat_map(|(input, output)| (Just(input), Just(output), 0..=input, 0..=output))
        .prop_flat_map(|(input, output, cache_read, reasoning)| {
            (
                Just(input),
                Just(output),
                Just(cache_read),
                Just(reasoning),
                0..=input - cache_read,
            )
        })
        .prop_flat_map(|(input, output, cache_read, reasoning, cache_write)| {
            (
                Just((input, output, cache_read, reasoning, cache_write)),
                0..=cache_write,
            )
        })
        .prop_map(
            |((input, output, cache_read, reasoning, cache_write), write_1h)| UsageCounts {
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
                cache_write_1h_tokens: write_1h,
                reasoning_tokens: reasoning,
            },
        )
}

fn tier_prices() -> impl Strategy<Value = [Option<Decimal>; 6]> {
    [
        opt_price(),
        opt_price(),
        opt_price(),
        opt_price(),
        opt_price(),
        opt_price(),
    ]
    .prop_filter("a tier sets at least one price", |p| {
        p.iter().any(Option::is_some)
    })
}

fn entry() -> impl Strategy<Value = PriceEntry> {
    (
        (
            price(),
            price(),
            opt_price(),
            opt_price(),
            opt_price(),
            opt_price(),
            price(),
        ),
        prop::collection::btree_map(0..=MAX_TOKENS, tier_prices(), 0..=3),
    )
        .prop_map(|((input, output, cr, cw, cw1h, reasoning, fee), tiers)| {
            let mut e = PriceEntry::new("prop", ts("2025-01-01T00:00:00Z"), input, output);
            e.cache_read = cr;
            e.cache_write = cw;
            e.cache_write_1h = cw1h;
            e.reasoning = reasoning;
            e.per_request = fee;
            e.tiers = tiers
                .into_iter()
                .map(|(above, p)| PriceTier {
                    above_input_tokens: above,
                    input: p[0],
                    output: p[1],
                    cache_read: p[2],
                    cache_write: p[3],
                    cache_write_1h: p[4],
                    reasoning: p[5],
                })
                .collect();
            e
        })
}

fn adjustment() -> impl Strategy<Value = Option<TenantAdjustment>> {
    prop_oneof![
        Just(None),
        // 0.00 ..= 100.00 percent
        (0i64..=10_000).prop_map(|m| Some(TenantAdjustment::Discount {
            percent: Decimal::new(m, 2)
        })),
        (
            opt_price(),
            opt_price(),
            opt_price(),
            opt_price(),
            opt_price(),
            opt_price(),
            opt_price()
        )
            .prop_map(
                |(
                    input,
                    output,
                    cache_read,
                    cache_write,
                    cache_write_1h,
                    reasoning,
                    per_request,
                )| {
                    Some(TenantAdjustment::CustomPrices(PriceOverride {
                        input,
                        output,
                        cache_read,
                        cache_write,
                        cache_write_1h,
                        reasoning,
                        per_request,
                    }))
                }
            ),
    ]
}

/// `value × 10^12` as an integer (prices have ≤ 6 decimals, so exact).
fn at_scale(d: Decimal, scale: u32) -> i128 {
    assert!(d.scale() <= scale);
    d.mantissa() * 10i128.pow(scale - d.scale())
}

/// Cost of `tokens` at `price` per million, as an integer at scale 12.
fn amount(tokens: u64, price: Decimal) -> i128 {
    // tokens × price × 10^12 / 10^6 = tokens × price × 10^6, exact because
    // price has at most 6 decimals.
    tokens as i128 * at_scale(price, 6)
}

/// The straightforward reference computation; returns the total at scale 16.
fn reference_total(u: &UsageCounts, e: &PriceEntry, adj: Option<&TenantAdjustment>) -> i128 {
    // Highest tier strictly exceeded by the total input.
    let mut tier: Option<&PriceTier> = None;
    for t in &e.tiers {
        if u.input_tokens > t.above_input_tokens
            && tier.is_none_or(|best| t.above_input_tokens > best.above_input_tokens)
        {
            tier = Some(t);
        }
    }
    let custom = match adj {
        Some(TenantAdjustment::CustomPrices(o)) => o.clone(),
        _ => PriceOverride::default(),
    };
    let layered = |c: Option<Decimal>, t: Option<Decimal>, b: Option<Decimal>| -> Option<Decimal> {
        if c.is_some() {
            return c;
        }
        if t.is_some() {
            return t;
        }
        b
    };
    let input = layered(custom.input, tier.and_then(|t| t.input), Some(e.input)).unwrap();
    let output = layered(custom.output, tier.and_then(|t| t.output), Some(e.output)).unwrap();
    let cache_read = layered(
        custom.cache_read,
        tier.and_then(|t| t.cache_read),
        e.cache_read,
    )
    .unwrap_or(input);
    let cache_write = layered(
        custom.cache_write,
        tier.and_then(|t| t.cache_write),
        e.cache_write,
    )
    .unwrap_or(input);
    let cache_write_1h = layered(
        custom.cache_write_1h,
        tier.and_then(|t| t.cache_write_1h),
        e.cache_write_1h,
    )
    .unwrap_or(input);
    let reasoning = layered(
        custom.reasoning,
        tier.and_then(|t| t.reasoning),
        e.reasoning,
    )
    .unwrap_or(output);
    let fee = custom.per_request.unwrap_or(e.per_request);

    let uncached = u.input_tokens - u.cache_read_tokens - u.cache_write_tokens;
    let subtotal = amount(uncached, input)
        + amount(u.cache_read_tokens, cache_read)
        + amount(u.cache_write_tokens - u.cache_write_1h_tokens, cache_write)
        + amount(u.cache_write_1h_tokens, cache_write_1h)
        + amount(u.output_tokens - u.reasoning_tokens, output)
        + amount(u.reasoning_tokens, reasoning)
        + at_scale(fee, 12);
    // Scale 16: subtotal × 10^4 − subtotal × percent(scale 2) / 100 (scale 2).
    let percent = match adj {
        Some(TenantAdjustment::Discount { percent }) => at_scale(*percent, 2),
        _ => 0,
    };
    subtotal * 10_000 - subtotal * percent
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn total_matches_independent_computation(u in usage(), e in entry(), adj in adjustment()) {
        prop_assert!(e.validate().is_ok());
        let b = cost(&u, &e, adj.as_ref()).expect("in-range inputs always price");
        let expected = Decimal::from_i128_with_scale(reference_total(&u, &e, adj.as_ref()), 16);
        prop_assert_eq!(b.total, expected);
        // The breakdown is internally consistent and the discount never positive.
        let sum = b.input + b.cache_read + b.cache_write + b.output + b.reasoning + b.request_fee + b.discount;
        prop_assert_eq!(b.total, sum);
        prop_assert!(b.discount <= Decimal::ZERO);
        prop_assert!(b.total >= Decimal::ZERO);
    }

    #[test]
    fn cost_never_panics(
        input in any::<u64>(), output in any::<u64>(), cr in any::<u64>(), cw in any::<u64>(),
        cw1h in any::<u64>(), reasoning in any::<u64>(),
        m in any::<i64>(), s in 0u32..=28,
    ) {
        let u = UsageCounts {
            input_tokens: input, output_tokens: output, cache_read_tokens: cr,
            cache_write_tokens: cw, cache_write_1h_tokens: cw1h, reasoning_tokens: reasoning,
        };
        let p = Decimal::new(m, s).abs();
        let e = PriceEntry::new("any", ts("2025-01-01T00:00:00Z"), p, p);
        let _ = cost(&u, &e, None);
    }
}
