//! Admin-managed model aliases: `GET|PUT|DELETE /v1/model-aliases`. An alias
//! prices a custom name (an Azure deployment, `gpt-35-turbo`) as a catalog
//! model; the ledger keeps the name as recorded.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, Body, Params};
use crate::auth::{Admin, Reader};
use crate::db::{self, ModelAlias};
use crate::error::{ApiError, ApiResult};
use crate::ingest::KNOWN_PROVIDERS;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/model-aliases", get(list).put(upsert).delete(remove))
}

/// `*`: every tenant, or any provider.
const ANY: &str = "*";
const MAX_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant_id: Option<String>,
}

/// Every alias; with `tenant_id`, those that apply to it (its own and the
/// global ones). A tenant token sees those of its own tenant.
async fn list(
    State(state): State<AppState>,
    reader: Reader,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = reader.scope(q.tenant_id)?;
    let rows = db::load_model_aliases(&state.pool, tenant.as_deref()).await?;
    Ok(Json(json!({"aliases": rows})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAlias {
    alias: String,
    model: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// Creates (201) or repoints (200) an alias, live on this replica at once.
async fn upsert(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<ModelAlias>)> {
    let new: NewAlias = parse_json(&body)?;
    let tenant_id = new.tenant_id.unwrap_or_else(|| ANY.into());
    let provider = new.provider.unwrap_or_else(|| ANY.into());
    check(&tenant_id, &provider, &new.alias, &new.model).map_err(ApiError::BadRequest)?;
    // Only an exact catalog id: a typo must not leave usage silently unpriced.
    if !db::price_model_exists(&state.pool, &new.model).await? {
        return Err(ApiError::BadRequest(format!(
            "model {:?} is not a model id in the price catalog (see GET /v1/prices)",
            new.model
        )));
    }
    let (row, created) =
        db::upsert_model_alias(&state.pool, &tenant_id, &provider, &new.alias, &new.model).await?;
    state.reload_prices().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    alias: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

async fn remove(
    State(state): State<AppState>,
    _admin: Admin,
    Params(q): Params<KeyQuery>,
) -> ApiResult<StatusCode> {
    let tenant_id = q.tenant_id.as_deref().unwrap_or(ANY);
    let provider = q.provider.as_deref().unwrap_or(ANY);
    if !db::delete_model_alias(&state.pool, tenant_id, provider, &q.alias).await? {
        return Err(ApiError::NotFound(format!(
            "no alias {:?} for tenant {tenant_id:?} and provider {provider:?}",
            q.alias
        )));
    }
    state.reload_prices().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The rules of a new alias; the message says what is wrong.
fn check(tenant_id: &str, provider: &str, alias: &str, model: &str) -> Result<(), String> {
    if tenant_id.is_empty() || tenant_id.len() > MAX_LEN || tenant_id.chars().any(char::is_control)
    {
        return Err(format!(
            "tenant_id must be `*` or a tenant id of 1 to {MAX_LEN} bytes without control characters"
        ));
    }
    // The providers a usage record can carry: any other never matches.
    if provider != ANY && !KNOWN_PROVIDERS.contains(&provider) {
        return Err(format!(
            "provider {provider:?} must be `*` or one of {}",
            KNOWN_PROVIDERS.join(", ")
        ));
    }
    for (field, name) in [("alias", alias), ("model", model)] {
        if name.is_empty() {
            return Err(format!("{field} is empty"));
        }
        if name.len() > MAX_LEN {
            return Err(format!("{field} is longer than {MAX_LEN} bytes"));
        }
        // Covers control characters too; a stray space is a typo that would never match.
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{field} {name:?} contains whitespace"));
        }
    }
    if alias == model {
        return Err(format!(
            "alias {alias:?} is the model itself; an alias names a different model"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn aliases_are_checked_with_a_clear_message() {
        assert_eq!(check("*", "*", "prod-gpt4o-eu", "gpt-4o"), Ok(()));
        assert_eq!(
            check("acme", "openai", "gpt-35-turbo", "gpt-3.5-turbo"),
            Ok(())
        );
        let err = |t, p, a, m| check(t, p, a, m).unwrap_err();
        assert_eq!(err("*", "*", "", "gpt-4o"), "alias is empty");
        assert_eq!(err("*", "*", "dep", ""), "model is empty");
        assert!(err("*", "*", "prod gpt", "gpt-4o").contains("whitespace"));
        assert!(err("*", "*", "dep", "gpt-4o\n").contains("whitespace"));
        assert!(err("*", "*", "dep", "gpt-4o\u{0}").contains("model"));
        assert!(err("*", "*", "gpt-4o", "gpt-4o").contains("the model itself"));
        assert!(err("*", "opneai", "dep", "gpt-4o").contains("one of openai"));
        assert_eq!(check("*", "azure", "dep", "gpt-4o"), Ok(()));
        assert_eq!(check("*", "unknown", "dep", "gpt-4o"), Ok(()));
        assert!(err("", "*", "dep", "gpt-4o").contains("tenant_id"));
        assert!(err("*", "*", &"x".repeat(257), "gpt-4o").contains("longer"));
    }
}
