//! Settling a data-plane request: what it delivered becomes a usage record, its balance hold is
//! captured (what it cost becomes pending) and released, and the batch writer posts it to the
//! ledger. Token counts come from the upstream's `usage` when it sent one, else from an estimate
//! (marked `estimated`). Runs off the request path and never fails the response.

use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDateTime;

use crate::db::Db;
use crate::domain::Nano;
use crate::limits::guard::{Guard, Permit};
use crate::limits::holds::Capture;
use crate::models::api_key::ApiKey;
use crate::models::usage::UsageRecord;
use crate::pricing::Price;
use writer::UsageWriter;

pub mod balance;
pub mod bulk;
pub mod journal;
pub mod writer;
use crate::openai::{ChatRequest, Usage, count_tokens};

#[derive(Clone)]
pub struct Meter {
    writer: UsageWriter,
    limiter: Arc<Guard>,
    db: Db,
}

/// What is known when a request is admitted.
pub struct Admitted {
    pub request_id: String,
    pub key: ApiKey,
    pub model: String,
    /// The prompt as text (counted with the tokenizer if the upstream reports no usage).
    pub prompt_text: String,
    pub prompt_estimate: i64,
    pub started: Instant,
    pub started_at: NaiveDateTime,
    /// Limits counted at admission, released and corrected at settle.
    pub permit: Option<Permit>,
    /// (retail price to the account, wholesale price to the tenant) of the model, if priced.
    pub prices: (Option<Price>, Option<Price>),
}

impl Admitted {
    pub fn new(
        request_id: &str,
        key: &ApiKey,
        req: &ChatRequest,
        (prompt_text, prompt_estimate): (String, i64),
        permit: Option<Permit>,
        prices: (Option<Price>, Option<Price>),
    ) -> Self {
        Self {
            request_id: request_id.to_owned(),
            key: key.clone(),
            model: req.model.clone(),
            prompt_text,
            prompt_estimate,
            started: Instant::now(),
            started_at: crate::db::now(),
            permit,
            prices,
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
    /// The answering route's wholesale price: nano-units per 1M (prompt, completion) tokens.
    pub upstream_cost: Option<(i64, i64)>,
}

/// `tokens × price per 1M tokens`, in nano-units, rounded half up; `i128` so it cannot overflow.
pub fn wholesale_cost(
    prompt_tokens: i64,
    completion_tokens: i64,
    (prompt_price, completion_price): (i64, i64),
) -> Nano {
    let total = i128::from(prompt_tokens) * i128::from(prompt_price)
        + i128::from(completion_tokens) * i128::from(completion_price);
    Nano(((total + 500_000) / 1_000_000).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

impl Meter {
    /// A meter journaling usage in `journal_dir` (see [`journal`]), writing it in up to `lanes`
    /// batches at once.
    pub fn new(
        db: Db,
        limiter: Arc<Guard>,
        journal_dir: &std::path::Path,
        lanes: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            writer: UsageWriter::new(db.clone(), limiter.clone(), journal_dir, lanes)?,
            limiter,
            db,
        })
    }

    /// Starts the batch writer and the balance re-sync timer (inside the server's runtime).
    pub fn spawn_writer(&self) {
        crate::openai::tokens::warm_up();
        self.writer.spawn();
        balance::spawn_resync_timer(self.db.clone(), self.limiter.clone());
    }

    /// Records the request. With a complete upstream `usage` its counts are used; a request cut
    /// short is counted from the text actually delivered.
    pub fn settle(&self, mut admitted: Admitted, status: Status, delivered: Delivered) {
        let (prompt, completion, estimated) = match (status, delivered.usage) {
            (Status::Ok, Some(u)) => (u.prompt_tokens, u.completion_tokens, false),
            _ => (
                count_tokens(&admitted.prompt_text),
                count_tokens(&delivered.text),
                true,
            ),
        };
        let permit = admitted.permit.take();
        // A request that failed before anything reached the client costs nothing.
        let delivered_nothing = status != Status::Ok && delivered.first_byte.is_none();
        let charge = |price: Option<Price>| match price {
            Some(p) if !delivered_nothing => p.cost(prompt, completion),
            _ => Nano(0),
        };
        let record = UsageRecord {
            charged_nano: charge(admitted.prices.0),
            tenant_charged_nano: charge(admitted.prices.1),
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
            wholesale_cost_nano: delivered
                .upstream_cost
                .map(|price| wholesale_cost(prompt, completion, price)),
        };
        tracing::info!(request.id = %record.request_id, model = %record.model, status = %record.status,
            prompt_tokens = record.prompt_tokens, completion_tokens = record.completion_tokens,
            upstream = ?record.upstream, miner.uid = ?record.miner_uid, latency_ms = record.latency_ms, "settled");
        let capture = Capture {
            event_id: record.id.clone(),
            amount: record.charged_nano.0,
        };
        // Journaled first: a hold is only captured for an event that cannot be lost.
        self.writer.submit(record);
        if let Some(permit) = permit {
            let capture = permit.hold().map(|_| capture);
            self.limiter.settle(permit, prompt + completion, capture);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wholesale_cost_is_exact_integer_math() {
        // 1 unit per 1M prompt tokens = 1000 nano per token; 2.5 units per 1M completion tokens.
        assert_eq!(
            wholesale_cost(3, 7, (1_000_000_000, 2_500_000_000)),
            Nano(3_000 + 17_500)
        );
        assert_eq!(
            wholesale_cost(1, 0, (1, 0)),
            Nano(0),
            "half a nano rounds … down below .5"
        );
        assert_eq!(
            wholesale_cost(1, 0, (500_000, 0)),
            Nano(1),
            "… and up from .5"
        );
        assert_eq!(
            wholesale_cost(i64::MAX, i64::MAX, (i64::MAX, i64::MAX)),
            Nano(i64::MAX),
            "saturates, never wraps"
        );
    }
}
