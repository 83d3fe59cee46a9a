//! The gateway's Prometheus metrics, served at `GET /metrics`:
//!
//! - `taogate_limiter_degraded` (gauge): 1 while the shared limiter (Redis) is unreachable;
//! - `taogate_limiter_degraded_tenants` (gauge): on a Redis Cluster, tenants whose slot cannot be
//!   reached now (served under this replica's own limits or refused, per `on_redis_down`);
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
//!   (`credited`, `debited`, `replayed`, …; a tenant's own providers count as `custom`);
//! - `taogate_limiter_refusals_total{scope,kind}`: 429s by the limit that refused (`key`,
//!   `account`, `tenant` × `rpm`, `tpm`, `concurrency`, `requests_per_day`, …; the per-replica
//!   brake counts as the key's `rpm`, or `first_line` for a key without one);
//! - `taogate_holds_in_flight` (gauge): balance holds taken and not yet settled on this replica;
//! - `taogate_ledger_postings_total{kind}`: ledger transactions this replica committed (`usage`,
//!   `payment`, `adjustment`);
//! - `taogate_pool_worker_in_flight{worker}`, `taogate_pool_worker_circuit{worker,state}` (gauges,
//!   read at scrape time): each pool member's requests in flight and its breaker (`closed`,
//!   `open`, `half_open`; 1 for the current state);
//! - `taogate_proxy_overhead_seconds`, `taogate_upstream_first_byte_seconds`: a chat's time in
//!   the gateway before the worker is asked, and from then until the worker's first byte;
//! - `taogate_backend_errors_total{backend}`: failed calls to `redis` and `database` (the pool
//!   could not hand out a connection, or the server failed); with `taogate_limiter_degraded` /
//!   `taogate_limiter_degraded_tenants` the degraded state.
//!
//! Labels are bounded: route patterns, enum values, worker URLs of the pool. Per-tenant labels
//! (`taogate_tenant_requests_total{tenant,status}`) only with `metrics.tenant_labels = true`;
//! nothing is ever labelled by key.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Failed calls to Redis and the database, counted where they happen (the links have no handle
/// on a replica's metrics); one process-wide family, registered in each replica's registry.
pub static BACKEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "taogate_backend_errors_total",
            "Failed calls to Redis and the database",
        ),
        &["backend"],
    )
    .expect("valid metric");
    for backend in ["redis", "database"] {
        c.with_label_values(&[backend]);
    }
    c
});

/// Counts a failed call to `backend` (`redis` or `database`).
pub fn backend_error(backend: &str) {
    BACKEND_ERRORS.with_label_values(&[backend]).inc();
}

/// One pool member as `/metrics` reports it: URL, requests in flight, breaker state.
pub struct WorkerState {
    pub url: String,
    pub in_flight: usize,
    pub circuit: &'static str,
}

pub struct GatewayMetrics {
    registry: Registry,
    pub limiter_degraded: IntGauge,
    pub limiter_degraded_tenants: IntGauge,
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
    pub refusals: IntCounterVec,
    pub holds_in_flight: IntGauge,
    pub ledger_postings: IntCounterVec,
    pub worker_in_flight: IntGaugeVec,
    pub worker_circuit: IntGaugeVec,
    pub proxy_overhead: Histogram,
    pub upstream_first_byte: Histogram,
    /// Only with `metrics.tenant_labels`.
    pub tenant_requests: Option<IntCounterVec>,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        Self::with_tenant_labels(false)
    }

    /// Metrics with or without the per-tenant request counter (`metrics.tenant_labels`).
    pub fn with_tenant_labels(tenant_labels: bool) -> Self {
        let registry = Registry::new();
        let limiter_degraded = IntGauge::new(
            "taogate_limiter_degraded",
            "1 while the shared limiter backend is unreachable",
        )
        .expect("valid metric");
        let limiter_degraded_tenants = IntGauge::new(
            "taogate_limiter_degraded_tenants",
            "Tenants whose Redis Cluster slot cannot be reached",
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
        let refusals = IntCounterVec::new(
            Opts::new(
                "taogate_limiter_refusals_total",
                "Requests refused by a limit, by its scope and kind",
            ),
            &["scope", "kind"],
        )
        .expect("valid metric");
        let holds_in_flight = IntGauge::new(
            "taogate_holds_in_flight",
            "Balance holds taken and not yet settled on this replica",
        )
        .expect("valid metric");
        let ledger_postings = IntCounterVec::new(
            Opts::new(
                "taogate_ledger_postings_total",
                "Ledger transactions committed, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let worker_in_flight = IntGaugeVec::new(
            Opts::new(
                "taogate_pool_worker_in_flight",
                "Requests in flight per pool member",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let worker_circuit = IntGaugeVec::new(
            Opts::new(
                "taogate_pool_worker_circuit",
                "Each pool member's circuit breaker state (1 for the current one)",
            ),
            &["worker", "state"],
        )
        .expect("valid metric");
        let fast = vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
        ];
        let proxy_overhead = Histogram::with_opts(
            HistogramOpts::new(
                "taogate_proxy_overhead_seconds",
                "A chat's time in the gateway before its worker is asked",
            )
            .buckets(fast),
        )
        .expect("valid metric");
        let upstream_first_byte = Histogram::with_opts(
            HistogramOpts::new(
                "taogate_upstream_first_byte_seconds",
                "From asking the worker to its first byte",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let tenant_requests = tenant_labels.then(|| {
            IntCounterVec::new(
                Opts::new(
                    "taogate_tenant_requests_total",
                    "HTTP answers to a tenant's callers, by tenant and status",
                ),
                &["tenant", "status"],
            )
            .expect("valid metric")
        });
        if let Some(t) = &tenant_requests {
            registry
                .register(Box::new(t.clone()))
                .expect("unique metric");
        }
        for kind in ["usage", "payment", "adjustment"] {
            ledger_postings.with_label_values(&[kind]);
        }
        // Every provider's credits show (at 0) before the first one arrives.
        for provider in ["stripe", "tao", "btcpay", "coinbase", "custom"] {
            payments.with_label_values(&[provider, "credited"]);
        }
        for c in [
            Box::new(BACKEND_ERRORS.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refusals.clone()),
            Box::new(holds_in_flight.clone()),
            Box::new(ledger_postings.clone()),
            Box::new(worker_in_flight.clone()),
            Box::new(worker_circuit.clone()),
            Box::new(proxy_overhead.clone()),
            Box::new(upstream_first_byte.clone()),
            Box::new(limiter_degraded.clone()),
            Box::new(limiter_degraded_tenants.clone()),
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
            limiter_degraded_tenants,
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
            refusals,
            holds_in_flight,
            ledger_postings,
            worker_in_flight,
            worker_circuit,
            proxy_overhead,
            upstream_first_byte,
            tenant_requests,
        }
    }

    /// Sets the pool gauges to `workers` (members that left the pool disappear).
    pub fn observe_pool(&self, workers: &[WorkerState]) {
        self.worker_in_flight.reset();
        self.worker_circuit.reset();
        for w in workers {
            self.worker_in_flight
                .with_label_values(&[w.url.as_str()])
                .set(w.in_flight as i64);
            for state in ["closed", "open", "half_open"] {
                self.worker_circuit
                    .with_label_values(&[w.url.as_str(), state])
                    .set(i64::from(state == w.circuit));
            }
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
        if matches!(outcome, "credited" | "debited") {
            self.ledger_postings.with_label_values(&["payment"]).inc();
        }
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
