//! HTTP handlers grouped by resource. Handlers are thin: extract, authorise (through the
//! [`crate::auth::caller`] extractors), call model functions inside one transaction, map to a view.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod finance;
pub mod health;
pub mod hosted;
pub mod key_limits;
pub mod keys;
pub mod ledger;
pub mod models;
pub mod openapi;
pub mod plans;
pub mod tenants;
pub mod usage;
pub mod users;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taogate",
        description = "Metered, multi-tenant OpenAI-compatible access to Bittensor subnets. \
            Management plane under /api/v1 (JWT access tokens); data plane under /v1 (API keys). \
            Errors are OpenAI-shaped: {\"error\":{\"message\",\"type\",\"code\",\"param\"}}."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tg_…")
                    .build(),
            ),
        );
    }
}

/// Every documented route.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics);
    cfg.service(
        scope::scope("/v1")
            .service(models::list_models)
            .service(crate::proxy::chat::create_chat_completion)
            .service(crate::proxy::ws::chat_ws),
    );
    cfg.service(
        scope::scope("/webhooks")
            .service(billing::stripe_webhook)
            .service(billing::custom_webhook)
            .service(hosted::btcpay_webhook)
            .service(hosted::coinbase_webhook),
    );
    cfg.service(
        scope::scope("/api/v1")
            .service(auth::signup)
            .service(auth::login)
            .service(auth::refresh)
            .service(auth::logout)
            .service(auth::me)
            .service(auth::change_password)
            .service(tenants::list_tenants)
            .service(tenants::create_tenant)
            .service(tenants::get_tenant)
            .service(tenants::update_tenant)
            .service(tenants::get_tenant_settings)
            .service(tenants::update_tenant_settings)
            .service(accounts::list_accounts)
            .service(accounts::create_account)
            .service(accounts::get_account)
            .service(accounts::update_account)
            .service(users::list_users)
            .service(users::create_user)
            .service(users::get_user)
            .service(users::update_user)
            .service(keys::list_keys)
            .service(keys::create_key)
            .service(keys::get_key)
            .service(keys::rotate_key)
            .service(keys::revoke_key)
            .service(keys::update_key)
            .service(key_limits::get_key_limits)
            .service(plans::list_plans)
            .service(plans::create_plan)
            .service(plans::get_plan)
            .service(plans::update_plan)
            .service(ledger::get_balance)
            .service(ledger::list_ledger)
            .service(ledger::create_adjustment)
            .service(billing::get_stripe)
            .service(billing::put_stripe)
            .service(billing::put_tao)
            .service(billing::get_tao)
            .service(hosted::get_btcpay)
            .service(hosted::put_btcpay)
            .service(hosted::get_coinbase)
            .service(hosted::put_coinbase)
            .service(billing::list_custom)
            .service(billing::put_custom)
            .service(billing::create_checkout)
            .service(billing::list_topups)
            .service(billing::sync_topup)
            .service(billing::get_portal)
            .service(billing::get_auto_topup)
            .service(billing::put_auto_topup)
            .service(billing::get_tenant_webhook)
            .service(billing::put_tenant_webhook)
            .service(billing::get_balance_alert)
            .service(billing::put_balance_alert)
            .service(finance::usage_export)
            .service(usage::get_usage)
            .service(finance::get_statement)
            .service(finance::revenue_report)
            .service(audit::list_audit_log),
    );
}
