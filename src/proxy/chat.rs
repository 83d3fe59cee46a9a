//! `POST /v1/chat/completions`: validate like OpenAI, send to the worker pool (always streamed
//! upstream; a non-stream request is collected by the worker, which answers one JSON completion
//! instead of an event per token), answer as SSE or as one JSON completion, and settle the usage.
//! A non-stream client that leaves before its answer (closed or reset) cancels the upstream at
//! once and is settled `client_gone` (see `billing::settle`); a stream's client that leaves ends
//! its stream at once too (settled `client_disconnected` with what was delivered).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;

use super::admission::admit;
use super::stream::Metered;
use crate::auth::caller::{KeyCaller, RequestMeta};
use crate::billing::settle::{Admitted, Delivered, Status};
use crate::error::{ApiError, ApiResult};
use crate::hop::Event;
use crate::http::extract::Json;
use crate::openai::aggregate::Aggregator;
use crate::openai::{ChatRequest, Usage};
use crate::state::AppState;

/// The chat request as documented: what taogate checks before any work. Other OpenAI fields
/// (temperature, tools, user, …) are passed through untouched.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: requests are read as `openai::ChatRequest`
pub struct ChatCompletionRequest {
    #[schema(min_length = 1)]
    model: String,
    #[schema(min_items = 1)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    stream_options: Option<ChatStreamOptions>,
    /// 1 up to the model's limit (32768 unless the model sets one).
    #[schema(minimum = 1)]
    max_tokens: Option<i64>,
    #[schema(minimum = 1)]
    max_completion_tokens: Option<i64>,
    /// One choice per request.
    #[schema(minimum = 1, maximum = 1)]
    n: Option<i64>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatStreamOptions {
    include_usage: Option<bool>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatMessage {
    #[schema(pattern = "^(system|developer|user|assistant|tool)$")]
    role: String,
    /// Text, or an array of content parts (absent or `null` only for an assistant message).
    #[schema(schema_with = message_content, required = false)]
    content: String,
}

fn message_content() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Object)))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// Creates a chat completion (OpenAI-compatible; `stream: true` answers with server-sent events).
#[utoipa::path(tag = "data plane", request_body(content = ChatCompletionRequest, description = "OpenAI chat.completions request"),
    responses((status = 200, description = "chat.completion, or text/event-stream of chat.completion.chunk"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 402, description = "insufficient_quota: the account's balance or credit limit cannot cover the request's hold; names what bit", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 429, description = "rate_limit_exceeded or quota_exceeded; names the limit", body = crate::error::ErrorBody),
              (status = 502, body = crate::error::ErrorBody),
              (status = 503, description = "service_unavailable, overloaded, limiter_unavailable, or pricing_unavailable (the model's stored price book cannot be read: refused, never served free)", body = crate::error::ErrorBody)),
    security(("api_key" = [])))]
#[post("/chat/completions")]
pub async fn create_chat_completion(
    state: web::Data<AppState>,
    caller: KeyCaller,
    meta: RequestMeta,
    http: HttpRequest,
    body: Json<ChatRequest>,
) -> ApiResult<HttpResponse> {
    let req = body.into_inner();
    let mut admitted = admit(&state, &caller, &req, &meta.request_id, Some(&http)).await?;
    if caller.entry.context.log_prompts {
        tracing::info!(prompt = %req.prompt_text(), model = %req.model, "prompt (the tenant opted in to prompt logging)");
    }
    if let Some(arrived) =
        actix_web::HttpMessage::extensions(&http).get::<crate::http::observe::Arrived>()
    {
        state
            .metrics
            .proxy_overhead
            .observe(arrived.0.elapsed().as_secs_f64());
    }
    let deadline = Duration::from_secs(state.config.pool.request_timeout_secs);
    if req.wants_stream() {
        let upstream_req = req.for_upstream();
        let answer = match state.pool.send(&upstream_req, &meta.request_id).await {
            Ok(a) => a,
            Err(e) => {
                admitted.settle(Status::UpstreamError);
                return Err(e);
            }
        };
        // A client that leaves ends the stream at once (the upstream is cancelled, what was
        // delivered is settled), not at the next event: an idle upstream may send none for long.
        let client = http.clone();
        let left = async move { crate::http::peer::gone(&client).await };
        let stream = Metered::new(answer, req.wants_usage_chunk(), deadline, admitted)
            .map(|out| Ok::<_, actix_web::Error>(out.sse()))
            .take_until(left);
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(stream));
    }
    // Nothing reaches a non-stream client before the answer is complete: the client may leave
    // meanwhile (then the upstream is cancelled by dropping it), and a stream that breaks midway
    // is retried on another worker.
    let cancelled = admitted.cancelled();
    let outcome = {
        let work = complete(&state, &req, &meta.request_id, deadline, &mut admitted);
        tokio::pin!(work);
        tokio::select! {
            answered = &mut work => Outcome::Answered(answered),
            () = crate::http::peer::gone(&http) => Outcome::ClientGone,
            () = cancelled => Outcome::ShuttingDown,
        }
    };
    match outcome {
        Outcome::ShuttingDown => {
            admitted.settle(Status::Shutdown);
            Err(ApiError::Unavailable)
        }
        Outcome::Answered(Ok(mut agg)) => {
            let billed = admitted.settle(Status::Ok);
            let usage = Usage {
                prompt_tokens: billed.prompt_tokens,
                completion_tokens: billed.completion_tokens,
                total_tokens: billed.prompt_tokens + billed.completion_tokens,
            };
            agg.set_usage(usage);
            Ok(HttpResponse::Ok().json(agg.finish(None)))
        }
        Outcome::Answered(Err(e)) => {
            admitted.settle_with(Status::UpstreamError, Delivered::default());
            Err(e)
        }
        Outcome::ClientGone => {
            admitted.settle(Status::ClientGone);
            // Nobody reads this: the client has gone.
            Ok(
                HttpResponse::build(actix_web::http::StatusCode::from_u16(499).expect("499"))
                    .finish(),
            )
        }
    }
}

/// How a non-stream request's wait for its answer ended.
enum Outcome {
    Answered(ApiResult<Aggregator>),
    /// The client closed or reset its connection.
    ClientGone,
    /// The shutdown grace ran out.
    ShuttingDown,
}

/// Sends a non-stream request until one answer is whole (another worker, or the same worker's next
/// route when an upstream broke midway), reassembling it in
/// `admitted.delivered` (so a client gone midway is billed for what had arrived).
async fn complete(
    state: &AppState,
    req: &ChatRequest,
    request_id: &str,
    deadline: Duration,
    admitted: &mut Admitted,
) -> ApiResult<Aggregator> {
    let worker_req = req.for_worker_collect();
    let mut tried = Vec::new();
    let mut last_error = ApiError::Unavailable;
    let started = std::time::Instant::now();
    for _ in 0..state.pool.max_attempts() {
        let answer = state
            .pool
            .send_avoiding(&worker_req, request_id, &mut tried)
            .await?;
        admitted.delivered = Delivered::from_answer(&answer);
        let remaining = deadline.saturating_sub(started.elapsed());
        match collect(answer.events, remaining, &mut admitted.delivered).await {
            Ok(()) => {
                let agg = admitted.delivered.collected.take().unwrap_or_default();
                admitted.delivered.text = agg.text();
                admitted.delivered.usage = agg.usage();
                return Ok(agg);
            }
            Err(reason) => {
                tracing::warn!(worker = %answer.worker, %reason, "answer broke before completion; retrying");
                // The worker answered and its upstream broke: that route is now open on the
                // worker, so the same worker may be asked again (it answers from the next route).
                // A worker that died midway fails that retry and is counted against then.
                tried.retain(|w| *w != answer.worker);
                admitted.delivered = Delivered::default();
                last_error = ApiError::Upstream {
                    message: "the upstream stream broke before the answer was complete".into(),
                };
            }
        }
    }
    Err(last_error)
}

/// Reads a whole answer into `delivered.collected`; on failure, the reason.
async fn collect(
    mut events: crate::hop::EventStream,
    deadline: Duration,
    delivered: &mut Delivered,
) -> Result<(), String> {
    let read = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Done) => return Ok(()),
                Ok(Event::Chunk(p)) => {
                    delivered
                        .first_byte
                        .get_or_insert_with(std::time::Instant::now);
                    delivered
                        .collected
                        .get_or_insert_with(Aggregator::default)
                        .push(&p);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the stream ended before the answer was complete".to_owned())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err("deadline".into()),
    }
}
