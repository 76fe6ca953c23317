//! Bearer token checks. Tokens are compared as SHA-256 digests in constant
//! time, so neither their content nor their length leaks through timing.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// A configured secret, kept only as its digest.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&digest).into()
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Proof that the request carries the ingest token.
pub struct Ingest;

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Ingest {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match (bearer(parts), &state.ingest_token) {
            (Some(t), Some(expected)) if expected.matches(t) => Ok(Ingest),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match (bearer(parts), &state.admin_token) {
            (Some(t), Some(expected)) if expected.matches(t) => Ok(Admin),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_only_the_same_token() {
        let d = TokenDigest::new("s3cret");
        assert!(d.matches("s3cret"));
        assert!(!d.matches("s3cret "));
        assert!(!d.matches(""));
        assert!(!format!("{d:?}").contains("s3cret"));
    }
}
