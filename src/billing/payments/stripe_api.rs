//! Thin client for the handful of Stripe API calls taogate makes.
//!
//! Built on `async-stripe` 1.0 (`stripe::Client` plus the typed request builders of
//! `stripe_core`, `stripe_checkout` and `stripe_billing`). Requests are always built with
//! the typed builders, so the form encoding (`line_items[0][price_data][unit_amount]=…`)
//! is the library's. Answers, on the other hand, are read into small local structs that
//! hold only the fields taogate uses (`id`, `url`, `status`, …) instead of the full
//! generated object types: those require every field that the current Stripe API version
//! marks as required, so a stand-in server, an older API version or a test double with a
//! slimmer object would otherwise fail to parse.
//!
//! Writes that create something carry an `Idempotency-Key` header chosen by the caller
//! (`RequestStrategy::Idempotent`); every call is sent exactly once, and retrying is left
//! to the caller, who should reuse the same key.
//!
//! Errors are folded into [`StripeCallError`]: an error answer from Stripe becomes
//! [`StripeCallError::Rejected`] (HTTP status, Stripe's `code` — or its `type` when there is
//! no code — and message); a connection failure or a timeout becomes
//! [`StripeCallError::Unreachable`]; a customer without any saved card becomes
//! [`StripeCallError::NoPaymentMethod`]. An error answer whose body is not Stripe's error
//! JSON (an HTML page from a proxy, a plain-text 404) cannot be read by async-stripe, which
//! then drops its status too: it becomes [`StripeCallError::Other`]. Neither the secret key
//! nor any request header ever appears in an error or in a `Debug` output of this module.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use miniserde::Deserialize;
use miniserde::json::Value;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, ProductData,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::customer::RetrieveCustomer;
use stripe_core::payment_intent::{CreatePaymentIntent, CreatePaymentIntentOffSession};

/// Error of one Stripe call.
#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    /// Could not reach Stripe or no answer in time (retry later).
    #[error("Stripe could not be reached")]
    Unreachable,
    /// Stripe answered with an error: its HTTP status, error `code` (or, when Stripe gave no
    /// code, its error `type`) and message. Never contains the secret key or request headers.
    #[error("Stripe refused the request ({status}): {message}")]
    Rejected {
        /// HTTP status of Stripe's answer (400, 401, 402, 404, 409, 429, 5xx…).
        status: u16,
        /// Stripe's `error.code` ("card_declined", "resource_missing", …), else its
        /// `error.type` ("idempotency_error", "invalid_request_error", "api_error", …).
        code: Option<String>,
        /// Stripe's `error.message` (plus the decline code for card errors), scrubbed of the key.
        message: String,
    },
    /// [`StripeApi::charge_saved_card`]: the customer has no saved card to charge.
    #[error("the Stripe customer has no saved card")]
    NoPaymentMethod,
    /// Anything else (bad config such as an invalid base URL, unparseable answer).
    #[error("Stripe call failed: {0}")]
    Other(String),
}

impl StripeCallError {
    /// True when the same call (with the same idempotency key) may succeed later:
    /// Stripe unreachable, rate limited (429), a concurrent request with the same
    /// idempotency key in progress (409), or a server-side error (5xx).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            StripeCallError::Unreachable => true,
            StripeCallError::Rejected { status, .. } => {
                matches!(*status, 409 | 429) || (500..=599).contains(status)
            }
            StripeCallError::NoPaymentMethod | StripeCallError::Other(_) => false,
        }
    }
}

/// Client for the Stripe API calls taogate makes. Cheap to clone.
#[derive(Clone)]
pub struct StripeApi {
    client: stripe::Client,
    /// Kept only to scrub it out of any error message Stripe echoes back.
    secret_key: String,
    api_base: String,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// What [`StripeApi::create_checkout_session`] sends.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutRequest<'a> {
    /// The Stripe customer ("cus_…") who pays.
    pub customer: &'a str,
    /// Our reference, echoed back in the `checkout.session.*` webhook events.
    pub client_reference_id: &'a str,
    /// In the currency's minor unit (cents).
    pub amount_minor: i64,
    /// ISO code, any case ("usd", "EUR").
    pub currency: &'a str,
    /// Shown to the payer as the line item's name.
    pub product_name: &'a str,
    /// Where Stripe sends the payer after paying (may hold `{CHECKOUT_SESSION_ID}`).
    pub success_url: &'a str,
    /// Where Stripe sends the payer who gives up.
    pub cancel_url: &'a str,
    /// Set on the session and on its payment intent.
    pub metadata: &'a [(&'a str, &'a str)],
    /// Sent as the `Idempotency-Key` header (1 to 255 characters).
    pub idempotency_key: &'a str,
}

/// A created Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    /// "cs_…"
    pub id: String,
    /// The hosted payment page to send the payer to.
    pub url: String,
}

/// What [`StripeApi::charge_saved_card`] sends.
#[derive(Debug, Clone, Copy)]
pub struct OffSessionCharge<'a> {
    /// The Stripe customer ("cus_…") whose saved card is charged.
    pub customer: &'a str,
    /// In the currency's minor unit (cents).
    pub amount_minor: i64,
    /// ISO code, any case.
    pub currency: &'a str,
    /// Set on the payment intent.
    pub metadata: &'a [(&'a str, &'a str)],
    /// Sent as the `Idempotency-Key` header (1 to 255 characters).
    pub idempotency_key: &'a str,
}

/// A created PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntentInfo {
    /// "pi_…"
    pub id: String,
    /// Stripe's status: "succeeded", "processing", "requires_action", …
    pub status: String,
}

// ---- The parts of Stripe's answers that are read ----

#[derive(Deserialize)]
struct IdAnswer {
    id: String,
}

#[derive(Deserialize)]
struct CheckoutSessionAnswer {
    id: String,
    url: Option<String>,
}

#[derive(Deserialize)]
struct UrlAnswer {
    url: String,
}

#[derive(Deserialize)]
struct MeterEventAnswer {
    #[allow(dead_code)]
    object: Option<String>,
}

#[derive(Deserialize)]
struct CustomerAnswer {
    deleted: Option<bool>,
    invoice_settings: Option<InvoiceSettingsAnswer>,
}

#[derive(Deserialize)]
struct InvoiceSettingsAnswer {
    /// An id, null, or (if expanded) an object.
    default_payment_method: Option<Value>,
}

#[derive(Deserialize)]
struct RefundList {
    data: Vec<RefundAnswer>,
}

#[derive(Deserialize)]
struct RefundAnswer {
    id: String,
    amount: i64,
    currency: String,
    status: Option<String>,
}

/// A refund as Stripe reports it.
#[derive(Debug, Clone)]
pub struct RefundInfo {
    pub id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// `succeeded`, `pending`, `failed`, `canceled`, …
    pub status: String,
}

#[derive(Deserialize)]
struct PaymentMethodList {
    data: Vec<PaymentMethodAnswer>,
}

#[derive(Deserialize)]
struct PaymentMethodAnswer {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct PaymentIntentAnswer {
    id: String,
    status: String,
}

impl StripeApi {
    /// `api_base` e.g. "https://api.stripe.com/" or "http://127.0.0.1:PORT/"; a missing
    /// trailing slash is added (async-stripe builds `{base}v1{path}`). `timeout` bounds each
    /// HTTP attempt (connect, answer and body).
    pub fn new(
        secret_key: &str,
        api_base: &str,
        timeout: Duration,
    ) -> Result<Self, StripeCallError> {
        if secret_key.is_empty() {
            return Err(StripeCallError::Other(
                "the Stripe secret key is empty".into(),
            ));
        }
        if !secret_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StripeCallError::Other(
                "the Stripe secret key has characters other than visible ASCII".into(),
            ));
        }
        let trimmed = api_base.trim();
        if !(trimmed.starts_with("https://") || trimmed.starts_with("http://"))
            || trimmed.contains(['?', '#'])
        {
            return Err(StripeCallError::Other(format!(
                "the Stripe API base URL {trimmed:?} is not an http(s) URL without query"
            )));
        }
        let api_base = if trimmed.ends_with('/') {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/")
        };
        let client = stripe::ClientBuilder::new(secret_key)
            .url(api_base.clone())
            .timeout(timeout)
            .request_strategy(RequestStrategy::Once)
            .build()
            .map_err(|e| match e {
                // Only the base URL can be wrong here (the key was checked above); the
                // message names the URL problem, never the key.
                StripeError::ConfigError(m) => StripeCallError::Other(m),
                _ => StripeCallError::Other("invalid Stripe client configuration".into()),
            })?;
        Ok(Self {
            client,
            secret_key: secret_key.to_owned(),
            api_base,
        })
    }

    /// POST /v1/customers with `name` and metadata {taogate_account_id, taogate_tenant_id};
    /// returns the customer id "cus_…".
    pub async fn create_customer(
        &self,
        account_id: &str,
        tenant_id: &str,
        name: &str,
        idempotency_key: &str,
    ) -> Result<String, StripeCallError> {
        let metadata = HashMap::from([
            ("taogate_account_id".to_owned(), account_id.to_owned()),
            ("taogate_tenant_id".to_owned(), tenant_id.to_owned()),
        ]);
        let req = stripe_core::customer::CreateCustomer::new()
            .name(name)
            .metadata(metadata);
        let answer: IdAnswer = self.send(req.build(), Some(idempotency_key)).await?;
        Ok(answer.id)
    }

    /// POST /v1/checkout/sessions in `payment` mode for one line item of `amount_minor`.
    pub async fn create_checkout_session(
        &self,
        req: &CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, StripeCallError> {
        let metadata = to_map(req.metadata);
        let mut price_data = CreateCheckoutSessionLineItemsPriceData::new(currency(req.currency));
        price_data.unit_amount = Some(req.amount_minor);
        price_data.product_data = Some(ProductData::new(req.product_name));
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price_data = Some(price_data);
        line_item.quantity = Some(1);
        let mut builder = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Payment)
            .customer(req.customer)
            .client_reference_id(req.client_reference_id)
            .line_items(vec![line_item])
            .success_url(req.success_url)
            .cancel_url(req.cancel_url);
        // The card is saved for off-session use: automatic top-ups charge it later.
        let mut pi_data = CreateCheckoutSessionPaymentIntentData::new();
        pi_data.setup_future_usage = Some(
            stripe_checkout::checkout_session::CreateCheckoutSessionPaymentIntentDataSetupFutureUsage::OffSession,
        );
        if !metadata.is_empty() {
            pi_data.metadata = Some(metadata.clone());
            builder = builder.metadata(metadata);
        }
        builder = builder.payment_intent_data(pi_data);
        let answer: CheckoutSessionAnswer = self
            .send(builder.build(), Some(req.idempotency_key))
            .await?;
        let url = answer.url.ok_or_else(|| {
            StripeCallError::Other(format!(
                "Stripe created checkout session {} without a url",
                answer.id
            ))
        })?;
        Ok(CheckoutSession { id: answer.id, url })
    }

    /// POST /v1/billing_portal/sessions; returns the portal URL.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: Option<&str>,
    ) -> Result<String, StripeCallError> {
        let mut req = CreateBillingPortalSession::new().customer(customer);
        if let Some(return_url) = return_url {
            req = req.return_url(return_url);
        }
        let answer: UrlAnswer = self.send(req.build(), None).await?;
        Ok(answer.url)
    }

    /// Charges the customer's saved card off-session: the card is the customer's
    /// `invoice_settings.default_payment_method`, else its first card payment method
    /// (GET /v1/payment_methods?customer=…&type=card). Then POST /v1/payment_intents with
    /// `off_session=true&confirm=true`. A declined card comes back as
    /// `Rejected { status: 402, code: Some("card_declined" | "authentication_required" | …) }`;
    /// no card at all as [`StripeCallError::NoPaymentMethod`].
    pub async fn charge_saved_card(
        &self,
        req: &OffSessionCharge<'_>,
    ) -> Result<PaymentIntentInfo, StripeCallError> {
        let payment_method = self.find_saved_card(req.customer).await?;
        let mut builder = CreatePaymentIntent::new(req.amount_minor, currency(req.currency))
            .customer(req.customer)
            .payment_method(payment_method)
            .off_session(CreatePaymentIntentOffSession::Bool(true))
            .confirm(true);
        let metadata = to_map(req.metadata);
        if !metadata.is_empty() {
            builder = builder.metadata(metadata);
        }
        let answer: PaymentIntentAnswer = self
            .send(builder.build(), Some(req.idempotency_key))
            .await?;
        Ok(PaymentIntentInfo {
            id: answer.id,
            status: answer.status,
        })
    }

    /// POST /v1/billing/meter_events with payload {stripe_customer_id, value}; the
    /// Idempotency-Key is `identifier`, so resending the same event replays the first answer.
    pub async fn create_meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        identifier: &str,
        timestamp: i64,
    ) -> Result<(), StripeCallError> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), customer.to_owned()),
            ("value".to_owned(), value.to_string()),
        ]);
        let req = CreateBillingMeterEvent::new(event_name, payload)
            .identifier(identifier)
            .timestamp(timestamp);
        let _: MeterEventAnswer = self.send(req.build(), Some(identifier)).await?;
        Ok(())
    }

    async fn find_saved_card(&self, customer: &str) -> Result<String, StripeCallError> {
        // The id goes into the URL path: accept only what Stripe ids are made of.
        if customer.is_empty()
            || !customer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StripeCallError::Other(format!(
                "{customer:?} is not a Stripe customer id"
            )));
        }
        let found: CustomerAnswer = self
            .send(RetrieveCustomer::new(customer).build(), None)
            .await?;
        if found.deleted == Some(true) {
            return Err(StripeCallError::Rejected {
                status: 404,
                code: Some("resource_missing".into()),
                message: format!("Stripe customer {customer} was deleted"),
            });
        }
        let default = found
            .invoice_settings
            .and_then(|s| s.default_payment_method);
        match default {
            Some(Value::String(id)) if !id.is_empty() => return Ok(id),
            Some(Value::Object(obj)) => {
                if let Some(Value::String(id)) = obj.get("id") {
                    return Ok(id.clone());
                }
            }
            _ => {}
        }
        let query = BTreeMap::from([("customer", customer), ("type", "card"), ("limit", "10")]);
        let list: PaymentMethodList = self
            .send(
                RequestBuilder::new(StripeMethod::Get, "/payment_methods").query(&query),
                None,
            )
            .await?;
        list.data
            .into_iter()
            .find(|pm| pm.kind.as_deref().is_none_or(|k| k == "card"))
            .map(|pm| pm.id)
            .ok_or(StripeCallError::NoPaymentMethod)
    }

    /// GET /v1/refunds?payment_intent=…: the PaymentIntent's refunds (up to 100, newest first).
    pub async fn list_refunds(
        &self,
        payment_intent: &str,
    ) -> Result<Vec<RefundInfo>, StripeCallError> {
        if !payment_intent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StripeCallError::Other(
                "a PaymentIntent id holds only letters, digits and `_`".into(),
            ));
        }
        let query = BTreeMap::from([("payment_intent", payment_intent), ("limit", "100")]);
        let list: RefundList = self
            .send(
                RequestBuilder::new(StripeMethod::Get, "/refunds").query(&query),
                None,
            )
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|r| RefundInfo {
                id: r.id,
                amount_minor: r.amount,
                currency: r.currency.to_ascii_lowercase(),
                status: r.status.unwrap_or_default(),
            })
            .collect())
    }

    async fn send<T: Deserialize>(
        &self,
        req: RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeCallError> {
        let mut req = req.customize::<T>();
        if let Some(key) = idempotency_key {
            let key = IdempotencyKey::new(key)
                .map_err(|e| StripeCallError::Other(format!("bad idempotency key: {e}")))?;
            req = req.request_strategy(RequestStrategy::Idempotent(key));
        }
        req.send(&self.client).await.map_err(|e| self.map_error(e))
    }

    fn map_error(&self, err: StripeError) -> StripeCallError {
        match err {
            StripeError::Stripe(api, status) => {
                let code = match &api.code {
                    Some(code) => code.as_str().to_owned(),
                    None => api.type_.as_str().to_owned(),
                };
                let mut message = api
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("Stripe gave no message ({code})"));
                if let Some(decline) = &api.decline_code {
                    message = format!("{message} (decline_code: {decline})");
                }
                StripeCallError::Rejected {
                    status,
                    code: Some(code),
                    message: self.scrub(message),
                }
            }
            StripeError::ClientError(_) | StripeError::Timeout => StripeCallError::Unreachable,
            // "error deserializing Stripe error": an error status whose body is not Stripe's
            // error JSON; "error deserializing request data": a success body that lacks a field
            // read above. Neither text holds data from the request.
            StripeError::JSONDeserialize(m) => {
                StripeCallError::Other(format!("unreadable answer from Stripe: {m}"))
            }
            StripeError::ConfigError(m) => StripeCallError::Other(self.scrub(m)),
        }
    }

    /// Removes the secret key from a text that came from outside (defence in depth).
    fn scrub(&self, text: String) -> String {
        if text.contains(&self.secret_key) {
            text.replace(&self.secret_key, "[redacted]")
        } else {
            text
        }
    }
}

fn to_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn currency(code: &str) -> stripe_types::Currency {
    let Ok(c) = stripe_types::Currency::from_str(&code.trim().to_ascii_lowercase());
    c
}
