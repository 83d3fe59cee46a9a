//! The validator hotkey: sr25519 (schnorrkel, signing context `substrate`), loaded from a bittensor
//! wallet keyfile exactly as btwallet writes it (plain JSON at
//! `<wallet_path>/<wallet>/hotkeys/<hotkey>`), with its ss58 address (prefix 42).
//!
//! Load precedence follows btwallet: `secretPhrase` (BIP-39, substrate derivation), else
//! `secretSeed` (32-byte mini secret, expanded in Ed25519 mode as sp-core does), else
//! `privateKey` (64-byte schnorrkel secret). Encrypted keyfiles (`$NACL`,
//! Fernet, Ansible vault) are refused with a clear error: hotkeys are normally stored in the clear.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey, PublicKey, SecretKey, Signature};
use serde_json::Value;

const SIGNING_CONTEXT: &[u8] = b"substrate";

pub struct Hotkey {
    keypair: Keypair,
    seed: Option<[u8; 32]>,
    pub ss58: String,
}

impl Hotkey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let keypair = MiniSecretKey::from_bytes(&seed)
            .expect("32 bytes")
            .expand_to_keypair(ExpansionMode::Ed25519);
        let ss58 = ss58_encode(&keypair.public.to_bytes());
        Self {
            keypair,
            seed: Some(seed),
            ss58,
        }
    }

    pub fn generate() -> Self {
        let seed: [u8; 32] = crate::crypto::random_bytes(32)
            .try_into()
            .expect("32 bytes");
        Self::from_seed(seed)
    }

    /// A BIP-39 phrase as substrate (and btwallet) derive it: the mini secret is the first 32 bytes
    /// of PBKDF2-HMAC-SHA512(entropy, "mnemonic", 2048 rounds) — over the phrase's entropy, not
    /// its words (substrate-bip39), with no password.
    pub fn from_phrase(phrase: &str) -> anyhow::Result<Self> {
        let mini = crate::substrate::mini_secret_from_phrase(phrase)
            .map_err(|e| anyhow::anyhow!("secretPhrase is {e}"))?;
        Ok(Self::from_seed(mini))
    }

    /// `<wallet_path>/<wallet>/hotkeys/<hotkey>`, with `~` expanded.
    pub fn keyfile_path(wallet_path: &str, wallet: &str, hotkey: &str) -> PathBuf {
        let base = match wallet_path.strip_prefix("~/") {
            Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest),
            None => PathBuf::from(wallet_path),
        };
        base.join(wallet).join("hotkeys").join(hotkey)
    }

    pub fn from_keyfile(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path)
            .with_context(|| format!("reading hotkey file {}", path.display()))?;
        Self::from_keyfile_data(&data).with_context(|| format!("hotkey file {}", path.display()))
    }

    pub fn from_keyfile_data(data: &[u8]) -> anyhow::Result<Self> {
        for (marker, kind) in [
            (&b"$NACL"[..], "NaCl"),
            (b"gAAAAA", "legacy Fernet"),
            (b"$ANSIBLE_VAULT", "Ansible vault"),
        ] {
            if data.starts_with(marker) {
                bail!(
                    "the keyfile is encrypted ({kind}); taogate needs an unencrypted hotkey (btcli creates hotkeys unencrypted)"
                );
            }
        }
        let json: Value = serde_json::from_slice(data).context("keyfile is not JSON")?;
        let field = |name: &str| {
            json.get(name)
                .and_then(Value::as_str)
                .map(decode_hex)
                .transpose()
        };
        if let Some(phrase) = json.get("secretPhrase").and_then(Value::as_str) {
            return Self::from_phrase(phrase);
        }
        if let Some(seed) = field("secretSeed")? {
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| anyhow::anyhow!("secretSeed must be 32 bytes"))?;
            return Ok(Self::from_seed(seed));
        }
        if let Some(private) = field("privateKey")? {
            let secret =
                SecretKey::from_bytes(&private).map_err(|e| anyhow::anyhow!("privateKey: {e}"))?;
            let keypair = secret.to_keypair();
            let ss58 = ss58_encode(&keypair.public.to_bytes());
            return Ok(Self {
                keypair,
                seed: None,
                ss58,
            });
        }
        bail!("the keyfile has no secret (secretSeed or privateKey): it is public-only")
    }

    /// The keyfile JSON btwallet writes for an unencrypted hotkey (for the dev subnet).
    pub fn keyfile_json(&self) -> String {
        let public = format!("0x{}", hex::encode(self.keypair.public.to_bytes()));
        let mut v = serde_json::json!({
            "cryptoType": 1,
            "ss58Address": self.ss58,
            "publicKey": public,
            "accountId": public,
            "privateKey": format!("0x{}", hex::encode(self.keypair.secret.to_bytes())),
        });
        if let Some(seed) = self.seed {
            v["secretSeed"] = Value::String(format!("0x{}", hex::encode(seed)));
        }
        v.to_string()
    }

    /// sr25519 signature over `message`, `0x`-hex encoded.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        let sig = self.keypair.sign_simple(SIGNING_CONTEXT, message);
        format!("0x{}", hex::encode(sig.to_bytes()))
    }
}

/// Verifies a `0x`-hex sr25519 signature by the owner of `ss58` over `message`.
pub fn verify_hex(ss58: &str, message: &[u8], signature: &str) -> bool {
    let Some(public) = ss58_decode(ss58).and_then(|pk| PublicKey::from_bytes(&pk).ok()) else {
        return false;
    };
    let Some(hex_sig) = signature.strip_prefix("0x") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(sig) = Signature::from_bytes(&bytes) else {
        return false;
    };
    public.verify_simple(SIGNING_CONTEXT, message, &sig).is_ok()
}

fn decode_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).context("not hex")
}

pub use crate::substrate::{ss58_decode, ss58_encode};

#[cfg(test)]
mod tests {
    use super::*;

    /// Substrate's well-known dev account //Alice: mini secret and ss58 from `subkey inspect //Alice`.
    const ALICE_SEED: &str = "e5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
    const ALICE_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    /// Substrate's DEV_PHRASE root account (`subkey inspect "bottom drive obey …"`, no derivation).
    #[test]
    fn phrase_derives_like_substrate() {
        let phrase = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
        assert_eq!(
            Hotkey::from_phrase(phrase).unwrap().ss58,
            "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
        );
        assert!(Hotkey::from_phrase("not a phrase at all").is_err());
    }

    #[test]
    fn seed_expands_like_sp_core() {
        let seed: [u8; 32] = hex::decode(ALICE_SEED).unwrap().try_into().unwrap();
        assert_eq!(Hotkey::from_seed(seed).ss58, ALICE_SS58);
    }

    #[test]
    fn keyfile_round_trip_and_signatures() {
        let key = Hotkey::generate();
        let again = Hotkey::from_keyfile_data(key.keyfile_json().as_bytes()).unwrap();
        assert_eq!(again.ss58, key.ss58);
        let sig = key.sign_hex(b"hello");
        assert!(verify_hex(&key.ss58, b"hello", &sig));
        assert!(!verify_hex(&key.ss58, b"hellO", &sig));
        assert!(!verify_hex(&Hotkey::generate().ss58, b"hello", &sig));
        assert!(
            !verify_hex(&key.ss58, b"hello", &sig[2..]),
            "bare hex is refused"
        );
        // privateKey alone gives the same account.
        let mut v: Value = serde_json::from_str(&key.keyfile_json()).unwrap();
        v.as_object_mut().unwrap().remove("secretSeed");
        assert_eq!(
            Hotkey::from_keyfile_data(v.to_string().as_bytes())
                .unwrap()
                .ss58,
            key.ss58
        );
    }

    #[test]
    fn encrypted_and_public_only_keyfiles_are_refused_clearly() {
        let err = Hotkey::from_keyfile_data(b"$NACL\x00\x01")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("encrypted"), "{err}");
        let err = Hotkey::from_keyfile_data(br#"{"ss58Address":"5Grw"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("public-only"), "{err}");
    }

    #[test]
    fn ss58_rejects_bad_checksums() {
        assert!(ss58_decode(ALICE_SS58).is_some());
        let mut bad = ALICE_SS58.to_owned();
        bad.replace_range(10..11, "x");
        assert!(ss58_decode(&bad).is_none());
    }
}
