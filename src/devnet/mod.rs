//! Local stand-ins for the providers a worker talks to, so the whole path runs with no network:
//! an Epistula miner (verifies the validator's signature, timestamp and `signed_for` as SN1's
//! miner does) and an OpenAI-compatible owner gateway (checks its Bearer key). Both answer
//! deterministically: a templated reply streamed word by word with a configurable delay, with
//! `usage` when asked; offered `tools`, they call the first (or the one `tool_choice` names) with
//! `{"said": <last user text>}`, the arguments streamed in pieces as OpenAI does. Used by
//! `taogate dev` in process and as `taogate devnet-miner`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::json;

use crate::openai::sse::{self, DONE};
use crate::openai::{ChatRequest, estimate_tokens};
use crate::worker::hotkey::Hotkey;
use crate::worker::{epistula, verathos};

pub mod axon;
pub mod sites;
pub mod subnet;

/// How a stand-in behaves, for failover tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Answer normally.
    Ok,
    /// Answer 500 before any byte.
    Error,
    /// Accept and never answer.
    Hang,
    /// Start answering (two events), then drop the connection mid-body.
    Drop,
}

pub enum Auth {
    /// Epistula: requests must be signed for `hotkey` by one of `validators`.
    Epistula {
        hotkey: Arc<Hotkey>,
        validators: Vec<String>,
    },
    /// `btauth/1`: signed for `hotkey` by one of `validators`, fresh and never replayed.
    Btauth {
        hotkey: Arc<Hotkey>,
        validators: Vec<String>,
        verifier: Arc<crate::worker::btauth::Verifier>,
    },
    /// Verathos-style `X-Validator-*`: signed by one of `validators`, within ±60 s.
    Verathos { validators: Vec<String> },
    /// OpenAI-compatible: `Authorization: Bearer <key>`.
    Bearer { key: String },
}

pub struct StandIn {
    pub label: String,
    pub auth: Auth,
    pub delay: Duration,
    pub behaviour: Behaviour,
}

/// The deterministic answer of a stand-in, as words.
pub fn reply_words(label: &str, req: &ChatRequest) -> Vec<String> {
    let asked = req.last_user_text();
    let text = format!("Hello from {label}. You said: {asked}");
    let max = req.max_output_tokens().unwrap_or(i64::MAX).max(1) as usize;
    text.split_inclusive(' ')
        .take(max)
        .map(str::to_owned)
        .collect()
}

/// The tool call a stand-in answers with when offered tools: the function's name and its
/// arguments in the pieces they are streamed in.
pub fn reply_tool_call(req: &ChatRequest) -> Option<(String, Vec<String>)> {
    let choice = req.extra.get("tool_choice");
    if choice.and_then(serde_json::Value::as_str) == Some("none") {
        return None;
    }
    let first = req.extra.get("tools")?.pointer("/0/function/name");
    let named = choice.and_then(|c| c.pointer("/function/name"));
    let name = named.or(first)?.as_str()?.to_owned();
    let arguments = json!({"said": req.last_user_text()}).to_string();
    let chars: Vec<char> = arguments.chars().collect();
    Some((name, chars.chunks(6).map(|c| c.iter().collect()).collect()))
}

fn chunk(
    id: &str,
    model: &str,
    created: i64,
    delta: serde_json::Value,
    finish: Option<&str>,
) -> String {
    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

/// A stand-in's answer to a chat completion: checks the caller as the miner or gateway it stands
/// in for would, then answers (streamed word by word with its delay when asked to stream).
pub(crate) async fn answer(state: Arc<StandIn>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let refuse = |status: u16, detail: &str| {
        HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
        )
        .json(json!({"detail": detail}))
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match &state.auth {
        Auth::Epistula { hotkey, validators } => {
            let now = chrono::Utc::now().timestamp_millis();
            if let Err((status, detail)) =
                epistula::verify(header, &body, &hotkey.ss58, validators, now)
            {
                return refuse(status, &detail);
            }
        }
        Auth::Btauth {
            hotkey,
            validators,
            verifier,
        } => {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as i128;
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            match verifier.verify(
                header,
                req.method().as_str(),
                target,
                &body,
                &hotkey.ss58,
                now,
            ) {
                Ok(sender) if validators.contains(&sender) => {}
                Ok(_) => return refuse(403, "not a validator"),
                Err(detail) => return refuse(401, &detail),
            }
        }
        Auth::Verathos { validators } => {
            let now = chrono::Utc::now().timestamp();
            if let Err((status, detail)) = verathos::verify(
                header,
                req.method().as_str(),
                req.path(),
                &body,
                validators,
                now,
            ) {
                return refuse(status, &detail);
            }
        }
        Auth::Bearer { key } => {
            let presented = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if presented != format!("Bearer {key}") {
                return HttpResponse::Unauthorized()
                    .json(json!({"error": {"message": "invalid api key", "type": "authentication_error", "code": "invalid_api_key", "param": null}}));
            }
        }
    }
    let Ok(chat) = serde_json::from_slice::<ChatRequest>(&body) else {
        return refuse(400, "invalid chat request");
    };
    match state.behaviour {
        Behaviour::Ok | Behaviour::Drop => {}
        Behaviour::Error => return refuse(500, "miner failure"),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return refuse(500, "hung");
        }
    }
    let tool_call = reply_tool_call(&chat);
    let words = match &tool_call {
        Some((_, pieces)) => pieces.clone(),
        None => reply_words(&state.label, &chat),
    };
    let prompt_tokens = estimate_tokens(&chat.prompt_text());
    let completion_tokens = words.len() as i64;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = chrono::Utc::now().timestamp();
    let call_id = format!("call_{}", &id[9..21]);
    let (message, finish) = match &tool_call {
        Some((name, _)) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function",
                "function": {"name": name, "arguments": words.concat()}}]}),
            "tool_calls",
        ),
        None => (
            json!({"role": "assistant", "content": words.concat()}),
            "stop",
        ),
    };
    if !chat.wants_stream() {
        return HttpResponse::Ok().json(
            json!({"id": id, "object": "chat.completion", "created": created, "model": chat.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}),
        );
    }
    let model = chat.model.clone();
    let first = match &tool_call {
        Some((name, _)) => {
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": call_id,
            "type": "function", "function": {"name": name, "arguments": ""}}]})
        }
        None => json!({"role": "assistant", "content": ""}),
    };
    let mut events = vec![chunk(&id, &model, created, first, None)];
    events.extend(words.iter().map(|w| {
        let delta = match tool_call {
            Some(_) => json!({"tool_calls": [{"index": 0, "function": {"arguments": w}}]}),
            None => json!({"content": w}),
        };
        chunk(&id, &model, created, delta, None)
    }));
    events.push(chunk(&id, &model, created, json!({}), Some(finish)));
    if chat.wants_usage_chunk() {
        events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}).to_string());
    }
    events.push(DONE.to_owned());
    if state.behaviour == Behaviour::Drop {
        // Two events, then the body is cut (no final chunk): the connection drops mid-answer.
        events.truncate(2);
    }
    let dropping = state.behaviour == Behaviour::Drop;
    let delay = state.delay;
    let body = stream::iter(events)
        .then(move |e| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, actix_web::Error>(sse::event(&e))
        })
        .chain(stream::iter(dropping.then_some(())).then(|()| async {
            // Long enough for the events to reach the client before the drop.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(actix_web::error::ErrorInternalServerError(
                "dropped mid-answer",
            ))
        }));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(body)
}

/// A stand-in's `/healthz`: its label.
pub(crate) fn health(state: &StandIn) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "label": state.label}))
}

/// Serves one stand-in on `listener` (both `/v1/chat/completions` and `/chat/completions`).
pub fn start(stand_in: StandIn, listener: TcpListener) -> anyhow::Result<actix_web::dev::Server> {
    sites::serve(vec![(listener, sites::Site::Miner(Arc::new(stand_in)))])
}
