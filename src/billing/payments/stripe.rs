//! Stripe's webhook notifications, read with our own minimal structs (only the fields money depends
//! on; the raw JSON is stored whole), so a webhook never depends on the API version an SDK pins.
//! What each event means ([`Effect`]):
//!
//! - `checkout.session.completed` with `payment_status: "paid"`, `checkout.session.
//!   async_payment_succeeded` and `payment_intent.succeeded` → [`Effect::Paid`] (one credit per
//!   PaymentIntent, whichever arrives first);
//! - `checkout.session.completed` unpaid → nothing yet (a delayed method; its outcome follows);
//! - `checkout.session.async_payment_failed`, `checkout.session.expired`,
//!   `payment_intent.payment_failed` → [`Effect::Failed`];
//! - `charge.refunded` → [`Effect::Refunded`] (the charge's cumulative `amount_refunded`);
//! - `charge.dispute.created` / `charge.dispute.closed` → dispute opened / closed;
//! - anything else → [`Effect::Ignored`] (stored and acknowledged).

use serde::Deserialize;
use serde_json::Value;

use super::signature;
use super::stripe_account::{customer, provider_error};
use super::stripe_api::{CheckoutRequest, StripeApi};
use super::{Effect, Inbound, Payer, Provider, Refused, Start};
use crate::db::Db;
use crate::error::ApiResult;
use crate::models::account::Account;
use crate::models::payment::Payment;

/// The Stripe provider, for one tenant's Stripe account (for [`Provider::start`]; verifying and
/// reading notifications need only the tenant's webhook secrets).
pub struct Stripe {
    db: Db,
    api: StripeApi,
}

impl Stripe {
    pub fn new(db: Db, api: StripeApi) -> Self {
        Self { db, api }
    }
}

/// Its name in storage and keys.
pub const NAME: &str = "stripe";

/// The longest id or string we take from a notification.
const MAX_ID: usize = 255;

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: Value,
}

/// An id that may arrive expanded (`{"id": …}`) or not.
#[derive(Deserialize)]
#[serde(untagged)]
enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    fn id(self) -> String {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

#[derive(Deserialize)]
struct CheckoutSession {
    id: String,
    client_reference_id: Option<String>,
    amount_total: Option<i64>,
    currency: Option<String>,
    payment_status: Option<String>,
    payment_intent: Option<Expandable>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
    /// What was received; older API shapes (and emulators) leave it out of a succeeded intent,
    /// whose `amount` was then received whole.
    amount_received: Option<i64>,
    #[serde(default)]
    amount: i64,
    currency: String,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct Charge {
    payment_intent: Option<Expandable>,
    amount_refunded: i64,
    currency: String,
    refunds: Option<RefundList>,
}

#[derive(Deserialize)]
struct RefundList {
    #[serde(default)]
    data: Vec<Refund>,
}

#[derive(Deserialize)]
struct Refund {
    id: String,
}

#[derive(Deserialize)]
struct Dispute {
    id: String,
    payment_intent: Option<Expandable>,
    amount: i64,
    currency: String,
    status: String,
}

fn unreadable(what: impl std::fmt::Display) -> Refused {
    Refused::Unreadable(what.to_string())
}

/// A provider id must be short printable ASCII (it is stored and used in keys).
fn id(field: &str, value: String) -> Result<String, Refused> {
    let ok =
        !value.is_empty() && value.len() <= MAX_ID && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(value)
        .ok_or_else(|| unreadable(format!("`{field}` is not a valid id")))
}

fn amount(field: &str, value: i64) -> Result<i64, Refused> {
    (0..=crate::billing::amount::MAX_AMOUNT_NANO)
        .contains(&value)
        .then_some(value)
        .ok_or_else(|| unreadable(format!("`{field}` is out of range")))
}

fn currency(value: String) -> Result<String, Refused> {
    let value = value.to_ascii_lowercase();
    (value.len() == 3 && value.bytes().all(|b| b.is_ascii_lowercase()))
        .then_some(value)
        .ok_or_else(|| unreadable("`currency` is not an ISO 4217 code"))
}

fn meta(map: &Option<serde_json::Map<String, Value>>, key: &str) -> Option<String> {
    map.as_ref()?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID)
        .map(str::to_owned)
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Refused> {
    serde_json::from_value(value).map_err(unreadable)
}

impl Stripe {
    /// Reads a verified body.
    pub fn read(body: &[u8]) -> Result<Inbound, Refused> {
        let event: Event = serde_json::from_slice(body).map_err(unreadable)?;
        let event_id = id("id", event.id)?;
        if event.kind.is_empty() || event.kind.len() > MAX_ID || !event.kind.is_ascii() {
            return Err(unreadable("`type` is not valid"));
        }
        let effect = effect(&event.kind, event.data.object)?;
        Ok(Inbound {
            event_id,
            event_type: event.kind,
            effect,
        })
    }
}

fn effect(kind: &str, object_value: Value) -> Result<Effect, Refused> {
    Ok(match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let s: CheckoutSession = object(object_value)?;
            let session = id("data.object.id", s.id)?;
            if s.payment_status.as_deref() != Some("paid") {
                // Unpaid (a delayed method): its async_payment_* event follows.
                return Ok(Effect::Ignored);
            }
            let reference = s
                .payment_intent
                .map(|p| id("data.object.payment_intent", p.id()))
                .transpose()?
                .ok_or_else(|| unreadable("a paid session without `payment_intent`"))?;
            Effect::Paid {
                reference,
                session: Some(session),
                payment_hint: meta(&s.metadata, "taogate_payment_id"),
                account_hint: s
                    .client_reference_id
                    .filter(|c| !c.is_empty() && c.len() <= MAX_ID),
                amount_minor: Some(amount(
                    "data.object.amount_total",
                    s.amount_total
                        .ok_or_else(|| unreadable("a paid session without `amount_total`"))?,
                )?),
                currency: currency(
                    s.currency
                        .ok_or_else(|| unreadable("a paid session without `currency`"))?,
                )?,
            }
        }
        "checkout.session.async_payment_failed" | "checkout.session.expired" => {
            let s: CheckoutSession = object(object_value)?;
            Effect::Failed {
                session: Some(id("data.object.id", s.id)?),
                payment_hint: meta(&s.metadata, "taogate_payment_id"),
                reference: s
                    .payment_intent
                    .map(|p| id("data.object.payment_intent", p.id()))
                    .transpose()?,
                expired: kind == "checkout.session.expired",
            }
        }
        "payment_intent.succeeded" => {
            let p: PaymentIntent = object(object_value)?;
            Effect::Paid {
                reference: id("data.object.id", p.id)?,
                session: None,
                payment_hint: meta(&p.metadata, "taogate_payment_id"),
                account_hint: meta(&p.metadata, "taogate_account_id"),
                amount_minor: Some(amount(
                    "data.object.amount_received",
                    p.amount_received.unwrap_or(p.amount),
                )?),
                currency: currency(p.currency)?,
            }
        }
        "payment_intent.payment_failed" => {
            let p: PaymentIntent = object(object_value)?;
            Effect::Failed {
                session: None,
                payment_hint: meta(&p.metadata, "taogate_payment_id"),
                reference: Some(id("data.object.id", p.id)?),
                expired: false,
            }
        }
        "charge.refunded" => {
            let c: Charge = object(object_value)?;
            let Some(reference) = c.payment_intent else {
                return Ok(Effect::Ignored);
            };
            Effect::Refunded {
                reference: id("data.object.payment_intent", reference.id())?,
                refunded_total_minor: amount("data.object.amount_refunded", c.amount_refunded)?,
                currency: currency(c.currency)?,
                refund_ids: c
                    .refunds
                    .map(|r| r.data.into_iter().map(|r| r.id).collect())
                    .unwrap_or_default(),
            }
        }
        "charge.dispute.created" | "charge.dispute.closed" => {
            let d: Dispute = object(object_value)?;
            let Some(reference) = d.payment_intent else {
                return Ok(Effect::Ignored);
            };
            let reference = id("data.object.payment_intent", reference.id())?;
            let dispute = id("data.object.id", d.id)?;
            if kind == "charge.dispute.created" {
                Effect::DisputeOpened {
                    reference,
                    dispute,
                    amount_minor: amount("data.object.amount", d.amount)?,
                    currency: currency(d.currency)?,
                }
            } else {
                Effect::DisputeClosed {
                    reference,
                    dispute,
                    won: d.status == "won",
                }
            }
        }
        _ => Effect::Ignored,
    })
}

impl Provider for Stripe {
    const NAME: &'static str = NAME;

    fn verify(
        header: &str,
        body: &[u8],
        secrets: &[&str],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Inbound, Refused> {
        // No secret matches nothing: an endpoint without secrets refuses everything.
        signature::verify(header, body, secrets, now, tolerance_secs)?;
        Self::read(body)
    }

    /// A Checkout Session in payment mode for the account's Stripe customer (created once),
    /// `client_reference_id` = the account, our ids in the session's and the PaymentIntent's
    /// metadata, `Idempotency-Key: topup:<payment id>`.
    async fn start(&self, payment: &Payment, account: &Account, payer: &Payer) -> ApiResult<Start> {
        let customer = customer(&self.db, &self.api, account).await?;
        let (pid, aid, tid) = (
            payment.id.to_string(),
            account.id.to_string(),
            account.tenant_id.to_string(),
        );
        let metadata = [
            ("taogate_payment_id", pid.as_str()),
            ("taogate_account_id", aid.as_str()),
            ("taogate_tenant_id", tid.as_str()),
        ];
        let session = self
            .api
            .create_checkout_session(&CheckoutRequest {
                customer: &customer,
                client_reference_id: aid.as_str(),
                amount_minor: payment.requested_minor,
                currency: &payment.currency,
                product_name: "Credits",
                success_url: &payer.success_url,
                cancel_url: &payer.cancel_url,
                metadata: &metadata,
                idempotency_key: &format!("topup:{}", payment.id),
            })
            .await
            .map_err(provider_error)?;
        Ok(Start {
            session: Some(session.id),
            reference: None,
            url: session.url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(kind: &str, object: Value) -> Effect {
        let body = serde_json::json!({"id": "evt_1", "object": "event", "type": kind,
            "data": {"object": object}});
        Stripe::read(body.to_string().as_bytes()).unwrap().effect
    }

    #[test]
    fn a_paid_session_is_a_payment_and_an_unpaid_one_waits() {
        let session = serde_json::json!({"id": "cs_1", "object": "checkout.session",
            "client_reference_id": "acct", "amount_total": 1000, "currency": "USD",
            "payment_status": "paid", "payment_intent": "pi_1",
            "metadata": {"taogate_payment_id": "p1"}});
        assert_eq!(
            read("checkout.session.completed", session.clone()),
            Effect::Paid {
                reference: "pi_1".into(),
                session: Some("cs_1".into()),
                payment_hint: Some("p1".into()),
                account_hint: Some("acct".into()),
                amount_minor: Some(1000),
                currency: "usd".into(),
            }
        );
        let mut unpaid = session;
        unpaid["payment_status"] = "unpaid".into();
        assert_eq!(read("checkout.session.completed", unpaid), Effect::Ignored);
    }

    #[test]
    fn refunds_disputes_and_unknown_events() {
        let charge = serde_json::json!({"id": "ch_1", "object": "charge", "amount": 1000,
            "amount_refunded": 300, "currency": "usd", "payment_intent": {"id": "pi_1"},
            "refunds": {"data": [{"id": "re_1"}]}});
        assert!(matches!(read("charge.refunded", charge),
            Effect::Refunded { refunded_total_minor: 300, ref reference, .. } if reference == "pi_1"));
        let dispute = serde_json::json!({"id": "dp_1", "amount": 1000, "currency": "usd",
            "payment_intent": "pi_1", "status": "won"});
        assert!(matches!(
            read("charge.dispute.closed", dispute),
            Effect::DisputeClosed { won: true, .. }
        ));
        assert_eq!(
            read("customer.created", serde_json::json!({"id": "cus_1"})),
            Effect::Ignored
        );
    }

    #[test]
    fn malformed_notifications_are_refused() {
        for body in [
            "not json".to_string(),
            r#"{"id":"evt_1"}"#.to_string(),
            serde_json::json!({"id": "evt 1", "type": "x", "data": {"object": {}}}).to_string(),
            serde_json::json!({"id": "evt_1", "type": "checkout.session.completed",
                "data": {"object": {"id": "cs_1", "payment_status": "paid",
                "payment_intent": "pi_1", "amount_total": -5, "currency": "usd"}}})
            .to_string(),
            serde_json::json!({"id": "evt_1", "type": "charge.refunded",
                "data": {"object": {"payment_intent": "pi_1", "amount_refunded": 1,
                "currency": "dollars"}}})
            .to_string(),
        ] {
            assert!(Stripe::read(body.as_bytes()).is_err(), "{body}");
        }
    }
}
