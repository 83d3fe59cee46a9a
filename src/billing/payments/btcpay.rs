//! BTCPay Server (self-hosted, open source): a reseller takes BTC / Lightning without a custodian.
//! A top-up is a Greenfield invoice (`POST {server}/api/v1/stores/{store}/invoices`,
//! `Authorization: token <api key>`, the amount as a decimal string in the tenant's currency, our
//! ids in its metadata, `checkout.redirectURL`); its id is the payment's reference. BTCPay's
//! webhook (`POST /webhooks/btcpay/{tenant_slug}`) is signed `BTCPay-Sig: sha256=<hex
//! HMAC-SHA256(secret, raw body)>` (no timestamp: replays are harmless, every movement is keyed by
//! the invoice). `InvoiceSettled` credits the amount the invoice asked for, once;
//! `InvoiceExpired` and `InvoiceInvalid` mark it failed; other events are stored and ignored.
//! Each delivery is stored under its own `deliveryId` (a redelivery carries a new one).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use super::settings::{context, printable, topup_bounds, webhook_secrets};
use super::signature::SignatureError;
use super::{Effect, Inbound, Payer, Provider, Refused, Start, minor_unit_exponent};
use crate::domain::{Nano, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::models::account::Account;
use crate::models::payment::{Payment, ProviderSettings};

use super::seal::Sealer;

/// Its name in storage and keys.
pub const NAME: &str = "btcpay";
/// The header carrying BTCPay's signature.
pub const SIGNATURE_HEADER: &str = "btcpay-sig";

/// The BTCPay provider for one tenant's store.
pub struct BtcPay {
    server_url: String,
    store_id: String,
    api_key: String,
    client: reqwest::Client,
}

impl BtcPay {
    pub fn new(settings: &ProviderSettings, api_key: String, timeout: Duration) -> ApiResult<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ApiError::internal)?;
        Ok(Self {
            server_url: settings.server_url.clone().unwrap_or_default(),
            store_id: settings.store_id.clone().unwrap_or_default(),
            api_key,
            client,
        })
    }
}

/// `amount` minor units of `currency` as the decimal string Greenfield takes (`1234` USD → `12.34`).
pub fn decimal(minor: i64, currency: &str) -> String {
    let exp = minor_unit_exponent(currency) as usize;
    if exp == 0 {
        return minor.to_string();
    }
    let digits = format!("{:0>width$}", minor, width = exp + 1);
    let (whole, frac) = digits.split_at(digits.len() - exp);
    format!("{whole}.{frac}")
}

#[derive(Deserialize)]
struct Delivery {
    #[serde(rename = "deliveryId")]
    delivery_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "invoiceId")]
    invoice_id: Option<String>,
}

#[derive(Deserialize)]
struct InvoiceAnswer {
    id: String,
    #[serde(rename = "checkoutLink")]
    checkout_link: String,
}

fn unreadable(why: impl std::fmt::Display) -> Refused {
    Refused::Unreadable(why.to_string())
}

impl BtcPay {
    /// Reads a verified body.
    pub fn read(body: &[u8]) -> Result<Inbound, Refused> {
        let d: Delivery = serde_json::from_slice(body).map_err(unreadable)?;
        let ok =
            |v: &str| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic());
        if !ok(&d.delivery_id) || !ok(&d.kind) {
            return Err(unreadable(
                "`deliveryId` and `type` must be short printable ASCII",
            ));
        }
        let invoice = d.invoice_id.filter(|i| ok(i));
        let effect = match (d.kind.as_str(), invoice) {
            ("InvoiceSettled", Some(invoice)) => Effect::Paid {
                reference: invoice,
                session: None,
                payment_hint: None,
                account_hint: None,
                amount_minor: None,
                currency: String::new(),
            },
            ("InvoiceExpired" | "InvoiceInvalid", Some(invoice)) => Effect::Failed {
                session: None,
                reference: Some(invoice),
                payment_hint: None,
                expired: d.kind == "InvoiceExpired",
            },
            _ => Effect::Ignored,
        };
        Ok(Inbound {
            event_id: d.delivery_id,
            event_type: d.kind,
            effect,
        })
    }
}

impl Provider for BtcPay {
    const NAME: &'static str = NAME;

    /// `signature` is the `BTCPay-Sig` header: `sha256=<hex>` of the raw body.
    fn verify(
        signature: &str,
        body: &[u8],
        secrets: &[&str],
        _now: i64,
        _tolerance_secs: i64,
    ) -> Result<Inbound, Refused> {
        let hex_sig = signature
            .trim()
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Malformed)?;
        let given = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
        let matches = secrets.iter().any(|secret| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes any key");
            mac.update(body);
            mac.verify_slice(&given).is_ok()
        });
        if !matches {
            return Err(SignatureError::Mismatch.into());
        }
        Self::read(body)
    }

    async fn start(&self, payment: &Payment, account: &Account, payer: &Payer) -> ApiResult<Start> {
        let url = format!(
            "{}/api/v1/stores/{}/invoices",
            self.server_url.trim_end_matches('/'),
            self.store_id
        );
        let body = serde_json::json!({
            "amount": decimal(payment.requested_minor, &payment.currency),
            "currency": payment.currency.to_ascii_uppercase(),
            "metadata": {
                "orderId": payment.id,
                "taogate_payment_id": payment.id,
                "taogate_account_id": account.id,
                "taogate_tenant_id": account.tenant_id,
            },
            "checkout": {"redirectURL": payer.success_url},
        });
        let failed = |why: String| {
            tracing::warn!(error = %why, "a BTCPay call failed");
            ApiError::PaymentProvider { message: why }
        };
        let res = self
            .client
            .post(url)
            .header("authorization", format!("token {}", self.api_key))
            .json(&body)
            .send()
            .await
            .map_err(|_| failed("BTCPay Server could not be reached; retry shortly".into()))?;
        if !res.status().is_success() {
            return Err(failed(format!(
                "BTCPay Server refused the invoice ({})",
                res.status().as_u16()
            )));
        }
        let invoice: InvoiceAnswer = res
            .json()
            .await
            .map_err(|_| failed("BTCPay Server's answer could not be read".into()))?;
        Ok(Start {
            session: None,
            reference: Some(invoice.id),
            url: invoice.checkout_link,
        })
    }
}

/// `PUT /api/v1/billing/btcpay`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BtcPaySettingsInput {
    /// The BTCPay Server's base URL (https, or http for a private deployment).
    #[schema(max_length = 2048, pattern = "^https?://[^\\s]+$")]
    pub server_url: String,
    /// The store that takes the tenant's payments.
    #[schema(pattern = "^[A-Za-z0-9]{1,100}$")]
    pub store_id: String,
    /// A Greenfield API key with `btcpay.store.cancreateinvoice` on that store.
    #[schema(min_length = 8, max_length = 255)]
    pub api_key: String,
    /// The store webhook's secret(s) (two while one is rotated).
    #[schema(min_items = 1, max_items = 5)]
    pub webhook_secrets: Vec<String>,
    /// The invoices' currency (ISO 4217), e.g. `usd`.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub min_topup_nano: Option<Nano>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub max_topup_nano: Option<Nano>,
}

#[derive(Serialize, ToSchema)]
pub struct BtcPaySettingsView {
    pub object: &'static str,
    pub server_url: String,
    pub store_id: String,
    /// The API key's last characters.
    pub api_key: String,
    pub webhook_secret_count: i32,
    pub webhook_path: String,
    pub currency: String,
    #[schema(value_type = i64)]
    pub min_topup_nano: Nano,
    #[schema(value_type = i64)]
    pub max_topup_nano: Nano,
}

impl BtcPaySettingsInput {
    pub fn seal(self, tenant: &TenantId, sealer: &Sealer) -> ApiResult<ProviderSettings> {
        let url = url::Url::parse(&self.server_url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.username().is_empty()
        });
        if url.is_none() || self.server_url.len() > 2048 {
            return Err(ApiError::invalid_param(
                "server_url",
                "server_url must be an http or https URL",
            ));
        }
        if self.store_id.is_empty()
            || self.store_id.len() > 100
            || !self.store_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ApiError::invalid_param(
                "store_id",
                "store_id must be 1-100 letters or digits",
            ));
        }
        printable("api_key", &self.api_key, 8)?;
        let secrets = webhook_secrets(&self.webhook_secrets, 16)?;
        let currency = self.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ApiError::invalid_param(
                "currency",
                "currency must be a three-letter ISO 4217 code",
            ));
        }
        let per_unit = super::settings::DEFAULT_NANO_PER_UNIT;
        let (min, max) = topup_bounds(per_unit, self.min_topup_nano, self.max_topup_nano)?;
        let hint = format!("…{}", &self.api_key[self.api_key.len() - 4..]);
        Ok(ProviderSettings {
            secret_key_sealed: sealer.seal(
                self.api_key.as_bytes(),
                &context(NAME, "secret_key", tenant),
            ),
            secret_key_hint: hint,
            webhook_secrets_sealed: sealer
                .seal(&secrets, &context(NAME, "webhook_secrets", tenant)),
            webhook_secret_count: self.webhook_secrets.len() as i32,
            min_topup_nano: min,
            max_topup_nano: max,
            server_url: Some(self.server_url),
            store_id: Some(self.store_id),
            ..ProviderSettings::new(tenant, NAME, currency, per_unit)
        })
    }
}

/// How BTCPay settings are shown.
pub fn view(settings: &ProviderSettings, tenant_slug: &str) -> BtcPaySettingsView {
    BtcPaySettingsView {
        object: "btcpay_settings",
        server_url: settings.server_url.clone().unwrap_or_default(),
        store_id: settings.store_id.clone().unwrap_or_default(),
        api_key: settings.secret_key_hint.clone(),
        webhook_secret_count: settings.webhook_secret_count,
        webhook_path: format!("/webhooks/btcpay/{tenant_slug}"),
        currency: settings.currency.clone(),
        min_topup_nano: settings.min_topup_nano,
        max_topup_nano: settings.max_topup_nano,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_greenfield_decimals() {
        assert_eq!(decimal(1234, "usd"), "12.34");
        assert_eq!(decimal(5, "usd"), "0.05");
        assert_eq!(decimal(500, "jpy"), "500");
        assert_eq!(decimal(1, "kwd"), "0.001");
    }

    #[test]
    fn only_the_right_hmac_verifies() {
        let body =
            br#"{"deliveryId":"d1","type":"InvoiceSettled","invoiceId":"inv1","storeId":"s"}"#;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"whsec-btcpay-0001").unwrap();
        mac.update(body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let read = BtcPay::verify(
            &sig,
            body,
            &["other-secret-xxxx", "whsec-btcpay-0001"],
            0,
            0,
        )
        .unwrap();
        assert!(
            matches!(read.effect, Effect::Paid { amount_minor: None, ref reference, .. } if reference == "inv1")
        );
        assert!(BtcPay::verify(&sig, body, &["other-secret-xxxx"], 0, 0).is_err());
        assert!(BtcPay::verify("sha256=zz", body, &["whsec-btcpay-0001"], 0, 0).is_err());
        assert!(
            BtcPay::verify(
                &sig.replace("sha256=", ""),
                body,
                &["whsec-btcpay-0001"],
                0,
                0
            )
            .is_err()
        );
    }
}
