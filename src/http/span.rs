//! Each request's log context: one span per request carrying its `request_id` (the one returned in
//! `x-request-id`), method and route pattern, and — once the caller is known — its `tenant` and
//! API key `key_prefix` (the public prefix, never the secret). Every line logged while serving the
//! request carries them (`TAOGATE_LOG_FORMAT=json` puts them in each line's `span`). Bodies,
//! prompts and credentials are never fields.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage, HttpRequest};
use tracing::Span;
use tracing::field::Empty;
use tracing_actix_web::RootSpanBuilder;

use super::observe::TenantTag;
use super::request_id::RequestId;
use crate::domain::TenantId;

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            route = %request.match_pattern().unwrap_or_else(|| "unmatched".into()),
            tenant = Empty,
            key_prefix = Empty,
            status = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if let Ok(res) = outcome {
            span.record("status", res.status().as_u16());
        }
    }
}

/// Names the request's tenant (and API key prefix) in its span and, for per-tenant metrics, in
/// its extensions.
pub fn tag(req: &HttpRequest, tenant: &TenantId, key_prefix: Option<&str>) {
    let span = Span::current();
    span.record("tenant", tenant.as_str());
    if let Some(prefix) = key_prefix {
        span.record("key_prefix", prefix);
    }
    req.extensions_mut().insert(TenantTag(tenant.clone()));
}
