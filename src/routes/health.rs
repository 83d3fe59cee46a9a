//! `/healthz` (the process answers), `/readyz` (the database answers within 2 s, the shared
//! limiter's Redis is reachable when one is configured, and at least one worker is healthy) and
//! `/metrics` (Prometheus).

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use diesel::RunQueryDsl;

use crate::error::ApiResult;
use crate::state::AppState;

/// Liveness: the process is up.
#[utoipa::path(tag = "ops", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the database answers a query (2 s), the shared limiter's Redis is reachable (when
/// configured) and at least one worker is healthy — `{status, database, redis, workers}`, 200 when
/// all hold, else 503 naming what does not.
#[utoipa::path(tag = "ops", responses((status = 200, description = "ready: `{status, database, redis, workers}`"),
    (status = 503, description = "not ready: `{status, database, redis, workers}` says which dependency fails")))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let probe = state.db.run(|c| diesel::sql_query("SELECT 1").execute(c));
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(_))
    );
    let redis = if state.config.redis_url.is_empty() {
        "none"
    } else if state.limiter.is_degraded() {
        "unreachable"
    } else {
        "ok"
    };
    let workers = state.pool.healthy();
    let ready = database && redis != "unreachable" && workers > 0;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": if database { "ok" } else { "unreachable" },
        "redis": redis,
        "workers": workers,
    });
    if !ready {
        tracing::warn!(%body, "not ready");
        return Ok(HttpResponse::ServiceUnavailable().json(body));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Prometheus metrics of this replica (limiter health and decisions).
#[utoipa::path(tag = "ops", responses((status = 200, description = "text exposition format")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body({
            state.metrics.observe_pool(&state.pool.states());
            state.metrics.render()
        })
}
