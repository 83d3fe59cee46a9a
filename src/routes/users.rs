//! `users`: a tenant's dashboard users, managed by its owner and admins.

use actix_web::{HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::auth::password;
use crate::domain::{AccountId, Role, TenantId, UserId, UserStatus};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::models::account::Account;
use crate::models::audit::AuditEntry;
use crate::models::refresh_token::RefreshToken;
use crate::models::user::{User, UserChanges};
use crate::models::{List, Page, utc};
use crate::state::AppState;
use crate::validate;

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub object: &'static str,
    pub tenant_id: Option<TenantId>,
    pub account_id: Option<AccountId>,
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            object: "user",
            tenant_id: u.tenant_id,
            account_id: u.account_id,
            email: u.email,
            role: u.role,
            status: u.status,
            created_at: utc(u.created_at),
            last_login_at: u.last_login_at.map(utc),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
    #[schema(min_length = 10, max_length = 256)]
    pub password: String,
    /// owner, admin, finance or developer. Only an owner may create an owner.
    pub role: Role,
    /// Required for (and only for) developers.
    pub account_id: Option<AccountId>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    pub account_id: Option<AccountId>,
}

/// Checks that `caller` may give `role` (with `account`) to a user of its tenant.
fn check_role_grant(caller: &Caller, role: Role, account: Option<&AccountId>) -> ApiResult<()> {
    if role == Role::Operator {
        return Err(ApiError::invalid_param(
            "role",
            "the operator role cannot be granted here",
        ));
    }
    if role == Role::Owner && caller.role != Role::Owner {
        return Err(ApiError::forbidden(
            "only an owner may grant the owner role",
        ));
    }
    if (role == Role::Developer) != account.is_some() {
        return Err(ApiError::invalid_param(
            "account_id",
            "account_id is required for developers and only for them",
        ));
    }
    Ok(())
}

/// Lists the tenant's users (owner, admin).
#[utoipa::path(tag = "users", params(Page), responses((status = 200, body = List<UserView>)), security(("jwt" = [])))]
#[get("/users")]
pub async fn list_users(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
) -> ApiResult<web::Json<List<UserView>>> {
    let tenant = caller.managed_tenant()?.clone();
    let (after, limit) = (page.after()?, page.limit()?);
    let rows = state
        .db
        .run(move |c| User::list(c, &tenant, &after, limit))
        .await?;
    Ok(web::Json(List::from_rows(rows, limit, UserView::from)))
}

/// Adds a user to the tenant (owner, admin). Honours `Idempotency-Key`.
#[utoipa::path(tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/users")]
pub async fn create_user(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CreateUser>,
) -> ApiResult<HttpResponse> {
    let tenant = caller.managed_tenant()?.clone();
    let body = body.into_inner();
    let email = validate::email("email", &body.email)?;
    check_role_grant(&caller, body.role, body.account_id.as_ref())?;
    password::check_policy(&body.password)?;
    let hash = password::hash(body.password).await?;
    let user = User::new(
        Some(tenant.clone()),
        body.account_id,
        &email,
        hash,
        body.role,
    );
    let actor = caller.actor(&meta);
    let user = state
        .db
        .write(move |c| {
            if let Some(account) = &user.account_id {
                Account::find_in_tenant(c, &tenant, account).not_found_as("account")?;
            }
            user.insert(c).conflict_as("email_taken", "a user with this email already exists")?;
            AuditEntry::record(c, &actor, Some(&tenant), "user.create", ("user", user.id.as_str()),
                serde_json::json!({"email": user.email, "role": user.role, "account_id": user.account_id}))?;
            Ok::<_, ApiError>(user)
        })
        .await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// One user of the tenant (owner, admin).
#[utoipa::path(tag = "users", responses((status = 200, body = UserView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/users/{id}")]
pub async fn get_user(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<UserView>> {
    let tenant = caller.managed_tenant()?.clone();
    let id = UserId::parse(&id).ok_or(ApiError::NotFound { what: "user" })?;
    let user = state
        .db
        .run(move |c| User::find_in_tenant(c, &tenant, &id))
        .await
        .not_found_as("user")?;
    Ok(web::Json(user.into()))
}

/// Changes a user's role, account or status (owner, admin). Disabling signs the user out.
#[utoipa::path(tag = "users", request_body = UpdateUser, responses((status = 200, body = UserView)), security(("jwt" = [])))]
#[patch("/users/{id}")]
pub async fn update_user(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<UpdateUser>,
) -> ApiResult<web::Json<UserView>> {
    let tenant = caller.managed_tenant()?.clone();
    let id = UserId::parse(&id).ok_or(ApiError::NotFound { what: "user" })?;
    if id == caller.user_id {
        return Err(ApiError::forbidden(
            "you cannot change your own role or status",
        ));
    }
    let body = body.into_inner();
    let actor = caller.actor(&meta);
    let user = state
        .db
        .write(move |c| {
            let current = User::find_in_tenant(c, &tenant, &id).not_found_as("user")?;
            if current.role == Role::Owner && caller.role != Role::Owner {
                return Err(ApiError::forbidden("only an owner may change an owner"));
            }
            let role = body.role.unwrap_or(current.role);
            let account = if role == Role::Developer { body.account_id.clone().or(current.account_id.clone()) } else { None };
            check_role_grant(&caller, role, account.as_ref())?;
            if let Some(a) = &account {
                Account::find_in_tenant(c, &tenant, a).not_found_as("account")?;
            }
            let changes = UserChanges { role: Some(role), account_id: Some(account), status: body.status, ..Default::default() };
            let user = User::update(c, &tenant, &id, changes)?;
            if user.status == UserStatus::Disabled {
                RefreshToken::revoke_user(c, &user.id)?;
            }
            AuditEntry::record(c, &actor, Some(&tenant), "user.update", ("user", id.as_str()),
                serde_json::json!({"role": user.role, "status": user.status, "account_id": user.account_id}))?;
            Ok(user)
        })
        .await?;
    Ok(web::Json(user.into()))
}
