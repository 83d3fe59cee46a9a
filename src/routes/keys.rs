//! `keys`: API keys of the tenant's accounts. Developers manage their own account's keys; owners
//! and admins any account's; finance may read. The secret is in the create and rotate responses
//! only.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::api_key;
use crate::auth::caller::{Caller, RequestMeta};
use crate::auth::key_cache::Invalidation;
use crate::domain::{AccountId, ApiKeyId, Role, TenantId};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::limits::LimitSet;
use crate::models::account::Account;
use crate::models::api_key::{ApiKey, KeyState, NewKey};
use crate::models::audit::AuditEntry;
use crate::models::plan::Plan;
use crate::models::{List, Page, utc};
use crate::state::AppState;
use crate::validate;

/// Scopes a key may carry (sorted); a key without a scope cannot call the matching endpoints.
pub const SCOPES: [&str; 2] = ["chat:write", "models:read"];
/// Longest grace period a rotated-out secret may keep working.
const MAX_GRACE_SECS: u64 = 7 * 86_400;

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: ApiKeyId,
    pub object: &'static str,
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    pub name: String,
    /// First characters of the secret, for recognising it (`tg_7Hq2`).
    pub prefix: String,
    pub last4: String,
    pub scopes: Vec<String>,
    pub status: KeyState,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    /// Until when the secret replaced by the last rotation still works.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// The key's own limits; they only narrow its account's plan (see `GET /keys/{id}/limits`).
    pub limits: LimitSet,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        let now = crate::db::now();
        Self {
            status: k.state(now),
            scopes: k.scope_list(),
            id: k.id,
            object: "api_key",
            tenant_id: k.tenant_id,
            account_id: k.account_id,
            name: k.name,
            prefix: k.prefix,
            last4: k.last4,
            created_at: utc(k.created_at),
            last_used_at: k.last_used_at.map(utc),
            expires_at: k.expires_at.map(utc),
            revoked_at: k.revoked_at.map(utc),
            rotated_at: k.rotated_at.map(utc),
            previous_secret_valid_until: k.previous_valid_until.filter(|t| *t > now).map(utc),
            limits: LimitSet::from_json(&k.limits),
        }
    }
}

/// A key with its secret: returned once, at creation or rotation.
#[derive(Serialize, ToSchema)]
pub struct KeyWithSecret {
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret. Shown only in this response; store it now.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Required for owners and admins; a developer's key always belongs to their account.
    pub account_id: Option<AccountId>,
    /// Default: every scope (`models:read`, `chat:write`).
    pub scopes: Option<Vec<String>>,
    /// When the key stops working (must be in the future). Default: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Limits of this key; each may only be tighter than the plan's key limit. Default: the plan's.
    pub limits: Option<LimitSet>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Replaces the key's own limits (`{}`: just the plan's).
    pub limits: Option<LimitSet>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the old secret keeps working (0–604800, default 0: it stops at once).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_period_secs: u64,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeyFilter {
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(pattern = "^[!-~]{1,100}$")]
    pub after: Option<String>,
    /// Only this account's keys.
    pub account_id: Option<String>,
}

fn scopes(requested: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let Some(mut list) = requested else {
        return Ok(SCOPES.map(String::from).to_vec());
    };
    if list.is_empty() {
        return Err(ApiError::invalid_param("scopes", "give at least one scope"));
    }
    if let Some(bad) = list.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::invalid_param(
            "scopes",
            format!("unknown scope `{bad}`; known: {}", SCOPES.join(", ")),
        ));
    }
    list.sort();
    list.dedup();
    Ok(list)
}

/// The account a key operation is confined to: a developer's own; for others whatever they asked.
fn key_account_scope(caller: &Caller) -> ApiResult<Option<&AccountId>> {
    match caller.role {
        Role::Developer => Ok(Some(
            caller
                .account_scope()
                .ok_or_else(|| ApiError::forbidden("no account"))?,
        )),
        _ => Ok(None),
    }
}

/// Lists keys: a developer's account's, or the tenant's (filter with `account_id`).
#[utoipa::path(tag = "keys", params(KeyFilter), responses((status = 200, body = List<KeyView>)), security(("jwt" = [])))]
#[get("/keys")]
pub async fn list_keys(
    state: web::Data<AppState>,
    caller: Caller,
    filter: web::Query<KeyFilter>,
) -> ApiResult<web::Json<List<KeyView>>> {
    let tenant = caller.tenant()?.clone();
    let filter = filter.into_inner();
    let page = Page {
        limit: filter.limit,
        after: filter.after,
    };
    let asked = match filter.account_id {
        Some(a) => Some(
            AccountId::parse(&a)
                .ok_or_else(|| ApiError::invalid_param("account_id", "not an account id"))?,
        ),
        None => None,
    };
    let own = key_account_scope(&caller)?.cloned();
    // An account filter names an account the caller can see, like every other account id.
    if let (Some(own), Some(asked)) = (&own, &asked)
        && own != asked
    {
        return Err(ApiError::NotFound { what: "account" });
    }
    let account = own.or(asked);
    let (after, limit) = (page.after()?, page.limit()?);
    let rows = state
        .db
        .run(move |c| {
            if let Some(a) = &account {
                Account::find_in_tenant(c, &tenant, a)?;
            }
            ApiKey::list(c, &tenant, account.as_ref(), &after, limit)
        })
        .await
        .not_found_as("account")?;
    Ok(web::Json(List::from_rows(rows, limit, KeyView::from)))
}

/// Creates a key and returns its secret, once. Honours `Idempotency-Key`.
#[utoipa::path(tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyWithSecret), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/keys")]
pub async fn create_key(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CreateKey>,
) -> ApiResult<HttpResponse> {
    let tenant = caller.tenant()?.clone();
    let body = body.into_inner();
    let account = match (caller.role, key_account_scope(&caller)?, body.account_id) {
        (Role::Finance, ..) => return Err(ApiError::forbidden("finance users cannot create keys")),
        (_, Some(own), Some(asked)) if *own != asked => {
            return Err(ApiError::NotFound { what: "account" });
        }
        (_, Some(own), _) => own.clone(),
        (_, None, Some(asked)) => asked,
        (_, None, None) => {
            return Err(ApiError::invalid_param(
                "account_id",
                "account_id is required",
            ));
        }
    };
    let expires_at = body.expires_at.map(|t| t.naive_utc());
    if expires_at.is_some_and(|t| t <= crate::db::now()) {
        return Err(ApiError::invalid_param(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let new = NewKey {
        tenant_id: tenant.clone(),
        account_id: account,
        created_by: Some(caller.user_id.clone()),
        name: validate::name("name", &body.name, 100)?,
        scopes: scopes(body.scopes)?,
        expires_at,
        limits: body.limits.unwrap_or_default(),
    };
    validate::limits("limits", &new.limits)?;
    let secret = api_key::generate(state.pepper());
    let key = ApiKey::new(new, &secret);
    let actor = caller.actor(&meta);
    let key = state
        .db
        .write(move |c| {
            Account::find_in_tenant(c, &tenant, &key.account_id).not_found_as("account")?;
            within_plan(c, &key, &key.limits())?;
            key.insert(c)?;
            AuditEntry::record(c, &actor, Some(&tenant), "api_key.create", ("api_key", key.id.as_str()),
                serde_json::json!({"account_id": key.account_id, "name": key.name, "prefix": key.prefix,
                    "scopes": key.scopes, "expires_at": key.expires_at.map(utc)}))?;
            Ok::<_, ApiError>(key)
        })
        .await?;
    Ok(HttpResponse::Created().json(KeyWithSecret {
        key: key.into(),
        secret: secret.secret,
    }))
}

/// One key (never its secret).
#[utoipa::path(tag = "keys", responses((status = 200, body = KeyView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/keys/{id}")]
pub async fn get_key(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<KeyView>> {
    let tenant = caller.tenant()?.clone();
    let own = key_account_scope(&caller)?.cloned();
    let id = ApiKeyId::parse(&id).ok_or(ApiError::NotFound { what: "api key" })?;
    let key = state
        .db
        .run(move |c| ApiKey::find_in_tenant(c, &tenant, own.as_ref(), &id))
        .await
        .not_found_as("api key")?;
    Ok(web::Json(key.into()))
}

/// A key's own limits may only narrow its plan's key limits.
fn within_plan(c: &mut crate::db::DbConn, key: &ApiKey, limits: &LimitSet) -> ApiResult<()> {
    let plan = Plan::for_account(c, &key.tenant_id, &key.account_id)?;
    let plan_limits = plan.map(|p| p.key_limits()).unwrap_or_default();
    match limits.loosens(&plan_limits) {
        Some(field) => Err(ApiError::BadRequest {
            code: "limit_exceeds_plan",
            message: format!(
                "limits.{field} is above the plan's key limit; a key may only narrow its plan"
            ),
            param: Some(format!("limits.{field}")),
        }),
        None => Ok(()),
    }
}

/// Renames a key or changes its limits; every replica applies the change within a second.
#[utoipa::path(tag = "keys", request_body = UpdateKey,
    responses((status = 200, body = KeyView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[patch("/keys/{id}")]
pub async fn update_key(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<UpdateKey>,
) -> ApiResult<web::Json<KeyView>> {
    caller.tenant()?;
    let id = ApiKeyId::parse(&id).ok_or(ApiError::NotFound { what: "api key" })?;
    let body = body.into_inner();
    let name = body
        .name
        .as_deref()
        .map(|n| validate::name("name", n, 100))
        .transpose()?;
    if let Some(limits) = &body.limits {
        validate::limits("limits", limits)?;
    }
    let actor = caller.actor(&meta);
    let key = state
        .db
        .write(move |c| {
            let key = changeable_key(c, &caller, &id)?;
            if let Some(limits) = &body.limits {
                within_plan(c, &key, limits)?;
            }
            let updated = ApiKey::update(c, &key.id, name.as_deref(), body.limits.as_ref())?;
            AuditEntry::record(
                c,
                &actor,
                Some(&key.tenant_id),
                "api_key.update",
                ("api_key", key.id.as_str()),
                serde_json::json!({"name": name, "limits": body.limits}),
            )?;
            Ok::<_, ApiError>(updated)
        })
        .await?;
    state
        .invalidator
        .publish(Invalidation::Key(key.id.clone()))
        .await;
    Ok(web::Json(key.into()))
}

/// Loads a key the caller may change (not finance), inside a transaction.
fn changeable_key(c: &mut crate::db::DbConn, caller: &Caller, id: &ApiKeyId) -> ApiResult<ApiKey> {
    let tenant = caller.tenant()?;
    let own = key_account_scope(caller)?;
    let key = ApiKey::find_in_tenant(c, tenant, own, id).not_found_as("api key")?;
    if caller.role == Role::Finance {
        return Err(ApiError::forbidden("finance users cannot change keys"));
    }
    Ok(key)
}

/// Issues a new secret for the key, keeping its id and settings. The old secret keeps working for
/// `grace_period_secs` (default: stops at once). Honours `Idempotency-Key`.
#[utoipa::path(tag = "keys", request_body(content = Option<RotateKey>, description = "optional: no body rotates with no grace period"),
    responses((status = 200, body = KeyWithSecret), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/keys/{id}/rotate")]
pub async fn rotate_key(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> ApiResult<web::Json<KeyWithSecret>> {
    caller.tenant()?;
    let id = ApiKeyId::parse(&id).ok_or(ApiError::NotFound { what: "api key" })?;
    // The body is optional (none, or `null`); when there is one it must be a RotateKey object.
    let body: RotateKey =
        if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
            RotateKey::default()
        } else {
            crate::http::extract::object(&req, &body)?
        };
    let grace = body.grace_period_secs;
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::invalid_param(
            "grace_period_secs",
            format!("grace_period_secs must be at most {MAX_GRACE_SECS}"),
        ));
    }
    let grace_until =
        (grace > 0).then(|| crate::db::now() + chrono::Duration::seconds(grace as i64));
    let secret = api_key::generate(state.pepper());
    let (actor, prefix) = (caller.actor(&meta), secret.prefix.clone());
    let new_hash = (
        secret.hash.clone(),
        secret.prefix.clone(),
        secret.last4.clone(),
    );
    let key = state
        .db
        .write(move |c| {
            let key = changeable_key(c, &caller, &id)?;
            if key.state(crate::db::now()) != KeyState::Active {
                return Err(ApiError::conflict(
                    "key_not_active",
                    "only an active key can be rotated",
                ));
            }
            let secret = api_key::NewSecret {
                secret: String::new(),
                hash: new_hash.0,
                prefix: new_hash.1,
                last4: new_hash.2,
            };
            let rotated = ApiKey::rotate(c, &key, &secret, grace_until)?;
            AuditEntry::record(
                c,
                &actor,
                Some(&key.tenant_id),
                "api_key.rotate",
                ("api_key", key.id.as_str()),
                serde_json::json!({"new_prefix": prefix, "grace_period_secs": grace}),
            )?;
            Ok(rotated)
        })
        .await?;
    state
        .invalidator
        .publish(Invalidation::Key(key.id.clone()))
        .await;
    Ok(web::Json(KeyWithSecret {
        key: key.into(),
        secret: secret.secret,
    }))
}

/// Revokes the key at once (and any secret still in a rotation grace period).
#[utoipa::path(tag = "keys", responses((status = 200, body = KeyView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[delete("/keys/{id}")]
pub async fn revoke_key(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
) -> ApiResult<web::Json<KeyView>> {
    caller.tenant()?;
    let id = ApiKeyId::parse(&id).ok_or(ApiError::NotFound { what: "api key" })?;
    let actor = caller.actor(&meta);
    let key = state
        .db
        .write(move |c| {
            let key = changeable_key(c, &caller, &id)?;
            let revoked = ApiKey::revoke(c, &key)?;
            AuditEntry::record(
                c,
                &actor,
                Some(&key.tenant_id),
                "api_key.revoke",
                ("api_key", key.id.as_str()),
                serde_json::json!({"prefix": key.prefix, "was": key.state(crate::db::now())}),
            )?;
            Ok::<_, ApiError>(revoked)
        })
        .await?;
    state
        .invalidator
        .publish(Invalidation::Key(key.id.clone()))
        .await;
    Ok(web::Json(key.into()))
}
