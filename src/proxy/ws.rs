//! `GET /v1/chat/ws`: chat completions over one WebSocket. Same API-key auth (checked before the
//! upgrade, so a bad key gets the usual 401 JSON), same validation and errors. Each text message
//! is a chat request (as for `POST /v1/chat/completions`; always streamed); the server answers with
//! `{"type":"chunk","request_id","data":<chat.completion.chunk>}` messages and a final
//! `{"type":"done","request_id","usage"}`, or `{"type":"error","request_id","status","error":{…}}`.
//! Requests on one connection are answered in order; closing the socket mid-answer cancels the
//! upstream and settles what was delivered. The key is checked again for every message (revoked,
//! expired, suspended, limits changed: the cached view, invalidated on every change); a key that is
//! no longer good gets its error message and the socket is closed (1008, policy violation).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Closed, Session,
};
use futures_util::StreamExt;
use serde_json::json;

use super::admission::admit;
use super::stream::{Metered, Outgoing};
use crate::auth::caller::{KeyCaller, RequestMeta, presented_key};
use crate::billing::settle::Status;
use crate::error::ApiError;
use crate::openai::ChatRequest;
use crate::state::AppState;

/// Opens a WebSocket for chat completions (API-key auth on the upgrade request).
#[utoipa::path(tag = "data plane", responses((status = 101, description = "switching to the WebSocket protocol"),
    (status = 400, description = "not a WebSocket upgrade (`websocket_upgrade_required`)", body = crate::error::ErrorBody),
    (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)), security(("api_key" = [])))]
#[get("/chat/ws")]
pub async fn chat_ws(
    state: web::Data<AppState>,
    caller: KeyCaller,
    meta: RequestMeta,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let limit = state.config.http.max_body_bytes;
    let (res, session, messages) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(
            "websocket_upgrade_required",
            format!("this endpoint speaks WebSocket only: {e}"),
        )
    })?;
    let messages = messages
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    let presented = presented_key(&req).unwrap_or_default();
    drop(caller);
    actix_web::rt::spawn(serve(
        state.into_inner(),
        presented,
        meta,
        session,
        messages,
    ));
    Ok(res)
}

async fn serve(
    state: Arc<AppState>,
    presented: String,
    meta: RequestMeta,
    mut session: Session,
    mut messages: AggregatedMessageStream,
) {
    let mut seq = 0u64;
    while let Some(Ok(msg)) = messages.next().await {
        let outcome = match msg {
            AggregatedMessage::Text(text) => {
                seq += 1;
                let request_id = format!("{}-{seq}", meta.request_id);
                let caller = match KeyCaller::authenticate(&state, &presented).await {
                    Ok(caller) => caller,
                    Err(e) => {
                        let _ = send_error(&mut session, &request_id, &e).await;
                        let reason = CloseReason {
                            code: CloseCode::Policy,
                            description: Some(e.body().error.code.to_owned()),
                        };
                        let _ = session.close(Some(reason)).await;
                        return;
                    }
                };
                answer(&state, &caller, &request_id, &text, &mut session).await
            }
            AggregatedMessage::Ping(bytes) => session.pong(&bytes).await,
            AggregatedMessage::Close(_) => break,
            AggregatedMessage::Binary(_) => {
                let e = ApiError::UnsupportedMediaType;
                send_error(&mut session, "", &e).await
            }
            AggregatedMessage::Pong(_) => Ok(()),
        };
        if outcome.is_err() {
            return;
        }
    }
    let _ = session.close(None).await;
}

async fn send_error(session: &mut Session, request_id: &str, err: &ApiError) -> Result<(), Closed> {
    let msg = json!({"type": "error", "request_id": request_id, "status": err.status_code().as_u16(), "error": err.body().error});
    session.text(msg.to_string()).await
}

/// Answers one request message; `Err` only when the client has gone.
async fn answer(
    state: &AppState,
    caller: &KeyCaller,
    request_id: &str,
    text: &str,
    session: &mut Session,
) -> Result<(), Closed> {
    let req: ChatRequest = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let err =
                ApiError::bad_request("invalid_request", format!("invalid request message: {e}"));
            return send_error(session, request_id, &err).await;
        }
    };
    let admitted = match admit(state, caller, &req, request_id, None).await {
        Ok(a) => a,
        Err(e) => return send_error(session, request_id, &e).await,
    };
    let ratelimit = admitted.permit().map(|p| p.info);
    let answer = match state.pool.send(&req.for_upstream(), request_id).await {
        Ok(a) => a,
        Err(e) => {
            admitted.settle(Status::UpstreamError);
            return send_error(session, request_id, &e).await;
        }
    };
    let deadline = Duration::from_secs(state.config.pool.request_timeout_secs);
    let mut stream = Metered::new(answer, false, deadline, admitted);
    while let Some(out) = stream.next().await {
        match out {
            Outgoing::Done => {
                let done = json!({"type": "done", "request_id": request_id, "usage": stream.usage(), "ratelimit": ratelimit});
                return session.text(done.to_string()).await;
            }
            Outgoing::Failed(error) => {
                let msg = json!({"type": "error", "request_id": request_id, "status": 502, "error": error});
                return session.text(msg.to_string()).await;
            }
            Outgoing::Chunk(payload) => {
                session
                    .text(format!(
                        r#"{{"type":"chunk","request_id":"{request_id}","data":{payload}}}"#
                    ))
                    .await?;
            }
        }
    }
    Ok(())
}
