//! Plugin configuration: JSON from the Envoy plugin `configuration`,
//! validated once at load so a bad config fails loudly instead of billing
//! wrongly.

use serde::Deserialize;

/// Validated plugin configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Envoy cluster that reaches the collector.
    pub collector_cluster: String,
    /// `:authority` sent to the collector.
    pub collector_authority: String,
    #[serde(default = "default_ingest_path")]
    pub ingest_path: String,
    /// Bearer token for the collector's ingest endpoint.
    pub ingest_token: String,
    /// Request header carrying the tenant id (set by the client or an auth filter).
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// Tenant recorded when the header is absent.
    #[serde(default = "default_tenant")]
    pub default_tenant: String,
    #[serde(default = "default_request_id_header")]
    pub request_id_header: String,
    /// Headers whose value identifies the client credential; the first one
    /// present is hashed into `api_key_id`.
    #[serde(default = "default_api_key_headers")]
    pub api_key_headers: Vec<String>,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    #[serde(default = "default_max_buffered_records")]
    pub max_buffered_records: usize,
    /// Timeout of one ingest callout.
    #[serde(default = "default_callout_timeout_ms")]
    pub callout_timeout_ms: u64,
    /// Upper bound of the retry backoff after failed flushes.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Non-streamed JSON bodies up to this size are parsed whole; larger ones
    /// are scanned in bounded head/tail windows.
    #[serde(default = "default_max_json_body_bytes")]
    pub max_json_body_bytes: usize,
    /// Largest SSE event kept whole; larger events keep head and tail windows.
    #[serde(default = "default_max_sse_event_bytes")]
    pub max_sse_event_bytes: usize,
    /// Add `stream_options.include_usage` to OpenAI chat streams that lack it,
    /// so the provider reports usage (the client then sees one extra chunk).
    #[serde(default = "default_true")]
    pub inject_stream_usage: bool,
    /// Ask upstream for an uncompressed response so usage can be read.
    #[serde(default = "default_true")]
    pub force_identity_encoding: bool,
    /// Largest request body buffered to read the model / inject stream usage.
    /// Must not exceed the listener's `per_connection_buffer_limit_bytes`
    /// (Envoy's default: 1 MiB), or Envoy answers 413 to larger requests;
    /// bodies above it pass through unread.
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: usize,
    /// Answer 429 to tenants and keys on the collector's deny list (over a
    /// hard budget, or out of prepaid balance) without reaching upstream.
    #[serde(default)]
    pub enforce_budgets: bool,
    /// Collector path of the deny list (same cluster and ingest token).
    #[serde(default = "default_deny_path", alias = "deny_list_path")]
    pub deny_path: String,
    /// How often the deny list is fetched (by one worker, shared with all).
    #[serde(default = "default_deny_refresh_ms")]
    pub deny_refresh_ms: u64,
    /// A deny list not refreshed for this long is stale.
    #[serde(default = "default_deny_ttl_ms")]
    pub deny_ttl_ms: u64,
    /// With a stale list: let requests not on the last known list through
    /// (true) or refuse them with 503 (false). Known blocks hold either way.
    #[serde(default = "default_true")]
    pub deny_fail_open: bool,
    /// Collector path of reservations, taken by requests of scopes the deny
    /// list watches (near their limit).
    #[serde(default = "default_reserve_path")]
    pub reserve_path: String,
    /// How long a watched request waits for its reservation before
    /// `deny_fail_open` decides.
    #[serde(default = "default_reserve_timeout_ms")]
    pub reserve_timeout_ms: u64,
    /// How long a reservation holds if its usage record never lands.
    #[serde(default = "default_reservation_ttl_ms")]
    pub reservation_ttl_ms: u64,
}

fn default_ingest_path() -> String {
    "/v1/usage".to_string()
}
fn default_tenant_header() -> String {
    "x-tenant-id".to_string()
}
fn default_tenant() -> String {
    "unknown".to_string()
}
fn default_request_id_header() -> String {
    "x-request-id".to_string()
}
fn default_api_key_headers() -> Vec<String> {
    vec![
        "authorization".to_string(),
        "x-api-key".to_string(),
        "api-key".to_string(),
        "x-goog-api-key".to_string(),
    ]
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_max_batch_records() -> usize {
    500
}
fn default_max_buffered_records() -> usize {
    10_000
}
fn default_callout_timeout_ms() -> u64 {
    5000
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_max_json_body_bytes() -> usize {
    1 << 20
}
fn default_max_sse_event_bytes() -> usize {
    8 << 10
}
fn default_max_request_body_bytes() -> usize {
    // 960 KiB: Envoy's default per-connection buffer limit (1 MiB) with
    // headroom, as Envoy already refuses bodies a few bytes under it.
    (1 << 20) - (64 << 10)
}
fn default_deny_path() -> String {
    "/v1/deny".to_string()
}
fn default_deny_refresh_ms() -> u64 {
    1000
}
fn default_deny_ttl_ms() -> u64 {
    30_000
}
fn default_reserve_path() -> String {
    "/v1/reservations".to_string()
}
fn default_reserve_timeout_ms() -> u64 {
    2000
}
fn default_reservation_ttl_ms() -> u64 {
    600_000
}
fn default_true() -> bool {
    true
}

/// Why a configuration was refused.
#[derive(Debug, PartialEq)]
pub enum ConfigError {
    Missing,
    Json(String),
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Missing => write!(f, "plugin configuration is missing"),
            ConfigError::Json(e) => write!(f, "plugin configuration is not valid: {e}"),
            ConfigError::Invalid(e) => write!(f, "plugin configuration rejected: {e}"),
        }
    }
}

impl FilterConfig {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: Option<&[u8]>) -> Result<Self, ConfigError> {
        let bytes = bytes.ok_or(ConfigError::Missing)?;
        let config: FilterConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.collector_cluster.trim().is_empty() {
            return invalid("collector_cluster must not be empty");
        }
        if self.collector_authority.trim().is_empty() {
            return invalid("collector_authority must not be empty");
        }
        if !self.ingest_path.starts_with('/') {
            return invalid("ingest_path must start with '/'");
        }
        if self.ingest_token.is_empty() {
            return invalid("ingest_token must not be empty");
        }
        for (name, header) in [
            ("tenant_header", &self.tenant_header),
            ("request_id_header", &self.request_id_header),
        ] {
            if !is_header_name(header) {
                return Err(ConfigError::Invalid(format!(
                    "{name} {header:?} is not a lowercase header name"
                )));
            }
        }
        if let Some(bad) = self.api_key_headers.iter().find(|h| !is_header_name(h)) {
            return Err(ConfigError::Invalid(format!(
                "api_key_headers entry {bad:?} is not a lowercase header name"
            )));
        }
        if !(10..=600_000).contains(&self.flush_interval_ms) {
            return invalid("flush_interval_ms must be between 10 and 600000");
        }
        if self.max_batch_records == 0 || self.max_batch_records > 10_000 {
            return invalid("max_batch_records must be between 1 and 10000");
        }
        if self.max_buffered_records < self.max_batch_records {
            return invalid("max_buffered_records must be at least max_batch_records");
        }
        if self.max_buffered_records > 1_000_000 {
            return invalid("max_buffered_records must be at most 1000000");
        }
        if self.callout_timeout_ms == 0 || self.callout_timeout_ms > 120_000 {
            return invalid("callout_timeout_ms must be between 1 and 120000");
        }
        if self.max_backoff_ms < self.flush_interval_ms {
            return invalid("max_backoff_ms must be at least flush_interval_ms");
        }
        if !(1024..=64 << 20).contains(&self.max_json_body_bytes) {
            return invalid("max_json_body_bytes must be between 1024 and 67108864");
        }
        if !(1024..=1 << 20).contains(&self.max_sse_event_bytes) {
            return invalid("max_sse_event_bytes must be between 1024 and 1048576");
        }
        if self.max_request_body_bytes > 64 << 20 {
            return invalid("max_request_body_bytes must be at most 67108864");
        }
        if !self.deny_path.starts_with('/') {
            return invalid("deny_path must start with '/'");
        }
        if !(50..=600_000).contains(&self.deny_refresh_ms) {
            return invalid("deny_refresh_ms must be between 50 and 600000");
        }
        if self.deny_ttl_ms < self.deny_refresh_ms || self.deny_ttl_ms > 86_400_000 {
            return invalid("deny_ttl_ms must be at least deny_refresh_ms and at most 86400000");
        }
        if !self.reserve_path.starts_with('/') {
            return invalid("reserve_path must start with '/'");
        }
        if !(10..=60_000).contains(&self.reserve_timeout_ms) {
            return invalid("reserve_timeout_ms must be between 10 and 60000");
        }
        if !(1000..=3_600_000).contains(&self.reservation_ttl_ms) {
            return invalid("reservation_ttl_ms must be between 1000 and 3600000");
        }
        Ok(())
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        r#"{"collector_cluster":"billing","collector_authority":"collector","ingest_token":"t"}"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = FilterConfig::parse(Some(MINIMAL.as_bytes())).unwrap();
        assert_eq!(c.ingest_path, "/v1/usage");
        assert_eq!(c.tenant_header, "x-tenant-id");
        assert_eq!(c.flush_interval_ms, 1000);
        assert_eq!(c.max_batch_records, 500);
        assert_eq!(c.max_buffered_records, 10_000);
        assert!(c.inject_stream_usage);
        assert!(c.force_identity_encoding);
        assert!(!c.enforce_budgets, "enforcement is opt-in");
        assert_eq!(c.deny_path, "/v1/deny");
        assert_eq!(c.deny_refresh_ms, 1000);
        assert_eq!(c.deny_ttl_ms, 30_000);
        assert!(c.deny_fail_open);
    }

    #[test]
    fn enforcement_keys_are_read_and_validated() {
        let cfg = MINIMAL.replace(
            '}',
            r#","enforce_budgets":true,"deny_list_path":"/deny","deny_refresh_ms":200,"deny_ttl_ms":5000,"deny_fail_open":false}"#,
        );
        let c = FilterConfig::parse(Some(cfg.as_bytes())).unwrap();
        assert!(c.enforce_budgets);
        assert_eq!(c.deny_path, "/deny");
        assert_eq!(c.deny_refresh_ms, 200);
        assert_eq!(c.deny_ttl_ms, 5000);
        assert!(!c.deny_fail_open);
        for (patch, needle) in [
            (r#","deny_path":"v1/deny""#, "deny_path"),
            (r#","reserve_path":"x""#, "reserve_path"),
            (r#","reserve_timeout_ms":0"#, "reserve_timeout_ms"),
            (r#","reservation_ttl_ms":10"#, "reservation_ttl_ms"),
            (r#","deny_refresh_ms":10"#, "deny_refresh_ms"),
            (
                r#","deny_refresh_ms":2000,"deny_ttl_ms":1000"#,
                "deny_ttl_ms",
            ),
            (r#","enforce_budgets":"yes""#, "expected a boolean"),
        ] {
            let cfg = MINIMAL.replace('}', &format!("{patch}}}"));
            let err = FilterConfig::parse(Some(cfg.as_bytes())).unwrap_err();
            assert!(err.to_string().contains(needle), "{patch}: {err}");
        }
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let bad = MINIMAL.replace('}', r#","flush_interval":5}"#);
        let err = FilterConfig::parse(Some(bad.as_bytes())).unwrap_err();
        assert!(err.to_string().contains("flush_interval"), "{err}");
    }

    #[test]
    fn missing_and_malformed_are_rejected() {
        assert_eq!(FilterConfig::parse(None), Err(ConfigError::Missing));
        assert!(matches!(
            FilterConfig::parse(Some(b"{not json")),
            Err(ConfigError::Json(_))
        ));
        let no_token = r#"{"collector_cluster":"b","collector_authority":"c"}"#;
        let err = FilterConfig::parse(Some(no_token.as_bytes())).unwrap_err();
        assert!(err.to_string().contains("ingest_token"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (patch, needle) in [
            (r#","flush_interval_ms":0"#, "flush_interval_ms"),
            (r#","max_batch_records":0"#, "max_batch_records"),
            (
                r#","max_batch_records":100,"max_buffered_records":10"#,
                "max_buffered_records",
            ),
            (r#","tenant_header":"X-Tenant""#, "tenant_header"),
            (r#","ingest_path":"usage""#, "ingest_path"),
            (r#","max_json_body_bytes":10"#, "max_json_body_bytes"),
        ] {
            let cfg = MINIMAL.replace('}', &format!("{patch}}}"));
            let err = FilterConfig::parse(Some(cfg.as_bytes())).unwrap_err();
            assert!(err.to_string().contains(needle), "{patch}: {err}");
        }
    }

    #[test]
    fn wrong_type_is_rejected() {
        let cfg = MINIMAL.replace('}', r#","max_batch_records":"many"}"#);
        assert!(matches!(
            FilterConfig::parse(Some(cfg.as_bytes())),
            Err(ConfigError::Json(_))
        ));
    }
}
