//! Assembles the HTTP server: routes, extractor configs, middleware (request id, tracing,
//! idempotency), OpenAPI document and Swagger UI. Tests start it on port 0 through [`start`].

use std::net::TcpListener;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::http::{extract, idempotency, request_id};
use crate::routes::{self, ApiDoc};
use crate::state::AppState;

/// The OpenAPI document of every route, as served at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    routes::openapi::document_errors(&mut doc);
    routes::openapi::document_inputs(&mut doc);
    doc
}

/// SIGINT / SIGTERM: stop accepting, let in-flight requests finish for `billing.shutdown_grace_secs`,
/// then have the rest settle as `shutdown` for what they delivered (`Meter::drain`).
fn spawn_shutdown_on_signal(
    handle: actix_web::dev::ServerHandle,
    meter: std::sync::Arc<crate::billing::settle::Meter>,
    grace: u64,
) {
    actix_web::rt::spawn(async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
        meter.stopping();
        let grace = std::time::Duration::from_secs(grace);
        // Stop accepting at once; requests still running when the grace ends settle themselves.
        tokio::join!(handle.stop(true), meter.drain(grace));
    });
}

/// A running server and the address it listens on.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub server: actix_web::dev::Server,
    /// For [`Running::finish`].
    limiter: std::sync::Arc<crate::limits::guard::Guard>,
}

impl Running {
    /// Serves until the server stops, then delivers the settles still on their way to Redis (the
    /// last requests' slots and holds), within 2 s.
    pub async fn finish(self) -> std::io::Result<()> {
        self.server.await?;
        self.limiter.flush(std::time::Duration::from_secs(2)).await;
        Ok(())
    }
}

/// Binds `listener` and returns the server future (not yet polled) and its address.
pub fn start(state: AppState, listener: TcpListener, workers: usize) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let doc = openapi_document();
    let limit = state.config.http.max_body_bytes;
    state.pool.spawn_health_checks();
    state.pool.spawn_registry_sync(state.registry.clone());
    state.invalidator.spawn_subscriber();
    state.meter.spawn_writer();
    crate::memory::spawn_returner();
    if state.config.payments.sealer().is_some() {
        crate::billing::payments::auto_topup::spawn(
            state.db.clone(),
            state.config.payments.clone(),
            state.limiter.clone(),
        );
        crate::billing::payments::notify::spawn_sender(
            state.db.clone(),
            state.config.payments.clone(),
        );
        crate::billing::payments::meters::spawn(state.db.clone(), state.config.payments.clone());
    }
    if state.config.payments.tao.enabled() {
        match crate::billing::payments::tao::watcher::Watcher::new(
            state.db.clone(),
            state.config.payments.tao.clone(),
            Some(state.limiter.clone()),
        ) {
            Ok(watcher) => watcher.spawn(),
            Err(e) => tracing::error!(error = %e, "TAO deposits: the watcher cannot start"),
        }
    }
    let limiter = state.limiter.clone();
    let warming = limiter.clone();
    actix_web::rt::spawn(async move { warming.warm_up().await });
    let (meter, grace) = (
        state.meter.clone(),
        state.config.billing.shutdown_grace_secs,
    );
    let methods = web::Data::new(crate::http::methods::Methods::from_doc(&doc));
    let origins = state.config.http.cors_allowed_origins.clone();
    let data = web::Data::new(state);
    // Serialised once and shared: each worker holding (and re-serialising) its own copy of the
    // document cost ~5 MB of memory per worker thread (bench/results.md, "idle memory").
    let openapi_json = web::Bytes::from(serde_json::to_vec(&doc)?);
    let server = HttpServer::new(move || {
        let served = openapi_json.clone();
        // The paths' document is built here only because routes register through utoipa; it is
        // dropped at once (the served one is `doc`, with its error and input sections).
        let (app, _) = App::new()
            .into_utoipa_app()
            .app_data(data.clone())
            .app_data(extract::query_config())
            .app_data(extract::path_config())
            .app_data(web::PayloadConfig::new(limit))
            .configure(routes::configure)
            .split_for_parts();
        app.route(
            "/openapi.json",
            web::get().to(move || {
                let body = served.clone();
                async move {
                    actix_web::HttpResponse::Ok()
                        .content_type(actix_web::http::header::ContentType::json())
                        .body(body)
                }
            }),
        )
        .service(
            SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")),
        )
        .app_data(methods.clone())
        .default_service(web::to(extract::not_found))
        .wrap(from_fn(idempotency::handle))
        .wrap(from_fn(crate::limits::response::attach))
        .wrap(crate::http::cors::layer(&origins))
        .wrap(TracingLogger::<crate::http::span::RequestSpan>::new())
        .wrap(from_fn(crate::http::observe::observe))
        .wrap(from_fn(request_id::assign))
    })
    .on_connect(crate::http::on_connect)
    .workers(workers)
    // Past the grace the requests still running settle themselves (`Meter::drain`); actix drops
    // whatever is left a few seconds later.
    .shutdown_timeout(grace + 5)
    .disable_signals()
    .listen(listener)?
    .run();
    spawn_shutdown_on_signal(server.handle(), meter, grace);
    Ok(Running {
        addr,
        server,
        limiter,
    })
}
