//! A tenant's Stripe account as taogate uses it: a client made from the tenant's sealed settings
//! (its own secret key, `payments.stripe.api_base`), and each account's Stripe customer, created
//! once and reused (`Idempotency-Key: customer:<account>`). Stripe's refusals become 502
//! `payment_provider_error` with Stripe's message and nothing secret.

use std::time::Duration;

use crate::db::Db;
use crate::domain::TenantId;
use crate::error::{ApiError, ApiResult};
use crate::models::account::Account;
use crate::models::payment::{Customer, ProviderSettings};

use super::PaymentsConfig;
use super::settings::unseal;
use super::stripe;
use super::stripe_api::{StripeApi, StripeCallError};

/// 409 `payments_not_configured`.
pub fn not_configured() -> ApiError {
    ApiError::conflict(
        "payments_not_configured",
        "this tenant has not configured Stripe (PUT /api/v1/billing/stripe)",
    )
}

/// A failed Stripe call, as answered.
pub fn provider_error(e: StripeCallError) -> ApiError {
    tracing::warn!(error = %e, "a Stripe call failed");
    ApiError::PaymentProvider {
        message: match e {
            StripeCallError::Rejected { message, .. } => {
                format!("Stripe refused the request: {message}")
            }
            StripeCallError::NoPaymentMethod => "the customer has no saved card to charge".into(),
            StripeCallError::Unreachable => "Stripe could not be reached; retry shortly".into(),
            _ => "the Stripe call failed; retry shortly".into(),
        },
    }
}

/// The tenant's settings and a Stripe client with its key.
pub async fn client(
    db: &Db,
    config: &PaymentsConfig,
    tenant: &TenantId,
) -> ApiResult<(ProviderSettings, StripeApi)> {
    let id = tenant.clone();
    let settings = db
        .run(move |c| ProviderSettings::find(c, &id, stripe::NAME))
        .await?
        .ok_or_else(not_configured)?;
    let sealer = config.sealer().ok_or(ApiError::Unavailable)?;
    let secrets = unseal(&settings, &sealer).map_err(|e| {
        tracing::error!(tenant = %settings.tenant_id, error = %e, "stored payment secrets do not open");
        ApiError::Unavailable
    })?;
    let api = StripeApi::new(
        &secrets.secret_key,
        &config.stripe.api_base,
        Duration::from_millis(config.stripe.timeout_ms),
    )
    .map_err(provider_error)?;
    Ok((settings, api))
}

/// The account's Stripe customer, created on first use.
pub async fn customer(db: &Db, api: &StripeApi, account: &Account) -> ApiResult<String> {
    let id = account.id.clone();
    if let Some(found) = db
        .run(move |c| Customer::find(c, &id, stripe::NAME))
        .await?
    {
        return Ok(found);
    }
    let created = api
        .create_customer(
            account.id.as_str(),
            account.tenant_id.as_str(),
            &account.name,
            &format!("customer:{}", account.id),
        )
        .await
        .map_err(provider_error)?;
    let (tenant, id) = (account.tenant_id.clone(), account.id.clone());
    db.write(move |c| {
        Ok::<_, ApiError>(Customer::remember(c, &tenant, &id, stripe::NAME, &created)?)
    })
    .await
}
