//! The one error type of the HTTP surface, mapped once to OpenAI-shaped JSON.
//!
//! Every handler returns [`ApiResult`]. A variant fixes the status, the OpenAI `type` and a stable
//! snake_case `code`; clients may branch on `code`, so NEVER rename one. Internal failures are logged
//! once here, with their source chain, and answered with a generic message: no SQL, paths or causes
//! ever reach a body.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input; `param` names the offending field when known.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Also what a caller gets for another tenant's objects: existence is never revealed.
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is larger than the {limit} byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The path exists, the method does not; `allow` lists the methods it answers.
    #[error("this path answers {allow} only")]
    MethodNotAllowed { allow: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// A rate limit (`rate_limit_exceeded`) or quota (`quota_exceeded`) refused the request.
    #[error("{}", .0.message)]
    LimitExceeded(Box<LimitRefusal>),
    /// The account's balance (or credit limit) cannot cover the request's hold: 402
    /// `insufficient_quota`; `limit` names what bit (`account balance`, `account credit limit`,
    /// `in-flight holds`).
    #[error("{message}")]
    InsufficientQuota { limit: String, message: String },
    #[error("rate limits cannot be checked right now; retry shortly")]
    LimiterUnavailable,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// This gateway has no validator worker to send requests to (none configured in
    /// `pool.workers`, none announcing itself through Redis).
    #[error("no validator worker is configured: set pool.workers or start `taogate worker`")]
    NoWorkers,
    /// The price book that would price this request is stored in a form this server cannot read:
    /// the request is refused rather than served free.
    #[error("pricing for this request is unavailable; retry shortly")]
    PricingUnavailable,
    /// The model is not served here (OpenAI: 404 `model_not_found`).
    #[error("the model `{model}` does not exist or you do not have access to it")]
    ModelNotFound { model: String },
    /// Every upstream failed before producing an answer.
    #[error("{message}")]
    Upstream { message: String },
    /// A payment provider (Stripe) could not be reached or refused a call: 502
    /// `payment_provider_error`; the message says what the provider said, never a secret.
    #[error("{message}")]
    PaymentProvider { message: String },
    /// No capacity within the bounded wait; retry after `retry_after_secs`.
    #[error("the service is overloaded; retry shortly")]
    Overloaded { retry_after_secs: u64 },
    /// Anything unexpected. The cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// `{"error": {...}}` as the OpenAI API and its SDKs expect it.
/// Which limit refused a request, and when it frees up.
#[derive(Debug)]
pub struct LimitRefusal {
    pub code: &'static str,
    pub message: String,
    /// e.g. `key rpm`, `account tokens_per_day`.
    pub limit: String,
    pub retry_after_secs: u64,
    /// RFC 3339 time a quota resets (quotas only).
    pub reset_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<String>,
    /// On 429: the limit that refused the request (`key rpm`, `account tokens_per_day`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// On `quota_exceeded`: when the quota resets (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "invalid_request",
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            code: "permission_denied",
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// For library errors that are not `std::error::Error` (argon2, jsonwebtoken internals).
    pub fn internal_msg(err: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{err}"))
    }

    /// (OpenAI `type`, stable `code`) of this error.
    fn kind_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest { code, .. } => ("invalid_request_error", code),
            Self::Unauthorized { code, .. } => ("authentication_error", code),
            Self::Forbidden { code, .. } => ("permission_error", code),
            Self::NotFound { .. } => ("not_found_error", "not_found"),
            Self::Conflict { code, .. } => ("conflict_error", code),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "payload_too_large"),
            Self::UnsupportedMediaType => ("invalid_request_error", "unsupported_media_type"),
            Self::MethodNotAllowed { .. } => ("invalid_request_error", "method_not_allowed"),
            Self::Unprocessable { code, .. } => ("invalid_request_error", code),
            Self::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            Self::LimitExceeded(r) => ("rate_limit_error", r.code),
            Self::InsufficientQuota { .. } => ("insufficient_quota", "insufficient_quota"),
            Self::LimiterUnavailable => ("service_unavailable_error", "limiter_unavailable"),
            Self::Unavailable => ("service_unavailable_error", "service_unavailable"),
            Self::NoWorkers => ("service_unavailable_error", "no_workers"),
            Self::PricingUnavailable => ("service_unavailable_error", "pricing_unavailable"),
            Self::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            Self::Upstream { .. } => ("api_error", "upstream_error"),
            Self::PaymentProvider { .. } => ("api_error", "payment_provider_error"),
            Self::Overloaded { .. } => ("service_unavailable_error", "overloaded"),
            Self::Internal(_) => ("api_error", "internal_error"),
        }
    }

    /// The OpenAI-shaped body; internal errors are logged here, once.
    pub fn body(&self) -> ErrorBody {
        if let Self::Internal(err) = self {
            tracing::error!(error = ?err, "internal error");
        }
        let (kind, code) = self.kind_and_code();
        let (limit, reset_at) = match self {
            Self::LimitExceeded(r) => (Some(r.limit.clone()), r.reset_at.clone()),
            Self::InsufficientQuota { limit, .. } => (Some(limit.clone()), None),
            _ => (None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                code,
                param: self.param(),
                limit,
                reset_at,
            },
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::BadRequest { param, .. } => param.clone(),
            Self::ModelNotFound { .. } => Some("model".into()),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientQuota { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Unavailable
            | Self::NoWorkers
            | Self::Overloaded { .. }
            | Self::PricingUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            Self::Upstream { .. } | Self::PaymentProvider { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = self.body();
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::Overloaded { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::LimitExceeded(r) => {
                res.insert_header((header::RETRY_AFTER, r.retry_after_secs.to_string()));
            }
            Self::Unavailable
            | Self::NoWorkers
            | Self::LimiterUnavailable
            | Self::PricingUnavailable => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::MethodNotAllowed { allow } => {
                res.insert_header((header::ALLOW, allow.as_str()));
            }
            _ => {}
        }
        res.json(body)
    }
}

impl From<crate::openai::Invalid> for ApiError {
    fn from(e: crate::openai::Invalid) -> Self {
        Self::invalid_param(&e.param, e.message)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => Self::NotFound { what: "object" },
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::conflict(
                "already_exists",
                "an object with these values already exists",
            ),
            other => Self::internal(other),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        match err {
            crate::db::DbError::Query(e) => e.into(),
            crate::db::DbError::Pool(e) => {
                tracing::error!(error = %e, "database pool unavailable");
                Self::Unavailable
            }
            crate::db::DbError::Join(e) => Self::internal(e),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        Self::internal(anyhow::anyhow!("blocking task failed: {err}"))
    }
}

/// Names what was not found or what conflicted, on results coming from the database layer.
pub trait ResultExt<T> {
    /// A `NotFound` becomes "`what` not found".
    fn not_found_as(self, what: &'static str) -> ApiResult<T>;
    /// A unique violation becomes a 409 with this code and message.
    fn conflict_as(self, code: &'static str, message: &str) -> ApiResult<T>;
}

impl<T, E: Into<ApiError>> ResultExt<T> for Result<T, E> {
    fn not_found_as(self, what: &'static str) -> ApiResult<T> {
        self.map_err(|e| match e.into() {
            ApiError::NotFound { .. } => ApiError::NotFound { what },
            other => other,
        })
    }

    fn conflict_as(self, code: &'static str, message: &str) -> ApiResult<T> {
        self.map_err(|e| match e.into() {
            ApiError::Conflict {
                code: "already_exists",
                ..
            } => ApiError::conflict(code, message),
            other => other,
        })
    }
}
