//! Payments on the management API: a tenant's Stripe settings, Checkout top-ups, the list of an
//! account's top-ups and the Stripe customer portal; and the Stripe webhook endpoint
//! (`/webhooks/stripe/{tenant_slug}`, authenticated by its signature, not a token). The rules
//! live in [`crate::billing::payments`]; these handlers extract, authorise and answer.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::billing::amount::{self, Sign};
use crate::billing::payments::auto_topup::{AutoTopupInput, AutoTopupView};
use crate::billing::payments::custom::{self, Custom};
use crate::billing::payments::inbox::{Inbox, Receipt, Source};
use crate::billing::payments::notify::{self, TenantWebhookInput, TenantWebhookView};
use crate::billing::payments::settings::{
    self, CustomProviderInput, CustomProviderView, StripeSettingsInput, StripeSettingsView,
};
use crate::billing::payments::stripe::{self, Stripe};
use crate::billing::payments::stripe_account;
use crate::billing::payments::tao::{self, TaoSettingsInput, TaoSettingsView};
use crate::billing::payments::{Effect, Payer, topup};
use crate::domain::{AccountId, Nano, PaymentId, PaymentKind, PaymentState, Role};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::models::account::Account;
use crate::models::audit::AuditEntry;
use crate::models::notification::{BalanceAlert, TenantWebhook};
use crate::models::payment::{AutoTopup, Payment, ProviderSettings};
use crate::models::tao::{TaoAddress, TaoBalance, TaoDeposit};
use crate::models::tenant::Tenant;
use crate::models::{List, Page, utc};
use crate::routes::hosted;
use crate::routes::ledger::{AccountQuery, account_of};
use crate::state::AppState;

/// The operator's sealing key, or 409 `encryption_key_missing`.
pub(crate) fn sealer(state: &AppState) -> ApiResult<crate::billing::payments::seal::Sealer> {
    state.config.payments.sealer().ok_or_else(|| {
        ApiError::conflict(
            "encryption_key_missing",
            "payment secrets cannot be stored: the operator has not set payments.encryption_key",
        )
    })
}

/// The tenant's settings for `provider` (404 if none) and its slug.
pub(crate) async fn load_provider(
    state: &AppState,
    tenant: crate::domain::TenantId,
    provider: &'static str,
    what: &'static str,
) -> ApiResult<(ProviderSettings, String)> {
    let (settings, slug) = state
        .db
        .run(move |c| {
            let slug = Tenant::find(c, &tenant)?.slug;
            Ok((ProviderSettings::find(c, &tenant, provider)?, slug))
        })
        .await?;
    Ok((settings.ok_or(ApiError::NotFound { what })?, slug))
}

/// Saves a tenant's provider settings with an audit entry (never a secret: the key's hint and how
/// many webhook secrets); the saved settings and the tenant's slug.
pub(crate) async fn save_provider(
    state: &AppState,
    actor: crate::models::audit::Actor,
    settings: ProviderSettings,
) -> ApiResult<(ProviderSettings, String)> {
    state
        .db
        .write(move |c| {
            let tenant = settings.tenant_id.clone();
            let slug = Tenant::find(c, &tenant)?.slug;
            let saved = settings.save(c)?;
            let action = format!("billing.{}.update", saved.provider);
            AuditEntry::record(
                c,
                &actor,
                Some(&tenant),
                &action,
                ("tenant", tenant.as_str()),
                serde_json::json!({"provider": saved.provider, "secret_key": saved.secret_key_hint,
                    "webhook_secret_count": saved.webhook_secret_count, "currency": saved.currency,
                    "nano_per_unit": saved.nano_per_unit, "min_topup_nano": saved.min_topup_nano,
                    "max_topup_nano": saved.max_topup_nano, "dispute_policy": saved.dispute_policy,
                    "meter_event_name": saved.meter_event_name, "server_url": saved.server_url,
                    "store_id": saved.store_id}),
            )?;
            Ok::<_, ApiError>((saved, slug))
        })
        .await
}

/// The tenant's Stripe settings, masked (owner, admin, finance).
#[utoipa::path(tag = "payments", responses((status = 200, body = StripeSettingsView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/stripe")]
pub async fn get_stripe(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<web::Json<StripeSettingsView>> {
    let tenant = caller.tenant_reader()?.clone();
    let (settings, slug) = load_provider(&state, tenant, stripe::NAME, "stripe settings").await?;
    Ok(web::Json(settings::view(&settings, &slug)))
}

/// Sets the tenant's Stripe keys and top-up rules (owner, admin). Secrets are sealed at rest and
/// never shown again; refused (409 `encryption_key_missing`) when the operator has not set
/// `payments.encryption_key`.
#[utoipa::path(tag = "payments", request_body = StripeSettingsInput,
    responses((status = 200, body = StripeSettingsView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/billing/stripe")]
pub async fn put_stripe(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<StripeSettingsInput>,
) -> ApiResult<web::Json<StripeSettingsView>> {
    let tenant = caller.managed_tenant()?.clone();
    let settings = body.into_inner().seal(&tenant, &sealer(&state)?)?;
    let (saved, slug) = save_provider(&state, caller.actor(&meta), settings).await?;
    Ok(web::Json(settings::view(&saved, &slug)))
}

/// The tenant's own payment systems (owner, admin, finance).
#[utoipa::path(tag = "payments", responses((status = 200, body = List<CustomProviderView>)), security(("jwt" = [])))]
#[get("/billing/custom")]
pub async fn list_custom(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<web::Json<List<CustomProviderView>>> {
    let tenant = caller.tenant_reader()?.clone();
    let (rows, slug) = state
        .db
        .run(move |c| {
            Ok((
                ProviderSettings::custom_of(c, &tenant)?,
                Tenant::find(c, &tenant)?.slug,
            ))
        })
        .await?;
    let limit = rows.len() as i64;
    Ok(web::Json(List::from_rows(rows, limit, |r| {
        settings::custom_view(&r, &slug)
    })))
}

/// Adds or replaces one of the tenant's own payment systems (owner, admin): its signed-credit
/// webhook is `/webhooks/custom/{tenant_slug}/{provider}`. Secrets sealed like Stripe's.
#[utoipa::path(tag = "payments", request_body = CustomProviderInput,
    responses((status = 200, body = CustomProviderView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/billing/custom")]
pub async fn put_custom(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CustomProviderInput>,
) -> ApiResult<web::Json<CustomProviderView>> {
    let tenant = caller.managed_tenant()?.clone();
    let settings = body.into_inner().seal(&tenant, &sealer(&state)?)?;
    let (saved, slug) = save_provider(&state, caller.actor(&meta), settings).await?;
    Ok(web::Json(settings::custom_view(&saved, &slug)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckout {
    /// `stripe` (the default: card, Stripe Checkout), `btcpay` (BTC / Lightning, a BTCPay
    /// Server invoice) or `coinbase` (a Coinbase Business checkout in USDC, or a legacy Commerce
    /// charge).
    pub provider: Option<CheckoutProvider>,
    /// The account to top up: required for owners and admins; a developer tops up their own.
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub account_id: Option<String>,
    /// Nano-units to credit; within the tenant's top-up bounds and a whole number of the
    /// currency's minor units.
    #[schema(value_type = i64, minimum = 1)]
    pub amount_nano: Nano,
    /// Where Stripe sends the customer after paying (http or https URL).
    #[schema(max_length = 2048, pattern = "^https?://[^\\s]+$")]
    pub success_url: String,
    /// Where Stripe sends the customer if they go back (http or https URL).
    #[schema(max_length = 2048, pattern = "^https?://[^\\s]+$")]
    pub cancel_url: String,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutProvider {
    Stripe,
    Btcpay,
    Coinbase,
}

/// A top-up as shown.
#[derive(Serialize, ToSchema)]
pub struct TopupView {
    pub object: &'static str,
    pub id: PaymentId,
    pub account_id: AccountId,
    pub provider: String,
    pub kind: PaymentKind,
    pub state: PaymentState,
    pub checkout_session_id: Option<String>,
    /// The provider's payment reference (Stripe: the PaymentIntent id), once paid.
    pub payment_reference: Option<String>,
    pub currency: String,
    /// Asked for, in the currency's minor units.
    pub amount_minor: i64,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    #[schema(value_type = i64)]
    pub credited_nano: Nano,
    /// Checkout's page (only when just created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Payment> for TopupView {
    fn from(p: Payment) -> Self {
        Self {
            object: "topup",
            id: p.id,
            account_id: p.account_id,
            provider: p.provider,
            kind: p.kind,
            state: p.state,
            checkout_session_id: p.session_id,
            payment_reference: p.reference,
            currency: p.currency,
            amount_minor: p.requested_minor,
            paid_minor: p.paid_minor,
            refunded_minor: p.refunded_minor,
            credited_nano: p.credited_nano,
            url: None,
            created_at: utc(p.created_at),
        }
    }
}

fn redirect_url(field: &str, value: &str) -> ApiResult<String> {
    let ok = value.len() <= 2048
        && url::Url::parse(value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid_param(
            field,
            format!("{field} must be an http or https URL"),
        ))
    }
}

/// The account a payment is started for: a developer's own; owners and admins name one.
fn payer(caller: &Caller, asked: Option<&str>) -> ApiResult<AccountId> {
    match caller.role {
        Role::Developer | Role::Owner | Role::Admin => account_of(caller, asked),
        _ => Err(ApiError::forbidden(
            "requires the owner or admin role, or a developer paying for their own account",
        )),
    }
}

/// Starts a card top-up with Stripe Checkout (a developer for their own account, owner, admin);
/// the account is credited when Stripe's webhook says it is paid. `Idempotency-Key` honoured.
#[utoipa::path(tag = "payments", request_body = CreateCheckout,
    responses((status = 201, body = TopupView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/billing/checkout")]
pub async fn create_checkout(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<CreateCheckout>,
) -> ApiResult<HttpResponse> {
    let tenant = caller.tenant()?.clone();
    let body = body.into_inner();
    let account_id = payer(&caller, body.account_id.as_deref())?;
    let amount = amount::input("amount_nano", body.amount_nano, Sign::Positive)?;
    let success_url = redirect_url("success_url", &body.success_url)?;
    let cancel_url = redirect_url("cancel_url", &body.cancel_url)?;
    let (t, a) = (tenant.clone(), account_id.clone());
    let account = state
        .db
        .run(move |c| Account::find_in_tenant(c, &t, &a))
        .await
        .not_found_as("account")?;
    let payer = Payer {
        success_url,
        cancel_url,
    };
    let actor = caller.actor(&meta);
    let started = match body.provider.unwrap_or(CheckoutProvider::Stripe) {
        CheckoutProvider::Stripe => {
            let (settings, api) =
                stripe_account::client(&state.db, &state.config.payments, &tenant).await?;
            let provider = Stripe::new(state.db.clone(), api);
            topup::start(
                &state.db, &provider, &settings, &account, amount, actor, &payer,
            )
            .await?
        }
        CheckoutProvider::Btcpay => {
            let (settings, provider) = hosted::btcpay_client(&state, &tenant).await?;
            topup::start(
                &state.db, &provider, &settings, &account, amount, actor, &payer,
            )
            .await?
        }
        CheckoutProvider::Coinbase => {
            let (settings, provider) = hosted::coinbase_client(&state, &tenant).await?;
            topup::start(
                &state.db, &provider, &settings, &account, amount, actor, &payer,
            )
            .await?
        }
    };
    let mut view = TopupView::from(started.payment);
    view.url = Some(started.url);
    Ok(HttpResponse::Created().json(view))
}

/// An account's top-ups with their state, oldest first (owner, admin, finance; a developer their
/// own).
#[utoipa::path(tag = "payments", params(AccountQuery), responses((status = 200, body = List<TopupView>), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/topups")]
pub async fn list_topups(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<AccountQuery>,
) -> ApiResult<web::Json<List<TopupView>>> {
    let tenant = caller.tenant()?.clone();
    let id = account_of(&caller, query.account_id.as_deref())?;
    let page = Page {
        limit: query.limit,
        after: query.after.clone(),
    };
    let (limit, after) = (page.limit()?, page.after()?);
    let rows = state
        .db
        .run(move |c| {
            Account::find_in_tenant(c, &tenant, &id)?;
            Payment::list(c, &tenant, &id, &after, limit)
        })
        .await
        .not_found_as("account")?;
    Ok(web::Json(List::from_rows(rows, limit, TopupView::from)))
}

/// Reads a top-up's refunds back from Stripe and applies what is new (owner, admin): for refunds
/// made in the Stripe dashboard whose webhook was missed. Same ledger keys as the webhook's, so
/// whichever sees a refund first debits it, once.
#[utoipa::path(tag = "payments", responses((status = 200, body = TopupView), (status = 404, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/billing/topups/{id}/sync")]
pub async fn sync_topup(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<web::Json<TopupView>> {
    let tenant = caller.managed_tenant()?.clone();
    let id = PaymentId::parse(&id).ok_or(ApiError::NotFound { what: "top-up" })?;
    let (t, pid) = (tenant.clone(), id.clone());
    let payment = state
        .db
        .run(move |c| Payment::find_in_tenant(c, &t, &pid))
        .await?
        .filter(|p| p.provider == stripe::NAME)
        .ok_or(ApiError::NotFound { what: "top-up" })?;
    let (settings, api) =
        stripe_account::client(&state.db, &state.config.payments, &tenant).await?;
    if let Some(reference) = payment.reference.clone() {
        let refunds = api
            .list_refunds(&reference)
            .await
            .map_err(stripe_account::provider_error)?;
        let counted: Vec<_> = refunds
            .iter()
            .filter(|r| r.status == "succeeded" && r.currency == payment.currency)
            .collect();
        let total = counted
            .iter()
            .try_fold(0i64, |sum, r| sum.checked_add(r.amount_minor.max(0)));
        if let Some(total) = total.filter(|t| *t > 0) {
            let inbox = Inbox {
                db: &state.db,
                sealer: None,
                limiter: &state.limiter,
                invalidator: &state.invalidator,
                tolerance_secs: 0,
                request_id: RequestMeta::of(&req).request_id,
            };
            let effect = Effect::Refunded {
                reference: reference.clone(),
                refunded_total_minor: total,
                currency: payment.currency.clone(),
                refund_ids: counted.iter().map(|r| r.id.clone()).collect(),
            };
            let source = Source {
                provider: stripe::NAME.into(),
                event_id: format!("sync:{reference}"),
                event_type: "refunds.read".into(),
                notification: None,
            };
            inbox.settle(settings, effect, source).await?;
        }
    }
    let t = tenant.clone();
    let fresh = state
        .db
        .run(move |c| Payment::find_in_tenant(c, &t, &id))
        .await?
        .ok_or(ApiError::NotFound { what: "top-up" })?;
    Ok(web::Json(fresh.into()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PortalQuery {
    /// Required for owners and admins; a developer opens their own.
    pub account_id: Option<String>,
    /// Where the portal's back link goes (http or https URL).
    pub return_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PortalView {
    pub object: &'static str,
    /// Short-lived; a bearer credential for the customer's billing — do not log or share it.
    pub url: String,
}

/// A Stripe customer-portal session for the account (saved cards, receipts): a developer for
/// their own account, owner, admin.
#[utoipa::path(tag = "payments", params(PortalQuery), responses((status = 200, body = PortalView), (status = 404, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/portal")]
pub async fn get_portal(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PortalQuery>,
) -> ApiResult<web::Json<PortalView>> {
    let tenant = caller.tenant()?.clone();
    let id = payer(&caller, query.account_id.as_deref())?;
    let return_url = query
        .return_url
        .as_deref()
        .map(|u| redirect_url("return_url", u))
        .transpose()?;
    let t = tenant.clone();
    let account = state
        .db
        .run(move |c| Account::find_in_tenant(c, &t, &id))
        .await
        .not_found_as("account")?;
    let (_, api) = stripe_account::client(&state.db, &state.config.payments, &tenant).await?;
    let customer = stripe_account::customer(&state.db, &api, &account).await?;
    let url = api
        .create_portal_session(&customer, return_url.as_deref())
        .await
        .map_err(stripe_account::provider_error)?;
    Ok(web::Json(PortalView {
        object: "billing_portal_session",
        url,
    }))
}

/// The account an automatic top-up rule is about: the path's, which a developer may name only if
/// it is their own.
fn rule_account(caller: &Caller, path: &str, writing: bool) -> ApiResult<AccountId> {
    if writing {
        payer(caller, Some(path))
    } else {
        account_of(caller, Some(path))
    }
}

/// An account's automatic top-up rule (owner, admin, finance; a developer their own).
#[utoipa::path(tag = "payments", responses((status = 200, body = AutoTopupView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/accounts/{id}/auto-topup")]
pub async fn get_auto_topup(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<AutoTopupView>> {
    let tenant = caller.tenant()?.clone();
    let id = rule_account(&caller, &id, false)?;
    let rule = state
        .db
        .run(move |c| {
            Account::find_in_tenant(c, &tenant, &id)?;
            AutoTopup::find(c, &id)
        })
        .await
        .not_found_as("account")?;
    Ok(web::Json(
        rule.ok_or(ApiError::NotFound {
            what: "auto top-up",
        })?
        .into(),
    ))
}

/// Sets an account's automatic top-up (owner, admin; a developer their own): below
/// `threshold_nano` of spendable balance, the saved card is charged `amount_nano` off-session,
/// once at a time, credited by Stripe's webhook. The account's Stripe customer is created now if
/// it has none, so a card can be saved to it (Checkout or the portal).
#[utoipa::path(tag = "payments", request_body = AutoTopupInput,
    responses((status = 200, body = AutoTopupView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/accounts/{id}/auto-topup")]
pub async fn put_auto_topup(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<AutoTopupInput>,
) -> ApiResult<web::Json<AutoTopupView>> {
    let tenant = caller.tenant()?.clone();
    let id = rule_account(&caller, &id, true)?;
    let t = tenant.clone();
    let account = state
        .db
        .run(move |c| Account::find_in_tenant(c, &t, &id))
        .await
        .not_found_as("account")?;
    let (settings, api) =
        stripe_account::client(&state.db, &state.config.payments, &tenant).await?;
    let rule = body.into_inner().rule(&account, &settings)?;
    if rule.enabled {
        stripe_account::customer(&state.db, &api, &account).await?;
    }
    let actor = caller.actor(&meta);
    let saved = state
        .db
        .write(move |c| {
            let saved = rule.save(c)?;
            AuditEntry::record(c, &actor, Some(&saved.tenant_id), "billing.auto_topup.update",
                ("account", saved.account_id.as_str()),
                serde_json::json!({"enabled": saved.enabled, "threshold_nano": saved.threshold_nano, "amount_nano": saved.amount_nano}))?;
            Ok::<_, ApiError>(saved)
        })
        .await?;
    Ok(web::Json(saved.into()))
}

/// Where the tenant hears of payments and low balances (owner, admin, finance): the endpoint and
/// the secret's last characters.
#[utoipa::path(tag = "payments", responses((status = 200, body = TenantWebhookView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/webhook")]
pub async fn get_tenant_webhook(
    state: web::Data<AppState>,
    caller: Caller,
) -> ApiResult<web::Json<TenantWebhookView>> {
    let tenant = caller.tenant_reader()?.clone();
    let hook = state
        .db
        .run(move |c| TenantWebhook::find(c, &tenant))
        .await?
        .ok_or(ApiError::NotFound { what: "webhook" })?;
    Ok(web::Json(TenantWebhookView::of(&hook, None)))
}

/// Sets the tenant's notification endpoint (owner, admin). The signing secret is made the first
/// time (and with `rotate_secret`) and shown only in that answer; events are signed
/// `Taogate-Signature: t=…,v1=…` (Stripe's scheme) and retried with back-off. The URL must
/// resolve to a public address unless the operator allows private ones.
#[utoipa::path(tag = "payments", request_body = TenantWebhookInput,
    responses((status = 200, body = TenantWebhookView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/billing/webhook")]
pub async fn put_tenant_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<TenantWebhookInput>,
) -> ApiResult<web::Json<TenantWebhookView>> {
    let tenant = caller.managed_tenant()?.clone();
    let sealer = sealer(&state)?;
    let rotate = body.rotate_secret;
    let (hook, secret) = notify::configure(
        &state.db,
        &sealer,
        state.config.payments.webhook_allow_private_targets,
        &tenant,
        body.into_inner(),
    )
    .await?;
    let (actor, t, url) = (caller.actor(&meta), tenant.clone(), hook.url.clone());
    state
        .db
        .write(move |c| {
            AuditEntry::record(
                c,
                &actor,
                Some(&t),
                "billing.webhook.update",
                ("tenant", t.as_str()),
                serde_json::json!({"url": url, "secret_rotated": rotate}),
            )?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(web::Json(TenantWebhookView::of(&hook, secret)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BalanceAlertInput {
    /// Tell the tenant (webhook `account.low_balance`, audit) when the spendable balance falls
    /// below this, once per crossing.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_000_000_i64)]
    pub threshold_nano: Nano,
}

#[derive(Serialize, ToSchema)]
pub struct BalanceAlertView {
    pub object: &'static str,
    pub account_id: AccountId,
    #[schema(value_type = i64)]
    pub threshold_nano: Nano,
    /// Whether the balance is below it now (reported).
    pub below: bool,
}

impl From<BalanceAlert> for BalanceAlertView {
    fn from(a: BalanceAlert) -> Self {
        Self {
            object: "balance_alert",
            account_id: a.account_id,
            threshold_nano: a.threshold_nano,
            below: a.below,
        }
    }
}

/// An account's low-balance alert (owner, admin, finance; a developer their own).
#[utoipa::path(tag = "payments", responses((status = 200, body = BalanceAlertView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/accounts/{id}/balance-alert")]
pub async fn get_balance_alert(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<web::Json<BalanceAlertView>> {
    let tenant = caller.tenant()?.clone();
    let id = account_of(&caller, Some(&id))?;
    let alert = state
        .db
        .run(move |c| {
            Account::find_in_tenant(c, &tenant, &id)?;
            BalanceAlert::find(c, &id)
        })
        .await
        .not_found_as("account")?;
    Ok(web::Json(
        alert
            .ok_or(ApiError::NotFound {
                what: "balance alert",
            })?
            .into(),
    ))
}

/// Sets an account's low-balance alert (owner, admin).
#[utoipa::path(tag = "payments", request_body = BalanceAlertInput,
    responses((status = 200, body = BalanceAlertView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/accounts/{id}/balance-alert")]
pub async fn put_balance_alert(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    id: web::Path<String>,
    body: Json<BalanceAlertInput>,
) -> ApiResult<web::Json<BalanceAlertView>> {
    let tenant = caller.managed_tenant()?.clone();
    let id = AccountId::parse(&id).ok_or(ApiError::NotFound { what: "account" })?;
    let threshold = amount::input("threshold_nano", body.threshold_nano, Sign::NonNegative)?;
    let actor = caller.actor(&meta);
    let saved = state
        .db
        .write(move |c| {
            Account::find_in_tenant(c, &tenant, &id).not_found_as("account")?;
            let now = crate::db::now();
            let saved = BalanceAlert {
                account_id: id.clone(),
                tenant_id: tenant.clone(),
                threshold_nano: threshold,
                below: false,
                created_at: now,
                updated_at: now,
            }
            .save(c)?;
            AuditEntry::record(
                c,
                &actor,
                Some(&tenant),
                "account.balance_alert.update",
                ("account", id.as_str()),
                serde_json::json!({"threshold_nano": threshold}),
            )?;
            Ok::<_, ApiError>(saved)
        })
        .await?;
    Ok(web::Json(saved.into()))
}

/// Sets how the tenant prices TAO deposits (owner, admin): a `tao` ledger (1 rao = 1 nano-unit),
/// another currency at a fixed `nano_per_tao`, or the operator's price feed (`rate_source`
/// `feed`; 409 `price_feed_missing` if the server has none).
#[utoipa::path(tag = "payments", request_body = TaoSettingsInput,
    responses((status = 200, body = TaoSettingsView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[put("/billing/tao")]
pub async fn put_tao(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    body: Json<TaoSettingsInput>,
) -> ApiResult<web::Json<TaoSettingsView>> {
    let tenant = caller.managed_tenant()?.clone();
    let settings = body
        .into_inner()
        .settings(&tenant, &state.config.payments.tao)?;
    let (saved, _) = save_provider(&state, caller.actor(&meta), settings).await?;
    Ok(web::Json(tao::view(&saved, &state.config.payments.tao)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaoQuery {
    /// Required for tenant-wide roles; a developer sees their own account.
    pub account_id: Option<String>,
}

/// An account's TAO deposit address.
#[derive(Serialize, ToSchema)]
pub struct TaoDepositView {
    pub object: &'static str,
    pub account_id: AccountId,
    /// ss58 (prefix 42): send TAO here.
    pub address: String,
    /// Appended to the operator's mnemonic, gives this address in any substrate wallet.
    pub derivation_path: String,
    /// Smaller increases are not credited.
    pub min_deposit_rao: i64,
    pub currency: String,
    /// Nano-units credited per TAO (on the feed: its price now; `null` if it did not answer).
    pub rate: Option<i64>,
    pub rate_source: tao::RateSource,
    /// Rao received in blocks not finalized yet (credited once final); `null` if the node did not
    /// answer.
    pub pending: Option<i64>,
    /// Nano-units credited from this address so far.
    #[schema(value_type = i64)]
    pub credited: Nano,
    pub credited_rao: i64,
}

/// The account's TAO deposit address (made on first request) and what it has received (a developer
/// their own; owner, admin, finance any of the tenant's). Deposits are credited once their block
/// is finalized.
#[utoipa::path(tag = "payments", params(TaoQuery), responses((status = 200, body = TaoDepositView), (status = 404, body = crate::error::ErrorBody),
    (status = 409, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/billing/tao")]
pub async fn get_tao(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<TaoQuery>,
) -> ApiResult<web::Json<TaoDepositView>> {
    let tenant = caller.tenant()?.clone();
    let id = account_of(&caller, query.account_id.as_deref())?;
    let (t, a) = (tenant.clone(), id.clone());
    let (settings, address) = state
        .db
        .run(move |c| {
            Account::find_in_tenant(c, &t, &a)?;
            Ok((
                ProviderSettings::find(c, &t, tao::NAME)?,
                TaoAddress::find(c, &a)?,
            ))
        })
        .await
        .not_found_as("account")?;
    let config = &state.config.payments.tao;
    let seed = match config.seed() {
        Some(Ok(seed)) if config.enabled() => seed,
        _ => {
            return Err(ApiError::conflict(
                "payments_not_configured",
                "this server does not take TAO deposits (payments.tao)",
            ));
        }
    };
    let settings = settings.ok_or_else(|| {
        ApiError::conflict(
            "payments_not_configured",
            "this tenant has not set up TAO deposits (PUT /api/v1/billing/tao)",
        )
    })?;
    let address = match address {
        Some(a) => a,
        None => {
            let fresh = tao::deposit_address(&seed, &tenant, &id)?;
            state
                .db
                .write(move |c| Ok::<_, ApiError>(fresh.remember(c)?))
                .await?
        }
    };
    let (a, addr) = (address.account_id.clone(), address.address.clone());
    let (deposits, seen) = state
        .db
        .run(move |c| {
            Ok((
                TaoDeposit::of_account(c, &a)?,
                TaoBalance::latest(c, &addr)?,
            ))
        })
        .await?;
    let credited: Vec<&TaoDeposit> = deposits.iter().filter(|d| d.status == "credited").collect();
    let pending = tao_pending(config, &address, seen).await;
    let rate = match tao::rate_source(&settings) {
        tao::RateSource::Feed => match tao::price::PriceFeed::from_config(config) {
            Some(feed) => feed.nano_per_tao().await.ok(),
            None => None,
        },
        _ => Some(settings.nano_per_unit),
    };
    Ok(web::Json(TaoDepositView {
        object: "tao_deposit_address",
        account_id: address.account_id,
        address: address.address,
        derivation_path: address.derivation_path,
        min_deposit_rao: config.min_deposit_rao,
        rate,
        rate_source: tao::rate_source(&settings),
        currency: settings.currency,
        pending,
        credited: Nano(credited.iter().map(|d| d.credited_nano.0).sum()),
        credited_rao: credited.iter().map(|d| d.amount_rao).sum(),
    }))
}

/// Rao on the address at the node's best block beyond its balance at the last finalized block read
/// (never negative); `None` if the node does not answer.
async fn tao_pending(config: &tao::TaoConfig, address: &TaoAddress, seen: i64) -> Option<i64> {
    let node = tao::chain::Node::new(
        &config.rpc_url,
        std::time::Duration::from_millis(config.rpc_timeout_ms),
    )
    .ok()?;
    let public: [u8; 32] = hex::decode(&address.public_key).ok()?.try_into().ok()?;
    let key = tao::chain::account_key(&public);
    let best = node
        .free_balances(std::slice::from_ref(&key), None)
        .await
        .ok()?;
    let best = i64::try_from(*best.get(&key)?).ok()?;
    Some((best - seen).max(0))
}

/// Stripe's webhook for a tenant: the raw body and `Stripe-Signature`, verified against the
/// tenant's webhook secrets (any `v1`, 300 s tolerance, every configured secret), stored, then
/// applied — each payment credited once however many deliveries of however many of its events
/// arrive. Forged, stale or unreadable → 400 and nothing moves.
#[utoipa::path(tag = "payments", params(("tenant_slug" = String, Path, description = "The tenant's slug")),
    request_body(content = serde_json::Value, description = "A Stripe event, as Stripe sends it", content_type = "application/json"),
    responses((status = 200, body = Receipt), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[post("/stripe/{tenant_slug}")]
pub async fn stripe_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<web::Json<Receipt>> {
    let inbox = Inbox {
        db: &state.db,
        sealer: state.config.payments.sealer(),
        limiter: &state.limiter,
        invalidator: &state.invalidator,
        tolerance_secs: state.config.payments.stripe.webhook_tolerance_secs,
        request_id: RequestMeta::of(&req).request_id,
    };
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    Ok(web::Json(
        inbox
            .receive::<Stripe>(&slug, stripe::NAME, signature, &body)
            .await?,
    ))
}

/// A tenant's own payment system reports a payment: `{payment_id, account_id, amount_nano,
/// currency, status: succeeded | refunded, occurred_at}`, signed `Taogate-Signature: t=…,v1=…`
/// (HMAC-SHA256 of `t.body` with the provider's secret, 300 s tolerance). Credited once per
/// (provider, payment_id); a refund debits once.
#[utoipa::path(tag = "payments", params(("tenant_slug" = String, Path, description = "The tenant's slug"), ("provider" = String, Path, description = "The custom provider's name")),
    request_body = crate::billing::payments::custom::CustomPayment,
    responses((status = 200, body = Receipt), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[post("/custom/{tenant_slug}/{provider}")]
pub async fn custom_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<web::Json<Receipt>> {
    let (slug, provider) = path.into_inner();
    let not_found = || ApiError::NotFound {
        what: "payment endpoint",
    };
    let s = slug.clone();
    let tenant = state
        .db
        .run(move |c| diesel::OptionalExtension::optional(Tenant::find_by_slug(c, &s)))
        .await?
        .ok_or_else(not_found)?;
    let provider = custom::name("provider", &tenant.id, &provider).map_err(|_| not_found())?;
    let inbox = Inbox {
        db: &state.db,
        sealer: state.config.payments.sealer(),
        limiter: &state.limiter,
        invalidator: &state.invalidator,
        tolerance_secs: crate::billing::payments::signature::TOLERANCE_SECS,
        request_id: RequestMeta::of(&req).request_id,
    };
    let signature = req
        .headers()
        .get(crate::billing::payments::notify::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    Ok(web::Json(
        inbox
            .receive::<Custom>(&slug, &provider, signature, &body)
            .await?,
    ))
}
