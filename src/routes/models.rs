//! Data plane `GET /v1/models` (OpenAI-compatible, API-key auth): the models this key may use.

use actix_web::{get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::caller::KeyCaller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub id: String,
    pub object: &'static str,
    /// Unix seconds; constant for configured models.
    pub created: i64,
    pub owned_by: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelView>,
}

/// Lists the models available to this API key.
#[utoipa::path(tag = "data plane", responses((status = 200, body = ModelList), (status = 401, body = crate::error::ErrorBody)),
    security(("api_key" = [])))]
#[get("/models")]
pub async fn list_models(
    state: web::Data<AppState>,
    caller: KeyCaller,
) -> ApiResult<web::Json<ModelList>> {
    if !(caller.key().has_scope("models:read") || caller.key().has_scope("chat:write")) {
        return Err(ApiError::Forbidden {
            code: "insufficient_scope",
            message: "this key lacks the models:read scope".into(),
        });
    }
    let data = state
        .config
        .models
        .iter()
        .map(|m| ModelView {
            id: m.id.clone(),
            object: "model",
            created: 0,
            owned_by: m.owned_by.clone(),
        })
        .collect();
    Ok(web::Json(ModelList {
        object: "list",
        data,
    }))
}
