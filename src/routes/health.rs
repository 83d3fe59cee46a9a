//! `/healthz` (the process answers), `/readyz` (the database answers, with a 2 s budget) and
//! `/metrics` (Prometheus).

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use diesel::RunQueryDsl;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Liveness: the process is up.
#[utoipa::path(tag = "ops", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers a query.
#[utoipa::path(tag = "ops", responses((status = 200, description = "ready"), (status = 503, body = crate::error::ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let probe = state.db.run(|c| diesel::sql_query("SELECT 1").execute(c));
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "database": "ok"})))
        }
        _ => Err(ApiError::Unavailable),
    }
}

/// Prometheus metrics of this replica (limiter health and decisions).
#[utoipa::path(tag = "ops", responses((status = 200, description = "text exposition format")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
