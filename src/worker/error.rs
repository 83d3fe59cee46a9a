//! The worker's own error type: what its internal HTTP API answers (OpenAI-shaped JSON, so a
//! gateway reads it like any upstream's), and what an in-process worker tells the gateway's pool
//! ([`crate::hop::Refusal`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the model `{model}` is not served here")]
    ModelNotFound { model: String },
    /// Every upstream of the model failed before answering.
    #[error("{message}")]
    NoUpstream { message: String },
    #[error("this endpoint is internal")]
    Unauthorized,
    #[error("{message}")]
    BadRequest { message: String },
    #[error("no such route")]
    NotFound,
}

impl WorkerError {
    fn code(&self) -> (&'static str, &'static str) {
        match self {
            Self::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            Self::NoUpstream { .. } => ("api_error", "upstream_error"),
            Self::Unauthorized => ("authentication_error", "invalid_worker_secret"),
            Self::BadRequest { .. } => ("invalid_request_error", "invalid_request"),
            Self::NotFound => ("not_found_error", "not_found"),
        }
    }

    /// What the gateway's pool makes of it, when it is a final answer of the worker.
    pub fn refusal(self) -> Option<crate::hop::Refusal> {
        match self {
            Self::ModelNotFound { model } => Some(crate::hop::Refusal::ModelNotFound { model }),
            Self::NoUpstream { message } => Some(crate::hop::Refusal::NoUpstream { message }),
            _ => None,
        }
    }
}

impl ResponseError for WorkerError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::ModelNotFound { .. } | Self::NotFound => StatusCode::NOT_FOUND,
            Self::NoUpstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (kind, code) = self.code();
        let param = matches!(self, Self::ModelNotFound { .. }).then_some("model");
        HttpResponse::build(self.status_code()).json(serde_json::json!({"error": {
            "message": self.to_string(), "type": kind, "code": code, "param": param}}))
    }
}

/// The worker's JSON body rules: its own errors, not the gateway's.
pub fn json_config(limit: usize) -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| {
            WorkerError::BadRequest {
                message: format!("invalid request body: {err}"),
            }
            .into()
        })
}

pub async fn not_found() -> Result<HttpResponse, WorkerError> {
    Err(WorkerError::NotFound)
}
