//! Hashing and randomness shared by the gateway and the worker: the OS CSPRNG and SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// `len` bytes from the OS CSPRNG.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// Plain SHA-256, hex (fingerprints of request bodies).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
