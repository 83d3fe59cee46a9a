//! `best_of`: score complete answers and keep the best. The default scorer rewards validity,
//! agreement (the answer most similar to the others — miners that agree are more likely right),
//! a reasonable length, and speed; a subnet can plug in its own [`Scorer`].

use std::collections::HashSet;
use std::time::Duration;

/// One miner's complete answer.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub uid: u16,
    pub text: String,
    pub latency: Duration,
    /// Finished cleanly (stream ended with `[DONE]`) and non-empty.
    pub valid: bool,
}

pub trait Scorer: Send + Sync {
    /// Higher is better; `all` includes `candidate`.
    fn score(&self, candidate: &Candidate, all: &[Candidate]) -> f64;
}

/// Validity gate, then agreement (weight 1.0), length (0.2) and latency (0.1).
pub struct DefaultScorer;

fn words(text: &str) -> HashSet<String> {
    text.split_whitespace().map(|w| w.to_lowercase()).collect()
}

/// Jaccard similarity of the word sets.
fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    let union = a.union(&b).count();
    if union == 0 {
        0.0
    } else {
        a.intersection(&b).count() as f64 / union as f64
    }
}

impl Scorer for DefaultScorer {
    fn score(&self, c: &Candidate, all: &[Candidate]) -> f64 {
        if !c.valid {
            return f64::NEG_INFINITY;
        }
        let peers: Vec<&Candidate> = all.iter().filter(|o| o.valid && o.uid != c.uid).collect();
        let agreement = if peers.is_empty() {
            0.0
        } else {
            peers
                .iter()
                .map(|o| similarity(&c.text, &o.text))
                .sum::<f64>()
                / peers.len() as f64
        };
        let length = (c.text.chars().count() as f64 / 200.0).min(1.0);
        let speed = 1.0 / (1.0 + c.latency.as_secs_f64());
        agreement + 0.2 * length + 0.1 * speed
    }
}

/// Index of the best-scoring candidate, if any is valid.
pub fn best(scorer: &dyn Scorer, candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.valid)
        .map(|(i, c)| (i, scorer.score(c, candidates)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(uid: u16, text: &str, ms: u64, valid: bool) -> Candidate {
        Candidate {
            uid,
            text: text.into(),
            latency: Duration::from_millis(ms),
            valid,
        }
    }

    #[test]
    fn agreement_beats_speed_and_invalid_answers_never_win() {
        let all = vec![
            c(1, "Paris is the capital of France", 900, true),
            c(2, "The capital of France is Paris", 800, true),
            c(3, "Bananas are yellow", 10, true),
            c(4, "", 1, false),
        ];
        let winner = best(&DefaultScorer, &all).unwrap();
        assert!(
            matches!(all[winner].uid, 1 | 2),
            "the majority answer wins, not the fastest outlier"
        );
        assert_eq!(best(&DefaultScorer, &[c(9, "", 1, false)]), None);
        // Alone, a valid answer wins.
        assert_eq!(best(&DefaultScorer, &[c(5, "only", 50, true)]), Some(0));
    }
}
