//! Coinbase Developer Platform (CDP) API keys: every Business API call carries a short-lived JWT
//! signed with the key's secret (`Authorization: Bearer <jwt>`). The secret is either Ed25519 (CDP's
//! default: base64 of the 32-byte seed and the 32-byte public key) or ECDSA P-256 (a PEM, SEC1 or
//! PKCS#8). The JWT, as CDP documents it: header `{"alg": "EdDSA" | "ES256", "kid": <key id>, "typ":
//! "JWT", "nonce": <16 random bytes, hex>}`, claims `{"sub": <key id>, "iss": "cdp", "nbf": now,
//! "exp": now + 120, "uris": ["<METHOD> <host><path>"]}` (the older single `uri` claim is sent
//! too). Signed here with aws-lc-rs (ES256 as the fixed 64-byte `r‖s` JWS wants).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A CDP API key's secret, ready to sign.
pub enum CdpKey {
    Ed25519(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

/// How long a token lives (CDP's limit is two minutes).
pub const TOKEN_SECS: i64 = 120;

impl CdpKey {
    /// Reads a secret as the CDP portal hands it out; why not, in words safe to show.
    pub fn parse(secret: &str) -> Result<Self, &'static str> {
        let secret = secret.trim().replace("\\n", "\n");
        if secret.contains("-----BEGIN") {
            let body: String = secret
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::trim)
                .collect();
            let der = STANDARD
                .decode(body)
                .map_err(|_| "the PEM's body is not base64")?;
            return EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map(Self::Ec)
                .map_err(|_| "the PEM is not an ECDSA P-256 private key");
        }
        let raw = STANDARD
            .decode(&secret)
            .map_err(|_| "an Ed25519 secret is base64 (or give an EC key as PEM)")?;
        let pair = match raw.len() {
            64 => Ed25519KeyPair::from_seed_and_public_key(&raw[..32], &raw[32..]),
            32 => Ed25519KeyPair::from_seed_unchecked(&raw),
            _ => return Err("an Ed25519 secret is 64 bytes (seed and public key) in base64"),
        };
        pair.map(Self::Ed25519)
            .map_err(|_| "the Ed25519 secret's public half does not match its seed")
    }

    /// `ed25519` or `ec-p256`: what may be shown of the key.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "ed25519",
            Self::Ec(_) => "ec-p256",
        }
    }

    /// A bearer token for one `method` call to `host` (with its port, if any) and `path`, at `now`.
    pub fn bearer(
        &self,
        key_id: &str,
        method: &str,
        host: &str,
        path: &str,
        now: i64,
    ) -> Result<String, &'static str> {
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "no randomness")?;
        let alg = match self {
            Self::Ed25519(_) => "EdDSA",
            Self::Ec(_) => "ES256",
        };
        let uri = format!("{method} {host}{path}");
        let header = serde_json::json!({"alg": alg, "kid": key_id, "typ": "JWT", "nonce": hex::encode(nonce)});
        let claims = serde_json::json!({"sub": key_id, "iss": "cdp", "nbf": now,
            "exp": now + TOKEN_SECS, "uris": [uri], "uri": uri});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match self {
            Self::Ed25519(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
            Self::Ec(pair) => pair
                .sign(&SystemRandom::new(), signing_input.as_bytes())
                .map_err(|_| "signing failed")?
                .as_ref()
                .to_vec(),
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ED25519, KeyPair, UnparsedPublicKey};

    #[test]
    fn an_ed25519_key_signs_a_token_its_public_half_verifies() {
        let seed = [7u8; 32];
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let secret = STANDARD.encode([seed.as_slice(), &public].concat());
        let key = CdpKey::parse(&secret).unwrap();
        assert_eq!(key.kind(), "ed25519");
        let token = key
            .bearer(
                "kid-1",
                "POST",
                "business.coinbase.com",
                "/api/v1/checkouts",
                1000,
            )
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims["uris"][0],
            "POST business.coinbase.com/api/v1/checkouts"
        );
        assert_eq!(claims["exp"], 1120);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(signed.as_bytes(), &sig)
                .is_ok()
        );
        // A seed with someone else's public half, garbage, and a non-EC PEM are refused.
        let wrong = STANDARD.encode([seed.as_slice(), &[1u8; 32]].concat());
        assert!(CdpKey::parse(&wrong).is_err());
        assert!(CdpKey::parse("not base64 !").is_err());
        assert!(
            CdpKey::parse("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----")
                .is_err()
        );
    }
}
