//! A subtensor node over JSON-RPC (HTTP POST): the genesis hash, the finalized head, block hashes
//! by number, and `System.Account` storage at a block. Storage keys are
//! `twox128("System") ++ twox128("Account") ++ blake2_128(pk) ++ pk`; values are SCALE
//! `AccountInfo { nonce, consumers, providers, sufficients: u32, data: AccountData { free,
//! reserved, frozen, flags } }` with u128 balances (substrate's layout, 80 bytes) — a u64 layout
//! (48 bytes) is read too; any other length is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use parity_scale_codec::Decode;
use serde_json::{Value, json};
use twox_hash::XxHash64;

/// A node call that failed (retried on the next pass).
#[derive(Debug, thiserror::Error)]
#[error("subtensor node: {0}")]
pub struct ChainError(pub String);

fn twox128(data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&XxHash64::oneshot(0, data).to_le_bytes());
    out[8..].copy_from_slice(&XxHash64::oneshot(1, data).to_le_bytes());
    out
}

/// The `System.Account` storage key of a public key, `0x…`.
pub fn account_key(public: &[u8; 32]) -> String {
    let mut key = Vec::with_capacity(80);
    key.extend_from_slice(&twox128(b"System"));
    key.extend_from_slice(&twox128(b"Account"));
    key.extend_from_slice(&Blake2b::<U16>::digest(public));
    key.extend_from_slice(public);
    format!("0x{}", hex::encode(key))
}

#[derive(Decode)]
struct AccountInfoWide {
    _nonce: u32,
    _consumers: u32,
    _providers: u32,
    _sufficients: u32,
    free: u128,
    _reserved: u128,
    _frozen: u128,
    _flags: u128,
}

#[derive(Decode)]
struct AccountInfoNarrow {
    _nonce: u32,
    _consumers: u32,
    _providers: u32,
    _sufficients: u32,
    free: u64,
    _reserved: u64,
    _frozen: u64,
    _flags: u64,
}

/// The free balance in a SCALE `AccountInfo` (`None`: not an AccountInfo).
pub fn free_of(value: &[u8]) -> Option<u128> {
    let mut input = value;
    match value.len() {
        80 => AccountInfoWide::decode(&mut input).ok().map(|a| a.free),
        48 => AccountInfoNarrow::decode(&mut input)
            .ok()
            .map(|a| u128::from(a.free)),
        _ => None,
    }
}

/// A subtensor node.
pub struct Node {
    url: String,
    client: reqwest::Client,
    id: AtomicU64,
}

fn hash_text(v: &Value, what: &str) -> Result<String, ChainError> {
    let s = v
        .as_str()
        .ok_or_else(|| ChainError(format!("{what} is not a hash")))?;
    let ok = s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| s.to_ascii_lowercase())
        .ok_or_else(|| ChainError(format!("{what} is not a 32-byte hash")))
}

impl Node {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ChainError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ChainError(e.to_string()))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            id: AtomicU64::new(1),
        })
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, ChainError> {
        let id = self.id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let res = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ChainError(format!("{method}: {}", e.without_url())))?;
        let answer: Value = res
            .json()
            .await
            .map_err(|_| ChainError(format!("{method}: the answer is not JSON")))?;
        if let Some(err) = answer.get("error") {
            return Err(ChainError(format!("{method}: {err}")));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| ChainError(format!("{method}: no result")))
    }

    /// The chain's genesis hash (block 0).
    pub async fn genesis(&self) -> Result<String, ChainError> {
        self.block_hash(0).await
    }

    /// The hash of block `number`.
    pub async fn block_hash(&self, number: u64) -> Result<String, ChainError> {
        let v = self.call("chain_getBlockHash", json!([number])).await?;
        hash_text(&v, "chain_getBlockHash")
    }

    /// The finalized head: (number, hash).
    pub async fn finalized(&self) -> Result<(u64, String), ChainError> {
        let hash = hash_text(
            &self.call("chain_getFinalizedHead", json!([])).await?,
            "chain_getFinalizedHead",
        )?;
        let header = self.call("chain_getHeader", json!([hash])).await?;
        let number = header
            .get("number")
            .and_then(Value::as_str)
            .and_then(|n| n.strip_prefix("0x"))
            .and_then(|n| u64::from_str_radix(n, 16).ok())
            .ok_or_else(|| ChainError("chain_getHeader: no block number".into()))?;
        Ok((number, hash))
    }

    /// The free balances of `keys` at block `at` (the best block when `None`); an absent account
    /// is 0.
    pub async fn free_balances(
        &self,
        keys: &[String],
        at: Option<&str>,
    ) -> Result<HashMap<String, u128>, ChainError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let answer = self
                .call("state_queryStorageAt", json!([chunk, at]))
                .await?;
            for set in answer.as_array().into_iter().flatten() {
                for change in set["changes"].as_array().into_iter().flatten() {
                    let (Some(key), value) = (change[0].as_str(), &change[1]) else {
                        continue;
                    };
                    let free = match value.as_str() {
                        None => 0,
                        Some(hexed) => {
                            let bytes = hex::decode(hexed.trim_start_matches("0x"))
                                .map_err(|_| ChainError("a storage value is not hex".into()))?;
                            free_of(&bytes).ok_or_else(|| {
                                ChainError("a storage value is not an AccountInfo".into())
                            })?
                        }
                    };
                    out.insert(key.to_ascii_lowercase(), free);
                }
            }
        }
        for key in keys {
            out.entry(key.clone()).or_insert(0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The well-known `System.Account` key of //Alice.
    #[test]
    fn alices_account_key() {
        let alice = hex::decode("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
            .unwrap();
        assert_eq!(
            account_key(&alice.try_into().unwrap()),
            "0x26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9de1e86a9a8c739864cf3cc5ec2bea59fd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
        );
    }

    #[test]
    fn account_infos_of_both_layouts() {
        let mut wide = vec![0u8; 16];
        wide.extend_from_slice(&5_000_000_000u128.to_le_bytes());
        wide.extend_from_slice(&[0u8; 48]);
        assert_eq!(free_of(&wide), Some(5_000_000_000));
        let mut narrow = vec![1u8; 16];
        narrow.extend_from_slice(&7u64.to_le_bytes());
        narrow.extend_from_slice(&[0u8; 24]);
        assert_eq!(free_of(&narrow), Some(7));
        assert_eq!(free_of(&wide[..79]), None);
    }
}
