//! `GET /keys/{id}/limits`: every limit in force for a key (its own, its account's, its tenant's)
//! with current usage, read from the same limiter the data plane uses. For the key's owner (the
//! developer of its account) and the tenant's owners and admins.

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::caller::Caller;
use crate::domain::{ApiKeyId, Role};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::limits::{Kind, Scope};
use crate::models::api_key::ApiKey;
use crate::models::plan::Plan;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct LimitUsage {
    /// Whose limit: the key's, its account's or its tenant's.
    pub scope: Scope,
    pub scope_id: String,
    /// The limit's name (`rpm`, `tpm`, `concurrency`, `requests_per_day`, …).
    pub name: &'static str,
    pub limit: i64,
    /// Counted now (requests, tokens, or requests in flight).
    pub used: i64,
    pub remaining: i64,
    /// When usage next drops: the oldest counted second leaves the window, or the period ends.
    pub resets_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyLimits {
    pub object: &'static str,
    pub key_id: ApiKeyId,
    pub limits: Vec<LimitUsage>,
}

/// Current usage against every limit that applies to the key.
#[utoipa::path(tag = "keys", responses((status = 200, body = KeyLimits), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/keys/{id}/limits")]
pub async fn get_key_limits(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<KeyLimits>> {
    let tenant = caller.tenant()?.clone();
    let own = match caller.role {
        Role::Developer => Some(
            caller
                .account_scope()
                .ok_or_else(|| ApiError::forbidden("no account"))?
                .clone(),
        ),
        Role::Owner | Role::Admin => None,
        _ => {
            return Err(ApiError::forbidden(
                "requires the key's owner, or the owner or admin role",
            ));
        }
    };
    let id = ApiKeyId::parse(&id).ok_or(ApiError::NotFound { what: "api key" })?;
    let (key, context) = state
        .db
        .run(move |c| {
            let key = ApiKey::find_in_tenant(c, &tenant, own.as_ref(), &id)?;
            let context = Plan::context_for(c, &key)?;
            Ok((key, context))
        })
        .await
        .not_found_as("api key")?;
    // A revoked key allows nothing: its limits are gone with it.
    if key.status == crate::domain::KeyStatus::Revoked {
        return Err(ApiError::NotFound { what: "api key" });
    }
    let descriptors = context.descriptors(&key);
    let readings = state
        .limiter
        .peek(&key.tenant_id, &descriptors)
        .await
        .map_err(|_| ApiError::LimiterUnavailable)?;
    let now = Utc::now();
    let limits = descriptors
        .into_iter()
        .zip(readings)
        .map(|(d, r)| LimitUsage {
            resets_at: (r.reset_ms > 0 && d.kind != Kind::Concurrency)
                .then(|| now + chrono::Duration::milliseconds(r.reset_ms)),
            scope: d.scope,
            name: d.kind.field(),
            limit: d.limit,
            used: r.used,
            remaining: (d.limit - r.used).max(0),
            scope_id: d.id,
        })
        .collect();
    Ok(web::Json(KeyLimits {
        object: "key_limits",
        key_id: key.id,
        limits,
    }))
}
