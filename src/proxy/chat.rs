//! `POST /v1/chat/completions`: validate like OpenAI, send to the worker pool (always streamed
//! upstream), answer as SSE or as one JSON completion, and settle the usage.

use std::time::Duration;

use actix_web::{HttpResponse, post, web};
use futures_util::StreamExt;

use super::stream::Metered;
use crate::auth::caller::{KeyCaller, RequestMeta};
use crate::error::{ApiError, ApiResult};
use crate::metering::{Admitted, Delivered, Status};
use crate::openai::aggregate::Aggregator;
use crate::openai::sse::DONE;
use crate::openai::{ChatRequest, DEFAULT_MAX_TOKENS_LIMIT, Usage};
use crate::state::AppState;

/// Checks scope, model and request, and returns the model's `max_tokens` limit.
pub fn admit(state: &AppState, caller: &KeyCaller, req: &ChatRequest) -> ApiResult<()> {
    if !caller.key.has_scope("chat:write") {
        return Err(ApiError::Forbidden {
            code: "insufficient_scope",
            message: "this key lacks the chat:write scope".into(),
        });
    }
    let model = state
        .config
        .models
        .iter()
        .find(|m| m.id == req.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: req.model.clone(),
        })?;
    req.validate(model.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS_LIMIT))
}

/// Creates a chat completion (OpenAI-compatible; `stream: true` answers with server-sent events).
#[utoipa::path(tag = "data plane", request_body(content = Object, description = "OpenAI chat.completions request"),
    responses((status = 200, description = "chat.completion, or text/event-stream of chat.completion.chunk"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)),
    security(("api_key" = [])))]
#[post("/chat/completions")]
pub async fn create_chat_completion(
    state: web::Data<AppState>,
    caller: KeyCaller,
    meta: RequestMeta,
    body: web::Json<ChatRequest>,
) -> ApiResult<HttpResponse> {
    let req = body.into_inner();
    admit(&state, &caller, &req)?;
    let admitted = Admitted::new(&meta.request_id, &caller.key, &req);
    let answer = match state.pool.send(&req.for_upstream(), &meta.request_id).await {
        Ok(a) => a,
        Err(e) => {
            state
                .meter
                .settle(admitted, Status::UpstreamError, Delivered::default());
            return Err(e);
        }
    };
    let deadline = Duration::from_secs(state.config.pool.request_timeout_secs);
    if req.wants_stream() {
        let stream = Metered::new(
            answer,
            req.wants_usage_chunk(),
            deadline,
            state.meter.clone(),
            admitted,
        );
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(stream));
    }
    let mut delivered = Delivered {
        worker: Some(answer.worker.clone()),
        upstream: answer.upstream.clone(),
        miner_uid: answer.miner_uid.clone(),
        ..Default::default()
    };
    let mut events = answer.events;
    let mut agg = Aggregator::default();
    let read = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(p) if p == DONE => return Ok(()),
                Ok(p) => {
                    delivered
                        .first_byte
                        .get_or_insert_with(std::time::Instant::now);
                    agg.push(&p);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(deadline, read).await;
    delivered.text = agg.text();
    delivered.usage = agg.usage();
    if !matches!(outcome, Ok(Ok(()))) {
        state
            .meter
            .settle(admitted, Status::UpstreamError, delivered);
        return Err(ApiError::Upstream {
            message: "the upstream stream broke before the answer was complete".into(),
        });
    }
    let fallback = Usage {
        prompt_tokens: admitted.prompt_estimate,
        completion_tokens: crate::openai::estimate_tokens(&delivered.text),
        total_tokens: 0,
    };
    let completion = agg.finish(Usage {
        total_tokens: fallback.prompt_tokens + fallback.completion_tokens,
        ..fallback
    });
    state.meter.settle(admitted, Status::Ok, delivered);
    drop(answer.guard);
    Ok(HttpResponse::Ok().json(completion))
}
