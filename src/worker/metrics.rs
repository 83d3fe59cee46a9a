//! The worker's Prometheus metrics, served at `GET /metrics` on its internal port:
//!
//! - `taogate_worker_miner_requests_total{upstream,outcome}`: miner attempts by outcome
//!   (`answered` — produced a first event, `failed`);
//! - `taogate_worker_miner_first_byte_seconds{upstream}`: time to a miner's first event;
//! - `taogate_worker_answers_total{upstream}`: answers returned, by route;
//! - `taogate_worker_upstream_calls_total{route,kind,outcome}`: each try of a model's route (the
//!   configured model, the upstream's kind, `answered` — a first event — or `failed`). Labels are
//!   bounded by the worker's config.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct WorkerMetrics {
    registry: Registry,
    pub miner_requests: IntCounterVec,
    pub first_byte: HistogramVec,
    pub answers: IntCounterVec,
    pub upstream_calls: IntCounterVec,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let miner_requests = IntCounterVec::new(
            Opts::new(
                "taogate_worker_miner_requests_total",
                "Miner attempts by outcome",
            ),
            &["upstream", "outcome"],
        )
        .expect("valid metric");
        // Buckets from a fast local miner (5 ms) to a slow cold one (10 s).
        let first_byte = HistogramVec::new(
            HistogramOpts::new(
                "taogate_worker_miner_first_byte_seconds",
                "Time to a miner's first event",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["upstream"],
        )
        .expect("valid metric");
        let answers = IntCounterVec::new(
            Opts::new("taogate_worker_answers_total", "Answers returned, by route"),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_calls = IntCounterVec::new(
            Opts::new(
                "taogate_worker_upstream_calls_total",
                "Tries of a model's routes, by model, upstream kind and outcome",
            ),
            &["route", "kind", "outcome"],
        )
        .expect("valid metric");
        for c in [
            Box::new(upstream_calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(miner_requests.clone()),
            Box::new(first_byte.clone()),
            Box::new(answers.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            miner_requests,
            first_byte,
            answers,
            upstream_calls,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
