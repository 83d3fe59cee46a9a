//! Stripe-style webhook signatures, `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: the
//! HMAC-SHA256 of `"<t>.<raw body>"` keyed by the whole webhook secret (`whsec_…`). Verification
//! is our own (no dependency on a pinned Stripe API version): every `v1` is tried against every
//! configured secret (so a secret can be rotated), compared in constant time (`hmac`'s
//! `verify_slice`), and the timestamp must lie within the tolerance of now (Stripe's libraries use
//! 300 s), in the past or — against clock skew — the future. Other schemes (`v0`) are ignored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's default tolerance.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (every one is a 400, and nothing moves).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature header has no v1 signature")]
    NoSignature,
    #[error("the signature is too old or too far in the future")]
    Stale,
    #[error("no signature matches a configured secret")]
    Mismatch,
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header for `body` signed with `secret` at `t` (what taogate sends its tenants' endpoints).
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    let signature = hex::encode(mac(secret, t, body).finalize().into_bytes());
    format!("t={t},v1={signature}")
}

/// Verifies `header` over the raw `body` against any of `secrets` at `now`; the signed timestamp.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[&str],
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                let parsed = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed)?;
                if t.replace(parsed).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            // A v1 that is not hex can match nothing; it is skipped like an unknown scheme.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    if now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let matched = secrets.iter().filter(|s| !s.is_empty()).any(|secret| {
        signatures
            .iter()
            .any(|signature| mac(secret, t, body).verify_slice(signature).is_ok())
    });
    matched.then_some(t).ok_or(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000;

    #[test]
    fn signed_bodies_verify_and_anything_else_is_refused() {
        let body = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
        let header = sign(body, "whsec_old", NOW);
        // No configured secret: nothing verifies.
        assert_eq!(
            verify(&header, body, &[], NOW, TOLERANCE_SECS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, &["whsec_old"], NOW, TOLERANCE_SECS),
            Ok(NOW)
        );
        // Rotation: either secret, and either of two signatures.
        let new = sign(body, "whsec_new", NOW);
        let both = format!("{header},{}", new.split_once(',').unwrap().1);
        assert_eq!(
            verify(&both, body, &["whsec_new"], NOW, TOLERANCE_SECS),
            Ok(NOW)
        );
        assert_eq!(
            verify(&header, body, &["whsec_new", "whsec_old"], NOW, 300),
            Ok(NOW)
        );
        let refused = |h: &str, b: &[u8], now: i64| verify(h, b, &["whsec_old"], now, 300);
        assert_eq!(refused(&header, b"{}", NOW), Err(SignatureError::Mismatch));
        assert_eq!(
            refused(&header, body, NOW + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            refused(&header, body, NOW - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(refused(&header, body, NOW + 300), Ok(NOW));
        assert_eq!(
            verify(&header, body, &["whsec_x", ""], NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(refused("t=1", body, NOW), Err(SignatureError::NoSignature));
        assert_eq!(
            refused(&format!("t={NOW},v0=ab"), body, NOW),
            Err(SignatureError::NoSignature)
        );
        for bad in [
            "",
            "v1=ab",
            "t=x,v1=ab",
            "garbage",
            &format!("t={NOW},t={NOW},v1=ab"),
        ] {
            assert_eq!(
                refused(bad, body, NOW),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
