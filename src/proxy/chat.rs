//! `POST /v1/chat/completions`: validate like OpenAI, send to the worker pool (always streamed
//! upstream; a non-stream request is collected by the worker, which answers one JSON completion
//! instead of an event per token), answer as SSE or as one JSON completion, and settle the usage.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;

use super::admission::admit;
use super::stream::Metered;
use crate::auth::caller::{KeyCaller, RequestMeta};
use crate::error::{ApiError, ApiResult};
use crate::metering::{Delivered, Status};
use crate::openai::aggregate::Aggregator;
use crate::openai::sse::DONE;
use crate::openai::{ChatRequest, Usage};
use crate::pool::Answer;
use crate::state::AppState;

/// Creates a chat completion (OpenAI-compatible; `stream: true` answers with server-sent events).
#[utoipa::path(tag = "data plane", request_body(content = Object, description = "OpenAI chat.completions request"),
    responses((status = 200, description = "chat.completion, or text/event-stream of chat.completion.chunk"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 429, description = "rate_limit_exceeded or quota_exceeded; names the limit", body = crate::error::ErrorBody),
              (status = 502, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)),
    security(("api_key" = [])))]
#[post("/chat/completions")]
pub async fn create_chat_completion(
    state: web::Data<AppState>,
    caller: KeyCaller,
    meta: RequestMeta,
    http: HttpRequest,
    body: web::Json<ChatRequest>,
) -> ApiResult<HttpResponse> {
    let req = body.into_inner();
    let admitted = admit(&state, &caller, &req, &meta.request_id, Some(&http)).await?;
    let deadline = Duration::from_secs(state.config.pool.request_timeout_secs);
    if req.wants_stream() {
        let upstream_req = req.for_upstream();
        let answer = match state.pool.send(&upstream_req, &meta.request_id).await {
            Ok(a) => a,
            Err(e) => {
                state
                    .meter
                    .settle(admitted, Status::UpstreamError, Delivered::default());
                return Err(e);
            }
        };
        let stream = Metered::new(
            answer,
            req.wants_usage_chunk(),
            deadline,
            state.meter.clone(),
            admitted,
        )
        .map(|payload| Ok::<_, actix_web::Error>(crate::openai::sse::event(&payload)));
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(stream));
    }
    // Nothing reaches a non-stream client before the answer is complete, so a stream that breaks
    // midway is retried on another worker.
    let worker_req = req.for_worker_collect();
    let mut tried = Vec::new();
    let mut last_error = ApiError::Unavailable;
    let started = std::time::Instant::now();
    while tried.len() < state.pool.max_attempts() {
        let answer = match state
            .pool
            .send_avoiding(&worker_req, &meta.request_id, &mut tried)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                last_error = e;
                break;
            }
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        match collect(answer, remaining, &admitted.prompt_text).await {
            Ok((completion, delivered)) => {
                state.meter.settle(admitted, Status::Ok, delivered);
                return Ok(HttpResponse::Ok().json(completion));
            }
            Err((worker, reason)) => {
                tracing::warn!(worker = %worker, %reason, "answer broke before completion; retrying");
                state.pool.report_broken(&worker);
                last_error = ApiError::Upstream {
                    message: "the upstream stream broke before the answer was complete".into(),
                };
            }
        }
    }
    state
        .meter
        .settle(admitted, Status::UpstreamError, Delivered::default());
    Err(last_error)
}

/// Reads a whole answer into one completion; on failure returns the worker and the reason.
async fn collect(
    answer: Answer,
    deadline: Duration,
    prompt_text: &str,
) -> Result<(serde_json::Value, Delivered), (String, String)> {
    let mut delivered = Delivered {
        worker: Some(answer.worker.clone()),
        upstream: answer.upstream.clone(),
        miner_uid: answer.miner_uid.clone(),
        upstream_cost: answer.cost,
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
        Err("the stream ended without [DONE]".to_owned())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err((answer.worker, reason)),
        Err(_) => return Err((answer.worker, "deadline".into())),
    }
    delivered.text = agg.text();
    delivered.usage = agg.usage();
    // Counted only when the upstream reported no usage (the tokenizer is not free).
    let usage = delivered.usage.unwrap_or_else(|| {
        let completion_tokens = crate::openai::count_tokens(&delivered.text);
        let prompt_tokens = crate::openai::count_tokens(prompt_text);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    });
    Ok((agg.finish(Some(usage)), delivered))
}
