//! Settling a data-plane request: what it delivered becomes a usage record, its balance hold is
//! captured (what it cost becomes pending) and released, its limits are corrected, and the batch
//! writer posts it to the ledger.
//!
//! Settlement cannot be skipped: an admission is an [`Admitted`] guard that settles when it is
//! dropped unsettled — a client gone before or during its answer (the handler is dropped), a
//! cancelled handler, a shutdown. The rules, one per way a request ends ([`Status`]):
//!
//! | status | billed for |
//! |---|---|
//! | `ok` | its usage, within [`bounds`](super::bounds) |
//! | `upstream_error` | what reached the client; nothing if nothing did |
//! | `client_disconnected` (a stream client left) | what reached the client |
//! | `client_gone` (a non-stream client left before its answer) | the prompt and whatever had reached the gateway, as counted by the gateway, once an upstream began answering (nothing before); the upstream is cancelled at once |
//! | `shutdown` (still running when the shutdown grace ran out) | as `client_gone` |
//!
//! The slot and the hold are released at once in every case, never left to the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use chrono::NaiveDateTime;

use super::bounds::{self, Billed, Counts, Tolerance};
use super::holds::Capture;
use super::metering::writer::UsageWriter;
use super::prices::{Price, wholesale_cost};
use crate::db::Db;
use crate::domain::{Nano, UsageSource};
use crate::limits::guard::{Guard, Permit};
use crate::models::api_key::ApiKey;
use crate::models::usage::UsageRecord;
use crate::openai::aggregate::Aggregator;
use crate::openai::{ChatRequest, Usage, count_tokens};

#[derive(Clone)]
pub struct Meter {
    writer: UsageWriter,
    limiter: Arc<Guard>,
    db: Db,
    tolerance: Tolerance,
    /// Set when the process begins shutting down: requests dropped from then on are `shutdown`.
    stopping: Arc<AtomicBool>,
    /// Admissions not settled yet (what a graceful shutdown waits for).
    in_flight: Arc<AtomicUsize>,
    /// Set when the shutdown grace ran out: requests still running settle themselves as `shutdown`.
    cancel: Arc<tokio::sync::watch::Sender<bool>>,
}

/// How a request ended (see the module docs for what each is billed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    ClientDisconnected,
    ClientGone,
    UpstreamError,
    Shutdown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::ClientDisconnected => "client_disconnected",
            Status::ClientGone => "client_gone",
            Status::UpstreamError => "upstream_error",
            Status::Shutdown => "shutdown",
        }
    }
}

/// What a request delivered (or, for a non-stream request, what reached the gateway so far).
#[derive(Default)]
pub struct Delivered {
    pub usage: Option<Usage>,
    pub text: String,
    /// A non-stream answer being reassembled; its text counts if the request ends unfinished.
    pub collected: Option<Aggregator>,
    pub worker: Option<String>,
    pub upstream: Option<String>,
    pub miner_uid: Option<String>,
    pub first_byte: Option<Instant>,
    /// The answering route's wholesale price: nano-units per 1M (prompt, completion) tokens.
    pub upstream_cost: Option<(i64, i64)>,
}

impl Delivered {
    /// Who is answering (from the worker's headers).
    pub fn from_answer(answer: &crate::pool::Answer) -> Self {
        Self {
            worker: Some(answer.worker.clone()),
            upstream: answer.upstream.clone(),
            miner_uid: answer.miner_uid.clone(),
            upstream_cost: answer.cost,
            ..Default::default()
        }
    }
}

/// An admitted request: settles exactly once, explicitly ([`Admitted::settle`]) or when dropped.
pub struct Admitted {
    /// Minted by the server at admission (UUID v7): the hold id, the concurrency member, the
    /// settle key and the usage record's id.
    pub admission_id: String,
    /// The client's correlation id (`x-request-id`), stored on the usage record; never a key.
    pub request_id: String,
    pub key: ApiKey,
    pub model: String,
    /// The prompt as text (counted with the tokenizer to bound or replace reported usage).
    pub prompt_text: String,
    pub prompt_estimate: i64,
    /// The most completion tokens this request may be billed for: its `max_tokens` /
    /// `max_completion_tokens`, else the model's limit.
    pub completion_cap: i64,
    pub started: Instant,
    pub started_at: NaiveDateTime,
    /// What the request has delivered so far; settle records it.
    pub delivered: Delivered,
    /// Limits counted at admission, released and corrected at settle.
    permit: Option<Permit>,
    /// (retail price to the account, wholesale price to the tenant) of the model, if priced.
    prices: (Option<Price>, Option<Price>),
    /// `None` once settled.
    meter: Option<Arc<Meter>>,
}

/// What admission decided about a request, to build its guard.
pub struct Admission {
    pub admission_id: String,
    pub request_id: String,
    pub prompt: (String, i64),
    pub completion_cap: i64,
    pub permit: Option<Permit>,
    pub prices: (Option<Price>, Option<Price>),
}

impl Admitted {
    pub fn new(meter: &Arc<Meter>, key: &ApiKey, req: &ChatRequest, admission: Admission) -> Self {
        meter.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            admission_id: admission.admission_id,
            request_id: admission.request_id,
            key: key.clone(),
            model: req.model.clone(),
            prompt_text: admission.prompt.0,
            prompt_estimate: admission.prompt.1,
            completion_cap: admission.completion_cap,
            started: Instant::now(),
            started_at: crate::db::now(),
            delivered: Delivered::default(),
            permit: admission.permit,
            prices: admission.prices,
            meter: Some(meter.clone()),
        }
    }

    /// The limits counted at admission (for the `x-ratelimit-*` view of them).
    pub fn permit(&self) -> Option<&Permit> {
        self.permit.as_ref()
    }

    /// Settles with what [`Admitted::delivered`] holds; returns what was billed.
    pub fn settle(mut self, status: Status) -> Billed {
        self.finish(status).expect("an unsettled admission")
    }

    /// Settles with `delivered`; returns what was billed.
    pub fn settle_with(mut self, status: Status, delivered: Delivered) -> Billed {
        self.delivered = delivered;
        self.finish(status).expect("an unsettled admission")
    }

    /// The status of a request that ends because its handler or stream was dropped.
    pub fn dropped_status(&self, default: Status) -> Status {
        match &self.meter {
            Some(m) if m.stopping.load(Ordering::Relaxed) => Status::Shutdown,
            _ => default,
        }
    }

    /// Resolves when the shutdown grace has run out (never, once settled).
    pub fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self.meter.as_ref().map(|m| m.cancel.subscribe());
        async move {
            match rx {
                Some(mut rx) => {
                    if rx.wait_for(|c| *c).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Settles once (later calls do nothing and return `None`).
    pub fn finish(&mut self, status: Status) -> Option<Billed> {
        let meter = self.meter.take()?;
        meter.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut delivered = std::mem::take(&mut self.delivered);
        if let Some(agg) = delivered.collected.take() {
            if delivered.text.is_empty() {
                delivered.text = agg.text();
            }
            if delivered.usage.is_none() {
                delivered.usage = agg.usage();
            }
        }
        Some(meter.record(self, status, delivered))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let status = self.dropped_status(Status::ClientGone);
        self.finish(status);
    }
}

impl Meter {
    /// A meter journaling usage in `journal_dir` (see [`super::metering::journal`]), writing it in
    /// up to `lanes` batches at once, billing within `tolerance`.
    pub fn new(
        db: Db,
        limiter: Arc<Guard>,
        journal_dir: &std::path::Path,
        lanes: usize,
        tolerance: Tolerance,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            writer: UsageWriter::new(db.clone(), limiter.clone(), journal_dir, lanes)?,
            limiter,
            db,
            tolerance,
            stopping: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            cancel: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    /// Starts the batch writer and the balance re-sync timer (inside the server's runtime). The
    /// tokenizer is not loaded here: the gateway counts only when an upstream reported no usage
    /// or an implausible one, and its ~40 MB would otherwise sit in every idle replica.
    pub fn spawn_writer(&self) {
        self.writer.spawn();
        super::balance::spawn_resync_timer(self.db.clone(), self.limiter.clone());
    }

    /// From now on, requests that end because they were dropped are recorded as `shutdown`.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// A graceful shutdown's end: waits up to `grace` for every admission to settle, then tells the
    /// rest to settle themselves as `shutdown` (while the runtime still runs, so their slots and
    /// holds are released in Redis too) and waits a moment for them.
    pub async fn drain(&self, grace: std::time::Duration) {
        let idle = |m: &Self| m.in_flight.load(Ordering::Acquire) == 0;
        let deadline = Instant::now() + grace;
        while !idle(self) && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if idle(self) {
            return;
        }
        tracing::warn!(
            in_flight = self.in_flight.load(Ordering::Acquire),
            "shutdown grace over: settling the requests still running"
        );
        self.cancel.send_replace(true);
        let settle_deadline = Instant::now() + std::time::Duration::from_secs(2);
        while !idle(self) && Instant::now() < settle_deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Builds the usage record, journals it, then releases the slot and captures the hold.
    fn record(&self, admitted: &mut Admitted, status: Status, delivered: Delivered) -> Billed {
        let reported = match status {
            Status::Ok => delivered.usage,
            _ => None,
        };
        let prompt_text = &admitted.prompt_text;
        let text = &delivered.text;
        let billed = bounds::billed(
            reported,
            Counts {
                prompt_estimate: admitted.prompt_estimate,
                prompt: || count_tokens(prompt_text),
                completion: || count_tokens(text),
            },
            admitted.completion_cap,
            self.tolerance,
        );
        let (prompt, completion) = (billed.prompt_tokens, billed.completion_tokens);
        let upstream_label = delivered.upstream.as_deref().unwrap_or("none");
        self.limiter
            .metrics()
            .usage_source
            .with_label_values(&[upstream_label, billed.source.as_str()])
            .inc();
        // A request that failed before anything reached the client costs nothing; one the client
        // abandoned after an upstream began answering pays for its prompt and what was produced.
        let free = match status {
            Status::Ok => false,
            Status::UpstreamError | Status::ClientDisconnected => delivered.first_byte.is_none(),
            Status::ClientGone | Status::Shutdown => delivered.worker.is_none(),
        };
        let charge = |price: Option<Price>| match price {
            Some(p) if !free => p.cost(prompt, completion),
            _ => Nano(0),
        };
        let retail = admitted.prices.0;
        let record = UsageRecord {
            prompt_nano_per_mtok: retail.map(|p| p.prompt_nano_per_mtok),
            completion_nano_per_mtok: retail.map(|p| p.completion_nano_per_mtok),
            request_nano: retail.map(|p| p.request_nano),
            charged_nano: charge(admitted.prices.0),
            tenant_charged_nano: charge(admitted.prices.1),
            id: admitted.admission_id.clone(),
            request_id: std::mem::take(&mut admitted.request_id),
            tenant_id: admitted.key.tenant_id.clone(),
            account_id: admitted.key.account_id.clone(),
            api_key_id: admitted.key.id.clone(),
            model: std::mem::take(&mut admitted.model),
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated: billed.source != UsageSource::Upstream,
            usage_source: billed.source,
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
        tracing::info!(request.id = %record.request_id, admission.id = %record.id, model = %record.model,
            status = %record.status, prompt_tokens = record.prompt_tokens, completion_tokens = record.completion_tokens,
            usage_source = record.usage_source.as_str(), upstream = ?record.upstream, miner.uid = ?record.miner_uid,
            latency_ms = record.latency_ms, "settled");
        let capture = Capture {
            event_id: record.id.clone(),
            amount: record.charged_nano,
        };
        // Journaled first: a hold is only captured for an event that cannot be lost.
        self.writer.submit(record);
        if let Some(permit) = admitted.permit.take() {
            let capture = permit.hold().map(|_| capture);
            self.limiter.settle(permit, prompt + completion, capture);
        }
        billed
    }
}
