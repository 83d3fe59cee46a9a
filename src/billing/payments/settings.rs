//! A tenant's Stripe settings: what `PUT /api/v1/billing/stripe` takes (validated, bounded), how
//! it is stored (secrets sealed, bound to the tenant) and shown (masked: the key's prefix and last
//! four characters; of the webhook secrets, only how many there are).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::billing::amount::{self, Sign};
use crate::domain::{DisputePolicy, Nano, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::models::payment::ProviderSettings;

use super::seal::{SealError, Sealer};

/// Most webhook secrets kept at once (rotation needs two).
pub const MAX_WEBHOOK_SECRETS: usize = 5;
/// Default rate: one currency unit is 10^9 nano-units.
pub const DEFAULT_NANO_PER_UNIT: i64 = 1_000_000_000;

/// `PUT /api/v1/billing/stripe`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeSettingsInput {
    /// The tenant's Stripe secret key (`sk_live_…`, `sk_test_…`) or restricted key (`rk_…`).
    #[schema(min_length = 8, max_length = 255, pattern = "^(sk|rk)_[A-Za-z0-9_]+$")]
    pub secret_key: String,
    /// Webhook signing secrets (`whsec_…`) of the endpoint; two while one is rotated.
    #[schema(min_items = 1, max_items = 5)]
    pub webhook_secrets: Vec<String>,
    /// ISO 4217 code the tenant charges in, e.g. `usd`.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    /// Smallest top-up, nano-units (default: one currency unit).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub min_topup_nano: Option<Nano>,
    /// Largest top-up, nano-units (default: 10,000 currency units).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub max_topup_nano: Option<Nano>,
    /// Nano-units credited per currency unit (default 10^9).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub nano_per_unit: Option<i64>,
    /// What a dispute does besides debiting the account (default `debit`).
    pub dispute_policy: Option<DisputePolicy>,
    /// Push postpaid accounts' usage to the Stripe Billing Meter with this event name (the
    /// meter's `event_name`; its customer mapping `stripe_customer_id`, value `value`, sum).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,100}$")]
    pub meter_event_name: Option<String>,
}

/// The tenant's Stripe settings as shown: never a secret.
#[derive(Serialize, ToSchema)]
pub struct StripeSettingsView {
    pub object: &'static str,
    /// The key's prefix and last four characters, e.g. `sk_test_…4242`.
    pub secret_key: String,
    pub webhook_secret_count: i32,
    /// Where the tenant points its Stripe webhook endpoint (path on this server).
    pub webhook_path: String,
    pub currency: String,
    pub nano_per_unit: i64,
    #[schema(value_type = i64)]
    pub min_topup_nano: Nano,
    #[schema(value_type = i64)]
    pub max_topup_nano: Nano,
    pub dispute_policy: DisputePolicy,
    pub meter_event_name: Option<String>,
}

/// Sealing contexts: a value sealed for one tenant and field opens for no other.
pub(super) fn context(provider: &str, field: &str, tenant: &TenantId) -> String {
    format!("{provider}.{field}:{tenant}")
}

fn key_like(field: &str, value: &str, prefixes: &[&str]) -> ApiResult<()> {
    let ok = (8..=255).contains(&value.len())
        && prefixes.iter().any(|p| value.starts_with(p))
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(
            field,
            format!("{field} must look like {}…", prefixes.join("… or ")),
        ))
    }
}

fn hint(key: &str) -> String {
    let prefix = ["sk_live_", "sk_test_", "rk_live_", "rk_test_", "sk_", "rk_"]
        .into_iter()
        .find(|p| key.starts_with(p))
        .unwrap_or("");
    format!("{prefix}…{}", &key[key.len().saturating_sub(4)..])
}

/// A tenant's top-up bounds: given, or one currency unit to 10,000 of them at `nano_per_unit`.
pub fn topup_bounds(
    nano_per_unit: i64,
    min: Option<Nano>,
    max: Option<Nano>,
) -> ApiResult<(Nano, Nano)> {
    let min = min.unwrap_or(Nano(nano_per_unit));
    let max = max.unwrap_or(Nano(
        nano_per_unit
            .saturating_mul(10_000)
            .min(amount::MAX_AMOUNT_NANO),
    ));
    let min = amount::input("min_topup_nano", min, Sign::Positive)?;
    let max = amount::input("max_topup_nano", max, Sign::Positive)?;
    if max < min {
        return Err(ApiError::invalid_param(
            "max_topup_nano",
            "max_topup_nano must be at least min_topup_nano",
        ));
    }
    Ok((min, max))
}

/// Webhook secrets as a tenant gives them: 1 to [`MAX_WEBHOOK_SECRETS`], each `min`-255 printable
/// ASCII characters; sealed as one JSON list.
pub fn webhook_secrets(list: &[String], min: usize) -> ApiResult<Vec<u8>> {
    if list.is_empty() || list.len() > MAX_WEBHOOK_SECRETS {
        return Err(ApiError::invalid_param(
            "webhook_secrets",
            format!("webhook_secrets must hold 1 to {MAX_WEBHOOK_SECRETS} secrets"),
        ));
    }
    for s in list {
        printable("webhook_secrets", s, min)?;
    }
    serde_json::to_vec(list).map_err(ApiError::internal_msg)
}

/// `value` is `min`-255 printable ASCII characters.
pub fn printable(field: &str, value: &str, min: usize) -> ApiResult<()> {
    let ok = (min..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(()).ok_or_else(|| {
        ApiError::invalid_param(
            field,
            format!("{field} must be {min}-255 printable ASCII characters"),
        )
    })
}

impl StripeSettingsInput {
    /// Checks every field and seals the secrets for `tenant`.
    pub fn seal(self, tenant: &TenantId, sealer: &Sealer) -> ApiResult<ProviderSettings> {
        key_like("secret_key", &self.secret_key, &["sk_", "rk_"])?;
        if self.webhook_secrets.is_empty() || self.webhook_secrets.len() > MAX_WEBHOOK_SECRETS {
            return Err(ApiError::invalid_param(
                "webhook_secrets",
                format!("webhook_secrets must hold 1 to {MAX_WEBHOOK_SECRETS} secrets"),
            ));
        }
        for secret in &self.webhook_secrets {
            key_like("webhook_secrets", secret, &["whsec_"])?;
        }
        let currency = self.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ApiError::invalid_param(
                "currency",
                "currency must be a three-letter ISO 4217 code",
            ));
        }
        let nano_per_unit = self.nano_per_unit.unwrap_or(DEFAULT_NANO_PER_UNIT);
        if !(1..=1_000_000_000_000).contains(&nano_per_unit) {
            return Err(ApiError::invalid_param(
                "nano_per_unit",
                "nano_per_unit must be between 1 and 10^12",
            ));
        }
        let (min, max) = topup_bounds(nano_per_unit, self.min_topup_nano, self.max_topup_nano)?;
        if let Some(name) = &self.meter_event_name {
            let ok = (1..=100).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(ApiError::invalid_param(
                    "meter_event_name",
                    "meter_event_name must be 1-100 letters, digits, `_`, `.` or `-`",
                ));
            }
        }
        let secrets = serde_json::to_vec(&self.webhook_secrets).map_err(ApiError::internal_msg)?;
        Ok(ProviderSettings {
            secret_key_sealed: sealer.seal(
                self.secret_key.as_bytes(),
                &context(super::stripe::NAME, "secret_key", tenant),
            ),
            secret_key_hint: hint(&self.secret_key),
            webhook_secrets_sealed: sealer.seal(
                &secrets,
                &context(super::stripe::NAME, "webhook_secrets", tenant),
            ),
            webhook_secret_count: self.webhook_secrets.len() as i32,
            min_topup_nano: min,
            max_topup_nano: max,
            dispute_policy: self.dispute_policy.unwrap_or(DisputePolicy::Debit),
            meter_event_name: self.meter_event_name,
            ..ProviderSettings::new(tenant, super::stripe::NAME, currency, nano_per_unit)
        })
    }
}

/// The secrets of stored settings, unsealed for one use.
pub struct Unsealed {
    pub secret_key: String,
    pub webhook_secrets: Vec<String>,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unsealed(..)")
    }
}

/// Opens the settings' secrets.
pub fn unseal(settings: &ProviderSettings, sealer: &Sealer) -> Result<Unsealed, SealError> {
    let tenant = &settings.tenant_id;
    let key = sealer.open(
        &settings.secret_key_sealed,
        &context(&settings.provider, "secret_key", tenant),
    )?;
    let secrets = sealer.open(
        &settings.webhook_secrets_sealed,
        &context(&settings.provider, "webhook_secrets", tenant),
    )?;
    Ok(Unsealed {
        secret_key: String::from_utf8(key).map_err(|_| SealError::Open)?,
        webhook_secrets: serde_json::from_slice(&secrets).map_err(|_| SealError::Open)?,
    })
}

/// How stored settings are shown.
pub fn view(settings: &ProviderSettings, tenant_slug: &str) -> StripeSettingsView {
    StripeSettingsView {
        object: "stripe_settings",
        secret_key: settings.secret_key_hint.clone(),
        webhook_secret_count: settings.webhook_secret_count,
        webhook_path: format!("/webhooks/stripe/{tenant_slug}"),
        currency: settings.currency.clone(),
        nano_per_unit: settings.nano_per_unit,
        min_topup_nano: settings.min_topup_nano,
        max_topup_nano: settings.max_topup_nano,
        dispute_policy: settings.dispute_policy,
        meter_event_name: settings.meter_event_name.clone(),
    }
}

/// `PUT /api/v1/billing/custom`: a tenant's own payment system.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomProviderInput {
    /// Its name (1-40 letters, digits, `-`, `_`): the webhook is
    /// `/webhooks/custom/{tenant_slug}/{provider}`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,40}$")]
    pub provider: String,
    /// Signing secrets (`whsec_…`, at least 24 characters after it); two while one is rotated.
    #[schema(min_items = 1, max_items = 5)]
    pub webhook_secrets: Vec<String>,
    /// The currency its amounts are in (ISO 4217): the tenant's ledger currency.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
}

/// A custom provider as shown.
#[derive(Serialize, ToSchema)]
pub struct CustomProviderView {
    pub object: &'static str,
    pub provider: String,
    pub webhook_secret_count: i32,
    pub webhook_path: String,
    pub currency: String,
}

impl CustomProviderInput {
    /// Checks it and seals its secrets for `tenant`.
    pub fn seal(self, tenant: &TenantId, sealer: &Sealer) -> ApiResult<ProviderSettings> {
        let provider = super::custom::name("provider", tenant, &self.provider)?;
        if self.webhook_secrets.is_empty() || self.webhook_secrets.len() > MAX_WEBHOOK_SECRETS {
            return Err(ApiError::invalid_param(
                "webhook_secrets",
                format!("webhook_secrets must hold 1 to {MAX_WEBHOOK_SECRETS} secrets"),
            ));
        }
        for secret in &self.webhook_secrets {
            key_like("webhook_secrets", secret, &["whsec_"])?;
            if secret.len() < 30 {
                return Err(ApiError::invalid_param(
                    "webhook_secrets",
                    "a webhook secret needs at least 24 characters after whsec_",
                ));
            }
        }
        let currency = self.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ApiError::invalid_param(
                "currency",
                "currency must be a three-letter ISO 4217 code",
            ));
        }
        let secrets = serde_json::to_vec(&self.webhook_secrets).map_err(ApiError::internal_msg)?;
        Ok(ProviderSettings {
            secret_key_sealed: sealer.seal(b"", &context(&provider, "secret_key", tenant)),
            webhook_secrets_sealed: sealer
                .seal(&secrets, &context(&provider, "webhook_secrets", tenant)),
            webhook_secret_count: self.webhook_secrets.len() as i32,
            ..ProviderSettings::new(tenant, &provider, currency, 1)
        })
    }
}

/// How a custom provider is shown.
pub fn custom_view(settings: &ProviderSettings, tenant_slug: &str) -> CustomProviderView {
    // `custom:<tenant>:<name>`
    let name = settings
        .provider
        .rsplit_once(':')
        .map_or(settings.provider.as_str(), |(_, name)| name)
        .to_owned();
    CustomProviderView {
        object: "custom_provider",
        webhook_path: format!("/webhooks/custom/{tenant_slug}/{name}"),
        provider: name,
        webhook_secret_count: settings.webhook_secret_count,
        currency: settings.currency.clone(),
    }
}
