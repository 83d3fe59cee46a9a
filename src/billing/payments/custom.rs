//! A reseller's own payment method ("you can also build your own proprietary payment methods"): a
//! generic signed-credit webhook, `POST /webhooks/custom/{tenant_slug}/{provider}`. The reseller's
//! system posts a JSON body
//!
//! ```json
//! {"payment_id": "…", "account_id": "<taogate account id>", "amount_nano": 5000000000,
//!  "currency": "usd", "status": "succeeded" | "refunded", "occurred_at": "2026-12-07T12:00:00Z"}
//! ```
//!
//! signed Stripe-style with the provider's secret (`Taogate-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256(secret, "t.body")>`, 300 s tolerance, every configured secret tried). A payment is
//! credited once per (provider, `payment_id`), whatever the deliveries; `refunded` debits the
//! refunded amount (cumulative, at most what was credited) once. The event id stored for
//! deduplication is `<payment_id>:<status>:<amount_nano>`.

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::signature;
use super::{CUSTOM_PREFIX, Effect, Inbound, Payer, Provider, Refused, Start};
use crate::domain::TenantId;
use crate::error::{ApiError, ApiResult};
use crate::models::account::Account;
use crate::models::payment::Payment;

/// The stored name of a tenant's provider `value` (letters, digits, `-` and `_`, 1–40 characters):
/// `custom:<tenant id>:<name>`. The tenant is part of it, so every key derived from it — the
/// notification's event id, the payment's reference, the ledger key `custom:<tenant>:<name>:<payment
/// id>` — belongs to that tenant alone: another tenant naming its provider alike and reporting the
/// same payment ids first cannot take them.
pub fn name(field: &str, tenant: &TenantId, value: &str) -> ApiResult<String> {
    let ok = (1..=40).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(format!(
            "{CUSTOM_PREFIX}{tenant}:{}",
            value.to_ascii_lowercase()
        ))
    } else {
        Err(ApiError::invalid_param(
            field,
            format!("{field} must be 1-40 letters, digits, `-` or `_`"),
        ))
    }
}

/// What the reseller's system posts.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPayment {
    /// The payment's id in the reseller's system (unique there; printable ASCII, no `:`).
    #[schema(max_length = 255, pattern = "^[!-9;-~]{1,255}$")]
    pub payment_id: String,
    /// The taogate account it pays into.
    pub account_id: String,
    /// Nano-units: paid (`succeeded`) or refunded so far (`refunded`).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_000_i64)]
    pub amount_nano: i64,
    /// The tenant's currency (ISO 4217).
    pub currency: String,
    pub status: CustomStatus,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CustomStatus {
    Succeeded,
    Refunded,
}

/// A tenant's own provider.
pub struct Custom;

fn unreadable(why: impl std::fmt::Display) -> Refused {
    Refused::Unreadable(why.to_string())
}

impl Custom {
    /// Reads a verified body.
    pub fn read(body: &[u8]) -> Result<Inbound, Refused> {
        let p: CustomPayment = serde_json::from_slice(body).map_err(unreadable)?;
        let ok_id =
            |v: &str| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic());
        if !ok_id(&p.payment_id) {
            return Err(unreadable(
                "`payment_id` must be 1-255 printable ASCII characters",
            ));
        }
        if !(0..=crate::billing::amount::MAX_AMOUNT_NANO).contains(&p.amount_nano) {
            return Err(unreadable("`amount_nano` is out of range"));
        }
        let currency = p.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(unreadable("`currency` is not an ISO 4217 code"));
        }
        DateTime::parse_from_rfc3339(&p.occurred_at)
            .map_err(|_| unreadable("`occurred_at` is not an RFC 3339 time"))?;
        let status = match p.status {
            CustomStatus::Succeeded => "succeeded",
            CustomStatus::Refunded => "refunded",
        };
        let event_id = format!("{}:{status}:{}", p.payment_id, p.amount_nano);
        let effect = match p.status {
            CustomStatus::Succeeded => Effect::Paid {
                reference: p.payment_id,
                session: None,
                payment_hint: None,
                account_hint: Some(p.account_id),
                amount_minor: Some(p.amount_nano),
                currency,
            },
            CustomStatus::Refunded => Effect::Refunded {
                reference: p.payment_id,
                refunded_total_minor: p.amount_nano,
                currency,
                refund_ids: Vec::new(),
            },
        };
        Ok(Inbound {
            event_id,
            event_type: format!("payment.{status}"),
            effect,
        })
    }
}

impl Provider for Custom {
    const NAME: &'static str = "custom";

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

    /// The reseller's own system takes the payment; taogate only hears of it.
    async fn start(&self, _: &Payment, _: &Account, _: &Payer) -> ApiResult<Start> {
        Err(ApiError::conflict(
            "payments_not_configured",
            "a custom provider's payments are started by the reseller's own system",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_strictly() {
        let good = serde_json::json!({"payment_id": "p-1", "account_id": "a", "amount_nano": 5,
            "currency": "USD", "status": "succeeded", "occurred_at": "2026-12-07T12:00:00Z"});
        let read = Custom::read(good.to_string().as_bytes()).unwrap();
        assert_eq!(read.event_id, "p-1:succeeded:5");
        assert!(
            matches!(read.effect, Effect::Paid { amount_minor: Some(5), ref currency, .. } if currency == "usd")
        );
        for (field, bad) in [
            ("amount_nano", serde_json::json!(-1)),
            ("status", serde_json::json!("pending")),
            ("occurred_at", serde_json::json!("yesterday")),
            ("payment_id", serde_json::json!("")),
            ("extra", serde_json::json!(1)),
        ] {
            let mut body = good.clone();
            body[field] = bad;
            assert!(
                Custom::read(body.to_string().as_bytes()).is_err(),
                "{field}"
            );
        }
        let tenant = TenantId::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap();
        assert_eq!(
            name("provider", &tenant, "MyPay_1").unwrap(),
            "custom:01234567-89ab-cdef-0123-456789abcdef:mypay_1"
        );
        assert!(name("provider", &tenant, "my pay").is_err());
    }
}
