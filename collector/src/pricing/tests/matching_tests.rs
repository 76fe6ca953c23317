use super::{d, ts};
use crate::pricing::{candidate_names, Catalog, MatchKind, PriceEntry};

fn names(provider: &str, model: &str) -> Vec<String> {
    candidate_names(provider, model)
}

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------ candidate_names rules

#[test]
fn exact_id_is_the_only_candidate_when_nothing_can_be_stripped() {
    assert_eq!(names("openai", "gpt-4o"), v(&["gpt-4o"]));
    assert_eq!(names("openai", "o3-mini"), v(&["o3-mini"]));
    assert_eq!(names("google", "gemini-2.5-pro"), v(&["gemini-2.5-pro"]));
}

#[test]
fn blank_model_yields_no_candidates() {
    assert!(names("openai", "").is_empty());
    assert!(names("openai", "   ").is_empty());
}

#[test]
fn model_is_trimmed() {
    assert_eq!(names("openai", "  gpt-4o \n"), v(&["gpt-4o"]));
}

#[test]
fn lowercase_form_follows_the_exact_id() {
    assert_eq!(names("openai", "GPT-4o"), v(&["GPT-4o", "gpt-4o"]));
}

#[test]
fn provider_prefix_is_stripped() {
    assert_eq!(
        names("openai", "openai/gpt-4o"),
        v(&["openai/gpt-4o", "gpt-4o"])
    );
}

#[test]
fn gemini_models_prefix_is_stripped() {
    assert_eq!(
        names("google", "models/gemini-2.5-pro"),
        v(&["models/gemini-2.5-pro", "gemini-2.5-pro"])
    );
}

#[test]
fn nested_prefixes_are_stripped_one_segment_at_a_time() {
    assert_eq!(
        names("litellm", "openrouter/openai/gpt-4o"),
        v(&["openrouter/openai/gpt-4o", "openai/gpt-4o", "gpt-4o"])
    );
}

#[test]
fn trailing_slash_does_not_produce_an_empty_candidate() {
    assert_eq!(names("openai", "openai/"), v(&["openai/"]));
}

#[test]
fn openrouter_claude_ids_also_try_dashes() {
    assert_eq!(
        names("openrouter", "anthropic/claude-sonnet-4.5"),
        v(&[
            "anthropic/claude-sonnet-4.5",
            "anthropic/claude-sonnet-4-5",
            "claude-sonnet-4.5",
            "claude-sonnet-4-5",
        ])
    );
}

#[test]
fn bare_dotted_claude_id_tries_dashes() {
    assert_eq!(
        names("anthropic", "claude-3.7-sonnet"),
        v(&["claude-3.7-sonnet", "claude-3-7-sonnet"])
    );
}

#[test]
fn dots_are_kept_for_non_claude_models() {
    let n = names("openrouter", "openai/gpt-4.1");
    assert_eq!(n, v(&["openai/gpt-4.1", "gpt-4.1"]));
    assert!(!n.contains(&"gpt-4-1".to_string()));
}

#[test]
fn openai_dated_snapshot_is_stripped() {
    assert_eq!(
        names("openai", "gpt-4o-2024-08-06"),
        v(&["gpt-4o-2024-08-06", "gpt-4o"])
    );
    assert_eq!(
        names("openai", "o3-mini-2025-01-31"),
        v(&["o3-mini-2025-01-31", "o3-mini"])
    );
    assert_eq!(
        names("openai", "gpt-5-2025-08-07"),
        v(&["gpt-5-2025-08-07", "gpt-5"])
    );
}

#[test]
fn mini_snapshot_never_strips_to_the_bigger_model() {
    let n = names("openai", "gpt-4o-mini-2024-07-18");
    assert_eq!(n, v(&["gpt-4o-mini-2024-07-18", "gpt-4o-mini"]));
    assert!(!n.contains(&"gpt-4o".to_string()));
}

#[test]
fn anthropic_compact_date_is_stripped() {
    assert_eq!(
        names("anthropic", "claude-sonnet-4-5-20250929"),
        v(&["claude-sonnet-4-5-20250929", "claude-sonnet-4-5"])
    );
    assert_eq!(
        names("anthropic", "claude-3-5-haiku-20241022"),
        v(&["claude-3-5-haiku-20241022", "claude-3-5-haiku"])
    );
}

#[test]
fn vertex_at_version_is_stripped() {
    assert_eq!(
        names("vertex", "claude-sonnet-4-5@20250929"),
        v(&["claude-sonnet-4-5@20250929", "claude-sonnet-4-5"])
    );
}

#[test]
fn gemini_preview_date_is_stripped() {
    assert_eq!(
        names("google", "gemini-2.5-flash-preview-05-20"),
        v(&["gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"])
    );
    assert_eq!(
        names("google", "gemini-2.5-pro-exp-03-25"),
        v(&["gemini-2.5-pro-exp-03-25", "gemini-2.5-pro"])
    );
}

#[test]
fn flash_lite_preview_strips_to_flash_lite_not_flash() {
    let n = names("google", "gemini-2.5-flash-lite-preview-06-17");
    assert_eq!(
        n,
        v(&[
            "gemini-2.5-flash-lite-preview-06-17",
            "gemini-2.5-flash-lite"
        ])
    );
    assert!(!n.contains(&"gemini-2.5-flash".to_string()));
}

#[test]
fn latest_suffix_is_stripped() {
    assert_eq!(
        names("anthropic", "claude-3-5-haiku-latest"),
        v(&["claude-3-5-haiku-latest", "claude-3-5-haiku"])
    );
}

#[test]
fn three_digit_revision_is_stripped() {
    assert_eq!(
        names("google", "gemini-2.0-flash-001"),
        v(&["gemini-2.0-flash-001", "gemini-2.0-flash"])
    );
}

#[test]
fn openai_legacy_mmdd_is_stripped() {
    assert_eq!(names("openai", "gpt-4-0613"), v(&["gpt-4-0613", "gpt-4"]));
}

#[test]
fn suffixes_are_stripped_repeatedly() {
    assert_eq!(
        names("google", "models/gemini-2.0-flash-001-latest"),
        v(&[
            "models/gemini-2.0-flash-001-latest",
            "gemini-2.0-flash-001-latest",
            "models/gemini-2.0-flash-001",
            "models/gemini-2.0-flash",
            "gemini-2.0-flash-001",
            "gemini-2.0-flash",
        ])
    );
}

#[test]
fn arbitrary_words_are_never_stripped() {
    // Date goes, `-preview` without a date stays, `-realtime` stays.
    assert_eq!(
        names("openai", "gpt-4o-realtime-preview-2024-12-17"),
        v(&[
            "gpt-4o-realtime-preview-2024-12-17",
            "gpt-4o-realtime-preview"
        ])
    );
    assert_eq!(
        names("openai", "gpt-4-1106-preview"),
        v(&["gpt-4-1106-preview"])
    );
    assert_eq!(
        names("openai", "gpt-4o-search-preview"),
        v(&["gpt-4o-search-preview"])
    );
}

#[test]
fn invalid_dates_are_not_stripped() {
    assert_eq!(names("x", "model-2024-13-01"), v(&["model-2024-13-01"]));
    assert_eq!(names("x", "model-20241332"), v(&["model-20241332"]));
    // Mistral's YYMM versions are not month-day snapshots.
    assert_eq!(
        names("mistral", "mistral-small-2603"),
        v(&["mistral/mistral-small-2603", "mistral-small-2603"])
    );
}

#[test]
fn suffix_alone_is_not_stripped_to_nothing() {
    assert_eq!(names("x", "2024-08-06"), v(&["2024-08-06"]));
    assert_eq!(names("x", "-latest"), v(&["-latest"]));
}

#[test]
fn openrouter_tries_full_id_and_its_snapshots_first() {
    assert_eq!(
        names("openrouter", "openai/gpt-4o-2024-08-06"),
        v(&[
            "openai/gpt-4o-2024-08-06",
            "openai/gpt-4o",
            "gpt-4o-2024-08-06",
            "gpt-4o"
        ])
    );
    // Case-insensitive provider.
    assert_eq!(
        names("OpenRouter", "openai/gpt-4o-2024-08-06"),
        names("openrouter", "openai/gpt-4o-2024-08-06")
    );
}

#[test]
fn other_providers_try_prefix_stripping_before_snapshot_stripping() {
    assert_eq!(
        names("openai", "openai/gpt-4o-2024-08-06"),
        v(&[
            "openai/gpt-4o-2024-08-06",
            "gpt-4o-2024-08-06",
            "openai/gpt-4o",
            "gpt-4o"
        ])
    );
}

#[test]
fn candidates_have_no_duplicates() {
    for (p, m) in [
        ("openrouter", "anthropic/claude-3.5-haiku-20241022"),
        ("openai", "OPENAI/GPT-4O-2024-08-06"),
        ("google", "models/gemini-2.0-flash-001"),
    ] {
        let n = names(p, m);
        let mut dedup = n.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), n.len(), "{n:?}");
    }
}

// --------------------------------------------------------------- lookups

fn bundled() -> Catalog {
    Catalog::bundled().expect("bundled catalog is valid")
}

fn model_at(cat: &Catalog, provider: &str, model: &str, at: &str) -> Option<String> {
    cat.lookup(provider, model, ts(at)).map(|e| e.model.clone())
}

const NOW: &str = "2026-11-25T00:00:00Z";

#[test]
fn lookup_exact() {
    let cat = bundled();
    assert_eq!(
        model_at(&cat, "openai", "gpt-4o-mini", NOW).as_deref(),
        Some("gpt-4o-mini")
    );
    let m = cat.resolve("openai", "gpt-4o-mini", ts(NOW)).unwrap();
    assert_eq!(m.kind, MatchKind::Model);
    assert_eq!(m.matched_name, "gpt-4o-mini");
}

#[test]
fn lookup_snapshot_of_mini_matches_mini() {
    let cat = bundled();
    let e = cat
        .lookup("openai", "gpt-4o-mini-2024-07-18", ts(NOW))
        .unwrap();
    assert_eq!(e.model, "gpt-4o-mini");
    assert_eq!(e.input, d("0.15"));
}

#[test]
fn lookup_dated_snapshots() {
    let cat = bundled();
    assert_eq!(
        model_at(&cat, "openai", "gpt-4o-2024-08-06", NOW).as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(
        model_at(&cat, "anthropic", "claude-sonnet-4-5-20250929", NOW).as_deref(),
        Some("claude-sonnet-4-5")
    );
    assert_eq!(
        model_at(&cat, "anthropic", "claude-3-7-sonnet-latest", NOW).as_deref(),
        Some("claude-3-7-sonnet")
    );
    assert_eq!(
        model_at(&cat, "google", "gemini-2.5-flash-preview-05-20", NOW).as_deref(),
        Some("gemini-2.5-flash")
    );
    assert_eq!(
        model_at(&cat, "google", "gemini-2.0-flash-001", NOW).as_deref(),
        Some("gemini-2.0-flash")
    );
}

#[test]
fn lookup_a_priced_snapshot_beats_its_family() {
    // gpt-4o-2024-05-13 kept its launch price after `gpt-4o` got cheaper.
    let cat = bundled();
    let e = cat.lookup("openai", "gpt-4o-2024-05-13", ts(NOW)).unwrap();
    assert_eq!(e.model, "gpt-4o-2024-05-13");
    assert_eq!(e.input, d("5"));
}

#[test]
fn lookup_gemini_models_prefix() {
    let cat = bundled();
    assert_eq!(
        model_at(&cat, "google", "models/gemini-2.5-pro", NOW).as_deref(),
        Some("gemini-2.5-pro")
    );
}

#[test]
fn lookup_openrouter_prefers_its_own_id() {
    let cat = bundled();
    let e = cat.lookup("openrouter", "openai/gpt-4o", ts(NOW)).unwrap();
    assert_eq!(e.model, "openai/gpt-4o");
    assert_eq!(e.provider.as_deref(), Some("openrouter"));
    let e = cat
        .lookup("openrouter", "anthropic/claude-sonnet-4.5", ts(NOW))
        .unwrap();
    assert_eq!(e.model, "anthropic/claude-sonnet-4.5");
}

#[test]
fn lookup_openrouter_falls_back_to_vendor_id() {
    let cat = bundled();
    assert_eq!(
        model_at(&cat, "openrouter", "openai/gpt-4.1", NOW).as_deref(),
        Some("gpt-4.1")
    );
    assert_eq!(
        model_at(&cat, "openrouter", "anthropic/claude-opus-4.1", NOW).as_deref(),
        Some("claude-opus-4-1")
    );
    assert_eq!(
        model_at(&cat, "openrouter", "anthropic/claude-3.5-haiku", NOW).as_deref(),
        Some("claude-3-5-haiku")
    );
    assert_eq!(
        model_at(&cat, "openrouter", "google/gemini-2.0-flash-001", NOW).as_deref(),
        Some("gemini-2.0-flash")
    );
}

#[test]
fn lookup_alias() {
    let cat = bundled();
    let m = cat
        .resolve("anthropic", "claude-sonnet-4-0", ts(NOW))
        .unwrap();
    assert_eq!(m.entry.model, "claude-sonnet-4");
    assert_eq!(m.kind, MatchKind::Alias);
    assert_eq!(m.matched_name, "claude-sonnet-4-0");
    assert_eq!(
        model_at(&cat, "openai", "gpt-5-chat-latest", NOW).as_deref(),
        Some("gpt-5")
    );
}

#[test]
fn lookup_alias_of_exact_name_beats_prefix_stripped_model() {
    let t = ts("2025-01-01T00:00:00Z");
    let foo = PriceEntry::new("foo", t, d("1"), d("2"));
    let mut bar = PriceEntry::new("bar", t, d("3"), d("4"));
    bar.aliases = vec!["vendor/foo".into()];
    let cat = Catalog::from_entries("t", vec![foo, bar]).unwrap();
    assert_eq!(cat.lookup("x", "vendor/foo", t).unwrap().model, "bar");
    assert_eq!(cat.lookup("x", "other/foo", t).unwrap().model, "foo");
}

#[test]
fn lookup_non_matches() {
    let cat = bundled();
    for model in [
        "gpt-4",                 // no prefix matching: gpt-4 is not gpt-4o
        "gpt-4o-search-preview", // arbitrary suffix is not stripped
        "gpt-4o-realtime-preview-2024-12-17",
        "claude-sonnet-4-6", // not claude-sonnet-4
        "gemini-2.5",        // not a model
        "text-embedding-3",  // not text-embedding-3-small
        "",
    ] {
        assert_eq!(model_at(&cat, "openai", model, NOW), None, "{model}");
    }
}

#[test]
fn lookup_before_first_version_is_none() {
    let cat = bundled();
    assert_eq!(
        model_at(&cat, "openai", "gpt-5", "2025-08-06T23:59:59Z"),
        None
    );
    assert_eq!(
        model_at(&cat, "openai", "gpt-5", "2025-08-07T00:00:00Z").as_deref(),
        Some("gpt-5")
    );
}

#[test]
fn lookup_picks_the_version_in_force() {
    let cat = bundled();
    let price = |at: &str| cat.lookup("openai", "o3", ts(at)).map(|e| e.input);
    assert_eq!(price("2025-04-15T23:59:59Z"), None);
    assert_eq!(price("2025-04-16T00:00:00Z"), Some(d("10")));
    assert_eq!(price("2025-06-09T23:59:59.999Z"), Some(d("10")));
    assert_eq!(price("2025-06-10T00:00:00Z"), Some(d("2")));
    assert_eq!(price(NOW), Some(d("2")));

    let gpt4o = |at: &str| {
        cat.lookup("openai", "gpt-4o-2024-08-06", ts(at))
            .map(|e| e.version())
    };
    assert_eq!(
        gpt4o("2024-06-01T00:00:00Z").as_deref(),
        Some("gpt-4o@2024-05-13T00:00:00Z")
    );
    assert_eq!(
        gpt4o("2024-11-01T00:00:00Z").as_deref(),
        Some("gpt-4o@2024-10-02T00:00:00Z")
    );
}

#[test]
fn lookup_skips_a_candidate_not_yet_in_force() {
    let old = PriceEntry::new("foo", ts("2025-01-01T00:00:00Z"), d("1"), d("2"));
    let newer = PriceEntry::new("vendor/foo", ts("2025-06-01T00:00:00Z"), d("3"), d("4"));
    let cat = Catalog::from_entries("t", vec![old, newer]).unwrap();
    assert_eq!(
        model_at(&cat, "openrouter", "vendor/foo", "2025-03-01T00:00:00Z").as_deref(),
        Some("foo")
    );
    assert_eq!(
        model_at(&cat, "openrouter", "vendor/foo", "2025-07-01T00:00:00Z").as_deref(),
        Some("vendor/foo")
    );
    assert_eq!(
        model_at(&cat, "openrouter", "vendor/foo", "2024-07-01T00:00:00Z"),
        None
    );
}

#[test]
fn lookup_ignores_entry_provider() {
    // The provider field is informational: Azure-served gpt-4o uses the catalog price.
    let cat = bundled();
    assert_eq!(
        model_at(&cat, "azure", "gpt-4o", NOW).as_deref(),
        Some("gpt-4o")
    );
}

// ------------------------------------------------------------ AWS Bedrock ids

#[test]
fn bedrock_ids_lose_geo_vendor_and_version_in_turn() {
    assert_eq!(
        names("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        v(&[
            // Bedrock's own price list first (LiteLLM's `bedrock/…` keys).
            "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "bedrock/us.anthropic.claude-sonnet-4-5-20250929",
            "bedrock/us.anthropic.claude-sonnet-4-5",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "claude-sonnet-4-5-20250929-v1:0",
            "us.anthropic.claude-sonnet-4-5-20250929",
            "us.anthropic.claude-sonnet-4-5",
            "anthropic.claude-sonnet-4-5-20250929",
            "anthropic.claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5",
        ])
    );
}

#[test]
fn bedrock_arns_keep_the_profile_after_the_last_slash() {
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-5-haiku-20241022-v1:0";
    let list = names("bedrock", arn);
    assert_eq!(list[0], format!("bedrock/{arn}"));
    let whole = list.iter().position(|n| n == arn).unwrap();
    assert_eq!(
        list[whole + 1],
        "eu.anthropic.claude-3-5-haiku-20241022-v1:0"
    );
    assert!(list.contains(&"claude-3-5-haiku".to_string()), "{list:?}");
}

#[test]
fn bedrock_versions_are_recognised_only_in_their_shapes() {
    assert_eq!(
        names("bedrock", "anthropic.claude-3-haiku-20240307-v1:0:200k")
            .last()
            .map(String::as_str),
        Some("claude-3-haiku")
    );
    assert_eq!(
        names("bedrock", "amazon.nova-pro-v1:0"),
        v(&[
            "bedrock/amazon.nova-pro-v1:0",
            "bedrock/amazon.nova-pro",
            "amazon.nova-pro-v1:0",
            "nova-pro-v1:0",
            "amazon.nova-pro",
            "nova-pro"
        ])
    );
    // Not a version: nothing stripped.
    assert_eq!(names("openai", "model-vx:1"), v(&["model-vx:1"]));
    assert_eq!(names("openai", "model-v1:a"), v(&["model-v1:a"]));
    // A dotted name whose first part is no known prefix stays whole.
    assert_eq!(names("openai", "gpt-4.1"), v(&["gpt-4.1"]));
}

#[test]
fn gateway_providers_try_their_own_prices_first() {
    assert_eq!(
        names("azure", "gpt-4o-mini-2024-07-18"),
        v(&[
            "azure/gpt-4o-mini-2024-07-18",
            "azure/gpt-4o-mini",
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-mini",
        ])
    );
    // Already prefixed: not twice.
    assert_eq!(
        names("DeepSeek", "deepseek/deepseek-chat"),
        v(&["deepseek/deepseek-chat", "deepseek-chat"])
    );
    // Vertex AI's Claude: Google's price list first, then Anthropic's.
    assert_eq!(
        names("vertex_ai", "claude-sonnet-4-5@20250929"),
        v(&[
            "vertex_ai/claude-sonnet-4-5@20250929",
            "vertex_ai/claude-sonnet-4-5",
            "claude-sonnet-4-5@20250929",
            "claude-sonnet-4-5",
        ])
    );
    // Vendors selling their own models keep the bare ids.
    assert_eq!(names("openai", "gpt-4o"), v(&["gpt-4o"]));
    assert_eq!(
        names("anthropic", "claude-sonnet-4-5")[0],
        "claude-sonnet-4-5"
    );
}

#[test]
fn an_imported_azure_price_wins_over_openai_s_for_azure_traffic() {
    let at = ts("2026-01-01T00:00:00Z");
    let cat = Catalog::from_entries(
        "test",
        vec![
            PriceEntry::new("gpt-4o-mini", at, d("0.15"), d("0.60")),
            PriceEntry::new("azure/gpt-4o-mini-2024-07-18", at, d("0.165"), d("0.66")),
        ],
    )
    .unwrap();
    let later = ts("2026-06-01T00:00:00Z");
    let azure = cat
        .lookup("azure", "gpt-4o-mini-2024-07-18", later)
        .unwrap();
    assert_eq!(azure.model, "azure/gpt-4o-mini-2024-07-18");
    let openai = cat
        .lookup("openai", "gpt-4o-mini-2024-07-18", later)
        .unwrap();
    assert_eq!(openai.model, "gpt-4o-mini");
}

#[test]
fn lookup_bedrock_profile_finds_the_vendor_price() {
    let cat = bundled();
    assert_eq!(
        model_at(
            &cat,
            "bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            NOW
        )
        .as_deref(),
        Some("claude-sonnet-4-5")
    );
}
