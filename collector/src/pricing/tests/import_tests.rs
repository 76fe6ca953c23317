use super::{d, ts};
use crate::pricing::{
    cost, import_litellm, import_openrouter, parse_decimal_text, Catalog, Imported, PriceEntry,
    PricingError, UsageCounts,
};

const OPENROUTER: &str = include_str!("../../../tests/fixtures/pricing/openrouter_models.json");
const LITELLM: &str = include_str!("../../../tests/fixtures/pricing/litellm_model_prices.json");

fn at() -> chrono::DateTime<chrono::Utc> {
    ts("2026-11-25T00:00:00Z")
}

fn find<'a>(imported: &'a Imported, model: &str) -> &'a PriceEntry {
    imported
        .entries
        .iter()
        .find(|e| e.model == model)
        .unwrap_or_else(|| panic!("{model} not imported: {:?}", imported.skipped))
}

fn skipped_reason<'a>(imported: &'a Imported, model: &str) -> &'a str {
    &imported
        .skipped
        .iter()
        .find(|s| s.model == model)
        .unwrap_or_else(|| panic!("{model} not skipped"))
        .reason
}

// ------------------------------------------------------------ decimal text

#[test]
fn decimal_text_parsing_is_exact() {
    for (text, expected) in [
        ("2.5e-06", "0.0000025"),
        ("2.5e-6", "0.0000025"),
        ("1E-5", "0.00001"),
        ("3.75e-06", "0.00000375"),
        ("1e+2", "100"),
        ("1.2e3", "1200"),
        ("0.0000025", "0.0000025"),
        ("3", "3"),
        ("0.0", "0"),
        (" 0.15 ", "0.15"),
        ("-1", "-1"),
    ] {
        assert_eq!(parse_decimal_text(text), Ok(d(expected)), "{text}");
    }
    for bad in ["", "abc", "1e", "e-5", "1e-40", "0x10", "NaN"] {
        assert!(parse_decimal_text(bad).is_err(), "{bad}");
    }
}

// ------------------------------------------------------------ OpenRouter

#[test]
fn openrouter_fixture_imports() {
    let imp = import_openrouter(OPENROUTER, at()).unwrap();
    assert_eq!(imp.entries.len(), 7, "{:?}", imp.skipped);
    assert_eq!(imp.skipped_count(), 1);
    assert!(skipped_reason(&imp, "openrouter/auto").contains("variable pricing"));
    for e in &imp.entries {
        assert_eq!(e.provider.as_deref(), Some("openrouter"));
        assert_eq!(e.effective_from, at());
        assert_eq!(e.currency, "USD");
    }
}

#[test]
fn openrouter_per_token_strings_become_exact_per_million() {
    let imp = import_openrouter(OPENROUTER, at()).unwrap();
    let gpt4o = find(&imp, "openai/gpt-4o");
    assert_eq!(gpt4o.input, d("2.5"));
    assert_eq!(gpt4o.output, d("10"));
    assert_eq!(gpt4o.cache_read, Some(d("1.25")));
    assert_eq!(gpt4o.cache_write, None);
    assert_eq!(
        gpt4o.reasoning, None,
        "internal_reasoning \"0\" means not priced separately"
    );
    assert_eq!(gpt4o.per_request, d("0"));
    // Serialized without trailing zeros.
    let json = serde_json::to_value(gpt4o).unwrap();
    assert_eq!(json["input"], "2.5");
    assert_eq!(json["cache_read"], "1.25");

    let mini = find(&imp, "openai/gpt-4o-mini");
    assert_eq!(
        (mini.input, mini.cache_read, mini.output),
        (d("0.15"), Some(d("0.075")), d("0.6"))
    );

    let sonnet = find(&imp, "anthropic/claude-sonnet-4.5");
    assert_eq!(sonnet.input, d("3"));
    assert_eq!(sonnet.output, d("15"));
    assert_eq!(sonnet.cache_read, Some(d("0.3")));
    assert_eq!(sonnet.cache_write, Some(d("3.75")));

    let flash = find(&imp, "google/gemini-2.5-flash");
    assert_eq!(flash.cache_read, Some(d("0.03")));
    assert_eq!(flash.cache_write, Some(d("0.3833")));
}

#[test]
fn openrouter_request_fee_reasoning_and_free_models() {
    let imp = import_openrouter(OPENROUTER, at()).unwrap();
    let sonar = find(&imp, "perplexity/sonar");
    assert_eq!(
        sonar.per_request,
        d("0.005"),
        "request price is per request, not per token"
    );
    assert_eq!((sonar.input, sonar.output), (d("1"), d("1")));
    let r1 = find(&imp, "deepseek/deepseek-r1");
    assert_eq!(r1.reasoning, Some(d("2")));
    let free = find(&imp, "meta-llama/llama-3.3-70b-instruct:free");
    assert_eq!((free.input, free.output), (d("0"), d("0")));
}

#[test]
fn openrouter_import_matches_bundled_catalog_for_gpt_4o_mini() {
    let imp = import_openrouter(OPENROUTER, at()).unwrap();
    let cat = Catalog::from_entries("openrouter-import", imp.entries).unwrap();
    let imported = cat
        .lookup("openrouter", "openai/gpt-4o-mini", at())
        .unwrap();
    let bundled = Catalog::bundled().unwrap();
    let ours = bundled
        .lookup("openrouter", "openai/gpt-4o-mini", at())
        .unwrap();
    let u = UsageCounts {
        input_tokens: 12_345,
        cache_read_tokens: 2_345,
        output_tokens: 678,
        ..Default::default()
    };
    assert_eq!(
        cost(&u, imported, None).unwrap().total,
        cost(&u, ours, None).unwrap().total
    );
}

#[test]
fn openrouter_edge_cases() {
    let json = r#"{"data": [
        {"id": "a/no-pricing"},
        {"id": "a/no-completion", "pricing": {"prompt": "0.000001"}},
        {"id": "a/garbage", "pricing": {"prompt": "cheap", "completion": "0.000001"}},
        {"id": "a/numbers", "pricing": {"prompt": 1e-06, "completion": 0.000002}},
        {"id": "a/negative-cache", "pricing": {"prompt": "0.000001", "completion": "0.000001", "input_cache_read": "-0.0000001"}},
        {"id": "a/numbers", "pricing": {"prompt": "0.000009", "completion": "0.000009"}}
    ]}"#;
    let imp = import_openrouter(json, at()).unwrap();
    assert_eq!(imp.entries.len(), 1);
    let n = find(&imp, "a/numbers");
    assert_eq!((n.input, n.output), (d("1"), d("2")));
    assert!(skipped_reason(&imp, "a/no-pricing").contains("no pricing"));
    assert!(skipped_reason(&imp, "a/no-completion").contains("no completion price"));
    assert!(skipped_reason(&imp, "a/garbage").contains("prompt"));
    assert!(skipped_reason(&imp, "a/negative-cache").contains("negative"));
    assert_eq!(
        imp.skipped
            .iter()
            .filter(|s| s.model == "a/numbers")
            .count(),
        1
    );
    assert!(skipped_reason(&imp, "a/numbers").contains("duplicate"));
    assert_eq!(imp.skipped_count(), 5);
}

#[test]
fn openrouter_malformed_documents_are_errors() {
    for bad in [
        "",
        "[]",
        r#"{"models": []}"#,
        r#"{"data": [{"pricing": {}}]}"#,
        r#"{"data": "x"}"#,
    ] {
        assert!(
            matches!(import_openrouter(bad, at()), Err(PricingError::Json(_))),
            "{bad}"
        );
    }
    assert_eq!(
        import_openrouter(r#"{"data": []}"#, at()).unwrap(),
        Imported::default()
    );
}

// ------------------------------------------------------------ LiteLLM

#[test]
fn litellm_fixture_imports() {
    let imp = import_litellm(LITELLM, at()).unwrap();
    let mut names: Vec<_> = imp.entries.iter().map(|e| e.model.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "claude-sonnet-4-5-20250929",
            "gemini/gemini-2.5-flash-preview-04-17",
            "gemini/gemini-2.5-pro",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-realtime-preview-2024-12-17",
            "o1-pro",
            "ollama/llama3.1",
            "openrouter/openai/gpt-4o",
            "text-completion-codestral/codestral-2405",
        ]
    );
    // sample_spec is not a model and is not counted as skipped.
    assert_eq!(imp.skipped_count(), 3, "{:?}", imp.skipped);
    assert!(skipped_reason(&imp, "text-embedding-3-small").contains("embedding"));
    assert!(skipped_reason(&imp, "dall-e-3").contains("image_generation"));
    assert!(skipped_reason(&imp, "azure/computer-use-preview").contains("no input_cost_per_token"));
    assert!(imp.skipped.iter().all(|s| s.model != "sample_spec"));
    assert!(Catalog::from_entries("litellm", imp.entries).is_ok());
}

#[test]
fn litellm_exponent_numbers_are_exact() {
    let imp = import_litellm(LITELLM, at()).unwrap();
    let gpt4o = find(&imp, "gpt-4o");
    assert_eq!(gpt4o.provider.as_deref(), Some("openai"));
    assert_eq!(
        (gpt4o.input, gpt4o.output, gpt4o.cache_read),
        (d("2.5"), d("10"), Some(d("1.25")))
    );
    let mini = find(&imp, "gpt-4o-mini");
    assert_eq!(
        (mini.input, mini.output, mini.cache_read),
        (d("0.15"), d("0.6"), Some(d("0.075")))
    );
    let o1pro = find(&imp, "o1-pro");
    assert_eq!((o1pro.input, o1pro.output), (d("150"), d("600")));
    let zero = find(&imp, "ollama/llama3.1");
    assert_eq!((zero.input, zero.output), (d("0"), d("0")));
}

#[test]
fn litellm_long_context_and_one_hour_fields_become_a_tier() {
    let imp = import_litellm(LITELLM, at()).unwrap();
    let s = find(&imp, "claude-sonnet-4-5-20250929");
    assert_eq!(s.provider.as_deref(), Some("anthropic"));
    assert_eq!(s.input, d("3"));
    assert_eq!(s.output, d("15"));
    assert_eq!(s.cache_read, Some(d("0.3")));
    assert_eq!(s.cache_write, Some(d("3.75")));
    assert_eq!(s.cache_write_1h, Some(d("6")));
    assert_eq!(s.tiers.len(), 1);
    let t = &s.tiers[0];
    assert_eq!(t.above_input_tokens, 200_000);
    assert_eq!(t.input, Some(d("6")));
    assert_eq!(t.output, Some(d("22.5")));
    assert_eq!(t.cache_read, Some(d("0.6")));
    assert_eq!(t.cache_write, Some(d("7.5")));
    assert_eq!(t.cache_write_1h, Some(d("12")));
    assert_eq!(t.reasoning, None);

    let pro = find(&imp, "gemini/gemini-2.5-pro");
    assert_eq!(pro.provider.as_deref(), Some("gemini"));
    assert_eq!(pro.tiers.len(), 1);
    assert_eq!(pro.tiers[0].input, Some(d("2.5")));
    assert_eq!(pro.tiers[0].output, Some(d("15")));
    assert_eq!(pro.tiers[0].cache_read, Some(d("0.25")));
    assert_eq!(pro.tiers[0].cache_write, None);
}

#[test]
fn litellm_imported_sonnet_prices_like_the_bundled_catalog() {
    let imp = import_litellm(LITELLM, at()).unwrap();
    let imported = find(&imp, "claude-sonnet-4-5-20250929");
    let bundled = Catalog::bundled().unwrap();
    let ours = bundled
        .lookup("anthropic", "claude-sonnet-4-5-20250929", at())
        .unwrap();
    for input in [150_000u64, 250_000] {
        let u = UsageCounts {
            input_tokens: input,
            cache_read_tokens: 50_000,
            cache_write_tokens: 20_000,
            cache_write_1h_tokens: 5_000,
            output_tokens: 3_000,
            reasoning_tokens: 1_000,
        };
        let a = cost(&u, imported, None).unwrap();
        let b = cost(&u, ours, None).unwrap();
        assert_eq!((a.total, a.tier), (b.total, b.tier), "input {input}");
    }
}

#[test]
fn litellm_reasoning_price() {
    let imp = import_litellm(LITELLM, at()).unwrap();
    let flash = find(&imp, "gemini/gemini-2.5-flash-preview-04-17");
    assert_eq!(flash.input, d("0.15"));
    assert_eq!(flash.output, d("0.6"));
    assert_eq!(flash.reasoning, Some(d("3.5")));
    assert_eq!(flash.cache_read, Some(d("0.0375")));
}

#[test]
fn litellm_edge_cases() {
    let json = r#"{
        "sample_spec": {"input_cost_per_token": "not a number"},
        "no-mode": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
        "string-prices": {"input_cost_per_token": "1e-06", "output_cost_per_token": "0.000002", "mode": "chat"},
        "null-cache": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "cache_read_input_token_cost": null},
        "only-input": {"input_cost_per_token": 1e-06},
        "rerank": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "mode": "rerank"},
        "bad-mode": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "mode": 3},
        "bool-price": {"input_cost_per_token": true, "output_cost_per_token": 1e-06},
        "negative": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06},
        "tiny": {"input_cost_per_token": 1e-40, "output_cost_per_token": 1e-06},
        "not-an-object": "x",
        "multi-tier": {
            "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
            "input_cost_per_token_above_128k_tokens": 2e-06,
            "input_cost_per_token_above_272k_tokens": 4e-06,
            "output_cost_per_token_above_272k_tokens": 8e-06,
            "input_cost_per_token_above_272k_tokens_flex": 1e-06,
            "input_cost_per_token_batches": 5e-07,
            "output_cost_per_token_priority": 9e-06
        }
    }"#;
    let imp = import_litellm(json, at()).unwrap();
    let mut names: Vec<_> = imp.entries.iter().map(|e| e.model.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec!["multi-tier", "no-mode", "null-cache", "string-prices"]
    );
    assert_eq!(find(&imp, "no-mode").provider, None);
    assert_eq!(find(&imp, "string-prices").input, d("1"));
    assert_eq!(find(&imp, "null-cache").cache_read, None);
    assert!(skipped_reason(&imp, "only-input").contains("no output_cost_per_token"));
    assert!(skipped_reason(&imp, "rerank").contains("mode `rerank`"));
    assert!(skipped_reason(&imp, "bad-mode").contains("mode is not a string"));
    assert!(skipped_reason(&imp, "bool-price").contains("input_cost_per_token"));
    assert!(skipped_reason(&imp, "negative").contains("negative"));
    assert!(skipped_reason(&imp, "tiny").contains("input_cost_per_token"));
    assert!(skipped_reason(&imp, "not-an-object").contains("not an object"));
    assert_eq!(imp.skipped_count(), 7);

    let m = find(&imp, "multi-tier");
    assert_eq!(m.tiers.len(), 2);
    assert_eq!(m.tiers[0].above_input_tokens, 128_000);
    assert_eq!(m.tiers[0].input, Some(d("2")));
    assert_eq!(m.tiers[0].output, None);
    assert_eq!(m.tiers[1].above_input_tokens, 272_000);
    assert_eq!(m.tiers[1].input, Some(d("4")));
    assert_eq!(m.tiers[1].output, Some(d("8")));
}

#[test]
fn litellm_malformed_documents_are_errors() {
    for bad in ["", "[]", "{", r#""x""#] {
        assert!(
            matches!(import_litellm(bad, at()), Err(PricingError::Json(_))),
            "{bad}"
        );
    }
    assert_eq!(import_litellm("{}", at()).unwrap(), Imported::default());
}
