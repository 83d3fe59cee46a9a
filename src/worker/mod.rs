//! `taogate worker`: a validator dendrite worker. It holds the hotkey and, per model, an ordered
//! list of upstreams (owner gateways over `openai`; miner pools signed with Epistula, `btauth/1` or
//! Verathos-style headers); it serves an
//! internal OpenAI-compatible `POST /v1/chat/completions` to the gateway, authenticated by a
//! shared secret, and says which upstream and miner uid answered in `x-taogate-upstream` /
//! `x-taogate-miner-uid`.

pub mod axon;
pub mod btauth;
pub mod chain;
pub mod config;
pub mod epistula;
pub mod error;
pub mod health;
pub mod hotkey;
pub mod metagraph;
pub mod metrics;
pub mod routing;
pub mod scoring;
pub mod transports;
pub mod verathos;

use std::collections::HashMap;
use std::future::ready;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use secrecy::{ExposeSecret, SecretString};

use self::config::{UpstreamConfig, WorkerConfig};
use self::error::WorkerError;
use self::hotkey::Hotkey;
use self::routing::Route;
use self::transports::miners::{MinerPool, Scheme};
use self::transports::{EventStream, Opened, Transport};
use crate::hop::{Event, MINERS_ANSWERED_HEADER, MINERS_ASKED_HEADER, RouteInfo};
use crate::openai::ChatRequest;
use crate::openai::aggregate::Aggregator;
use crate::openai::sse::{self, DONE};

pub use crate::hop::{COST_HEADER, MINER_UID_HEADER, UPSTREAM_HEADER};

type WorkerResult<T> = Result<T, WorkerError>;

pub struct Worker {
    routes: HashMap<String, Vec<Route>>,
    secret: SecretString,
    route_cooldown: Duration,
    first_byte: Duration,
    deadline: Duration,
    pub hotkey: Arc<Hotkey>,
    miner_pools: Vec<Arc<MinerPool>>,
    pub metrics: Arc<metrics::WorkerMetrics>,
}

impl Worker {
    pub fn build(cfg: &WorkerConfig, hotkey: Arc<Hotkey>) -> anyhow::Result<Self> {
        let client = crate::outbound::ThreadClients::new(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
        })?;
        let mut routes: HashMap<String, Vec<Route>> = HashMap::new();
        let mut miner_pools = Vec::new();
        let metrics = Arc::new(metrics::WorkerMetrics::new());
        for route in &cfg.routes {
            let mut chain: Vec<Arc<dyn Transport>> = Vec::new();
            for up in &route.upstreams {
                match up {
                    UpstreamConfig::Openai {
                        name,
                        base_url,
                        api_key_env,
                        api_key_file,
                        api_key,
                        model,
                        ..
                    } => {
                        chain.push(Arc::new(transports::openai::OpenAi::new(
                            name,
                            base_url,
                            api_key_env.as_deref(),
                            api_key_file.as_deref(),
                            api_key.as_deref(),
                            model.clone(),
                            client.clone(),
                        )?));
                    }
                    UpstreamConfig::Epistula(_)
                    | UpstreamConfig::Btauth(_)
                    | UpstreamConfig::Verathos(_)
                    | UpstreamConfig::Axon(_) => {
                        let (p, scheme) = match up {
                            UpstreamConfig::Epistula(p) => (p.clone(), Scheme::Epistula),
                            UpstreamConfig::Btauth(p) => (p.clone(), Scheme::Btauth),
                            UpstreamConfig::Verathos(p) => (p.clone(), Scheme::Verathos),
                            UpstreamConfig::Axon(a) => (a.pool(), Scheme::Axon(a.synapse.clone())),
                            UpstreamConfig::Openai { .. } => unreachable!("matched above"),
                        };
                        let pool = MinerPool::new(
                            &p,
                            scheme,
                            hotkey.clone(),
                            client.clone(),
                            metrics.clone(),
                        );
                        let t = Arc::new(pool?);
                        miner_pools.push(t.clone());
                        chain.push(t);
                    }
                }
            }
            let chain = chain.into_iter().zip(&route.upstreams).enumerate();
            let chain = chain
                .map(|(i, (t, up))| Route::new(t, up.terms(), i).with_kind(up.kind()))
                .collect();
            routes.insert(route.model.clone(), chain);
        }
        Ok(Self {
            routes,
            secret: cfg.secret.clone(),
            route_cooldown: Duration::from_secs(cfg.route_eject_secs),
            first_byte: Duration::from_millis(cfg.first_byte_timeout_ms),
            deadline: Duration::from_secs(cfg.request_timeout_secs),
            hotkey,
            miner_pools,
            metrics,
        })
    }

    /// Tries the model's routes in plan order until one produces a first event; returns the
    /// answer and the route's terms (its wholesale price).
    pub async fn open(&self, req: &ChatRequest) -> WorkerResult<(Opened, routing::RouteTerms)> {
        let chain = self
            .routes
            .get(&req.model)
            .ok_or_else(|| WorkerError::ModelNotFound {
                model: req.model.clone(),
            })?;
        let upstream_req = req.for_upstream();
        let mut failures = Vec::new();
        for route in routing::plan(chain) {
            let transport = &route.transport;
            match transport.open(&upstream_req, self.first_byte).await {
                Ok(mut opened) => {
                    route.breaker.on_success();
                    opened.events = answered_as(
                        opened.events,
                        &req.model,
                        (route.breaker.clone(), self.route_cooldown),
                    );
                    self.metrics
                        .answers
                        .with_label_values(&[&opened.upstream])
                        .inc();
                    self.metrics
                        .upstream_calls
                        .with_label_values(&[&req.model, route.kind, "answered"])
                        .inc();
                    tracing::info!(upstream = %opened.upstream, miner.uid = ?opened.miner_uid, miners.asked = ?opened.asked, miners.answered = ?opened.answered, "answered by {}", opened.upstream);
                    return Ok((opened, route.terms.clone()));
                }
                Err(e) => {
                    route.failed(self.route_cooldown);
                    self.metrics
                        .upstream_calls
                        .with_label_values(&[&req.model, route.kind, "failed"])
                        .inc();
                    tracing::warn!(upstream = %transport.name(), error = %e, "upstream failed before the first byte");
                    failures.push(format!("{}: {e}", transport.name()));
                }
            }
        }
        Err(WorkerError::NoUpstream {
            message: format!("every upstream failed ({})", failures.len()),
        })
    }

    /// Re-reads metagraph snapshots every `every`.
    pub fn spawn_metagraph_refresh(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(w) = this.upgrade() else { return };
                for t in &w.miner_pools {
                    t.refresh().await;
                }
            }
        });
    }

    fn authorised(&self, req: &HttpRequest) -> bool {
        let presented = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), self.secret.expose_secret().as_bytes())
    }
}

/// The events of an opened answer as the client must see them: every chunk names the model the
/// client asked for (an upstream that maps names answers its own id), and a break after the
/// first event opens the route's circuit (`routing::broke_midway`), so the request's retry — the
/// gateway retries a non-stream answer that broke before it reached the client — goes elsewhere.
fn answered_as(
    events: EventStream,
    model: &str,
    (breaker, cooldown): (Arc<crate::breaker::CircuitBreaker>, Duration),
) -> EventStream {
    let model = model.to_owned();
    let same = format!("\"model\":{}", serde_json::Value::from(model.as_str()));
    Box::pin(events.map(move |event| match event {
        Ok(Event::Chunk(payload)) => Ok(Event::Chunk(sse::with_model(payload, &model, &same))),
        Ok(Event::Done) => Ok(Event::Done),
        Err(e) => {
            tracing::warn!(upstream = %breaker.name(), error = %e, "answer broke midway; route opened");
            routing::broke_midway(&breaker, cooldown);
            Err(e)
        }
    }))
}

/// Disables Nagle's algorithm on every accepted connection: responses (SSE chunks above all) are
/// many small writes, and Nagle plus the peer's delayed ACK would hold each one back ~40 ms.
pub fn no_delay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = tcp.set_nodelay(true);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SSE body from an event stream: payloads re-framed, `[DONE]` at the end, an error event if the
/// stream breaks, cut at `deadline`.
pub fn sse_body(
    events: EventStream,
    deadline: Duration,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    events
        .take_while(|e| ready(!matches!(e, Ok(Event::Done))))
        .map(|e| match e {
            Ok(Event::Chunk(payload)) => sse::event(&payload),
            Ok(Event::Done) => sse::event(DONE),
            Err(err) => sse::event(&serde_json::json!({"error": {"message": format!("the upstream stream broke: {err}"), "type": "api_error", "code": "upstream_error", "param": null}}).to_string()),
        })
        .take_until(tokio::time::sleep(deadline))
        .chain(stream::once(ready(sse::event(DONE))))
        .map(Ok)
}

/// Reads a whole event stream into a non-stream completion (without `usage` when the upstream
/// reported none: the gateway counts then).
pub async fn collect(
    mut events: EventStream,
    deadline: Duration,
) -> WorkerResult<serde_json::Value> {
    let mut agg = Aggregator::default();
    let read = async {
        while let Some(e) = events.next().await {
            match e {
                Ok(Event::Done) => break,
                Ok(Event::Chunk(p)) => agg.push(&p),
                Err(e) => {
                    return Err(WorkerError::NoUpstream {
                        message: format!("the upstream stream broke: {e}"),
                    });
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| WorkerError::NoUpstream {
            message: "the upstream did not finish within the deadline".into(),
        })??;
    Ok(agg.finish(None))
}

async fn chat(
    worker: web::Data<Arc<Worker>>,
    req: HttpRequest,
    body: web::Json<ChatRequest>,
) -> WorkerResult<HttpResponse> {
    if !worker.authorised(&req) {
        return Err(WorkerError::Unauthorized);
    }
    let body = body.into_inner();
    let (opened, terms) = worker.open(&body).await?;
    let mut res = HttpResponse::Ok();
    let route = RouteInfo {
        upstream: Some(opened.upstream.clone()),
        miner_uid: opened.miner_uid.map(|uid| uid.to_string()),
        cost: terms.cost(),
    };
    for header in route.headers() {
        res.insert_header(header);
    }
    if !opened.asked.is_empty() {
        let asked: Vec<String> = opened.asked.iter().map(u16::to_string).collect();
        res.insert_header((MINERS_ASKED_HEADER, asked.join(",")));
        let answered: Vec<String> = opened
            .answered
            .iter()
            .map(|(uid, ms)| format!("{uid}:{ms}"))
            .collect();
        res.insert_header((MINERS_ANSWERED_HEADER, answered.join(",")));
    }
    if body.wants_stream() {
        Ok(res
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(sse_body(opened.events, worker.deadline)))
    } else {
        // Headers go now (an upstream answered), the completion when it is whole: the gateway's
        // first-byte deadline sees the answer start, and a stream that breaks midway cuts the body
        // (the gateway then retries elsewhere).
        let deadline = worker.deadline;
        let body = stream::once(async move {
            let completion = collect(opened.events, deadline).await?;
            Ok::<_, actix_web::Error>(Bytes::from(completion.to_string()))
        });
        Ok(res.content_type("application/json").streaming(body))
    }
}

/// Prometheus text format (internal port only, like everything on the worker).
async fn metrics_text(worker: web::Data<Arc<Worker>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(worker.metrics.render())
}

async fn healthz(worker: web::Data<Arc<Worker>>) -> HttpResponse {
    let mut models: Vec<&String> = worker.routes.keys().collect();
    models.sort();
    HttpResponse::Ok()
        .json(serde_json::json!({"status": "ok", "hotkey": worker.hotkey.ss58, "models": models}))
}

/// Serves the worker on `listener` with `threads` actix workers.
pub fn start(
    worker: Arc<Worker>,
    listener: TcpListener,
    threads: usize,
    max_body: usize,
) -> anyhow::Result<actix_web::dev::Server> {
    let data = web::Data::new(worker);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .app_data(error::json_config(max_body))
            .route("/v1/chat/completions", web::post().to(chat))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics_text))
            .default_service(web::to(error::not_found))
    })
    .on_connect(no_delay)
    .workers(threads)
    .shutdown_timeout(2)
    .listen(listener)?
    .run();
    Ok(server)
}
