//! `auth/signup`, `auth/login`, `auth/refresh`, `auth/logout` and `me`.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::auth::jwt::credential_stamp;
use crate::auth::password;
use crate::domain::normalize_email;
use crate::domain::{Role, UserId, UserStatus};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::models::account::Account;
use crate::models::audit::{Actor, AuditEntry};
use crate::models::refresh_token::{Consumed, RefreshToken};
use crate::models::tenant::Tenant;
use crate::models::user::User;
use crate::routes::accounts::AccountView;
use crate::routes::tenants::TenantView;
use crate::routes::users::UserView;
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Slug of the tenant to sign up with; it must allow self-serve signup.
    #[schema(min_length = 3, max_length = 40)]
    pub tenant: String,
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
    #[schema(min_length = 10, max_length = 256)]
    pub password: String,
    /// Name of the account created for the new developer (default: the email).
    #[schema(min_length = 1, max_length = 200)]
    pub account_name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Tenant slug; omit to sign in as the platform operator.
    pub tenant: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(min_length = 1, max_length = 256)]
    pub current_password: String,
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: each refresh returns a new one.
    pub refresh_token: String,
    pub user: UserView,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub tenant: Option<TenantView>,
    pub account: Option<AccountView>,
}

/// Issues an access token and a refresh token (new family unless `family` is given).
async fn issue_tokens(
    state: &AppState,
    user: User,
    family: Option<String>,
) -> ApiResult<TokenResponse> {
    let access = state.sessions.issue(
        (user.id.clone(), credential_stamp(&user.password_hash)),
        user.role,
        user.tenant_id.clone(),
        user.account_id.clone(),
    )?;
    let (pepper, ttl, id) = (
        state.pepper().to_vec(),
        state.sessions.refresh_ttl_secs,
        user.id.clone(),
    );
    let refresh_token = state
        .db
        .write(move |c| RefreshToken::issue(c, &pepper, &id, family, ttl).map_err(ApiError::from))
        .await?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: state.sessions.access_ttl_secs,
        refresh_token,
        user: UserView::from(user),
    })
}

/// Self-serve developer signup: creates an account and its developer user, and signs them in.
#[utoipa::path(tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = TokenResponse), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
#[post("/auth/signup")]
pub async fn signup(
    state: web::Data<AppState>,
    meta: RequestMeta,
    body: Json<SignupRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let email = validate::email("email", &body.email)?;
    password::check_policy(&body.password)?;
    let account_name = validate::name(
        "account_name",
        body.account_name.as_deref().unwrap_or(&email),
        200,
    )?;
    state.login_limiter.check(&meta.ip, &email)?;
    let slug = body.tenant.clone();
    let tenant = state
        .db
        .run(move |c| Tenant::find_by_slug(c, &slug))
        .await
        .not_found_as("tenant")?;
    if !tenant.allow_signup {
        return Err(ApiError::Forbidden {
            code: "signup_disabled",
            message: "this tenant does not allow self-serve signup".into(),
        });
    }
    let hash = password::hash(body.password).await?;
    let user = state
        .db
        .write(move |c| {
            let (account, user) =
                User::create_developer_with_account(c, &tenant.id, account_name, &email, hash)
                    .conflict_as("email_taken", "a user with this email already exists")?;
            let actor = Actor {
                user_id: Some(user.id.clone()),
                role: Some(Role::Developer),
                ip: Some(meta.ip),
                request_id: Some(meta.request_id),
            };
            AuditEntry::record(
                c,
                &actor,
                Some(&tenant.id),
                "user.signup",
                ("user", user.id.as_str()),
                serde_json::json!({"account_id": account.id, "email": user.email}),
            )?;
            Ok::<_, ApiError>(user)
        })
        .await?;
    Ok(HttpResponse::Created().json(issue_tokens(&state, user, None).await?))
}

/// Signs in with email and password. Rate limited per client IP and per email.
#[utoipa::path(tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    meta: RequestMeta,
    body: Json<LoginRequest>,
) -> ApiResult<web::Json<TokenResponse>> {
    let body = body.into_inner();
    // The brake and the lookup see one form of the address (whitespace or case cannot dodge it).
    let (email, slug) = (normalize_email(&body.email), body.tenant.clone());
    state.login_limiter.check(&meta.ip, &email)?;
    let user = state
        .db
        .run(move |c| {
            let tenant = match slug {
                Some(slug) => match Tenant::find_by_slug(c, &slug) {
                    Ok(t) => Some(t.id),
                    Err(diesel::result::Error::NotFound) => return Ok(None),
                    Err(e) => return Err(e),
                },
                None => None,
            };
            User::find_for_login(c, tenant.as_ref(), &email)
        })
        .await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let valid = password::verify(body.password, stored).await?;
    let user = match user {
        Some(u) if valid && u.status == UserStatus::Active => u,
        _ => {
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "email or password is incorrect",
            ));
        }
    };
    let id = user.id.clone();
    state
        .db
        .write(move |c| User::touch_login(c, &id).map_err(ApiError::from))
        .await?;
    Ok(web::Json(issue_tokens(&state, user, None).await?))
}

/// Exchanges a refresh token for a new access token and a new refresh token. A refresh token
/// works once: presenting it again revokes every token of its login.
#[utoipa::path(tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody)))]
#[post("/auth/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    body: Json<RefreshRequest>,
) -> ApiResult<web::Json<TokenResponse>> {
    let (pepper, secret) = (state.pepper().to_vec(), body.into_inner().refresh_token);
    let consumed = state
        .db
        .write(move |c| RefreshToken::consume(c, &pepper, &secret).map_err(ApiError::from))
        .await?;
    let (user_id, family) = match consumed {
        Consumed::Fresh { user_id, family_id } => (user_id, family_id),
        Consumed::Reused => {
            return Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was already used; sign in again",
            ));
        }
        Consumed::Invalid => {
            return Err(ApiError::unauthorized(
                "invalid_refresh_token",
                "the refresh token is not valid",
            ));
        }
    };
    let user = load_active_user(&state, user_id, &family).await?;
    Ok(web::Json(issue_tokens(&state, user, Some(family)).await?))
}

async fn load_active_user(state: &AppState, id: UserId, family: &str) -> ApiResult<User> {
    let family = family.to_owned();
    state
        .db
        .write(move |c| {
            let user = User::find(c, &id)?;
            if user.status != UserStatus::Active {
                RefreshToken::revoke_family(c, &family)?;
                return Ok(None);
            }
            Ok::<_, ApiError>(Some(user))
        })
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_refresh_token", "the refresh token is not valid")
        })
}

/// Signs out: revokes the refresh token's whole family. Access tokens expire on their own.
#[utoipa::path(tag = "auth", request_body = RefreshRequest, responses((status = 204)))]
#[post("/auth/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    body: Json<RefreshRequest>,
) -> ApiResult<HttpResponse> {
    let (pepper, secret) = (state.pepper().to_vec(), body.into_inner().refresh_token);
    state
        .db
        .write(move |c| RefreshToken::revoke_by_secret(c, &pepper, &secret).map_err(ApiError::from))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Changes the signed-in user's password. Every session of the user ends: refresh tokens are
/// revoked, and access tokens issued before are refused from the next request (`token_revoked`);
/// the answer carries fresh tokens for this one. Rate limited like login.
#[utoipa::path(tag = "auth", request_body = ChangePassword,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/me/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<ChangePassword>,
) -> ApiResult<web::Json<TokenResponse>> {
    let body = body.into_inner();
    password::check_policy(&body.new_password).map_err(|_| {
        ApiError::invalid_param(
            "new_password",
            format!(
                "new_password must be {} to {} characters",
                password::MIN_LEN,
                password::MAX_LEN
            ),
        )
    })?;
    let id = caller.user_id.clone();
    let user = state.db.run(move |c| User::find(c, &id)).await?;
    state.login_limiter.check(&meta.ip, &user.email)?;
    if !password::verify(body.current_password, Some(user.password_hash.clone())).await? {
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the current password is not correct",
        ));
    }
    let hash = password::hash(body.new_password).await?;
    let (actor, tenant, id) = (
        caller.actor(&meta),
        caller.tenant_id.clone(),
        caller.user_id.clone(),
    );
    let user = state
        .db
        .write(move |c| {
            let user = User::set_password(c, &id, &hash)?;
            RefreshToken::revoke_user(c, &id)?;
            AuditEntry::record(
                c,
                &actor,
                tenant.as_ref(),
                "user.password_change",
                ("user", id.as_str()),
                serde_json::json!({}),
            )?;
            Ok::<_, ApiError>(user)
        })
        .await?;
    Ok(web::Json(issue_tokens(&state, user, None).await?))
}

/// The signed-in user, their tenant and (for developers) their account.
#[utoipa::path(tag = "auth", responses((status = 200, body = MeResponse), (status = 401, body = crate::error::ErrorBody)),
    security(("jwt" = [])))]
#[get("/me")]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> ApiResult<web::Json<MeResponse>> {
    let (user, tenant, account) = state
        .db
        .run(move |c| {
            let user = User::find(c, &caller.user_id)?;
            let tenant = user
                .tenant_id
                .as_ref()
                .map(|t| Tenant::find(c, t))
                .transpose()?;
            let account = match (&user.tenant_id, &user.account_id) {
                (Some(t), Some(a)) => Some(Account::find_in_tenant(c, t, a)?),
                _ => None,
            };
            Ok((user, tenant, account))
        })
        .await?;
    Ok(web::Json(MeResponse {
        user: user.into(),
        tenant: tenant.map(Into::into),
        account: account.map(Into::into),
    }))
}
