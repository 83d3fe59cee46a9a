//! Per-miner health, kept by each worker: an EWMA of time to first byte and of success, and a
//! cooldown after consecutive failures. Selection prefers reliable, fast miners among the top-K
//! by incentive: miners cooling down are skipped (unless nothing else is left), the rest are drawn
//! without replacement with weight `success / (1 + latency_s)`; unknown miners start from a
//! neutral prior so new ones get traffic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::metagraph::Neuron;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.3;
/// Consecutive failures that start a cooldown …
const FAILURES_FOR_COOLDOWN: u32 = 3;
/// … of this long.
const COOLDOWN: Duration = Duration::from_secs(30);
/// Prior for miners never asked: fairly reliable, half a second to first byte.
const PRIOR_SUCCESS: f64 = 0.8;
const PRIOR_LATENCY_MS: f64 = 500.0;

#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub success: f64,
    pub latency_ms: f64,
    pub failures_in_row: u32,
    pub cooldown_until: Option<Instant>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            success: PRIOR_SUCCESS,
            latency_ms: PRIOR_LATENCY_MS,
            failures_in_row: 0,
            cooldown_until: None,
        }
    }
}

impl Stats {
    fn cooling(&self, now: Instant) -> bool {
        self.cooldown_until.is_some_and(|t| t > now)
    }

    fn weight(&self) -> f64 {
        (self.success.max(0.01)) / (1.0 + self.latency_ms / 1000.0)
    }
}

/// Health of the miners one worker talks to, keyed by hotkey (uids get reassigned).
#[derive(Default)]
pub struct MinerHealth {
    stats: Mutex<HashMap<String, Stats>>,
}

impl MinerHealth {
    pub fn record_success(&self, hotkey: &str, first_byte: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = stats.entry(hotkey.to_owned()).or_default();
        s.success = (1.0 - ALPHA) * s.success + ALPHA;
        s.latency_ms = (1.0 - ALPHA) * s.latency_ms + ALPHA * first_byte.as_secs_f64() * 1000.0;
        s.failures_in_row = 0;
        s.cooldown_until = None;
    }

    pub fn record_failure(&self, hotkey: &str) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = stats.entry(hotkey.to_owned()).or_default();
        s.success *= 1.0 - ALPHA;
        s.failures_in_row += 1;
        if s.failures_in_row >= FAILURES_FOR_COOLDOWN {
            s.cooldown_until = Some(Instant::now() + COOLDOWN);
        }
    }

    pub fn stats(&self, hotkey: &str) -> Stats {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hotkey)
            .copied()
            .unwrap_or_default()
    }

    /// Up to `n` of `candidates`, preferring healthy miners (see the module docs).
    pub fn choose(&self, candidates: Vec<Neuron>, n: usize) -> Vec<Neuron> {
        let now = Instant::now();
        let weighed: Vec<(Neuron, Stats)> = candidates
            .into_iter()
            .map(|m| {
                let s = self.stats(&m.hotkey);
                (m, s)
            })
            .collect();
        let (mut pool, cooling): (Vec<_>, Vec<_>) =
            weighed.into_iter().partition(|(_, s)| !s.cooling(now));
        if pool.is_empty() {
            pool = cooling;
        }
        let mut rng = rand::rng();
        let mut chosen = Vec::with_capacity(n);
        while chosen.len() < n && !pool.is_empty() {
            let total: f64 = pool.iter().map(|(_, s)| s.weight()).sum();
            let mut pick = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
            let idx = pool
                .iter()
                .position(|(_, s)| {
                    pick -= s.weight();
                    pick <= 0.0
                })
                .unwrap_or(pool.len() - 1);
            chosen.push(pool.swap_remove(idx).0);
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner(uid: u16) -> Neuron {
        Neuron {
            uid,
            hotkey: format!("hk{uid}"),
            ip: "10.0.0.1".into(),
            port: 1000 + uid,
            incentive: 1.0,
            validator_permit: false,
        }
    }

    #[test]
    fn failing_miners_cool_down_and_reliable_ones_are_preferred() {
        let h = MinerHealth::default();
        for _ in 0..FAILURES_FOR_COOLDOWN {
            h.record_failure("hk1");
        }
        for _ in 0..5 {
            h.record_success("hk2", Duration::from_millis(50));
            h.record_failure("hk3");
            h.record_success("hk3", Duration::from_millis(2000));
        }
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let picked = h.choose(vec![miner(1), miner(2), miner(3)], 1);
            *counts.entry(picked[0].uid).or_insert(0) += 1;
        }
        assert_eq!(counts.get(&1), None, "a miner in cooldown is not asked");
        // Expected share ~80% (weights ~0.86 vs ~0.22); 2x leaves a margin of > 6 standard deviations.
        assert!(
            counts[&2] > 2 * counts.get(&3).copied().unwrap_or(0),
            "fast and reliable wins: {counts:?}"
        );
        // Nothing else left: even a cooling miner is better than none.
        assert_eq!(h.choose(vec![miner(1)], 2).len(), 1);
        // n distinct miners.
        let two = h.choose(vec![miner(2), miner(3), miner(4)], 2);
        assert_eq!(two.len(), 2);
        assert_ne!(two[0].uid, two[1].uid);
        // A success ends the cooldown.
        h.record_success("hk1", Duration::from_millis(10));
        assert!(!h.stats("hk1").cooling(Instant::now()));
    }
}
