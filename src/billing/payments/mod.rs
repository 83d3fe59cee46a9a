//! Payments: money coming in from providers (Stripe first, crypto next) and going back out
//! (refunds, disputes), through the ledger, each movement exactly once.
//!
//! - [`signature`]: the Stripe-style webhook signature scheme (verify inbound, sign outbound);
//! - [`seal`]: provider secrets sealed at rest (AES-256-GCM under `payments.encryption_key`);
//! - [`settings`]: a tenant's provider settings — validated, sealed, shown masked;
//! - [`stripe`]: Stripe's notifications read into [`Effect`]s (our own minimal structs, raw kept);
//! - [`apply`]: an [`Effect`] applied — the payment's forward-only state machine and its ledger
//!   transactions, keyed by the provider's payment reference (`stripe:<payment_intent>`), never by
//!   the event id, so any number of deliveries of any of the events about one payment, in any
//!   order, move its money once.
//!
//! A provider implements [`Provider`]: it verifies an inbound notification and normalises it.
//! Every verified notification is stored raw (unique on provider + event id) before it is applied.

pub mod apply;
pub mod auto_topup;
pub mod btcpay;
pub mod coinbase;
pub mod custom;
pub mod inbox;
pub mod meters;
pub mod notify;
pub mod seal;
pub mod settings;
pub mod signature;
pub mod stripe;
pub mod stripe_account;
pub mod stripe_api;
pub mod tao;
pub mod topup;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{Nano, PaymentState};

/// `[payments]` (documented in `deploy/taogate.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub encryption_key: SecretString,
    /// How often each replica checks automatic top-ups and low-balance alerts.
    pub auto_topup_every_ms: u64,
    /// Let tenants' webhook endpoints resolve to private addresses (tests, private deployments).
    pub webhook_allow_private_targets: bool,
    /// How often each replica pushes postpaid usage to Stripe Billing Meters.
    pub meter_every_ms: u64,
    /// How long after its request started a usage record is assumed to be in the database.
    pub meter_lag_secs: u64,
    pub stripe: StripeConfig,
    pub coinbase: coinbase::CoinbaseConfig,
    pub tao: tao::TaoConfig,
}

/// `[payments.stripe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    pub api_base: String,
    pub timeout_ms: u64,
    pub webhook_tolerance_secs: i64,
}

impl PaymentsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let key = self.encryption_key.expose_secret();
        if !key.is_empty() && seal::Sealer::from_config(key).is_err() {
            anyhow::bail!(
                "config key `payments.encryption_key`: must be 32 bytes, as 64 hex digits or base64"
            );
        }
        if !(100..=3_600_000).contains(&self.auto_topup_every_ms) {
            anyhow::bail!(
                "config key `payments.auto_topup_every_ms`: must be between 100 and 3600000"
            );
        }
        if !(100..=3_600_000).contains(&self.meter_every_ms) {
            anyhow::bail!("config key `payments.meter_every_ms`: must be between 100 and 3600000");
        }
        if self.meter_lag_secs > 7 * 86_400 {
            anyhow::bail!("config key `payments.meter_lag_secs`: must be at most 604800 (7 days)");
        }
        self.tao.validate()?;
        self.coinbase.validate()?;
        let base = &self.stripe.api_base;
        let ok = url::Url::parse(base).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && base.ends_with('/')
        });
        if !ok {
            anyhow::bail!(
                "config key `payments.stripe.api_base`: must be an http(s) URL ending in `/`"
            );
        }
        if !(100..=120_000).contains(&self.stripe.timeout_ms) {
            anyhow::bail!(
                "config key `payments.stripe.timeout_ms`: must be between 100 and 120000"
            );
        }
        if !(1..=3600).contains(&self.stripe.webhook_tolerance_secs) {
            anyhow::bail!(
                "config key `payments.stripe.webhook_tolerance_secs`: must be between 1 and 3600"
            );
        }
        Ok(())
    }

    /// The sealing key, if one is configured.
    pub fn sealer(&self) -> Option<seal::Sealer> {
        let key = self.encryption_key.expose_secret();
        (!key.is_empty())
            .then(|| seal::Sealer::from_config(key).ok())
            .flatten()
    }
}

/// A verified, normalised notification.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event_id: String,
    pub event_type: String,
    pub effect: Effect,
}

/// Why a notification was refused: 400, nothing stored, nothing moves.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the signature does not verify: {0}")]
    Signature(#[from] signature::SignatureError),
    #[error("the notification cannot be read: {0}")]
    Unreadable(String),
}

/// Where the payer goes back to after a hosted payment page.
#[derive(Debug, Clone)]
pub struct Payer {
    pub success_url: String,
    pub cancel_url: String,
}

/// What a provider answered when it started a payment.
#[derive(Debug, Clone)]
pub struct Start {
    /// Its session (Stripe: the Checkout Session id), if it has one.
    pub session: Option<String>,
    /// Its payment reference, if it is known already.
    pub reference: Option<String>,
    /// Where the payer goes: a hosted page, or a payment URI.
    pub url: String,
}

/// A payment provider, card or crypto: starts a payment for an account, and verifies and reads
/// what it sends back. What a notification does to money is provider-neutral ([`apply`]).
pub trait Provider {
    /// Its name in storage and in ledger idempotency keys (`stripe`, `tao`, …).
    const NAME: &'static str;
    /// Checks the notification's authenticity against the tenant's secrets and reads it.
    fn verify(
        signature: &str,
        body: &[u8],
        secrets: &[&str],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Inbound, Refused>;
    /// Starts `payment` (recorded pending) for `account`.
    fn start(
        &self,
        payment: &crate::models::payment::Payment,
        account: &crate::models::account::Account,
        payer: &Payer,
    ) -> impl std::future::Future<Output = crate::error::ApiResult<Start>>;
}

/// What a notification means for a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Money was received.
    Paid {
        /// The provider's payment reference (Stripe: the PaymentIntent id): the credit's key.
        reference: String,
        /// Stripe: the Checkout Session it was paid through.
        session: Option<String>,
        /// Our payment id, when we started it (metadata).
        payment_hint: Option<String>,
        /// The account it is for, as the notification says (client_reference_id / metadata).
        account_hint: Option<String>,
        /// What was received; `None`: exactly what the payment asked for (a provider that says
        /// "paid in full" without an amount — only for payments taogate started).
        amount_minor: Option<i64>,
        /// Empty when the provider does not say (then: the payment's own currency).
        currency: String,
    },
    /// A started payment will not be paid.
    Failed {
        session: Option<String>,
        reference: Option<String>,
        /// Our payment id, when we started it (metadata).
        payment_hint: Option<String>,
        expired: bool,
    },
    /// Some of a payment was refunded: `refunded_total_minor` is the cumulative amount refunded.
    Refunded {
        reference: String,
        refunded_total_minor: i64,
        currency: String,
        refund_ids: Vec<String>,
    },
    DisputeOpened {
        reference: String,
        dispute: String,
        amount_minor: i64,
        currency: String,
    },
    DisputeClosed {
        reference: String,
        dispute: String,
        won: bool,
    },
    /// Stored and acknowledged; nothing to do.
    Ignored,
}

impl PaymentState {
    /// Whether a payment may move from `self` to `next` (forward only; staying put is not a move).
    pub fn may_become(self, next: PaymentState) -> bool {
        use PaymentState::*;
        matches!(
            (self, next),
            (Pending, Succeeded | Failed | Expired)
                | (Succeeded, PartiallyRefunded | Refunded | Disputed)
                | (PartiallyRefunded, Refunded | Disputed)
                | (Disputed, DisputeWon | DisputeLost)
                | (DisputeWon, PartiallyRefunded | Refunded)
        )
    }
}

/// Decimal places of a currency's minor unit, as Stripe counts them.
pub fn minor_unit_exponent(currency: &str) -> u32 {
    const ZERO: &[&str] = &[
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
        "xaf", "xof", "xpf",
    ];
    const THREE: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];
    if ZERO.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else {
        2
    }
}

/// Nano-units for `minor` units of `currency` at `nano_per_unit` (rounded down: a credit never
/// exceeds what was paid); `None` if it would leave the amount range.
pub fn minor_to_nano(minor: i64, currency: &str, nano_per_unit: i64) -> Option<Nano> {
    let scale = 10i128.pow(minor_unit_exponent(currency));
    let nano = i128::from(minor).checked_mul(i128::from(nano_per_unit))? / scale;
    let nano = i64::try_from(nano).ok()?;
    (0..=crate::billing::amount::MAX_AMOUNT_NANO)
        .contains(&nano)
        .then_some(Nano(nano))
}

/// Minor units for exactly `nano` at `nano_per_unit`, or `None` if `nano` is not a whole number
/// of minor units (a top-up asks for what can be charged exactly).
pub fn nano_to_minor(nano: Nano, currency: &str, nano_per_unit: i64) -> Option<i64> {
    let scale = 10i128.pow(minor_unit_exponent(currency));
    let scaled = i128::from(nano.0).checked_mul(scale)?;
    let per = i128::from(nano_per_unit);
    (per > 0 && scaled % per == 0)
        .then(|| i64::try_from(scaled / per).ok())
        .flatten()
}

/// A decimal string (`"12.345"`) in units of 10^-`exp`, extra places cut (`1234` for `exp` 2: a
/// credit never exceeds what was paid); `None` unless a plain non-negative decimal within range.
pub fn parse_decimal(value: &str, exp: u32) -> Option<i64> {
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 || !digits(whole) || !digits(frac) || frac.len() > 18 {
        return None;
    }
    let exp = exp as usize;
    let mut kept: String = frac.chars().take(exp).collect();
    while kept.len() < exp {
        kept.push('0');
    }
    format!("{whole}{kept}").parse().ok()
}

/// A provider name is `stripe`, or `custom:<name>` for a tenant's own payment system.
pub const CUSTOM_PREFIX: &str = "custom:";

impl crate::models::payment::ProviderSettings {
    /// Nano-units for an amount in the provider's units: the currency's minor units at the
    /// tenant's rate (rounded down), or nano-units as they are for a tenant's own provider.
    pub fn to_nano(&self, amount: i64) -> Option<Nano> {
        if self.provider == tao::NAME {
            tao::rao_to_nano(amount, self.nano_per_unit)
        } else if self.provider.starts_with(CUSTOM_PREFIX) {
            (0..=crate::billing::amount::MAX_AMOUNT_NANO)
                .contains(&amount)
                .then_some(Nano(amount))
        } else {
            minor_to_nano(amount, &self.currency, self.nano_per_unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_convert_exactly_and_round_down() {
        assert_eq!(
            minor_to_nano(1234, "usd", 1_000_000_000),
            Some(Nano(12_340_000_000))
        );
        assert_eq!(
            minor_to_nano(500, "jpy", 1_000_000_000),
            Some(Nano(500_000_000_000))
        );
        assert_eq!(
            minor_to_nano(1, "kwd", 1_000_000_000),
            Some(Nano(1_000_000))
        );
        // 1 cent at 3 nano per unit is 0.03 nano: rounded down.
        assert_eq!(minor_to_nano(1, "usd", 3), Some(Nano(0)));
        assert_eq!(minor_to_nano(-1, "usd", 1_000_000_000), None);
        assert_eq!(minor_to_nano(i64::MAX, "usd", 1_000_000_000), None);
        assert_eq!(
            nano_to_minor(Nano(12_340_000_000), "usd", 1_000_000_000),
            Some(1234)
        );
        assert_eq!(
            nano_to_minor(Nano(12_345_000_000), "usd", 1_000_000_000),
            None
        );
        assert_eq!(
            nano_to_minor(Nano(1_000_000_001), "usd", 1_000_000_000),
            None
        );
    }

    #[test]
    fn payment_states_only_move_forward() {
        use PaymentState::*;
        assert!(Pending.may_become(Succeeded));
        assert!(Succeeded.may_become(Refunded));
        assert!(Disputed.may_become(DisputeWon));
        for back in [Pending, Failed, Expired] {
            assert!(!Succeeded.may_become(back));
        }
        assert!(!Failed.may_become(Succeeded));
        assert!(!Refunded.may_become(Succeeded));
        assert!(!DisputeLost.may_become(DisputeWon));
    }
}
