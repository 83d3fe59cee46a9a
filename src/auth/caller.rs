//! Request extractors: [`Caller`] (a dashboard user, from a JWT, as the user stands now), [`KeyCaller`] (an application,
//! from an API key) and [`RequestMeta`] (client IP and request id, for audit and rate limits).
//! Role and tenant checks live here so every handler states its requirement in one call.

use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use diesel::OptionalExtension;

use crate::auth::jwt::{Claims, credential_stamp};
use crate::auth::key_cache::KeyEntry;
use crate::domain::{AccountId, ActiveStatus, Role, TenantId, UserId, UserStatus};
use crate::error::{ApiError, ApiResult};
use crate::http::request_id::RequestId;
use crate::models::api_key::{ApiKey, KeyState};
use crate::models::audit::Actor;
use crate::models::plan::Plan;
use crate::models::user::User;
use crate::state::AppState;

/// An authenticated dashboard user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub role: Role,
    pub tenant_id: Option<TenantId>,
    pub account_id: Option<AccountId>,
}

impl Caller {
    pub fn require_operator(&self) -> ApiResult<()> {
        match self.role {
            Role::Operator => Ok(()),
            _ => Err(ApiError::forbidden(
                "this endpoint is for the platform operator",
            )),
        }
    }

    /// The caller's tenant; operators act on tenants through `/tenants`, not as one.
    pub fn tenant(&self) -> ApiResult<&TenantId> {
        self.tenant_id.as_ref().ok_or_else(|| {
            ApiError::forbidden("this endpoint acts within a tenant; sign in as a tenant user")
        })
    }

    /// The tenant, if the caller is its owner or an admin.
    pub fn managed_tenant(&self) -> ApiResult<&TenantId> {
        let tenant = self.tenant()?;
        if self.role.manages_tenant() {
            Ok(tenant)
        } else {
            Err(ApiError::forbidden("requires the owner or admin role"))
        }
    }

    /// The tenant, if the caller may read tenant-wide data (owner, admin, finance).
    pub fn tenant_reader(&self) -> ApiResult<&TenantId> {
        let tenant = self.tenant()?;
        if self.role.manages_tenant() || self.role == Role::Finance {
            Ok(tenant)
        } else {
            Err(ApiError::forbidden(
                "requires the owner, admin or finance role",
            ))
        }
    }

    /// The account a developer is confined to; `None` for tenant-wide roles.
    pub fn account_scope(&self) -> Option<&AccountId> {
        match self.role {
            Role::Developer => self.account_id.as_ref(),
            _ => None,
        }
    }

    pub fn actor(&self, meta: &RequestMeta) -> Actor {
        Actor {
            user_id: Some(self.user_id.clone()),
            role: Some(self.role),
            ip: Some(meta.ip.clone()),
            request_id: Some(meta.request_id.clone()),
        }
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?.clone();
            let token = bearer(&req).ok_or_else(|| {
                ApiError::unauthorized(
                    "missing_credentials",
                    "send `Authorization: Bearer <access token>`",
                )
            })?;
            if token.starts_with(crate::auth::api_key::PREFIX) {
                return Err(ApiError::unauthorized(
                    "invalid_token",
                    "API keys authenticate the data plane (/v1); the management API needs an access token",
                ));
            }
            let claims = state.sessions.verify(token)?;
            let caller = Self::as_now(&state, claims).await?;
            if let Some(tenant) = &caller.tenant_id {
                crate::http::span::tag(&req, tenant, None);
            }
            Ok(caller)
        })
    }
}

impl Caller {
    /// The token's user as they stand now (one primary-key read per management request): a
    /// disabled or deleted user is refused, and role, tenant and account come from the user, not
    /// from the token, so a demotion or a move takes effect on the next request, on every replica.
    async fn as_now(state: &AppState, claims: Claims) -> ApiResult<Self> {
        let id = claims.sub;
        let user = state
            .db
            .run(move |c| User::find(c, &id).optional())
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized("invalid_token", "the access token is not valid")
            })?;
        if user.status != UserStatus::Active {
            return Err(ApiError::unauthorized(
                "user_disabled",
                "this user has been disabled; ask an admin of your tenant",
            ));
        }
        // Issued before the password changed (tokens from before stamps existed carry none).
        if claims
            .pwd
            .is_some_and(|stamp| stamp != credential_stamp(&user.password_hash))
        {
            return Err(ApiError::unauthorized(
                "token_revoked",
                "the password changed since this token was issued; sign in again",
            ));
        }
        Ok(Caller {
            user_id: user.id,
            role: user.role,
            tenant_id: user.tenant_id,
            account_id: user.account_id,
        })
    }
}

fn state(req: &HttpRequest) -> ApiResult<&AppState> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::internal_msg("AppState missing"))
}

/// An application authenticated by an API key that is active right now, with the limits in force.
#[derive(Clone)]
pub struct KeyCaller {
    pub entry: Arc<KeyEntry>,
}

impl KeyCaller {
    pub fn key(&self) -> &ApiKey {
        &self.entry.key
    }
}

/// The cached entry for a presented secret's hash, loading (and caching) it on a miss; concurrent
/// misses on one hash share one lookup ([`Flight`](crate::auth::key_cache::Flight)).
async fn key_entry(state: &AppState, hash: String) -> ApiResult<Option<Arc<KeyEntry>>> {
    if let Some(entry) = state.key_cache.get(&hash) {
        return Ok(Some(entry));
    }
    let flight = state.key_cache.flight(&hash);
    let loaded = flight
        .get_or_try_init(|| load_entry(state, hash.clone()))
        .await
        .cloned();
    state.key_cache.land(&hash, &flight);
    loaded
}

/// Looks the hash up in the database and caches what it finds (see [`key_entry`]).
async fn load_entry(state: &AppState, hash: String) -> ApiResult<Option<Arc<KeyEntry>>> {
    state.metrics.key_lookups.inc();
    let generation = state.key_cache.generation();
    let now = crate::db::now();
    let lookup = hash.clone();
    let loaded = state
        .db
        .run(move |c| {
            let Some(key) = ApiKey::find_by_hash(c, &lookup, now)? else {
                return Ok(None);
            };
            let context = Plan::context_for(c, &key)?;
            Ok(Some((key, context)))
        })
        .await?;
    let Some((key, context)) = loaded else {
        return Ok(None);
    };
    let entry = Arc::new(KeyEntry::new(key, context, &state.key_cache));
    // A previous (rotated-out) secret stays valid only until its grace period ends: not cached.
    if entry.key.secret_hash == hash {
        state.key_cache.insert(hash, entry.clone(), generation);
    }
    Ok(Some(entry))
}

impl KeyCaller {
    /// Authenticates `presented` (an API key secret) as it stands now: active, not expired, its
    /// account and tenant not suspended, with the limits in force (cached; every change to the
    /// key, its plan, account or tenant invalidates the cache). Used per request, and per message
    /// on a WebSocket.
    pub async fn authenticate(state: &AppState, presented: &str) -> ApiResult<Self> {
        let invalid = || ApiError::unauthorized("invalid_api_key", "the API key is not valid");
        let hash =
            crate::auth::api_key::lookup_hash(state.pepper(), presented).ok_or_else(invalid)?;
        let now = crate::db::now();
        let entry = key_entry(state, hash).await?.ok_or_else(invalid)?;
        let key = &entry.key;
        match key.state(now) {
            KeyState::Active => {}
            KeyState::Revoked => {
                return Err(ApiError::unauthorized(
                    "api_key_revoked",
                    "the API key has been revoked",
                ));
            }
            KeyState::Expired => {
                return Err(ApiError::unauthorized(
                    "api_key_expired",
                    "the API key has expired",
                ));
            }
        }
        if entry.context.account_status == ActiveStatus::Suspended
            || entry.context.tenant_status == ActiveStatus::Suspended
        {
            return Err(ApiError::Forbidden {
                code: "account_suspended",
                message: "the account this key belongs to is suspended".into(),
            });
        }
        if entry.touch_due(now) {
            let (db, id) = (state.db.clone(), key.id.clone());
            actix_web::rt::spawn(async move {
                // A write: under the SQLite write lock like every other (a write beside a
                // transaction that read first makes that transaction fail with BUSY).
                let touched = db
                    .write(move |c| ApiKey::touch_used(c, &id, now).map_err(ApiError::from))
                    .await;
                if let Err(e) = touched {
                    tracing::warn!(error = %e, "could not record API key use");
                }
            });
        }
        Ok(KeyCaller { entry })
    }
}

impl FromRequest for KeyCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?.clone();
            let presented = bearer(&req).ok_or_else(|| {
                ApiError::unauthorized(
                    "missing_api_key",
                    "send `Authorization: Bearer tg_…` with an API key",
                )
            })?;
            let caller = Self::authenticate(&state, presented).await?;
            let key = caller.key();
            crate::http::span::tag(&req, &key.tenant_id, Some(&key.prefix));
            Ok(caller)
        })
    }
}

/// The API key secret a request presents (`Authorization: Bearer …`).
pub fn presented_key(req: &HttpRequest) -> Option<String> {
    bearer(req).map(str::to_owned)
}

/// Client address and request id of the current request.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: String,
    pub request_id: String,
}

impl RequestMeta {
    pub fn of(req: &HttpRequest) -> Self {
        let trust_forwarded = state(req)
            .map(|s| s.config.http.trust_forwarded_for)
            .unwrap_or(false);
        let forwarded = trust_forwarded
            .then(|| {
                req.headers()
                    .get("x-forwarded-for")?
                    .to_str()
                    .ok()?
                    .split(',')
                    .next()
                    .map(str::trim)
            })
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let ip = forwarded
            .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Self { ip, request_id }
    }
}

impl FromRequest for RequestMeta {
    type Error = ApiError;
    type Future = Ready<ApiResult<Self>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self::of(req)))
    }
}
