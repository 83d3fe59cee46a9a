//! The miners a worker may query: a metagraph snapshot file (uid, hotkey, axon ip/port,
//! incentive, validator permit) and the selection rule — serving miners only (ip set, port set),
//! no validators, top-K by incentive, then a random sample of n.

use std::path::Path;

use anyhow::Context;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub netuid: u16,
    #[serde(default)]
    pub block: u64,
    pub neurons: Vec<Neuron>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: String,
    pub ip: String,
    pub port: u16,
    #[serde(default)]
    pub incentive: f64,
    #[serde(default)]
    pub validator_permit: bool,
}

impl Neuron {
    pub fn is_serving(&self) -> bool {
        self.port != 0 && !self.ip.is_empty() && self.ip != "0.0.0.0"
    }

    pub fn base_url(&self) -> String {
        if self.ip.contains(':') {
            format!("http://[{}]:{}", self.ip, self.port)
        } else {
            format!("http://{}:{}", self.ip, self.port)
        }
    }
}

impl Snapshot {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading metagraph {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing metagraph {}", path.display()))
    }

    /// Up to `n` serving non-validator miners sampled from the `top_k` by incentive.
    pub fn sample(&self, top_k: usize, n: usize) -> Vec<Neuron> {
        let mut serving: Vec<&Neuron> = self
            .neurons
            .iter()
            .filter(|m| m.is_serving() && !m.validator_permit)
            .collect();
        serving.sort_by(|a, b| b.incentive.total_cmp(&a.incentive));
        serving.truncate(top_k.max(1));
        serving.shuffle(&mut rand::rng());
        serving.into_iter().take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neuron(uid: u16, ip: &str, incentive: f64, validator: bool) -> Neuron {
        Neuron {
            uid,
            hotkey: format!("hk{uid}"),
            ip: ip.into(),
            port: 8000 + uid,
            incentive,
            validator_permit: validator,
        }
    }

    #[test]
    fn samples_serving_miners_from_the_top_k() {
        let snap = Snapshot {
            netuid: 1,
            block: 0,
            neurons: vec![
                neuron(0, "10.0.0.1", 0.9, true),
                neuron(1, "0.0.0.0", 0.8, false),
                neuron(2, "10.0.0.2", 0.7, false),
                neuron(3, "10.0.0.3", 0.5, false),
                neuron(4, "10.0.0.4", 0.1, false),
            ],
        };
        for _ in 0..20 {
            let picked = snap.sample(2, 5);
            let mut uids: Vec<u16> = picked.iter().map(|m| m.uid).collect();
            uids.sort();
            assert_eq!(
                uids,
                vec![2, 3],
                "validators, non-serving and below-top-k miners are skipped"
            );
        }
        assert_eq!(snap.sample(3, 1).len(), 1);
    }
}
