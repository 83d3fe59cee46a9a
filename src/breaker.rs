//! A circuit breaker, shared by the gateway's worker pool and the worker's routes: closed until
//! `threshold` consecutive failures, then open for a cooldown, then half-open — exactly one probe
//! goes through; its success closes the circuit, its failure reopens it at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

pub struct CircuitBreaker {
    /// What the breaker guards, for log lines (a worker URL, a route name).
    name: String,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: Mutex::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closed, or open past its cooldown with no probe under way (half-open).
    pub fn available(&self) -> bool {
        let s = self.state();
        match s.open_until {
            None => true,
            Some(until) => Instant::now() >= until && !s.probing,
        }
    }

    /// `closed`, `open` (cooling down, or its one probe under way) or `half_open` (a probe may go).
    pub fn circuit(&self) -> &'static str {
        let s = self.state();
        match s.open_until {
            None => "closed",
            Some(until) if Instant::now() >= until && !s.probing => "half_open",
            Some(_) => "open",
        }
    }

    /// Marks the half-open probe as taken, so only one request tests a recovering target.
    pub fn claim_probe(&self) {
        let mut s = self.state();
        if s.open_until.is_some() {
            s.probing = true;
        }
    }

    pub fn on_success(&self) {
        let mut s = self.state();
        if s.open_until.is_some() {
            tracing::info!(target_name = %self.name, "recovered; circuit closed");
        }
        *s = State::default();
    }

    pub fn on_failure(&self, threshold: u32, cooldown: Duration) {
        let mut s = self.state();
        s.failures += 1;
        if s.probing || s.failures >= threshold.max(1) {
            if s.open_until.is_none() {
                tracing::warn!(target_name = %self.name, failures = s.failures, "circuit opened");
            }
            s.open_until = Some(Instant::now() + cooldown);
            s.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let b = CircuitBreaker::new("w");
        b.on_failure(2, Duration::from_millis(30));
        assert!(b.available(), "one failure is below the threshold");
        b.on_failure(2, Duration::from_millis(30));
        assert!(!b.available(), "open after two");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.available(), "half-open after the cooldown");
        b.claim_probe();
        assert!(!b.available(), "only one probe at a time");
        b.on_failure(2, Duration::from_millis(30));
        assert!(!b.available(), "a failed probe reopens at once");
        std::thread::sleep(Duration::from_millis(40));
        b.claim_probe();
        b.on_success();
        assert!(b.available(), "a successful probe closes the circuit");
    }
}
