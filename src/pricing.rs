//! Prices: per model, nano-units per 1M prompt tokens, per 1M completion tokens and per request.
//! A [`PriceBook`] maps model ids (or `*`, any other model) to a [`Price`]; plans hold the tenant's
//! retail book, tenants the operator's wholesale book. Integer math only (`i128`, half up).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Nano;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub prompt_nano_per_mtok: i64,
    #[serde(default)]
    pub completion_nano_per_mtok: i64,
    #[serde(default)]
    pub request_nano: i64,
}

impl Price {
    /// What one request costs: the per-request price plus tokens × price per 1M, half up;
    /// saturating, never wrapping.
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> Nano {
        let tokens = i128::from(prompt_tokens) * i128::from(self.prompt_nano_per_mtok)
            + i128::from(completion_tokens) * i128::from(self.completion_nano_per_mtok);
        let total = (tokens + 500_000) / 1_000_000 + i128::from(self.request_nano);
        Nano(total.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    fn is_valid(&self) -> bool {
        self.prompt_nano_per_mtok >= 0
            && self.completion_nano_per_mtok >= 0
            && self.request_nano >= 0
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

    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "unreadable stored price book; treating as free");
            Self::default()
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a price book serialises")
    }

    /// The first model whose price is negative.
    pub fn invalid_model(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, p)| !p.is_valid())
            .map(|(m, _)| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(huge.cost(i64::MAX, i64::MAX), Nano(i64::MAX));
        let book: PriceBook =
            serde_json::from_str(r#"{"*": {"request_nano": 5}, "m": {"prompt_nano_per_mtok": 1}}"#)
                .unwrap();
        assert_eq!(book.for_model("other").unwrap().request_nano, 5);
        assert_eq!(book.for_model("m").unwrap().prompt_nano_per_mtok, 1);
        assert_eq!(PriceBook::from_json(&book.to_json()), book);
    }
}
