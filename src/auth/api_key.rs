//! API key format: `tg_` + base58 of 32 random bytes. Only the peppered hash is stored
//! ([`super::secrets::peppered_hash`]); the secret is shown once, at creation or rotation.
//!
//! NEVER CHANGE THE PREFIX of existing keys: it is how secret scanners and support recognise them,
//! and a key without it is rejected before any lookup.

use super::secrets;

pub const PREFIX: &str = "tg_";
const RANDOM_BYTES: usize = 32;
/// Characters of the secret kept for display, e.g. `tg_7Hq2`.
const DISPLAY_PREFIX_LEN: usize = 7;

/// A freshly generated key: the secret (shown once) and what is stored about it.
pub struct NewSecret {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
    pub last4: String,
}

pub fn generate(pepper: &[u8]) -> NewSecret {
    let secret = format!("{PREFIX}{}", secrets::random_token(RANDOM_BYTES));
    NewSecret {
        hash: secrets::peppered_hash(pepper, &secret),
        prefix: secret[..DISPLAY_PREFIX_LEN].to_owned(),
        last4: secret[secret.len() - 4..].to_owned(),
        secret,
    }
}

/// The lookup hash of a presented key, or `None` when it cannot be one of ours (wrong prefix,
/// not base58, wrong length): such keys are refused without touching the database.
pub fn lookup_hash(pepper: &[u8], presented: &str) -> Option<String> {
    let body = presented.strip_prefix(PREFIX)?;
    let decoded = bs58::decode(body).into_vec().ok()?;
    (decoded.len() == RANDOM_BYTES).then(|| secrets::peppered_hash(pepper, presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_recognised_and_distinct() {
        let pepper = b"0123456789abcdef0123456789abcdef";
        let a = generate(pepper);
        let b = generate(pepper);
        assert!(a.secret.starts_with("tg_"));
        assert_ne!(a.secret, b.secret);
        assert_eq!(lookup_hash(pepper, &a.secret), Some(a.hash.clone()));
        assert_ne!(
            lookup_hash(b"another-pepper-another-pepper-xx", &a.secret),
            Some(a.hash)
        );
        assert!(a.secret.ends_with(&a.last4));
        assert!(a.secret.starts_with(&a.prefix));
    }

    #[test]
    fn garbled_keys_are_refused_without_lookup() {
        let pepper = b"0123456789abcdef0123456789abcdef";
        let good = generate(pepper).secret;
        assert_eq!(lookup_hash(pepper, &good[3..]), None, "missing prefix");
        assert_eq!(
            lookup_hash(pepper, &good[..good.len() - 2]),
            None,
            "truncated"
        );
        assert_eq!(lookup_hash(pepper, "tg_0OIl"), None, "not base58");
        assert_eq!(lookup_hash(pepper, ""), None);
    }
}
