//! The gateway's Prometheus metrics, served at `GET /metrics`:
//!
//! - `taogate_limiter_degraded` (gauge): 1 while the shared limiter (Redis) is unreachable;
//! - `taogate_limiter_transitions_total{to}`: `degraded` / `recovered` transitions;
//! - `taogate_limiter_decisions_total{backend,outcome}`: admissions by backend (`shared`, `local`,
//!   `first_line`) and outcome (`admitted`, `refused`, `insufficient` (402: the balance hold),
//!   `unavailable`);
//! - `taogate_limiter_admission_seconds`: time for one admission decision (one Redis round trip);
//! - `taogate_usage_backlog` (gauge): usage records journaled and not yet in the database (grows
//!   while the database is down);
//! - `taogate_usage_written_total`: usage records committed by the batch writer (replays included);
//! - `taogate_usage_write_failures_total`: batch writes that failed and will be retried;
//! - `taogate_usage_batch_seconds`: time to commit one batch;
//! - `taogate_pool_attempts_total{via}`: attempts on workers, `http` or `process` (a worker
//!   running in this process, called directly);
//! - `taogate_key_lookups_total`: API keys looked up in the database (key cache misses; concurrent
//!   misses on one key share one lookup);
//! - `taogate_http_requests_total{route,method,status}`: every HTTP answer, by the matched route
//!   pattern (`/api/v1/keys/{id}`, never the raw path: bounded labels; `unmatched` otherwise);
//! - `taogate_http_request_duration_seconds{route}`: time until the answer's head (a stream's
//!   first byte);
//! - `taogate_payments_total{provider,outcome}`: provider notifications received, by what they did
//!   (`credited`, `debited`, `replayed`, …; a tenant's own providers count as `custom`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct GatewayMetrics {
    registry: Registry,
    pub limiter_degraded: IntGauge,
    pub limiter_transitions: IntCounterVec,
    pub limiter_decisions: IntCounterVec,
    pub admission_seconds: Histogram,
    pub usage_backlog: IntGauge,
    pub usage_written: IntCounter,
    pub usage_write_failures: IntCounter,
    pub usage_batch_seconds: Histogram,
    pub pool_attempts: IntCounterVec,
    pub key_lookups: IntCounter,
    /// Settled requests by answering upstream and where their billed token counts came from.
    pub usage_source: IntCounterVec,
    /// Usage records the writer could not post and set aside (dead letters).
    pub usage_dead_letters: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub payments: IntCounterVec,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let limiter_degraded = IntGauge::new(
            "taogate_limiter_degraded",
            "1 while the shared limiter backend is unreachable",
        )
        .expect("valid metric");
        let limiter_transitions = IntCounterVec::new(
            Opts::new(
                "taogate_limiter_transitions_total",
                "Shared limiter health transitions",
            ),
            &["to"],
        )
        .expect("valid metric");
        let limiter_decisions = IntCounterVec::new(
            Opts::new(
                "taogate_limiter_decisions_total",
                "Admission decisions by backend and outcome",
            ),
            &["backend", "outcome"],
        )
        .expect("valid metric");
        let admission_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "taogate_limiter_admission_seconds",
                "Time for one admission decision",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
        )
        .expect("valid metric");
        let usage_backlog = IntGauge::new(
            "taogate_usage_backlog",
            "Usage records journaled and not yet in the database",
        )
        .expect("valid metric");
        let usage_written = IntCounter::new(
            "taogate_usage_written_total",
            "Usage records committed by the batch writer",
        )
        .expect("valid metric");
        let usage_write_failures = IntCounter::new(
            "taogate_usage_write_failures_total",
            "Usage batch writes that failed and will be retried",
        )
        .expect("valid metric");
        let usage_batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "taogate_usage_batch_seconds",
                "Time to commit one usage batch",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid metric");
        let pool_attempts = IntCounterVec::new(
            Opts::new(
                "taogate_pool_attempts_total",
                "Attempts on workers, over HTTP or in process",
            ),
            &["via"],
        )
        .expect("valid metric");
        let key_lookups = IntCounter::new(
            "taogate_key_lookups_total",
            "API keys looked up in the database (key cache misses)",
        )
        .expect("valid metric");
        let usage_source = IntCounterVec::new(
            Opts::new(
                "taogate_usage_source_total",
                "Settled requests by upstream and source of the billed counts (upstream, counted, clamped)",
            ),
            &["upstream", "source"],
        )
        .expect("valid metric");
        let usage_dead_letters = IntCounter::new(
            "taogate_usage_dead_letters_total",
            "Usage records set aside in usage_dead_letters because they could not be posted",
        )
        .expect("valid metric");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "taogate_http_requests_total",
                "HTTP answers by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "taogate_http_request_duration_seconds",
                "Time until an HTTP answer's head, by route pattern",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let payments = IntCounterVec::new(
            Opts::new(
                "taogate_payments_total",
                "Payment provider notifications received, by provider and outcome",
            ),
            &["provider", "outcome"],
        )
        .expect("valid metric");
        for c in [
            Box::new(limiter_degraded.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(payments.clone()),
            Box::new(usage_source.clone()),
            Box::new(usage_dead_letters.clone()),
            Box::new(limiter_transitions.clone()),
            Box::new(limiter_decisions.clone()),
            Box::new(admission_seconds.clone()),
            Box::new(usage_backlog.clone()),
            Box::new(usage_written.clone()),
            Box::new(usage_write_failures.clone()),
            Box::new(usage_batch_seconds.clone()),
            Box::new(pool_attempts.clone()),
            Box::new(key_lookups.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            limiter_degraded,
            limiter_transitions,
            limiter_decisions,
            admission_seconds,
            usage_backlog,
            usage_written,
            usage_write_failures,
            usage_batch_seconds,
            pool_attempts,
            key_lookups,
            usage_source,
            usage_dead_letters,
            http_requests,
            http_duration,
            payments,
        }
    }

    /// Counts a payment notification's outcome (a tenant's own providers as `custom`).
    pub fn payment(&self, provider: &str, outcome: &str) {
        let provider = if provider.starts_with("custom:") {
            "custom"
        } else {
            provider
        };
        self.payments.with_label_values(&[provider, outcome]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encodable metrics");
        String::from_utf8(out).expect("utf-8 metrics")
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
