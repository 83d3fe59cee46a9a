//! The gateway's pool of validator workers: membership (config, or registered in process by
//! `dev`), power-of-two-choices balancing on in-flight requests, a circuit breaker per worker
//! (open after consecutive failures, one half-open probe after the cooldown), active health checks,
//! a bounded wait for capacity (then 503 `overloaded`), and retries on another worker only while
//! nothing has reached the client. Workers in this process are called directly ([`local`]).

pub mod local;
pub mod member;
pub mod registry;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::seq::IndexedRandom;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::member::{Lease, Member};
use crate::error::{ApiError, ApiResult};
use crate::hop::{Attempt, EventStream, Refusal, RouteInfo};
use crate::openai::ChatRequest;
use crate::outbound::ThreadClients;
use crate::worker::transports::{completion_events, first_event};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Worker base URLs (e.g. `http://10.0.0.7:9100`).
    pub workers: Vec<String>,
    /// Shared secret presented to workers.
    pub worker_secret: SecretString,
    /// Time for a worker to start answering before another is tried.
    pub first_byte_timeout_ms: u64,
    /// Whole-request deadline.
    pub request_timeout_secs: u64,
    /// Requests in flight to workers from this gateway.
    pub max_in_flight: usize,
    /// How long a request may wait for capacity before 503 `overloaded`.
    pub queue_wait_ms: u64,
    /// Workers tried per request.
    pub max_attempts: usize,
    /// Consecutive failures that open a worker's circuit …
    pub eject_after_failures: u32,
    /// … for this long, before one half-open probe.
    pub eject_secs: u64,
    /// Active health check period (`GET /healthz`).
    pub health_interval_secs: u64,
    /// Workers announce themselves this often …
    pub heartbeat_secs: u64,
    /// … and are dropped from the pool when no heartbeat came for this long.
    pub heartbeat_ttl_secs: u64,
}

/// An answer that has started: the worker's event stream plus what must live as long as it.
pub struct Answer {
    pub events: EventStream,
    pub worker: String,
    pub upstream: Option<String>,
    pub miner_uid: Option<String>,
    /// The answering route's wholesale price (nano-units per 1M prompt, completion tokens).
    pub cost: Option<(i64, i64)>,
    pub guard: (Lease, OwnedSemaphorePermit),
}

pub struct Pool {
    members: RwLock<Vec<Arc<Member>>>,
    colocated: self::local::Colocated,
    metrics: Arc<crate::metrics::GatewayMetrics>,
    /// The HTTP client to workers, one per thread.
    client: ThreadClients,
    slots: Arc<Semaphore>,
    cfg: PoolConfig,
}

impl Pool {
    pub fn new(
        cfg: PoolConfig,
        metrics: Arc<crate::metrics::GatewayMetrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let connect = Duration::from_millis(cfg.first_byte_timeout_ms.min(5_000));
        let client = ThreadClients::new(move || {
            reqwest::Client::builder()
                .connect_timeout(connect)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
        })?;
        let pool = Arc::new(Self {
            members: RwLock::new(Vec::new()),
            colocated: Default::default(),
            metrics,
            client,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            cfg,
        });
        for url in pool.cfg.workers.clone() {
            pool.add(&url);
        }
        Ok(pool)
    }

    /// Marks the member at `url` (once it joins) as `worker`, running in this process: it is then
    /// called directly, not over HTTP.
    pub fn attach_colocated(&self, url: &str, worker: Arc<crate::worker::Worker>) {
        self.colocated.attach(url, worker);
    }

    /// Adds a configured worker (idempotent); configured workers stay until the process ends.
    pub fn add(&self, url: &str) {
        self.join(url, false);
    }

    fn join(&self, url: &str, announced: bool) {
        let url = url.trim_end_matches('/').to_owned();
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        if !members.iter().any(|m| m.url == url) {
            tracing::info!(worker = %url, announced, "worker joined the pool");
            members.push(Arc::new(Member::new(url, announced)));
        }
    }

    /// Brings the announced members in line with the registry's live set.
    fn sync(&self, live: &[String]) {
        for url in live {
            self.join(url, true);
        }
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| {
            let keep = !m.announced || live.iter().any(|u| u.trim_end_matches('/') == m.url);
            if !keep {
                tracing::warn!(worker = %m.url, "worker heartbeat lapsed; left the pool");
            }
            keep
        });
    }

    /// Follows the registry: announced workers join, lapsed ones leave.
    pub fn spawn_registry_sync(self: &Arc<Self>, registry: self::registry::Registry) {
        let pool = Arc::downgrade(self);
        let every = Duration::from_secs(self.cfg.heartbeat_secs.max(1));
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                match registry.live().await {
                    Ok(live) => pool.sync(&live),
                    Err(e) => {
                        tracing::warn!(error = %e, "worker registry unreachable; keeping the current pool")
                    }
                }
            }
        });
    }

    pub fn heartbeat(&self) -> (Duration, Duration) {
        (
            Duration::from_secs(self.cfg.heartbeat_secs.max(1)),
            Duration::from_secs(self.cfg.heartbeat_ttl_secs.max(1)),
        )
    }

    /// Each member's URL, requests in flight and breaker state (for `/metrics`).
    pub fn states(&self) -> Vec<crate::metrics::WorkerState> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| crate::metrics::WorkerState {
                url: m.url.clone(),
                in_flight: m.in_flight(),
                circuit: m.breaker.circuit(),
            })
            .collect()
    }

    /// Members whose breaker lets requests through (for readiness).
    pub fn healthy(&self) -> usize {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|m| m.breaker.available())
            .count()
    }

    pub fn size(&self) -> usize {
        self.members.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Power of two choices among available members not yet tried.
    fn pick(&self, tried: &[String]) -> Option<Arc<Member>> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let open: Vec<&Arc<Member>> = members
            .iter()
            .filter(|m| !tried.contains(&m.url) && m.breaker.available())
            .collect();
        let chosen = match open.len() {
            0 => return None,
            1 => open[0],
            _ => {
                let two: Vec<&&Arc<Member>> = open.choose_multiple(&mut rand::rng(), 2).collect();
                if two[0].in_flight() <= two[1].in_flight() {
                    two[0]
                } else {
                    two[1]
                }
            }
        };
        chosen.breaker.claim_probe();
        Some(chosen.clone())
    }

    /// Sends `req` (prepared for upstream) to a worker, failing over before the first byte.
    pub async fn send(&self, req: &ChatRequest, request_id: &str) -> ApiResult<Answer> {
        self.send_avoiding(req, request_id, &mut Vec::new()).await
    }

    /// As [`Pool::send`], never picking a worker in `tried` (and adding the ones it tries), so a
    /// caller that can still retry (nothing sent to its client yet) moves on to fresh workers.
    pub async fn send_avoiding(
        &self,
        req: &ChatRequest,
        request_id: &str,
        tried: &mut Vec<String>,
    ) -> ApiResult<Answer> {
        if self.size() == 0 {
            tracing::warn!(request.id = %request_id, "no validator worker is configured (pool.workers) or announcing itself: answering 503");
            return Err(ApiError::NoWorkers);
        }
        let wait = Duration::from_millis(self.cfg.queue_wait_ms);
        let permit = tokio::time::timeout(wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::Overloaded {
                retry_after_secs: 1,
            })?
            .map_err(|_| ApiError::Unavailable)?;
        // Serialised once, and only when a worker over HTTP is asked (an in-process one takes
        // the request as it is).
        let mut body: Option<Vec<u8>> = None;
        let first_byte = Duration::from_millis(self.cfg.first_byte_timeout_ms);
        let mut upstream_failure = None;
        let budget = tried.len() + self.cfg.max_attempts.max(1);
        let asked = std::time::Instant::now();
        while tried.len() < budget {
            let Some(member) = self.pick(tried) else {
                break;
            };
            tried.push(member.url.clone());
            let lease = Lease::new(member.clone());
            let colocated = self.colocated.get(&member.url);
            let via = if colocated.is_some() {
                "process"
            } else {
                "http"
            };
            self.metrics.pool_attempts.with_label_values(&[via]).inc();
            if colocated.is_none() && body.is_none() {
                body = Some(serde_json::to_vec(req).map_err(ApiError::internal)?);
            }
            let body = body.as_deref().unwrap_or_default();
            let attempt = async {
                if let Some(worker) = colocated {
                    return self::local::ask(&worker, req).await;
                }
                self.ask_http(&member.url, body, request_id, req).await
            };
            match tokio::time::timeout(first_byte, attempt).await {
                Ok(Attempt::Answered(events, route)) => {
                    member.breaker.on_success();
                    self.metrics
                        .upstream_first_byte
                        .observe(asked.elapsed().as_secs_f64());
                    let worker = member.url.clone();
                    return Ok(Answer {
                        events,
                        worker,
                        upstream: route.upstream,
                        miner_uid: route.miner_uid,
                        cost: route.cost,
                        guard: (lease, permit),
                    });
                }
                // The worker is healthy but its answer is final for this worker (unknown model,
                // every upstream failed): the model error is final, an upstream failure is retried.
                Ok(Attempt::Refused(Refusal::ModelNotFound { model })) => {
                    member.breaker.on_success();
                    return Err(ApiError::ModelNotFound { model });
                }
                Ok(Attempt::Refused(Refusal::NoUpstream { message })) => {
                    member.breaker.on_success();
                    upstream_failure = Some(ApiError::Upstream { message });
                }
                Ok(Attempt::WorkerFailed(reason)) => self.failed(&member, &reason),
                Err(_) => self.failed(&member, "no first byte within the deadline"),
            }
        }
        Err(upstream_failure.unwrap_or(ApiError::Unavailable))
    }

    /// One attempt on a worker over HTTP: its answer once the first event (or, for a non-stream
    /// request, the headers) arrived.
    async fn ask_http(
        &self,
        url: &str,
        body: &[u8],
        request_id: &str,
        req: &ChatRequest,
    ) -> Attempt {
        let sent = self
            .client
            .client()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(self.cfg.worker_secret.expose_secret())
            .header("content-type", "application/json")
            .header("x-request-id", request_id)
            .body(body.to_vec())
            .send()
            .await;
        let res = match sent {
            Ok(res) => res,
            Err(e) => return Attempt::WorkerFailed(e.to_string()),
        };
        match res.status().as_u16() {
            404 => {
                return Attempt::Refused(Refusal::ModelNotFound {
                    model: req.model.clone(),
                });
            }
            502 => {
                return Attempt::Refused(Refusal::NoUpstream {
                    message: "no upstream of the worker could answer".into(),
                });
            }
            s if !(200..300).contains(&s) => {
                return Attempt::WorkerFailed(format!("worker answered {s}"));
            }
            _ => {}
        }
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let route = RouteInfo::from_headers(header);
        let json = header("content-type").is_some_and(|t| t.starts_with("application/json"));
        let events: EventStream = if json {
            completion_events(res)
        } else {
            match first_event(res).await {
                Ok(events) => events,
                Err(e) => return Attempt::WorkerFailed(e.to_string()),
            }
        };
        Attempt::Answered(events, route)
    }

    pub fn max_attempts(&self) -> usize {
        self.cfg.max_attempts.max(1)
    }

    fn failed(&self, member: &Member, reason: &str) {
        tracing::warn!(worker = %member.url, %reason, "worker failed before the first byte");
        member.breaker.on_failure(
            self.cfg.eject_after_failures,
            Duration::from_secs(self.cfg.eject_secs),
        );
    }

    /// Probes every member's `/healthz` periodically; results feed the circuit breakers.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let every = Duration::from_secs(self.cfg.health_interval_secs.max(1));
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let members: Vec<Arc<Member>> = pool
                    .members
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                for m in members {
                    let ok = pool
                        .client
                        .client()
                        .get(format!("{}/healthz", m.url))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        m.breaker.on_success();
                    } else {
                        pool.failed(&m, "health check failed");
                    }
                }
            }
        });
    }
}
