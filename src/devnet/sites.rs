//! Every stand-in of the local subnet served from one actix worker thread: each keeps its own
//! listener (its own port, as a real miner has its own axon), and a request is answered by the
//! stand-in whose port it arrived on. `taogate dev` runs ten stand-ins; a server each cost two
//! threads (an actix system and an accept loop) and their allocator caches (bench/results.md,
//! "idle memory").

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use super::StandIn;
use super::axon::AxonStandIn;

/// One stand-in of the local subnet.
pub enum Site {
    /// A miner or OpenAI-compatible gateway ([`StandIn`]): `/v1/chat/completions`,
    /// `/chat/completions`, `/healthz`.
    Miner(Arc<StandIn>),
    /// A bt.Axon serving a synapse: `POST /<synapse>`.
    Axon(Arc<AxonStandIn>),
}

type Sites = HashMap<u16, Site>;

fn site<'a>(sites: &'a Sites, req: &HttpRequest) -> Option<&'a Site> {
    sites.get(&req.app_config().local_addr().port())
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"detail": "Not Found"}))
}

async fn chat(sites: web::Data<Sites>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match site(&sites, &req) {
        Some(Site::Miner(stand_in)) => super::answer(stand_in.clone(), req, body).await,
        _ => not_found(),
    }
}

async fn healthz(sites: web::Data<Sites>, req: HttpRequest) -> HttpResponse {
    match site(&sites, &req) {
        Some(Site::Miner(stand_in)) => super::health(stand_in),
        _ => not_found(),
    }
}

async fn synapse(
    sites: web::Data<Sites>,
    name: web::Path<String>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    match site(&sites, &req) {
        Some(Site::Axon(axon)) => super::axon::answer(axon, &name, req, body),
        _ => not_found(),
    }
}

/// Serves `sites`, each on its listener, from one worker thread.
pub fn serve(sites: Vec<(TcpListener, Site)>) -> anyhow::Result<actix_web::dev::Server> {
    let mut by_port = Sites::new();
    let mut listeners = Vec::with_capacity(sites.len());
    for (listener, site) in sites {
        by_port.insert(listener.local_addr()?.port(), site);
        listeners.push(listener);
    }
    let data = web::Data::new(by_port);
    let mut server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(4 << 20))
            .route("/v1/chat/completions", web::post().to(chat))
            .route("/chat/completions", web::post().to(chat))
            .route("/healthz", web::get().to(healthz))
            .route("/{synapse}", web::post().to(synapse))
    })
    .on_connect(crate::http::no_delay)
    .workers(1)
    .shutdown_timeout(1);
    for listener in listeners {
        server = server.listen(listener)?;
    }
    Ok(server.run())
}
