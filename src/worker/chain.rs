//! The metagraph from a subtensor node: JSON-RPC `state_call` of
//! `NeuronInfoRuntimeApi_get_neurons_lite(netuid)` and SCALE decoding of `Vec<NeuronInfoLite>`
//! (field order as in opentensor/subtensor `rpc_info/neuron_info.rs`; `AxonInfo` as in the pallet).

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::hotkey::ss58_encode;
use super::metagraph::{Neuron, Snapshot};

/// A cursor over SCALE bytes.
pub struct Scale<'a> {
    bytes: &'a [u8],
}

impl<'a> Scale<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        if self.bytes.len() < n {
            bail!("SCALE: wanted {n} bytes, {} left", self.bytes.len());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    pub fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> anyhow::Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => bail!("SCALE: invalid bool {b}"),
        }
    }

    pub fn u16(&mut self) -> anyhow::Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn u128(&mut self) -> anyhow::Result<u128> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// SCALE compact integer (single-byte, two-byte, four-byte and big-integer modes).
    pub fn compact(&mut self) -> anyhow::Result<u128> {
        let first = self.u8()?;
        Ok(match first & 0b11 {
            0 => u128::from(first >> 2),
            1 => u128::from(u16::from_le_bytes([first, self.u8()?]) >> 2),
            2 => {
                let rest: [u8; 3] = self.array()?;
                u128::from(u32::from_le_bytes([first, rest[0], rest[1], rest[2]]) >> 2)
            }
            _ => {
                let len = usize::from(first >> 2) + 4;
                if len > 16 {
                    bail!("SCALE: compact of {len} bytes");
                }
                let mut buf = [0u8; 16];
                buf[..len].copy_from_slice(self.take(len)?);
                u128::from_le_bytes(buf)
            }
        })
    }

    fn account(&mut self) -> anyhow::Result<String> {
        Ok(ss58_encode(&self.array()?))
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// `ip` as stored on chain: the integer form of an IPv4 (low 32 bits) or IPv6 address.
fn ip_string(ip: u128, ip_type: u8) -> String {
    if ip == 0 {
        return "0.0.0.0".into();
    }
    match ip_type {
        4 => Ipv4Addr::from(ip as u32).to_string(),
        _ => Ipv6Addr::from(ip).to_string(),
    }
}

/// Decodes `Vec<NeuronInfoLite<AccountId32>>`.
pub fn decode_neurons_lite(bytes: &[u8]) -> anyhow::Result<Vec<Neuron>> {
    let mut s = Scale::new(bytes);
    let count = s.compact()? as usize;
    let mut neurons = Vec::with_capacity(count.min(4096));
    for i in 0..count {
        let n = (|| {
            let hotkey = s.account()?;
            let _coldkey = s.account()?;
            let uid = s.compact()? as u16;
            let _netuid = s.compact()?;
            let _active = s.bool()?;
            // AxonInfo { block u64, version u32, ip u128, port u16, ip_type u8, protocol u8, placeholder1 u8, placeholder2 u8 }
            let (_block, _version, ip, port, ip_type) =
                (s.u64()?, s.u32()?, s.u128()?, s.u16()?, s.u8()?);
            let (_protocol, _p1, _p2) = (s.u8()?, s.u8()?, s.u8()?);
            // PrometheusInfo { block u64, version u32, ip u128, port u16, ip_type u8 }
            let _ = (s.u64()?, s.u32()?, s.u128()?, s.u16()?, s.u8()?);
            let stakes = s.compact()? as usize;
            for _ in 0..stakes {
                let _ = (s.account()?, s.compact()?);
            }
            let _rank = s.compact()?;
            let _emission = s.compact()?;
            let incentive = s.compact()?;
            for _ in 0..5 {
                // consensus, trust, validator_trust, dividends, last_update
                s.compact()?;
            }
            let validator_permit = s.bool()?;
            let _pruning = s.compact()?;
            Ok::<_, anyhow::Error>(Neuron {
                uid,
                hotkey,
                ip: ip_string(ip, ip_type),
                port,
                incentive: incentive as f64 / f64::from(u16::MAX),
                validator_permit,
            })
        })()
        .with_context(|| format!("neuron #{i}"))?;
        neurons.push(n);
    }
    if !s.is_empty() {
        bail!("SCALE: trailing bytes after {count} neurons");
    }
    Ok(neurons)
}

/// Reads the subnet's neurons from a subtensor node over HTTP JSON-RPC.
pub async fn fetch_snapshot(
    client: &reqwest::Client,
    url: &str,
    netuid: u16,
) -> anyhow::Result<Snapshot> {
    let call = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let params = json!([
        "NeuronInfoRuntimeApi_get_neurons_lite",
        format!("0x{}", hex::encode(netuid.to_le_bytes()))
    ]);
    let res: Value = client
        .post(url)
        .json(&call("state_call", params))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(err) = res.get("error") {
        bail!("state_call failed: {err}");
    }
    let hex_result = res
        .get("result")
        .and_then(Value::as_str)
        .context("state_call: no result")?;
    let bytes = hex::decode(hex_result.trim_start_matches("0x"))
        .context("state_call: result is not hex")?;
    let neurons = decode_neurons_lite(&bytes)?;
    let header: Value = client
        .post(url)
        .json(&call("chain_getHeader", json!([])))
        .send()
        .await?
        .json()
        .await
        .unwrap_or_default();
    let block = header
        .pointer("/result/number")
        .and_then(Value::as_str)
        .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    Ok(Snapshot {
        netuid,
        block,
        neurons,
    })
}

/// SCALE encoding of `Vec<NeuronInfoLite>` from the documented types, for tests and the dev node.
pub mod encode {
    use super::super::hotkey::ss58_decode;
    use super::super::metagraph::Neuron;

    pub fn compact(out: &mut Vec<u8>, v: u128) {
        match v {
            0..=0x3f => out.push((v as u8) << 2),
            0x40..=0x3fff => out.extend_from_slice(&(((v as u16) << 2) | 1).to_le_bytes()),
            0x4000..=0x3fff_ffff => out.extend_from_slice(&(((v as u32) << 2) | 2).to_le_bytes()),
            _ => {
                let bytes = v.to_le_bytes();
                let len = 16 - (v.leading_zeros() as usize / 8);
                out.push((((len - 4) as u8) << 2) | 3);
                out.extend_from_slice(&bytes[..len]);
            }
        }
    }

    /// One neuron with its axon at `neuron.ip` (IPv4) and a stake entry.
    pub fn neurons_lite(neurons: &[Neuron]) -> Vec<u8> {
        let mut out = Vec::new();
        compact(&mut out, neurons.len() as u128);
        for n in neurons {
            out.extend_from_slice(&ss58_decode(&n.hotkey).unwrap_or([7; 32]));
            out.extend_from_slice(&[9u8; 32]);
            compact(&mut out, u128::from(n.uid));
            compact(&mut out, 1);
            out.push(1);
            let ip: std::net::Ipv4Addr = n.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            let ip_int = if ip.is_unspecified() {
                0
            } else {
                u128::from(u32::from(ip))
            };
            out.extend_from_slice(&4_000_000u64.to_le_bytes());
            out.extend_from_slice(&10_005_000u32.to_le_bytes());
            out.extend_from_slice(&ip_int.to_le_bytes());
            out.extend_from_slice(&n.port.to_le_bytes());
            out.extend_from_slice(&[4, 4, 0, 0]);
            out.extend_from_slice(&0u64.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&0u128.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.push(4);
            compact(&mut out, 1);
            out.extend_from_slice(&[9u8; 32]);
            compact(&mut out, 1_000_000_000_000);
            compact(&mut out, 100);
            compact(&mut out, 123_456_789);
            compact(
                &mut out,
                (n.incentive * f64::from(u16::MAX)).round() as u128,
            );
            for v in [1u128, 2, 3, 4, 4_000_123] {
                compact(&mut out, v);
            }
            out.push(u8::from(n.validator_permit));
            compact(&mut out, 65_535);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::hotkey::Hotkey;

    #[test]
    fn compact_round_trips_every_mode() {
        for v in [
            0u128,
            1,
            63,
            64,
            16_383,
            16_384,
            1 << 30,
            (1 << 30) - 1,
            u64::MAX as u128,
            u128::MAX,
        ] {
            let mut buf = Vec::new();
            encode::compact(&mut buf, v);
            assert_eq!(Scale::new(&buf).compact().unwrap(), v, "{v}");
        }
        assert_eq!(
            Scale::new(&[0x15, 0x01]).compact().unwrap(),
            69,
            "two-byte mode"
        );
    }

    #[test]
    fn decodes_neurons_lite() {
        let neurons = vec![
            Neuron {
                uid: 0,
                hotkey: Hotkey::generate().ss58,
                ip: "10.1.2.3".into(),
                port: 8091,
                incentive: 0.5,
                validator_permit: true,
            },
            Neuron {
                uid: 300,
                hotkey: Hotkey::generate().ss58,
                ip: "0.0.0.0".into(),
                port: 0,
                incentive: 0.0,
                validator_permit: false,
            },
        ];
        let decoded = decode_neurons_lite(&encode::neurons_lite(&neurons)).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(
            (decoded[0].uid, decoded[0].ip.as_str(), decoded[0].port),
            (0, "10.1.2.3", 8091)
        );
        assert_eq!(decoded[0].hotkey, neurons[0].hotkey);
        assert!((decoded[0].incentive - 0.5).abs() < 1e-4);
        assert!(decoded[0].validator_permit);
        assert_eq!((decoded[1].uid, decoded[1].ip.as_str()), (300, "0.0.0.0"));
        assert!(!decoded[1].is_serving());
        let bytes = encode::neurons_lite(&neurons);
        assert!(
            decode_neurons_lite(&bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        assert_eq!(
            ip_string(u128::from(u32::from(Ipv4Addr::new(1, 2, 3, 4))), 4),
            "1.2.3.4"
        );
    }
}
