//! TAO deposits, straight from the chain. Each account gets its own deposit address, derived from
//! the operator's seed (`payments.tao.mnemonic` or `mnemonic_file`; never stored, never logged)
//! by hard derivation `<seed>//taogate//<tenant id>//<account id>` (sr25519, ss58 prefix 42), so
//! the operator can sweep with any substrate wallet given the same path. [`watcher`] reads every
//! finalized block in order from a stored cursor and credits each increase of a deposit
//! address's free balance, once per (genesis hash, block hash, address).
//!
//! Pricing, per tenant (`PUT /api/v1/billing/tao`): a tenant whose ledger currency is TAO is
//! credited 1 nano-unit per rao, exactly (`rate_source` `tao`); any other currency at the tenant's
//! rate in nano-units per TAO (`rate_source` `tenant`), rounded down. Each deposit records
//! `amount_rao`, `rate`, `rate_source` and `credited_nano`.

pub mod chain;
pub mod watcher;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{AccountId, DisputePolicy, Nano, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::models::payment::ProviderSettings;
use crate::models::tao::TaoAddress;
use crate::substrate::{derive_hard, mini_secret_from_phrase, ss58_encode};

/// Its name in storage and ledger keys.
pub const NAME: &str = "tao";
/// Rao in one TAO.
pub const RAO_PER_TAO: i64 = 1_000_000_000;

/// `[payments.tao]` (documented in `deploy/taogate.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaoConfig {
    pub mnemonic: SecretString,
    pub mnemonic_file: String,
    pub rpc_url: String,
    pub min_deposit_rao: i64,
    pub poll_ms: u64,
    pub max_blocks_per_pass: u64,
    pub rpc_timeout_ms: u64,
}

impl TaoConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(Err(e)) = self.seed() {
            anyhow::bail!("config key `payments.tao.mnemonic`: {e}");
        }
        if !self.rpc_url.is_empty()
            && !url::Url::parse(&self.rpc_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            anyhow::bail!(
                "config key `payments.tao.rpc_url`: must be an http(s) URL of a subtensor node's JSON-RPC"
            );
        }
        if !(0..=RAO_PER_TAO * 1_000).contains(&self.min_deposit_rao) {
            anyhow::bail!("config key `payments.tao.min_deposit_rao`: must be between 0 and 10^12");
        }
        if !(50..=600_000).contains(&self.poll_ms)
            || !(1..=10_000).contains(&self.max_blocks_per_pass)
            || !(100..=120_000).contains(&self.rpc_timeout_ms)
        {
            anyhow::bail!(
                "config keys `payments.tao.poll_ms` (50-600000), `max_blocks_per_pass` (1-10000), `rpc_timeout_ms` (100-120000)"
            );
        }
        Ok(())
    }

    /// The seed's mini secret, if one is configured.
    pub fn seed(&self) -> Option<Result<[u8; 32], String>> {
        let phrase = if !self.mnemonic.expose_secret().is_empty() {
            self.mnemonic.expose_secret().to_owned()
        } else if !self.mnemonic_file.is_empty() {
            match std::fs::read_to_string(&self.mnemonic_file) {
                Ok(text) => text.trim().to_owned(),
                Err(e) => return Some(Err(format!("mnemonic_file cannot be read: {e}"))),
            }
        } else {
            return None;
        };
        Some(mini_secret_from_phrase(&phrase))
    }

    /// Whether deposits can be taken: a seed and a node.
    pub fn enabled(&self) -> bool {
        matches!(self.seed(), Some(Ok(_))) && !self.rpc_url.is_empty()
    }
}

/// An account's deposit address below `seed`.
pub fn deposit_address(
    seed: &[u8; 32],
    tenant: &TenantId,
    account: &AccountId,
) -> ApiResult<TaoAddress> {
    let junctions = ["taogate", tenant.as_str(), account.as_str()];
    let keypair = derive_hard(seed, &junctions).map_err(ApiError::internal_msg)?;
    let public = keypair.public.to_bytes();
    Ok(TaoAddress {
        account_id: account.clone(),
        tenant_id: tenant.clone(),
        address: ss58_encode(&public),
        public_key: hex::encode(public),
        derivation_path: format!("//{}", junctions.join("//")),
        created_at: crate::db::now(),
    })
}

/// `PUT /api/v1/billing/tao`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaoSettingsInput {
    /// The tenant's ledger currency: `tao` (1 rao = 1 nano-unit, exact) or an ISO 4217 code.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    /// Nano-units credited per TAO when the currency is not `tao`.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub nano_per_tao: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TaoSettingsView {
    pub object: &'static str,
    pub currency: String,
    pub nano_per_tao: i64,
    /// `tao` (exact) or `tenant` (the tenant's rate).
    pub rate_source: &'static str,
    pub min_deposit_rao: i64,
    /// Whether this server takes deposits (a seed and a node are configured).
    pub enabled: bool,
}

/// Where a tenant's rate comes from.
pub fn rate_source(settings: &ProviderSettings) -> &'static str {
    if settings.currency == NAME {
        "tao"
    } else {
        "tenant"
    }
}

impl TaoSettingsInput {
    pub fn settings(self, tenant: &TenantId) -> ApiResult<ProviderSettings> {
        let currency = self.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ApiError::invalid_param(
                "currency",
                "currency must be `tao` or a three-letter ISO 4217 code",
            ));
        }
        let rate = match (currency.as_str(), self.nano_per_tao) {
            (NAME, None | Some(RAO_PER_TAO)) => RAO_PER_TAO,
            (NAME, Some(_)) => {
                return Err(ApiError::invalid_param(
                    "nano_per_tao",
                    "a TAO ledger is credited 1 nano-unit per rao; leave nano_per_tao out",
                ));
            }
            (_, Some(rate)) if (1..=1_000_000_000_000_000).contains(&rate) => rate,
            (_, _) => {
                return Err(ApiError::invalid_param(
                    "nano_per_tao",
                    "nano_per_tao (1 to 10^15) is required for a currency other than tao",
                ));
            }
        };
        let now = crate::db::now();
        Ok(ProviderSettings {
            tenant_id: tenant.clone(),
            provider: NAME.to_owned(),
            secret_key_sealed: String::new(),
            secret_key_hint: String::new(),
            webhook_secrets_sealed: String::new(),
            webhook_secret_count: 0,
            currency,
            nano_per_unit: rate,
            min_topup_nano: Nano(1),
            max_topup_nano: Nano(crate::billing::amount::MAX_AMOUNT_NANO),
            dispute_policy: DisputePolicy::Debit,
            meter_event_name: None,
            server_url: None,
            store_id: None,
            created_at: now,
            updated_at: now,
            api_key_id: None,
            api_kind: None,
            rate_source: None,
        })
    }
}

/// How TAO settings are shown.
pub fn view(settings: &ProviderSettings, config: &TaoConfig) -> TaoSettingsView {
    TaoSettingsView {
        object: "tao_settings",
        currency: settings.currency.clone(),
        nano_per_tao: settings.nano_per_unit,
        rate_source: rate_source(settings),
        min_deposit_rao: config.min_deposit_rao,
        enabled: config.enabled(),
    }
}

/// Nano-units for `rao` at the tenant's rate (rounded down); `None` out of range.
pub fn rao_to_nano(rao: i64, nano_per_tao: i64) -> Option<Nano> {
    let nano = i128::from(rao).checked_mul(i128::from(nano_per_tao))? / i128::from(RAO_PER_TAO);
    i64::try_from(nano)
        .ok()
        .filter(|n| (0..=crate::billing::amount::MAX_AMOUNT_NANO).contains(n))
        .map(Nano)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rao_converts_exactly_for_tao_and_down_at_a_rate() {
        assert_eq!(rao_to_nano(1_234, RAO_PER_TAO), Some(Nano(1_234)));
        // 1 TAO = 400 units: 0.5 TAO = 200 units.
        assert_eq!(
            rao_to_nano(500_000_000, 400 * RAO_PER_TAO),
            Some(Nano(200 * RAO_PER_TAO))
        );
        assert_eq!(rao_to_nano(1, 3), Some(Nano(0)));
        assert_eq!(rao_to_nano(i64::MAX, RAO_PER_TAO * 1_000), None);
    }
}
