//! Provider secrets at rest: sealed with AES-256-GCM under `payments.encryption_key` (32 bytes,
//! from configuration, never stored), a fresh random 96-bit nonce per value, and associated data
//! that names what the value is and whose it is — so a sealed value copied to another tenant's row
//! or another field does not open. Stored as `v1.<base64(nonce ‖ ciphertext ‖ tag)>`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::crypto::random_bytes;

const VERSION: &str = "v1.";

/// Why a configured key or a sealed value was refused.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the encryption key must be 32 bytes, given as 64 hex digits or base64")]
    BadKey,
    #[error("a sealed value does not open with this key (wrong key, or tampered)")]
    Open,
}

/// A sealing key. Its `Debug` shows nothing of the key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// From the configured key: 64 hex digits or the base64 of 32 bytes.
    pub fn from_config(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SealError::BadKey)?
        } else {
            STANDARD.decode(text).map_err(|_| SealError::BadKey)?
        };
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// Seals `plain`, bound to `context` (e.g. `stripe.secret_key:<tenant id>`).
    pub fn seal(&self, plain: &[u8], context: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes(NONCE_LEN)
            .try_into()
            .expect("NONCE_LEN random bytes");
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM seals any input shorter than 64 GiB");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    /// Opens what [`Sealer::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed.strip_prefix(VERSION).ok_or(SealError::Open)?;
        let mut bytes = STANDARD.decode(body).map_err(|_| SealError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let mut rest = bytes.split_off(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = bytes.try_into().map_err(|_| SealError::Open)?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut rest,
            )
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let sealer = Sealer::from_config(KEY).unwrap();
        let sealed = sealer.seal(b"sk_test_123", "stripe.secret_key:t1");
        assert!(!sealed.contains("sk_test"));
        assert_eq!(
            sealer.open(&sealed, "stripe.secret_key:t1").unwrap(),
            b"sk_test_123"
        );
        // Another tenant's row, another field, another key, a flipped bit: nothing opens.
        assert!(sealer.open(&sealed, "stripe.secret_key:t2").is_err());
        assert!(sealer.open(&sealed, "stripe.webhook_secrets:t1").is_err());
        let other = Sealer::from_config(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(other.open(&sealed, "stripe.secret_key:t1").is_err());
        let mut tampered = STANDARD.decode(&sealed[3..]).unwrap();
        tampered[20] ^= 1;
        let tampered = format!("v1.{}", STANDARD.encode(tampered));
        assert!(sealer.open(&tampered, "stripe.secret_key:t1").is_err());
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sealed, sealer.seal(b"sk_test_123", "stripe.secret_key:t1"));
    }

    #[test]
    fn keys_of_the_wrong_size_are_refused() {
        assert!(Sealer::from_config("").is_err());
        assert!(Sealer::from_config(&KEY[..62]).is_err());
        assert!(Sealer::from_config(&STANDARD.encode([1u8; 16])).is_err());
    }
}
