//! The operator's TAO price endpoint (`payments.tao.price_url`): a GET answering JSON whose value at
//! `payments.tao.price_pointer` (RFC 6901, e.g. `/bittensor/usd` for a CoinGecko-shaped answer) is
//! the price of one TAO in `payments.tao.price_currency` units — a JSON number or a decimal string.
//! Read exactly as a decimal (never through a float) into nano-units per TAO, cut at 9 places.
//! Tenants on the feed (`rate_source` `feed`) are credited at the price read when the watcher
//! applies the deposit's block, and that rate is stored on the deposit; when the endpoint cannot be
//! read, the block waits (the cursor does not move) and the next pass tries again.

use std::time::Duration;

use serde_json::Value;

use super::TaoConfig;
use crate::billing::payments::parse_decimal;

/// Highest accepted price, in nano-units per TAO.
pub const MAX_NANO_PER_TAO: i64 = 1_000_000_000_000_000;

/// Why the price could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("the price endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the price endpoint answered {0}")]
    Status(u16),
    #[error("the price endpoint's answer has no usable price at the configured pointer")]
    Unreadable,
}

/// The operator's price endpoint.
pub struct PriceFeed {
    url: String,
    pointer: String,
    client: reqwest::Client,
}

impl PriceFeed {
    /// The feed, if one is configured.
    pub fn from_config(config: &TaoConfig) -> Option<Self> {
        if config.price_url.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.rpc_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        Some(Self {
            url: config.price_url.clone(),
            pointer: config.price_pointer.clone(),
            client,
        })
    }

    /// Nano-units per TAO now.
    pub async fn nano_per_tao(&self) -> Result<i64, PriceError> {
        let res = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| PriceError::Unreachable(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(PriceError::Status(res.status().as_u16()));
        }
        let body: Value = res.json().await.map_err(|_| PriceError::Unreadable)?;
        read(&body, &self.pointer).ok_or(PriceError::Unreadable)
    }
}

/// The price at `pointer` in nano-units per TAO: a positive decimal (number or string), within
/// 1 ..= [`MAX_NANO_PER_TAO`].
pub fn read(body: &Value, pointer: &str) -> Option<i64> {
    let text = match body.pointer(pointer)? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    parse_decimal(&text, 9).filter(|n| (1..=MAX_NANO_PER_TAO).contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_exactly_from_numbers_and_strings() {
        let v = serde_json::json!({"bittensor": {"usd": 312.45}, "s": "0.000000001", "bad": -3,
            "tiny": "0.0000000001", "huge": "10000000", "e": 1e300});
        assert_eq!(read(&v, "/bittensor/usd"), Some(312_450_000_000));
        assert_eq!(read(&v, "/s"), Some(1));
        assert_eq!(read(&v, "/bad"), None);
        assert_eq!(read(&v, "/tiny"), None, "rounds to zero");
        assert_eq!(read(&v, "/huge"), None, "out of range");
        assert_eq!(read(&v, "/e"), None);
        assert_eq!(read(&v, "/missing"), None);
    }
}
