//! Hosted crypto checkouts through Coinbase, for a tenant's own Coinbase account.
//!
//! - **Coinbase Business Checkouts** (`api_kind` `business`, the successor of Commerce): a top-up is
//!   a checkout, `POST {business_api_base}api/v1/checkouts` with a CDP JWT ([`cdp`]) and
//!   `X-Idempotency-Key: topup:<payment id>`, body `{amount: "25.00", currency: "USDC", network:
//!   "base", description, successRedirectUrl, failRedirectUrl, metadata}`; its `id` is the payment's
//!   reference. Its webhooks (`POST /webhooks/coinbase/{tenant_slug}`) are Hook0-signed:
//!   `X-Hook0-Signature: t=<unix>,h=<header names, space separated>,v1=<hex>`, where `v1` is the
//!   HMAC-SHA256 with the subscription secret of `"<t>.<h>.<values of those headers joined by
//!   '.'>.<raw body>"`, within 300 s (`payments.coinbase.webhook_tolerance_secs`).
//!   `checkout.payment.success` credits (at most what the checkout asked for),
//!   `checkout.payment.failed` / `.expired` mark it, `checkout.refund.success` debits the
//!   cumulative `refundedAmount` once.
//! - **Legacy Coinbase Commerce** (`api_kind` `commerce`), for tenants still on it: a charge,
//!   `POST {commerce_api_base}charges` with `X-CC-Api-Key`; its webhooks carry
//!   `X-CC-Webhook-Signature: <hex HMAC-SHA256 of the raw body>` (no timestamp: every movement is
//!   keyed by the charge, so a replay moves nothing). `charge:confirmed` credits, `charge:failed`
//!   marks the top-up failed; other events are stored and ignored.
//!
//! Amounts are decimal strings; they are read exactly into the currency's minor units (extra
//! decimals are cut, so a credit never exceeds what was paid).

pub mod cdp;

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;

use super::btcpay::decimal;
use super::seal::Sealer;
use super::settings::{context, printable, topup_bounds, webhook_secrets};
use super::signature::SignatureError;
use super::{Effect, Inbound, Payer, Provider, Refused, Start, minor_unit_exponent, parse_decimal};
use crate::domain::{Nano, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::models::account::Account;
use crate::models::payment::{Payment, ProviderSettings};

use cdp::CdpKey;

/// Its name in storage and keys.
pub const NAME: &str = "coinbase";
/// Coinbase Business (Hook0) signature header.
pub const HOOK0_HEADER: &str = "x-hook0-signature";
/// Legacy Commerce signature header.
pub const COMMERCE_HEADER: &str = "x-cc-webhook-signature";
/// Most headers a Hook0 signature may cover.
const MAX_SIGNED_HEADERS: usize = 32;

/// `[payments.coinbase]` (documented in `deploy/taogate.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinbaseConfig {
    pub business_api_base: String,
    pub commerce_api_base: String,
    pub timeout_ms: u64,
    pub webhook_tolerance_secs: i64,
}

impl CoinbaseConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (key, base) in [
            ("business_api_base", &self.business_api_base),
            ("commerce_api_base", &self.commerce_api_base),
        ] {
            let ok = url::Url::parse(base).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && base.ends_with('/')
            });
            if !ok {
                anyhow::bail!(
                    "config key `payments.coinbase.{key}`: must be an http(s) URL ending in `/`"
                );
            }
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            anyhow::bail!(
                "config key `payments.coinbase.timeout_ms`: must be between 100 and 120000"
            );
        }
        if !(1..=3600).contains(&self.webhook_tolerance_secs) {
            anyhow::bail!(
                "config key `payments.coinbase.webhook_tolerance_secs`: must be between 1 and 3600"
            );
        }
        Ok(())
    }
}

/// Which Coinbase API a tenant is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    /// Coinbase Business Checkouts (CDP API key; USDC on Base).
    Business,
    /// Legacy Coinbase Commerce charges (`X-CC-Api-Key`).
    Commerce,
}

impl ApiKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Business => "business",
            Self::Commerce => "commerce",
        }
    }

    fn of(settings: &ProviderSettings) -> Self {
        match settings.api_kind.as_deref() {
            Some("commerce") => Self::Commerce,
            _ => Self::Business,
        }
    }
}

/// The Coinbase provider for one tenant.
pub struct Coinbase {
    kind: ApiKind,
    base: String,
    key_id: String,
    secret: String,
    client: reqwest::Client,
}

impl Coinbase {
    pub fn new(
        settings: &ProviderSettings,
        secret: String,
        config: &CoinbaseConfig,
    ) -> ApiResult<Self> {
        let kind = ApiKind::of(settings);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ApiError::internal)?;
        Ok(Self {
            kind,
            base: match kind {
                ApiKind::Business => config.business_api_base.clone(),
                ApiKind::Commerce => config.commerce_api_base.clone(),
            },
            key_id: settings.api_key_id.clone().unwrap_or_default(),
            secret,
            client,
        })
    }
}

/// What the webhook route hands to [`Provider::verify`]: the scheme that signed the delivery and
/// what it signed besides the body — `hook0\n<X-Hook0-Signature>\n<the values of the headers it
/// names, joined by '.'>` or `commerce\n<X-CC-Webhook-Signature>` (header values cannot hold a
/// newline). `None`: neither header.
pub fn signature_input(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(sig) = text(HOOK0_HEADER) {
        let names = sig
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == "h")
            .map_or("", |(_, v)| v);
        let values: Vec<String> = names
            .split(' ')
            .take(MAX_SIGNED_HEADERS + 1)
            .map(|n| text(n).unwrap_or_default())
            .collect();
        return Some(format!("hook0\n{sig}\n{}", values.join(".")));
    }
    text(COMMERCE_HEADER).map(|sig| format!("commerce\n{sig}"))
}

fn hmac_matches(secrets: &[&str], given: &[u8], parts: &[&[u8]]) -> bool {
    secrets.iter().any(|secret| {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        for p in parts {
            mac.update(p);
        }
        mac.verify_slice(given).is_ok()
    })
}

/// Checks a Hook0 signature (`t`, `h`, `v1`) over `values` (the named headers' values joined by
/// '.') and `body`.
fn verify_hook0(
    sig: &str,
    values: &str,
    body: &[u8],
    secrets: &[&str],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let (mut t, mut h, mut v1) = (None, None, Vec::new());
    for part in sig.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "h" => h = Some(v),
            "v1" => v1.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let (t, h) = (
        t.ok_or(SignatureError::Malformed)?,
        h.ok_or(SignatureError::Malformed)?,
    );
    if h.split(' ').count() > MAX_SIGNED_HEADERS {
        return Err(SignatureError::Malformed);
    }
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    if now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let t = t.to_string();
    let parts: [&[u8]; 7] = [
        t.as_bytes(),
        b".",
        h.as_bytes(),
        b".",
        values.as_bytes(),
        b".",
        body,
    ];
    if v1.iter().any(|given| hmac_matches(secrets, given, &parts)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn unreadable(why: impl std::fmt::Display) -> Refused {
    Refused::Unreadable(why.to_string())
}

/// A short printable ASCII id.
fn id_like(v: &str) -> bool {
    !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic())
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn hints(metadata: Option<&Value>) -> (Option<String>, Option<String>) {
    let get = |k: &str| {
        metadata
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| id_like(s))
            .map(str::to_owned)
    };
    (get("taogate_payment_id"), get("taogate_account_id"))
}

impl Coinbase {
    /// Reads a verified body, from either API.
    pub fn read(body: &[u8]) -> Result<Inbound, Refused> {
        let v: Value = serde_json::from_slice(body).map_err(unreadable)?;
        if v.get("event").is_some_and(Value::is_object) {
            Self::read_commerce(&v)
        } else {
            Self::read_business(&v)
        }
    }

    fn read_business(v: &Value) -> Result<Inbound, Refused> {
        let id = text(v, "/id").filter(|s| id_like(s));
        let kind = text(v, "/eventType").filter(|s| id_like(s));
        let (Some(id), Some(kind)) = (id, kind) else {
            return Err(unreadable(
                "`id` and `eventType` must be short printable ASCII",
            ));
        };
        let currency = text(v, "/currency")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let exp = minor_unit_exponent(&currency);
        let amount = |p: &str| text(v, p).and_then(|s| parse_decimal(s, exp));
        let (payment_hint, account_hint) = hints(v.get("metadata"));
        let mut event_id = format!("{kind}:{id}");
        let effect = match kind {
            "checkout.payment.success" => {
                if text(v, "/status").is_some_and(|s| s != "COMPLETED") {
                    Effect::Ignored
                } else {
                    let asked = amount("/amount").ok_or_else(|| unreadable("`amount`"))?;
                    // What settled, in the checkout's currency, if Coinbase says; never more than asked.
                    let settled = (text(v, "/settlement/currency")
                        .is_some_and(|c| c.eq_ignore_ascii_case(&currency)))
                    .then(|| amount("/settlement/totalAmount"))
                    .flatten();
                    Effect::Paid {
                        reference: id.to_owned(),
                        session: None,
                        payment_hint,
                        account_hint,
                        amount_minor: Some(settled.map_or(asked, |s| s.min(asked))),
                        currency,
                    }
                }
            }
            "checkout.payment.failed" | "checkout.payment.expired" => Effect::Failed {
                session: None,
                reference: Some(id.to_owned()),
                payment_hint,
                expired: kind == "checkout.payment.expired",
            },
            "checkout.refund.success" => {
                let refunds = v.get("refunds").and_then(Value::as_array);
                let total = match amount("/refundedAmount") {
                    Some(t) => t,
                    None => refunds
                        .into_iter()
                        .flatten()
                        .filter(|r| {
                            r.get("status")
                                .and_then(Value::as_str)
                                .is_some_and(|s| matches!(s, "COMPLETED" | "SUCCESS" | "SUCCEEDED"))
                        })
                        .map(|r| {
                            r.get("amount")
                                .and_then(Value::as_str)
                                .and_then(|s| parse_decimal(s, exp))
                        })
                        .try_fold(0i64, |acc, a| acc.checked_add(a?))
                        .ok_or_else(|| unreadable("`refundedAmount`"))?,
                };
                event_id = format!("{event_id}:{total}");
                Effect::Refunded {
                    reference: id.to_owned(),
                    refunded_total_minor: total,
                    currency,
                    refund_ids: refunds
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.get("id").and_then(Value::as_str))
                        .filter(|s| id_like(s))
                        .map(str::to_owned)
                        .collect(),
                }
            }
            _ => Effect::Ignored,
        };
        Ok(Inbound {
            event_id,
            event_type: kind.to_owned(),
            effect,
        })
    }

    fn read_commerce(v: &Value) -> Result<Inbound, Refused> {
        let event_id = text(v, "/event/id").filter(|s| id_like(s));
        let kind = text(v, "/event/type").filter(|s| id_like(s));
        let (Some(event_id), Some(kind)) = (event_id, kind) else {
            return Err(unreadable(
                "`event.id` and `event.type` must be short printable ASCII",
            ));
        };
        let charge = text(v, "/event/data/id").filter(|s| id_like(s));
        let (payment_hint, account_hint) = hints(v.pointer("/event/data/metadata"));
        let effect = match (kind, charge) {
            ("charge:confirmed", Some(charge)) => {
                let currency = text(v, "/event/data/pricing/local/currency")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let amount = text(v, "/event/data/pricing/local/amount")
                    .and_then(|s| parse_decimal(s, minor_unit_exponent(&currency)))
                    .ok_or_else(|| unreadable("`pricing.local.amount`"))?;
                Effect::Paid {
                    reference: charge.to_owned(),
                    session: None,
                    payment_hint,
                    account_hint,
                    amount_minor: Some(amount),
                    currency,
                }
            }
            ("charge:failed", Some(charge)) => Effect::Failed {
                session: None,
                reference: Some(charge.to_owned()),
                payment_hint,
                expired: false,
            },
            _ => Effect::Ignored,
        };
        Ok(Inbound {
            event_id: event_id.to_owned(),
            event_type: kind.to_owned(),
            effect,
        })
    }

    fn failed(why: String) -> ApiError {
        tracing::warn!(error = %why, "a Coinbase call failed");
        ApiError::PaymentProvider { message: why }
    }

    async fn call(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
        body: &Value,
    ) -> ApiResult<Value> {
        let res = req
            .json(body)
            .send()
            .await
            .map_err(|_| Self::failed("Coinbase could not be reached; retry shortly".into()))?;
        if !res.status().is_success() {
            return Err(Self::failed(format!(
                "Coinbase refused {path} ({})",
                res.status().as_u16()
            )));
        }
        res.json()
            .await
            .map_err(|_| Self::failed("Coinbase's answer could not be read".into()))
    }
}

impl Provider for Coinbase {
    const NAME: &'static str = NAME;

    /// `signature` is what [`signature_input`] made of the request's headers.
    fn verify(
        signature: &str,
        body: &[u8],
        secrets: &[&str],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Inbound, Refused> {
        let mut lines = signature.splitn(3, '\n');
        match (lines.next(), lines.next(), lines.next()) {
            (Some("hook0"), Some(sig), Some(values)) => {
                verify_hook0(sig, values, body, secrets, now, tolerance_secs)?
            }
            (Some("commerce"), Some(sig), None) => {
                let given = hex::decode(sig.trim()).map_err(|_| SignatureError::Malformed)?;
                if !hmac_matches(secrets, &given, &[body]) {
                    return Err(SignatureError::Mismatch.into());
                }
            }
            _ => return Err(SignatureError::Malformed.into()),
        }
        Self::read(body)
    }

    async fn start(&self, payment: &Payment, account: &Account, payer: &Payer) -> ApiResult<Start> {
        let amount = decimal(payment.requested_minor, &payment.currency);
        let metadata = serde_json::json!({
            "taogate_payment_id": payment.id,
            "taogate_account_id": account.id,
            "taogate_tenant_id": account.tenant_id,
        });
        let description = format!("Top-up {}", payment.id);
        match self.kind {
            ApiKind::Business => {
                let path = "api/v1/checkouts";
                let url = format!("{}{path}", self.base);
                let parsed = url::Url::parse(&url).map_err(ApiError::internal)?;
                let host = &parsed[url::Position::BeforeHost..url::Position::AfterPort];
                let key = CdpKey::parse(&self.secret).map_err(ApiError::internal_msg)?;
                let token = key
                    .bearer(
                        &self.key_id,
                        "POST",
                        host,
                        parsed.path(),
                        chrono::Utc::now().timestamp(),
                    )
                    .map_err(ApiError::internal_msg)?;
                let body = serde_json::json!({
                    "amount": amount,
                    "currency": payment.currency.to_ascii_uppercase(),
                    "network": "base",
                    "description": description,
                    "successRedirectUrl": payer.success_url,
                    "failRedirectUrl": payer.cancel_url,
                    "metadata": metadata,
                });
                let req = self
                    .client
                    .post(&url)
                    .bearer_auth(token)
                    .header("X-Idempotency-Key", format!("topup:{}", payment.id));
                let answer = self.call(path, req, &body).await?;
                let (Some(id), Some(link)) = (text(&answer, "/id"), text(&answer, "/url")) else {
                    return Err(Self::failed("Coinbase's checkout has no id or url".into()));
                };
                Ok(Start {
                    session: None,
                    reference: Some(id.to_owned()),
                    url: link.to_owned(),
                })
            }
            ApiKind::Commerce => {
                let path = "charges";
                let body = serde_json::json!({
                    "name": "Top-up",
                    "description": description,
                    "pricing_type": "fixed_price",
                    "local_price": {"amount": amount, "currency": payment.currency.to_ascii_uppercase()},
                    "metadata": metadata,
                    "redirect_url": payer.success_url,
                    "cancel_url": payer.cancel_url,
                });
                let req = self
                    .client
                    .post(format!("{}{path}", self.base))
                    .header("X-CC-Api-Key", &self.secret)
                    .header("X-CC-Version", "2018-03-22");
                let answer = self.call(path, req, &body).await?;
                let (Some(id), Some(link)) =
                    (text(&answer, "/data/id"), text(&answer, "/data/hosted_url"))
                else {
                    return Err(Self::failed(
                        "Coinbase's charge has no id or hosted_url".into(),
                    ));
                };
                Ok(Start {
                    session: None,
                    reference: Some(id.to_owned()),
                    url: link.to_owned(),
                })
            }
        }
    }
}

/// `PUT /api/v1/billing/coinbase`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoinbaseSettingsInput {
    /// `business` (the default: Coinbase Business Checkouts, USDC on Base) or `commerce`
    /// (legacy Coinbase Commerce charges).
    pub api: Option<ApiKind>,
    /// Business: the CDP API key's id (its name, e.g. a UUID or `organizations/…/apiKeys/…`).
    #[schema(min_length = 1, max_length = 255)]
    pub api_key_id: Option<String>,
    /// Business: the CDP API key's secret (Ed25519 in base64, or an EC P-256 PEM). Commerce: the
    /// API key.
    #[schema(min_length = 8, max_length = 4096)]
    pub api_key_secret: String,
    /// The webhook subscription's secret(s) (two while one is rotated).
    #[schema(min_items = 1, max_items = 5)]
    pub webhook_secrets: Vec<String>,
    /// Business: `usdc` (the default). Commerce: the charges' local currency (ISO 4217).
    #[schema(min_length = 3, max_length = 4)]
    pub currency: Option<String>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub min_topup_nano: Option<Nano>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub max_topup_nano: Option<Nano>,
}

#[derive(Serialize, ToSchema)]
pub struct CoinbaseSettingsView {
    pub object: &'static str,
    pub api: ApiKind,
    pub api_key_id: Option<String>,
    /// What may be shown of the secret: the key's kind (business) or its last characters.
    pub api_key_secret: String,
    pub webhook_secret_count: i32,
    pub webhook_path: String,
    pub currency: String,
    #[schema(value_type = i64)]
    pub min_topup_nano: Nano,
    #[schema(value_type = i64)]
    pub max_topup_nano: Nano,
}

impl CoinbaseSettingsInput {
    pub fn seal(self, tenant: &TenantId, sealer: &Sealer) -> ApiResult<ProviderSettings> {
        let api = self.api.unwrap_or(ApiKind::Business);
        if self.api_key_secret.len() > 4096 {
            return Err(ApiError::invalid_param(
                "api_key_secret",
                "api_key_secret must be at most 4096 characters",
            ));
        }
        let (key_id, hint, currency) = match api {
            ApiKind::Business => {
                let id = self.api_key_id.ok_or_else(|| {
                    ApiError::invalid_param("api_key_id", "api_key_id is required for `business`")
                })?;
                printable("api_key_id", &id, 1)?;
                let key = CdpKey::parse(&self.api_key_secret)
                    .map_err(|why| ApiError::invalid_param("api_key_secret", why))?;
                let currency = self
                    .currency
                    .unwrap_or_else(|| "usdc".into())
                    .to_ascii_lowercase();
                if currency != "usdc" {
                    return Err(ApiError::invalid_param(
                        "currency",
                        "Coinbase Business checkouts are paid in `usdc`",
                    ));
                }
                (Some(id), format!("{} key", key.kind()), currency)
            }
            ApiKind::Commerce => {
                if self.api_key_id.is_some() {
                    return Err(ApiError::invalid_param(
                        "api_key_id",
                        "`commerce` takes only api_key_secret (its API key)",
                    ));
                }
                printable("api_key_secret", &self.api_key_secret, 8)?;
                let currency = self
                    .currency
                    .unwrap_or_else(|| "usd".into())
                    .to_ascii_lowercase();
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
                    return Err(ApiError::invalid_param(
                        "currency",
                        "currency must be a three-letter ISO 4217 code",
                    ));
                }
                let tail = &self.api_key_secret[self.api_key_secret.len() - 4..];
                (None, format!("…{tail}"), currency)
            }
        };
        let secrets = webhook_secrets(&self.webhook_secrets, 16)?;
        let per_unit = super::settings::DEFAULT_NANO_PER_UNIT;
        let (min, max) = topup_bounds(per_unit, self.min_topup_nano, self.max_topup_nano)?;
        Ok(ProviderSettings {
            secret_key_sealed: sealer.seal(
                self.api_key_secret.as_bytes(),
                &context(NAME, "secret_key", tenant),
            ),
            secret_key_hint: hint,
            webhook_secrets_sealed: sealer
                .seal(&secrets, &context(NAME, "webhook_secrets", tenant)),
            webhook_secret_count: self.webhook_secrets.len() as i32,
            min_topup_nano: min,
            max_topup_nano: max,
            api_key_id: key_id,
            api_kind: Some(api.as_str().to_owned()),
            ..ProviderSettings::new(tenant, NAME, currency, per_unit)
        })
    }
}

/// How Coinbase settings are shown.
pub fn view(settings: &ProviderSettings, tenant_slug: &str) -> CoinbaseSettingsView {
    CoinbaseSettingsView {
        object: "coinbase_settings",
        api: ApiKind::of(settings),
        api_key_id: settings.api_key_id.clone(),
        api_key_secret: settings.secret_key_hint.clone(),
        webhook_secret_count: settings.webhook_secret_count,
        webhook_path: format!("/webhooks/coinbase/{tenant_slug}"),
        currency: settings.currency.clone(),
        min_topup_nano: settings.min_topup_nano,
        max_topup_nano: settings.max_topup_nano,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook0(secret: &str, t: i64, names: &str, values: &str, body: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{names}.{values}.{body}").as_bytes());
        format!(
            "t={t},h={names},v1={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn decimals_read_exactly_and_cut_extra_places() {
        assert_eq!(parse_decimal("100.00", 2), Some(10_000));
        assert_eq!(parse_decimal("0.5", 2), Some(50));
        assert_eq!(parse_decimal("7", 2), Some(700));
        assert_eq!(parse_decimal("1.239", 2), Some(123));
        assert_eq!(parse_decimal("-1.00", 2), None);
        assert_eq!(parse_decimal("1e3", 2), None);
        assert_eq!(parse_decimal("", 2), None);
        assert_eq!(parse_decimal(".5", 2), None);
        assert_eq!(parse_decimal("9999999999999999", 2), None);
    }

    #[test]
    fn a_hook0_signature_covers_time_headers_and_body() {
        let body = r#"{"id":"c1","eventType":"checkout.payment.success","amount":"5.00","currency":"USDC","status":"COMPLETED"}"#;
        let names = "content-type x-hook0-id";
        let values = "application/json.msg-1";
        let sig = hook0("whsec-coinbase-0001", 1000, names, values, body);
        let input = |values: &str| format!("hook0\n{sig}\n{values}");
        let read = Coinbase::verify(
            &input(values),
            body.as_bytes(),
            &["x", "whsec-coinbase-0001"],
            1100,
            300,
        )
        .unwrap();
        assert_eq!(read.event_id, "checkout.payment.success:c1");
        assert!(matches!(
            read.effect,
            Effect::Paid {
                amount_minor: Some(500),
                ..
            }
        ));
        let refused = |input: &str, body: &str, now: i64| {
            Coinbase::verify(input, body.as_bytes(), &["whsec-coinbase-0001"], now, 300).is_err()
        };
        assert!(
            refused(&input("application/json.msg-2"), body, 1100),
            "a header changed"
        );
        assert!(
            refused(&input(values), &body.replace("5.00", "50.00"), 1100),
            "the body changed"
        );
        assert!(refused(&input(values), body, 1301), "too old");
        assert!(refused("hook0\nt=1000,v1=00\n", body, 1000), "no h");
        assert!(refused("other\nx", body, 1000));
        // Legacy Commerce: hex HMAC of the raw body.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"whsec-coinbase-0001").unwrap();
        mac.update(body.as_bytes());
        let cc = format!("commerce\n{}", hex::encode(mac.finalize().into_bytes()));
        assert!(Coinbase::verify(&cc, body.as_bytes(), &["whsec-coinbase-0001"], 0, 300).is_ok());
        assert!(refused(&cc, &format!("{body} "), 0));
    }
}
