//! Hosted crypto checkouts on the management API: a tenant's BTCPay Server and Coinbase settings,
//! and their webhook endpoints (`/webhooks/btcpay/{tenant_slug}`, `/webhooks/coinbase/{tenant_slug}`,
//! authenticated by their signatures, not a token). Top-ups through them start at
//! `POST /api/v1/billing/checkout` (`provider`: `btcpay` | `coinbase`). The rules live in
//! [`crate::billing::payments`]; these handlers extract, authorise and answer.

use actix_web::{HttpRequest, get, post, put, web};

use crate::auth::caller::{Caller, RequestMeta};
use crate::billing::payments::Provider;
use crate::billing::payments::btcpay::{self, BtcPay, BtcPaySettingsInput, BtcPaySettingsView};
use crate::billing::payments::coinbase::{
    self, Coinbase, CoinbaseSettingsInput, CoinbaseSettingsView,
};
use crate::billing::payments::inbox::{Inbox, Receipt};
use crate::billing::payments::settings::{self, Unsealed};
use crate::domain::TenantId;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::Json;
use crate::models::payment::ProviderSettings;
use crate::routes::billing::{load_provider, save_provider, sealer};
use crate::state::AppState;

/// The tenant's settings for `provider` and its opened secrets; 409 `payments_not_configured`
/// until `PUT /api/v1/billing/{provider}`.
async fn configured(
    state: &AppState,
    tenant: &TenantId,
    provider: &'static str,
) -> ApiResult<(ProviderSettings, Unsealed)> {
    let id = tenant.clone();
    let settings = state
        .db
        .run(move |c| ProviderSettings::find(c, &id, provider))
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "payments_not_configured",
                format!(
                    "this tenant has not configured {provider} (PUT /api/v1/billing/{provider})"
                ),
            )
        })?;
    let sealer = state
        .config
        .payments
        .sealer()
        .ok_or(ApiError::Unavailable)?;
    let secrets = settings::unseal(&settings, &sealer).map_err(|e| {
        tracing::error!(tenant = %settings.tenant_id, error = %e, "stored payment secrets do not open");
        ApiError::Unavailable
    })?;
    Ok((settings, secrets))
}

/// The tenant's BTCPay settings and a client for its store.
pub async fn btcpay_client(
    state: &AppState,
    tenant: &TenantId,
) -> ApiResult<(ProviderSettings, BtcPay)> {
    let (settings, secrets) = configured(state, tenant, btcpay::NAME).await?;
    let timeout = std::time::Duration::from_millis(state.config.payments.stripe.timeout_ms);
    let client = BtcPay::new(&settings, secrets.secret_key, timeout)?;
    Ok((settings, client))
}

/// The tenant's Coinbase settings and a client for its account.
pub async fn coinbase_client(
    state: &AppState,
    tenant: &TenantId,
) -> ApiResult<(ProviderSettings, Coinbase)> {
    let (settings, secrets) = configured(state, tenant, coinbase::NAME).await?;
    let client = Coinbase::new(
        &settings,
        secrets.secret_key,
        &state.config.payments.coinbase,
    )?;
    Ok((settings, client))
}

/// Receives one webhook delivery for the tenant `slug` from `provider`, read as `P` reads them.
async fn receive<P: Provider>(
    state: &AppState,
    req: &HttpRequest,
    slug: &str,
    provider: &str,
    signature: Option<&str>,
    tolerance_secs: i64,
    body: &[u8],
) -> ApiResult<web::Json<Receipt>> {
    let inbox = Inbox {
        db: &state.db,
        sealer: state.config.payments.sealer(),
        limiter: &state.limiter,
        invalidator: &state.invalidator,
        tolerance_secs,
        request_id: RequestMeta::of(req).request_id,
    };
    Ok(web::Json(
        inbox.receive::<P>(slug, provider, signature, body).await?,
    ))
}

/// The tenant's BTCPay Server settings, masked (owner, admin, finance).
#[utoipa::path(tag = "payments", responses((status = 200, body = BtcPaySettingsView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/btcpay")]
pub async fn get_btcpay(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<web::Json<BtcPaySettingsView>> {
    let tenant = caller.tenant_reader()?.clone();
    let (settings, slug) = load_provider(&state, tenant, btcpay::NAME, "btcpay settings").await?;
    Ok(web::Json(btcpay::view(&settings, &slug)))
}

/// Sets the tenant's BTCPay Server (owner, admin): its URL, store, Greenfield API key and the store
/// webhook's secret (sealed at rest, never shown again).
#[utoipa::path(tag = "payments", request_body = BtcPaySettingsInput,
    responses((status = 200, body = BtcPaySettingsView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/billing/btcpay")]
pub async fn put_btcpay(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<BtcPaySettingsInput>,
) -> ApiResult<web::Json<BtcPaySettingsView>> {
    let tenant = caller.managed_tenant()?.clone();
    let settings = body.into_inner().seal(&tenant, &sealer(&state)?)?;
    let (saved, slug) = save_provider(&state, caller.actor(&meta), settings).await?;
    Ok(web::Json(btcpay::view(&saved, &slug)))
}

/// BTCPay Server's webhook for a tenant: the raw body and `BTCPay-Sig: sha256=<hex HMAC>`,
/// verified against the tenant's webhook secrets; `InvoiceSettled` credits the invoice's top-up
/// once, `InvoiceExpired` / `InvoiceInvalid` fail it.
#[utoipa::path(tag = "payments", params(("tenant_slug" = String, Path, description = "The tenant's slug")),
    request_body(content = serde_json::Value, description = "A BTCPay webhook delivery", content_type = "application/json"),
    responses((status = 200, body = Receipt), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[post("/btcpay/{tenant_slug}")]
pub async fn btcpay_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<web::Json<Receipt>> {
    let signature = req
        .headers()
        .get(btcpay::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    receive::<BtcPay>(&state, &req, &slug, btcpay::NAME, signature, 0, &body).await
}

/// The tenant's Coinbase settings, masked (owner, admin, finance).
#[utoipa::path(tag = "payments", responses((status = 200, body = CoinbaseSettingsView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/coinbase")]
pub async fn get_coinbase(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<web::Json<CoinbaseSettingsView>> {
    let tenant = caller.tenant_reader()?.clone();
    let (settings, slug) =
        load_provider(&state, tenant, coinbase::NAME, "coinbase settings").await?;
    Ok(web::Json(coinbase::view(&settings, &slug)))
}

/// Sets the tenant's Coinbase account (owner, admin): Coinbase Business (a CDP API key id and
/// secret) or legacy Commerce (an API key), and the webhook secret(s) — sealed at rest, never shown
/// again.
#[utoipa::path(tag = "payments", request_body = CoinbaseSettingsInput,
    responses((status = 200, body = CoinbaseSettingsView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/billing/coinbase")]
pub async fn put_coinbase(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CoinbaseSettingsInput>,
) -> ApiResult<web::Json<CoinbaseSettingsView>> {
    let tenant = caller.managed_tenant()?.clone();
    let settings = body.into_inner().seal(&tenant, &sealer(&state)?)?;
    let (saved, slug) = save_provider(&state, caller.actor(&meta), settings).await?;
    Ok(web::Json(coinbase::view(&saved, &slug)))
}

/// Coinbase's webhook for a tenant: Coinbase Business deliveries signed `X-Hook0-Signature:
/// t=…,h=…,v1=…` (5-minute tolerance), or legacy Commerce ones signed `X-CC-Webhook-Signature`
/// (hex HMAC of the raw body). `checkout.payment.success` / `charge:confirmed` credit the top-up
/// once; `checkout.refund.success` debits the refunded total once; failures and expiries mark it.
#[utoipa::path(tag = "payments", params(("tenant_slug" = String, Path, description = "The tenant's slug")),
    request_body(content = serde_json::Value, description = "A Coinbase webhook delivery", content_type = "application/json"),
    responses((status = 200, body = Receipt), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[post("/coinbase/{tenant_slug}")]
pub async fn coinbase_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<web::Json<Receipt>> {
    let signature = coinbase::signature_input(req.headers());
    let tolerance = state.config.payments.coinbase.webhook_tolerance_secs;
    receive::<Coinbase>(
        &state,
        &req,
        &slug,
        coinbase::NAME,
        signature.as_deref(),
        tolerance,
        &body,
    )
    .await
}
