//! Input rules shared by the request bodies: names, slugs, emails. Each failure names its field.

use crate::error::{ApiError, ApiResult};

/// A display name: trimmed, 1..=`max` characters, no control characters.
pub fn name(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    let len = v.chars().count();
    if len == 0 || len > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            field,
            format!("{field} must be 1 to {max} printable characters"),
        ));
    }
    Ok(v.to_owned())
}

/// A URL-safe identifier: 3..=40 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn slug(field: &str, value: &str) -> ApiResult<String> {
    let ok = (3..=40).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(ApiError::invalid_param(
            field,
            format!("{field} must be 3 to 40 of a-z, 0-9 and -"),
        ));
    }
    Ok(value.to_owned())
}

/// A plausible email address, lowercased. Deliverability is not checked.
pub fn email(field: &str, value: &str) -> ApiResult<String> {
    let v = crate::domain::normalize_email(value);
    let ok = v.len() <= 254
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ApiError::invalid_param(
            field,
            format!("{field} must be an email address"),
        ));
    }
    Ok(v)
}

/// A limit set: every limit given must be a positive integer.
pub fn limits(field: &str, value: &crate::limits::LimitSet) -> ApiResult<()> {
    match value.invalid_field() {
        Some(bad) => Err(ApiError::invalid_param(
            &format!("{field}.{bad}"),
            format!("{field}.{bad} must be a positive integer (omit it for no limit)"),
        )),
        None => Ok(()),
    }
}

/// A price book: every price within `0 ..= MAX_PRICE_NANO` (400 naming the price).
pub fn prices(field: &str, value: &crate::billing::prices::PriceBook) -> ApiResult<()> {
    value.check(field)
}

/// serde helper for PATCH fields where `null` means "clear": absent → `None`, `null` →
/// `Some(None)`, a value → `Some(Some(v))`. Use with `#[serde(default, deserialize_with = …)]`.
pub fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(de).map(Some)
}
