//! `plans`: a tenant's tiers of limits. Owners and admins manage them; finance reads them.
//! Changing a plan reaches every replica's cached keys within a second (push invalidation).

use actix_web::{HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::auth::key_cache::Invalidation;
use crate::billing::amount::{self, Sign};
use crate::billing::prices::PriceBook;
use crate::domain::{Nano, PlanId, TenantId};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::limits::LimitSet;
use crate::models::audit::AuditEntry;
use crate::models::plan::{Plan, PlanChanges};
use crate::models::{List, Page, utc};
use crate::state::AppState;
use crate::validate;

#[derive(Serialize, ToSchema)]
pub struct PlanView {
    pub id: PlanId,
    pub object: &'static str,
    pub tenant_id: TenantId,
    pub name: String,
    /// Limits of each key of an account on this plan (a key may narrow them).
    pub key_limits: LimitSet,
    /// Limits of the account as a whole (all its keys together).
    pub account_limits: LimitSet,
    /// Accounts without a plan are on the tenant's default plan.
    pub is_default: bool,
    /// Retail prices per model (`*`: any other model) the accounts on this plan pay.
    pub prices: PriceBook,
    /// The most one request may hold against an account's balance at admission (nano-units);
    /// `null`: the full worst case (prompt estimate + `max_tokens` at these prices).
    #[schema(value_type = Option<i64>)]
    pub hold_cap_nano: Option<Nano>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Plan> for PlanView {
    fn from(p: Plan) -> Self {
        Self {
            key_limits: p.key_limits(),
            account_limits: p.account_limits(),
            prices: PriceBook::parse(&p.prices).unwrap_or_default(),
            hold_cap_nano: p.hold_cap_nano,
            id: p.id,
            object: "plan",
            tenant_id: p.tenant_id,
            name: p.name,
            is_default: p.is_default,
            created_at: utc(p.created_at),
            updated_at: utc(p.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default)]
    pub key_limits: LimitSet,
    #[serde(default)]
    pub account_limits: LimitSet,
    /// Make this the tenant's default plan (replacing the current one).
    #[serde(default)]
    pub is_default: bool,
    /// Retail prices per model, nano-units; default: free.
    #[serde(default)]
    pub prices: PriceBook,
    /// Cap on one request's balance hold, nano-units (positive); default: no cap.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub hold_cap_nano: Option<Nano>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    pub key_limits: Option<LimitSet>,
    pub account_limits: Option<LimitSet>,
    /// `true` makes it the default plan; a default plan stops being one only when another becomes it.
    pub is_default: Option<bool>,
    /// Replaces the retail prices.
    pub prices: Option<PriceBook>,
    /// `null` removes the cap.
    #[serde(default, deserialize_with = "validate::nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub hold_cap_nano: Option<Option<Nano>>,
}

fn hold_cap(value: Option<Nano>) -> ApiResult<Option<Nano>> {
    value
        .map(|v| amount::input("hold_cap_nano", v, Sign::Positive))
        .transpose()
}

fn checked(field: &str, limits: Option<LimitSet>) -> ApiResult<Option<String>> {
    limits
        .map(|l| validate::limits(field, &l).map(|_| l.to_json()))
        .transpose()
}

/// Lists the tenant's plans (owner, admin, finance).
#[utoipa::path(tag = "plans", params(Page), responses((status = 200, body = List<PlanView>)), security(("jwt" = [])))]
#[get("/plans")]
pub async fn list_plans(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
) -> ApiResult<web::Json<List<PlanView>>> {
    let tenant = caller.tenant_reader()?.clone();
    let (limit, after) = (page.limit()?, page.after()?);
    let rows = state
        .db
        .run(move |c| Plan::list(c, &tenant, &after, limit))
        .await?;
    Ok(web::Json(List::from_rows(rows, limit, PlanView::from)))
}

/// Creates a plan (owner, admin). Honours `Idempotency-Key`.
#[utoipa::path(tag = "plans", request_body = CreatePlan,
    responses((status = 201, body = PlanView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/plans")]
pub async fn create_plan(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CreatePlan>,
) -> ApiResult<HttpResponse> {
    let tenant = caller.managed_tenant()?.clone();
    let body = body.into_inner();
    validate::limits("key_limits", &body.key_limits)?;
    validate::limits("account_limits", &body.account_limits)?;
    let name = validate::name("name", &body.name, 100)?;
    validate::prices("prices", &body.prices)?;
    let mut plan = Plan::new(
        tenant.clone(),
        name,
        (body.key_limits, body.account_limits),
        &body.prices,
    );
    plan.hold_cap_nano = hold_cap(body.hold_cap_nano)?;
    let (actor, is_default) = (caller.actor(&meta), body.is_default);
    let plan = state
        .db
        .write(move |c| {
            plan.insert(c)
                .conflict_as("plan_exists", "a plan with this name already exists")?;
            if is_default {
                Plan::make_default(c, &tenant, &plan.id)?;
            }
            AuditEntry::record(
                c,
                &actor,
                Some(&tenant),
                "plan.create",
                ("plan", plan.id.as_str()),
                serde_json::json!({"name": plan.name, "key_limits": plan.key_limits(),
                    "account_limits": plan.account_limits(), "is_default": is_default}),
            )?;
            Ok::<_, ApiError>(Plan::find_in_tenant(c, &tenant, &plan.id)?)
        })
        .await?;
    if plan.is_default {
        state
            .invalidator
            .publish(Invalidation::Tenant(plan.tenant_id.clone()))
            .await;
    }
    Ok(HttpResponse::Created().json(PlanView::from(plan)))
}

/// One plan of the caller's tenant (owner, admin, finance).
#[utoipa::path(tag = "plans", responses((status = 200, body = PlanView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/plans/{id}")]
pub async fn get_plan(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<PlanView>> {
    let tenant = caller.tenant_reader()?.clone();
    let id = PlanId::parse(&id).ok_or(ApiError::NotFound { what: "plan" })?;
    let plan = state
        .db
        .run(move |c| Plan::find_in_tenant(c, &tenant, &id))
        .await
        .not_found_as("plan")?;
    Ok(web::Json(plan.into()))
}

/// Renames a plan, changes its limits or makes it the default (owner, admin). Every key on the
/// plan follows within a second, on every replica.
#[utoipa::path(tag = "plans", request_body = UpdatePlan,
    responses((status = 200, body = PlanView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[patch("/plans/{id}")]
pub async fn update_plan(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<UpdatePlan>,
) -> ApiResult<web::Json<PlanView>> {
    let tenant = caller.managed_tenant()?.clone();
    let id = PlanId::parse(&id).ok_or(ApiError::NotFound { what: "plan" })?;
    let body = body.into_inner();
    if body.is_default == Some(false) {
        return Err(ApiError::invalid_param(
            "is_default",
            "make another plan the default instead",
        ));
    }
    let changes = PlanChanges {
        name: body
            .name
            .as_deref()
            .map(|n| validate::name("name", n, 100))
            .transpose()?,
        key_limits: checked("key_limits", body.key_limits)?,
        account_limits: checked("account_limits", body.account_limits)?,
        is_default: None,
        updated_at: None,
        prices: match &body.prices {
            Some(p) => validate::prices("prices", p).map(|_| Some(p.to_json()))?,
            None => None,
        },
        hold_cap_nano: body.hold_cap_nano.map(hold_cap).transpose()?,
    };
    let detail = serde_json::json!({"name": changes.name, "key_limits": body.key_limits,
        "account_limits": body.account_limits, "is_default": body.is_default, "prices": body.prices,
        "hold_cap_nano": body.hold_cap_nano});
    let actor = caller.actor(&meta);
    let plan = state
        .db
        .write(move |c| {
            Plan::update(c, &tenant, &id, changes)
                .not_found_as("plan")
                .conflict_as("plan_exists", "a plan with this name already exists")?;
            if body.is_default == Some(true) {
                Plan::make_default(c, &tenant, &id)?;
            }
            AuditEntry::record(
                c,
                &actor,
                Some(&tenant),
                "plan.update",
                ("plan", id.as_str()),
                detail,
            )?;
            Ok::<_, ApiError>(Plan::find_in_tenant(c, &tenant, &id)?)
        })
        .await?;
    state
        .invalidator
        .publish(Invalidation::Tenant(plan.tenant_id.clone()))
        .await;
    Ok(web::Json(plan.into()))
}
