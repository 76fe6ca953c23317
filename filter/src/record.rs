//! The usage record the filter sends to the collector (`POST /v1/usage`).
//!
//! Token convention (the same for every provider, see DEVELOPERS.md):
//! `input_tokens` counts every billed prompt token, cache reads and writes
//! included; `cache_read_tokens` and `cache_write_tokens` are subsets of it
//! (`cache_write_1h_tokens` is the subset of cache writes made with a 1 hour
//! TTL). `output_tokens` counts every generated token, reasoning included;
//! `reasoning_tokens` is a subset of it.

use serde::{Deserialize, Serialize};

/// Normalized token counts extracted from one provider response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
}

/// Which API family produced the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Openai,
    Anthropic,
    Gemini,
    Openrouter,
    /// AWS Bedrock Runtime (Converse and InvokeModel, whatever the model).
    Bedrock,
    /// Azure OpenAI (deployment paths, `*.openai.azure.com`).
    Azure,
    /// OpenAI-compatible vendors, recognised by their API hosts.
    Deepseek,
    Groq,
    Mistral,
    Xai,
    /// Cohere (v2 chat, or its OpenAI-compatible endpoint).
    Cohere,
    /// Google Vertex AI serving a partner's model (Anthropic's Claude
    /// behind `:rawPredict`): Google bills it, at its own prices.
    VertexAi,
    #[default]
    Unknown,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Openrouter => "openrouter",
            Provider::Bedrock => "bedrock",
            Provider::Azure => "azure",
            Provider::Deepseek => "deepseek",
            Provider::Groq => "groq",
            Provider::Mistral => "mistral",
            Provider::Xai => "xai",
            Provider::Cohere => "cohere",
            Provider::VertexAi => "vertex_ai",
            Provider::Unknown => "unknown",
        }
    }
}

/// Why a record may not carry the full usage of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The stream ended (client disconnect, upstream reset, truncation)
    /// before the provider's final usage arrived; counts are what was seen.
    Incomplete,
    /// The upstream answered with a non-2xx status.
    UpstreamError,
    /// The body was not valid JSON / SSE for the detected provider.
    ParseError,
    /// A non-streamed JSON body exceeded `max_json_body_bytes`.
    BodyTooLarge,
    /// The response arrived compressed and could not be read.
    Compressed,
    /// The response parsed but carried no usage block.
    NoUsage,
    /// Neither path nor body identified a supported provider.
    UnknownShape,
}

/// One request's usage, as shipped to the collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UsageRecord {
    /// Stable id (Envoy's `x-request-id`); the ledger deduplicates on it.
    pub request_id: String,
    pub tenant_id: String,
    /// Hex SHA-256 of the client credential, never the credential itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    pub provider: Provider,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub http_status: u16,
    pub streamed: bool,
    /// Unix epoch milliseconds at which the request headers arrived.
    pub started_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(flatten)]
    pub usage: Usage,
    /// Cost reported by the provider (OpenRouter `usage.cost`), as a decimal
    /// string so it is never rounded through a float.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_cost: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub flags: Vec<Flag>,
}

impl UsageRecord {
    pub fn flag(&mut self, flag: Flag) {
        if !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
    }
}
