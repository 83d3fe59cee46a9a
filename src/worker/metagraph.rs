//! The miners a worker may query: a metagraph snapshot file (uid, hotkey, axon ip/port,
//! incentive, validator permit) and the selection rule — serving miners only (ip set, port set),
//! no validators, top-K by incentive, then a random sample of n.

use std::path::Path;

use anyhow::Context;
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

    /// The `top_k` serving non-validator miners by incentive.
    pub fn top_k(&self, top_k: usize) -> Vec<Neuron> {
        let mut serving: Vec<&Neuron> = self
            .neurons
            .iter()
            .filter(|m| m.is_serving() && !m.validator_permit)
            .collect();
        serving.sort_by(|a, b| b.incentive.total_cmp(&a.incentive));
        serving.into_iter().take(top_k.max(1)).cloned().collect()
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
    fn keeps_serving_miners_of_the_top_k() {
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
        let uids: Vec<u16> = snap.top_k(2).iter().map(|m| m.uid).collect();
        assert_eq!(
            uids,
            vec![2, 3],
            "validators, non-serving and below-top-k miners are skipped"
        );
        assert_eq!(snap.top_k(10).len(), 3);
    }
}
