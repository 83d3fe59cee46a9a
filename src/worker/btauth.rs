//! `btauth/1`, bittensor 11's header scheme (`bittensor/http_auth.py`, 11.3.0). The signed payload
//! is the newline-joined UTF-8 of `btauth/1`, the scheme (`sr25519`), the uppercase method, the
//! request target (path and `?query`, exactly as sent), the lowercase-hex sha256 of the raw body,
//! the decimal nanosecond nonce, the sender ss58 and the receiver ss58. Verifiers accept 10 s back
//! and 2 s forward, and refuse a (hotkey, nonce) seen in the last 60 s — so nonces must be unique
//! per hotkey even under concurrency: [`NonceSource`] hands out strictly increasing ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::hotkey::{Hotkey, verify_hex};
use crate::crypto::sha256_hex;

pub const VERSION: &str = "X-Bittensor-Version";
pub const HOTKEY: &str = "X-Bittensor-Hotkey";
pub const RECEIVER: &str = "X-Bittensor-Receiver";
pub const NONCE: &str = "X-Bittensor-Nonce";
pub const SIGNATURE: &str = "X-Bittensor-Signature";

const MAX_AGE_NS: i128 = 10_000_000_000;
const MAX_SKEW_NS: i128 = 2_000_000_000;
const REPLAY_RETENTION_NS: i128 = 60_000_000_000;

/// Strictly increasing nanosecond nonces (the clock, bumped when two requests share a tick).
#[derive(Default)]
pub struct NonceSource(AtomicU64);

impl NonceSource {
    pub fn next(&self, now_ns: u64) -> u64 {
        let mut prev = self.0.load(Ordering::Relaxed);
        loop {
            let candidate = now_ns.max(prev + 1);
            match self.0.compare_exchange_weak(
                prev,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(actual) => prev = actual,
            }
        }
    }
}

pub fn payload(
    method: &str,
    target: &str,
    body: &[u8],
    nonce: u64,
    sender: &str,
    receiver: Option<&str>,
) -> String {
    [
        "btauth/1",
        "sr25519",
        &method.to_uppercase(),
        target,
        &sha256_hex(body),
        &nonce.to_string(),
        sender,
        receiver.unwrap_or("-"),
    ]
    .join("\n")
}

/// The headers of a request from `hotkey` to `receiver`.
pub fn sign(
    hotkey: &Hotkey,
    method: &str,
    target: &str,
    body: &[u8],
    receiver: &str,
    nonce: u64,
) -> Vec<(&'static str, String)> {
    let signature = hotkey
        .sign_hex(payload(method, target, body, nonce, &hotkey.ss58, Some(receiver)).as_bytes());
    vec![
        (VERSION, "1".into()),
        (HOTKEY, hotkey.ss58.clone()),
        (RECEIVER, receiver.to_owned()),
        (NONCE, nonce.to_string()),
        (SIGNATURE, signature),
    ]
}

/// The receiving side, as `http_auth.verify` checks it (used by the dev stand-ins).
#[derive(Default)]
pub struct Verifier {
    seen: Mutex<HashMap<(String, u64), i128>>,
}

impl Verifier {
    /// Returns the sender, or why the request is refused (all answered 401).
    pub fn verify(
        &self,
        header: impl Fn(&str) -> Option<String>,
        method: &str,
        target: &str,
        body: &[u8],
        own: &str,
        now_ns: i128,
    ) -> Result<String, String> {
        let get = |name: &str| header(name).ok_or_else(|| format!("MalformedAuth: missing {name}"));
        if get(VERSION)? != "1" {
            return Err("MalformedAuth: unsupported version".into());
        }
        let sender = get(HOTKEY)?;
        let nonce: u64 = get(NONCE)?
            .trim()
            .parse()
            .map_err(|_| "MalformedAuth: nonce".to_owned())?;
        let receiver = get(RECEIVER)?;
        if receiver != own {
            return Err("WrongReceiver".into());
        }
        let age = now_ns - nonce as i128;
        if age > MAX_AGE_NS || -age > MAX_SKEW_NS {
            return Err("StaleRequest".into());
        }
        let message = payload(method, target, body, nonce, &sender, Some(&receiver));
        if !verify_hex(&sender, message.as_bytes(), &get(SIGNATURE)?) {
            return Err("BadSignature".into());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now_ns - *at < REPLAY_RETENTION_NS);
        if seen.insert((sender.clone(), nonce), now_ns).is_some() {
            return Err("ReplayedRequest".into());
        }
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_unique_under_concurrency() {
        let source = std::sync::Arc::new(NonceSource::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = source.clone();
                std::thread::spawn(move || (0..1000).map(|_| s.next(42)).collect::<Vec<u64>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a nonce was handed out twice");
    }

    #[test]
    fn verifier_accepts_once_and_refuses_tampering() {
        let sender = Hotkey::generate();
        let receiver = Hotkey::generate().ss58;
        let now: i128 = 1_800_000_000_000_000_000;
        let headers = sign(
            &sender,
            "post",
            "/v1/chat/completions?x=1",
            b"{}",
            &receiver,
            now as u64,
        );
        let get = |h: &Vec<(&'static str, String)>| {
            let h = h.clone();
            move |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        };
        let v = Verifier::default();
        assert_eq!(
            v.verify(
                get(&headers),
                "POST",
                "/v1/chat/completions?x=1",
                b"{}",
                &receiver,
                now
            ),
            Ok(sender.ss58.clone())
        );
        assert_eq!(
            v.verify(
                get(&headers),
                "POST",
                "/v1/chat/completions?x=1",
                b"{}",
                &receiver,
                now
            ),
            Err("ReplayedRequest".into())
        );
        let fresh = sign(
            &sender,
            "POST",
            "/v1/chat/completions?x=1",
            b"{}",
            &receiver,
            now as u64 + 1,
        );
        assert_eq!(
            v.verify(
                get(&fresh),
                "POST",
                "/v1/chat/completions?x=1",
                b"{ }",
                &receiver,
                now
            ),
            Err("BadSignature".into())
        );
        assert_eq!(
            v.verify(
                get(&fresh),
                "POST",
                "/v1/chat/completions",
                b"{}",
                &receiver,
                now
            ),
            Err("BadSignature".into())
        );
        assert_eq!(
            v.verify(
                get(&fresh),
                "POST",
                "/v1/chat/completions?x=1",
                b"{}",
                &receiver,
                now + 11_000_000_000
            ),
            Err("StaleRequest".into())
        );
        assert_eq!(
            v.verify(
                get(&fresh),
                "POST",
                "/v1/chat/completions?x=1",
                b"{}",
                "5Other",
                now
            ),
            Err("WrongReceiver".into())
        );
    }
}
