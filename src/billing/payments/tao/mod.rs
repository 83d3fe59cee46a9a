//! TAO deposits, straight from the chain. Each account gets its own deposit address, derived from
//! the operator's seed (`payments.tao.mnemonic` or `mnemonic_file`; never stored, never logged)
//! by hard derivation `<seed>//taogate//<tenant id>//<account id>` (sr25519, ss58 prefix 42), so
//! the operator can sweep with any substrate wallet given the same path. [`watcher`] reads every
//! finalized block in order from a stored cursor and credits each increase of a deposit
//! address's free balance, once per (genesis hash, block hash, address).
//!
//! Pricing, per tenant (`PUT /api/v1/billing/tao`): a tenant whose ledger currency is TAO is
//! credited 1 nano-unit per rao, exactly (`rate_source` `tao`); any other currency at the tenant's
//! rate in nano-units per TAO (`rate_source` `tenant`), rounded down, or at the operator's price
//! endpoint's rate when the deposit is credited (`rate_source` `feed`, [`price`]). Each deposit
//! records `amount_rao`, `rate`, `rate_source` and `credited_nano`.

pub mod chain;
pub mod price;
pub mod watcher;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{AccountId, Nano, TenantId};
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
    /// The operator's price endpoint (see [`price`]); empty: none.
    pub price_url: String,
    pub price_pointer: String,
    /// The currency of the endpoint's price (tenants on the feed keep their ledger in it).
    pub price_currency: String,
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
        if !self.price_url.is_empty() {
            let url_ok = url::Url::parse(&self.price_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            let currency_ok = self.price_currency.len() == 3
                && self.price_currency.bytes().all(|b| b.is_ascii_lowercase())
                && self.price_currency != NAME;
            if !url_ok || !self.price_pointer.starts_with('/') || !currency_ok {
                anyhow::bail!(
                    "config keys `payments.tao.price_url` (an http(s) URL), `price_pointer` (a JSON pointer, `/…`) and `price_currency` (a lowercase ISO 4217 code)"
                );
            }
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
    /// Nano-units credited per TAO, for `rate_source` `tenant`.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub nano_per_tao: Option<i64>,
    /// `tao` (a TAO ledger), `tenant` (a fixed `nano_per_tao`) or `feed` (the operator's price
    /// endpoint, read when each deposit is credited; the currency must be the feed's). Default:
    /// `tao` for a TAO ledger, else `tenant`.
    pub rate_source: Option<RateSource>,
}

/// Where a tenant's TAO rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    Tao,
    Tenant,
    Feed,
}

impl RateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tao => "tao",
            Self::Tenant => "tenant",
            Self::Feed => "feed",
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaoSettingsView {
    pub object: &'static str,
    pub currency: String,
    /// Nano-units per TAO; `null` on the feed (read at each deposit).
    pub nano_per_tao: Option<i64>,
    pub rate_source: RateSource,
    pub min_deposit_rao: i64,
    /// Whether this server takes deposits (a seed and a node are configured).
    pub enabled: bool,
}

/// Where a tenant's rate comes from.
pub fn rate_source(settings: &ProviderSettings) -> RateSource {
    if settings.currency == NAME {
        RateSource::Tao
    } else if settings.rate_source.as_deref() == Some(FEED) {
        RateSource::Feed
    } else {
        RateSource::Tenant
    }
}

/// `rate_source` as stored for a tenant on the operator's feed.
pub const FEED: &str = "feed";

impl TaoSettingsInput {
    pub fn settings(self, tenant: &TenantId, config: &TaoConfig) -> ApiResult<ProviderSettings> {
        let currency = self.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ApiError::invalid_param(
                "currency",
                "currency must be `tao` or a three-letter ISO 4217 code",
            ));
        }
        let source = self.rate_source.unwrap_or(if currency == NAME {
            RateSource::Tao
        } else {
            RateSource::Tenant
        });
        // A feed tenant keeps nano_per_unit at a placeholder (the column is NOT NULL): the rate
        // is read at each deposit and stored on it.
        let rate = match (source, currency.as_str(), self.nano_per_tao) {
            (RateSource::Tao, NAME, None | Some(RAO_PER_TAO)) => RAO_PER_TAO,
            (RateSource::Tao, _, _) | (_, NAME, _) => {
                return Err(ApiError::invalid_param(
                    "rate_source",
                    "a TAO ledger is credited 1 nano-unit per rao: currency `tao`, rate_source `tao`, no nano_per_tao",
                ));
            }
            (RateSource::Tenant, _, Some(rate))
                if (1..=price::MAX_NANO_PER_TAO).contains(&rate) =>
            {
                rate
            }
            (RateSource::Tenant, _, _) => {
                return Err(ApiError::invalid_param(
                    "nano_per_tao",
                    "nano_per_tao (1 to 10^15) is required for a currency other than tao",
                ));
            }
            (RateSource::Feed, _, Some(_)) => {
                return Err(ApiError::invalid_param(
                    "nano_per_tao",
                    "a tenant on the price feed gives no nano_per_tao",
                ));
            }
            (RateSource::Feed, c, None) => {
                if config.price_url.is_empty() {
                    return Err(ApiError::conflict(
                        "price_feed_missing",
                        "this server has no TAO price endpoint (payments.tao.price_url)",
                    ));
                }
                if c != config.price_currency {
                    return Err(ApiError::invalid_param(
                        "currency",
                        format!("the price feed is in `{}`", config.price_currency),
                    ));
                }
                RAO_PER_TAO
            }
        };
        Ok(ProviderSettings {
            rate_source: (source == RateSource::Feed).then(|| FEED.to_owned()),
            ..ProviderSettings::new(tenant, NAME, currency, rate)
        })
    }
}

/// How TAO settings are shown.
pub fn view(settings: &ProviderSettings, config: &TaoConfig) -> TaoSettingsView {
    TaoSettingsView {
        object: "tao_settings",
        currency: settings.currency.clone(),
        nano_per_tao: (rate_source(settings) != RateSource::Feed).then_some(settings.nano_per_unit),
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
