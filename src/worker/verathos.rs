//! Verathos-style validator signing (SN96, `neurons/request_signing.py`): `X-Validator-Hotkey`,
//! `X-Validator-Timestamp` (unix seconds) and `X-Validator-Signature` (sr25519, bare hex as the
//! SN96 validator sends it) over `"{METHOD}:{path}:{sha256(body) hex}:{timestamp}"`, where `path`
//! is the URL path without query string. Miners accept ±60 s and keep no nonce cache.

use super::hotkey::{Hotkey, verify_hex};
use crate::crypto::sha256_hex;

pub const HOTKEY: &str = "X-Validator-Hotkey";
pub const SIGNATURE: &str = "X-Validator-Signature";
pub const TIMESTAMP: &str = "X-Validator-Timestamp";
pub const MAX_SKEW_SECS: i64 = 60;

pub fn message(method: &str, path: &str, body: &[u8], timestamp: &str) -> String {
    format!(
        "{}:{path}:{}:{timestamp}",
        method.to_uppercase(),
        sha256_hex(body)
    )
}

pub fn sign(
    hotkey: &Hotkey,
    method: &str,
    path: &str,
    body: &[u8],
    now_secs: i64,
) -> Vec<(&'static str, String)> {
    let timestamp = now_secs.to_string();
    let signature = hotkey.sign_hex(message(method, path, body, &timestamp).as_bytes());
    vec![
        (HOTKEY, hotkey.ss58.clone()),
        (TIMESTAMP, timestamp),
        (SIGNATURE, signature.trim_start_matches("0x").to_owned()),
    ]
}

/// The miner side (dev stand-ins): allowlist first (403), then headers and signature (401).
pub fn verify(
    header: impl Fn(&str) -> Option<String>,
    method: &str,
    path: &str,
    body: &[u8],
    allowed: &[String],
    now_secs: i64,
) -> Result<String, (u16, String)> {
    let get = |name: &str| header(name).ok_or_else(|| (401, format!("missing {name}")));
    let hotkey = get(HOTKEY)?;
    if !allowed.contains(&hotkey) {
        return Err((403, "not a validator".into()));
    }
    let timestamp = get(TIMESTAMP)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| (401, "bad timestamp".to_owned()))?;
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
        return Err((401, "stale timestamp".into()));
    }
    let sig = get(SIGNATURE)?;
    let sig = if sig.starts_with("0x") {
        sig
    } else {
        format!("0x{sig}")
    };
    if !verify_hex(
        &hotkey,
        message(method, path, body, &timestamp).as_bytes(),
        &sig,
    ) {
        return Err((401, "invalid signature".into()));
    }
    Ok(hotkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = Hotkey::generate();
        let allowed = vec![v.ss58.clone()];
        let h = sign(&v, "post", "/chat", b"{}", 1_000);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, x)| x.clone());
        assert!(!h[2].1.starts_with("0x"), "bare hex, as SN96 sends it");
        assert_eq!(
            verify(get, "POST", "/chat", b"{}", &allowed, 1_030),
            Ok(v.ss58.clone())
        );
        assert_eq!(
            verify(get, "POST", "/chat", b"{} ", &allowed, 1_000)
                .unwrap_err()
                .0,
            401
        );
        assert_eq!(
            verify(get, "POST", "/chat", b"{}", &allowed, 1_061)
                .unwrap_err()
                .1,
            "stale timestamp"
        );
        assert_eq!(
            verify(get, "POST", "/chat", b"{}", &[], 1_000)
                .unwrap_err()
                .0,
            403
        );
    }
}
