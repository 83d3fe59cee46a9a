//! Brute-force brake on `auth/login` and `auth/signup`: governor GCRA limiters keyed per client IP
//! and per email, checked before any password hashing is done. Limits are per process; the shared
//! (Redis) limiter of the data plane does not apply here because a login storm must be cut off
//! even when Redis is unreachable.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthConfig;
use crate::error::{ApiError, ApiResult};

#[derive(Clone)]
pub struct LoginLimiter {
    per_ip: Arc<DefaultKeyedRateLimiter<String>>,
    per_email: Arc<DefaultKeyedRateLimiter<String>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl LoginLimiter {
    pub fn new(cfg: &AuthConfig) -> Self {
        let limiter = Self {
            per_ip: Arc::new(RateLimiter::keyed(per_minute(cfg.login_per_ip_per_minute))),
            per_email: Arc::new(RateLimiter::keyed(per_minute(
                cfg.login_per_email_per_minute,
            ))),
        };
        limiter.spawn_cleanup();
        limiter
    }

    /// Refuses with 429 and `Retry-After` when either the IP or the email is over its budget.
    pub fn check(&self, ip: &str, email: &str) -> ApiResult<()> {
        let clock = DefaultClock::default();
        for (limiter, key) in [
            (&self.per_ip, ip.to_owned()),
            (&self.per_email, crate::domain::normalize_email(email)),
        ] {
            if let Err(not_until) = limiter.check_key(&key) {
                let wait = not_until.wait_time_from(clock.now());
                return Err(ApiError::RateLimited {
                    message: "too many login attempts; try again later".into(),
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    /// Forgets idle keys once a minute so the maps stay small under a spray of addresses.
    fn spawn_cleanup(&self) {
        let (ip, email) = (
            Arc::downgrade(&self.per_ip),
            Arc::downgrade(&self.per_email),
        );
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let (Some(ip), Some(email)) = (ip.upgrade(), email.upgrade()) else {
                    return;
                };
                ip.retain_recent();
                email.retain_recent();
            }
        });
    }
}
