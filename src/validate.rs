//! Input rules shared by the request bodies: names, slugs, emails. Each failure names its field.

use crate::error::{ApiError, ApiResult};

/// A display name: at most `max` characters as sent, trimmed, no control characters, no bidi
/// embedding, override or isolate (they reorder what is shown), and at least one visible
/// character ([`NAME_PATTERN`] says the same to OpenAPI clients).
pub fn name(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    let len = value.chars().count();
    let shown = v.chars().any(|c| !c.is_whitespace() && !invisible(c));
    if len == 0 || len > max || !shown || v.chars().any(|c| c.is_control() || reorders(c)) {
        return Err(ApiError::invalid_param(
            field,
            format!(
                "{field} must be 1 to {max} printable characters, at least one of them visible"
            ),
        ));
    }
    Ok(v.to_owned())
}

/// [`name`]'s rule as a JSON Schema pattern (the OpenAPI document's): no control or reordering
/// character, and one that is neither whitespace nor invisible.
pub const NAME_PATTERN: &str = concat!(
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*",
    "[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u034f\\u0600-\\u0605\\u061c\\u06dd\\u070f",
    "\\u115f\\u1160\\u17b4\\u17b5\\u180b-\\u180f\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u206f",
    "\\u2800\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff9-\\ufffb]",
    "[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$"
);

/// [`email`]'s rule as a JSON Schema pattern (surrounding whitespace is trimmed).
pub const EMAIL_PATTERN: &str = concat!(
    "^\\s*[^@\\s\\u0000-\\u001f\\u007f-\\u009f]+@",
    "[^\\s.\\u0000-\\u001f\\u007f-\\u009f][^\\s\\u0000-\\u001f\\u007f-\\u009f]*\\.",
    "[^\\s\\u0000-\\u001f\\u007f-\\u009f]*[^\\s.\\u0000-\\u001f\\u007f-\\u009f]\\s*$"
);

/// An id as taogate hands it out and reads it back (a hyphenated UUID).
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Request text that goes to the database cannot hold NUL (PostgreSQL refuses it).
pub const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

/// [`slug`]'s rule as a JSON Schema pattern.
pub const SLUG_PATTERN: &str = "^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$";

/// Unicode format characters (category Cf: zero-width spaces and joiners, bidi marks, BOM, tags)
/// and the blank-looking letters (Hangul fillers, braille blank).
fn invisible(c: char) -> bool {
    matches!(c as u32,
        0xAD | 0x34F | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x115F | 0x1160 | 0x17B4 | 0x17B5
        | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x2800
        | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// Bidi embeddings, overrides and isolates.
fn reorders(c: char) -> bool {
    matches!(c as u32, 0x202A..=0x202E | 0x2066..=0x2069)
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

#[cfg(test)]
mod tests {
    use super::name;

    #[test]
    fn names_need_a_visible_character_and_no_reordering() {
        assert_eq!(
            name("name", "  Acme\u{200d}Co ", 20).unwrap(),
            "Acme\u{200d}Co"
        );
        assert_eq!(name("name", "café ☕", 20).unwrap(), "café ☕");
        for bad in [
            "",
            "   ",
            "\u{200b}\u{200c}",
            "\u{2800}",
            "\u{3164}",
            "\u{feff}\u{2060}",
            "ab\u{202e}cd",
            "x\u{2066}y",
            "a\u{7}b",
        ] {
            let e = name("name", bad, 20).unwrap_err();
            assert!(e.to_string().contains("visible"), "{bad:?}: {e}");
        }
    }
}
