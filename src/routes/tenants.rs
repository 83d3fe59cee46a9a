//! `tenants`: the operator's view of the businesses reselling through this deployment, and a
//! tenant's own settings (`/tenant/settings`, its owner and admins).

use actix_web::{HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::auth::key_cache::Invalidation;
use crate::auth::password;
use crate::billing::prices::PriceBook;
use crate::domain::{ActiveStatus, Role, TenantId, UserId};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::limits::LimitSet;
use crate::models::audit::AuditEntry;
use crate::models::tenant::{Tenant, TenantChanges};
use crate::models::user::User;
use crate::models::{List, Page, utc};
use crate::state::AppState;
use crate::validate;

#[derive(Serialize, ToSchema)]
pub struct TenantView {
    pub id: TenantId,
    pub object: &'static str,
    pub name: String,
    pub slug: String,
    pub allow_signup: bool,
    pub status: ActiveStatus,
    /// Caps on the tenant as a whole (all its accounts and keys together).
    pub limits: LimitSet,
    /// What the operator charges this tenant per model (`*`: any other model).
    pub wholesale_prices: PriceBook,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            object: "tenant",
            name: t.name,
            slug: t.slug,
            allow_signup: t.allow_signup,
            status: t.status,
            limits: LimitSet::from_json(&t.limits),
            wholesale_prices: PriceBook::parse(&t.wholesale_prices).unwrap_or_default(),
            created_at: utc(t.created_at),
            updated_at: utc(t.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// URL-safe, unique: 3–40 of a-z, 0-9, -.
    #[schema(min_length = 3, max_length = 40)]
    pub slug: String,
    #[serde(default)]
    pub allow_signup: bool,
    /// Creates the tenant's owner user too (with `owner_password`).
    #[schema(min_length = 3, max_length = 254)]
    pub owner_email: Option<String>,
    #[schema(min_length = 10, max_length = 256)]
    pub owner_password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: TenantView,
    pub owner_user_id: Option<UserId>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub allow_signup: Option<bool>,
    pub status: Option<ActiveStatus>,
    /// Replaces the tenant-wide limits (`{}`: none).
    pub limits: Option<LimitSet>,
    /// Replaces the operator's prices to this tenant.
    pub wholesale_prices: Option<PriceBook>,
}

/// Lists tenants (operator).
#[utoipa::path(tag = "tenants", params(Page), responses((status = 200, body = List<TenantView>)), security(("jwt" = [])))]
#[get("/tenants")]
pub async fn list_tenants(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
) -> ApiResult<web::Json<List<TenantView>>> {
    caller.require_operator()?;
    let (after, limit) = (page.after()?, page.limit()?);
    let rows = state
        .db
        .run(move |c| Tenant::list(c, &after, limit))
        .await?;
    Ok(web::Json(List::from_rows(rows, limit, TenantView::from)))
}

/// Creates a tenant, optionally with its owner (operator). Honours `Idempotency-Key`.
#[utoipa::path(tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/tenants")]
pub async fn create_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CreateTenant>,
) -> ApiResult<HttpResponse> {
    caller.require_operator()?;
    let body = body.into_inner();
    let tenant = Tenant::new(
        validate::name("name", &body.name, 200)?,
        validate::slug("slug", &body.slug)?,
        body.allow_signup,
    );
    let owner = match (body.owner_email, body.owner_password) {
        (Some(email), Some(pw)) => {
            let email = validate::email("owner_email", &email)?;
            password::check_policy(&pw)?;
            Some(User::new(
                Some(tenant.id.clone()),
                None,
                &email,
                password::hash(pw).await?,
                Role::Owner,
            ))
        }
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid_param(
                "owner_password",
                "owner_email and owner_password go together",
            ));
        }
    };
    let actor = caller.actor(&meta);
    let created = state
        .db
        .write(move |c| {
            tenant.insert(c).conflict_as("slug_taken", "a tenant with this slug already exists")?;
            AuditEntry::record(c, &actor, Some(&tenant.id), "tenant.create", ("tenant", tenant.id.as_str()),
                serde_json::json!({"name": tenant.name, "slug": tenant.slug, "allow_signup": tenant.allow_signup}))?;
            if let Some(owner) = &owner {
                owner.insert(c).conflict_as("email_taken", "a user with this email already exists")?;
                AuditEntry::record(c, &actor, Some(&tenant.id), "user.create", ("user", owner.id.as_str()),
                    serde_json::json!({"email": owner.email, "role": owner.role}))?;
            }
            Ok::<_, ApiError>(CreatedTenant { owner_user_id: owner.map(|o| o.id), tenant: tenant.into() })
        })
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// One tenant (operator).
#[utoipa::path(tag = "tenants", responses((status = 200, body = TenantView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/tenants/{id}")]
pub async fn get_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<TenantView>> {
    caller.require_operator()?;
    let id = TenantId::parse(&id).ok_or(ApiError::NotFound { what: "tenant" })?;
    let tenant = state
        .db
        .run(move |c| Tenant::find(c, &id))
        .await
        .not_found_as("tenant")?;
    Ok(web::Json(tenant.into()))
}

/// Renames, suspends or toggles signup of a tenant (operator).
#[utoipa::path(tag = "tenants", request_body = UpdateTenant, responses((status = 200, body = TenantView)), security(("jwt" = [])))]
#[patch("/tenants/{id}")]
pub async fn update_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<UpdateTenant>,
) -> ApiResult<web::Json<TenantView>> {
    caller.require_operator()?;
    let id = TenantId::parse(&id).ok_or(ApiError::NotFound { what: "tenant" })?;
    let body = body.into_inner();
    let changes = TenantChanges {
        name: body
            .name
            .as_deref()
            .map(|n| validate::name("name", n, 200))
            .transpose()?,
        allow_signup: body.allow_signup,
        status: body.status,
        limits: body
            .limits
            .map(|l| validate::limits("limits", &l).map(|_| l.to_json()))
            .transpose()?,
        wholesale_prices: body
            .wholesale_prices
            .as_ref()
            .map(|p| validate::prices("wholesale_prices", p).map(|_| p.to_json()))
            .transpose()?,
        updated_at: None,
        log_prompts: None,
    };
    let detail = serde_json::json!({"name": changes.name, "allow_signup": changes.allow_signup,
        "status": changes.status, "limits": body.limits, "wholesale_prices": body.wholesale_prices});
    let tenant = apply(
        &state,
        id,
        changes,
        (caller.actor(&meta), "tenant.update", detail),
    )
    .await?;
    Ok(web::Json(tenant.into()))
}

/// Writes `changes` to tenant `id` with its audit entry (`action`, `detail`) in one transaction,
/// then drops every replica's cached keys of the tenant (what they allow may have changed).
async fn apply(
    state: &AppState,
    id: TenantId,
    changes: TenantChanges,
    (actor, action, detail): (crate::models::audit::Actor, &'static str, serde_json::Value),
) -> ApiResult<Tenant> {
    let tenant = state
        .db
        .write(move |c| {
            let tenant = Tenant::update(c, &id, changes).not_found_as("tenant")?;
            AuditEntry::record(
                c,
                &actor,
                Some(&id),
                action,
                ("tenant", id.as_str()),
                detail,
            )?;
            Ok::<_, ApiError>(tenant)
        })
        .await?;
    state
        .invalidator
        .publish(Invalidation::Tenant(tenant.id.clone()))
        .await;
    Ok(tenant)
}

/// A tenant's own settings.
#[derive(Serialize, ToSchema)]
pub struct TenantSettingsView {
    pub object: &'static str,
    pub tenant_id: TenantId,
    /// Prompts of this tenant's requests are written to the gateway's log (at `info`, with the
    /// request's id, tenant and key prefix). Off by default: prompts are never logged.
    pub log_prompts: bool,
}

impl From<Tenant> for TenantSettingsView {
    fn from(t: Tenant) -> Self {
        Self {
            object: "tenant_settings",
            tenant_id: t.id,
            log_prompts: t.log_prompts,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantSettings {
    /// Opt in to (or out of) prompt logging.
    pub log_prompts: Option<bool>,
}

/// The caller's tenant's settings (owner, admin).
#[utoipa::path(tag = "tenants", responses((status = 200, body = TenantSettingsView), (status = 403, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/tenant/settings")]
pub async fn get_tenant_settings(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<web::Json<TenantSettingsView>> {
    let id = caller.managed_tenant()?.clone();
    let tenant = state
        .db
        .run(move |c| Tenant::find(c, &id))
        .await
        .not_found_as("tenant")?;
    Ok(web::Json(tenant.into()))
}

/// Changes the caller's tenant's settings (owner, admin); audited, and in force on every replica
/// at once.
#[utoipa::path(tag = "tenants", request_body = UpdateTenantSettings, responses((status = 200, body = TenantSettingsView), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[patch("/tenant/settings")]
pub async fn update_tenant_settings(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<UpdateTenantSettings>,
) -> ApiResult<web::Json<TenantSettingsView>> {
    let id = caller.managed_tenant()?.clone();
    let changes = TenantChanges {
        log_prompts: body.log_prompts,
        ..Default::default()
    };
    let detail = serde_json::json!({"log_prompts": body.log_prompts});
    let tenant = apply(
        &state,
        id,
        changes,
        (caller.actor(&meta), "tenant.settings", detail),
    )
    .await?;
    Ok(web::Json(tenant.into()))
}
