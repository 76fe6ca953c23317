//! The export's pure parts: periods, decimals, the FOCUS mapping and the
//! writers, read back with the parquet crate's own reader.

use std::str::FromStr;

use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::{Field, Row};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::focus::{self, Charge, Component};
use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// gpt-4o-mini, 1,200 input (200 cached), 300 output: 0.000345 USD, the
/// README's example.
fn priced(request_id: &str) -> Transaction {
    Transaction {
        request_id: request_id.into(),
        tenant_id: "acme".into(),
        api_key_id: Some("key-1".into()),
        provider: "openai".into(),
        model: Some("gpt-4o-mini".into()),
        route: Some("chat".into()),
        http_status: 200,
        streamed: false,
        occurred_at: at("2026-10-31T23:59:59.123Z"),
        received_at: at("2026-11-01T00:00:01Z"),
        ttfb_ms: Some(120),
        duration_ms: None,
        input_tokens: 1200,
        output_tokens: 300,
        cache_read_tokens: 200,
        cache_write_tokens: 0,
        cache_write_1h_tokens: 0,
        reasoning_tokens: 0,
        status: "priced".into(),
        currency: Some("USD".into()),
        cost: Some(d("0.000345")),
        cost_input: Some(d("0.00015")),
        cost_cache_read: Some(d("0.000015")),
        cost_cache_write: Some(d("0")),
        cost_output: Some(d("0.00018")),
        cost_reasoning: Some(d("0")),
        cost_request_fee: Some(d("0")),
        cost_discount: Some(d("0")),
        price_version: Some("gpt-4o-mini@2024-07-18T00:00:00Z".into()),
        reported_cost: None,
        flags: vec![],
    }
}

fn unpriced(request_id: &str) -> Transaction {
    Transaction {
        model: Some("mystery-model".into()),
        status: "unpriced".into(),
        currency: None,
        cost: None,
        cost_input: None,
        cost_cache_read: None,
        cost_cache_write: None,
        cost_output: None,
        cost_reasoning: None,
        cost_request_fee: None,
        cost_discount: None,
        price_version: None,
        flags: vec!["incomplete".into(), "no_usage".into()],
        ..priced(request_id)
    }
}

/// Every component at once, a 10 % discount and a reported cost: reasoning
/// 100 of 400 output, cache write 300 and read 200 of 1,500 input, a fee.
fn discounted(request_id: &str) -> Transaction {
    Transaction {
        tenant_id: "globex".into(),
        provider: "bedrock".into(),
        model: Some("us.anthropic.claude-sonnet-4-5-v1:0".into()),
        input_tokens: 1500,
        cache_read_tokens: 200,
        cache_write_tokens: 300,
        cache_write_1h_tokens: 100,
        output_tokens: 400,
        reasoning_tokens: 100,
        currency: Some("EUR".into()),
        // Components 0.003 + 0.00006 + 0.001166 + 0.0045 + 0.0015 + 0.01 =
        // 0.020226; discount -0.0020226; total 0.0182034.
        cost_input: Some(d("0.003")),
        cost_cache_read: Some(d("0.00006")),
        cost_cache_write: Some(d("0.001166")),
        cost_output: Some(d("0.0045")),
        cost_reasoning: Some(d("0.0015")),
        cost_request_fee: Some(d("0.01")),
        cost_discount: Some(d("-0.0020226")),
        cost: Some(d("0.0182034")),
        reported_cost: Some(d("0.02")),
        price_version: Some(
            "anthropic.claude-sonnet-4-5@2025-09-29T00:00:00Z tenant:globex/*@2025-01-01T00:00:00Z"
                .into(),
        ),
        ..priced(request_id)
    }
}

#[test]
fn a_period_is_a_utc_calendar_month() {
    let p = Period::parse("2026-10").unwrap();
    assert_eq!(p.to_string(), "2026-10");
    assert_eq!(p.start(), at("2026-10-01T00:00:00Z"));
    assert_eq!(p.end(), at("2026-11-01T00:00:00Z"));
    let december = Period::parse("2027-12").unwrap();
    assert_eq!(december.end(), at("2028-01-01T00:00:00Z"));
    let leap = Period::parse("2028-02").unwrap();
    assert_eq!(leap.end(), at("2028-03-01T00:00:00Z"));
    assert_eq!(Period::containing(at("2028-02-29T23:59:59Z")), leap);
    for bad in [
        "2026-13",
        "2026-00",
        "2026-1",
        "26-10",
        "2026-10-01",
        "2026/10",
        "abcd-ef",
        "",
    ] {
        let e = Period::parse(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("period {bad:?} is not a month: expected YYYY-MM, e.g. 2026-10")
        );
    }
}

#[test]
fn a_month_that_is_not_over_is_refused() {
    let p = Period::parse("2026-10").unwrap();
    let e = p.ensure_closed(at("2026-10-31T23:59:59Z")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "period 2026-10 is not over yet: it ends at 2026-11-01T00:00:00Z and it is now \
         2026-10-31T23:59:59Z; only a closed month can be exported"
    );
    assert!(p.ensure_closed(at("2026-11-01T00:00:00Z")).is_ok());
    assert!(Period::parse("2026-11")
        .unwrap()
        .ensure_closed(at("2026-11-01T00:00:00Z"))
        .is_err());
}

#[test]
fn decimals_fit_exactly_or_not_at_all() {
    assert_eq!(decimal_to_i128(d("0.000345")), Some(345 * 10i128.pow(14)));
    assert_eq!(decimal_to_i128(d("-1.5")), Some(-15 * 10i128.pow(19)));
    // Trailing zeros beyond the scale are not digits lost.
    assert_eq!(
        decimal_to_i128(d("2.0000000000000000000000000")),
        Some(2 * 10i128.pow(20))
    );
    assert_eq!(decimal_to_i128(d("0.00000000000000000001")), Some(1));
    // 21 fractional digits would need rounding.
    assert_eq!(decimal_to_i128(d("0.000000000000000000001")), None);
    // 18 integer digits fit, 19 do not.
    assert!(decimal_to_i128(d("999999999999999999.5")).is_some());
    assert_eq!(decimal_to_i128(d("1000000000000000000")), None);
}

#[test]
fn a_discount_is_spread_exactly_over_the_components() {
    let amounts = [d("0.003"), d("0.00006"), d("0.0045")];
    let shares = focus::spread_discount(d("-0.000756"), &amounts).unwrap();
    // 10 % of each, exactly.
    assert_eq!(shares, vec![d("-0.0003"), d("-0.000006"), d("-0.00045")]);

    // A third: rounded at 20 places, the remainder on the largest amount.
    let amounts = [d("1"), d("1"), d("1")];
    let shares = focus::spread_discount(d("-1"), &amounts).unwrap();
    assert_eq!(shares.iter().sum::<Decimal>(), d("-1"));
    assert_eq!(shares[1], d("-0.33333333333333333333"));
    assert_eq!(shares[0], d("-0.33333333333333333334"));

    assert_eq!(
        focus::spread_discount(Decimal::ZERO, &amounts).unwrap(),
        vec![Decimal::ZERO; 3]
    );
    assert_eq!(focus::spread_discount(d("-1"), &[]), None);
    assert_eq!(focus::spread_discount(Decimal::ZERO, &[]), Some(vec![]));
}

#[test]
fn one_focus_row_per_charged_component() {
    let row = priced("r1");
    let charges = focus::charges(&row).unwrap();
    let got: Vec<(Component, i64, String)> = charges
        .iter()
        .map(|c| (c.component, c.quantity, c.billed_cost.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Component::Input, 1000, "0.00015".into()),
            (Component::CacheRead, 200, "0.000015".into()),
            (Component::Output, 300, "0.00018".into()),
        ]
    );
    assert!(charges.iter().all(|c| c.list_cost == c.billed_cost));
    let billed: Decimal = charges.iter().map(|c| c.billed_cost).sum();
    assert_eq!(billed, d("0.000345"));
}

#[test]
fn a_discounted_row_bills_its_ledger_cost_exactly() {
    let row = discounted("r2");
    let charges = focus::charges(&row).unwrap();
    let got: Vec<(Component, i64, String, String)> = charges
        .iter()
        .map(|c| {
            (
                c.component,
                c.quantity,
                c.list_cost.normalize().to_string(),
                c.billed_cost.normalize().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Component::Input, 1000, "0.003".into(), "0.0027".into()),
            (
                Component::CacheRead,
                200,
                "0.00006".into(),
                "0.000054".into()
            ),
            (
                Component::CacheWrite,
                300,
                "0.001166".into(),
                "0.0010494".into()
            ),
            (Component::Output, 300, "0.0045".into(), "0.00405".into()),
            (Component::Reasoning, 100, "0.0015".into(), "0.00135".into()),
            (Component::RequestFee, 1, "0.01".into(), "0.009".into()),
        ]
    );
    let billed: Decimal = charges.iter().map(|c| c.billed_cost).sum();
    let list: Decimal = charges.iter().map(|c| c.list_cost).sum();
    assert_eq!(billed, d("0.0182034"));
    assert_eq!(list, d("0.020226"));
    assert_eq!(
        charges
            .iter()
            .map(|c| c.first_of_request)
            .collect::<Vec<_>>(),
        [true, false, false, false, false, false]
    );
}

#[test]
fn unpriced_and_empty_rows_have_no_focus_rows() {
    assert!(focus::charges(&unpriced("u1")).unwrap().is_empty());
    let nothing = Transaction {
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cost: Some(Decimal::ZERO),
        cost_input: Some(Decimal::ZERO),
        cost_cache_read: Some(Decimal::ZERO),
        cost_output: Some(Decimal::ZERO),
        ..priced("e1")
    };
    assert!(focus::charges(&nothing).unwrap().is_empty());
}

#[test]
fn a_row_whose_cost_is_not_its_components_fails_loudly() {
    let row = Transaction {
        cost: Some(d("0.000346")),
        ..priced("bad")
    };
    let e = focus::charges(&row).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ledger row of tenant acme, request bad: cost 0.000346 is not the sum of its \
         components and discount (Some(0.000345)); the export cannot split its cost exactly"
    );
}

#[test]
fn publishers_and_providers_have_focus_names() {
    assert_eq!(focus::provider_and_service("bedrock").0, "AWS");
    assert_eq!(focus::provider_and_service("bedrock").1, "Amazon Bedrock");
    assert_eq!(focus::provider_and_service("unknown").0, "unknown");
    let p = |m: &str, provider: &'static str| focus::publisher(Some(m), provider).into_owned();
    assert_eq!(p("us.anthropic.claude-sonnet-4-5-v1:0", "AWS"), "Anthropic");
    assert_eq!(p("gpt-4o-mini-2024-07-18", "Microsoft"), "OpenAI");
    assert_eq!(p("o3-mini", "OpenAI"), "OpenAI");
    assert_eq!(p("openai/o1", "OpenRouter"), "OpenAI");
    assert_eq!(p("gemini-2.5-flash", "Google"), "Google");
    assert_eq!(p("llama-3.3-70b-versatile", "Groq"), "Meta");
    assert_eq!(p("prod-chat", "Microsoft"), "Microsoft");
    assert_eq!(focus::publisher(None, "Cohere"), "Cohere");
}

/// The rows of a Parquet file, read with the parquet crate's record API,
/// and its row group count.
fn read_parquet(bytes: Vec<u8>) -> (Vec<Row>, usize) {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let row_groups = reader.metadata().num_row_groups();
    let rows = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    (rows, row_groups)
}

fn field<'r>(row: &'r Row, column: &str) -> &'r Field {
    row.get_column_iter()
        .find(|(name, _)| name.as_str() == column)
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no column {column}"))
}

fn strings(rows: &[Row], column: &str) -> Vec<Option<String>> {
    rows.iter()
        .map(|r| match field(r, column) {
            Field::Str(s) => Some(s.clone()),
            Field::Null => None,
            other => panic!("{column}: {other:?}"),
        })
        .collect()
}

/// DECIMAL(38, 20) values as normalized decimal strings.
fn decimals(rows: &[Row], column: &str) -> Vec<Option<String>> {
    rows.iter()
        .map(|r| match field(r, column) {
            Field::Decimal(v) => {
                let bytes: [u8; 16] = v.data().try_into().unwrap();
                let value = Decimal::from_i128_with_scale(i128::from_be_bytes(bytes), 20);
                Some(value.normalize().to_string())
            }
            Field::Null => None,
            other => panic!("{column}: {other:?}"),
        })
        .collect()
}

#[test]
fn the_ledger_parquet_keeps_every_column_exactly() {
    let period = Period::parse("2026-10").unwrap();
    let mut sink = Sink::new(ExportFormat::Parquet, Vec::new(), period, "us").unwrap();
    assert_eq!(sink.write(&[priced("r1"), unpriced("u1")]).unwrap(), 2);
    assert_eq!(sink.write(&[discounted("r2")]).unwrap(), 1);
    let (rows, row_groups) = read_parquet(sink.finish().unwrap());
    assert_eq!(row_groups, 2, "one row group per chunk");
    assert_eq!(rows.len(), 3);
    let batch = &rows;
    let names: Vec<&str> = rows[0].get_column_iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        LEDGER_COLUMNS.map(|c| c.name),
        "every field of Transaction"
    );
    assert_eq!(names.len(), 31);
    assert_eq!(
        strings(batch, "request_id"),
        [Some("r1".into()), Some("u1".into()), Some("r2".into())]
    );
    assert_eq!(
        decimals(batch, "cost"),
        [Some("0.000345".into()), None, Some("0.0182034".into())]
    );
    assert_eq!(
        decimals(batch, "cost_discount"),
        [Some("0".into()), None, Some("-0.0020226".into())]
    );
    assert_eq!(
        decimals(batch, "reported_cost"),
        [None, None, Some("0.02".into())]
    );
    assert_eq!(
        strings(batch, "currency"),
        [Some("USD".into()), None, Some("EUR".into())]
    );
    assert_eq!(
        field(&rows[0], "occurred_at"),
        &Field::TimestampMicros(at("2026-10-31T23:59:59.123Z").timestamp_micros())
    );
    assert_eq!(field(&rows[0], "ttfb_ms"), &Field::Long(120));
    assert_eq!(field(&rows[0], "duration_ms"), &Field::Null);
    let flags = |i: usize| match field(&rows[i], "flags") {
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|f| match f {
                Field::Str(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(flags(0), Vec::<String>::new());
    assert_eq!(flags(1), ["incomplete", "no_usage"]);
}

#[test]
fn money_that_does_not_fit_fails_the_export_naming_the_row() {
    let row = Transaction {
        reported_cost: Some(d("0.0000000000000000000001")),
        ..priced("tiny")
    };
    let period = Period::parse("2026-10").unwrap();
    let mut sink = Sink::new(ExportFormat::Parquet, Vec::new(), period, "us").unwrap();
    let e = sink.write(&[row]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "reported_cost = 0.0000000000000000000001 (tenant acme, request tiny) does not fit \
         DECIMAL(38, 20); the export never rounds money"
    );
}

#[test]
fn focus_csv_rows_carry_the_exact_figures() {
    let period = Period::parse("2026-10").unwrap();
    let mut sink = Sink::new(ExportFormat::FocusCsv, Vec::new(), period, "Acme Billing").unwrap();
    let rows = [priced("r1"), unpriced("u1"), discounted("r2")];
    assert_eq!(sink.write(&rows).unwrap(), 9);
    let mut ledger = PeriodTotals::default();
    rows.iter().for_each(|r| ledger.add(r));
    sink.check(&ledger).unwrap();
    let text = String::from_utf8(sink.finish().unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0], focus::column_names().join(","));
    assert_eq!(
        lines[1],
        "0.00015,acme,acme,USD,2026-11-01T00:00:00Z,2026-10-01T00:00:00Z,Usage,,\
         gpt-4o-mini: uncached input tokens (OpenAI API; price version gpt-4o-mini@2024-07-18T00:00:00Z),\
         Usage-Based,2026-11-01T00:00:00Z,2026-10-31T23:00:00Z,1000,Tokens,0.00015,0.00015,\
         Acme Billing,0.00015,Standard,1000,Tokens,OpenAI,OpenAI,key-1,,API Key,\
         AI and Machine Learning,OpenAI API,Generative AI,gpt-4o-mini/input,Input Tokens,,\
         input:gpt-4o-mini@2024-07-18T00:00:00Z,acme,acme,\
         \"{\"\"billing/api_key_id\"\":\"\"key-1\"\",\"\"billing/model\"\":\"\"gpt-4o-mini\"\",\
         \"\"billing/provider\"\":\"\"openai\"\",\"\"billing/request_id\"\":\"\"r1\"\",\
         \"\"billing/route\"\":\"\"chat\"\",\"\"billing/tenant_id\"\":\"\"acme\"\"}\",\
         input,2026-10-31T23:59:59.123Z,,r1"
    );
    // The discounted request's fee row: 0.01 listed, 0.009 billed, in EUR.
    let fee = lines[9];
    assert!(fee.starts_with("0.009,globex,globex,EUR,"), "{fee}");
    assert!(
        fee.contains(
            ",1,Requests,0.009,0.009,Acme Billing,0.01,Standard,1,Requests,AWS,Anthropic,"
        ),
        "{fee}"
    );
    // The reported cost once per request, on its first row.
    assert!(
        lines[4].ends_with(",input,2026-10-31T23:59:59.123Z,0.02,r2"),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].ends_with(",cache_read,2026-10-31T23:59:59.123Z,,r2"),
        "{}",
        lines[5]
    );
}

#[test]
fn focus_parquet_has_the_mandatory_columns_and_sums_to_the_ledger() {
    let period = Period::parse("2026-10").unwrap();
    let mut sink = Sink::new(ExportFormat::FocusParquet, Vec::new(), period, "us").unwrap();
    let rows = [priced("r1"), unpriced("u1"), discounted("r2")];
    assert_eq!(sink.write(&rows).unwrap(), 9);
    let (rows, _) = read_parquet(sink.finish().unwrap());
    let batch = &rows;
    for mandatory in [
        "BilledCost",
        "BillingAccountId",
        "BillingAccountName",
        "BillingCurrency",
        "BillingPeriodEnd",
        "BillingPeriodStart",
        "ChargeCategory",
        "ChargeClass",
        "ChargeDescription",
        "ChargePeriodEnd",
        "ChargePeriodStart",
        "ContractedCost",
        "EffectiveCost",
        "InvoiceIssuerName",
        "ListCost",
        "PricingQuantity",
        "PricingUnit",
        "ProviderName",
        "PublisherName",
        "ServiceCategory",
        "ServiceName",
    ] {
        assert!(
            rows[0].get_column_iter().any(|(n, _)| n == mandatory),
            "{mandatory}"
        );
    }
    let billed = decimals(batch, "BilledCost");
    let currency = strings(batch, "BillingCurrency");
    let sum = |want: &str| -> Decimal {
        billed
            .iter()
            .zip(&currency)
            .filter(|(_, c)| c.as_deref() == Some(want))
            .map(|(b, _)| d(b.as_deref().unwrap()))
            .sum()
    };
    assert_eq!(sum("USD"), d("0.000345"));
    assert_eq!(sum("EUR"), d("0.0182034"));
    assert_eq!(
        decimals(batch, "ConsumedQuantity")[..3],
        [Some("1000".into()), Some("200".into()), Some("300".into())]
    );
}

#[test]
fn period_totals_sum_per_currency_and_give_the_archive_its_check() {
    let mut totals = PeriodTotals::default();
    for row in [priced("r1"), unpriced("u1"), discounted("r2"), priced("r3")] {
        totals.add(&row);
    }
    assert_eq!(totals.rows, 4);
    assert_eq!(totals.unpriced_rows(), 1);
    let usd = &totals.currencies[&Some("USD".to_string())];
    assert_eq!((usd.rows, usd.cost), (2, d("0.00069")));
    assert_eq!(usd.input_tokens, Decimal::from(2400));
    let eur = &totals.currencies[&Some("EUR".to_string())];
    assert_eq!(
        (eur.reported_cost, eur.cache_write_1h_tokens),
        (d("0.02"), Decimal::from(100))
    );
    let month = totals.month_totals();
    assert_eq!(month.rows, 4);
    assert_eq!(
        month.cost.into_iter().collect::<Vec<_>>(),
        [
            ("EUR".to_string(), d("0.0182034")),
            ("USD".to_string(), d("0.00069"))
        ]
    );
}

#[test]
fn a_focus_export_that_does_not_add_up_is_refused() {
    let period = Period::parse("2026-10").unwrap();
    let mut sink = Sink::new(ExportFormat::FocusCsv, Vec::new(), period, "us").unwrap();
    sink.write(&[priced("r1")]).unwrap();
    let mut ledger = PeriodTotals::default();
    ledger.add(&priced("r1"));
    ledger.add(&priced("r2"));
    let e = sink.check(&ledger).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "the export does not add up to the ledger: FOCUS BilledCost per currency \
             {\"USD\": 0.000345}, ledger cost {\"USD\": 0.00069}"
        ),
        "{e}"
    );
}

#[test]
fn skus_name_the_catalog_model_and_the_price_its_version() {
    assert_eq!(
        focus::catalog_model("gpt-4o@2024-10-02T00:00:00Z tenant:acme/*@2025-01-01T00:00:00Z"),
        Some("gpt-4o")
    );
    assert_eq!(
        focus::catalog_model("claude-sonnet-4-5@20250929@2025-09-29T00:00:00Z"),
        Some("claude-sonnet-4-5@20250929")
    );
    assert_eq!(focus::catalog_model("unversioned"), None);
}

#[test]
fn charges_in_the_month_fall_in_its_hours() {
    let row = priced("r1");
    let charges: Vec<Charge<'_>> = focus::charges(&row).unwrap();
    let context = focus::Context::new(Period::parse("2026-10").unwrap(), "us");
    let cells = focus::cells(&charges[0], &context);
    assert_eq!(cells[11], Cell::Time(at("2026-10-31T23:00:00Z")));
    assert_eq!(cells[10], Cell::Time(at("2026-11-01T00:00:00Z")));
}

#[test]
fn the_command_line_names_period_format_and_output() {
    use crate::config::{Cli, Command, LedgerCommand};
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "collector",
        "ledger",
        "export",
        "--period",
        "2026-10",
        "--format",
        "focus-parquet",
    ])
    .unwrap();
    let Some(Command::Ledger {
        command:
            LedgerCommand::Export {
                period,
                format,
                output,
                invoice_issuer,
            },
    }) = cli.command
    else {
        panic!("not a ledger export");
    };
    assert_eq!(
        (period.as_str(), format, output, invoice_issuer.as_str()),
        ("2026-10", ExportFormat::FocusParquet, None, "llm-billing")
    );
    assert_eq!(
        format.default_file_name(Period::parse(&period).unwrap()),
        "ledger-2026-10.focus.parquet"
    );
    let e = Cli::try_parse_from([
        "collector",
        "ledger",
        "export",
        "--period",
        "2026-10",
        "--format",
        "csv",
    ])
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("possible values: parquet, focus-csv, focus-parquet"),
        "{e}"
    );
}
