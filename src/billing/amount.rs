//! The range of every amount. Money is `i64` nano-units; no input, price or balance may come near
//! the edges of `i64`, so every sum the ledger and `reconcile` compute stays an exact integer on
//! both backends (SQLite turns an overflowing integer sum into a float; PostgreSQL errors):
//!
//! - an input amount (adjustment, credit limit, hold cap, top-up): `|amount| ≤ MAX_AMOUNT_NANO`
//!   (10^18 nano = 10^9 units);
//! - a price (per 1M prompt or completion tokens, or per request): `0 ≤ price ≤ MAX_PRICE_NANO`
//!   (10^15 nano = 10^6 units);
//! - a ledger account's balance after any posting: `|balance| ≤ MAX_BALANCE_NANO` (4 × 10^18), so
//!   two balances (or a balance and an input) always add without overflow.
//!
//! JSON integers outside `i64` are read as the nearest edge (see [`saturating`]) so that they fail
//! the range check with a 400 naming their field, like any other out-of-range value.

use serde::Deserializer;

use crate::domain::Nano;
use crate::error::{ApiError, ApiResult};

pub const MAX_AMOUNT_NANO: i64 = 1_000_000_000_000_000_000;
pub const MAX_PRICE_NANO: i64 = 1_000_000_000_000_000;
pub const MAX_BALANCE_NANO: i64 = 4_000_000_000_000_000_000;

/// What an amount may be besides its magnitude bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// `> 0`
    Positive,
    /// `≥ 0`
    NonNegative,
    /// `≠ 0` (a credit or a debit)
    NonZero,
}

/// Checks an input amount against [`MAX_AMOUNT_NANO`] and `sign`; the 400 names `field`.
pub fn input(field: &str, value: Nano, sign: Sign) -> ApiResult<Nano> {
    let v = value.0;
    let (ok_sign, what) = match sign {
        Sign::Positive => (v > 0, "positive"),
        Sign::NonNegative => (v >= 0, "zero or positive"),
        Sign::NonZero => (v != 0, "non-zero"),
    };
    if !ok_sign {
        return Err(ApiError::invalid_param(
            field,
            format!("{field} must be {what}"),
        ));
    }
    if v.unsigned_abs() > MAX_AMOUNT_NANO as u64 {
        return Err(out_of_range(field, MAX_AMOUNT_NANO));
    }
    Ok(value)
}

/// Checks a price against `0 ..= MAX_PRICE_NANO`.
pub fn price(field: &str, value: i64) -> ApiResult<()> {
    if value < 0 {
        return Err(ApiError::invalid_param(
            field,
            format!("{field} must not be negative"),
        ));
    }
    if value > MAX_PRICE_NANO {
        return Err(out_of_range(field, MAX_PRICE_NANO));
    }
    Ok(())
}

fn out_of_range(field: &str, max: i64) -> ApiError {
    ApiError::BadRequest {
        code: "amount_out_of_range",
        message: format!("{field} is out of range: at most {max} nano-units in magnitude"),
        param: Some(field.to_owned()),
    }
}

/// `balance + delta`, if it stays within `±MAX_BALANCE_NANO`.
pub fn moved(balance: i64, delta: i64) -> Option<i64> {
    balance
        .checked_add(delta)
        .filter(|b| b.unsigned_abs() <= MAX_BALANCE_NANO as u64)
}

/// serde: an amount that is a JSON integer; one outside `i64` becomes `i64::MIN`/`i64::MAX` (and
/// so fails the range check, naming its field). Fractions are refused: money is integers.
pub fn saturating<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer number of nano-units")
        }
        fn visit_i64<E>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E>(self, v: u64) -> Result<i64, E> {
            Ok(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_i128<E>(self, v: i128) -> Result<i64, E> {
            Ok(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
        }
        fn visit_u128<E>(self, v: u128) -> Result<i64, E> {
            Ok(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // serde_json reads an integer beyond u64/i64 as a float: it is out of range either way.
            if v.fract() == 0.0 && v.abs() >= 9.2e18 {
                return Ok(if v < 0.0 { i64::MIN } else { i64::MAX });
            }
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }
    de.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_json_integers_saturate_and_fail_the_check() {
        for (text, expected) in [
            ("-9223372036854775808", i64::MIN),
            ("9223372036854775807", i64::MAX),
            ("10000000000000000000", i64::MAX),
            ("-10000000000000000000", i64::MIN),
            ("100000000000000000000000", i64::MAX),
        ] {
            let n: Nano = serde_json::from_str(text).unwrap();
            assert_eq!(n.0, expected, "{text}");
            let e = input("amount_nano", n, Sign::NonZero).unwrap_err();
            assert_eq!(actix_web::ResponseError::status_code(&e).as_u16(), 400);
        }
        assert!(serde_json::from_str::<Nano>("1.5").is_err());
        assert!(serde_json::from_str::<Nano>("\"1\"").is_err());
        assert_eq!(
            input("a", Nano(MAX_AMOUNT_NANO), Sign::NonZero).unwrap(),
            Nano(MAX_AMOUNT_NANO)
        );
        assert!(input("a", Nano(-MAX_AMOUNT_NANO - 1), Sign::NonZero).is_err());
        assert!(input("a", Nano(0), Sign::NonZero).is_err());
        assert!(input("a", Nano(0), Sign::NonNegative).is_ok());
        assert!(input("a", Nano(0), Sign::Positive).is_err());
        assert_eq!(moved(MAX_BALANCE_NANO, 1), None);
        assert_eq!(moved(i64::MAX, 1), None);
        assert_eq!(moved(-5, 7), Some(2));
    }
}
