//! Request metrics: every answer counted by its matched route pattern, method and status, and timed
//! until its head ([`crate::metrics`]). Route patterns, not paths, so labels stay bounded.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};

use crate::state::AppState;

/// When the request reached the gateway (in its extensions), for the proxy-overhead histogram.
#[derive(Clone, Copy)]
pub struct Arrived(pub Instant);

/// The tenant a request was authenticated for (in its extensions), for per-tenant metrics.
#[derive(Clone)]
pub struct TenantTag(pub crate::domain::TenantId);

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    // Known methods only: anything else is `OTHER` (a client picks the method).
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    req.extensions_mut().insert(Arrived(started));
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        if let Some(per_tenant) = &m.tenant_requests
            && let Some(TenantTag(tenant)) = res.request().extensions().get::<TenantTag>()
        {
            per_tenant
                .with_label_values(&[tenant.as_str(), res.status().as_str()])
                .inc();
        }
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        m.http_requests
            .with_label_values(&[route.as_str(), method, res.status().as_str()])
            .inc();
        m.http_duration
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
