//! Random secrets and their peppered hashes: API keys and refresh tokens are stored only as
//! HMAC-SHA256(pepper, secret), hex, and looked up by that hash.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::crypto::{random_bytes, sha256_hex};

/// A random URL-safe token (base58 of `len` random bytes).
pub fn random_token(len: usize) -> String {
    bs58::encode(random_bytes(len)).into_string()
}

/// HMAC-SHA256 of `secret` keyed by `pepper`, hex encoded.
pub fn peppered_hash(pepper: &[u8], secret: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(pepper).expect("HMAC accepts any key length");
    mac.update(secret.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
