//! Request-side helpers (pure): credential fingerprint and request body
//! inspection / `stream_options.include_usage` injection.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::capture::cap_model;
use crate::providers::{detect_shape, strip_query, ApiShape};

/// Hex SHA-256 of the client credential: `Authorization` (a leading
/// `Bearer ` stripped, case-insensitively; for AWS SigV4 only the access key
/// id of its `Credential=`, since the signature changes with every
/// request), else `x-api-key`, else `api-key` (Azure OpenAI), else
/// `x-goog-api-key`. Empty values are skipped; `None` when there is none.
pub fn api_key_id(
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    azure_api_key: Option<&str>,
    x_goog_api_key: Option<&str>,
) -> Option<String> {
    let from_auth = authorization.map(|a| {
        let a = a.trim_start();
        if let Some(key) = sigv4_access_key_id(a) {
            return key;
        }
        match a.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => a.get(7..).unwrap_or("").trim(),
            _ if a.trim_end().eq_ignore_ascii_case("bearer") => "",
            _ => a.trim_end(),
        }
    });
    [
        from_auth,
        x_api_key.map(str::trim),
        azure_api_key.map(str::trim),
        x_goog_api_key.map(str::trim),
    ]
    .into_iter()
    .flatten()
    .find(|c| !c.is_empty())
    .map(|c| hex::encode(Sha256::digest(c.as_bytes())))
}

/// `AWS4-HMAC-SHA256 Credential=AKIA…/20261203/us-east-1/bedrock/aws4_request, …`
/// → `AKIA…`; `None` for any other scheme.
fn sigv4_access_key_id(authorization: &str) -> Option<&str> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
    let start = rest.find("Credential=")? + "Credential=".len();
    let credential = rest.get(start..)?;
    let end = credential.find(['/', ',', ' ']).unwrap_or(credential.len());
    credential.get(..end)
}

/// The request headers the filter uses, picked from the whole header map
/// so the glue makes one host call instead of one per header.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders<'a> {
    pub path: &'a str,
    pub authority: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    /// Hex SHA-256 of the first credential present (see [`api_key_id`]).
    pub api_key_id: Option<String>,
    pub content_length: Option<usize>,
    /// The client accepts a coding other than `identity` (no header at all
    /// means any coding, RFC 9110 12.5.3), so upstream may compress unless
    /// told not to.
    pub accepts_compression: bool,
}

/// Which headers to read: names as configured (validated lowercase; Envoy
/// hands header names over lowercased).
#[derive(Debug, Clone, Copy)]
pub struct HeaderNames<'a> {
    pub tenant: &'a str,
    pub request_id: &'a str,
    /// Credential headers the operator allows to identify a key.
    pub api_keys: &'a [String],
}

/// The first non-empty value of header `name` (lowercase) in a header map:
/// owned strings (proxy-wasm) or views into Envoy's map (dynamic module).
pub fn header_value<'a, K: AsRef<str>, V: AsRef<str>>(
    headers: &'a [(K, V)],
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, v)| k.as_ref() == name && !v.as_ref().is_empty())
        .map(|(_, v)| v.as_ref())
}

/// Pick the filter's headers out of `headers`; the first non-empty value
/// of a repeated header wins.
pub fn pick_request_headers<'a, K: AsRef<str>, V: AsRef<str>>(
    headers: &'a [(K, V)],
    names: HeaderNames<'_>,
) -> RequestHeaders<'a> {
    let find = |name: &str| header_value(headers, name);
    let credential = |name: &str| {
        if names.api_keys.iter().any(|h| h == name) {
            find(name)
        } else {
            None
        }
    };
    RequestHeaders {
        path: find(":path").unwrap_or_default(),
        authority: find(":authority"),
        request_id: find(names.request_id),
        tenant_id: find(names.tenant),
        api_key_id: api_key_id(
            credential("authorization"),
            credential("x-api-key"),
            credential("api-key"),
            credential("x-goog-api-key"),
        ),
        content_length: find("content-length").and_then(|v| v.trim().parse().ok()),
        accepts_compression: {
            let mut codings = headers
                .iter()
                .filter(|(k, _)| k.as_ref() == "accept-encoding")
                .flat_map(|(_, v)| v.as_ref().split(','))
                .map(|c| c.split(';').next().unwrap_or_default().trim())
                .peekable();
            codings.peek().is_none()
                || codings.any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        },
    }
}

/// What the filter learned from a request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestBodyInfo {
    /// The body's `model` (capped at 256 bytes).
    pub model: Option<String>,
    /// The request asks for a streamed response (`"stream": true`, or a
    /// Gemini `:streamGenerateContent` path).
    pub stream: bool,
    /// The body to send upstream instead, when it was rewritten.
    pub rewritten: Option<Vec<u8>>,
}

/// Whether a request to `path` may have `stream_options.include_usage`
/// injected (OpenAI-shaped chat / legacy completions, not embeddings): only
/// then can the body change size.
pub fn stream_usage_injectable(path: &str) -> bool {
    let p = strip_query(path).trim_end_matches('/');
    detect_shape(path) == ApiShape::OpenaiChat && !p.ends_with("/embeddings")
}

/// Inspect a request body; for a streamed OpenAI-shaped Chat Completions
/// (or legacy completions) request without
/// `stream_options.include_usage: true`, and when `inject_include_usage`,
/// produce a body that asks for the final usage chunk. When the body has no
/// `stream_options` at all, the field is spliced in after the opening brace
/// so every other byte is preserved; otherwise the JSON is re-serialized.
/// Invalid JSON is left alone.
pub fn prepare_request_body(
    path: &str,
    body: &[u8],
    inject_include_usage: bool,
) -> RequestBodyInfo {
    let path_streams = strip_query(path).contains(":streamGenerateContent");
    // Only model, stream and stream_options matter: a typed parse skips the
    // prompt (the bulk of the body) without copying it, and builds nothing.
    let Ok(top) = crate::typed::parse(body) else {
        return RequestBodyInfo {
            stream: path_streams,
            ..Default::default()
        };
    };
    let v = top.object();
    let model = v.model.as_deref().and_then(cap_model);
    let stream = path_streams || v.stream == Some(true);
    let mut info = RequestBodyInfo {
        model,
        stream,
        rewritten: None,
    };
    if !inject_include_usage || !stream_usage_injectable(path) || v.stream != Some(true) {
        return info;
    }
    if !matches!(top, crate::typed::Top::Object(_)) {
        return info;
    }
    match v.stream_options {
        None => info.rewritten = insert_stream_options(body),
        Some(true) => {}
        Some(false) => info.rewritten = rewrite_stream_options(body),
    }
    info
}

/// The body with `"stream_options":{"include_usage":true}` spliced in as the
/// first member of its top-level object (the body is not re-serialized).
fn insert_stream_options(body: &[u8]) -> Option<Vec<u8>> {
    let open = body
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .filter(|&i| body.get(i) == Some(&b'{'))?;
    let insert = br#""stream_options":{"include_usage":true},"#;
    let mut out = Vec::with_capacity(body.len() + insert.len());
    out.extend_from_slice(body.get(..=open).unwrap_or_default());
    out.extend_from_slice(insert);
    out.extend_from_slice(body.get(open + 1..).unwrap_or_default());
    Some(out)
}

/// Rare: an existing `stream_options` without `include_usage: true` is
/// rewritten, which needs the whole body parsed and serialized again.
fn rewrite_stream_options(body: &[u8]) -> Option<Vec<u8>> {
    let mut whole = serde_json::from_slice::<Value>(body).ok()?;
    let opts = whole.get_mut("stream_options")?;
    match opts.as_object_mut() {
        Some(o) => {
            o.insert("include_usage".to_owned(), Value::Bool(true));
        }
        None => *opts = serde_json::json!({ "include_usage": true }),
    }
    serde_json::to_vec(&whole).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The implementation on the sparse `Value` this one replaced: the
    /// oracle it must agree with.
    fn old_prepare_request_body(
        path: &str,
        body: &[u8],
        inject_include_usage: bool,
    ) -> RequestBodyInfo {
        let path_streams = strip_query(path).contains(":streamGenerateContent");
        // Only model, stream and stream_options matter: a sparse parse skips the
        // prompt (the bulk of the body) without copying it.
        let Ok(mut v) = crate::sparse::parse(body) else {
            return RequestBodyInfo {
                stream: path_streams,
                ..Default::default()
            };
        };
        let model = v.get("model").and_then(Value::as_str).and_then(cap_model);
        let stream = path_streams || v.get("stream").and_then(Value::as_bool) == Some(true);
        let mut info = RequestBodyInfo {
            model,
            stream,
            rewritten: None,
        };
        if !inject_include_usage
            || !stream_usage_injectable(path)
            || v.get("stream").and_then(Value::as_bool) != Some(true)
        {
            return info;
        }
        let Some(obj) = v.as_object_mut() else {
            return info;
        };
        match obj.get_mut("stream_options") {
            None => info.rewritten = insert_stream_options(body),
            Some(opts) => {
                if opts.get("include_usage").and_then(Value::as_bool) == Some(true) {
                    return info;
                }
                info.rewritten = rewrite_stream_options(body);
            }
        }
        info
    }

    const SK: &str = "sk-proj-abc123";
    // printf %s sk-proj-abc123 | sha256sum
    fn sk_hash() -> String {
        hex::encode(Sha256::digest(SK.as_bytes()))
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn picks_configured_headers_from_the_map() {
        let keys = vec!["authorization".to_string(), "x-api-key".to_string()];
        let names = HeaderNames {
            tenant: "x-tenant-id",
            request_id: "x-request-id",
            api_keys: &keys,
        };
        let bearer = format!("Bearer {SK}");
        let headers = owned(&[
            (":path", "/v1/chat/completions?x=1"),
            (":authority", "api.openai.com"),
            ("x-request-id", "req-1"),
            ("x-tenant-id", ""),
            ("x-tenant-id", "acme"),
            ("authorization", bearer.as_str()),
            ("x-goog-api-key", "ignored: not configured"),
            ("content-length", "42"),
            ("accept-encoding", "identity"),
        ]);
        let picked = pick_request_headers(&headers, names);
        assert_eq!(picked.path, "/v1/chat/completions?x=1");
        assert_eq!(picked.authority, Some("api.openai.com"));
        assert_eq!(picked.request_id, Some("req-1"));
        assert_eq!(picked.tenant_id, Some("acme"));
        assert_eq!(picked.api_key_id, Some(sk_hash()));
        assert_eq!(picked.content_length, Some(42));
        assert!(!picked.accepts_compression);

        let only_goog = owned(&[("x-goog-api-key", SK)]);
        assert!(pick_request_headers(&only_goog, names).accepts_compression);
        let picked = pick_request_headers(&only_goog, names);
        assert_eq!(
            picked.api_key_id, None,
            "x-goog-api-key is not allowed here"
        );
        assert_eq!(picked.path, "");
        assert_eq!(picked.tenant_id, None);
    }

    #[test]
    fn accept_encoding_other_than_identity_counts_as_compression() {
        let keys: Vec<String> = vec![];
        let names = HeaderNames {
            tenant: "x-tenant-id",
            request_id: "x-request-id",
            api_keys: &keys,
        };
        for (value, expected) in [
            ("gzip, deflate, br", true),
            ("identity;q=1, gzip;q=0.5", true),
            ("*", true),
            ("identity", false),
            (" Identity ", false),
            ("", false),
        ] {
            let headers = owned(&[("accept-encoding", value)]);
            assert_eq!(
                pick_request_headers(&headers, names).accepts_compression,
                expected,
                "{value:?}"
            );
        }
        assert!(pick_request_headers::<String, String>(&[], names).accepts_compression);
    }

    #[test]
    fn api_key_ids() {
        let h = sk_hash();
        assert_eq!(h.len(), 64);
        assert_eq!(
            api_key_id(Some("Bearer sk-proj-abc123"), None, None, None),
            Some(h.clone())
        );
        assert_eq!(
            api_key_id(Some("bearer sk-proj-abc123"), None, None, None),
            Some(h.clone())
        );
        assert_eq!(
            api_key_id(Some("BEARER   sk-proj-abc123 "), None, None, None),
            Some(h.clone())
        );
        assert_eq!(api_key_id(None, Some(SK), None, None), Some(h.clone()));
        assert_eq!(api_key_id(None, None, None, Some(SK)), Some(h.clone()));
        assert_eq!(
            api_key_id(Some(""), Some(" "), None, Some(SK)),
            Some(h.clone())
        );
        assert_eq!(api_key_id(Some("Bearer "), None, None, None), None);
        assert_eq!(api_key_id(None, None, None, None), None);
        assert_eq!(api_key_id(Some("Bearer"), None, None, None), None);
        assert_eq!(
            api_key_id(Some("Basic dXNlcjpwYXNz"), None, None, None),
            Some(hex::encode(Sha256::digest(b"Basic dXNlcjpwYXNz")))
        );
        // Known vector: sha256("abc").
        assert_eq!(
            api_key_id(None, Some("abc"), None, None).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        // Multibyte input does not panic on the prefix check.
        assert!(api_key_id(Some("Béarer x"), None, None, None).is_some());
        // Azure OpenAI's header, after x-api-key and before x-goog-api-key.
        assert_eq!(
            api_key_id(None, None, Some(SK), Some("other")),
            Some(h.clone())
        );
        assert_eq!(
            api_key_id(None, Some(SK), Some("other"), None),
            Some(h.clone())
        );
    }

    #[test]
    fn sigv4_requests_of_one_access_key_share_its_id() {
        let signed = |date: &str, signature: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/{date}/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
            )
        };
        let a = api_key_id(
            Some(&signed("20261203", "fe5f80f77d5fa3be")),
            None,
            None,
            None,
        );
        let b = api_key_id(
            Some(&signed("20261204", "0a1b2c3d4e5f6789")),
            None,
            None,
            None,
        );
        assert_eq!(a, b, "the signature and date change, the key does not");
        assert_eq!(
            a,
            Some(hex::encode(Sha256::digest(b"AKIAIOSFODNN7EXAMPLE")))
        );
        // A SigV4 header without a credential is hashed whole, as any other.
        let odd = "AWS4-HMAC-SHA256 Signature=abc";
        assert_eq!(
            api_key_id(Some(odd), None, None, None),
            Some(hex::encode(Sha256::digest(odd.as_bytes())))
        );
    }

    #[test]
    fn injects_include_usage_by_splicing() {
        let body = br#" {"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#;
        let info = prepare_request_body("/v1/chat/completions", body, true);
        assert_eq!(info.model.as_deref(), Some("gpt-4o"));
        assert!(info.stream);
        let out = info.rewritten.unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#" {"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn rewrites_existing_stream_options() {
        let body = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}"#;
        let out = prepare_request_body("/v1/chat/completions", body, true)
            .rewritten
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["x"], 1);
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["messages"], serde_json::json!([]));
        let body = br#"{"model":"gpt-4o","stream":true,"stream_options":null}"#;
        let out = prepare_request_body("/api/v1/chat/completions", body, true)
            .rewritten
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn no_rewrite_cases() {
        let already = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let info = prepare_request_body("/v1/chat/completions", already, true);
        assert!(info.stream);
        assert_eq!(info.rewritten, None);
        let not_stream = br#"{"model":"m","stream":false}"#;
        let info = prepare_request_body("/v1/chat/completions", not_stream, true);
        assert!(!info.stream);
        assert_eq!(info.rewritten, None);
        let stream = br#"{"model":"m","stream":true}"#;
        assert_eq!(
            prepare_request_body("/v1/chat/completions", stream, false).rewritten,
            None
        );
        assert_eq!(
            prepare_request_body("/v1/responses", stream, true).rewritten,
            None
        );
        assert_eq!(
            prepare_request_body("/v1/messages", stream, true).rewritten,
            None
        );
        let info = prepare_request_body("/v1/chat/completions", b"{not json", true);
        assert_eq!(info, RequestBodyInfo::default());
        let info = prepare_request_body("/v1/chat/completions", b"[1,2]", true);
        assert_eq!(info, RequestBodyInfo::default());
        let info = prepare_request_body("/v1/chat/completions", b"", true);
        assert_eq!(info, RequestBodyInfo::default());
    }

    #[test]
    fn duplicated_members_last_wins_as_before() {
        for body in [
            &br#"{"stream":false,"model":"a","stream":true,"model":"b"}"#[..],
            br#"{"stream":true,"stream":null}"#,
            br#"{"stream":true,"stream_options":{"include_usage":true},"stream_options":null}"#,
            br#"{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#,
            br#"{"\u0073tream":true,"m\u006fdel":"x"}"#,
        ] {
            let path = "/v1/chat/completions";
            assert_eq!(
                prepare_request_body(path, body, true),
                old_prepare_request_body(path, body, true),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn gemini_stream_from_path() {
        let info = prepare_request_body(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
            true,
        );
        assert!(info.stream);
        assert_eq!(info.model, None);
        assert_eq!(info.rewritten, None);
    }

    const NAMES: &[&str] = &[
        "model",
        "stream",
        "stream_options",
        "include_usage",
        "messages",
        "n",
    ];
    const VALUES: &[&str] = &[
        "true",
        "false",
        "null",
        "\"gpt-4o\"",
        "\"\"",
        "\" m\\u00e9 \"",
        "1",
        "{\"include_usage\":true}",
        "{\"include_usage\":false,\"x\":[1]}",
        "{\"include_usage\":\"true\"}",
        "{\"include_usage\":true,\"include_usage\":null}",
        "[true]",
        "[]",
        "{}",
        "\"bad\\q\"",
        "1e400",
        "{\"x\":1e400}",
    ];
    const PATHS: &[&str] = &[
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1beta/models/g:streamGenerateContent",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn agrees_with_the_sparse_value_version(
            members in proptest::collection::vec(
                prop_oneof![
                    (Just("stream"), proptest::sample::select(&["true", "true", "false", "null", "\"true\""][..]), any::<bool>()),
                    (Just("stream_options"), proptest::sample::select(VALUES), any::<bool>()),
                    (Just("model"), proptest::sample::select(VALUES), any::<bool>()),
                    (proptest::sample::select(NAMES), proptest::sample::select(VALUES), any::<bool>()),
                ],
                0..6,
            ),
            path in proptest::sample::select(PATHS),
            inject in any::<bool>(),
            top_array in proptest::bool::weighted(0.1),
        ) {
            let mut body = String::from(if top_array { "[{" } else { " {" });
            for (i, (name, value, escaped)) in members.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                match name.split_at_checked(1) {
                    Some((first, rest)) if *escaped => {
                        body.push_str(&format!("\"\\u{:04x}{rest}\":", first.as_bytes()[0]));
                    }
                    _ => body.push_str(&format!("\"{name}\":")),
                }
                body.push_str(value);
            }
            body.push_str(if top_array { "}]" } else { "}" });
            prop_assert_eq!(
                prepare_request_body(path, body.as_bytes(), inject),
                old_prepare_request_body(path, body.as_bytes(), inject),
                "{}", body
            );
        }

        #[test]
        fn agrees_with_the_sparse_value_version_on_bytes(
            body in proptest::collection::vec(proptest::sample::select(
                b"{}[]:,\"\\ 0-1.e9truefalsnu\"model\"\"stream\"\"stream_options\"\"include_usage\"".to_vec()), 0..64),
        ) {
            for path in PATHS {
                prop_assert_eq!(
                    prepare_request_body(path, &body, true),
                    old_prepare_request_body(path, &body, true)
                );
            }
        }

        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), inject in any::<bool>()) {
            let _ = prepare_request_body("/v1/chat/completions", &body, inject);
        }

        #[test]
        fn rewritten_bodies_are_valid_and_keep_fields(model in "[a-z0-9.-]{1,20}", n in 0u32..5, extra in proptest::option::of(any::<bool>())) {
            let mut v = serde_json::json!({"model": model, "stream": true, "n": n, "messages": []});
            if let Some(x) = extra {
                v["stream_options"] = serde_json::json!({"include_usage": x});
            }
            let body = serde_json::to_vec(&v).unwrap();
            let info = prepare_request_body("/v1/chat/completions", &body, true);
            prop_assert_eq!(info.model.as_deref(), Some(model.as_str()));
            if extra == Some(true) {
                prop_assert!(info.rewritten.is_none());
            } else {
                let out: Value = serde_json::from_slice(&info.rewritten.unwrap()).unwrap();
                prop_assert_eq!(&out["stream_options"]["include_usage"], &Value::Bool(true));
                prop_assert_eq!(&out["model"], &v["model"]);
                prop_assert_eq!(&out["n"], &v["n"]);
            }
        }
    }
}
