//! Process-wide state shared by every handler: the database pool, typed config, token signer,
//! login limiter, limiter, key cache and the API key pepper.

use std::sync::Arc;

use secrecy::ExposeSecret;

use std::time::Duration;

use crate::auth::invalidation::Invalidator;
use crate::auth::jwt::Sessions;
use crate::auth::key_cache::KeyCache;
use crate::auth::login_limit::LoginLimiter;
use crate::billing::settle::Meter;
use crate::config::Config;
use crate::db::Db;
use crate::limits::Clock;
use crate::limits::guard::{Guard, Shared};
use crate::limits::memory::MemoryBackend;
use crate::limits::redis::RedisBackend;
use crate::metrics::GatewayMetrics;
use crate::pool::Pool;
use crate::pool::registry::Registry;
use crate::redis_link::RedisLink;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub sessions: Sessions,
    pub login_limiter: LoginLimiter,
    pub pool: Arc<Pool>,
    /// Where workers announce themselves (Redis, or in process).
    pub registry: Registry,
    /// Shared by every admission (each holds a reference until it settles).
    pub meter: Arc<Meter>,
    /// Rate limits and quotas (shared through Redis, or in process).
    pub limiter: Arc<Guard>,
    /// API keys as the data plane sees them, dropped by push invalidation.
    pub key_cache: Arc<KeyCache>,
    pub invalidator: Invalidator,
    pub metrics: Arc<GatewayMetrics>,
    pepper: Arc<[u8]>,
}

impl AppState {
    pub fn new(db: Db, config: Config, registry: Registry) -> anyhow::Result<Self> {
        let pepper: Arc<[u8]> = config.auth.api_key_pepper.expose_secret().as_bytes().into();
        let limits = &config.limits;
        let redis = (!config.redis_url.is_empty())
            .then(|| {
                RedisLink::new(
                    &config.redis_url,
                    Duration::from_millis(limits.redis_timeout_ms),
                )
            })
            .transpose()?;
        let metrics = Arc::new(GatewayMetrics::with_tenant_labels(
            config.metrics.tenant_labels,
        ));
        let shared = match &redis {
            Some(link) => Shared::Redis(RedisBackend::new(
                link.clone(),
                &config.redis_prefix,
                Clock::System,
            )),
            None => Shared::Memory(MemoryBackend::new(Clock::System)),
        };
        let limiter = Guard::new(shared, Clock::System, limits.clone(), metrics.clone());
        let key_cache = Arc::new(KeyCache::new(
            redis.is_none(),
            Duration::from_secs(limits.key_cache_max_age_secs),
            limits.first_line_per_key_per_sec,
        ));
        let invalidator = Invalidator::new(
            key_cache.clone(),
            redis,
            &config.redis_prefix,
            Duration::from_millis(limits.key_cache_trust_ms),
        );
        Ok(Self {
            pool: Pool::new(config.pool.clone(), metrics.clone())?,
            registry,
            meter: Arc::new(Meter::new(
                db.clone(),
                limiter.clone(),
                &config.data_dir.join("usage-journal"),
                config.database.usage_writer_lanes,
                config.billing.tolerance(),
            )?),
            limiter,
            key_cache,
            invalidator,
            metrics,
            db,
            sessions: Sessions::new(&config.auth),
            login_limiter: LoginLimiter::new(&config.auth),
            config: Arc::new(config),
            pepper,
        })
    }

    /// Key for every peppered hash (API keys, refresh tokens, idempotency records).
    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }
}
