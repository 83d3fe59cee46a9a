//! One worker in the pool: its in-flight count (for balancing) and its circuit breaker.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

pub struct Member {
    pub url: String,
    /// Joined through a heartbeat (and leaves when it lapses), not from config.
    pub announced: bool,
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
}

impl Member {
    pub fn new(url: String, announced: bool) -> Self {
        Self {
            url,
            announced,
            in_flight: AtomicUsize::new(0),
            breaker: Mutex::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closed, or open past its cooldown with no probe under way (half-open).
    pub fn available(&self) -> bool {
        let b = self.breaker();
        match b.open_until {
            None => true,
            Some(until) => Instant::now() >= until && !b.probing,
        }
    }

    /// Marks the half-open probe as taken, so only one request tests a recovering worker.
    pub fn claim_probe(&self) {
        let mut b = self.breaker();
        if b.open_until.is_some() {
            b.probing = true;
        }
    }

    pub fn on_success(&self) {
        let mut b = self.breaker();
        if b.open_until.is_some() {
            tracing::info!(worker = %self.url, "worker recovered; circuit closed");
        }
        *b = Breaker::default();
    }

    pub fn on_failure(&self, threshold: u32, cooldown: Duration) {
        let mut b = self.breaker();
        b.failures += 1;
        if b.probing || b.failures >= threshold.max(1) {
            if b.open_until.is_none() {
                tracing::warn!(worker = %self.url, failures = b.failures, "circuit opened: worker ejected");
            }
            b.open_until = Some(Instant::now() + cooldown);
            b.probing = false;
        }
    }
}

/// Counts a request against a member while it lives.
pub struct Lease(Arc<Member>);

impl Lease {
    pub fn new(member: Arc<Member>) -> Self {
        member.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(member)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_probes_once() {
        let m = Member::new("w".into(), false);
        m.on_failure(2, Duration::from_millis(30));
        assert!(m.available(), "one failure is below the threshold");
        m.on_failure(2, Duration::from_millis(30));
        assert!(!m.available(), "open after two");
        std::thread::sleep(Duration::from_millis(40));
        assert!(m.available(), "half-open after the cooldown");
        m.claim_probe();
        assert!(!m.available(), "only one probe at a time");
        m.on_failure(2, Duration::from_millis(30));
        assert!(!m.available(), "a failed probe reopens at once");
        std::thread::sleep(Duration::from_millis(40));
        m.claim_probe();
        m.on_success();
        assert!(m.available(), "a successful probe closes the circuit");
        let lease = Lease::new(Arc::new(Member::new("x".into(), false)));
        assert_eq!(lease.0.in_flight(), 1);
    }
}
