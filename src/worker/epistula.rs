//! Epistula v2 request signing (SN1's scheme, `shared/epistula.py`): the validator signs
//! `"{sha256(body) hex}.{uuid}.{timestamp_ms}.{signed_for}"` with its sr25519 hotkey. Only
//! `Epistula-Request-Signature` is sent: implementations disagree on the secret signatures and no
//! verifier relies on them. [`verify`] is the miner side, as SN1's miner checks it (plus a bound on
//! future timestamps), used by the dev subnet's miners.

use super::hotkey::{Hotkey, verify_hex};
use crate::crypto::sha256_hex;

/// A request older than this is stale (SN1: `timestamp + 8000 < now`).
pub const MAX_AGE_MS: i64 = 8_000;

pub const VERSION: &str = "Epistula-Version";
pub const TIMESTAMP: &str = "Epistula-Timestamp";
pub const UUID: &str = "Epistula-Uuid";
pub const SIGNED_BY: &str = "Epistula-Signed-By";
pub const SIGNED_FOR: &str = "Epistula-Signed-For";
pub const SIGNATURE: &str = "Epistula-Request-Signature";

fn message(body: &[u8], uuid: &str, timestamp_ms: i64, signed_for: &str) -> String {
    format!("{}.{uuid}.{timestamp_ms}.{signed_for}", sha256_hex(body))
}

/// The headers of a signed request from `hotkey` to the miner `signed_for`.
pub fn sign(
    hotkey: &Hotkey,
    signed_for: &str,
    body: &[u8],
    now_ms: i64,
) -> Vec<(&'static str, String)> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let signature = hotkey.sign_hex(message(body, &uuid, now_ms, signed_for).as_bytes());
    vec![
        (VERSION, "2".into()),
        (TIMESTAMP, now_ms.to_string()),
        (UUID, uuid),
        (SIGNED_BY, hotkey.ss58.clone()),
        (SIGNED_FOR, signed_for.to_owned()),
        (SIGNATURE, signature),
    ]
}

/// Why a miner refuses a request: (HTTP status, detail), as SN1's miner answers.
pub type Refusal = (u16, String);

/// Checks a request as a miner: fresh timestamp, addressed to `own` hotkey, from an allowed
/// validator, with a valid signature over this exact body.
pub fn verify(
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    own: &str,
    allowed: &[String],
    now_ms: i64,
) -> Result<String, Refusal> {
    let get = |name: &str| header(name).ok_or_else(|| (400, format!("missing {name}")));
    let timestamp: i64 = get(TIMESTAMP)?
        .trim()
        .parse()
        .map_err(|_| (400, "invalid timestamp".to_owned()))?;
    if timestamp.saturating_add(MAX_AGE_MS) < now_ms {
        return Err((400, "Request is too stale".into()));
    }
    if timestamp > now_ms.saturating_add(MAX_AGE_MS) {
        return Err((400, "Request is from the future".into()));
    }
    let signed_for = get(SIGNED_FOR)?;
    if signed_for != own {
        return Err((400, "Bad Request, message is not intended for self".into()));
    }
    let signed_by = get(SIGNED_BY)?;
    if !allowed.contains(&signed_by) {
        return Err((401, "Signer not the expected ss58 address".into()));
    }
    let uuid = get(UUID)?;
    let signature = get(SIGNATURE)?;
    if !verify_hex(
        &signed_by,
        message(body, &uuid, timestamp, &signed_for).as_bytes(),
        &signature,
    ) {
        return Err((400, "Signature Mismatch".into()));
    }
    Ok(signed_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        headers: &[(&'static str, String)],
        body: &[u8],
        own: &str,
        allowed: &[String],
        now: i64,
    ) -> Result<String, Refusal> {
        verify(
            |n| {
                headers
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.clone())
            },
            body,
            own,
            allowed,
            now,
        )
    }

    #[test]
    fn signed_requests_verify_and_tampering_does_not() {
        let validator = Hotkey::generate();
        let miner = Hotkey::generate();
        let allowed = vec![validator.ss58.clone()];
        let now = 1_800_000_000_000;
        let h = sign(&validator, &miner.ss58, b"{\"a\":1}", now);
        assert_eq!(
            check(&h, b"{\"a\":1}", &miner.ss58, &allowed, now + 10),
            Ok(validator.ss58.clone())
        );
        assert_eq!(
            check(&h, b"{\"a\":2}", &miner.ss58, &allowed, now)
                .unwrap_err()
                .1,
            "Signature Mismatch"
        );
        assert_eq!(
            check(&h, b"{\"a\":1}", &miner.ss58, &allowed, now + 9_000)
                .unwrap_err()
                .1,
            "Request is too stale"
        );
        assert_eq!(
            check(&h, b"{\"a\":1}", &Hotkey::generate().ss58, &allowed, now)
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            check(&h, b"{\"a\":1}", &miner.ss58, &[], now)
                .unwrap_err()
                .0,
            401
        );
        let forged = sign(&Hotkey::generate(), &miner.ss58, b"{\"a\":1}", now);
        let mut spoofed = forged.clone();
        spoofed[3].1 = validator.ss58.clone();
        assert_eq!(
            check(&spoofed, b"{\"a\":1}", &miner.ss58, &allowed, now)
                .unwrap_err()
                .1,
            "Signature Mismatch"
        );
    }
}
