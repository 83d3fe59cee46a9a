//! Money, in one room. Every rule about what a request costs and how money moves lives here:
//!
//! - [`prices`]: price books and the integer cost formula (half up, checked);
//! - [`amount`]: the range of every amount (inputs, prices, balances) and checked arithmetic;
//! - [`holds`]: hold sizing at admission and the hold lifecycle (the reservation itself runs inside
//!   the limiter's one round trip, `limits.lua` / `limits::memory`, by these rules);
//! - [`bounds`]: what a request may be billed — never negative, never above what it asked for —
//!   whatever an upstream or miner reports;
//! - [`settle`]: turning a finished (or abandoned) request into a usage record and a capture;
//! - [`lines`]: the one function that builds a charge's ledger lines (per-row and bulk writers);
//! - [`adjust`]: manual credits and debits;
//! - [`balance`]: keeping the limiter's cached balances in step with the ledger;
//! - [`metering`]: the usage journal and the batch writer that posts usage to the ledger;
//! - [`payments`]: money coming in from providers (so far: webhook signatures).
//!
//! Handlers call into this module; they never build postings themselves.

pub mod adjust;
pub mod amount;
pub mod balance;
pub mod bounds;
pub mod holds;
pub mod lines;
pub mod metering;
pub mod payments;
pub mod prices;
pub mod settle;

use serde::Deserialize;

/// `[billing]` (documented in `deploy/taogate.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    pub prompt_tolerance_pct: i64,
    pub prompt_tolerance_tokens: i64,
    pub shutdown_grace_secs: u64,
}

impl BillingConfig {
    pub fn tolerance(&self) -> bounds::Tolerance {
        bounds::Tolerance {
            pct: self.prompt_tolerance_pct,
            tokens: self.prompt_tolerance_tokens,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0..=1000).contains(&self.prompt_tolerance_pct) {
            anyhow::bail!("config key `billing.prompt_tolerance_pct`: must be between 0 and 1000");
        }
        if !(0..=1_000_000).contains(&self.prompt_tolerance_tokens) {
            anyhow::bail!(
                "config key `billing.prompt_tolerance_tokens`: must be between 0 and 1000000"
            );
        }
        if self.shutdown_grace_secs > 3600 {
            anyhow::bail!("config key `billing.shutdown_grace_secs`: must be at most 3600");
        }
        Ok(())
    }
}
