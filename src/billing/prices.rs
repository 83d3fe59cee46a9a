//! Prices: per model, nano-units per 1M prompt tokens, per 1M completion tokens and per request.
//! A [`PriceBook`] maps model ids (or `*`, any other model) to a [`Price`]; plans hold the tenant's
//! retail book, tenants the operator's wholesale book. Integer math only (`i128`, half up), every
//! price within [`MAX_PRICE_NANO`](super::amount::MAX_PRICE_NANO). A stored book that does not
//! parse is never read as "free": [`PriceBook::parse`] fails and requests under it are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::amount::{self, MAX_AMOUNT_NANO};
use crate::domain::Nano;
use crate::error::ApiResult;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Nano-units per 1M prompt tokens, `0 ..= 10^15`.
    #[serde(default, deserialize_with = "amount::saturating")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub prompt_nano_per_mtok: i64,
    /// Nano-units per 1M completion tokens, `0 ..= 10^15`.
    #[serde(default, deserialize_with = "amount::saturating")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub completion_nano_per_mtok: i64,
    /// Nano-units per request, `0 ..= 10^15`.
    #[serde(default, deserialize_with = "amount::saturating")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub request_nano: i64,
}

impl Price {
    /// What one request costs: the per-request price plus tokens × price per 1M, half up, in
    /// `i128`. Never negative (negative counts and prices count as zero) and never above
    /// [`MAX_AMOUNT_NANO`].
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> Nano {
        let pos = |v: i64| i128::from(v.max(0));
        let tokens = pos(prompt_tokens) * pos(self.prompt_nano_per_mtok)
            + pos(completion_tokens) * pos(self.completion_nano_per_mtok);
        let total = (tokens + 500_000) / 1_000_000 + pos(self.request_nano);
        Nano(total.min(i128::from(MAX_AMOUNT_NANO)) as i64)
    }

    /// Every price within `0 ..= MAX_PRICE_NANO`; the 400 names `<field>.<field of Price>`.
    fn check(&self, field: &str) -> ApiResult<()> {
        amount::price(
            &format!("{field}.prompt_nano_per_mtok"),
            self.prompt_nano_per_mtok,
        )?;
        amount::price(
            &format!("{field}.completion_nano_per_mtok"),
            self.completion_nano_per_mtok,
        )?;
        amount::price(&format!("{field}.request_nano"), self.request_nano)
    }
}

/// Model → price; `*` prices every model not listed. Stored as JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct PriceBook(pub BTreeMap<String, Price>);

impl PriceBook {
    pub fn for_model(&self, model: &str) -> Option<Price> {
        self.0.get(model).or_else(|| self.0.get("*")).copied()
    }

    /// A stored book: it must parse and every price must be in range, else it is unusable (the
    /// requests it would price are refused, never served free).
    pub fn parse(text: &str) -> Result<Self, Unusable> {
        let book: Self = serde_json::from_str(text).map_err(|e| {
            tracing::error!(error = %e, "unreadable stored price book; requests under it are refused");
            Unusable
        })?;
        if let Err(e) = book.check("prices") {
            tracing::error!(error = %e, "stored price book out of range; requests under it are refused");
            return Err(Unusable);
        }
        Ok(book)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a price book serialises")
    }

    /// Every price of every model in range; the 400 names `<field>.<model>.<price field>`.
    pub fn check(&self, field: &str) -> ApiResult<()> {
        self.0
            .iter()
            .try_for_each(|(model, p)| p.check(&format!("{field}.{model}")))
    }
}

/// A stored price book that does not parse or is out of range (edited by hand, or written by
/// another version): requests it would price get 503 `pricing_unavailable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unusable;

/// `tokens × price per 1M tokens`, in nano-units, rounded half up, for a route's wholesale
/// `(prompt, completion)` price; `i128`, never negative, never above [`MAX_AMOUNT_NANO`].
pub fn wholesale_cost(
    prompt_tokens: i64,
    completion_tokens: i64,
    (prompt_price, completion_price): (i64, i64),
) -> Nano {
    Price {
        prompt_nano_per_mtok: prompt_price,
        completion_nano_per_mtok: completion_price,
        request_nano: 0,
    }
    .cost(prompt_tokens, completion_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wholesale_cost_is_exact_integer_math() {
        // 1 unit per 1M prompt tokens = 1000 nano per token; 2.5 units per 1M completion tokens.
        assert_eq!(
            wholesale_cost(3, 7, (1_000_000_000, 2_500_000_000)),
            Nano(3_000 + 17_500)
        );
        assert_eq!(
            wholesale_cost(1, 0, (1, 0)),
            Nano(0),
            "below .5 rounds down"
        );
        assert_eq!(wholesale_cost(1, 0, (500_000, 0)), Nano(1), "from .5 up");
        assert_eq!(
            wholesale_cost(i64::MAX, i64::MAX, (i64::MAX, i64::MAX)),
            Nano(MAX_AMOUNT_NANO),
            "bounded, never wraps"
        );
    }

    #[test]
    fn costs_are_exact_integers() {
        let p = Price {
            prompt_nano_per_mtok: 1_000_000_000,
            completion_nano_per_mtok: 2_500_000_000,
            request_nano: 7,
        };
        assert_eq!(p.cost(3, 7), Nano(3_000 + 17_500 + 7));
        let half = Price {
            prompt_nano_per_mtok: 500_000,
            ..Default::default()
        };
        assert_eq!(half.cost(1, 0), Nano(1), "half a nano rounds up");
        let huge = Price {
            prompt_nano_per_mtok: i64::MAX,
            completion_nano_per_mtok: i64::MAX,
            request_nano: i64::MAX,
        };
        assert_eq!(huge.cost(i64::MAX, i64::MAX), Nano(MAX_AMOUNT_NANO));
        assert_eq!(
            p.cost(-1_000_000, -5),
            Nano(7),
            "negative counts cost nothing"
        );
        let book: PriceBook =
            serde_json::from_str(r#"{"*": {"request_nano": 5}, "m": {"prompt_nano_per_mtok": 1}}"#)
                .unwrap();
        assert_eq!(book.for_model("other").unwrap().request_nano, 5);
        assert_eq!(book.for_model("m").unwrap().prompt_nano_per_mtok, 1);
        assert_eq!(PriceBook::parse(&book.to_json()), Ok(book));
        assert_eq!(
            PriceBook::parse(r#"{"*": {"request_nano": 5, "extra": 1}}"#),
            Err(Unusable)
        );
        assert_eq!(
            PriceBook::parse(r#"{"*": {"request_nano": -5}}"#),
            Err(Unusable)
        );
        assert_eq!(
            PriceBook::parse(r#"{"*": {"request_nano": 10000000000000000000}}"#),
            Err(Unusable)
        );
    }
}
