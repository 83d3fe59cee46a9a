//! `accounts`: a tenant's customers. Owners and admins manage them, finance reads them, a
//! developer sees only their own.

use actix_web::{HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::auth::key_cache::Invalidation;
use crate::billing::amount::{self, Sign};
use crate::domain::{AccountId, ActiveStatus, BillingMode, Nano, PlanId, TenantId};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::models::account::{Account, AccountChanges};
use crate::models::audit::AuditEntry;
use crate::models::plan::Plan;
use crate::models::{List, Page, utc};
use crate::state::AppState;
use crate::validate;

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    pub id: AccountId,
    pub object: &'static str,
    pub tenant_id: TenantId,
    pub name: String,
    pub billing_mode: BillingMode,
    /// Nano-units (1e-9 of the currency unit) a postpaid account may owe.
    #[schema(value_type = i64)]
    pub credit_limit_nano: Nano,
    pub status: ActiveStatus,
    /// The account's plan; `null`: the tenant's default plan.
    pub plan_id: Option<PlanId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            object: "account",
            tenant_id: a.tenant_id,
            name: a.name,
            billing_mode: a.billing_mode,
            credit_limit_nano: a.credit_limit_nano,
            status: a.status,
            plan_id: a.plan_id,
            created_at: utc(a.created_at),
            updated_at: utc(a.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Default `prepaid`.
    pub billing_mode: Option<BillingMode>,
    /// Default 0.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_000_000_i64)]
    pub credit_limit_nano: Option<Nano>,
    /// Default: the tenant's default plan.
    pub plan_id: Option<PlanId>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub billing_mode: Option<BillingMode>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_000_000_i64)]
    pub credit_limit_nano: Option<Nano>,
    pub status: Option<ActiveStatus>,
    /// A plan of the tenant; `null` puts the account back on the default plan.
    #[serde(default, deserialize_with = "validate::nullable")]
    #[schema(value_type = Option<String>)]
    pub plan_id: Option<Option<PlanId>>,
}

fn credit_limit(value: Option<Nano>) -> ApiResult<Option<Nano>> {
    value
        .map(|v| amount::input("credit_limit_nano", v, Sign::NonNegative))
        .transpose()
}

/// Lists the tenant's accounts (a developer: only their own).
#[utoipa::path(tag = "accounts", params(Page), responses((status = 200, body = List<AccountView>)), security(("jwt" = [])))]
#[get("/accounts")]
pub async fn list_accounts(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
) -> ApiResult<web::Json<List<AccountView>>> {
    let tenant = caller.tenant()?.clone();
    let (after, limit, own) = (
        page.after()?,
        page.limit()?,
        caller.account_scope().cloned(),
    );
    let rows = state
        .db
        .run(move |c| match own {
            Some(own) if own.as_str() > after.as_str() => {
                Ok(vec![Account::find_in_tenant(c, &tenant, &own)?])
            }
            Some(_) => Ok(vec![]),
            None => Account::list(c, &tenant, &after, limit),
        })
        .await?;
    Ok(web::Json(List::from_rows(rows, limit, AccountView::from)))
}

/// Creates an account (owner, admin). Honours `Idempotency-Key`.
#[utoipa::path(tag = "accounts", request_body = CreateAccount, responses((status = 201, body = AccountView)), security(("jwt" = [])))]
#[post("/accounts")]
pub async fn create_account(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CreateAccount>,
) -> ApiResult<HttpResponse> {
    let tenant = caller.managed_tenant()?.clone();
    let body = body.into_inner();
    let mut account = Account::new(
        tenant,
        validate::name("name", &body.name, 200)?,
        body.billing_mode.unwrap_or(BillingMode::Prepaid),
        credit_limit(body.credit_limit_nano)?.unwrap_or_default(),
    );
    account.plan_id = body.plan_id;
    let actor = caller.actor(&meta);
    let account = state
        .db
        .write(move |c| {
            if let Some(plan) = &account.plan_id {
                Plan::find_in_tenant(c, &account.tenant_id, plan).not_found_as("plan")?;
            }
            account.insert(c)?;
            AuditEntry::record(c, &actor, Some(&account.tenant_id), "account.create", ("account", account.id.as_str()),
                serde_json::json!({"name": account.name, "billing_mode": account.billing_mode, "credit_limit_nano": account.credit_limit_nano}))?;
            Ok::<_, ApiError>(account)
        })
        .await?;
    Ok(HttpResponse::Created().json(AccountView::from(account)))
}

/// One account of the caller's tenant.
#[utoipa::path(tag = "accounts", responses((status = 200, body = AccountView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/accounts/{id}")]
pub async fn get_account(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<AccountView>> {
    let tenant = caller.tenant()?.clone();
    let id = AccountId::parse(&id).ok_or(ApiError::NotFound { what: "account" })?;
    if caller.account_scope().is_some_and(|own| *own != id) {
        return Err(ApiError::NotFound { what: "account" });
    }
    let account = state
        .db
        .run(move |c| Account::find_in_tenant(c, &tenant, &id))
        .await
        .not_found_as("account")?;
    Ok(web::Json(account.into()))
}

/// Renames, re-plans or suspends an account (owner, admin).
#[utoipa::path(tag = "accounts", request_body = UpdateAccount, responses((status = 200, body = AccountView)), security(("jwt" = [])))]
#[patch("/accounts/{id}")]
pub async fn update_account(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<UpdateAccount>,
) -> ApiResult<web::Json<AccountView>> {
    let tenant = caller.managed_tenant()?.clone();
    let id = AccountId::parse(&id).ok_or(ApiError::NotFound { what: "account" })?;
    let body = body.into_inner();
    let changes = AccountChanges {
        name: body
            .name
            .as_deref()
            .map(|n| validate::name("name", n, 200))
            .transpose()?,
        billing_mode: body.billing_mode,
        credit_limit_nano: credit_limit(body.credit_limit_nano)?,
        status: body.status,
        updated_at: None,
        plan_id: body.plan_id,
    };
    let detail = serde_json::json!({"name": changes.name, "billing_mode": changes.billing_mode,
        "credit_limit_nano": changes.credit_limit_nano, "status": changes.status, "plan_id": changes.plan_id});
    let actor = caller.actor(&meta);
    let account = state
        .db
        .write(move |c| {
            if let Some(Some(plan)) = &changes.plan_id {
                Plan::find_in_tenant(c, &tenant, plan).not_found_as("plan")?;
            }
            let account = Account::update(c, &tenant, &id, changes).not_found_as("account")?;
            AuditEntry::record(
                c,
                &actor,
                Some(&tenant),
                "account.update",
                ("account", id.as_str()),
                detail,
            )?;
            Ok::<_, ApiError>(account)
        })
        .await?;
    state
        .invalidator
        .publish(Invalidation::Tenant(account.tenant_id.clone()))
        .await;
    Ok(web::Json(account.into()))
}
