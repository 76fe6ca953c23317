//! Model-name normalization: which catalog names a requested model id is
//! looked up under, in which order.
//!
//! [`candidate_names`] is a pure function; [`crate::pricing::Catalog::lookup`]
//! walks its result and, for each name, tries catalog model ids first and
//! aliases second. The rules, in order:
//!
//! 0. **The provider's own price** for providers that host others' models
//!    at their own prices (`azure`, `bedrock`, `deepseek`, `groq`,
//!    `mistral`, `xai`, `vertex_ai`): `provider/model` and its snapshot-stripped forms
//!    (`azure/gpt-4o-mini-2024-07-18`, `azure/gpt-4o-mini`), as LiteLLM
//!    keys them, before any name below.
//! 1. **Exact** id as given (trimmed), then its ASCII-lowercase form if that differs.
//! 2. **Provider prefix stripped**, one `/`-segment at a time:
//!    `openai/gpt-4o` → `gpt-4o`, `models/gemini-2.5-pro` → `gemini-2.5-pro`,
//!    `openrouter/openai/gpt-4o` → `openai/gpt-4o` → `gpt-4o`. A stripped name
//!    starting with `claude-` that contains dots also yields its dots→dashes
//!    form (`anthropic/claude-sonnet-4.5` → `claude-sonnet-4.5` →
//!    `claude-sonnet-4-5`), matching Anthropic's ids.
//!    AWS Bedrock ids also lose, in turn, a geographic inference-profile
//!    prefix and the vendor prefix: `us.anthropic.claude-sonnet-4-5-20250929-v1:0`
//!    → `anthropic.claude-sonnet-4-5-20250929-v1:0` → `claude-sonnet-4-5-20250929-v1:0`
//!    (an ARN has already lost everything up to its last `/`).
//! 3. **Snapshot suffix stripped**, repeatedly, from every name above: a
//!    Bedrock model version (`-v1:0`, `-v2`, with a context suffix such as
//!    `:200k`), a
//!    trailing `-YYYY-MM-DD` (`gpt-4o-2024-08-06`), `-YYYYMMDD`
//!    (`claude-sonnet-4-5-20250929`), `@<version>` (Vertex AI,
//!    `claude-sonnet-4-5@20250929`), `-preview-MM-DD` / `-exp-MM-DD`
//!    (`gemini-2.5-flash-preview-05-20`), `-latest`, a three-digit
//!    revision (`-001`), or an OpenAI-style `-MMDD` (`gpt-4-0613`).
//!    Only these shapes are removed, never an arbitrary word, so
//!    `gpt-4o-mini-2024-07-18` becomes `gpt-4o-mini` and never `gpt-4o`, and
//!    `gpt-4o-realtime-preview-2024-12-17` stops at `gpt-4o-realtime-preview`.
//!
//! Ordering: for every provider except OpenRouter all exact and
//! prefix-stripped names come before any suffix-stripped one. For provider
//! `openrouter` the full OpenRouter id and its suffix-stripped forms come
//! first (`openai/gpt-4o-2024-08-06`, `openai/gpt-4o`), because OpenRouter
//! bills its own prices; only then the vendor's bare ids.
//!
//! The result never contains duplicates or empty names.

/// The ordered, de-duplicated list of names to look `model` up under.
///
/// `provider` only changes the order (see the module docs); it is compared
/// case-insensitively. An empty/blank `model` yields an empty list.
pub fn candidate_names(provider: &str, model: &str) -> Vec<String> {
    let model = model.trim();
    if model.is_empty() {
        return Vec::new();
    }
    let is_openrouter = provider.trim().eq_ignore_ascii_case("openrouter");

    // Rule 1: exact (and lowercase).
    let mut exact = vec![model.to_owned()];
    let lower = model.to_ascii_lowercase();
    if lower != model {
        exact.push(lower);
    }
    // A bare Claude id written with dots (OpenRouter style without a prefix).
    let mut exact_with_dashes = Vec::new();
    for name in &exact {
        exact_with_dashes.push(name.clone());
        if let Some(dashed) = claude_dots_to_dashes(name) {
            exact_with_dashes.push(dashed);
        }
    }

    // Rule 2: provider prefixes stripped.
    let mut stripped = Vec::new();
    for name in &exact {
        let mut rest = name.as_str();
        while let Some((_, tail)) = rest.split_once('/') {
            if tail.is_empty() {
                break;
            }
            stripped.push(tail.to_owned());
            if let Some(dashed) = claude_dots_to_dashes(tail) {
                stripped.push(dashed);
            }
            rest = tail;
        }
    }
    // Bedrock's geographic and vendor prefixes, on the full and the
    // slash-stripped names alike.
    let mut bedrock = Vec::new();
    for name in exact.iter().chain(&stripped) {
        let last = name.rsplit('/').next().unwrap_or(name);
        let mut rest = last;
        for prefixes in [BEDROCK_GEO_PREFIXES, BEDROCK_VENDOR_PREFIXES] {
            if let Some((head, tail)) = rest.split_once('.') {
                if prefixes.contains(&head) && !tail.is_empty() {
                    bedrock.push(tail.to_owned());
                    rest = tail;
                }
            }
        }
    }
    stripped.extend(bedrock);

    let mut out: Vec<String> = Vec::new();
    // Rule 0: the gateway's own price list first (LiteLLM keys these
    // providers' models `azure/…`, `bedrock/…`, …).
    if let Some(prefix) = own_price_prefix(provider) {
        if !model.to_ascii_lowercase().starts_with(&prefix) {
            let own = format!("{prefix}{model}");
            let chain = suffix_chain(&own);
            push_unique(&mut out, own);
            for s in chain {
                push_unique(&mut out, s);
            }
        }
    }
    if is_openrouter {
        for name in &exact_with_dashes {
            push_unique(&mut out, name.clone());
            for s in suffix_chain(name) {
                push_unique(&mut out, s);
            }
        }
        for name in &stripped {
            push_unique(&mut out, name.clone());
        }
        for name in &stripped {
            for s in suffix_chain(name) {
                push_unique(&mut out, s);
            }
        }
    } else {
        for name in exact_with_dashes.iter().chain(&stripped) {
            push_unique(&mut out, name.clone());
        }
        for name in exact_with_dashes.iter().chain(&stripped) {
            for s in suffix_chain(name) {
                push_unique(&mut out, s);
            }
        }
    }
    out
}

/// Providers that bill their own prices for models they host, and the
/// prefix price lists (LiteLLM's) give those prices.
fn own_price_prefix(provider: &str) -> Option<String> {
    let p = provider.trim().to_ascii_lowercase();
    const OWN: &[&str] = &[
        "azure",
        "bedrock",
        "deepseek",
        "groq",
        "mistral",
        "xai",
        "vertex_ai",
    ];
    OWN.contains(&p.as_str()).then(|| format!("{p}/"))
}

/// Cross-region inference profiles put one of these before the model id.
const BEDROCK_GEO_PREFIXES: &[&str] = &["us", "eu", "apac", "us-gov", "global", "jp", "au", "ca"];

/// Bedrock model ids start with the vendor.
const BEDROCK_VENDOR_PREFIXES: &[&str] = &[
    "anthropic",
    "amazon",
    "meta",
    "mistral",
    "cohere",
    "ai21",
    "deepseek",
    "openai",
    "qwen",
    "writer",
    "twelvelabs",
    "stability",
];

fn push_unique(out: &mut Vec<String>, name: String) {
    if !name.is_empty() && !out.contains(&name) {
        out.push(name);
    }
}

/// `claude-sonnet-4.5` → `claude-sonnet-4-5`; `None` when not a dotted Claude id.
fn claude_dots_to_dashes(name: &str) -> Option<String> {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.starts_with("claude-") && last.contains('.') {
        Some(name.replace('.', "-"))
    } else {
        None
    }
}

/// Successive results of [`strip_snapshot_suffix`] until nothing more can be stripped.
fn suffix_chain(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = name.to_owned();
    while let Some(next) = strip_snapshot_suffix(&current) {
        out.push(next.clone());
        current = next;
    }
    out
}

/// Removes one recognized snapshot/version suffix, or returns `None`.
fn strip_snapshot_suffix(name: &str) -> Option<String> {
    if let Some(stem) = strip_bedrock_version(name) {
        return keep_stem(stem);
    }
    // Vertex AI style `model@version`.
    if let Some((stem, version)) = name.rsplit_once('@') {
        if !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return keep_stem(stem);
        }
    }
    if let Some(stem) = name.strip_suffix("-latest") {
        return keep_stem(stem);
    }
    let b = name.as_bytes();
    // -YYYY-MM-DD
    if let Some(stem) = strip_pattern(name, "-dddd-dd-dd") {
        let n = b.len();
        if valid_month_day(&name[n - 5..n - 3], &name[n - 2..]) {
            return keep_stem(stem);
        }
    }
    // -preview-MM-DD / -exp-MM-DD
    for tag in ["-preview", "-exp"] {
        if let Some(stem) = strip_pattern(name, "-dd-dd") {
            if let Some(stem) = stem.strip_suffix(tag) {
                let n = b.len();
                if valid_month_day(&name[n - 5..n - 3], &name[n - 2..]) {
                    return keep_stem(stem);
                }
            }
        }
    }
    // -YYYYMMDD
    if let Some(stem) = strip_pattern(name, "-dddddddd") {
        let n = b.len();
        if valid_month_day(&name[n - 4..n - 2], &name[n - 2..]) {
            return keep_stem(stem);
        }
    }
    // -MMDD (OpenAI legacy snapshots, gpt-4-0613)
    if let Some(stem) = strip_pattern(name, "-dddd") {
        let n = b.len();
        if valid_month_day(&name[n - 4..n - 2], &name[n - 2..]) {
            return keep_stem(stem);
        }
    }
    // -001 (Google revision numbers)
    if let Some(stem) = strip_pattern(name, "-ddd") {
        return keep_stem(stem);
    }
    None
}

/// `-v1:0`, `-v2`, `-v1:0:200k` (a Bedrock model version, optionally with
/// its context-window variant) → the part before `-v`.
fn strip_bedrock_version(name: &str) -> Option<&str> {
    let (stem, version) = name.rsplit_once("-v")?;
    let mut parts = version.split(':');
    let major = parts.next()?;
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => Some(stem),
        (Some(minor), context, None)
            if !minor.is_empty()
                && minor.bytes().all(|b| b.is_ascii_digit())
                && context.is_none_or(|c| {
                    c.len() > 1
                        && c.ends_with('k')
                        && c[..c.len() - 1].bytes().all(|b| b.is_ascii_digit())
                }) =>
        {
            Some(stem)
        }
        _ => None,
    }
}

/// A stem is usable if it is non-empty and does not end in a separator.
fn keep_stem(stem: &str) -> Option<String> {
    if stem.is_empty() || stem.ends_with(['/', '-', '@', '.']) {
        None
    } else {
        Some(stem.to_owned())
    }
}

/// If `name` ends with `pattern` (where `d` is any ASCII digit and every other
/// byte must match literally), returns the part before the match. Patterns
/// start with `-`, so a match is always anchored at a separator.
fn strip_pattern<'a>(name: &'a str, pattern: &str) -> Option<&'a str> {
    let nb = name.as_bytes();
    let pb = pattern.as_bytes();
    if nb.len() <= pb.len() {
        return None;
    }
    let start = nb.len() - pb.len();
    let tail = &nb[start..];
    let matches = tail.iter().zip(pb).all(|(&c, &p)| {
        if p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        }
    });
    if !matches {
        return None;
    }
    Some(&name[..start])
}

fn valid_month_day(month: &str, day: &str) -> bool {
    match (month.parse::<u8>(), day.parse::<u8>()) {
        (Ok(m), Ok(d)) => (1..=12).contains(&m) && (1..=31).contains(&d),
        _ => false,
    }
}
