//! Substrate sr25519 keys as Bittensor's tools make them, shared by the worker (its hotkey) and
//! the gateway (TAO deposit addresses): a BIP-39 phrase to its mini secret (substrate-bip39:
//! PBKDF2-HMAC-SHA512 over the phrase's entropy, salt "mnemonic", 2048 rounds), hard derivation
//! along `//junction` paths (a junction is its SCALE encoding — a number as `u64`, anything else as
//! a string — padded to 32 bytes, or its BLAKE2b-256 when longer; schnorrkel's
//! `hard_derive_mini_secret_key`, expanded in Ed25519 mode, as sp-core does), and ss58 addresses
//! (prefix 42).

use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey, derive::ChainCode};

/// Generic substrate address format, used by Bittensor.
pub const SS58_PREFIX: u8 = 42;

fn checksum(data: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(data);
    let out = h.finalize();
    [out[0], out[1]]
}

/// The ss58 address (prefix 42) of a public key.
pub fn ss58_encode(public: &[u8; 32]) -> String {
    let mut data = Vec::with_capacity(35);
    data.push(SS58_PREFIX);
    data.extend_from_slice(public);
    let sum = checksum(&data);
    data.extend_from_slice(&sum);
    bs58::encode(data).into_string()
}

/// The public key of an ss58 address (prefix 42, checksum checked).
pub fn ss58_decode(address: &str) -> Option<[u8; 32]> {
    let data = bs58::decode(address).into_vec().ok()?;
    if data.len() != 35 || data[0] != SS58_PREFIX || checksum(&data[..33]) != data[33..] {
        return None;
    }
    data[1..33].try_into().ok()
}

/// The mini secret of a BIP-39 phrase, as substrate derives it (no password).
pub fn mini_secret_from_phrase(phrase: &str) -> Result<[u8; 32], String> {
    let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, phrase)
        .map_err(|e| format!("not a valid BIP-39 phrase: {e}"))?;
    let mut seed = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(&mnemonic.to_entropy(), b"mnemonic", 2048, &mut seed);
    Ok(seed[..32].try_into().expect("64-byte seed"))
}

/// A junction's 32-byte chain code (`DeriveJunction::from(&str)` in sp-core).
fn chain_code(junction: &str) -> [u8; 32] {
    let encoded: Vec<u8> = match junction.parse::<u64>() {
        Ok(n) => n.to_le_bytes().to_vec(),
        Err(_) => {
            let mut out = compact_len(junction.len());
            out.extend_from_slice(junction.as_bytes());
            out
        }
    };
    let mut cc = [0u8; 32];
    if encoded.len() > 32 {
        cc.copy_from_slice(&Blake2b::<U32>::digest(&encoded));
    } else {
        cc[..encoded.len()].copy_from_slice(&encoded);
    }
    cc
}

/// SCALE's compact encoding of a length.
fn compact_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x3f => vec![(n as u8) << 2],
        0x40..=0x3fff => ((n as u16) << 2 | 0b01).to_le_bytes().to_vec(),
        0x4000..=0x3fff_ffff => ((n as u32) << 2 | 0b10).to_le_bytes().to_vec(),
        _ => {
            let bytes = (n as u64).to_le_bytes();
            let len = 8 - bytes.iter().rev().take_while(|b| **b == 0).count();
            let mut out = vec![(((len - 4) as u8) << 2) | 0b11];
            out.extend_from_slice(&bytes[..len]);
            out
        }
    }
}

/// The keypair at `path` (hard junctions only, `//a//b`) below the mini secret `seed`.
pub fn derive_hard(seed: &[u8; 32], path: &[&str]) -> Result<Keypair, String> {
    let mut keypair = MiniSecretKey::from_bytes(seed)
        .map_err(|e| e.to_string())?
        .expand_to_keypair(ExpansionMode::Ed25519);
    for junction in path {
        if junction.is_empty() || junction.contains('/') {
            return Err(format!("`{junction}` is not a junction"));
        }
        let (mini, _) = keypair
            .secret
            .hard_derive_mini_secret_key(Some(ChainCode(chain_code(junction))), b"");
        keypair = mini.expand_to_keypair(ExpansionMode::Ed25519);
    }
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_PHRASE: &str =
        "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

    /// Expected values from `bittensor_wallet.Keypair.create_from_uri` (bittensor 10.5.0's wallet):
    /// the tests in tests/api cross-check more paths against it at run time.
    #[test]
    fn hard_paths_derive_like_substrate() {
        let seed = mini_secret_from_phrase(DEV_PHRASE).unwrap();
        let alice = derive_hard(&seed, &["Alice"]).unwrap();
        assert_eq!(
            ss58_encode(&alice.public.to_bytes()),
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
        );
        let long = derive_hard(
            &seed,
            &["taogate", "01234567-89ab-cdef-0123-456789abcdef", "acct-1"],
        )
        .unwrap();
        assert_eq!(
            ss58_encode(&long.public.to_bytes()),
            "5D4RLS5TuiQua4PWb1VwT98G5WTSXHQ5BPgrCMGbBpNaAHCL"
        );
        let number = derive_hard(&seed, &["taogate", "42"]).unwrap();
        assert_eq!(
            ss58_encode(&number.public.to_bytes()),
            "5HYWnB9QmPuSMnUSMLKJ4TJXGC6q9v1N1VHjECPbajWHiGMQ"
        );
        assert!(derive_hard(&seed, &[""]).is_err());
    }

    #[test]
    fn compact_lengths() {
        assert_eq!(compact_len(7), vec![28]);
        assert_eq!(compact_len(64), vec![0x01, 0x01]);
        assert_eq!(compact_len(0x4000), vec![0x02, 0x00, 0x01, 0x00]);
    }
}
