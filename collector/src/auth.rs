//! Bearer token checks. Configured tokens are compared as SHA-256 digests in
//! constant time, so neither their content nor their length leaks through
//! timing.
//!
//! Three kinds of token:
//! - the ingest token (`INGEST_TOKEN`): `POST /v1/usage` only;
//! - the admin token (`ADMIN_TOKEN`): every admin and query endpoint, all
//!   tenants, not rate limited;
//! - tenant read tokens (`blt_…`, created with `POST /v1/tokens`): the query
//!   endpoints (`GET /v1/transactions`, `/v1/summary`, `/v1/reconciliation`)
//!   and the catalog tools (`GET /v1/prices`, `POST /v1/quote`), scoped to
//!   one tenant and rate limited per token. Only their SHA-256 is stored;
//!   a lookup is by digest, so the secret is never compared byte by byte.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::{self, ActiveToken};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// A configured secret, kept only as its digest.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn new(token: &str) -> Self {
        Self(sha256(token))
    }

    pub fn matches(&self, presented: &str) -> bool {
        self.0.ct_eq(&sha256(presented)).into()
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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

/// Prefix of tenant read tokens.
pub const TENANT_TOKEN_PREFIX: &str = "blt_";
/// `blt_` + 32 random bytes in unpadded base64url.
const TENANT_TOKEN_LEN: usize = 4 + 43;

/// A new tenant token and the digest to store. The token is 32 bytes from
/// the operating system's CSPRNG.
pub fn generate_tenant_token() -> ApiResult<(String, [u8; 32])> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ApiError::Internal(format!("no random source: {e}")))?;
    let token = format!("{TENANT_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let digest = sha256(&token);
    Ok((token, digest))
}

fn looks_like_tenant_token(token: &str) -> bool {
    token.len() == TENANT_TOKEN_LEN && token.starts_with(TENANT_TOKEN_PREFIX)
}

/// How long a tenant token lookup is reused before the database is asked
/// again. Replicas forget their cached tokens as soon as a change to
/// `api_tokens` is notified (`changes`), so this is how long a revocation
/// made on another replica takes to bite only while the change listener is
/// down. On the replica that revokes, it bites at once.
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_PRUNE_ABOVE: usize = 10_000;

/// Recently verified tenant tokens, by digest. Unknown or revoked tokens are
/// not cached, so the map only ever holds real, active tokens.
#[derive(Debug)]
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (ActiveToken, Instant)>>,
    /// Bumped by [`TokenCache::clear`]: a lookup that read the database
    /// before a clear does not cache what it read.
    epoch: AtomicU64,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
            epoch: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (ActiveToken, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The active token with this digest, from the cache or the database.
    pub async fn lookup(
        &self,
        pool: &sqlx::PgPool,
        digest: &[u8; 32],
    ) -> Result<Option<ActiveToken>, sqlx::Error> {
        if let Some((token, at)) = self.entries().get(digest) {
            if at.elapsed() < self.ttl {
                return Ok(Some(token.clone()));
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = db::find_active_token(pool, digest).await?;
        let mut entries = self.entries();
        // Cleared meanwhile: what was read may predate the change.
        let fresh = self.epoch.load(Ordering::SeqCst) == epoch;
        match &found {
            Some(token) if fresh && !self.ttl.is_zero() => {
                if entries.len() > CACHE_PRUNE_ABOVE {
                    let ttl = self.ttl;
                    entries.retain(|_, (_, at)| at.elapsed() < ttl);
                }
                entries.insert(*digest, (token.clone(), Instant::now()));
            }
            _ => {
                entries.remove(digest);
            }
        }
        Ok(found)
    }

    /// Forgets a token at once (after it is revoked here), including what
    /// lookups in flight read before this call.
    pub fn forget(&self, id: i64) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, (t, _)| t.id != id);
    }

    /// Forgets every token (a token changed on another replica), including
    /// what lookups in flight read before this call.
    pub fn clear(&self) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_TOKEN_CACHE_TTL)
    }
}

impl AppState {
    /// Sets how long verified tenant tokens are cached (zero: never).
    pub fn with_token_cache_ttl(mut self, ttl: Duration) -> Self {
        self.token_cache = Arc::new(TokenCache::new(ttl));
        self
    }
}

/// Proof that the request carries the ingest token.
pub struct Ingest;

/// Proof that the request carries the admin token.
pub struct Admin;

/// Who may read the ledger: the admin (every tenant) or a tenant token
/// (its own tenant only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    Admin,
    Tenant { token_id: i64, tenant_id: String },
}

impl Reader {
    /// The tenant a query must be limited to. The admin gets what it asked
    /// for (None: all tenants). A tenant token always gets its own tenant;
    /// asking for another one is refused with 403 rather than silently
    /// answered with the token's own data under the other tenant's name.
    pub fn scope(&self, requested: Option<String>) -> ApiResult<Option<String>> {
        match self {
            Reader::Admin => Ok(requested),
            Reader::Tenant { tenant_id, .. } => match requested {
                Some(r) if r != *tenant_id => Err(ApiError::Forbidden),
                _ => Ok(Some(tenant_id.clone())),
            },
        }
    }
}

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
        let Some(presented) = bearer(parts) else {
            return Err(ApiError::Unauthorized);
        };
        if state
            .admin_token
            .as_ref()
            .is_some_and(|expected| expected.matches(presented))
        {
            return Ok(Admin);
        }
        // A valid tenant token is known but not allowed here: 403, not 401.
        if looks_like_tenant_token(presented) {
            if let Ok(Some(_)) = state
                .token_cache
                .lookup(&state.pool, &sha256(presented))
                .await
            {
                return Err(ApiError::Forbidden);
            }
        }
        Err(ApiError::Unauthorized)
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(presented) = bearer(parts) else {
            return Err(ApiError::Unauthorized.into_response());
        };
        if state
            .admin_token
            .as_ref()
            .is_some_and(|expected| expected.matches(presented))
        {
            return Ok(Reader::Admin);
        }
        if !looks_like_tenant_token(presented) {
            return Err(ApiError::Unauthorized.into_response());
        }
        let digest = sha256(presented);
        let token = state
            .token_cache
            .lookup(&state.pool, &digest)
            .await
            .map_err(|e| ApiError::from(e).into_response())?
            .ok_or_else(|| ApiError::Unauthorized.into_response())?;
        state
            .query_rate_limit
            .check(&digest)
            .map_err(crate::ratelimit::too_many_requests)?;
        Ok(Reader::Tenant {
            token_id: token.id,
            tenant_id: token.tenant_id,
        })
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

    #[test]
    fn tenant_tokens_are_random_prefixed_and_digested() {
        let (a, da) = generate_tenant_token().unwrap();
        let (b, db) = generate_tenant_token().unwrap();
        assert_ne!(a, b);
        assert_ne!(da, db);
        assert!(looks_like_tenant_token(&a), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a[4..]).unwrap().len(), 32);
        assert_eq!(da, sha256(&a));
        assert!(!looks_like_tenant_token("blt_short"));
        assert!(!looks_like_tenant_token(&a.replace("blt_", "xyz_")));
    }

    #[test]
    fn tenant_scope_is_forced_and_mismatch_is_forbidden() {
        let t = Reader::Tenant {
            token_id: 1,
            tenant_id: "acme".into(),
        };
        assert_eq!(t.scope(None).unwrap().as_deref(), Some("acme"));
        assert_eq!(
            t.scope(Some("acme".into())).unwrap().as_deref(),
            Some("acme")
        );
        assert!(matches!(
            t.scope(Some("globex".into())),
            Err(ApiError::Forbidden)
        ));
        assert_eq!(Reader::Admin.scope(None).unwrap(), None);
        assert_eq!(
            Reader::Admin
                .scope(Some("globex".into()))
                .unwrap()
                .as_deref(),
            Some("globex")
        );
    }
}
