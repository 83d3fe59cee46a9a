//! One worker in the pool: its in-flight count (for balancing) and its circuit breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::breaker::CircuitBreaker;

pub struct Member {
    pub url: String,
    /// Joined through a heartbeat (and leaves when it lapses), not from config.
    pub announced: bool,
    in_flight: AtomicUsize,
    pub breaker: CircuitBreaker,
}

impl Member {
    pub fn new(url: String, announced: bool) -> Self {
        Self {
            breaker: CircuitBreaker::new(url.clone()),
            url,
            announced,
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
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
    fn leases_count_in_flight_requests() {
        let m = Arc::new(Member::new("x".into(), false));
        let a = Lease::new(m.clone());
        let b = Lease::new(m.clone());
        assert_eq!(m.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.in_flight(), 0);
    }
}
