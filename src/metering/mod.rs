//! Settling a data-plane request: what it delivered becomes a usage record. Token counts come
//! from the upstream's `usage` when it sent one, else from an estimate (marked `estimated`). This
//! is the settle hook the ledger will extend with holds and postings; it runs off the request
//! path (on the blocking pool) and never fails the response.

use std::time::Instant;

use chrono::NaiveDateTime;

use crate::db::Db;
use crate::models::api_key::ApiKey;
use crate::models::usage::UsageRecord;
use crate::openai::{ChatRequest, Usage, estimate_tokens};

#[derive(Clone)]
pub struct Meter {
    db: Db,
}

/// What is known when a request is admitted.
pub struct Admitted {
    pub request_id: String,
    pub key: ApiKey,
    pub model: String,
    pub prompt_estimate: i64,
    pub started: Instant,
    pub started_at: NaiveDateTime,
}

impl Admitted {
    pub fn new(request_id: &str, key: &ApiKey, req: &ChatRequest) -> Self {
        Self {
            request_id: request_id.to_owned(),
            key: key.clone(),
            model: req.model.clone(),
            prompt_estimate: estimate_tokens(&req.prompt_text()),
            started: Instant::now(),
            started_at: crate::db::now(),
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    ClientDisconnected,
    UpstreamError,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::ClientDisconnected => "client_disconnected",
            Status::UpstreamError => "upstream_error",
        }
    }
}

/// What a request delivered.
#[derive(Default)]
pub struct Delivered {
    pub usage: Option<Usage>,
    pub text: String,
    pub worker: Option<String>,
    pub upstream: Option<String>,
    pub miner_uid: Option<String>,
    pub first_byte: Option<Instant>,
}

impl Meter {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records the request. With a complete upstream `usage` its counts are used; a request cut
    /// short is counted from the text actually delivered.
    pub fn settle(&self, admitted: Admitted, status: Status, delivered: Delivered) {
        let (prompt, completion, estimated) = match (status, delivered.usage) {
            (Status::Ok, Some(u)) => (u.prompt_tokens, u.completion_tokens, false),
            _ => (
                admitted.prompt_estimate,
                estimate_tokens(&delivered.text),
                true,
            ),
        };
        let record = UsageRecord {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: admitted.request_id,
            tenant_id: admitted.key.tenant_id,
            account_id: admitted.key.account_id,
            api_key_id: admitted.key.id,
            model: admitted.model,
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated,
            status: status.as_str().into(),
            worker: delivered.worker,
            upstream: delivered.upstream,
            miner_uid: delivered.miner_uid,
            started_at: admitted.started_at,
            ended_at: crate::db::now(),
            ttft_ms: delivered
                .first_byte
                .map(|t| t.duration_since(admitted.started).as_millis() as i64),
            latency_ms: admitted.started.elapsed().as_millis() as i64,
        };
        tracing::info!(request.id = %record.request_id, model = %record.model, status = %record.status,
            prompt_tokens = record.prompt_tokens, completion_tokens = record.completion_tokens,
            upstream = ?record.upstream, miner.uid = ?record.miner_uid, latency_ms = record.latency_ms, "settled");
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no runtime to record usage on");
            return;
        };
        let db = self.db.clone();
        handle.spawn(async move {
            if let Err(e) = db.run(move |c| record.insert(c)).await {
                tracing::error!(error = %e, "could not record usage");
            }
        });
    }
}
