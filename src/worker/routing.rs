//! A model's routes: each upstream with its priority, weight, wholesale price and circuit
//! breaker. A request tries routes by priority; routes of equal priority are ordered by a weighted
//! random draw (Efraimidis–Spirakis keys), so traffic splits by weight; routes whose circuit is
//! open go last (tried only when every other route failed).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

pub use super::config::RouteTerms;
use super::transports::Transport;
use crate::breaker::CircuitBreaker;

/// Consecutive failures that open a route's circuit.
const FAILURES_TO_OPEN: u32 = 3;

pub struct Route {
    pub transport: Arc<dyn Transport>,
    pub priority: u32,
    pub weight: u32,
    pub terms: RouteTerms,
    /// The upstream's kind (`openai`, `epistula`, `btauth`, `verathos`, `axon`), for metrics.
    pub kind: &'static str,
    /// Shared with the answers in flight, so an answer that breaks midway can open it.
    pub breaker: Arc<CircuitBreaker>,
}

impl Route {
    /// `position` is the route's index in the config list (its default priority).
    pub fn new(transport: Arc<dyn Transport>, terms: &RouteTerms, position: usize) -> Self {
        Self {
            breaker: Arc::new(CircuitBreaker::new(transport.name().to_owned())),
            priority: terms.priority.unwrap_or(position as u32),
            weight: terms.weight.unwrap_or(1).max(1),
            terms: terms.clone(),
            kind: "openai",
            transport,
        }
    }

    /// The same route, labelled with its upstream's kind.
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    pub fn failed(&self, cooldown: Duration) {
        self.breaker.on_failure(FAILURES_TO_OPEN, cooldown);
    }
}

/// An answer that broke after its first event (the upstream dropped mid-body) opens its route's
/// circuit at once for `cooldown`: a retry of the request goes to the next route.
pub fn broke_midway(breaker: &CircuitBreaker, cooldown: Duration) {
    breaker.on_failure(1, cooldown);
}

/// The order in which `routes` are tried for one request.
pub fn plan(routes: &[Route]) -> Vec<&Route> {
    let mut rng = rand::rng();
    let mut keyed: Vec<(bool, u32, f64, &Route)> = routes
        .iter()
        .map(|r| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (
                !r.breaker.available(),
                r.priority,
                -u.ln() / f64::from(r.weight),
                r,
            )
        })
        .collect();
    keyed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
    if let Some(first) = keyed.first() {
        first.3.breaker.claim_probe();
    }
    keyed.into_iter().map(|(_, _, _, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use futures_util::future::BoxFuture;

    use super::*;
    use crate::openai::ChatRequest;
    use crate::worker::transports::{Opened, UpstreamError};

    struct Named(&'static str);

    impl Transport for Named {
        fn name(&self) -> &str {
            self.0
        }

        fn open<'a>(
            &'a self,
            _: &'a ChatRequest,
            _: Duration,
        ) -> BoxFuture<'a, Result<Opened, UpstreamError>> {
            Box::pin(async { Err(UpstreamError::NoMiners) })
        }
    }

    fn route(
        name: &'static str,
        priority: Option<u32>,
        weight: Option<u32>,
        position: usize,
    ) -> Route {
        let terms = RouteTerms {
            priority,
            weight,
            ..Default::default()
        };
        Route::new(Arc::new(Named(name)), &terms, position)
    }

    #[test]
    fn priority_first_then_weight_and_open_circuits_last() {
        let routes = vec![
            route("a", Some(1), Some(3), 0),
            route("b", Some(1), Some(1), 1),
            route("backup", Some(2), None, 2),
        ];
        let mut first_a = 0;
        for _ in 0..400 {
            let order: Vec<&str> = plan(&routes).iter().map(|r| r.transport.name()).collect();
            assert_eq!(
                order[2], "backup",
                "a lower priority never goes before a higher one"
            );
            first_a += usize::from(order[0] == "a");
        }
        assert!(
            (240..=360).contains(&first_a),
            "weight 3:1 gives a ~75% share, got {first_a}/400"
        );
        // Default priorities keep the configured failover order.
        let plain = [route("x", None, None, 0), route("y", None, None, 1)];
        assert_eq!(
            plan(&plain)
                .iter()
                .map(|r| r.transport.name())
                .collect::<Vec<_>>(),
            ["x", "y"]
        );
        // An open circuit goes last.
        for _ in 0..FAILURES_TO_OPEN {
            plain[0].failed(Duration::from_secs(60));
        }
        assert_eq!(
            plan(&plain)
                .iter()
                .map(|r| r.transport.name())
                .collect::<Vec<_>>(),
            ["y", "x"]
        );
    }
}
